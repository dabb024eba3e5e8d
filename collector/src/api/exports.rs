//! Exports of a period over the API: CSV, the audit report, OSCAL documents and the evidence
//! bundle, the same bytes `evident-collector export` and `bundle export` write. Every attempt,
//! made or refused, is one row of the audit log (`views::exports::audit_export`).

use std::io::{BufWriter, Write};

use axum::body::{Body as HttpBody, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::warn;

use super::ApiError;
use super::auth::{Caller, Params};
use crate::bundle::export::{NothingToBundle, export_bundle_bytes};
use crate::export::{self, ExportContext, ExportError, Period, csv::CsvKind};
use crate::model::now_unix_ms;
use crate::store::{Store, StoreError};
use crate::transparency::TransparencyError;
use crate::views::actions::Origin;
use crate::views::exports::{audit_export, file_name, given_period_text, period_text};
use crate::web::AppState;

/// Bytes per chunk of a streamed download.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the thread that writes and the connection: a slow client makes the
/// writer wait instead of the collector buffering the whole export.
const CHUNKS_IN_FLIGHT: usize = 4;

#[derive(Debug, Deserialize)]
pub(super) struct PeriodQuery {
    from: Option<String>,
    to: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct CsvQuery {
    what: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// What one export request is about, for the audit log.
struct Attempt {
    caller: Caller,
    /// `csv`, `report`, `oscal.assessment-results`, `oscal.poam`, `bundle`.
    kind: &'static str,
}

impl Attempt {
    fn audit(&self, store: &Store, period: &str, ok: bool, detail: &str) -> Result<(), StoreError> {
        audit_export(
            store,
            &self.caller.who,
            Origin {
                channel: "api",
                remote_addr: self.caller.address.as_deref(),
            },
            self.kind,
            period,
            ok,
            detail,
        )
    }

    /// Records a refusal and hands back the error to answer with.
    async fn refuse(self, state: &AppState, period: String, error: ApiError) -> ApiError {
        let detail = match &error {
            ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::Internal(m) => m.clone(),
            other => format!("{other:?}"),
        };
        let audited = state
            .db(move |store| Ok(self.audit(store, &period, false, &detail)))
            .await;
        match audited {
            Ok(Ok(())) => error,
            // A refusal that cannot be recorded is answered as a failure: the audit log must
            // not miss an attempt, and the caller learns to try again.
            Ok(Err(e)) => e.into(),
            Err(e) => e.into(),
        }
    }
}

/// The period of a request, or the refusal (recorded) that says what to give.
async fn period(
    state: &AppState,
    attempt: Attempt,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(Attempt, Period), ApiError> {
    let given = given_period_text(from, to);
    let (Some(from), Some(to)) = (from, to) else {
        let error = ApiError::BadRequest(
            "give the period as from=2026-10-01&to=2026-10-31 (dates, `to` covering its whole day) or as RFC 3339 times"
                .to_owned(),
        );
        return Err(attempt.refuse(state, given, error).await);
    };
    match Period::parse(from, to) {
        Ok(period) => Ok((attempt, period)),
        Err(e) => {
            let error = ApiError::BadRequest(format!("the period: {e}"));
            Err(attempt.refuse(state, given, error).await)
        }
    }
}

/// An export error as the caller should hear it.
fn answer(e: ExportError) -> ApiError {
    match e {
        e @ (ExportError::Period(_) | ExportError::UnknownCsv(_)) => {
            ApiError::BadRequest(e.to_string())
        }
        e @ ExportError::NothingToPlan(_) => ApiError::NotFound(e.to_string()),
        e => ApiError::Internal(e.to_string()),
    }
}

fn context(state: &AppState) -> ExportContext {
    ExportContext {
        ca_fingerprint: Some(state.ca().fingerprint()),
        generated_at_ms: now_unix_ms(),
    }
}

/// A download: its content type, `Content-Disposition: attachment` with its file name.
fn download(content_type: &'static str, name: &str, body: HttpBody) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The name is ours (a fixed stem and two dates), so it never needs quoting beyond this.
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// A `Write` that hands what is written to the response body, chunk by chunk, from a blocking
/// thread. A client that goes away fails the write, which ends the export.
struct ChannelWriter {
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sender
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::other("the client closed the connection"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ChannelWriter {
    /// Ends the body with an error, so the client sees a broken transfer rather than a short
    /// file that looks whole.
    fn fail(self, why: String) {
        let _ = self.sender.blocking_send(Err(std::io::Error::other(why)));
    }
}

/// A body written by `work` on a blocking thread (the store's) while it is sent.
fn streamed(
    state: &AppState,
    work: impl FnOnce(&Store, ChannelWriter) + Send + 'static,
) -> HttpBody {
    let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let state = state.clone();
    tokio::spawn(async move {
        let done = state
            .db(move |store| {
                work(store, ChannelWriter { sender });
                Ok(())
            })
            .await;
        if let Err(error) = done {
            warn!(?error, "a download task failed");
        }
    });
    HttpBody::from_stream(ReceiverStream::new(receiver))
}

pub(super) async fn csv(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<CsvQuery>,
) -> Result<Response, ApiError> {
    let attempt = Attempt {
        caller,
        kind: "csv",
    };
    let (attempt, period) =
        period(&state, attempt, query.from.as_deref(), query.to.as_deref()).await?;
    let what = query.what.unwrap_or_default();
    let kind = match CsvKind::parse(what.trim()) {
        Ok(kind) => kind,
        Err(e) => {
            let error = ApiError::BadRequest(format!("what: {e}"));
            return Err(attempt.refuse(&state, period_text(period), error).await);
        }
    };
    let name = file_name(kind.as_str(), period, "csv");
    // Streamed: an evidence CSV of a year can be far larger than the collector should hold.
    // The audit entry is written before the body ends, so a client that has the whole file
    // finds its download in the audit log.
    let body = streamed(&state, move |store, sink| {
        let mut out = BufWriter::with_capacity(CHUNK, sink);
        let written = export::csv::write(store, kind, period, &mut out)
            .and_then(|rows| Ok(out.flush().map(|()| rows)?));
        let (ok, detail) = match &written {
            Ok(rows) => (true, format!("{rows} {} row(s)", kind.as_str())),
            Err(e) => (false, format!("{} rows: {e}", kind.as_str())),
        };
        let audited = attempt.audit(store, &period_text(period), ok, &detail);
        let Ok(sink) = out.into_inner().map_err(|e| e.into_error()) else {
            return;
        };
        match (written, audited) {
            (Ok(_), Ok(())) => {}
            (Err(e), _) => sink.fail(e.to_string()),
            (Ok(_), Err(_)) => {
                sink.fail("the export could not be recorded in the audit log".into())
            }
        }
    });
    Ok(download("text/csv; charset=utf-8", &name, body))
}

/// Makes an export of the whole period in memory (the report and OSCAL documents are built
/// whole anyway), records the attempt, and answers with it.
async fn buffered(
    state: AppState,
    attempt: Attempt,
    period: Period,
    content_type: &'static str,
    name: String,
    make: impl FnOnce(&Store, &ExportContext) -> Result<Vec<u8>, ExportError> + Send + 'static,
) -> Result<Response, ApiError> {
    let context = context(&state);
    let made = state
        .db(move |store| {
            let made = make(store, &context);
            let detail = match &made {
                Ok(bytes) => format!("{} bytes", bytes.len()),
                Err(e) => e.to_string(),
            };
            attempt.audit(store, &period_text(period), made.is_ok(), &detail)?;
            Ok(made)
        })
        .await?;
    let bytes = made.map_err(answer)?;
    Ok(download(content_type, &name, HttpBody::from(bytes)))
}

pub(super) async fn report(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<PeriodQuery>,
) -> Result<Response, ApiError> {
    let attempt = Attempt {
        caller,
        kind: "report",
    };
    let (attempt, period) =
        period(&state, attempt, query.from.as_deref(), query.to.as_deref()).await?;
    let name = file_name("report", period, "html");
    buffered(
        state,
        attempt,
        period,
        "text/html; charset=utf-8",
        name,
        move |store, context| {
            let mut out = Vec::new();
            export::report::write_report(store, period, context, &mut out)?;
            Ok(out)
        },
    )
    .await
}

pub(super) async fn assessment_results(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<PeriodQuery>,
) -> Result<Response, ApiError> {
    oscal(state, caller, query, "oscal.assessment-results").await
}

pub(super) async fn poam(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<PeriodQuery>,
) -> Result<Response, ApiError> {
    oscal(state, caller, query, "oscal.poam").await
}

async fn oscal(
    state: AppState,
    caller: Caller,
    query: PeriodQuery,
    kind: &'static str,
) -> Result<Response, ApiError> {
    let attempt = Attempt { caller, kind };
    let (attempt, period) =
        period(&state, attempt, query.from.as_deref(), query.to.as_deref()).await?;
    let poam = kind == "oscal.poam";
    let stem = if poam { "poam" } else { "assessment-results" };
    let name = file_name(stem, period, "json");
    buffered(
        state,
        attempt,
        period,
        "application/json",
        name,
        move |store, context| {
            let document = if poam {
                export::oscal::poam(store, period, context)?
            } else {
                export::oscal::assessment_results(store, period, context)?
            };
            Ok(serde_json::to_vec_pretty(&document)?)
        },
    )
    .await
}

pub(super) async fn bundle(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<PeriodQuery>,
) -> Result<Response, ApiError> {
    let attempt = Attempt {
        caller,
        kind: "bundle",
    };
    let (attempt, period) =
        period(&state, attempt, query.from.as_deref(), query.to.as_deref()).await?;
    let name = file_name("bundle", period, "tar");
    let ca = state.ca().clone();
    let made = state
        .db(move |store| {
            // A bundle's period includes its end; the API's `to` is exclusive, as for every
            // export.
            let made =
                export_bundle_bytes(store, &ca, period.from_ms, period.to_ms - 1, now_unix_ms());
            let detail = match &made {
                Ok((exported, _)) => format!(
                    "{} item(s) of {} agent(s), proven in checkpoint {} ({} rows), {} bytes",
                    exported.items,
                    exported.agents,
                    exported.checkpoint_id,
                    exported.tree_size,
                    exported.bytes
                ),
                Err(e) => format!("{e:#}"),
            };
            attempt.audit(store, &period_text(period), made.is_ok(), &detail)?;
            Ok(made)
        })
        .await?;
    let (_, tar) = made.map_err(|e| {
        if e.downcast_ref::<NothingToBundle>().is_some() {
            ApiError::NotFound(format!(
                "{e}: pick a period in which agents reported (GET /api/v1/hosts shows their last contact)"
            ))
        } else if let Some(diverged @ TransparencyError::Diverged { .. }) = e.downcast_ref() {
            ApiError::Conflict(diverged.to_string())
        } else {
            ApiError::Internal(format!("export a bundle: {e:#}"))
        }
    })?;
    // The bundle's files are gathered in memory anyway; the web page sends its downloads the
    // same way.
    Ok(download("application/x-tar", &name, HttpBody::from(tar)))
}

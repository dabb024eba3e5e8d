//! The exports page: downloads for auditors over a period (CSV, the audit report, OSCAL, the
//! offline evidence bundle) and the collector's signed checkpoints. Every download is in the
//! audit log.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::session::{Layout, Signed};
use super::{AppState, AsOf, WebError};
use crate::export::{self, ExportContext, ExportError, Period, csv::CsvKind};
use crate::model::{format_unix_ms, now_unix_ms};
use crate::transparency;
use crate::views::actions::Origin;

/// Checkpoints listed on the page.
const CHECKPOINTS_SHOWN: usize = 20;

/// One signed checkpoint, as listed.
pub struct CheckpointLine {
    pub id: i64,
    pub tree_size: u64,
    pub root: String,
    pub signed_at: String,
}

#[derive(Template)]
#[template(path = "web/exports.html")]
struct ExportsPage {
    layout: Layout,
    from: String,
    to: String,
    checkpoints: Vec<CheckpointLine>,
}

pub async fn exports(
    State(state): State<AppState>,
    signed: Signed,
    as_of: AsOf,
) -> Result<Html<String>, WebError> {
    let checkpoints = state
        .db(|store| {
            let mut all = transparency::list_checkpoints(store)
                .map_err(|e| WebError::Internal(e.to_string()))?;
            all.reverse();
            Ok(all
                .into_iter()
                .take(CHECKPOINTS_SHOWN)
                .map(|c| CheckpointLine {
                    id: c.id,
                    tree_size: c.checkpoint.tree_size,
                    root: hex::encode(c.checkpoint.root_hash),
                    signed_at: format_unix_ms(c.checkpoint.signed_at_ms),
                })
                .collect())
        })
        .await?;
    let today = format_unix_ms(as_of.ms)
        .chars()
        .take(10)
        .collect::<String>();
    let month_ago = format_unix_ms(as_of.ms - 30 * 86_400_000)
        .chars()
        .take(10)
        .collect::<String>();
    super::fleet::render(ExportsPage {
        layout: Layout::new(&signed, &as_of, "/exports", "exports"),
        from: month_ago,
        to: today,
        checkpoints,
    })
}

#[derive(Deserialize)]
pub struct DownloadQuery {
    kind: String,
    from: Option<String>,
    to: Option<String>,
}

/// A file to download: its type, name and bytes.
struct Download {
    content_type: &'static str,
    file_name: String,
    bytes: Vec<u8>,
}

pub async fn download(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    signed: Signed,
    Query(query): Query<DownloadQuery>,
) -> Result<Response, WebError> {
    let kind = query.kind.clone();
    let from = query.from.unwrap_or_default();
    let to = query.to.unwrap_or_default();
    let period_text = crate::views::exports::given_period_text(Some(&from), Some(&to));
    let (ca, who, address) = (
        state.ca().clone(),
        signed.who.clone(),
        peer.ip().to_string(),
    );
    let made = state
        .db(move |store| {
            let made = make(store, &ca, &kind, &from, &to);
            let detail = match &made {
                Ok(d) => format!("{} ({} bytes)", d.file_name, d.bytes.len()),
                Err(e) => e.to_string(),
            };
            crate::views::exports::audit_export(
                store,
                &who,
                Origin {
                    channel: "web",
                    remote_addr: Some(&address),
                },
                &kind,
                &period_text,
                made.is_ok(),
                &detail,
            )?;
            Ok(made)
        })
        .await?;
    let download = made?;
    Ok((
        [
            (header::CONTENT_TYPE, download.content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", download.file_name),
            ),
        ],
        download.bytes,
    )
        .into_response())
}

fn refused(e: ExportError) -> WebError {
    match e {
        ExportError::Period(_) | ExportError::NothingToPlan(_) | ExportError::UnknownCsv(_) => {
            WebError::BadRequest(e.to_string())
        }
        other => WebError::Internal(other.to_string()),
    }
}

fn make(
    store: &crate::store::Store,
    ca: &crate::ca::CertificateAuthority,
    kind: &str,
    from: &str,
    to: &str,
) -> Result<Download, WebError> {
    let now = now_unix_ms();
    if kind == "checkpoint" {
        let latest = transparency::latest_checkpoint(store)
            .map_err(|e| WebError::Internal(e.to_string()))?
            .ok_or_else(|| {
                WebError::NotFound(
                    "the collector has signed no checkpoint yet: it signs one every checkpoint_interval_secs once evidence arrived"
                        .into(),
                )
            })?;
        return Ok(Download {
            content_type: "application/json",
            file_name: format!("evident-checkpoint-{}.json", latest.checkpoint.tree_size),
            bytes: serde_json::to_vec_pretty(&latest.to_json())
                .map_err(|e| WebError::Internal(e.to_string()))?,
        });
    }
    let period = Period::parse(from, to).map_err(refused)?;
    let context = ExportContext {
        ca_fingerprint: Some(ca.fingerprint()),
        generated_at_ms: now,
    };

    let mut bytes = Vec::new();
    let (content_type, extension) = match kind {
        "csv-evidence" | "csv-results" | "csv-actions" => {
            let what = CsvKind::parse(kind.trim_start_matches("csv-")).map_err(refused)?;
            export::csv::write(store, what, period, &mut bytes).map_err(refused)?;
            ("text/csv; charset=utf-8", "csv")
        }
        "report" => {
            export::report::write_report(store, period, &context, &mut bytes).map_err(refused)?;
            ("text/html; charset=utf-8", "html")
        }
        "oscal-assessment-results" | "oscal-poam" => {
            let document = if kind == "oscal-poam" {
                export::oscal::poam(store, period, &context)
            } else {
                export::oscal::assessment_results(store, period, &context)
            }
            .map_err(refused)?;
            bytes = serde_json::to_vec_pretty(&document)
                .map_err(|e| WebError::Internal(e.to_string()))?;
            ("application/json", "json")
        }
        "bundle" => {
            // The bundle's period is inclusive of its end; the export period excludes it.
            let (_, tar) = crate::bundle::export::export_bundle_bytes(
                store,
                ca,
                period.from_ms,
                period.to_ms - 1,
                now,
            )
            .map_err(|e| WebError::BadRequest(format!("{e:#}")))?;
            bytes = tar;
            ("application/x-tar", "tar")
        }
        other => {
            return Err(WebError::BadRequest(format!(
                "unknown export {other:?}: use csv-evidence, csv-results, csv-actions, report, oscal-assessment-results, oscal-poam, bundle or checkpoint"
            )));
        }
    };
    Ok(Download {
        content_type,
        file_name: crate::views::exports::file_name(kind, period, extension),
        bytes,
    })
}

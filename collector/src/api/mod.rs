//! The versioned JSON API, served under `/api/v1` on the web page's HTTPS listener: the same
//! views and transitions as the pages (`crate::views`), the same roles, authenticated by API
//! tokens (`Authorization: Bearer eva_…`) and never by cookies, so it has no CSRF surface.
//!
//! Exports of a period (`exports`) and signed checkpoints with their proofs (`checkpoints`) are
//! served here too, in the formats the CLI writes, and every export is audited.
//!
//! `docs/openapi.json` describes it and is served at `/api/v1/openapi.json`;
//! `tests/tests/api.rs` checks that `ROUTES` and that document name the same operations and
//! that every answer matches its schema.

mod auth;
mod checkpoints;
mod exports;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::{Deserialize, Serialize};

pub use auth::ApiError;
use auth::{Body, Caller, Moment, Params, Segments};

use crate::actions::ActionView;
use crate::model::now_unix_ms;
use crate::policy::judge::RuleOutcome;
use crate::status::{ControlStatus, StatusReport};
use crate::store::{AuditRow, EventRow};
use crate::views::actions::{self as steps, ActionFilter, ActionPage, Origin, Step, StepError};
use crate::views::enrolment::{self, CreatedToken, TokenError};
use crate::views::evidence::EvidenceDetail;
use crate::views::host::HostDetail;
use crate::views::{self, HostFilter, HostPage};
use crate::web::AppState;

/// The OpenAPI 3.1 document, kept by hand beside the code and checked by the tests.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// One operation of the API.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Relative to `/api/v1`, with `{name}` for a path parameter (as OpenAPI writes it).
    pub path: &'static str,
    handler: fn() -> MethodRouter<AppState>,
}

/// Every operation the router serves; the router is built from this list alone, so the tests
/// can hold it against the OpenAPI document.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/openapi.json",
        handler: || get(openapi),
    },
    Route {
        method: "GET",
        path: "/status",
        handler: || get(status),
    },
    Route {
        method: "GET",
        path: "/controls/{framework}/{control}",
        handler: || get(control),
    },
    Route {
        method: "GET",
        path: "/hosts",
        handler: || get(hosts),
    },
    Route {
        method: "GET",
        path: "/hosts/{agent_id}",
        handler: || get(host),
    },
    Route {
        method: "GET",
        path: "/evidence/{agent_id}/{sequence}",
        handler: || get(evidence),
    },
    Route {
        method: "GET",
        path: "/actions",
        handler: || get(actions),
    },
    Route {
        method: "GET",
        path: "/actions/{id}",
        handler: || get(action),
    },
    Route {
        method: "POST",
        path: "/actions/{id}/steps",
        handler: || post(take_step),
    },
    Route {
        method: "GET",
        path: "/audit-log",
        handler: || get(audit_log),
    },
    Route {
        method: "POST",
        path: "/enrolment-tokens",
        handler: || post(create_enrolment_token),
    },
    Route {
        method: "GET",
        path: "/exports/csv",
        handler: || get(exports::csv),
    },
    Route {
        method: "GET",
        path: "/exports/report",
        handler: || get(exports::report),
    },
    Route {
        method: "GET",
        path: "/exports/oscal/assessment-results",
        handler: || get(exports::assessment_results),
    },
    Route {
        method: "GET",
        path: "/exports/oscal/poam",
        handler: || get(exports::poam),
    },
    Route {
        method: "GET",
        path: "/exports/bundle",
        handler: || get(exports::bundle),
    },
    Route {
        method: "GET",
        path: "/checkpoints",
        handler: || get(checkpoints::list),
    },
    Route {
        method: "GET",
        path: "/checkpoints/latest",
        handler: || get(checkpoints::latest),
    },
    Route {
        method: "GET",
        path: "/checkpoints/consistency",
        handler: || get(checkpoints::consistency),
    },
    Route {
        method: "GET",
        path: "/evidence/{agent_id}/{sequence}/inclusion",
        handler: || get(checkpoints::inclusion),
    },
];

/// The API's routes, to be nested under `/api/v1` by the web router (which adds the state and
/// the security headers).
pub fn router() -> Router<AppState> {
    ROUTES
        .iter()
        .fold(Router::new(), |router, route| {
            router.route(route.path, (route.handler)())
        })
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed(
        "this operation does not take that method: GET /api/v1/openapi.json lists the operations"
            .to_owned(),
    )
}

async fn not_found() -> ApiError {
    ApiError::NotFound(
        "there is no such API operation: GET /api/v1/openapi.json lists them".to_owned(),
    )
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The fleet's control status with the hosts counted by their worst outcome.
#[derive(Debug, Serialize)]
pub struct Status {
    #[serde(flatten)]
    pub report: StatusReport,
    pub host_counts: HostCounts,
}

#[derive(Debug, Default, Serialize)]
pub struct HostCounts {
    pub total: usize,
    pub failing: usize,
    pub no_evidence: usize,
    pub passing: usize,
    pub not_applicable: usize,
    /// Silent for longer than the policy allows, whatever their outcome.
    pub stale: usize,
}

async fn status(
    State(state): State<AppState>,
    _caller: Caller,
    Moment(as_of): Moment,
) -> Result<Json<Status>, ApiError> {
    let at = as_of.ms;
    let fleet = state
        .db(move |store| Ok(views::fleet(store, at, views::Detail::Findings)?))
        .await?;
    let mut counts = HostCounts {
        total: fleet.hosts.len(),
        ..HostCounts::default()
    };
    for host in &fleet.hosts {
        match host.status {
            RuleOutcome::Fail => counts.failing += 1,
            RuleOutcome::NoEvidence => counts.no_evidence += 1,
            RuleOutcome::Pass => counts.passing += 1,
            RuleOutcome::NotApplicable => counts.not_applicable += 1,
        }
        counts.stale += usize::from(host.stale);
    }
    Ok(Json(Status {
        report: fleet.status,
        host_counts: counts,
    }))
}

async fn control(
    State(state): State<AppState>,
    _caller: Caller,
    Moment(as_of): Moment,
    Segments((framework, control)): Segments<(String, String)>,
) -> Result<Json<ControlStatus>, ApiError> {
    let at = as_of.ms;
    let reference = format!("{framework}:{control}");
    let fleet = state
        .db(move |store| Ok(views::fleet(store, at, views::Detail::Findings)?))
        .await?;
    fleet
        .status
        .controls
        .into_iter()
        .find(|c| c.control == reference)
        .map(Json)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no rule of the policy in force as of {} evidences control {reference}: GET /api/v1/status lists the controls",
                as_of.label()
            ))
        })
}

async fn hosts(
    State(state): State<AppState>,
    _caller: Caller,
    Moment(as_of): Moment,
    Params(filter): Params<HostFilter>,
) -> Result<Json<HostPage>, ApiError> {
    let at = as_of.ms;
    let page = state
        .db(move |store| {
            let fleet = views::fleet(store, at, views::Detail::Counts)?;
            Ok(views::host_page(store, &fleet, &filter, at)?)
        })
        .await?;
    Ok(Json(page))
}

#[derive(Debug, Deserialize)]
struct TimelineQuery {
    /// Timeline items below this sequence (for paging back).
    before: Option<u64>,
}

async fn host(
    State(state): State<AppState>,
    _caller: Caller,
    Moment(as_of): Moment,
    Segments(agent_id): Segments<String>,
    Params(query): Params<TimelineQuery>,
) -> Result<Json<HostDetail>, ApiError> {
    let (at, id) = (as_of.ms, agent_id.clone());
    state
        .db(move |store| Ok(views::host::host(store, &id, at, query.before)?))
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no agent {agent_id} is enrolled: GET /api/v1/hosts lists them"
            ))
        })
}

/// One evidence item with its checks, and whether all of them hold.
#[derive(Debug, Serialize)]
pub struct Evidence {
    #[serde(flatten)]
    pub detail: EvidenceDetail,
    pub verified: bool,
}

async fn evidence(
    State(state): State<AppState>,
    _caller: Caller,
    Moment(as_of): Moment,
    Segments((agent_id, sequence)): Segments<(String, u64)>,
) -> Result<Json<Evidence>, ApiError> {
    let (at, id) = (as_of.ms, agent_id.clone());
    let detail = state
        .db(move |store| Ok(views::evidence::evidence(store, &id, sequence, at)?))
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "agent {agent_id} has no evidence item {sequence} as of {}",
                as_of.label()
            ))
        })?;
    Ok(Json(Evidence {
        verified: detail.verified(),
        detail,
    }))
}

async fn actions(
    State(state): State<AppState>,
    _caller: Caller,
    Moment(as_of): Moment,
    Params(filter): Params<ActionFilter>,
) -> Result<Json<ActionPage>, ApiError> {
    let at = as_of.ms;
    let page = state
        .db(move |store| Ok(steps::list(store, &filter, at)?))
        .await?;
    Ok(Json(page))
}

async fn action(
    State(state): State<AppState>,
    _caller: Caller,
    Moment(as_of): Moment,
    Segments(id): Segments<i64>,
) -> Result<Json<ActionView>, ApiError> {
    let at = as_of.ms;
    state
        .db(move |store| Ok(steps::action(store, id, at)?))
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no corrective action {id} existed as of {}: GET /api/v1/actions lists them",
                as_of.label()
            ))
        })
}

async fn take_step(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<i64>,
    Body(step): Body<Step>,
) -> Result<(StatusCode, Json<EventRow>), ApiError> {
    let outcome = state
        .db(move |store| {
            Ok(steps::take_step(
                store,
                id,
                &step,
                &caller.who,
                Origin {
                    channel: "api",
                    remote_addr: caller.address.as_deref(),
                },
                now_unix_ms(),
            ))
        })
        .await?;
    match outcome {
        Ok(event) => Ok((StatusCode::CREATED, Json(event))),
        Err(StepError::Refused(why)) => Err(ApiError::BadRequest(why)),
        Err(StepError::Conflict(why)) => Err(ApiError::Conflict(why)),
        Err(e @ StepError::Forbidden(_)) => Err(ApiError::Forbidden(e.to_string())),
        Err(e @ StepError::NotFound(_)) => Err(ApiError::NotFound(e.to_string())),
        Err(StepError::Store(e)) => Err(e.into()),
    }
}

/// Audit entries per page.
const AUDIT_PAGE: u64 = 100;

#[derive(Debug, Deserialize)]
struct PageQuery {
    page: Option<u64>,
}

/// One page of the audit log, newest first.
#[derive(Debug, Serialize)]
pub struct AuditPage {
    pub total: u64,
    pub page: u64,
    pub pages: u64,
    pub entries: Vec<AuditRow>,
}

async fn audit_log(
    State(state): State<AppState>,
    _caller: Caller,
    Moment(as_of): Moment,
    Params(query): Params<PageQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let (at, wanted) = (as_of.ms, query.page.unwrap_or(1).max(1));
    let answer = state
        .db(move |store| {
            let (mut entries, total) =
                store.audit_log(at, (wanted - 1) * AUDIT_PAGE, AUDIT_PAGE)?;
            let pages = total.div_ceil(AUDIT_PAGE).max(1);
            // Past the last page, the last page, as the other lists answer.
            let page = wanted.min(pages);
            if page != wanted {
                entries = store.audit_log(at, (page - 1) * AUDIT_PAGE, AUDIT_PAGE)?.0;
            }
            Ok(AuditPage {
                total,
                page,
                pages,
                entries,
            })
        })
        .await?;
    Ok(Json(answer))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    #[serde(default = "one")]
    uses: u32,
    #[serde(default = "a_day")]
    hours: u32,
}

fn one() -> u32 {
    1
}

fn a_day() -> u32 {
    24
}

/// A new enrolment token and what an agent needs to use it.
#[derive(Debug, Serialize)]
pub struct EnrolmentToken {
    #[serde(flatten)]
    pub token: CreatedToken,
    pub collector_url: String,
    pub ca_fingerprint: String,
    /// The command that enrols an agent with this token.
    pub command: String,
}

async fn create_enrolment_token(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<TokenRequest>,
) -> Result<(StatusCode, Json<EnrolmentToken>), ApiError> {
    let created = state
        .db(move |store| {
            Ok(enrolment::create_token(
                store,
                &caller.who,
                Origin {
                    channel: "api",
                    remote_addr: caller.address.as_deref(),
                },
                request.uses,
                request.hours,
                now_unix_ms(),
            ))
        })
        .await?
        .map_err(|e| match e {
            TokenError::Invalid(why) => ApiError::BadRequest(why),
            e @ TokenError::Forbidden(_) => ApiError::Forbidden(e.to_string()),
            e @ (TokenError::Random(_) | TokenError::Store(_)) => ApiError::Internal(e.to_string()),
        })?;
    let (fingerprint, url) = state.enrolment_target();
    let command = format!(
        "evident-agent enroll --collector {url} --ca-fingerprint {fingerprint} --token {} --state-dir /var/lib/evident-agent",
        created.token
    );
    Ok((
        StatusCode::CREATED,
        Json(EnrolmentToken {
            token: created,
            collector_url: url.to_owned(),
            ca_fingerprint: fingerprint.to_owned(),
            command,
        }),
    ))
}

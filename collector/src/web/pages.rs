//! Pages where people act: corrective actions (list, trail, lifecycle steps), enrolment tokens,
//! and the audit log of what people did.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::{Layout, Signed};
use super::{AppState, AsOf, WebError, encode_query};
use crate::accounts::Role;
use crate::actions::ActionView;
use crate::model::now_unix_ms;
use crate::store::AuditRow;
use crate::views::actions::{self as steps, ActionFilter, ActionPage, Origin, Step, StepError};
use crate::views::enrolment::{self, TokenError};

fn render(page: impl Template) -> Result<Html<String>, WebError> {
    page.render()
        .map(Html)
        .map_err(|e| WebError::Internal(format!("render a page: {e}")))
}

#[derive(Template)]
#[template(path = "web/actions.html")]
struct ActionsPage {
    layout: Layout,
    filter: ActionFilter,
    page: ActionPage,
    filter_query: String,
}

impl ActionsPage {
    fn selected(&self, field: &Option<String>, value: &str) -> bool {
        field.as_deref() == Some(value)
    }
}

pub async fn actions(
    State(state): State<AppState>,
    signed: Signed,
    as_of: AsOf,
    Query(filter): Query<ActionFilter>,
) -> Result<Html<String>, WebError> {
    let (at, wanted) = (as_of.ms, filter.clone());
    let page = state
        .db(move |store| Ok(steps::list(store, &wanted, at)?))
        .await?;
    let mut filter_query = String::new();
    for (key, value) in [
        ("state", &filter.state),
        ("severity", &filter.severity),
        ("owner", &filter.owner),
        ("agent_id", &filter.agent_id),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            filter_query.push_str(&format!("{key}={}&", encode_query(v)));
        }
    }
    if filter.overdue == Some(true) {
        filter_query.push_str("overdue=true&");
    }
    render(ActionsPage {
        layout: Layout::new(&signed, &as_of, "/actions", "actions"),
        filter,
        page,
        filter_query,
    })
}

#[derive(Template)]
#[template(path = "web/action.html")]
struct ActionPageView {
    layout: Layout,
    action: ActionView,
    can_review: bool,
    message: String,
}

async fn action_page(
    state: &AppState,
    signed: &Signed,
    as_of: &AsOf,
    id: i64,
    message: String,
) -> Result<Html<String>, WebError> {
    let at = as_of.ms;
    let action = state
        .db(move |store| Ok(steps::action(store, id, at)?))
        .await?
        .ok_or_else(|| {
            WebError::NotFound(format!(
                "no corrective action {id} existed as of {}",
                as_of.label()
            ))
        })?;
    render(ActionPageView {
        layout: Layout::new(signed, as_of, format!("/actions/{id}"), "actions"),
        can_review: signed.who.role >= Role::Reviewer && as_of.is_now(),
        action,
        message,
    })
}

pub async fn action(
    State(state): State<AppState>,
    signed: Signed,
    as_of: AsOf,
    Path(id): Path<i64>,
) -> Result<Html<String>, WebError> {
    action_page(&state, &signed, &as_of, id, String::new()).await
}

#[derive(Deserialize)]
pub struct StepForm {
    csrf: String,
    #[serde(flatten)]
    step: Step,
}

pub async fn action_step(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    signed: Signed,
    as_of: AsOf,
    Path(id): Path<i64>,
    Form(form): Form<StepForm>,
) -> Result<Response, WebError> {
    signed.check_csrf(&form.csrf)?;
    let who = signed.who.clone();
    let address = peer.ip().to_string();
    let step = form.step;
    let outcome = state
        .db(move |store| {
            Ok(steps::take_step(
                store,
                id,
                &step,
                &who,
                Origin {
                    channel: "web",
                    remote_addr: Some(&address),
                },
                now_unix_ms(),
            ))
        })
        .await?;
    match outcome {
        Ok(_) => Ok(Redirect::to(&format!("/actions/{id}")).into_response()),
        Err(StepError::Refused(why) | StepError::Conflict(why)) => {
            Ok(action_page(&state, &signed, &as_of, id, why)
                .await?
                .into_response())
        }
        Err(e @ StepError::Forbidden(_)) => Err(WebError::Forbidden(e.to_string())),
        Err(e @ StepError::NotFound(_)) => Err(WebError::NotFound(e.to_string())),
        Err(StepError::Store(e)) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "web/enrolment.html")]
struct EnrolmentPage {
    layout: Layout,
    ca_fingerprint: String,
    grpc_url: String,
    /// The token just created, shown once.
    token: Option<String>,
    expires: String,
    uses: u32,
}

pub async fn enrolment(
    State(state): State<AppState>,
    signed: Signed,
    as_of: AsOf,
) -> Result<Html<String>, WebError> {
    signed.require(Role::Admin, "creating enrolment tokens")?;
    render(EnrolmentPage {
        layout: Layout::new(&signed, &as_of, "/enrolment", "enrolment"),
        ca_fingerprint: state.inner.ca_fingerprint.clone(),
        grpc_url: state.inner.grpc_url.clone(),
        token: None,
        expires: String::new(),
        uses: 1,
    })
}

#[derive(Deserialize)]
pub struct TokenForm {
    csrf: String,
    uses: u32,
    hours: u32,
}

pub async fn create_token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    signed: Signed,
    as_of: AsOf,
    Form(form): Form<TokenForm>,
) -> Result<Html<String>, WebError> {
    signed.check_csrf(&form.csrf)?;
    signed.require(Role::Admin, "creating enrolment tokens")?;
    let (who, address) = (signed.who.clone(), peer.ip().to_string());
    let (uses, hours) = (form.uses, form.hours);
    let created = state
        .db(move |store| {
            Ok(enrolment::create_token(
                store,
                &who,
                Origin {
                    channel: "web",
                    remote_addr: Some(&address),
                },
                uses,
                hours,
                now_unix_ms(),
            ))
        })
        .await?
        .map_err(|e| match e {
            TokenError::Invalid(why) => WebError::BadRequest(why),
            e @ TokenError::Forbidden(_) => WebError::Forbidden(e.to_string()),
            e @ (TokenError::Random(_) | TokenError::Store(_)) => WebError::Internal(e.to_string()),
        })?;
    render(EnrolmentPage {
        layout: Layout::new(&signed, &as_of, "/enrolment", "enrolment"),
        ca_fingerprint: state.inner.ca_fingerprint.clone(),
        grpc_url: state.inner.grpc_url.clone(),
        token: Some(created.token),
        expires: created.expires_at,
        uses: created.uses,
    })
}

#[derive(Template)]
#[template(path = "web/audit.html")]
struct AuditPage {
    layout: Layout,
    rows: Vec<AuditRow>,
    total: u64,
    page: u64,
    pages: u64,
}

#[derive(Deserialize)]
pub struct PageQuery {
    page: Option<u64>,
}

const AUDIT_PAGE: u64 = 100;

pub async fn audit(
    State(state): State<AppState>,
    signed: Signed,
    as_of: AsOf,
    Query(query): Query<PageQuery>,
) -> Result<Html<String>, WebError> {
    let page = query.page.unwrap_or(1).max(1);
    let at = as_of.ms;
    let (rows, total) = state
        .db(move |store| Ok(store.audit_log(at, (page - 1) * AUDIT_PAGE, AUDIT_PAGE)?))
        .await?;
    render(AuditPage {
        layout: Layout::new(&signed, &as_of, "/audit", "audit"),
        rows,
        total,
        page,
        pages: total.div_ceil(AUDIT_PAGE).max(1),
    })
}

//! Corrective actions for reviewers: the filtered list, one action with its trail, and the
//! steps people take on them (recorded with an audit entry, the same way from the web page and
//! the API).

use serde::{Deserialize, Serialize};

use crate::accounts::{Principal, Role};
use crate::actions::{self, ActionError, ActionView, Request};
use crate::store::{AuditEntry, EventError, EventRow, Store, StoreError};

/// Actions per page of the list.
pub const PAGE_SIZE: usize = 50;

/// Filters of the actions list; every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ActionFilter {
    /// open, acknowledged, resolved, verified, reopened, risk_accepted, or `pending` for any
    /// state that still needs work.
    pub state: Option<String>,
    pub severity: Option<String>,
    /// Part of the owner's name, any case.
    pub owner: Option<String>,
    /// `true` for overdue actions only.
    pub overdue: Option<bool>,
    pub agent_id: Option<String>,
    pub page: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionPage {
    pub total: usize,
    pub page: usize,
    pub pages: usize,
    pub actions: Vec<ActionView>,
}

/// The actions as of `as_of_ms` that pass `filter`, newest first, one page.
pub fn list(store: &Store, filter: &ActionFilter, as_of_ms: i64) -> Result<ActionPage, StoreError> {
    let given = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let state = given(&filter.state);
    let severity = given(&filter.severity);
    let owner = given(&filter.owner).map(|o| o.to_lowercase());
    let agent = given(&filter.agent_id);
    let mut matching: Vec<ActionView> = actions::list(store, as_of_ms)?
        .into_iter()
        .filter(|a| match state.as_deref() {
            None => true,
            Some("pending") => a.state.is_pending(),
            Some(s) => a.state.as_str() == s,
        })
        .filter(|a| severity.as_deref().is_none_or(|s| a.action.severity == s))
        .filter(|a| {
            owner.as_deref().is_none_or(|o| {
                a.owner
                    .as_deref()
                    .is_some_and(|owner| owner.to_lowercase().contains(o))
            })
        })
        .filter(|a| filter.overdue != Some(true) || a.overdue)
        .filter(|a| agent.as_deref().is_none_or(|id| a.action.agent_id == id))
        .collect();
    matching.sort_by_key(|a| std::cmp::Reverse(a.action.id));
    let total = matching.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = filter.page.unwrap_or(1).clamp(1, pages);
    Ok(ActionPage {
        total,
        page,
        pages,
        actions: matching
            .into_iter()
            .skip((page - 1) * PAGE_SIZE)
            .take(PAGE_SIZE)
            .collect(),
    })
}

/// One action as of `as_of_ms`; `None` when it did not exist then.
pub fn action(store: &Store, id: i64, as_of_ms: i64) -> Result<Option<ActionView>, StoreError> {
    Ok(store
        .action(id)?
        .and_then(|(action, events)| ActionView::at(action, events, as_of_ms)))
}

/// A step a person asks for, as the web form and the API send it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Step {
    /// ack, resolve, accept-risk or comment.
    pub step: String,
    pub reason: String,
    /// For ack: who will remediate.
    #[serde(default)]
    pub owner: Option<String>,
    /// For resolve: why the deviation happened.
    #[serde(default)]
    pub root_cause: Option<String>,
    /// For accept-risk: until when, as `2026-12-31` or RFC 3339.
    #[serde(default)]
    pub expires: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The step's fields are wrong: the person can fix them.
    #[error("{0}")]
    Refused(String),
    /// The action's state does not allow the step; the message names the steps it allows.
    #[error("{0}")]
    Conflict(String),
    #[error(
        "your role ({0}) cannot change corrective actions: ask an administrator for the reviewer role"
    )]
    Forbidden(&'static str),
    #[error("no corrective action {0}")]
    NotFound(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a step came from, for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// `web` or `api`.
    pub channel: &'a str,
    pub remote_addr: Option<&'a str>,
}

/// Records `step` on action `id` by `who`, and the attempt (taken or refused) in the audit log.
pub fn take_step(
    store: &Store,
    id: i64,
    step: &Step,
    who: &Principal,
    origin: Origin<'_>,
    now_ms: i64,
) -> Result<EventRow, StepError> {
    let result = decide(store, id, step, who, now_ms);
    let detail = match &result {
        Ok(event) => format!("{} -> {}: {}", step.step, event.state, event.reason),
        Err(e) => format!("{}: {e}", step.step),
    };
    store.append_audit(&AuditEntry {
        at_ms: now_ms,
        actor: &who.name,
        role: Some(who.role.as_str()),
        channel: origin.channel,
        action: "action.step",
        target: &format!("action {id}"),
        ok: result.is_ok(),
        detail: &detail,
        remote_addr: origin.remote_addr,
    })?;
    result
}

fn decide(
    store: &Store,
    id: i64,
    step: &Step,
    who: &Principal,
    now_ms: i64,
) -> Result<EventRow, StepError> {
    if who.role < Role::Reviewer {
        return Err(StepError::Forbidden(who.role.as_str()));
    }
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let request = match step.step.as_str() {
        "ack" => Request::Ack {
            owner: text(&step.owner),
        },
        "resolve" => Request::Resolve {
            root_cause: text(&step.root_cause),
        },
        "accept-risk" => {
            let expires = text(&step.expires);
            let expires_at_ms = crate::cli::parse_moment(&expires, crate::cli::DayEdge::End)
                .map_err(|e| StepError::Refused(format!("the expiry: {e}")))?;
            Request::AcceptRisk { expires_at_ms }
        }
        "comment" => Request::Comment,
        other => {
            return Err(StepError::Refused(format!(
                "unknown step {other:?}: use ack, resolve, accept-risk or comment"
            )));
        }
    };
    if store.action(id)?.is_none() {
        return Err(StepError::NotFound(id));
    }
    actions::request(store, id, &request, &who.name, &step.reason, now_ms).map_err(|e| match e {
        ActionError::Store(e) | ActionError::Event(EventError::Store(e)) => StepError::Store(e),
        ActionError::Event(EventError::NoSuchAction(id)) => StepError::NotFound(id),
        conflict @ ActionError::Event(EventError::Refused { .. }) => {
            StepError::Conflict(conflict.to_string())
        }
        ActionError::Invalid(why) => StepError::Refused(why),
    })
}

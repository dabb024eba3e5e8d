//! Corrective actions (ISO/IEC 27001:2022 clause 10.2): one per (host, rule) deviation, with a
//! lifecycle whose every step is an appended event naming its time, actor, reason and evidence.
//!
//! People acknowledge, resolve, accept risk and comment (`request`); the collector opens,
//! verifies and reopens from evidence (`drive`). Only evidence that arrived after an action's
//! newest event can move it, so a resolution is verified by what came after it.

use serde::Serialize;

use crate::evaluate::ActivePolicy;
use crate::model::format_unix_ms;
use crate::policy::judge::{HostView, Judgement, RuleOutcome};
use crate::policy::{Condition, Rule};
use crate::store::{ActionRow, ActionTx, EventError, EventRow, Store, StoreError};

/// The actor of transitions the collector makes from evidence.
pub const SYSTEM: &str = "system";
/// How far an agent's clock may lag before evidence it observed counts as observed earlier.
pub const CLOCK_TOLERANCE_MS: i64 = 15 * 60_000;
/// The longest a risk may be accepted for before it must be looked at again.
pub const MAX_RISK_ACCEPTANCE_DAYS: i64 = 3 * 365;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Open,
    Acknowledged,
    Resolved,
    Verified,
    Reopened,
    RiskAccepted,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Acknowledged => "acknowledged",
            State::Resolved => "resolved",
            State::Verified => "verified",
            State::Reopened => "reopened",
            State::RiskAccepted => "risk_accepted",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        [
            State::Open,
            State::Acknowledged,
            State::Resolved,
            State::Verified,
            State::Reopened,
            State::RiskAccepted,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Still waiting for someone to act: the states an action can be overdue in.
    pub fn is_pending(self) -> bool {
        matches!(self, State::Open | State::Acknowledged | State::Reopened)
    }

    /// What people may do in this state, as the CLI names it.
    pub fn allowed(self) -> &'static [&'static str] {
        match self {
            State::Open | State::Reopened => &["ack", "resolve", "accept-risk", "comment"],
            State::Acknowledged => &["resolve", "accept-risk", "comment"],
            State::Resolved | State::Verified | State::RiskAccepted => &["comment"],
        }
    }
}

/// A step a person asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Takes ownership; the due date stays the one the severity gave.
    Ack {
        owner: String,
    },
    /// Says it is fixed: the reason says what was done.
    Resolve {
        root_cause: String,
    },
    /// Accepts the deviation until `expires_at_ms`; it reopens then.
    AcceptRisk {
        expires_at_ms: i64,
    },
    Comment,
}

impl Request {
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ack { .. } => "ack",
            Request::Resolve { .. } => "resolve",
            Request::AcceptRisk { .. } => "accept-risk",
            Request::Comment => "comment",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records a person's step on action `id`, refusing it (with the allowed steps named) when the
/// action's state does not permit it.
pub fn request(
    store: &Store,
    id: i64,
    request: &Request,
    actor: &str,
    reason: &str,
    now_ms: i64,
) -> Result<EventRow, ActionError> {
    let actor = actor.trim();
    let reason = reason.trim();
    if actor.is_empty() {
        return Err(ActionError::Invalid(
            "the actor is empty: name the person taking this step".into(),
        ));
    }
    if actor.eq_ignore_ascii_case(SYSTEM) {
        return Err(ActionError::Invalid(format!(
            "actor {actor:?} is reserved for steps the collector takes from evidence: name the person"
        )));
    }
    if reason.is_empty() {
        return Err(ActionError::Invalid(
            "the reason is empty: say why, for the record".into(),
        ));
    }
    match request {
        Request::Ack { owner } if owner.trim().is_empty() => {
            return Err(ActionError::Invalid(
                "the owner is empty: name who will remediate".into(),
            ));
        }
        Request::Resolve { root_cause } if root_cause.trim().is_empty() => {
            return Err(ActionError::Invalid(
                "the root cause is empty: say why the deviation happened".into(),
            ));
        }
        Request::AcceptRisk { expires_at_ms } if *expires_at_ms <= now_ms => {
            return Err(ActionError::Invalid(format!(
                "the expiry {} is not in the future: a risk is accepted until a later date",
                format_unix_ms(*expires_at_ms)
            )));
        }
        Request::AcceptRisk { expires_at_ms }
            if *expires_at_ms - now_ms > MAX_RISK_ACCEPTANCE_DAYS * 86_400_000 =>
        {
            return Err(ActionError::Invalid(format!(
                "the expiry {} is more than {MAX_RISK_ACCEPTANCE_DAYS} days away: accept the risk for a shorter time and review it again",
                format_unix_ms(*expires_at_ms)
            )));
        }
        _ => {}
    }
    let event = store.append_event(id, |current| {
        let state = State::parse(&current.state)
            .ok_or_else(|| format!("its state {:?} is unknown", current.state))?;
        if !state.allowed().contains(&request.name()) {
            return Err(format!(
                "`{}` is not allowed; allowed: {}",
                request.name(),
                state.allowed().join(", ")
            ));
        }
        let mut event = carried(current, now_ms.max(current.at_ms + 1), actor, reason);
        match request {
            Request::Ack { owner } => {
                event.kind = "acknowledged".into();
                event.state = State::Acknowledged.as_str().into();
                event.owner = Some(owner.trim().to_owned());
            }
            Request::Resolve { root_cause } => {
                event.kind = "resolved".into();
                event.state = State::Resolved.as_str().into();
                event.root_cause = Some(root_cause.trim().to_owned());
            }
            Request::AcceptRisk { expires_at_ms } => {
                event.kind = "risk_accepted".into();
                event.state = State::RiskAccepted.as_str().into();
                event.risk_expires_at_ms = Some(*expires_at_ms);
            }
            Request::Comment => {
                event.kind = "comment".into();
            }
        }
        Ok(Some(event))
    })?;
    event.ok_or_else(|| ActionError::Invalid("nothing was recorded".into()))
}

/// The next event, carrying the owner, due date and risk expiry forward.
fn carried(current: &EventRow, now_ms: i64, actor: &str, reason: &str) -> EventRow {
    EventRow {
        at_ms: now_ms,
        kind: current.kind.clone(),
        state: current.state.clone(),
        actor: actor.to_owned(),
        reason: reason.to_owned(),
        owner: current.owner.clone(),
        due_at_ms: current.due_at_ms,
        risk_expires_at_ms: current.risk_expires_at_ms,
        ..EventRow::default()
    }
}

/// Moves the (host, rule) action as the new judgement requires: opens it on a first failure,
/// verifies it on compliant evidence, reopens it when the deviation returns or an accepted
/// risk expires. Returns the event recorded, if any.
pub fn drive(
    actions: &ActionTx<'_>,
    active: &ActivePolicy,
    rule: &Rule,
    host: &HostView,
    judgement: &Judgement,
    now_ms: i64,
) -> Result<Option<EventRow>, StoreError> {
    let existing = actions.action_for(&host.agent_id, &rule.id)?;
    let current = existing.as_ref().map(|(_, event)| event);
    let Some(event) = event_for(current, active, rule, judgement, now_ms) else {
        return Ok(None);
    };
    let Some((action, _)) = existing else {
        let opened = ActionRow {
            id: 0,
            agent_id: host.agent_id.clone(),
            hostname: host.hostname.clone(),
            rule_id: rule.id.clone(),
            rule_title: rule.title.clone(),
            severity: rule.severity.as_str().into(),
            opened_at_ms: now_ms,
        };
        let id = actions.open(&opened, &event)?;
        return Ok(Some(EventRow {
            action_id: id,
            ..event
        }));
    };
    let id = actions.append(action.id, &event)?;
    Ok(Some(EventRow {
        id,
        action_id: action.id,
        ..event
    }))
}

/// The event `drive` records for `judgement`, given the newest event of the (host, rule)
/// pair's action (`None`: none was ever opened); `None` when the action stays as it is. Pure,
/// so a pass can find the few actions that move on a read connection and hold the writer
/// only for those; `drive` decides again inside its transaction.
pub fn event_for(
    current: Option<&EventRow>,
    active: &ActivePolicy,
    rule: &Rule,
    judgement: &Judgement,
    now_ms: i64,
) -> Option<EventRow> {
    let due_ms = due_ms(active, rule);
    let Some(current) = current else {
        return (judgement.outcome == RuleOutcome::Fail).then(|| EventRow {
            at_ms: now_ms,
            kind: "opened".into(),
            state: State::Open.as_str().into(),
            actor: SYSTEM.into(),
            reason: judgement.detail.clone(),
            due_at_ms: Some(now_ms.saturating_add(due_ms)),
            policy_version: Some(active.version),
            evidence: judgement.evidence.clone(),
            ..EventRow::default()
        });
    };
    next_event(current, active, rule, judgement, due_ms, now_ms)
}

/// How long after opening an action of `rule` is due.
fn due_ms(active: &ActivePolicy, rule: &Rule) -> i64 {
    i64::from(active.policy.due_days(rule.severity)) * 86_400_000
}

/// The event the collector records for an action whose newest event is `current`, given a
/// new judgement; `None` when the judgement does not move it.
fn next_event(
    current: &EventRow,
    active: &ActivePolicy,
    rule: &Rule,
    judgement: &Judgement,
    due_ms: i64,
    now_ms: i64,
) -> Option<EventRow> {
    let state = State::parse(&current.state)?;
    // Only evidence that arrived, and was observed, after the newest event may move the
    // action: a late delivery from an agent's spool must not undo a resolution. A verdict
    // that rests on silence counts once the silence outlasted its threshold since then.
    let fresh = match (
        judgement.decided_by_received_ms,
        judgement.decided_by_observed_ms,
    ) {
        (Some(received), observed) => {
            received > current.at_ms
                && observed.is_none_or(|o| o > current.at_ms - CLOCK_TOLERANCE_MS)
        }
        (None, _) => match rule.condition {
            Condition::AgentReporting { max_silence_ms } => {
                now_ms.saturating_sub(current.at_ms) > max_silence_ms
            }
            _ => true,
        },
    };
    // Events of one action never go back in time, whatever the clocks of the steps.
    let now_ms = now_ms.max(current.at_ms + 1);
    let expired =
        state == State::RiskAccepted && current.risk_expires_at_ms.is_some_and(|t| now_ms >= t);
    let mut event = carried(current, now_ms, SYSTEM, &judgement.detail);
    event.policy_version = Some(active.version);
    event.evidence = judgement.evidence.clone();
    let reopen = |mut event: EventRow, why: String| {
        event.kind = "reopened".into();
        event.state = State::Reopened.as_str().into();
        event.reason = why;
        event.due_at_ms = Some(now_ms.saturating_add(due_ms));
        event.risk_expires_at_ms = None;
        Some(event)
    };
    match judgement.outcome {
        RuleOutcome::Pass if fresh && state != State::Verified => {
            event.kind = "verified".into();
            event.state = State::Verified.as_str().into();
            event.reason = match state {
                State::Resolved => format!(
                    "compliant evidence arrived after the resolution: {}",
                    judgement.detail
                ),
                State::RiskAccepted => format!(
                    "compliant evidence arrived while the risk was accepted: {}",
                    judgement.detail
                ),
                _ => format!(
                    "compliant evidence arrived; no one resolved it by hand: {}",
                    judgement.detail
                ),
            };
            event.risk_expires_at_ms = None;
            Some(event)
        }
        RuleOutcome::Fail if fresh && state == State::Verified => reopen(
            event,
            format!("the deviation came back: {}", judgement.detail),
        ),
        RuleOutcome::Fail if fresh && state == State::Resolved => reopen(
            event,
            format!(
                "evidence after the resolution still fails: {}",
                judgement.detail
            ),
        ),
        _ if expired => reopen(
            event,
            format!(
                "the risk acceptance expired {}: {}",
                current
                    .risk_expires_at_ms
                    .map(format_unix_ms)
                    .unwrap_or_default(),
                judgement.detail
            ),
        ),
        _ => None,
    }
}

/// An action with its current state, for lists, `show` and KPIs.
#[derive(Debug, Clone, Serialize)]
pub struct ActionView {
    #[serde(flatten)]
    pub action: ActionRow,
    pub state: State,
    pub owner: Option<String>,
    pub due_at_ms: Option<i64>,
    pub overdue: bool,
    pub risk_expires_at_ms: Option<i64>,
    pub events: Vec<EventRow>,
}

impl ActionView {
    /// The action as its events up to `now_ms` leave it; `None` before its first event.
    pub fn at(action: ActionRow, events: Vec<EventRow>, now_ms: i64) -> Option<ActionView> {
        let last = events.iter().rfind(|e| e.at_ms <= now_ms)?.clone();
        let state = State::parse(&last.state)?;
        Some(ActionView {
            overdue: state.is_pending() && last.due_at_ms.is_some_and(|d| now_ms > d),
            action,
            state,
            owner: last.owner,
            due_at_ms: last.due_at_ms,
            risk_expires_at_ms: last.risk_expires_at_ms,
            events: events.into_iter().filter(|e| e.at_ms <= now_ms).collect(),
        })
    }
}

/// Every action as of `as_of_ms`.
pub fn list(store: &Store, as_of_ms: i64) -> Result<Vec<ActionView>, StoreError> {
    Ok(store
        .actions_with_events(Some(as_of_ms))?
        .into_iter()
        .filter_map(|(action, events)| ActionView::at(action, events, as_of_ms))
        .collect())
}

/// One agent's actions as of `as_of_ms` (the same as `list` filtered to the agent).
pub fn list_for(
    store: &Store,
    agent_id: &str,
    as_of_ms: i64,
) -> Result<Vec<ActionView>, StoreError> {
    Ok(store
        .agent_actions_with_events(agent_id, as_of_ms)?
        .into_iter()
        .filter_map(|(action, events)| ActionView::at(action, events, as_of_ms))
        .collect())
}

#[cfg(test)]
mod tests;

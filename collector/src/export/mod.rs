//! Exports auditors accept, for a period `[from, to)`: CSV of evidence, rule results and
//! corrective actions (`csv`), a printable HTML audit report (`report`), and OSCAL assessment
//! results and a plan of action and milestones (`oscal`).
//!
//! Every export reads the store only; the CLI (`evident-collector export`) and the web page
//! call the same functions. Large outputs (CSV) are streamed to a writer a page at a time.
//! Judgements (control status, pass rates) come from `status` and `kpi`, so an export says
//! exactly what `status --as-of` and `report kpi` say for the same moments.

pub mod csv;
pub mod oscal;
pub mod report;

use crate::actions::{self, ActionView, State};
use crate::evaluate::{self, HostJudgements};
use crate::kpi::KpiError;
use crate::model::format_unix_ms;
use crate::status::{self, PolicyInForce, StatusError, StatusReport};
use crate::store::{PolicyRow, Store, StoreError};

/// A period `[from_ms, to_ms)` in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl Period {
    /// A period that is not empty, or an error naming what to give instead.
    pub fn new(from_ms: i64, to_ms: i64) -> Result<Period, ExportError> {
        if to_ms <= from_ms {
            return Err(ExportError::Period(format!(
                "the end {} is not after the start {}: give an end after the start",
                format_unix_ms(to_ms),
                format_unix_ms(from_ms)
            )));
        }
        Ok(Period { from_ms, to_ms })
    }

    /// The period people write: `from` a date (from the start of that UTC day) or RFC 3339,
    /// `to` a date (to the end of that whole day) or RFC 3339 (exclusive). The CLI and the
    /// API read periods the same way, so one text means one period wherever it is given.
    pub fn parse(from: &str, to: &str) -> Result<Period, ExportError> {
        let from_ms = crate::cli::parse_moment(from, crate::cli::DayEdge::Start)
            .map_err(|e| ExportError::Period(format!("from: {e:#}")))?;
        let to_ms = crate::cli::parse_moment(to, crate::cli::DayEdge::End)
            .map_err(|e| ExportError::Period(format!("to: {e:#}")))?;
        // A bare date means the whole day: up to and including its last millisecond.
        let to_ms = if is_date(to) {
            to_ms.saturating_add(1)
        } else {
            to_ms
        };
        Period::new(from_ms, to_ms)
    }

    /// The moment the period is judged at: its last millisecond, or `now_ms` for a period that
    /// has not ended yet (a judgement of the future would age evidence that may still come).
    pub fn judged_at(&self, now_ms: i64) -> i64 {
        (self.to_ms - 1).min(now_ms).max(self.from_ms)
    }
}

/// A bare date rather than a time: RFC 3339 times always carry a `T` (or `t`).
fn is_date(text: &str) -> bool {
    !text.trim().contains(['T', 't'])
}

/// What an export states about where it came from, besides the store.
#[derive(Debug, Clone)]
pub struct ExportContext {
    /// SHA-256 of the collector's CA certificate (`evident-collector ca fingerprint`), which
    /// ties the document to the collector whose agents signed the evidence.
    pub ca_fingerprint: Option<String>,
    /// When the export is made; also the latest moment judged.
    pub generated_at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Period(String),
    /// OSCAL requires at least one POA&M item, and the collector does not invent one.
    #[error(
        "no corrective action was open at {0}: an OSCAL POA&M needs at least one item, so there is nothing to export"
    )]
    NothingToPlan(String),
    #[error("unknown export {0:?}: use evidence, results or actions")]
    UnknownCsv(String),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Kpi(#[from] KpiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("write the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("write the CSV: {0}")]
    Csv(#[from] ::csv::Error),
    #[error("render the report: {0}")]
    Render(#[from] askama::Error),
    #[error("write the JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// RFC 3339 in UTC with milliseconds when there are any (an ISO 8601 profile, and the form
/// OSCAL's `date-time-with-timezone` pattern takes); falls back to `format_unix_ms` for
/// moments `time` cannot hold.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format_unix_ms(ms))
}

/// What the report and the OSCAL documents say about a period: the judgement at its end and
/// the trail that led there.
#[derive(Debug)]
struct PeriodFacts {
    judged_at_ms: i64,
    in_force: PolicyInForce,
    hosts: Vec<HostJudgements>,
    status: StatusReport,
    /// Every policy version in force at some moment of the period, oldest first.
    policies: Vec<PolicyRow>,
    /// Actions that were pending at some moment of the period, with their events up to its
    /// end, by id.
    actions: Vec<ActionView>,
}

impl PeriodFacts {
    fn gather(store: &Store, period: Period, now_ms: i64) -> Result<PeriodFacts, ExportError> {
        let judged_at_ms = period.judged_at(now_ms);
        let in_force = status::policy_in_force(store, judged_at_ms)?;
        let hosts = evaluate::evaluate(store, &in_force.policy, judged_at_ms, None)?;
        let status = status::report(&in_force, &status::verdicts(&hosts), judged_at_ms);

        let all = store.policies()?;
        let policies = all
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                let until = all.get(i + 1).map_or(i64::MAX, |next| next.activated_at_ms);
                p.activated_at_ms <= judged_at_ms && until > period.from_ms
            })
            .map(|(_, p)| p.clone())
            .collect();

        let actions = store
            .actions_with_events(Some(judged_at_ms))?
            .into_iter()
            .filter_map(|(action, events)| {
                let touched = events
                    .iter()
                    .any(|e| (period.from_ms..=judged_at_ms).contains(&e.at_ms));
                let view = ActionView::at(action, events, judged_at_ms)?;
                (touched || view.state != State::Verified).then_some(view)
            })
            .collect();
        Ok(PeriodFacts {
            judged_at_ms,
            in_force,
            hosts,
            status,
            policies,
            actions,
        })
    }

    /// The open actions at the end of the period: not verified, so still owed.
    fn open_actions(&self) -> impl Iterator<Item = &ActionView> {
        self.actions
            .iter()
            .filter(|a| a.state != actions::State::Verified)
    }
}

#[cfg(test)]
mod tests;

//! KPIs for monitoring and management review (ISO/IEC 27001:2022 clauses 9.1 and 9.3): control
//! pass rates over time, time to remediate, open and overdue actions, evidence freshness.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::actions::{self, State};
use crate::evaluate;
use crate::model::format_unix_ms;
use crate::policy::Condition;
use crate::status::{self, StatusError};
use crate::store::Store;

const DAY_MS: i64 = 86_400_000;
/// Points in a trend: a year of days.
pub const MAX_POINTS: i64 = 366;
/// Evidence older than this counts as stale when the policy has no `agent_reporting` rule.
const DEFAULT_STALE_MS: i64 = DAY_MS;

#[derive(Debug, Clone, Serialize)]
pub struct KpiReport {
    pub from: String,
    pub to: String,
    pub policy_name: String,
    pub policy_version: Option<i64>,
    /// Per control, the share of in-scope hosts passing at the end of each day.
    pub controls: Vec<ControlTrend>,
    pub remediation: Remediation,
    /// Actions by severity at `to`.
    pub actions: BTreeMap<String, ActionCounts>,
    pub freshness: Freshness,
}

#[derive(Debug, Clone, Serialize)]
pub struct ControlTrend {
    pub control: String,
    pub title: String,
    pub points: Vec<TrendPoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrendPoint {
    pub at: String,
    pub hosts_in_scope: usize,
    pub hosts_passing: usize,
    /// `hosts_passing / hosts_in_scope`, or `None` with nothing in scope.
    pub share_passing: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Remediation {
    /// Deviations (from opening or reopening to verification) verified in the period.
    pub verified: usize,
    pub mean_hours: Option<f64>,
    pub p90_hours: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ActionCounts {
    pub open: usize,
    pub overdue: usize,
    pub risk_accepted: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Freshness {
    pub hosts: usize,
    pub never_reported: usize,
    pub mean_age_hours: Option<f64>,
    pub max_age_hours: Option<f64>,
    /// Hosts whose newest evidence is older than `stale_after_hours`.
    pub stale: usize,
    pub stale_after_hours: f64,
}

/// The KPIs for `from_ms..=to_ms`.
pub fn report(store: &Store, from_ms: i64, to_ms: i64) -> Result<KpiReport, KpiError> {
    if to_ms < from_ms {
        return Err(KpiError::Range(format!(
            "--to {} is before --from {}",
            format_unix_ms(to_ms),
            format_unix_ms(from_ms)
        )));
    }
    let days = (to_ms - from_ms) / DAY_MS + 1;
    if days > MAX_POINTS {
        return Err(KpiError::Range(format!(
            "the period has {days} days: ask for at most {MAX_POINTS} at a time"
        )));
    }
    let at_end = status::policy_in_force(store, to_ms)?;

    // One point at the end of each day, the last one at `to`.
    let mut trends: BTreeMap<String, ControlTrend> = BTreeMap::new();
    let mut order = Vec::new();
    for day in 0..days {
        let at = (from_ms + (day + 1) * DAY_MS - 1).min(to_ms);
        let in_force = status::policy_in_force(store, at)?;
        let hosts = evaluate::evaluate(store, &in_force.policy, at, None)?;
        let snapshot = status::report(&in_force, &status::verdicts(&hosts), at);
        for c in snapshot.controls {
            let trend = trends.entry(c.control.clone()).or_insert_with(|| {
                order.push(c.control.clone());
                ControlTrend {
                    control: c.control.clone(),
                    title: c.title.clone(),
                    points: Vec::new(),
                }
            });
            trend.points.push(TrendPoint {
                at: format_unix_ms(at),
                hosts_in_scope: c.hosts_in_scope,
                hosts_passing: c.hosts_passing,
                share_passing: (c.hosts_in_scope > 0)
                    .then(|| c.hosts_passing as f64 / c.hosts_in_scope as f64),
            });
        }
    }

    let mut durations = Vec::new();
    let mut counts: BTreeMap<String, ActionCounts> = BTreeMap::new();
    for (action, events) in store.actions_with_events(Some(to_ms))? {
        let mut started = None;
        for e in &events {
            match e.kind.as_str() {
                "opened" | "reopened" => started = Some(e.at_ms),
                "verified" => {
                    if let Some(start) = started.take()
                        && (from_ms..=to_ms).contains(&e.at_ms)
                    {
                        durations.push(e.at_ms - start);
                    }
                }
                _ => {}
            }
        }
        if let Some(view) = actions::ActionView::at(action, events, to_ms) {
            let c = counts.entry(view.action.severity.clone()).or_default();
            if view.state.is_pending() || view.state == State::Resolved {
                c.open += 1;
            }
            if view.overdue {
                c.overdue += 1;
            }
            if view.state == State::RiskAccepted {
                c.risk_accepted += 1;
            }
        }
    }
    durations.sort_unstable();
    let hours = |ms: i64| ms as f64 / 3_600_000.0;
    let remediation = Remediation {
        verified: durations.len(),
        mean_hours: (!durations.is_empty())
            .then(|| hours(durations.iter().sum::<i64>()) / durations.len() as f64),
        p90_hours: percentile(&durations, 90).map(hours),
    };

    let stale_ms = at_end
        .policy
        .rules
        .iter()
        .find_map(|r| match r.condition {
            Condition::AgentReporting { max_silence_ms } => Some(max_silence_ms),
            _ => None,
        })
        .unwrap_or(DEFAULT_STALE_MS);
    let mut ages = Vec::new();
    let mut never = 0;
    let hosts = store.hosts_as_of(to_ms)?;
    let evidence = store.evidence_snapshot()?;
    for host in &hosts {
        match evidence.newest_arrival(&host.agent_id, to_ms)? {
            Some((_, _, received)) => ages.push(to_ms - received),
            None => never += 1,
        }
    }
    let freshness = Freshness {
        hosts: hosts.len(),
        never_reported: never,
        mean_age_hours: (!ages.is_empty())
            .then(|| hours(ages.iter().sum::<i64>()) / ages.len() as f64),
        max_age_hours: ages.iter().max().copied().map(hours),
        stale: ages.iter().filter(|a| **a > stale_ms).count() + never,
        stale_after_hours: hours(stale_ms),
    };

    Ok(KpiReport {
        from: format_unix_ms(from_ms),
        to: format_unix_ms(to_ms),
        policy_name: at_end.policy.name.clone(),
        policy_version: at_end.version,
        controls: order
            .into_iter()
            .filter_map(|c| trends.remove(&c))
            .collect(),
        remediation,
        actions: counts,
        freshness,
    })
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[derive(Debug, thiserror::Error)]
pub enum KpiError {
    #[error("{0}")]
    Range(String),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Text for people.
pub fn render(report: &KpiReport) -> String {
    let mut out = format!(
        "KPIs from {} to {} under policy {:?}\n\ncontrol pass rate (in-scope hosts passing, end of each day):\n",
        report.from, report.to, report.policy_name
    );
    for c in &report.controls {
        let points: Vec<String> = c
            .points
            .iter()
            .map(|p| match p.share_passing {
                Some(share) => format!("{:.0}%", share * 100.0),
                None => "-".into(),
            })
            .collect();
        out.push_str(&format!(
            "  {:<28} {}  ({})\n",
            c.control,
            points.join(" "),
            c.title
        ));
    }
    let r = &report.remediation;
    out.push_str(&format!(
        "\ntime to remediate: {} deviation(s) verified in the period; mean {}, 90th percentile {}\n",
        r.verified,
        r.mean_hours
            .map_or("-".into(), |h| format!("{h:.1} h")),
        r.p90_hours.map_or("-".into(), |h| format!("{h:.1} h"))
    ));
    out.push_str("\ncorrective actions at the end of the period:\n");
    if report.actions.is_empty() {
        out.push_str("  none\n");
    }
    for (severity, c) in &report.actions {
        out.push_str(&format!(
            "  {severity:<9} {} open, {} overdue, {} risk accepted\n",
            c.open, c.overdue, c.risk_accepted
        ));
    }
    let f = &report.freshness;
    out.push_str(&format!(
        "\nevidence freshness: {} host(s), newest evidence mean age {}, oldest {}, {} stale (over {:.0} h, {} never reported)\n",
        f.hosts,
        f.mean_age_hours.map_or("-".into(), |h| format!("{h:.1} h")),
        f.max_age_hours.map_or("-".into(), |h| format!("{h:.1} h")),
        f.stale,
        f.stale_after_hours,
        f.never_reported
    ));
    out
}

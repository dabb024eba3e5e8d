//! The audit report of a period: one self-contained HTML file (no external assets) that prints
//! to PDF with one control per page. Per control: its rules, its pass rate over the period,
//! sample evidence, deviations and the trails of their corrective actions.
//!
//! Rendered with askama (`templates/export/report.html`): the template is checked at compile
//! time and every value is HTML-escaped, so a hostname or a reason an agent or a person wrote
//! is shown as text, never run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use askama::Template;

use super::{ExportContext, ExportError, Period, PeriodFacts, rfc3339};
use crate::kpi;
use crate::model::{CheckKind, format_unix_ms};
use crate::policy::judge::RuleOutcome;
use crate::store::Store;

/// Evidence items shown per control.
const SAMPLES: usize = 5;
/// Deviations (failing rule results) listed per control; the rest are counted.
const DEVIATIONS: usize = 50;
/// Up to this many days the trend shows every day; beyond it, every seventh.
const DAILY_UP_TO: usize = 35;

/// Writes the audit report of `period` to `out`.
pub fn write_report(
    store: &Store,
    period: Period,
    context: &ExportContext,
    mut out: impl Write,
) -> Result<(), ExportError> {
    let page = build(store, period, context)?;
    out.write_all(page.render()?.as_bytes())?;
    out.flush()?;
    Ok(())
}

#[derive(Template)]
#[template(path = "export/report.html")]
struct ReportPage {
    from: String,
    to: String,
    judged_at: String,
    generated_at: String,
    ca_fingerprint: String,
    policy_name: String,
    policy_note: Option<String>,
    policies: Vec<PolicyLine>,
    hosts: usize,
    controls: Vec<ControlSection>,
}

struct PolicyLine {
    version: i64,
    name: String,
    sha256: String,
    activated_at: String,
}

struct ControlSection {
    control: String,
    framework: String,
    title: String,
    status: &'static str,
    hosts_passing: usize,
    hosts_in_scope: usize,
    rules: Vec<RuleLine>,
    trend: Vec<TrendLine>,
    samples: Vec<SampleLine>,
    deviations: Vec<DeviationLine>,
    more_deviations: usize,
    actions: Vec<ActionSection>,
}

struct RuleLine {
    id: String,
    title: String,
    severity: &'static str,
    status: &'static str,
    hosts_passing: usize,
    hosts_in_scope: usize,
}

struct TrendLine {
    at: String,
    /// Whole percent, or `None` with no host in scope.
    percent: Option<u32>,
    hosts_passing: usize,
    hosts_in_scope: usize,
}

struct SampleLine {
    hostname: String,
    agent_id: String,
    sequence: u64,
    check: &'static str,
    observed_at: String,
    received_at: String,
    hash: String,
}

struct DeviationLine {
    at: String,
    hostname: String,
    rule_id: String,
    outcome: String,
    detail: String,
}

struct ActionSection {
    id: i64,
    hostname: String,
    agent_id: String,
    rule_id: String,
    severity: String,
    state: &'static str,
    owner: String,
    due_at: String,
    overdue: bool,
    events: Vec<EventLine>,
}

struct EventLine {
    at: String,
    kind: String,
    state: String,
    actor: String,
    reason: String,
    extra: String,
}

fn build(
    store: &Store,
    period: Period,
    context: &ExportContext,
) -> Result<ReportPage, ExportError> {
    let facts = PeriodFacts::gather(store, period, context.generated_at_ms)?;
    // The pass rate over time is the KPI's, day by day; reused, not recomputed here.
    let kpis = kpi::report(store, period.from_ms, facts.judged_at_ms)?;
    let hostnames: BTreeMap<&str, &str> = facts
        .hosts
        .iter()
        .map(|h| (h.host.agent_id.as_str(), h.host.hostname.as_str()))
        .collect();

    // Failing results stored in the period, by rule, read a page at a time.
    let mut deviations: BTreeMap<String, (Vec<DeviationLine>, usize)> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = store.results_page(period.from_ms, period.to_ms, after, 1_000)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for row in page {
            let r = row.result;
            if !matches!(
                RuleOutcome::parse(&r.outcome),
                Some(RuleOutcome::Fail | RuleOutcome::NoEvidence)
            ) {
                continue;
            }
            let (lines, more) = deviations.entry(r.rule_id.clone()).or_default();
            if lines.len() < DEVIATIONS {
                lines.push(DeviationLine {
                    at: format_unix_ms(r.at_ms),
                    hostname: row.hostname,
                    rule_id: r.rule_id,
                    outcome: r.outcome,
                    detail: r.detail,
                });
            } else {
                *more += 1;
            }
        }
    }

    let mut controls = Vec::new();
    for c in &facts.status.controls {
        let rule_ids: BTreeSet<&str> = c.rules.iter().map(|r| r.rule_id.as_str()).collect();
        let trend = kpis
            .controls
            .iter()
            .find(|t| t.control == c.control)
            .map(|t| sampled(&t.points))
            .unwrap_or_default();

        // Sample evidence: what the judgements at the end of the period rest on, failing
        // hosts first, since those are what an auditor will ask about.
        let mut wanted: Vec<(&str, u64, bool)> = Vec::new();
        for h in &facts.hosts {
            for (rule_id, j) in &h.judgements {
                if rule_ids.contains(rule_id.as_str()) {
                    let failing = matches!(j.outcome, RuleOutcome::Fail | RuleOutcome::NoEvidence);
                    for seq in &j.evidence {
                        wanted.push((h.host.agent_id.as_str(), *seq, !failing));
                    }
                }
            }
        }
        wanted.sort_by_key(|(_, _, passing)| *passing);
        let mut seen = BTreeSet::new();
        let mut samples = Vec::new();
        for (agent_id, sequence, _) in wanted {
            if samples.len() == SAMPLES {
                break;
            }
            if !seen.insert((agent_id, sequence)) {
                continue;
            }
            if let Some(e) = store.evidence_ref(agent_id, sequence)? {
                samples.push(SampleLine {
                    hostname: hostnames.get(agent_id).copied().unwrap_or("").to_owned(),
                    agent_id: e.agent_id,
                    sequence: e.sequence,
                    check: CheckKind::from_number(e.check_kind).map_or("unknown", |k| k.as_str()),
                    observed_at: format_unix_ms(e.observed_at_ms),
                    received_at: format_unix_ms(e.received_at_ms),
                    hash: hex::encode(e.hash),
                });
            }
        }

        let mut control_deviations = Vec::new();
        let mut more_deviations = 0;
        for rule_id in &rule_ids {
            if let Some((lines, more)) = deviations.get(*rule_id) {
                control_deviations.extend(lines.iter().map(|d| DeviationLine {
                    at: d.at.clone(),
                    hostname: d.hostname.clone(),
                    rule_id: d.rule_id.clone(),
                    outcome: d.outcome.clone(),
                    detail: d.detail.clone(),
                }));
                more_deviations += more;
            }
        }
        control_deviations.sort_by(|a, b| a.at.cmp(&b.at));

        let actions = facts
            .actions
            .iter()
            .filter(|a| rule_ids.contains(a.action.rule_id.as_str()))
            .map(|a| ActionSection {
                id: a.action.id,
                hostname: a.action.hostname.clone(),
                agent_id: a.action.agent_id.clone(),
                rule_id: a.action.rule_id.clone(),
                severity: a.action.severity.clone(),
                state: a.state.as_str(),
                owner: a.owner.clone().unwrap_or_else(|| "-".into()),
                due_at: a.due_at_ms.map_or("-".into(), format_unix_ms),
                overdue: a.overdue,
                events: a
                    .events
                    .iter()
                    .map(|e| {
                        let mut extra = Vec::new();
                        if let Some(owner) = &e.owner
                            && e.kind == "acknowledged"
                        {
                            extra.push(format!("owner {owner}"));
                        }
                        if let Some(cause) = &e.root_cause
                            && e.kind == "resolved"
                        {
                            extra.push(format!("root cause: {cause}"));
                        }
                        if let Some(until) = e.risk_expires_at_ms
                            && e.kind == "risk_accepted"
                        {
                            extra.push(format!("accepted until {}", format_unix_ms(until)));
                        }
                        if !e.evidence.is_empty() {
                            extra.push(format!(
                                "evidence {}",
                                e.evidence
                                    .iter()
                                    .map(|s| format!("#{s}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ));
                        }
                        EventLine {
                            at: format_unix_ms(e.at_ms),
                            kind: e.kind.clone(),
                            state: e.state.clone(),
                            actor: e.actor.clone(),
                            reason: e.reason.clone(),
                            extra: extra.join("; "),
                        }
                    })
                    .collect(),
            })
            .collect();

        controls.push(ControlSection {
            control: c.control.clone(),
            framework: c.framework.clone(),
            title: c.title.clone(),
            status: c.status.as_str(),
            hosts_passing: c.hosts_passing,
            hosts_in_scope: c.hosts_in_scope,
            rules: c
                .rules
                .iter()
                .map(|r| RuleLine {
                    id: r.rule_id.clone(),
                    title: r.title.clone(),
                    severity: r.severity,
                    status: r.status.as_str(),
                    hosts_passing: r.hosts_passing,
                    hosts_in_scope: r.hosts_in_scope,
                })
                .collect(),
            trend,
            samples,
            deviations: control_deviations,
            more_deviations,
            actions,
        });
    }

    Ok(ReportPage {
        from: rfc3339(period.from_ms),
        to: rfc3339(period.to_ms),
        judged_at: rfc3339(facts.judged_at_ms),
        generated_at: rfc3339(context.generated_at_ms),
        ca_fingerprint: context
            .ca_fingerprint
            .clone()
            .unwrap_or_else(|| "(not available)".into()),
        policy_name: facts.in_force.policy.name.clone(),
        policy_note: facts.in_force.note.clone(),
        policies: facts
            .policies
            .iter()
            .map(|p| PolicyLine {
                version: p.version,
                name: p.name.clone(),
                sha256: hex::encode(&p.sha256),
                activated_at: format_unix_ms(p.activated_at_ms),
            })
            .collect(),
        hosts: facts.hosts.len(),
        controls,
    })
}

/// Every day of a short period; every seventh day (and the last) of a long one, so a year
/// prints on one page.
fn sampled(points: &[kpi::TrendPoint]) -> Vec<TrendLine> {
    let step = if points.len() > DAILY_UP_TO { 7 } else { 1 };
    points
        .iter()
        .enumerate()
        .filter(|(i, _)| (i + 1) % step == 0 || i + 1 == points.len())
        .map(|(_, p)| TrendLine {
            at: p.at.clone(),
            percent: p.share_passing.map(|s| (s * 100.0).round() as u32),
            hosts_passing: p.hosts_passing,
            hosts_in_scope: p.hosts_in_scope,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(day: usize, share: Option<f64>) -> kpi::TrendPoint {
        kpi::TrendPoint {
            at: format!("day {day}"),
            hosts_in_scope: 4,
            hosts_passing: 2,
            share_passing: share,
        }
    }

    #[test]
    fn a_short_trend_shows_every_day_and_a_long_one_every_week_and_the_last_day() {
        let short: Vec<_> = (1..=10).map(|d| point(d, Some(0.5))).collect();
        assert_eq!(sampled(&short).len(), 10);
        let long: Vec<_> = (1..=366).map(|d| point(d, None)).collect();
        let lines = sampled(&long);
        assert_eq!(lines.len(), 53);
        assert_eq!(lines[0].at, "day 7");
        assert_eq!(lines.last().map(|l| l.at.as_str()), Some("day 366"));
        assert_eq!(lines[0].percent, None);
        assert_eq!(sampled(&short)[0].percent, Some(50));
    }
}

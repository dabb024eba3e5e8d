//! Control status (ISO/IEC 27001:2022 clause 9.1): every control a rule evidences, judged over
//! the hosts in scope, as of any moment, from stored evidence only.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::evaluate::{self, HostJudgements};
use crate::model::format_unix_ms;
use crate::policy::judge::{Judgement, RuleOutcome};
use crate::policy::{Catalogue, Policy, PolicyError};
use crate::store::Store;

/// The policy a past moment is judged by, with its version.
#[derive(Debug, Clone)]
pub struct PolicyInForce {
    pub policy: Policy,
    /// `None` for the built-in default, before any `serve` recorded a policy.
    pub version: Option<i64>,
    /// Why this version was used, when it was not the one in force then.
    pub note: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("stored policy version {version} no longer validates: {error}")]
    Policy { version: i64, error: PolicyError },
}

/// The policy in force at `as_of_ms`: the newest activated by then, else the oldest stored
/// (with a note), else the built-in default.
pub fn policy_in_force(store: &Store, as_of_ms: i64) -> Result<PolicyInForce, StatusError> {
    let (row, note) = match store.policy_as_of(Some(as_of_ms))? {
        Some(row) => (Some(row), None),
        None => match store.policies()?.into_iter().next() {
            Some(row) => {
                let note = format!(
                    "no policy was in force then: judged under version {}, activated {}",
                    row.version,
                    format_unix_ms(row.activated_at_ms)
                );
                (Some(row), Some(note))
            }
            None => (None, None),
        },
    };
    match row {
        Some(row) => Ok(PolicyInForce {
            policy: Policy::parse(&row.text, &row.source).map_err(|error| StatusError::Policy {
                version: row.version,
                error,
            })?,
            version: Some(row.version),
            note,
        }),
        None => Ok(PolicyInForce {
            policy: Policy::default_policy()
                .map_err(|error| StatusError::Policy { version: 0, error })?,
            version: None,
            note: Some("no policy recorded yet: judged under the built-in default".into()),
        }),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub as_of: String,
    pub as_of_unix_ms: i64,
    pub policy_name: String,
    pub policy_version: Option<i64>,
    pub policy_note: Option<String>,
    pub hosts: usize,
    pub controls: Vec<ControlStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ControlStatus {
    /// `framework:control`.
    pub control: String,
    pub framework: String,
    pub title: String,
    pub status: RuleOutcome,
    pub hosts_in_scope: usize,
    pub hosts_passing: usize,
    pub rules: Vec<RuleStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleStatus {
    pub rule_id: String,
    pub title: String,
    pub severity: &'static str,
    pub status: RuleOutcome,
    pub hosts_in_scope: usize,
    pub hosts_passing: usize,
    /// Hosts that fail or lack evidence, with why.
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub agent_id: String,
    pub hostname: String,
    pub outcome: RuleOutcome,
    pub detail: String,
    pub offending: Vec<String>,
    pub evidence: Vec<u64>,
}

/// Judges the fleet as of `as_of_ms` and rolls rule results up into control status.
pub fn status(store: &Store, as_of_ms: i64) -> Result<StatusReport, StatusError> {
    let in_force = policy_in_force(store, as_of_ms)?;
    let hosts = evaluate::evaluate(store, &in_force.policy, as_of_ms, None)?;
    Ok(report(&in_force, &verdicts(&hosts), as_of_ms))
}

/// One host's verdicts, however they were reached: judged now from evidence, or read back from
/// the results the collector recorded (the web page's fast path).
#[derive(Debug, Clone, Copy)]
pub struct HostVerdicts<'a> {
    pub agent_id: &'a str,
    pub hostname: &'a str,
    /// By rule id.
    pub judgements: &'a [(String, Judgement)],
}

pub fn verdicts(hosts: &[HostJudgements]) -> Vec<HostVerdicts<'_>> {
    hosts
        .iter()
        .map(|h| HostVerdicts {
            agent_id: &h.host.agent_id,
            hostname: &h.host.hostname,
            judgements: &h.judgements,
        })
        .collect()
}

/// What a report carries for each failing host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Every finding with its offending items and evidence.
    Findings,
    /// Counts only: the findings lists stay empty (a fleet overview need not copy every
    /// failing host's package list once per control).
    Counts,
}

pub fn report(in_force: &PolicyInForce, hosts: &[HostVerdicts<'_>], as_of_ms: i64) -> StatusReport {
    report_with(in_force, hosts, as_of_ms, Detail::Findings)
}

/// Each host's judgements are looked up once into a slot per rule, so the report costs hosts
/// times rules, not hosts times rules times controls.
pub fn report_with(
    in_force: &PolicyInForce,
    hosts: &[HostVerdicts<'_>],
    as_of_ms: i64,
    detail: Detail,
) -> StatusReport {
    let rules = &in_force.policy.rules;
    let index: HashMap<&str, usize> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    // Per host, its first judgement of each rule.
    let mut slots: Vec<Option<&Judgement>> = vec![None; hosts.len() * rules.len()];
    for (h, host) in hosts.iter().enumerate() {
        for (rule_id, j) in host.judgements {
            if let Some(&i) = index.get(rule_id.as_str()) {
                slots[h * rules.len() + i].get_or_insert(j);
            }
        }
    }
    let names: Vec<(&str, &str)> = hosts.iter().map(|h| (h.agent_id, h.hostname)).collect();
    report_from_slots(in_force, &names, &slots, as_of_ms, detail)
}

/// The report from each host's judgement of each rule: `slots` holds one row per host of
/// `names` (agent id, host name), one column per rule of the policy, in policy order.
pub fn report_from_slots(
    in_force: &PolicyInForce,
    names: &[(&str, &str)],
    slots: &[Option<&Judgement>],
    as_of_ms: i64,
    detail: Detail,
) -> StatusReport {
    let policy = &in_force.policy;
    let catalogue = Catalogue::builtin().ok();
    let rows = HostSlots {
        slots,
        rules: policy.rules.len(),
    };
    let by_rule: Vec<RuleStatus> = policy
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| rule_status(rule, i, names, rows, detail))
        .collect();
    let controls = policy
        .controls()
        .into_iter()
        .map(|control| {
            let (framework, title) = catalogue
                .and_then(|c| c.control(&control).ok())
                .map(|(f, c)| (f.title.clone(), c.title.clone()))
                .unwrap_or_default();
            // Rule ids are unique in a validated policy.
            let members: Vec<usize> = policy
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.controls.contains(&control))
                .map(|(i, _)| i)
                .collect();
            let rules: Vec<RuleStatus> = members.iter().map(|&i| by_rule[i].clone()).collect();
            let (mut in_scope, mut failing) = (0, 0);
            for slot in rows.iter() {
                let outcomes = members.iter().filter_map(|&i| slot[i]).map(|j| j.outcome);
                let (mut scoped, mut fails) = (false, false);
                for outcome in outcomes {
                    scoped |= outcome != RuleOutcome::NotApplicable;
                    fails |= matches!(outcome, RuleOutcome::Fail | RuleOutcome::NoEvidence);
                }
                in_scope += usize::from(scoped);
                failing += usize::from(fails);
            }
            ControlStatus {
                status: roll_up(rules.iter().map(|r| r.status)),
                hosts_passing: in_scope - failing,
                hosts_in_scope: in_scope,
                control,
                framework,
                title,
                rules,
            }
        })
        .collect();
    StatusReport {
        as_of: format_unix_ms(as_of_ms),
        as_of_unix_ms: as_of_ms,
        policy_name: policy.name.clone(),
        policy_version: in_force.version,
        policy_note: in_force.note.clone(),
        hosts: names.len(),
        controls,
    }
}

/// A host-by-rule table of judgements, one row per host.
#[derive(Clone, Copy)]
struct HostSlots<'s, 'j> {
    slots: &'s [Option<&'j Judgement>],
    rules: usize,
}

impl<'s, 'j> HostSlots<'s, 'j> {
    fn iter(self) -> impl Iterator<Item = &'s [Option<&'j Judgement>]> {
        // A policy without rules has no columns, and no slots either.
        self.slots.chunks(self.rules.max(1))
    }
}

fn rule_status(
    rule: &crate::policy::Rule,
    index: usize,
    names: &[(&str, &str)],
    rows: HostSlots<'_, '_>,
    detail: Detail,
) -> RuleStatus {
    let mut findings = Vec::new();
    let mut seen = [false; 4];
    let mut in_scope = 0;
    let mut passing = 0;
    for ((agent_id, hostname), slot) in names.iter().zip(rows.iter()) {
        let Some(j) = slot[index] else {
            continue;
        };
        seen[j.outcome as usize] = true;
        match j.outcome {
            RuleOutcome::NotApplicable => continue,
            RuleOutcome::Pass => passing += 1,
            RuleOutcome::Fail | RuleOutcome::NoEvidence if detail == Detail::Counts => {}
            RuleOutcome::Fail | RuleOutcome::NoEvidence => findings.push(Finding {
                agent_id: (*agent_id).to_owned(),
                hostname: (*hostname).to_owned(),
                outcome: j.outcome,
                detail: j.detail.clone(),
                offending: j.offending.clone(),
                evidence: j.evidence.clone(),
            }),
        }
        in_scope += 1;
    }
    let outcomes = [
        RuleOutcome::Pass,
        RuleOutcome::Fail,
        RuleOutcome::NotApplicable,
        RuleOutcome::NoEvidence,
    ];
    RuleStatus {
        rule_id: rule.id.clone(),
        title: rule.title.clone(),
        severity: rule.severity.as_str(),
        status: roll_up(outcomes.into_iter().filter(|o| seen[*o as usize])),
        hosts_in_scope: in_scope,
        hosts_passing: passing,
        findings,
    }
}

/// Fail beats missing evidence beats pass; nothing in scope is not applicable.
fn roll_up(outcomes: impl Iterator<Item = RuleOutcome>) -> RuleOutcome {
    let seen: BTreeMap<RuleOutcome, usize> = outcomes.fold(BTreeMap::new(), |mut m, o| {
        *m.entry(o).or_default() += 1;
        m
    });
    [
        RuleOutcome::Fail,
        RuleOutcome::NoEvidence,
        RuleOutcome::Pass,
    ]
    .into_iter()
    .find(|o| seen.contains_key(o))
    .unwrap_or(RuleOutcome::NotApplicable)
}

/// Text for people: one line per control, then its failing rules and hosts.
pub fn render(report: &StatusReport) -> String {
    let mut out = format!(
        "control status as of {} under policy {:?} version {}: {} host(s)\n",
        report.as_of,
        report.policy_name,
        report
            .policy_version
            .map_or("(built-in default)".to_owned(), |v| v.to_string()),
        report.hosts
    );
    if let Some(note) = &report.policy_note {
        out.push_str(&format!("note: {note}\n"));
    }
    for c in &report.controls {
        out.push_str(&format!(
            "{:<14} {:<28} {:>4}/{:<4} hosts pass  {}\n",
            c.status.as_str().to_uppercase(),
            c.control,
            c.hosts_passing,
            c.hosts_in_scope,
            c.title
        ));
        for r in &c.rules {
            for f in &r.findings {
                out.push_str(&format!(
                    "    {} {} on {} ({}): {}\n",
                    r.rule_id,
                    f.outcome.as_str(),
                    f.hostname,
                    f.agent_id,
                    f.detail
                ));
                for item in f.offending.iter().take(10) {
                    out.push_str(&format!("        - {item}\n"));
                }
                if f.offending.len() > 10 {
                    out.push_str(&format!("        … and {} more\n", f.offending.len() - 10));
                }
            }
        }
    }
    out
}

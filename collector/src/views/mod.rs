//! What reviewers read, assembled once for both the web page and the JSON API: the fleet's
//! control status and hosts as of a moment, one host, one evidence item with its place in the
//! chain, and corrective actions under filters. Every structure serializes as the API's JSON.
//!
//! Fleet-wide views read the results the collector recorded as it judged (an indexed read),
//! not a fresh judgement of every host, so a page over 10,000 hosts stays fast; `evident-collector
//! status --as-of` re-judges from evidence when that is wanted.

pub mod actions;
pub mod enrolment;
pub mod evidence;
pub mod exports;
pub mod host;

use std::collections::HashMap;

use serde::Serialize;

use crate::model::{CheckKind, format_unix_ms};
use crate::policy::Condition;
use crate::policy::judge::{Judgement, RuleOutcome};
pub use crate::status::Detail;
use crate::status::{self, HostVerdicts, PolicyInForce, StatusError, StatusReport};
use crate::store::Store;

/// A host with no evidence for this long counts as stale when the policy has no silence rule.
pub const DEFAULT_STALE_AFTER_MS: i64 = 24 * 3600 * 1000;

/// One host in the fleet list.
#[derive(Debug, Clone, Serialize)]
pub struct HostSummary {
    pub agent_id: String,
    pub hostname: String,
    pub os_family: String,
    pub enrolled_at: String,
    pub last_contact: Option<String>,
    #[serde(skip)]
    pub last_contact_ms: Option<i64>,
    /// The worst recorded outcome over the policy's rules: fail, no_evidence, pass or
    /// not_applicable (nothing recorded yet is no_evidence).
    pub status: RuleOutcome,
    /// Rules failing or without evidence.
    pub failing_rules: Vec<String>,
    /// No evidence for longer than the policy's silence threshold.
    pub stale: bool,
}

/// The fleet as of a moment.
#[derive(Debug, Clone, Serialize)]
pub struct Fleet {
    pub status: StatusReport,
    pub hosts: Vec<HostSummary>,
    pub stale_after_ms: i64,
}

/// Control status and host summaries as recorded by `as_of_ms`; `detail` says whether the
/// report lists each failing host per rule (a control's page) or only counts (the overview).
pub fn fleet(store: &Store, as_of_ms: i64, detail: Detail) -> Result<Fleet, StatusError> {
    let in_force = status::policy_in_force(store, as_of_ms)?;
    let rows = store.hosts_as_of(as_of_ms)?;
    let mut judged: HashMap<String, Vec<(String, Judgement)>> = HashMap::new();
    if let Some(version) = in_force.version {
        for result in store.results_as_of(version, as_of_ms, None)? {
            let Some(outcome) = RuleOutcome::parse(&result.outcome) else {
                continue;
            };
            judged.entry(result.agent_id).or_default().push((
                result.rule_id,
                Judgement {
                    outcome,
                    detail: result.detail,
                    offending: result.offending,
                    evidence: result.evidence,
                    decided_by_received_ms: None,
                    decided_by_observed_ms: None,
                },
            ));
        }
    }
    // Rules in policy order, so the report reads like the policy.
    let order: HashMap<&str, usize> = in_force
        .policy
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    for judgements in judged.values_mut() {
        judgements.sort_by_key(|(id, _)| order.get(id.as_str()).copied().unwrap_or(usize::MAX));
    }
    let empty = Vec::new();
    let verdicts: Vec<HostVerdicts<'_>> = rows
        .iter()
        .map(|row| HostVerdicts {
            agent_id: &row.agent_id,
            hostname: &row.hostname,
            judgements: judged.get(&row.agent_id).unwrap_or(&empty),
        })
        .collect();
    let report = status::report_with(&in_force, &verdicts, as_of_ms, detail);
    let contacts: HashMap<String, i64> = store.last_contacts(as_of_ms)?.into_iter().collect();
    let stale_after_ms = stale_after(&in_force);
    let hosts = rows
        .iter()
        .map(|row| {
            let judgements = judged.get(&row.agent_id).unwrap_or(&empty);
            let failing_rules: Vec<String> = judgements
                .iter()
                .filter(|(_, j)| matches!(j.outcome, RuleOutcome::Fail | RuleOutcome::NoEvidence))
                .map(|(id, _)| id.clone())
                .collect();
            let last_contact_ms = contacts.get(&row.agent_id).copied();
            HostSummary {
                agent_id: row.agent_id.clone(),
                hostname: row.hostname.clone(),
                os_family: row.os_family.clone(),
                enrolled_at: format_unix_ms(row.enrolled_at_ms),
                last_contact: last_contact_ms.map(format_unix_ms),
                last_contact_ms,
                status: worst(judgements.iter().map(|(_, j)| j.outcome)),
                failing_rules,
                stale: last_contact_ms.is_none_or(|ms| as_of_ms - ms > stale_after_ms),
            }
        })
        .collect();
    Ok(Fleet {
        status: report,
        hosts,
        stale_after_ms,
    })
}

/// The policy's tightest silence threshold, else a day.
pub fn stale_after(in_force: &PolicyInForce) -> i64 {
    in_force
        .policy
        .rules
        .iter()
        .filter_map(|r| match r.condition {
            Condition::AgentReporting { max_silence_ms } => Some(max_silence_ms),
            _ => None,
        })
        .min()
        .unwrap_or(DEFAULT_STALE_AFTER_MS)
}

/// Fail beats missing evidence beats pass; nothing recorded is missing evidence.
fn worst(outcomes: impl Iterator<Item = RuleOutcome>) -> RuleOutcome {
    let mut seen = outcomes.peekable();
    if seen.peek().is_none() {
        return RuleOutcome::NoEvidence;
    }
    seen.fold(RuleOutcome::NotApplicable, |acc, o| {
        let rank = |o: RuleOutcome| match o {
            RuleOutcome::Fail => 3,
            RuleOutcome::NoEvidence => 2,
            RuleOutcome::Pass => 1,
            RuleOutcome::NotApplicable => 0,
        };
        if rank(o) > rank(acc) { o } else { acc }
    })
}

/// Filters of the hosts list; every field optional.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct HostFilter {
    /// Part of the host name or agent id, any case.
    pub q: Option<String>,
    pub os: Option<String>,
    /// fail, no_evidence, pass, not_applicable, or stale.
    pub status: Option<String>,
    /// A tag the agent declared in its newest inventory.
    pub tag: Option<String>,
    pub page: Option<usize>,
}

/// Hosts per page of the list.
pub const PAGE_SIZE: usize = 50;

/// One page of the filtered hosts.
#[derive(Debug, Clone, Serialize)]
pub struct HostPage {
    pub total: usize,
    pub page: usize,
    pub pages: usize,
    pub hosts: Vec<HostSummary>,
    /// The OS families present, for the filter's choices.
    pub os_families: Vec<String>,
}

/// Filters and pages the fleet's hosts. A tag filter reads each remaining host's newest
/// inventory, so it is applied last.
pub fn host_page(
    store: &Store,
    fleet: &Fleet,
    filter: &HostFilter,
    as_of_ms: i64,
) -> Result<HostPage, StatusError> {
    let mut os_families: Vec<String> = fleet.hosts.iter().map(|h| h.os_family.clone()).collect();
    os_families.sort();
    os_families.dedup();
    let q = filter
        .q
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(str::to_lowercase);
    let os = filter.os.as_deref().filter(|s| !s.is_empty());
    let wanted_status = filter.status.as_deref().filter(|s| !s.is_empty());
    let mut hosts: Vec<&HostSummary> = fleet
        .hosts
        .iter()
        .filter(|h| {
            q.as_ref().is_none_or(|q| {
                h.hostname.to_lowercase().contains(q) || h.agent_id.to_lowercase().contains(q)
            })
        })
        .filter(|h| os.is_none_or(|os| h.os_family.eq_ignore_ascii_case(os)))
        .filter(|h| match wanted_status {
            None => true,
            Some("stale") => h.stale,
            Some(s) => h.status.as_str() == s,
        })
        .collect();
    if let Some(tag) = filter
        .tag
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let mut tagged = Vec::new();
        for h in hosts {
            if host::declared_tags(store, &h.agent_id, as_of_ms)?
                .iter()
                .any(|t| t.eq_ignore_ascii_case(tag))
            {
                tagged.push(h);
            }
        }
        hosts = tagged;
    }
    let total = hosts.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = filter.page.unwrap_or(1).clamp(1, pages);
    Ok(HostPage {
        total,
        page,
        pages,
        hosts: hosts
            .into_iter()
            .skip((page - 1) * PAGE_SIZE)
            .take(PAGE_SIZE)
            .cloned()
            .collect(),
        os_families,
    })
}

/// The check kinds a host reports, in display order.
pub const CHECKS: [CheckKind; 4] = [
    CheckKind::Inventory,
    CheckKind::Patch,
    CheckKind::DiskEncryption,
    CheckKind::Backup,
];

/// Days of history the overview's trend shows.
pub const TREND_DAYS: usize = 30;

/// The share of in-scope (host, rule) results passing at the end of each day, per control and
/// for the whole fleet, from the results recorded under the policy version in force.
#[derive(Debug, Clone, Serialize)]
pub struct Trend {
    /// The end of each day, oldest first.
    pub days: Vec<String>,
    /// Per day, `None` before anything was recorded.
    pub fleet: Vec<Option<f64>>,
    pub controls: Vec<(String, Vec<Option<f64>>)>,
}

/// One pass over the changes of the period, keeping per-rule counters, so the cost grows with
/// the number of changes rather than with hosts times days.
pub fn trend(
    store: &Store,
    in_force: &PolicyInForce,
    as_of_ms: i64,
    days: usize,
) -> Result<Trend, StatusError> {
    const DAY_MS: i64 = 86_400_000;
    let ends: Vec<i64> = (0..days)
        .rev()
        .map(|back| as_of_ms - back as i64 * DAY_MS)
        .collect();
    let controls = in_force.policy.controls();
    let mut out = Trend {
        days: ends.iter().map(|ms| format_unix_ms(*ms)).collect(),
        fleet: Vec::with_capacity(days),
        controls: controls.iter().map(|c| (c.clone(), Vec::new())).collect(),
    };
    let Some(version) = in_force.version else {
        out.fleet = vec![None; days];
        for (_, points) in &mut out.controls {
            *points = vec![None; days];
        }
        return Ok(out);
    };
    let start = ends[0] - DAY_MS;
    // (agent, rule) -> outcome; per rule: (passing, in scope).
    let mut current: HashMap<(String, String), RuleOutcome> = HashMap::new();
    let mut counts = Counters::new();
    for row in store.results_as_of(version, start, None)? {
        if let Some(o) = RuleOutcome::parse(&row.outcome) {
            apply(&mut current, &mut counts, row.agent_id, row.rule_id, o);
        }
    }
    let mut changes = store
        .version_results_between(version, start + 1, as_of_ms)?
        .into_iter()
        .peekable();
    for end in &ends {
        while let Some(row) = changes.next_if(|r| r.at_ms <= *end) {
            if let Some(o) = RuleOutcome::parse(&row.outcome) {
                apply(&mut current, &mut counts, row.agent_id, row.rule_id, o);
            }
        }
        let rate = |rules: &mut dyn Iterator<Item = &String>| {
            let (p, t) = rules
                .filter_map(|r| counts.get(r))
                .fold((0, 0), |(p, t), (rp, rt)| (p + rp, t + rt));
            (t > 0).then(|| p as f64 / t as f64)
        };
        out.fleet.push(rate(&mut counts.keys()));
        for (control, points) in &mut out.controls {
            let mut rules = in_force
                .policy
                .rules
                .iter()
                .filter(|r| r.controls.contains(control))
                .map(|r| &r.id);
            points.push(rate(&mut rules));
        }
    }
    Ok(out)
}

type Counters = HashMap<String, (i64, i64)>;

/// Moves (agent, rule) to `outcome`, keeping each rule's (passing, in scope) counts.
fn apply(
    current: &mut HashMap<(String, String), RuleOutcome>,
    counts: &mut Counters,
    agent: String,
    rule: String,
    outcome: RuleOutcome,
) {
    let count = |o: RuleOutcome| match o {
        RuleOutcome::Pass => (1, 1),
        RuleOutcome::Fail | RuleOutcome::NoEvidence => (0, 1),
        RuleOutcome::NotApplicable => (0, 0),
    };
    let entry = counts.entry(rule.clone()).or_default();
    if let Some(old) = current.insert((agent, rule), outcome) {
        let (p, t) = count(old);
        entry.0 -= p;
        entry.1 -= t;
    }
    let (p, t) = count(outcome);
    entry.0 += p;
    entry.1 += t;
}

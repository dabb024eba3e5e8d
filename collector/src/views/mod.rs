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
pub mod trend;

use std::collections::HashMap;

use serde::Serialize;

use crate::model::{CheckKind, format_unix_ms};
use crate::policy::Condition;
use crate::policy::judge::{Judgement, RuleOutcome};
pub use crate::status::Detail;
use crate::status::{self, PolicyInForce, StatusError, StatusReport};
use crate::store::{Store, StoreError};
pub use trend::{TREND_DAYS, Trend};

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

/// One host of the fleet before it is shown: what filters and counts need, with its times
/// left unformatted until the host lands on a page.
#[derive(Debug, Clone)]
pub struct FleetHost {
    pub agent_id: String,
    pub hostname: String,
    pub os_family: String,
    pub enrolled_at_ms: i64,
    pub last_contact_ms: Option<i64>,
    pub status: RuleOutcome,
    /// Rules failing or without evidence, in policy order.
    pub failing_rules: Vec<String>,
    pub stale: bool,
}

impl FleetHost {
    pub fn summary(&self) -> HostSummary {
        HostSummary {
            agent_id: self.agent_id.clone(),
            hostname: self.hostname.clone(),
            os_family: self.os_family.clone(),
            enrolled_at: format_unix_ms(self.enrolled_at_ms),
            last_contact: self.last_contact_ms.map(format_unix_ms),
            last_contact_ms: self.last_contact_ms,
            status: self.status,
            failing_rules: self.failing_rules.clone(),
            stale: self.stale,
        }
    }
}

/// The fleet as of a moment.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub status: StatusReport,
    pub hosts: Vec<FleetHost>,
    pub stale_after_ms: i64,
    /// Per rule, the recorded (agent, rule) results passing and in scope, revoked agents
    /// included: the trend's point at this moment.
    pub recorded: trend::Counts,
}

/// Control status and host summaries as recorded by `as_of_ms`; `detail` says whether the
/// report lists each failing host per rule (a control's page) or only counts (the overview).
///
/// The outcomes come from `Store::outcomes_as_of` (one row per host and rule, not every
/// result ever recorded) straight into a host-by-rule table, with nothing allocated per row;
/// only `Detail::Findings` reads the detail, of the failing ones.
pub fn fleet(store: &Store, as_of_ms: i64, detail: Detail) -> Result<Fleet, StatusError> {
    // Each host's last contact is a seek per host into the batches (a fifth of the page's
    // time at 10,000 hosts): read it on a second read connection meanwhile.
    std::thread::scope(|scope| {
        let contacts = scope.spawn(|| store.last_contacts(as_of_ms));
        let fleet = fleet_without_contacts(store, as_of_ms, detail);
        let contacts = contacts
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        let mut fleet = fleet?;
        let contacts: HashMap<String, i64> = contacts.into_iter().collect();
        for host in &mut fleet.hosts {
            host.last_contact_ms = contacts.get(&host.agent_id).copied();
            host.stale = host
                .last_contact_ms
                .is_none_or(|ms| as_of_ms - ms > fleet.stale_after_ms);
        }
        Ok(fleet)
    })
}

/// `fleet` with every host's last contact unknown (and so stale).
fn fleet_without_contacts(
    store: &Store,
    as_of_ms: i64,
    detail: Detail,
) -> Result<Fleet, StatusError> {
    let in_force = status::policy_in_force(store, as_of_ms)?;
    let rows = store.hosts_as_of(as_of_ms)?;
    let rules = &in_force.policy.rules;
    let rule_count = rules.len();
    let failing = |o: RuleOutcome| matches!(o, RuleOutcome::Fail | RuleOutcome::NoEvidence);
    // Rule ids sorted for a binary search, with their place in the policy.
    let mut rule_index: Vec<(&str, usize)> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    rule_index.sort_unstable();
    let host_index: HashMap<&str, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.agent_id.as_str(), i))
        .collect();
    // Per host, its recorded outcome of each rule (the first row of a key when there are two).
    let mut slots: Vec<Option<Judgement>> = vec![None; rows.len() * rule_count];
    let mut failing_results: Vec<(usize, i64)> = Vec::new();
    // The trend's counts per rule of the policy (passing, in scope), and of any other rule.
    let mut tally: Vec<Option<(i64, i64)>> = vec![None; rule_count];
    let mut counts = trend::Counts::new();
    if let Some(version) = in_force.version {
        // Rows come grouped by agent and sorted by rule: look each agent up once, and try the
        // rule after the last one before searching.
        let mut agent = String::new();
        let mut host: Option<usize> = None;
        let mut next_rule = 0;
        store.outcomes_as_of(version, as_of_ms, |r| {
            let Some(outcome) = RuleOutcome::parse(r.outcome) else {
                return;
            };
            if agent != r.agent_id {
                agent.clear();
                agent.push_str(r.agent_id);
                host = host_index.get(r.agent_id).copied();
                next_rule = 0;
            }
            let found = match rule_index.get(next_rule) {
                Some((id, _)) if *id == r.rule_id => Ok(next_rule),
                _ => rule_index.binary_search_by(|(id, _)| (*id).cmp(r.rule_id)),
            };
            let Ok(found) = found else {
                trend::count(&mut counts, r.rule_id, outcome);
                return;
            };
            next_rule = found + 1;
            let rule = rule_index[found].1;
            trend::tally(tally[rule].get_or_insert((0, 0)), outcome);
            let Some(host) = host else {
                // A revoked agent: counted in the trend, not shown.
                return;
            };
            let at = host * rule_count + rule;
            if slots[at].is_none() {
                slots[at] = Some(Judgement {
                    outcome,
                    detail: String::new(),
                    offending: Vec::new(),
                    evidence: Vec::new(),
                    decided_by_received_ms: None,
                    decided_by_observed_ms: None,
                });
                if detail == Detail::Findings && failing(outcome) {
                    failing_results.push((at, r.result_id));
                }
            }
        })?;
    }
    for (rule, counted) in rules.iter().zip(tally) {
        if let Some(counted) = counted {
            counts.insert(rule.id.clone(), counted);
        }
    }
    if !failing_results.is_empty() {
        let ids: Vec<i64> = failing_results.iter().map(|(_, id)| *id).collect();
        for ((at, _), row) in failing_results.iter().zip(store.results_by_id(&ids)?) {
            if let Some(judgement) = &mut slots[*at] {
                judgement.detail = row.detail;
                judgement.offending = row.offending;
                judgement.evidence = row.evidence;
            }
        }
    }
    let names: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.agent_id.as_str(), r.hostname.as_str()))
        .collect();
    let borrowed: Vec<Option<&Judgement>> = slots.iter().map(Option::as_ref).collect();
    let report = status::report_from_slots(&in_force, &names, &borrowed, as_of_ms, detail);
    let stale_after_ms = stale_after(&in_force);
    let mut hosts = Vec::with_capacity(rows.len());
    for (h, row) in rows.into_iter().enumerate() {
        let judged = &slots[h * rule_count..(h + 1) * rule_count];
        let outcomes = || judged.iter().flatten().map(|j| j.outcome);
        let failing_rules: Vec<String> = rules
            .iter()
            .zip(judged)
            .filter(|(_, j)| j.as_ref().is_some_and(|j| failing(j.outcome)))
            .map(|(rule, _)| rule.id.clone())
            .collect();
        hosts.push(FleetHost {
            status: worst(outcomes()),
            failing_rules,
            stale: true,
            agent_id: row.agent_id,
            hostname: row.hostname,
            os_family: row.os_family,
            enrolled_at_ms: row.enrolled_at_ms,
            last_contact_ms: None,
        });
    }
    Ok(Fleet {
        status: report,
        hosts,
        stale_after_ms,
        recorded: counts,
    })
}

/// How many actions are pending as of `as_of_ms`, and how many of those are overdue: the
/// overview's tiles, from each action's newest event rather than its whole trail.
pub fn action_counts(store: &Store, as_of_ms: i64) -> Result<(usize, usize), StoreError> {
    let (mut pending, mut overdue) = (0, 0);
    for (state, due_at_ms) in store.action_states(as_of_ms)? {
        if crate::actions::State::parse(&state).is_some_and(|s| s.is_pending()) {
            pending += 1;
            overdue += usize::from(due_at_ms.is_some_and(|d| as_of_ms > d));
        }
    }
    Ok((pending, overdue))
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
    let os_families: Vec<String> = fleet
        .hosts
        .iter()
        .map(|h| h.os_family.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let q = filter
        .q
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(str::to_lowercase);
    let os = filter.os.as_deref().filter(|s| !s.is_empty());
    let wanted_status = filter.status.as_deref().filter(|s| !s.is_empty());
    let mut hosts: Vec<&FleetHost> = fleet
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
        let evidence = store.evidence_snapshot()?;
        for h in hosts {
            if host::declared_tags(&evidence, &h.agent_id, as_of_ms)?
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
            .map(FleetHost::summary)
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

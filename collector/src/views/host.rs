//! One host: what it is, its newest evidence per check, its recorded rule results, its
//! timeline and its corrective actions, as of a moment.

use serde::Serialize;

use super::CHECKS;
use crate::actions::{self, ActionView};
use crate::convert;
use crate::model::{CheckKind, EvidenceItem, Outcome, format_unix_ms};
use crate::review;
use crate::status::{self, StatusError};
use crate::store::{AgentRow, EvidenceSnapshot, Store, StoreError, StoredEvidence};

/// Items per page of a host's timeline.
pub const TIMELINE_PAGE: u64 = 50;

#[derive(Debug, Clone, Serialize)]
pub struct HostDetail {
    pub agent: AgentRow,
    /// Declared in the agent's configuration, from its newest inventory.
    pub tags: Vec<String>,
    /// The newest inventory's facts, decoded.
    pub inventory: Option<EvidenceItem>,
    pub latest: Vec<LatestItem>,
    pub results: Vec<RecordedResult>,
    pub timeline: Vec<TimelineEntry>,
    /// The sequence to ask for (`before`) to see older items, when there are more.
    pub timeline_next_before: Option<u64>,
    pub actions: Vec<ActionView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatestItem {
    pub check: &'static str,
    pub sequence: u64,
    pub observed_at: String,
    pub received_at: String,
    pub summary: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordedResult {
    pub rule_id: String,
    pub title: String,
    pub outcome: String,
    pub since: String,
    pub detail: String,
    pub offending: Vec<String>,
    pub evidence: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    pub sequence: u64,
    pub check: String,
    pub observed_at: String,
    pub received_at: String,
    pub summary: String,
}

/// The tags a host declared in its newest inventory by `as_of_ms`.
pub fn declared_tags(
    evidence: &EvidenceSnapshot<'_>,
    agent_id: &str,
    as_of_ms: i64,
) -> Result<Vec<String>, StoreError> {
    Ok(newest(evidence, agent_id, CheckKind::Inventory, as_of_ms)?
        .and_then(|item| match item.outcome {
            Outcome::Inventory(facts) => Some(facts.tags),
            _ => None,
        })
        .unwrap_or_default())
}

fn newest(
    evidence: &EvidenceSnapshot<'_>,
    agent_id: &str,
    kind: CheckKind,
    as_of_ms: i64,
) -> Result<Option<EvidenceItem>, StoreError> {
    Ok(evidence
        .newest_items(agent_id, &[kind.number()], as_of_ms)?
        .into_iter()
        .next()
        .and_then(|row| row.bytes.ok())
        .and_then(|bytes| convert::decode_item(0, &bytes).ok()))
}

/// The host page's content; `None` when no such agent was enrolled.
pub fn host(
    store: &Store,
    agent_id: &str,
    as_of_ms: i64,
    before_sequence: Option<u64>,
) -> Result<Option<HostDetail>, StatusError> {
    let Some(agent) = store.agent(agent_id)? else {
        return Ok(None);
    };
    let numbers: Vec<i64> = CHECKS.iter().map(|k| k.number()).collect();
    let mut inventory = None;
    let mut latest = Vec::new();
    for row in store
        .evidence_snapshot()?
        .newest_items(agent_id, &numbers, as_of_ms)?
    {
        let item = row
            .bytes
            .as_ref()
            .ok()
            .and_then(|bytes| convert::decode_item(0, bytes).ok());
        latest.push(LatestItem {
            check: CheckKind::from_number(row.check_kind).map_or("unknown", |k| k.as_str()),
            sequence: row.sequence,
            observed_at: format_unix_ms(row.observed_at_ms),
            received_at: format_unix_ms(row.received_at_ms),
            summary: review::summary_of(item.as_ref()),
        });
        if row.check_kind == CheckKind::Inventory.number() {
            inventory = item;
        }
    }
    let tags = match &inventory {
        Some(EvidenceItem {
            outcome: Outcome::Inventory(facts),
            ..
        }) => facts.tags.clone(),
        _ => Vec::new(),
    };
    let in_force = status::policy_in_force(store, as_of_ms)?;
    let mut results = Vec::new();
    if let Some(version) = in_force.version {
        let mut rows = store.results_as_of(version, as_of_ms, Some(agent_id))?;
        let position = |id: &str| in_force.policy.rules.iter().position(|r| r.id == id);
        rows.sort_by_key(|r| position(&r.rule_id).unwrap_or(usize::MAX));
        for row in rows {
            results.push(RecordedResult {
                title: in_force
                    .policy
                    .rules
                    .iter()
                    .find(|r| r.id == row.rule_id)
                    .map(|r| r.title.clone())
                    .unwrap_or_default(),
                rule_id: row.rule_id,
                outcome: row.outcome,
                since: format_unix_ms(row.at_ms),
                detail: row.detail,
                offending: row.offending,
                evidence: row.evidence,
            });
        }
    }
    let rows = store.timeline(agent_id, as_of_ms, before_sequence, TIMELINE_PAGE + 1)?;
    let more = rows.len() as u64 > TIMELINE_PAGE;
    let timeline: Vec<TimelineEntry> = timeline_entries(store, rows, TIMELINE_PAGE as usize)?;
    let timeline_next_before = more.then(|| timeline.last().map(|e| e.sequence)).flatten();
    // This agent's actions only: the whole fleet's with all their events is ~15,000 rows at
    // 10,000 hosts, read for a page that shows a handful.
    let actions = actions::list_for(store, agent_id, as_of_ms)?;
    Ok(Some(HostDetail {
        agent,
        tags,
        inventory,
        latest,
        results,
        timeline,
        timeline_next_before,
        actions,
    }))
}

fn timeline_entries(
    store: &Store,
    rows: Vec<StoredEvidence>,
    limit: usize,
) -> Result<Vec<TimelineEntry>, StoreError> {
    let mut decoder = review::BatchItems::default();
    let mut out = Vec::new();
    for row in rows.into_iter().take(limit) {
        let item = decoder.item(&row, |id| store.batch(id))?;
        out.push(TimelineEntry {
            sequence: row.sequence,
            check: CheckKind::from_number(row.check_kind).map_or_else(
                || format!("kind {}", row.check_kind),
                |k| k.as_str().to_owned(),
            ),
            observed_at: format_unix_ms(row.observed_at_ms),
            received_at: format_unix_ms(row.received_at_ms),
            summary: review::summary_of(item.as_ref()),
        });
    }
    Ok(out)
}

//! Queries for exports (`crate::export`): evidence and rule results of a period a page at a
//! time, so that an export of millions of rows never holds the database (or memory) for long,
//! and single evidence items looked up by agent and sequence.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, judgements::ResultRow};

/// One stored evidence item for an export, with its signed bytes.
#[derive(Debug, Clone)]
pub struct ExportEvidence {
    /// The row's position in arrival order: the key for the next page.
    pub id: i64,
    pub agent_id: String,
    pub hostname: String,
    pub sequence: u64,
    pub check_kind: i64,
    pub observed_at_ms: i64,
    pub received_at_ms: i64,
    pub hash: Vec<u8>,
    pub prev_hash: Vec<u8>,
    /// The item's signed bytes, or why they cannot be found in their batch.
    pub bytes: Result<Vec<u8>, String>,
}

/// A stored rule result for an export, with the host's name.
#[derive(Debug, Clone)]
pub struct ExportResult {
    /// The key for the next page.
    pub id: i64,
    pub hostname: String,
    pub result: ResultRow,
}

/// Where an evidence item sits in its agent's chain, without its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceRef {
    pub agent_id: String,
    pub sequence: u64,
    pub check_kind: i64,
    pub observed_at_ms: i64,
    pub received_at_ms: i64,
    pub hash: Vec<u8>,
}

impl Store {
    /// Up to `limit` evidence items that arrived in `[from_ms, to_ms)`, after row `after_id`, in
    /// arrival order. Each call takes the connection only for its own page.
    pub fn evidence_page(
        &self,
        from_ms: i64,
        to_ms: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<ExportEvidence>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT e.id, e.agent_id, a.hostname, e.sequence, e.check_kind, e.observed_at_ms,
                    e.received_at_ms, e.hash, e.prev_hash, e.batch_id, e.item_index
             FROM evidence e JOIN agents a ON a.agent_id = e.agent_id
             WHERE e.id > ?1 AND e.received_at_ms >= ?2 AND e.received_at_ms < ?3
             ORDER BY e.id LIMIT ?4",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![after_id, from_ms, to_ms, limit], |r| {
                Ok((
                    ExportEvidence {
                        id: r.get(0)?,
                        agent_id: r.get(1)?,
                        hostname: r.get(2)?,
                        sequence: r.get::<_, i64>(3)? as u64,
                        check_kind: r.get(4)?,
                        observed_at_ms: r.get(5)?,
                        received_at_ms: r.get(6)?,
                        hash: r.get(7)?,
                        prev_hash: r.get(8)?,
                        bytes: Err(String::new()),
                    },
                    r.get::<_, i64>(9)?,
                    r.get::<_, i64>(10)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        // A batch holds many items of the page: split each blob once.
        let mut batches: HashMap<i64, Result<Vec<Vec<u8>>, String>> = HashMap::new();
        let mut dictionaries = super::batch_blobs::Dictionaries::default();
        let mut out = Vec::with_capacity(rows.len());
        for (mut row, batch_id, item_index) in rows {
            if let Entry::Vacant(slot) = batches.entry(batch_id) {
                let blob = dictionaries
                    .signed_items(&conn, batch_id)?
                    .unwrap_or_else(|| Err("it is missing".into()))
                    .map_err(|e| format!("batch {batch_id}: {e}"));
                slot.insert(blob.and_then(|blob| {
                    crate::convert::split_item_list(&blob)
                        .map_err(|e| format!("batch {batch_id} does not split into items: {e}"))
                }));
            }
            row.bytes = match batches.get(&batch_id) {
                Some(Ok(items)) => usize::try_from(item_index)
                    .ok()
                    .and_then(|i| items.get(i))
                    .cloned()
                    .ok_or_else(|| format!("batch {batch_id} has no item {item_index}")),
                Some(Err(e)) => Err(e.clone()),
                None => Err(format!("batch {batch_id} is missing")),
            };
            out.push(row);
        }
        Ok(out)
    }

    /// Up to `limit` rule results stored in `[from_ms, to_ms)`, after row `after_id`, oldest
    /// first.
    pub fn results_page(
        &self,
        from_ms: i64,
        to_ms: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<ExportResult>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT r.id, a.hostname, r.policy_version, r.rule_id, r.agent_id, r.at_ms, r.outcome,
                    r.detail, r.offending, r.evidence
             FROM rule_results r JOIN agents a ON a.agent_id = r.agent_id
             WHERE r.id > ?1 AND r.at_ms >= ?2 AND r.at_ms < ?3 ORDER BY r.id LIMIT ?4",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![after_id, from_ms, to_ms, limit], |r| {
            Ok(ExportResult {
                id: r.get(0)?,
                hostname: r.get(1)?,
                result: ResultRow {
                    policy_version: r.get(2)?,
                    rule_id: r.get(3)?,
                    agent_id: r.get(4)?,
                    at_ms: r.get(5)?,
                    outcome: r.get(6)?,
                    detail: r.get(7)?,
                    offending: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or_default(),
                    evidence: serde_json::from_str(&r.get::<_, String>(9)?).unwrap_or_default(),
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One evidence item's place in its chain, if stored.
    pub fn evidence_ref(
        &self,
        agent_id: &str,
        sequence: u64,
    ) -> Result<Option<EvidenceRef>, StoreError> {
        Ok(self
            .conn()?
            .prepare_cached(
                "SELECT check_kind, observed_at_ms, received_at_ms, hash FROM evidence
                 WHERE agent_id = ?1 AND sequence = ?2",
            )?
            .query_row(params![agent_id, sequence as i64], |r| {
                Ok(EvidenceRef {
                    agent_id: agent_id.to_owned(),
                    sequence,
                    check_kind: r.get(0)?,
                    observed_at_ms: r.get(1)?,
                    received_at_ms: r.get(2)?,
                    hash: r.get(3)?,
                })
            })
            .optional()?)
    }
}

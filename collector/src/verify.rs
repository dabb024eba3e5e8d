//! `evident-collector verify`: recomputes every agent's hash chain and checks every batch
//! signature against the certificate it was made with.

use std::collections::BTreeMap;

use crate::chain;
use crate::convert;
use crate::signature;
use crate::store::{KindHeads, Store, StoreError, StoredBatch, StoredEvidence};

/// The first thing found wrong for one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub agent_id: String,
    /// The sequence of the evidence item concerned (the first item of a batch for a signature).
    pub sequence: u64,
    pub what: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub agents: usize,
    pub items: u64,
    pub batches: u64,
    /// At most one break per agent: its lowest broken sequence, with everything wrong there.
    pub breaks: Vec<Break>,
}

/// Checks everything; a break is data in the report, only an unreadable store is an error.
pub fn verify(store: &Store) -> Result<Report, StoreError> {
    let mut report = Report {
        agents: store.agent_ids()?.len(),
        ..Report::default()
    };
    let mut breaks: BTreeMap<String, Break> = BTreeMap::new();
    let mut note = |agent_id: &str, sequence: u64, what: String| {
        let candidate = Break {
            agent_id: agent_id.to_owned(),
            sequence,
            what,
        };
        match breaks.get_mut(agent_id) {
            Some(existing) if existing.sequence < sequence => {}
            // Everything wrong with the first broken item is worth saying.
            Some(existing) if existing.sequence == sequence => {
                existing.what.push_str("; ");
                existing.what.push_str(&candidate.what);
            }
            _ => {
                breaks.insert(agent_id.to_owned(), candidate);
            }
        }
    };

    // Pass 1: every batch's signature, with the certificate it was received under.
    store.for_each_batch(|batch| {
        report.batches += 1;
        if batch.unreadable.is_some() {
            // Named with each of its items in pass 2, where their sequences are known.
            return Ok(());
        }
        let first_sequence = first_sequence(&batch.items);
        match signature::agent_id_of(&batch.certificate_der) {
            Ok(named) if named == batch.agent_id => {}
            Ok(named) => note(
                &batch.agent_id,
                first_sequence,
                format!("batch {} is stored under this agent but its certificate names {named}", batch.id),
            ),
            Err(e) => note(&batch.agent_id, first_sequence, format!("batch {}: {e}", batch.id)),
        }
        if let Err(e) = signature::verify_batch(
            &batch.certificate_der,
            batch.signature_algorithm,
            &batch.items,
            &batch.signature,
        ) {
            note(
                &batch.agent_id,
                first_sequence,
                format!(
                    "batch {} (from sequence {first_sequence}): {e}; its items were changed after the agent signed them",
                    batch.id
                ),
            );
        }
        Ok(())
    })?;

    // Pass 2: each agent's chain in sequence order, and each row against its signed item.
    // It also notes the newest item of each kind, for pass 3.
    let mut newest_of_kind = KindHeads::new();
    let mut current_agent = String::new();
    let mut expected_prev = chain::GENESIS.to_vec();
    let mut previous_sequence = 0u64;
    let mut cached: Option<(i64, Vec<Vec<u8>>)> = None;
    store.for_each_evidence(None, |row: StoredEvidence, batches| {
        report.items += 1;
        newest_of_kind.insert(
            (row.agent_id.clone(), row.check_kind),
            (row.sequence, row.received_at_ms),
        );
        if row.agent_id != current_agent {
            current_agent = row.agent_id.clone();
            expected_prev = chain::GENESIS.to_vec();
            previous_sequence = 0;
        }
        let agent = row.agent_id.as_str();
        let seq = row.sequence;
        if row.prev_hash != expected_prev {
            note(
                agent,
                seq,
                format!(
                    "prev_hash does not match the hash of the item before it (sequence {previous_sequence}): an item was removed, inserted or rehashed"
                ),
            );
        }
        if cached.as_ref().map(|(id, _)| *id) != Some(row.batch_id) {
            let items = match batches.batch(row.batch_id)? {
                Some(StoredBatch {
                    id,
                    unreadable: Some(why),
                    ..
                }) => {
                    note(
                        agent,
                        seq,
                        format!("batch {id} cannot be read back ({why}): it was changed after it was stored"),
                    );
                    Vec::new()
                }
                Some(batch) if batch.agent_id == row.agent_id => {
                    convert::split_item_list(&batch.items).unwrap_or_default()
                }
                Some(batch) => {
                    note(agent, seq, format!("its batch {} belongs to agent {}", row.batch_id, batch.agent_id));
                    Vec::new()
                }
                None => Vec::new(),
            };
            cached = Some((row.batch_id, items));
        }
        let bytes = cached.as_ref().and_then(|(_, items)| items.get(row.item_index));
        match bytes {
            None => note(
                agent,
                seq,
                format!("item {} of batch {} is missing", row.item_index, row.batch_id),
            ),
            Some(bytes) => {
                let recomputed = chain::item_hash(&row.prev_hash, agent, bytes);
                if recomputed.as_slice() != row.hash.as_slice() {
                    note(
                        agent,
                        seq,
                        format!(
                            "stored hash {} differs from the hash of its signed item {}",
                            short_hex(&row.hash),
                            short_hex(&recomputed)
                        ),
                    );
                }
                match convert::decode_item(row.item_index, bytes) {
                    Ok(item) => {
                        for (column, stored, signed) in [
                            ("sequence", row.sequence as i64, item.sequence as i64),
                            ("check_kind", row.check_kind, item.check.number()),
                            ("observed_at_ms", row.observed_at_ms, item.observed_at_unix_ms),
                        ] {
                            if stored != signed {
                                note(
                                    agent,
                                    seq,
                                    format!("stored {column} {stored} differs from the signed item's {signed}"),
                                );
                            }
                        }
                    }
                    Err(e) => note(agent, seq, format!("signed item cannot be decoded: {e}")),
                }
            }
        }
        expected_prev = row.hash.clone();
        previous_sequence = seq;
        Ok(true)
    })?;

    // Pass 3: each kind's head, which evaluation reads as that kind's newest item. A head past
    // the last item pass 2 saw of its agent arrived since, while the collector ran.
    let mut last_of_agent: BTreeMap<String, u64> = BTreeMap::new();
    for ((agent, _), (sequence, _)) in &newest_of_kind {
        let last = last_of_agent.entry(agent.clone()).or_default();
        *last = (*last).max(*sequence);
    }
    let mut heads = store.kind_heads()?;
    for ((agent, kind), (sequence, received_at_ms)) in newest_of_kind {
        let last_seen = last_of_agent.get(&agent).copied().unwrap_or(0);
        match heads.remove(&(agent.clone(), kind)) {
            Some(head) if head == (sequence, received_at_ms) || head.0 > last_seen => {}
            Some((head, _)) => note(
                &agent,
                sequence,
                format!(
                    "the head of check kind {kind} names sequence {head}, not its newest item {sequence}: evidence_kind_heads was changed, and evaluation reads the wrong item"
                ),
            ),
            None => note(
                &agent,
                sequence,
                format!(
                    "check kind {kind} has no head although sequence {sequence} is one: evidence_kind_heads was changed, and evaluation misses the kind"
                ),
            ),
        }
    }
    for ((agent, kind), (sequence, _)) in heads {
        if sequence <= last_of_agent.get(&agent).copied().unwrap_or(0) {
            note(
                &agent,
                sequence,
                format!(
                    "the head of check kind {kind} names sequence {sequence}, which is no item of that kind: evidence_kind_heads was changed"
                ),
            );
        }
    }
    report.breaks = breaks.into_values().collect();
    Ok(report)
}

fn first_sequence(items: &[u8]) -> u64 {
    convert::split_item_list(items)
        .ok()
        .and_then(|items| items.first().cloned())
        .and_then(|bytes| convert::decode_item(0, &bytes).ok())
        .map_or(0, |item| item.sequence)
}

fn short_hex(bytes: &[u8]) -> String {
    let full = hex::encode(bytes);
    full.get(..16).unwrap_or(&full).to_owned()
}

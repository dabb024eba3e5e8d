//! One evidence item: its typed facts, its place in the agent's hash chain, and the checks that
//! show it is the item the agent signed and that it links to the item before it.

use serde::Serialize;

use crate::chain;
use crate::convert;
use crate::model::{CheckKind, EvidenceItem, format_unix_ms};
use crate::signature;
use crate::store::{ChainPosition, Store, StoreError};

#[derive(Debug, Clone, Serialize)]
pub struct EvidenceDetail {
    pub agent_id: String,
    pub hostname: String,
    pub sequence: u64,
    pub check: String,
    pub observed_at: String,
    pub received_at: String,
    pub agent_clock_skew_ms: Option<i64>,
    pub hash: String,
    pub prev_hash: String,
    pub previous_sequence: Option<u64>,
    pub next_sequence: Option<u64>,
    pub newest_sequence: u64,
    pub batch_id: i64,
    /// The decoded facts; `None` when the stored bytes do not decode.
    pub item: Option<EvidenceItem>,
    pub verification: Vec<Verification>,
}

impl EvidenceDetail {
    pub fn verified(&self) -> bool {
        self.verification.iter().all(|v| v.ok)
    }

    /// The facts as indented JSON, for people.
    pub fn facts_json(&self) -> String {
        self.item
            .as_ref()
            .and_then(|item| serde_json::to_string_pretty(&item.outcome).ok())
            .unwrap_or_else(|| "(the stored item does not decode)".to_owned())
    }
}

/// One check on the item, with what it found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The item `sequence` of `agent_id` with its verification; `None` when there is no such item
/// or it had not arrived by `as_of_ms`.
pub fn evidence(
    store: &Store,
    agent_id: &str,
    sequence: u64,
    as_of_ms: i64,
) -> Result<Option<EvidenceDetail>, StoreError> {
    let Some(position) = store
        .chain_position(agent_id, sequence)?
        .filter(|p| p.item.received_at_ms <= as_of_ms)
    else {
        return Ok(None);
    };
    let hostname = store
        .agent(agent_id)?
        .map(|a| a.hostname)
        .unwrap_or_default();
    let items = convert::split_item_list(&position.batch.items);
    let bytes = items
        .as_ref()
        .ok()
        .and_then(|items| items.get(position.item.item_index));
    let item = bytes.and_then(|b| convert::decode_item(position.item.item_index, b).ok());
    let verification = verify(&position, bytes.map(Vec::as_slice));
    let row = &position.item;
    Ok(Some(EvidenceDetail {
        agent_id: row.agent_id.clone(),
        hostname,
        sequence: row.sequence,
        check: CheckKind::from_number(row.check_kind).map_or_else(
            || format!("kind {}", row.check_kind),
            |k| k.as_str().to_owned(),
        ),
        observed_at: format_unix_ms(row.observed_at_ms),
        received_at: format_unix_ms(row.received_at_ms),
        agent_clock_skew_ms: row.agent_clock_skew_ms,
        hash: hex::encode(&row.hash),
        prev_hash: hex::encode(&row.prev_hash),
        previous_sequence: position.previous_sequence,
        next_sequence: position.next_sequence,
        newest_sequence: position.newest_sequence,
        batch_id: row.batch_id,
        item,
        verification,
    }))
}

fn verify(position: &ChainPosition, bytes: Option<&[u8]>) -> Vec<Verification> {
    let row = &position.item;
    let batch = &position.batch;
    let mut out = Vec::new();
    out.push(match bytes {
        Some(bytes) => {
            let recomputed = chain::item_hash(&row.prev_hash, &row.agent_id, bytes);
            Verification {
                check: "hash",
                ok: recomputed.as_slice() == row.hash.as_slice(),
                detail: if recomputed.as_slice() == row.hash.as_slice() {
                    "the item's bytes and the previous hash give the stored hash".to_owned()
                } else {
                    format!(
                        "recomputed {} but {} is stored: the item or its hash was changed",
                        hex::encode(recomputed),
                        hex::encode(&row.hash)
                    )
                },
            }
        }
        None => Verification {
            check: "hash",
            ok: false,
            detail: format!(
                "batch {} holds no item {}: the stored batch was changed",
                batch.id, row.item_index
            ),
        },
    });
    out.push(match (&position.stored_previous_hash, position.previous_sequence) {
        (Some(previous), Some(seq)) if seq + 1 == row.sequence => Verification {
            check: "link",
            ok: previous == &row.prev_hash,
            detail: if previous == &row.prev_hash {
                format!("links to item {seq}'s stored hash")
            } else {
                format!("its previous hash is not item {seq}'s stored hash: the chain is broken here")
            },
        },
        (Some(_), Some(seq)) => Verification {
            check: "link",
            ok: false,
            detail: format!(
                "items {} to {} are missing before it",
                seq + 1,
                row.sequence - 1
            ),
        },
        _ if row.sequence == 1 => Verification {
            check: "link",
            ok: row.prev_hash.as_slice() == chain::GENESIS.as_slice(),
            detail: if row.prev_hash.as_slice() == chain::GENESIS.as_slice() {
                "the agent's first item: it starts the chain".to_owned()
            } else {
                "the agent's first item should start from the all-zero hash".to_owned()
            },
        },
        _ => Verification {
            check: "link",
            ok: false,
            detail: format!("items 1 to {} are missing before it", row.sequence - 1),
        },
    });
    let named = signature::agent_id_of(&batch.certificate_der);
    let signed = signature::verify_batch(
        &batch.certificate_der,
        batch.signature_algorithm,
        &batch.items,
        &batch.signature,
    );
    out.push(Verification {
        check: "signature",
        ok: signed.is_ok() && named.as_deref().ok() == Some(row.agent_id.as_str()),
        detail: match (signed, named) {
            (Ok(()), Ok(named)) if named == row.agent_id => format!(
                "batch {} carries a valid signature by {named}'s certificate",
                batch.id
            ),
            (Ok(()), Ok(named)) => format!(
                "batch {} was signed by {named}, not by this agent",
                batch.id
            ),
            (Err(e), _) => format!(
                "batch {}: {e}: its items were changed after the agent signed them",
                batch.id
            ),
            (_, Err(e)) => format!("batch {}: {e}", batch.id),
        },
    });
    out
}

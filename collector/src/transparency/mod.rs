//! Signed checkpoints over all evidence (docs/transparency.md).
//!
//! The leaves of one Merkle tree (RFC 9162) are the evidence rows in id (arrival) order; leaf
//! `i` encodes (agent id, sequence, chain hash) of row `i`. Each chain hash commits to every
//! earlier item of its agent, so a root commits to every agent's chain up to its head. The
//! collector signs checkpoints (size, root, time, CA fingerprint) with its CA key and keeps them
//! append-only; a consistency proof between two checkpoints shows that the older tree is a
//! prefix of the newer one, i.e. that nothing it covered was rewritten or removed.
//!
//! These functions are the library the CLI calls and the review web page and JSON API can call.

pub mod checkpoint;
pub mod merkle;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::ca::CertificateAuthority;
use crate::model::format_unix_ms;
use crate::store::{CheckpointRow, LeafRow, NewCheckpoint, Store, StoreError};
use checkpoint::{Checkpoint, SignedCheckpoint};
use merkle::{Frontier, Hash, Tree};

const LEAF_CONTEXT: &[u8] = b"evident.v1.leaf\0";

/// Leaf data of one evidence row:
/// "evident.v1.leaf" 0x00 || u32be(len(agent_id)) || agent_id || u64be(sequence) || chain hash.
pub fn leaf_data(agent_id: &str, sequence: u64, chain_hash: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(LEAF_CONTEXT.len() + 4 + agent_id.len() + 8 + 32);
    out.extend_from_slice(LEAF_CONTEXT);
    let id_len = u32::try_from(agent_id.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&id_len.to_be_bytes());
    out.extend_from_slice(agent_id.as_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(chain_hash);
    out
}

/// The Merkle leaf hash of one evidence row.
pub fn leaf_hash(agent_id: &str, sequence: u64, chain_hash: &[u8]) -> Hash {
    merkle::leaf_hash(&leaf_data(agent_id, sequence, chain_hash))
}

fn leaf_hash_of(row: &LeafRow) -> Hash {
    leaf_hash(&row.agent_id, row.sequence, &row.hash)
}

#[derive(Debug, thiserror::Error)]
pub enum TransparencyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing failed: {0:#}")]
    Signing(anyhow::Error),
    #[error("stored checkpoint {id} is unreadable: {what}")]
    BadCheckpoint { id: i64, what: String },
    /// The stored evidence no longer hashes to what a checkpoint signed.
    #[error(
        "stored evidence no longer matches checkpoint {id} (signed {signed_at}, {size} rows): {what}; the collector refuses to prove or sign over it. Run `evident-collector verify` to check the chains and signatures of those items"
    )]
    Diverged {
        id: i64,
        signed_at: String,
        size: u64,
        what: String,
    },
    #[error(
        "the tree has {available} rows, fewer than the {wanted} asked for: ask for at most {available}"
    )]
    TooLarge { wanted: u64, available: u64 },
    #[error(
        "no checkpoint yet: the collector signs one every checkpoint_interval_secs while serving, or run `evident-collector checkpoint create`"
    )]
    NoCheckpoint,
    #[error("{0}")]
    NotFound(String),
}

/// What `create_checkpoint` did.
#[derive(Debug, Clone)]
pub enum Created {
    New(SignedCheckpoint),
    /// No evidence arrived since the latest checkpoint (or none at all yet).
    Unchanged(Option<SignedCheckpoint>),
}

fn to_hash(id: i64, field: &str, bytes: &[u8]) -> Result<Hash, TransparencyError> {
    <Hash>::try_from(bytes).map_err(|_| TransparencyError::BadCheckpoint {
        id,
        what: format!("{field} has {} bytes", bytes.len()),
    })
}

fn signed(row: &CheckpointRow) -> Result<SignedCheckpoint, TransparencyError> {
    Ok(SignedCheckpoint {
        id: row.id,
        checkpoint: Checkpoint {
            tree_size: row.tree_size,
            root_hash: to_hash(row.id, "root_hash", &row.root_hash)?,
            signed_at_ms: row.signed_at_ms,
            ca_fingerprint: to_hash(row.id, "ca_fingerprint", &row.ca_fingerprint)?,
        },
        signature: row.signature.clone(),
    })
}

fn frontier_of(row: &CheckpointRow) -> Result<Frontier, TransparencyError> {
    let hashes = row
        .frontier
        .chunks(32)
        .map(|chunk| to_hash(row.id, "frontier", chunk))
        .collect::<Result<Vec<_>, _>>()?;
    Frontier::from_parts(row.tree_size, hashes).ok_or_else(|| TransparencyError::BadCheckpoint {
        id: row.id,
        what: "frontier does not fit its tree size".into(),
    })
}

/// Every checkpoint, oldest first.
pub fn list_checkpoints(store: &Store) -> Result<Vec<SignedCheckpoint>, TransparencyError> {
    store.checkpoints()?.iter().map(signed).collect()
}

pub fn latest_checkpoint(store: &Store) -> Result<Option<SignedCheckpoint>, TransparencyError> {
    store.latest_checkpoint()?.as_ref().map(signed).transpose()
}

pub fn checkpoint_by_id(
    store: &Store,
    id: i64,
) -> Result<Option<SignedCheckpoint>, TransparencyError> {
    store.checkpoint_by_id(id)?.as_ref().map(signed).transpose()
}

/// Signs a checkpoint over every evidence row stored now, if there are rows the latest
/// checkpoint does not cover. Hashes only those new rows (from the stored frontier).
///
/// Before extending it checks that the newest row the latest checkpoint covered is still there
/// with the same leaf hash: a cheap tripwire for the most tempting tampering (rewriting or
/// removing the newest evidence); the full check is `consistency_proof`.
pub fn create_checkpoint(
    store: &Store,
    ca: &CertificateAuthority,
    now_ms: i64,
) -> Result<Created, TransparencyError> {
    let latest = store.latest_checkpoint()?;
    let (mut frontier, after_id) = match &latest {
        None => (Frontier::new(), 0),
        Some(row) => {
            if let Some(what) = newest_row_changed(store, row)? {
                return Err(TransparencyError::Diverged {
                    id: row.id,
                    signed_at: format_unix_ms(row.signed_at_ms),
                    size: row.tree_size,
                    what,
                });
            }
            (frontier_of(row)?, row.last_leaf_id)
        }
    };
    let mut last: Option<LeafRow> = None;
    store.for_each_leaf(after_id, None, |leaf| {
        frontier.push(leaf_hash_of(&leaf));
        last = Some(leaf);
        Ok(())
    })?;
    let Some(last) = last else {
        return Ok(Created::Unchanged(latest.as_ref().map(signed).transpose()?));
    };
    let fingerprint = ring::digest::digest(&ring::digest::SHA256, ca.cert_der());
    let checkpoint = Checkpoint {
        tree_size: frontier.size(),
        root_hash: frontier.root(),
        signed_at_ms: now_ms,
        ca_fingerprint: to_hash(0, "ca_fingerprint", fingerprint.as_ref())?,
    };
    let signature = ca
        .sign(&checkpoint.signing_input())
        .map_err(TransparencyError::Signing)?;
    let id = store.append_checkpoint(
        latest.as_ref().map(|row| row.id),
        &NewCheckpoint {
            tree_size: checkpoint.tree_size,
            root_hash: checkpoint.root_hash.to_vec(),
            signed_at_ms: checkpoint.signed_at_ms,
            ca_fingerprint: checkpoint.ca_fingerprint.to_vec(),
            signature: signature.clone(),
            last_leaf_id: last.evidence_id,
            last_leaf_agent_id: last.agent_id.clone(),
            last_leaf_sequence: last.sequence,
            last_leaf_hash: leaf_hash_of(&last).to_vec(),
            frontier: frontier.hashes().concat(),
        },
    )?;
    Ok(Created::New(SignedCheckpoint {
        id,
        checkpoint,
        signature,
    }))
}

/// Whether the newest row a checkpoint covered is gone or changed, and which it was.
fn newest_row_changed(
    store: &Store,
    row: &CheckpointRow,
) -> Result<Option<String>, TransparencyError> {
    let named = format!(
        "agent {} sequence {}, the newest item it covered,",
        row.last_leaf_agent_id, row.last_leaf_sequence
    );
    Ok(match store.leaf_by_id(row.last_leaf_id)? {
        None => Some(format!("{named} was removed")),
        Some(leaf)
            if leaf.agent_id != row.last_leaf_agent_id
                || leaf.sequence != row.last_leaf_sequence =>
        {
            Some(format!("{named} was removed or moved"))
        }
        Some(leaf) if leaf_hash_of(&leaf).as_slice() != row.last_leaf_hash => {
            Some(format!("{named} was changed"))
        }
        Some(_) => None,
    })
}

/// The tree over the first `size` stored rows, with the rows, for proofs. Holds one hash per
/// node and one `LeafRow` per row in memory (about 100 bytes per row).
#[derive(Debug)]
pub struct LoadedTree {
    pub tree: Tree,
    pub leaves: Vec<LeafRow>,
}

impl LoadedTree {
    /// The position of an evidence row in the tree.
    pub fn index_of(&self, evidence_id: i64) -> Option<u64> {
        self.leaves
            .binary_search_by_key(&evidence_id, |leaf| leaf.evidence_id)
            .ok()
            .map(|i| i as u64)
    }

    fn describe(&self, start: u64, end: u64) -> String {
        let at = |i: u64| {
            self.leaves.get(i as usize).map_or_else(
                || "a removed row".to_owned(),
                |l| format!("agent {} sequence {}", l.agent_id, l.sequence),
            )
        };
        if end - start == 1 {
            format!(
                "row {} ({}) was changed, removed or moved",
                start + 1,
                at(start)
            )
        } else {
            format!(
                "rows {}..={} (now {} to {}) were changed, removed or reordered",
                start + 1,
                end,
                at(start),
                at(end - 1)
            )
        }
    }
}

/// Reads the first `size` rows and checks them against every stored checkpoint they cover:
/// a proof from a tree that no longer hashes to what the collector signed would prove nothing,
/// so it is refused with where the rows differ.
pub fn load_tree(store: &Store, size: u64) -> Result<LoadedTree, TransparencyError> {
    let mut leaves = Vec::new();
    let mut hashes = Vec::new();
    store.for_each_leaf(0, Some(size), |leaf| {
        hashes.push(leaf_hash_of(&leaf));
        leaves.push(leaf);
        Ok(())
    })?;
    let loaded = LoadedTree {
        tree: Tree::from_leaf_hashes(hashes),
        leaves,
    };
    let available = loaded.tree.size();
    for row in store.checkpoints()? {
        let diverged = |what: String| TransparencyError::Diverged {
            id: row.id,
            signed_at: format_unix_ms(row.signed_at_ms),
            size: row.tree_size,
            what,
        };
        if row.tree_size > size {
            continue;
        }
        if row.tree_size > available {
            return Err(diverged(format!(
                "only {available} rows are stored: at least {} were removed",
                row.tree_size - available
            )));
        }
        if loaded.tree.root_at(row.tree_size).as_slice() == row.root_hash {
            continue;
        }
        if let Some(what) = newest_row_changed(store, &row)? {
            return Err(diverged(what));
        }
        // The frontier holds the root of each perfect subtree of the signed tree: the first
        // one that differs narrows down where the rows changed.
        let frontier = frontier_of(&row)?;
        let mut start = 0u64;
        for (bit, hash) in (0..64)
            .rev()
            .filter(|b| row.tree_size >> b & 1 == 1)
            .zip(frontier.hashes())
        {
            let end = start + (1u64 << bit);
            if loaded.tree.subtree_root(start, end) != *hash {
                return Err(diverged(loaded.describe(start, end)));
            }
            start = end;
        }
        return Err(diverged("its root differs".into()));
    }
    Ok(loaded)
}

/// A consistency proof between two tree sizes, in the JSON form `checkpoint prove` prints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    pub format: String,
    pub old_size: u64,
    pub new_size: u64,
    /// Hex SHA-256 hashes, in RFC 9162 order.
    pub proof: Vec<String>,
}

pub const CONSISTENCY_FORMAT: &str = "evident.consistency-proof.v1";

/// The proof that the tree of `old_size` rows is a prefix of the tree of `new_size` rows
/// (default: the latest checkpoint's size). Refused when the stored rows no longer match a
/// checkpoint the collector signed.
pub fn consistency_proof(
    store: &Store,
    old_size: u64,
    new_size: Option<u64>,
) -> Result<ConsistencyProof, TransparencyError> {
    let new_size = match new_size {
        Some(size) => size,
        None => {
            latest_checkpoint(store)?
                .ok_or(TransparencyError::NoCheckpoint)?
                .checkpoint
                .tree_size
        }
    };
    let loaded = load_tree(store, new_size)?;
    if loaded.tree.size() < new_size {
        return Err(TransparencyError::TooLarge {
            wanted: new_size,
            available: loaded.tree.size(),
        });
    }
    let proof = loaded
        .tree
        .consistency_proof(old_size, new_size)
        .map_err(|e| TransparencyError::NotFound(e.to_string()))?;
    Ok(ConsistencyProof {
        format: CONSISTENCY_FORMAT.to_owned(),
        old_size,
        new_size,
        proof: proof.iter().map(hex::encode).collect(),
    })
}

/// Why two checkpoints and a proof do not show that nothing was rewritten.
#[derive(Debug, thiserror::Error)]
pub enum ConsistencyError {
    #[error("old checkpoint: {0}")]
    Old(checkpoint::CheckpointError),
    #[error("new checkpoint: {0}")]
    New(checkpoint::CheckpointError),
    #[error("the proof is malformed: {0}")]
    Malformed(String),
    #[error(
        "the proof is for sizes {proof_old} -> {proof_new}, the checkpoints have {old} -> {new}"
    )]
    Sizes {
        proof_old: u64,
        proof_new: u64,
        old: u64,
        new: u64,
    },
    #[error(
        "INCONSISTENT: the tree of checkpoint {new_id} ({new_size} rows) does not extend the tree of checkpoint {old_id} ({old_size} rows): {reason}; evidence the old checkpoint covered was rewritten or removed"
    )]
    Inconsistent {
        old_id: i64,
        new_id: i64,
        old_size: u64,
        new_size: u64,
        reason: merkle::ProofError,
    },
}

/// Checks offline, with nothing but the CA certificate, that `new` extends `old`.
pub fn verify_consistency(
    old: &SignedCheckpoint,
    new: &SignedCheckpoint,
    proof: &ConsistencyProof,
    ca_der: &[u8],
) -> Result<(), ConsistencyError> {
    old.verify(ca_der).map_err(ConsistencyError::Old)?;
    new.verify(ca_der).map_err(ConsistencyError::New)?;
    if proof.format != CONSISTENCY_FORMAT {
        return Err(ConsistencyError::Malformed(format!(
            "format is {:?}, expected {CONSISTENCY_FORMAT:?}",
            proof.format
        )));
    }
    let (o, n) = (&old.checkpoint, &new.checkpoint);
    if proof.old_size != o.tree_size || proof.new_size != n.tree_size {
        return Err(ConsistencyError::Sizes {
            proof_old: proof.old_size,
            proof_new: proof.new_size,
            old: o.tree_size,
            new: n.tree_size,
        });
    }
    let hashes = proof
        .proof
        .iter()
        .enumerate()
        .map(|(i, h)| checkpoint::hash_from_hex(&format!("proof[{i}]"), h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ConsistencyError::Malformed)?;
    merkle::verify_consistency(
        o.tree_size,
        n.tree_size,
        &o.root_hash,
        &n.root_hash,
        &hashes,
    )
    .map_err(|reason| ConsistencyError::Inconsistent {
        old_id: old.id,
        new_id: new.id,
        old_size: o.tree_size,
        new_size: n.tree_size,
        reason,
    })
}

/// An item's place in a checkpoint's tree.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InclusionProof {
    pub agent_id: String,
    pub sequence: u64,
    /// The item's chain hash (hex).
    pub hash: String,
    pub leaf_index: u64,
    pub tree_size: u64,
    pub proof: Vec<String>,
}

/// The inclusion proof of an agent's item in the tree of the latest checkpoint.
pub fn inclusion_proof(
    store: &Store,
    agent_id: &str,
    sequence: u64,
) -> Result<(SignedCheckpoint, InclusionProof), TransparencyError> {
    let latest = latest_checkpoint(store)?.ok_or(TransparencyError::NoCheckpoint)?;
    let size = latest.checkpoint.tree_size;
    let loaded = load_tree(store, size)?;
    let index = loaded
        .leaves
        .iter()
        .position(|l| l.agent_id == agent_id && l.sequence == sequence)
        .ok_or_else(|| {
            TransparencyError::NotFound(format!(
                "agent {agent_id} sequence {sequence} is not covered by checkpoint {}",
                latest.id
            ))
        })?;
    let leaf = &loaded.leaves[index];
    let proof = loaded
        .tree
        .inclusion_proof(index as u64, size)
        .map_err(|e| TransparencyError::NotFound(e.to_string()))?;
    let proof = InclusionProof {
        agent_id: leaf.agent_id.clone(),
        sequence: leaf.sequence,
        hash: hex::encode(&leaf.hash),
        leaf_index: index as u64,
        tree_size: size,
        proof: proof.iter().map(hex::encode).collect(),
    };
    Ok((latest, proof))
}

/// Signs a checkpoint every `interval` while the collector serves, when evidence arrived.
pub async fn run_loop(store: Arc<Store>, ca: Arc<CertificateAuthority>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate: let evidence arrive first
    loop {
        ticker.tick().await;
        let (store, ca) = (store.clone(), ca.clone());
        let result = tokio::task::spawn_blocking(move || {
            create_checkpoint(&store, &ca, crate::model::now_unix_ms())
        })
        .await;
        match result {
            Ok(Ok(Created::New(c))) => info!(
                checkpoint = c.id,
                tree_size = c.checkpoint.tree_size,
                root_hash = %hex::encode(c.checkpoint.root_hash),
                "checkpoint signed"
            ),
            Ok(Ok(Created::Unchanged(_))) => {}
            Ok(Err(error)) => warn!(%error, "checkpoint not signed"),
            Err(error) => warn!(%error, "checkpoint task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CaPaths;
    use crate::model::{CheckKind, HostFacts};
    use crate::store::{BatchToAppend, ItemToAppend};

    fn batch(sequences: std::ops::RangeInclusive<u64>) -> BatchToAppend {
        let items: Vec<ItemToAppend> = sequences
            .map(|sequence| ItemToAppend {
                sequence,
                check: CheckKind::Inventory,
                gap_from: None,
                observed_at_ms: 1,
                bytes: sequence.to_be_bytes().to_vec(),
            })
            .collect();
        BatchToAppend {
            items_bytes: items.iter().flat_map(|i| i.bytes.clone()).collect(),
            signature: vec![1],
            signature_algorithm: 1,
            items,
            agent_clock_skew_ms: None,
        }
    }

    #[test]
    fn incremental_checkpoints_equal_the_whole_tree_and_prove_consistency() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_or_create(&dir.path().join("collector.db")).expect("open");
        let identity = crate::store::enrol_for_test(&store, dir.path(), &HostFacts::default());
        let ca = CertificateAuthority::load(&CaPaths::new(dir.path())).expect("ca");
        assert!(matches!(
            create_checkpoint(&store, &ca, 1).expect("nothing yet"),
            Created::Unchanged(None)
        ));
        let mut sizes = Vec::new();
        for (round, range) in [1..=3, 4..=4, 5..=12, 13..=13].into_iter().enumerate() {
            store
                .append_batch(&identity, &batch(range), 10)
                .expect("append");
            let Created::New(c) = create_checkpoint(&store, &ca, 100 + round as i64).expect("sign")
            else {
                panic!("the tree grew: a new checkpoint");
            };
            c.verify(ca.cert_der()).expect("signed with the CA key");
            let whole = load_tree(&store, c.checkpoint.tree_size).expect("load");
            assert_eq!(whole.tree.root(), c.checkpoint.root_hash, "round {round}");
            sizes.push(c.checkpoint.tree_size);
        }
        assert_eq!(sizes, [3, 4, 12, 13]);
        assert!(matches!(
            create_checkpoint(&store, &ca, 200).expect("unchanged"),
            Created::Unchanged(Some(_))
        ));
        let all = list_checkpoints(&store).expect("list");
        for old in &all {
            for new in all.iter().filter(|n| n.id >= old.id) {
                let proof = consistency_proof(
                    &store,
                    old.checkpoint.tree_size,
                    Some(new.checkpoint.tree_size),
                )
                .expect("proof");
                verify_consistency(old, new, &proof, ca.cert_der())
                    .unwrap_or_else(|e| panic!("{} -> {}: {e}", old.id, new.id));
            }
        }
        let (checkpoint, inclusion) = inclusion_proof(&store, "agt-1", 7).expect("inclusion");
        let proof: Vec<Hash> = inclusion
            .proof
            .iter()
            .map(|h| checkpoint::hash_from_hex("proof", h).expect("hex"))
            .collect();
        merkle::verify_inclusion(
            &leaf_hash("agt-1", 7, &hex::decode(&inclusion.hash).expect("hex")),
            inclusion.leaf_index,
            checkpoint.checkpoint.tree_size,
            &proof,
            &checkpoint.checkpoint.root_hash,
        )
        .expect("included");
        // Sizes the tree never had are refused with the size it has.
        assert!(matches!(
            consistency_proof(&store, 3, Some(14)),
            Err(TransparencyError::TooLarge { available: 13, .. })
        ));
    }
}

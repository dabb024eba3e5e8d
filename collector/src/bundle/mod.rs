//! Evidence bundles (docs/transparency.md): the evidence that arrived in a period, in one tar
//! file an auditor verifies offline with nothing but the collector's CA certificate.
//!
//! ```text
//! manifest.json             period, per-agent sequences, anchor checkpoint, SHA-256 of every
//!                           other file; signed by the collector's CA key
//! manifest.sig              ECDSA P-256/SHA-256 (DER) over "evident.v1.bundle-manifest" 0x00
//!                           || manifest.json
//! checkpoint.json           the signed checkpoint the items are proven against
//! certificates/FP.der       the agent certificates that signed the batches (FP: SHA-256 hex)
//! batches/ID.items          a batch's ItemList exactly as the agent signed it
//! batches/ID.json           its agent, certificate, signature
//! items.json                per item: chain position (prev hash, hash), batch and index, and
//!                           its inclusion proof in the checkpoint's tree
//! ```
//!
//! Whole batches travel because an agent's signature covers a whole batch; a batch holds items
//! that arrived together, so a period by arrival time never splits one.

pub mod export;
pub mod verify;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "evident.bundle.v1";
pub const MANIFEST: &str = "manifest.json";
pub const MANIFEST_SIGNATURE: &str = "manifest.sig";
pub const CHECKPOINT: &str = "checkpoint.json";
pub const ITEMS: &str = "items.json";
const MANIFEST_CONTEXT: &[u8] = b"evident.v1.bundle-manifest\0";

/// What the collector's CA key signs for a manifest.
pub fn manifest_signing_input(manifest_json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MANIFEST_CONTEXT.len() + manifest_json.len());
    out.extend_from_slice(MANIFEST_CONTEXT);
    out.extend_from_slice(manifest_json);
    out
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub period: Period,
    pub created_at_ms: i64,
    pub checkpoint: CheckpointRef,
    pub agents: Vec<AgentRange>,
    /// SHA-256 (hex) of every file of the bundle but the manifest and its signature.
    pub files: BTreeMap<String, String>,
}

/// Evidence that arrived at the collector between these moments (inclusive).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Period {
    pub from_ms: i64,
    pub to_ms: i64,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRef {
    pub id: i64,
    pub tree_size: u64,
    pub root_hash: String,
}

/// One agent's evidence in the bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AgentRange {
    pub agent_id: String,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub items: u64,
    /// Every sequence in the bundle as inclusive ranges: a hole between ranges is a sequence
    /// the agent accounted for with a gap record, not one left out.
    pub sequences: Vec<[u64; 2]>,
}

/// `batches/ID.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BatchMeta {
    pub batch_id: i64,
    pub agent_id: String,
    /// SHA-256 (hex) of the certificate in `certificates/` whose key signed the batch.
    pub certificate: String,
    pub signature_algorithm: i32,
    pub signature: String,
}

/// One entry of `items.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ItemRecord {
    pub agent_id: String,
    pub sequence: u64,
    pub batch_id: i64,
    pub item_index: usize,
    pub received_at_ms: i64,
    pub prev_hash: String,
    pub hash: String,
    pub leaf_index: u64,
    pub inclusion_proof: Vec<String>,
}

pub fn batch_items_path(batch_id: i64) -> String {
    format!("batches/{batch_id}.items")
}

pub fn batch_meta_path(batch_id: i64) -> String {
    format!("batches/{batch_id}.json")
}

pub fn certificate_path(fingerprint_hex: &str) -> String {
    format!("certificates/{fingerprint_hex}.der")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Sequences as inclusive ranges of consecutive numbers.
pub fn ranges(sequences: &[u64]) -> Vec<[u64; 2]> {
    let mut out: Vec<[u64; 2]> = Vec::new();
    for &s in sequences {
        match out.last_mut() {
            Some(last) if last[1].checked_add(1) == Some(s) => last[1] = s,
            _ => out.push([s, s]),
        }
    }
    out
}

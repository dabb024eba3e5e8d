//! `evident-collector bundle export`: writes the bundle of a period (see `bundle`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, bail};

use super::{
    AgentRange, BatchMeta, CHECKPOINT, CheckpointRef, FORMAT, ITEMS, ItemRecord, MANIFEST,
    MANIFEST_SIGNATURE, Manifest, Period, batch_items_path, batch_meta_path, certificate_path,
    manifest_signing_input, ranges, sha256_hex,
};
use crate::ca::CertificateAuthority;
use crate::model::format_unix_ms;
use crate::store::Store;
use crate::transparency::{self, Created};

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub items: usize,
    pub batches: usize,
    pub agents: usize,
    pub checkpoint_id: i64,
    pub tree_size: u64,
    /// Whether a checkpoint was signed for this export (none covered the period yet).
    pub signed_checkpoint: bool,
    pub bytes: u64,
}

/// No evidence arrived in the period: a typed error, so the API can answer it as "nothing
/// there" rather than as a failure of the collector.
#[derive(Debug, thiserror::Error)]
#[error("no evidence arrived between {from} and {to}: nothing to bundle")]
pub struct NothingToBundle {
    pub from: String,
    pub to: String,
}

/// Writes the evidence that arrived between `from_ms` and `to_ms` (inclusive) to `out`.
/// Anchors it to the latest checkpoint, signing a new one when that does not cover the period
/// yet; refuses when the stored evidence no longer matches a signed checkpoint.
pub fn export_bundle(
    store: &Store,
    ca: &CertificateAuthority,
    from_ms: i64,
    to_ms: i64,
    out: &Path,
    now_ms: i64,
) -> anyhow::Result<Exported> {
    build(store, ca, from_ms, to_ms, now_ms, |files| {
        write_tar(out, now_ms, files.into_iter())
    })
}

/// `export_bundle` into memory, for a download.
pub fn export_bundle_bytes(
    store: &Store,
    ca: &CertificateAuthority,
    from_ms: i64,
    to_ms: i64,
    now_ms: i64,
) -> anyhow::Result<(Exported, Vec<u8>)> {
    let mut tar = Vec::new();
    let exported = build(store, ca, from_ms, to_ms, now_ms, |files| {
        tar = tar_into(Vec::new(), now_ms, files.into_iter())?;
        Ok(tar.len() as u64)
    })?;
    Ok((exported, tar))
}

/// Gathers the bundle's files and hands them to `sink`, which writes them and says how many
/// bytes it wrote.
fn build(
    store: &Store,
    ca: &CertificateAuthority,
    from_ms: i64,
    to_ms: i64,
    now_ms: i64,
    sink: impl FnOnce(Vec<(String, Vec<u8>)>) -> anyhow::Result<u64>,
) -> anyhow::Result<Exported> {
    if from_ms > to_ms {
        bail!(
            "--from {} is after --to {}: give the start of the period first",
            format_unix_ms(from_ms),
            format_unix_ms(to_ms)
        );
    }
    let rows = store.evidence_received_between(from_ms, to_ms)?;
    let Some(newest) = rows.iter().map(|r| r.evidence_id).max() else {
        return Err(NothingToBundle {
            from: format_unix_ms(from_ms),
            to: format_unix_ms(to_ms),
        }
        .into());
    };
    let (anchor, signed_checkpoint) = match transparency::create_checkpoint(store, ca, now_ms)? {
        Created::New(c) => (c, true),
        Created::Unchanged(Some(c)) => (c, false),
        Created::Unchanged(None) => bail!("no checkpoint could be signed: no evidence is stored"),
    };
    let size = anchor.checkpoint.tree_size;
    let loaded = transparency::load_tree(store, size)?;
    if loaded.tree.root().as_slice() != anchor.checkpoint.root_hash {
        bail!(
            "the stored evidence does not hash to checkpoint {}: run `evident-collector verify`",
            anchor.id
        );
    }

    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut items = Vec::with_capacity(rows.len());
    let mut batch_ids = BTreeSet::new();
    let mut per_agent: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for row in &rows {
        let index = loaded.index_of(row.evidence_id).with_context(|| {
            format!(
                "agent {} sequence {} (evidence id {}, newest {newest}) is not in checkpoint {}",
                row.agent_id, row.sequence, row.evidence_id, anchor.id
            )
        })?;
        let proof = loaded.tree.inclusion_proof(index, size)?;
        items.push(ItemRecord {
            agent_id: row.agent_id.clone(),
            sequence: row.sequence,
            batch_id: row.batch_id,
            item_index: row.item_index,
            received_at_ms: row.received_at_ms,
            prev_hash: hex::encode(&row.prev_hash),
            hash: hex::encode(&row.hash),
            leaf_index: index,
            inclusion_proof: proof.iter().map(hex::encode).collect(),
        });
        batch_ids.insert(row.batch_id);
        per_agent
            .entry(row.agent_id.as_str())
            .or_default()
            .push(row.sequence);
    }
    for &batch_id in &batch_ids {
        let batch = store
            .batch(batch_id)?
            .with_context(|| format!("batch {batch_id} of the period is not stored"))?;
        let fingerprint = sha256_hex(&batch.certificate_der);
        let meta = BatchMeta {
            batch_id,
            agent_id: batch.agent_id.clone(),
            certificate: fingerprint.clone(),
            signature_algorithm: batch.signature_algorithm,
            signature: hex::encode(&batch.signature),
        };
        files.insert(certificate_path(&fingerprint), batch.certificate_der);
        files.insert(batch_items_path(batch_id), batch.items);
        files.insert(batch_meta_path(batch_id), serde_json::to_vec_pretty(&meta)?);
    }
    files.insert(ITEMS.to_owned(), serde_json::to_vec_pretty(&items)?);
    files.insert(
        CHECKPOINT.to_owned(),
        serde_json::to_vec_pretty(&anchor.to_json())?,
    );
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        period: Period {
            from_ms,
            to_ms,
            from: format_unix_ms(from_ms),
            to: format_unix_ms(to_ms),
        },
        created_at_ms: now_ms,
        checkpoint: CheckpointRef {
            id: anchor.id,
            tree_size: size,
            root_hash: hex::encode(anchor.checkpoint.root_hash),
        },
        agents: per_agent
            .iter()
            .map(|(agent_id, sequences)| AgentRange {
                agent_id: (*agent_id).to_owned(),
                first_sequence: sequences.first().copied().unwrap_or_default(),
                last_sequence: sequences.last().copied().unwrap_or_default(),
                items: sequences.len() as u64,
                sequences: ranges(sequences),
            })
            .collect(),
        files: files
            .iter()
            .map(|(path, bytes)| (path.clone(), sha256_hex(bytes)))
            .collect(),
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest)?;
    let signature = ca.sign(&manifest_signing_input(&manifest_json))?;

    let bytes = sink(
        [
            (MANIFEST.to_owned(), manifest_json),
            (MANIFEST_SIGNATURE.to_owned(), signature),
        ]
        .into_iter()
        .chain(files)
        .collect(),
    )?;
    Ok(Exported {
        items: items.len(),
        batches: batch_ids.len(),
        agents: per_agent.len(),
        checkpoint_id: anchor.id,
        tree_size: size,
        signed_checkpoint,
        bytes,
    })
}

/// Writes the files into a tar at `out`, through a temporary file renamed into place, so that
/// a failed export leaves no half bundle behind.
fn write_tar(
    out: &Path,
    now_ms: i64,
    files: impl Iterator<Item = (String, Vec<u8>)>,
) -> anyhow::Result<u64> {
    let partial = out.with_extension("partial");
    let file =
        std::fs::File::create(&partial).with_context(|| format!("create {}", partial.display()))?;
    let writer = tar_into(std::io::BufWriter::new(file), now_ms, files)
        .with_context(|| format!("write {}", partial.display()))?;
    let file = writer
        .into_inner()
        .map_err(|e| anyhow::anyhow!("write {}: {}", partial.display(), e.error()))?;
    file.sync_all()
        .with_context(|| format!("write {}", partial.display()))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    std::fs::rename(&partial, out)
        .with_context(|| format!("move {} to {}", partial.display(), out.display()))?;
    Ok(bytes)
}

/// Writes the files as a tar archive into `writer` and hands it back.
fn tar_into<W: std::io::Write>(
    writer: W,
    now_ms: i64,
    files: impl Iterator<Item = (String, Vec<u8>)>,
) -> anyhow::Result<W> {
    let mut builder = tar::Builder::new(writer);
    let mtime = u64::try_from(now_ms / 1000).unwrap_or(0);
    for (path, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, &path, bytes.as_slice())
            .with_context(|| format!("write {path} into the bundle"))?;
    }
    builder.into_inner().context("finish the bundle")
}

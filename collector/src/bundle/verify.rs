//! `evident-collector bundle verify`: checks a bundle with nothing but the CA certificate and
//! names every item altered or missing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use x509_parser::prelude::{FromDer, X509Certificate};

use super::{
    BatchMeta, CHECKPOINT, FORMAT, ITEMS, ItemRecord, MANIFEST, MANIFEST_SIGNATURE, Manifest,
    batch_items_path, batch_meta_path, certificate_path, manifest_signing_input, sha256_hex,
};
use crate::chain;
use crate::convert;
use crate::signature;
use crate::transparency::checkpoint::{
    CheckpointJson, SignedCheckpoint, hash_from_hex, verify_ca_signature,
};
use crate::transparency::{leaf_hash, merkle};

/// Largest bundle member read into memory; a bigger one is refused rather than exhausting it.
const MAX_MEMBER_BYTES: u64 = 1 << 30;

/// A bundle that cannot be read as one at all.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not an evidence bundle: {0}")]
    Malformed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// An item whose content, chain position or proof does not check out.
    Altered,
    /// An item the manifest lists that the bundle does not carry.
    Missing,
    /// Something wrong with the bundle as a whole (a file, the manifest, the checkpoint).
    Bundle,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub kind: Kind,
    pub agent_id: Option<String>,
    pub sequence: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Altered => "ALTERED",
            Kind::Missing => "MISSING",
            Kind::Bundle => "BUNDLE",
        };
        match (&self.agent_id, self.sequence) {
            (Some(agent), Some(sequence)) => {
                write!(f, "{kind} agent {agent} sequence {sequence}: {}", self.what)
            }
            (Some(agent), None) => write!(f, "{kind} agent {agent}: {}", self.what),
            _ => write!(f, "{kind}: {}", self.what),
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub manifest: Option<Manifest>,
    pub checkpoint: Option<SignedCheckpoint>,
    pub items: usize,
    pub batches: usize,
    /// Everything found wrong, items in agent and sequence order; empty when all is good.
    pub findings: Vec<Finding>,
}

/// Verifies a bundle's bytes against the CA certificate (DER). Problems with the evidence are
/// findings in the report; only a file that is no bundle at all is an error.
pub fn verify_bundle(bundle: &[u8], ca_der: &[u8]) -> Result<Report, BundleError> {
    let files = read_tar(bundle)?;
    let manifest_bytes = files.get(MANIFEST).ok_or_else(|| {
        BundleError::Malformed(format!(
            "it has no {MANIFEST} (is it a tar made by `bundle export`?)"
        ))
    })?;
    let manifest: Manifest = serde_json::from_slice(manifest_bytes)
        .map_err(|e| BundleError::Malformed(format!("{MANIFEST} cannot be read: {e}")))?;
    if manifest.format != FORMAT {
        return Err(BundleError::Malformed(format!(
            "{MANIFEST} has format {:?}, this verifier reads {FORMAT:?}",
            manifest.format
        )));
    }
    let mut v = Verifier {
        files: &files,
        findings: Vec::new(),
    };
    v.check_manifest_signature(manifest_bytes, ca_der);
    let checkpoint = v.check_checkpoint(&manifest, ca_der);
    v.check_file_hashes(&manifest);
    let certificates = v.check_certificates(ca_der);
    let batches = v.check_batches(&certificates);
    let items = v.read_items();
    let root = checkpoint.as_ref().map(|c| c.checkpoint.root_hash);
    v.check_items(
        &manifest,
        &items,
        &batches,
        root,
        manifest.checkpoint.tree_size,
    );
    let mut findings = v.findings;
    findings.sort();
    findings.dedup();
    Ok(Report {
        items: items.len(),
        batches: batches.len(),
        manifest: Some(manifest),
        checkpoint,
        findings,
    })
}

fn read_tar(bundle: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, BundleError> {
    let malformed =
        |e: std::io::Error| BundleError::Malformed(format!("not a readable tar archive: {e}"));
    let mut archive = tar::Archive::new(bundle);
    let mut files = BTreeMap::new();
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(malformed)?
            .to_string_lossy()
            .into_owned();
        let size = entry.size();
        if size > MAX_MEMBER_BYTES {
            return Err(BundleError::Malformed(format!(
                "{path} has {size} bytes, more than any bundle member may"
            )));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry.read_to_end(&mut bytes).map_err(malformed)?;
        if files.insert(path.clone(), bytes).is_some() {
            return Err(BundleError::Malformed(format!("{path} appears twice")));
        }
    }
    if files.is_empty() {
        return Err(BundleError::Malformed("the archive is empty".into()));
    }
    Ok(files)
}

/// A batch as the bundle carries it, with what its checks found.
struct Batch {
    agent_id: String,
    items: Option<Vec<Vec<u8>>>,
    /// Why the agent's signature over it does not verify.
    signature_error: Option<String>,
}

struct Verifier<'a> {
    files: &'a BTreeMap<String, Vec<u8>>,
    findings: Vec<Finding>,
}

impl Verifier<'_> {
    fn bundle(&mut self, what: String) {
        self.findings.push(Finding {
            kind: Kind::Bundle,
            agent_id: None,
            sequence: None,
            what,
        });
    }

    fn item(&mut self, kind: Kind, agent_id: &str, sequence: u64, what: String) {
        self.findings.push(Finding {
            kind,
            agent_id: Some(agent_id.to_owned()),
            sequence: Some(sequence),
            what,
        });
    }

    fn check_manifest_signature(&mut self, manifest: &[u8], ca_der: &[u8]) {
        let Some(signature) = self.files.get(MANIFEST_SIGNATURE) else {
            self.bundle(format!(
                "{MANIFEST_SIGNATURE} is missing: the manifest is not signed"
            ));
            return;
        };
        if let Err(e) = verify_ca_signature(ca_der, &manifest_signing_input(manifest), signature) {
            self.bundle(format!(
                "the manifest's signature does not verify ({e}): the manifest was altered or not made by this collector"
            ));
        }
    }

    fn check_checkpoint(&mut self, manifest: &Manifest, ca_der: &[u8]) -> Option<SignedCheckpoint> {
        let Some(bytes) = self.files.get(CHECKPOINT) else {
            self.bundle(format!("{CHECKPOINT} is missing: no item can be proven"));
            return None;
        };
        let checkpoint = serde_json::from_slice::<CheckpointJson>(bytes)
            .map_err(|e| e.to_string())
            .and_then(|json| SignedCheckpoint::from_json(&json).map_err(|e| e.to_string()));
        let checkpoint = match checkpoint {
            Ok(c) => c,
            Err(e) => {
                self.bundle(format!("{CHECKPOINT} cannot be read: {e}"));
                return None;
            }
        };
        if let Err(e) = checkpoint.verify(ca_der) {
            self.bundle(format!("{CHECKPOINT}: {e}"));
        }
        let named = &manifest.checkpoint;
        if named.id != checkpoint.id
            || named.tree_size != checkpoint.checkpoint.tree_size
            || named.root_hash != hex::encode(checkpoint.checkpoint.root_hash)
        {
            self.bundle(format!(
                "the manifest names checkpoint {} ({} rows), {CHECKPOINT} is checkpoint {} ({} rows)",
                named.id, named.tree_size, checkpoint.id, checkpoint.checkpoint.tree_size
            ));
        }
        Some(checkpoint)
    }

    fn check_file_hashes(&mut self, manifest: &Manifest) {
        for (path, expected) in &manifest.files {
            match self.files.get(path) {
                None => self.bundle(format!(
                    "{path}, listed in the manifest, is not in the bundle"
                )),
                Some(bytes) if sha256_hex(bytes) != *expected => self.bundle(format!(
                    "{path} was altered: its SHA-256 differs from the manifest's"
                )),
                Some(_) => {}
            }
        }
        let extra: Vec<String> = self
            .files
            .keys()
            .filter(|p| {
                !manifest.files.contains_key(*p)
                    && p.as_str() != MANIFEST
                    && p.as_str() != MANIFEST_SIGNATURE
            })
            .cloned()
            .collect();
        for path in extra {
            self.bundle(format!("{path} is in the bundle but not in the manifest"));
        }
    }

    /// Agent certificates issued by the CA: fingerprint -> (agent id, raw public key).
    fn check_certificates(&mut self, ca_der: &[u8]) -> BTreeMap<String, (String, Vec<u8>)> {
        let mut out = BTreeMap::new();
        let ca = X509Certificate::from_der(ca_der).ok().map(|(_, c)| c);
        let paths: Vec<&String> = self
            .files
            .keys()
            .filter(|p| p.starts_with("certificates/"))
            .collect();
        for path in paths {
            let der = &self.files[path];
            let fingerprint = sha256_hex(der);
            if *path != certificate_path(&fingerprint) {
                self.bundle(format!(
                    "{path} does not hold the certificate its name says"
                ));
                continue;
            }
            let cert = match X509Certificate::from_der(der) {
                Ok((_, cert)) => cert,
                Err(e) => {
                    self.bundle(format!("{path} cannot be parsed: {e}"));
                    continue;
                }
            };
            let issued = ca
                .as_ref()
                .is_some_and(|ca| cert.verify_signature(Some(ca.public_key())).is_ok());
            if !issued {
                self.bundle(format!("{path} was not issued by the given CA"));
                continue;
            }
            match signature::agent_id_of(der) {
                Ok(agent_id) => {
                    out.insert(
                        fingerprint,
                        (agent_id, cert.public_key().subject_public_key.data.to_vec()),
                    );
                }
                Err(e) => self.bundle(format!("{path}: {e}")),
            }
        }
        out
    }

    fn check_batches(
        &mut self,
        certificates: &BTreeMap<String, (String, Vec<u8>)>,
    ) -> BTreeMap<i64, Batch> {
        let mut out = BTreeMap::new();
        let metas: Vec<(&String, &Vec<u8>)> = self
            .files
            .iter()
            .filter(|(p, _)| p.starts_with("batches/") && p.ends_with(".json"))
            .collect();
        for (path, bytes) in metas {
            let meta: BatchMeta = match serde_json::from_slice(bytes) {
                Ok(meta) => meta,
                Err(e) => {
                    self.bundle(format!("{path} cannot be read: {e}"));
                    continue;
                }
            };
            if *path != batch_meta_path(meta.batch_id) {
                self.bundle(format!("{path} describes batch {}", meta.batch_id));
                continue;
            }
            let items_bytes = self.files.get(&batch_items_path(meta.batch_id));
            let items = items_bytes.and_then(|b| convert::split_item_list(b).ok());
            let signature_error = match (items_bytes, certificates.get(&meta.certificate)) {
                (None, _) => Some(format!("{} is missing", batch_items_path(meta.batch_id))),
                (_, None) => Some(format!(
                    "the certificate {} that signed it is missing or not issued by the CA",
                    meta.certificate
                )),
                (Some(_), Some((agent_id, _))) if *agent_id != meta.agent_id => Some(format!(
                    "its certificate names agent {agent_id}, not {}",
                    meta.agent_id
                )),
                (Some(items), Some((_, key))) => hex::decode(&meta.signature)
                    .map_err(|e| format!("its signature is not hex: {e}"))
                    .and_then(|signature| {
                        signature::verify_with_key(key, meta.signature_algorithm, items, &signature)
                            .map_err(|e| e.to_string())
                    })
                    .err(),
            };
            out.insert(
                meta.batch_id,
                Batch {
                    agent_id: meta.agent_id,
                    items,
                    signature_error,
                },
            );
        }
        out
    }

    fn read_items(&mut self) -> Vec<ItemRecord> {
        let Some(bytes) = self.files.get(ITEMS) else {
            self.bundle(format!("{ITEMS} is missing"));
            return Vec::new();
        };
        match serde_json::from_slice(bytes) {
            Ok(items) => items,
            Err(e) => {
                self.bundle(format!("{ITEMS} cannot be read: {e}"));
                Vec::new()
            }
        }
    }

    fn check_items(
        &mut self,
        manifest: &Manifest,
        items: &[ItemRecord],
        batches: &BTreeMap<i64, Batch>,
        root: Option<merkle::Hash>,
        tree_size: u64,
    ) {
        let listed: BTreeMap<&str, BTreeSet<u64>> = manifest
            .agents
            .iter()
            .map(|a| {
                let sequences = a.sequences.iter().flat_map(|[s, e]| *s..=*e).collect();
                (a.agent_id.as_str(), sequences)
            })
            .collect();
        for a in &manifest.agents {
            let count = listed.get(a.agent_id.as_str()).map_or(0, BTreeSet::len) as u64;
            if count != a.items {
                self.bundle(format!(
                    "the manifest lists {count} sequences of agent {} but says {} items",
                    a.agent_id, a.items
                ));
            }
        }
        // Items the agent's signature does not vouch for: those whose bytes no longer hash to
        // their chain hash. A batch whose signature fails with no such item is named as a whole.
        let mut blamed_batches = BTreeSet::new();
        let mut present: BTreeMap<&str, BTreeMap<u64, &ItemRecord>> = BTreeMap::new();
        for record in items {
            let (agent, seq) = (record.agent_id.as_str(), record.sequence);
            if present
                .entry(agent)
                .or_default()
                .insert(seq, record)
                .is_some()
            {
                self.item(
                    Kind::Altered,
                    agent,
                    seq,
                    "it appears twice in items.json".into(),
                );
                continue;
            }
            if !listed.get(agent).is_some_and(|s| s.contains(&seq)) {
                self.item(
                    Kind::Altered,
                    agent,
                    seq,
                    "it is in items.json but the signed manifest does not list it".into(),
                );
            }
            let hashes = hash_from_hex("prev_hash", &record.prev_hash)
                .and_then(|p| hash_from_hex("hash", &record.hash).map(|h| (p, h)));
            let (prev_hash, hash) = match hashes {
                Ok(pair) => pair,
                Err(e) => {
                    self.item(Kind::Altered, agent, seq, e);
                    continue;
                }
            };
            let batch = batches.get(&record.batch_id);
            let bytes = match batch {
                None => {
                    self.item(
                        Kind::Missing,
                        agent,
                        seq,
                        format!("its batch {} is not in the bundle", record.batch_id),
                    );
                    None
                }
                Some(b) if b.agent_id != agent => {
                    self.item(
                        Kind::Altered,
                        agent,
                        seq,
                        format!(
                            "its batch {} belongs to agent {}",
                            record.batch_id, b.agent_id
                        ),
                    );
                    None
                }
                Some(b) => match b
                    .items
                    .as_ref()
                    .and_then(|items| items.get(record.item_index))
                {
                    Some(bytes) => Some(bytes),
                    None if !self.files.contains_key(&batch_items_path(record.batch_id)) => {
                        self.item(
                            Kind::Missing,
                            agent,
                            seq,
                            format!(
                                "its batch file {} is not in the bundle",
                                batch_items_path(record.batch_id)
                            ),
                        );
                        blamed_batches.insert(record.batch_id);
                        None
                    }
                    None => {
                        self.item(
                            Kind::Altered,
                            agent,
                            seq,
                            format!(
                                "item {} of batch {} cannot be read from the batch",
                                record.item_index, record.batch_id
                            ),
                        );
                        blamed_batches.insert(record.batch_id);
                        None
                    }
                },
            };
            if let Some(bytes) = bytes {
                let recomputed = chain::item_hash(&prev_hash, agent, bytes);
                if recomputed != hash {
                    let signature = batch
                        .and_then(|b| b.signature_error.as_deref())
                        .map_or_else(String::new, |e| {
                            format!(
                                "; the agent's signature over batch {}: {e}",
                                record.batch_id
                            )
                        });
                    self.item(
                        Kind::Altered,
                        agent,
                        seq,
                        format!("its bytes do not hash to its chain hash{signature}"),
                    );
                    blamed_batches.insert(record.batch_id);
                } else {
                    match convert::decode_item(record.item_index, bytes) {
                        Ok(item) if item.sequence != seq => self.item(
                            Kind::Altered,
                            agent,
                            seq,
                            format!("the signed item carries sequence {}", item.sequence),
                        ),
                        Ok(_) => {}
                        Err(e) => self.item(
                            Kind::Altered,
                            agent,
                            seq,
                            format!("the signed item cannot be decoded: {e}"),
                        ),
                    }
                }
            }
            if let Some(root) = root {
                let proof = record
                    .inclusion_proof
                    .iter()
                    .enumerate()
                    .map(|(i, h)| hash_from_hex(&format!("inclusion_proof[{i}]"), h))
                    .collect::<Result<Vec<_>, _>>();
                let included = proof.and_then(|proof| {
                    merkle::verify_inclusion(
                        &leaf_hash(agent, seq, &hash),
                        record.leaf_index,
                        tree_size,
                        &proof,
                        &root,
                    )
                    .map_err(|e| e.to_string())
                });
                if let Err(e) = included {
                    self.item(
                        Kind::Altered,
                        agent,
                        seq,
                        format!(
                            "it is not proven in the checkpoint at leaf {} ({e}): its chain hash or place was altered",
                            record.leaf_index
                        ),
                    );
                }
            }
        }
        for (batch_id, batch) in batches {
            if let Some(error) = &batch.signature_error
                && !blamed_batches.contains(batch_id)
            {
                self.findings.push(Finding {
                    kind: Kind::Altered,
                    agent_id: Some(batch.agent_id.clone()),
                    sequence: None,
                    what: format!("batch {batch_id}: {error}"),
                });
            }
        }
        // Every listed sequence is present, and each agent's items link up as a chain.
        for (agent, sequences) in &listed {
            let have = present.get(agent);
            for seq in sequences {
                if !have.is_some_and(|h| h.contains_key(seq)) {
                    self.item(
                        Kind::Missing,
                        agent,
                        *seq,
                        "the signed manifest lists it but the bundle does not carry it".into(),
                    );
                }
            }
        }
        for (agent, records) in &present {
            let listed = listed.get(agent);
            let mut previous: Option<&ItemRecord> = None;
            for (seq, record) in records {
                if let Some(prev) = previous
                    && record.prev_hash != prev.hash
                {
                    let missing_between =
                        listed.is_some_and(|l| l.range(prev.sequence + 1..*seq).next().is_some());
                    // A missing item is named above; a broken link beside it says no more.
                    if !missing_between {
                        self.item(
                            Kind::Altered,
                            agent,
                            *seq,
                            format!(
                                "its prev_hash does not link to sequence {}: the chain is broken",
                                prev.sequence
                            ),
                        );
                    }
                }
                previous = Some(record);
            }
        }
    }
}

//! Reading stored evidence back for people: `evident-collector evidence list`.

use serde::Serialize;

use crate::convert;
use crate::model::{CheckKind, EvidenceItem, Outcome, format_unix_ms};
use crate::store::{Store, StoreError, StoredBatch, StoredEvidence};

/// One stored item with its decoded content and chain position.
#[derive(Debug, Clone, Serialize)]
pub struct EvidenceRecord {
    pub agent_id: String,
    pub sequence: u64,
    pub check: Option<CheckKind>,
    pub observed_at: String,
    pub received_at: String,
    /// The agent's clock minus the collector's when the item arrived (positive: ahead).
    pub agent_clock_skew_ms: Option<i64>,
    pub hash: String,
    pub prev_hash: String,
    /// The facts, or `None` when the stored item cannot be decoded (`verify` says why).
    pub item: Option<EvidenceItem>,
}

pub fn list_evidence(
    store: &Store,
    agent_id: Option<&str>,
    limit: Option<usize>,
) -> Result<Vec<EvidenceRecord>, StoreError> {
    let mut out = Vec::new();
    let mut decoder = BatchItems::default();
    store.for_each_evidence(agent_id, |row, batches| {
        let item = decoder.item(&row, |id| batches.batch(id))?;
        out.push(EvidenceRecord {
            agent_id: row.agent_id,
            sequence: row.sequence,
            check: CheckKind::from_number(row.check_kind),
            observed_at: format_unix_ms(row.observed_at_ms),
            received_at: format_unix_ms(row.received_at_ms),
            agent_clock_skew_ms: row.agent_clock_skew_ms,
            hash: hex::encode(&row.hash),
            prev_hash: hex::encode(&row.prev_hash),
            item,
        });
        Ok(limit.is_none_or(|limit| out.len() < limit))
    })?;
    Ok(out)
}

/// Decodes stored items, splitting each batch once however many of its items are read in a row.
#[derive(Debug, Default)]
pub struct BatchItems {
    cached: Option<(i64, Vec<Vec<u8>>)>,
}

impl BatchItems {
    /// The decoded item of `row`; `None` when the stored bytes do not decode (`verify` says
    /// why). `load` reads a batch by id.
    pub fn item(
        &mut self,
        row: &StoredEvidence,
        load: impl FnOnce(i64) -> Result<Option<StoredBatch>, StoreError>,
    ) -> Result<Option<EvidenceItem>, StoreError> {
        if self.cached.as_ref().map(|(id, _)| *id) != Some(row.batch_id) {
            let items = load(row.batch_id)?
                .and_then(|b| convert::split_item_list(&b.items).ok())
                .unwrap_or_default();
            self.cached = Some((row.batch_id, items));
        }
        Ok(self
            .cached
            .as_ref()
            .and_then(|(_, items)| items.get(row.item_index))
            .and_then(|bytes| convert::decode_item(row.item_index, bytes).ok()))
    }
}

/// A one-line summary of an item for the table view.
pub fn summary(record: &EvidenceRecord) -> String {
    summary_of(record.item.as_ref())
}

/// A one-line summary of a decoded item (`None`: it could not be decoded).
pub fn summary_of(item: Option<&EvidenceItem>) -> String {
    match item.map(|i| &i.outcome) {
        None => "(stored item cannot be decoded: run `evident-collector verify`)".to_owned(),
        Some(Outcome::Error { reason, .. }) => format!("error: {reason}"),
        Some(Outcome::Patch(f)) => {
            let managers = f
                .managers
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join("+");
            let mut parts = vec![format!(
                "{managers}: {} pending ({} security)",
                f.pending_count, f.pending_security_count
            )];
            match f.reboot.required {
                Some(true) => parts.push("reboot required".to_owned()),
                Some(false) => {}
                None => parts.push("reboot unknown".to_owned()),
            }
            if let Some(ms) = f.last_install_unix_ms {
                parts.push(format!("last install {}", format_unix_ms(ms)));
            }
            if let Some(ms) = f.metadata_refreshed_unix_ms {
                parts.push(format!("metadata {}", format_unix_ms(ms)));
            }
            if !f.unreadable.is_empty() {
                parts.push(format!("{} facts unreadable", f.unreadable.len()));
            }
            parts.join(", ")
        }
        Some(Outcome::Gap(g)) => format!(
            "GAP: sequences {}..={} ({} items) dropped by the agent: {}",
            g.from_sequence, g.to_sequence, g.items_dropped, g.reason
        ),
        Some(Outcome::Backup(f)) => {
            if f.sources.is_empty() {
                return "no backup source configured or found".to_owned();
            }
            f.sources
                .iter()
                .map(|s| {
                    let mut text = format!("{} {}", s.tool, s.name);
                    if let Some(error) = &s.error {
                        text.push_str(&format!(": error {}", error.kind));
                    } else if let Some(ms) = s.last_success_unix_ms {
                        text.push_str(&format!(": last success {}", format_unix_ms(ms)));
                    } else {
                        text.push_str(": no successful backup");
                    }
                    if let Some(n) = s.snapshot_count {
                        text.push_str(&format!(", {n} snapshots"));
                    }
                    if let Some(test) = &s.restore_test {
                        let result = if test.passed { "passed" } else { "FAILED" };
                        text.push_str(&format!(", restore test {result}"));
                    }
                    text
                })
                .collect::<Vec<_>>()
                .join("; ")
        }
        Some(Outcome::DiskEncryption(f)) => {
            let yes_no = |v: Option<bool>| match v {
                Some(true) => "yes",
                Some(false) => "no",
                None => "unknown",
            };
            let encrypted = f
                .volumes
                .iter()
                .filter(|v| v.encrypted == "encrypted")
                .count();
            let mut parts = vec![
                format!("system encrypted: {}", yes_no(f.system_encrypted)),
                format!("data: {}", yes_no(f.fixed_data_encrypted)),
                format!("swap: {}", f.swap),
                format!("{encrypted} of {} volumes encrypted", f.volumes.len()),
            ];
            if !f.unreadable.is_empty() {
                parts.push(format!("{} facts unreadable", f.unreadable.len()));
            }
            parts.join(", ")
        }
        Some(Outcome::Inventory(f)) => {
            let mut parts = vec![f.hostname.clone().unwrap_or_else(|| "?".into())];
            let os = [f.os_name.as_deref(), f.os_version.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            if !os.is_empty() {
                parts.push(os);
            }
            parts.extend(f.architecture.clone());
            parts.extend(f.hardware_model.clone());
            if !f.unreadable.is_empty() {
                parts.push(format!("{} facts unreadable", f.unreadable.len()));
            }
            parts.join(", ")
        }
    }
}

//! The edge between the generated `evident.v1` types and the collector's domain types.

use evident_proto::v1;
use prost::Message;

use crate::model::{
    AutomaticUpdates, BackupFacts, BackupSource, CheckKind, DiskEncryptionFacts, EvidenceItem,
    GapRecord, HostFacts, InventoryFacts, Outcome, PackageManager, PatchFacts, PendingUpdate,
    RebootFacts, RebootReason, RunResult, SourceError, UnreadableFact, Volume,
};

/// An `ItemList` read with each item kept as raw bytes. On the wire a repeated message field and a
/// repeated bytes field with the same number are identical, so this yields exactly the bytes the
/// agent signed for each item, whatever fields this collector version knows.
#[derive(Clone, PartialEq, prost::Message)]
struct RawItemList {
    #[prost(bytes = "vec", repeated, tag = "1")]
    items: Vec<Vec<u8>>,
}

/// Why bytes from an agent could not be read as evidence.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("batch items are not a valid encoded ItemList: {0}")]
    ItemList(String),
    #[error("item {index} of the batch is not a valid EvidenceItem: {reason}")]
    Item { index: usize, reason: String },
    #[error(
        "item with sequence {sequence} has check kind {kind}, which this collector does not know"
    )]
    UnknownCheck { sequence: u64, kind: i32 },
    #[error("item with sequence {sequence} has no outcome: it needs facts or an error")]
    NoOutcome { sequence: u64 },
    #[error("item with sequence {sequence} is a {check} item but carries {payload} facts")]
    PayloadMismatch {
        sequence: u64,
        check: &'static str,
        payload: &'static str,
    },
    #[error(
        "item with sequence {sequence} is a gap record for {from}..={to}: a gap record takes the last sequence it covers"
    )]
    GapRange { sequence: u64, from: u64, to: u64 },
    #[error(
        "item with sequence {sequence} has {what} {number}, which this collector does not know"
    )]
    UnknownEnum {
        sequence: u64,
        what: &'static str,
        number: i32,
    },
    #[error(
        "item with sequence {sequence} counts {counted} {what} updates but lists {listed}: the counts must match the list"
    )]
    CountMismatch {
        sequence: u64,
        what: &'static str,
        counted: u32,
        listed: usize,
    },
}

/// Splits an encoded `ItemList` into the exact bytes of each item.
pub fn split_item_list(bytes: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
    RawItemList::decode(bytes)
        .map(|list| list.items)
        .map_err(|e| DecodeError::ItemList(e.to_string()))
}

/// Decodes one item's bytes into the domain type, checking that kind and payload agree.
pub fn decode_item(index: usize, bytes: &[u8]) -> Result<EvidenceItem, DecodeError> {
    let item = v1::EvidenceItem::decode(bytes).map_err(|e| DecodeError::Item {
        index,
        reason: e.to_string(),
    })?;
    let sequence = item.sequence;
    let check = CheckKind::from_number(i64::from(item.check)).ok_or(DecodeError::UnknownCheck {
        sequence,
        kind: item.check,
    })?;
    let outcome = match item.outcome {
        None => return Err(DecodeError::NoOutcome { sequence }),
        Some(v1::evidence_item::Outcome::Error(e)) => Outcome::Error {
            reason: e.reason,
            source: e.source,
        },
        Some(v1::evidence_item::Outcome::Inventory(facts)) => {
            if check != CheckKind::Inventory {
                return Err(DecodeError::PayloadMismatch {
                    sequence,
                    check: check.as_str(),
                    payload: "inventory",
                });
            }
            Outcome::Inventory(inventory(facts))
        }
        Some(v1::evidence_item::Outcome::Patch(facts)) => {
            if check != CheckKind::Patch {
                return Err(DecodeError::PayloadMismatch {
                    sequence,
                    check: check.as_str(),
                    payload: "patch",
                });
            }
            Outcome::Patch(patch(sequence, facts)?)
        }
        Some(v1::evidence_item::Outcome::DiskEncryption(facts)) => {
            if check != CheckKind::DiskEncryption {
                return Err(DecodeError::PayloadMismatch {
                    sequence,
                    check: check.as_str(),
                    payload: "disk_encryption",
                });
            }
            Outcome::DiskEncryption(disk_encryption(sequence, facts)?)
        }
        Some(v1::evidence_item::Outcome::Backup(facts)) => {
            if check != CheckKind::Backup {
                return Err(DecodeError::PayloadMismatch {
                    sequence,
                    check: check.as_str(),
                    payload: "backup",
                });
            }
            Outcome::Backup(backup(facts))
        }
        Some(v1::evidence_item::Outcome::Gap(gap)) => {
            if check != CheckKind::Gap {
                return Err(DecodeError::PayloadMismatch {
                    sequence,
                    check: check.as_str(),
                    payload: "gap",
                });
            }
            if gap.to_sequence != sequence || gap.from_sequence == 0 || gap.from_sequence > sequence
            {
                return Err(DecodeError::GapRange {
                    sequence,
                    from: gap.from_sequence,
                    to: gap.to_sequence,
                });
            }
            Outcome::Gap(GapRecord {
                from_sequence: gap.from_sequence,
                to_sequence: gap.to_sequence,
                items_dropped: gap.items_dropped,
                first_observed_at_unix_ms: gap.first_observed_at_unix_ms,
                last_observed_at_unix_ms: gap.last_observed_at_unix_ms,
                reason: gap.reason,
            })
        }
    };
    Ok(EvidenceItem {
        sequence,
        check,
        observed_at_unix_ms: item.observed_at_unix_ms,
        outcome,
    })
}

fn inventory(f: v1::InventoryFacts) -> InventoryFacts {
    InventoryFacts {
        hostname: f.hostname,
        os_family: f.os_family,
        os_name: f.os_name,
        os_version: f.os_version,
        os_build: f.os_build,
        kernel_version: f.kernel_version,
        architecture: f.architecture,
        machine_id: f.machine_id,
        hardware_vendor: f.hardware_vendor,
        hardware_model: f.hardware_model,
        hardware_serial: f.hardware_serial,
        boot_time_unix_ms: f.boot_time_unix_ms,
        agent_version: f.agent_version,
        unreadable: unreadable(f.unreadable),
        tags: f.tags,
    }
}

fn unreadable(facts: Vec<v1::UnreadableFact>) -> Vec<UnreadableFact> {
    facts
        .into_iter()
        .map(|u| UnreadableFact {
            fact: u.fact,
            reason: u.reason,
        })
        .collect()
}

/// Patch facts; the counts are a convenience for queries, so they must agree with the list.
fn patch(sequence: u64, f: v1::PatchFacts) -> Result<PatchFacts, DecodeError> {
    let security = f.pending.iter().filter(|u| u.security).count();
    for (what, counted, listed) in [
        ("pending", f.pending_count, f.pending.len()),
        ("security", f.pending_security_count, security),
    ] {
        if usize::try_from(counted).ok() != Some(listed) {
            return Err(DecodeError::CountMismatch {
                sequence,
                what,
                counted,
                listed,
            });
        }
    }
    let reboot = f.reboot.unwrap_or_default();
    Ok(PatchFacts {
        managers: f
            .managers
            .into_iter()
            .map(|m| PackageManager {
                name: m.name,
                version: m.version,
            })
            .collect(),
        pending: f
            .pending
            .into_iter()
            .map(|u| PendingUpdate {
                name: u.name,
                architecture: u.architecture,
                installed_version: u.installed_version,
                available_version: u.available_version,
                security: u.security,
                classification_source: u.classification_source,
                origins: u.origins,
                advisories: u.advisories,
                severity: u.severity,
                held: u.held,
                phased: u.phased,
                restart_required: u.restart_required,
            })
            .collect(),
        pending_count: f.pending_count,
        pending_security_count: f.pending_security_count,
        last_install_unix_ms: f.last_install_unix_ms,
        metadata_refreshed_unix_ms: f.metadata_refreshed_unix_ms,
        automatic_updates: f.automatic_updates.map(|a| AutomaticUpdates {
            mechanism: a.mechanism,
            install_enabled: a.install_enabled,
            settings: a.settings,
        }),
        reboot: RebootFacts {
            required: reboot.required,
            reasons: reboot
                .reasons
                .into_iter()
                .map(|r| RebootReason {
                    source: r.source,
                    detail: r.detail,
                })
                .collect(),
            since_unix_ms: reboot.since_unix_ms,
        },
        unreadable: unreadable(f.unreadable),
    })
}

fn disk_encryption(
    sequence: u64,
    f: v1::DiskEncryptionFacts,
) -> Result<DiskEncryptionFacts, DecodeError> {
    let unknown = |what: &'static str, number: i32| DecodeError::UnknownEnum {
        sequence,
        what,
        number,
    };
    let volumes = f
        .volumes
        .into_iter()
        .map(|v| {
            let role = match v1::VolumeRole::try_from(v.role) {
                Ok(v1::VolumeRole::System) => "system",
                Ok(v1::VolumeRole::Data) => "data",
                Ok(v1::VolumeRole::Swap) => "swap",
                Ok(v1::VolumeRole::Removable) => "removable",
                Ok(v1::VolumeRole::Other) => "other",
                Ok(v1::VolumeRole::Unspecified) | Err(_) => {
                    return Err(unknown("volume role", v.role));
                }
            };
            let encrypted = match v1::EncryptionState::try_from(v.encrypted) {
                Ok(v1::EncryptionState::Encrypted) => "encrypted",
                Ok(v1::EncryptionState::NotEncrypted) => "not_encrypted",
                Ok(v1::EncryptionState::Partial) => "partial",
                Ok(v1::EncryptionState::Encrypting) => "encrypting",
                Ok(v1::EncryptionState::Decrypting) => "decrypting",
                Ok(v1::EncryptionState::Unknown) => "unknown",
                Ok(v1::EncryptionState::Unspecified) | Err(_) => {
                    return Err(unknown("encryption state", v.encrypted));
                }
            };
            Ok(Volume {
                id: v.id,
                mount_points: v.mount_points,
                role,
                encrypted,
                reason: v.reason,
                scheme: v.scheme,
                cipher: v.cipher,
                key_bits: v.key_bits,
                protection: v.protection,
                progress_percent: v.progress_percent,
                key_protectors: v.key_protectors,
                filesystem: v.filesystem,
                size_bytes: v.size_bytes,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let swap = match v1::SwapState::try_from(f.swap) {
        Ok(v1::SwapState::Encrypted) => "encrypted",
        Ok(v1::SwapState::Absent) => "absent",
        Ok(v1::SwapState::Unencrypted) => "unencrypted",
        Ok(v1::SwapState::Unknown) => "unknown",
        Ok(v1::SwapState::Unspecified) | Err(_) => return Err(unknown("swap state", f.swap)),
    };
    Ok(DiskEncryptionFacts {
        volumes,
        system_encrypted: f.system_encrypted,
        fixed_data_encrypted: f.fixed_data_encrypted,
        swap,
        unreadable: unreadable(f.unreadable),
    })
}

fn backup(f: v1::BackupFacts) -> BackupFacts {
    let run = |r: Option<v1::RunResult>| {
        r.map(|r| RunResult {
            at_unix_ms: r.at_unix_ms,
            passed: r.passed,
            detail: r.detail,
        })
    };
    BackupFacts {
        sources: f
            .sources
            .into_iter()
            .map(|s| BackupSource {
                tool: s.tool,
                tool_version: s.tool_version,
                name: s.name,
                destination: s.destination,
                last_success_unix_ms: s.last_success_unix_ms,
                last_attempt_unix_ms: s.last_attempt_unix_ms,
                last_attempt_result: s.last_attempt_result,
                snapshot_count: s.snapshot_count,
                paths: s.paths,
                scheduled: s.scheduled,
                host_filter: s.host_filter,
                tags: s.tags,
                repository_size_bytes: s.repository_size_bytes,
                integrity_check: run(s.integrity_check),
                restore_test: run(s.restore_test),
                error: s.error.map(|e| SourceError {
                    kind: e.kind,
                    message: e.message,
                }),
            })
            .collect(),
        unreadable: unreadable(f.unreadable),
    }
}

pub fn host_facts(host: Option<v1::HostFacts>, agent_version: String) -> HostFacts {
    let host = host.unwrap_or_default();
    HostFacts {
        hostname: host.hostname,
        os_family: host.os_family,
        os_name: host.os_name,
        os_version: host.os_version,
        architecture: host.architecture,
        machine_id: host.machine_id,
        agent_version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sequence: u64, check: v1::CheckKind, outcome: v1::evidence_item::Outcome) -> Vec<u8> {
        v1::EvidenceItem {
            sequence,
            check: check as i32,
            observed_at_unix_ms: 1_700_000_000_000,
            outcome: Some(outcome),
        }
        .encode_to_vec()
    }

    #[test]
    fn split_returns_exact_item_bytes() {
        let a = item(
            1,
            v1::CheckKind::Inventory,
            v1::evidence_item::Outcome::Inventory(v1::InventoryFacts {
                hostname: Some("web-1".into()),
                ..Default::default()
            }),
        );
        let b = item(
            2,
            v1::CheckKind::Patch,
            v1::evidence_item::Outcome::Error(v1::CheckError {
                reason: "program apt not found".into(),
                source: "apt".into(),
            }),
        );
        let list = v1::ItemList {
            items: vec![
                v1::EvidenceItem::decode(a.as_slice()).expect("decode a"),
                v1::EvidenceItem::decode(b.as_slice()).expect("decode b"),
            ],
        }
        .encode_to_vec();
        assert_eq!(split_item_list(&list), Ok(vec![a.clone(), b.clone()]));
        let decoded = decode_item(1, &b).expect("decode");
        assert_eq!(decoded.check, CheckKind::Patch);
        assert!(matches!(decoded.outcome, Outcome::Error { .. }));
    }

    #[test]
    fn bad_items_are_named() {
        assert!(matches!(
            split_item_list(&[0x0a, 0x05, 0x01]),
            Err(DecodeError::ItemList(_))
        ));
        let unknown = v1::EvidenceItem {
            sequence: 7,
            check: 99,
            observed_at_unix_ms: 1,
            outcome: None,
        }
        .encode_to_vec();
        assert_eq!(
            decode_item(0, &unknown),
            Err(DecodeError::UnknownCheck {
                sequence: 7,
                kind: 99
            })
        );
        let mismatch = item(
            3,
            v1::CheckKind::Backup,
            v1::evidence_item::Outcome::Inventory(v1::InventoryFacts::default()),
        );
        assert!(matches!(
            decode_item(0, &mismatch),
            Err(DecodeError::PayloadMismatch { sequence: 3, .. })
        ));
    }
}

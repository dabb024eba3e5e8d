//! The edge between the agent's domain types and the generated `evident.v1` types.

use evident_proto::v1;
use prost::Message as _;

use crate::checks::backup::{BackupFacts, RunResult};
use crate::checks::disk_encryption::{DiskEncryptionFacts, EncryptionState, SwapState, VolumeRole};
use crate::checks::inventory::InventoryFacts;
use crate::checks::patch::PatchFacts;
use crate::checks::{CheckKind, Observation, Outcome, UnreadableFact};

pub fn evidence_item(sequence: u64, observation: &Observation) -> v1::EvidenceItem {
    let outcome = match &observation.outcome {
        Outcome::Inventory(facts) => v1::evidence_item::Outcome::Inventory(inventory(facts)),
        Outcome::Patch(facts) => v1::evidence_item::Outcome::Patch(patch(facts)),
        Outcome::DiskEncryption(facts) => {
            v1::evidence_item::Outcome::DiskEncryption(disk_encryption(facts))
        }
        Outcome::Backup(facts) => v1::evidence_item::Outcome::Backup(backup(facts)),
        Outcome::Error(error) => v1::evidence_item::Outcome::Error(v1::CheckError {
            reason: error.reason.clone(),
            source: error.source.clone().unwrap_or_default(),
        }),
    };
    v1::EvidenceItem {
        sequence,
        check: check_kind(observation.check) as i32,
        observed_at_unix_ms: observation.observed_at_unix_ms,
        outcome: Some(outcome),
    }
}

fn check_kind(kind: CheckKind) -> v1::CheckKind {
    match kind {
        CheckKind::Inventory => v1::CheckKind::Inventory,
        CheckKind::Patch => v1::CheckKind::Patch,
        CheckKind::DiskEncryption => v1::CheckKind::DiskEncryption,
        CheckKind::Backup => v1::CheckKind::Backup,
    }
}

fn inventory(f: &InventoryFacts) -> v1::InventoryFacts {
    v1::InventoryFacts {
        hostname: f.hostname.clone(),
        os_family: f.os_family.as_str().to_owned(),
        os_name: f.os_name.clone(),
        os_version: f.os_version.clone(),
        os_build: f.os_build.clone(),
        kernel_version: f.kernel_version.clone(),
        architecture: f.architecture.clone(),
        machine_id: f.machine_id.clone(),
        hardware_vendor: f.hardware_vendor.clone(),
        hardware_model: f.hardware_model.clone(),
        hardware_serial: f.hardware_serial.clone(),
        boot_time_unix_ms: f.boot_time_unix_ms,
        agent_version: f.agent_version.clone(),
        unreadable: unreadable(&f.unreadable),
        tags: f.tags.clone(),
    }
}

fn unreadable(facts: &[UnreadableFact]) -> Vec<v1::UnreadableFact> {
    facts
        .iter()
        .map(|u| v1::UnreadableFact {
            fact: u.fact.clone(),
            reason: u.reason.clone(),
        })
        .collect()
}

fn patch(f: &PatchFacts) -> v1::PatchFacts {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    v1::PatchFacts {
        managers: f
            .managers
            .iter()
            .map(|m| v1::PackageManager {
                name: m.name.clone(),
                version: m.version.clone(),
            })
            .collect(),
        pending: f
            .pending
            .iter()
            .map(|u| v1::PendingUpdate {
                name: u.name.clone(),
                architecture: u.architecture.clone(),
                installed_version: u.installed_version.clone(),
                available_version: u.available_version.clone(),
                security: u.security,
                classification_source: u.classification_source.clone(),
                origins: u.origins.clone(),
                advisories: u.advisories.clone(),
                severity: u.severity.clone(),
                held: u.held,
                phased: u.phased,
                restart_required: u.restart_required,
            })
            .collect(),
        pending_count: count(f.pending_count()),
        pending_security_count: count(f.pending_security_count()),
        last_install_unix_ms: f.last_install_unix_ms,
        metadata_refreshed_unix_ms: f.metadata_refreshed_unix_ms,
        automatic_updates: f.automatic_updates.as_ref().map(|a| v1::AutomaticUpdates {
            mechanism: a.mechanism.clone(),
            install_enabled: a.install_enabled,
            settings: a.settings.clone(),
        }),
        reboot: Some(v1::RebootFacts {
            required: f.reboot.required,
            reasons: f
                .reboot
                .reasons
                .iter()
                .map(|r| v1::RebootReason {
                    source: r.source.clone(),
                    detail: r.detail.clone(),
                })
                .collect(),
            since_unix_ms: f.reboot.since_unix_ms,
        }),
        unreadable: unreadable(&f.unreadable),
    }
}

fn disk_encryption(f: &DiskEncryptionFacts) -> v1::DiskEncryptionFacts {
    v1::DiskEncryptionFacts {
        volumes: f
            .volumes
            .iter()
            .map(|v| v1::Volume {
                id: v.id.clone(),
                mount_points: v.mount_points.clone(),
                role: volume_role(v.role) as i32,
                encrypted: encryption_state(v.encrypted) as i32,
                reason: v.reason.clone(),
                scheme: v.scheme.clone(),
                cipher: v.cipher.clone(),
                key_bits: v.key_bits,
                protection: v.protection.clone(),
                progress_percent: v.progress_percent.map(u32::from),
                key_protectors: v.key_protectors.clone(),
                filesystem: v.filesystem.clone(),
                size_bytes: v.size_bytes,
            })
            .collect(),
        system_encrypted: f.system_encrypted,
        fixed_data_encrypted: f.fixed_data_encrypted,
        swap: swap_state(f.swap) as i32,
        unreadable: unreadable(&f.unreadable),
    }
}

fn backup(f: &BackupFacts) -> v1::BackupFacts {
    let run = |r: &Option<RunResult>| {
        r.as_ref().map(|r| v1::RunResult {
            at_unix_ms: r.at_unix_ms,
            passed: r.passed,
            detail: r.detail.clone(),
        })
    };
    v1::BackupFacts {
        sources: f
            .sources
            .iter()
            .map(|s| v1::BackupSource {
                tool: s.tool.clone(),
                tool_version: s.tool_version.clone(),
                name: s.name.clone(),
                destination: s.destination.clone(),
                last_success_unix_ms: s.last_success_unix_ms,
                last_attempt_unix_ms: s.last_attempt_unix_ms,
                last_attempt_result: s.last_attempt_result.clone(),
                snapshot_count: s.snapshot_count,
                paths: s.paths.clone(),
                host_filter: s.host_filter.clone(),
                tags: s.tags.clone(),
                repository_size_bytes: s.repository_size_bytes,
                integrity_check: run(&s.integrity_check),
                restore_test: run(&s.restore_test),
                scheduled: s.scheduled,
                error: s.error.as_ref().map(|e| v1::SourceError {
                    kind: e.kind.as_str().to_owned(),
                    message: e.message.clone(),
                }),
            })
            .collect(),
        unreadable: unreadable(&f.unreadable),
    }
}

fn volume_role(role: VolumeRole) -> v1::VolumeRole {
    match role {
        VolumeRole::System => v1::VolumeRole::System,
        VolumeRole::Data => v1::VolumeRole::Data,
        VolumeRole::Swap => v1::VolumeRole::Swap,
        VolumeRole::Removable => v1::VolumeRole::Removable,
        VolumeRole::Other => v1::VolumeRole::Other,
    }
}

fn encryption_state(state: EncryptionState) -> v1::EncryptionState {
    match state {
        EncryptionState::Encrypted => v1::EncryptionState::Encrypted,
        EncryptionState::NotEncrypted => v1::EncryptionState::NotEncrypted,
        EncryptionState::Partial => v1::EncryptionState::Partial,
        EncryptionState::Encrypting => v1::EncryptionState::Encrypting,
        EncryptionState::Decrypting => v1::EncryptionState::Decrypting,
        EncryptionState::Unknown => v1::EncryptionState::Unknown,
    }
}

fn swap_state(state: SwapState) -> v1::SwapState {
    match state {
        SwapState::Encrypted => v1::SwapState::Encrypted,
        SwapState::Absent => v1::SwapState::Absent,
        SwapState::Unencrypted => v1::SwapState::Unencrypted,
        SwapState::Unknown => v1::SwapState::Unknown,
    }
}

/// The gap record for `gap`: an item at the last sequence it covers (see `evident.v1.Gap`).
pub fn gap_item(gap: &crate::spool::Gap, observed_at_unix_ms: i64) -> v1::EvidenceItem {
    v1::EvidenceItem {
        sequence: gap.to_sequence,
        check: v1::CheckKind::Gap as i32,
        observed_at_unix_ms,
        outcome: Some(v1::evidence_item::Outcome::Gap(v1::Gap {
            from_sequence: gap.from_sequence,
            to_sequence: gap.to_sequence,
            items_dropped: gap.items_dropped,
            first_observed_at_unix_ms: gap.first_observed_at_unix_ms,
            last_observed_at_unix_ms: gap.last_observed_at_unix_ms,
            reason: gap.reason.clone(),
        })),
    }
}

/// What a spooled batch holds, for a gap record that replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpooledContents {
    /// Evidence items (an earlier gap record counts what it dropped, not itself).
    pub items: u64,
    pub first_observed_at_unix_ms: Option<i64>,
    pub last_observed_at_unix_ms: Option<i64>,
    /// The first sequence an earlier gap record in it accounts for.
    pub gap_from: Option<u64>,
}

/// What a spooled batch holds; `None` when the bytes are not an `ItemList` (a corrupt file).
pub fn spooled_contents(items: &[u8]) -> Option<SpooledContents> {
    let list = v1::ItemList::decode(items).ok()?;
    let mut count = 0;
    let mut gap_from: Option<u64> = None;
    let (mut first, mut last): (Option<i64>, Option<i64>) = (None, None);
    for item in &list.items {
        match &item.outcome {
            Some(v1::evidence_item::Outcome::Gap(gap)) => {
                count += gap.items_dropped;
                gap_from = Some(gap_from.map_or(gap.from_sequence, |f| f.min(gap.from_sequence)));
                first = min_some(first, gap.first_observed_at_unix_ms);
                last = max_some(last, gap.last_observed_at_unix_ms);
            }
            _ => {
                count += 1;
                first = min_some(first, Some(item.observed_at_unix_ms));
                last = max_some(last, Some(item.observed_at_unix_ms));
            }
        }
    }
    Some(SpooledContents {
        items: count,
        first_observed_at_unix_ms: first,
        last_observed_at_unix_ms: last,
        gap_from,
    })
}

fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// What the agent tells the collector about its host at enrolment.
pub fn host_facts(facts: Option<&InventoryFacts>) -> v1::HostFacts {
    let Some(f) = facts else {
        return v1::HostFacts {
            os_family: crate::host::OsFamily::current().as_str().to_owned(),
            ..v1::HostFacts::default()
        };
    };
    v1::HostFacts {
        hostname: f.hostname.clone().unwrap_or_default(),
        os_family: f.os_family.as_str().to_owned(),
        os_name: f.os_name.clone().unwrap_or_default(),
        os_version: f.os_version.clone().unwrap_or_default(),
        architecture: f.architecture.clone().unwrap_or_default(),
        machine_id: f.machine_id.clone().unwrap_or_default(),
    }
}

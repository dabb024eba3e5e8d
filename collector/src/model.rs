//! The collector's domain types. Generated protobuf types stop at `convert`; nothing else here or
//! in storage depends on them.

use serde::Serialize;

/// What an evidence item is about. The numbers are the `evident.v1.CheckKind` values, which is
/// also how the kind is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Host identity and platform (ISO 27001:2022 A.5.9).
    Inventory,
    /// Patch level and pending updates (A.8.8).
    Patch,
    /// Disk encryption per volume (A.8.24, A.8.1).
    DiskEncryption,
    /// Backup recency and restore tests (A.8.13).
    Backup,
    /// Not a check: evidence the agent had to drop, recorded so the loss is visible.
    Gap,
}

impl CheckKind {
    pub fn from_number(number: i64) -> Option<CheckKind> {
        match number {
            1 => Some(CheckKind::Inventory),
            2 => Some(CheckKind::Patch),
            3 => Some(CheckKind::DiskEncryption),
            4 => Some(CheckKind::Backup),
            5 => Some(CheckKind::Gap),
            _ => None,
        }
    }

    pub fn number(self) -> i64 {
        match self {
            CheckKind::Inventory => 1,
            CheckKind::Patch => 2,
            CheckKind::DiskEncryption => 3,
            CheckKind::Backup => 4,
            CheckKind::Gap => 5,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Inventory => "inventory",
            CheckKind::Patch => "patch",
            CheckKind::DiskEncryption => "disk_encryption",
            CheckKind::Backup => "backup",
            CheckKind::Gap => "gap",
        }
    }
}

/// What a check observed, or why it could not. Variants hold facts by value: items are decoded
/// one at a time, so their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Inventory(InventoryFacts),
    Patch(PatchFacts),
    DiskEncryption(DiskEncryptionFacts),
    Backup(BackupFacts),
    Gap(GapRecord),
    Error { reason: String, source: String },
}

/// Evidence an agent dropped: sequences `from_sequence..=to_sequence`, the record itself taking
/// `to_sequence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GapRecord {
    pub from_sequence: u64,
    pub to_sequence: u64,
    pub items_dropped: u64,
    pub first_observed_at_unix_ms: Option<i64>,
    pub last_observed_at_unix_ms: Option<i64>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InventoryFacts {
    pub hostname: Option<String>,
    pub os_family: String,
    pub os_name: Option<String>,
    pub os_version: Option<String>,
    pub os_build: Option<String>,
    pub kernel_version: Option<String>,
    pub architecture: Option<String>,
    pub machine_id: Option<String>,
    pub hardware_vendor: Option<String>,
    pub hardware_model: Option<String>,
    pub hardware_serial: Option<String>,
    pub boot_time_unix_ms: Option<i64>,
    pub agent_version: String,
    pub unreadable: Vec<UnreadableFact>,
    /// Declared by the deployment in the agent's config; rules can be scoped to them.
    pub tags: Vec<String>,
}

/// Patch level of one host as its agent observed it (A.8.8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatchFacts {
    pub managers: Vec<PackageManager>,
    pub pending: Vec<PendingUpdate>,
    /// As the agent counted them; `convert` checks they agree with `pending`.
    pub pending_count: u32,
    pub pending_security_count: u32,
    pub last_install_unix_ms: Option<i64>,
    pub metadata_refreshed_unix_ms: Option<i64>,
    pub automatic_updates: Option<AutomaticUpdates>,
    pub reboot: RebootFacts,
    pub unreadable: Vec<UnreadableFact>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageManager {
    pub name: String,
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingUpdate {
    pub name: String,
    pub architecture: Option<String>,
    pub installed_version: Option<String>,
    pub available_version: Option<String>,
    pub security: bool,
    pub classification_source: String,
    pub origins: Vec<String>,
    pub advisories: Vec<String>,
    pub severity: Option<String>,
    pub held: bool,
    pub phased: bool,
    pub restart_required: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutomaticUpdates {
    pub mechanism: String,
    pub install_enabled: bool,
    pub settings: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RebootFacts {
    pub required: Option<bool>,
    pub reasons: Vec<RebootReason>,
    pub since_unix_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebootReason {
    pub source: String,
    pub detail: String,
}

/// Disk encryption of one host as its agent observed it (A.8.24, A.8.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskEncryptionFacts {
    pub volumes: Vec<Volume>,
    pub system_encrypted: Option<bool>,
    pub fixed_data_encrypted: Option<bool>,
    /// `encrypted`, `absent`, `unencrypted` or `unknown`.
    pub swap: &'static str,
    pub unreadable: Vec<UnreadableFact>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    pub id: String,
    pub mount_points: Vec<String>,
    /// `system`, `data`, `swap`, `removable` or `other`.
    pub role: &'static str,
    /// `encrypted`, `not_encrypted`, `partial`, `encrypting`, `decrypting` or `unknown`.
    pub encrypted: &'static str,
    pub reason: String,
    pub scheme: Option<String>,
    pub cipher: Option<String>,
    pub key_bits: Option<u32>,
    pub protection: Option<String>,
    pub progress_percent: Option<u32>,
    pub key_protectors: Vec<String>,
    pub filesystem: Option<String>,
    pub size_bytes: Option<u64>,
}

/// Backups of one host as its agent observed them (A.8.13).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupFacts {
    pub sources: Vec<BackupSource>,
    pub unreadable: Vec<UnreadableFact>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupSource {
    pub tool: String,
    pub tool_version: Option<String>,
    pub name: String,
    pub destination: String,
    pub last_success_unix_ms: Option<i64>,
    pub last_attempt_unix_ms: Option<i64>,
    pub last_attempt_result: Option<String>,
    pub snapshot_count: Option<u32>,
    pub paths: Vec<String>,
    pub scheduled: Option<bool>,
    pub host_filter: Option<String>,
    pub tags: Vec<String>,
    pub repository_size_bytes: Option<u64>,
    pub integrity_check: Option<RunResult>,
    pub restore_test: Option<RunResult>,
    pub error: Option<SourceError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunResult {
    pub at_unix_ms: i64,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceError {
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnreadableFact {
    pub fact: String,
    pub reason: String,
}

/// One evidence item as decoded from the bytes the agent signed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvidenceItem {
    pub sequence: u64,
    pub check: CheckKind,
    pub observed_at_unix_ms: i64,
    pub outcome: Outcome,
}

/// What an agent said about its host when it enrolled (informational, never identity).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    pub hostname: String,
    pub os_family: String,
    pub os_name: String,
    pub os_version: String,
    pub architecture: String,
    pub machine_id: String,
    pub agent_version: String,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 in UTC, to the second, for people; never panics, whatever an agent sent.
pub fn format_unix_ms(ms: i64) -> String {
    // humantime formats only years 1970 to 9999; agents may send anything.
    const YEAR_10000_MS: i64 = 253_402_300_800_000;
    match u64::try_from(ms) {
        Ok(_) if ms >= YEAR_10000_MS => format!("{ms} ms after 1970 (beyond year 9999)"),
        Ok(ms) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string(),
        Err(_) => format!("{ms} ms before 1970"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_time_an_agent_sends_can_be_shown() {
        assert_eq!(format_unix_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_ms(253_402_300_799_000), "9999-12-31T23:59:59Z");
        assert!(format_unix_ms(253_402_300_800_000).contains("beyond year 9999"));
        assert!(format_unix_ms(i64::MAX).contains("beyond year 9999"));
        assert!(format_unix_ms(-1).contains("before 1970"));
    }
}

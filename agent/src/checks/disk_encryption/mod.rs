//! The disk-encryption check: per volume, what the agent can prove about its encryption
//! (ISO/IEC 27001:2022 A.8.24 and A.8.1), plus the whole-host facts a policy needs.
//!
//! **Invariant:** no key, passphrase, recovery password or key-derivation material ever enters
//! these facts: key protectors are reported by *type* only (`tpm`, `recovery_password`,
//! `fido2`), and the parsers keep nothing else from the sources that hold them.
//!
//! A volume whose state cannot be read is `encrypted: unknown` with the reason; the check as a
//! whole fails only when no volume could be listed at all.

mod linux;
mod macos;
mod windows;

use serde::{Deserialize, Serialize};

use super::{CheckError, UnreadableFact};
use crate::host::{Host, OsFamily};

/// What the disk-encryption check observed about a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskEncryptionFacts {
    /// Every mounted filesystem, swap area and fixed volume found, in the source's order.
    pub volumes: Vec<Volume>,
    /// Whether the volume holding the OS is encrypted; `None` when it could not be told.
    pub system_encrypted: Option<bool>,
    /// Whether every fixed (non-removable) data volume is encrypted; `Some(true)` when there
    /// are none; `None` when one is `unknown`.
    pub fixed_data_encrypted: Option<bool>,
    /// Swap: `encrypted`, `absent`, `unencrypted` or `unknown`.
    pub swap: SwapState,
    /// Facts it tried to read and could not, with the reason.
    pub unreadable: Vec<UnreadableFact>,
}

/// One volume: a mounted filesystem, a swap area, a BitLocker drive or an APFS volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Volume {
    /// The device (`/dev/nvme0n1p3`, `/dev/mapper/vg-root`), drive letter (`C:`) or APFS
    /// volume identifier (`disk3s5`).
    pub id: String,
    /// Where it is mounted: `/`, `/home`, `[SWAP]`, `C:\`, `/System/Volumes/Data`.
    pub mount_points: Vec<String>,
    pub role: VolumeRole,
    pub encrypted: EncryptionState,
    /// How the agent knows, for people: `/ is on dm-crypt mapping luks-1234 (LUKS2) on
    /// /dev/nvme0n1p3`, or why it does not.
    pub reason: String,
    /// `luks1`, `luks2`, `plain_dm_crypt`, `bitlocker`, `filevault`, `zfs_native`, `fscrypt`.
    pub scheme: Option<String>,
    /// e.g. `aes-xts-plain64`, `XtsAes256`, `aes-256-gcm`.
    pub cipher: Option<String>,
    pub key_bits: Option<u32>,
    /// BitLocker protection: `on`, `off` (suspended); `None` where the scheme has no such state.
    pub protection: Option<String>,
    /// Percent encrypted while encryption or decryption runs (BitLocker, FileVault).
    pub progress_percent: Option<u8>,
    /// Key protector types, never their values: `passphrase`, `tpm`, `tpm_pin`,
    /// `recovery_password`, `recovery_key`, `fido2`, `tpm2`, `pkcs11`, `clevis`,
    /// `institutional_recovery_key`, `personal_recovery_key`.
    pub key_protectors: Vec<String>,
    /// The filesystem (`ext4`, `NTFS`, `apfs`), where known.
    pub filesystem: Option<String>,
    pub size_bytes: Option<u64>,
}

/// What a volume is for; the policy treats system and fixed data volumes differently from
/// removable media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VolumeRole {
    /// Holds the OS: `/`, `C:`, the macOS system/data volume group.
    System,
    /// A fixed volume with data: `/home`, `D:`.
    Data,
    /// Swap or a page file.
    Swap,
    /// Removable or hot-plugged media.
    Removable,
    /// Boot partitions, recovery volumes and whatever else holds no user data.
    #[default]
    Other,
}

/// Whether a volume is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EncryptionState {
    Encrypted,
    NotEncrypted,
    /// Only part of it: a BitLocker "used space only" drive is `Encrypted`; this is for a
    /// volume group or pool with some encrypted and some plain members.
    Partial,
    /// Encryption is running (`progress_percent` says how far).
    Encrypting,
    /// Decryption is running.
    Decrypting,
    /// The agent could not tell; `reason` says why.
    #[default]
    Unknown,
}

/// Swap as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SwapState {
    Encrypted,
    Absent,
    Unencrypted,
    #[default]
    Unknown,
}

impl VolumeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeRole::System => "system",
            VolumeRole::Data => "data",
            VolumeRole::Swap => "swap",
            VolumeRole::Removable => "removable",
            VolumeRole::Other => "other",
        }
    }
}

impl EncryptionState {
    pub fn as_str(self) -> &'static str {
        match self {
            EncryptionState::Encrypted => "encrypted",
            EncryptionState::NotEncrypted => "not_encrypted",
            EncryptionState::Partial => "partial",
            EncryptionState::Encrypting => "encrypting",
            EncryptionState::Decrypting => "decrypting",
            EncryptionState::Unknown => "unknown",
        }
    }
}

impl SwapState {
    pub fn as_str(self) -> &'static str {
        match self {
            SwapState::Encrypted => "encrypted",
            SwapState::Absent => "absent",
            SwapState::Unencrypted => "unencrypted",
            SwapState::Unknown => "unknown",
        }
    }
}

impl DiskEncryptionFacts {
    /// The facts for `volumes`, with the whole-host summary derived from them. Platform code
    /// that knows better (macOS: swap is always encrypted) overrides `swap` afterwards.
    pub fn from_volumes(volumes: Vec<Volume>, unreadable: Vec<UnreadableFact>) -> Self {
        let all = |role: VolumeRole, empty: Option<bool>| -> Option<bool> {
            let mut states = volumes
                .iter()
                .filter(|v| v.role == role)
                .map(|v| v.encrypted);
            let mut seen = false;
            let mut result = Some(true);
            for state in states.by_ref() {
                seen = true;
                match state {
                    EncryptionState::Encrypted => {}
                    EncryptionState::Unknown => {
                        if result == Some(true) {
                            result = None;
                        }
                    }
                    _ => result = Some(false),
                }
            }
            if seen { result } else { empty }
        };
        let swap = match all(VolumeRole::Swap, None) {
            _ if !volumes.iter().any(|v| v.role == VolumeRole::Swap) => SwapState::Absent,
            Some(true) => SwapState::Encrypted,
            Some(false) => SwapState::Unencrypted,
            None => SwapState::Unknown,
        };
        DiskEncryptionFacts {
            system_encrypted: all(VolumeRole::System, None),
            fixed_data_encrypted: all(VolumeRole::Data, Some(true)),
            swap,
            volumes,
            unreadable,
        }
    }
}

/// Collects the disk-encryption facts of `host`, dispatching on the observed host's OS family.
pub async fn collect(host: &Host) -> Result<DiskEncryptionFacts, CheckError> {
    match host.os_family() {
        OsFamily::Linux => linux::collect(host).await,
        OsFamily::Macos => macos::collect(host).await,
        OsFamily::Windows => windows::collect(host).await,
    }
}

#[cfg(test)]
mod tests;

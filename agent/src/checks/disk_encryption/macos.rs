//! FileVault and APFS encryption on a macOS host.
//!
//! The agent runs, in this order:
//!
//! 1. `diskutil apfs list -plist`: every APFS container and volume, with its `Roles`,
//!    `FileVault`, `Encryption`, `CryptoMigrationOn` and `Locked` flags. Without it the check
//!    fails.
//! 2. `fdesetup status`: FileVault on, off, or encrypting / decrypting with the percent done.
//! 3. `fdesetup list`, `fdesetup hasinstitutionalrecoverykey` and `fdesetup haspersonalrecoverykey`
//!    (these need root): which kinds of key unlock the boot volume group. Of `fdesetup list`
//!    only the number of lines is used, never a user name or UUID.
//! 4. `diskutil info -plist <physical store>`, once per container that is not the boot one and
//!    holds a volume without a role, because `diskutil apfs list` does not say whether a disk is
//!    internal or external.
//!
//! Roles decide what a volume is for: `System` and `Data` form the boot volume group
//! ([`VolumeRole::System`], governed by FileVault), `VM` is swap (always encrypted since OS X
//! 10.7), `Preboot`, `Recovery`, `Update`, `xART`, `Hardware` hold no user data
//! ([`VolumeRole::Other`]), and a volume without a role is data on an internal disk or
//! removable on an external one. The container holding `System`/`Data` volumes is taken to be
//! the boot container; on macOS 10.14 and older, which had no such roles, the first volume
//! without a role in a container with a `Preboot` volume is the system.
//!
//! A boot volume group with FileVault off counts as not encrypted even where the hardware
//! encrypts the disk (Apple silicon, T2): its key is then available without any user secret.
//!
//! **Invariant:** no recovery key or password is kept. Reasons never quote `fdesetup` output;
//! error texts go through [`redact`], which drops anything shaped like a personal recovery key.

use std::io::Cursor;

use plist::{Dictionary, Value};

use super::{DiskEncryptionFacts, EncryptionState, SwapState, Volume, VolumeRole};
use crate::checks::{CheckError, UnreadableFact};
use crate::host::{CommandOutput, Host, display_argv};

pub(super) const DISKUTIL: &str = "diskutil";
pub(super) const APFS_LIST_ARGS: &[&str] = &["apfs", "list", "-plist"];
pub(super) const FDESETUP: &str = "fdesetup";

/// FileVault 2 encrypts with AES in XTS mode (Apple Platform Security guide); the key size is
/// not stated per volume, so no `key_bits` are reported.
const FILEVAULT_CIPHER: &str = "AES-XTS";

pub(super) async fn collect(host: &Host) -> Result<DiskEncryptionFacts, CheckError> {
    let output = host.run(DISKUTIL, APFS_LIST_ARGS).await.map_err(|error| {
        CheckError::new("diskutil could not list the APFS volumes")
            .with_source(redact(&error.to_string()))
    })?;
    let containers = if output.success() {
        parse_apfs_list(output.stdout.as_bytes())
    } else {
        Err(failure(DISKUTIL, APFS_LIST_ARGS, &output))
    }
    .map_err(|reason| {
        CheckError::new("diskutil could not list the APFS volumes").with_source(reason)
    })?;

    let mut unreadable = Vec::new();
    let mut note = |fact: &str, reason: String| {
        unreadable.push(UnreadableFact {
            fact: fact.to_owned(),
            reason,
        })
    };
    let status = run_parsed(host, FDESETUP, &["status"], parse_fdesetup_status).await;
    let status = status
        .map_err(|reason| note("filevault_status", reason))
        .ok();
    let users = run_parsed(host, FDESETUP, &["list"], |text| {
        Ok(parse_fdesetup_list(text))
    })
    .await;
    let users = users.map_err(|reason| note("filevault_users", reason)).ok();
    let institutional = run_parsed(
        host,
        FDESETUP,
        &["hasinstitutionalrecoverykey"],
        parse_true_false,
    )
    .await;
    let institutional = institutional
        .map_err(|reason| note("institutional_recovery_key", reason))
        .ok();
    let personal = run_parsed(
        host,
        FDESETUP,
        &["haspersonalrecoverykey"],
        parse_true_false,
    )
    .await;
    let personal = personal
        .map_err(|reason| note("personal_recovery_key", reason))
        .ok();

    let boot = boot_container(&containers);
    let mut external = Vec::new();
    for (index, container) in containers.iter().enumerate() {
        let needs_location =
            Some(index) != boot && container.volumes.iter().any(|v| v.roles.is_empty());
        let location = match (&container.physical_store, needs_location) {
            (_, false) => None,
            (None, true) => {
                note(
                    "volume_location",
                    format!(
                        "container {} names no physical store: taken as internal",
                        container.reference
                    ),
                );
                None
            }
            (Some(store), true) => {
                let args = ["info", "-plist", store.as_str()];
                match run_parsed(host, DISKUTIL, &args, |text| {
                    parse_disk_info_external(text.as_bytes())
                })
                .await
                {
                    Ok(is_external) => Some(is_external),
                    Err(reason) => {
                        note(
                            "volume_location",
                            format!("{reason}: {store} taken as internal"),
                        );
                        None
                    }
                }
            }
        };
        external.push(location.unwrap_or(false));
    }

    let filevault = FileVault {
        status,
        users,
        institutional,
        personal,
    };
    Ok(build_facts(&containers, &external, &filevault, unreadable))
}

/// What `fdesetup` said; `None` where it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileVault {
    pub status: Option<FdeStatus>,
    /// How many users can unlock the disk (`fdesetup list`).
    pub users: Option<usize>,
    pub institutional: Option<bool>,
    pub personal: Option<bool>,
}

/// `fdesetup status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdeStatus {
    pub state: FdeState,
    /// While encrypting or decrypting, when `fdesetup` says.
    pub percent: Option<u8>,
    /// "Deferred enablement appears to be active for user '...'": FileVault will be turned on
    /// at that user's next login or logout. The user name is not kept.
    pub deferred: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdeState {
    On,
    Off,
    Encrypting,
    Decrypting,
}

/// Parses `fdesetup status`: `FileVault is On.`, `FileVault is Off.`, optionally followed by
/// `Encryption in progress: Percent completed = 37` (or `= 37.12`, or `: Pending`),
/// `Decryption in progress: Percent completed = 5`, or a deferred-enablement line.
/// Unexpected output is an error that does not quote it.
pub fn parse_fdesetup_status(text: &str) -> Result<FdeStatus, String> {
    let mut state = None;
    let mut percent = None;
    let mut deferred = false;
    for line in text.lines().map(str::trim) {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("filevault is on") {
            // `or`: "FileVault is On." after a progress line does not undo it.
            state = state.or(Some(FdeState::On));
        } else if lower.starts_with("filevault is off") {
            state = state.or(Some(FdeState::Off));
        } else if lower.starts_with("encryption in progress") {
            state = Some(FdeState::Encrypting);
            percent = progress(line);
        } else if lower.starts_with("decryption in progress") {
            state = Some(FdeState::Decrypting);
            percent = progress(line);
        } else if lower.starts_with("deferred enablement appears to be active") {
            deferred = true;
        }
    }
    match state {
        Some(state) => Ok(FdeStatus {
            state,
            percent,
            deferred,
        }),
        None => Err("unexpected output of `fdesetup status`".to_owned()),
    }
}

/// `Percent completed = 37.12` -> 37.
fn progress(line: &str) -> Option<u8> {
    let (_, value) = line.rsplit_once('=')?;
    let percent: f64 = value.trim().trim_end_matches('%').trim().parse().ok()?;
    (0.0..=100.0)
        .contains(&percent)
        .then(|| percent.floor() as u8)
}

/// `fdesetup hasinstitutionalrecoverykey` / `haspersonalrecoverykey`: `true` or `false`.
pub fn parse_true_false(text: &str) -> Result<bool, String> {
    match text.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected `true` or `false`".to_owned()),
    }
}

/// `fdesetup list`: one `user,UUID` line per user who can unlock the disk; only the count is
/// kept.
pub fn parse_fdesetup_list(text: &str) -> usize {
    text.lines()
        .filter(|line| {
            line.split_once(',')
                .is_some_and(|(user, uuid)| !user.trim().is_empty() && !uuid.trim().is_empty())
        })
        .count()
}

/// One APFS container of `diskutil apfs list -plist`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApfsContainer {
    /// `ContainerReference`, e.g. `disk3`.
    pub reference: String,
    /// `DesignatedPhysicalStore`, e.g. `disk0s2`.
    pub physical_store: Option<String>,
    pub volumes: Vec<ApfsVolume>,
}

/// One APFS volume.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApfsVolume {
    /// `DeviceIdentifier`, e.g. `disk3s5`.
    pub device: String,
    pub name: Option<String>,
    /// `System`, `Data`, `VM`, `Preboot`, `Recovery`, `Update`, `xART`, `Hardware`; empty for
    /// a plain volume.
    pub roles: Vec<String>,
    pub filevault: Option<bool>,
    pub encryption: Option<bool>,
    pub crypto_migration: Option<bool>,
    pub locked: Option<bool>,
    pub capacity_in_use: Option<u64>,
    pub mount_point: Option<String>,
}

impl ApfsVolume {
    fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Parses `diskutil apfs list -plist` (XML; binary plists are read too).
pub fn parse_apfs_list(bytes: &[u8]) -> Result<Vec<ApfsContainer>, String> {
    let root = Value::from_reader(Cursor::new(bytes))
        .map_err(|error| format!("`diskutil apfs list -plist` is not a property list: {error}"))?;
    let containers = root
        .as_dictionary()
        .and_then(|d| d.get("Containers"))
        .and_then(Value::as_array)
        .ok_or_else(|| "`diskutil apfs list -plist` has no Containers array".to_owned())?;
    Ok(containers
        .iter()
        .filter_map(Value::as_dictionary)
        .map(|container| ApfsContainer {
            reference: string(container, "ContainerReference").unwrap_or_default(),
            physical_store: string(container, "DesignatedPhysicalStore"),
            volumes: container
                .get("Volumes")
                .and_then(Value::as_array)
                .map(|volumes| {
                    volumes
                        .iter()
                        .filter_map(Value::as_dictionary)
                        .filter_map(parse_apfs_volume)
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect())
}

fn parse_apfs_volume(volume: &Dictionary) -> Option<ApfsVolume> {
    Some(ApfsVolume {
        device: string(volume, "DeviceIdentifier")?,
        name: string(volume, "Name"),
        roles: volume
            .get("Roles")
            .and_then(Value::as_array)
            .map(|roles| {
                roles
                    .iter()
                    .filter_map(Value::as_string)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        filevault: boolean(volume, "FileVault"),
        encryption: boolean(volume, "Encryption"),
        crypto_migration: boolean(volume, "CryptoMigrationOn"),
        locked: boolean(volume, "Locked"),
        capacity_in_use: volume
            .get("CapacityInUse")
            .and_then(Value::as_unsigned_integer),
        mount_point: string(volume, "MountPoint"),
    })
}

/// Whether `diskutil info -plist <disk>` describes an external or removable disk.
pub fn parse_disk_info_external(bytes: &[u8]) -> Result<bool, String> {
    let root = Value::from_reader(Cursor::new(bytes))
        .map_err(|error| format!("`diskutil info -plist` is not a property list: {error}"))?;
    let info = root
        .as_dictionary()
        .ok_or_else(|| "`diskutil info -plist` is not a dictionary".to_owned())?;
    let internal = boolean(info, "Internal");
    let removable = boolean(info, "RemovableMedia").or_else(|| boolean(info, "Removable"));
    match (internal, removable) {
        (Some(false), _) | (_, Some(true)) => Ok(true),
        (Some(true), _) => Ok(false),
        (None, _) => {
            Err("`diskutil info -plist` does not say whether the disk is internal".to_owned())
        }
    }
}

fn string(dict: &Dictionary, key: &str) -> Option<String> {
    dict.get(key)
        .and_then(Value::as_string)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn boolean(dict: &Dictionary, key: &str) -> Option<bool> {
    dict.get(key).and_then(Value::as_boolean)
}

/// The index of the container holding the boot volume group.
fn boot_container(containers: &[ApfsContainer]) -> Option<usize> {
    containers
        .iter()
        .position(|c| {
            c.volumes
                .iter()
                .any(|v| v.has_role("System") || v.has_role("Data"))
        })
        .or_else(|| {
            containers
                .iter()
                .position(|c| c.volumes.iter().any(|v| v.has_role("Preboot")))
        })
}

/// The facts for `containers`; `external[i]` says whether container `i` is on an external disk.
pub fn build_facts(
    containers: &[ApfsContainer],
    external: &[bool],
    filevault: &FileVault,
    unreadable: Vec<UnreadableFact>,
) -> DiskEncryptionFacts {
    let boot = boot_container(containers);
    let mut volumes = Vec::new();
    for (index, container) in containers.iter().enumerate() {
        let is_boot = Some(index) == boot;
        let has_group = container
            .volumes
            .iter()
            .any(|v| v.has_role("System") || v.has_role("Data"));
        // macOS 10.14 and older: the first volume without a role is the system volume.
        let legacy_system = (is_boot && !has_group)
            .then(|| container.volumes.iter().position(|v| v.roles.is_empty()))
            .flatten();
        for (position, apfs) in container.volumes.iter().enumerate() {
            let role = if apfs.has_role("System") || apfs.has_role("Data") {
                VolumeRole::System
            } else if apfs.has_role("VM") {
                VolumeRole::Swap
            } else if !apfs.roles.is_empty() {
                VolumeRole::Other
            } else if Some(position) == legacy_system {
                VolumeRole::System
            } else if !is_boot && external.get(index).copied().unwrap_or(false) {
                VolumeRole::Removable
            } else {
                VolumeRole::Data
            };
            let mount_point = apfs.mount_point.clone().or_else(|| {
                if !is_boot {
                    return None;
                }
                let path = if Some(position) == legacy_system || apfs.has_role("System") {
                    "/"
                } else if apfs.has_role("Data") {
                    "/System/Volumes/Data"
                } else if apfs.has_role("VM") {
                    "/System/Volumes/VM"
                } else if apfs.has_role("Preboot") {
                    "/System/Volumes/Preboot"
                } else if apfs.has_role("Update") {
                    "/System/Volumes/Update"
                } else {
                    return None;
                };
                Some(path.to_owned())
            });
            let mut volume = match role {
                VolumeRole::System => boot_group_volume(apfs, filevault),
                VolumeRole::Swap => Volume {
                    encrypted: EncryptionState::Encrypted,
                    reason: format!(
                        "{} is the swap (VM) volume: macOS always encrypts swap (since OS X 10.7)",
                        apfs.device
                    ),
                    ..Volume::default()
                },
                _ => plain_volume(apfs, role),
            };
            volume.id = apfs.device.clone();
            volume.mount_points = mount_point.into_iter().collect();
            volume.role = role;
            volume.filesystem = Some("apfs".to_owned());
            // An APFS volume has no size of its own: this is the space it uses.
            volume.size_bytes = apfs.capacity_in_use;
            volumes.push(volume);
        }
    }
    let mut facts = DiskEncryptionFacts::from_volumes(volumes, unreadable);
    facts.swap = SwapState::Encrypted;
    facts
}

/// A volume of the boot volume group, governed by FileVault.
fn boot_group_volume(apfs: &ApfsVolume, filevault: &FileVault) -> Volume {
    let device = &apfs.device;
    let status = filevault.status;
    let converting =
        status.filter(|s| matches!(s.state, FdeState::Encrypting | FdeState::Decrypting));
    let (encrypted, mut reason) = if apfs.locked == Some(true) {
        (
            EncryptionState::Encrypted,
            format!("{device} is locked: it is encrypted"),
        )
    } else if let Some(status) = converting {
        let (state, verb) = match status.state {
            FdeState::Decrypting => (EncryptionState::Decrypting, "decrypting"),
            _ => (EncryptionState::Encrypting, "encrypting"),
        };
        let done = match status.percent {
            Some(percent) => format!(", {percent}% done"),
            None => String::new(),
        };
        (state, format!("FileVault is {verb} {device}{done}"))
    } else if apfs.crypto_migration == Some(true) {
        match apfs.filevault.or(apfs.encryption) {
            Some(true) => (
                EncryptionState::Encrypting,
                format!("FileVault is encrypting {device}"),
            ),
            _ => (
                EncryptionState::Unknown,
                format!("{device} is being converted, in a direction diskutil does not say"),
            ),
        }
    } else {
        match (apfs.filevault, apfs.encryption) {
            (Some(true), _) => (
                EncryptionState::Encrypted,
                format!("FileVault is on for {device}"),
            ),
            (Some(false), Some(true)) => (
                EncryptionState::NotEncrypted,
                format!(
                    "FileVault is off for {device}: the disk is encrypted by the hardware, but \
                     its key needs no user secret"
                ),
            ),
            (Some(false), _) => (
                EncryptionState::NotEncrypted,
                format!("FileVault is off for {device}"),
            ),
            (None, Some(true)) => (EncryptionState::Encrypted, format!("{device} is encrypted")),
            (None, Some(false)) => (
                EncryptionState::NotEncrypted,
                format!("{device} is not encrypted"),
            ),
            (None, None) => (
                EncryptionState::Unknown,
                format!("diskutil does not say whether {device} is encrypted"),
            ),
        }
    };
    if status.is_some_and(|s| s.deferred) && encrypted == EncryptionState::NotEncrypted {
        reason.push_str(
            "; deferred enablement is active: FileVault will be turned on at the next login",
        );
    }
    let uses_filevault = matches!(
        encrypted,
        EncryptionState::Encrypted | EncryptionState::Encrypting | EncryptionState::Decrypting
    );
    let mut key_protectors = Vec::new();
    if uses_filevault {
        if filevault.users.is_some_and(|n| n > 0) {
            key_protectors.push("user_password".to_owned());
        }
        if filevault.institutional == Some(true) {
            key_protectors.push("institutional_recovery_key".to_owned());
        }
        if filevault.personal == Some(true) {
            key_protectors.push("personal_recovery_key".to_owned());
        }
        if let Some(users) = filevault.users.filter(|n| *n > 0) {
            let plural = if users == 1 { "" } else { "s" };
            reason.push_str(&format!(" ({users} user{plural} can unlock it)"));
        }
    }
    Volume {
        encrypted,
        reason,
        scheme: uses_filevault.then(|| "filevault".to_owned()),
        cipher: uses_filevault.then(|| FILEVAULT_CIPHER.to_owned()),
        progress_percent: converting.and_then(|s| s.percent),
        key_protectors,
        ..Volume::default()
    }
}

/// A volume outside the boot volume group: its own APFS encryption flags decide.
fn plain_volume(apfs: &ApfsVolume, role: VolumeRole) -> Volume {
    let device = &apfs.device;
    let what = match role {
        VolumeRole::Other => format!(
            "{device} holds no user data (role {})",
            apfs.roles.join(", ")
        ),
        VolumeRole::Removable => format!("{device} is on an external disk"),
        _ => format!("{device} is a data volume"),
    };
    let flag = apfs.filevault.or(apfs.encryption);
    let flag = match (apfs.filevault, apfs.encryption) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        _ => flag,
    };
    let (encrypted, state) = if apfs.locked == Some(true) {
        (EncryptionState::Encrypted, "locked, so encrypted")
    } else if apfs.crypto_migration == Some(true) {
        match flag {
            Some(true) => (EncryptionState::Encrypting, "being encrypted"),
            _ => (EncryptionState::Unknown, "being converted"),
        }
    } else {
        match flag {
            Some(true) => (EncryptionState::Encrypted, "encrypted"),
            Some(false) => (EncryptionState::NotEncrypted, "not encrypted"),
            None => (EncryptionState::Unknown, "of unknown encryption"),
        }
    };
    let uses_apfs = matches!(
        encrypted,
        EncryptionState::Encrypted | EncryptionState::Encrypting
    );
    Volume {
        encrypted,
        reason: format!("{what}, {state}"),
        scheme: uses_apfs.then(|| "apfs".to_owned()),
        cipher: uses_apfs.then(|| FILEVAULT_CIPHER.to_owned()),
        ..Volume::default()
    }
}

/// Runs a command and parses its stdout. `fdesetup` exits non-zero for some states
/// (`FileVault is Off.` is status 1), so the output is parsed whatever the status; a failed
/// status is the reason only when there is no output or it does not parse.
async fn run_parsed<T>(
    host: &Host,
    program: &str,
    args: &[&str],
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, String> {
    let output = host
        .run(program, args)
        .await
        .map_err(|error| redact(&error.to_string()))?;
    if !output.success() && output.stdout.trim().is_empty() {
        return Err(failure(program, args, &output));
    }
    match parse(&output.stdout) {
        Ok(value) => Ok(value),
        Err(_) if !output.success() => Err(failure(program, args, &output)),
        Err(reason) => Err(format!("`{}`: {reason}", display_argv(program, args))),
    }
}

fn failure(program: &str, args: &[&str], output: &CommandOutput) -> String {
    let status = output
        .status
        .map_or_else(|| "a signal".to_owned(), |code| format!("status {code}"));
    let argv = display_argv(program, args);
    let message = [output.stderr.trim(), output.stdout.trim()]
        .into_iter()
        .find(|m| !m.is_empty())
        .and_then(|m| m.lines().map(str::trim).find(|l| !l.is_empty()))
        .map(redact);
    match message {
        Some(message) => format!("`{argv}` exited with {status}: {message}"),
        None => format!("`{argv}` exited with {status}"),
    }
}

/// Replaces anything shaped like a FileVault personal recovery key (six groups of four letters
/// or digits, `ABCD-EFGH-IJKL-MNOP-QRST-UVWX`) by `[redacted]`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if looks_like_recovery_key(token) {
            out.push_str("[redacted]");
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            token.push(c);
        } else {
            flush(&mut token, &mut out);
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

fn looks_like_recovery_key(token: &str) -> bool {
    let groups: Vec<&str> = token.split('-').filter(|g| !g.is_empty()).collect();
    groups.len() >= 6
        && groups
            .iter()
            .all(|g| g.len() == 4 && g.chars().all(|c| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    const PERSONAL_KEY: &str = "ABCD-EF12-GH34-IJ56-KL78-MN90";

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/checks/disk_encryption/testdata")
            .join(name)
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(testdata("macos").join(name)).expect("fixture exists")
    }

    fn text(name: &str) -> String {
        String::from_utf8_lossy(&fixture(name)).into_owned()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn unreadable(fact: &str, reason: &str) -> UnreadableFact {
        UnreadableFact {
            fact: fact.to_owned(),
            reason: reason.to_owned(),
        }
    }

    async fn replay(name: &str) -> Result<DiskEncryptionFacts, CheckError> {
        let host = Host::replay(&testdata(name)).expect("recording loads");
        crate::checks::disk_encryption::collect(&host).await
    }

    #[test]
    fn fdesetup_status_outputs() {
        let parse = |t: &str| parse_fdesetup_status(t).expect("parses");
        assert_eq!(
            parse(&text("fdesetup-status-on")),
            FdeStatus {
                state: FdeState::On,
                percent: None,
                deferred: false
            }
        );
        assert_eq!(parse(&text("fdesetup-status-off")).state, FdeState::Off);
        assert_eq!(
            parse(&text("fdesetup-status-encrypting")),
            FdeStatus {
                state: FdeState::Encrypting,
                percent: Some(37),
                deferred: false
            }
        );
        assert_eq!(
            parse(&text("fdesetup-status-decrypting")),
            FdeStatus {
                state: FdeState::Decrypting,
                percent: Some(5),
                deferred: false
            }
        );
        assert_eq!(
            parse(&text("fdesetup-status-deferred")),
            FdeStatus {
                state: FdeState::Off,
                percent: None,
                deferred: true
            }
        );
        assert_eq!(
            parse("Encryption in progress: Percent completed = 12.75\n").percent,
            Some(12)
        );
        assert_eq!(
            parse("FileVault is On.\nEncryption in progress: Pending\n"),
            FdeStatus {
                state: FdeState::Encrypting,
                percent: None,
                deferred: false
            }
        );
        assert!(parse_fdesetup_status("").is_err());
        assert!(parse_fdesetup_status("Error: unknown verb\n").is_err());
    }

    #[test]
    fn fdesetup_keys_and_users() {
        assert_eq!(parse_true_false("true\n"), Ok(true));
        assert_eq!(parse_true_false("false"), Ok(false));
        assert!(parse_true_false("").is_err());
        assert_eq!(parse_fdesetup_list(&text("fdesetup-list")), 2);
        assert_eq!(parse_fdesetup_list(""), 0);
    }

    #[test]
    fn a_personal_recovery_key_never_leaks() {
        let output = text("fdesetup-changerecovery-personal");
        assert!(
            output.contains(PERSONAL_KEY),
            "the fixture holds the secret"
        );
        let status = parse_fdesetup_status(&output);
        let has = parse_true_false(&output);
        let users = parse_fdesetup_list(&output);
        let shown = format!("{status:?} {has:?} {users:?}");
        assert!(!shown.contains(PERSONAL_KEY), "{shown}");
        assert!(!shown.contains("EF12"), "{shown}");
        // Even a failed command's message is redacted.
        let failed = failure(
            "fdesetup",
            &["status"],
            &CommandOutput {
                status: Some(1),
                stdout: output.clone(),
                stderr: String::new(),
            },
        );
        assert!(!failed.contains(PERSONAL_KEY), "{failed}");
        assert!(failed.contains("[redacted]"), "{failed}");
        let facts = build_facts(
            &parse_apfs_list(&fixture("apfs-list-apple-silicon.plist")).expect("parses"),
            &[false, false, false],
            &FileVault {
                status: status.ok(),
                users: Some(users),
                institutional: has.ok(),
                personal: None,
            },
            vec![unreadable("filevault_status", &failed)],
        );
        let json = serde_json::to_string(&facts).expect("serializes");
        for shown in [format!("{facts:?}"), json] {
            assert!(!shown.contains(PERSONAL_KEY), "{shown}");
            assert!(!shown.contains("EF12-GH34"), "{shown}");
        }
        assert_eq!(redact("key 'AB12-CD34'"), "key 'AB12-CD34'");
    }

    #[test]
    fn apfs_list_of_an_apple_silicon_mac() {
        let containers =
            parse_apfs_list(&fixture("apfs-list-apple-silicon.plist")).expect("parses");
        assert_eq!(containers.len(), 3);
        assert_eq!(containers[0].reference, "disk1");
        assert_eq!(containers[0].physical_store.as_deref(), Some("disk0s1"));
        assert_eq!(containers[2].reference, "disk3");
        let data = &containers[2].volumes[4];
        assert_eq!(
            data,
            &ApfsVolume {
                device: "disk3s5".to_owned(),
                name: Some("Macintosh HD - Data".to_owned()),
                roles: strings(&["Data"]),
                filevault: Some(true),
                encryption: Some(true),
                crypto_migration: Some(false),
                locked: Some(false),
                capacity_in_use: Some(212_391_239_680),
                mount_point: None,
            }
        );
        assert_eq!(boot_container(&containers), Some(2));
    }

    #[test]
    fn apfs_list_of_mojave_has_no_roles_for_the_system() {
        let containers = parse_apfs_list(&fixture("apfs-list-mojave.plist")).expect("parses");
        let facts = build_facts(&containers, &[false], &FileVault::default(), vec![]);
        let roles: Vec<(String, VolumeRole, EncryptionState)> = facts
            .volumes
            .iter()
            .map(|v| (v.id.clone(), v.role, v.encrypted))
            .collect();
        assert_eq!(
            roles,
            vec![
                (
                    "disk1s1".to_owned(),
                    VolumeRole::System,
                    EncryptionState::Encrypted
                ),
                (
                    "disk1s2".to_owned(),
                    VolumeRole::Other,
                    EncryptionState::NotEncrypted
                ),
                (
                    "disk1s3".to_owned(),
                    VolumeRole::Other,
                    EncryptionState::NotEncrypted
                ),
                (
                    "disk1s4".to_owned(),
                    VolumeRole::Swap,
                    EncryptionState::Encrypted
                ),
            ]
        );
        assert_eq!(facts.volumes[0].mount_points, strings(&["/"]));
        assert_eq!(facts.system_encrypted, Some(true));
    }

    #[test]
    fn odd_plists_are_reasons() {
        assert!(parse_apfs_list(b"not a plist").is_err());
        assert!(parse_apfs_list(b"").is_err());
        let empty = br#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict><key>Containers</key><array/></dict></plist>"#;
        assert_eq!(parse_apfs_list(empty), Ok(vec![]));
        let no_containers = br#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict><key>Other</key><true/></dict></plist>"#;
        assert!(parse_apfs_list(no_containers).is_err());
        assert_eq!(
            parse_disk_info_external(&fixture("diskutil-info-usb.plist")),
            Ok(true)
        );
        let internal = br#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict><key>Internal</key><true/><key>RemovableMedia</key><false/></dict></plist>"#;
        assert_eq!(parse_disk_info_external(internal), Ok(false));
        assert!(parse_disk_info_external(b"<plist version=\"1.0\"><dict/></plist>").is_err());
    }

    #[test]
    fn filevault_off_on_hardware_encrypted_storage_is_not_encrypted() {
        let containers =
            parse_apfs_list(&fixture("apfs-list-apple-silicon.plist")).expect("parses");
        let mut containers = containers;
        for volume in &mut containers[2].volumes {
            volume.filevault = Some(false);
        }
        let status = parse_fdesetup_status(&text("fdesetup-status-deferred")).ok();
        let facts = build_facts(
            &containers,
            &[false, false, false],
            &FileVault {
                status,
                ..FileVault::default()
            },
            vec![],
        );
        let data = facts
            .volumes
            .iter()
            .find(|v| v.id == "disk3s5")
            .expect("data volume");
        assert_eq!(data.encrypted, EncryptionState::NotEncrypted);
        assert_eq!(
            data.reason,
            "FileVault is off for disk3s5: the disk is encrypted by the hardware, but its key \
             needs no user secret; deferred enablement is active: FileVault will be turned on at \
             the next login"
        );
        assert_eq!(data.scheme, None);
        assert!(data.key_protectors.is_empty());
        assert_eq!(facts.system_encrypted, Some(false));
        assert_eq!(facts.swap, SwapState::Encrypted);
    }

    fn apple_silicon_other(id: &str, role: &str, encrypted: bool, used: u64) -> Volume {
        let mount = match role {
            "Preboot" => vec!["/System/Volumes/Preboot".to_owned()],
            "Update" => vec!["/System/Volumes/Update".to_owned()],
            _ => vec![],
        };
        Volume {
            id: id.to_owned(),
            mount_points: mount,
            role: VolumeRole::Other,
            encrypted: if encrypted {
                EncryptionState::Encrypted
            } else {
                EncryptionState::NotEncrypted
            },
            reason: format!(
                "{id} holds no user data (role {role}), {}",
                if encrypted {
                    "encrypted"
                } else {
                    "not encrypted"
                }
            ),
            scheme: encrypted.then(|| "apfs".to_owned()),
            cipher: encrypted.then(|| "AES-XTS".to_owned()),
            filesystem: Some("apfs".to_owned()),
            size_bytes: Some(used),
            ..Volume::default()
        }
    }

    #[tokio::test]
    async fn replay_of_a_mac_with_filevault_on() {
        let facts = replay("replay-macos-filevault-on").await.expect("collects");
        let group = |id: &str, mount: &str, used: u64| Volume {
            id: id.to_owned(),
            mount_points: strings(&[mount]),
            role: VolumeRole::System,
            encrypted: EncryptionState::Encrypted,
            reason: format!("FileVault is on for {id} (1 user can unlock it)"),
            scheme: Some("filevault".to_owned()),
            cipher: Some("AES-XTS".to_owned()),
            key_protectors: strings(&["user_password", "personal_recovery_key"]),
            filesystem: Some("apfs".to_owned()),
            size_bytes: Some(used),
            ..Volume::default()
        };
        let mut isc_preboot = apple_silicon_other("disk1s1", "Preboot", false, 6_475_776);
        isc_preboot.mount_points = vec![];
        let expected = vec![
            isc_preboot,
            apple_silicon_other("disk1s2", "xART", true, 6_311_936),
            apple_silicon_other("disk1s3", "Hardware", false, 3_756_032),
            apple_silicon_other("disk2s1", "Recovery", false, 1_346_883_584),
            group("disk3s1", "/", 10_276_265_984),
            Volume {
                mount_points: strings(&["/System/Volumes/Preboot"]),
                ..apple_silicon_other("disk3s2", "Preboot", false, 6_390_935_552)
            },
            Volume {
                mount_points: vec![],
                ..apple_silicon_other("disk3s3", "Recovery", false, 1_005_715_456)
            },
            apple_silicon_other("disk3s4", "Update", false, 3_506_176),
            group("disk3s5", "/System/Volumes/Data", 212_391_239_680),
            Volume {
                id: "disk3s6".to_owned(),
                mount_points: strings(&["/System/Volumes/VM"]),
                role: VolumeRole::Swap,
                encrypted: EncryptionState::Encrypted,
                reason: "disk3s6 is the swap (VM) volume: macOS always encrypts swap (since OS X \
                         10.7)"
                    .to_owned(),
                filesystem: Some("apfs".to_owned()),
                size_bytes: Some(2_147_504_128),
                ..Volume::default()
            },
            Volume {
                id: "disk5s1".to_owned(),
                mount_points: vec![],
                role: VolumeRole::Removable,
                encrypted: EncryptionState::Encrypted,
                reason: "disk5s1 is on an external disk, encrypted".to_owned(),
                scheme: Some("apfs".to_owned()),
                cipher: Some("AES-XTS".to_owned()),
                filesystem: Some("apfs".to_owned()),
                size_bytes: Some(401_982_373_888),
                ..Volume::default()
            },
        ];
        assert_eq!(facts.volumes.len(), expected.len());
        for (got, want) in facts.volumes.iter().zip(&expected) {
            assert_eq!(got, want);
        }
        assert_eq!(
            facts,
            DiskEncryptionFacts {
                volumes: expected,
                system_encrypted: Some(true),
                fixed_data_encrypted: Some(true),
                swap: SwapState::Encrypted,
                unreadable: vec![],
            }
        );
    }

    #[tokio::test]
    async fn replay_of_a_mac_encrypting_without_root() {
        let facts = replay("replay-macos-filevault-encrypting")
            .await
            .expect("collects");
        let group = |id: &str, mount: &str, used: u64| Volume {
            id: id.to_owned(),
            mount_points: strings(&[mount]),
            role: VolumeRole::System,
            encrypted: EncryptionState::Encrypting,
            reason: format!("FileVault is encrypting {id}, 37% done"),
            scheme: Some("filevault".to_owned()),
            cipher: Some("AES-XTS".to_owned()),
            progress_percent: Some(37),
            filesystem: Some("apfs".to_owned()),
            size_bytes: Some(used),
            ..Volume::default()
        };
        let other = |id: &str, role: &str, mount: Option<&str>, used: u64| Volume {
            id: id.to_owned(),
            mount_points: mount.map(str::to_owned).into_iter().collect(),
            role: VolumeRole::Other,
            encrypted: EncryptionState::NotEncrypted,
            reason: format!("{id} holds no user data (role {role}), not encrypted"),
            filesystem: Some("apfs".to_owned()),
            size_bytes: Some(used),
            ..Volume::default()
        };
        let root = "Error: This command must be run as root.";
        assert_eq!(
            facts,
            DiskEncryptionFacts {
                volumes: vec![
                    group("disk1s1", "/", 15_205_298_176),
                    group("disk1s2", "/System/Volumes/Data", 96_874_106_880),
                    other(
                        "disk1s3",
                        "Preboot",
                        Some("/System/Volumes/Preboot"),
                        1_784_098_816
                    ),
                    other("disk1s4", "Recovery", None, 1_110_609_920),
                    Volume {
                        id: "disk1s5".to_owned(),
                        mount_points: strings(&["/System/Volumes/VM"]),
                        role: VolumeRole::Swap,
                        encrypted: EncryptionState::Encrypted,
                        reason: "disk1s5 is the swap (VM) volume: macOS always encrypts swap \
                                 (since OS X 10.7)"
                            .to_owned(),
                        filesystem: Some("apfs".to_owned()),
                        size_bytes: Some(4_295_000_064),
                        ..Volume::default()
                    },
                    other(
                        "disk1s6",
                        "Update",
                        Some("/System/Volumes/Update"),
                        2_654_208
                    ),
                ],
                system_encrypted: Some(false),
                fixed_data_encrypted: Some(true),
                swap: SwapState::Encrypted,
                unreadable: vec![
                    unreadable(
                        "filevault_users",
                        &format!("`fdesetup list` exited with status 1: {root}")
                    ),
                    unreadable(
                        "institutional_recovery_key",
                        &format!(
                            "`fdesetup hasinstitutionalrecoverykey` exited with status 1: {root}"
                        )
                    ),
                    unreadable(
                        "personal_recovery_key",
                        &format!("`fdesetup haspersonalrecoverykey` exited with status 1: {root}")
                    ),
                ],
            }
        );
    }

    #[tokio::test]
    async fn without_diskutil_the_check_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("host.toml"), "os_family = \"macos\"\n").expect("write");
        std::fs::create_dir(dir.path().join("commands")).expect("mkdir");
        std::fs::write(
            dir.path().join("commands/0001.toml"),
            "argv = [\"diskutil\", \"apfs\", \"list\", \"-plist\"]\nstatus = 1\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("commands/0001.stderr"),
            "Unable to run because unable to use the DiskManagement framework.\n",
        )
        .expect("write");
        let host = Host::replay(dir.path()).expect("loads");
        let error = collect(&host).await.expect_err("fails");
        assert_eq!(error.reason, "diskutil could not list the APFS volumes");
        assert_eq!(
            error.source.as_deref(),
            Some(
                "`diskutil apfs list -plist` exited with status 1: Unable to run because unable \
                 to use the DiskManagement framework."
            )
        );
    }
}

//! Linux: the block-device tree followed from each mounted filesystem and swap area down to
//! the disks, through partitions, LVM, RAID and dm-crypt.
//!
//! Sources:
//! - `lsblk --json` (util-linux): the tree, with filesystem types (`crypto_LUKS` and its
//!   version), mount points, removable and hot-plug flags. A device with several parents (an
//!   LVM volume across two disks, a RAID member) appears once under each, so each path down is
//!   judged: encrypted on every path, on none, or on some (`partial`);
//! - `cryptsetup luksDump DEVICE` for each LUKS container: cipher, key size, and the key
//!   protectors by type (a keyslot bound to a `systemd-tpm2` token is `tpm2`, one bound to no
//!   token is `passphrase`); never a key, salt or digest;
//! - `cryptsetup status NAME` for plain dm-crypt mappings (encrypted swap with a random key);
//! - `/proc/swaps` for swap files, judged by the filesystem that holds them;
//! - `zfs list` for ZFS datasets with native encryption, when ZFS is installed.
//!
//! `luksDump` and `status` need root; without it the volume is still known to be encrypted
//! (from the tree) and the header details are listed as unreadable. fscrypt (per-directory
//! encryption) and self-encrypting drives are not seen here.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{DiskEncryptionFacts, EncryptionState, SwapState, Volume, VolumeRole};
use crate::checks::{CheckError, UnreadableFact, first_lines, run_expecting};
use crate::host::{Host, HostError};

const LSBLK_COLUMNS: &str = "NAME,PATH,TYPE,FSTYPE,FSVER,MOUNTPOINTS,RM,HOTPLUG,SIZE";
/// util-linux before 2.37 knows only the first mount point of a device, before 2.35 no FSVER
/// and before 2.33 no PATH: the fallback asks for full paths in NAME (`--paths`) and leaves the
/// LUKS version to `cryptsetup luksDump`.
const LSBLK_COLUMNS_OLD: &str = "NAME,TYPE,FSTYPE,MOUNTPOINT,RM,HOTPLUG,SIZE";
const PROC_SWAPS: &str = "/proc/swaps";
const ZFS_LIST: &[&str] = &[
    "list",
    "-H",
    "-p",
    "-t",
    "filesystem",
    "-o",
    "name,mountpoint,mounted,encryption,keystatus,keyformat",
];
/// Mount points that hold the boot loader and kernels, which a disk-encryption layout leaves in
/// the clear by design.
const BOOT_MOUNTS: &[&str] = &["/boot", "/boot/efi", "/efi"];

pub(super) async fn collect(host: &Host) -> Result<DiskEncryptionFacts, CheckError> {
    let tree = lsblk(host).await.map_err(|reason| {
        CheckError::new("could not list the block devices with lsblk").with_source(reason)
    })?;
    let mut unreadable = Vec::new();
    let swaps = match host.read_file(PROC_SWAPS).await {
        Ok(text) => parse_proc_swaps(&text),
        Err(error) => {
            unreadable.push(fact("swap", error.to_string()));
            Vec::new()
        }
    };
    let mut volumes = block_volumes(&tree, &swaps);
    // Root and swap in one LUKS container share its header: read it once.
    let mut headers: BTreeMap<String, Result<CryptDetails, String>> = BTreeMap::new();
    for volume in &mut volumes {
        let Some(crypt) = volume.crypt.take() else {
            continue;
        };
        if !headers.contains_key(&crypt.container) {
            let details = describe_crypt(host, &crypt).await;
            if let Err(reason) = &details {
                let what = if crypt.luks_version.is_some() {
                    format!("luks_header {}", crypt.container)
                } else {
                    format!("dm_crypt_status {}", crypt.name)
                };
                unreadable.push(fact(&what, reason.clone()));
            }
            headers.insert(crypt.container.clone(), details);
        }
        if let Some(Ok(details)) = headers.get(&crypt.container) {
            let volume = &mut volume.volume;
            if let Some(scheme) = &details.scheme {
                // An old lsblk gave no LUKS version: the header did.
                volume.reason = volume.reason.replace("(luks)", &format!("({scheme})"));
                volume.scheme = Some(scheme.clone());
            }
            volume.cipher.clone_from(&details.cipher);
            volume.key_bits = details.key_bits;
            volume.key_protectors.clone_from(&details.protectors);
        }
    }
    let mut volumes: Vec<Volume> = volumes.into_iter().map(|v| v.volume).collect();
    volumes.extend(swap_files(&swaps, &volumes));
    match zfs_datasets(host).await {
        Ok(datasets) => volumes.extend(datasets),
        Err(reason) => unreadable.push(fact("zfs", reason)),
    }
    let mut facts = DiskEncryptionFacts::from_volumes(volumes, unreadable);
    // What could not be read may hide an unencrypted swap file or ZFS dataset: then a clean
    // summary would be a guess.
    let unread = |name: &str| facts.unreadable.iter().any(|u| u.fact == name);
    if unread("swap") && facts.swap != SwapState::Unencrypted {
        facts.swap = SwapState::Unknown;
    }
    if unread("zfs") && facts.fixed_data_encrypted == Some(true) {
        facts.fixed_data_encrypted = None;
    }
    Ok(facts)
}

fn fact(fact: &str, reason: impl Into<String>) -> UnreadableFact {
    UnreadableFact {
        fact: fact.to_owned(),
        reason: reason.into(),
    }
}

async fn lsblk(host: &Host) -> Result<Vec<Node>, String> {
    let mut first_error = None;
    for (columns, paths) in [(LSBLK_COLUMNS, None), (LSBLK_COLUMNS_OLD, Some("--paths"))] {
        let mut args = vec!["--json", "--bytes", "--output", columns];
        args.extend(paths);
        match run_expecting(host, "lsblk", &args, &[0]).await {
            Ok(output) => return parse_lsblk(&output.stdout),
            Err(reason) => {
                // Only an old lsblk that lacks MOUNTPOINTS deserves the second try.
                if !reason.contains("unknown column") {
                    return Err(reason);
                }
                first_error.get_or_insert(reason);
            }
        }
    }
    Err(first_error.unwrap_or_default())
}

/// One block device in `lsblk --json` output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Node {
    pub name: String,
    pub path: String,
    /// `disk`, `part`, `crypt`, `lvm`, `raid1`, `loop`, `rom`, …
    pub kind: String,
    pub fstype: Option<String>,
    pub fsver: Option<String>,
    pub mountpoints: Vec<String>,
    pub removable: bool,
    pub size_bytes: Option<u64>,
    pub children: Vec<Node>,
}

/// Parses `lsblk --json` of util-linux 2.33 to 2.40: booleans and sizes are JSON values in new
/// versions and strings (`"1"`, `"512110190592"`) in old ones; `mountpoints` is a list with
/// `null` for "none", or the older single `mountpoint`.
pub(crate) fn parse_lsblk(text: &str) -> Result<Vec<Node>, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("lsblk printed no valid JSON: {e}"))?;
    let devices = value
        .get("blockdevices")
        .and_then(Value::as_array)
        .ok_or("lsblk JSON has no \"blockdevices\" list")?;
    devices.iter().map(node).collect()
}

fn node(value: &Value) -> Result<Node, String> {
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let flag = |key: &str| match value.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "1",
        Some(Value::Number(n)) => n.as_u64() == Some(1),
        _ => false,
    };
    let name = text("name").ok_or_else(|| format!("lsblk device without a name: {value}"))?;
    let mut mountpoints: Vec<String> = match value.get("mountpoints") {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => text("mountpoint").into_iter().collect(),
    };
    mountpoints.retain(|m| !m.is_empty());
    let size_bytes = match value.get("size") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    let children = match value.get("children") {
        Some(Value::Array(list)) => list.iter().map(node).collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    let path = match text("path") {
        Some(path) => path,
        None if name.starts_with('/') => name.clone(),
        None => format!("/dev/{name}"),
    };
    // With `--paths` a mapping's NAME is `/dev/mapper/NAME`; cryptsetup wants the bare name.
    let name = name
        .strip_prefix("/dev/mapper/")
        .map_or(name.clone(), str::to_owned);
    Ok(Node {
        path,
        name,
        kind: text("type").unwrap_or_default(),
        fstype: text("fstype"),
        fsver: text("fsver"),
        mountpoints,
        removable: flag("rm") || flag("hotplug"),
        size_bytes,
        children,
    })
}

/// An active swap area from `/proc/swaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Swap {
    pub path: String,
    /// `partition` or `file`.
    pub kind: String,
}

/// Parses `/proc/swaps` (a header line, then `Filename Type Size Used Priority`). Paths with
/// spaces are written with `\040` by the kernel.
pub(crate) fn parse_proc_swaps(text: &str) -> Vec<Swap> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let path = fields.next()?.replace("\\040", " ");
            let kind = fields.next()?.to_owned();
            Some(Swap { path, kind })
        })
        .collect()
}

/// The dm-crypt layer found under a volume, to be described from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Crypt {
    /// The mapping's name, e.g. `luks-6a1f…` or `cryptswap`.
    pub name: String,
    /// The container under the mapping, e.g. `/dev/nvme0n1p3`.
    pub container: String,
    /// `Some(version)` when the container is LUKS.
    pub luks_version: Option<String>,
}

/// A volume found in the tree, with the dm-crypt layer to look up (if one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockVolume {
    pub volume: Volume,
    pub crypt: Option<Crypt>,
}

/// Every mounted or swapping device of the tree, judged along every path down to a disk.
pub(crate) fn block_volumes(tree: &[Node], swaps: &[Swap]) -> Vec<BlockVolume> {
    // Each occurrence of a mounted device, with its ancestors from the disk down.
    let mut occurrences: Vec<(&Node, Vec<&Node>)> = Vec::new();
    fn walk<'a>(
        node: &'a Node,
        ancestors: &mut Vec<&'a Node>,
        out: &mut Vec<(&'a Node, Vec<&'a Node>)>,
    ) {
        if !node.mountpoints.is_empty() {
            out.push((node, ancestors.clone()));
        }
        ancestors.push(node);
        for child in &node.children {
            walk(child, ancestors, out);
        }
        ancestors.pop();
    }
    for root in tree {
        walk(root, &mut Vec::new(), &mut occurrences);
    }
    let mut by_path: BTreeMap<&str, (usize, &Node, Vec<Vec<&Node>>)> = BTreeMap::new();
    for (order, (node, ancestors)) in occurrences.into_iter().enumerate() {
        by_path
            .entry(node.path.as_str())
            .or_insert_with(|| (order, node, Vec::new()))
            .2
            .push(ancestors);
    }
    let mut found: Vec<(usize, BlockVolume)> = by_path
        .into_values()
        .map(|(order, node, chains)| (order, judge(node, &chains, swaps)))
        .collect();
    found.sort_by_key(|(order, _)| *order);
    found.into_iter().map(|(_, v)| v).collect()
}

fn judge(node: &Node, chains: &[Vec<&Node>], swaps: &[Swap]) -> BlockVolume {
    let is_swap = node.mountpoints.iter().any(|m| m == "[SWAP]")
        || node.fstype.as_deref() == Some("swap")
        || swaps.iter().any(|s| s.path == node.path);
    let removable = node.removable || chains.iter().flatten().any(|n| n.removable);
    let in_ram = node.kind == "zram" || node.name.starts_with("zram");
    let role = if node.mountpoints.iter().any(|m| m == "/") {
        VolumeRole::System
    } else if in_ram {
        VolumeRole::Other
    } else if is_swap {
        VolumeRole::Swap
    } else if removable {
        VolumeRole::Removable
    } else if node.kind == "loop"
        || node.kind == "rom"
        || node
            .mountpoints
            .iter()
            .all(|m| BOOT_MOUNTS.contains(&m.as_str()))
    {
        VolumeRole::Other
    } else {
        VolumeRole::Data
    };
    // The nearest dm-crypt layer on each path, the device itself included.
    let crypts: Vec<Option<Crypt>> = chains
        .iter()
        .map(|ancestors| {
            let mut path: Vec<&Node> = ancestors.clone();
            path.push(node);
            let at = path.iter().rposition(|n| n.kind == "crypt")?;
            let container = at.checked_sub(1).map(|i| path[i]);
            Some(Crypt {
                name: path[at].name.clone(),
                container: container.map(|c| c.path.clone()).unwrap_or_default(),
                luks_version: container
                    .filter(|c| c.fstype.as_deref() == Some("crypto_LUKS"))
                    .map(|c| c.fsver.clone().unwrap_or_default()),
            })
        })
        .collect();
    let mounts = node.mountpoints.join(", ");
    let disks = |pick: &dyn Fn(&Option<Crypt>) -> bool| -> String {
        let mut names: Vec<&str> = chains
            .iter()
            .zip(&crypts)
            .filter(|(_, c)| pick(c))
            .filter_map(|(chain, _)| chain.first().map(|d| d.path.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names.join(", ")
    };
    let encrypted_paths = crypts.iter().filter(|c| c.is_some()).count();
    let (encrypted, reason, crypt) = if in_ram {
        (
            EncryptionState::NotEncrypted,
            format!(
                "{} is compressed RAM (zram) and is never written to disk",
                node.path
            ),
            None,
        )
    } else if encrypted_paths == 0 {
        let own = if chains.iter().all(Vec::is_empty) {
            node.path.clone()
        } else {
            disks(&|_| true)
        };
        (
            EncryptionState::NotEncrypted,
            format!(
                "{mounts} is on {own} with no dm-crypt layer between the filesystem and the disk"
            ),
            None,
        )
    } else if encrypted_paths < crypts.len() {
        (
            EncryptionState::Partial,
            format!(
                "{mounts} spans devices of which some are encrypted (under {}) and some not (under {})",
                disks(&|c| c.is_some()),
                disks(&|c| c.is_none())
            ),
            crypts.iter().flatten().next().cloned(),
        )
    } else {
        let crypt = crypts.iter().flatten().next().cloned();
        let reason = match &crypt {
            Some(c) => format!(
                "{mounts} is on dm-crypt mapping {} ({}) on {}",
                c.name,
                scheme_of(c),
                c.container
            ),
            None => String::new(),
        };
        (EncryptionState::Encrypted, reason, crypt)
    };
    let scheme = crypt.as_ref().map(|c| scheme_of(c).to_owned());
    BlockVolume {
        volume: Volume {
            id: node.path.clone(),
            mount_points: node.mountpoints.clone(),
            role,
            encrypted,
            reason,
            scheme,
            filesystem: node.fstype.clone(),
            size_bytes: node.size_bytes,
            ..Volume::default()
        },
        crypt,
    }
}

fn scheme_of(crypt: &Crypt) -> &'static str {
    match crypt.luks_version.as_deref() {
        Some("1") => "luks1",
        Some("2") => "luks2",
        Some(_) => "luks",
        None => "plain_dm_crypt",
    }
}

/// Cipher, key size and key protectors of one dm-crypt layer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct CryptDetails {
    scheme: Option<String>,
    cipher: Option<String>,
    key_bits: Option<u32>,
    protectors: Vec<String>,
}

/// Reads the LUKS header, or `cryptsetup status` for a plain mapping.
async fn describe_crypt(host: &Host, crypt: &Crypt) -> Result<CryptDetails, String> {
    if crypt.luks_version.is_some() {
        let output =
            run_expecting(host, "cryptsetup", &["luksDump", &crypt.container], &[0]).await?;
        let header = parse_luks_dump(&output.stdout)?;
        Ok(CryptDetails {
            scheme: Some(format!("luks{}", header.version)),
            cipher: header.cipher,
            key_bits: header.key_bits,
            protectors: header.protectors,
        })
    } else {
        let output = run_expecting(host, "cryptsetup", &["status", &crypt.name], &[0]).await?;
        let status = parse_cryptsetup_status(&output.stdout);
        Ok(CryptDetails {
            scheme: None,
            cipher: status.cipher,
            key_bits: status.key_bits,
            protectors: Vec::new(),
        })
    }
}

/// What `cryptsetup luksDump` says, without any key material.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LuksHeader {
    pub version: u8,
    pub cipher: Option<String>,
    pub key_bits: Option<u32>,
    /// Protector types, one per distinct kind, in keyslot order: `passphrase` for a keyslot no
    /// token is bound to, else the token's kind (`tpm2`, `fido2`, `pkcs11`, `clevis`).
    pub protectors: Vec<String>,
}

/// Parses the text of `cryptsetup luksDump` for LUKS1 and LUKS2 (cryptsetup 2.x, `LC_ALL=C`).
/// Salts, digests and token payloads are skipped line by line, never kept.
pub(crate) fn parse_luks_dump(text: &str) -> Result<LuksHeader, String> {
    let mut header = LuksHeader::default();
    let mut section = "";
    let mut luks1_cipher = (None::<String>, None::<String>);
    let mut keyslots: Vec<u32> = Vec::new();
    let mut tokens: Vec<(String, Vec<u32>)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        let value = |key: &str| {
            trimmed
                .strip_prefix(key)
                .map(|rest| rest.trim_start_matches(':').trim().to_owned())
        };
        if !line.starts_with([' ', '\t']) {
            section = match trimmed {
                "Data segments:" => "segments",
                "Keyslots:" => "keyslots",
                "Tokens:" => "tokens",
                "Digests:" => "digests",
                _ => section,
            };
            if let Some(v) = value("Version") {
                header.version = v
                    .parse()
                    .map_err(|_| format!("luksDump: unexpected version {v:?}"))?;
            } else if let Some(v) = value("Cipher name") {
                luks1_cipher.0 = Some(v);
            } else if let Some(v) = value("Cipher mode") {
                luks1_cipher.1 = Some(v);
            } else if let Some(v) = value("MK bits") {
                header.key_bits = v.parse().ok();
            } else if let Some(rest) = trimmed.strip_prefix("Key Slot ") {
                // LUKS1: "Key Slot 0: ENABLED"
                if let Some((slot, state)) = rest.split_once(':')
                    && state.trim() == "ENABLED"
                    && let Ok(slot) = slot.trim().parse()
                {
                    keyslots.push(slot);
                }
            }
            continue;
        }
        let numbered = trimmed
            .split_once(": ")
            .and_then(|(n, kind)| n.parse::<u32>().ok().map(|n| (n, kind.trim())));
        match section {
            "segments" => {
                if let Some(v) = value("cipher")
                    && header.cipher.is_none()
                {
                    header.cipher = Some(v);
                }
            }
            "keyslots" => {
                if let Some((slot, _)) = numbered
                    && line.starts_with("  ")
                {
                    keyslots.push(slot);
                } else if let Some(v) = value("Key")
                    && header.key_bits.is_none()
                {
                    header.key_bits = v.trim_end_matches(" bits").trim().parse().ok();
                }
            }
            "tokens" => {
                if let Some((_, kind)) = numbered
                    && line.starts_with("  ")
                {
                    tokens.push((kind.to_owned(), Vec::new()));
                } else if let Some(v) = value("Keyslot")
                    && let Some(token) = tokens.last_mut()
                {
                    token
                        .1
                        .extend(v.split(',').filter_map(|s| s.trim().parse::<u32>().ok()));
                }
            }
            _ => {}
        }
    }
    if header.version == 0 {
        return Err(format!(
            "luksDump printed no LUKS version: {}",
            first_lines(text.trim(), 2)
        ));
    }
    if let (Some(name), Some(mode)) = luks1_cipher {
        header.cipher = Some(format!("{name}-{mode}"));
    }
    for slot in keyslots {
        let kind = tokens
            .iter()
            .find(|(_, slots)| slots.contains(&slot))
            .map_or("passphrase", |(kind, _)| token_kind(kind));
        if !header.protectors.iter().any(|p| p == kind) {
            header.protectors.push(kind.to_owned());
        }
    }
    Ok(header)
}

fn token_kind(kind: &str) -> &str {
    match kind {
        "systemd-tpm2" => "tpm2",
        "systemd-fido2" => "fido2",
        "systemd-pkcs11" => "pkcs11",
        "systemd-recovery" => "recovery_key",
        k if k.starts_with("clevis") => "clevis",
        other => other,
    }
}

/// What `cryptsetup status NAME` says of a plain mapping.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct CryptStatus {
    pub cipher: Option<String>,
    pub key_bits: Option<u32>,
}

pub(crate) fn parse_cryptsetup_status(text: &str) -> CryptStatus {
    let mut status = CryptStatus::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "cipher" => status.cipher = Some(value.to_owned()),
            "keysize" => status.key_bits = value.trim_end_matches(" bits").trim().parse().ok(),
            _ => {}
        }
    }
    status
}

/// Swap files are as encrypted as the filesystem that holds them.
fn swap_files(swaps: &[Swap], volumes: &[Volume]) -> Vec<Volume> {
    swaps
        .iter()
        .filter(|s| s.kind == "file")
        .map(|swap| {
            let holder = volumes
                .iter()
                .flat_map(|v| v.mount_points.iter().map(move |m| (m, v)))
                .filter(|(m, _)| {
                    m.as_str() == "/"
                        || swap
                            .path
                            .starts_with(&format!("{}/", m.trim_end_matches('/')))
                })
                .max_by_key(|(m, _)| m.len());
            let (encrypted, reason) = match holder {
                Some((mount, v)) => (
                    v.encrypted,
                    format!(
                        "swap file on {mount} ({}): {}",
                        v.encrypted.as_str(),
                        v.reason
                    ),
                ),
                None => (
                    EncryptionState::Unknown,
                    format!("no mounted filesystem found that holds {}", swap.path),
                ),
            };
            Volume {
                id: swap.path.clone(),
                mount_points: vec![swap.path.clone()],
                role: VolumeRole::Swap,
                encrypted,
                reason,
                scheme: holder.and_then(|(_, v)| v.scheme.clone()),
                ..Volume::default()
            }
        })
        .collect()
}

/// Mounted ZFS datasets; none when ZFS is not installed.
async fn zfs_datasets(host: &Host) -> Result<Vec<Volume>, String> {
    match host.run("zfs", ZFS_LIST).await {
        Err(HostError::ProgramNotFound { .. } | HostError::NotRecorded { .. }) => Ok(Vec::new()),
        Err(error) => Err(error.to_string()),
        Ok(output) if output.success() => Ok(parse_zfs_list(&output.stdout)),
        Ok(output) => Err(format!(
            "`zfs list` exited with {:?}: {}",
            output.status,
            output.stderr.trim()
        )),
    }
}

/// Parses `zfs list -H -p -o name,mountpoint,mounted,encryption,keystatus,keyformat`.
pub(crate) fn parse_zfs_list(text: &str) -> Vec<Volume> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [name, mountpoint, mounted, encryption, keystatus, keyformat] = fields[..] else {
                return None;
            };
            if mounted != "yes" || !mountpoint.starts_with('/') {
                return None;
            }
            let encrypted = encryption != "off" && encryption != "-";
            let role = if mountpoint == "/" {
                VolumeRole::System
            } else if BOOT_MOUNTS.contains(&mountpoint) {
                VolumeRole::Other
            } else {
                VolumeRole::Data
            };
            Some(Volume {
                id: name.to_owned(),
                mount_points: vec![mountpoint.to_owned()],
                role,
                encrypted: if encrypted {
                    EncryptionState::Encrypted
                } else {
                    EncryptionState::NotEncrypted
                },
                reason: if encrypted {
                    format!(
                        "ZFS dataset {name} uses native encryption {encryption}, key {keystatus}"
                    )
                } else {
                    format!("ZFS dataset {name} has encryption off")
                },
                scheme: encrypted.then(|| "zfs_native".to_owned()),
                cipher: encrypted.then(|| encryption.to_owned()),
                key_protectors: if encrypted && keyformat != "none" && keyformat != "-" {
                    vec![keyformat.to_owned()]
                } else {
                    Vec::new()
                },
                filesystem: Some("zfs".to_owned()),
                ..Volume::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;

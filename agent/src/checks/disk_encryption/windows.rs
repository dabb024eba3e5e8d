//! BitLocker on a Windows host: one PowerShell script that prints JSON, and `manage-bde -status`
//! when the BitLocker module cannot be used.
//!
//! The agent runs, in this order:
//!
//! 1. `powershell.exe -NoProfile -NonInteractive -Command <SCRIPT>`: `Get-BitLockerVolume`
//!    (safe properties only), the live `GetProtectionStatus()` and `GetConversionStatus()` of
//!    every `Win32_EncryptableVolume`, `Win32_LogicalDisk` and `Win32_PageFileUsage`. Each part
//!    sits in its own `try`, so one that fails names its error and leaves the others readable.
//! 2. `manage-bde -status`, only when the script says `Get-BitLockerVolume` failed (module
//!    missing, access denied). Its text is localized: English and German are read, with keys
//!    and values compared after [`fold`], so the console code page (CP850 turns `ü` into a byte
//!    that is not UTF-8) does not matter.
//!
//! The live method results win over `Get-BitLockerVolume`'s properties: a cached
//! `ProtectionStatus` has been seen to say "on" for a decrypted drive.
//!
//! **Invariant:** key protectors are kept by type only. The script never selects a
//! `RecoveryPassword` or `KeyProtectorId`; if a careless variant did, the parser reads only
//! `KeyProtectorType`. Error texts copied into reasons go through [`redact`], which drops any
//! 48-digit recovery password.
//!
//! This module is compiled on every OS and reached by the host's recorded OS family, so Windows
//! recordings replay (and are tested) on Linux.

use serde_json::Value;

use super::{DiskEncryptionFacts, EncryptionState, SwapState, Volume, VolumeRole};
use crate::checks::powershell::{integer_of, items, items_of, text_of};
use crate::checks::{CheckError, UnreadableFact};
use crate::host::{Host, HostError, display_argv};

pub(super) const POWERSHELL: &str = "powershell.exe";

/// Enums are written with `[string]` casts (their `ToString()` names), so Windows PowerShell
/// 5.1's `ConvertTo-Json` does not turn them into numbers; the parser still accepts numbers.
/// The live CIM results are plain integers. `$v` keeps the pipeline object, because `$_` is the
/// error record inside a `catch`.
pub(super) const SCRIPT: &str = r#"$ErrorActionPreference = 'Stop'
try { [Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false } catch { }
$r = [ordered]@{}
$r.SystemDrive = $env:SystemDrive
try {
  $r.BitLockerVolumes = @(Get-BitLockerVolume | ForEach-Object {
    $v = $_
    [ordered]@{ MountPoint = [string]$v.MountPoint; VolumeType = [string]$v.VolumeType; VolumeStatus = [string]$v.VolumeStatus; ProtectionStatus = [string]$v.ProtectionStatus; EncryptionPercentage = $v.EncryptionPercentage; EncryptionMethod = [string]$v.EncryptionMethod; CapacityGB = $v.CapacityGB; KeyProtectorTypes = @($v.KeyProtector | ForEach-Object { [string]$_.KeyProtectorType }); AutoUnlockEnabled = $v.AutoUnlockEnabled }
  })
} catch { $r.BitLockerVolumesError = "$_"; $r.BitLockerVolumesErrorId = [string]$_.FullyQualifiedErrorId }
try {
  $r.LiveStatus = @(Get-CimInstance -Namespace root/cimv2/Security/MicrosoftVolumeEncryption -ClassName Win32_EncryptableVolume | ForEach-Object {
    $v = $_
    $e = [ordered]@{ DriveLetter = [string]$v.DriveLetter; VolumeType = $v.VolumeType }
    try { $p = Invoke-CimMethod -InputObject $v -MethodName GetProtectionStatus; if ($p.ReturnValue -eq 0) { $e.ProtectionStatus = [int]$p.ProtectionStatus } else { $e.ProtectionStatusError = 'GetProtectionStatus returned ' + $p.ReturnValue } } catch { $e.ProtectionStatusError = "$_" }
    try { $c = Invoke-CimMethod -InputObject $v -MethodName GetConversionStatus; if ($c.ReturnValue -eq 0) { $e.ConversionStatus = [int]$c.ConversionStatus; $e.EncryptionPercentage = [int]$c.EncryptionPercentage } else { $e.ConversionStatusError = 'GetConversionStatus returned ' + $c.ReturnValue } } catch { $e.ConversionStatusError = "$_" }
    $e
  })
} catch { $r.LiveStatusError = "$_" }
try { $r.LogicalDisks = @(Get-CimInstance -ClassName Win32_LogicalDisk | ForEach-Object { [ordered]@{ DeviceID = [string]$_.DeviceID; DriveType = [int]$_.DriveType; FileSystem = [string]$_.FileSystem; Size = $_.Size } }) } catch { $r.LogicalDisksError = "$_" }
try { $r.PageFiles = @(Get-CimInstance -ClassName Win32_PageFileUsage | ForEach-Object { [string]$_.Name }) } catch { $r.PageFilesError = "$_" }
[pscustomobject]$r | ConvertTo-Json -Depth 5"#;

pub(super) const ARGS: &[&str] = &["-NoProfile", "-NonInteractive", "-Command", SCRIPT];

pub(super) const MANAGE_BDE: &str = "manage-bde";
pub(super) const MANAGE_BDE_ARGS: &[&str] = &["-status"];

/// `Win32_LogicalDisk.DriveType` of removable media (USB sticks, card readers).
const DRIVE_REMOVABLE: u32 = 2;
/// `Win32_LogicalDisk.DriveType` of a fixed disk.
const DRIVE_FIXED: u32 = 3;

pub(super) async fn collect(host: &Host) -> Result<DiskEncryptionFacts, CheckError> {
    let stdout = run_ok(host, POWERSHELL, ARGS).await.map_err(|reason| {
        CheckError::new("the BitLocker script could not run").with_source(reason)
    })?;
    let report = parse_report(&stdout).map_err(|reason| {
        CheckError::new("the BitLocker script printed no report").with_source(reason)
    })?;

    let mut unreadable = Vec::new();
    let (listed, source) = match &report.bitlocker_volumes {
        Ok(volumes) => (Ok(volumes.clone()), Source::PowerShell),
        Err(reason) => {
            unreadable.push(unreadable_fact("bitlocker_volumes", reason));
            let fallback = run_ok(host, MANAGE_BDE, MANAGE_BDE_ARGS)
                .await
                .and_then(|text| parse_manage_bde(&text));
            match fallback {
                Ok(volumes) => (Ok(volumes), Source::ManageBde),
                Err(second) => {
                    unreadable.push(unreadable_fact("manage_bde", &second));
                    (Err(format!("{reason}; {second}")), Source::ManageBde)
                }
            }
        }
    };
    if listed.is_err() && report.logical_disks.is_err() {
        let mut sources = vec![];
        if let Err(reason) = &listed {
            sources.push(reason.clone());
        }
        if let Err(reason) = &report.logical_disks {
            sources.push(reason.clone());
        }
        return Err(CheckError::new("no volume could be listed").with_source(sources.join("; ")));
    }
    let facts = build_facts(&report, listed, source, unreadable);
    Ok(facts)
}

/// Where the per-volume BitLocker facts came from, for reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    PowerShell,
    ManageBde,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::PowerShell => "Get-BitLockerVolume",
            Source::ManageBde => "manage-bde",
        }
    }
}

/// What the script printed, each part either read or the reason it could not be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitLockerReport {
    /// `$env:SystemDrive`, e.g. `C:`.
    pub system_drive: Option<String>,
    pub bitlocker_volumes: Result<Vec<BitLockerVolume>, String>,
    /// The live `Win32_EncryptableVolume` method results.
    pub live_status: Result<Vec<LiveStatus>, String>,
    pub logical_disks: Result<Vec<LogicalDisk>, String>,
    /// `Win32_PageFileUsage.Name` of each page file, e.g. `C:\pagefile.sys`.
    pub page_files: Result<Vec<String>, String>,
}

/// One volume as `Get-BitLockerVolume` or `manage-bde -status` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BitLockerVolume {
    /// `C:`, or a volume path `\\?\Volume{...}\` for a volume without a letter.
    pub mount_point: String,
    pub os_volume: bool,
    pub conversion: Option<Conversion>,
    /// `Some(true)`: protection on; `Some(false)`: off (suspended or no protector).
    pub protection: Option<bool>,
    pub percent: Option<u8>,
    /// The `EncryptionMethod` enum name: `XtsAes128`, `Aes256`, `Hardware`.
    pub method: Option<String>,
    pub capacity_bytes: Option<u64>,
    /// Key protector types in snake_case, never their values.
    pub key_protectors: Vec<String>,
}

/// BitLocker's conversion status (`VolumeStatus`, `GetConversionStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    FullyDecrypted,
    FullyEncrypted,
    EncryptionInProgress,
    DecryptionInProgress,
    EncryptionPaused,
    DecryptionPaused,
}

impl Conversion {
    /// The number `GetConversionStatus` returns, also what PowerShell 5.1 writes for the enum.
    fn from_number(n: i64) -> Option<Conversion> {
        Some(match n {
            0 => Conversion::FullyDecrypted,
            1 => Conversion::FullyEncrypted,
            2 => Conversion::EncryptionInProgress,
            3 => Conversion::DecryptionInProgress,
            4 => Conversion::EncryptionPaused,
            5 => Conversion::DecryptionPaused,
            _ => return None,
        })
    }

    /// The enum name, or manage-bde's English or German text, compared folded.
    fn from_text(text: &str) -> Option<Conversion> {
        let f = fold(text);
        let paused = f.contains("paused") || f.contains("angehalten");
        let decrypt = f.starts_with("decrypt")
            || f.contains("decrypted")
            || f.contains("entschl")
            || f.starts_with("fullydecrypted");
        if f.starts_with("fullydecrypted") || f.starts_with("vollstndigentschl") {
            return Some(Conversion::FullyDecrypted);
        }
        // `FullyEncrypted`, `FullyEncryptedWipeInProgress`, "Used Space Only Encrypted",
        // "Nur verwendeter Speicherplatz ist verschlüsselt".
        if f.starts_with("fullyencrypted")
            || f.starts_with("vollstndigverschl")
            || f.starts_with("usedspaceonly")
            || f.starts_with("nurverwendeterspeicherplatz")
        {
            return Some(Conversion::FullyEncrypted);
        }
        if f.is_empty() || !(f.contains("crypt") || f.contains("schl")) {
            return None;
        }
        Some(match (decrypt, paused) {
            (false, false) => Conversion::EncryptionInProgress,
            (false, true) => Conversion::EncryptionPaused,
            (true, false) => Conversion::DecryptionInProgress,
            (true, true) => Conversion::DecryptionPaused,
        })
    }
}

/// The live status of one `Win32_EncryptableVolume`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiveStatus {
    pub drive_letter: Option<String>,
    /// `GetProtectionStatus`: 0 off, 1 on, 2 unknown (locked).
    pub protection: Option<i64>,
    pub conversion: Option<Conversion>,
    pub percent: Option<u8>,
    /// Why a method failed, if one did.
    pub error: Option<String>,
}

/// One `Win32_LogicalDisk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalDisk {
    pub device_id: String,
    pub drive_type: u32,
    pub file_system: Option<String>,
    pub size_bytes: Option<u64>,
}

/// Parses the script's JSON (see [`SCRIPT`]), tolerating Windows PowerShell 5.1: a
/// one-element array written bare, `{ "value": [...], "Count": n }` arrays, enums as numbers.
pub fn parse_report(text: &str) -> Result<BitLockerReport, String> {
    let text = text.trim_start_matches('\u{feff}').trim();
    let root: Value = serde_json::from_str(text)
        .map_err(|error| format!("the BitLocker script output is not JSON: {error}"))?;
    let Some(root) = root.as_object() else {
        return Err("the BitLocker script output is not a JSON object".to_owned());
    };
    let part = |key: &str, error_key: &str, what: &str| -> Result<Vec<&Value>, String> {
        if let Some(message) = text_of(root.get(error_key)) {
            return Err(format!("{what} failed: {}", redact(&message)));
        }
        match root.get(key) {
            Some(value) => Ok(items(value)),
            None => Err(format!("{key} not in the BitLocker script output")),
        }
    };
    let bitlocker_volumes = part(
        "BitLockerVolumes",
        "BitLockerVolumesError",
        "Get-BitLockerVolume",
    )
    .map(|items| {
        items
            .into_iter()
            .filter_map(parse_bitlocker_volume)
            .collect()
    });
    let bitlocker_volumes = match (
        bitlocker_volumes,
        text_of(root.get("BitLockerVolumesErrorId")),
    ) {
        (Err(reason), Some(id)) if reason.contains("failed:") => Err(format!("{reason} ({id})")),
        (result, _) => result,
    };
    let live_status = part(
        "LiveStatus",
        "LiveStatusError",
        "Win32_EncryptableVolume query",
    )
    .map(|items| items.into_iter().filter_map(parse_live_status).collect());
    let logical_disks = part(
        "LogicalDisks",
        "LogicalDisksError",
        "Win32_LogicalDisk query",
    )
    .map(|items| items.into_iter().filter_map(parse_logical_disk).collect());
    let page_files = part("PageFiles", "PageFilesError", "Win32_PageFileUsage query")
        .map(|items| items.into_iter().filter_map(|v| text_of(Some(v))).collect());
    Ok(BitLockerReport {
        system_drive: text_of(root.get("SystemDrive")).map(|d| d.to_ascii_uppercase()),
        bitlocker_volumes,
        live_status,
        logical_disks,
        page_files,
    })
}

fn parse_bitlocker_volume(value: &Value) -> Option<BitLockerVolume> {
    let object = value.as_object()?;
    let mount_point = text_of(object.get("MountPoint"))?;
    let os_volume = match object.get("VolumeType") {
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        other => text_of(other).is_some_and(|t| fold(&t) == "operatingsystem"),
    };
    let conversion = match object.get("VolumeStatus") {
        Some(Value::Number(n)) => n.as_i64().and_then(Conversion::from_number),
        other => text_of(other).and_then(|t| Conversion::from_text(&t)),
    };
    let protection = match object.get("ProtectionStatus") {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        other => match text_of(other).map(|t| fold(&t)).as_deref() {
            Some("on") => Some(true),
            Some("off") => Some(false),
            _ => None,
        },
    };
    let percent = object.get("EncryptionPercentage").and_then(percent_of);
    let method = match object.get("EncryptionMethod") {
        Some(Value::Number(n)) => n.as_i64().and_then(method_from_number).map(str::to_owned),
        other => text_of(other).and_then(|t| method_name(&t)),
    };
    let capacity_bytes = object
        .get("CapacityGB")
        .and_then(Value::as_f64)
        .filter(|gb| gb.is_finite() && *gb >= 0.0)
        .map(|gb| (gb * 1_073_741_824.0).round() as u64);
    // The types from the script; or, from a careless script that selected whole protector
    // objects, only their `KeyProtectorType`: never `RecoveryPassword` or `KeyProtectorId`.
    let mut key_protectors = Vec::new();
    for item in items_of(object.get("KeyProtectorTypes")) {
        push_protector(&mut key_protectors, item);
    }
    for item in items_of(object.get("KeyProtector")) {
        if let Some(kind) = item.as_object().and_then(|o| o.get("KeyProtectorType")) {
            push_protector(&mut key_protectors, kind);
        }
    }
    Some(BitLockerVolume {
        mount_point: normalize_mount_point(&mount_point),
        os_volume,
        conversion,
        protection,
        percent,
        method,
        capacity_bytes,
        key_protectors,
    })
}

fn push_protector(protectors: &mut Vec<String>, value: &Value) {
    let name = match value {
        Value::Number(n) => n.as_i64().and_then(protector_from_number),
        Value::String(s) => protector_type(s),
        _ => None,
    };
    if let Some(name) = name
        && !protectors.iter().any(|p| p == name)
    {
        protectors.push(name.to_owned());
    }
}

fn parse_live_status(value: &Value) -> Option<LiveStatus> {
    let object = value.as_object()?;
    let errors: Vec<String> = ["ProtectionStatusError", "ConversionStatusError"]
        .iter()
        .filter_map(|key| text_of(object.get(*key)))
        .map(|message| redact(&message))
        .collect();
    Some(LiveStatus {
        drive_letter: text_of(object.get("DriveLetter")).map(|d| normalize_mount_point(&d)),
        protection: object.get("ProtectionStatus").and_then(integer_of),
        conversion: object
            .get("ConversionStatus")
            .and_then(integer_of)
            .and_then(Conversion::from_number),
        percent: object.get("EncryptionPercentage").and_then(percent_of),
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    })
}

fn parse_logical_disk(value: &Value) -> Option<LogicalDisk> {
    let object = value.as_object()?;
    Some(LogicalDisk {
        device_id: normalize_mount_point(&text_of(object.get("DeviceID"))?),
        drive_type: u32::try_from(object.get("DriveType").and_then(integer_of)?).ok()?,
        file_system: text_of(object.get("FileSystem")),
        size_bytes: object
            .get("Size")
            .and_then(integer_of)
            .and_then(|n| u64::try_from(n).ok()),
    })
}

/// Parses `manage-bde -status` in English or German: a `Volume C: [Label]` (German
/// `Volume "C:" [Label]`) line opens each volume, then `Key: value` lines, then the key
/// protector types one per line. Nothing else is kept; no value is copied verbatim except the
/// drive letter.
pub fn parse_manage_bde(text: &str) -> Result<Vec<BitLockerVolume>, String> {
    let mut volumes: Vec<BitLockerVolume> = Vec::new();
    let mut in_protectors = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("Volume ") {
            let id = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_matches('"');
            volumes.push(BitLockerVolume {
                mount_point: normalize_mount_point(id),
                ..BitLockerVolume::default()
            });
            in_protectors = false;
            continue;
        }
        let Some(volume) = volumes.last_mut() else {
            continue;
        };
        if trimmed.starts_with('[') && trimmed.ends_with(']') {
            let kind = fold(trimmed);
            if kind == "osvolume" || kind == "betriebssystemvolume" {
                volume.os_volume = true;
            }
            continue;
        }
        let (key, value) = match trimmed.split_once(':') {
            Some((key, value)) => (fold(key), value.trim()),
            None => (String::new(), trimmed),
        };
        match key.as_str() {
            "conversionstatus" | "konvertierungsstatus" => {
                volume.conversion = Conversion::from_text(value);
            }
            "percentageencrypted" | "verschlsseltprozent" => volume.percent = percent_text(value),
            "encryptionmethod" | "verschlsselungsmethode" => volume.method = method_name(value),
            "protectionstatus" | "schutzstatus" => volume.protection = protection_text(value),
            "keyprotectors" | "schlsselschutzvorrichtungen" => {
                in_protectors = true;
                if let Some(kind) = protector_type(value) {
                    volume.key_protectors.push(kind.to_owned());
                }
            }
            "" if in_protectors => {
                if let Some(kind) = protector_type(value)
                    && !volume.key_protectors.iter().any(|p| p == kind)
                {
                    volume.key_protectors.push(kind.to_owned());
                }
            }
            _ => in_protectors = false,
        }
    }
    if volumes.is_empty() {
        let first = text.lines().map(str::trim).find(|l| !l.is_empty());
        return Err(match first {
            Some(line) => format!("`manage-bde -status` listed no volume: {}", redact(line)),
            None => "`manage-bde -status` printed nothing".to_owned(),
        });
    }
    Ok(volumes)
}

fn protection_text(value: &str) -> Option<bool> {
    let f = fold(value);
    if f.starts_with("protectionoff") || f.contains("deaktiviert") {
        Some(false)
    } else if f.starts_with("protectionon") || f.contains("aktiviert") {
        Some(true)
    } else {
        None
    }
}

/// `100.0%`, `0,0 %`, `37,5%`: whole percent, rounded down.
fn percent_text(value: &str) -> Option<u8> {
    let number: String = value
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
        .map(|c| if c == ',' { '.' } else { c })
        .collect();
    let percent: f64 = number.parse().ok()?;
    (0.0..=100.0)
        .contains(&percent)
        .then(|| percent.floor() as u8)
}

/// The `EncryptionMethod` enum name for the script's value or manage-bde's text
/// (`XTS-AES 128`, `AES 256 with Diffuser`, `Hardware Encryption`); `None` for none or an
/// unknown method.
fn method_name(text: &str) -> Option<String> {
    let f = fold(text);
    let name = match f.as_str() {
        "xtsaes128" => "XtsAes128",
        "xtsaes256" => "XtsAes256",
        "aes128" => "Aes128",
        "aes256" => "Aes256",
        "aes128diffuser" | "aes128withdiffuser" | "aes128mitdiffuser" => "Aes128Diffuser",
        "aes256diffuser" | "aes256withdiffuser" | "aes256mitdiffuser" => "Aes256Diffuser",
        f if f.starts_with("hardware") => "Hardware",
        _ => return None,
    };
    Some(name.to_owned())
}

/// `Win32_EncryptableVolume.GetEncryptionMethod` numbers, also PowerShell 5.1's enum numbers.
fn method_from_number(n: i64) -> Option<&'static str> {
    Some(match n {
        1 => "Aes128Diffuser",
        2 => "Aes256Diffuser",
        3 => "Aes128",
        4 => "Aes256",
        5 => "Hardware",
        6 => "XtsAes128",
        7 => "XtsAes256",
        _ => return None,
    })
}

fn key_bits(method: &str) -> Option<u32> {
    if method.contains("128") {
        Some(128)
    } else if method.contains("256") {
        Some(256)
    } else {
        None
    }
}

/// A key protector type in snake_case, from the `KeyProtectorType` enum name (`TpmPin`) or
/// manage-bde's English or German line (`TPM And PIN`, `Numerisches Kennwort`). `None` for
/// "none found" and blank text. The text itself is never kept.
fn protector_type(text: &str) -> Option<&'static str> {
    let f = fold(text);
    if f.is_empty()
        || f.starts_with("nonefound")
        || f.starts_with("keinegefunden")
        || f == "none"
        || f == "unknown"
    {
        return None;
    }
    Some(if f == "recoverypassword" || f.contains("numeri") {
        "recovery_password"
    } else if f.starts_with("tpm") {
        let pin = f.contains("pin");
        let startup = f.contains("startup") || f.contains("systemstart");
        if f.contains("network") || f.contains("netzwerk") {
            "tpm_network_key"
        } else {
            match (pin, startup) {
                (true, true) => "tpm_pin_startup_key",
                (true, false) => "tpm_pin",
                (false, true) => "tpm_startup_key",
                (false, false) => "tpm",
            }
        }
    } else if f.contains("extern") {
        "external_key"
    } else if f.contains("password") || f.contains("kennwort") {
        "password"
    } else if f.contains("publickey") || f.contains("certificate") || f.contains("zertifikat") {
        "public_key"
    } else if f.contains("adaccount") || f.contains("activedirectory") || f.starts_with("sid") {
        "ad_account_or_group"
    } else {
        "other"
    })
}

/// `KeyProtectorType` numbers, as PowerShell 5.1 writes the enum without `ToString()`.
fn protector_from_number(n: i64) -> Option<&'static str> {
    Some(match n {
        1 => "tpm",
        2 => "external_key",
        3 => "recovery_password",
        4 => "tpm_pin",
        5 => "tpm_startup_key",
        6 => "tpm_pin_startup_key",
        7 => "public_key",
        8 => "password",
        9 => "tpm_network_key",
        10 => "ad_account_or_group",
        _ => return None,
    })
}

/// The facts from the script's report and the per-volume list (from `Get-BitLockerVolume` or
/// manage-bde). Drives BitLocker does not list still appear, as `unknown` with the reason; each
/// page file becomes a swap volume whose state is its drive's.
pub fn build_facts(
    report: &BitLockerReport,
    listed: Result<Vec<BitLockerVolume>, String>,
    source: Source,
    mut unreadable: Vec<UnreadableFact>,
) -> DiskEncryptionFacts {
    let live: &[LiveStatus] = match &report.live_status {
        Ok(live) => live,
        Err(reason) => {
            unreadable.push(unreadable_fact("live_bitlocker_status", reason));
            &[]
        }
    };
    for status in live {
        if let Some(error) = &status.error {
            let drive = status.drive_letter.as_deref().unwrap_or("a volume");
            unreadable.push(unreadable_fact(
                "live_bitlocker_status",
                &format!("{drive}: {error}"),
            ));
        }
    }
    let disks: &[LogicalDisk] = match &report.logical_disks {
        Ok(disks) => disks,
        Err(reason) => {
            unreadable.push(unreadable_fact("logical_disks", reason));
            &[]
        }
    };
    let system_drive = report.system_drive.as_deref();
    let disk_of = |id: &str| disks.iter().find(|d| d.device_id == id);
    let role_of = |id: &str, os_volume: bool| match disk_of(id) {
        Some(disk) if disk.drive_type == DRIVE_REMOVABLE => VolumeRole::Removable,
        _ if os_volume || Some(id) == system_drive => VolumeRole::System,
        _ => VolumeRole::Data,
    };

    let mut volumes = Vec::new();
    let listed_ok = match listed {
        Ok(listed) => {
            for bitlocker in listed {
                let status = live
                    .iter()
                    .find(|s| s.drive_letter.as_deref() == Some(bitlocker.mount_point.as_str()));
                let disk = disk_of(&bitlocker.mount_point);
                let role = role_of(&bitlocker.mount_point, bitlocker.os_volume);
                volumes.push(bitlocker_volume(&bitlocker, status, disk, role, source));
            }
            None
        }
        Err(reason) => Some(reason),
    };
    for disk in disks {
        if (disk.drive_type != DRIVE_FIXED && disk.drive_type != DRIVE_REMOVABLE)
            || volumes.iter().any(|v: &Volume| v.id == disk.device_id)
        {
            continue;
        }
        let reason = match &listed_ok {
            Some(error) => format!(
                "the BitLocker state of {} is unknown: {error}",
                disk.device_id
            ),
            None => format!(
                "{} is not listed by {}: its encryption state is unknown",
                disk.device_id,
                source.name()
            ),
        };
        volumes.push(Volume {
            id: disk.device_id.clone(),
            mount_points: vec![format!("{}\\", disk.device_id)],
            role: role_of(&disk.device_id, false),
            encrypted: EncryptionState::Unknown,
            reason,
            filesystem: disk.file_system.clone(),
            size_bytes: disk.size_bytes,
            ..Volume::default()
        });
    }

    let mut swap_unknown = false;
    match &report.page_files {
        Ok(page_files) => {
            for name in page_files {
                volumes.push(page_file_volume(name, &volumes));
            }
        }
        Err(reason) => {
            unreadable.push(unreadable_fact("page_file", reason));
            swap_unknown = true;
        }
    }
    let mut facts = DiskEncryptionFacts::from_volumes(volumes, unreadable);
    if swap_unknown {
        facts.swap = SwapState::Unknown;
    }
    facts
}

fn bitlocker_volume(
    bitlocker: &BitLockerVolume,
    live: Option<&LiveStatus>,
    disk: Option<&LogicalDisk>,
    role: VolumeRole,
    source: Source,
) -> Volume {
    let id = bitlocker.mount_point.clone();
    let live_conversion = live.and_then(|s| s.conversion);
    let conversion = live_conversion.or(bitlocker.conversion);
    let percent = live
        .and_then(|s| s.conversion.and(s.percent))
        .or(bitlocker.percent);
    let live_protection = live.and_then(|s| s.protection);
    let protection = match live_protection {
        Some(0) => Some(false),
        Some(1) => Some(true),
        Some(_) => None,
        None => bitlocker.protection,
    };
    let method = bitlocker.method.as_deref();
    let with_method = match method {
        Some(method) => format!(" ({method})"),
        None => String::new(),
    };
    let (encrypted, mut reason) = match conversion {
        Some(Conversion::FullyEncrypted) => (
            EncryptionState::Encrypted,
            format!("{id} is fully encrypted by BitLocker{with_method}"),
        ),
        Some(Conversion::FullyDecrypted) => (
            EncryptionState::NotEncrypted,
            format!("{id} is fully decrypted: BitLocker is off"),
        ),
        Some(Conversion::EncryptionInProgress) => (
            EncryptionState::Encrypting,
            format!("BitLocker is encrypting {id}{with_method}"),
        ),
        Some(Conversion::EncryptionPaused) => (
            EncryptionState::Encrypting,
            format!("BitLocker encryption of {id} is paused{with_method}"),
        ),
        Some(Conversion::DecryptionInProgress) => (
            EncryptionState::Decrypting,
            format!("BitLocker is decrypting {id}"),
        ),
        Some(Conversion::DecryptionPaused) => (
            EncryptionState::Decrypting,
            format!("BitLocker decryption of {id} is paused"),
        ),
        None => (
            EncryptionState::Unknown,
            format!("{} gave no conversion status for {id}", source.name()),
        ),
    };
    let converting = matches!(
        encrypted,
        EncryptionState::Encrypting | EncryptionState::Decrypting
    );
    if converting && let Some(percent) = percent {
        reason.push_str(&format!(", {percent}% encrypted"));
    }
    match (encrypted, protection) {
        (EncryptionState::Encrypted, Some(false)) => {
            reason.push_str(", but protection suspended: the key is stored unprotected on the disk")
        }
        (EncryptionState::Encrypted, Some(true)) => reason.push_str(", protection on"),
        (EncryptionState::NotEncrypted, _) | (_, Some(_)) => {}
        (_, None) if live_protection == Some(2) => {
            reason.push_str(", protection status unknown (the volume is locked)");
        }
        (_, None) => {}
    }
    reason.push_str(&format!(" (according to {}", source.name()));
    if live_conversion.is_some() || live_protection.is_some() {
        reason.push_str(", live status from Win32_EncryptableVolume");
    }
    reason.push(')');
    let uses_bitlocker = !matches!(
        encrypted,
        EncryptionState::NotEncrypted | EncryptionState::Unknown
    );
    let mount_points = if is_drive_letter(&id) {
        vec![format!("{id}\\")]
    } else {
        Vec::new()
    };
    Volume {
        mount_points,
        role,
        encrypted,
        reason,
        scheme: uses_bitlocker.then(|| "bitlocker".to_owned()),
        cipher: method.filter(|_| uses_bitlocker).map(str::to_owned),
        key_bits: method.filter(|_| uses_bitlocker).and_then(key_bits),
        protection: protection
            .filter(|_| encrypted != EncryptionState::NotEncrypted)
            .map(|on| if on { "on" } else { "off" }.to_owned()),
        progress_percent: percent.filter(|_| converting),
        key_protectors: bitlocker.key_protectors.clone(),
        filesystem: disk.and_then(|d| d.file_system.clone()),
        size_bytes: disk.and_then(|d| d.size_bytes).or(bitlocker.capacity_bytes),
        id,
    }
}

/// A page file as a swap volume whose state is that of the drive it is on.
fn page_file_volume(name: &str, volumes: &[Volume]) -> Volume {
    let drive = name
        .get(..2)
        .filter(|d| is_drive_letter(d))
        .map(str::to_ascii_uppercase);
    let drive_volume = drive
        .as_deref()
        .and_then(|d| volumes.iter().find(|v| v.id == d));
    let (encrypted, reason, source) = match (drive.as_deref(), drive_volume) {
        (Some(drive), Some(volume)) => {
            let suspended = volume.encrypted == EncryptionState::Encrypted
                && volume.protection.as_deref() == Some("off");
            let state = match volume.encrypted {
                EncryptionState::Encrypted if suspended => {
                    "encrypted, with protection suspended".to_owned()
                }
                state => describe(state).to_owned(),
            };
            (
                volume.encrypted,
                format!("the page file {name} is on {drive}, which is {state}"),
                Some(volume),
            )
        }
        (Some(drive), None) => (
            EncryptionState::Unknown,
            format!("the page file {name} is on {drive}, whose encryption state is unknown"),
            None,
        ),
        (None, _) => (
            EncryptionState::Unknown,
            format!("the drive of the page file {name} is unknown"),
            None,
        ),
    };
    Volume {
        id: format!("pagefile:{name}"),
        mount_points: vec![name.to_owned()],
        role: VolumeRole::Swap,
        encrypted,
        reason,
        scheme: source.and_then(|v| v.scheme.clone()),
        cipher: source.and_then(|v| v.cipher.clone()),
        key_bits: source.and_then(|v| v.key_bits),
        protection: source.and_then(|v| v.protection.clone()),
        progress_percent: source.and_then(|v| v.progress_percent),
        filesystem: source.and_then(|v| v.filesystem.clone()),
        ..Volume::default()
    }
}

fn describe(state: EncryptionState) -> &'static str {
    match state {
        EncryptionState::Encrypted => "encrypted",
        EncryptionState::NotEncrypted => "not encrypted",
        EncryptionState::Partial => "partly encrypted",
        EncryptionState::Encrypting => "being encrypted",
        EncryptionState::Decrypting => "being decrypted",
        EncryptionState::Unknown => "of unknown encryption",
    }
}

async fn run_ok(host: &Host, program: &str, args: &[&str]) -> Result<String, String> {
    let argv = if program == POWERSHELL {
        "the BitLocker PowerShell script".to_owned()
    } else {
        format!("`{}`", display_argv(program, args))
    };
    let output = host.run(program, args).await.map_err(|error| match error {
        // These name the whole argv, which for PowerShell is the script.
        HostError::TimedOut { timeout_ms, .. } => {
            format!("{argv} timed out after {timeout_ms} ms")
        }
        HostError::NotRecorded { dir, .. } => {
            format!("{argv}: not in the recording {}", dir.display())
        }
        HostError::OutputTooLarge {
            stream, cap_bytes, ..
        } => format!("{argv} wrote more than {cap_bytes} bytes to {stream}"),
        error => redact(&error.to_string()),
    })?;
    if output.success() {
        return Ok(output.stdout);
    }
    let status = output
        .status
        .map_or_else(|| "a signal".to_owned(), |code| format!("status {code}"));
    // manage-bde writes its errors ("ERROR: An attempt to access a required resource was
    // denied.") to stdout.
    let message = [output.stderr.trim(), output.stdout.trim()]
        .into_iter()
        .find(|m| !m.is_empty())
        .and_then(|m| m.lines().map(str::trim).find(|l| !l.is_empty()))
        .map(redact);
    Err(match message {
        Some(message) => format!("{argv} exited with {status}: {message}"),
        None => format!("{argv} exited with {status}"),
    })
}

fn unreadable_fact(fact: &str, reason: &str) -> UnreadableFact {
    UnreadableFact {
        fact: fact.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Lowercase ASCII letters and digits only: `Verschlüsselt (Prozent)` -> `verschlsseltprozent`,
/// whether the `ü` arrived as UTF-8, as U+FFFD (a CP850 byte decoded as UTF-8) or not at all.
fn fold(text: &str) -> String {
    text.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// `c:` -> `C:`; a volume path is kept as it is.
fn normalize_mount_point(text: &str) -> String {
    let text = text.trim();
    let without_slash = text.strip_suffix('\\').unwrap_or(text);
    if is_drive_letter(without_slash) {
        without_slash.to_ascii_uppercase()
    } else {
        text.to_owned()
    }
}

fn is_drive_letter(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':'
}

/// Replaces every run of 48 digits (a BitLocker recovery password, with or without its
/// dashes) by `[redacted]`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        let digits = token.chars().filter(char::is_ascii_digit).count();
        if digits >= 48 {
            out.push_str("[redacted]");
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() || c == '-' {
            token.push(c);
        } else {
            flush(&mut token, &mut out);
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

fn percent_of(value: &Value) -> Option<u8> {
    let percent = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => return percent_text(s),
        _ => return None,
    };
    (0.0..=100.0)
        .contains(&percent)
        .then(|| percent.floor() as u8)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    const RECOVERY_PASSWORD: &str = "123456-654321-111111-222222-333333-444444-555555-666666";

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/checks/disk_encryption/testdata")
            .join(name)
    }

    fn fixture(name: &str) -> String {
        let bytes = std::fs::read(testdata("windows").join(name)).expect("fixture exists");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn unreadable(fact: &str, reason: &str) -> UnreadableFact {
        unreadable_fact(fact, reason)
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    async fn replay(name: &str) -> Result<DiskEncryptionFacts, CheckError> {
        let host = Host::replay(&testdata(name)).expect("recording loads");
        crate::checks::disk_encryption::collect(&host).await
    }

    fn windows11_c() -> Volume {
        Volume {
            id: "C:".to_owned(),
            mount_points: strings(&["C:\\"]),
            role: VolumeRole::System,
            encrypted: EncryptionState::Encrypted,
            reason: "C: is fully encrypted by BitLocker (XtsAes128), but protection suspended: \
                     the key is stored unprotected on the disk (according to Get-BitLockerVolume, \
                     live status from Win32_EncryptableVolume)"
                .to_owned(),
            scheme: Some("bitlocker".to_owned()),
            cipher: Some("XtsAes128".to_owned()),
            key_bits: Some(128),
            protection: Some("off".to_owned()),
            progress_percent: None,
            key_protectors: strings(&["tpm", "recovery_password"]),
            filesystem: Some("NTFS".to_owned()),
            size_bytes: Some(510_770_802_688),
        }
    }

    #[test]
    fn the_script_json_of_a_laptop() {
        let report = parse_report(&fixture("bitlocker-ps5-suspended.json")).expect("parses");
        assert_eq!(report.system_drive.as_deref(), Some("C:"));
        let volumes = report.bitlocker_volumes.expect("listed");
        assert_eq!(volumes.len(), 3);
        assert_eq!(
            volumes[0],
            BitLockerVolume {
                mount_point: "C:".to_owned(),
                os_volume: true,
                conversion: Some(Conversion::FullyEncrypted),
                protection: Some(false),
                percent: Some(100),
                method: Some("XtsAes128".to_owned()),
                capacity_bytes: Some(510_770_825_239),
                key_protectors: strings(&["tpm", "recovery_password"]),
            }
        );
        assert_eq!(volumes[2].mount_point, "E:");
        assert_eq!(volumes[2].conversion, Some(Conversion::FullyDecrypted));
        assert!(volumes[2].key_protectors.is_empty());
        let live = report.live_status.expect("live");
        assert_eq!(live[0].protection, Some(0));
        assert_eq!(live[0].conversion, Some(Conversion::FullyEncrypted));
        assert_eq!(live[0].percent, Some(100));
        assert_eq!(
            report.logical_disks.expect("disks")[2],
            LogicalDisk {
                device_id: "E:".to_owned(),
                drive_type: 2,
                file_system: Some("FAT32".to_owned()),
                size_bytes: Some(31_024_349_184),
            }
        );
        assert_eq!(report.page_files, Ok(strings(&["C:\\pagefile.sys"])));
    }

    #[test]
    fn a_careless_script_with_recovery_passwords_leaks_nothing() {
        let text = fixture("bitlocker-careless-keyprotector.json");
        assert!(
            text.contains(RECOVERY_PASSWORD),
            "the fixture holds the secret"
        );
        let report = parse_report(&text).expect("parses");
        let listed = report.bitlocker_volumes.clone();
        let volumes = listed.clone().expect("listed");
        assert_eq!(
            volumes[0].key_protectors,
            strings(&["tpm", "recovery_password"])
        );
        let facts = build_facts(&report, listed, Source::PowerShell, vec![]);
        assert_eq!(
            facts.volumes[0].key_protectors,
            strings(&["tpm", "recovery_password"])
        );
        let digits: String = RECOVERY_PASSWORD
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        let debug = format!("{facts:?} {report:?}");
        let json = serde_json::to_string(&facts).expect("serializes");
        for text in [&debug, &json] {
            assert!(!text.contains(RECOVERY_PASSWORD), "{text}");
            assert!(!text.contains(&digits), "{text}");
            assert!(!text.contains("654321"), "{text}");
        }
    }

    #[test]
    fn an_error_message_with_a_recovery_password_is_redacted() {
        let json = format!(
            r#"{{"SystemDrive":"C:","BitLockerVolumesError":"bad password {RECOVERY_PASSWORD} given","LiveStatus":[],"LogicalDisks":[],"PageFiles":[]}}"#
        );
        let report = parse_report(&json).expect("parses");
        assert_eq!(
            report.bitlocker_volumes,
            Err("Get-BitLockerVolume failed: bad password [redacted] given".to_owned())
        );
        assert_eq!(redact("a 1234-5678 b"), "a 1234-5678 b");
        let long = "1".repeat(48);
        assert_eq!(redact(&format!("x{long}y")), "x[redacted]y");
    }

    #[test]
    fn live_status_wins_over_a_stale_property() {
        let json = r#"{
          "SystemDrive": "C:",
          "BitLockerVolumes": {"value": [
            {"MountPoint": "C:", "VolumeType": 0, "VolumeStatus": 1, "ProtectionStatus": 1,
             "EncryptionPercentage": 100, "EncryptionMethod": 6, "CapacityGB": 100.0,
             "KeyProtectorTypes": [1, 3]}
          ], "Count": 1},
          "LiveStatus": {"DriveLetter": "C:", "VolumeType": 0, "ProtectionStatus": 0,
                         "ConversionStatus": 3, "EncryptionPercentage": 40},
          "LogicalDisks": [{"DeviceID": "C:", "DriveType": 3, "FileSystem": "NTFS", "Size": 1000},
                           {"DeviceID": "F:", "DriveType": 3, "FileSystem": "ReFS", "Size": 2000},
                           {"DeviceID": "Z:", "DriveType": 4, "FileSystem": "NTFS", "Size": 3000}],
          "PageFiles": []
        }"#;
        let report = parse_report(json).expect("parses");
        let facts = build_facts(
            &report,
            report.bitlocker_volumes.clone(),
            Source::PowerShell,
            vec![],
        );
        let c = &facts.volumes[0];
        assert_eq!(c.encrypted, EncryptionState::Decrypting);
        assert_eq!(c.progress_percent, Some(40));
        assert_eq!(c.protection.as_deref(), Some("off"));
        assert_eq!(c.cipher.as_deref(), Some("XtsAes128"));
        assert_eq!(c.key_protectors, strings(&["tpm", "recovery_password"]));
        assert_eq!(
            c.reason,
            "BitLocker is decrypting C:, 40% encrypted (according to Get-BitLockerVolume, live \
             status from Win32_EncryptableVolume)"
        );
        // A fixed drive BitLocker does not list is still reported; a network drive is not.
        assert_eq!(facts.volumes.len(), 2);
        assert_eq!(facts.volumes[1].id, "F:");
        assert_eq!(facts.volumes[1].role, VolumeRole::Data);
        assert_eq!(facts.volumes[1].encrypted, EncryptionState::Unknown);
        assert_eq!(
            facts.volumes[1].reason,
            "F: is not listed by Get-BitLockerVolume: its encryption state is unknown"
        );
        assert_eq!(facts.system_encrypted, Some(false));
        assert_eq!(facts.fixed_data_encrypted, None);
        assert_eq!(facts.swap, SwapState::Absent);
    }

    #[test]
    fn failed_parts_are_unreadable_and_the_rest_stays() {
        let json = r#"{"SystemDrive":"C:",
          "BitLockerVolumes":[{"MountPoint":"C:","VolumeType":"OperatingSystem","VolumeStatus":"EncryptionInProgress","ProtectionStatus":"Off","EncryptionPercentage":37,"EncryptionMethod":"XtsAes256","KeyProtectorTypes":"Tpm"}],
          "LiveStatusError":"Access denied",
          "LogicalDisks":[{"DeviceID":"C:","DriveType":3,"FileSystem":"NTFS","Size":1000}],
          "PageFilesError":"Invalid class"}"#;
        let report = parse_report(json).expect("parses");
        let facts = build_facts(
            &report,
            report.bitlocker_volumes.clone(),
            Source::PowerShell,
            vec![],
        );
        assert_eq!(
            facts.unreadable,
            vec![
                unreadable(
                    "live_bitlocker_status",
                    "Win32_EncryptableVolume query failed: Access denied"
                ),
                unreadable(
                    "page_file",
                    "Win32_PageFileUsage query failed: Invalid class"
                ),
            ]
        );
        assert_eq!(facts.volumes.len(), 1);
        assert_eq!(facts.volumes[0].encrypted, EncryptionState::Encrypting);
        assert_eq!(facts.volumes[0].progress_percent, Some(37));
        assert_eq!(facts.volumes[0].key_bits, Some(256));
        assert_eq!(facts.volumes[0].key_protectors, strings(&["tpm"]));
        assert_eq!(facts.swap, SwapState::Unknown);
        assert_eq!(facts.system_encrypted, Some(false));
    }

    #[test]
    fn not_json_is_a_reason() {
        let error = parse_report("Get-BitLockerVolume : Zugriff verweigert\r\n").expect_err("no");
        assert!(error.contains("not JSON"), "{error}");
        assert!(parse_report("[]").is_err());
        assert!(parse_report("").is_err());
    }

    #[test]
    fn manage_bde_in_english() {
        let volumes = parse_manage_bde(&fixture("manage-bde-status-en.txt")).expect("parses");
        assert_eq!(
            volumes,
            vec![
                BitLockerVolume {
                    mount_point: "C:".to_owned(),
                    os_volume: true,
                    conversion: Some(Conversion::FullyEncrypted),
                    protection: Some(false),
                    percent: Some(100),
                    method: Some("XtsAes128".to_owned()),
                    capacity_bytes: None,
                    key_protectors: strings(&["tpm_pin", "recovery_password"]),
                },
                BitLockerVolume {
                    mount_point: "D:".to_owned(),
                    os_volume: false,
                    conversion: Some(Conversion::EncryptionInProgress),
                    protection: Some(false),
                    percent: Some(37),
                    method: Some("XtsAes256".to_owned()),
                    capacity_bytes: None,
                    key_protectors: strings(&["external_key", "recovery_password"]),
                },
                BitLockerVolume {
                    mount_point: "E:".to_owned(),
                    os_volume: false,
                    conversion: Some(Conversion::FullyDecrypted),
                    protection: Some(false),
                    percent: Some(0),
                    method: None,
                    capacity_bytes: None,
                    key_protectors: vec![],
                },
            ]
        );
    }

    fn german_volumes() -> Vec<BitLockerVolume> {
        vec![
            BitLockerVolume {
                mount_point: "C:".to_owned(),
                os_volume: true,
                conversion: Some(Conversion::FullyEncrypted),
                protection: Some(true),
                percent: Some(100),
                method: Some("XtsAes128".to_owned()),
                capacity_bytes: None,
                key_protectors: strings(&["tpm", "recovery_password"]),
            },
            BitLockerVolume {
                mount_point: "D:".to_owned(),
                os_volume: false,
                conversion: Some(Conversion::FullyDecrypted),
                protection: Some(false),
                percent: Some(0),
                method: None,
                capacity_bytes: None,
                key_protectors: vec![],
            },
        ]
    }

    #[test]
    fn manage_bde_in_german_utf8() {
        let volumes = parse_manage_bde(&fixture("manage-bde-status-de.txt")).expect("parses");
        assert_eq!(volumes, german_volumes());
    }

    #[test]
    fn manage_bde_in_german_through_the_oem_code_page() {
        // The replay holds manage-bde's bytes as a console pipe gets them: CP850, where `ü` is
        // 0x81 and decodes to U+FFFD.
        let bytes = std::fs::read(testdata(
            "replay-windows-server-german/commands/0002.stdout",
        ))
        .expect("stdout exists");
        assert!(
            std::str::from_utf8(&bytes).is_err(),
            "the fixture is CP850, not UTF-8"
        );
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(parse_manage_bde(&text).expect("parses"), german_volumes());
    }

    #[test]
    fn manage_bde_errors_and_odd_input() {
        let error = parse_manage_bde(
            "ERROR: An attempt to access a required resource was denied.\r\n\r\nCheck that you \
             have administrative rights on the computer.\r\n",
        )
        .expect_err("no volume");
        assert_eq!(
            error,
            "`manage-bde -status` listed no volume: ERROR: An attempt to access a required \
             resource was denied."
        );
        assert!(parse_manage_bde("").is_err());
        // A volume line alone still parses, with nothing known.
        let volumes = parse_manage_bde("Volume \\\\?\\Volume{1234}\\ []\n").expect("parses");
        assert_eq!(volumes[0].mount_point, "\\\\?\\Volume{1234}\\");
        assert_eq!(volumes[0].conversion, None);
        // Lines that look like a recovery password never become protectors or ids.
        let volumes = parse_manage_bde(&format!(
            "Volume C: []\n    Key Protectors:\n        Numerical Password\n        {RECOVERY_PASSWORD}\n"
        ))
        .expect("parses");
        assert_eq!(
            volumes[0].key_protectors,
            strings(&["recovery_password", "other"])
        );
        assert!(!format!("{volumes:?}").contains("654321"));
    }

    #[test]
    fn conversion_and_protector_texts() {
        for (text, expected) in [
            ("FullyEncrypted", Some(Conversion::FullyEncrypted)),
            (
                "Used Space Only Encrypted",
                Some(Conversion::FullyEncrypted),
            ),
            (
                "Nur verwendeter Speicherplatz ist verschlüsselt",
                Some(Conversion::FullyEncrypted),
            ),
            (
                "Vollständig verschlüsselt",
                Some(Conversion::FullyEncrypted),
            ),
            (
                "Vollst\u{fffd}ndig entschl\u{fffd}sselt",
                Some(Conversion::FullyDecrypted),
            ),
            (
                "Encryption in Progress",
                Some(Conversion::EncryptionInProgress),
            ),
            ("Encryption Paused", Some(Conversion::EncryptionPaused)),
            (
                "Decryption in Progress",
                Some(Conversion::DecryptionInProgress),
            ),
            ("DecryptionPaused", Some(Conversion::DecryptionPaused)),
            (
                "Verschlüsselung wird durchgeführt",
                Some(Conversion::EncryptionInProgress),
            ),
            (
                "Entschlüsselung angehalten",
                Some(Conversion::DecryptionPaused),
            ),
            ("", None),
            ("banana", None),
        ] {
            assert_eq!(Conversion::from_text(text), expected, "{text}");
        }
        for (text, expected) in [
            ("Tpm", Some("tpm")),
            ("TpmPinStartupKey", Some("tpm_pin_startup_key")),
            ("TPM And PIN", Some("tpm_pin")),
            ("TPM und PIN", Some("tpm_pin")),
            ("TPM And Startup Key", Some("tpm_startup_key")),
            ("TpmNetworkKey", Some("tpm_network_key")),
            ("Numerisches Kennwort", Some("recovery_password")),
            ("RecoveryPassword", Some("recovery_password")),
            (
                "External Key (Required for automatic unlock)",
                Some("external_key"),
            ),
            ("Externer Schlüssel", Some("external_key")),
            ("Password", Some("password")),
            ("Kennwort", Some("password")),
            ("PublicKey", Some("public_key")),
            ("AdAccountOrGroup", Some("ad_account_or_group")),
            ("None Found", None),
            ("Keine gefunden", None),
        ] {
            assert_eq!(protector_type(text), expected, "{text}");
        }
        assert_eq!(percent_text("37,5 %"), Some(37));
        assert_eq!(percent_text("100.0%"), Some(100));
        assert_eq!(percent_text("250%"), None);
        assert_eq!(method_name("XTS-AES 256"), Some("XtsAes256".to_owned()));
        assert_eq!(
            method_name("AES 128 with Diffuser"),
            Some("Aes128Diffuser".to_owned())
        );
        assert_eq!(method_name("Kein"), None);
        assert_eq!(method_name("None"), None);
    }

    #[tokio::test]
    async fn replay_of_a_laptop_with_suspended_protection() {
        let facts = replay("replay-windows11-bitlocker")
            .await
            .expect("collects");
        let c = windows11_c();
        let d = Volume {
            id: "D:".to_owned(),
            mount_points: strings(&["D:\\"]),
            role: VolumeRole::Data,
            encrypted: EncryptionState::NotEncrypted,
            reason: "D: is fully decrypted: BitLocker is off (according to Get-BitLockerVolume, \
                     live status from Win32_EncryptableVolume)"
                .to_owned(),
            filesystem: Some("NTFS".to_owned()),
            size_bytes: Some(1_000_186_310_656),
            ..Volume::default()
        };
        let e = Volume {
            id: "E:".to_owned(),
            mount_points: strings(&["E:\\"]),
            role: VolumeRole::Removable,
            encrypted: EncryptionState::NotEncrypted,
            reason: "E: is fully decrypted: BitLocker is off (according to Get-BitLockerVolume, \
                     live status from Win32_EncryptableVolume)"
                .to_owned(),
            filesystem: Some("FAT32".to_owned()),
            size_bytes: Some(31_024_349_184),
            ..Volume::default()
        };
        let swap = Volume {
            id: "pagefile:C:\\pagefile.sys".to_owned(),
            mount_points: strings(&["C:\\pagefile.sys"]),
            role: VolumeRole::Swap,
            encrypted: EncryptionState::Encrypted,
            reason: "the page file C:\\pagefile.sys is on C:, which is encrypted, with protection \
                     suspended"
                .to_owned(),
            scheme: Some("bitlocker".to_owned()),
            cipher: Some("XtsAes128".to_owned()),
            key_bits: Some(128),
            protection: Some("off".to_owned()),
            filesystem: Some("NTFS".to_owned()),
            ..Volume::default()
        };
        assert_eq!(
            facts,
            DiskEncryptionFacts {
                volumes: vec![c, d, e, swap],
                system_encrypted: Some(true),
                fixed_data_encrypted: Some(false),
                swap: SwapState::Encrypted,
                unreadable: vec![],
            }
        );
    }

    #[tokio::test]
    async fn replay_of_a_german_server_through_manage_bde() {
        let facts = replay("replay-windows-server-german")
            .await
            .expect("collects");
        let c = Volume {
            id: "C:".to_owned(),
            mount_points: strings(&["C:\\"]),
            role: VolumeRole::System,
            encrypted: EncryptionState::Encrypted,
            reason: "C: is fully encrypted by BitLocker (XtsAes128), protection on (according to \
                     manage-bde, live status from Win32_EncryptableVolume)"
                .to_owned(),
            scheme: Some("bitlocker".to_owned()),
            cipher: Some("XtsAes128".to_owned()),
            key_bits: Some(128),
            protection: Some("on".to_owned()),
            progress_percent: None,
            key_protectors: strings(&["tpm", "recovery_password"]),
            filesystem: Some("NTFS".to_owned()),
            size_bytes: Some(126_696_288_256),
        };
        let d = Volume {
            id: "D:".to_owned(),
            mount_points: strings(&["D:\\"]),
            role: VolumeRole::Data,
            encrypted: EncryptionState::NotEncrypted,
            reason: "D: is fully decrypted: BitLocker is off (according to manage-bde, live \
                     status from Win32_EncryptableVolume)"
                .to_owned(),
            filesystem: Some("NTFS".to_owned()),
            size_bytes: Some(536_753_680_384),
            ..Volume::default()
        };
        let swap = Volume {
            id: "pagefile:C:\\pagefile.sys".to_owned(),
            mount_points: strings(&["C:\\pagefile.sys"]),
            role: VolumeRole::Swap,
            encrypted: EncryptionState::Encrypted,
            reason: "the page file C:\\pagefile.sys is on C:, which is encrypted".to_owned(),
            scheme: Some("bitlocker".to_owned()),
            cipher: Some("XtsAes128".to_owned()),
            key_bits: Some(128),
            protection: Some("on".to_owned()),
            filesystem: Some("NTFS".to_owned()),
            ..Volume::default()
        };
        assert_eq!(
            facts,
            DiskEncryptionFacts {
                volumes: vec![c, d, swap],
                system_encrypted: Some(true),
                fixed_data_encrypted: Some(false),
                swap: SwapState::Encrypted,
                unreadable: vec![unreadable(
                    "bitlocker_volumes",
                    "Get-BitLockerVolume failed: Die Benennung \"Get-BitLockerVolume\" wurde \
                     nicht als Name eines Cmdlet, einer Funktion, einer Skriptdatei oder eines \
                     ausführbaren Programms erkannt. Überprüfen Sie die Schreibweise des Namens, \
                     oder ob der Pfad korrekt ist (sofern enthalten), und wiederholen Sie den \
                     Vorgang. (CommandNotFoundException)"
                )],
            }
        );
    }

    #[tokio::test]
    async fn a_script_that_cannot_run_is_a_check_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("host.toml"), "os_family = \"windows\"\n").expect("write");
        let host = Host::replay(dir.path()).expect("loads");
        let error = collect(&host).await.expect_err("nothing recorded");
        assert_eq!(error.reason, "the BitLocker script could not run");
        let source = error.source.expect("source");
        assert!(source.contains("not in the recording"), "{source}");
        assert!(!source.contains("Get-BitLockerVolume"), "{source}");
    }
}

//! Windows Server Backup (tool `windows_server_backup`) and File History (tool `file_history`):
//! one PowerShell call that prints one JSON object, and `wbadmin get versions` where the
//! Windows Server Backup module is absent.
//!
//! **Windows Server Backup.** `Get-WBSummary` gives the last successful and the last backup,
//! the last result (`LastBackupResultHR`, 0 for success, else an HRESULT such as `0x80780049`
//! with `DetailedMessage`) and the number of versions kept; the scheduled policy
//! (`Get-WBPolicy`) names the targets (`Get-WBBackupTarget`) and what is backed up (volumes,
//! file specs, system state, bare-metal recovery). It is one job, so one source. A server with
//! the feature but no policy and no backup has nothing configured and pushes nothing.
//!
//! **wbadmin fallback.** Where the PowerShell module is not installed (a client, or a server
//! with the feature's command-line tools only), `wbadmin get versions` lists the backups the
//! machine can recover, with `Version identifier: 01/15/2024-21:30`, which is UTC and written
//! the same way in every locale (`Backup time` is local and localised, so it is not read). It
//! knows only successful backups: no last attempt, no result. "No backups were found" (or wbadmin
//! missing) pushes nothing.
//!
//! **File History** is configured per user and the agent runs as SYSTEM, so the script reads
//! the configuration of every user profile (`%LOCALAPPDATA%\Microsoft\Windows\FileHistory\
//! Configuration\Config1.xml` under each profile of `Win32_UserProfile`): the target
//! (`TargetUrl`, `TargetName`, `TargetDriveType`) and the folders it protects. The
//! configuration records no "last backup": the time reported is when File History last wrote its
//! catalog to the target (`<TargetUrl>\FileHistory\<TargetCatalogPath1>`, normally
//! `…\<user>\<computer>\Configuration\Catalog1.edb`), which it does at the end of every backup
//! cycle. A target that is not connected (a USB drive unplugged) leaves that unknown: the source
//! then carries error `repository_missing`. The number of versions is not counted (that would
//! mean walking the whole target), so `snapshot_count` stays empty. Whether File History is on
//! (`DPStatus`) is in the script's output but not parsed yet (`scheduled` stays unknown). A
//! network target that does not answer can make `Test-Path` wait for the SMB timeout, which
//! counts against the command's 30 s.
//!
//! **Failures.** Each part of the script runs in its own `try` and reports its error message,
//! so a broken part leaves the others readable. If PowerShell itself cannot run (missing,
//! timed out, no JSON), each tool gets one source carrying that error, never "no backups".
//!
//! This module is compiled on every OS and reached by the host's recorded OS family, so Windows
//! recordings replay (and are tested) on Linux.

use serde_json::{Map, Value};

use super::{BackupFacts, BackupSource, SourceErrorKind, classify_host_error, redact_message};
use crate::checks::UnreadableFact;
use crate::checks::patch::LocalClock;
use crate::checks::powershell::{
    POWERSHELL, bool_of, date_of, integer_of, items, items_of, text_of,
};
use crate::host::{Host, HostError};

const SERVER_BACKUP: &str = "windows_server_backup";
const SERVER_BACKUP_NAME: &str = "Windows Server Backup";
const FILE_HISTORY: &str = "file_history";
const FILE_HISTORY_NAME: &str = "File History";
const WBADMIN: &str = "wbadmin";
const WBADMIN_ARGS: &[&str] = &["get", "versions"];

/// Dates leave PowerShell as ISO 8601 UTC (`ToUniversalTime().ToString('o')`); Windows Server
/// Backup writes `DateTime.MinValue` for "never", which `Utc` turns into `null`.
pub(super) const SCRIPT: &str = r#"$ErrorActionPreference = 'Stop'
$r = [ordered]@{}
function Utc($d) { if ($d -is [DateTime] -and $d.Year -gt 1601) { $d.ToUniversalTime().ToString('o') } else { $null } }
if (Get-Module -ListAvailable -Name WindowsServerBackup) {
  try {
    Import-Module WindowsServerBackup
    $s = Get-WBSummary
    $r.ServerBackup = [ordered]@{ LastSuccessfulBackupTime = Utc $s.LastSuccessfulBackupTime; LastBackupTime = Utc $s.LastBackupTime; LastBackupResultHR = $s.LastBackupResultHR; DetailedMessage = $s.DetailedMessage; NumberOfVersions = $s.NumberOfVersions; LastBackupTarget = $s.LastBackupTarget; NextBackupTime = Utc $s.NextBackupTime }
  } catch { $r.ServerBackupError = "$_" }
  try {
    $p = Get-WBPolicy
    if ($p) {
      $r.ServerBackupPolicy = [ordered]@{
        Targets = @(Get-WBBackupTarget -Policy $p | ForEach-Object { [ordered]@{ Label = $_.Label; TargetPath = $_.TargetPath; TargetType = "$($_.TargetType)" } })
        Volumes = @(Get-WBVolume -Policy $p | ForEach-Object { $_.MountPath })
        FileSpecs = @(Get-WBFileSpec -Policy $p | Where-Object { -not $_.IsExclude } | ForEach-Object { $_.FileSpec })
        SystemState = [bool](Get-WBSystemState -Policy $p)
        BareMetalRecovery = [bool](Get-WBBareMetalRecovery -Policy $p)
      }
    } else { $r.ServerBackupPolicy = $null }
  } catch { $r.ServerBackupPolicyError = "$_" }
} else { $r.ServerBackupModule = $false }
try {
  $r.FileHistory = @(foreach ($u in (Get-CimInstance -ClassName Win32_UserProfile -Filter 'Special = FALSE')) {
    if (-not $u.LocalPath) { continue }
    $cfg = Join-Path $u.LocalPath 'AppData\Local\Microsoft\Windows\FileHistory\Configuration\Config1.xml'
    if (-not (Test-Path -LiteralPath $cfg)) { continue }
    $e = [ordered]@{ Profile = $u.LocalPath }
    try {
      $x = ([xml](Get-Content -LiteralPath $cfg -Raw)).DataProtectionUserConfig
      $t = $x.Target
      $e.UserName = $x.UserName
      $e.DPStatus = $x.DPStatus
      $e.TargetName = $t.TargetName
      $e.TargetUrl = $t.TargetUrl
      $e.TargetDriveType = $t.TargetDriveType
      $e.Folders = @(@($x.UserFolder) + @($x.Library | ForEach-Object { $_.Folder }) | Where-Object { $_ })
      $e.TargetReachable = [bool]($t.TargetUrl -and (Test-Path -LiteralPath $t.TargetUrl))
      $rel = "$($t.TargetCatalogPath1)"
      if ($e.TargetReachable -and $rel) {
        $catalog = if ([IO.Path]::IsPathRooted($rel)) { $rel } else { Join-Path (Join-Path $t.TargetUrl 'FileHistory') $rel }
        $e.TargetCatalog = $catalog
        if (Test-Path -LiteralPath $catalog) { $e.TargetCatalogWritten = (Get-Item -LiteralPath $catalog -Force).LastWriteTimeUtc.ToString('o') }
      }
    } catch { $e.Error = "$_" }
    $e
  })
} catch { $r.FileHistoryError = "$_" }
[pscustomobject]$r | ConvertTo-Json -Depth 5"#;

pub(super) const ARGS: &[&str] = &["-NoProfile", "-NonInteractive", "-Command", SCRIPT];

pub(super) async fn collect(host: &Host, facts: &mut BackupFacts) {
    let report = match host.run(POWERSHELL, ARGS).await {
        Err(error) => Err((classify_host_error(&error), error.to_string())),
        Ok(output) if !output.success() => {
            let status = output
                .status
                .map_or_else(|| "a signal".to_owned(), |code| format!("status {code}"));
            let said = output
                .stderr
                .lines()
                .chain(output.stdout.lines())
                .map(str::trim)
                .find(|line| !line.is_empty())
                .unwrap_or("nothing");
            Err((
                SourceErrorKind::Other,
                format!("the backup script exited with {status}: {said}"),
            ))
        }
        Ok(output) => {
            parse_report(&output.stdout).map_err(|reason| (SourceErrorKind::Other, reason))
        }
    };
    let report = match report {
        Ok(report) => report,
        Err((kind, reason)) => {
            for (tool, name) in [
                (SERVER_BACKUP, SERVER_BACKUP_NAME),
                (FILE_HISTORY, FILE_HISTORY_NAME),
            ] {
                let mut source = BackupSource::new(tool, name, "");
                source.fail(kind, &reason);
                facts.sources.push(source);
            }
            return;
        }
    };

    match &report.server_backup {
        ServerBackup::ModuleMissing => {
            if let Some(source) = from_wbadmin(host).await {
                facts.sources.push(source);
            }
        }
        ServerBackup::Failed(reason) => {
            let mut source = BackupSource::new(SERVER_BACKUP, SERVER_BACKUP_NAME, "");
            source.fail(SourceErrorKind::Other, reason);
            facts.sources.push(source);
        }
        ServerBackup::Read(summary) => {
            if let Err(reason) = &summary.policy {
                facts.unreadable.push(UnreadableFact {
                    fact: "windows_server_backup_policy".to_owned(),
                    reason: reason.clone(),
                });
            }
            if let Some(source) = summary.source() {
                facts.sources.push(source);
            }
        }
    }

    match &report.file_history {
        Ok(users) => facts
            .sources
            .extend(users.iter().map(FileHistoryUser::source)),
        Err(reason) => {
            let mut source = BackupSource::new(FILE_HISTORY, FILE_HISTORY_NAME, "");
            source.fail(SourceErrorKind::Other, reason);
            facts.sources.push(source);
        }
    }
}

/// `wbadmin get versions`, for a host without the Windows Server Backup module. `None` when
/// there is nothing to report: no wbadmin, or no backup.
async fn from_wbadmin(host: &Host) -> Option<BackupSource> {
    let versions = match host.run(WBADMIN, WBADMIN_ARGS).await {
        Err(HostError::ProgramNotFound { .. }) => return None,
        Err(error) => Err((classify_host_error(&error), error.to_string())),
        Ok(output) => parse_wbadmin_versions(&output.stdout, &output.stderr).map_err(|reason| {
            (
                SourceErrorKind::Other,
                format!("`wbadmin get versions` {reason}"),
            )
        }),
    };
    match versions {
        Ok(versions) => {
            let newest = versions.iter().max_by_key(|version| version.at_unix_ms)?;
            let mut source = BackupSource::new(
                SERVER_BACKUP,
                SERVER_BACKUP_NAME,
                newest.target.as_deref().unwrap_or_default(),
            );
            source.last_success_unix_ms = Some(newest.at_unix_ms);
            source.snapshot_count = Some(u32::try_from(versions.len()).unwrap_or(u32::MAX));
            Some(source)
        }
        Err((kind, reason)) => {
            let mut source = BackupSource::new(SERVER_BACKUP, SERVER_BACKUP_NAME, "");
            source.fail(kind, &reason);
            Some(source)
        }
    }
}

/// What the script printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsBackupReport {
    pub server_backup: ServerBackup,
    /// One entry per user profile with a File History configuration.
    pub file_history: Result<Vec<FileHistoryUser>, String>,
}

/// The Windows Server Backup part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerBackup {
    /// The `WindowsServerBackup` PowerShell module is not installed.
    ModuleMissing,
    /// The module is there and failed, with its message.
    Failed(String),
    Read(Box<ServerBackupSummary>),
}

/// `Get-WBSummary` and the scheduled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBackupSummary {
    pub last_success_unix_ms: Option<i64>,
    pub last_attempt_unix_ms: Option<i64>,
    /// `LastBackupResultHR`: 0 for success, else an HRESULT.
    pub result_hr: Option<i64>,
    pub detailed_message: Option<String>,
    pub versions: Option<u32>,
    /// `LastBackupTarget`, as the summary names it.
    pub last_target: Option<String>,
    /// `None`: no scheduled backup.
    pub policy: Result<Option<ServerBackupPolicy>, String>,
}

/// The scheduled backup: where to and what.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerBackupPolicy {
    /// Each target's label, else its path (`SRV01 2024_01_01 21:00 DISK_01`, `\\nas\wsb`).
    pub targets: Vec<String>,
    /// Volumes and file specs, then `system state` and `bare metal recovery` where included.
    pub paths: Vec<String>,
}

impl Default for ServerBackupSummary {
    /// Nothing known, no policy.
    fn default() -> ServerBackupSummary {
        ServerBackupSummary {
            last_success_unix_ms: None,
            last_attempt_unix_ms: None,
            result_hr: None,
            detailed_message: None,
            versions: None,
            last_target: None,
            policy: Ok(None),
        }
    }
}

impl ServerBackupSummary {
    /// The source, or `None` when nothing is configured and nothing was ever backed up.
    fn source(&self) -> Option<BackupSource> {
        let policy = self.policy.as_ref().ok().and_then(Option::as_ref);
        let never_configured = self.policy == Ok(None)
            && self.versions.unwrap_or(0) == 0
            && self.last_attempt_unix_ms.is_none()
            && self.last_success_unix_ms.is_none();
        if never_configured {
            return None;
        }
        let destination = match policy {
            Some(policy) if !policy.targets.is_empty() => policy.targets.join(", "),
            _ => self.last_target.clone().unwrap_or_default(),
        };
        let mut source = BackupSource::new(SERVER_BACKUP, SERVER_BACKUP_NAME, &destination);
        source.scheduled = match &self.policy {
            Ok(policy) => Some(policy.is_some()),
            Err(_) => None,
        };
        source.last_success_unix_ms = self.last_success_unix_ms;
        source.last_attempt_unix_ms = self.last_attempt_unix_ms;
        source.snapshot_count = self.versions;
        source.paths = policy
            .map(|policy| policy.paths.clone())
            .unwrap_or_default();
        if self.last_attempt_unix_ms.is_some() {
            source.last_attempt_result = self.result_hr.map(|hr| match hr {
                0 => "success".to_owned(),
                hr => {
                    let code = format!("{:#010x}", hresult_bits(hr));
                    match &self.detailed_message {
                        Some(message) => redact_message(&format!("{code}: {message}")),
                        None => code,
                    }
                }
            });
        }
        Some(source)
    }
}

/// An HRESULT as PowerShell prints it (a signed 32-bit number, `-2139619255`) or as an
/// unsigned one, to its bits (`0x80780049`).
fn hresult_bits(hr: i64) -> u32 {
    u32::try_from(hr)
        .or_else(|_| i32::try_from(hr).map(i32::cast_unsigned))
        .unwrap_or(u32::MAX)
}

/// One user's File History configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileHistoryUser {
    /// The profile directory, `C:\Users\anna`.
    pub profile: String,
    /// `UserName` of the configuration, `DESKTOP-7Q2\anna`.
    pub user: Option<String>,
    /// `TargetUrl`: `E:\`, `\\nas\fh\`.
    pub target_url: Option<String>,
    /// `TargetName`: the drive's label or the share.
    pub target_name: Option<String>,
    /// `TargetDriveType`: `REMOVABLE`, `FIXED`, `REMOTE`.
    pub drive_type: Option<String>,
    /// The folders it protects: `UserFolder` and the libraries' folders.
    pub folders: Vec<String>,
    pub target_reachable: Option<bool>,
    /// Where the catalog on the target was looked for.
    pub target_catalog: Option<String>,
    /// When File History last wrote its catalog to the target.
    pub catalog_written_unix_ms: Option<i64>,
    /// Why the configuration could not be read.
    pub error: Option<String>,
}

impl FileHistoryUser {
    fn source(&self) -> BackupSource {
        let user = self.user.clone().unwrap_or_else(|| {
            self.profile
                .rsplit(['\\', '/'])
                .find(|part| !part.is_empty())
                .unwrap_or(&self.profile)
                .to_owned()
        });
        let destination = self
            .target_url
            .as_ref()
            .or(self.target_name.as_ref())
            .cloned()
            .unwrap_or_default();
        let mut source = BackupSource::new(
            FILE_HISTORY,
            &format!("File History ({user})"),
            &destination,
        );
        source.paths = self.folders.clone();
        source.last_success_unix_ms = self.catalog_written_unix_ms;
        let target = match (&self.target_url, &self.drive_type) {
            (Some(url), Some(kind)) => format!("{url} ({})", kind.to_ascii_lowercase()),
            (Some(url), None) => url.clone(),
            (None, _) => "the target".to_owned(),
        };
        if let Some(error) = &self.error {
            source.fail(
                SourceErrorKind::Other,
                &format!(
                    "the File History configuration of {} could not be read: {error}",
                    self.profile
                ),
            );
        } else if self.target_url.is_none() {
            source.fail(
                SourceErrorKind::Config,
                "the File History configuration names no target",
            );
        } else if self.target_reachable == Some(false) {
            source.fail(
                SourceErrorKind::RepositoryMissing,
                &format!(
                    "the File History target {target} is not connected, so its last backup is \
                     unknown"
                ),
            );
        } else if self.catalog_written_unix_ms.is_none() {
            let looked = self.target_catalog.as_deref().unwrap_or("the target");
            source.fail(
                SourceErrorKind::Other,
                &format!(
                    "no File History catalog at {looked}: no backup has finished on {target}, or \
                     it keeps its catalog elsewhere"
                ),
            );
        }
        source
    }
}

/// Parses the script's JSON (see [`SCRIPT`]), tolerating Windows PowerShell 5.1's ways: a
/// one-element array written as the bare element or as `{ "value": [...], "Count": n }`, dates
/// as `/Date(ms)/`, a byte-order mark.
pub fn parse_report(text: &str) -> Result<WindowsBackupReport, String> {
    let text = text.trim_start_matches('\u{feff}').trim();
    let root: Value = serde_json::from_str(text)
        .map_err(|error| format!("the backup script printed no JSON: {error}"))?;
    let root = root
        .as_object()
        .ok_or_else(|| "the backup script printed no JSON object".to_owned())?;

    let server_backup = if root.get("ServerBackupModule").and_then(Value::as_bool) == Some(false) {
        ServerBackup::ModuleMissing
    } else if let Some(message) = text_of(root.get("ServerBackupError")) {
        ServerBackup::Failed(format!("Get-WBSummary failed: {message}"))
    } else {
        match root.get("ServerBackup") {
            Some(Value::Object(summary)) => {
                ServerBackup::Read(Box::new(parse_summary(summary, root)))
            }
            _ => ServerBackup::Failed("ServerBackup not in the backup script's report".to_owned()),
        }
    };

    let file_history = if let Some(message) = text_of(root.get("FileHistoryError")) {
        Err(format!(
            "listing the File History configurations failed: {message}"
        ))
    } else {
        match root.get("FileHistory") {
            Some(value) => Ok(items(value)
                .into_iter()
                .filter_map(Value::as_object)
                .map(parse_file_history_user)
                .collect()),
            None => Err("FileHistory not in the backup script's report".to_owned()),
        }
    };
    Ok(WindowsBackupReport {
        server_backup,
        file_history,
    })
}

fn parse_summary(summary: &Map<String, Value>, root: &Map<String, Value>) -> ServerBackupSummary {
    let policy = if let Some(message) = text_of(root.get("ServerBackupPolicyError")) {
        Err(format!("Get-WBPolicy failed: {message}"))
    } else {
        match root.get("ServerBackupPolicy") {
            Some(Value::Object(policy)) => Ok(Some(parse_policy(policy))),
            Some(Value::Null) => Ok(None),
            Some(other) => Err(format!("ServerBackupPolicy is not an object: {other}")),
            None => Err("ServerBackupPolicy not in the backup script's report".to_owned()),
        }
    };
    ServerBackupSummary {
        last_success_unix_ms: summary.get("LastSuccessfulBackupTime").and_then(date_of),
        last_attempt_unix_ms: summary.get("LastBackupTime").and_then(date_of),
        result_hr: summary.get("LastBackupResultHR").and_then(integer_of),
        detailed_message: text_of(summary.get("DetailedMessage")),
        versions: summary
            .get("NumberOfVersions")
            .and_then(integer_of)
            .and_then(|n| u32::try_from(n).ok()),
        last_target: text_of(summary.get("LastBackupTarget")),
        policy,
    }
}

fn parse_policy(policy: &Map<String, Value>) -> ServerBackupPolicy {
    let targets = items_of(policy.get("Targets"))
        .into_iter()
        .filter_map(|target| {
            text_of(target.get("Label"))
                .or_else(|| text_of(target.get("TargetPath")))
                .or_else(|| text_of(target.get("TargetType")))
        })
        .collect();
    let mut paths: Vec<String> = items_of(policy.get("Volumes"))
        .into_iter()
        .chain(items_of(policy.get("FileSpecs")))
        .filter_map(|path| text_of(Some(path)))
        .collect();
    if policy.get("SystemState").and_then(bool_of) == Some(true) {
        paths.push("system state".to_owned());
    }
    if policy.get("BareMetalRecovery").and_then(bool_of) == Some(true) {
        paths.push("bare metal recovery".to_owned());
    }
    ServerBackupPolicy { targets, paths }
}

fn parse_file_history_user(user: &Map<String, Value>) -> FileHistoryUser {
    FileHistoryUser {
        profile: text_of(user.get("Profile")).unwrap_or_default(),
        user: text_of(user.get("UserName")),
        target_url: text_of(user.get("TargetUrl")),
        target_name: text_of(user.get("TargetName")),
        drive_type: text_of(user.get("TargetDriveType")),
        folders: items_of(user.get("Folders"))
            .into_iter()
            .filter_map(|folder| text_of(Some(folder)))
            .collect(),
        target_reachable: user.get("TargetReachable").and_then(bool_of),
        target_catalog: text_of(user.get("TargetCatalog")),
        catalog_written_unix_ms: user.get("TargetCatalogWritten").and_then(date_of),
        error: text_of(user.get("Error")),
    }
}

/// One backup `wbadmin get versions` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WbadminVersion {
    /// The `Version identifier`, a UTC minute.
    pub at_unix_ms: i64,
    /// `Backup target:` (or `Backup location:`, as older releases say): `Fixed Disk labeled
    /// F:`, `Network Share labeled \\nas\backup`.
    pub target: Option<String>,
}

/// Parses English `wbadmin get versions`. Blocks of `Backup time`, `Backup target`, `Version
/// identifier`, `Can recover`; "No backups were found" is an empty list. Output with neither
/// (another language, an error) is the reason there is no list.
pub fn parse_wbadmin_versions(stdout: &str, stderr: &str) -> Result<Vec<WbadminVersion>, String> {
    let utc = LocalClock::utc();
    let mut versions = Vec::new();
    let mut target: Option<String> = None;
    for line in stdout.lines().map(str::trim) {
        if line.is_empty() {
            target = None;
        } else if let Some(value) = line
            .strip_prefix("Backup target:")
            .or_else(|| line.strip_prefix("Backup location:"))
        {
            target = Some(value.trim().to_owned()).filter(|value| !value.is_empty());
        } else if let Some(value) = line.strip_prefix("Version identifier:") {
            let at_unix_ms = utc.parse(value, "%m/%d/%Y-%H:%M").map_err(|reason| {
                format!("printed a version identifier that is not a time: {reason}")
            })?;
            versions.push(WbadminVersion {
                at_unix_ms,
                target: target.take(),
            });
        }
    }
    if !versions.is_empty() {
        return Ok(versions);
    }
    let said = format!("{stdout}\n{stderr}");
    if said.to_ascii_lowercase().contains("no backups were found") {
        return Ok(Vec::new());
    }
    let last = said
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .unwrap_or("nothing");
    Err(format!(
        "printed no version identifier (not English?), ending with: {last}"
    ))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::checks::backup::SourceError;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/checks/backup/testdata")
            .join(name)
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(testdata("windows").join(name)).expect("fixture exists")
    }

    fn server2022_summary() -> ServerBackupSummary {
        ServerBackupSummary {
            last_success_unix_ms: Some(1_705_266_017_000),
            last_attempt_unix_ms: Some(1_705_266_017_000),
            result_hr: Some(0),
            detailed_message: None,
            versions: Some(14),
            last_target: Some("SRV-FILES01 2023_12_01 21:00 DISK_01".to_owned()),
            policy: Ok(Some(ServerBackupPolicy {
                targets: vec!["SRV-FILES01 2023_12_01 21:00 DISK_01".to_owned()],
                paths: vec![
                    "C:".to_owned(),
                    "D:".to_owned(),
                    "system state".to_owned(),
                    "bare metal recovery".to_owned(),
                ],
            })),
        }
    }

    #[test]
    fn server_2022_with_a_scheduled_backup() {
        let report = parse_report(&fixture("report-server2022.json")).expect("parses");
        assert_eq!(
            report.server_backup,
            ServerBackup::Read(Box::new(server2022_summary()))
        );
        assert_eq!(report.file_history, Ok(Vec::new()));
    }

    fn anna() -> FileHistoryUser {
        FileHistoryUser {
            profile: r"C:\Users\anna".to_owned(),
            user: Some(r"DESKTOP-7Q2M4KD\anna".to_owned()),
            target_url: Some(r"E:\".to_owned()),
            target_name: Some("SanDisk USB".to_owned()),
            drive_type: Some("REMOVABLE".to_owned()),
            folders: vec![
                r"C:\Users\anna\Contacts".to_owned(),
                r"C:\Users\anna\Desktop".to_owned(),
                r"C:\Users\anna\Favorites".to_owned(),
                r"C:\Users\anna\OneDrive".to_owned(),
                r"C:\Users\anna\Documents".to_owned(),
                r"C:\Users\anna\Music".to_owned(),
                r"C:\Users\anna\Pictures".to_owned(),
                r"C:\Users\anna\Videos".to_owned(),
            ],
            target_reachable: Some(true),
            target_catalog: Some(
                r"E:\FileHistory\anna\DESKTOP-7Q2M4KD\Configuration\Catalog1.edb".to_owned(),
            ),
            catalog_written_unix_ms: Some(1_705_262_593_484),
            error: None,
        }
    }

    fn ben() -> FileHistoryUser {
        FileHistoryUser {
            profile: r"C:\Users\ben".to_owned(),
            user: Some(r"DESKTOP-7Q2M4KD\ben".to_owned()),
            target_url: Some(r"\\nas\fh\".to_owned()),
            target_name: Some(r"\\nas\fh".to_owned()),
            drive_type: Some("REMOTE".to_owned()),
            folders: vec![r"C:\Users\ben\Documents".to_owned()],
            target_reachable: Some(false),
            ..FileHistoryUser::default()
        }
    }

    #[test]
    fn windows_10_with_file_history_on_usb() {
        let report = parse_report(&fixture("report-windows10-file-history.json")).expect("parses");
        assert_eq!(report.server_backup, ServerBackup::ModuleMissing);
        assert_eq!(report.file_history, Ok(vec![anna(), ben()]));
    }

    #[test]
    fn failed_parts_keep_their_reason() {
        let report = parse_report(&fixture("report-ps5-failures.json")).expect("parses");
        assert_eq!(
            report.server_backup,
            ServerBackup::Failed(
                "Get-WBSummary failed: The Block Level Backup Engine service is not running."
                    .to_owned()
            )
        );
        assert_eq!(
            report.file_history,
            Err("listing the File History configurations failed: Access denied".to_owned())
        );
        let report = parse_report(
            r#"{"ServerBackup": {"NumberOfVersions": 0}, "ServerBackupPolicyError": "x", "FileHistory": null}"#,
        )
        .expect("parses");
        let ServerBackup::Read(summary) = report.server_backup else {
            panic!("read");
        };
        assert_eq!(summary.policy, Err("Get-WBPolicy failed: x".to_owned()));
        assert_eq!(report.file_history, Ok(Vec::new()));
    }

    #[test]
    fn odd_reports() {
        assert!(parse_report("").is_err());
        assert!(parse_report("[]").is_err());
        assert!(parse_report("Get-WBSummary : The term is not recognized").is_err());
        let report = parse_report("\u{feff}{}").expect("parses");
        assert!(matches!(report.server_backup, ServerBackup::Failed(_)));
        assert!(report.file_history.is_err());
        let report = parse_report(
            r#"{"ServerBackupModule": false, "FileHistory": {"value": [{"Profile": "C:\\Users\\x", "Error": "bad xml"}], "Count": 1}}"#,
        )
        .expect("parses");
        let users = report.file_history.expect("users");
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].error.as_deref(), Some("bad xml"));
    }

    #[test]
    fn a_failed_backup_reports_its_hresult_and_message() {
        let summary = ServerBackupSummary {
            result_hr: Some(-2_139_619_255),
            detailed_message: Some(
                "There is not enough disk space to create the volume shadow copy on the storage location."
                    .to_owned(),
            ),
            ..server2022_summary()
        };
        let source = summary.source().expect("a source");
        assert_eq!(
            source.last_attempt_result.as_deref(),
            Some(
                "0x80780049: There is not enough disk space to create the volume shadow copy on \
                 the storage location."
            )
        );
        let summary = ServerBackupSummary {
            result_hr: Some(2_155_348_041),
            detailed_message: Some("see https://admin:pw@nas/x".to_owned()),
            ..server2022_summary()
        };
        assert_eq!(
            summary
                .source()
                .and_then(|s| s.last_attempt_result)
                .as_deref(),
            Some("0x80780049: see https://admin@nas/x")
        );
    }

    #[test]
    fn hresults() {
        assert_eq!(hresult_bits(0), 0);
        assert_eq!(hresult_bits(-2_139_619_255), 0x8078_0049);
        assert_eq!(hresult_bits(0x8078_0049), 0x8078_0049);
        assert_eq!(hresult_bits(i64::MAX), u32::MAX);
    }

    #[test]
    fn a_server_without_a_schedule_or_backups_has_no_source() {
        let summary = ServerBackupSummary {
            versions: Some(0),
            policy: Ok(None),
            ..ServerBackupSummary::default()
        };
        assert_eq!(summary.source(), None);
        let summary = ServerBackupSummary {
            versions: Some(2),
            last_target: Some("Fixed Disk labeled F:".to_owned()),
            policy: Ok(None),
            ..ServerBackupSummary::default()
        };
        let source = summary.source().expect("one-off backups are a source");
        assert_eq!(source.destination, "Fixed Disk labeled F:");
        assert_eq!(source.last_attempt_result, None);
    }

    #[test]
    fn file_history_sources() {
        let source = anna().source();
        assert_eq!(source.name, r"File History (DESKTOP-7Q2M4KD\anna)");
        assert_eq!(source.destination, r"E:\");
        assert_eq!(source.last_success_unix_ms, Some(1_705_262_593_484));
        assert_eq!(source.error, None);
        let source = ben().source();
        assert_eq!(
            source.error,
            Some(SourceError {
                kind: SourceErrorKind::RepositoryMissing,
                message: r"the File History target \\nas\fh\ (remote) is not connected, so its last backup is unknown".to_owned(),
            })
        );
        let never = FileHistoryUser {
            catalog_written_unix_ms: None,
            ..anna()
        };
        let error = never.source().error.expect("unknown last backup");
        assert_eq!(error.kind, SourceErrorKind::Other);
        assert!(error.message.contains("Catalog1.edb"), "{error:?}");
        let broken = FileHistoryUser {
            profile: r"C:\Users\carl".to_owned(),
            error: Some("Cannot convert value to type System.Xml.XmlDocument.".to_owned()),
            ..FileHistoryUser::default()
        };
        let source = broken.source();
        assert_eq!(source.name, "File History (carl)");
        assert_eq!(source.error.map(|e| e.kind), Some(SourceErrorKind::Other));
        let untargeted = FileHistoryUser {
            target_url: None,
            target_name: None,
            ..anna()
        };
        assert_eq!(
            untargeted.source().error.map(|e| e.kind),
            Some(SourceErrorKind::Config)
        );
    }

    #[test]
    fn wbadmin_versions_in_utc() {
        let versions = parse_wbadmin_versions(&fixture("wbadmin-get-versions.stdout"), "");
        assert_eq!(
            versions,
            Ok(vec![
                WbadminVersion {
                    at_unix_ms: 1_705_093_200_000,
                    target: Some("Fixed Disk labeled F:".to_owned()),
                },
                WbadminVersion {
                    at_unix_ms: 1_705_266_000_000,
                    target: Some(r"Network Share labeled \\nas01\wsb".to_owned()),
                },
            ])
        );
    }

    #[test]
    fn wbadmin_without_backups_or_in_another_language() {
        assert_eq!(
            parse_wbadmin_versions(
                &fixture("wbadmin-none.stdout"),
                &fixture("wbadmin-none.stderr")
            ),
            Ok(Vec::new())
        );
        let german = "wbadmin 1.0 - Sicherungsbefehlszeilen-Tool\r\n\r\nSicherungszeit: \
                      15.01.2024 21:00\r\nVersionsbezeichner: 01/15/2024-20:00\r\n";
        let error = parse_wbadmin_versions(german, "").expect_err("not English");
        assert_eq!(
            error,
            "printed no version identifier (not English?), ending with: Versionsbezeichner: \
             01/15/2024-20:00"
        );
        let error = parse_wbadmin_versions("Version identifier: 13/45/2024-99:00\r\n", "")
            .expect_err("bad time");
        assert!(error.contains("not a time"), "{error}");
        assert!(parse_wbadmin_versions("", "").is_err());
    }

    fn server_source() -> BackupSource {
        BackupSource {
            tool: "windows_server_backup".to_owned(),
            name: "Windows Server Backup".to_owned(),
            destination: "SRV-FILES01 2023_12_01 21:00 DISK_01".to_owned(),
            last_success_unix_ms: Some(1_705_266_017_000),
            last_attempt_unix_ms: Some(1_705_266_017_000),
            last_attempt_result: Some("success".to_owned()),
            snapshot_count: Some(14),
            paths: vec![
                "C:".to_owned(),
                "D:".to_owned(),
                "system state".to_owned(),
                "bare metal recovery".to_owned(),
            ],
            scheduled: Some(true),
            ..BackupSource::default()
        }
    }

    #[tokio::test]
    async fn replay_windows_server_backup() {
        let host = Host::replay(&testdata("replay-windows-server-backup")).expect("replay loads");
        let facts = crate::checks::backup::collect(&host, &[], &mut Default::default())
            .await
            .expect("facts");
        assert_eq!(
            facts,
            BackupFacts {
                sources: vec![server_source()],
                unreadable: Vec::new(),
            }
        );
    }

    #[tokio::test]
    async fn replay_windows10_file_history() {
        let host = Host::replay(&testdata("replay-windows10-file-history")).expect("replay loads");
        let facts = crate::checks::backup::collect(&host, &[], &mut Default::default())
            .await
            .expect("facts");
        assert_eq!(
            facts,
            BackupFacts {
                sources: vec![
                    BackupSource {
                        tool: "file_history".to_owned(),
                        name: r"File History (DESKTOP-7Q2M4KD\anna)".to_owned(),
                        destination: r"E:\".to_owned(),
                        last_success_unix_ms: Some(1_705_262_593_484),
                        paths: anna().folders,
                        ..BackupSource::default()
                    },
                    BackupSource {
                        tool: "file_history".to_owned(),
                        name: r"File History (DESKTOP-7Q2M4KD\ben)".to_owned(),
                        destination: r"\\nas\fh\".to_owned(),
                        paths: vec![r"C:\Users\ben\Documents".to_owned()],
                        error: Some(SourceError {
                            kind: SourceErrorKind::RepositoryMissing,
                            message: r"the File History target \\nas\fh\ (remote) is not connected, so its last backup is unknown".to_owned(),
                        }),
                        ..BackupSource::default()
                    },
                ],
                unreadable: Vec::new(),
            }
        );
    }

    /// A recording holding only the script's command, answering as `toml` and `stdout` say.
    fn script_variant(toml_tail: &str, stdout: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let commands = dir.path().join("commands");
        std::fs::create_dir_all(&commands).expect("mkdir");
        std::fs::copy(
            testdata("replay-windows-server-backup/host.toml"),
            dir.path().join("host.toml"),
        )
        .expect("copy");
        let recorded =
            std::fs::read_to_string(testdata("replay-windows-server-backup/commands/0001.toml"))
                .expect("recording");
        let argv_end = recorded.find("\nstatus").expect("argv then status");
        std::fs::write(
            commands.join("0001.toml"),
            format!("{}\n{toml_tail}\n", &recorded[..argv_end]),
        )
        .expect("write");
        std::fs::write(commands.join("0001.stdout"), stdout).expect("write");
        dir
    }

    #[tokio::test]
    async fn replay_without_powershell_is_an_error_per_tool() {
        for (tail, kind) in [
            (r#"error = "not_found""#, SourceErrorKind::NotInstalled),
            (r#"error = "timed_out""#, SourceErrorKind::Timeout),
            ("status = 1", SourceErrorKind::Other),
        ] {
            let dir = script_variant(tail, "");
            let host = Host::replay(dir.path()).expect("replay loads");
            let facts = crate::checks::backup::collect(&host, &[], &mut Default::default())
                .await
                .expect("facts");
            let tools: Vec<(&str, Option<SourceErrorKind>)> = facts
                .sources
                .iter()
                .map(|s| (s.tool.as_str(), s.error.as_ref().map(|e| e.kind)))
                .collect();
            assert_eq!(
                tools,
                [
                    ("windows_server_backup", Some(kind)),
                    ("file_history", Some(kind))
                ],
                "{tail}"
            );
            assert!(facts.sources.iter().all(|s| s.snapshot_count.is_none()));
        }
    }

    #[tokio::test]
    async fn replay_of_failed_parts() {
        let dir = script_variant("status = 0", &fixture("report-ps5-failures.json"));
        let host = Host::replay(dir.path()).expect("replay loads");
        let facts = crate::checks::backup::collect(&host, &[], &mut Default::default())
            .await
            .expect("facts");
        let errors: Vec<(&str, String)> = facts
            .sources
            .iter()
            .map(|s| {
                (
                    s.tool.as_str(),
                    s.error
                        .as_ref()
                        .map(|e| e.message.clone())
                        .unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            errors,
            [
                (
                    "windows_server_backup",
                    "Get-WBSummary failed: The Block Level Backup Engine service is not running."
                        .to_owned()
                ),
                (
                    "file_history",
                    "listing the File History configurations failed: Access denied".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn the_replays_run_this_script() {
        for dir in [
            "replay-windows-server-backup",
            "replay-windows10-file-history",
        ] {
            let recorded = std::fs::read_to_string(testdata(dir).join("commands/0001.toml"))
                .expect("recording");
            assert!(
                recorded.contains(SCRIPT),
                "{dir}: regenerate the argv from SCRIPT"
            );
        }
        let recorded = std::fs::read_to_string(
            testdata("replay-windows10-file-history").join("commands/0002.toml"),
        )
        .expect("recording");
        assert!(recorded.contains(r#"argv = ["wbadmin", "get", "versions"]"#));
    }
}

//! Patch facts of a Windows host: one PowerShell call that asks the Windows Update Agent (COM),
//! `Get-HotFix` and the registry, and prints one JSON object.
//!
//! **Offline search.** The pending list comes from `IUpdateSearcher.Search` with
//! `Online = $false`: it searches what the last scan of the Windows Update service stored on
//! the host, without contacting Microsoft or WSUS. An online search would refresh metadata
//! (which the check never does, see `mod.rs`) and may take minutes. The last scan's time is
//! reported as `metadata_refreshed` (`LastSearchSuccessDate`). Searching never downloads or
//! installs anything. A failed search is an error outcome, never an empty list.
//!
//! **Security classification.** By the update's classification category, matched by GUID
//! because the names are localised ("Sicherheitsupdates" on a German Windows): Security Updates
//! `0fa1201d-4330-4fa8-8ae9-b877473b6441`; an update without category ids falls back to the
//! English name. An update with an MSRC severity is a security update too (Microsoft rates only
//! security bulletins), reported with source `Windows Update MSRC severity`.
//!
//! **Automatic updates.** A policy (`HKLM:\SOFTWARE\Policies\Microsoft\Windows\WindowsUpdate\AU`)
//! wins: `NoAutoUpdate = 1` turns them off; `AUOptions = 4` installs on a schedule, 2, 3 and 7
//! only notify or download; 5 lets the local administrator choose, so the local setting
//! (`NotificationLevel`) decides, as it does without a policy: 4 installs, 1 to 3 do not, and 0
//! (not configured) means the Windows 10 and later default, which installs automatically.
//!
//! This module is compiled on every OS and reached by the host's recorded OS family, so Windows
//! recordings replay (and are tested) on Linux.

use serde_json::Value;

use super::{
    AutomaticUpdates, PackageManager, PatchFacts, PendingUpdate, RebootFacts, RebootReason,
    TimeFact, run_expecting,
};
use crate::checks::CheckError;
use crate::checks::powershell::{bool_of, date_of, integer_of, items, items_of, text_of};
use crate::host::Host;

pub(super) use crate::checks::powershell::POWERSHELL;

/// Each part is asked on its own, so that one failing part (a disabled service, a locked
/// registry key) leaves the others readable and says why in `<Part>Error`. Dates are written
/// by PowerShell as ISO 8601 UTC (`ToString('o')`), so no culture-formatted date reaches the
/// parser: the Windows Update dates are UTC by the API's definition (`SpecifyKind`), a hotfix's
/// `InstalledOn` is a local date that PowerShell converts (`ToUniversalTime`).
pub(super) const SCRIPT: &str = r#"$ErrorActionPreference = 'Stop'
$r = [ordered]@{}
function Utc($d) { if ($d) { [DateTime]::SpecifyKind([DateTime]$d, 'Utc').ToString('o') } else { $null } }
$r.OsVersion = [Environment]::OSVersion.Version.ToString()
try { $r.AgentVersion = (New-Object -ComObject Microsoft.Update.AgentInfo).GetInfo('ProductVersionString') } catch { $r.AgentVersionError = "$_" }
try {
  $searcher = (New-Object -ComObject Microsoft.Update.Session).CreateUpdateSearcher()
  $searcher.Online = $false
  $found = $searcher.Search('IsInstalled=0 and IsHidden=0')
  $r.SearchResultCode = [int]$found.ResultCode
  $r.Pending = @(foreach ($u in $found.Updates) { [ordered]@{ Title = $u.Title; KBArticleIDs = @($u.KBArticleIDs); MsrcSeverity = $u.MsrcSeverity; Categories = @(foreach ($c in $u.Categories) { [ordered]@{ CategoryID = $c.CategoryID; Name = $c.Name; Type = $c.Type } }); RebootRequired = $u.RebootRequired; RebootBehavior = [int]$u.InstallationBehavior.RebootBehavior; IsDownloaded = $u.IsDownloaded } })
} catch { $r.PendingError = "$_" }
try { $r.HotFixes = @(Get-HotFix | ForEach-Object { $on = $null; try { if ($_.InstalledOn) { $on = $_.InstalledOn.ToUniversalTime().ToString('o') } } catch { }; [ordered]@{ HotFixID = $_.HotFixID; Description = $_.Description; InstalledOn = $on } }) } catch { $r.HotFixesError = "$_" }
try {
  $results = (New-Object -ComObject Microsoft.Update.AutoUpdate).Results
  $r.LastSearchSuccessDate = Utc $results.LastSearchSuccessDate
  $r.LastInstallationSuccessDate = Utc $results.LastInstallationSuccessDate
} catch { $r.AutoUpdateResultsError = "$_" }
try { $r.NotificationLevel = [int](New-Object -ComObject Microsoft.Update.AutoUpdate).Settings.NotificationLevel } catch { $r.NotificationLevelError = "$_" }
try {
  $key = 'HKLM:\SOFTWARE\Policies\Microsoft\Windows\WindowsUpdate\AU'
  if (Test-Path $key) { $p = Get-ItemProperty -Path $key; $r.Policy = [ordered]@{ NoAutoUpdate = $p.NoAutoUpdate; AUOptions = $p.AUOptions } } else { $r.Policy = $null }
} catch { $r.PolicyError = "$_" }
try {
  $r.RebootMarkers = [ordered]@{
    WindowsUpdateRebootRequired = Test-Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired'
    CbsRebootPending = Test-Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending'
    PendingFileRenameOperations = $null -ne (Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager').PendingFileRenameOperations
  }
} catch { $r.RebootMarkersError = "$_" }
try { $r.SystemRebootRequired = (New-Object -ComObject Microsoft.Update.SystemInfo).RebootRequired } catch { $r.SystemRebootRequiredError = "$_" }
[pscustomobject]$r | ConvertTo-Json -Depth 6"#;

pub(super) const ARGS: &[&str] = &["-NoProfile", "-NonInteractive", "-Command", SCRIPT];

const SECURITY_UPDATES: &str = "0fa1201d-4330-4fa8-8ae9-b877473b6441";
const WINDOWS_UPDATE_REBOOT_REQUIRED: &str =
    r"HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired";
const CBS_REBOOT_PENDING: &str =
    r"HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending";
const PENDING_FILE_RENAMES: &str =
    r"HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager PendingFileRenameOperations";

pub(super) async fn collect(host: &Host) -> Result<PatchFacts, CheckError> {
    let output = run_expecting(host, POWERSHELL, ARGS, &[0])
        .await
        .map_err(|reason| {
            CheckError::new("the Windows Update script could not run").with_source(reason)
        })?;
    let report = parse_report(&output.stdout).map_err(|reason| {
        CheckError::new("the Windows Update script printed no report").with_source(reason)
    })?;
    let pending = report.pending.clone().map_err(|reason| {
        CheckError::new("the Windows Update search failed").with_source(reason)
    })?;

    let mut facts = PatchFacts::new(vec![PackageManager {
        name: "windows_update".to_owned(),
        version: report.agent_version.as_ref().ok().cloned(),
    }]);
    if let Err(reason) = &report.agent_version {
        facts.unreadable("manager_version", reason.clone());
    }
    facts.set_reboot(report.reboot());
    facts.pending = pending;
    facts.set_time(TimeFact::LastInstall, report.last_install());
    facts.set_time(TimeFact::MetadataRefreshed, report.last_search.clone());
    facts.set_automatic_updates(report.automatic_updates());
    Ok(facts)
}

/// What the script printed, each part either read or the reason it could not be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsUpdateReport {
    pub os_version: Option<String>,
    pub agent_version: Result<String, String>,
    pub pending: Result<Vec<PendingUpdate>, String>,
    /// Titles of the pending updates that are installed and wait for a restart to finish (the
    /// API's `RebootRequired`).
    pub awaiting_restart: Vec<String>,
    pub hotfixes: Result<Vec<HotFix>, String>,
    pub last_search: Result<i64, String>,
    pub last_installation: Result<Option<i64>, String>,
    pub notification_level: Result<i64, String>,
    /// `None`: no policy key. `Some`: its `NoAutoUpdate` and `AUOptions` values, if set.
    pub policy: Result<Option<AuPolicy>, String>,
    pub reboot_markers: Result<RebootMarkers, String>,
    pub system_reboot_required: Result<bool, String>,
}

/// One `Get-HotFix` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotFix {
    pub id: String,
    pub description: Option<String>,
    /// `None` when Windows does not know (`InstalledOn` is empty on some entries).
    pub installed_on_unix_ms: Option<i64>,
}

/// The Windows Update group policy values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuPolicy {
    pub no_auto_update: Option<i64>,
    pub au_options: Option<i64>,
}

/// The pending-reboot registry markers, each present or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RebootMarkers {
    pub windows_update_reboot_required: bool,
    pub cbs_reboot_pending: bool,
    pub pending_file_rename_operations: bool,
}

/// Parses the script's JSON (see [`SCRIPT`]), tolerating what Windows PowerShell 5.1 does to
/// it: a one-element array written as the bare element, `{ "value": [...], "Count": n }` for an
/// array that went through the extended type system, dates as `/Date(ms)/`, and `null` or an
/// absent key for a value that was not set.
pub fn parse_report(text: &str) -> Result<WindowsUpdateReport, String> {
    let text = text.trim_start_matches('\u{feff}').trim();
    let root: Value = serde_json::from_str(text)
        .map_err(|error| format!("the Windows Update report is not JSON: {error}"))?;
    let root = root
        .as_object()
        .ok_or_else(|| "the Windows Update report is not a JSON object".to_owned())?;
    let part = |key: &str, what: &str| -> Result<&Value, String> {
        if let Some(message) = text_of(root.get(&format!("{key}Error"))) {
            return Err(format!("{what} failed: {message}"));
        }
        root.get(key)
            .ok_or_else(|| format!("{key} not in the Windows Update report"))
    };

    let updates: Result<Vec<(PendingUpdate, bool)>, String> =
        part("Pending", "the Windows Update search").and_then(|value| {
            if let Some(code) = root.get("SearchResultCode").and_then(integer_of)
                && code != 2
            {
                return Err(format!(
                    "the Windows Update search ended with result code {code} ({})",
                    result_code_name(code)
                ));
            }
            items(value).into_iter().map(parse_update).collect()
        });
    let awaiting_restart = updates
        .as_ref()
        .map(|updates| {
            updates
                .iter()
                .filter(|(_, awaiting)| *awaiting)
                .map(|(update, _)| update.name.clone())
                .collect()
        })
        .unwrap_or_default();
    let pending = updates.map(|updates| updates.into_iter().map(|(update, _)| update).collect());
    let hotfixes = part("HotFixes", "Get-HotFix")
        .map(|value| items(value).into_iter().filter_map(parse_hotfix).collect());
    let results = |key: &str| {
        part(key, "reading Microsoft.Update.AutoUpdate results").and_then(|value| match value {
            Value::Null => Ok(None),
            value => date_of(value)
                .map(Some)
                .ok_or_else(|| format!("{key} is not a date: {value}")),
        })
    };
    let last_search = results("LastSearchSuccessDate").and_then(|date| {
        date.ok_or_else(|| "Windows Update has no successful search on record".to_owned())
    });
    let last_installation = results("LastInstallationSuccessDate");
    let notification_level = part(
        "NotificationLevel",
        "reading Microsoft.Update.AutoUpdate settings",
    )
    .and_then(|value| {
        integer_of(value).ok_or_else(|| format!("NotificationLevel is not a number: {value}"))
    });
    let policy = part("Policy", "reading the Windows Update policy").map(|value| match value {
        Value::Object(policy) => Some(AuPolicy {
            no_auto_update: policy.get("NoAutoUpdate").and_then(integer_of),
            au_options: policy.get("AUOptions").and_then(integer_of),
        }),
        _ => None,
    });
    let reboot_markers = part("RebootMarkers", "reading the pending-reboot registry keys")
        .and_then(|value| {
            let markers = value
                .as_object()
                .ok_or_else(|| format!("RebootMarkers is not an object: {value}"))?;
            let flag = |key: &str| {
                markers
                    .get(key)
                    .and_then(bool_of)
                    .ok_or_else(|| format!("RebootMarkers.{key} is not true or false"))
            };
            Ok(RebootMarkers {
                windows_update_reboot_required: flag("WindowsUpdateRebootRequired")?,
                cbs_reboot_pending: flag("CbsRebootPending")?,
                pending_file_rename_operations: flag("PendingFileRenameOperations")?,
            })
        });
    let system_reboot_required = part(
        "SystemRebootRequired",
        "reading Microsoft.Update.SystemInfo",
    )
    .and_then(|value| {
        bool_of(value).ok_or_else(|| format!("SystemRebootRequired is not true or false: {value}"))
    });
    Ok(WindowsUpdateReport {
        os_version: text_of(root.get("OsVersion")),
        agent_version: part("AgentVersion", "reading the Windows Update Agent version").and_then(
            |value| text_of(Some(value)).ok_or_else(|| format!("AgentVersion is empty: {value}")),
        ),
        pending,
        awaiting_restart,
        hotfixes,
        last_search,
        last_installation,
        notification_level,
        policy,
        reboot_markers,
        system_reboot_required,
    })
}

impl WindowsUpdateReport {
    /// The newer of Windows Update's last successful installation and the newest hotfix.
    /// `Get-HotFix` knows only the day (local midnight), so a hotfix-based time may be up to a
    /// day early.
    pub fn last_install(&self) -> Result<i64, String> {
        let from_hotfixes = self.hotfixes.as_ref().map(|hotfixes| {
            hotfixes
                .iter()
                .filter_map(|hotfix| hotfix.installed_on_unix_ms)
                .max()
        });
        let newest = [
            self.last_installation.clone().ok().flatten(),
            from_hotfixes.ok().flatten(),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(newest) = newest {
            return Ok(newest);
        }
        let mut reasons = Vec::new();
        match &self.last_installation {
            Ok(None) => reasons.push("Windows Update has no installation on record".to_owned()),
            Ok(Some(_)) => {}
            Err(reason) => reasons.push(reason.clone()),
        }
        match from_hotfixes {
            Ok(_) => reasons.push("no hotfix with an installation date".to_owned()),
            Err(reason) => reasons.push(reason.clone()),
        }
        Err(reasons.join("; "))
    }

    /// The rule of the module comment.
    pub fn automatic_updates(&self) -> Result<AutomaticUpdates, String> {
        let policy = self.policy.clone()?;
        let mut settings = Vec::new();
        let decided = match policy {
            None => {
                settings.push("no Windows Update policy".to_owned());
                None
            }
            Some(policy) => {
                if let Some(value) = policy.no_auto_update {
                    settings.push(format!("NoAutoUpdate = {value} (policy)"));
                }
                if let Some(value) = policy.au_options {
                    settings.push(format!("AUOptions = {value} (policy)"));
                }
                match (policy.no_auto_update, policy.au_options) {
                    (Some(1), _) => Some(false),
                    (_, Some(4)) => Some(true),
                    (_, Some(2 | 3 | 7)) => Some(false),
                    _ => None,
                }
            }
        };
        let install_enabled = match decided {
            Some(decided) => decided,
            None => {
                let level = self.notification_level.clone()?;
                settings.push(format!(
                    "NotificationLevel = {level} ({})",
                    notification_level_name(level)
                ));
                match level {
                    4 => true,
                    0 => {
                        let windows_10_or_later = self
                            .os_version
                            .as_deref()
                            .and_then(|v| v.split('.').next())
                            .and_then(|major| major.parse::<u32>().ok())
                            .is_some_and(|major| major >= 10);
                        if windows_10_or_later {
                            settings.push(
                                "not configured: Windows 10 and later install updates automatically"
                                    .to_owned(),
                            );
                        }
                        windows_10_or_later
                    }
                    _ => false,
                }
            }
        };
        Ok(AutomaticUpdates {
            mechanism: "windows_update".to_owned(),
            install_enabled,
            settings,
        })
    }

    /// Registry markers (source `registry`) and what the Windows Update Agent says: updates
    /// already installed that need a restart (source `update`). Without the registry markers,
    /// "no restart needed" cannot be said; a reason found elsewhere still counts.
    pub fn reboot(&self) -> Result<RebootFacts, String> {
        let mut reasons = Vec::new();
        if let Ok(markers) = &self.reboot_markers {
            for (present, detail) in [
                (
                    markers.windows_update_reboot_required,
                    WINDOWS_UPDATE_REBOOT_REQUIRED,
                ),
                (markers.cbs_reboot_pending, CBS_REBOOT_PENDING),
                (markers.pending_file_rename_operations, PENDING_FILE_RENAMES),
            ] {
                if present {
                    reasons.push(RebootReason {
                        source: "registry".to_owned(),
                        detail: detail.to_owned(),
                    });
                }
            }
        }
        if let Ok(true) = self.system_reboot_required {
            reasons.push(RebootReason {
                source: "update".to_owned(),
                detail: "Microsoft.Update.SystemInfo: RebootRequired".to_owned(),
            });
        }
        reasons.extend(self.awaiting_restart.iter().map(|title| RebootReason {
            source: "update".to_owned(),
            detail: format!("{title} is installed and waits for a restart"),
        }));
        match &self.reboot_markers {
            Err(reason) if reasons.is_empty() => Err(reason.clone()),
            _ => Ok(RebootFacts::from_reasons(reasons, None)),
        }
    }
}

/// One update of the search result, and whether it is installed and waits for a restart.
///
/// `restart_required`: `RebootRequired` (installed, restart pending) or `RebootBehavior` 1
/// (always requires a restart) is `Some(true)`; `RebootBehavior` 0 (never) is `Some(false)`;
/// 2 (can request one) is `None`, as the source does not know until it installs.
fn parse_update(value: &Value) -> Result<(PendingUpdate, bool), String> {
    let update = value
        .as_object()
        .ok_or_else(|| format!("a pending update is not an object: {value}"))?;
    let name = text_of(update.get("Title"))
        .ok_or_else(|| format!("a pending update has no Title: {value}"))?;
    let advisories = items_of(update.get("KBArticleIDs"))
        .into_iter()
        .filter_map(|id| text_of(Some(id)))
        .map(|id| {
            if id.to_ascii_uppercase().starts_with("KB") {
                id
            } else {
                format!("KB{id}")
            }
        })
        .collect();
    let severity = text_of(update.get("MsrcSeverity"));
    let categories = items_of(update.get("Categories"));
    let by_id = categories
        .iter()
        .filter_map(|category| text_of(category.get("CategoryID")))
        .any(|id| id.eq_ignore_ascii_case(SECURITY_UPDATES));
    let has_ids = categories
        .iter()
        .any(|category| text_of(category.get("CategoryID")).is_some());
    let by_name = !has_ids
        && categories
            .iter()
            .filter_map(|category| text_of(category.get("Name")))
            .any(|name| name == "Security Updates");
    let (security, classification_source) = if by_id || by_name {
        (true, "Windows Update category")
    } else if severity.is_some() {
        (true, "Windows Update MSRC severity")
    } else {
        (false, "Windows Update category")
    };
    let awaiting_restart = update.get("RebootRequired").and_then(bool_of) == Some(true);
    let restart_required = if awaiting_restart {
        Some(true)
    } else {
        match update.get("RebootBehavior").and_then(integer_of) {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        }
    };
    Ok((
        PendingUpdate {
            name,
            security,
            classification_source: classification_source.to_owned(),
            advisories,
            severity,
            restart_required,
            ..PendingUpdate::default()
        },
        awaiting_restart,
    ))
}

fn parse_hotfix(value: &Value) -> Option<HotFix> {
    let id = text_of(value.get("HotFixID"))?;
    Some(HotFix {
        id,
        description: text_of(value.get("Description")),
        installed_on_unix_ms: value.get("InstalledOn").and_then(date_of),
    })
}

/// `OperationResultCode` names, for messages.
fn result_code_name(code: i64) -> &'static str {
    match code {
        0 => "not started",
        1 => "in progress",
        2 => "succeeded",
        3 => "succeeded with errors",
        4 => "failed",
        5 => "aborted",
        _ => "unknown",
    }
}

/// `AutomaticUpdatesNotificationLevel` names.
fn notification_level_name(level: i64) -> &'static str {
    match level {
        0 => "not configured",
        1 => "disabled",
        2 => "notify before download",
        3 => "notify before installation",
        4 => "scheduled installation",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/checks/patch/testdata")
            .join(name)
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(testdata("windows").join(name)).expect("fixture exists")
    }

    fn update(
        name: &str,
        kb: &str,
        security: bool,
        severity: Option<&str>,
        restart: Option<bool>,
    ) -> PendingUpdate {
        PendingUpdate {
            name: name.to_owned(),
            security,
            classification_source: "Windows Update category".to_owned(),
            advisories: vec![kb.to_owned()],
            severity: severity.map(str::to_owned),
            restart_required: restart,
            ..PendingUpdate::default()
        }
    }

    fn windows11_pending() -> Vec<PendingUpdate> {
        vec![
            update(
                "2024-01 Cumulative Update for Windows 11 Version 23H2 for x64-based Systems \
                 (KB5034123)",
                "KB5034123",
                true,
                Some("Important"),
                None,
            ),
            update(
                "Security Intelligence Update for Microsoft Defender Antivirus - KB2267602 \
                 (Version 1.403.1209.0)",
                "KB2267602",
                false,
                None,
                Some(false),
            ),
            update(
                "2024-01 Cumulative Update for .NET Framework 3.5 and 4.8.1 for Windows 11, \
                 version 23H2 for x64 (KB5033920)",
                "KB5033920",
                true,
                Some("Important"),
                Some(true),
            ),
            update(
                "Windows Malicious Software Removal Tool x64 - v5.120 (KB890830)",
                "KB890830",
                false,
                None,
                Some(false),
            ),
        ]
    }

    fn windows11_reboot() -> RebootFacts {
        let reason = |source: &str, detail: &str| RebootReason {
            source: source.to_owned(),
            detail: detail.to_owned(),
        };
        RebootFacts {
            required: Some(true),
            reasons: vec![
                reason("registry", WINDOWS_UPDATE_REBOOT_REQUIRED),
                reason("registry", PENDING_FILE_RENAMES),
                reason("update", "Microsoft.Update.SystemInfo: RebootRequired"),
                reason(
                    "update",
                    "2024-01 Cumulative Update for .NET Framework 3.5 and 4.8.1 for Windows 11, \
                     version 23H2 for x64 (KB5033920) is installed and waits for a restart",
                ),
            ],
            since_unix_ms: None,
        }
    }

    #[test]
    fn powershell_5_report_with_pending_updates() {
        let report = parse_report(&fixture("report-ps5-pending.json")).expect("parses");
        assert_eq!(report.pending, Ok(windows11_pending()));
        assert_eq!(report.agent_version.as_deref(), Ok("1123.2311.28012.0"));
        assert_eq!(report.last_search, Ok(1_705_300_937_000));
        assert_eq!(report.last_installation, Ok(Some(1_702_459_265_000)));
        assert_eq!(report.last_install(), Ok(1_702_459_265_000));
        assert_eq!(
            report.hotfixes.as_ref().map(|h| h[1].clone()),
            Ok(HotFix {
                id: "KB5027397".to_owned(),
                description: Some("Update".to_owned()),
                installed_on_unix_ms: None,
            })
        );
        assert_eq!(report.reboot(), Ok(windows11_reboot()));
        assert_eq!(
            report.automatic_updates(),
            Ok(AutomaticUpdates {
                mechanism: "windows_update".to_owned(),
                install_enabled: false,
                settings: vec![
                    "NoAutoUpdate = 0 (policy)".to_owned(),
                    "AUOptions = 3 (policy)".to_owned(),
                ],
            })
        );
    }

    #[test]
    fn a_bare_single_update_with_german_categories_and_ps5_dates() {
        let report = parse_report(&fixture("report-ps5-single-de.json")).expect("parses");
        assert_eq!(
            report.pending,
            Ok(vec![update(
                "2024-01 Kumulatives Update für Windows 10 Version 22H2 für x64-basierte Systeme \
                 (KB5034122)",
                "KB5034122",
                true,
                Some("Important"),
                Some(true),
            )])
        );
        assert_eq!(report.last_search, Ok(1_705_300_937_000));
        assert_eq!(report.last_installation, Ok(None));
        // Only the hotfix knows, and only the day.
        assert_eq!(report.last_install(), Ok(1_702_422_000_000));
        assert_eq!(
            report.reboot(),
            Ok(RebootFacts {
                required: Some(true),
                reasons: vec![RebootReason {
                    source: "registry".to_owned(),
                    detail: CBS_REBOOT_PENDING.to_owned(),
                }],
                since_unix_ms: None,
            })
        );
        let automatic = report.automatic_updates().expect("readable");
        assert!(automatic.install_enabled);
        assert_eq!(
            automatic.settings,
            vec![
                "no Windows Update policy",
                "NotificationLevel = 4 (scheduled installation)"
            ]
        );
    }

    #[test]
    fn powershell_7_report_with_nothing_pending() {
        let report = parse_report(&fixture("report-ps7-none.json")).expect("parses");
        assert_eq!(report.pending, Ok(Vec::new()));
        assert_eq!(report.last_install(), Ok(1_704_874_364_000));
        assert_eq!(
            report.reboot(),
            Ok(RebootFacts {
                required: Some(false),
                reasons: Vec::new(),
                since_unix_ms: None,
            })
        );
        let automatic = report.automatic_updates().expect("readable");
        assert!(automatic.install_enabled);
        assert_eq!(
            automatic.settings,
            vec![
                "no Windows Update policy",
                "NotificationLevel = 0 (not configured)",
                "not configured: Windows 10 and later install updates automatically",
            ]
        );
    }

    #[test]
    fn a_failed_search_is_kept_with_its_reason() {
        let report = parse_report(&fixture("report-ps5-search-failed.json")).expect("parses");
        assert_eq!(
            report.pending,
            Err(
                "the Windows Update search failed: Exception calling \"Search\" with \"1\" \
                 argument(s): \"Exception from HRESULT: 0x80070422\""
                    .to_owned()
            )
        );
        assert_eq!(
            report.reboot(),
            Err(
                "reading the pending-reboot registry keys failed: Requested registry access is \
                 not allowed."
                    .to_owned()
            )
        );
        assert_eq!(
            report.last_search,
            Err("Windows Update has no successful search on record".to_owned())
        );
        let automatic = report.automatic_updates().expect("the policy decides");
        assert!(!automatic.install_enabled);
        assert_eq!(automatic.settings, vec!["NoAutoUpdate = 1 (policy)"]);
    }

    #[test]
    fn unsuccessful_search_result_codes_are_errors() {
        let report = parse_report(r#"{"SearchResultCode": 4, "Pending": []}"#).expect("parses");
        assert_eq!(
            report.pending,
            Err("the Windows Update search ended with result code 4 (failed)".to_owned())
        );
        let report = parse_report(r#"{"OsVersion": "10.0.22631.0"}"#).expect("parses");
        assert_eq!(
            report.pending,
            Err("Pending not in the Windows Update report".to_owned())
        );
    }

    #[test]
    fn wrapped_arrays_and_odd_values() {
        let report = parse_report(
            r#"{"SearchResultCode": 2, "Pending": {"value": [{"Title": "A", "KBArticleIDs": {"value": ["1", "KB2"], "Count": 2}, "MsrcSeverity": "", "Categories": {"Name": "Security Updates"}, "RebootRequired": "False", "RebootBehavior": 2}], "Count": 1}}"#,
        )
        .expect("parses");
        assert_eq!(
            report.pending,
            Ok(vec![PendingUpdate {
                name: "A".to_owned(),
                security: true,
                classification_source: "Windows Update category".to_owned(),
                advisories: vec!["KB1".to_owned(), "KB2".to_owned()],
                ..PendingUpdate::default()
            }])
        );
        let report = parse_report(
            r#"{"Pending": [{"Title": "B", "MsrcSeverity": "Critical", "Categories": [{"CategoryID": "e6cf1350-c01b-414d-a61f-263d14d133b4", "Name": "Security Updates"}]}]}"#,
        )
        .expect("parses");
        let pending = report.pending.expect("pending");
        assert!(pending[0].security, "MSRC severity set");
        assert_eq!(
            pending[0].classification_source,
            "Windows Update MSRC severity"
        );
        assert!(
            parse_report(r#"{"Pending": [{"KBArticleIDs": []}]}"#)
                .expect("parses")
                .pending
                .is_err()
        );
    }

    #[test]
    fn not_json_is_a_reason() {
        let error =
            parse_report("powershell.exe : The term is not recognized\r\n").expect_err("not json");
        assert!(error.contains("not JSON"), "{error}");
        assert!(parse_report("[]").is_err());
        assert!(parse_report("").is_err());
    }

    #[test]
    fn dates() {
        let date = |s: &str| date_of(&Value::String(s.to_owned()));
        assert_eq!(date("/Date(1705300937000)/"), Some(1_705_300_937_000));
        assert_eq!(date("/Date(1705300937000+0100)/"), Some(1_705_300_937_000));
        assert_eq!(
            date("2024-01-15T06:42:17.0000000Z"),
            Some(1_705_300_937_000)
        );
        assert_eq!(date("2024-01-15T07:42:17.5+01:00"), Some(1_705_300_937_500));
        assert_eq!(date("2024-01-15T06:42:17"), None);
        assert_eq!(date("15.01.2024 06:42:17"), None);
        assert_eq!(date("/Date(x)/"), None);
        assert_eq!(
            date_of(&serde_json::json!({"value": "/Date(5)/", "DisplayHint": 2})),
            Some(5)
        );
    }

    #[tokio::test]
    async fn replay_windows11() {
        let host = Host::replay(&testdata("replay-windows11")).expect("replay loads");
        let facts = crate::checks::patch::collect(&host).await.expect("facts");
        assert_eq!(
            facts,
            PatchFacts {
                managers: vec![PackageManager {
                    name: "windows_update".to_owned(),
                    version: Some("1123.2311.28012.0".to_owned()),
                }],
                pending: windows11_pending(),
                last_install_unix_ms: Some(1_702_459_265_000),
                metadata_refreshed_unix_ms: Some(1_705_300_937_000),
                automatic_updates: Some(AutomaticUpdates {
                    mechanism: "windows_update".to_owned(),
                    install_enabled: false,
                    settings: vec![
                        "NoAutoUpdate = 0 (policy)".to_owned(),
                        "AUOptions = 3 (policy)".to_owned(),
                    ],
                }),
                reboot: windows11_reboot(),
                unreadable: Vec::new(),
            }
        );
        assert_eq!(facts.pending_security_count(), 2);
    }

    #[tokio::test]
    async fn replay_of_a_failed_search_is_an_error_outcome() {
        let dir = tempfile::tempdir().expect("temp dir");
        let commands = dir.path().join("commands");
        std::fs::create_dir_all(&commands).expect("mkdir");
        std::fs::copy(
            testdata("replay-windows11/host.toml"),
            dir.path().join("host.toml"),
        )
        .expect("copy");
        std::fs::copy(
            testdata("replay-windows11/commands/0001.toml"),
            commands.join("0001.toml"),
        )
        .expect("copy");
        std::fs::write(
            commands.join("0001.stdout"),
            fixture("report-ps5-search-failed.json"),
        )
        .expect("write");
        let host = Host::replay(dir.path()).expect("replay loads");
        let error = crate::checks::patch::collect(&host)
            .await
            .expect_err("no pending list, no facts");
        assert_eq!(error.reason, "the Windows Update search failed");
        assert!(
            error
                .source
                .as_deref()
                .is_some_and(|s| s.contains("0x80070422")),
            "{error}"
        );
    }

    #[test]
    fn the_replay_runs_this_script() {
        let recorded = std::fs::read_to_string(testdata("replay-windows11/commands/0001.toml"))
            .expect("recording");
        assert!(
            recorded.contains(SCRIPT),
            "regenerate the replay's argv from SCRIPT"
        );
    }
}

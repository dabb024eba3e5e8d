//! Patch facts of a macOS host: `softwareupdate --list --no-scan`, the install history and the
//! Software Update preferences.
//!
//! **No scan.** `softwareupdate --list` without `--no-scan` contacts Apple and refreshes the
//! update catalog; the check never refreshes metadata (see the module invariant in `mod.rs`), so
//! it lists what the last scan found (the one macOS itself runs in the background, about daily)
//! and reports that scan's time as `metadata_refreshed`. `--no-scan` is documented by
//! `softwareupdate --help` on every release this agent supports (10.13 and later).
//!
//! **Security classification.** Apple does not classify updates. An update counts as security
//! only when its title or label says so: it contains `Security` (Security Update 2024-001,
//! Rapid Security Response, Background Security Improvement), names XProtect or MRT (malware
//! definitions), or is a Rapid Security Response, whose title Apple writes as a version with a
//! letter suffix (`macOS Ventura 13.4.1 (a)`). A macOS point release usually fixes security
//! bugs too, but its title does not say so and neither does this check: the source is reported
//! as `softwareupdate title` so that a reviewer can judge.
//!
//! **Reboot.** macOS has no general "restart pending" marker (nothing like Windows'
//! `RebootPending` key or Debian's `/var/run/reboot-required`): updates install while
//! restarting. What the check can see is a pending update whose installation needs a restart
//! (`[restart]`, `Action: restart`) or a shutdown (`[shut down]`, firmware); each is a reason.
//!
//! This module is compiled on every OS and reached by the host's recorded OS family, so macOS
//! recordings replay (and are tested) on Linux.

use std::io::Cursor;
use std::time::{SystemTime, UNIX_EPOCH};

use plist::{Dictionary, Value};

use super::{
    AutomaticUpdates, PackageManager, PatchFacts, PendingUpdate, RebootFacts, RebootReason,
    TimeFact, first_lines, run_expecting,
};
use crate::checks::CheckError;
use crate::host::{Host, HostError, display_argv};

const SOFTWAREUPDATE: &str = "softwareupdate";
const LIST_ARGS: &[&str] = &["--list", "--no-scan"];
const INSTALL_HISTORY: &str = "/Library/Receipts/InstallHistory.plist";
const PREFERENCES: &str = "/Library/Preferences/com.apple.SoftwareUpdate.plist";
const MANAGED_PREFERENCES: &str = "/Library/Managed Preferences/com.apple.SoftwareUpdate.plist";
const CLASSIFICATION_SOURCE: &str = "softwareupdate title";

pub(super) async fn collect(host: &Host) -> Result<PatchFacts, CheckError> {
    let argv = display_argv(SOFTWAREUPDATE, LIST_ARGS);
    let output = host.run(SOFTWAREUPDATE, LIST_ARGS).await.map_err(|error| {
        CheckError::new(format!("could not list software updates with `{argv}`"))
            .with_source(error.to_string())
    })?;
    let pending = parse_softwareupdate_list(output.status, &output.stdout, &output.stderr)
        .map_err(|reason| {
            CheckError::new(format!("`{argv}` gave no list of updates")).with_source(reason)
        })?;

    let version = run_expecting(host, "sw_vers", &["-productVersion"], &[0])
        .await
        .and_then(|output| parse_product_version(&output.stdout));
    let mut facts = PatchFacts::new(vec![PackageManager {
        name: "softwareupdate".to_owned(),
        version: version.as_ref().ok().cloned(),
    }]);
    if let Err(reason) = version {
        facts.unreadable("manager_version", reason);
    }

    facts.set_reboot(Ok(reboot_from_pending(&pending)));
    facts.pending = pending;

    let last_install = match host.read_bytes(INSTALL_HISTORY).await {
        Ok(bytes) => parse_install_history(&bytes),
        Err(error) => Err(error.to_string()),
    };
    facts.set_time(TimeFact::LastInstall, last_install);

    match read_preferences(host).await {
        Ok(prefs) => {
            facts.set_time(
                TimeFact::MetadataRefreshed,
                prefs.last_successful_scan_unix_ms.ok_or_else(|| {
                    format!(
                        "neither LastSuccessfulDate nor LastFullSuccessfulDate in {PREFERENCES}"
                    )
                }),
            );
            facts.set_automatic_updates(Ok(prefs.automatic_updates()));
        }
        Err(reason) => {
            facts.set_time(TimeFact::MetadataRefreshed, Err(reason.clone()));
            facts.set_automatic_updates(Err(reason));
        }
    }
    Ok(facts)
}

/// Reads the system preferences and, when present, the managed (MDM) preferences that override
/// them key by key. Missing system preferences are normal on a Mac that never changed a setting
/// and never scanned; an unreadable file is not.
async fn read_preferences(host: &Host) -> Result<SoftwareUpdatePrefs, String> {
    let local = match host.read_bytes(PREFERENCES).await {
        Ok(bytes) => Some(bytes),
        Err(HostError::FileNotFound { .. }) => None,
        Err(error) => return Err(error.to_string()),
    };
    let managed = match host.read_bytes(MANAGED_PREFERENCES).await {
        Ok(bytes) => Some(bytes),
        Err(HostError::FileNotFound { .. }) => None,
        Err(error) => return Err(error.to_string()),
    };
    if local.is_none() && managed.is_none() {
        return Err(format!("file not found: {PREFERENCES}"));
    }
    parse_preferences(local.as_deref(), managed.as_deref())
}

/// The version from `sw_vers -productVersion`: `14.2.1`.
pub fn parse_product_version(stdout: &str) -> Result<String, String> {
    let version = stdout.trim();
    if version.is_empty() {
        Err("`sw_vers -productVersion` printed nothing".to_owned())
    } else {
        Ok(version.to_owned())
    }
}

/// Parses what `softwareupdate --list` printed, in either format:
///
/// - macOS 10.14 and earlier: `   * Label` then `\tTitle (Version), 12345K [recommended]
///   [restart]`;
/// - macOS 10.15 and later: `* Label: Label` then `\tTitle: Title, Version: 14.2.1, Size:
///   1234567KiB, Recommended: YES, Action: restart,`.
///
/// An entry starts with `*` (recommended) or `-` (not recommended). "No new software
/// available." (printed to stderr) is an empty list; anything else without entries, such as
/// "Can't connect to the Apple Software Update server", is the reason there is no list.
pub fn parse_softwareupdate_list(
    status: Option<i32>,
    stdout: &str,
    stderr: &str,
) -> Result<Vec<PendingUpdate>, String> {
    let pending = parse_entries(stdout);
    if !pending.is_empty() {
        return Ok(pending);
    }
    let said_found = stdout
        .lines()
        .chain(stderr.lines())
        .any(|line| line.contains("Software Update found the following"));
    let said_none = stdout
        .lines()
        .chain(stderr.lines())
        .any(|line| line.trim() == "No new software available.");
    if said_found {
        return Err(format!(
            "updates were announced but none could be read from: {}",
            first_lines(stdout.trim(), 5)
        ));
    }
    if said_none && status == Some(0) {
        return Ok(Vec::new());
    }
    // The banner ("Software Update Tool", "Finding available software") says nothing.
    let message: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && *line != "Software Update Tool"
                && *line != "Finding available software"
        })
        .collect();
    let status = status.map_or_else(|| "a signal".to_owned(), |code| format!("status {code}"));
    if message.is_empty() {
        Err(format!("exited with {status} and printed no list"))
    } else {
        Err(format!(
            "exited with {status}: {}",
            first_lines(&message.join("\n"), 5)
        ))
    }
}

fn parse_entries(stdout: &str) -> Vec<PendingUpdate> {
    let mut pending: Vec<PendingUpdate> = Vec::new();
    let mut awaiting_detail = false;
    for line in stdout.lines() {
        let trimmed = line.trim();
        let entry = trimmed
            .strip_prefix("* ")
            .or_else(|| trimmed.strip_prefix("- "));
        if let Some(rest) = entry {
            let (label, fields) = match rest.strip_prefix("Label:") {
                Some(rest) => split_fields(&format!("Label:{rest}")),
                None => (rest.trim().to_owned(), Vec::new()),
            };
            let label = if label.is_empty() {
                rest.trim().to_owned()
            } else {
                label
            };
            let mut update = PendingUpdate {
                security: is_security_title("", &label),
                name: label,
                classification_source: CLASSIFICATION_SOURCE.to_owned(),
                ..PendingUpdate::default()
            };
            let has_title = fields.iter().any(|(key, _)| key == "Title");
            apply_new_format(&mut update, &fields);
            pending.push(update);
            awaiting_detail = !has_title;
            continue;
        }
        if !awaiting_detail || trimmed.is_empty() {
            continue;
        }
        let starts_indented = line.starts_with([' ', '\t']);
        let Some(update) = pending.last_mut() else {
            continue;
        };
        if !starts_indented {
            awaiting_detail = false;
            continue;
        }
        if trimmed.starts_with("Title:") {
            let (_, fields) = split_fields(trimmed);
            apply_new_format(update, &fields);
        } else {
            apply_old_format(update, trimmed);
        }
        awaiting_detail = false;
    }
    pending
}

/// The fields a new-format line carries.
const FIELD_KEYS: &[&str] = &["Label", "Title", "Version", "Size", "Recommended", "Action"];

/// Splits `Title: Command Line Tools for Xcode, Version: 15.1, Size: 1K, Action: restart,` into
/// its fields. A comma not followed by a known key belongs to the value (titles may contain
/// commas). Returns the `Label` value (empty if none) and all fields.
fn split_fields(line: &str) -> (String, Vec<(String, String)>) {
    let mut fields: Vec<(String, String)> = Vec::new();
    for segment in line.split(',') {
        let trimmed = segment.trim();
        let known = trimmed
            .split_once(':')
            .filter(|(key, _)| FIELD_KEYS.contains(key));
        match (known, fields.last_mut()) {
            (Some((key, value)), _) => fields.push((key.to_owned(), value.trim().to_owned())),
            (None, Some((_, value))) if !trimmed.is_empty() => {
                value.push(',');
                value.push_str(segment.trim_end());
            }
            _ => {}
        }
    }
    let label = fields
        .iter()
        .find(|(key, _)| key == "Label")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    (label, fields)
}

fn apply_new_format(update: &mut PendingUpdate, fields: &[(String, String)]) {
    let mut title = None;
    for (key, value) in fields {
        match key.as_str() {
            "Title" => title = Some(value.clone()),
            "Version" if !value.is_empty() => update.available_version = Some(value.clone()),
            _ => {}
        }
    }
    let Some(title) = title else {
        return;
    };
    // The new format names an action only when there is one.
    let action = fields
        .iter()
        .find(|(key, _)| key == "Action")
        .map(|(_, value)| value.to_ascii_lowercase());
    update.restart_required = Some(matches!(
        action.as_deref(),
        Some("restart" | "shut down" | "shutdown")
    ));
    update.security = is_security_title(&title, &update.name);
}

/// `Title (Version), 12345K [recommended] [restart]`; the version may be empty (`( )`) and old
/// releases wrote `Title, Version, 12345K`.
fn apply_old_format(update: &mut PendingUpdate, line: &str) {
    let flags_at = line.find(" [").unwrap_or(line.len());
    let (main, flags) = line.split_at(flags_at);
    update.restart_required = Some(flags.contains("[restart]") || flags.contains("[shut down]"));
    // Drop the size, the last comma-separated part.
    let main = main.trim().trim_end_matches(',');
    let without_size = match main.rsplit_once(',') {
        Some((head, size)) if size.trim().ends_with('K') => head.trim(),
        _ => main,
    };
    let (title, version) = match without_size
        .strip_suffix(')')
        .and_then(|head| head.rsplit_once('('))
    {
        Some((title, version)) => (title.trim().trim_end_matches(',').trim(), version.trim()),
        None => match without_size.rsplit_once(',') {
            Some((title, version)) => (title.trim(), version.trim()),
            None => (without_size, ""),
        },
    };
    if !version.is_empty() {
        update.available_version = Some(version.to_owned());
    }
    update.security = is_security_title(title, &update.name);
}

/// The rule of the module comment: the title or label says Security, XProtect or MRT, or the
/// title is a Rapid Security Response (a version with a letter suffix, `13.4.1 (a)`).
fn is_security_title(title: &str, label: &str) -> bool {
    let says = |text: &str| {
        text.to_ascii_lowercase().contains("security")
            || text
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|word| word.starts_with("XProtect") || word.starts_with("MRT"))
    };
    let rapid_security_response = title
        .trim()
        .strip_suffix(')')
        .and_then(|head| head.rsplit_once('('))
        .is_some_and(|(head, suffix)| {
            head.ends_with(' ')
                && head.trim_end().ends_with(|c: char| c.is_ascii_digit())
                && suffix.len() == 1
                && suffix.chars().all(|c| c.is_ascii_lowercase())
        });
    says(title) || says(label) || rapid_security_response
}

/// Every pending update whose installation needs a restart (or a shutdown) is a reason.
fn reboot_from_pending(pending: &[PendingUpdate]) -> RebootFacts {
    let reasons = pending
        .iter()
        .filter(|update| update.restart_required == Some(true))
        .map(|update| RebootReason {
            source: "update".to_owned(),
            detail: format!("{} needs a restart to install", update.name),
        })
        .collect();
    RebootFacts::from_reasons(reasons, None)
}

/// Who installs what `InstallHistory.plist` records as an Apple software update:
/// `softwareupdated` (10.14 and later), `Software Update` (earlier releases) and
/// `macOS Installer` (a full upgrade).
const UPDATE_PROCESSES: &[&str] = &["softwareupdated", "Software Update", "macOS Installer"];

/// The time of the newest update in `/Library/Receipts/InstallHistory.plist` installed by
/// Software Update or the macOS installer. Entries with `contentType` `config-data` (XProtect,
/// Gatekeeper and MRT data, refreshed by themselves almost daily) do not count: they would make
/// a Mac that has not installed an OS update for months look freshly patched.
pub fn parse_install_history(bytes: &[u8]) -> Result<i64, String> {
    let value = Value::from_reader(Cursor::new(bytes))
        .map_err(|error| format!("{INSTALL_HISTORY} is not a property list: {error}"))?;
    let entries = value
        .as_array()
        .ok_or_else(|| format!("{INSTALL_HISTORY} is not an array"))?;
    entries
        .iter()
        .filter_map(Value::as_dictionary)
        .filter(|entry| {
            let process = entry.get("processName").and_then(Value::as_string);
            let content = entry.get("contentType").and_then(Value::as_string);
            process.is_some_and(|p| UPDATE_PROCESSES.contains(&p)) && content != Some("config-data")
        })
        .filter_map(|entry| entry.get("date").and_then(Value::as_date))
        .map(|date| unix_ms(date.into()))
        .max()
        .ok_or_else(|| format!("no update installed by Software Update in {INSTALL_HISTORY}"))
}

fn unix_ms(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// The Software Update settings that decide automatic installation, each with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftwareUpdatePrefs {
    /// The last successful catalog scan: `LastSuccessfulDate`, else `LastFullSuccessfulDate`.
    pub last_successful_scan_unix_ms: Option<i64>,
    pub automatic_check: Setting,
    pub automatic_download: Setting,
    pub install_macos_updates: Setting,
    pub critical_update_install: Setting,
    pub config_data_install: Setting,
}

/// One boolean preference: its value, and whether a configuration profile (MDM) set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub value: Option<bool>,
    pub managed: bool,
}

impl SoftwareUpdatePrefs {
    /// `install_enabled` is `AutomaticallyInstallMacOSUpdates`: macOS updates (point releases
    /// and the security fixes they carry) install without a person. `CriticalUpdateInstall`
    /// alone installs only Rapid Security Responses and system data files, so it is listed but
    /// does not count. With `AutomaticCheckEnabled` off nothing is found, so nothing installs.
    /// An absent key is listed as `not set` and counts as off: the check does not guess Apple's
    /// defaults, which changed between releases.
    pub fn automatic_updates(&self) -> AutomaticUpdates {
        let install_enabled = self.install_macos_updates.value == Some(true)
            && self.automatic_check.value != Some(false);
        let settings = [
            ("AutomaticCheckEnabled", self.automatic_check),
            ("AutomaticDownload", self.automatic_download),
            (
                "AutomaticallyInstallMacOSUpdates",
                self.install_macos_updates,
            ),
            ("CriticalUpdateInstall", self.critical_update_install),
            ("ConfigDataInstall", self.config_data_install),
        ]
        .into_iter()
        .map(|(key, setting)| {
            let value = match setting.value {
                Some(value) => format!("{key} = {value}"),
                None => format!("{key} not set"),
            };
            if setting.managed {
                format!("{value} (managed)")
            } else {
                value
            }
        })
        .collect();
        AutomaticUpdates {
            mechanism: "softwareupdate".to_owned(),
            install_enabled,
            settings,
        }
    }
}

/// Parses `/Library/Preferences/com.apple.SoftwareUpdate.plist` (binary on real Macs, XML when
/// written by hand) and the managed preferences of the same domain, whose keys win.
pub fn parse_preferences(
    local: Option<&[u8]>,
    managed: Option<&[u8]>,
) -> Result<SoftwareUpdatePrefs, String> {
    let empty = Dictionary::new();
    let local_value = local
        .map(|bytes| read_dictionary(bytes, PREFERENCES))
        .transpose()?;
    let managed_value = managed
        .map(|bytes| read_dictionary(bytes, MANAGED_PREFERENCES))
        .transpose()?;
    let local = local_value.as_ref().unwrap_or(&empty);
    let managed = managed_value.as_ref().unwrap_or(&empty);
    let setting = |key: &str| -> Setting {
        match managed.get(key).and_then(as_bool) {
            Some(value) => Setting {
                value: Some(value),
                managed: true,
            },
            None => Setting {
                value: local.get(key).and_then(as_bool),
                managed: false,
            },
        }
    };
    let date = |key: &str| {
        local
            .get(key)
            .and_then(Value::as_date)
            .map(|d| unix_ms(d.into()))
    };
    Ok(SoftwareUpdatePrefs {
        last_successful_scan_unix_ms: date("LastSuccessfulDate")
            .or_else(|| date("LastFullSuccessfulDate")),
        automatic_check: setting("AutomaticCheckEnabled"),
        automatic_download: setting("AutomaticDownload"),
        install_macos_updates: setting("AutomaticallyInstallMacOSUpdates"),
        critical_update_install: setting("CriticalUpdateInstall"),
        config_data_install: setting("ConfigDataInstall"),
    })
}

fn read_dictionary(bytes: &[u8], path: &str) -> Result<Dictionary, String> {
    match Value::from_reader(Cursor::new(bytes)) {
        Ok(Value::Dictionary(dictionary)) => Ok(dictionary),
        Ok(_) => Err(format!("{path} is not a dictionary")),
        Err(error) => Err(format!("{path} is not a property list: {error}")),
    }
}

/// `defaults write ... -bool true` writes a boolean; `-int 1` an integer, which macOS reads as
/// true too.
fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Boolean(b) => Some(*b),
        Value::Integer(i) => i.as_signed().map(|i| i != 0),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "yes" | "true" | "1" => Some(true),
            "no" | "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::checks::UnreadableFact;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/checks/patch/testdata")
            .join(name)
    }

    fn fixture(name: &str) -> String {
        let path = testdata("macos").join(name);
        std::fs::read_to_string(&path).expect("fixture exists")
    }

    fn fixture_bytes(name: &str) -> Vec<u8> {
        std::fs::read(testdata("macos").join(name)).expect("fixture exists")
    }

    fn update(name: &str, version: &str, security: bool, restart: bool) -> PendingUpdate {
        PendingUpdate {
            name: name.to_owned(),
            available_version: Some(version.to_owned()).filter(|v| !v.is_empty()),
            security,
            classification_source: "softwareupdate title".to_owned(),
            restart_required: Some(restart),
            ..PendingUpdate::default()
        }
    }

    fn sonoma_pending() -> Vec<PendingUpdate> {
        vec![
            update("macOS Sonoma 14.2.1-23C71", "14.2.1", false, true),
            update("Command Line Tools for Xcode-15.1", "15.1", false, false),
        ]
    }

    #[test]
    fn sonoma_list_with_a_restart() {
        let pending = parse_softwareupdate_list(
            Some(0),
            &fixture("list-sonoma-14.2.stdout"),
            &fixture("list-sonoma-14.2.stderr"),
        );
        assert_eq!(pending, Ok(sonoma_pending()));
    }

    #[test]
    fn safari_and_rapid_security_responses() {
        let pending =
            parse_softwareupdate_list(Some(0), &fixture("list-ventura-safari.stdout"), "")
                .expect("parses");
        assert_eq!(
            pending,
            vec![
                update("macOS Ventura 13.6.3-22G436", "13.6.3", false, true),
                update("Safari17.2.1VenturaAuto-17.2.1", "17.2.1", false, false),
                update(
                    "macOS Ventura 13.4.1 (c)-22F770820d",
                    "13.4.1 (c)",
                    true,
                    true
                ),
                update("XProtectPlistConfigData_10_15-2173", "2173", true, false),
            ]
        );
    }

    #[test]
    fn catalina_list_with_a_security_update() {
        let pending = parse_softwareupdate_list(
            Some(0),
            &fixture("list-catalina-10.15.7.stdout"),
            &fixture("list-catalina-10.15.7.stderr"),
        );
        assert_eq!(
            pending,
            Ok(vec![
                update(
                    "Security Update 2021-005 Catalina-10.15.7",
                    "10.15.7",
                    true,
                    true
                ),
                update("Safari15.0CatalinaAuto-15.0", "15.0", false, false),
            ])
        );
    }

    #[test]
    fn mojave_old_format() {
        let pending = parse_softwareupdate_list(
            Some(0),
            &fixture("list-mojave-10.14.stdout"),
            &fixture("list-mojave-10.14.stderr"),
        );
        assert_eq!(
            pending,
            Ok(vec![
                update(
                    "Command Line Tools (macOS Mojave version 10.14) for Xcode-10.3",
                    "10.3",
                    false,
                    false
                ),
                update("macOS 10.14.6 Supplemental Update-", "", false, true),
                update("Security Update 2019-004-10.13.6", "10.13.6", true, true),
                update("MRTConfigData_10_14-1.45", "1.45", true, false),
                update(
                    "BridgeOSUpdateCustomer",
                    "10.14.4.1.1.1555388607",
                    false,
                    true
                ),
                update("iCal-1.0.2", "1.0.2", false, false),
            ])
        );
    }

    #[test]
    fn no_new_software_on_stderr_is_an_empty_list() {
        assert_eq!(
            parse_softwareupdate_list(Some(0), "", &fixture("list-none.stderr")),
            Ok(Vec::new())
        );
        assert_eq!(
            parse_softwareupdate_list(Some(0), "No new software available.\n", ""),
            Ok(Vec::new())
        );
    }

    #[test]
    fn no_network_is_the_reason_there_is_no_list() {
        let error = parse_softwareupdate_list(Some(0), "", &fixture("list-offline.stderr"))
            .expect_err("no list");
        assert_eq!(
            error,
            "exited with status 0: Can\u{2019}t connect to the Apple Software Update server, \
             because you are not connected to the Internet."
        );
    }

    #[test]
    fn other_failures_are_reasons() {
        let error = parse_softwareupdate_list(Some(1), "", "Software Update Tool\n\n")
            .expect_err("no list");
        assert_eq!(error, "exited with status 1 and printed no list");
        let error = parse_softwareupdate_list(Some(1), "", "No new software available.\n")
            .expect_err("not a success");
        assert!(error.contains("status 1"), "{error}");
        let error = parse_softwareupdate_list(
            Some(0),
            "Software Update found the following new or updated software:\n",
            "",
        )
        .expect_err("announced but not listed");
        assert!(error.contains("none could be read"), "{error}");
        assert!(parse_softwareupdate_list(None, "", "").is_err());
    }

    #[test]
    fn fields_keep_commas_inside_titles() {
        let (label, fields) =
            split_fields("Title: Pro Video Formats, 2.2, Version: 2.2.5, Size: 1KiB,");
        assert_eq!(label, "");
        assert_eq!(
            fields,
            vec![
                ("Title".to_owned(), "Pro Video Formats, 2.2".to_owned()),
                ("Version".to_owned(), "2.2.5".to_owned()),
                ("Size".to_owned(), "1KiB".to_owned()),
            ]
        );
    }

    #[test]
    fn a_label_without_a_title_line_is_still_pending() {
        let pending = parse_softwareupdate_list(Some(0), "* Label: macOS Next-27Z1\n", "");
        assert_eq!(
            pending,
            Ok(vec![PendingUpdate {
                name: "macOS Next-27Z1".to_owned(),
                classification_source: "softwareupdate title".to_owned(),
                ..PendingUpdate::default()
            }])
        );
    }

    #[test]
    fn security_titles() {
        assert!(is_security_title(
            "macOS Background Security Improvement (a)",
            ""
        ));
        assert!(is_security_title("macOS Ventura 13.4.1 (a)", ""));
        assert!(is_security_title("XProtectPayloads", ""));
        assert!(!is_security_title("macOS Sonoma 14.2.1", ""));
        assert!(!is_security_title(
            "Safari",
            "Safari17.2.1VenturaAuto-17.2.1"
        ));
        assert!(!is_security_title("Pro Video Formats (a)", ""));
        assert!(!is_security_title("SMART Utility", ""));
    }

    #[test]
    fn install_history_counts_software_updates_only() {
        assert_eq!(
            parse_install_history(&fixture_bytes("InstallHistory-sonoma.plist")),
            Ok(1_702_410_450_000)
        );
        assert_eq!(
            parse_install_history(&fixture_bytes("InstallHistory-catalina.plist")),
            Ok(1_626_940_548_000)
        );
        let only_apps = br#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><array><dict>
<key>date</key><date>2024-01-01T00:00:00Z</date>
<key>displayName</key><string>Zoom</string>
<key>processName</key><string>installer</string>
</dict></array></plist>"#;
        let error = parse_install_history(only_apps).expect_err("no update");
        assert!(error.contains("no update installed"), "{error}");
        assert!(parse_install_history(b"garbage").is_err());
        assert!(parse_install_history(b"").is_err());
    }

    #[test]
    fn binary_preferences_with_a_managed_override() {
        let prefs = parse_preferences(
            Some(&fixture_bytes("SoftwareUpdate-sonoma.plist")),
            Some(&fixture_bytes("SoftwareUpdate-managed.plist")),
        )
        .expect("parses");
        assert_eq!(prefs.last_successful_scan_unix_ms, Some(1_705_303_263_000));
        assert_eq!(
            prefs.install_macos_updates,
            Setting {
                value: Some(true),
                managed: true
            }
        );
        let automatic = prefs.automatic_updates();
        assert!(automatic.install_enabled);
        assert_eq!(
            automatic.settings,
            vec![
                "AutomaticCheckEnabled = true (managed)",
                "AutomaticDownload = true",
                "AutomaticallyInstallMacOSUpdates = true (managed)",
                "CriticalUpdateInstall = true (managed)",
                "ConfigDataInstall = true",
            ]
        );
    }

    #[test]
    fn unset_automatic_install_counts_as_off() {
        let prefs = parse_preferences(Some(&fixture_bytes("SoftwareUpdate-catalina.plist")), None)
            .expect("parses");
        assert_eq!(prefs.last_successful_scan_unix_ms, Some(1_632_116_652_000));
        let automatic = prefs.automatic_updates();
        assert!(!automatic.install_enabled);
        assert!(
            automatic
                .settings
                .contains(&"AutomaticallyInstallMacOSUpdates not set".to_owned())
        );
        let checks_off = br#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>AutomaticCheckEnabled</key><false/>
<key>AutomaticallyInstallMacOSUpdates</key><integer>1</integer>
</dict></plist>"#;
        let prefs = parse_preferences(Some(checks_off), None).expect("parses");
        assert!(!prefs.automatic_updates().install_enabled);
        assert!(parse_preferences(Some(b"<plist><array/></plist>"), None).is_err());
    }

    #[tokio::test]
    async fn replay_sonoma() {
        let host = Host::replay(&testdata("replay-macos-sonoma")).expect("replay loads");
        let facts = crate::checks::patch::collect(&host).await.expect("facts");
        assert_eq!(
            facts,
            PatchFacts {
                managers: vec![PackageManager {
                    name: "softwareupdate".to_owned(),
                    version: Some("14.2".to_owned()),
                }],
                pending: sonoma_pending(),
                last_install_unix_ms: Some(1_702_410_450_000),
                metadata_refreshed_unix_ms: Some(1_705_303_263_000),
                automatic_updates: Some(AutomaticUpdates {
                    mechanism: "softwareupdate".to_owned(),
                    install_enabled: true,
                    settings: vec![
                        "AutomaticCheckEnabled = true (managed)".to_owned(),
                        "AutomaticDownload = true".to_owned(),
                        "AutomaticallyInstallMacOSUpdates = true (managed)".to_owned(),
                        "CriticalUpdateInstall = true (managed)".to_owned(),
                        "ConfigDataInstall = true".to_owned(),
                    ],
                }),
                reboot: RebootFacts {
                    required: Some(true),
                    reasons: vec![RebootReason {
                        source: "update".to_owned(),
                        detail: "macOS Sonoma 14.2.1-23C71 needs a restart to install".to_owned(),
                    }],
                    since_unix_ms: None,
                },
                unreadable: Vec::new(),
            }
        );
    }

    #[tokio::test]
    async fn replay_catalina() {
        let host = Host::replay(&testdata("replay-macos-catalina")).expect("replay loads");
        let facts = crate::checks::patch::collect(&host).await.expect("facts");
        assert_eq!(
            facts,
            PatchFacts {
                managers: vec![PackageManager {
                    name: "softwareupdate".to_owned(),
                    version: Some("10.15.7".to_owned()),
                }],
                pending: vec![
                    update(
                        "Security Update 2021-005 Catalina-10.15.7",
                        "10.15.7",
                        true,
                        true
                    ),
                    update("Safari15.0CatalinaAuto-15.0", "15.0", false, false),
                ],
                last_install_unix_ms: Some(1_626_940_548_000),
                metadata_refreshed_unix_ms: Some(1_632_116_652_000),
                automatic_updates: Some(AutomaticUpdates {
                    mechanism: "softwareupdate".to_owned(),
                    install_enabled: false,
                    settings: vec![
                        "AutomaticCheckEnabled = true".to_owned(),
                        "AutomaticDownload = true".to_owned(),
                        "AutomaticallyInstallMacOSUpdates not set".to_owned(),
                        "CriticalUpdateInstall = true".to_owned(),
                        "ConfigDataInstall = true".to_owned(),
                    ],
                }),
                reboot: RebootFacts {
                    required: Some(true),
                    reasons: vec![RebootReason {
                        source: "update".to_owned(),
                        detail: "Security Update 2021-005 Catalina-10.15.7 needs a restart to \
                                 install"
                            .to_owned(),
                    }],
                    since_unix_ms: None,
                },
                unreadable: Vec::new(),
            }
        );
        assert_eq!(facts.pending_security_count(), 1);
    }

    /// A copy of the Sonoma recording with `softwareupdate` answering `stderr` instead, and
    /// without the files named in `drop`.
    fn sonoma_variant(stderr: &str, stdout: &str, drop: &[&str]) -> tempfile::TempDir {
        let dir = crate::host::copy_recording(&testdata("replay-macos-sonoma"));
        let commands = dir.path().join("commands");
        std::fs::write(commands.join("0001.stderr"), stderr).expect("write");
        std::fs::write(commands.join("0001.stdout"), stdout).expect("write");
        for path in drop {
            std::fs::remove_file(dir.path().join("files").join(path)).expect("remove");
        }
        dir
    }

    #[tokio::test]
    async fn replay_offline_is_an_error_outcome() {
        let dir = sonoma_variant(&fixture("list-offline.stderr"), "", &[]);
        let host = Host::replay(dir.path()).expect("replay loads");
        let error = crate::checks::patch::collect(&host)
            .await
            .expect_err("no list, no facts");
        assert_eq!(
            error.reason,
            "`softwareupdate --list --no-scan` gave no list of updates"
        );
        assert!(
            error
                .source
                .as_deref()
                .is_some_and(|s| s.contains("not connected to the Internet")),
            "{error}"
        );
    }

    #[tokio::test]
    async fn replay_up_to_date_without_preferences() {
        let dir = sonoma_variant(
            &fixture("list-none.stderr"),
            "",
            &[
                "Library/Preferences/com.apple.SoftwareUpdate.plist",
                "Library/Managed Preferences/com.apple.SoftwareUpdate.plist",
                "Library/Receipts/InstallHistory.plist",
            ],
        );
        let host = Host::replay(dir.path()).expect("replay loads");
        let facts = crate::checks::patch::collect(&host).await.expect("facts");
        assert_eq!(facts.pending, Vec::new());
        assert_eq!(
            facts.reboot,
            RebootFacts {
                required: Some(false),
                reasons: Vec::new(),
                since_unix_ms: None
            }
        );
        assert_eq!(facts.automatic_updates, None);
        let facts_named: Vec<&str> = facts.unreadable.iter().map(|u| u.fact.as_str()).collect();
        assert_eq!(
            facts_named,
            ["last_install", "metadata_refreshed", "automatic_updates"]
        );
        assert!(
            facts
                .unreadable
                .iter()
                .all(|UnreadableFact { reason, .. }| {
                    reason.starts_with("not in the recording")
                        || reason.starts_with("file not found")
                })
        );
    }
}

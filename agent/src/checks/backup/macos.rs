//! Time Machine: one source per configured destination (tool `time_machine`).
//!
//! **What is asked.** `tmutil destinationinfo -X` names the destinations (an XML property list
//! of `Name`, `Kind` `Network` or `Local`, `ID`, `URL` for network ones, `MountPoint` while
//! mounted, `LastDestination`); it needs no Full Disk Access. The preferences
//! `/Library/Preferences/com.apple.TimeMachine.plist` (a binary property list) keep, per
//! `DestinationID`, the dates of the backups on that destination (`SnapshotDates`, newest
//! last), the dates of the last attempts (`AttemptDates`) and the result of the last one
//! (`RESULT`, 0 for success). For a destination that is mounted, `tmutil listbackups -d
//! <mount point>` lists the backups actually on it, one path a line, each ending in a local
//! time stamp (`…/2024-01-14-184512.backup` on APFS, `…/Backups.backupdb/Mac/2024-01-14-184512`
//! on HFS+), read in the host's zone ([`LocalClock`]).
//!
//! **Why `listbackups -d` per destination and no `latestbackup`.** Since macOS 11 both verbs
//! take `-d <mount point>` and, without it, answer for one destination only; the newest line of
//! `listbackups -d` is what `latestbackup -d` prints, so one command per mounted destination
//! gives both the count and the newest backup. Network destinations are mounted only while a
//! backup runs, and a USB disk may be unplugged: for those the preferences are the record. When
//! both are read, the newest backup is the newer of the two and the count is the listing's.
//! Before macOS 11, `-d` is a usage error and the preferences answer alone.
//!
//! **Full Disk Access.** Without it `tmutil listbackups` refuses ("tmutil: listbackups
//! requires Full Disk Access privileges.") or prints nothing, and reading the preferences fails
//! with permission denied. A destination with neither readable is a source with error
//! `no_permission`, never a destination without backups; a listing that prints nothing is not
//! taken for "no backups" (tmutil says "No backups found for host." when there are none).
//!
//! **Not configured.** "No destinations configured" pushes nothing: a Mac without Time Machine
//! is a fact for the policy to judge, not an unreadable one.
//!
//! **Paths.** Time Machine backs up the whole system volume group minus exclusions
//! (`SkipPaths`), so `paths` is `["/"]`; the exclusions are not listed.
//!
//! **Scheduled.** `AutoBackup` (backups run on their own, hourly) is reported as `scheduled`;
//! `LastKnownEncryptionState` is parsed but not reported.
//!
//! This module is compiled on every OS and reached by the host's recorded OS family, so macOS
//! recordings replay (and are tested) on Linux.

use std::io::Cursor;
use std::time::{SystemTime, UNIX_EPOCH};

use plist::{Dictionary, Value};

use super::{BackupFacts, BackupSource, SourceErrorKind};
use crate::checks::UnreadableFact;
use crate::checks::patch::LocalClock;
use crate::host::{Host, HostError, display_argv};

const TOOL: &str = "time_machine";
const TMUTIL: &str = "tmutil";
const DESTINATIONINFO_ARGS: &[&str] = &["destinationinfo", "-X"];
const PREFERENCES: &str = "/Library/Preferences/com.apple.TimeMachine.plist";
/// The one source reported when not even the destinations can be read.
const WHOLE: &str = "Time Machine";
const FDA_HINT: &str = "grant Full Disk Access to evident-agent in System Settings > Privacy & \
                        Security > Full Disk Access";

pub(super) async fn collect(host: &Host, facts: &mut BackupFacts) {
    let destinations = match host.run(TMUTIL, DESTINATIONINFO_ARGS).await {
        Ok(output) => parse_destinationinfo(output.status, &output.stdout, &output.stderr),
        Err(error) => Err(Failure::from_host(&error)),
    };
    let prefs = match host.read_bytes(PREFERENCES).await {
        Ok(bytes) => parse_preferences(&bytes).map_err(|reason| Failure {
            kind: SourceErrorKind::Other,
            message: reason,
        }),
        Err(HostError::FileNotFound { .. }) => Ok(TimeMachinePrefs::default()),
        Err(error) => Err(Failure::from_host(&error)),
    };
    let destinations = match destinations {
        Ok(destinations) => destinations,
        Err(failure) => match &prefs {
            // tmutil could not say; the preferences still name the destinations.
            Ok(prefs) if !prefs.destinations.is_empty() => {
                facts.unreadable.push(UnreadableFact {
                    fact: "time_machine_destinations".to_owned(),
                    reason: format!(
                        "{}; the destinations are taken from {PREFERENCES}",
                        failure.message
                    ),
                });
                prefs
                    .destinations
                    .iter()
                    .map(Destination::from_prefs)
                    .collect()
            }
            _ => {
                let mut source = BackupSource::new(TOOL, WHOLE, "");
                let failures = [Some(&failure), prefs.as_ref().err()];
                let (kind, message) = combine(failures.into_iter().flatten());
                source.fail(kind, &message);
                facts.sources.push(source);
                return;
            }
        },
    };
    let mut clock: Option<Result<LocalClock, String>> = None;
    for destination in &destinations {
        let listing = match &destination.mount_point {
            Some(mount_point) => {
                let clock = match &clock {
                    Some(clock) => clock.clone(),
                    None => {
                        let loaded = LocalClock::of(host).await;
                        clock = Some(loaded.clone());
                        loaded
                    }
                };
                Some(list_backups(host, mount_point, clock).await)
            }
            None => None,
        };
        facts
            .sources
            .push(source_for(destination, prefs.as_ref(), listing.as_ref()));
    }
}

/// `tmutil listbackups -d <mount point>`, read in the host's zone.
async fn list_backups(
    host: &Host,
    mount_point: &str,
    clock: Result<LocalClock, String>,
) -> Result<Vec<i64>, Failure> {
    let args = ["listbackups", "-d", mount_point];
    let argv = display_argv(TMUTIL, &args);
    let output = host
        .run(TMUTIL, &args)
        .await
        .map_err(|error| Failure::from_host(&error))?;
    let clock = clock.map_err(|reason| Failure {
        kind: SourceErrorKind::Other,
        message: format!("`{argv}` printed local times, but {reason}"),
    })?;
    parse_backup_list(output.status, &output.stdout, &output.stderr, &clock).map_err(|failure| {
        Failure {
            kind: failure.kind,
            message: format!("`{argv}` {}", failure.message),
        }
    })
}

/// One destination's source from what was read about it: the listing (when mounted) and the
/// preferences. Errors only when neither says anything.
fn source_for(
    destination: &Destination,
    prefs: Result<&TimeMachinePrefs, &Failure>,
    listing: Option<&Result<Vec<i64>, Failure>>,
) -> BackupSource {
    let mut source = BackupSource::new(TOOL, &destination.name, &destination.location());
    source.paths = vec!["/".to_owned()];
    source.scheduled = prefs.ok().and_then(|prefs| prefs.auto_backup);
    let entry = prefs.ok().and_then(|prefs| {
        destination
            .id
            .as_deref()
            .and_then(|id| prefs.destination(id))
    });
    let listed = listing.and_then(|listing| listing.as_ref().ok());
    source.last_success_unix_ms = [
        listed.and_then(|backups| backups.iter().max().copied()),
        entry.and_then(|entry| entry.snapshot_dates_unix_ms.iter().max().copied()),
    ]
    .into_iter()
    .flatten()
    .max();
    source.snapshot_count = listed
        .map(Vec::len)
        .or_else(|| entry.map(|entry| entry.snapshot_dates_unix_ms.len()))
        .map(|count| u32::try_from(count).unwrap_or(u32::MAX));
    if let Some(entry) = entry {
        source.last_attempt_unix_ms = entry.attempt_dates_unix_ms.iter().max().copied();
        source.last_attempt_result = entry.result.map(|result| match result {
            0 => "success".to_owned(),
            code => format!("result code {code}"),
        });
    }
    if listed.is_none() && entry.is_none() {
        let failures = [
            listing.and_then(|listing| listing.as_ref().err()),
            prefs.err(),
        ];
        let failures: Vec<&Failure> = failures.into_iter().flatten().collect();
        if failures.is_empty() {
            source.fail(
                SourceErrorKind::Other,
                &format!("the destination is not mounted and {PREFERENCES} has no record of it"),
            );
        } else {
            let (kind, message) = combine(failures.into_iter());
            source.fail(kind, &message);
        }
    }
    source
}

/// One error out of several reasons: `no_permission` when any of them is (with the way out),
/// else the first one's kind.
fn combine<'a>(failures: impl Iterator<Item = &'a Failure>) -> (SourceErrorKind, String) {
    let failures: Vec<&Failure> = failures.collect();
    let no_permission = failures
        .iter()
        .any(|failure| failure.kind == SourceErrorKind::NoPermission);
    let reasons: Vec<&str> = failures
        .iter()
        .map(|failure| failure.message.as_str())
        .collect();
    let reasons = reasons.join("; ");
    if no_permission {
        (
            SourceErrorKind::NoPermission,
            format!("macOS withheld the Time Machine records: {reasons}; {FDA_HINT}"),
        )
    } else {
        let kind = failures
            .first()
            .map_or(SourceErrorKind::Other, |failure| failure.kind);
        (kind, reasons)
    }
}

/// Why something about Time Machine could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: SourceErrorKind,
    pub message: String,
}

impl Failure {
    fn from_host(error: &HostError) -> Failure {
        let kind = match error {
            HostError::ProgramNotFound { .. } => SourceErrorKind::NotInstalled,
            HostError::TimedOut { .. } => SourceErrorKind::Timeout,
            HostError::PermissionDenied { .. } => SourceErrorKind::NoPermission,
            _ => SourceErrorKind::Other,
        };
        Failure {
            kind,
            message: error.to_string(),
        }
    }

    /// A failure in tmutil's own words (first line), `no_permission` when it names Full Disk
    /// Access or the kernel's "Operation not permitted". The message has no subject: "exited
    /// with status 80: …".
    fn from_tool(status: Option<i32>, stdout: &str, stderr: &str) -> Failure {
        let text = [stderr.trim(), stdout.trim()]
            .into_iter()
            .find(|text| !text.is_empty())
            .unwrap_or_default();
        let first = text.lines().next().unwrap_or_default().trim();
        let status = status.map_or_else(|| "a signal".to_owned(), |code| format!("status {code}"));
        let kind = if says_no_permission(text) {
            SourceErrorKind::NoPermission
        } else {
            SourceErrorKind::Other
        };
        let message = if first.is_empty() {
            format!("exited with {status} and printed nothing")
        } else {
            format!("exited with {status}: {first}")
        };
        Failure { kind, message }
    }
}

fn says_no_permission(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("full disk access") || lower.contains("operation not permitted")
}

/// One Time Machine destination as `tmutil destinationinfo -X` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Destination {
    /// The volume or share name, as the Time Machine settings show it.
    pub name: String,
    /// `Network` or `Local`.
    pub kind: String,
    /// The destination id, which the preferences call `DestinationID`.
    pub id: Option<String>,
    /// For a network destination, the share (`smb://user@nas.local/TimeMachine`).
    pub url: Option<String>,
    /// Where it is mounted now, if it is.
    pub mount_point: Option<String>,
    /// Whether it took the last backup.
    pub last_destination: bool,
}

impl Destination {
    /// The share for a network destination, the mount point (or the name) for a local disk.
    /// Redacted by [`BackupSource::new`].
    fn location(&self) -> String {
        match (&self.url, &self.mount_point) {
            (Some(url), _) => url.clone(),
            (None, Some(mount_point)) => mount_point.clone(),
            (None, None) => self.name.clone(),
        }
    }

    /// A destination known only from the preferences (tmutil could not answer): never mounted
    /// as far as the agent knows, so only the preferences describe it.
    fn from_prefs(entry: &PrefsDestination) -> Destination {
        Destination {
            name: entry
                .volume_name
                .clone()
                .unwrap_or_else(|| entry.id.clone()),
            kind: if entry.network_url.is_some() {
                "Network".to_owned()
            } else {
                "Local".to_owned()
            },
            id: Some(entry.id.clone()),
            url: entry.network_url.clone(),
            mount_point: None,
            last_destination: false,
        }
    }
}

/// Parses `tmutil destinationinfo -X`. "No destinations configured" (on either stream, any
/// status) is an empty list; text before the XML (tmutil sometimes prints a diagnostic first)
/// is skipped.
pub fn parse_destinationinfo(
    status: Option<i32>,
    stdout: &str,
    stderr: &str,
) -> Result<Vec<Destination>, Failure> {
    let what = display_argv(TMUTIL, DESTINATIONINFO_ARGS);
    if stdout.contains("No destinations configured")
        || stderr.contains("No destinations configured")
    {
        return Ok(Vec::new());
    }
    let Some(start) = stdout.find("<?xml").or_else(|| stdout.find("<plist")) else {
        let failure = Failure::from_tool(status, stdout, stderr);
        return Err(Failure {
            kind: failure.kind,
            message: format!("`{what}` {}", failure.message),
        });
    };
    let root = match Value::from_reader(Cursor::new(&stdout.as_bytes()[start..])) {
        Ok(Value::Dictionary(root)) => root,
        Ok(_) => {
            return Err(Failure {
                kind: SourceErrorKind::Other,
                message: format!("`{what}` printed a property list that is not a dictionary"),
            });
        }
        Err(error) => {
            return Err(Failure {
                kind: SourceErrorKind::Other,
                message: format!("`{what}` printed no readable property list: {error}"),
            });
        }
    };
    let Some(destinations) = root.get("Destinations") else {
        return Ok(Vec::new());
    };
    let destinations = destinations.as_array().ok_or_else(|| Failure {
        kind: SourceErrorKind::Other,
        message: format!("`{what}`: Destinations is not an array"),
    })?;
    Ok(destinations
        .iter()
        .filter_map(Value::as_dictionary)
        .map(|entry| {
            let id = text(entry, "ID").or_else(|| text(entry, "DestinationID"));
            Destination {
                name: text(entry, "Name")
                    .or_else(|| id.clone())
                    .unwrap_or_else(|| "unnamed destination".to_owned()),
                kind: text(entry, "Kind").unwrap_or_default(),
                id,
                url: text(entry, "URL"),
                mount_point: text(entry, "MountPoint"),
                last_destination: entry.get("LastDestination").and_then(as_bool) == Some(true),
            }
        })
        .collect())
}

/// What the Time Machine preferences record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TimeMachinePrefs {
    /// `AutoBackup`: whether backups run on their own (hourly).
    pub auto_backup: Option<bool>,
    pub destinations: Vec<PrefsDestination>,
}

/// One entry of the preferences' `Destinations`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrefsDestination {
    /// `DestinationID`.
    pub id: String,
    /// `LastKnownVolumeName`.
    pub volume_name: Option<String>,
    /// `NetworkURL`, for a network destination.
    pub network_url: Option<String>,
    /// `SnapshotDates`: the backups on the destination.
    pub snapshot_dates_unix_ms: Vec<i64>,
    /// `AttemptDates`: the last attempts, successful or not.
    pub attempt_dates_unix_ms: Vec<i64>,
    /// `RESULT`: how the last attempt ended, 0 for success.
    pub result: Option<i64>,
    /// `LastKnownEncryptionState`: `Encrypted`, `NotEncrypted`.
    pub encryption: Option<String>,
}

impl TimeMachinePrefs {
    fn destination(&self, id: &str) -> Option<&PrefsDestination> {
        self.destinations
            .iter()
            .find(|entry| entry.id.eq_ignore_ascii_case(id))
    }
}

/// Parses `/Library/Preferences/com.apple.TimeMachine.plist` (binary on a Mac, XML when
/// written by hand). Entries without a `DestinationID` are skipped.
pub fn parse_preferences(bytes: &[u8]) -> Result<TimeMachinePrefs, String> {
    let root = match Value::from_reader(Cursor::new(bytes)) {
        Ok(Value::Dictionary(root)) => root,
        Ok(_) => return Err(format!("{PREFERENCES} is not a dictionary")),
        Err(error) => return Err(format!("{PREFERENCES} is not a property list: {error}")),
    };
    let destinations = root
        .get("Destinations")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .filter_map(Value::as_dictionary)
                .filter_map(|entry| {
                    Some(PrefsDestination {
                        id: text(entry, "DestinationID")?,
                        volume_name: text(entry, "LastKnownVolumeName"),
                        network_url: text(entry, "NetworkURL"),
                        snapshot_dates_unix_ms: dates(entry, "SnapshotDates"),
                        attempt_dates_unix_ms: dates(entry, "AttemptDates"),
                        result: entry.get("RESULT").and_then(Value::as_signed_integer),
                        encryption: text(entry, "LastKnownEncryptionState"),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(TimeMachinePrefs {
        auto_backup: root.get("AutoBackup").and_then(as_bool),
        destinations,
    })
}

/// Parses `tmutil listbackups` into the backups' times, read as local times of `clock`. "No
/// backups found" and "No machine directory found" are an empty list; a listing that prints
/// nothing is not (tmutil does that when it may not look), nor is any line without a time
/// stamp.
pub fn parse_backup_list(
    status: Option<i32>,
    stdout: &str,
    stderr: &str,
    clock: &LocalClock,
) -> Result<Vec<i64>, Failure> {
    let said = format!("{stdout}\n{stderr}").to_ascii_lowercase();
    if says_no_permission(&said) {
        return Err(Failure::from_tool(status, stdout, stderr));
    }
    let lines: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    if lines.is_empty() {
        if said.contains("no backups found") || said.contains("no machine directory found") {
            return Ok(Vec::new());
        }
        let mut failure = Failure::from_tool(status, stdout, stderr);
        if status == Some(0) && stderr.trim().is_empty() {
            failure.kind = SourceErrorKind::NoPermission;
            failure.message = "printed no backups and no reason, as it does without Full Disk \
                               Access"
                .to_owned();
        }
        return Err(failure);
    }
    lines
        .iter()
        .map(|line| {
            let stamp = backup_stamp(line).ok_or_else(|| Failure {
                kind: SourceErrorKind::Other,
                message: format!("printed a line that is not a backup: {line:?}"),
            })?;
            clock
                .parse(stamp, "%Y-%m-%d-%H%M%S")
                .map_err(|reason| Failure {
                    kind: SourceErrorKind::Other,
                    message: format!("printed a bad time: {reason}"),
                })
        })
        .collect()
}

/// The `YYYY-MM-DD-HHMMSS` of a backup path: the last component that starts with one, as in
/// `/Volumes/.timemachine/<uuid>/2024-01-14-184512.backup/2024-01-14-184512.backup` and
/// `/Volumes/Disk/Backups.backupdb/Mac/2024-01-14-184512`.
fn backup_stamp(path: &str) -> Option<&str> {
    path.rsplit('/').find_map(|component| {
        let stamp = component.get(..17)?;
        let rest = &component[17..];
        let shaped = stamp.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 | 10 => b == b'-',
            _ => b.is_ascii_digit(),
        });
        (shaped && (rest.is_empty() || rest.starts_with('.'))).then_some(stamp)
    })
}

fn text(dictionary: &Dictionary, key: &str) -> Option<String> {
    let value = dictionary.get(key)?.as_string()?.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

fn dates(dictionary: &Dictionary, key: &str) -> Vec<i64> {
    dictionary
        .get(key)
        .and_then(Value::as_array)
        .map(|dates| {
            dates
                .iter()
                .filter_map(Value::as_date)
                .map(|date| unix_ms(date.into()))
                .collect()
        })
        .unwrap_or_default()
}

/// A plist boolean, or an integer as tmutil writes `LastDestination`.
fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Boolean(b) => Some(*b),
        Value::Integer(i) => i.as_signed().map(|i| i != 0),
        _ => None,
    }
}

fn unix_ms(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
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
        std::fs::read_to_string(testdata("macos").join(name)).expect("fixture exists")
    }

    fn fixture_bytes(name: &str) -> Vec<u8> {
        std::fs::read(testdata("macos").join(name)).expect("fixture exists")
    }

    fn berlin() -> LocalClock {
        LocalClock::from_tzif(&fixture_bytes("localtime-Europe-Berlin")).expect("tzif")
    }

    const NAS_ID: &str = "6F3B1C0A-9E2D-4E2B-9A77-3C1D2B4E5F60";
    const USB_ID: &str = "0852943E-8EC2-4386-8C31-ECE56488E8B4";

    fn nas() -> Destination {
        Destination {
            name: "TimeMachine".to_owned(),
            kind: "Network".to_owned(),
            id: Some(NAS_ID.to_owned()),
            url: Some("smb://mac-backup@nas.local/TimeMachine".to_owned()),
            mount_point: None,
            last_destination: false,
        }
    }

    fn usb() -> Destination {
        Destination {
            name: "Backup USB".to_owned(),
            kind: "Local".to_owned(),
            id: Some(USB_ID.to_owned()),
            url: None,
            mount_point: Some("/Volumes/Backup USB".to_owned()),
            last_destination: true,
        }
    }

    #[test]
    fn two_destinations() {
        let destinations = parse_destinationinfo(Some(0), &fixture("destinationinfo-two.xml"), "");
        assert_eq!(destinations, Ok(vec![nas(), usb()]));
    }

    #[test]
    fn no_destinations_is_an_empty_list() {
        assert_eq!(
            parse_destinationinfo(Some(1), "", "tmutil: No destinations configured.\n"),
            Ok(Vec::new())
        );
        assert_eq!(
            parse_destinationinfo(Some(0), "tmutil: No destinations configured.\n", ""),
            Ok(Vec::new())
        );
        let empty = r#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict></dict></plist>"#;
        assert_eq!(parse_destinationinfo(Some(0), empty, ""), Ok(Vec::new()));
    }

    #[test]
    fn destinationinfo_tolerates_a_diagnostic_and_the_old_id_key() {
        let xml = "diag noise\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist \
                   version=\"1.0\"><dict><key>Destinations</key><array><dict>\
                   <key>DestinationID</key><string>ABC</string>\
                   <key>Kind</key><string>Local</string>\
                   <key>LastDestination</key><true/></dict></array></dict></plist>";
        assert_eq!(
            parse_destinationinfo(Some(0), xml, ""),
            Ok(vec![Destination {
                name: "ABC".to_owned(),
                kind: "Local".to_owned(),
                id: Some("ABC".to_owned()),
                last_destination: true,
                ..Destination::default()
            }])
        );
    }

    #[test]
    fn destinationinfo_failures_are_reasons() {
        let failure = parse_destinationinfo(Some(0), "", "").expect_err("nothing printed");
        assert_eq!(
            failure,
            Failure {
                kind: SourceErrorKind::Other,
                message: "`tmutil destinationinfo -X` exited with status 0 and printed nothing"
                    .to_owned(),
            }
        );
        let failure = parse_destinationinfo(Some(0), "<plist><array/></plist>", "")
            .expect_err("not a dictionary");
        assert!(failure.message.contains("not a dictionary"), "{failure:?}");
        let failure =
            parse_destinationinfo(Some(0), "<plist><dict><key>", "").expect_err("truncated");
        assert!(failure.message.contains("no readable"), "{failure:?}");
        let failure = parse_destinationinfo(
            Some(80),
            "",
            "tmutil: destinationinfo requires Full Disk Access privileges.\n",
        )
        .expect_err("refused");
        assert_eq!(failure.kind, SourceErrorKind::NoPermission);
    }

    fn prefs() -> TimeMachinePrefs {
        parse_preferences(&fixture_bytes("com.apple.TimeMachine.plist")).expect("parses")
    }

    #[test]
    fn binary_preferences() {
        let prefs = prefs();
        assert_eq!(prefs.auto_backup, Some(true));
        assert_eq!(prefs.destinations.len(), 2);
        let nas = prefs
            .destination(&NAS_ID.to_ascii_lowercase())
            .expect("by id");
        assert_eq!(nas.volume_name.as_deref(), Some("TimeMachine"));
        assert_eq!(
            nas.network_url.as_deref(),
            Some("smb://mac-backup@nas.local/TimeMachine")
        );
        assert_eq!(nas.snapshot_dates_unix_ms.len(), 5);
        assert_eq!(
            nas.snapshot_dates_unix_ms.iter().max(),
            Some(&1_705_251_941_000)
        );
        assert_eq!(
            nas.attempt_dates_unix_ms.iter().max(),
            Some(&1_705_251_898_000)
        );
        assert_eq!(nas.result, Some(0));
        assert_eq!(nas.encryption.as_deref(), Some("Encrypted"));
        let usb = prefs.destination(USB_ID).expect("by id");
        assert_eq!(usb.snapshot_dates_unix_ms.len(), 4);
        assert_eq!(usb.result, Some(0));
    }

    #[test]
    fn preferences_that_are_not_a_dictionary_are_refused() {
        assert!(parse_preferences(b"garbage").is_err());
        assert!(parse_preferences(b"").is_err());
        assert!(parse_preferences(b"<plist version=\"1.0\"><array/></plist>").is_err());
        let bare = parse_preferences(b"<plist version=\"1.0\"><dict/></plist>").expect("parses");
        assert_eq!(bare, TimeMachinePrefs::default());
    }

    #[test]
    fn apfs_listing_in_local_time() {
        let backups = parse_backup_list(
            Some(0),
            &fixture("listbackups-usb-sonoma.stdout"),
            "",
            &berlin(),
        );
        // 2024-01-14-184512 in Berlin (CET, UTC+1) is 17:45:12 UTC.
        assert_eq!(
            backups.map(|b| (b.len(), b.iter().max().copied())),
            Ok((4, Some(1_705_254_312_000)))
        );
    }

    #[test]
    fn hfs_listing_and_summer_time() {
        let listing = "/Volumes/Zeit/Backups.backupdb/beryl/2023-07-01-120000\n\
                       /Volumes/Zeit/Backups.backupdb/beryl/2023-07-02-120000.previous\n";
        assert_eq!(
            parse_backup_list(Some(0), listing, "", &berlin()),
            Ok(vec![1_688_205_600_000, 1_688_292_000_000])
        );
    }

    #[test]
    fn no_backups_yet_is_an_empty_list() {
        assert_eq!(
            parse_backup_list(Some(1), "", "No backups found for host.\n", &berlin()),
            Ok(Vec::new())
        );
    }

    #[test]
    fn without_full_disk_access_the_listing_is_withheld() {
        let failure = parse_backup_list(
            Some(80),
            "",
            &fixture("listbackups-no-fda.stderr"),
            &berlin(),
        )
        .expect_err("refused");
        assert_eq!(
            failure,
            Failure {
                kind: SourceErrorKind::NoPermission,
                message: "exited with status 80: tmutil: listbackups requires Full Disk Access \
                          privileges."
                    .to_owned(),
            }
        );
        let failure = parse_backup_list(Some(0), "", "", &berlin()).expect_err("silence");
        assert_eq!(failure.kind, SourceErrorKind::NoPermission);
        let failure = parse_backup_list(
            Some(1),
            "",
            "ls: /Volumes/Backup USB: Operation not permitted\n",
            &berlin(),
        )
        .expect_err("refused");
        assert_eq!(failure.kind, SourceErrorKind::NoPermission);
    }

    #[test]
    fn other_listing_failures_are_reasons() {
        let failure = parse_backup_list(Some(64), "", "Usage: tmutil listbackups\n", &berlin())
            .expect_err("usage");
        assert_eq!(
            failure,
            Failure {
                kind: SourceErrorKind::Other,
                message: "exited with status 64: Usage: tmutil listbackups".to_owned(),
            }
        );
        let failure =
            parse_backup_list(Some(0), "/Volumes/x/latest\n", "", &berlin()).expect_err("no stamp");
        assert!(failure.message.contains("is not a backup"), "{failure:?}");
        assert!(parse_backup_list(Some(0), "/V/2024-13-45-999999\n", "", &berlin()).is_err());
    }

    #[test]
    fn backup_stamps() {
        assert_eq!(
            backup_stamp(
                "/Volumes/.timemachine/CA30/2024-08-17-001115.backup/2024-08-17-001115.backup"
            ),
            Some("2024-08-17-001115")
        );
        assert_eq!(backup_stamp("2024-08-17-001115"), Some("2024-08-17-001115"));
        assert_eq!(backup_stamp("/a/2024-08-17-001115x"), None);
        assert_eq!(backup_stamp("/a/2024_08_17_001115"), None);
        assert_eq!(backup_stamp("/a/é"), None);
        assert_eq!(backup_stamp(""), None);
    }

    #[test]
    fn a_source_from_the_listing_and_the_preferences() {
        let prefs = prefs();
        let listing = Ok(vec![1_705_000_000_000, 1_705_254_312_000]);
        let source = source_for(&usb(), Ok(&prefs), Some(&listing));
        assert_eq!(source.destination, "/Volumes/Backup USB");
        assert_eq!(source.snapshot_count, Some(2), "the listing counts");
        assert_eq!(source.last_success_unix_ms, Some(1_705_254_312_000));
        assert_eq!(source.last_attempt_result.as_deref(), Some("success"));
        assert_eq!(source.error, None);
    }

    #[test]
    fn a_failed_listing_falls_back_to_the_preferences() {
        let prefs = prefs();
        let listing = Err(Failure {
            kind: SourceErrorKind::Other,
            message: "usage".to_owned(),
        });
        let source = source_for(&usb(), Ok(&prefs), Some(&listing));
        assert_eq!(source.snapshot_count, Some(4));
        assert_eq!(source.last_success_unix_ms, Some(1_705_254_312_000));
        assert_eq!(source.error, None);
    }

    #[test]
    fn a_failed_last_attempt_keeps_its_result_code() {
        let mut prefs = prefs();
        prefs.destinations[0].result = Some(18);
        let source = source_for(&nas(), Ok(&prefs), None);
        assert_eq!(
            source.last_attempt_result.as_deref(),
            Some("result code 18")
        );
        assert_eq!(source.destination, "smb://mac-backup@nas.local/TimeMachine");
    }

    #[test]
    fn nothing_readable_without_full_disk_access_is_an_error_never_no_backups() {
        let denied = Failure {
            kind: SourceErrorKind::NoPermission,
            message: format!("permission denied: {PREFERENCES}"),
        };
        let listing = Ok(Vec::new());
        let source = source_for(&usb(), Err(&denied), Some(&listing));
        assert_eq!(source.snapshot_count, Some(0), "tmutil said there are none");
        let silent = Err(Failure {
            kind: SourceErrorKind::NoPermission,
            message: "printed nothing".to_owned(),
        });
        let source = source_for(&usb(), Err(&denied), Some(&silent));
        assert_eq!(source.snapshot_count, None);
        assert_eq!(source.last_success_unix_ms, None);
        let error = source.error.expect("an error");
        assert_eq!(error.kind, SourceErrorKind::NoPermission);
        assert!(error.message.contains("Full Disk Access"), "{error:?}");
    }

    #[test]
    fn an_unmounted_destination_unknown_to_the_preferences_is_an_error() {
        let source = source_for(&nas(), Ok(&TimeMachinePrefs::default()), None);
        assert_eq!(source.error.map(|e| e.kind), Some(SourceErrorKind::Other));
    }

    #[test]
    fn the_url_loses_a_password() {
        let destination = Destination {
            url: Some("smb://mac:hunter2@nas.local/TimeMachine".to_owned()),
            ..nas()
        };
        let source = source_for(&destination, Ok(&prefs()), None);
        assert_eq!(source.destination, "smb://mac@nas.local/TimeMachine");
    }

    fn nas_source() -> BackupSource {
        BackupSource {
            tool: "time_machine".to_owned(),
            name: "TimeMachine".to_owned(),
            destination: "smb://mac-backup@nas.local/TimeMachine".to_owned(),
            paths: vec!["/".to_owned()],
            scheduled: Some(true),
            ..BackupSource::default()
        }
    }

    fn usb_source() -> BackupSource {
        BackupSource {
            tool: "time_machine".to_owned(),
            name: "Backup USB".to_owned(),
            destination: "/Volumes/Backup USB".to_owned(),
            paths: vec!["/".to_owned()],
            scheduled: Some(true),
            ..BackupSource::default()
        }
    }

    #[tokio::test]
    async fn replay_two_destinations() {
        let host = Host::replay(&testdata("replay-macos-time-machine")).expect("replay loads");
        let facts = crate::checks::backup::collect(&host, &[], &mut Default::default())
            .await
            .expect("facts");
        assert_eq!(
            facts,
            BackupFacts {
                sources: vec![
                    BackupSource {
                        last_success_unix_ms: Some(1_705_251_941_000),
                        last_attempt_unix_ms: Some(1_705_251_898_000),
                        last_attempt_result: Some("success".to_owned()),
                        snapshot_count: Some(5),
                        ..nas_source()
                    },
                    BackupSource {
                        last_success_unix_ms: Some(1_705_254_312_000),
                        last_attempt_unix_ms: Some(1_705_254_270_000),
                        last_attempt_result: Some("success".to_owned()),
                        snapshot_count: Some(4),
                        ..usb_source()
                    },
                ],
                unreadable: Vec::new(),
            }
        );
    }

    #[tokio::test]
    async fn replay_without_full_disk_access() {
        let host =
            Host::replay(&testdata("replay-macos-time-machine-no-fda")).expect("replay loads");
        let facts = crate::checks::backup::collect(&host, &[], &mut Default::default())
            .await
            .expect("facts");
        let denied = format!("permission denied: {PREFERENCES}");
        assert_eq!(
            facts,
            BackupFacts {
                sources: vec![
                    BackupSource {
                        error: Some(SourceError {
                            kind: SourceErrorKind::NoPermission,
                            message: format!(
                                "macOS withheld the Time Machine records: {denied}; {FDA_HINT}"
                            ),
                        }),
                        // The preferences could not be read: unknown.
                        scheduled: None,
                        ..nas_source()
                    },
                    BackupSource {
                        error: Some(SourceError {
                            kind: SourceErrorKind::NoPermission,
                            message: format!(
                                "macOS withheld the Time Machine records: `tmutil listbackups \
                                 -d \"/Volumes/Backup USB\"` exited with status 80: tmutil: \
                                 listbackups requires Full Disk Access privileges.; {denied}; \
                                 {FDA_HINT}"
                            ),
                        }),
                        scheduled: None,
                        ..usb_source()
                    },
                ],
                unreadable: Vec::new(),
            }
        );
    }

    /// A copy of the no-FDA recording with `tmutil destinationinfo -X` answering `stdout` and
    /// `stderr` instead.
    fn no_fda_variant(stdout: &str, stderr: &str) -> tempfile::TempDir {
        let dir = crate::host::copy_recording(&testdata("replay-macos-time-machine-no-fda"));
        let commands = dir.path().join("commands");
        std::fs::write(commands.join("0001.stdout"), stdout).expect("write");
        std::fs::write(commands.join("0001.stderr"), stderr).expect("write");
        dir
    }

    #[tokio::test]
    async fn replay_where_tmutil_prints_nothing_is_one_time_machine_error() {
        let dir = no_fda_variant("", "");
        let host = Host::replay(dir.path()).expect("replay loads");
        let facts = crate::checks::backup::collect(&host, &[], &mut Default::default())
            .await
            .expect("facts");
        assert_eq!(facts.sources.len(), 1);
        let source = &facts.sources[0];
        assert_eq!((source.tool.as_str(), source.name.as_str()), (TOOL, WHOLE));
        assert_eq!(source.snapshot_count, None);
        let error = source.error.as_ref().expect("an error");
        assert_eq!(error.kind, SourceErrorKind::NoPermission);
        assert!(error.message.contains("printed nothing"), "{error:?}");
        assert!(error.message.contains("evident-agent"), "{error:?}");
    }

    #[tokio::test]
    async fn replay_where_only_the_preferences_name_the_destinations() {
        let dir = no_fda_variant("", "");
        std::fs::remove_file(dir.path().join("files.toml")).expect("remove");
        let preferences = dir.path().join("files/Library/Preferences");
        std::fs::create_dir_all(&preferences).expect("mkdir");
        std::fs::copy(
            testdata("macos/com.apple.TimeMachine.plist"),
            preferences.join("com.apple.TimeMachine.plist"),
        )
        .expect("copy");
        let host = Host::replay(dir.path()).expect("replay loads");
        let facts = crate::checks::backup::collect(&host, &[], &mut Default::default())
            .await
            .expect("facts");
        let seen: Vec<(&str, &str, Option<u32>, bool)> = facts
            .sources
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.destination.as_str(),
                    s.snapshot_count,
                    s.error.is_some(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "TimeMachine",
                    "smb://mac-backup@nas.local/TimeMachine",
                    Some(5),
                    false
                ),
                ("Backup USB", "Backup USB", Some(4), false),
            ]
        );
        assert_eq!(
            facts.unreadable,
            [UnreadableFact {
                fact: "time_machine_destinations".to_owned(),
                reason: format!(
                    "`tmutil destinationinfo -X` exited with status 0 and printed nothing; the \
                     destinations are taken from {PREFERENCES}"
                ),
            }]
        );
    }

    #[tokio::test]
    async fn replay_without_destinations_pushes_nothing() {
        let dir = no_fda_variant("", "tmutil: No destinations configured.\n");
        let host = Host::replay(dir.path()).expect("replay loads");
        let facts = crate::checks::backup::collect(&host, &[], &mut Default::default())
            .await
            .expect("facts");
        assert_eq!(facts, BackupFacts::default());
    }

    #[test]
    fn the_replays_run_these_commands() {
        for dir in [
            "replay-macos-time-machine",
            "replay-macos-time-machine-no-fda",
        ] {
            let first = std::fs::read_to_string(testdata(dir).join("commands/0001.toml"))
                .expect("recording");
            assert!(
                first.contains(r#"argv = ["tmutil", "destinationinfo", "-X"]"#),
                "{dir}"
            );
            let second = std::fs::read_to_string(testdata(dir).join("commands/0002.toml"))
                .expect("recording");
            assert!(
                second.contains(r#"argv = ["tmutil", "listbackups", "-d", "/Volumes/Backup USB"]"#),
                "{dir}"
            );
        }
    }
}

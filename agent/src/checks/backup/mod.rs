//! The backup check: per backup source, whether backups run, when the last one succeeded, how
//! many snapshots there are, when the repository was last verified, and whether a restore
//! works (ISO/IEC 27001:2022 A.8.13). Thresholds ("older than 26 hours") are the collector's.
//!
//! Sources are the repositories declared in the agent's configuration (restic, borg, a systemd
//! unit for any other job) plus those the OS itself knows (Time Machine, Windows Server Backup,
//! File History).
//!
//! **Invariant:** no password, passphrase, key or credential reaches these facts: repositories
//! are shown with any user information removed ([`redact_location`]), passwords are handed to
//! the tools as *file paths*, and error messages are taken from the tools' output after
//! redaction.
//!
//! **Invariant:** a source that cannot be read is a source with an [`SourceError`] naming the
//! cause (missing repository, wrong password, locked, not installed, timeout, no Full Disk
//! Access), never a source that merely shows no backups.

use serde::{Deserialize, Serialize};

use super::{CheckError, UnreadableFact};
use crate::host::{Host, OsFamily};

/// What the backup check observed about a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BackupFacts {
    /// Every declared or discovered source, in configuration order, then the OS's own.
    pub sources: Vec<BackupSource>,
    /// Facts it tried to read and could not, with the reason.
    pub unreadable: Vec<UnreadableFact>,
}

/// One backup source: a repository, a destination or a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BackupSource {
    /// `restic`, `borg`, `time_machine`, `windows_server_backup`, `file_history`,
    /// `systemd_unit`.
    pub tool: String,
    pub tool_version: Option<String>,
    /// The configured name, or the destination's name where the OS names it.
    pub name: String,
    /// Repository or destination with credentials removed: `sftp:backup@nas:/srv/restic` keeps
    /// the user, `s3:https://host/bucket` loses the key pair, a password in a URL is dropped.
    pub destination: String,
    /// When the newest successful backup finished (or started, where that is all the tool
    /// records: restic and borg snapshot times are their start).
    pub last_success_unix_ms: Option<i64>,
    /// When the last attempt ran and how it ended, where the tool records failures too.
    pub last_attempt_unix_ms: Option<i64>,
    /// `success`, or the failure as the tool reports it (`exit status 1`, `0x80780049`).
    pub last_attempt_result: Option<String>,
    /// Snapshots, archives or versions kept that match the host/tag filter.
    pub snapshot_count: Option<u32>,
    /// What the newest backup covers.
    pub paths: Vec<String>,
    /// Whether the tool backs up by itself on a schedule: Time Machine's automatic backups, a
    /// Windows Server Backup schedule. `None` where the agent cannot tell (restic and borg are
    /// run by cron jobs or timers it does not see).
    pub scheduled: Option<bool>,
    /// The host and tags the snapshots were filtered by, as configured.
    pub host_filter: Option<String>,
    pub tags: Vec<String>,
    pub repository_size_bytes: Option<u64>,
    /// The last integrity check of the repository (`restic check`, `borg check`).
    pub integrity_check: Option<RunResult>,
    /// The last restore test: a sample of files restored and compared by hash.
    pub restore_test: Option<RunResult>,
    /// Set when the source could not be read; the facts above are then what was known.
    pub error: Option<SourceError>,
}

/// The outcome of an integrity check or a restore test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    pub at_unix_ms: i64,
    pub passed: bool,
    /// For people: what was checked, how much, and what failed.
    pub detail: String,
}

/// Why a source could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceError {
    pub kind: SourceErrorKind,
    /// The tool's own words, redacted, shortened.
    pub message: String,
}

/// The causes a reviewer tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceErrorKind {
    RepositoryMissing,
    WrongPassword,
    Locked,
    NotInstalled,
    Timeout,
    /// macOS withheld the data (Time Machine without Full Disk Access).
    NoPermission,
    /// The configuration points at something unusable (a missing password file).
    Config,
    Other,
}

impl SourceErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceErrorKind::RepositoryMissing => "repository_missing",
            SourceErrorKind::WrongPassword => "wrong_password",
            SourceErrorKind::Locked => "locked",
            SourceErrorKind::NotInstalled => "not_installed",
            SourceErrorKind::Timeout => "timeout",
            SourceErrorKind::NoPermission => "no_permission",
            SourceErrorKind::Config => "config",
            SourceErrorKind::Other => "other",
        }
    }
}

impl BackupSource {
    /// A source of `tool` named `name` at `destination` (redacted here), no facts yet.
    pub fn new(tool: &str, name: &str, destination: &str) -> BackupSource {
        BackupSource {
            tool: tool.to_owned(),
            name: name.to_owned(),
            destination: redact_location(destination),
            ..BackupSource::default()
        }
    }

    pub(crate) fn fail(&mut self, kind: SourceErrorKind, message: &str) {
        self.error = Some(SourceError {
            kind,
            message: redact_message(message),
        });
    }
}

/// A repository location without secrets (see [`crate::host::redact_url`]):
/// `rest:https://user:pass@host/x` -> `rest:https://user@host/x`; a query, which some backends
/// use for keys, is dropped even outside a URL (`azure:c:/p?sig=…`).
pub fn redact_location(location: &str) -> String {
    let mut out = crate::host::redact_url(location);
    if let Some(query) = out.find('?') {
        out.truncate(query);
    }
    out
}

/// A tool's message, shortened, with every URL in it redacted like a location.
pub(crate) fn redact_message(message: &str) -> String {
    let words: Vec<String> = message
        .split_whitespace()
        .map(|word| {
            if word.contains("://") {
                redact_location(word)
            } else {
                word.to_owned()
            }
        })
        .collect();
    let text = words.join(" ");
    match text.char_indices().nth(400) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// What the agent remembers between cycles: each repository's last integrity check and
/// restore test, so that those run on their own, longer interval and are still reported in
/// between. Kept in the agent's state directory; a fresh one runs both at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BackupMemory {
    /// By `tool:name`.
    pub sources: std::collections::BTreeMap<String, Remembered>,
}

/// The remembered runs of one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Remembered {
    pub integrity_check: Option<RunResult>,
    pub restore_test: Option<RunResult>,
}

impl BackupMemory {
    pub(crate) fn entry(&mut self, tool: &str, name: &str) -> &mut Remembered {
        self.sources.entry(format!("{tool}:{name}")).or_default()
    }
}

impl Remembered {
    /// Whether a run last done as `last` is due again after `interval_secs` (never when
    /// `None`).
    pub(crate) fn due(
        last: Option<&RunResult>,
        interval_secs: Option<u64>,
        now_unix_ms: i64,
    ) -> bool {
        let Some(interval) = interval_secs else {
            return false;
        };
        let interval_ms = i64::try_from(interval.saturating_mul(1000)).unwrap_or(i64::MAX);
        last.is_none_or(|run| now_unix_ms.saturating_sub(run.at_unix_ms) >= interval_ms)
    }
}

/// What a restic or borg error message says went wrong.
pub(crate) fn classify(stderr: &str) -> SourceErrorKind {
    let text = stderr.to_ascii_lowercase();
    if text.contains("wrong password")
        || text.contains("passphrase supplied") && text.contains("incorrect")
        || text.contains("no key found")
    {
        SourceErrorKind::WrongPassword
    } else if text.contains("does not exist")
        || text.contains("unable to open config file")
        || text.contains("is not a valid repository")
        || text.contains("no such file or directory")
    {
        SourceErrorKind::RepositoryMissing
    } else if text.contains("already locked")
        || text.contains("unable to create lock")
        || text.contains("failed to create/acquire the lock")
    {
        SourceErrorKind::Locked
    } else {
        SourceErrorKind::Other
    }
}

/// Why a backup tool could not run at all.
pub(crate) fn classify_host_error(error: &crate::host::HostError) -> SourceErrorKind {
    match error {
        crate::host::HostError::ProgramNotFound { .. } => SourceErrorKind::NotInstalled,
        crate::host::HostError::TimedOut { .. } => SourceErrorKind::Timeout,
        _ => SourceErrorKind::Other,
    }
}

/// Collects the backup facts of `host` for the `declared` sources and the OS's own.
pub async fn collect(
    host: &Host,
    declared: &[Declared],
    memory: &mut BackupMemory,
) -> Result<BackupFacts, CheckError> {
    let now = super::now_unix_ms();
    let mut facts = BackupFacts::default();
    for source in declared {
        facts.sources.push(match source {
            Declared::Restic(config) => restic::collect(host, config, memory, now).await,
            Declared::Borg(config) => borg::collect(host, config, memory, now).await,
            Declared::SystemdUnit(config) => systemd_unit::collect(host, config).await,
        });
    }
    match host.os_family() {
        OsFamily::Linux => {}
        OsFamily::Macos => macos::collect(host, &mut facts).await,
        OsFamily::Windows => windows::collect(host, &mut facts).await,
    }
    Ok(facts)
}

mod borg;
mod config;
mod macos;
mod restic;
mod restore;
mod systemd_unit;
mod windows;

pub use config::{BackupFile, BorgSource, Declared, Repository, ResticSource, SystemdUnitSource};

#[cfg(test)]
mod tests;

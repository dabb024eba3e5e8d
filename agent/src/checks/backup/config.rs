//! The `[backup]` section of `agent.toml`: the repositories and jobs this endpoint backs up to.
//!
//! ```toml
//! [[backup.restic]]
//! name = "home"                                  # optional; defaults to the repository
//! repository = "/srv/restic/home"                # any restic location; credentials are redacted
//! password_file = "/etc/evident/restic-home.pass"
//! host = "laptop42"                              # optional snapshot filters
//! tags = ["daily"]
//! check_interval_secs = 604800                   # `restic check`; 0 = never (default a week)
//! check_read_data_subset = "2%"                  # optional: also read this much pack data
//! restore_test_interval_secs = 604800            # 0 = never (default a week)
//! check_timeout_secs = 3600                      # how long the integrity check may run
//!
//! [[backup.borg]]
//! repository = "ssh://backup@nas/./borg/laptop42"
//! passphrase_file = "/etc/evident/borg.pass"     # omit for an unencrypted repository
//!
//! [[backup.systemd_unit]]
//! name = "veeam"
//! unit = "veeamjob.service"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

const DEFAULT_CHECK_INTERVAL_SECS: u64 = 7 * 86_400;
const DEFAULT_RESTORE_TEST_INTERVAL_SECS: u64 = 7 * 86_400;
/// The restore test restores at most this many files …
const DEFAULT_RESTORE_TEST_FILES: u32 = 3;
/// … of at most this size each, so that it stays cheap on a laptop.
const DEFAULT_RESTORE_TEST_MAX_BYTES: u64 = 4 * 1024 * 1024;
/// A restored file is held in memory through the host layer, which keeps at most this much of
/// a program's output.
const MAX_RESTORE_TEST_MAX_BYTES: u64 = crate::host::MAX_STREAM_BYTES as u64;
/// `restic check` and `borg check` read a whole repository's structure: far longer than the
/// other commands' timeout. The integrity check runs weekly, so a long one is affordable.
const DEFAULT_CHECK_TIMEOUT_SECS: u64 = 3600;

/// `[backup]` as written; unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupFile {
    #[serde(default)]
    pub restic: Vec<RepositoryFile>,
    #[serde(default)]
    pub borg: Vec<RepositoryFile>,
    #[serde(default)]
    pub systemd_unit: Vec<UnitFile>,
}

/// One `[[backup.restic]]` or `[[backup.borg]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryFile {
    pub name: Option<String>,
    pub repository: Option<String>,
    /// restic's password file.
    pub password_file: Option<PathBuf>,
    /// borg's passphrase file.
    pub passphrase_file: Option<PathBuf>,
    pub host: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub check_interval_secs: Option<u64>,
    pub check_read_data_subset: Option<String>,
    pub restore_test_interval_secs: Option<u64>,
    pub restore_test_files: Option<u32>,
    pub restore_test_max_bytes: Option<u64>,
    pub check_timeout_secs: Option<u64>,
}

/// One `[[backup.systemd_unit]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitFile {
    pub name: Option<String>,
    pub unit: Option<String>,
}

/// A validated backup source the agent was told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declared {
    Restic(ResticSource),
    Borg(BorgSource),
    SystemdUnit(SystemdUnitSource),
}

/// A restic repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResticSource {
    pub repository: Repository,
    pub password_file: PathBuf,
}

/// A borg repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BorgSource {
    pub repository: Repository,
    /// `None` for an unencrypted repository.
    pub passphrase_file: Option<PathBuf>,
}

/// What restic and borg sources share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub name: String,
    pub location: String,
    pub host: Option<String>,
    pub tags: Vec<String>,
    /// `None`: never run the integrity check.
    pub check_interval_secs: Option<u64>,
    pub check_read_data_subset: Option<String>,
    /// `None`: never run the restore test.
    pub restore_test_interval_secs: Option<u64>,
    pub restore_test_files: u32,
    pub restore_test_max_bytes: u64,
    /// How long `restic check` / `borg check` may run before it is stopped.
    pub check_timeout: std::time::Duration,
}

/// A systemd unit whose last run is the evidence of some other backup job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdUnitSource {
    pub name: String,
    pub unit: String,
}

impl BackupFile {
    /// Validates every source; a bad one is refused with its key path named, e.g.
    /// `backup.restic[1].password_file: /etc/x.pass cannot be read: No such file or directory`.
    pub fn validate(&self) -> Result<Vec<Declared>, String> {
        let mut out = Vec::new();
        for (i, file) in self.restic.iter().enumerate() {
            let key = format!("backup.restic[{i}]");
            if file.passphrase_file.is_some() {
                return Err(format!(
                    "{key}.passphrase_file: restic takes password_file (passphrase_file is borg's)"
                ));
            }
            let password_file = file.password_file.clone().ok_or_else(|| {
                format!(
                    "{key}.password_file is missing: restic needs the repository password in a file"
                )
            })?;
            readable(&format!("{key}.password_file"), &password_file)?;
            out.push(Declared::Restic(ResticSource {
                repository: repository(&key, file)?,
                password_file,
            }));
        }
        for (i, file) in self.borg.iter().enumerate() {
            let key = format!("backup.borg[{i}]");
            if file.password_file.is_some() {
                return Err(format!(
                    "{key}.password_file: borg takes passphrase_file (password_file is restic's)"
                ));
            }
            if let Some(path) = &file.passphrase_file {
                readable(&format!("{key}.passphrase_file"), path)?;
                // The file is handed to borg as BORG_PASSCOMMAND="cat 'PATH'".
                if path.to_string_lossy().contains('\'') {
                    return Err(format!(
                        "{key}.passphrase_file {} contains a single quote: move the file to a plainer path",
                        path.display()
                    ));
                }
            }
            let passphrase_file = file.passphrase_file.clone();
            out.push(Declared::Borg(BorgSource {
                repository: repository(&key, file)?,
                passphrase_file,
            }));
        }
        for (i, file) in self.systemd_unit.iter().enumerate() {
            let key = format!("backup.systemd_unit[{i}]");
            let unit = file
                .unit
                .clone()
                .filter(|u| !u.trim().is_empty())
                .ok_or_else(|| {
                    format!("{key}.unit is missing: name the unit, e.g. \"veeamjob.service\"")
                })?;
            if unit.starts_with('-') || unit.contains(char::is_whitespace) {
                return Err(format!("{key}.unit {unit:?} is not a unit name"));
            }
            out.push(Declared::SystemdUnit(SystemdUnitSource {
                name: file.name.clone().unwrap_or_else(|| unit.clone()),
                unit,
            }));
        }
        let mut names: Vec<(&str, &str)> = out.iter().map(|d| (d.tool(), d.name())).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "backup: two {} sources are named {:?}: give each a distinct name",
                pair[0].0, pair[0].1
            ));
        }
        Ok(out)
    }
}

impl Declared {
    pub fn tool(&self) -> &'static str {
        match self {
            Declared::Restic(_) => "restic",
            Declared::Borg(_) => "borg",
            Declared::SystemdUnit(_) => "systemd_unit",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Declared::Restic(s) => &s.repository.name,
            Declared::Borg(s) => &s.repository.name,
            Declared::SystemdUnit(s) => &s.name,
        }
    }
}

fn repository(key: &str, file: &RepositoryFile) -> Result<Repository, String> {
    let location = file
        .repository
        .clone()
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| format!("{key}.repository is missing: give the repository location"))?;
    if location.starts_with('-') {
        return Err(format!(
            "{key}.repository {location:?} looks like an option, not a location"
        ));
    }
    let interval = |name: &str, value: Option<u64>, default: u64| -> Result<Option<u64>, String> {
        match value.unwrap_or(default) {
            0 => Ok(None),
            secs if secs < 3600 => Err(format!(
                "{key}.{name} is {secs}: use 0 (never) or at least 3600 seconds"
            )),
            secs => Ok(Some(secs)),
        }
    };
    if let Some(subset) = &file.check_read_data_subset
        && !valid_subset(subset)
    {
        return Err(format!(
            "{key}.check_read_data_subset {subset:?} is not a subset: use \"n/t\", \"x%\" or a size such as \"500M\""
        ));
    }
    let restore_test_files = file
        .restore_test_files
        .unwrap_or(DEFAULT_RESTORE_TEST_FILES);
    if !(1..=100).contains(&restore_test_files) {
        return Err(format!(
            "{key}.restore_test_files is {restore_test_files}: it must be between 1 and 100"
        ));
    }
    let restore_test_max_bytes = file
        .restore_test_max_bytes
        .unwrap_or(DEFAULT_RESTORE_TEST_MAX_BYTES);
    if !(1..=MAX_RESTORE_TEST_MAX_BYTES).contains(&restore_test_max_bytes) {
        return Err(format!(
            "{key}.restore_test_max_bytes is {restore_test_max_bytes}: it must be between 1 and {MAX_RESTORE_TEST_MAX_BYTES} (8 MiB)"
        ));
    }
    let check_timeout_secs = file
        .check_timeout_secs
        .unwrap_or(DEFAULT_CHECK_TIMEOUT_SECS);
    if !(60..=86_400).contains(&check_timeout_secs) {
        return Err(format!(
            "{key}.check_timeout_secs is {check_timeout_secs}: it must be between 60 and 86400"
        ));
    }
    Ok(Repository {
        name: file
            .name
            .clone()
            .unwrap_or_else(|| super::redact_location(&location)),
        host: file.host.clone(),
        tags: file.tags.clone(),
        check_interval_secs: interval(
            "check_interval_secs",
            file.check_interval_secs,
            DEFAULT_CHECK_INTERVAL_SECS,
        )?,
        check_read_data_subset: file.check_read_data_subset.clone(),
        restore_test_interval_secs: interval(
            "restore_test_interval_secs",
            file.restore_test_interval_secs,
            DEFAULT_RESTORE_TEST_INTERVAL_SECS,
        )?,
        restore_test_files,
        restore_test_max_bytes,
        check_timeout: std::time::Duration::from_secs(check_timeout_secs),
        location,
    })
}

/// restic's `--read-data-subset`: `n/t`, `x%` or a size (`500M`).
fn valid_subset(subset: &str) -> bool {
    if let Some((n, t)) = subset.split_once('/') {
        return n.parse::<u32>().is_ok_and(|n| n > 0) && t.parse::<u32>().is_ok_and(|t| t > 0);
    }
    if let Some(p) = subset.strip_suffix('%') {
        return p.parse::<f64>().is_ok_and(|p| p > 0.0 && p <= 100.0);
    }
    let digits = subset.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    !digits.is_empty() && digits.parse::<u64>().is_ok()
}

/// A secret file must be readable now: a typo found at start beats a backup source that
/// errors every cycle. Its content is not kept.
fn readable(key: &str, path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("{key}: {} cannot be read: {e}", path.display()))
}

#[cfg(test)]
mod tests;

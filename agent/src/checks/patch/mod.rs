//! The patch check: pending updates, security classification, last install, metadata age,
//! automatic-update configuration and pending reboots (ISO/IEC 27001:2022 A.8.8).
//!
//! The agent reports facts; whether "3 security updates pending for 9 days" is a deviation is
//! the collector's policy (DESIGN principle 1). Each package manager has its own module with pure
//! parsers over the text its sources print, tested against fixtures in `testdata/`; only
//! `collect` in each module talks to the [`Host`].
//!
//! **Invariant:** the pending list is either what the package manager said, or the check is an
//! error outcome: "0 pending" is never reported for a source that could not be read. Facts other
//! than the pending list (last install, metadata age, automatic updates, reboot) may each be
//! unreadable; such a fact is `None` and listed in [`PatchFacts::unreadable`] with the reason.
//!
//! **Invariant:** the check never refreshes package metadata or changes anything on the host: a
//! stale cache is reported through [`PatchFacts::metadata_refreshed_unix_ms`], not fixed.

mod apt;
mod dnf;
mod local_time;
mod macos;
mod windows;
mod zypper;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub(crate) use local_time::LocalClock;

pub(crate) use super::{first_lines, run_expecting};

use super::{CheckError, UnreadableFact};
use crate::host::{Host, HostError, OsFamily};

/// What the patch check observed about a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchFacts {
    /// The package managers or update services that were asked, with their versions.
    pub managers: Vec<PackageManager>,
    /// Every update the package manager offers and has not installed, in its own order.
    pub pending: Vec<PendingUpdate>,
    /// When updates were last installed successfully (any package upgraded or a patch applied).
    pub last_install_unix_ms: Option<i64>,
    /// When the package metadata was last refreshed: "0 pending" from a cache months old says
    /// nothing, so its age is evidence too.
    pub metadata_refreshed_unix_ms: Option<i64>,
    pub automatic_updates: Option<AutomaticUpdates>,
    pub reboot: RebootFacts,
    /// Facts it tried to read and could not, with the reason (an absent fact is never silent).
    /// Fact names: `last_install`, `metadata_refreshed`, `automatic_updates`, `reboot`,
    /// `held`, `manager_version` and source-specific ones such as `security_classification`.
    pub unreadable: Vec<UnreadableFact>,
}

/// A package manager or update service and its version, e.g. `apt` `2.6.1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageManager {
    /// `apt`, `dnf`, `yum`, `zypper`, `softwareupdate` or `windows_update`.
    pub name: String,
    pub version: Option<String>,
}

/// One update that is offered and not installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PendingUpdate {
    /// The package name (`openssl`), the macOS update label, or the Windows update title.
    pub name: String,
    /// `amd64`, `x86_64`, `noarch`; `None` where the source has no architecture.
    pub architecture: Option<String>,
    /// The installed version; `None` for an update that is not a package upgrade (a Windows
    /// update, a macOS update) or where the source does not say.
    pub installed_version: Option<String>,
    /// The version the update brings; `None` where the source does not say.
    pub available_version: Option<String>,
    /// Whether the source classifies this update as a security update.
    pub security: bool,
    /// Where `security` came from, so that a reviewer can judge it: e.g.
    /// `apt origin Debian-Security:12/bookworm-security`, `dnf updateinfo`,
    /// `zypper patch category`, `Windows Update category`, `softwareupdate title`.
    pub classification_source: String,
    /// Repositories, pockets or catalogs that offer it: `Debian-Security:12/bookworm-security`,
    /// `updates`, `baseos`.
    pub origins: Vec<String>,
    /// Advisory ids: `RHSA-2024:1234`, `FEDORA-2024-abc`, `openSUSE-SU-2024:0001-1`, `KB5034441`,
    /// `DSA-5555-1`.
    pub advisories: Vec<String>,
    /// The source's severity as it spells it: `Important`, `critical`, `Critical`.
    pub severity: Option<String>,
    /// Held back on purpose (`apt-mark hold`, `zypper addlock`, `dnf versionlock`): the package
    /// manager will not install it.
    pub held: bool,
    /// Deferred by phased rollout (Ubuntu): offered, but not to this host yet.
    pub phased: bool,
    /// Whether installing it needs a restart, where the source says (macOS, Windows).
    pub restart_required: Option<bool>,
}

/// Whether updates install themselves, and through what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutomaticUpdates {
    /// `unattended-upgrades`, `dnf-automatic`, `yum-cron`, `zypper` (a timer), `softwareupdate`
    /// or `windows_update`.
    pub mechanism: String,
    /// Whether updates are installed without a person (not merely downloaded or notified).
    pub install_enabled: bool,
    /// The settings that led to `install_enabled`, as the source spells them, e.g.
    /// `APT::Periodic::Unattended-Upgrade "1"`, `apply_updates = yes`, `AUOptions = 4`.
    pub settings: Vec<String>,
}

/// Whether the host must restart to finish updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RebootFacts {
    /// `None` when no source could be read (then `unreadable` names `reboot`).
    pub required: Option<bool>,
    /// Every reason found; empty when `required` is `Some(false)`.
    pub reasons: Vec<RebootReason>,
    /// Since when a restart has been required, where a source says (the marker file's time).
    pub since_unix_ms: Option<i64>,
}

/// One reason a restart is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootReason {
    /// What said so: `reboot_required_file`, `kernel` (running kernel older than the newest
    /// installed), `needs_restarting`, `zypper_needs_rebooting`, `registry` (Windows markers),
    /// `update` (a pending update that needs a restart).
    pub source: String,
    /// For people: the packages, the kernels, the registry key.
    pub detail: String,
}

impl PatchFacts {
    /// No facts yet, reported by `managers`.
    pub fn new(managers: Vec<PackageManager>) -> PatchFacts {
        PatchFacts {
            managers,
            pending: Vec::new(),
            last_install_unix_ms: None,
            metadata_refreshed_unix_ms: None,
            automatic_updates: None,
            reboot: RebootFacts::default(),
            unreadable: Vec::new(),
        }
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    pub fn pending_security_count(&self) -> usize {
        self.pending.iter().filter(|u| u.security).count()
    }

    /// Records why `fact` could not be read.
    pub(crate) fn unreadable(&mut self, fact: &str, reason: impl Into<String>) {
        self.unreadable.push(UnreadableFact {
            fact: fact.to_owned(),
            reason: reason.into(),
        });
    }

    /// Sets a timestamp fact, or records why it could not be read.
    pub(crate) fn set_time(&mut self, fact: TimeFact, value: Result<i64, String>) {
        match value {
            Ok(ms) => match fact {
                TimeFact::LastInstall => self.last_install_unix_ms = Some(ms),
                TimeFact::MetadataRefreshed => self.metadata_refreshed_unix_ms = Some(ms),
            },
            Err(reason) => self.unreadable(fact.as_str(), reason),
        }
    }

    /// Sets the automatic-update configuration, or records why it could not be read.
    pub(crate) fn set_automatic_updates(&mut self, value: Result<AutomaticUpdates, String>) {
        match value {
            Ok(value) => self.automatic_updates = Some(value),
            Err(reason) => self.unreadable("automatic_updates", reason),
        }
    }

    /// Sets the reboot facts, or records why they could not be read.
    pub(crate) fn set_reboot(&mut self, value: Result<RebootFacts, String>) {
        match value {
            Ok(value) => self.reboot = value,
            Err(reason) => self.unreadable("reboot", reason),
        }
    }
}

/// The timestamp facts of [`PatchFacts`], by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeFact {
    LastInstall,
    MetadataRefreshed,
}

impl TimeFact {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TimeFact::LastInstall => "last_install",
            TimeFact::MetadataRefreshed => "metadata_refreshed",
        }
    }
}

impl RebootFacts {
    /// Combines reasons found by several sources: required when any reason was found.
    pub(crate) fn from_reasons(reasons: Vec<RebootReason>, since_unix_ms: Option<i64>) -> Self {
        RebootFacts {
            required: Some(!reasons.is_empty()),
            since_unix_ms: since_unix_ms.filter(|_| !reasons.is_empty()),
            reasons,
        }
    }
}

/// Collects the patch facts of `host`, dispatching on the observed host's OS family and, on
/// Linux, on the package manager found.
pub async fn collect(host: &Host) -> Result<PatchFacts, CheckError> {
    match host.os_family() {
        OsFamily::Linux => collect_linux(host).await,
        OsFamily::Macos => macos::collect(host).await,
        OsFamily::Windows => windows::collect(host).await,
    }
}

/// The Linux package managers, in the order they are looked for. A host with several (apt on a
/// Fedora toolbox, say) is judged by the first that answers.
async fn collect_linux(host: &Host) -> Result<PatchFacts, CheckError> {
    let mut absent = Vec::new();
    for (program, args) in [
        ("apt-get", &["--version"][..]),
        ("dnf", &["--version"][..]),
        ("yum", &["--version"][..]),
        ("zypper", &["--version"][..]),
    ] {
        match host.run(program, args).await {
            Ok(output) => {
                let version = output.success().then_some(()).and_then(|()| match program {
                    "apt-get" => apt::parse_version(&output.stdout),
                    "zypper" => zypper::parse_version(&output.stdout),
                    _ => dnf::parse_version(&output.stdout),
                });
                return match program {
                    "apt-get" => apt::collect(host, version).await,
                    "zypper" => zypper::collect(host, version).await,
                    "dnf" => dnf::collect(host, dnf::Flavour::Dnf, version).await,
                    _ => dnf::collect(host, dnf::Flavour::Yum, version).await,
                };
            }
            Err(error @ (HostError::ProgramNotFound { .. } | HostError::NotRecorded { .. })) => {
                absent.push(error.to_string());
            }
            Err(error) => {
                return Err(CheckError::new(format!(
                    "could not tell whether {program} is installed"
                ))
                .with_source(error.to_string()));
            }
        }
    }
    Err(CheckError::new(
        "unsupported: no supported package manager found (apt-get, dnf, yum, zypper)",
    )
    .with_source(absent.join("; ")))
}

/// `find … -printf '%T@ %p\n'` output: path -> modification time in milliseconds. One `find`
/// is how the package-manager modules read file times, so that they are recorded and replayed
/// like any other command.
pub(crate) fn parse_file_times(stdout: &str) -> BTreeMap<String, i64> {
    stdout
        .lines()
        .filter_map(|line| {
            let (secs, path) = line.split_once(' ')?;
            let secs: f64 = secs.parse().ok()?;
            #[allow(clippy::cast_possible_truncation)]
            let ms = (secs * 1000.0).round() as i64;
            Some((path.to_owned(), ms))
        })
        .collect()
}

/// The state `systemctl is-enabled UNIT` prints (`enabled`, `disabled`, `masked`, …); older
/// systemd prints nothing for a unit it does not know (the reason goes to stderr).
pub(crate) async fn unit_enabled_state(host: &Host, unit: &str) -> Result<String, String> {
    let output = run_expecting(host, "systemctl", &["is-enabled", unit], &[0, 1]).await?;
    Ok(output
        .stdout
        .lines()
        .next()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("not-found")
        .to_owned())
}

#[cfg(test)]
mod tests;

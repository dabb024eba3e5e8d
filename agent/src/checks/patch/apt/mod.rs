//! Debian and Ubuntu: apt.
//!
//! Sources, all read-only (the check never runs `apt update` and takes no lock):
//! - `apt-get -s dist-upgrade` (a simulation): every upgrade with installed and candidate version
//!   and the origins (`Debian-Security:12/bookworm-security`) that offer it, plus the packages
//!   kept back and, on Ubuntu, those deferred by phasing;
//! - `apt-mark showhold` and `apt-cache policy` for the kept-back ones;
//! - `/var/log/apt/history.log` and its rotated `.gz` files for the last upgrade;
//! - file times from one `find` for the metadata refresh, the reboot marker and the kernels;
//! - `/var/run/reboot-required(.pkgs)`; `apt-config dump` and `dpkg-query` for
//!   unattended-upgrades.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;

use super::{
    AutomaticUpdates, LocalClock, PackageManager, PatchFacts, PendingUpdate, RebootFacts,
    RebootReason, TimeFact, first_lines, parse_file_times, run_expecting,
};
use crate::checks::CheckError;
use crate::host::{Host, HostError};

const SIMULATE: &[&str] = &["-s", "-o", "Debug::NoLocking=true", "dist-upgrade"];
const REBOOT_REQUIRED: &str = "/var/run/reboot-required";
const REBOOT_REQUIRED_PKGS: &str = "/var/run/reboot-required.pkgs";
const LISTS: &str = "/var/lib/apt/lists";
const UPDATE_STAMP: &str = "/var/lib/apt/periodic/update-success-stamp";
const LOG_DIR: &str = "/var/log/apt";
const RUNNING_KERNEL: &str = "/proc/sys/kernel/osrelease";
/// One `find` gives every file time the check needs; a missing start point (no reboot marker,
/// no /boot in a container) only makes it exit 1.
const FIND_TIMES: &[&str] = &[
    "/var/run/reboot-required",
    "/var/lib/apt/periodic",
    "/var/lib/apt/lists",
    "/var/log/apt",
    "/boot",
    "-maxdepth",
    "1",
    "-printf",
    "%T@ %p\\n",
];
const CLASSIFICATION: &str = "apt origin";

/// The version from `apt-get --version`: `apt 2.6.1 (amd64)` -> `2.6.1`.
pub(super) fn parse_version(stdout: &str) -> Option<String> {
    let first = stdout.lines().next()?;
    let mut words = first.split_whitespace();
    (words.next() == Some("apt")).then_some(())?;
    words.next().map(str::to_owned)
}

pub(super) async fn collect(
    host: &Host,
    version: Option<String>,
) -> Result<PatchFacts, CheckError> {
    let mut facts = PatchFacts::new(vec![PackageManager {
        name: "apt".to_owned(),
        version,
    }]);

    let simulation = run_expecting(host, "apt-get", SIMULATE, &[0])
        .await
        .and_then(|output| parse_simulation(&output.stdout))
        .map_err(|reason| {
            CheckError::new("could not list pending updates with apt-get").with_source(reason)
        })?;
    facts.pending = simulation.upgrades;
    if !simulation.kept_back.is_empty() || !simulation.phased.is_empty() {
        kept_back(host, &simulation.kept_back, &simulation.phased, &mut facts).await;
    }

    let times = match run_expecting(host, "find", FIND_TIMES, &[0, 1]).await {
        Ok(output) => Ok(parse_file_times(&output.stdout)),
        Err(reason) => Err(reason),
    };
    let clock = LocalClock::of(host).await;
    facts.set_time(
        TimeFact::LastInstall,
        match (&times, &clock) {
            (Ok(times), Ok(clock)) => last_upgrade(host, times, clock).await,
            (Err(reason), _) | (_, Err(reason)) => Err(reason.clone()),
        },
    );
    facts.set_time(
        TimeFact::MetadataRefreshed,
        times
            .as_ref()
            .map_err(Clone::clone)
            .and_then(metadata_refreshed),
    );
    facts.set_automatic_updates(automatic_updates(host).await);
    let reboot = match &times {
        Ok(times) => reboot(host, times).await,
        Err(reason) => Err(reason.clone()),
    };
    facts.set_reboot(reboot);
    Ok(facts)
}

/// Kept-back packages are pending too: held on purpose, deferred by phasing, or waiting for a
/// dependency. Their versions come from `apt-cache policy`.
async fn kept_back(host: &Host, kept: &[String], phased: &[String], facts: &mut PatchFacts) {
    let held = match run_expecting(host, "apt-mark", &["showhold"], &[0]).await {
        Ok(output) => output
            .stdout
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        Err(reason) => {
            facts.unreadable("held", reason);
            BTreeSet::new()
        }
    };
    let names: Vec<&str> = kept.iter().chain(phased).map(String::as_str).collect();
    let mut args = vec!["policy"];
    args.extend(&names);
    let policies = match run_expecting(host, "apt-cache", &args, &[0]).await {
        Ok(output) => parse_policy(&output.stdout),
        Err(reason) => {
            facts.unreadable("kept_back_versions", reason);
            BTreeMap::new()
        }
    };
    for name in names {
        let policy = policies.get(name);
        let origins = policy
            .map(|p| p.candidate_origins.clone())
            .unwrap_or_default();
        facts.pending.push(PendingUpdate {
            name: name.to_owned(),
            architecture: None,
            installed_version: policy.and_then(|p| p.installed.clone()),
            available_version: policy.and_then(|p| p.candidate.clone()),
            security: origins.iter().any(|o| is_security_suite(o)),
            classification_source: CLASSIFICATION.to_owned(),
            origins,
            held: held.contains(name),
            phased: phased.iter().any(|p| p == name),
            ..PendingUpdate::default()
        });
    }
}

/// What `apt-get -s dist-upgrade` would do.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Simulation {
    /// `Inst` lines for packages already installed: the pending upgrades.
    pub upgrades: Vec<PendingUpdate>,
    /// "The following packages have been kept back:"
    pub kept_back: Vec<String>,
    /// "The following upgrades have been deferred due to phasing:" (Ubuntu, apt >= 2.3)
    pub phased: Vec<String>,
}

/// Parses the simulation. `Inst` lines look like
/// `Inst libssl3 [3.0.11-1~deb12u1] (3.0.11-1~deb12u2 Debian-Security:12/stable-security [amd64]) []`,
/// with several origins separated by `, `; a line without `[installed]` is a new package pulled
/// in as a dependency, not an update. The output must end its header ("Calculating upgrade")
/// or contain an `Inst` line or a summary, so truncated output is refused.
pub(crate) fn parse_simulation(stdout: &str) -> Result<Simulation, String> {
    let mut simulation = Simulation::default();
    let mut section: Option<&mut Vec<String>> = None;
    let mut complete = false;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("Inst ") {
            section = None;
            if let Some(update) = parse_inst(rest)? {
                simulation.upgrades.push(update);
            }
            continue;
        }
        if line.starts_with("  ") {
            if let Some(list) = section.as_mut() {
                list.extend(line.split_whitespace().map(str::to_owned));
            }
            continue;
        }
        section = None;
        if line.contains(" upgraded, ") && line.contains(" newly installed") {
            complete = true;
        } else if line.starts_with("The following packages have been kept back") {
            section = Some(&mut simulation.kept_back);
        } else if line.starts_with("The following upgrades have been deferred due to phasing") {
            section = Some(&mut simulation.phased);
        }
    }
    if !complete {
        return Err(format!(
            "apt-get printed no summary line (\"N upgraded, N newly installed, ...\"), so its output is incomplete: {}",
            first_lines(stdout.trim(), 3)
        ));
    }
    // A phased package is listed as kept back by older apt too; keep it once, as phased.
    simulation
        .kept_back
        .retain(|name| !simulation.phased.contains(name));
    Ok(simulation)
}

/// One `Inst` line after the keyword; `None` for a newly installed package.
fn parse_inst(rest: &str) -> Result<Option<PendingUpdate>, String> {
    let bad = || format!("unexpected apt-get line: Inst {rest}");
    let (name, rest) = rest.split_once(' ').ok_or_else(bad)?;
    let Some(rest) = rest.strip_prefix('[') else {
        return Ok(None);
    };
    let (installed, rest) = rest.split_once("] (").ok_or_else(bad)?;
    let (candidate, rest) = rest.split_once(' ').ok_or_else(bad)?;
    // The origins run up to the architecture in brackets before the closing parenthesis; a
    // trailing `[]` or `[perl:amd64 ]` after it lists packages broken meanwhile.
    let (inner, _) = rest.split_once("])").ok_or_else(bad)?;
    let (origins, arch) = inner.rsplit_once(" [").ok_or_else(bad)?;
    let origins: Vec<String> = origins
        .split(", ")
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect();
    let (name, arch) = match name.split_once(':') {
        Some((name, arch)) => (name, arch),
        None => (name, arch),
    };
    Ok(Some(PendingUpdate {
        name: name.to_owned(),
        architecture: Some(arch.to_owned()),
        installed_version: Some(installed.to_owned()),
        available_version: Some(candidate.to_owned()),
        security: origins.iter().any(|o| is_security_suite(o)),
        classification_source: CLASSIFICATION.to_owned(),
        origins,
        ..PendingUpdate::default()
    }))
}

/// Whether an origin names a security pocket: `Debian-Security:12/bookworm-security`,
/// `Ubuntu:22.04/jammy-security`, `UbuntuESMApps:22.04/jammy-apps-security`, or from
/// `apt-cache policy` `bookworm-security/main`. This is the rule unattended-upgrades' default
/// configuration uses too (the `-security` archive).
fn is_security_suite(origin: &str) -> bool {
    let suite = origin.rsplit_once('/').map_or(origin, |(head, tail)| {
        // "…/bookworm-security" or "bookworm-security/main"
        if tail.ends_with("-security") {
            tail
        } else {
            head
        }
    });
    let suite = suite.rsplit(['/', ':', ' ']).next().unwrap_or(suite);
    suite.ends_with("-security")
}

/// A package's lines in `apt-cache policy`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    pub installed: Option<String>,
    pub candidate: Option<String>,
    /// The suites offering the candidate, e.g. `bookworm-security/main`.
    pub candidate_origins: Vec<String>,
}

/// Parses `apt-cache policy NAME...` (run with `LC_ALL=C`).
pub(crate) fn parse_policy(stdout: &str) -> BTreeMap<String, Policy> {
    let mut out: BTreeMap<String, Policy> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_candidate = false;
    for line in stdout.lines() {
        if !line.starts_with(' ') {
            if let Some(name) = line.strip_suffix(':') {
                current = Some(name.to_owned());
                out.entry(name.to_owned()).or_default();
            }
            in_candidate = false;
            continue;
        }
        let Some(policy) = current.as_ref().and_then(|name| out.get_mut(name)) else {
            continue;
        };
        let trimmed = line.trim();
        let none = |v: &str| (v != "(none)").then(|| v.to_owned());
        if let Some(v) = trimmed.strip_prefix("Installed: ") {
            policy.installed = none(v);
        } else if let Some(v) = trimmed.strip_prefix("Candidate: ") {
            policy.candidate = none(v);
        } else if let Some(version) = version_line(line) {
            in_candidate = policy.candidate.as_deref() == Some(version);
        } else if in_candidate {
            // "        500 http://deb.debian.org/debian bookworm-security/main amd64 Packages"
            let words: Vec<&str> = trimmed.split_whitespace().collect();
            if words.len() >= 3 && words[1].contains("://") {
                policy.candidate_origins.push(words[2].to_owned());
            }
        }
    }
    out
}

/// The version of a version-table line: `" *** 1.0 500"` or `"     1.1 500"` -> the version.
fn version_line(line: &str) -> Option<&str> {
    let body = line
        .strip_prefix(" *** ")
        .or_else(|| line.strip_prefix("     "))?;
    if body.starts_with(' ') {
        return None;
    }
    let mut words = body.split_whitespace();
    let version = words.next()?;
    let priority = words.next()?;
    (words.next().is_none() && priority.parse::<i32>().is_ok()).then_some(version)
}

/// The newest sign of a metadata refresh: apt keeps each Release file's server time, so the
/// newest one says how fresh the metadata is; `partial/` changes at each fetch; APT::Periodic
/// stamps a successful update.
fn metadata_refreshed(times: &BTreeMap<String, i64>) -> Result<i64, String> {
    times
        .iter()
        .filter(|(path, _)| {
            path.as_str() == UPDATE_STAMP
                || path.as_str() == format!("{LISTS}/partial")
                || (path.starts_with(LISTS) && path.ends_with("Release"))
        })
        .map(|(_, &ms)| ms)
        .max()
        .ok_or_else(|| {
            format!("no Release files in {LISTS}: package metadata was never downloaded")
        })
}

/// The end of the newest successful run that upgraded packages, reading `history.log` and then
/// its rotations (`history.log.1.gz`, …) until one has such a run.
async fn last_upgrade(
    host: &Host,
    times: &BTreeMap<String, i64>,
    clock: &LocalClock,
) -> Result<i64, String> {
    let mut logs: Vec<(u32, &str)> = times
        .keys()
        .filter_map(|path| {
            let name = path.strip_prefix(LOG_DIR)?.strip_prefix("/history.log")?;
            let rotation = match name {
                "" => 0,
                rest => rest
                    .strip_prefix('.')?
                    .trim_end_matches(".gz")
                    .parse()
                    .ok()?,
            };
            Some((rotation, path.as_str()))
        })
        .collect();
    logs.sort_unstable();
    if logs.is_empty() {
        return Err(format!(
            "no {LOG_DIR}/history.log: apt has recorded no installs"
        ));
    }
    for (_, path) in &logs {
        let bytes = host.read_bytes(path).await.map_err(|e| e.to_string())?;
        let text = if path.ends_with(".gz") {
            gunzip(&bytes).map_err(|e| format!("{path} is not valid gzip: {e}"))?
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        if let Some(end) = parse_history(&text)
            .into_iter()
            .rev()
            .find(|r| r.upgraded > 0 && !r.failed)
        {
            return clock
                .parse(&end.end, "%Y-%m-%d %H:%M:%S")
                .map_err(|e| format!("End-Date in {path}: {e}"));
        }
    }
    Err(format!(
        "no successful upgrade in {}",
        logs.iter().map(|(_, p)| *p).collect::<Vec<_>>().join(", ")
    ))
}

fn gunzip(bytes: &[u8]) -> std::io::Result<String> {
    let mut text = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(crate::host::MAX_FILE_BYTES as u64 * 8)
        .read_to_end(&mut text)?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// One run in `history.log`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HistoryRun {
    /// `End-Date`, local time with double spaces collapsed: `2024-01-10 12:00:05`.
    pub end: String,
    /// Packages listed under `Upgrade:`.
    pub upgraded: usize,
    /// The run logged an `Error:` line.
    pub failed: bool,
}

/// Parses `history.log`: stanzas of `Start-Date:`, `Commandline:`, `Install:`/`Upgrade:`/…,
/// `Error:` and `End-Date:`. A run cut off without `End-Date` (a crash) is skipped.
pub(crate) fn parse_history(text: &str) -> Vec<HistoryRun> {
    let mut runs = Vec::new();
    let (mut upgraded, mut failed) = (0, false);
    for line in text.lines() {
        if line.starts_with("Start-Date:") {
            (upgraded, failed) = (0, false);
        } else if let Some(list) = line.strip_prefix("Upgrade: ") {
            // "libc6:amd64 (2.36-9, 2.36-9+deb12u1), libudev1:amd64 (…)"
            upgraded += list.matches("), ").count() + 1;
        } else if line.starts_with("Error: ") {
            failed = true;
        } else if let Some(end) = line.strip_prefix("End-Date: ") {
            runs.push(HistoryRun {
                end: end.split_whitespace().collect::<Vec<_>>().join(" "),
                upgraded,
                failed,
            });
            (upgraded, failed) = (0, false);
        }
    }
    runs
}

/// unattended-upgrades installs updates when its package is installed and APT::Periodic runs
/// it (`APT::Periodic::Unattended-Upgrade` non-zero, and `APT::Periodic::Enable` not `0`).
async fn automatic_updates(host: &Host) -> Result<AutomaticUpdates, String> {
    let dump = run_expecting(host, "apt-config", &["dump"], &[0]).await?;
    let installed = run_expecting(
        host,
        "dpkg-query",
        &["-W", "-f=${db:Status-Abbrev}", "unattended-upgrades"],
        &[0, 1],
    )
    .await?;
    Ok(parse_automatic_updates(
        &dump.stdout,
        installed.status == Some(0) && installed.stdout.starts_with("ii"),
    ))
}

pub(crate) fn parse_automatic_updates(
    apt_config_dump: &str,
    package_installed: bool,
) -> AutomaticUpdates {
    let mut settings = vec![format!(
        "unattended-upgrades package {}",
        if package_installed {
            "installed"
        } else {
            "not installed"
        }
    )];
    let mut values = BTreeMap::new();
    for line in apt_config_dump.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        if matches!(
            key,
            "APT::Periodic::Enable"
                | "APT::Periodic::Update-Package-Lists"
                | "APT::Periodic::Unattended-Upgrade"
        ) {
            settings.push(line.trim_end_matches(';').to_owned());
            let value = value.trim_end_matches(';').trim_matches('"');
            values.insert(key, value.to_owned());
        }
    }
    let on = |key: &str| {
        values
            .get(key)
            .is_some_and(|v| v.parse::<i64>().map_or(v == "always", |n| n != 0))
    };
    let enabled = values.get("APT::Periodic::Enable").is_none_or(|v| v != "0");
    AutomaticUpdates {
        mechanism: "unattended-upgrades".to_owned(),
        install_enabled: package_installed && enabled && on("APT::Periodic::Unattended-Upgrade"),
        settings,
    }
}

/// A restart is required when the marker file exists (written by package maintainer scripts
/// via update-notifier or needrestart), or when the running kernel is older than the newest
/// installed one.
async fn reboot(host: &Host, times: &BTreeMap<String, i64>) -> Result<RebootFacts, String> {
    let mut reasons = Vec::new();
    let since = times.get(REBOOT_REQUIRED).copied();
    if since.is_some() {
        let packages = match host.read_file(REBOOT_REQUIRED_PKGS).await {
            Ok(text) => {
                let mut names: Vec<&str> = text.split_whitespace().collect();
                names.sort_unstable();
                names.dedup();
                names.join(", ")
            }
            Err(HostError::FileNotFound { .. }) => String::new(),
            Err(error) => error.to_string(),
        };
        reasons.push(RebootReason {
            source: "reboot_required_file".to_owned(),
            detail: if packages.is_empty() {
                REBOOT_REQUIRED.to_owned()
            } else {
                format!("{REBOOT_REQUIRED}: {packages}")
            },
        });
    }
    let running = host
        .read_file(RUNNING_KERNEL)
        .await
        .map_err(|e| format!("running kernel unknown: {e}"))?;
    let running = running.trim();
    let installed: Vec<&str> = times
        .keys()
        .filter_map(|path| path.strip_prefix("/boot/vmlinuz-"))
        .collect();
    if let Some(newest) = newest_kernel(&installed)
        && compare_versions(newest, running).is_gt()
    {
        reasons.push(RebootReason {
            source: "kernel".to_owned(),
            detail: format!("running kernel {running} is older than installed {newest}"),
        });
    }
    Ok(RebootFacts::from_reasons(reasons, since))
}

fn newest_kernel<'a>(installed: &[&'a str]) -> Option<&'a str> {
    installed
        .iter()
        .copied()
        .max_by(|a, b| compare_versions(a, b))
}

/// Orders kernel release strings such as `6.1.0-18-amd64` and `6.1.0-21-amd64`: runs of digits
/// compare as numbers, everything else as text.
pub(crate) fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| -> Vec<(bool, String)> {
        let mut parts: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match parts.last_mut() {
                Some((d, part)) if *d == digit => part.push(c),
                _ => parts.push((digit, c.to_string())),
            }
        }
        parts
    };
    let (a, b) = (split(a), split(b));
    for (x, y) in a.iter().zip(&b) {
        let order = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if order.is_ne() {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests;

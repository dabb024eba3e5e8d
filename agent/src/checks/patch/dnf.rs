//! RHEL, Fedora, AlmaLinux, Rocky Linux: dnf, and yum on older systems (CentOS 7, RHEL 7).
//!
//! Sources, all read-only:
//! - `dnf -C check-update`: every pending update (name, arch, epoch:version-release, repo id),
//!   including the "Obsoleting Packages" section; exit 100 means updates, 0 none, else error;
//! - `dnf -C updateinfo list --updates` (`yum -C updateinfo list updates`): the advisories
//!   (`RHSA-2024:0310 Important/Sec. openssl-1:3.0.7-25.el9_3.x86_64`) for packages with a
//!   pending update, for the security flag, the advisory ids and the severity;
//! - `rpm -qa --qf ...` for the installed versions;
//! - `dnf -C history list` for the last successful upgrade (local time, to the minute);
//! - dnf's own "Last metadata expiration check: ... ago on <time>." line for the metadata age;
//!   yum prints none, so for yum the newest `cachecookie`/`repomd.xml` in `/var/cache/yum`;
//! - `/etc/dnf/automatic.conf` and `systemctl is-enabled` of the dnf-automatic timers
//!   (`/etc/yum/yum-cron.conf` and `yum-cron.service` for yum);
//! - `needs-restarting -r` (or `dnf -C needs-restarting -r` where the standalone program is
//!   missing) for a pending reboot.
//!
//! Every dnf and yum invocation carries `-C` (`--cacheonly`): without it `check-update` downloads
//! expired metadata, which would change the host and hit the network. A host without a cache
//! makes dnf fail ("Cache-only enabled but no cache for 'baseos'"), which is an error outcome,
//! never "0 pending"; a stale cache shows in `metadata_refreshed_unix_ms`.
//!
//! Held packages: `dnf versionlock` works by excluding the locked packages, so `check-update`
//! never lists them and nothing here can report them as held; `held` stays false.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::{
    AutomaticUpdates, LocalClock, PackageManager, PatchFacts, PendingUpdate, RebootFacts,
    RebootReason, TimeFact, first_lines, parse_file_times, run_expecting, unit_enabled_state,
};
use crate::checks::CheckError;
use crate::host::{Host, HostError};

const CLASSIFICATION: &str = "dnf updateinfo";
const CLASSIFICATION_YUM: &str = "yum updateinfo";
/// `name.arch epoch:version-release`, epoch only where set, as dnf prints it.
const RPM_QUERY: &[&str] = &[
    "-qa",
    "--qf",
    "%{NAME}.%{ARCH} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\n",
];
const DNF_AUTOMATIC_CONF: &str = "/etc/dnf/automatic.conf";
const YUM_CRON_CONF: &str = "/etc/yum/yum-cron.conf";
/// yum stamps each repository's cache directory with `cachecookie` when it checks the metadata.
const YUM_CACHE_TIMES: &[&str] = &[
    "/var/cache/yum",
    "-maxdepth",
    "4",
    "(",
    "-name",
    "cachecookie",
    "-o",
    "-name",
    "repomd.xml",
    ")",
    "-printf",
    "%T@ %p\\n",
];

/// Which program answers: dnf, or yum on older systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavour {
    Dnf,
    Yum,
}

impl Flavour {
    fn program(self) -> &'static str {
        match self {
            Flavour::Dnf => "dnf",
            Flavour::Yum => "yum",
        }
    }

    fn classification(self) -> &'static str {
        match self {
            Flavour::Dnf => CLASSIFICATION,
            Flavour::Yum => CLASSIFICATION_YUM,
        }
    }
}

/// The version from `dnf --version` / `yum --version`: the first line (`4.14.0`, `3.4.3`), or
/// the number of dnf5's `dnf5 version 5.2.8.1`.
pub(super) fn parse_version(stdout: &str) -> Option<String> {
    let first = stdout
        .lines()
        .next()
        .map(str::trim)
        .filter(|l| !l.is_empty())?;
    Some(
        first
            .strip_prefix("dnf5 version ")
            .unwrap_or(first)
            .trim()
            .to_owned(),
    )
}

pub(super) async fn collect(
    host: &Host,
    flavour: Flavour,
    version: Option<String>,
) -> Result<PatchFacts, CheckError> {
    let program = flavour.program();
    let mut facts = PatchFacts::new(vec![PackageManager {
        name: program.to_owned(),
        version,
    }]);
    match run_expecting(host, "rpm", &["--version"], &[0]).await {
        Ok(output) => facts.managers.push(PackageManager {
            name: "rpm".to_owned(),
            version: parse_rpm_version(&output.stdout),
        }),
        Err(reason) => facts.unreadable("manager_version", reason),
    }

    let listed = run_expecting(host, program, &["-C", "check-update"], &[0, 100])
        .await
        .and_then(|output| {
            skipped_repositories(&output.stderr)?;
            let listed = parse_check_update(&output.stdout)?;
            check_status(program, output.status, &listed)?;
            Ok(listed)
        })
        .map_err(|reason| {
            CheckError::new(format!("could not list pending updates with {program}"))
                .with_source(reason)
        })?;

    let updateinfo_args: &[&str] = match flavour {
        Flavour::Dnf => &["-C", "updateinfo", "list", "--updates"],
        Flavour::Yum => &["-C", "updateinfo", "list", "updates"],
    };
    let advisories = match run_expecting(host, program, updateinfo_args, &[0]).await {
        Ok(output) => parse_updateinfo(&output.stdout),
        Err(reason) => {
            facts.unreadable("security_classification", reason);
            Vec::new()
        }
    };
    let installed = match run_expecting(host, "rpm", RPM_QUERY, &[0]).await {
        Ok(output) => parse_installed(&output.stdout),
        Err(reason) => {
            facts.unreadable("installed_version", reason);
            BTreeMap::new()
        }
    };
    facts.pending = pending(&listed, &advisories, &installed, flavour.classification());

    let clock = LocalClock::of(host).await;
    let history = run_expecting(host, program, &["-C", "history", "list"], &[0])
        .await
        .and_then(|output| parse_history_list(&output.stdout));
    facts.set_time(
        TimeFact::LastInstall,
        match (&clock, &history) {
            (Ok(clock), Ok(history)) => last_upgrade(program, history, clock),
            (Err(reason), _) | (_, Err(reason)) => Err(reason.clone()),
        },
    );
    let refreshed = match flavour {
        Flavour::Dnf => match (&clock, &listed.metadata_checked) {
            (Ok(clock), Some(text)) => parse_metadata_check(text, clock),
            (Err(reason), _) => Err(reason.clone()),
            (_, None) => Err(
                "dnf printed no \"Last metadata expiration check\" line (no enabled repository has cached metadata)"
                    .to_owned(),
            ),
        },
        Flavour::Yum => run_expecting(host, "find", YUM_CACHE_TIMES, &[0, 1])
            .await
            .and_then(|output| {
                parse_file_times(&output.stdout)
                    .into_values()
                    .max()
                    .ok_or_else(|| "no cachecookie or repomd.xml in /var/cache/yum".to_owned())
            }),
    };
    facts.set_time(TimeFact::MetadataRefreshed, refreshed);
    facts.set_automatic_updates(automatic_updates(host, flavour).await);
    facts.set_reboot(reboot(host, flavour).await);
    Ok(facts)
}

/// `RPM version 4.16.1.3` -> `4.16.1.3`.
fn parse_rpm_version(stdout: &str) -> Option<String> {
    let first = stdout.lines().next()?.trim();
    first.strip_prefix("RPM version ").map(str::to_owned)
}

/// One package line of `check-update`: `openssl.x86_64  1:3.0.7-25.el9_3  baseos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    /// `name.arch` as printed, the key into the installed versions.
    pub name_arch: String,
    pub evr: String,
    pub repo: String,
}

impl Listed {
    fn name_and_arch(&self) -> (&str, &str) {
        self.name_arch
            .rsplit_once('.')
            .unwrap_or((self.name_arch.as_str(), ""))
    }
}

/// What `check-update` printed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct CheckUpdate {
    /// The upgrades, in dnf's order.
    pub updates: Vec<Listed>,
    /// The new packages of the "Obsoleting Packages" section (the installed package each one
    /// replaces, printed indented below it, is not pending).
    pub obsoleting: Vec<Listed>,
    /// The time of "Last metadata expiration check: 0:12:33 ago on Tue Mar 12 10:00:00 2024.".
    pub metadata_checked: Option<String>,
}

/// Parses `dnf check-update` / `yum check-update`.
///
/// Package lines have three columns; a name too long for its column is printed alone and the
/// rest follows on the next line, indented, so a line that starts with blanks continues an
/// unfinished entry. Lines that are not packages (plugin chatter such as "Updating Subscription
/// Management repositories.", yum's "Loaded plugins: ..." and mirror lines, "Security: ... is an
/// installed security update") are skipped; an entry cut off at the end is an error.
pub(crate) fn parse_check_update(stdout: &str) -> Result<CheckUpdate, String> {
    let mut out = CheckUpdate::default();
    let mut obsoletes = false;
    // The entry being read: its words so far, and whether it began indented (in the obsoletes
    // section: the installed package being replaced).
    let mut partial: Vec<&str> = Vec::new();
    let mut indented = false;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("Last metadata expiration check: ") {
            out.metadata_checked = rest
                .split_once(" ago on ")
                .map(|(_, time)| time.trim().trim_end_matches('.').to_owned());
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let starts_blank = line.starts_with(char::is_whitespace);
        if !partial.is_empty() {
            if !starts_blank {
                return Err(format!(
                    "unexpected line after the unfinished entry {:?}: {line:?}",
                    partial.join(" ")
                ));
            }
            partial.extend(words);
        } else if words == ["Obsoleting", "Packages"] {
            obsoletes = true;
            continue;
        } else if is_package_start(&words) {
            partial = words;
            indented = starts_blank;
        } else {
            continue;
        }
        match partial.len() {
            0..=2 => {}
            3 => {
                let entry = Listed {
                    name_arch: partial[0].to_owned(),
                    evr: partial[1].to_owned(),
                    repo: partial[2].to_owned(),
                };
                if !obsoletes {
                    out.updates.push(entry);
                } else if !indented {
                    out.obsoleting.push(entry);
                }
                partial.clear();
            }
            _ => return Err(format!("unexpected package line: {:?}", partial.join(" "))),
        }
    }
    if !partial.is_empty() {
        return Err(format!(
            "the output ends inside the entry {:?}, so it is incomplete",
            partial.join(" ")
        ));
    }
    Ok(out)
}

/// Whether `words` begin a package entry: `name.arch`, then (if on the same line) a version
/// that starts with a digit, then the repository.
fn is_package_start(words: &[&str]) -> bool {
    let Some((name, arch)) = words.first().and_then(|w| w.rsplit_once('.')) else {
        return false;
    };
    let arch_ok = !arch.is_empty() && arch.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let version_ok = words
        .get(1)
        .is_none_or(|v| v.starts_with(|c: char| c.is_ascii_digit()));
    !name.is_empty() && arch_ok && version_ok && words.len() <= 3
}

/// dnf's exit status must agree with what it printed: 100 with updates, 0 without.
fn check_status(program: &str, status: Option<i32>, listed: &CheckUpdate) -> Result<(), String> {
    let any = !listed.updates.is_empty() || !listed.obsoleting.is_empty();
    match (status, any) {
        (Some(100), false) => Err(format!(
            "{program} exited with 100 (updates available) but listed no package it could read"
        )),
        (Some(0), true) => Err(format!(
            "{program} exited with 0 (no updates) but listed {} packages",
            listed.updates.len() + listed.obsoleting.len()
        )),
        _ => Ok(()),
    }
}

/// One line of `updateinfo list`: an advisory that applies to a package with a pending update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Advisory {
    /// `RHSA-2024:0310`, `RLSA-2024:0310`, `FEDORA-2024-5ac8e3a5a8`.
    pub id: String,
    pub security: bool,
    /// `Critical`, `Important`, `Moderate`, `Low` for security advisories that have one.
    pub severity: Option<String>,
    /// `name.arch` of the package the advisory fixes.
    pub name_arch: String,
}

/// Parses `dnf updateinfo list` (`ID LABEL NEVRA`, the label `Important/Sec.`, `bugfix`, ...),
/// yum's identical format, and dnf5's table (`ID TYPE SEVERITY NEVRA ISSUED`). Other lines
/// (headers, "Last metadata expiration check", yum's "updateinfo list done") are skipped.
pub(crate) fn parse_updateinfo(stdout: &str) -> Vec<Advisory> {
    const TYPES: &[&str] = &[
        "security",
        "bugfix",
        "enhancement",
        "newpackage",
        "unknown",
        "unspecified",
    ];
    let mut out = Vec::new();
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let advisory = match words.as_slice() {
            [id, label, nevra] => {
                let (security, severity) = match label.strip_suffix("/Sec.") {
                    Some(severity) => (true, severity),
                    None if TYPES.contains(label) => (*label == "security", "Unknown"),
                    None => continue,
                };
                parse_nevra(nevra).map(|(name, _, arch)| Advisory {
                    id: (*id).to_owned(),
                    security,
                    severity: known_severity(severity),
                    name_arch: format!("{name}.{arch}"),
                })
            }
            [id, kind, severity, nevra, ..] if TYPES.contains(kind) => {
                parse_nevra(nevra).map(|(name, _, arch)| Advisory {
                    id: (*id).to_owned(),
                    security: *kind == "security",
                    severity: known_severity(severity),
                    name_arch: format!("{name}.{arch}"),
                })
            }
            _ => None,
        };
        out.extend(advisory);
    }
    out
}

fn known_severity(severity: &str) -> Option<String> {
    matches!(severity, "Critical" | "Important" | "Moderate" | "Low").then(|| severity.to_owned())
}

fn severity_rank(severity: &str) -> u8 {
    match severity {
        "Critical" => 4,
        "Important" => 3,
        "Moderate" => 2,
        "Low" => 1,
        _ => 0,
    }
}

/// `openssl-libs-1:3.0.7-25.el9_3.x86_64` -> (`openssl-libs`, `1:3.0.7-25.el9_3`, `x86_64`).
pub(crate) fn parse_nevra(nevra: &str) -> Option<(&str, &str, &str)> {
    let (rest, arch) = nevra.rsplit_once('.')?;
    let (name_version, _release) = rest.rsplit_once('-')?;
    let (name, _version) = name_version.rsplit_once('-')?;
    let evr = &rest[name.len() + 1..];
    (!name.is_empty() && !arch.is_empty()).then_some((name, evr, arch))
}

/// `rpm -qa` with [`RPM_QUERY`]: `name.arch` -> the newest installed `epoch:version-release`
/// (several for install-only packages such as the kernel).
pub(crate) fn parse_installed(stdout: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for line in stdout.lines() {
        let Some((name_arch, evr)) = line.trim().split_once(' ') else {
            continue;
        };
        let evr = evr.trim();
        match out.get_mut(name_arch) {
            Some(known) if compare_evr(evr, known).is_gt() => *known = evr.to_owned(),
            Some(_) => {}
            None => {
                out.insert(name_arch.to_owned(), evr.to_owned());
            }
        }
    }
    out
}

/// The pending updates: check-update's packages with their installed versions and the
/// advisories that name the same `name.arch`.
pub(crate) fn pending(
    listed: &CheckUpdate,
    advisories: &[Advisory],
    installed: &BTreeMap<String, String>,
    classification: &str,
) -> Vec<PendingUpdate> {
    let mut by_package: BTreeMap<&str, Vec<&Advisory>> = BTreeMap::new();
    for advisory in advisories {
        by_package
            .entry(advisory.name_arch.as_str())
            .or_default()
            .push(advisory);
    }
    let mut out: Vec<PendingUpdate> = Vec::new();
    for entry in listed.updates.iter().chain(&listed.obsoleting) {
        if out.iter().any(|u| {
            u.available_version.as_deref() == Some(entry.evr.as_str())
                && format!("{}.{}", u.name, u.architecture.as_deref().unwrap_or(""))
                    == entry.name_arch
        }) {
            continue; // an obsoleting package that is also a plain upgrade
        }
        let (name, arch) = entry.name_and_arch();
        let found = by_package
            .get(entry.name_arch.as_str())
            .map_or(&[][..], Vec::as_slice);
        let mut ids: Vec<String> = Vec::new();
        for advisory in found {
            if !ids.contains(&advisory.id) {
                ids.push(advisory.id.clone());
            }
        }
        out.push(PendingUpdate {
            name: name.to_owned(),
            architecture: Some(arch.to_owned()),
            installed_version: installed.get(&entry.name_arch).cloned(),
            available_version: Some(entry.evr.clone()),
            security: found.iter().any(|a| a.security),
            classification_source: classification.to_owned(),
            origins: vec![entry.repo.clone()],
            advisories: ids,
            severity: found
                .iter()
                .filter(|a| a.security)
                .filter_map(|a| a.severity.clone())
                .max_by_key(|s| severity_rank(s)),
            ..PendingUpdate::default()
        });
    }
    out
}

/// Orders `epoch:version-release` strings the way rpm does (epoch, then version, then release,
/// each compared with rpmvercmp's rules; a missing epoch is 0).
pub(crate) fn compare_evr(a: &str, b: &str) -> Ordering {
    let split = |s: &str| -> (u64, String, String) {
        let (epoch, rest) = match s.split_once(':') {
            Some((e, rest)) => (e.parse().unwrap_or(0), rest),
            None => (0, s),
        };
        let (version, release) = rest.rsplit_once('-').unwrap_or((rest, ""));
        (epoch, version.to_owned(), release.to_owned())
    };
    let (ea, va, ra) = split(a);
    let (eb, vb, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| rpmvercmp(&va, &vb))
        .then_with(|| rpmvercmp(&ra, &rb))
}

/// rpm's segment comparison: runs of digits compare as numbers and beat letters, runs of
/// letters compare as text, other characters only separate, `~` sorts before anything.
fn rpmvercmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    let separator = |c: &u8| !c.is_ascii_alphanumeric() && *c != b'~';
    loop {
        while a.first().is_some_and(separator) {
            a = &a[1..];
        }
        while b.first().is_some_and(separator) {
            b = &b[1..];
        }
        match (a.first() == Some(&b'~'), b.first() == Some(&b'~')) {
            (true, true) => {
                a = &a[1..];
                b = &b[1..];
                continue;
            }
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            (false, false) => {}
        }
        let (Some(&ca), Some(_)) = (a.first(), b.first()) else {
            break;
        };
        let numeric = ca.is_ascii_digit();
        let take = |s: &[u8]| -> usize {
            s.iter()
                .take_while(|c| {
                    if numeric {
                        c.is_ascii_digit()
                    } else {
                        c.is_ascii_alphabetic()
                    }
                })
                .count()
        };
        let (la, lb) = (take(a), take(b));
        if lb == 0 {
            // A number against letters: the number is newer.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let (sa, sb) = (&a[..la], &b[..lb]);
        let order = if numeric {
            let (sa, sb) = (trim_zeros(sa), trim_zeros(sb));
            sa.len().cmp(&sb.len()).then_with(|| sa.cmp(sb))
        } else {
            sa.cmp(sb)
        };
        if order.is_ne() {
            return order;
        }
        a = &a[la..];
        b = &b[lb..];
    }
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, _) => Ordering::Greater,
    }
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let zeros = s.iter().take_while(|&&c| c == b'0').count();
    &s[zeros..]
}

/// One row of `dnf history list` / `yum history list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transaction {
    pub id: u32,
    /// When it began, local time to the minute: `2024-03-10 09:12`.
    pub began: String,
    /// Whether it upgraded packages (`Upgrade`, yum's `Update`, or `U` among several actions).
    pub upgraded: bool,
    /// Neither failed (`#`) nor cut off (`*`) by dnf's marks after the altered count.
    pub succeeded: bool,
}

/// Parses the history table: `ID | Command line | Date and time | Action(s) | Altered`. The
/// command line may itself contain `|`, so the last three columns are taken from the right.
pub(crate) fn parse_history_list(stdout: &str) -> Result<Vec<Transaction>, String> {
    let mut out = Vec::new();
    let mut header = false;
    for line in stdout.lines() {
        let mut columns = line.rsplitn(4, '|');
        let (Some(altered), Some(actions), Some(date), Some(rest)) = (
            columns.next(),
            columns.next(),
            columns.next(),
            columns.next(),
        ) else {
            continue;
        };
        let id = rest.split('|').next().unwrap_or("").trim();
        if id == "ID" {
            header = true;
            continue;
        }
        let Ok(id) = id.parse::<u32>() else {
            continue;
        };
        let marks: String = altered
            .trim()
            .chars()
            .skip_while(char::is_ascii_digit)
            .collect();
        out.push(Transaction {
            id,
            began: date.trim().to_owned(),
            upgraded: actions
                .split(',')
                .map(str::trim)
                .any(|a| matches!(a, "U" | "Upgrade" | "Update" | "Upgraded" | "Updated")),
            succeeded: !marks.contains('#') && !marks.contains('*'),
        });
    }
    if !header && out.is_empty() && !stdout.trim().is_empty() && !stdout.contains("No transactions")
    {
        return Err(format!(
            "unexpected history output: {}",
            first_lines(stdout.trim(), 3)
        ));
    }
    Ok(out)
}

fn last_upgrade(program: &str, history: &[Transaction], clock: &LocalClock) -> Result<i64, String> {
    let newest = history
        .iter()
        .filter(|t| t.upgraded && t.succeeded)
        .max_by_key(|t| t.id)
        .ok_or_else(|| format!("no successful upgrade in `{program} history list`"))?;
    clock
        .parse(&newest.began, "%Y-%m-%d %H:%M")
        .map_err(|e| format!("transaction {} in `{program} history list`: {e}", newest.id))
}

/// A repository dnf skipped (`skip_if_unavailable`, or no cache under `-C`) still exits 0,
/// so its updates would silently count as none: that is an incomplete list, not "0 pending".
pub(crate) fn skipped_repositories(stderr: &str) -> Result<(), String> {
    let skipped: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| {
            line.starts_with("Ignoring repositories:")
                || (line.contains("Cache-only enabled but no cache for"))
                || line.starts_with("Failed to download metadata for repo")
        })
        .collect();
    if skipped.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "some repositories were not read, so the list would be incomplete: {}",
            skipped.join(" / ")
        ))
    }
}

/// dnf prints the time of the last check with `%c` in the C locale, in local time:
/// `Tue Mar 12 10:00:00 2024` (the day padded with a blank).
pub(crate) fn parse_metadata_check(text: &str, clock: &LocalClock) -> Result<i64, String> {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    clock
        .parse(&text, "%a %b %d %H:%M:%S %Y")
        .map_err(|e| format!("last metadata expiration check: {e}"))
}

/// dnf-automatic installs updates when `dnf-automatic-install.timer` is enabled, or
/// `dnf-automatic.timer` is enabled and `apply_updates = yes`; yum-cron when `yum-cron.service`
/// is enabled and `apply_updates = yes`.
async fn automatic_updates(host: &Host, flavour: Flavour) -> Result<AutomaticUpdates, String> {
    let (conf_path, units): (&str, &[&str]) = match flavour {
        Flavour::Dnf => (
            DNF_AUTOMATIC_CONF,
            &["dnf-automatic.timer", "dnf-automatic-install.timer"],
        ),
        Flavour::Yum => (YUM_CRON_CONF, &["yum-cron.service"]),
    };
    let conf = match host.read_file(conf_path).await {
        Ok(text) => Some(text),
        Err(HostError::FileNotFound { .. }) => None,
        Err(error) => return Err(error.to_string()),
    };
    let mut states = Vec::new();
    for unit in units {
        states.push((*unit, unit_enabled_state(host, unit).await?));
    }
    Ok(parse_automatic_updates(
        flavour,
        conf_path,
        conf.as_deref(),
        &states,
    ))
}

pub(crate) fn parse_automatic_updates(
    flavour: Flavour,
    conf_path: &str,
    conf: Option<&str>,
    units: &[(&str, String)],
) -> AutomaticUpdates {
    let mut settings = Vec::new();
    let apply = match conf {
        None => {
            settings.push(format!("{conf_path} absent"));
            false
        }
        Some(text) => match ini_value(text, "commands", "apply_updates") {
            Some(value) => {
                settings.push(format!("apply_updates = {value}"));
                matches!(
                    value.to_ascii_lowercase().as_str(),
                    "yes" | "true" | "1" | "on"
                )
            }
            None => {
                settings.push("apply_updates not set (default no)".to_owned());
                false
            }
        },
    };
    let enabled = |unit: &str| {
        units
            .iter()
            .any(|(u, state)| *u == unit && matches!(state.as_str(), "enabled" | "enabled-runtime"))
    };
    for (unit, state) in units {
        settings.push(format!("{unit} {state}"));
    }
    let (mechanism, install_enabled) = match flavour {
        Flavour::Dnf => (
            "dnf-automatic",
            enabled("dnf-automatic-install.timer") || (enabled("dnf-automatic.timer") && apply),
        ),
        Flavour::Yum => ("yum-cron", enabled("yum-cron.service") && apply),
    };
    AutomaticUpdates {
        mechanism: mechanism.to_owned(),
        install_enabled,
        settings,
    }
}

/// The value of `key` in `[section]` of an INI file (`#` and `;` start comments).
fn ini_value<'a>(text: &'a str, section: &str, key: &str) -> Option<&'a str> {
    let mut current = "";
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim();
        } else if current == section
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            found = Some(v.trim());
        }
    }
    found
}

/// `needs-restarting -r`: exit 1 and "Reboot is required" when core packages changed since boot,
/// 0 when not. dnf5 and hosts without dnf-utils have it only as a dnf command.
async fn reboot(host: &Host, flavour: Flavour) -> Result<RebootFacts, String> {
    let (argv, output) = match host.run("needs-restarting", &["-r"]).await {
        Ok(output) => ("needs-restarting -r", output),
        Err(HostError::ProgramNotFound { .. } | HostError::NotRecorded { .. })
            if flavour == Flavour::Dnf =>
        {
            let output = host
                .run("dnf", &["-C", "needs-restarting", "-r"])
                .await
                .map_err(|e| e.to_string())?;
            ("dnf -C needs-restarting -r", output)
        }
        Err(error) => return Err(error.to_string()),
    };
    parse_needs_restarting(argv, output.status, &output.stdout, &output.stderr)
}

pub(crate) fn parse_needs_restarting(
    argv: &str,
    status: Option<i32>,
    stdout: &str,
    stderr: &str,
) -> Result<RebootFacts, String> {
    let required = stdout.contains("Reboot is required");
    match status {
        Some(0) if !required => Ok(RebootFacts::from_reasons(Vec::new(), None)),
        Some(1) if required => {
            // "  * kernel" (dnf) or "  kernel -> 3.10.0-1160.108.1.el7" (yum-utils)
            let packages: Vec<&str> = stdout
                .lines()
                .filter(|l| l.starts_with("  "))
                .map(|l| l.trim().trim_start_matches("* ").trim())
                .filter(|l| !l.is_empty())
                .collect();
            let detail = if packages.is_empty() {
                format!("{argv}: reboot is required")
            } else {
                format!("{argv}: updated since boot: {}", packages.join(", "))
            };
            Ok(RebootFacts::from_reasons(
                vec![RebootReason {
                    source: "needs_restarting".to_owned(),
                    detail,
                }],
                None,
            ))
        }
        _ => {
            let status = status.map_or_else(|| "a signal".to_owned(), |c| format!("status {c}"));
            let said = if stderr.trim().is_empty() {
                stdout
            } else {
                stderr
            };
            Err(format!(
                "`{argv}` exited with {status}: {}",
                first_lines(said.trim(), 3)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    #[test]
    fn skipped_repositories_make_the_list_incomplete() {
        assert_eq!(skipped_repositories(""), Ok(()));
        assert_eq!(
            skipped_repositories(
                "Last metadata expiration check: 0:01:02 ago on Tue Mar 12 10:00:00 2024.\n"
            ),
            Ok(())
        );
        let error = skipped_repositories(
            "Error: Cache-only enabled but no cache for 'epel'\nIgnoring repositories: epel\n",
        )
        .expect_err("incomplete");
        assert!(
            error.contains("epel") && error.contains("incomplete"),
            "{error}"
        );
    }

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/checks/patch/testdata")
            .join(name)
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(testdata("dnf").join(name)).expect("fixture exists")
    }

    fn some(text: &str) -> Option<String> {
        Some(text.to_owned())
    }

    fn listed(name_arch: &str, evr: &str, repo: &str) -> Listed {
        Listed {
            name_arch: name_arch.to_owned(),
            evr: evr.to_owned(),
            repo: repo.to_owned(),
        }
    }

    #[test]
    fn versions_of_dnf_yum_and_dnf5() {
        assert_eq!(
            parse_version("4.14.0\n  Installed: dnf-0:4.14.0-9.el9.noarch\n"),
            some("4.14.0")
        );
        assert_eq!(
            parse_version("3.4.3\n  Installed: rpm-4.11.3\n"),
            some("3.4.3")
        );
        assert_eq!(
            parse_version("dnf5 version 5.2.8.1\ndnf5 plugin API version 2.0\n"),
            some("5.2.8.1")
        );
        assert_eq!(parse_version(""), None);
        assert_eq!(
            parse_rpm_version("RPM version 4.16.1.3\n"),
            some("4.16.1.3")
        );
    }

    #[test]
    fn check_update_with_wrapped_lines_and_obsoletes() {
        let parsed = parse_check_update(&fixture("check-update-rocky9.stdout")).expect("parses");
        assert_eq!(
            parsed.metadata_checked.as_deref(),
            Some("Tue Mar 12 10:00:00 2024")
        );
        assert_eq!(
            parsed.updates,
            vec![
                listed(
                    "grub2-tools.x86_64",
                    "1:2.06-70.el9_3.2.rocky.0.3",
                    "baseos"
                ),
                listed("kernel.x86_64", "5.14.0-362.24.1.el9_3", "baseos"),
                listed("kernel-core.x86_64", "5.14.0-362.24.1.el9_3", "baseos"),
                listed("openssl.x86_64", "1:3.0.7-27.el9", "baseos"),
                listed("openssl-libs.x86_64", "1:3.0.7-27.el9", "baseos"),
                listed(
                    "python3-dnf-plugin-post-transaction-actions.noarch",
                    "4.3.0-11.el9_3",
                    "appstream"
                ),
                listed("tzdata.noarch", "2024a-1.el9", "baseos"),
            ]
        );
        assert_eq!(
            parsed.obsoleting,
            vec![listed(
                "grub2-tools.x86_64",
                "1:2.06-70.el9_3.2.rocky.0.3",
                "baseos"
            )]
        );
    }

    #[test]
    fn check_update_of_yum_skips_plugin_chatter() {
        let parsed = parse_check_update(&fixture("check-update-centos7.stdout")).expect("parses");
        assert_eq!(parsed.metadata_checked, None);
        assert_eq!(
            parsed.updates,
            vec![
                listed(
                    "bind-export-libs.x86_64",
                    "32:9.11.4-26.P2.el7_9.16",
                    "updates"
                ),
                listed("kernel.x86_64", "3.10.0-1160.119.1.el7", "updates"),
                listed("openssh.x86_64", "7.4p1-23.el7_9", "updates"),
                listed("openssh-server.x86_64", "7.4p1-23.el7_9", "updates"),
            ]
        );
    }

    #[test]
    fn nothing_pending_is_an_empty_list() {
        let parsed = parse_check_update(&fixture("check-update-empty.stdout")).expect("parses");
        assert_eq!(parsed.updates, vec![]);
        assert_eq!(check_status("dnf", Some(0), &parsed), Ok(()));
        assert!(check_status("dnf", Some(100), &parsed).is_err());
    }

    #[test]
    fn output_cut_inside_an_entry_is_refused() {
        let error =
            parse_check_update(&fixture("check-update-truncated.stdout")).expect_err("refused");
        assert!(error.contains("incomplete"), "{error}");
    }

    #[test]
    fn five_thousand_updates() {
        let mut text = String::from(
            "Last metadata expiration check: 1:02:03 ago on Mon Mar  4 09:05:00 2024.\n\n",
        );
        for i in 0..5000 {
            if i % 7 == 0 {
                text.push_str(&format!(
                    "a-rather-long-generated-package-name-number-{i:05}.x86_64\n                                               1.{i}-1.fc39   updates\n"
                ));
            } else {
                text.push_str(&format!("pkg{i:05}.noarch    1.{i}-1.fc39      updates\n"));
            }
        }
        let parsed = parse_check_update(&text).expect("parses");
        assert_eq!(parsed.updates.len(), 5000);
        assert_eq!(
            parsed.updates[4999],
            listed("pkg04999.noarch", "1.4999-1.fc39", "updates")
        );
        assert_eq!(
            parsed.updates[7].name_arch,
            "a-rather-long-generated-package-name-number-00007.x86_64"
        );
        assert_eq!(
            parse_metadata_check(
                parsed.metadata_checked.as_deref().unwrap_or(""),
                &LocalClock::utc()
            ),
            Ok(1_709_543_100_000)
        );
        let pending = pending(&parsed, &[], &BTreeMap::new(), CLASSIFICATION);
        assert_eq!(pending.len(), 5000);
    }

    #[test]
    fn updateinfo_of_dnf_yum_and_dnf5() {
        let advisories = parse_updateinfo(&fixture("updateinfo-rocky9.stdout"));
        assert_eq!(advisories.len(), 7);
        assert!(advisories.contains(&Advisory {
            id: "RLSA-2024:0310".to_owned(),
            security: true,
            severity: some("Moderate"),
            name_arch: "openssl.x86_64".to_owned(),
        }));
        assert!(
            advisories
                .iter()
                .any(|a| a.id == "RLBA-2024:0897" && !a.security)
        );
        let dnf5 = parse_updateinfo(
            "Name                     Type        Severity Package                              Issued\n\
             FEDORA-2024-5ac8e3a5a8   security    Critical openssh-9.3p1-11.fc39.x86_64         2024-03-01 01:02:03\n\
             FEDORA-2024-0f1e2d3c4b   bugfix      None     tzdata-2024a-1.fc39.noarch           2024-02-02 10:00:00\n",
        );
        assert_eq!(
            dnf5,
            vec![
                Advisory {
                    id: "FEDORA-2024-5ac8e3a5a8".to_owned(),
                    security: true,
                    severity: some("Critical"),
                    name_arch: "openssh.x86_64".to_owned(),
                },
                Advisory {
                    id: "FEDORA-2024-0f1e2d3c4b".to_owned(),
                    security: false,
                    severity: None,
                    name_arch: "tzdata.noarch".to_owned(),
                },
            ]
        );
    }

    #[test]
    fn nevra_keeps_the_epoch() {
        assert_eq!(
            parse_nevra("openssl-libs-1:3.0.7-25.el9_3.x86_64"),
            Some(("openssl-libs", "1:3.0.7-25.el9_3", "x86_64"))
        );
        assert_eq!(parse_nevra("kernel"), None);
    }

    #[test]
    fn rpm_version_order() {
        assert!(compare_evr("5.14.0-362.24.1.el9_3", "5.14.0-362.8.1.el9_3").is_gt());
        assert!(compare_evr("1:1.0-1", "2.0-1").is_gt());
        assert!(compare_evr("1.0~rc1-1", "1.0-1").is_lt());
        assert!(compare_evr("1.0a-1", "1.0-1").is_gt());
        assert!(compare_evr("2024a-1.el9", "2023c-1.el9").is_gt());
        assert_eq!(compare_evr("1.01-1", "1.1-1"), Ordering::Equal);
        let installed = parse_installed(
            "kernel.x86_64 5.14.0-362.8.1.el9_3\nkernel.x86_64 5.14.0-362.18.1.el9_3\nkernel.x86_64 5.14.0-284.11.1.el9_2\n",
        );
        assert_eq!(
            installed.get("kernel.x86_64").map(String::as_str),
            Some("5.14.0-362.18.1.el9_3")
        );
    }

    #[test]
    fn history_of_dnf_and_yum() {
        let dnf = parse_history_list(&fixture("history-list-rocky9.stdout")).expect("parses");
        assert_eq!(dnf.len(), 6);
        let newest = dnf
            .iter()
            .filter(|t| t.upgraded && t.succeeded)
            .max_by_key(|t| t.id);
        assert_eq!(
            newest.map(|t| (t.id, t.began.as_str())),
            Some((4, "2024-03-01 08:30"))
        );
        assert!(!dnf[0].succeeded, "{:?}", dnf[0]);
        let yum = parse_history_list(&fixture("history-list-centos7.stdout")).expect("parses");
        assert_eq!(
            yum.iter()
                .filter(|t| t.upgraded && t.succeeded)
                .max_by_key(|t| t.id)
                .map(|t| t.id),
            Some(6)
        );
        assert_eq!(parse_history_list(""), Ok(vec![]));
        assert!(parse_history_list("Traceback (most recent call last):\n").is_err());
    }

    #[test]
    fn needs_restarting_outcomes() {
        let yes = parse_needs_restarting(
            "needs-restarting -r",
            Some(1),
            &fixture("needs-restarting-reboot.stdout"),
            "",
        )
        .expect("reads");
        assert_eq!(yes.required, Some(true));
        assert_eq!(
            yes.reasons[0].detail,
            "needs-restarting -r: updated since boot: kernel, openssl-libs"
        );
        let no = parse_needs_restarting(
            "needs-restarting -r",
            Some(0),
            "No core libraries or services have been updated since boot-up.\nReboot should not be necessary.\n",
            "",
        );
        assert_eq!(no, Ok(RebootFacts::from_reasons(Vec::new(), None)));
        let error = parse_needs_restarting(
            "dnf -C needs-restarting -r",
            Some(1),
            "",
            "No such command: needs-restarting.",
        )
        .expect_err("an unknown command is no answer");
        assert!(error.contains("No such command"), "{error}");
    }

    #[test]
    fn automatic_updates_need_the_timer_and_apply_updates() {
        let conf = "[commands]\n# apply_updates = yes\napply_updates = yes\n[emitters]\nemit_via = stdio\n";
        let on = parse_automatic_updates(
            Flavour::Dnf,
            DNF_AUTOMATIC_CONF,
            Some(conf),
            &[
                ("dnf-automatic.timer", "enabled".to_owned()),
                ("dnf-automatic-install.timer", "disabled".to_owned()),
            ],
        );
        assert!(on.install_enabled);
        let off = parse_automatic_updates(
            Flavour::Dnf,
            DNF_AUTOMATIC_CONF,
            Some(conf),
            &[
                ("dnf-automatic.timer", "disabled".to_owned()),
                ("dnf-automatic-install.timer", "not-found".to_owned()),
            ],
        );
        assert!(!off.install_enabled);
        let yum = parse_automatic_updates(
            Flavour::Yum,
            YUM_CRON_CONF,
            None,
            &[("yum-cron.service", "enabled".to_owned())],
        );
        assert!(!yum.install_enabled);
        assert_eq!(yum.settings[0], "/etc/yum/yum-cron.conf absent");
    }

    async fn replay(name: &str) -> Result<PatchFacts, CheckError> {
        let host = Host::replay(&testdata(name)).expect("recording loads");
        crate::checks::patch::collect(&host).await
    }

    fn update(
        name: &str,
        installed: &str,
        available: &str,
        repo: &str,
        advisories: &[&str],
        severity: Option<&str>,
    ) -> PendingUpdate {
        let (name, arch) = name.rsplit_once('.').expect("name.arch");
        PendingUpdate {
            name: name.to_owned(),
            architecture: some(arch),
            installed_version: some(installed),
            available_version: some(available),
            security: severity.is_some(),
            classification_source: CLASSIFICATION.to_owned(),
            origins: vec![repo.to_owned()],
            advisories: advisories.iter().map(|a| (*a).to_owned()).collect(),
            severity: severity.map(str::to_owned),
            ..PendingUpdate::default()
        }
    }

    #[tokio::test]
    async fn replay_of_a_rocky9_server() {
        let facts = replay("replay-rocky9").await.expect("collects");
        let kernel = ["RLSA-2024:1249"];
        let ssl = ["RLSA-2024:0310", "RLSA-2024:2447"];
        assert_eq!(
            facts,
            PatchFacts {
                managers: vec![
                    PackageManager {
                        name: "dnf".to_owned(),
                        version: some("4.14.0")
                    },
                    PackageManager {
                        name: "rpm".to_owned(),
                        version: some("4.16.1.3")
                    },
                ],
                pending: vec![
                    update(
                        "grub2-tools.x86_64",
                        "1:2.06-70.el9_3.1.rocky.0.2",
                        "1:2.06-70.el9_3.2.rocky.0.3",
                        "baseos",
                        &[],
                        None
                    ),
                    update(
                        "kernel.x86_64",
                        "5.14.0-362.18.1.el9_3",
                        "5.14.0-362.24.1.el9_3",
                        "baseos",
                        &kernel,
                        Some("Important")
                    ),
                    update(
                        "kernel-core.x86_64",
                        "5.14.0-362.18.1.el9_3",
                        "5.14.0-362.24.1.el9_3",
                        "baseos",
                        &kernel,
                        Some("Important")
                    ),
                    update(
                        "openssl.x86_64",
                        "1:3.0.7-24.el9",
                        "1:3.0.7-27.el9",
                        "baseos",
                        &ssl,
                        Some("Moderate")
                    ),
                    update(
                        "openssl-libs.x86_64",
                        "1:3.0.7-24.el9",
                        "1:3.0.7-27.el9",
                        "baseos",
                        &ssl,
                        Some("Moderate")
                    ),
                    update(
                        "python3-dnf-plugin-post-transaction-actions.noarch",
                        "4.3.0-5.el9",
                        "4.3.0-11.el9_3",
                        "appstream",
                        &["RLBA-2024:0897"],
                        None
                    ),
                    update(
                        "tzdata.noarch",
                        "2023c-1.el9",
                        "2024a-1.el9",
                        "baseos",
                        &[],
                        None
                    ),
                ],
                // 2024-03-01 08:30 in Europe/Berlin (CET, UTC+1)
                last_install_unix_ms: Some(1_709_278_200_000),
                // Tue Mar 12 10:00:00 2024 in Europe/Berlin
                metadata_refreshed_unix_ms: Some(1_710_234_000_000),
                automatic_updates: Some(AutomaticUpdates {
                    mechanism: "dnf-automatic".to_owned(),
                    install_enabled: false,
                    settings: vec![
                        "apply_updates = no".to_owned(),
                        "dnf-automatic.timer enabled".to_owned(),
                        "dnf-automatic-install.timer disabled".to_owned(),
                    ],
                }),
                reboot: RebootFacts {
                    required: Some(true),
                    reasons: vec![RebootReason {
                        source: "needs_restarting".to_owned(),
                        detail: "needs-restarting -r: updated since boot: kernel, openssl-libs"
                            .to_owned(),
                    }],
                    since_unix_ms: None,
                },
                unreadable: vec![],
            }
        );
        assert_eq!(facts.pending_security_count(), 4);
    }

    #[tokio::test]
    async fn replay_of_a_centos7_server_with_yum() {
        let facts = replay("replay-centos7-yum").await.expect("collects");
        let yum = |name: &str, installed: &str, available: &str| PendingUpdate {
            classification_source: CLASSIFICATION_YUM.to_owned(),
            ..update(name, installed, available, "updates", &[], None)
        };
        assert_eq!(
            facts,
            PatchFacts {
                managers: vec![
                    PackageManager {
                        name: "yum".to_owned(),
                        version: some("3.4.3")
                    },
                    PackageManager {
                        name: "rpm".to_owned(),
                        version: some("4.11.3")
                    },
                ],
                pending: vec![
                    yum(
                        "bind-export-libs.x86_64",
                        "32:9.11.4-26.P2.el7_9.15",
                        "32:9.11.4-26.P2.el7_9.16"
                    ),
                    yum(
                        "kernel.x86_64",
                        "3.10.0-1160.108.1.el7",
                        "3.10.0-1160.119.1.el7"
                    ),
                    yum("openssh.x86_64", "7.4p1-22.el7_9", "7.4p1-23.el7_9"),
                    yum("openssh-server.x86_64", "7.4p1-22.el7_9", "7.4p1-23.el7_9"),
                ],
                // 2024-01-15 10:12 UTC (no /etc/localtime)
                last_install_unix_ms: Some(1_705_313_520_000),
                metadata_refreshed_unix_ms: Some(1_719_912_000_000),
                automatic_updates: Some(AutomaticUpdates {
                    mechanism: "yum-cron".to_owned(),
                    install_enabled: true,
                    settings: vec![
                        "apply_updates = yes".to_owned(),
                        "yum-cron.service enabled".to_owned(),
                    ],
                }),
                reboot: RebootFacts {
                    required: Some(false),
                    reasons: vec![],
                    since_unix_ms: None,
                },
                unreadable: vec![],
            }
        );
    }

    #[tokio::test]
    async fn replay_without_a_cache_is_an_error_outcome() {
        let error = replay("replay-rocky9-nocache")
            .await
            .expect_err("no pending list");
        assert_eq!(error.reason, "could not list pending updates with dnf");
        assert_eq!(
            error.source.as_deref(),
            Some(
                "`dnf -C check-update` exited with status 1: Error: Cache-only enabled but no cache for 'baseos'"
            )
        );
    }

    #[tokio::test]
    async fn replay_of_partial_output_and_a_failed_rpmdb_is_an_error_outcome() {
        let error = replay("replay-dnf-rpmdb-error")
            .await
            .expect_err("no pending list");
        assert_eq!(error.reason, "could not list pending updates with dnf");
        let source = error.source.unwrap_or_default();
        assert!(
            source.starts_with("`dnf -C check-update` exited with status 1: error: rpmdb"),
            "{source}"
        );
        assert!(
            source.contains("Error: Error: rpmdb open failed"),
            "{source}"
        );
    }
}

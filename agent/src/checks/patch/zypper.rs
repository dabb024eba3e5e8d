//! SUSE Linux Enterprise and openSUSE: zypper.
//!
//! Sources, all read-only (every zypper call carries `--no-refresh`, so nothing is downloaded;
//! a stale cache shows in `metadata_refreshed_unix_ms`):
//! - `zypper --non-interactive --xmlout --no-refresh list-updates`: the package updates, with
//!   installed (`edition-old`) and available (`edition`) versions and the repository alias;
//! - the same with `list-patches`: the applicable patches with their category and severity;
//! - `/var/log/zypp/history` for the last successful upgrade or applied patch;
//! - one `find` for the times of the raw metadata (`repomd.xml`) and of `/run/reboot-needed`;
//! - `zypper needs-rebooting` for a pending reboot;
//! - `/etc/sysconfig/automatic_online_update` (YaST's automatic online update) and
//!   `systemctl is-enabled transactional-update.timer` (SLE Micro, MicroOS) for automatic
//!   updates.
//!
//! Patches and packages: zypper's XML names no packages for a patch, so the two cannot be joined.
//! Both are reported as pending: each package update (not classified: packages carry no
//! category) and each applicable patch as an update of its own (name and advisory = the patch
//! name, `security` from its category, its severity as zypper spells it). A security fix thus
//! shows up twice, once as the patch and once as the package it brings.
//!
//! Held: a patch whose status is `unwanted` is locked (`zypper addlock -t patch`) and is reported
//! held. Locked packages are not picked by the solver, so `list-updates` omits them: they are not
//! reported at all, and no package is reported held.

use roxmltree::{Document, Node};

use super::{
    AutomaticUpdates, LocalClock, PackageManager, PatchFacts, PendingUpdate, RebootFacts,
    RebootReason, TimeFact, first_lines, parse_file_times, run_expecting, unit_enabled_state,
};
use crate::checks::CheckError;
use crate::host::{CommandOutput, Host, HostError};

const LIST_UPDATES: &[&str] = &[
    "--non-interactive",
    "--xmlout",
    "--no-refresh",
    "list-updates",
];
const LIST_PATCHES: &[&str] = &[
    "--non-interactive",
    "--xmlout",
    "--no-refresh",
    "list-patches",
];
/// 0, or 100/101 (updates / security updates needed) where zypper reports them.
const LIST_OK: &[i32] = &[0, 100, 101];
const HISTORY: &str = "/var/log/zypp/history";
const REBOOT_NEEDED: &str = "/run/reboot-needed";
const AUTOMATIC_ONLINE_UPDATE: &str = "/etc/sysconfig/automatic_online_update";
const RAW_CACHE: &str = "/var/cache/zypp/raw";
/// A missing start point (no reboot marker) only makes `find` exit 1.
const FIND_TIMES: &[&str] = &[
    "/var/cache/zypp/raw",
    "/run/reboot-needed",
    "-maxdepth",
    "3",
    "(",
    "-name",
    "repomd.xml",
    "-o",
    "-name",
    "reboot-needed",
    ")",
    "-printf",
    "%T@ %p\\n",
];
const PACKAGE_CLASSIFICATION: &str = "zypper list-updates (packages carry no category)";
const PATCH_CLASSIFICATION: &str = "zypper patch category";

/// The version from `zypper --version`: `zypper 1.14.68` -> `1.14.68`.
pub(super) fn parse_version(stdout: &str) -> Option<String> {
    stdout.split_whitespace().nth(1).map(str::to_owned)
}

pub(super) async fn collect(
    host: &Host,
    version: Option<String>,
) -> Result<PatchFacts, CheckError> {
    let mut facts = PatchFacts::new(vec![PackageManager {
        name: "zypper".into(),
        version,
    }]);
    match run_expecting(host, "rpm", &["--version"], &[0]).await {
        Ok(output) => facts.managers.push(PackageManager {
            name: "rpm".to_owned(),
            version: output
                .stdout
                .lines()
                .next()
                .and_then(|l| l.trim().strip_prefix("RPM version "))
                .map(str::to_owned),
        }),
        Err(reason) => facts.unreadable("manager_version", reason),
    }

    let mut pending = Vec::new();
    for args in [LIST_UPDATES, LIST_PATCHES] {
        let updates = run_zypper(host, args)
            .await
            .and_then(|output| parse_update_status(&output.stdout))
            .map_err(|reason| {
                CheckError::new("could not list pending updates with zypper").with_source(reason)
            })?;
        pending.extend(updates.into_iter().filter_map(Update::into_pending));
    }
    facts.pending = pending;

    let clock = LocalClock::of(host).await;
    facts.set_time(
        TimeFact::LastInstall,
        match &clock {
            Ok(clock) => last_install(host, clock).await,
            Err(reason) => Err(reason.clone()),
        },
    );
    let times = run_expecting(host, "find", FIND_TIMES, &[0, 1])
        .await
        .map(|output| parse_file_times(&output.stdout));
    facts.set_time(
        TimeFact::MetadataRefreshed,
        times.as_ref().map_err(Clone::clone).and_then(|times| {
            times
                .iter()
                .filter(|(path, _)| path.starts_with(RAW_CACHE) && path.ends_with("/repomd.xml"))
                .map(|(_, ms)| *ms)
                .max()
                .ok_or_else(|| {
                    format!("no repomd.xml in {RAW_CACHE}: metadata was never downloaded")
                })
        }),
    );
    facts.set_automatic_updates(automatic_updates(host).await);
    let marker = times
        .as_ref()
        .ok()
        .and_then(|times| times.get(REBOOT_NEEDED).copied());
    facts.set_reboot(reboot(host, marker, times.as_ref().err()).await);
    Ok(facts)
}

/// Runs zypper and returns its output when it exited with one of [`LIST_OK`]. With `--xmlout`
/// zypper writes its errors into the XML on stdout, so those are the reason given.
async fn run_zypper(host: &Host, args: &[&str]) -> Result<CommandOutput, String> {
    let output = host.run("zypper", args).await.map_err(|e| e.to_string())?;
    if output.status.is_some_and(|s| LIST_OK.contains(&s)) {
        return Ok(output);
    }
    let argv = crate::host::display_argv("zypper", args);
    let status = output
        .status
        .map_or_else(|| "a signal".to_owned(), |code| format!("status {code}"));
    let errors = xml_errors(&output.stdout);
    let said = if !errors.is_empty() {
        errors.join(" / ")
    } else if !output.stderr.trim().is_empty() {
        first_lines(output.stderr.trim(), 5)
    } else {
        first_lines(output.stdout.trim(), 5)
    };
    let meaning = match output.status {
        Some(7) => " (another process holds the zypp lock)",
        Some(106) => " (some repositories were skipped, so the list would be incomplete)",
        _ => "",
    };
    Err(format!("`{argv}` exited with {status}{meaning}: {said}"))
}

/// The texts of `<message type="error">` elements, whitespace collapsed; empty when the text is
/// not XML.
pub(crate) fn xml_errors(stdout: &str) -> Vec<String> {
    let Ok(doc) = Document::parse(stdout) else {
        return Vec::new();
    };
    doc.descendants()
        .filter(|n| n.has_tag_name("message") && n.attribute("type") == Some("error"))
        .map(|n| text_of(n).split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn text_of(node: Node) -> String {
    node.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect()
}

/// One `<update>` element of `list-updates` or `list-patches`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Update {
    /// `package` or `patch`.
    pub kind: String,
    pub name: String,
    pub edition: String,
    /// The installed version (packages only; absent when unchanged).
    pub edition_old: Option<String>,
    pub arch: String,
    /// Patches: `needed`, `optional`, `unwanted` (locked), `applied`, `not-needed`, `retracted`.
    pub status: Option<String>,
    /// Patches: `security`, `recommended`, `optional`, `feature`, ...
    pub category: Option<String>,
    /// Patches: `critical`, `important`, `moderate`, `low`, `unspecified`.
    pub severity: Option<String>,
    /// Patches: installing it suggests a reboot.
    pub restart: Option<bool>,
    /// The repository alias.
    pub repo: Option<String>,
}

/// Parses zypper's `<update-status>` XML (from `list-updates` or `list-patches`): the updates in
/// `<update-list>` and, when update-stack patches come first, `<blocked-update-list>`. An
/// `<message type="error">`, or output without `<update-status>`, is an error.
pub(crate) fn parse_update_status(stdout: &str) -> Result<Vec<Update>, String> {
    let doc = Document::parse(stdout).map_err(|e| {
        format!(
            "zypper's output is not XML ({e}): {}",
            first_lines(stdout.trim(), 3)
        )
    })?;
    let errors = xml_errors(stdout);
    if !errors.is_empty() {
        return Err(format!("zypper reported an error: {}", errors.join(" / ")));
    }
    let status = doc
        .descendants()
        .find(|n| n.has_tag_name("update-status"))
        .ok_or_else(|| {
            "zypper printed no <update-status>, so its output is incomplete".to_owned()
        })?;
    let mut out = Vec::new();
    for list in status
        .children()
        .filter(|n| n.has_tag_name("update-list") || n.has_tag_name("blocked-update-list"))
    {
        for node in list.children().filter(|n| n.has_tag_name("update")) {
            let attr = |name: &str| node.attribute(name).map(str::to_owned);
            let name = attr("name").ok_or("an <update> without a name")?;
            out.push(Update {
                kind: attr("kind").unwrap_or_else(|| "package".to_owned()),
                name,
                edition: attr("edition").unwrap_or_default(),
                edition_old: attr("edition-old"),
                arch: attr("arch").unwrap_or_default(),
                status: attr("status"),
                category: attr("category"),
                severity: attr("severity"),
                restart: node.attribute("restart").map(|r| r == "true"),
                repo: node
                    .children()
                    .find(|n| n.has_tag_name("source"))
                    .and_then(|s| s.attribute("alias"))
                    .map(str::to_owned),
            });
        }
    }
    Ok(out)
}

impl Update {
    /// The pending update this element stands for: every package update, and each patch that is
    /// still to be applied (needed, optional or locked).
    pub(crate) fn into_pending(self) -> Option<PendingUpdate> {
        let origins = self.repo.into_iter().collect();
        if self.kind != "patch" {
            return Some(PendingUpdate {
                name: self.name,
                architecture: Some(self.arch).filter(|a| !a.is_empty()),
                installed_version: self.edition_old,
                available_version: Some(self.edition).filter(|e| !e.is_empty()),
                security: false,
                classification_source: PACKAGE_CLASSIFICATION.to_owned(),
                origins,
                ..PendingUpdate::default()
            });
        }
        let status = self.status.as_deref().unwrap_or("needed");
        if !matches!(status, "needed" | "optional" | "unwanted") {
            return None;
        }
        Some(PendingUpdate {
            architecture: Some(self.arch).filter(|a| !a.is_empty()),
            installed_version: None,
            available_version: Some(self.edition).filter(|e| !e.is_empty()),
            security: self.category.as_deref() == Some("security"),
            classification_source: PATCH_CLASSIFICATION.to_owned(),
            origins,
            advisories: vec![self.name.clone()],
            severity: self
                .severity
                .filter(|s| !s.is_empty() && s != "unspecified"),
            held: status == "unwanted",
            restart_required: self.restart,
            name: self.name,
            ..PendingUpdate::default()
        })
    }
}

/// The last successful upgrade in zypp's history.
async fn last_install(host: &Host, clock: &LocalClock) -> Result<i64, String> {
    let text = host.read_file(HISTORY).await.map_err(|e| e.to_string())?;
    let date =
        parse_history(&text).ok_or_else(|| format!("no upgrade or applied patch in {HISTORY}"))?;
    clock
        .parse(&date, "%Y-%m-%d %H:%M:%S")
        .map_err(|e| format!("{HISTORY}: {e}"))
}

/// The time of the last upgrade in `/var/log/zypp/history`: an `install` line (written only once
/// rpm succeeded) of a package name installed before in the same file, or a `patch` line whose
/// new state (the tenth column: `date|patch|name|edition|arch|repo|category|severity|old|new`)
/// is `applied`. Lines starting with `#` are rpm output. A first install of a name counts as
/// nothing: after the file was rotated, the first upgrade of each package is missed, which can
/// only make the last upgrade look older.
pub(crate) fn parse_history(text: &str) -> Option<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut last = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        match fields.as_slice() {
            [date, "install", name, ..] if !seen.insert(*name) => last = Some(*date),
            [date, "patch", ..] if fields.get(9) == Some(&"applied") => last = Some(*date),
            _ => {}
        }
    }
    last.map(str::to_owned)
}

/// SUSE has no automatic updates by default. Two mechanisms install them: YaST's "Automatic
/// Online Update" (a cron job, `AOU_ENABLE_CRONJOB="true"` in its sysconfig file) and, on
/// transactional systems, `transactional-update.timer`.
async fn automatic_updates(host: &Host) -> Result<AutomaticUpdates, String> {
    let sysconfig = match host.read_file(AUTOMATIC_ONLINE_UPDATE).await {
        Ok(text) => Some(text),
        Err(HostError::FileNotFound { .. }) => None,
        Err(error) => return Err(error.to_string()),
    };
    let state = unit_enabled_state(host, "transactional-update.timer").await?;
    Ok(parse_automatic_updates(sysconfig.as_deref(), &state))
}

pub(crate) fn parse_automatic_updates(
    sysconfig: Option<&str>,
    timer_state: &str,
) -> AutomaticUpdates {
    let mut settings = Vec::new();
    let cron = match sysconfig {
        None => {
            settings.push(format!("{AUTOMATIC_ONLINE_UPDATE} absent"));
            false
        }
        Some(text) => {
            let line = text
                .lines()
                .map(str::trim)
                .rfind(|l| l.starts_with("AOU_ENABLE_CRONJOB="));
            match line {
                Some(line) => {
                    settings.push(line.to_owned());
                    line.trim_start_matches("AOU_ENABLE_CRONJOB=")
                        .trim_matches('"')
                        == "true"
                }
                None => {
                    settings.push("AOU_ENABLE_CRONJOB not set".to_owned());
                    false
                }
            }
        }
    };
    settings.push(format!("transactional-update.timer {timer_state}"));
    let timer = matches!(timer_state, "enabled" | "enabled-runtime");
    AutomaticUpdates {
        mechanism: if timer && !cron {
            "transactional-update".to_owned()
        } else {
            "yast2-online-update-configuration".to_owned()
        },
        install_enabled: cron || timer,
        settings,
    }
}

/// `zypper needs-rebooting` exits 102 when a reboot is needed and 0 when not. Older zypper lacks
/// the command; then the marker `/run/reboot-needed` (written by libzypp after installing a
/// patch or package that asks for a reboot) answers alone.
async fn reboot(
    host: &Host,
    marker: Option<i64>,
    find_error: Option<&String>,
) -> Result<RebootFacts, String> {
    match run_expecting(host, "zypper", &["needs-rebooting"], &[0, 102]).await {
        Ok(output) => Ok(parse_needs_rebooting(output.status, &output.stdout, marker)),
        Err(reason) => match find_error {
            Some(find_error) => Err(format!("{reason}; {find_error}")),
            None => Ok(RebootFacts::from_reasons(
                marker
                    .map(|_| RebootReason {
                        source: "reboot_required_file".to_owned(),
                        detail: REBOOT_NEEDED.to_owned(),
                    })
                    .into_iter()
                    .collect(),
                marker,
            )),
        },
    }
}

pub(crate) fn parse_needs_rebooting(
    status: Option<i32>,
    stdout: &str,
    marker: Option<i64>,
) -> RebootFacts {
    if status != Some(102) {
        return RebootFacts::from_reasons(Vec::new(), None);
    }
    let said = stdout.lines().map(str::trim).find(|l| !l.is_empty());
    RebootFacts::from_reasons(
        vec![RebootReason {
            source: "zypper_needs_rebooting".to_owned(),
            detail: match said {
                Some(said) => format!("zypper needs-rebooting: {said}"),
                None => "zypper needs-rebooting exited with 102".to_owned(),
            },
        }],
        marker,
    )
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
        std::fs::read_to_string(testdata("zypper").join(name)).expect("fixture exists")
    }

    fn some(text: &str) -> Option<String> {
        Some(text.to_owned())
    }

    const BASESYSTEM: &str = "Basesystem_Module_15_SP5_x86_64:SLE-Module-Basesystem15-SP5-Updates";
    const SERVER: &str = "SLES15-SP5-Updates";

    fn package(name: &str, installed: &str, available: &str) -> PendingUpdate {
        PendingUpdate {
            name: name.to_owned(),
            architecture: some("x86_64"),
            installed_version: some(installed),
            available_version: some(available),
            security: false,
            classification_source: PACKAGE_CLASSIFICATION.to_owned(),
            origins: vec![BASESYSTEM.to_owned()],
            ..PendingUpdate::default()
        }
    }

    fn patch(name: &str, category: &str, severity: &str, repo: &str) -> PendingUpdate {
        PendingUpdate {
            name: name.to_owned(),
            architecture: some("noarch"),
            installed_version: None,
            available_version: some("1"),
            security: category == "security",
            classification_source: PATCH_CLASSIFICATION.to_owned(),
            origins: vec![repo.to_owned()],
            advisories: vec![name.to_owned()],
            severity: some(severity),
            restart_required: Some(false),
            ..PendingUpdate::default()
        }
    }

    fn expected_packages() -> Vec<PendingUpdate> {
        vec![
            package(
                "kernel-default",
                "5.14.21-150500.55.39.1",
                "5.14.21-150500.55.52.1",
            ),
            package("libopenssl3", "3.0.8-150500.5.14.1", "3.0.8-150500.5.20.1"),
            package("openssl-3", "3.0.8-150500.5.14.1", "3.0.8-150500.5.20.1"),
            package("timezone", "2023c-150000.75.23.1", "2024a-150000.75.28.1"),
        ]
    }

    fn expected_patches() -> Vec<PendingUpdate> {
        vec![
            PendingUpdate {
                restart_required: Some(true),
                ..patch(
                    "SUSE-SLE-Module-Basesystem-15-SP5-2024-1012",
                    "security",
                    "important",
                    BASESYSTEM,
                )
            },
            patch(
                "SUSE-SLE-Module-Basesystem-15-SP5-2024-877",
                "security",
                "important",
                BASESYSTEM,
            ),
            patch(
                "SUSE-SLE-Module-Basesystem-15-SP5-2024-812",
                "recommended",
                "moderate",
                BASESYSTEM,
            ),
            PendingUpdate {
                held: true,
                ..patch(
                    "SUSE-SLE-Product-SLES-15-SP5-2024-700",
                    "security",
                    "low",
                    SERVER,
                )
            },
        ]
    }

    #[test]
    fn version() {
        assert_eq!(parse_version("zypper 1.14.68\n"), some("1.14.68"));
    }

    #[test]
    fn list_updates() {
        let updates = parse_update_status(&fixture("list-updates-sles15.xml")).expect("parses");
        let pending: Vec<PendingUpdate> = updates
            .into_iter()
            .filter_map(Update::into_pending)
            .collect();
        assert_eq!(pending, expected_packages());
    }

    #[test]
    fn list_patches_skips_applied_ones_and_marks_locked_ones_held() {
        let updates = parse_update_status(&fixture("list-patches-sles15.xml")).expect("parses");
        assert_eq!(updates.len(), 5, "one applied patch is listed too");
        let pending: Vec<PendingUpdate> = updates
            .into_iter()
            .filter_map(Update::into_pending)
            .collect();
        assert_eq!(pending, expected_patches());
    }

    #[test]
    fn blocked_update_list_counts_too() {
        let updates =
            parse_update_status(&fixture("list-patches-update-stack.xml")).expect("parses");
        let names: Vec<&str> = updates.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "SUSE-SLE-Module-Basesystem-15-SP5-2024-1150",
                "SUSE-SLE-Module-Basesystem-15-SP5-2024-877"
            ]
        );
    }

    #[test]
    fn nothing_pending() {
        assert_eq!(
            parse_update_status(&fixture("list-updates-empty.xml")),
            Ok(vec![])
        );
    }

    #[test]
    fn an_error_message_is_an_error() {
        let error = parse_update_status(&fixture("list-updates-locked.xml")).expect_err("refused");
        assert_eq!(
            error,
            "zypper reported an error: System management is locked by the application with pid 2143 (zypper). Close this application before trying again."
        );
        assert!(parse_update_status("").is_err());
        assert!(
            parse_update_status("<stream><message type=\"info\">Loading</message></stream>")
                .is_err()
        );
        assert!(parse_update_status("<stream><update-status>").is_err());
    }

    #[test]
    fn history_counts_upgrades_and_applied_patches_only() {
        assert_eq!(
            parse_history(&fixture("history")),
            some("2024-01-10 14:02:31")
        );
        assert_eq!(
            parse_history("2024-01-10 12:00:01|install|vim|9.0|x86_64|root@h|repo|abc|\n"),
            None
        );
    }

    #[test]
    fn automatic_online_update() {
        let on = parse_automatic_updates(
            Some("## Type: yesno\nAOU_ENABLE_CRONJOB=\"true\"\n"),
            "not-found",
        );
        assert!(on.install_enabled);
        let off = parse_automatic_updates(None, "disabled");
        assert!(!off.install_enabled);
        let timer = parse_automatic_updates(None, "enabled");
        assert_eq!(timer.mechanism, "transactional-update");
        assert!(timer.install_enabled);
    }

    #[test]
    fn needs_rebooting() {
        let yes = parse_needs_rebooting(
            Some(102),
            "Core libraries or services have been updated.\n",
            Some(5),
        );
        assert_eq!(yes.required, Some(true));
        assert_eq!(yes.since_unix_ms, Some(5));
        assert_eq!(
            parse_needs_rebooting(Some(0), "", None).required,
            Some(false)
        );
    }

    async fn replay(name: &str) -> Result<PatchFacts, CheckError> {
        let host = Host::replay(&testdata(name)).expect("recording loads");
        crate::checks::patch::collect(&host).await
    }

    #[tokio::test]
    async fn replay_of_a_sles15_server() {
        let facts = replay("replay-sles15").await.expect("collects");
        let mut pending = expected_packages();
        pending.extend(expected_patches());
        assert_eq!(
            facts,
            PatchFacts {
                managers: vec![
                    PackageManager {
                        name: "zypper".to_owned(),
                        version: some("1.14.68")
                    },
                    PackageManager {
                        name: "rpm".to_owned(),
                        version: some("4.14.3")
                    },
                ],
                pending,
                // 2024-01-10 14:02:31 in America/New_York (EST, UTC-5)
                last_install_unix_ms: Some(1_704_913_351_000),
                metadata_refreshed_unix_ms: Some(1_710_345_600_000),
                automatic_updates: Some(AutomaticUpdates {
                    mechanism: "yast2-online-update-configuration".to_owned(),
                    install_enabled: true,
                    settings: vec![
                        "AOU_ENABLE_CRONJOB=\"true\"".to_owned(),
                        "transactional-update.timer not-found".to_owned(),
                    ],
                }),
                reboot: RebootFacts {
                    required: Some(true),
                    reasons: vec![RebootReason {
                        source: "zypper_needs_rebooting".to_owned(),
                        detail:
                            "zypper needs-rebooting: Core libraries or services have been updated."
                                .to_owned(),
                    }],
                    since_unix_ms: Some(1_710_349_200_000),
                },
                unreadable: vec![],
            }
        );
        assert_eq!(facts.pending_security_count(), 3);
    }

    #[tokio::test]
    async fn replay_of_a_locked_zypp_is_an_error_outcome() {
        let error = replay("replay-sles15-locked")
            .await
            .expect_err("no pending list");
        assert_eq!(error.reason, "could not list pending updates with zypper");
        assert_eq!(
            error.source.as_deref(),
            Some(
                "`zypper --non-interactive --xmlout --no-refresh list-updates` exited with status 7 (another process holds the zypp lock): System management is locked by the application with pid 2143 (zypper). Close this application before trying again."
            )
        );
    }
}

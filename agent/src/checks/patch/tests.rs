//! The whole patch check over replay directories: what an auditor would see for each host.

use std::path::{Path, PathBuf};

use super::*;
use crate::host::Host;

pub(crate) fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/checks/patch/testdata")
        .join(name)
}

async fn replay(name: &str) -> Result<PatchFacts, CheckError> {
    collect(&Host::replay(&testdata(name)).expect("recording loads")).await
}

fn pending<'a>(facts: &'a PatchFacts, name: &str) -> &'a PendingUpdate {
    facts
        .pending
        .iter()
        .find(|u| u.name == name)
        .unwrap_or_else(|| panic!("{name} not pending in {:?}", facts.pending))
}

#[tokio::test]
async fn debian_12_recorded_on_the_build_machine() {
    let facts = replay("replay-debian12").await.expect("collects");
    assert_eq!(
        facts.managers,
        vec![PackageManager {
            name: "apt".into(),
            version: Some("2.6.1".into())
        }]
    );
    assert_eq!(facts.pending_count(), 80);
    assert_eq!(facts.pending_security_count(), 20);
    assert!(pending(&facts, "libnghttp2-14").security);
    assert!(!pending(&facts, "bash").security);
    // The last upgrade in history.log, read as UTC (the machine's /etc/localtime).
    assert_eq!(facts.last_install_unix_ms, Some(1_790_052_504_000));
    assert_eq!(facts.metadata_refreshed_unix_ms, Some(1_779_295_758_000));
    assert_eq!(
        facts.automatic_updates.as_ref().map(|a| a.install_enabled),
        Some(false)
    );
    // A container: no reboot marker, no kernels in /boot.
    assert_eq!(facts.reboot, RebootFacts::from_reasons(Vec::new(), None));
    assert_eq!(facts.unreadable, Vec::new());
}

#[tokio::test]
async fn ubuntu_laptop_with_held_phased_and_security_updates_and_a_pending_reboot() {
    let facts = replay("replay-ubuntu2204").await.expect("collects");
    assert_eq!(facts.managers[0].version.as_deref(), Some("2.4.11"));
    assert_eq!(facts.pending_count(), 10);
    assert_eq!(facts.pending_security_count(), 5);

    let openssl = pending(&facts, "openssl");
    assert!(openssl.security && !openssl.held && !openssl.phased);
    assert_eq!(
        openssl.origins,
        vec![
            "Ubuntu:22.04/jammy-updates".to_owned(),
            "Ubuntu:22.04/jammy-security".to_owned()
        ]
    );
    assert!(!pending(&facts, "tzdata").security);

    let kernel = pending(&facts, "linux-image-generic");
    assert_eq!(
        kernel,
        &PendingUpdate {
            name: "linux-image-generic".into(),
            installed_version: Some("5.15.0.97.95".into()),
            available_version: Some("5.15.0.101.99".into()),
            security: true,
            classification_source: "apt origin".into(),
            origins: vec!["jammy-updates/main".into(), "jammy-security/main".into()],
            held: true,
            ..PendingUpdate::default()
        }
    );
    let systemd = pending(&facts, "systemd");
    assert!(systemd.phased && !systemd.held && !systemd.security);

    // The current history.log has only a new install and a failed upgrade, so the last
    // successful upgrade comes from history.log.1.gz: 2024-03-14 09:01:01 in Berlin (CET).
    assert_eq!(facts.last_install_unix_ms, Some(1_710_403_261_000));
    // The update-success stamp is newer than every Release file.
    assert_eq!(facts.metadata_refreshed_unix_ms, Some(1_710_489_601_500));
    let auto = facts.automatic_updates.as_ref().expect("read");
    assert!(auto.install_enabled);
    assert!(
        auto.settings
            .contains(&"APT::Periodic::Unattended-Upgrade \"1\"".to_owned())
    );

    assert_eq!(
        facts.reboot,
        RebootFacts {
            required: Some(true),
            reasons: vec![
                RebootReason {
                    source: "reboot_required_file".into(),
                    detail: "/var/run/reboot-required: linux-base, linux-image-5.15.0-101-generic"
                        .into(),
                },
                RebootReason {
                    source: "kernel".into(),
                    detail: "running kernel 5.15.0-97-generic is older than installed 5.15.0-101-generic".into(),
                },
            ],
            since_unix_ms: Some(1_710_403_261_123),
        }
    );
    assert_eq!(facts.unreadable, Vec::new());
}

/// Copies a replay directory so that a test can break one of its sources.
fn copy_replay(name: &str) -> tempfile::TempDir {
    crate::host::copy_recording(&testdata(name))
}

/// Replaces the recorded outcome of the command whose argv starts with `program` and `arg`.
fn rewrite_command(dir: &Path, program: &str, arg: &str, toml_tail: &str, stdout: &str) {
    for entry in std::fs::read_dir(dir.join("commands")).expect("commands") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).expect("read");
            if text.starts_with(&format!("argv = [\"{program}\", \"{arg}\"")) {
                let argv = text.lines().next().expect("argv line");
                std::fs::write(&path, format!("{argv}\n{toml_tail}\n")).expect("write");
                std::fs::write(path.with_extension("stdout"), stdout).expect("write");
                let _ = std::fs::remove_file(path.with_extension("stderr"));
                return;
            }
        }
    }
    panic!("no recorded {program} {arg}");
}

#[tokio::test]
async fn a_failed_listing_is_an_error_never_zero_pending() {
    let dir = copy_replay("replay-debian12");
    rewrite_command(dir.path(), "apt-get", "-s", "status = 100", "");
    std::fs::write(
        dir.path().join("commands/0003.stderr"),
        "E: dpkg was interrupted, you must manually run 'dpkg --configure -a' to correct the problem.\n",
    )
    .expect("write");
    let error = collect(&Host::replay(dir.path()).expect("loads"))
        .await
        .expect_err("an error outcome");
    assert!(
        error.reason.contains("could not list pending updates"),
        "{error}"
    );
    let source = error.source.as_deref().unwrap_or_default();
    assert!(source.contains("status 100"), "{error}");
    assert!(source.contains("dpkg was interrupted"), "{error}");

    for tail in ["error = \"timed_out\"", "error = \"not_found\""] {
        let dir = copy_replay("replay-debian12");
        rewrite_command(dir.path(), "apt-get", "-s", tail, "");
        let error = collect(&Host::replay(dir.path()).expect("loads"))
            .await
            .expect_err("an error outcome");
        assert!(
            error.reason.contains("could not list pending updates"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn unreadable_side_facts_are_named_and_pending_still_reported() {
    let dir = copy_replay("replay-ubuntu2204");
    rewrite_command(
        dir.path(),
        "apt-config",
        "dump",
        "error = \"timed_out\"",
        "",
    );
    rewrite_command(
        dir.path(),
        "find",
        "/var/run/reboot-required",
        "status = 2",
        "",
    );
    let facts = collect(&Host::replay(dir.path()).expect("loads"))
        .await
        .expect("collects");
    assert_eq!(facts.pending_count(), 10);
    let names: Vec<&str> = facts.unreadable.iter().map(|u| u.fact.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "last_install",
            "metadata_refreshed",
            "automatic_updates",
            "reboot"
        ]
    );
    assert!(
        facts.unreadable[2].reason.contains("timed out"),
        "{:?}",
        facts.unreadable
    );
    assert_eq!(facts.reboot.required, None);
    assert_eq!(facts.automatic_updates, None);
}

#[tokio::test]
async fn a_linux_host_without_a_known_package_manager_is_unsupported() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("host.toml"), "os_family = \"linux\"\n").expect("write");
    let error = collect(&Host::replay(dir.path()).expect("loads"))
        .await
        .expect_err("unsupported");
    assert!(error.reason.starts_with("unsupported:"), "{error}");
    assert!(
        error.reason.contains("apt-get, dnf, yum, zypper"),
        "{error}"
    );
}

use super::*;
use crate::model::{
    BackupFacts, DiskEncryptionFacts, PackageManager, PatchFacts, PendingUpdate, RebootFacts,
    RebootReason, SourceError, Volume,
};

const DAY: i64 = 86_400_000;
const NOW: i64 = 1_790_000_000_000;

const POLICY: &str = r#"name = "judge tests"

[[group]]
name = "servers"
hostname_patterns = ["srv-*"]

[[rule]]
id = "security"
title = "t"
severity = "high"
check = "patch"
condition = "security_updates_pending"
max_pending_age = "14d"
controls = ["iso27001-2022:A.8.8"]

[[rule]]
id = "last-update"
title = "t"
severity = "medium"
check = "patch"
condition = "last_update"
max_since_update = "30d"
controls = ["iso27001-2022:A.8.8"]

[[rule]]
id = "reboot"
title = "t"
severity = "medium"
check = "patch"
condition = "reboot_pending"
max_pending_age = "7d"
controls = ["iso27001-2022:A.8.8"]

[[rule]]
id = "metadata"
title = "t"
severity = "low"
check = "patch"
condition = "package_metadata"
max_metadata_age = "7d"
controls = ["iso27001-2022:A.8.8"]

[[rule]]
id = "disks"
title = "t"
severity = "high"
check = "disk_encryption"
condition = "fixed_volumes_encrypted"
controls = ["iso27001-2022:A.8.24"]

[[rule]]
id = "swap"
title = "t"
severity = "medium"
check = "disk_encryption"
condition = "swap_encrypted_or_absent"
controls = ["iso27001-2022:A.8.24"]

[[rule]]
id = "backup"
title = "t"
severity = "high"
check = "backup"
condition = "backup_recent"
max_since_success = "26h"
controls = ["iso27001-2022:A.8.13"]

[[rule]]
id = "restore"
title = "t"
severity = "medium"
check = "backup"
condition = "restore_tested"
max_since_restore_test = "35d"
controls = ["iso27001-2022:A.8.13"]

[[rule]]
id = "silence"
title = "t"
severity = "high"
check = "inventory"
condition = "agent_reporting"
max_silence = "72h"
controls = ["iso27001-2022:A.8.16"]

[[rule]]
id = "servers-only"
title = "t"
severity = "low"
check = "disk_encryption"
condition = "fixed_volumes_encrypted"
applies_to = { groups = ["servers"], tags = ["pci"] }
controls = ["iso27001-2022:A.8.24"]
"#;

fn policy() -> Policy {
    Policy::parse(POLICY, "judge tests").expect("valid")
}

fn run(host: &HostView, rule: &str) -> Judgement {
    let policy = policy();
    let rule = policy.rule(rule).expect("rule");
    judge(&policy, rule, host, NOW)
}

fn host() -> HostView {
    HostView {
        agent_id: "agt-1".into(),
        hostname: "laptop-7".into(),
        os_family: "linux".into(),
        enrolled_at_ms: NOW - 100 * DAY,
        ..HostView::default()
    }
}

fn observed(sequence: u64, outcome: Outcome) -> Observed {
    Observed {
        sequence,
        observed_at_ms: NOW - 120_000,
        received_at_ms: NOW - 60_000,
        outcome,
    }
}

fn update(name: &str, security: bool) -> PendingUpdate {
    PendingUpdate {
        name: name.into(),
        architecture: Some("amd64".into()),
        installed_version: Some("1.0".into()),
        available_version: Some("1.1".into()),
        security,
        classification_source: "origin".into(),
        origins: vec![],
        advisories: vec![],
        severity: None,
        held: false,
        phased: false,
        restart_required: None,
    }
}

fn patch(pending: Vec<PendingUpdate>) -> PatchFacts {
    PatchFacts {
        managers: vec![PackageManager {
            name: "apt".into(),
            version: None,
        }],
        pending_count: pending.len() as u32,
        pending_security_count: pending.iter().filter(|u| u.security).count() as u32,
        pending,
        last_install_unix_ms: Some(NOW - 3 * DAY),
        metadata_refreshed_unix_ms: Some(NOW - DAY),
        automatic_updates: None,
        reboot: RebootFacts {
            required: Some(false),
            reasons: vec![],
            since_unix_ms: None,
        },
        unreadable: vec![],
    }
}

fn with(mut host: HostView, kind: CheckKind, item: Observed) -> HostView {
    host.latest.insert(kind, item);
    host
}

#[test]
fn security_updates_fail_only_once_pending_longer_than_the_threshold() {
    let facts = patch(vec![update("openssl", true), update("vim", false)]);
    let h = with(
        host(),
        CheckKind::Patch,
        observed(40, Outcome::Patch(facts)),
    );
    let fresh = run(&h, "security");
    assert_eq!(fresh.outcome, RuleOutcome::Pass, "{fresh:?}");
    assert_eq!(fresh.evidence, [40]);
    assert_eq!(fresh.decided_by_received_ms, Some(NOW - 60_000));

    let mut h = h;
    h.security_pending_since.insert(
        ("openssl:amd64".into(), "1.0".into()),
        Seen {
            sequence: 12,
            observed_at_ms: NOW - 20 * DAY,
        },
    );
    let late = run(&h, "security");
    assert_eq!(late.outcome, RuleOutcome::Fail);
    assert_eq!(late.offending.len(), 1, "vim is not a security update");
    assert!(
        late.offending[0].starts_with("openssl 1.0 -> 1.1 (pending since"),
        "{late:?}"
    );
    assert!(
        !late.offending[0].contains("20d"),
        "no ages in offending items: {late:?}"
    );
    assert!(late.detail.contains("longer than 14d"), "{late:?}");
    assert_eq!(late.evidence, [12, 40], "where it was first seen, and now");
}

#[test]
fn unreadable_security_classification_is_no_evidence_not_a_pass() {
    let mut facts = patch(vec![update("kernel", false)]);
    facts.unreadable.push(crate::model::UnreadableFact {
        fact: "security_classification".into(),
        reason: "dnf updateinfo failed".into(),
    });
    let h = with(host(), CheckKind::Patch, observed(4, Outcome::Patch(facts)));
    let j = run(&h, "security");
    assert_eq!(j.outcome, RuleOutcome::NoEvidence, "{j:?}");
    assert!(j.detail.contains("dnf updateinfo failed"), "{j:?}");
}

#[test]
fn times_after_the_evidence_arrived_are_not_believed() {
    let mut facts = patch(vec![update("vim", false)]);
    facts.last_install_unix_ms = Some(NOW + 365 * DAY);
    facts.metadata_refreshed_unix_ms = Some(NOW + 365 * DAY);
    let h = with(host(), CheckKind::Patch, observed(3, Outcome::Patch(facts)));
    assert_eq!(run(&h, "last-update").outcome, RuleOutcome::NoEvidence);
    assert_eq!(run(&h, "metadata").outcome, RuleOutcome::NoEvidence);
    let mut future = source("home", "restic");
    future.last_success_unix_ms = Some(NOW + 365 * DAY);
    let h = with(
        host(),
        CheckKind::Backup,
        observed(4, backups(vec![future])),
    );
    let j = run(&h, "backup");
    assert_eq!(j.outcome, RuleOutcome::Fail, "{j:?}");
    assert!(
        j.offending[0].contains("after the evidence arrived"),
        "{j:?}"
    );
}

#[test]
fn evidence_too_old_to_judge_is_no_evidence() {
    let mut item = observed(
        2,
        disks(vec![volume("root", "system", "encrypted")], "absent"),
    );
    item.received_at_ms = NOW - 8 * DAY;
    let h = with(host(), CheckKind::DiskEncryption, item);
    let j = run(&h, "disks");
    assert_eq!(
        j.outcome,
        RuleOutcome::NoEvidence,
        "a week-old 'encrypted' proves nothing now"
    );
    assert!(j.detail.contains("max_evidence_age"), "{j:?}");
    assert_eq!(j.evidence, [2]);
}

#[test]
fn the_last_update_counts_only_while_updates_are_pending() {
    let mut facts = patch(vec![update("vim", false)]);
    facts.last_install_unix_ms = Some(NOW - 40 * DAY);
    let h = with(
        host(),
        CheckKind::Patch,
        observed(3, Outcome::Patch(facts.clone())),
    );
    assert_eq!(run(&h, "last-update").outcome, RuleOutcome::Fail);
    facts.pending.clear();
    facts.pending_count = 0;
    let h = with(
        host(),
        CheckKind::Patch,
        observed(3, Outcome::Patch(facts.clone())),
    );
    assert_eq!(run(&h, "last-update").outcome, RuleOutcome::Pass);
    facts.pending = vec![update("vim", false)];
    facts.pending_count = 1;
    facts.last_install_unix_ms = None;
    let h = with(host(), CheckKind::Patch, observed(3, Outcome::Patch(facts)));
    assert_eq!(run(&h, "last-update").outcome, RuleOutcome::NoEvidence);
}

#[test]
fn a_reboot_fails_once_required_longer_than_the_threshold() {
    let mut facts = patch(vec![]);
    facts.reboot = RebootFacts {
        required: Some(true),
        reasons: vec![RebootReason {
            source: "kernel".into(),
            detail: "6.1.0-40 installed, 6.1.0-30 running".into(),
        }],
        since_unix_ms: Some(NOW - 10 * DAY),
    };
    let h = with(
        host(),
        CheckKind::Patch,
        observed(5, Outcome::Patch(facts.clone())),
    );
    let j = run(&h, "reboot");
    assert_eq!(j.outcome, RuleOutcome::Fail);
    assert_eq!(
        j.offending,
        ["kernel: 6.1.0-40 installed, 6.1.0-30 running"]
    );
    facts.reboot.since_unix_ms = None;
    let mut h = with(host(), CheckKind::Patch, observed(5, Outcome::Patch(facts)));
    assert_eq!(run(&h, "reboot").outcome, RuleOutcome::Pass, "one day only");
    h.reboot_required_since = Some(Seen {
        sequence: 1,
        observed_at_ms: NOW - 8 * DAY,
    });
    assert_eq!(run(&h, "reboot").outcome, RuleOutcome::Fail, "from history");
}

#[test]
fn stale_metadata_fails_and_unknown_metadata_is_no_evidence() {
    let mut facts = patch(vec![]);
    facts.metadata_refreshed_unix_ms = Some(NOW - 9 * DAY);
    let h = with(
        host(),
        CheckKind::Patch,
        observed(5, Outcome::Patch(facts.clone())),
    );
    let j = run(&h, "metadata");
    assert_eq!(j.outcome, RuleOutcome::Fail);
    assert_eq!(j.offending, ["apt metadata"]);
    facts.metadata_refreshed_unix_ms = None;
    let h = with(host(), CheckKind::Patch, observed(5, Outcome::Patch(facts)));
    assert_eq!(run(&h, "metadata").outcome, RuleOutcome::NoEvidence);
}

fn volume(id: &str, role: &'static str, encrypted: &'static str) -> Volume {
    Volume {
        id: id.into(),
        mount_points: vec![format!("/{id}")],
        role,
        encrypted,
        reason: format!("{id} is {encrypted}"),
        scheme: None,
        cipher: None,
        key_bits: None,
        protection: None,
        progress_percent: None,
        key_protectors: vec![],
        filesystem: None,
        size_bytes: None,
    }
}

fn disks(volumes: Vec<Volume>, swap: &'static str) -> Outcome {
    Outcome::DiskEncryption(DiskEncryptionFacts {
        volumes,
        system_encrypted: Some(true),
        fixed_data_encrypted: None,
        swap,
        unreadable: vec![],
    })
}

#[test]
fn every_fixed_volume_must_be_encrypted_with_protection_on() {
    let ok = with(
        host(),
        CheckKind::DiskEncryption,
        observed(
            2,
            disks(
                vec![
                    volume("root", "system", "encrypted"),
                    volume("usb", "removable", "not_encrypted"),
                ],
                "absent",
            ),
        ),
    );
    assert_eq!(run(&ok, "disks").outcome, RuleOutcome::Pass);
    assert_eq!(run(&ok, "swap").outcome, RuleOutcome::Pass);

    let mut suspended = volume("c", "system", "encrypted");
    suspended.protection = Some("off".into());
    let bad = with(
        host(),
        CheckKind::DiskEncryption,
        observed(
            2,
            disks(
                vec![suspended, volume("data", "data", "not_encrypted")],
                "unencrypted",
            ),
        ),
    );
    let j = run(&bad, "disks");
    assert_eq!(j.outcome, RuleOutcome::Fail);
    assert_eq!(j.offending.len(), 2, "{j:?}");
    assert!(j.offending[0].contains("protection is off"), "{j:?}");
    assert!(
        j.offending[1].starts_with("data (/data): not_encrypted"),
        "{j:?}"
    );
    assert_eq!(run(&bad, "swap").outcome, RuleOutcome::Fail);

    let unknown = with(
        host(),
        CheckKind::DiskEncryption,
        observed(
            2,
            disks(vec![volume("root", "system", "unknown")], "unknown"),
        ),
    );
    assert_eq!(run(&unknown, "disks").outcome, RuleOutcome::NoEvidence);
    assert_eq!(run(&unknown, "swap").outcome, RuleOutcome::NoEvidence);
}

fn source(name: &str, tool: &str) -> BackupSource {
    BackupSource {
        tool: tool.into(),
        tool_version: None,
        name: name.into(),
        destination: "/srv/backup".into(),
        last_success_unix_ms: Some(NOW - 3_600_000),
        last_attempt_unix_ms: None,
        last_attempt_result: None,
        snapshot_count: Some(3),
        paths: vec![],
        scheduled: None,
        host_filter: None,
        tags: vec![],
        repository_size_bytes: None,
        integrity_check: None,
        restore_test: Some(RunResult {
            at_unix_ms: NOW - 2 * DAY,
            passed: true,
            detail: "3 files matched".into(),
        }),
        error: None,
    }
}

fn backups(sources: Vec<BackupSource>) -> Outcome {
    Outcome::Backup(BackupFacts {
        sources,
        unreadable: vec![],
    })
}

#[test]
fn backups_name_the_sources_that_are_late_broken_or_untested() {
    let none = with(host(), CheckKind::Backup, observed(4, backups(vec![])));
    assert_eq!(run(&none, "backup").outcome, RuleOutcome::Fail);
    assert_eq!(run(&none, "restore").outcome, RuleOutcome::NotApplicable);

    let mut old = source("home", "restic");
    old.last_success_unix_ms = Some(NOW - 2 * DAY);
    let mut broken = source("etc", "borg");
    broken.error = Some(SourceError {
        kind: "wrong_password".into(),
        message: "the repository password is wrong".into(),
    });
    broken.restore_test = None;
    let mut failed = source("db", "restic");
    failed.restore_test = Some(RunResult {
        at_unix_ms: NOW - DAY,
        passed: false,
        detail: "1 file differed".into(),
    });
    let h = with(
        host(),
        CheckKind::Backup,
        observed(
            4,
            backups(vec![old, broken, failed, source("tm", "time_machine")]),
        ),
    );
    let j = run(&h, "backup");
    assert_eq!(j.outcome, RuleOutcome::Fail);
    assert_eq!(j.offending.len(), 2, "{j:?}");
    assert!(
        j.offending[0].starts_with("restic home: last success"),
        "{j:?}"
    );
    assert!(j.offending[1].contains("wrong_password"), "{j:?}");
    let r = run(&h, "restore");
    assert_eq!(r.outcome, RuleOutcome::Fail);
    assert_eq!(r.offending.len(), 2, "{r:?}");
    assert!(
        r.offending[0].contains("no restore test recorded (wrong_password"),
        "{r:?}"
    );
    assert!(r.offending[1].contains("restore test failed"), "{r:?}");
}

#[test]
fn a_silent_agent_fails_and_a_new_one_waits() {
    let mut h = host();
    let j = run(&h, "silence");
    assert_eq!(
        j.outcome,
        RuleOutcome::Fail,
        "enrolled 100 days ago, never reported"
    );
    assert!(j.detail.contains("never reported"), "{j:?}");
    h.enrolled_at_ms = NOW - 3_600_000;
    assert_eq!(run(&h, "silence").outcome, RuleOutcome::NoEvidence);
    let mut last = observed(
        9,
        Outcome::Gap(crate::model::GapRecord {
            from_sequence: 1,
            to_sequence: 9,
            items_dropped: 8,
            first_observed_at_unix_ms: None,
            last_observed_at_unix_ms: None,
            reason: "spool full".into(),
        }),
    );
    last.received_at_ms = NOW - 4 * DAY;
    h.last_received = Some(last.clone());
    let silent = run(&h, "silence");
    assert_eq!(silent.outcome, RuleOutcome::Fail);
    assert_eq!(
        silent.decided_by_received_ms, None,
        "it rests on what did not arrive"
    );
    last.received_at_ms = NOW - 3_600_000;
    h.last_received = Some(last);
    let fine = run(&h, "silence");
    assert_eq!(fine.outcome, RuleOutcome::Pass);
    assert_eq!(fine.evidence, [9]);
}

#[test]
fn errors_and_missing_evidence_are_no_evidence_and_scopes_exclude() {
    let h = host();
    assert_eq!(run(&h, "disks").outcome, RuleOutcome::NoEvidence);
    let h = with(
        h,
        CheckKind::DiskEncryption,
        observed(
            2,
            Outcome::Error {
                reason: "lsblk failed".into(),
                source: "lsblk".into(),
            },
        ),
    );
    let j = run(&h, "disks");
    assert_eq!(j.outcome, RuleOutcome::NoEvidence);
    assert!(j.detail.contains("lsblk failed"), "{j:?}");
    assert_eq!(j.evidence, [2]);

    let scoped = run(&h, "servers-only");
    assert_eq!(scoped.outcome, RuleOutcome::NotApplicable);
    assert!(scoped.detail.contains("tagged pci"), "{scoped:?}");
    let mut server = h.clone();
    server.tags = vec!["pci".into()];
    let group = run(&server, "servers-only");
    assert_eq!(group.outcome, RuleOutcome::NotApplicable);
    assert!(group.detail.contains("groups servers"), "{group:?}");
    server.hostname = "SRV-DB1".into();
    assert_eq!(
        run(&server, "servers-only").outcome,
        RuleOutcome::NoEvidence
    );
}

#[test]
fn ages_read_for_people() {
    assert_eq!(age_text(40_000), "40s");
    assert_eq!(age_text(15 * 60_000), "15m");
    assert_eq!(age_text(26 * 3_600_000), "1d 2h");
    assert_eq!(age_text(14 * DAY), "14d");
}

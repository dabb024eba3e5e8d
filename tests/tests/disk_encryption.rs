//! Disk-encryption evidence end to end: this machine's volumes through the real binaries, and
//! the promise that no recovery password or key in any recorded host reaches the evidence, the
//! logs or the spool.

use std::path::{Path, PathBuf};

use evident_agent::checks::{self, CheckKind};
use evident_agent::host::Host;
use evident_tests::{Agent, Collector, binary};

/// The device lsblk says holds `/`, and whether a dm-crypt layer sits under it, asked
/// independently of the agent.
fn root_device_says_lsblk() -> (String, bool) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("lsblk")
            .args(args)
            .output()
            .expect("lsblk runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listing = run(&["--list", "--noheadings", "--output", "PATH,MOUNTPOINTS"]);
    let root = listing
        .lines()
        .find_map(|line| {
            let (path, mounts) = line.split_once(' ')?;
            mounts
                .split_whitespace()
                .any(|m| m == "/")
                .then(|| path.to_owned())
        })
        .expect("lsblk lists the device mounted at /");
    // --inverse lists the device and every device it sits on.
    let below = run(&[
        "--inverse",
        "--list",
        "--noheadings",
        "--output",
        "TYPE",
        &root,
    ]);
    (root, below.lines().any(|t| t.trim() == "crypt"))
}

#[test]
fn this_machines_volumes_reach_the_collector() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let agent = Agent::new(&tmp.path().join("agent"));
    let agent_id = agent.enroll_with(&collector);
    agent.run_once().expect_ok("run --once");
    let (root, root_encrypted) = root_device_says_lsblk();

    let evidence = collector.evidence(Some(&agent_id));
    let item = evidence
        .iter()
        .find(|e| e["check"] == "disk_encryption")
        .unwrap_or_else(|| panic!("no disk-encryption evidence in {evidence:#?}"));
    let facts = &item["item"]["outcome"]["disk_encryption"];
    let volumes = facts["volumes"].as_array().expect("volumes");
    let system = volumes
        .iter()
        .find(|v| v["id"] == root.as_str())
        .unwrap_or_else(|| panic!("{root} not among {facts:#}"));
    assert_eq!(system["role"], "system", "{system:#}");
    assert!(
        system["mount_points"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| m == "/")
    );
    assert_eq!(facts["system_encrypted"], root_encrypted, "{facts:#}");
    let expected_state = if root_encrypted {
        "encrypted"
    } else {
        "not_encrypted"
    };
    assert_eq!(system["encrypted"], expected_state);

    let table = collector
        .admin(&["evidence", "list"])
        .expect_ok("evidence list");
    let summary = format!(
        "system encrypted: {}",
        if root_encrypted { "yes" } else { "no" }
    );
    assert!(table.stdout.contains(&summary), "{summary:?} in {table:?}");
}

/// BitLocker recovery passwords: eight groups of six digits.
fn bitlocker_recovery_passwords(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '-'))
        .filter(|word| {
            let groups: Vec<&str> = word.split('-').collect();
            groups.len() == 8
                && groups
                    .iter()
                    .all(|g| g.len() == 6 && g.chars().all(|c| c.is_ascii_digit()))
        })
        .map(str::to_owned)
        .collect()
}

/// FileVault personal recovery keys: six groups of four letters or digits.
fn filevault_recovery_keys(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| {
            let groups: Vec<&str> = word.split('-').collect();
            groups.len() == 6
                && groups.iter().all(|g| {
                    g.len() == 4
                        && g.chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                })
        })
        .map(str::to_owned)
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn no_recovery_secret_in_a_recording_reaches_evidence_logs_or_spool() {
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src/checks/disk_encryption/testdata");
    let mut secrets_seen = 0;
    for entry in std::fs::read_dir(&root).expect("testdata") {
        let dir = entry.expect("entry").path();
        let name = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if !name.starts_with("replay-") {
            continue;
        }
        let mut secrets = Vec::new();
        for file in files_under(&dir) {
            let text = String::from_utf8_lossy(&std::fs::read(&file).expect("read")).into_owned();
            secrets.extend(bitlocker_recovery_passwords(&text));
            secrets.extend(filevault_recovery_keys(&text));
        }
        if secrets.is_empty() {
            continue;
        }
        secrets_seen += secrets.len();

        // The evidence and every log line of a replayed check, at the most verbose level.
        let out = std::process::Command::new(binary("evident-agent"))
            .args(["check", "--json", "--replay", dir.to_str().expect("path")])
            .env("RUST_LOG", "trace")
            .output()
            .expect("check runs");
        assert!(out.status.success(), "{name}: {out:?}");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(printed.contains("disk_encryption"), "{name}: {printed}");

        // The spool, written by the same code `run` uses.
        let state = tempfile::tempdir().expect("tempdir");
        let spool = evident_agent::spool::Spool::open(&state.path().join("spool")).expect("spool");
        let mut sequencer =
            evident_agent::sequence::Sequencer::open(state.path().join("sequence"), &spool)
                .expect("sequencer");
        let host = Host::replay(&dir).expect("replay loads");
        let observation = checks::run(
            CheckKind::DiskEncryption,
            &host,
            &mut checks::Context::default(),
        )
        .await;
        evident_agent::run::spool_observations(&[observation], &mut sequencer, &spool, 500)
            .expect("spooled");
        let mut spooled = Vec::new();
        for file in files_under(state.path()) {
            spooled.extend(std::fs::read(file).expect("read spool"));
        }
        let spooled = String::from_utf8_lossy(&spooled);

        for secret in &secrets {
            assert!(
                !printed.contains(secret.as_str()),
                "{name}: {secret} printed"
            );
            assert!(
                !spooled.contains(secret.as_str()),
                "{name}: {secret} spooled"
            );
            let digits: String = secret.chars().filter(|c| *c != '-').collect();
            assert!(
                !printed.contains(&digits) && !spooled.contains(&digits),
                "{name}"
            );
        }
    }
    assert!(
        secrets_seen > 0,
        "the recordings must hold a recovery secret for this test to mean anything"
    );
}

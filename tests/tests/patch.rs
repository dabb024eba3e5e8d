//! Patch evidence end to end: this machine's real apt state through the real binaries.

use std::collections::BTreeSet;

use evident_tests::{Agent, Collector, binary, run};

/// What apt itself says is upgradable, asked independently of the agent: the names of installed
/// packages with an `Inst` line, plus those kept back, and which of them a `-security` pocket
/// offers.
fn apt_says() -> (BTreeSet<String>, usize) {
    let output = std::process::Command::new("apt-get")
        .args(["-s", "-o", "Debug::NoLocking=true", "dist-upgrade"])
        .env("LC_ALL", "C")
        .output()
        .expect("apt-get runs on this Debian machine");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut names = BTreeSet::new();
    let mut security = 0;
    let mut kept_back = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Inst ") {
            kept_back = false;
            let mut words = rest.split_whitespace();
            let name = words.next().expect("name");
            if words.next().is_some_and(|w| w.starts_with('[')) {
                names.insert(name.split(':').next().expect("name").to_owned());
                let origins = rest.split_once(" (").expect("origins").1;
                security +=
                    usize::from(origins.split(" [").next().expect("o").contains("-security"));
            }
        } else if line.starts_with("The following packages have been kept back")
            || line.starts_with("The following upgrades have been deferred")
        {
            kept_back = true;
        } else if kept_back && line.starts_with("  ") {
            names.extend(line.split_whitespace().map(str::to_owned));
        } else {
            kept_back = false;
        }
    }
    (names, security)
}

#[test]
fn this_machines_apt_state_reaches_the_collector_and_evidence_list_shows_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let agent = Agent::new(&tmp.path().join("agent"));
    let agent_id = agent.enroll_with(&collector);
    let (expected, expected_security) = apt_says();
    agent.run_once().expect_ok("run --once");

    let evidence = collector.evidence(Some(&agent_id));
    let patch = evidence
        .iter()
        .find(|e| e["check"] == "patch")
        .unwrap_or_else(|| panic!("no patch evidence in {evidence:#?}"));
    let facts = &patch["item"]["outcome"]["patch"];
    assert_eq!(facts["managers"][0]["name"], "apt", "{facts:#}");
    assert!(facts["managers"][0]["version"].is_string(), "{facts:#}");
    let listed: BTreeSet<String> = facts["pending"]
        .as_array()
        .expect("pending list")
        .iter()
        .map(|u| u["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(listed, expected, "the agent reports what apt-get says");
    assert_eq!(facts["pending_count"], expected.len());
    assert_eq!(facts["pending_security_count"], expected_security);
    // This machine has an apt history and downloaded lists, and it is a container with no
    // kernels in /boot and no reboot marker.
    assert!(facts["last_install_unix_ms"].is_i64(), "{facts:#}");
    assert!(facts["metadata_refreshed_unix_ms"].is_i64(), "{facts:#}");
    assert_eq!(
        facts["automatic_updates"]["mechanism"],
        "unattended-upgrades"
    );
    assert!(facts["reboot"]["required"].is_boolean(), "{facts:#}");

    let table = collector
        .admin(&["evidence", "list"])
        .expect_ok("evidence list");
    let summary = format!(
        "apt: {} pending ({} security)",
        expected.len(),
        expected_security
    );
    assert!(table.stdout.contains(&summary), "{summary:?} in {table:?}");
    collector.admin(&["verify"]).expect_ok("verify");
}

#[test]
fn check_prints_the_patch_facts_of_this_machine() {
    let (expected, _) = apt_says();
    let out = run(&binary("evident-agent"), &["check"]).expect_ok("check");
    assert!(
        out.stdout
            .contains(&format!("pending           {} (", expected.len())),
        "{out:?}"
    );
    assert!(out.stdout.contains("managers          apt "), "{out:?}");
}

//! Certificate renewal over mutual TLS: a new key, certified under the same agent id, installed
//! atomically; evidence keeps flowing and every stored batch still verifies; a revoked agent
//! cannot renew.

use evident_tests::{Agent, Collector, ITEMS_PER_CYCLE, binary, run};

fn renew(agent: &Agent) -> evident_tests::Run {
    run(
        &binary("evident-agent"),
        &[
            "renew",
            "--state-dir",
            agent.state_dir.to_str().expect("path"),
        ],
    )
}

fn agent_expiry(collector: &Collector, id: &str) -> i64 {
    let out = collector
        .admin(&["agent", "list", "--json"])
        .expect_ok("agent list");
    let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    list.as_array()
        .expect("list")
        .iter()
        .find(|a| a["agent_id"] == id)
        .and_then(|a| a["certificate_not_after_ms"].as_i64())
        .expect("expiry")
}

#[test]
fn a_renewed_agent_reports_with_its_new_key_and_old_evidence_still_verifies() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let agent = Agent::new(&tmp.path().join("agent"));
    let id = agent.enroll_with(&collector);
    agent
        .run_once()
        .expect_ok("report with the first certificate");
    let old_key = std::fs::read(agent.state_dir.join("agent.key")).expect("key");
    let old_cert = std::fs::read(agent.state_dir.join("agent.pem")).expect("cert");
    let old_expiry = agent_expiry(&collector, &id);
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let renewed = renew(&agent).expect_ok("renew");
    assert!(
        renewed
            .stdout
            .starts_with(&format!("renewed {id}: new key")),
        "{renewed:?}"
    );
    let new_key = std::fs::read(agent.state_dir.join("agent.key")).expect("key");
    assert_ne!(new_key, old_key, "a new key");
    assert_ne!(
        std::fs::read(agent.state_dir.join("agent.pem")).expect("cert"),
        old_cert
    );
    assert!(
        agent_expiry(&collector, &id) > old_expiry,
        "the newest certificate counts"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(agent.state_dir.join("agent.key"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(!agent.state_dir.join("agent.key.new").exists());
    // The new private key never reached the collector.
    let key_body: String = String::from_utf8_lossy(&new_key)
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let db = std::fs::read(collector.database()).expect("db");
    assert!(!String::from_utf8_lossy(&db).contains(&key_body[48..96]));

    agent
        .run_once()
        .expect_ok("report with the renewed certificate");
    assert_eq!(collector.evidence(Some(&id)).len(), 2 * ITEMS_PER_CYCLE);
    let verified = collector.admin(&["verify"]).expect_ok("verify");
    assert!(
        verified
            .stdout
            .contains("every chain and signature verifies"),
        "{verified:?}"
    );

    collector
        .admin(&["agent", "revoke", &id, "--reason", "decommissioned"])
        .expect_ok("revoke");
    let refused = renew(&agent);
    assert!(!refused.ok(), "{refused:?}");
    assert!(refused.stderr.contains("is revoked"), "{refused:?}");
    assert_eq!(
        std::fs::read(agent.state_dir.join("agent.key")).expect("key"),
        new_key
    );
}

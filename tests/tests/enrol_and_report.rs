//! Enrolment and delivery through the real binaries.

use evident_tests::{Agent, Collector, ITEMS_PER_CYCLE, binary, run};

#[test]
fn enrol_and_run_once_delivers_inventory_that_evidence_list_shows() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let token = collector.token(&[]);
    let agent = Agent::new(&tmp.path().join("agent"));
    let enrolled = agent
        .enroll(&collector.url(), &token, &collector.fingerprint())
        .expect_ok("enroll");
    let agent_id = enrolled
        .stdout
        .trim()
        .trim_start_matches("enrolled as ")
        .to_owned();
    assert!(agent_id.starts_with("agt-"), "{enrolled:?}");

    let delivered = agent.run_once().expect_ok("run --once");
    assert!(
        delivered
            .stdout
            .contains(&format!("{ITEMS_PER_CYCLE} item(s) stored")),
        "{delivered:?}"
    );
    assert!(
        agent.spool_files().is_empty(),
        "acked evidence leaves the spool"
    );

    // One cycle: one item per check, inventory first (the other checks have their own
    // end-to-end tests).
    let evidence = collector.evidence(Some(&agent_id));
    assert_eq!(evidence.len(), ITEMS_PER_CYCLE, "{evidence:#?}");
    assert_eq!(evidence[1]["check"], "patch");
    let item = &evidence[0];
    assert_eq!(item["agent_id"], agent_id.as_str());
    assert_eq!(item["sequence"], 1);
    assert_eq!(item["check"], "inventory");
    // Agent and collector share this machine's clock: the measured skew is small (the bound
    // only catches a wrong sign or unit, not a timing).
    let skew = item["agent_clock_skew_ms"].as_i64().expect("skew measured");
    assert!(skew.abs() < 600_000, "skew {skew} ms");
    let facts = &item["item"]["outcome"]["inventory"];
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert_eq!(facts["hostname"], hostname.trim());
    assert_eq!(facts["os_family"], "linux");
    assert_eq!(facts["agent_version"], env!("CARGO_PKG_VERSION"));

    let table = collector
        .admin(&["evidence", "list"])
        .expect_ok("evidence list");
    assert!(
        table.stdout.contains(&agent_id) && table.stdout.contains("inventory"),
        "{table:?}"
    );
    let verified = collector.admin(&["verify"]).expect_ok("verify");
    assert!(
        verified
            .stdout
            .contains(&format!("checked {ITEMS_PER_CYCLE} items")),
        "{verified:?}"
    );

    // Secrets stay where they belong: the token is not in the collector's log or the agent's
    // state, and the agent's private key is only in agent.key, with mode 0600.
    assert!(
        !collector.log().contains(&token[4..]),
        "token leaked into the collector log"
    );
    let key = std::fs::read_to_string(agent.state_dir.join("agent.key")).expect("agent.key");
    // Skip the ASN.1 prefix every P-256 PKCS#8 key shares; look for the random part.
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for entry in walk(&agent.state_dir)
        .into_iter()
        .chain(walk(&collector.data_dir))
    {
        let bytes = std::fs::read(&entry).expect("read");
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&token[4..]),
            "token found in {}",
            entry.display()
        );
        if !entry.ends_with("agent.key") {
            assert!(
                !text.contains(&key_body[48..96]),
                "agent key found in {}",
                entry.display()
            );
        }
    }
    use std::os::unix::fs::PermissionsExt;
    for private in [
        agent.state_dir.join("agent.key"),
        collector.data_dir.join("tls/ca.key"),
    ] {
        let mode = std::fs::metadata(&private)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", private.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn reused_expired_and_malformed_tokens_and_a_wrong_fingerprint_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let fingerprint = collector.fingerprint();
    let url = collector.url();
    let agent = |name: &str| Agent::new(&tmp.path().join(name));

    let token = collector.token(&["--uses", "1"]);
    agent("first")
        .enroll(&url, &token, &fingerprint)
        .expect_ok("first use");
    let reused = agent("second").enroll(&url, &token, &fingerprint);
    assert!(!reused.ok());
    assert!(reused.stderr.contains("already used"), "{reused:?}");

    let two_uses = collector.token(&["--uses", "2"]);
    agent("third")
        .enroll(&url, &two_uses, &fingerprint)
        .expect_ok("use 1 of 2");
    agent("fourth")
        .enroll(&url, &two_uses, &fingerprint)
        .expect_ok("use 2 of 2");
    assert!(!agent("fifth").enroll(&url, &two_uses, &fingerprint).ok());

    let short_lived = collector.token(&["--ttl", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let expired = agent("late").enroll(&url, &short_lived, &fingerprint);
    assert!(!expired.ok());
    assert!(expired.stderr.contains("expired"), "{expired:?}");

    let malformed = agent("typo").enroll(&url, "evt_not-a-token", &fingerprint);
    assert!(malformed.stderr.contains("malformed"), "{malformed:?}");
    let unknown = agent("guess").enroll(&url, &format!("evt_{}", "0".repeat(64)), &fingerprint);
    assert!(unknown.stderr.contains("not known"), "{unknown:?}");

    let wrong = "ab".repeat(32);
    let fresh = collector.token(&[]);
    let mismatch = agent("pinned").enroll(&url, &fresh, &wrong);
    assert!(!mismatch.ok());
    assert!(
        mismatch
            .stderr
            .contains(&format!("has CA fingerprint {fingerprint}"))
            && mismatch.stderr.contains(&wrong),
        "{mismatch:?}"
    );
    assert!(
        !tmp.path().join("pinned/agent.key").exists(),
        "no key kept after a refusal"
    );
    // The refusal did not consume the token: the right fingerprint still enrols with it.
    agent("pinned-right")
        .enroll(&url, &fresh, &fingerprint)
        .expect_ok("after mismatch");

    let bad_url = agent("x").enroll("http://127.0.0.1:1", &fresh, &fingerprint);
    assert!(bad_url.stderr.contains("https://"), "{bad_url:?}");
    let bad_fp = agent("y").enroll(&url, &fresh, "12:34");
    assert!(
        bad_fp.stderr.contains("evident-collector ca fingerprint"),
        "{bad_fp:?}"
    );
}

#[test]
fn a_batch_sent_twice_is_stored_once_and_the_spool_survives_an_outage() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let address = collector.address.clone();
    let agent = Agent::new(&tmp.path().join("agent"));
    let agent_id = agent.enroll_with(&collector);
    let data_dir = collector.stop();

    // Collector down: the cycle's batch (one item per check) stays in the spool and run --once
    // fails.
    let offline = agent.run_once();
    assert!(!offline.ok(), "{offline:?}");
    assert!(offline.stderr.contains("stays in the spool"), "{offline:?}");
    let spooled = agent.spool_files();
    assert_eq!(spooled.len(), 1);
    let saved = tmp.path().join("saved-batch");
    std::fs::copy(&spooled[0], &saved).expect("save spool file");

    let collector = Collector::start_on(&data_dir, &address);
    let first = agent.run_once().expect_ok("deliver after outage");
    assert!(
        first.stdout.contains(&format!(
            "{} item(s) stored, 0 already stored",
            2 * ITEMS_PER_CYCLE
        )),
        "{first:?}"
    );

    // Put the delivered batch back, as if its ack had been lost: it is sent again.
    std::fs::copy(&saved, &spooled[0]).expect("restore spool file");
    let resend = agent.run_once().expect_ok("resend");
    assert!(
        resend.stdout.contains(&format!(
            "{ITEMS_PER_CYCLE} item(s) stored, {ITEMS_PER_CYCLE} already stored"
        )),
        "{resend:?}"
    );

    let sequences: Vec<u64> = collector
        .evidence(Some(&agent_id))
        .iter()
        .map(|e| e["sequence"].as_u64().expect("sequence"))
        .collect();
    let expected: Vec<u64> = (1..=3 * ITEMS_PER_CYCLE as u64).collect();
    assert_eq!(sequences, expected);
    collector.admin(&["verify"]).expect_ok("verify");
}

#[test]
fn bad_configuration_names_the_key_and_what_to_do() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("collector.toml");
    std::fs::write(&config, "data_dir = \"/tmp/x\"\nmax_batch_itmes = 5\n").expect("write");
    let out = run(
        &binary("evident-collector"),
        &["serve", "--config", config.to_str().expect("path")],
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("max_batch_itmes"), "{out:?}");

    let agent_config = tmp.path().join("agent.toml");
    std::fs::write(&agent_config, "interval_secs = \"hourly\"\n").expect("write");
    let out = run(
        &binary("evident-agent"),
        &[
            "run",
            "--config",
            agent_config.to_str().expect("path"),
            "--state-dir",
            "/nonexistent",
        ],
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("interval_secs"), "{out:?}");

    let not_enrolled = run(
        &binary("evident-agent"),
        &[
            "run",
            "--once",
            "--state-dir",
            tmp.path().join("none").to_str().expect("path"),
        ],
    );
    assert!(
        not_enrolled.stderr.contains("evident-agent enroll"),
        "{not_enrolled:?}"
    );

    let no_data = run(
        &binary("evident-collector"),
        &[
            "verify",
            "--data-dir",
            tmp.path().join("nothing").to_str().expect("path"),
        ],
    );
    assert_eq!(no_data.code, Some(2));
    assert!(
        no_data.stderr.contains("evident-collector serve"),
        "{no_data:?}"
    );
}

#[test]
fn the_daemon_reports_at_start_and_stops_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let agent = Agent::new(&tmp.path().join("agent"));
    let agent_id = agent.enroll_with(&collector);
    let config = tmp.path().join("agent.toml");
    std::fs::write(&config, "interval_secs = 3600\njitter_secs = 0\n").expect("write config");
    let mut daemon = std::process::Command::new(binary("evident-agent"))
        .args([
            "run",
            "--config",
            config.to_str().expect("path"),
            "--state-dir",
        ])
        .arg(&agent.state_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn agent run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while collector.evidence(Some(&agent_id)).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon delivered nothing"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let exit = daemon.wait().expect("wait for agent");
    assert!(exit.success(), "agent exits 0 on SIGTERM: {exit:?}");
    assert!(agent.spool_files().is_empty());
    assert_eq!(collector.evidence(Some(&agent_id)).len(), ITEMS_PER_CYCLE);
}

//! Evidence that cannot be delivered is never silently lost: a full spool and a corrupt spool
//! file each become a gap record that the collector stores and shows.

use std::path::Path;

use evident_tests::{Agent, Collector, ITEMS_PER_CYCLE, binary, run};

fn run_once_with(agent: &Agent, config: &Path) -> evident_tests::Run {
    run(
        &binary("evident-agent"),
        &[
            "run",
            "--once",
            "--config",
            config.to_str().expect("path"),
            "--state-dir",
            agent.state_dir.to_str().expect("path"),
        ],
    )
}

fn gaps(evidence: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    evidence
        .iter()
        .filter(|e| e["check"] == "gap")
        .map(|e| &e["item"]["outcome"]["gap"])
        .collect()
}

fn sequences(evidence: &[serde_json::Value]) -> Vec<u64> {
    evidence
        .iter()
        .map(|e| e["sequence"].as_u64().expect("sequence"))
        .collect()
}

#[test]
fn a_full_spool_drops_the_oldest_evidence_as_a_gap_record_that_arrives_first() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let address = collector.address.clone();
    let agent = Agent::new(&tmp.path().join("agent"));
    let agent_id = agent.enroll_with(&collector);
    let config = tmp.path().join("agent.toml");
    std::fs::write(&config, "max_spool_bytes = 65536\n").expect("write config");
    let data = collector.stop();

    // Offline until the spool overflows.
    let mut cycles = 0;
    while !agent.spool_files().iter().any(|f| {
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        let (first, last) = name
            .trim_end_matches(".items")
            .split_once('-')
            .expect("range");
        first == last && first.trim_start_matches('0') != "1"
    }) {
        cycles += 1;
        assert!(
            cycles <= 12,
            "no gap after {cycles} cycles: {:?}",
            agent.spool_files()
        );
        let offline = run_once_with(&agent, &config);
        assert!(!offline.ok(), "{offline:?}");
    }
    let spooled: u64 = agent
        .spool_files()
        .iter()
        .map(|f| std::fs::metadata(f).expect("stat").len())
        .sum();
    assert!(spooled <= 65536 + 65536, "bounded: {spooled} bytes");

    let collector = Collector::start_on(&data, &address);
    run_once_with(&agent, &config).expect_ok("deliver after the outage");
    let evidence = collector.evidence(Some(&agent_id));
    let found = gaps(&evidence);
    assert_eq!(found.len(), 1, "{evidence:#?}");
    let gap = found[0];
    assert_eq!(gap["from_sequence"], 1);
    let to = gap["to_sequence"].as_u64().expect("to");
    assert!(
        gap["items_dropped"].as_u64().expect("count") >= to - 1,
        "{gap:#}"
    );
    assert!(gap["first_observed_at_unix_ms"].is_i64(), "{gap:#}");
    assert!(
        gap["reason"]
            .as_str()
            .expect("reason")
            .starts_with("spool over max_spool_bytes (65536)"),
        "{gap:#}"
    );
    // The gap record came first and holds the last dropped sequence; everything after it
    // arrived, in order, once.
    let seqs = sequences(&evidence);
    assert_eq!(seqs[0], to);
    let expected: Vec<u64> = (to..to + seqs.len() as u64).collect();
    assert_eq!(seqs, expected);
    assert_eq!(
        (seqs.len() - 1) % ITEMS_PER_CYCLE,
        0,
        "whole cycles after the gap"
    );

    let table = collector
        .admin(&["evidence", "list"])
        .expect_ok("evidence list");
    assert!(
        table.stdout.contains(&format!("GAP: sequences 1..={to}")),
        "{table:?}"
    );
    collector.admin(&["verify"]).expect_ok("verify");
}

#[test]
fn a_corrupt_spool_file_is_quarantined_and_reported_as_a_gap() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let address = collector.address.clone();
    let agent = Agent::new(&tmp.path().join("agent"));
    let agent_id = agent.enroll_with(&collector);
    let data = collector.stop();
    assert!(!agent.run_once().ok(), "offline");
    let spooled = agent.spool_files();
    assert_eq!(spooled.len(), 1);
    std::fs::write(&spooled[0], b"\xde\xad\xbe\xef this is not evidence").expect("corrupt it");

    let collector = Collector::start_on(&data, &address);
    let delivered = agent.run_once().expect_ok("delivery goes on");
    assert!(
        delivered.stderr.contains("corrupt spool file quarantined"),
        "{delivered:?}"
    );
    let quarantined = agent
        .state_dir
        .join("spool/quarantine")
        .join(spooled[0].file_name().expect("name"));
    assert!(quarantined.exists(), "{}", quarantined.display());

    let evidence = collector.evidence(Some(&agent_id));
    let found = gaps(&evidence);
    assert_eq!(found.len(), 1, "{evidence:#?}");
    assert_eq!(found[0]["from_sequence"], 1);
    assert_eq!(found[0]["to_sequence"], ITEMS_PER_CYCLE);
    assert_eq!(found[0]["items_dropped"], ITEMS_PER_CYCLE);
    assert!(
        found[0]["reason"]
            .as_str()
            .expect("reason")
            .starts_with("spool file corrupt"),
        "{:#}",
        found[0]
    );
    let expected: Vec<u64> = (ITEMS_PER_CYCLE as u64..=2 * ITEMS_PER_CYCLE as u64).collect();
    assert_eq!(sequences(&evidence), expected);
    collector.admin(&["verify"]).expect_ok("verify");
}

//! Fault tests over real processes: the collector is killed with SIGKILL at random moments
//! while several agents deliver, twenty times; afterwards every item each agent numbered is
//! stored exactly once and `verify` passes.

use std::process::{Command, Stdio};
use std::time::Duration;

use evident_tests::{Agent, Collector, binary};
use ring::rand::SecureRandom as _;

/// A random delay between `min_ms` and `max_ms`.
fn random_ms(min_ms: u64, max_ms: u64) -> Duration {
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("random");
    Duration::from_millis(min_ms + u64::from_le_bytes(bytes) % (max_ms - min_ms))
}

#[test]
fn twenty_hard_kills_during_delivery_lose_and_double_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let address = collector.address.clone();
    let agents: Vec<(Agent, String)> = (0..3)
        .map(|i| {
            let agent = Agent::new(&tmp.path().join(format!("agent-{i}")));
            let id = agent.enroll_with(&collector);
            (agent, id)
        })
        .collect();
    let mut data = collector.stop();

    for round in 0..20 {
        let collector = Collector::start_on(&data, &address);
        let running: Vec<_> = agents
            .iter()
            .map(|(agent, _)| {
                Command::new(binary("evident-agent"))
                    .args(["run", "--once", "--state-dir"])
                    .arg(&agent.state_dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn agent")
            })
            .collect();
        // Anywhere from before the first connection to after the last ack.
        std::thread::sleep(random_ms(100, 7000));
        data = collector.stop();
        for mut child in running {
            let status = child.wait().expect("agent exits");
            // Success (0) or a delivery failure (2): never a panic (101) or a signal.
            assert!(
                matches!(status.code(), Some(0) | Some(2)),
                "round {round}: agent ended with {status}"
            );
        }
    }

    // The link returns: every agent empties its spool.
    let collector = Collector::start_on(&data, &address);
    for (agent, _) in &agents {
        agent.run_once().expect_ok("final delivery");
        assert!(agent.spool_files().is_empty(), "spool emptied");
    }
    for (agent, id) in &agents {
        let stored: Vec<u64> = collector
            .evidence(Some(id))
            .iter()
            .map(|e| e["sequence"].as_u64().expect("sequence"))
            .collect();
        let expected: Vec<u64> = (1..=agent.last_sequence()).collect();
        assert_eq!(stored, expected, "{id}: every item exactly once, in order");
        assert!(
            collector
                .evidence(Some(id))
                .iter()
                .all(|e| e["check"] != "gap"),
            "nothing was dropped"
        );
    }
    collector
        .admin(&["verify"])
        .expect_ok("verify after twenty kills");
}

//! Network faults between agent and collector, through a TCP proxy the test controls: while
//! the link drops or stalls connections the agent spools and fails within bounded time; once
//! it passes again one run delivers everything, in order, with nothing lost or doubled.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evident_tests::proxy::{Mode, Proxy};
use evident_tests::{Agent, Collector, ITEMS_PER_CYCLE, binary};
use ring::rand::SecureRandom as _;

/// Longer than any agent run may take, however the link behaves: the agent's own connect and
/// ack timeouts must end a stalled delivery well before this.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// An agent run: its exit code, its stderr and how long it took.
#[derive(Debug)]
struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// A started `evident-agent run --once`, killed (and the test failed) if it outlives the guard.
struct Running {
    child: std::process::Child,
    started: Instant,
    stdout: PathBuf,
    stderr: PathBuf,
}

fn start_once(agent: &Agent, config: Option<&Path>) -> Running {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let stdout = agent.state_dir.with_extension(format!("{stamp}.out"));
    let stderr = agent.state_dir.with_extension(format!("{stamp}.log"));
    let mut command = Command::new(binary("evident-agent"));
    command.args(["run", "--once", "--state-dir"]);
    command.arg(&agent.state_dir);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let child = command
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("agent output"))
        .stderr(std::fs::File::create(&stderr).expect("agent log"))
        .spawn()
        .expect("spawn evident-agent");
    Running {
        child,
        started: Instant::now(),
        stdout,
        stderr,
    }
}

impl Running {
    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    fn wait(mut self) -> Finished {
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for agent") {
                return Finished {
                    code: status.code(),
                    stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
                    stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
                    took: self.started.elapsed(),
                };
            }
            if self.started.elapsed() > HANG_GUARD {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "evident-agent run --once hung for more than {}s: {}",
                    HANG_GUARD.as_secs(),
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn run_once(agent: &Agent, config: Option<&Path>) -> Finished {
    start_once(agent, config).wait()
}

/// Points an enrolled agent at another address, as scripts/quickstart does with sed.
fn point_at(agent: &Agent, address: &str) {
    let file = agent.state_dir.join("enrollment.toml");
    let text = std::fs::read_to_string(&file).expect("enrollment.toml");
    let rewritten: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with("collector = ") {
                format!("collector = \"https://{address}\"")
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert_ne!(
        rewritten.join("\n"),
        text.trim_end(),
        "collector line found"
    );
    std::fs::write(&file, rewritten.join("\n") + "\n").expect("rewrite enrollment.toml");
}

/// Spooled batches, oldest first (the quarantine folder is not one).
fn spooled(agent: &Agent) -> Vec<PathBuf> {
    agent
        .spool_files()
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "items"))
        .collect()
}

fn random_below(bound: u64) -> u64 {
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("random");
    u64::from_le_bytes(bytes) % bound
}

/// Sets up a collector, an agent enrolled directly with it, and a proxy in front of it that
/// the agent reports through.
fn agent_behind_proxy(tmp: &Path) -> (Collector, Agent, String, Proxy) {
    let collector = Collector::start(&tmp.join("collector"));
    let agent = Agent::new(&tmp.join("agent"));
    let id = agent.enroll_with(&collector);
    let proxy = Proxy::start(&collector.address);
    point_at(&agent, &proxy.address());
    (collector, agent, id, proxy)
}

/// Everything the agent numbered is stored once, in order, without a gap record; the spool is
/// empty and the store verifies.
fn assert_exactly_once(collector: &Collector, agent: &Agent, id: &str) {
    assert!(
        agent.spool_files().is_empty(),
        "spool emptied: {:?}",
        agent.spool_files()
    );
    let evidence = collector.evidence(Some(id));
    let stored: Vec<u64> = evidence
        .iter()
        .map(|e| e["sequence"].as_u64().expect("sequence"))
        .collect();
    let expected: Vec<u64> = (1..=agent.last_sequence()).collect();
    assert_eq!(stored, expected, "every item exactly once, in order");
    assert!(
        evidence.iter().all(|e| e["check"] != "gap"),
        "nothing was dropped: {evidence:#?}"
    );
    collector.admin(&["verify"]).expect_ok("verify");
}

#[test]
fn a_link_that_drops_then_stalls_delays_evidence_but_loses_and_doubles_none() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (collector, agent, id, proxy) = agent_behind_proxy(tmp.path());

    proxy.set_mode(Mode::Drop);
    for cycle in 1..=3 {
        let accepted = proxy.accepted();
        let run = run_once(&agent, None);
        assert_eq!(run.code, Some(2), "delivery fails while dropped: {run:#?}");
        assert!(
            proxy.accepted() > accepted,
            "the agent went through the proxy"
        );
        assert_eq!(spooled(&agent).len(), cycle, "each cycle stays spooled");
    }

    proxy.set_mode(Mode::Stall);
    let stalled = run_once(&agent, None);
    assert_eq!(
        stalled.code,
        Some(2),
        "delivery fails while stalled: {stalled:#?}"
    );
    eprintln!(
        "a stalled link failed `run --once` after {:.1}s: {}",
        stalled.took.as_secs_f64(),
        stalled.stderr.lines().last().unwrap_or_default()
    );
    assert_eq!(spooled(&agent).len(), 4, "the stalled cycle stays spooled");
    assert!(
        collector.evidence(Some(&id)).is_empty(),
        "nothing crossed the link"
    );

    proxy.set_mode(Mode::Pass);
    let delivered = run_once(&agent, None);
    assert_eq!(
        delivered.code,
        Some(0),
        "delivery after the outage: {delivered:#?}"
    );
    assert_eq!(agent.last_sequence(), 5 * ITEMS_PER_CYCLE as u64);
    assert_exactly_once(&collector, &agent, &id);
}

/// Starts `run --once` with the link passing and switches it to `fault` while the agent sends
/// a batch somewhere in the middle of its spool: after the bytes of the first `k` batches (plus
/// an estimate of handshake and framing) and half the next, for a random `k` that leaves at
/// least one spooled batch and the new cycle's unsent. The link stays faulty afterwards.
fn fault_mid_delivery(agent: &Agent, config: &Path, proxy: &Proxy, fault: Mode) -> Finished {
    const HANDSHAKE_BYTES: u64 = 2000;
    const FRAMING_BYTES_PER_BATCH: u64 = 150;
    let sizes: Vec<u64> = spooled(agent)
        .iter()
        .map(|f| std::fs::metadata(f).expect("stat").len())
        .collect();
    let before = sizes.len();
    assert!(before >= 3, "enough batches to cut between: {sizes:?}");
    let k = 1 + random_below(before as u64 - 2) as usize;
    let threshold = HANDSHAKE_BYTES
        + sizes[..k]
            .iter()
            .map(|size| size + FRAMING_BYTES_PER_BATCH)
            .sum::<u64>()
        + sizes[k] / 2;
    proxy.set_mode(Mode::Pass);
    let base = proxy.upstream_bytes();
    let mut running = start_once(agent, Some(config));
    let mut switched = false;
    while !running.exited() && running.started.elapsed() < HANG_GUARD {
        if proxy.upstream_bytes() - base >= threshold {
            proxy.set_mode(fault);
            switched = true;
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let run = running.wait();
    proxy.set_mode(fault);
    let after = spooled(agent).len();
    eprintln!(
        "{fault:?} in batch {} of {before} + {ITEMS_PER_CYCLE} after {} bytes sent (switched: \
         {switched}): exit {:?} after {:.1}s; {after} batches left in the spool; {}",
        k + 1,
        proxy.upstream_bytes() - base,
        run.code,
        run.took.as_secs_f64(),
        run.stderr.lines().last().unwrap_or_default(),
    );
    assert!(
        matches!(run.code, Some(0) | Some(2)),
        "a delivery or a delivery failure, never a crash: {run:#?}"
    );
    if switched {
        assert_eq!(
            run.code,
            Some(2),
            "the fault cut the delivery short: {run:#?}"
        );
        assert!(after > 0, "what was not sent is still spooled");
    }
    run
}

/// Spools `cycles` cycles of one-item batches with the link dropping.
fn spool_offline(agent: &Agent, config: &Path, proxy: &Proxy, cycles: usize) {
    std::fs::write(config, "max_batch_items = 1\n").expect("write config");
    proxy.set_mode(Mode::Drop);
    for _ in 0..cycles {
        let run = run_once(agent, Some(config));
        assert_eq!(run.code, Some(2), "delivery fails while dropped: {run:#?}");
    }
    assert_eq!(spooled(agent).len(), cycles * ITEMS_PER_CYCLE);
}

fn deliver_after_fault(
    collector: &Collector,
    agent: &Agent,
    id: &str,
    config: &Path,
    proxy: &Proxy,
    cycles: usize,
) {
    proxy.set_mode(Mode::Pass);
    let delivered = run_once(agent, Some(config));
    assert_eq!(
        delivered.code,
        Some(0),
        "delivery after the faults: {delivered:#?}"
    );
    eprintln!("{}", delivered.stdout.trim());
    assert_eq!(agent.last_sequence(), (cycles * ITEMS_PER_CYCLE) as u64);
    assert_exactly_once(collector, agent, id);
}

#[test]
fn a_link_dropped_in_the_middle_of_a_delivery_loses_and_doubles_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (collector, agent, id, proxy) = agent_behind_proxy(tmp.path());
    let config = tmp.path().join("agent.toml");
    spool_offline(&agent, &config, &proxy, 3);
    for _ in 0..2 {
        fault_mid_delivery(&agent, &config, &proxy, Mode::Drop);
    }
    deliver_after_fault(&collector, &agent, &id, &config, &proxy, 6);
}

#[test]
fn a_link_stalled_in_the_middle_of_a_delivery_times_out_and_loses_and_doubles_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (collector, agent, id, proxy) = agent_behind_proxy(tmp.path());
    let config = tmp.path().join("agent.toml");
    spool_offline(&agent, &config, &proxy, 1);
    fault_mid_delivery(&agent, &config, &proxy, Mode::Stall);
    deliver_after_fault(&collector, &agent, &id, &config, &proxy, 3);
}

//! Harness for end-to-end tests: the real `evident-collector` and `evident-agent` binaries,
//! started as processes on 127.0.0.1 with their data in temporary directories.
//!
//! The binaries are found next to the test executable's directory (`target/<profile>/`); build
//! them first with `cargo build --workspace --bins` (scripts/test does).

pub mod attacker;
pub mod browser;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Items one agent cycle stores: one per check, inventory first.
pub const ITEMS_PER_CYCLE: usize = evident_agent::checks::CheckKind::ALL.len();

/// `target/<profile>/` of the running test: its executable lives in `target/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_owned()
}

/// `target/test-artifacts/`: files a test leaves to be looked at (screenshots), beside the
/// profiles so that `cargo clean` removes them and `CARGO_TARGET_DIR` moves them.
pub fn artifacts_dir() -> PathBuf {
    let profile = profile_dir();
    profile
        .parent()
        .expect("target/<profile>/ has a parent")
        .join("test-artifacts")
}

/// Path of a workspace binary built beside the running test.
pub fn binary(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (scripts/test does)",
        path.display()
    );
    path
}

/// A finished command's output, with both streams as text.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with both streams unless the command succeeded.
    pub fn expect_ok(self, what: &str) -> Run {
        assert!(self.ok(), "{what} failed: {self:#?}");
        self
    }
}

pub fn run(program: &Path, args: &[&str]) -> Run {
    Run::from(
        Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display())),
    )
}

/// A running collector; killed when dropped.
#[derive(Debug)]
pub struct Collector {
    pub data_dir: PathBuf,
    pub address: String,
    child: Child,
    log: PathBuf,
}

impl Collector {
    /// Starts `serve` on an ephemeral loopback port and waits until it listens.
    pub fn start(data_dir: &Path) -> Collector {
        Collector::start_on(data_dir, "127.0.0.1:0")
    }

    pub fn start_on(data_dir: &Path, listen: &str) -> Collector {
        Collector::start_with(data_dir, listen, &[])
    }

    /// Like `start_on`, with more `serve` arguments (e.g. `--max-database-bytes N`).
    pub fn start_with(data_dir: &Path, listen: &str, extra_args: &[&str]) -> Collector {
        let addr_file = data_dir.join("grpc.addr");
        let _ = std::fs::remove_file(&addr_file);
        std::fs::create_dir_all(data_dir).expect("create data dir");
        let log = data_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open collector log");
        let child = Command::new(binary("evident-collector"))
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--grpc-listen", listen])
            // Tests run side by side: each web page on a port of its own.
            .args(if extra_args.contains(&"--web-listen") {
                &[][..]
            } else {
                &["--web-listen", "127.0.0.1:0"][..]
            })
            .args(extra_args)
            .env("RUST_LOG", "info,evident_collector=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn evident-collector serve");
        let mut collector = Collector {
            data_dir: data_dir.to_owned(),
            address: String::new(),
            child,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && text.ends_with('\n')
            {
                collector.address = text.trim().to_owned();
                return collector;
            }
            if let Ok(Some(status)) = collector.child.try_wait() {
                panic!("collector exited with {status}: {}", collector.log());
            }
            assert!(
                Instant::now() < deadline,
                "collector did not start: {}",
                collector.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The web page's base URL, `https://127.0.0.1:PORT`.
    pub fn web_url(&self) -> String {
        let text = std::fs::read_to_string(self.data_dir.join("web.addr"))
            .unwrap_or_else(|e| panic!("web.addr: {e}: {}", self.log()));
        format!("https://{}", text.trim())
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs an admin command against this collector's data directory.
    pub fn admin(&self, args: &[&str]) -> Run {
        let mut full: Vec<&str> = args.to_vec();
        let dir = self.data_dir.to_str().expect("utf-8 path");
        full.extend(["--data-dir", dir]);
        run(&binary("evident-collector"), &full)
    }

    pub fn token(&self, extra: &[&str]) -> String {
        let mut args = vec!["token", "create"];
        args.extend(extra);
        self.admin(&args)
            .expect_ok("token create")
            .stdout
            .trim()
            .to_owned()
    }

    pub fn fingerprint(&self) -> String {
        self.admin(&["ca", "fingerprint"])
            .expect_ok("ca fingerprint")
            .stdout
            .trim()
            .to_owned()
    }

    /// `evidence list --json`, parsed.
    pub fn evidence(&self, agent: Option<&str>) -> Vec<serde_json::Value> {
        let mut args = vec!["evidence", "list", "--json"];
        if let Some(agent) = agent {
            args.extend(["--agent", agent]);
        }
        let out = self.admin(&args).expect_ok("evidence list");
        serde_json::from_str(&out.stdout).expect("evidence list prints JSON")
    }

    /// The sequences stored for `agent_id`, in order.
    pub fn sequences(&self, agent_id: &str) -> Vec<u64> {
        self.evidence(Some(agent_id))
            .iter()
            .map(|e| e["sequence"].as_u64().expect("sequence"))
            .collect()
    }

    /// Sends a signal (e.g. "HUP") to the running collector.
    pub fn signal(&self, name: &str) {
        run(
            Path::new("/bin/kill"),
            &[&format!("-{name}"), &self.child.id().to_string()],
        )
        .expect_ok("kill");
    }

    /// Whether the process is still running.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn database(&self) -> PathBuf {
        self.data_dir.join("collector.db")
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub fn stop(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data_dir.clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An agent's state directory and the commands run on it.
#[derive(Debug, Clone)]
pub struct Agent {
    pub state_dir: PathBuf,
}

impl Agent {
    pub fn new(state_dir: &Path) -> Agent {
        Agent {
            state_dir: state_dir.to_owned(),
        }
    }

    fn dir(&self) -> &str {
        self.state_dir.to_str().expect("utf-8 path")
    }

    pub fn enroll(&self, url: &str, token: &str, fingerprint: &str) -> Run {
        run(
            &binary("evident-agent"),
            &[
                "enroll",
                "--collector",
                url,
                "--token",
                token,
                "--ca-fingerprint",
                fingerprint,
                "--state-dir",
                self.dir(),
            ],
        )
    }

    /// Enrols with a fresh token and returns the agent id.
    pub fn enroll_with(&self, collector: &Collector) -> String {
        let out = self
            .enroll(
                &collector.url(),
                &collector.token(&[]),
                &collector.fingerprint(),
            )
            .expect_ok("enroll");
        out.stdout
            .trim()
            .strip_prefix("enrolled as ")
            .expect("enroll prints the agent id")
            .to_owned()
    }

    pub fn run_once(&self) -> Run {
        run(
            &binary("evident-agent"),
            &["run", "--once", "--state-dir", self.dir()],
        )
    }

    /// One cycle observing a recorded host instead of this machine, with more `run` arguments.
    pub fn run_once_replaying(&self, replay: &Path, extra_args: &[&str]) -> Run {
        let mut args = vec![
            "run",
            "--once",
            "--state-dir",
            self.dir(),
            "--replay",
            replay.to_str().expect("utf-8 path"),
        ];
        args.extend(extra_args);
        run(&binary("evident-agent"), &args)
    }

    /// The last sequence number the agent reserved (its durable counter): every item it ever
    /// numbered is `1..=last_sequence()`.
    pub fn last_sequence(&self) -> u64 {
        std::fs::read_to_string(self.state_dir.join("sequence"))
            .expect("sequence file")
            .trim()
            .parse()
            .expect("a number")
    }

    pub fn spool_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.state_dir.join("spool"))
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `seconds`, then panics with
/// `what`. For waiting on a background process, never for judging speed.
pub fn wait_for_some<T>(seconds: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "waited {seconds} s for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `done` every 50 ms until it holds; panics naming `what` after a minute. A deadline
/// against a hang, not a timing claim: the tests assert what happened, never how fast.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    wait_for_some(60, what, || done().then_some(()));
}

/// Writes an `agent.toml` beside `agent`'s state directory for unattended enrolment with
/// `collector` (its token from `token_file`, or the default in the state directory) and
/// returns its path.
pub fn unattended_config(
    agent: &Agent,
    collector: &Collector,
    token_file: Option<&Path>,
) -> PathBuf {
    let path = agent.state_dir.with_extension("toml");
    let mut text = format!(
        "state_dir = {:?}\ninterval_secs = 3600\njitter_secs = 0\n\n[enrollment]\ncollector = {:?}\nca_fingerprint = {:?}\n",
        agent.dir(),
        collector.url(),
        collector.fingerprint()
    );
    if let Some(file) = token_file {
        text.push_str(&format!(
            "token_file = {:?}\n",
            file.to_str().expect("utf-8 path")
        ));
    }
    std::fs::write(&path, text).expect("write agent config");
    path
}

/// `evident-agent run --config FILE` as a daemon, its stderr in a log file; killed when
/// dropped.
#[derive(Debug)]
pub struct AgentDaemon {
    child: Child,
    log: PathBuf,
}

impl AgentDaemon {
    /// Starts the daemon with `env` added to its environment.
    pub fn start(config: &Path, env: &[(&str, &str)]) -> AgentDaemon {
        let log = config.with_extension("log");
        let log_file = std::fs::File::create(&log).expect("create agent log");
        let child = Command::new(binary("evident-agent"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn evident-agent run");
        AgentDaemon { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and returns whether the agent exited 0.
    pub fn terminate(mut self) -> bool {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("send SIGTERM");
        assert!(sent.success());
        self.child.wait().expect("wait for agent").success()
    }
}

impl Drop for AgentDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Recursively copies a directory (for tampering with a copy of a collector's data).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// A recorded Debian 12 host with 20 security updates pending (and 80 updates in all).
pub fn debian_replay() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src/checks/patch/testdata/replay-debian12")
}

/// A policy under which `debian_replay()` opens a corrective action within seconds: security
/// updates may stay pending 2 s; every host reports within an hour.
pub const LATE_UPDATES_POLICY: &str = r#"name = "late updates policy"

[[rule]]
id = "security-updates"
title = "Security updates are installed within 2 seconds"
severity = "high"
check = "patch"
condition = "security_updates_pending"
max_pending_age = "2s"
controls = ["iso27001-2022:A.8.8", "cis-controls-v8:7.3"]

[[rule]]
id = "agent-reporting"
title = "Every endpoint reports within an hour"
severity = "medium"
check = "inventory"
condition = "agent_reporting"
max_silence = "1h"
controls = ["iso27001-2022:A.5.9", "iso27001-2022:A.8.16"]
"#;

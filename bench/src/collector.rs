//! A real `evident-collector serve` process for the bench, on loopback with its own data dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use evident_agent::tls::{self, CollectorUrl};

#[derive(Debug)]
pub struct CollectorProcess {
    pub data_dir: PathBuf,
    pub url: CollectorUrl,
    pub fingerprint: [u8; 32],
    binary: PathBuf,
    child: Child,
}

/// The workspace binary `name` next to the running bench binary.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .context("bench binary has a directory")?
        .join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build with `cargo build --release --workspace --bins` (scripts/bench does)",
            path.display()
        );
    }
    Ok(path)
}

impl CollectorProcess {
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> anyhow::Result<CollectorProcess> {
        let binary = binary("evident-collector")?;
        std::fs::create_dir_all(data_dir)?;
        let log = std::fs::File::create(data_dir.with_extension("log"))?;
        let child = Command::new(&binary)
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args([
                "--grpc-listen",
                "127.0.0.1:0",
                "--web-listen",
                "127.0.0.1:0",
            ])
            .args(extra_args)
            // EVIDENT_BENCH_COLLECTOR_LOG=debug (a RUST_LOG filter) to look inside a run.
            .env(
                "RUST_LOG",
                std::env::var("EVIDENT_BENCH_COLLECTOR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start evident-collector")?;
        let addr_file = data_dir.join("grpc.addr");
        let deadline = Instant::now() + Duration::from_secs(30);
        let address = loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && text.ends_with('\n')
            {
                break text.trim().to_owned();
            }
            if Instant::now() > deadline {
                bail!(
                    "the collector did not start: see {}",
                    data_dir.with_extension("log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut process = CollectorProcess {
            data_dir: data_dir.to_owned(),
            url: CollectorUrl::parse(&format!("https://{address}"))?,
            fingerprint: [0; 32],
            binary,
            child,
        };
        let fingerprint = process.admin(&["ca", "fingerprint"])?;
        process.fingerprint = tls::parse_fingerprint(fingerprint.trim())?;
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs an admin command on the data directory and returns its stdout.
    pub fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.binary)
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()?;
        if !out.status.success() {
            bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn token(&self, uses: usize) -> anyhow::Result<String> {
        Ok(self
            .admin(&[
                "token",
                "create",
                "--ttl",
                "2h",
                "--uses",
                &uses.to_string(),
            ])?
            .trim()
            .to_owned())
    }

    /// SIGTERM, then waits: the collector drains and closes its database (checkpointing the WAL).
    pub fn stop(mut self) -> anyhow::Result<PathBuf> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
        Ok(self.data_dir.clone())
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

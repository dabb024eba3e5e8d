//! The command line: argument parsing and the commands' top level.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::checks::{self, Observation, Outcome};
use crate::config::FileConfig;
use crate::host::Host;
use crate::state::StateDir;
use crate::tls::{CollectorUrl, parse_fingerprint};

#[derive(Debug, Parser)]
#[command(
    name = "evident-agent",
    version,
    about = "Observes this endpoint and streams the evidence to evident-collector"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enrol with a collector: generate a key here and have the collector certify it.
    Enroll(EnrollCli),
    /// Run the checks on a schedule and stream the evidence to the collector.
    Run(RunCli),
    /// Run every check once on this machine and print the evidence without sending it.
    Check(CheckCli),
    /// Renew the agent's certificate now with a new key (`run` does it at half lifetime).
    Renew(RenewCli),
    /// Run as a Windows service (the service control manager starts this; see deploy/windows).
    #[cfg(windows)]
    Service(crate::windows_service::ServiceCli),
}

#[derive(Debug, Args)]
pub struct RenewCli {
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct EnrollCli {
    /// The collector, as https://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub collector: String,
    /// The enrolment token from `evident-collector token create`.
    #[arg(long, value_name = "TOKEN")]
    pub token: String,
    /// The collector CA's SHA-256 fingerprint from `evident-collector ca fingerprint`.
    #[arg(long, value_name = "FP")]
    pub ca_fingerprint: String,
    /// Where the agent keeps its key, certificate and spool.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunCli {
    /// A TOML config file (see deploy/agent.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// One cycle: run the checks, deliver, exit (non-zero if delivery failed).
    #[arg(long)]
    pub once: bool,
    /// Observe a recorded host (see docs/record-replay.md) instead of this machine: for
    /// reproducing a support case or testing a policy end to end.
    #[arg(long, value_name = "DIR")]
    pub replay: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckCli {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// A TOML config file whose `[backup]` sources to check (see deploy/agent.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Also save every command and file the checks read into DIR (see docs/record-replay.md).
    #[arg(long, value_name = "DIR", conflicts_with = "replay")]
    pub record: Option<PathBuf>,
    /// Answer every command and file from a recording in DIR instead of this machine.
    #[arg(long, value_name = "DIR")]
    pub replay: Option<PathBuf>,
}

impl EnrollCli {
    pub fn into_args(self) -> anyhow::Result<crate::enroll::EnrollArgs> {
        if self.token.trim().is_empty() {
            bail!("--token is empty: pass the token printed by `evident-collector token create`");
        }
        Ok(crate::enroll::EnrollArgs {
            collector: CollectorUrl::parse(&self.collector)?,
            token: self.token,
            ca_fingerprint: parse_fingerprint(&self.ca_fingerprint)?,
            state: StateDir::new(&self.state_dir),
        })
    }
}

impl RunCli {
    pub fn into_config(self) -> anyhow::Result<crate::config::RunConfig> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let mut config = file.validate(self.state_dir)?;
        config.replay = self.replay;
        Ok(config)
    }
}

/// `check`: observe, print, and close a recording.
pub async fn check(args: CheckCli) -> anyhow::Result<()> {
    let host = match (&args.record, &args.replay) {
        (Some(dir), _) => Host::recording(dir)?,
        (None, Some(dir)) => Host::replay(dir)?,
        (None, None) => Host::live(),
    };
    // Without a state directory nothing is remembered: integrity checks and restore tests of
    // the configured repositories run now.
    let file = match &args.config {
        Some(path) => Some(FileConfig::load(path)?),
        None => None,
    };
    let mut context = checks::Context {
        tags: match &file {
            Some(file) => file.tags()?,
            None => Vec::new(),
        },
        backup_sources: match &file {
            Some(file) => file.backup_sources()?,
            None => Vec::new(),
        },
        backup_memory: Default::default(),
    };
    let observations = checks::run_all(&host, &mut context).await;
    host.finish().context("finish the recording")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&observations)?);
    } else {
        for observation in &observations {
            print_observation(observation)?;
        }
    }
    if let Some(dir) = &args.record {
        eprintln!(
            "recorded into {}; replay with `evident-agent check --replay {}`",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

fn format_ms(ms: i64) -> String {
    // humantime formats only years 1970 to 9999; a source may report anything.
    const YEAR_10000_MS: i64 = 253_402_300_800_000;
    match u64::try_from(ms) {
        Ok(_) if ms >= YEAR_10000_MS => format!("{ms} ms (beyond year 9999)"),
        Ok(ms) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string(),
        Err(_) => format!("{ms} ms"),
    }
}

/// The patch facts for people: counts first, then the security updates, then the rest.
fn print_patch(facts: &checks::patch::PatchFacts) {
    let managers = facts
        .managers
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m.name,
                m.version.as_deref().unwrap_or("(version unknown)")
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let when = |ms: Option<i64>| ms.map_or_else(|| "(not known)".to_owned(), format_ms);
    println!("  managers          {managers}");
    println!(
        "  pending           {} ({} security)",
        facts.pending_count(),
        facts.pending_security_count()
    );
    println!("  last install      {}", when(facts.last_install_unix_ms));
    println!(
        "  metadata refresh  {}",
        when(facts.metadata_refreshed_unix_ms)
    );
    match &facts.automatic_updates {
        Some(auto) => println!(
            "  automatic updates {} via {} ({})",
            if auto.install_enabled {
                "install"
            } else {
                "off"
            },
            auto.mechanism,
            auto.settings.join("; ")
        ),
        None => println!("  automatic updates (not known)"),
    }
    match facts.reboot.required {
        Some(true) => {
            println!(
                "  reboot required   yes, since {}",
                when(facts.reboot.since_unix_ms)
            );
            for reason in &facts.reboot.reasons {
                println!("    {}: {}", reason.source, reason.detail);
            }
        }
        Some(false) => println!("  reboot required   no"),
        None => println!("  reboot required   (not known)"),
    }
    let mut pending: Vec<_> = facts.pending.iter().collect();
    pending.sort_by_key(|u| !u.security);
    for update in pending {
        let mut flags = Vec::new();
        if update.security {
            flags.push("security");
        }
        if update.held {
            flags.push("held");
        }
        if update.phased {
            flags.push("phased");
        }
        if update.restart_required == Some(true) {
            flags.push("restart");
        }
        println!(
            "    {} {} -> {}{}{}",
            update.name,
            update.installed_version.as_deref().unwrap_or("?"),
            update.available_version.as_deref().unwrap_or("?"),
            if flags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", flags.join(", "))
            },
            if update.origins.is_empty() {
                String::new()
            } else {
                format!(" from {}", update.origins.join(", "))
            },
        );
    }
    for u in &facts.unreadable {
        println!("  unreadable        {}: {}", u.fact, u.reason);
    }
}

/// The disk-encryption facts for people: the summary, then one line per volume.
fn print_disk_encryption(facts: &checks::disk_encryption::DiskEncryptionFacts) {
    let yes_no = |v: Option<bool>| match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "(not known)",
    };
    println!("  system encrypted  {}", yes_no(facts.system_encrypted));
    println!("  data encrypted    {}", yes_no(facts.fixed_data_encrypted));
    println!("  swap              {}", facts.swap.as_str());
    for volume in &facts.volumes {
        let mut details = Vec::new();
        details.extend(volume.scheme.clone());
        details.extend(volume.cipher.clone());
        details.extend(volume.key_bits.map(|bits| format!("{bits} bits")));
        details.extend(
            volume
                .protection
                .as_ref()
                .map(|p| format!("protection {p}")),
        );
        details.extend(volume.progress_percent.map(|p| format!("{p}%")));
        if !volume.key_protectors.is_empty() {
            details.push(format!("protectors {}", volume.key_protectors.join("+")));
        }
        println!(
            "    {} {} [{}] {}{}",
            volume.id,
            volume.mount_points.join(","),
            volume.role.as_str(),
            volume.encrypted.as_str(),
            if details.is_empty() {
                String::new()
            } else {
                format!(" ({})", details.join(", "))
            },
        );
        println!("      {}", volume.reason);
    }
    for u in &facts.unreadable {
        println!("  unreadable        {}: {}", u.fact, u.reason);
    }
}

/// The backup facts for people: one block per source.
fn print_backup(facts: &checks::backup::BackupFacts) {
    if facts.sources.is_empty() {
        println!("  no backup source configured (agent.toml [backup]) or found on this host");
    }
    let when = |ms: Option<i64>| ms.map_or_else(|| "(none)".to_owned(), format_ms);
    for source in &facts.sources {
        println!(
            "  {} {} ({}) {}",
            source.tool,
            source.name,
            source.destination,
            source.tool_version.as_deref().unwrap_or("")
        );
        if let Some(error) = &source.error {
            println!("    error {}: {}", error.kind.as_str(), error.message);
        }
        println!(
            "    last success      {}",
            when(source.last_success_unix_ms)
        );
        if let Some(result) = &source.last_attempt_result {
            println!(
                "    last attempt      {} {result}",
                when(source.last_attempt_unix_ms)
            );
        }
        if let Some(count) = source.snapshot_count {
            println!("    snapshots         {count}");
        }
        if !source.paths.is_empty() {
            println!("    paths             {}", source.paths.join(", "));
        }
        if let Some(bytes) = source.repository_size_bytes {
            println!("    repository size   {bytes} bytes");
        }
        for (label, run) in [
            ("integrity check", &source.integrity_check),
            ("restore test", &source.restore_test),
        ] {
            if let Some(run) = run {
                let verdict = if run.passed { "passed" } else { "FAILED" };
                println!(
                    "    {label:<17} {verdict} at {}: {}",
                    format_ms(run.at_unix_ms),
                    run.detail
                );
            }
        }
    }
    for u in &facts.unreadable {
        println!("  unreadable        {}: {}", u.fact, u.reason);
    }
}

fn print_observation(observation: &Observation) -> anyhow::Result<()> {
    let when = format_ms(observation.observed_at_unix_ms);
    println!("{} (observed {when})", observation.check);
    let facts = match &observation.outcome {
        Outcome::Error(error) => {
            println!("  error: {error}");
            return Ok(());
        }
        Outcome::Inventory(facts) => serde_json::to_value(facts)?,
        Outcome::Patch(facts) => {
            print_patch(facts);
            return Ok(());
        }
        Outcome::DiskEncryption(facts) => {
            print_disk_encryption(facts);
            return Ok(());
        }
        Outcome::Backup(facts) => {
            print_backup(facts);
            return Ok(());
        }
    };
    if let serde_json::Value::Object(map) = facts {
        for (key, value) in map {
            match value {
                serde_json::Value::Null => println!("  {key:<17} (not known)"),
                serde_json::Value::String(s) => println!("  {key:<17} {s}"),
                serde_json::Value::Array(items) if items.is_empty() => {}
                serde_json::Value::Array(items) => {
                    println!("  {key}:");
                    for item in items {
                        println!("    {item}");
                    }
                }
                other => println!("  {key:<17} {other}"),
            }
        }
    }
    Ok(())
}

//! The command line: argument parsing and the small commands that are not `serve`.

mod export;
mod judgement;
mod transparency;
mod users;
pub use judgement::{DayEdge, parse_moment};

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::ca::{CaPaths, CertificateAuthority};
use crate::config::{FileConfig, Overrides};
use crate::model::{format_unix_ms, now_unix_ms};
use crate::review;
use crate::server::{self, ServeConfig};
use crate::store::Store;
use crate::token::Token;

#[derive(Debug, Parser)]
#[command(
    name = "evident-collector",
    version,
    about = "Enrols evident agents and stores their evidence, append-only and tamper-evident"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve enrolment and evidence over gRPC/TLS (creates the CA on first start).
    Serve(ServeArgs),
    /// Enrolment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The collector's certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Recompute every hash chain and check every batch signature; exits 1 on any break.
    Verify(DataDirArg),
    /// Stored evidence.
    #[command(subcommand)]
    Evidence(EvidenceCommand),
    /// Enrolled agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Policies: validate a file, list and show the versions the collector ran under.
    #[command(subcommand)]
    Policy(judgement::PolicyCommand),
    /// Control status judged from stored evidence, now or as of a past date.
    Status(judgement::StatusArgs),
    /// Rule results as they changed over time.
    #[command(subcommand)]
    Results(judgement::ResultsCommand),
    /// Corrective actions: list, show, ack, resolve, accept-risk, comment.
    #[command(subcommand)]
    Actions(judgement::ActionsCommand),
    /// Reports for monitoring and management review.
    #[command(subcommand)]
    Report(judgement::ReportCommand),
    /// Reviewers' accounts for the web page and API: add, list, disable, token.
    #[command(subcommand)]
    User(users::UserCommand),
    /// Exports for auditors: CSV, the audit report (HTML) and OSCAL JSON for a period.
    #[command(subcommand)]
    Export(export::ExportCommand),
    /// Signed checkpoints over all evidence, and consistency proofs between them.
    #[command(subcommand)]
    Checkpoint(transparency::CheckpointCommand),
    /// Evidence bundles an auditor verifies offline.
    #[command(subcommand)]
    Bundle(transparency::BundleCommand),
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// List every enrolled agent: state, last contact, certificate expiry, items stored.
    List {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Refuse an agent from now on (its streams and batches); its stored evidence stays.
    Revoke {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// The agent id, as `agent list` shows it.
        #[arg(value_name = "AGENT_ID")]
        agent_id: String,
        /// Why, for the record: e.g. "laptop stolen, ticket 4711".
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub struct DataDirArg {
    /// The collector's data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML config file (see deploy/collector.toml); flags win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address for gRPC/TLS, e.g. 0.0.0.0:7443 (port 0 picks one; see DIR/grpc.addr).
    #[arg(long, value_name = "ADDR")]
    pub grpc_listen: Option<String>,
    /// Address of the reviewers' web page and JSON API over HTTPS, e.g. 0.0.0.0:8443, or
    /// "off" (default 127.0.0.1:8443; port 0 picks one; see DIR/web.addr).
    #[arg(long, value_name = "ADDR")]
    pub web_listen: Option<String>,
    /// A DNS name or IP agents use to reach this collector (repeatable).
    #[arg(long = "server-name", value_name = "NAME")]
    pub server_names: Vec<String>,
    /// Cap the evidence database at this many bytes (at least 1048576); a batch that does
    /// not fit is refused unacked and stays in the agent's spool.
    #[arg(long, value_name = "BYTES")]
    pub max_database_bytes: Option<u64>,
    /// The policy file (default: the built-in policy); re-read on each evaluation and SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Seconds between evaluations of every host (default 300).
    #[arg(long, value_name = "SECS")]
    pub evaluation_interval_secs: Option<u64>,
    /// Seconds between signed checkpoints over all evidence (default 3600).
    #[arg(long, value_name = "SECS")]
    pub checkpoint_interval_secs: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an enrolment token and print it (it is shown only once).
    Create {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// How long the token stays valid, e.g. 30m, 24h, 7d.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        ttl: Duration,
        /// How many agents may enrol with it.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        uses: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Print the SHA-256 fingerprint of the CA certificate, which agents pin when they enrol.
    Fingerprint(DataDirArg),
}

#[derive(Debug, Subcommand)]
pub enum EvidenceCommand {
    /// List stored evidence, per agent in sequence order.
    List {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// Only this agent's evidence.
        #[arg(long, value_name = "ID")]
        agent: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Stop after this many items.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{e}: write a duration such as 30m, 24h or 7d"))?;
    if duration.is_zero() {
        return Err("a token that expires at once is useless: give a positive duration".into());
    }
    Ok(duration)
}

impl ServeArgs {
    pub fn into_config(self) -> anyhow::Result<ServeConfig> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        file.validate(Overrides {
            data_dir: self.data_dir,
            grpc_listen: self.grpc_listen,
            web_listen: self.web_listen,
            server_names: self.server_names,
            max_database_bytes: self.max_database_bytes,
            policy_file: self.policy,
            evaluation_interval_secs: self.evaluation_interval_secs,
            checkpoint_interval_secs: self.checkpoint_interval_secs,
        })
    }
}

/// Runs every command but `serve`, printing to stdout. Returns the process exit code.
pub fn run_command(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Serve(_) => bail!("serve is run by main"),
        Command::Token(TokenCommand::Create {
            data_dir,
            ttl,
            uses,
        }) => {
            let store = open_store(&data_dir.data_dir)?;
            let token = Token::generate()?;
            let now = now_unix_ms();
            let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
            store.create_token(&token.hash(), now, expires, uses)?;
            println!("{}", token.expose());
            eprintln!(
                "enrolment token for {uses} agent(s), valid until {}; it is not shown again",
                format_unix_ms(expires)
            );
            Ok(0)
        }
        Command::Ca(CaCommand::Fingerprint(data_dir)) => {
            let ca = CertificateAuthority::load(&CaPaths::new(&data_dir.data_dir))?;
            println!("{}", ca.fingerprint());
            Ok(0)
        }
        Command::Verify(data_dir) => {
            let store = open_store(&data_dir.data_dir)?;
            let report = crate::verify::verify(&store)?;
            for b in &report.breaks {
                println!(
                    "BREAK agent {} sequence {}: {}",
                    b.agent_id, b.sequence, b.what
                );
            }
            let summary = format!(
                "checked {} items in {} batches from {} agents",
                report.items, report.batches, report.agents
            );
            if report.breaks.is_empty() {
                println!("ok: {summary}: every chain and signature verifies");
                Ok(0)
            } else {
                println!(
                    "FAILED: {summary}: {} agent(s) with a break",
                    report.breaks.len()
                );
                Ok(1)
            }
        }
        Command::Agent(command) => agent_command(command),
        Command::Policy(command) => judgement::policy_command(command),
        Command::Status(args) => judgement::status_command(args),
        Command::Actions(command) => judgement::actions_command(command),
        Command::Results(command) => judgement::results_command(command),
        Command::Report(command) => judgement::report_command(command),
        Command::User(command) => users::user_command(command),
        Command::Export(command) => export::export_command(command),
        Command::Checkpoint(command) => transparency::checkpoint_command(command),
        Command::Bundle(command) => transparency::bundle_command(command),
        Command::Evidence(EvidenceCommand::List {
            data_dir,
            agent,
            json,
            limit,
        }) => {
            let store = open_store(&data_dir.data_dir)?;
            let records = review::list_evidence(&store, agent.as_deref(), limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else if records.is_empty() {
                println!("no evidence stored yet");
            } else {
                println!(
                    "{:<24} {:>6}  {:<16} {:<20}  SUMMARY",
                    "AGENT", "SEQ", "CHECK", "OBSERVED"
                );
                for r in &records {
                    println!(
                        "{:<24} {:>6}  {:<16} {:<20}  {}",
                        r.agent_id,
                        r.sequence,
                        r.check.map_or("unknown", |c| c.as_str()),
                        r.observed_at,
                        review::summary(r)
                    );
                }
            }
            Ok(0)
        }
    }
}

fn agent_command(command: AgentCommand) -> anyhow::Result<u8> {
    match command {
        AgentCommand::List { data_dir, json } => {
            let agents = open_store(&data_dir.data_dir)?.agents()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&agents)?);
                return Ok(0);
            }
            if agents.is_empty() {
                println!("no agent enrolled yet");
                return Ok(0);
            }
            let when = |ms: Option<i64>| ms.map_or_else(|| "never".to_owned(), format_unix_ms);
            println!(
                "{:<24} {:<20} {:<8} {:<20} {:<20} {:>6}",
                "AGENT", "HOSTNAME", "STATE", "LAST CONTACT", "CERT EXPIRES", "ITEMS"
            );
            for a in &agents {
                println!(
                    "{:<24} {:<20} {:<8} {:<20} {:<20} {:>6}",
                    a.agent_id,
                    a.hostname,
                    a.state,
                    when(a.last_contact_ms),
                    when(a.certificate_not_after_ms),
                    a.evidence_items
                );
                if let (Some(at), Some(reason)) = (a.revoked_at_ms, &a.revoked_reason) {
                    println!("    revoked {}: {reason}", format_unix_ms(at));
                }
            }
            Ok(0)
        }
        AgentCommand::Revoke {
            data_dir,
            agent_id,
            reason,
        } => {
            if reason.trim().is_empty() {
                bail!("--reason is empty: say why the agent is revoked, for the record");
            }
            let store = open_store(&data_dir.data_dir)?;
            if !store.revoke_agent(&agent_id, reason.trim(), now_unix_ms())? {
                bail!(
                    "no agent {agent_id}: `evident-collector agent list` shows the enrolled ones"
                );
            }
            println!("revoked {agent_id}: its streams and batches are refused from now on");
            Ok(0)
        }
    }
}

pub(crate) fn open_store(data_dir: &Path) -> anyhow::Result<Store> {
    Store::open_existing(&server::database_path(data_dir))
        .with_context(|| format!("open the collector data directory {}", data_dir.display()))
}

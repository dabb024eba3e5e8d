//! evident-bench: the fleet simulator (`fleet`) and the benchmark suite (`suite`) that writes
//! BENCHMARKS.md. See scripts/bench.

mod baseline;
mod collector;
mod fleet;
mod measure;
mod payload;
mod suite;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use evident_agent::tls::{CollectorUrl, parse_fingerprint};

#[derive(Debug, Parser)]
#[command(
    name = "evident-bench",
    version,
    about = "Fleet simulator and benchmark suite for evident"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enrol N simulated agents with a running collector and stream realistic evidence.
    Fleet {
        /// The collector, as https://HOST:PORT.
        #[arg(long)]
        collector: String,
        /// A token with at least --agents uses (`token create --uses N`).
        #[arg(long)]
        token: String,
        #[arg(long)]
        ca_fingerprint: String,
        #[arg(long, default_value_t = 100)]
        agents: usize,
        /// Agents connected and sending at once.
        #[arg(long, default_value_t = 100)]
        connections: usize,
        /// Batches per second across the fleet; 0 for as fast as acks return.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Check cycles (4 items each) per batch.
        #[arg(long, default_value_t = 1)]
        cycles_per_batch: usize,
        /// Batches an agent sends per connection before reconnecting.
        #[arg(long, default_value_t = 1_000_000)]
        batches_per_session: usize,
        /// How long to send, e.g. 30s, 10m.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Run every benchmark and write the report.
    Suite {
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Fleet sizes for the ingest figures (comma-separated).
        #[arg(long, default_value = "100,1000,3000", value_delimiter = ',')]
        ingest_agents: Vec<usize>,
        /// Fleet sizes for idle connections and policy evaluation (comma-separated).
        #[arg(long, default_value = "1000,5000,10000", value_delimiter = ',')]
        idle_agents: Vec<usize>,
        /// Seconds each ingest run sends.
        #[arg(long, default_value_t = 20)]
        ingest_secs: u64,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let cli = Cli::parse();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(cli.command, command_line)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command, command_line: String) -> anyhow::Result<()> {
    match command {
        Command::Fleet {
            collector,
            token,
            ca_fingerprint,
            agents,
            connections,
            rate,
            cycles_per_batch,
            batches_per_session,
            duration,
        } => {
            let url = CollectorUrl::parse(&collector)?;
            let fingerprint = parse_fingerprint(&ca_fingerprint)?;
            let cycle = Arc::new(payload::typical_cycle().await?);
            let fleet = fleet::enrol(&url, &token, fingerprint, agents, 16).await?;
            println!("enrolled {} agents", fleet.len());
            let load = fleet::Load {
                connections,
                cycles_per_batch,
                batches_per_session,
                rate,
                duration,
            };
            let (outcome, _) = fleet::stream(&url, fleet, cycle, load).await?;
            println!(
                "{} batches, {} items stored in {:.1} s: {:.0} items/s; ack p50 {:?}, p99 {:?}; {} errors{}",
                outcome.batches,
                outcome.items_stored,
                outcome.elapsed.as_secs_f64(),
                outcome.items_per_sec(),
                outcome.latency_percentile(50.0),
                outcome.latency_percentile(99.0),
                outcome.errors,
                outcome
                    .first_error
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        Command::Suite {
            out,
            ingest_agents,
            idle_agents,
            ingest_secs,
        } => {
            suite::run(suite::SuiteConfig {
                out,
                ingest_agents,
                idle_agents,
                ingest_secs,
                command: command_line,
            })
            .await
        }
    }
}

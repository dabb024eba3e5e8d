//! evident-bench: the fleet simulator (`fleet`) and the benchmark suite (`suite`) that writes
//! BENCHMARKS.md. See scripts/bench.

mod baseline;
mod collector;
mod fleet;
mod measure;
mod pages;
mod payload;
mod storage;
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
        #[command(flatten)]
        pages: PagesArgs,
    },
    /// Only the ingest figures: items/s as fast as acks come back, then ack latency at half
    /// that rate (at 1,000 agents, else the largest size).
    Ingest {
        #[arg(long, default_value = "1000", value_delimiter = ',')]
        agents: Vec<usize>,
        /// Seconds each run sends.
        #[arg(long, default_value_t = 20)]
        secs: u64,
    },
    /// Only the policy-evaluation figure: enrol the largest size, send one cycle from every
    /// agent, then time a full pass after a policy change at each size.
    Evaluation {
        #[arg(long, default_value = "1000,5000,10000", value_delimiter = ',')]
        agents: Vec<usize>,
    },
    /// Only the stored-bytes figure: append hourly cycles through the store and measure.
    Storage,
    /// Only the idle-connection figure: enrol the largest size, then hold idle Report streams
    /// open at each size and read the collector's resident memory (about a minute at 10,000).
    Idle {
        /// Fleet sizes (comma-separated, ascending).
        #[arg(long, default_value = "1000,5000,10000", value_delimiter = ',')]
        agents: Vec<usize>,
    },
    /// Time the web pages again on the database a `pages` run left in --pages-dir.
    PagesAgain {
        #[arg(long)]
        pages_dir: PathBuf,
        #[arg(long, default_value_t = 30)]
        pages_requests: usize,
    },
    /// Only the web-page figure: build a collector database and time its pages.
    Pages {
        #[command(flatten)]
        pages: PagesArgs,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct PagesArgs {
    /// Fleet sizes for the web-page figure (comma-separated, ascending; 0 skips it). Try
    /// `--pages-hosts 200 --pages-items-per-host 100` for a run of seconds.
    #[arg(long, default_value = "1000,5000,10000", value_delimiter = ',')]
    pages_hosts: Vec<usize>,
    /// Evidence items per host (one 4-item cycle per simulated hour): 1,000 makes 10 million
    /// at 10,000 hosts.
    #[arg(long, default_value_t = 1000)]
    pages_items_per_host: usize,
    /// Where the web-page figure's database goes (about 1.1 KB per item: 11 GB at 10 million;
    /// a tmpfs such as /dev/shm when the disk is short); a temporary directory when not given.
    #[arg(long)]
    pages_dir: Option<PathBuf>,
    /// Timed requests per page.
    #[arg(long, default_value_t = 30)]
    pages_requests: usize,
}

impl PagesArgs {
    fn config(self, work: &std::path::Path) -> Option<pages::PagesConfig> {
        let hosts: Vec<usize> = self.pages_hosts.into_iter().filter(|h| *h > 0).collect();
        (!hosts.is_empty()).then(|| pages::PagesConfig {
            dir: self.pages_dir.unwrap_or_else(|| work.to_owned()),
            hosts,
            items_per_host: self.pages_items_per_host,
            requests: self.pages_requests.max(1),
        })
    }
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
            pages,
        } => {
            suite::run(suite::SuiteConfig {
                out,
                ingest_agents,
                idle_agents,
                ingest_secs,
                pages,
                command: command_line,
            })
            .await
        }
        Command::Ingest { agents, secs } => {
            println!("{}", suite::ingest_only(&agents, secs).await?);
            Ok(())
        }
        Command::Evaluation { agents } => {
            println!("{}", suite::evaluation_only(&agents).await?);
            Ok(())
        }
        Command::Storage => {
            let work = tempfile::tempdir()?;
            let cycle = payload::typical_cycle().await?;
            let heavy = payload::heavy_patch().await?;
            let figures = storage::measure(work.path(), &cycle, &heavy)?;
            println!("{}", suite::storage_table(&figures));
            Ok(())
        }
        Command::Idle { agents } => {
            let largest = agents.iter().copied().max().unwrap_or(0);
            anyhow::ensure!(largest > 0, "--agents needs a size above 0");
            let work = tempfile::tempdir()?;
            let (collector, fleet, enrol_secs) =
                suite::collector_with_fleet(&work.path().join("idle"), &[], largest).await?;
            let idle = suite::idle_connections(&collector, &fleet, &agents, enrol_secs).await?;
            println!("{}", idle.table);
            collector.stop()?;
            Ok(())
        }
        Command::PagesAgain {
            pages_dir,
            pages_requests,
        } => {
            for (page, p50, p95) in pages::measure_again(&pages_dir, pages_requests).await? {
                println!(
                    "{page}: p50 {:.1} ms, p95 {:.1} ms",
                    pages::ms(p50),
                    pages::ms(p95)
                );
            }
            Ok(())
        }
        Command::Pages { pages } => {
            let work = tempfile::tempdir()?;
            let Some(config) = pages.config(work.path()) else {
                return Ok(());
            };
            let cycle = payload::typical_cycle().await?;
            let started = std::time::Instant::now();
            let figures = pages::run(&config, &cycle).await?;
            println!("{}", suite::pages_table(&figures));
            println!("took {:.0} s in all", started.elapsed().as_secs_f64());
            Ok(())
        }
    }
}

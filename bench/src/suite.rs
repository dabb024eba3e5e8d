//! The benchmark suite: every figure of BENCHMARKS.md, measured in one run on this machine.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use evident_agent::checks::Observation;
use prost::Message as _;

use crate::collector::{CollectorProcess, binary};
use crate::fleet::{self, Load};
use crate::measure::{self, mib};
use crate::payload;

#[derive(Debug, Clone)]
pub struct SuiteConfig {
    pub out: PathBuf,
    /// Fleet sizes for the ingest figures; the target is stated at 1,000.
    pub ingest_agents: Vec<usize>,
    /// Fleet sizes for idle connections and policy evaluation; the target is 10,000.
    pub idle_agents: Vec<usize>,
    pub ingest_secs: u64,
    /// The web-page figure's sizes and where its database goes.
    pub pages: crate::PagesArgs,
    /// The exact command line, for the report.
    pub command: String,
}

/// One line of the summary table.
#[derive(Debug, Clone)]
struct Figure {
    name: &'static str,
    target: &'static str,
    measured: String,
    met: Option<bool>,
}

#[derive(Debug, Default)]
struct Report {
    figures: Vec<Figure>,
    sections: Vec<String>,
}

impl Report {
    fn figure(
        &mut self,
        name: &'static str,
        target: &'static str,
        measured: String,
        met: Option<bool>,
    ) {
        println!("{name}: {measured} (target {target})");
        self.figures.push(Figure {
            name,
            target,
            measured,
            met,
        });
    }
}

pub async fn run(config: SuiteConfig) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let cycle = Arc::new(payload::typical_cycle().await?);
    let mut report = Report::default();
    let mut sizes = String::from("Encoded size of each item of the typical laptop's cycle: ");
    for (check, bytes) in payload::item_sizes(&cycle) {
        let _ = write!(sizes, "{check} {bytes} B, ");
    }
    let heavy = payload::heavy_patch().await?;
    let _ = write!(
        sizes,
        "and the heavy patch item (80 pending updates) {} B.",
        evident_agent::convert::evidence_item(1, &heavy).encoded_len()
    );
    report.sections.push(sizes);

    agent_figures(work.path(), &mut report).await?;
    ingest_figures(
        work.path(),
        &cycle,
        &config.ingest_agents,
        config.ingest_secs,
        &mut report,
    )
    .await?;
    storage_figures(work.path(), &cycle, &heavy, &mut report)?;
    fleet_figures(work.path(), &cycle, &config, &mut report).await?;
    if let Some(pages) = config.pages.clone().config(work.path()) {
        page_figures(&pages, &cycle, &mut report).await?;
    }
    std::fs::write(&config.out, render(&config, &report))
        .with_context(|| format!("write {}", config.out.display()))?;
    println!("wrote {}", config.out.display());
    Ok(())
}

/// Agent: binary size, CPU and memory per cycle, idle memory.
async fn agent_figures(work: &Path, report: &mut Report) -> anyhow::Result<()> {
    let agent = binary("evident-agent")?;
    let size = std::fs::metadata(&agent)?.len();
    report.figure(
        "agent binary, stripped",
        "<= 8 MB",
        format!("{:.2} MB ({size} bytes)", size as f64 / 1e6),
        Some(size <= 8_000_000),
    );

    // This machine's own cycle, recorded once, so the replays below run no programs.
    let recording = work.join("recording");
    let out = Command::new(&agent)
        .args(["check", "--record"])
        .arg(&recording)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(out.success(), "evident-agent check --record failed");

    let collector = CollectorProcess::start(&work.join("agent-collector"), &[])?;
    let state = work.join("agent-state");
    let enrolled = Command::new(&agent)
        .args([
            "enroll",
            "--collector",
            &collector.url.to_string(),
            "--token",
        ])
        .arg(collector.token(1)?)
        .args([
            "--ca-fingerprint",
            &hex::encode(collector.fingerprint),
            "--state-dir",
        ])
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(enrolled.success(), "enrol the measured agent");

    let mut cpu = Vec::new();
    let mut peaks = Vec::new();
    for _ in 0..5 {
        let (status, time, peak) = measure::run_sampled(
            Command::new(&agent)
                .args(["run", "--once", "--state-dir"])
                .arg(&state)
                .arg("--replay")
                .arg(&recording)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        anyhow::ensure!(status.success(), "evident-agent run --once --replay failed");
        cpu.push(time);
        peaks.push(peak);
    }
    cpu.sort_unstable();
    let median_cpu = cpu[cpu.len() / 2];
    report.figure(
        "agent CPU time per full check cycle, excluding the programs it runs",
        "<= 200 ms",
        format!(
            "{:.1} ms (median of 5 `run --once --replay` of this machine's recorded cycle, incl. process start, enrolment state, TLS and delivery)",
            median_cpu.as_secs_f64() * 1000.0
        ),
        Some(median_cpu <= Duration::from_millis(200)),
    );

    // Idle: the scheduler after its first cycle.
    let config = work.join("agent.toml");
    std::fs::write(&config, "interval_secs = 3600\njitter_secs = 0\n")?;
    let mut child = Command::new(&agent)
        .args(["run", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .arg("--replay")
        .arg(&recording)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let memory = measure::memory(child.id()).context("read agent memory")?;
    let _ = child.kill();
    let _ = child.wait();
    let peak = peaks.iter().copied().max().unwrap_or(0).max(memory.peak);
    report.figure(
        "agent resident memory, idle between cycles / peak during a cycle",
        "<= 12 MB / <= 40 MB",
        format!("{:.1} MiB / {:.1} MiB", mib(memory.rss), mib(peak)),
        Some(memory.rss <= 12_000_000 && peak <= 40_000_000),
    );
    collector.stop()?;
    Ok(())
}

/// Durable ingest at several fleet sizes, the raw baseline, and ack latency at half rate.
/// Only the ingest figures (`evident-bench ingest`): prints them and returns the table.
pub async fn ingest_only(agents: &[usize], secs: u64) -> anyhow::Result<String> {
    let work = tempfile::tempdir()?;
    let cycle = Arc::new(payload::typical_cycle().await?);
    let mut report = Report::default();
    ingest_figures(work.path(), &cycle, agents, secs, &mut report).await?;
    Ok(report.sections.concat())
}

async fn ingest_figures(
    work: &Path,
    cycle: &Arc<Vec<Observation>>,
    ingest_agents: &[usize],
    ingest_secs: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut table = String::from(
        "### Durable ingest by fleet size\n\nEvery agent holds one mTLS Report stream and sends one check cycle (4 items) per batch, waiting for each ack; the collector commits with `synchronous=FULL` before acking (group commit: every batch waiting at that moment in one transaction), with `max_in_flight_batches = 8192` so that no agent is answered busy. The simulator builds and signs each run's batches before the run's clock starts, as agents would on their own machines; \"signed live\" counts those it had to sign during the run.\n\n| agents | items/s | batches/s | ack p50 | ack p99 | errors | signed live |\n|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut at_target = None;
    // Every agent may have a batch in flight: the default of 256 would answer the rest "busy"
    // (the designed back-pressure), which measures the retry loop, not ingest.
    let collector_config = work.join("ingest-collector.toml");
    std::fs::write(&collector_config, "max_in_flight_batches = 8192\n")?;
    let collector_config = collector_config.to_str().context("utf-8 path")?.to_owned();
    for &agents in ingest_agents {
        let (collector, fleet, _) = collector_with_fleet(
            &work.join(format!("ingest-{agents}")),
            &["--config", &collector_config],
            agents,
        )
        .await?;
        let load = Load {
            connections: agents,
            cycles_per_batch: 1,
            batches_per_session: usize::MAX,
            rate: 0.0,
            duration: Duration::from_secs(ingest_secs),
        };
        let (outcome, fleet) =
            fleet::stream(&collector.url, fleet, cycle.clone(), load.clone()).await?;
        let _ = writeln!(
            table,
            "| {agents} | {:.0} | {:.0} | {} | {} | {} | {} |",
            outcome.items_per_sec(),
            outcome.batches as f64 / outcome.elapsed.as_secs_f64(),
            ms(outcome.latency_percentile(50.0)),
            ms(outcome.latency_percentile(99.0)),
            outcome.errors,
            outcome.signed_during_run
        );
        println!(
            "ingest {agents}: {:.0} items/s, signed live {}, errors {} {:?}",
            outcome.items_per_sec(),
            outcome.signed_during_run,
            outcome.errors,
            outcome.first_error
        );
        if agents == 1000 || (at_target.is_none() && agents == *ingest_agents.last().unwrap_or(&0))
        {
            let max_batches = outcome.batches as f64 / outcome.elapsed.as_secs_f64();
            let half = Load {
                rate: max_batches / 2.0,
                ..load
            };
            let (latency, _) = fleet::stream(&collector.url, fleet, cycle.clone(), half).await?;
            at_target = Some((agents, outcome, latency));
        }
        collector.stop()?;
    }
    report.sections.push(table);
    let Some((agents, outcome, latency)) = at_target else {
        return Ok(());
    };
    let items = outcome.items_per_sec();
    report.figure(
        "durable ingest, items/s end to end over mTLS (synchronous=FULL), 1,000 agents",
        ">= 20,000 (stretch 50,000)",
        format!("{items:.0} items/s with {agents} agents"),
        Some(items >= 20_000.0),
    );
    let cycle_items: Vec<(i64, Vec<u8>)> = cycle
        .iter()
        .enumerate()
        .map(|(i, o)| {
            (
                evident_agent::convert::evidence_item(1, o).check,
                evident_agent::convert::evidence_item(1 + i as u64, o).encode_to_vec(),
            )
        })
        .map(|(kind, bytes)| (i64::from(kind), bytes))
        .collect();
    let item_list = payload::item_list(1, cycle, 1);
    let baseline_dir = work.join("baseline");
    std::fs::create_dir_all(&baseline_dir)?;
    let raw = crate::baseline::raw_insert_loop(
        &baseline_dir,
        agents,
        &cycle_items,
        &item_list,
        1,
        Duration::from_secs(10),
    )?;
    report.figure(
        "same, as a ratio to a raw rusqlite insert loop of the same rows and indexes",
        ">= 0.5",
        format!("{:.2} ({items:.0} / {raw:.0} items/s)", items / raw),
        Some(items / raw >= 0.5),
    );
    let p50 = latency.latency_percentile(50.0);
    let p99 = latency.latency_percentile(99.0);
    report.figure(
        "ack latency p50 / p99 at half the maximum rate",
        "<= 10 ms / <= 50 ms",
        format!(
            "{} / {} ({:.0} items/s offered, {} batches signed live)",
            ms(p50),
            ms(p99),
            latency.items_per_sec(),
            latency.signed_during_run
        ),
        Some(
            p50.is_some_and(|p| p <= Duration::from_millis(10))
                && p99.is_some_and(|p| p <= Duration::from_millis(50)),
        ),
    );
    Ok(())
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    })
}

/// Bytes the store takes per item (`storage`).
fn storage_figures(
    work: &Path,
    cycle: &[Observation],
    heavy: &Observation,
    report: &mut Report,
) -> anyhow::Result<()> {
    let figures = crate::storage::measure(work, cycle, heavy)?;
    report.sections.push(storage_table(&figures));
    report.figure(
        "stored bytes per evidence item (database + indexes), typical patch item",
        "<= 400 B",
        format!(
            "{:.0} B (in its check cycle's batch, as agents send it)",
            figures.typical_patch
        ),
        Some(figures.typical_patch <= 400.0),
    );
    Ok(())
}

/// The stored-bytes section of the report.
pub fn storage_table(figures: &crate::storage::Figures) -> String {
    let mut table = String::from(
        "### Stored bytes per item\n\n20 agents append 500 hourly batches each through the collector's store (interleaved, in group commits, with random 71-byte signatures); the database's growth after a full checkpoint is divided among the items. Batches are stored zstd-compressed against a dictionary taken from an earlier batch of the same agent.\n\n| appended | encoded | stored (database + indexes) |\n|---|---:|---:|\n",
    );
    for row in &figures.rows {
        let _ = writeln!(
            table,
            "| {} | {} B | {:.0} B |",
            row.what, row.encoded, row.stored
        );
    }
    table
}

/// Idle connections and memory per 1,000 agents at several sizes, then policy evaluation of
/// the whole fleet after a policy change.
async fn fleet_figures(
    work: &Path,
    cycle: &Arc<Vec<Observation>>,
    config: &SuiteConfig,
    report: &mut Report,
) -> anyhow::Result<()> {
    let largest = config.idle_agents.iter().copied().max().unwrap_or(0);
    if largest == 0 {
        return Ok(());
    }
    let (collector, fleet, enrol_secs) =
        collector_with_fleet(&work.join("fleet"), &[], largest).await?;
    let idle = idle_connections(&collector, &fleet, &config.idle_agents, enrol_secs).await?;
    report.sections.push(idle.table);
    report.figure(
        "concurrently connected idle agents on one collector",
        ">= 10,000 here",
        format!("{}", idle.connected),
        Some(idle.connected >= 10_000),
    );
    if let Some(per) = idle.per_thousand_at_largest {
        report.figure(
            "collector memory per 1,000 connected agents",
            "<= 24 MiB",
            format!("{:.2} MiB (at {largest})", mib(per as u64)),
            Some(per <= 24.0 * 1024.0 * 1024.0),
        );
    }

    let (table, largest_secs) =
        evaluation_table(collector, fleet, cycle, &config.idle_agents).await?;
    report.sections.push(table);
    if let Some(secs) = largest_secs {
        report.figure(
            "policy evaluation of 10,000 hosts after a policy change",
            "<= 5 s",
            format!("{secs:.2} s at {largest} hosts"),
            Some(secs <= 5.0 && largest >= 10_000),
        );
    }
    Ok(())
}

/// Only the policy-evaluation figure (`evident-bench evaluation`): returns its table.
pub async fn evaluation_only(sizes: &[usize]) -> anyhow::Result<String> {
    let largest = sizes.iter().copied().max().unwrap_or(0);
    anyhow::ensure!(largest > 0, "--agents needs a size above 0");
    let work = tempfile::tempdir()?;
    let cycle = Arc::new(payload::typical_cycle().await?);
    let (collector, fleet, _) =
        collector_with_fleet(&work.path().join("fleet"), &[], largest).await?;
    Ok(evaluation_table(collector, fleet, &cycle, sizes).await?.0)
}

/// One cycle from every agent of `fleet`, then the time to judge the first `sizes` hosts after
/// a policy change: the table, and the seconds at the largest size.
async fn evaluation_table(
    collector: CollectorProcess,
    fleet: Vec<fleet::SimAgent>,
    cycle: &Arc<Vec<Observation>>,
    sizes: &[usize],
) -> anyhow::Result<(String, Option<f64>)> {
    let largest = sizes.iter().copied().max().unwrap_or(0);
    // One cycle from every agent, then judge them all after a policy change.
    let once = Load {
        connections: 256,
        cycles_per_batch: 1,
        batches_per_session: 1,
        rate: 0.0,
        duration: Duration::from_secs(600),
    };
    let (sent, _) = fleet::stream_once(&collector.url, fleet, cycle.clone(), once).await?;
    anyhow::ensure!(
        sent.errors == 0,
        "one cycle per agent: {:?}",
        sent.first_error
    );
    // The collector judges arrivals in the background (at low priority): let it finish, so
    // the timed pass starts from the same settled store whatever the machine did meanwhile.
    crate::measure::until_idle(collector.pid(), Duration::from_secs(600)).await;
    let data_dir = collector.stop()?;
    // A copy of the judged fleet's database, to profile evaluation on without the fleet.
    if let Ok(keep) = std::env::var("EVIDENT_BENCH_KEEP_DB") {
        std::fs::copy(data_dir.join("collector.db"), keep)?;
    }
    let mut table = String::from(
        "### Policy evaluation after a policy change\n\nEvery rule of the default policy on every host, from the store, after a new policy version; includes writing the changed results and opening the corrective actions.\n\n| hosts | seconds | results written | action events |\n|---:|---:|---:|---:|\n",
    );
    let mut largest_secs = None;
    for &size in sizes {
        let (secs, pass) = evaluate_after_change(&data_dir, size)?;
        let _ = writeln!(
            table,
            "| {size} | {secs:.2} | {} | {} |",
            pass.results_recorded, pass.action_events
        );
        println!("policy evaluation {size}: {secs:.2} s");
        if size == largest {
            largest_secs = Some(secs);
        }
    }
    Ok((table, largest_secs))
}

/// The idle-connection table and what the summary takes from it.
#[derive(Debug)]
pub struct IdleFigures {
    pub table: String,
    /// Streams open at the end.
    pub connected: usize,
    /// Resident bytes per 1,000 connections above the baseline, at the largest size.
    pub per_thousand_at_largest: Option<f64>,
}

/// Starts a collector in `dir` (with `extra_args` to `serve`) and enrols `count` simulated
/// agents with it; returns them and the seconds enrolment took.
pub async fn collector_with_fleet(
    dir: &Path,
    extra_args: &[&str],
    count: usize,
) -> anyhow::Result<(CollectorProcess, Vec<fleet::SimAgent>, f64)> {
    let collector = CollectorProcess::start(dir, extra_args)?;
    let started = Instant::now();
    let fleet = fleet::enrol(
        &collector.url,
        &collector.token(count)?,
        collector.fingerprint,
        count,
        32,
    )
    .await?;
    Ok((collector, fleet, started.elapsed().as_secs_f64()))
}

/// Opens an idle mTLS Report stream for the first `size` agents of `fleet`, for each of `sizes`
/// (ascending) in turn, and reads the collector's resident memory after each step.
pub async fn idle_connections(
    collector: &CollectorProcess,
    fleet: &[fleet::SimAgent],
    sizes: &[usize],
    enrol_secs: f64,
) -> anyhow::Result<IdleFigures> {
    let largest = sizes.iter().copied().max().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = measure::memory(collector.pid())
        .context("collector memory")?
        .rss;
    let mut table = format!(
        "### Idle connections\n\n{largest} agents enrolled in {enrol_secs:.1} s ({:.0}/s). Collector resident memory with that many agents holding an idle mTLS Report stream open (baseline with none: {:.1} MiB):\n\n| connected | collector RSS | per 1,000 agents |\n|---:|---:|---:|\n",
        largest as f64 / enrol_secs,
        mib(base)
    );
    let mut streams = Vec::new();
    let mut opened = 0;
    let mut per_thousand_at_largest = None;
    for &size in sizes {
        let batch = fleet::hold_idle(&collector.url, &fleet[opened..size], 64).await?;
        opened = size;
        streams.push(batch);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = measure::memory(collector.pid())
            .context("collector memory")?
            .rss;
        let per_thousand = (rss.saturating_sub(base)) as f64 / size as f64 * 1000.0;
        let _ = writeln!(
            table,
            "| {size} | {:.1} MiB | {:.2} MiB |",
            mib(rss),
            mib(per_thousand as u64)
        );
        println!(
            "idle {size}: rss {:.1} MiB, {:.1} KiB per connection",
            mib(rss),
            per_thousand / 1000.0 / 1024.0
        );
        if size == largest {
            per_thousand_at_largest = Some(per_thousand);
        }
    }
    Ok(IdleFigures {
        table,
        connected: streams.iter().map(fleet::IdleStreams::len).sum(),
        per_thousand_at_largest,
    })
}

/// Web-page latency at each fleet size (see pages.rs).
async fn page_figures(
    config: &crate::pages::PagesConfig,
    cycle: &[Observation],
    report: &mut Report,
) -> anyhow::Result<()> {
    let figures = crate::pages::run(config, cycle).await?;
    report.sections.push(pages_table(&figures));
    let Some(largest) = figures.last() else {
        return Ok(());
    };
    // The target names the overview and a host page; the hosts list is the same fleet read.
    let worst = largest
        .pages
        .iter()
        .map(|(_, _, p95)| *p95)
        .max()
        .unwrap_or_default();
    let p50 = |label: &str| {
        largest
            .pages
            .iter()
            .find(|(l, _, _)| l.starts_with(label))
            .map_or(0.0, |(_, p50, _)| crate::pages::ms(*p50))
    };
    report.figure(
        "overview page and a host page, 10,000 hosts and 10 million items",
        "<= 200 ms each",
        format!(
            "p50 overview {:.0} ms, hosts list {:.0} ms, host page {:.0} ms; worst p95 of any page (also a day back) {:.0} ms, at {} hosts and {} items",
            p50("overview `/`"),
            p50("hosts list `/hosts`"),
            p50("host page `/hosts"),
            crate::pages::ms(worst),
            largest.hosts,
            largest.items
        ),
        Some(
            worst <= Duration::from_millis(200)
                && largest.hosts >= 10_000
                && largest.items >= 10_000_000,
        ),
    );
    Ok(())
}

/// The web-page table: one row per page and fleet size.
pub fn pages_table(figures: &[crate::pages::SizeFigures]) -> String {
    let mut out = String::from(
        "### Web pages by fleet size\n\nA collector database built through the collector's own append path (every host's replayed cycle each simulated hour, one signed batch per cycle, group commits of 512 batches) with the collector's evaluator run at the end of each simulated day, so results, corrective actions and their events have a history; one host in ten fails the patch rule all along, one in ten every other day, one in fifty stopped reporting three days ago. Then the release `evident-collector serve` on it, a viewer signed in through the form, and GET over one kept-alive HTTPS connection, 30 timed requests per page after 6 untimed; the database in the page cache. \"A day back\" is `?as_of=` 24 hours before the newest evidence.\n\n",
    );
    out.push_str("| hosts | items | database | rule results | action events | built in |\n|---:|---:|---:|---:|---:|---:|\n");
    for f in figures {
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} GB | {} | {} | {:.0} s |",
            f.hosts,
            f.items,
            f.database_bytes as f64 / 1e9,
            f.rule_results,
            f.action_events,
            f.build_secs
        );
    }
    out.push_str("\n| page |");
    for f in figures {
        let _ = write!(out, " {} hosts p50 / p95 |", f.hosts);
    }
    out.push_str("\n|---|");
    for _ in figures {
        out.push_str("---:|");
    }
    out.push('\n');
    let labels: Vec<&String> = figures
        .first()
        .map(|f| f.pages.iter().map(|(l, _, _)| l).collect())
        .unwrap_or_default();
    for (row, label) in labels.iter().enumerate() {
        let _ = write!(out, "| {label} |");
        for f in figures {
            if let Some((_, p50, p95)) = f.pages.get(row) {
                let _ = write!(
                    out,
                    " {:.1} / {:.1} ms |",
                    crate::pages::ms(*p50),
                    crate::pages::ms(*p95)
                );
            }
        }
        out.push('\n');
    }
    out
}

/// Activates a new policy version and judges the first `hosts` agents; returns the seconds.
fn evaluate_after_change(
    data_dir: &Path,
    hosts: usize,
) -> anyhow::Result<(f64, evident_collector::evaluate::Pass)> {
    use evident_collector::evaluate::{ActivePolicy, Evaluator, Pace};
    use evident_collector::policy::{DEFAULT_POLICY, Policy};
    let store = Arc::new(evident_collector::store::Store::open_existing(
        &data_dir.join("collector.db"),
    )?);
    let text = format!("{DEFAULT_POLICY}\n# bench variant for {hosts} hosts\n");
    let policy = Policy::parse(&text, "bench")?;
    let now = evident_collector::model::now_unix_ms();
    let version =
        store.activate_policy(&policy.sha256, &policy.name, "bench", &policy.text, now)?;
    let evaluator = Evaluator::new(
        store.clone(),
        ActivePolicy {
            version,
            policy: Arc::new(policy),
        },
    );
    let only: HashSet<String> = store
        .hosts_as_of(now)?
        .into_iter()
        .take(hosts)
        .map(|h| h.agent_id)
        .collect();
    let started = Instant::now();
    let pass = evaluator.run(Some(&only), now, Pace::Full)?;
    Ok((started.elapsed().as_secs_f64(), pass))
}

fn render(config: &SuiteConfig, report: &Report) -> String {
    let mut out = String::from("# Benchmarks\n\n");
    let _ = writeln!(
        out,
        "Measured {} on {} at commit {}, with:\n\n```sh\n{}\n```\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        machine(),
        git_commit(),
        config.command
    );
    out.push_str("Re-run with `scripts/bench` (release build, fat LTO; about 15 minutes here). The collector and the fleet simulator (`evident-bench`) run as separate processes on the same machine and share its cores; the simulator does real TLS handshakes and ECDSA signatures for every agent, and signs each ingest run's batches before the run's clock starts, as agents do on their own machines. No figure here is asserted in a test.\n\n| figure | target | measured | met |\n|---|---|---|---|\n");
    for f in &report.figures {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            f.name,
            f.target,
            f.measured,
            match f.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            }
        );
    }
    for section in &report.sections {
        out.push('\n');
        out.push_str(section);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(include_str!("analysis.md"));
    out
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_owned()))
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), {memory} memory, Linux {}",
        kernel.trim()
    )
}

fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".into(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        })
}

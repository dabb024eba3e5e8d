//! `evident-agent run`: run the checks on a schedule (interval plus random jitter), spool what they
//! observe, and deliver the spool; delivery failures are retried with capped exponential backoff
//! and full jitter, and nothing leaves the spool unacked. An agent that is not enrolled yet and
//! has an `[enrollment]` config section enrols first (`unattended.rs`).

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, bail};
use evident_proto::v1;
use prost::Message;
use ring::rand::SecureRandom;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::checks::{self, Observation};
use crate::config::RunConfig;
use crate::convert;
use crate::host::Host;
use crate::report;
use crate::sequence::Sequencer;
use crate::spool::Spool;
use crate::state::StateDir;

const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(300);

/// Numbers the observations and spools them durably, at most `max_batch_items` per batch.
pub fn spool_observations(
    observations: &[Observation],
    sequencer: &mut Sequencer,
    spool: &Spool,
    max_batch_items: usize,
) -> anyhow::Result<u64> {
    let mut spooled = 0;
    for chunk in observations.chunks(max_batch_items.max(1)) {
        let count = chunk.len() as u64;
        let first = sequencer.reserve(count)?;
        let items = chunk
            .iter()
            .zip(first..)
            .map(|(observation, sequence)| convert::evidence_item(sequence, observation))
            .collect();
        spool.push(
            first,
            first + count - 1,
            &v1::ItemList { items }.encode_to_vec(),
        )?;
        spooled += count;
    }
    Ok(spooled)
}

/// Renews the certificate when half its lifetime has passed; a failure is retried next cycle
/// (the old certificate still works until it expires).
async fn renew_if_due(state: &StateDir, credentials: &mut crate::state::Credentials) {
    let due = crate::renew::Validity::of(credentials.cert.as_ref())
        .map(|v| v.renewal_due(crate::checks::now_unix_ms()));
    match due {
        Ok(false) => {}
        Ok(true) => match crate::renew::renew(state, credentials).await {
            Ok(renewed) => *credentials = renewed,
            Err(error) => {
                warn!(error = %format!("{error:#}"), "certificate renewal failed; retried next cycle")
            }
        },
        Err(error) => {
            warn!(error = %format!("{error:#}"), "cannot tell when the certificate expires")
        }
    }
}

/// Keeps the spool within its bound, recording what had to go as a gap.
fn bound_spool(spool: &Spool, max_bytes: u64) {
    match spool.enforce_bound(max_bytes, crate::checks::now_unix_ms()) {
        Ok(None) => {}
        Ok(Some(gap)) => warn!(
            first = gap.from_sequence,
            last = gap.to_sequence,
            items = gap.items_dropped,
            max_spool_bytes = max_bytes,
            "spool full: the oldest evidence was dropped and a gap record takes its place"
        ),
        Err(error) => warn!(error = %format!("{error:#}"), "could not bound the spool"),
    }
}

/// Runs every check once and remembers what the backup check ran.
async fn cycle(host: &Host, context: &mut checks::Context, state: &StateDir) -> Vec<Observation> {
    let observations = checks::run_all(host, context).await;
    if let Err(error) = state.save_backup_memory(&context.backup_memory) {
        warn!(error = %format!("{error:#}"), "could not save the backup memory; integrity checks and restore tests may run again");
    }
    observations
}

/// Runs until `shutdown` completes; with `once`, one cycle and one delivery attempt.
pub async fn run(
    config: RunConfig,
    once: bool,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let state = StateDir::new(&config.state_dir);
    let host = match &config.replay {
        Some(dir) => Host::replay(dir)?,
        None => Host::live(),
    }
    .with_command_timeout(config.command_timeout);
    tokio::pin!(shutdown);
    match (&config.auto_enroll, state.is_enrolled()) {
        (Some(auto), true) => crate::unattended::discard_token_file(&auto.token_file),
        (Some(auto), false) => {
            let enrolled =
                crate::unattended::enroll_until_done(&state, auto, &host, once, shutdown.as_mut())
                    .await?;
            if enrolled.is_none() {
                info!("agent stopping before it enrolled");
                return Ok(());
            }
        }
        (None, true) => {}
        (None, false) => bail!(
            "agent is not enrolled: no {} (run `evident-agent enroll --state-dir {} ...` once, \
             or add an [enrollment] section to the config file and place a token for unattended \
             enrolment: see deploy/README.md)",
            state.enrollment_file().display(),
            state.root().display()
        ),
    }
    let mut credentials = state.credentials()?;
    let spool = Spool::open(&state.spool_dir())?;
    let mut sequencer = Sequencer::open(state.sequence_file(), &spool)?;
    let mut context = checks::Context {
        tags: config.tags.clone(),
        backup_sources: config.backup_sources.clone(),
        backup_memory: state.load_backup_memory(),
    };
    info!(agent = %credentials.enrollment.agent_id, collector = %credentials.collector, "agent started");

    if once {
        let observations = cycle(&host, &mut context, &state).await;
        spool_observations(
            &observations,
            &mut sequencer,
            &spool,
            config.max_batch_items,
        )?;
        bound_spool(&spool, config.max_spool_bytes);
        renew_if_due(&state, &mut credentials).await;
        let delivered = report::deliver(&credentials, &spool)
            .await
            .context("deliver evidence (it stays in the spool and is sent on the next run)")?;
        println!(
            "delivered {} batch(es) to {} as {}: {} item(s) stored, {} already stored",
            delivered.batches,
            credentials.collector,
            credentials.enrollment.agent_id,
            delivered.stored,
            delivered.duplicates
        );
        return Ok(());
    }

    let mut next_cycle = Instant::now();
    let mut failures: u32 = 0;
    let mut next_delivery = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_cycle {
            let observations = cycle(&host, &mut context, &state).await;
            match spool_observations(
                &observations,
                &mut sequencer,
                &spool,
                config.max_batch_items,
            ) {
                Ok(count) => {
                    info!(items = count, "observations spooled");
                    bound_spool(&spool, config.max_spool_bytes);
                }
                Err(error) => warn!(error = %format!("{error:#}"), "could not spool observations"),
            }
            next_cycle = now + config.interval + random_up_to(config.jitter);
            next_delivery = now;
        }
        if Instant::now() >= next_delivery {
            renew_if_due(&state, &mut credentials).await;
            match report::deliver(&credentials, &spool).await {
                Ok(_) => {
                    failures = 0;
                    next_delivery = next_cycle;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures);
                    warn!(error = %format!("{error:#}"), retry_in_ms = delay.as_millis() as u64, "delivery failed");
                    next_delivery = Instant::now() + delay;
                }
            }
        }
        let wake = next_cycle.min(next_delivery);
        tokio::select! {
            () = &mut shutdown => {
                info!("agent stopping");
                return Ok(());
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Full-jitter exponential backoff: uniform in [0, min(cap, base * 2^failures)].
pub(crate) fn backoff(failures: u32) -> Duration {
    let ceiling = RETRY_BASE
        .saturating_mul(2u32.saturating_pow(failures.min(20)))
        .min(RETRY_CAP);
    random_up_to(ceiling).max(Duration::from_millis(100))
}

fn random_up_to(max: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return max / 2;
    }
    let millis = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(u64::from_le_bytes(bytes) % (millis + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{CheckError, CheckKind, Outcome};

    #[test]
    fn backoff_stays_under_its_cap() {
        for failures in [1, 5, 30, u32::MAX] {
            assert!(backoff(failures) <= RETRY_CAP);
        }
    }

    #[test]
    fn observations_are_numbered_and_split_into_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(&dir.path().join("spool")).expect("spool");
        let mut sequencer = Sequencer::open(dir.path().join("sequence"), &spool).expect("seq");
        let observation = Observation {
            check: CheckKind::Inventory,
            observed_at_unix_ms: 1,
            outcome: Outcome::Error(CheckError::new("nothing readable")),
        };
        let spooled =
            spool_observations(&vec![observation; 5], &mut sequencer, &spool, 2).expect("spool");
        assert_eq!(spooled, 5);
        let batches = spool.pending().expect("pending");
        let ranges: Vec<(u64, u64)> = batches
            .iter()
            .map(|b| (b.first_sequence, b.last_sequence))
            .collect();
        assert_eq!(ranges, vec![(1, 2), (3, 4), (5, 5)]);
        let list = v1::ItemList::decode(spool.read(&batches[2]).expect("read").as_slice())
            .expect("decode");
        assert_eq!(list.items.len(), 1);
        assert_eq!(list.items[0].sequence, 5);
    }
}

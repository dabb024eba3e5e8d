//! The fleet simulator: enrols simulated agents with real keys and certificates, then streams
//! signed batches from each over its own mutual-TLS connection, as real agents do (connect,
//! send, wait for each ack, disconnect).
//!
//! Real agents build and sign their batches on their own machines; here a thousand of them
//! share the collector's two cores. So the batches a run will need are built and signed before
//! its clock starts (`prepare`), and the run spends its CPU on what the collector's figures are
//! about: connections, TLS and the collector itself. A run that outruns its prepared batches
//! signs the rest as it goes and says how many (`Outcome::signed_during_run`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use evident_agent::checks::Observation;
use evident_agent::tls::{self, CollectorUrl};
use evident_proto::v1;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::payload;

/// An enrolled simulated agent.
#[derive(Debug)]
pub struct SimAgent {
    pub agent_id: String,
    key: KeyPair,
    tls: rustls::ClientConfig,
    next_sequence: u64,
    /// Signed batches waiting to be sent, in sequence order from `next_sequence`.
    prepared: VecDeque<v1::Batch>,
}

/// Enrols `count` agents with one multi-use token, `parallel` at a time.
pub async fn enrol(
    url: &CollectorUrl,
    token: &str,
    ca_fingerprint: [u8; 32],
    count: usize,
    parallel: usize,
) -> anyhow::Result<Vec<SimAgent>> {
    let (config, _) = tls::enrollment_config(ca_fingerprint)?;
    let channel = tls::connect(url, config).await?;
    let permits = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::with_capacity(count);
    for index in 0..count {
        let channel = channel.clone();
        let token = token.to_owned();
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await?;
            enrol_one(channel, &token, index).await
        }));
    }
    let mut agents = Vec::with_capacity(count);
    for task in tasks {
        agents.push(task.await??);
    }
    Ok(agents)
}

async fn enrol_one(
    channel: tonic::transport::Channel,
    token: &str,
    index: usize,
) -> anyhow::Result<SimAgent> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let csr = CertificateParams::default().serialize_request(&key)?;
    let response = v1::enrollment_client::EnrollmentClient::new(channel)
        .enroll(v1::EnrollRequest {
            token: token.to_owned(),
            csr_der: csr.der().to_vec(),
            host: Some(v1::HostFacts {
                hostname: format!("sim-{index:05}"),
                os_family: "linux".into(),
                os_name: "Debian GNU/Linux".into(),
                os_version: "12".into(),
                architecture: "x86_64".into(),
                machine_id: format!("{index:032x}"),
            }),
            agent_version: "fleet-simulator".into(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("enrolment refused: {}", s.message()))?
        .into_inner();
    let ca = response
        .ca_chain_der
        .last()
        .context("no CA certificate in the enrolment answer")?;
    let tls = tls::mutual_config(
        CertificateDer::from(ca.clone()),
        CertificateDer::from(response.certificate_der),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )?;
    Ok(SimAgent {
        agent_id: response.agent_id,
        key,
        tls,
        next_sequence: 1,
        prepared: VecDeque::new(),
    })
}

/// How the fleet sends.
#[derive(Debug, Clone)]
pub struct Load {
    /// Agents connected and sending at once; the others wait for a turn.
    pub connections: usize,
    /// Check cycles per batch (each cycle is one item per check).
    pub cycles_per_batch: usize,
    /// Batches each agent sends per connection before it disconnects.
    pub batches_per_session: usize,
    /// Batches per second across the fleet; 0 for as fast as acks come back.
    pub rate: f64,
    pub duration: Duration,
}

/// What a run achieved.
#[derive(Debug, Default)]
pub struct Outcome {
    pub batches: u64,
    pub items_stored: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Send-to-ack time of every batch, sorted.
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
    /// Batches signed while the clock ran, because the prepared ones ran out.
    pub signed_during_run: u64,
}

impl Outcome {
    fn add(&mut self, session: Session) {
        self.batches += session.batches;
        self.items_stored += session.items_stored;
        self.latencies.extend(session.latencies);
        self.signed_during_run += session.signed_during_run;
        if let Some(error) = session.error {
            self.errors += 1;
            self.first_error.get_or_insert(error);
        }
    }

    pub fn items_per_sec(&self) -> f64 {
        self.items_stored as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn latency_percentile(&self, p: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies
            .get(rank.clamp(1, self.latencies.len()) - 1)
            .copied()
    }
}

/// Streams `cycle` from every agent until `load.duration` has passed.
pub async fn stream(
    url: &CollectorUrl,
    agents: Vec<SimAgent>,
    cycle: Arc<Vec<Observation>>,
    load: Load,
) -> anyhow::Result<(Outcome, Vec<SimAgent>)> {
    let agents = prepare(agents, cycle.clone(), &load).await?;
    // When every agent holds its stream for the whole run, the streams are open before the
    // clock starts: a thousand TLS handshakes at once are a reconnection storm, which is a
    // figure of its own, not the ingest or ack latency of connected agents.
    let mut opened = if load.connections >= agents.len() {
        open_streams(url, &agents, 64).await
    } else {
        Vec::new()
    }
    .into_iter()
    .map(Result::ok);
    let started = Instant::now();
    let deadline = started + load.duration;
    let turns = Arc::new(Semaphore::new(load.connections.max(1)));
    let count = agents.len().max(1) as f64;
    let (results_tx, mut results_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (index, mut agent) in agents.into_iter().enumerate() {
        let url = url.clone();
        let cycle = cycle.clone();
        let load = load.clone();
        let turns = turns.clone();
        let results = results_tx.clone();
        let mut stream = opened.next().flatten();
        tasks.push(tokio::spawn(async move {
            // Each agent paces itself to its share of the rate, starting at a random phase.
            let period = (load.rate > 0.0).then(|| Duration::from_secs_f64(count / load.rate));
            if let Some(period) = period {
                let phase = period.mul_f64((index as f64 * 0.618_033_988_7) % 1.0);
                tokio::time::sleep(phase).await;
            }
            let mut next = Instant::now();
            while Instant::now() < deadline {
                let Ok(_turn) = turns.clone().acquire_owned().await else {
                    break;
                };
                let session = session(
                    &url,
                    &mut agent,
                    stream.take(),
                    &cycle,
                    &load,
                    deadline,
                    period,
                    &mut next,
                )
                .await;
                if results.send(session).is_err() {
                    break;
                }
            }
            agent
        }));
    }
    drop(results_tx);
    let mut outcome = Outcome::default();
    while let Some(session) = results_rx.recv().await {
        outcome.add(session);
    }
    let mut agents = Vec::new();
    for task in tasks {
        let mut agent = task.await?;
        // What was not sent is signed again from `next_sequence` by the next run.
        agent.prepared.clear();
        agents.push(agent);
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies.sort_unstable();
    Ok((outcome, agents))
}

/// Batches per second across the fleet that a run as fast as acks come back is prepared for:
/// 32,000 items/s, well above what this machine ingests. Past it, agents sign as they go.
const PREPARED_BATCHES_PER_SEC: f64 = 8_000.0;

/// At most this many batches are prepared for a run (about 700 MB of typical batches), so a
/// long soak run signs most of its batches as it goes.
const MAX_PREPARED_BATCHES: f64 = 240_000.0;

/// Builds and signs, for every agent, the batches `load` will send, on all cores.
async fn prepare(
    agents: Vec<SimAgent>,
    cycle: Arc<Vec<Observation>>,
    load: &Load,
) -> anyhow::Result<Vec<SimAgent>> {
    let fleet_rate = if load.rate > 0.0 {
        load.rate
    } else {
        PREPARED_BATCHES_PER_SEC
    };
    let fleet_batches = (fleet_rate * load.duration.as_secs_f64()).min(MAX_PREPARED_BATCHES);
    let per_agent = (fleet_batches / agents.len().max(1) as f64).ceil() as usize + 1;
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let chunk = agents.len().div_ceil(threads).max(1);
    let mut agents = agents.into_iter();
    let mut tasks = Vec::new();
    loop {
        let mut part: Vec<SimAgent> = agents.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        let cycle = cycle.clone();
        let cycles_per_batch = load.cycles_per_batch;
        tasks.push(tokio::task::spawn_blocking(move || {
            for agent in &mut part {
                agent.prepared.clear();
                let mut first = agent.next_sequence;
                for _ in 0..per_agent {
                    let batch = agent.sign(first, &cycle, cycles_per_batch)?;
                    first += (cycle.len() * cycles_per_batch) as u64;
                    agent.prepared.push_back(batch);
                }
            }
            Ok::<_, anyhow::Error>(part)
        }));
    }
    let mut prepared = Vec::new();
    for task in tasks {
        prepared.extend(task.await??);
    }
    Ok(prepared)
}

impl SimAgent {
    /// A signed batch of `cycles` repetitions of `cycle`, numbered from `first`.
    fn sign(&self, first: u64, cycle: &[Observation], cycles: usize) -> anyhow::Result<v1::Batch> {
        let items = payload::item_list(first, cycle, cycles);
        let signature = evident_agent::report::sign_batch(&self.key, &items)?;
        Ok(v1::Batch {
            batch_id: first,
            items,
            signature,
            signature_algorithm: v1::SignatureAlgorithm::EcdsaP256Sha256 as i32,
            sent_at_unix_ms: 0,
        })
    }

    /// The next batch to send: the prepared one if it continues from `next_sequence`, else one
    /// signed now (the prepared ones ran out, or a send failed and the batch is due again).
    fn next_batch(
        &mut self,
        cycle: &[Observation],
        cycles: usize,
    ) -> anyhow::Result<(v1::Batch, bool)> {
        match self.prepared.pop_front() {
            Some(batch) if batch.batch_id == self.next_sequence => Ok((batch, false)),
            _ => {
                self.prepared.clear();
                Ok((self.sign(self.next_sequence, cycle, cycles)?, true))
            }
        }
    }
}

#[derive(Debug, Default)]
struct Session {
    batches: u64,
    items_stored: u64,
    latencies: Vec<Duration>,
    signed_during_run: u64,
    error: Option<String>,
}

/// An agent's open Report stream: where its batches go and where its acks come from.
struct OpenStream {
    batches: mpsc::Sender<v1::ReportRequest>,
    acks: tonic::Streaming<v1::ReportResponse>,
    client: v1::evidence_client::EvidenceClient<tonic::transport::Channel>,
}

async fn open_stream(url: &CollectorUrl, tls: rustls::ClientConfig) -> anyhow::Result<OpenStream> {
    let channel = tls::connect(url, tls).await?;
    let mut client = v1::evidence_client::EvidenceClient::new(channel);
    let (batches, rx) = mpsc::channel(1);
    let acks = client
        .report(ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow::anyhow!("stream refused: {}", s.message()))?
        .into_inner();
    Ok(OpenStream {
        batches,
        acks,
        client,
    })
}

/// Opens a stream for each agent, `parallel` handshakes at a time.
async fn open_streams(
    url: &CollectorUrl,
    agents: &[SimAgent],
    parallel: usize,
) -> Vec<anyhow::Result<OpenStream>> {
    let permits = Arc::new(Semaphore::new(parallel.max(1)));
    let mut opening = Vec::new();
    for agent in agents {
        let url = url.clone();
        let tls = agent.tls.clone();
        let permits = permits.clone();
        opening.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await?;
            open_stream(&url, tls).await
        }));
    }
    let mut streams = Vec::new();
    for task in opening {
        streams.push(task.await.map_err(anyhow::Error::from).and_then(|r| r));
    }
    streams
}

/// One connection (the one given, else a new one): up to `batches_per_session` batches, each
/// acked before the next.
#[allow(clippy::too_many_arguments)]
async fn session(
    url: &CollectorUrl,
    agent: &mut SimAgent,
    opened: Option<OpenStream>,
    cycle: &[Observation],
    load: &Load,
    deadline: Instant,
    period: Option<Duration>,
    next: &mut Instant,
) -> Session {
    let mut session = Session::default();
    let result: anyhow::Result<()> = async {
        let OpenStream {
            batches: tx,
            mut acks,
            client: _client,
        } = match opened {
            Some(stream) => stream,
            None => open_stream(url, agent.tls.clone()).await?,
        };
        for _ in 0..load.batches_per_session {
            if let Some(period) = period {
                tokio::time::sleep_until((*next).into()).await;
                *next += period;
            }
            if Instant::now() >= deadline {
                break;
            }
            let first = agent.next_sequence;
            let (mut batch, signed_now) = agent.next_batch(cycle, load.cycles_per_batch)?;
            session.signed_during_run += u64::from(signed_now);
            batch.sent_at_unix_ms = evident_collector::model::now_unix_ms();
            let sent_at = Instant::now();
            tx.send(v1::ReportRequest {
                kind: Some(v1::report_request::Kind::Batch(batch)),
            })
            .await
            .context("stream closed")?;
            let response = acks
                .message()
                .await
                .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
            let Some(v1::ReportResponse {
                kind: Some(v1::report_response::Kind::Ack(ack)),
            }) = response
            else {
                anyhow::bail!("stream closed without an ack");
            };
            session.latencies.push(sent_at.elapsed());
            session.batches += 1;
            session.items_stored += ack.stored;
            agent.next_sequence = first + (cycle.len() * load.cycles_per_batch) as u64;
        }
        Ok(())
    }
    .await;
    if let Err(error) = result {
        session.error = Some(format!("{}: {error:#}", agent.agent_id));
    }
    session
}

/// Holds one idle Report stream open per agent; dropping the handle closes them.
#[derive(Debug)]
pub struct IdleStreams {
    senders: Vec<mpsc::Sender<v1::ReportRequest>>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl IdleStreams {
    pub fn len(&self) -> usize {
        self.senders.len()
    }
}

/// Opens an idle stream for each agent, `parallel` handshakes at a time.
pub async fn hold_idle(
    url: &CollectorUrl,
    agents: &[SimAgent],
    parallel: usize,
) -> anyhow::Result<IdleStreams> {
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for opened in open_streams(url, agents, parallel).await {
        let OpenStream {
            batches: tx,
            mut acks,
            client,
        } = opened?;
        senders.push(tx);
        tasks.push(tokio::spawn(async move {
            let _client = client;
            while let Ok(Some(_)) = acks.message().await {}
        }));
    }
    Ok(IdleStreams {
        senders,
        _tasks: tasks,
    })
}

/// Every agent sends one batch, `load.connections` at a time.
pub async fn stream_once(
    url: &CollectorUrl,
    agents: Vec<SimAgent>,
    cycle: Arc<Vec<Observation>>,
    load: Load,
) -> anyhow::Result<(Outcome, Vec<SimAgent>)> {
    let started = Instant::now();
    let deadline = started + load.duration;
    let turns = Arc::new(Semaphore::new(load.connections.max(1)));
    let mut tasks = Vec::new();
    for mut agent in agents {
        let url = url.clone();
        let cycle = cycle.clone();
        let load = Load {
            batches_per_session: 1,
            ..load.clone()
        };
        let turns = turns.clone();
        tasks.push(tokio::spawn(async move {
            let _turn = turns.acquire_owned().await;
            let mut next = Instant::now();
            let session = session(
                &url, &mut agent, None, &cycle, &load, deadline, None, &mut next,
            )
            .await;
            (session, agent)
        }));
    }
    let mut outcome = Outcome::default();
    let mut agents = Vec::new();
    for task in tasks {
        let (session, agent) = task.await?;
        outcome.add(session);
        agents.push(agent);
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies.sort_unstable();
    Ok((outcome, agents))
}

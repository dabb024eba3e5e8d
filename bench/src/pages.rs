//! The web-page figure: a collector database of N hosts with ~1,000 evidence items each and
//! their recorded rule results and corrective actions, then GET latency of the overview, the
//! hosts list and a host page from the real `evident-collector serve` over HTTPS.
//!
//! The database is built through the collector's own write path, not over the network: the
//! simulator's replayed cycle (inventory, patch, disk encryption, backup) of every host for every
//! hour of `items_per_host / 4` hours, each cycle one batch signed with the agent's own P-256 key
//! (as an agent sends it), appended with `Store::append_batches` in groups (the collector's
//! group commit), and the collector's `Evaluator` run at the end of every simulated day over the
//! hosts just written, so rule results and action events carry their real history. Only TLS,
//! gRPC and signature verification are skipped: the rows are the ones ingest would write, in the
//! order it would write them, ten times faster than over the wire.
//!
//! The fleet grows in steps (e.g. 1,000, then 5,000, then 10,000 hosts) on the same timeline, so
//! one build serves all sizes; each step's new hosts are judged like the first ones were.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use evident_agent::checks::{CheckKind as AgentCheck, Observation};
use evident_collector::ca::{CaPaths, CertificateAuthority};
use evident_collector::evaluate::{Evaluator, Pace, PolicySource};
use evident_collector::model::{CheckKind, HostFacts};
use evident_collector::store::{BatchToAppend, CertIdentity, ItemToAppend, Store};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use prost::Message as _;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};

use crate::collector::CollectorProcess;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Batches per `append_batches` transaction while building.
const GROUP: usize = 512;
const USER: &str = "bench";
const PASSWORD: &str = "bench password, long enough";

/// What to build and measure.
#[derive(Debug, Clone)]
pub struct PagesConfig {
    /// Where the database lives (its size: about 4.4 KB per item of the typical cycle).
    pub dir: PathBuf,
    /// Fleet sizes, ascending; the database grows from one to the next.
    pub hosts: Vec<usize>,
    /// Evidence items per host (one cycle of 4 items per simulated hour).
    pub items_per_host: usize,
    /// Timed requests per page, after `requests / 5` untimed ones.
    pub requests: usize,
}

/// The figures at one fleet size.
#[derive(Debug, Clone)]
pub struct SizeFigures {
    pub hosts: usize,
    pub items: u64,
    /// Seconds building this step took (enrolment, batches, evaluations).
    pub build_secs: f64,
    pub database_bytes: u64,
    pub rule_results: i64,
    pub action_events: i64,
    /// (page, p50, p95) per measured page.
    pub pages: Vec<(String, Duration, Duration)>,
}

/// The pages every size measures: (label, path). `{agent}` is a failing host, `{as_of}` a
/// day before the newest evidence.
const PAGES: &[(&str, &str)] = &[
    ("overview `/`", "/"),
    ("hosts list `/hosts`", "/hosts"),
    ("host page `/hosts/{agent}`", "/hosts/{agent}"),
    ("overview, a day back", "/?as_of={as_of}"),
    ("hosts list, a day back", "/hosts?as_of={as_of}"),
    ("host page, a day back", "/hosts/{agent}?as_of={as_of}"),
];

pub async fn run(config: &PagesConfig, cycle: &[Observation]) -> anyhow::Result<Vec<SizeFigures>> {
    let heavy = crate::payload::heavy_patch().await?;
    std::fs::create_dir_all(&config.dir)?;
    let data_dir = config.dir.join("pages");
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)?;
    }
    std::fs::create_dir_all(&data_dir)?;
    let cycles = config.items_per_host.div_ceil(cycle.len()).max(1);
    // The timeline ends now, rounded down to the hour, so the collector's own evaluation at
    // start finds the newest cycles recent.
    let end_ms = evident_collector::model::now_unix_ms() / HOUR_MS * HOUR_MS;
    let timeline = Timeline {
        start_ms: end_ms - cycles as i64 * HOUR_MS,
        cycles,
    };
    let mut builder = Builder::new(&data_dir, timeline)?;
    let mut out = Vec::new();
    for &hosts in &config.hosts {
        let started = Instant::now();
        builder.grow_to(hosts, cycle, &heavy)?;
        let build_secs = started.elapsed().as_secs_f64();
        let (items, rule_results, action_events) = builder.counts()?;
        println!("pages: {hosts} hosts, {items} items built in {build_secs:.0} s; measuring");
        let database_bytes = builder.database_bytes()?;
        let pages = measure(&data_dir, builder.failing_host(), config.requests, end_ms).await?;
        for (page, p50, p95) in &pages {
            println!(
                "pages {hosts}: {page} p50 {:.1} ms p95 {:.1} ms",
                ms(*p50),
                ms(*p95)
            );
        }
        out.push(SizeFigures {
            hosts,
            items,
            build_secs,
            database_bytes,
            rule_results,
            action_events,
            pages,
        });
    }
    drop(builder);
    // Kept for a look with sqlite3 when the caller chose the place; a temporary directory
    // goes with the run.
    println!(
        "pages: the largest database stays in {}",
        data_dir.display()
    );
    Ok(out)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[derive(Debug, Clone, Copy)]
struct Timeline {
    start_ms: i64,
    cycles: usize,
}

struct Host {
    identity: CertIdentity,
    key: KeyPair,
    index: usize,
}

/// How host `index` behaves, so the fleet has failures, flapping hosts and silent ones:
/// every tenth host has 80 pending updates all along, every tenth+1 has them on odd days only
/// (its results and actions change daily), and every fiftieth+2 stops reporting three days
/// before the end.
fn heavy_patch_at(index: usize, at_ms: i64) -> bool {
    match index % 10 {
        0 => true,
        1 => (at_ms / DAY_MS) % 2 == 1,
        _ => false,
    }
}

fn silent_at(index: usize, at_ms: i64, end_ms: i64) -> bool {
    index % 50 == 2 && at_ms > end_ms - 3 * DAY_MS
}

/// One cycle of host `index` at `at_ms`, ready to append.
fn batch_of(
    host: &Host,
    cycle_index: usize,
    at_ms: i64,
    cycle: &[Observation],
    heavy: &Observation,
) -> anyhow::Result<BatchToAppend> {
    let first = (cycle_index * cycle.len()) as u64 + 1;
    let mut items = Vec::with_capacity(cycle.len());
    let mut proto_items = Vec::with_capacity(cycle.len());
    for (offset, observation) in cycle.iter().enumerate() {
        let observation =
            if observation.check == AgentCheck::Patch && heavy_patch_at(host.index, at_ms) {
                heavy
            } else {
                observation
            };
        // Checks finish a few seconds apart within the cycle.
        let observed_at_ms = at_ms + offset as i64 * 2_000;
        let observed = Observation {
            check: observation.check,
            observed_at_unix_ms: observed_at_ms,
            outcome: observation.outcome.clone(),
        };
        let sequence = first + offset as u64;
        let item = evident_agent::convert::evidence_item(sequence, &observed);
        items.push(ItemToAppend {
            sequence,
            check: CheckKind::from_number(i64::from(item.check)).context("a known check")?,
            gap_from: None,
            observed_at_ms,
            bytes: item.encode_to_vec(),
        });
        proto_items.push(item);
    }
    let items_bytes = evident_proto::v1::ItemList { items: proto_items }.encode_to_vec();
    let signature = evident_agent::report::sign_batch(&host.key, &items_bytes)?;
    Ok(BatchToAppend {
        items_bytes,
        signature,
        signature_algorithm: evident_proto::v1::SignatureAlgorithm::EcdsaP256Sha256 as i32,
        items,
        agent_clock_skew_ms: Some(0),
    })
}

enum Work {
    Batch(usize, BatchToAppend, i64),
    /// Judge the hosts of this step as of this moment.
    Evaluate(i64),
}

struct Builder {
    store: Arc<Store>,
    ca: CertificateAuthority,
    evaluator: Evaluator,
    timeline: Timeline,
    hosts: Vec<Arc<Host>>,
    path: PathBuf,
}

impl Builder {
    fn new(data_dir: &Path, timeline: Timeline) -> anyhow::Result<Builder> {
        let path = data_dir.join("collector.db");
        let store = Arc::new(Store::open_or_create(&path)?);
        let ca = CertificateAuthority::load_or_create(&CaPaths::new(data_dir))?;
        // The built-in policy, in force from the start of the timeline; `serve` finds the same
        // text and keeps the version.
        let evaluator = evident_collector::evaluate::starting_policy(
            &store,
            &PolicySource::BuiltIn,
            timeline.start_ms - DAY_MS,
        )?;
        evident_collector::accounts::add_user(
            &store,
            USER,
            evident_collector::accounts::Role::Viewer,
            PASSWORD,
            timeline.start_ms - DAY_MS,
        )?;
        Ok(Builder {
            store,
            ca,
            evaluator,
            timeline,
            hosts: Vec::new(),
            path,
        })
    }

    /// Enrols hosts up to `total` and writes their whole history, judging them at the end of
    /// every simulated day.
    fn grow_to(
        &mut self,
        total: usize,
        cycle: &[Observation],
        heavy: &Observation,
    ) -> anyhow::Result<()> {
        let first_new = self.hosts.len();
        if total <= first_new {
            return Ok(());
        }
        let enrolled_at = self.timeline.start_ms - HOUR_MS;
        let token = format!("bench-pages-{total}");
        self.store.create_token(
            token.as_bytes(),
            enrolled_at,
            i64::MAX,
            u32::try_from(total)?,
        )?;
        for index in first_new..total {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let csr = CertificateParams::default().serialize_request(&key)?;
            let digest = ring::digest::digest(&ring::digest::SHA256, &index.to_be_bytes());
            let agent_id = format!("agt-{}", hex::encode(&digest.as_ref()[..10]));
            let host = HostFacts {
                hostname: format!("host-{index:05}"),
                os_family: "linux".into(),
                os_name: "Debian GNU/Linux".into(),
                os_version: "12".into(),
                architecture: "x86_64".into(),
                machine_id: format!("{index:032x}"),
                agent_version: "fleet-simulator".into(),
            };
            let enrolled =
                self.store
                    .enroll(token.as_bytes(), enrolled_at, &host, &agent_id, |id| {
                        self.ca
                            .sign_agent_csr(csr.der(), id, time::Duration::days(365))
                    })?;
            let fingerprint = ring::digest::digest(&ring::digest::SHA256, &enrolled.cert.der);
            let identity = self
                .store
                .certificate_identity(fingerprint.as_ref())?
                .context("the enrolled agent's identity")?;
            self.hosts.push(Arc::new(Host {
                identity,
                key,
                index,
            }));
        }
        let new_hosts: Vec<Arc<Host>> = self.hosts[first_new..].to_vec();
        let only: HashSet<String> = new_hosts
            .iter()
            .map(|h| h.identity.agent_id.clone())
            .collect();

        // Encoding and signing on one thread, appending and judging on this one: the two
        // cores each do one.
        let (tx, rx) = mpsc::sync_channel::<anyhow::Result<Work>>(4 * GROUP);
        let timeline = self.timeline;
        let end_ms = timeline.start_ms + timeline.cycles as i64 * HOUR_MS;
        let cycle = cycle.to_vec();
        let heavy = heavy.clone();
        let producer_hosts = new_hosts.clone();
        let producer = std::thread::spawn(move || {
            for c in 0..timeline.cycles {
                let at_ms = timeline.start_ms + c as i64 * HOUR_MS;
                for (i, host) in producer_hosts.iter().enumerate() {
                    if silent_at(host.index, at_ms, end_ms) {
                        continue;
                    }
                    let work = batch_of(host, c, at_ms, &cycle, &heavy)
                        .map(|batch| Work::Batch(i, batch, at_ms + 1_000 + (i % 60) as i64 * 10));
                    if tx.send(work).is_err() {
                        return;
                    }
                }
                let next = at_ms + HOUR_MS;
                if (next % DAY_MS == 0 || c + 1 == timeline.cycles)
                    && tx.send(Ok(Work::Evaluate(next))).is_err()
                {
                    return;
                }
            }
        });
        let mut group: Vec<(usize, BatchToAppend, i64)> = Vec::with_capacity(GROUP);
        for work in rx {
            match work? {
                Work::Batch(i, batch, received_ms) => {
                    group.push((i, batch, received_ms));
                    if group.len() == GROUP {
                        self.append(&new_hosts, &mut group)?;
                    }
                }
                Work::Evaluate(at_ms) => {
                    self.append(&new_hosts, &mut group)?;
                    self.evaluator.run(Some(&only), at_ms, Pace::Full)?;
                }
            }
        }
        producer
            .join()
            .map_err(|_| anyhow::anyhow!("the batch producer panicked"))?;
        self.append(&new_hosts, &mut group)?;
        Ok(())
    }

    fn append(
        &self,
        hosts: &[Arc<Host>],
        group: &mut Vec<(usize, BatchToAppend, i64)>,
    ) -> anyhow::Result<()> {
        let batches: Vec<(&CertIdentity, &BatchToAppend, i64)> = group
            .iter()
            .map(|(i, batch, at)| (&hosts[*i].identity, batch, *at))
            .collect();
        for (result, (_, batch, _)) in self
            .store
            .append_batches(&batches)
            .into_iter()
            .zip(&batches)
        {
            let appended = result?;
            if appended.stored != batch.items.len() as u64 {
                bail!("a bench batch was not stored whole: {appended:?}");
            }
        }
        group.clear();
        Ok(())
    }

    /// Evidence items, rule results and action events stored.
    fn counts(&self) -> anyhow::Result<(u64, i64, i64)> {
        let conn = rusqlite::Connection::open(&self.path)?;
        let count = |table: &str| -> rusqlite::Result<i64> {
            conn.query_row(&format!("SELECT max(id) FROM {table}"), [], |r| {
                r.get::<_, Option<i64>>(0).map(Option::unwrap_or_default)
            })
        };
        Ok((
            u64::try_from(count("evidence")?)?,
            count("rule_results")?,
            count("action_events")?,
        ))
    }

    fn database_bytes(&self) -> anyhow::Result<u64> {
        let conn = rusqlite::Connection::open(&self.path)?;
        conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
        let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
        let page: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
        Ok(u64::try_from(pages * page)?)
    }

    /// A host whose patch rule fails all along (so its page has results and an action).
    fn failing_host(&self) -> &str {
        &self.hosts[0].identity.agent_id
    }
}

/// Times every page again on the database an earlier run left in `dir` (`pages` under it),
/// e.g. after a change to the collector.
pub async fn measure_again(
    dir: &Path,
    requests: usize,
) -> anyhow::Result<Vec<(String, Duration, Duration)>> {
    let data_dir = dir.join("pages");
    let (failing_host, newest_ms) = {
        let conn = rusqlite::Connection::open_with_flags(
            data_dir.join("collector.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .with_context(|| format!("a page-bench database in {}", data_dir.display()))?;
        // The builder enrols its failing host first.
        let host: String = conn.query_row(
            "SELECT agent_id FROM agents ORDER BY enrolled_at_ms, rowid LIMIT 1",
            [],
            |r| r.get(0),
        )?;
        let newest: i64 =
            conn.query_row("SELECT max(received_at_ms) FROM batches", [], |r| r.get(0))?;
        (host, newest)
    };
    let end_ms = (newest_ms + HOUR_MS - 1) / HOUR_MS * HOUR_MS;
    measure(&data_dir, &failing_host, requests, end_ms).await
}

/// Starts `serve` on the database, signs in and times every page.
async fn measure(
    data_dir: &Path,
    failing_host: &str,
    requests: usize,
    end_ms: i64,
) -> anyhow::Result<Vec<(String, Duration, Duration)>> {
    // The previous size's `serve` left its addresses behind: wait for this one's.
    for stale in ["grpc.addr", "web.addr"] {
        let _ = std::fs::remove_file(data_dir.join(stale));
    }
    let collector = CollectorProcess::start(data_dir, &[])?;
    let mut client = WebClient::connect(data_dir).await?;
    client.sign_in().await?;
    // The collector judges every host once as it starts; let that pass finish, so it does not
    // share the cores with the timed requests.
    crate::measure::until_idle(collector.pid(), Duration::from_secs(120)).await;
    let as_of = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(end_ms - DAY_MS)?),
    )
    .to_string();
    let mut out = Vec::new();
    for (label, template) in PAGES {
        let path = template
            .replace("{agent}", failing_host)
            .replace("{as_of}", &as_of);
        for _ in 0..(requests / 5).max(1) {
            client.get(&path).await?;
        }
        let mut times = Vec::with_capacity(requests);
        for _ in 0..requests {
            let started = Instant::now();
            client.get(&path).await?;
            times.push(started.elapsed());
        }
        times.sort_unstable();
        let at =
            |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
        out.push(((*label).to_owned(), at(0.50), at(0.95)));
    }
    drop(client);
    collector.stop()?;
    Ok(out)
}

/// One kept-alive HTTPS connection to the web listener (as a browser holds one), with the
/// session cookie once signed in.
struct WebClient {
    address: String,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    cookie: String,
}

impl WebClient {
    async fn connect(data_dir: &Path) -> anyhow::Result<WebClient> {
        let addr_file = evident_collector::web::address_file(data_dir);
        let deadline = Instant::now() + Duration::from_secs(60);
        let address = loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && text.ends_with('\n')
            {
                break text.trim().to_owned();
            }
            if Instant::now() > deadline {
                bail!("the web listener did not start");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let ca = CertificateDer::from_pem_file(data_dir.join("tls/ca.pem"))
            .context("the collector's CA certificate")?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca)?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(&address).await?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost")?, tcp)
            .await
            .context("TLS handshake with the web listener")?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        Ok(WebClient {
            address,
            sender,
            cookie: String::new(),
        })
    }

    async fn send(
        &mut self,
        request: hyper::http::request::Builder,
        body: Bytes,
    ) -> anyhow::Result<(u16, hyper::HeaderMap, Bytes)> {
        self.sender.ready().await?;
        let request = request
            .header(hyper::header::HOST, &self.address)
            .header(hyper::header::COOKIE, &self.cookie)
            .body(Full::new(body))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, headers, body))
    }

    /// Signs in through the form, as a person does: the form's nonce cookie, then the post.
    async fn sign_in(&mut self) -> anyhow::Result<()> {
        let (_, headers, _) = self
            .send(hyper::Request::get("/login"), Bytes::new())
            .await?;
        let nonce = set_cookie(&headers, evident_collector::web::LOGIN_COOKIE)
            .context("the sign-in form's nonce cookie")?;
        self.cookie = format!("{}={nonce}", evident_collector::web::LOGIN_COOKIE);
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("name", USER)
            .append_pair("password", PASSWORD)
            .append_pair("nonce", &nonce)
            .append_pair("next", "/")
            .finish();
        let (status, headers, body) = self
            .send(
                hyper::Request::post("/login").header(
                    hyper::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                ),
                Bytes::from(form),
            )
            .await?;
        let session =
            set_cookie(&headers, evident_collector::web::SESSION_COOKIE).with_context(|| {
                format!(
                    "sign-in answered {status}: {}",
                    String::from_utf8_lossy(&body)
                )
            })?;
        self.cookie = format!("{}={session}", evident_collector::web::SESSION_COOKIE);
        Ok(())
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<()> {
        let (status, _, body) = self.send(hyper::Request::get(path), Bytes::new()).await?;
        if status != 200 {
            bail!(
                "GET {path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }
}

fn set_cookie(headers: &hyper::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(hyper::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_owned())
}

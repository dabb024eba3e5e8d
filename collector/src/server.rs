//! `evident-collector serve`: opens the data directory, creates the CA on first start, and serves
//! enrolment and evidence over one TLS port. Client certificates are optional at the TLS layer
//! (an enrolling agent has none yet) but a certificate that is presented must chain to our CA,
//! and the Evidence service refuses any stream without one.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use evident_proto::v1;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{Service, http};
use tracing::{debug, info, warn};

use crate::ca::{CaPaths, CertificateAuthority};
use crate::enroll::EnrollmentService;
use crate::ingest::{EvidenceService, IngestLimits};
use crate::store::Store;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub grpc_listen: SocketAddr,
    /// The reviewers' web page; `None` when turned off.
    pub web_listen: Option<SocketAddr>,
    /// DNS names and IP addresses agents use to reach this collector.
    pub server_names: Vec<String>,
    pub agent_cert_lifetime: Duration,
    pub max_batch_items: usize,
    pub max_message_bytes: usize,
    /// Cap on the evidence database (`max_database_bytes`); `None` for no cap.
    pub max_database_bytes: Option<u64>,
    pub max_concurrent_streams: usize,
    pub max_in_flight_batches: usize,
    /// The policy file (`policy_file`); the built-in default when `None`.
    pub policy_file: Option<PathBuf>,
    /// How often every host is judged again, for ages and silence.
    pub evaluation_interval: Duration,
    /// How often a checkpoint is signed over all evidence (when it grew).
    pub checkpoint_interval: Duration,
}

/// Paths inside a data directory.
pub fn database_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("collector.db")
}

/// The file `serve` writes with the address it actually listens on (useful with port 0).
pub fn address_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("grpc.addr")
}

/// Runs the collector until `shutdown` completes, then stops accepting and drains streams.
pub async fn run(config: ServeConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    create_private_dir(&config.data_dir)?;
    let paths = CaPaths::new(&config.data_dir);
    let ca = Arc::new(CertificateAuthority::load_or_create(&paths)?);
    let store = Arc::new(Store::open_or_create(&database_path(&config.data_dir))?);
    if let Some(max_bytes) = config.max_database_bytes {
        let limit = store
            .limit_size(max_bytes)
            .context("apply max_database_bytes to the database")?;
        if limit.used_pages >= limit.max_pages {
            warn!(
                max_database_bytes = max_bytes,
                used_bytes = limit.used_bytes(),
                "the database already fills max_database_bytes: every batch is refused until it is raised"
            );
        } else {
            info!(
                max_database_bytes = max_bytes,
                used_bytes = limit.used_bytes(),
                page_size = limit.page_size,
                max_pages = limit.max_pages,
                "database size capped"
            );
        }
    }
    let policy_source = match &config.policy_file {
        Some(path) => crate::evaluate::PolicySource::File(path.clone()),
        None => crate::evaluate::PolicySource::BuiltIn,
    };
    let evaluator = Arc::new(crate::evaluate::starting_policy(
        &store,
        &policy_source,
        crate::model::now_unix_ms(),
    )?);
    let arrivals = Arc::new(crate::evaluate::Arrivals::default());
    let evaluation = tokio::spawn(crate::evaluate::run_loop(
        evaluator,
        arrivals.clone(),
        policy_source,
        config.evaluation_interval,
    ));
    let checkpoints = tokio::spawn(crate::transparency::run_loop(
        store.clone(),
        ca.clone(),
        config.checkpoint_interval,
    ));
    let identity = ca.issue_server_identity(&paths, &config.server_names)?;
    let web_tls = web_tls_config(&identity)?;
    let tls = Arc::new(tls_config(&ca, identity)?);

    let listener = TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("listen on {}", config.grpc_listen))?;
    let local = listener.local_addr().context("read listening address")?;

    let (stop_web, web_stopped) = tokio::sync::watch::channel(false);
    let web = match config.web_listen {
        Some(address) => {
            let listener = std::net::TcpListener::bind(address)
                .with_context(|| format!("listen on {address} for the web page (web_listen)"))?;
            let web_local = listener
                .local_addr()
                .context("read the web page's address")?;
            std::fs::write(
                crate::web::address_file(&config.data_dir),
                format!("{web_local}\n"),
            )
            .context("write web.addr")?;
            // Its own connection: pages read while ingest writes (WAL readers do not block).
            let web_store = Arc::new(Store::open_existing(&database_path(&config.data_dir))?);
            let state = crate::web::AppState::new(
                web_store,
                ca.clone(),
                agent_url(local, &config.server_names),
            );
            let mut stopped = web_stopped;
            Some(tokio::spawn(crate::web::serve(
                listener,
                Arc::new(web_tls),
                state,
                async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                },
            )))
        }
        None => None,
    };
    let shutdown = async move {
        shutdown.await;
        let _ = stop_web.send(true);
    };
    // Written last: whoever waits for it finds every listener bound.
    std::fs::write(address_file(&config.data_dir), format!("{local}\n"))
        .context("write grpc.addr")?;
    info!(address = %local, ca_fingerprint = %ca.fingerprint(), "collector listening");

    let (conn_tx, conn_rx) = mpsc::channel::<Result<TlsStream<TcpStream>, std::io::Error>>(64);
    let accept = tokio::spawn(accept_loop(listener, TlsAcceptor::from(tls), conn_tx));

    let lifetime = time::Duration::try_from(config.agent_cert_lifetime)
        .context("agent certificate lifetime out of range")?;
    let enrollment = EnrollmentService::new(store.clone(), ca.clone(), lifetime);
    let evidence = EvidenceService::new(
        store,
        IngestLimits {
            max_batch_items: config.max_batch_items,
            max_concurrent_streams: config.max_concurrent_streams,
            max_in_flight_batches: config.max_in_flight_batches,
        },
        ca.clone(),
        lifetime,
    )
    .context("start the evidence writer")?
    .with_arrivals(arrivals);
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(
            v1::enrollment_server::EnrollmentServer::new(enrollment)
                .max_decoding_message_size(64 * 1024),
        )
        .add_service(ReportRoute::new(evidence, config.max_message_bytes))
        .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), shutdown)
        .await;
    accept.abort();
    evaluation.abort();
    checkpoints.abort();
    if let Some(web) = web {
        match web.await {
            Ok(Err(e)) => warn!(error = %format!("{e:#}"), "the web page stopped with an error"),
            Err(e) => warn!(error = %e, "the web page task failed"),
            Ok(Ok(())) => {}
        }
    }
    info!("collector stopped");
    result.context("serve gRPC")
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    connections: mpsc::Sender<Result<TlsStream<TcpStream>, std::io::Error>>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Running out of file descriptors must not end the collector: wait and retry.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = connections.send(Ok(tls)).await;
                }
                Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Per-stream codec buffers for Report: tonic's default is 8 KiB each way, allocated when the
/// stream opens and held while it idles, which for ten thousand connected agents is most of
/// their memory (issue 10). A batch larger than this grows the decode buffer as it arrives;
/// acks are a few dozen bytes.
const REPORT_CODEC_BUFFER_BYTES: usize = 512;

/// The Report stream's codec: prost with small buffers.
#[derive(Debug, Clone, Copy, Default)]
struct ReportCodec;

impl tonic::codec::Codec for ReportCodec {
    type Encode = v1::ReportResponse;
    type Decode = v1::ReportRequest;
    type Encoder = tonic_prost::ProstEncoder<v1::ReportResponse>;
    type Decoder = tonic_prost::ProstDecoder<v1::ReportRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(report_buffers())
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(report_buffers())
    }
}

fn report_buffers() -> tonic::codec::BufferSettings {
    // The yield threshold stays tonic's default: it bounds how much a busy stream encodes
    // before yielding, not what an idle one holds.
    tonic::codec::BufferSettings::new(REPORT_CODEC_BUFFER_BYTES, 32 * 1024)
}

/// The Evidence service with Report served through [`ReportCodec`]; every other method goes
/// to the generated server unchanged.
#[derive(Debug, Clone)]
struct ReportRoute {
    service: Arc<EvidenceService>,
    generated: v1::evidence_server::EvidenceServer<EvidenceService>,
    max_message_bytes: usize,
}

impl ReportRoute {
    fn new(service: EvidenceService, max_message_bytes: usize) -> Self {
        let service = Arc::new(service);
        ReportRoute {
            generated: v1::evidence_server::EvidenceServer::from_arc(service.clone())
                .max_decoding_message_size(max_message_bytes),
            service,
            max_message_bytes,
        }
    }
}

impl tonic::server::NamedService for ReportRoute {
    const NAME: &'static str = v1::evidence_server::SERVICE_NAME;
}

/// Adapts `Evidence::report` to tonic's streaming handler.
struct ReportHandler(Arc<EvidenceService>);

impl tonic::server::StreamingService<v1::ReportRequest> for ReportHandler {
    type Response = v1::ReportResponse;
    type ResponseStream = <EvidenceService as v1::evidence_server::Evidence>::ReportStream;
    type Future = std::pin::Pin<
        Box<
            dyn Future<Output = Result<tonic::Response<Self::ResponseStream>, tonic::Status>>
                + Send,
        >,
    >;

    fn call(
        &mut self,
        request: tonic::Request<tonic::Streaming<v1::ReportRequest>>,
    ) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            <EvidenceService as v1::evidence_server::Evidence>::report(&service, request).await
        })
    }
}

impl Service<http::Request<tonic::body::Body>> for ReportRoute {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() != "/evident.v1.Evidence/Report" {
            return Box::pin(self.generated.call(request));
        }
        let handler = ReportHandler(self.service.clone());
        let max_message_bytes = self.max_message_bytes;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ReportCodec)
                .apply_max_message_size_config(Some(max_message_bytes), None);
            Ok(grpc.streaming(handler, request).await)
        })
    }
}

fn tls_config(
    ca: &CertificateAuthority,
    identity: crate::ca::ServerIdentity,
) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.cert_der().clone())
        .context("add CA to client roots")?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .context("build client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key.into())
        .context("load server certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The web page's TLS: the same server certificate, no client certificates, HTTP/1.1.
fn web_tls_config(identity: &crate::ca::ServerIdentity) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key().into())
        .context("load server certificate for the web page")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// How agents reach this collector, for the enrolment command line the web page shows.
fn agent_url(local: SocketAddr, server_names: &[String]) -> String {
    if !local.ip().is_unspecified() {
        return format!("https://{local}");
    }
    let name = server_names
        .iter()
        .find(|n| !["localhost", "127.0.0.1", "::1"].contains(&n.as_str()))
        .map_or("COLLECTOR-HOST", String::as_str);
    format!("https://{name}:{}", local.port())
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir.join("tls"))
        .with_context(|| format!("create data directory {}", dir.display()))
}

//! The Evidence service: one Report stream per connected agent. Each batch is validated, its
//! signature checked against the agent's certificate, appended in one transaction, and only then
//! acked. The agent's identity comes from the TLS client certificate alone.

use std::sync::Arc;

use evident_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::model::now_unix_ms;
use crate::rpc_error::RpcError;
use crate::signature;
use crate::store::{AppendError, Appended, BatchToAppend, CertIdentity, ItemToAppend, Store};

#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    pub max_batch_items: usize,
    /// Report streams open at once; one more is answered `unavailable`.
    pub max_concurrent_streams: usize,
    /// Batches being validated and stored at once across all streams; one more is answered
    /// `unavailable` (not acked), and the agent retries with backoff.
    pub max_in_flight_batches: usize,
}

/// 20,000 open streams: ten thousand idle agents and room to spare.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: usize = 20_000;
/// SQLite has one writer: more batches in flight than this only wait in memory.
pub const DEFAULT_MAX_IN_FLIGHT_BATCHES: usize = 256;

/// Most batches committed in one transaction.
const MAX_GROUP_COMMIT: usize = 512;

/// A batch waiting for the writer, with where to send its result.
#[derive(Debug)]
struct Job {
    identity: CertIdentity,
    batch: BatchToAppend,
    received_at_ms: i64,
    reply: tokio::sync::oneshot::Sender<Result<Appended, AppendError>>,
}

/// The one thread that appends batches. It commits every batch waiting at that moment in one
/// transaction (group commit), so a thousand agents cost one durable write per round instead
/// of one each; every batch still gets its ack only after that commit.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    pub fn start(store: Arc<Store>, capacity: usize) -> std::io::Result<Writer> {
        store.checkpoint_in_background()?;
        let (jobs, mut queue) = mpsc::channel::<Job>(capacity.max(1));
        std::thread::Builder::new()
            .name("evident-writer".into())
            .spawn(move || {
                while let Some(first) = queue.blocking_recv() {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP_COMMIT {
                        match queue.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    // Arrival is stamped when the group is stored, not when the batch was read
                    // off the wire: evidence judged "arrived after" an action's event must not
                    // become visible only later.
                    let stored_at = now_unix_ms()
                        .max(group.iter().map(|j| j.received_at_ms).max().unwrap_or(0));
                    let batches: Vec<_> = group
                        .iter()
                        .map(|j| (&j.identity, &j.batch, stored_at))
                        .collect();
                    let started = std::time::Instant::now();
                    let results = store.append_batches(&batches);
                    debug!(
                        batches = group.len(),
                        ms = started.elapsed().as_secs_f64() * 1e3,
                        "group committed"
                    );
                    for (job, result) in group.into_iter().zip(results) {
                        let _ = job.reply.send(result);
                    }
                }
            })?;
        Ok(Writer { jobs })
    }

    /// Appends one batch; returns after the transaction holding it committed (or failed).
    async fn append(
        &self,
        identity: CertIdentity,
        batch: BatchToAppend,
        received_at_ms: i64,
    ) -> Result<Appended, RpcError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job {
                identity,
                batch,
                received_at_ms,
                reply,
            })
            .await
            .map_err(|_| RpcError::Internal("the evidence writer stopped".into()))?;
        Ok(answer
            .await
            .map_err(|_| RpcError::Internal("the evidence writer stopped".into()))??)
    }
}

#[derive(Debug)]
pub struct EvidenceService {
    store: Arc<Store>,
    writer: Writer,
    limits: IngestLimits,
    streams: Arc<tokio::sync::Semaphore>,
    in_flight: Arc<tokio::sync::Semaphore>,
    ca: Arc<crate::ca::CertificateAuthority>,
    agent_cert_lifetime: time::Duration,
    /// Told of every agent whose new evidence committed, so the policy judges it promptly.
    arrivals: Option<Arc<crate::evaluate::Arrivals>>,
}

/// The authenticated sender of a stream.
#[derive(Debug, Clone)]
struct Sender {
    identity: CertIdentity,
    /// The public key of the connection's certificate, which must have signed every batch.
    public_key: Vec<u8>,
}

impl EvidenceService {
    pub fn new(
        store: Arc<Store>,
        limits: IngestLimits,
        ca: Arc<crate::ca::CertificateAuthority>,
        agent_cert_lifetime: time::Duration,
    ) -> std::io::Result<Self> {
        let writer = Writer::start(store.clone(), limits.max_in_flight_batches)?;
        Ok(EvidenceService {
            writer,
            store,
            streams: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_streams)),
            in_flight: Arc::new(tokio::sync::Semaphore::new(limits.max_in_flight_batches)),
            limits,
            ca,
            agent_cert_lifetime,
            arrivals: None,
        })
    }

    /// Reports each agent whose new evidence committed to `arrivals`.
    pub fn with_arrivals(mut self, arrivals: Arc<crate::evaluate::Arrivals>) -> Self {
        self.arrivals = Some(arrivals);
        self
    }

    /// Certifies the calling agent's new key under the same agent id.
    async fn renew(
        &self,
        sender: &Sender,
        csr_der: Vec<u8>,
    ) -> Result<v1::RenewResponse, RpcError> {
        if csr_der.is_empty() {
            return Err(RpcError::InvalidBatch(
                "renewal request has no CSR: send a PKCS#10 request for the new key".into(),
            ));
        }
        let agent_id = sender.identity.agent_id.clone();
        let store = self.store.clone();
        let ca = self.ca.clone();
        let lifetime = self.agent_cert_lifetime;
        let cert = tokio::task::spawn_blocking(move || {
            let cert = ca
                .sign_agent_csr(&csr_der, &agent_id, lifetime)
                .map_err(|e| RpcError::Enroll(crate::store::EnrollError::Csr(e)))?;
            store.add_certificate(&agent_id, &cert)?;
            Ok::<_, RpcError>(cert)
        })
        .await
        .map_err(|e| RpcError::Internal(e.to_string()))??;
        Ok(v1::RenewResponse {
            certificate_der: cert.der.to_vec(),
            certificate_not_after_unix_ms: i64::try_from(
                cert.not_after.unix_timestamp_nanos() / 1_000_000,
            )
            .unwrap_or(i64::MAX),
        })
    }

    /// Finds the agent behind the verified client certificate of this connection.
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<Sender, RpcError> {
        let certs = request.peer_certs().ok_or_else(|| {
            RpcError::Unauthenticated(
                "a client certificate is required to report evidence: enrol this agent first with `evident-agent enroll`".into(),
            )
        })?;
        let leaf = certs.first().ok_or_else(|| {
            RpcError::Unauthenticated("the TLS session carries no client certificate".into())
        })?;
        let cert_der = leaf.to_vec();
        let named = signature::agent_id_of(&cert_der)?;
        let fingerprint = ring::digest::digest(&ring::digest::SHA256, &cert_der)
            .as_ref()
            .to_vec();
        let store = self.store.clone();
        let identity =
            tokio::task::spawn_blocking(move || store.certificate_identity(&fingerprint))
                .await
                .map_err(|e| RpcError::Internal(e.to_string()))??
                .ok_or_else(|| {
                    RpcError::PermissionDenied(format!(
                        "certificate for {named} was not issued by this collector's enrolment: enrol the agent again"
                    ))
                })?;
        if identity.agent_id != named {
            return Err(RpcError::PermissionDenied(format!(
                "certificate names {named} but was issued to {}",
                identity.agent_id
            )));
        }
        if identity.agent_state != "active" {
            return Err(RpcError::PermissionDenied(format!(
                "agent {} is {}: it may not report evidence",
                identity.agent_id, identity.agent_state
            )));
        }
        Ok(Sender {
            identity,
            public_key: signature::public_key_of(&cert_der)?,
        })
    }
}

/// Checks a batch's shape and content; returns what to append. Pure: no I/O.
pub fn validate_batch(batch: v1::Batch, max_items: usize) -> Result<BatchToAppend, RpcError> {
    if batch.signature.is_empty() {
        return Err(RpcError::InvalidBatch(format!(
            "batch {} has no signature: every batch must be signed with the agent's key",
            batch.batch_id
        )));
    }
    let raw_items = crate::convert::split_item_list(&batch.items)?;
    if raw_items.is_empty() {
        return Err(RpcError::InvalidBatch(format!(
            "batch {} has no items",
            batch.batch_id
        )));
    }
    if raw_items.len() > max_items {
        return Err(RpcError::InvalidBatch(format!(
            "batch {} has {} items, more than the limit of {max_items}: send smaller batches",
            batch.batch_id,
            raw_items.len()
        )));
    }
    let mut items = Vec::with_capacity(raw_items.len());
    let mut previous = 0u64;
    for (index, bytes) in raw_items.into_iter().enumerate() {
        let item = crate::convert::decode_item(index, &bytes)?;
        if item.sequence == 0 {
            return Err(RpcError::InvalidBatch(format!(
                "item {index} of batch {} has sequence 0: sequences start at 1",
                batch.batch_id
            )));
        }
        if item.sequence <= previous {
            return Err(RpcError::InvalidBatch(format!(
                "batch {} is out of order: sequence {} follows {previous}",
                batch.batch_id, item.sequence
            )));
        }
        if item.observed_at_unix_ms <= 0 {
            return Err(RpcError::InvalidBatch(format!(
                "item with sequence {} has no observation time",
                item.sequence
            )));
        }
        previous = item.sequence;
        let gap_from = match &item.outcome {
            crate::model::Outcome::Gap(gap) => Some(gap.from_sequence),
            _ => None,
        };
        items.push(ItemToAppend {
            sequence: item.sequence,
            check: item.check,
            gap_from,
            observed_at_ms: item.observed_at_unix_ms,
            bytes,
        });
    }
    Ok(BatchToAppend {
        items_bytes: batch.items,
        signature: batch.signature,
        signature_algorithm: batch.signature_algorithm,
        items,
        agent_clock_skew_ms: None,
    })
}

async fn handle_batch(
    writer: &Writer,
    sender: &Sender,
    batch: v1::Batch,
    limits: IngestLimits,
) -> Result<v1::Ack, RpcError> {
    let batch_id = batch.batch_id;
    let received_at = now_unix_ms();
    let sent_at = batch.sent_at_unix_ms;
    let mut validated = validate_batch(batch, limits.max_batch_items)?;
    validated.agent_clock_skew_ms = (sent_at > 0).then(|| sent_at.saturating_sub(received_at));
    signature::verify_with_key(
        &sender.public_key,
        validated.signature_algorithm,
        &validated.items_bytes,
        &validated.signature,
    )?;
    let appended = writer
        .append(sender.identity.clone(), validated, received_at)
        .await?;
    Ok(v1::Ack {
        batch_id,
        stored: appended.stored,
        duplicates: appended.duplicates,
    })
}

#[tonic::async_trait]
impl v1::evidence_server::Evidence for EvidenceService {
    type ReportStream = ReceiverStream<Result<v1::ReportResponse, Status>>;

    async fn renew(
        &self,
        request: Request<v1::RenewRequest>,
    ) -> Result<Response<v1::RenewResponse>, Status> {
        let sender = match self.authenticate(&request).await {
            Ok(sender) => sender,
            Err(error) => {
                warn!(%error, peer = ?request.remote_addr(), "renewal refused");
                return Err(error.into());
            }
        };
        let span = info_span!("renew", agent = %sender.identity.agent_id);
        async move {
            match self.renew(&sender, request.into_inner().csr_der).await {
                Ok(response) => {
                    info!(
                        not_after_ms = response.certificate_not_after_unix_ms,
                        "agent certificate renewed"
                    );
                    Ok(Response::new(response))
                }
                Err(error) => {
                    warn!(%error, "renewal refused");
                    Err(error.into())
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn report(
        &self,
        request: Request<Streaming<v1::ReportRequest>>,
    ) -> Result<Response<Self::ReportStream>, Status> {
        let sender = match self.authenticate(&request).await {
            Ok(sender) => sender,
            Err(error) => {
                warn!(%error, peer = ?request.remote_addr(), "report refused");
                return Err(error.into());
            }
        };
        let Ok(stream_permit) = self.streams.clone().try_acquire_owned() else {
            warn!(
                limit = self.limits.max_concurrent_streams,
                "report stream refused: too many open streams"
            );
            return Err(Status::unavailable(format!(
                "the collector is busy: {} report streams are open; retry later",
                self.limits.max_concurrent_streams
            )));
        };
        let span = info_span!("report", agent = %sender.identity.agent_id);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let writer = self.writer.clone();
        let limits = self.limits;
        let in_flight = self.in_flight.clone();
        let arrivals = self.arrivals.clone();
        tokio::spawn(
            async move {
                let _stream_permit = stream_permit;
                debug!("stream opened");
                loop {
                    let message = match inbound.message().await {
                        Ok(Some(message)) => message,
                        Ok(None) => break,
                        Err(status) => {
                            debug!(%status, "stream ended by the agent or the network");
                            break;
                        }
                    };
                    let Some(v1::report_request::Kind::Batch(batch)) = message.kind else {
                        let status = Status::invalid_argument(
                            "report message carries nothing this collector understands: upgrade the collector or the agent",
                        );
                        let _ = tx.send(Err(status)).await;
                        break;
                    };
                    let batch_id = batch.batch_id;
                    let Ok(_batch_permit) = in_flight.clone().try_acquire_owned() else {
                        warn!(batch_id, limit = limits.max_in_flight_batches, "batch refused: too many in flight");
                        let _ = tx
                            .send(Err(Status::unavailable(format!(
                                "the collector is busy: {} batches are being stored; retry later",
                                limits.max_in_flight_batches
                            ))))
                            .await;
                        break;
                    };
                    match handle_batch(&writer, &sender, batch, limits).await {
                        Ok(ack) => {
                            info!(batch_id, stored = ack.stored, duplicates = ack.duplicates, "batch stored");
                            if ack.stored > 0
                                && let Some(arrivals) = &arrivals
                            {
                                arrivals.arrived(&sender.identity.agent_id);
                            }
                            let response = v1::ReportResponse {
                                kind: Some(v1::report_response::Kind::Ack(ack)),
                            };
                            if tx.send(Ok(response)).await.is_err() {
                                break;
                            }
                        }
                        Err(error) => {
                            warn!(batch_id, %error, "batch refused");
                            let _ = tx.send(Err(error.into())).await;
                            break;
                        }
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn item(sequence: u64) -> v1::EvidenceItem {
        v1::EvidenceItem {
            sequence,
            check: v1::CheckKind::Inventory as i32,
            observed_at_unix_ms: 1_700_000_000_000,
            outcome: Some(v1::evidence_item::Outcome::Inventory(
                v1::InventoryFacts::default(),
            )),
        }
    }

    fn batch(items: Vec<v1::EvidenceItem>) -> v1::Batch {
        v1::Batch {
            batch_id: 9,
            items: v1::ItemList { items }.encode_to_vec(),
            signature: vec![1],
            signature_algorithm: v1::SignatureAlgorithm::EcdsaP256Sha256 as i32,
            sent_at_unix_ms: 1_700_000_000_000,
        }
    }

    fn refusal(batch: v1::Batch) -> String {
        match validate_batch(batch, 3) {
            Ok(_) => String::from("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_good_batch_keeps_exact_item_bytes() {
        let items = vec![item(4), item(5)];
        let expected: Vec<Vec<u8>> = items.iter().map(Message::encode_to_vec).collect();
        let validated = validate_batch(batch(items), 3).expect("valid");
        let bytes: Vec<Vec<u8>> = validated.items.into_iter().map(|i| i.bytes).collect();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn bad_batches_are_refused_with_the_reason() {
        assert!(refusal(batch(vec![])).contains("has no items"));
        assert!(
            refusal(batch(vec![item(1), item(2), item(3), item(4)]))
                .contains("more than the limit of 3")
        );
        assert!(refusal(batch(vec![item(2), item(2)])).contains("out of order"));
        assert!(refusal(batch(vec![item(0)])).contains("sequences start at 1"));
        let mut unsigned = batch(vec![item(1)]);
        unsigned.signature.clear();
        assert!(refusal(unsigned).contains("no signature"));
        let mut garbage = batch(vec![item(1)]);
        garbage.items = vec![0x0a, 0x7f, 0x00];
        assert!(refusal(garbage).contains("not a valid encoded ItemList"));
        let mut untimed = item(1);
        untimed.observed_at_unix_ms = 0;
        assert!(refusal(batch(vec![untimed])).contains("no observation time"));
    }
}

//! Delivery: opens the Report stream over mutual TLS and sends the spool oldest first, one
//! signed batch at a time; a spool file is removed only after the collector acked it, which it
//! does only after its transaction committed.

use std::time::Duration;

use anyhow::{Context, bail};
use evident_proto::v1;
use rcgen::{KeyPair, SigningKey};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, error, info};

use crate::spool::{Spool, SpooledBatch};
use crate::state::Credentials;
use crate::tls;

/// How long to wait for the ack of one batch before giving up on the connection.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub batches: u64,
    pub stored: u64,
    pub duplicates: u64,
}

/// Signs the bytes of an encoded `ItemList` with the agent's key.
pub fn sign_batch(key: &KeyPair, items: &[u8]) -> anyhow::Result<Vec<u8>> {
    key.sign(&evident_proto::batch_signing_input(items))
        .context("sign batch")
}

/// The error for a refused batch. A refusal that no resend can cure (the batch is malformed,
/// its signature fails, its sequences conflict) quarantines the batch and queues a gap record
/// in its place, so that delivery goes on; anything else (unavailable, revoked) leaves it in
/// the spool for the next attempt.
fn refused(spool: &Spool, batch: &SpooledBatch, status: &tonic::Status) -> anyhow::Error {
    let permanent = matches!(
        status.code(),
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
    );
    let message = if permanent || status.code() == tonic::Code::PermissionDenied {
        format!(
            "the collector refused batch {}-{}: {}",
            batch.first_sequence,
            batch.last_sequence,
            status.message()
        )
    } else {
        // A cut or stalled link, or a busy collector: nothing was refused for good.
        format!(
            "delivering batch {}-{} failed ({:?}): {}",
            batch.first_sequence,
            batch.last_sequence,
            status.code(),
            status.message()
        )
    };
    if !permanent {
        return anyhow::anyhow!(message);
    }
    match spool.quarantine(
        batch,
        &format!("refused by the collector: {}", status.message()),
        crate::checks::now_unix_ms(),
    ) {
        Ok(gap) => {
            error!(
                first = gap.from_sequence,
                last = gap.to_sequence,
                reason = %gap.reason,
                "batch refused for good and quarantined; a gap record takes its place"
            );
            anyhow::anyhow!("{message}; quarantined, a gap record is sent next")
        }
        Err(error) => anyhow::anyhow!("{message}; quarantining it failed too: {error:#}"),
    }
}

/// Sends everything in the spool; returns when it is empty or on the first failure.
pub async fn deliver(credentials: &Credentials, spool: &Spool) -> anyhow::Result<Delivered> {
    let pending = spool.pending()?;
    if pending.is_empty() {
        return Ok(Delivered::default());
    }
    let key = KeyPair::from_pem(&credentials.key_pem).context("load agent.key")?;
    let tls_config = tls::mutual_config(
        credentials.ca.clone(),
        credentials.cert.clone(),
        credentials.key_der()?,
    )?;
    let channel = tls::connect(&credentials.collector, tls_config).await?;
    let mut client = v1::evidence_client::EvidenceClient::new(channel);
    let (tx, rx) = mpsc::channel(1);
    let mut acks = client
        .report(ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow::anyhow!("the collector refused the report stream: {}", s.message()))?
        .into_inner();

    let mut delivered = Delivered::default();
    // The spool is read again after every batch: a quarantined batch leaves a gap record in
    // its place, which goes next.
    while let Some(batch) = spool.pending()?.into_iter().next() {
        let items = spool.read(&batch)?;
        if crate::convert::spooled_contents(&items).is_none() {
            let gap = spool.quarantine(
                &batch,
                "spool file corrupt (not an ItemList)",
                crate::checks::now_unix_ms(),
            )?;
            error!(
                first = batch.first_sequence,
                last = batch.last_sequence,
                items = gap.items_dropped,
                reason = %gap.reason,
                "corrupt spool file quarantined; a gap record takes its place"
            );
            continue;
        }
        let signature = sign_batch(&key, &items)?;
        let request = v1::ReportRequest {
            kind: Some(v1::report_request::Kind::Batch(v1::Batch {
                batch_id: batch.first_sequence,
                items,
                signature,
                signature_algorithm: v1::SignatureAlgorithm::EcdsaP256Sha256 as i32,
                sent_at_unix_ms: crate::checks::now_unix_ms(),
            })),
        };
        tx.send(request)
            .await
            .context("the report stream closed before the batch could be sent")?;
        let response = tokio::time::timeout(ACK_TIMEOUT, acks.message())
            .await
            .with_context(|| format!("no ack within {}s", ACK_TIMEOUT.as_secs()))?
            .map_err(|status| refused(spool, &batch, &status))?;
        let Some(v1::ReportResponse {
            kind: Some(v1::report_response::Kind::Ack(ack)),
        }) = response
        else {
            bail!("the collector closed the report stream without acking");
        };
        if ack.batch_id != batch.first_sequence {
            bail!(
                "the collector acked batch {} while {} was outstanding",
                ack.batch_id,
                batch.first_sequence
            );
        }
        spool.remove(&batch)?;
        debug!(
            first = batch.first_sequence,
            last = batch.last_sequence,
            stored = ack.stored,
            duplicates = ack.duplicates,
            "batch acked"
        );
        delivered.batches += 1;
        delivered.stored += ack.stored;
        delivered.duplicates += ack.duplicates;
    }
    info!(
        batches = delivered.batches,
        stored = delivered.stored,
        duplicates = delivered.duplicates,
        "evidence delivered"
    );
    Ok(delivered)
}

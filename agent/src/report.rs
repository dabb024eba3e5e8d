//! Delivery: opens the Report stream over mutual TLS and sends the spool oldest first, one
//! signed batch at a time; a spool file is removed only after the collector acked it, which it
//! does only after its transaction committed.

use std::time::Duration;

use anyhow::{Context, bail};
use evident_proto::v1;
use rcgen::{KeyPair, SigningKey};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info};

use crate::spool::Spool;
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
    for batch in pending {
        let items = spool.read(&batch)?;
        let signature = sign_batch(&key, &items)?;
        let request = v1::ReportRequest {
            kind: Some(v1::report_request::Kind::Batch(v1::Batch {
                batch_id: batch.first_sequence,
                items,
                signature,
                signature_algorithm: v1::SignatureAlgorithm::EcdsaP256Sha256 as i32,
            })),
        };
        tx.send(request)
            .await
            .context("the report stream closed before the batch could be sent")?;
        let response = tokio::time::timeout(ACK_TIMEOUT, acks.message())
            .await
            .with_context(|| format!("no ack within {}s", ACK_TIMEOUT.as_secs()))?
            .map_err(|s| {
                anyhow::anyhow!(
                    "the collector refused batch {}-{}: {}",
                    batch.first_sequence,
                    batch.last_sequence,
                    s.message()
                )
            })?;
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

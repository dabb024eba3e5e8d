//! Certificate renewal: at half its certificate's lifetime (or when an operator runs
//! `evident-agent renew`), the agent generates a new key, has the collector certify it over
//! mutual TLS with its current certificate, and installs the pair. A collector outage shorter
//! than half the lifetime therefore never strands an agent, and keys rotate as a matter of
//! course. The private key never leaves the agent.

use anyhow::Context;
use evident_proto::v1;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use tracing::info;

use crate::state::{Credentials, StateDir};
use crate::tls;

/// A certificate's validity, in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before_ms: i64,
    pub not_after_ms: i64,
}

impl Validity {
    /// Reads the validity of a DER certificate.
    pub fn of(cert_der: &[u8]) -> anyhow::Result<Validity> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| anyhow::anyhow!("the agent certificate cannot be parsed: {e}"))?;
        let validity = cert.validity();
        Ok(Validity {
            not_before_ms: validity.not_before.timestamp().saturating_mul(1000),
            not_after_ms: validity.not_after.timestamp().saturating_mul(1000),
        })
    }

    /// Whether half the lifetime has passed at `now_ms`.
    pub fn renewal_due(self, now_ms: i64) -> bool {
        let half = (self.not_after_ms - self.not_before_ms) / 2;
        now_ms >= self.not_before_ms.saturating_add(half)
    }
}

/// Renews now: a new key, certified by the collector, installed in `state`. Returns the new
/// credentials.
pub async fn renew(state: &StateDir, credentials: &Credentials) -> anyhow::Result<Credentials> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generate a new key")?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .context("make certificate signing request")?;
    let tls_config = tls::mutual_config(
        credentials.ca.clone(),
        credentials.cert.clone(),
        credentials.key_der()?,
    )?;
    let channel = tls::connect(&credentials.collector, tls_config).await?;
    let response = v1::evidence_client::EvidenceClient::new(channel)
        .renew(v1::RenewRequest {
            csr_der: csr.der().to_vec(),
        })
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "the collector refused to renew the certificate: {}",
                s.message()
            )
        })?
        .into_inner();
    let validity = Validity::of(&response.certificate_der)?;
    let cert_pem = pem::encode(&pem::Pem::new("CERTIFICATE", response.certificate_der));
    state.install_renewed(&key.serialize_pem(), &cert_pem)?;
    info!(
        agent = %credentials.enrollment.agent_id,
        not_after_ms = validity.not_after_ms,
        "certificate renewed with a new key"
    );
    state.credentials()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_half_life() {
        let v = Validity {
            not_before_ms: 1_000,
            not_after_ms: 101_000,
        };
        assert!(!v.renewal_due(50_999));
        assert!(v.renewal_due(51_000));
        assert!(v.renewal_due(200_000));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(Validity::of(b"nope").is_err());
    }
}

//! `evident-agent enroll`: generate a key here, have the collector sign it, keep the result.

use anyhow::{Context, bail};
use evident_proto::v1;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use tracing::info;

use crate::state::{Enrollment, StateDir, write_atomic};
use crate::tls::{self, CollectorUrl};

/// Why the collector said no: a caller that retries tells a refused token (replace it) from
/// anything else (wait and try again).
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The collector judged the token: unknown, expired or used up.
    #[error("the collector refused the enrolment token: {0}")]
    TokenRefused(String),
    /// Any other answer (a malformed request, busy, storage full, an internal error).
    #[error("the collector refused enrolment: {0}")]
    Refused(String),
}

#[derive(Clone)]
pub struct EnrollArgs {
    pub collector: CollectorUrl,
    pub token: String,
    pub ca_fingerprint: [u8; 32],
    pub state: StateDir,
}

/// Shows everything but the token.
impl std::fmt::Debug for EnrollArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollArgs")
            .field("collector", &self.collector)
            .field("token", &"<redacted>")
            .field("ca_fingerprint", &hex::encode(self.ca_fingerprint))
            .field("state", &self.state)
            .finish()
    }
}

/// Enrols this agent and writes its key, certificate and the pinned CA into the state directory.
pub async fn enroll(args: EnrollArgs, host_facts: v1::HostFacts) -> anyhow::Result<Enrollment> {
    if args.state.is_enrolled() {
        bail!(
            "{} already holds an enrolment: remove it, or pass another --state-dir, to enrol again",
            args.state.root().display()
        );
    }
    args.state.create()?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generate agent key")?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .context("make certificate signing request")?;

    let (tls_config, mismatch) = tls::enrollment_config(args.ca_fingerprint)?;
    let channel = match tls::connect(&args.collector, tls_config).await {
        Ok(channel) => channel,
        Err(error) => {
            let seen = mismatch.lock().ok().and_then(|slot| slot.clone());
            if let Some(actual) = seen {
                bail!(
                    "the collector at {} has CA fingerprint {actual}, not the {} given with --ca-fingerprint: \
                     check the value printed by `evident-collector ca fingerprint` on the collector; \
                     a different value may mean you are talking to the wrong server",
                    args.collector,
                    hex::encode(args.ca_fingerprint)
                );
            }
            return Err(error);
        }
    };
    let mut client = v1::enrollment_client::EnrollmentClient::new(channel);
    let response = client
        .enroll(v1::EnrollRequest {
            token: args.token.trim().to_owned(),
            csr_der: csr.der().to_vec(),
            host: Some(host_facts),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .await
        .map_err(|status| match status.code() {
            tonic::Code::PermissionDenied => EnrollError::TokenRefused(status.message().to_owned()),
            _ => EnrollError::Refused(status.message().to_owned()),
        })?
        .into_inner();

    let ca_der = response
        .ca_chain_der
        .last()
        .context("the collector sent no CA certificate")?;
    if tls::sha256(ca_der) != args.ca_fingerprint {
        bail!("the collector answered with a CA that does not match the pinned fingerprint");
    }
    let enrollment = Enrollment {
        agent_id: response.agent_id.clone(),
        collector: args.collector.to_string(),
        enrolled_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    write_atomic(&args.state.key_file(), key.serialize_pem().as_bytes(), true)?;
    write_atomic(
        &args.state.cert_file(),
        pem("CERTIFICATE", &response.certificate_der).as_bytes(),
        false,
    )?;
    write_atomic(
        &args.state.ca_file(),
        pem("CERTIFICATE", ca_der).as_bytes(),
        false,
    )?;
    write_atomic(
        &args.state.enrollment_file(),
        toml::to_string(&enrollment)
            .context("encode enrollment.toml")?
            .as_bytes(),
        false,
    )?;
    info!(agent = %enrollment.agent_id, collector = %args.collector, "enrolled");
    Ok(enrollment)
}

fn pem(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der))
}

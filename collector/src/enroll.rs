//! The Enrollment service: redeems a token, signs the agent's CSR, records the agent.

use std::sync::Arc;

use evident_proto::v1;
use ring::rand::SecureRandom;
use tonic::{Request, Response, Status};
use tracing::{Instrument, info, info_span, warn};

use crate::ca::CertificateAuthority;
use crate::model::now_unix_ms;
use crate::rpc_error::RpcError;
use crate::store::Store;
use crate::token::Token;

#[derive(Debug)]
pub struct EnrollmentService {
    store: Arc<Store>,
    ca: Arc<CertificateAuthority>,
    agent_cert_lifetime: time::Duration,
}

impl EnrollmentService {
    pub fn new(
        store: Arc<Store>,
        ca: Arc<CertificateAuthority>,
        agent_cert_lifetime: time::Duration,
    ) -> Self {
        EnrollmentService {
            store,
            ca,
            agent_cert_lifetime,
        }
    }

    async fn enroll(&self, req: v1::EnrollRequest) -> Result<v1::EnrollResponse, RpcError> {
        let token = Token::parse(&req.token)?;
        if req.csr_der.is_empty() {
            return Err(RpcError::InvalidBatch(
                "enrolment request has no CSR: the agent must send a PKCS#10 request for its key"
                    .into(),
            ));
        }
        let host = crate::convert::host_facts(req.host, req.agent_version);
        let agent_id = new_agent_id()?;
        let store = self.store.clone();
        let ca = self.ca.clone();
        let lifetime = self.agent_cert_lifetime;
        let csr = req.csr_der;
        let enrolled = tokio::task::spawn_blocking(move || {
            store.enroll(&token.hash(), now_unix_ms(), &host, &agent_id, |id| {
                ca.sign_agent_csr(&csr, id, lifetime)
            })
        })
        .await
        .map_err(|e| RpcError::Internal(e.to_string()))??;
        Ok(v1::EnrollResponse {
            agent_id: enrolled.agent_id,
            certificate_der: enrolled.cert.der.to_vec(),
            ca_chain_der: vec![self.ca.cert_der().to_vec()],
            certificate_not_after_unix_ms: (enrolled.cert.not_after.unix_timestamp_nanos()
                / 1_000_000) as i64,
        })
    }
}

#[tonic::async_trait]
impl v1::enrollment_server::Enrollment for EnrollmentService {
    async fn enroll(
        &self,
        request: Request<v1::EnrollRequest>,
    ) -> Result<Response<v1::EnrollResponse>, Status> {
        let peer = request.remote_addr();
        let span = info_span!("enroll", peer = ?peer);
        async move {
            match self.enroll(request.into_inner()).await {
                Ok(response) => {
                    info!(agent = %response.agent_id, "agent enrolled");
                    Ok(Response::new(response))
                }
                Err(error) => {
                    warn!(%error, "enrolment refused");
                    Err(error.into())
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// `agt-` and 20 random hex digits: unique without coordination, short enough to read out.
fn new_agent_id() -> Result<String, RpcError> {
    let mut bytes = [0u8; 10];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RpcError::Internal("system random number generator failed".into()))?;
    Ok(format!("agt-{}", hex::encode(bytes)))
}

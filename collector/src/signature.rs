//! Agent certificates: who they name, and checking the batch signatures made with their keys.

use evident_proto::v1::SignatureAlgorithm;
use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("certificate cannot be parsed: {0}")]
    Certificate(String),
    #[error("certificate names no agent (its subject has no common name)")]
    NoAgentId,
    #[error("batch signature algorithm {0} is not supported: sign with ECDSA P-256 / SHA-256")]
    UnsupportedAlgorithm(i32),
    #[error("batch signature does not match its items and the agent's certificate")]
    Mismatch,
}

/// The agent id a certificate names (its subject common name).
pub fn agent_id_of(cert_der: &[u8]) -> Result<String, SignatureError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| SignatureError::Certificate(e.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or(SignatureError::NoAgentId)?;
    Ok(cn.to_owned())
}

/// The raw public key (an uncompressed P-256 point) of a certificate, for `verify_with_key`.
pub fn public_key_of(cert_der: &[u8]) -> Result<Vec<u8>, SignatureError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| SignatureError::Certificate(e.to_string()))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// Checks that `signature` was made over `items` by the key of `cert_der`.
pub fn verify_batch(
    cert_der: &[u8],
    algorithm: i32,
    items: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    verify_with_key(&public_key_of(cert_der)?, algorithm, items, signature)
}

/// Checks a batch signature against a public key already taken from the certificate (once per
/// stream on the ingest path, instead of parsing the certificate for every batch).
pub fn verify_with_key(
    public_key: &[u8],
    algorithm: i32,
    items: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    if algorithm != SignatureAlgorithm::EcdsaP256Sha256 as i32 {
        return Err(SignatureError::UnsupportedAlgorithm(algorithm));
    }
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        public_key,
    );
    key.verify(&evident_proto::batch_signing_input(items), signature)
        .map_err(|_| SignatureError::Mismatch)
}

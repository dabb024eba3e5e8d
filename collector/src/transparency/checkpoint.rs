//! A checkpoint: the collector's signed statement "the first `tree_size` evidence rows have
//! this Merkle root", and its self-contained JSON form that an auditor keeps.
//!
//! Signed bytes: "evident.v1.checkpoint" 0x00 || u64be(tree_size) || root_hash (32)
//!               || i64be(signed_at_ms) || ca_fingerprint (32, SHA-256 of the CA certificate)
//! Signature: ECDSA P-256/SHA-256 (DER) with the collector's CA key, so the CA certificate is all
//! an auditor needs to check it.

use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::merkle::Hash;

const CONTEXT: &[u8] = b"evident.v1.checkpoint\0";
pub const FORMAT: &str = "evident.checkpoint.v1";
pub const SIGNATURE_ALGORITHM: &str = "ecdsa-p256-sha256";

/// What a checkpoint says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub tree_size: u64,
    pub root_hash: Hash,
    pub signed_at_ms: i64,
    pub ca_fingerprint: Hash,
}

impl Checkpoint {
    pub fn signing_input(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CONTEXT.len() + 8 + 32 + 8 + 32);
        out.extend_from_slice(CONTEXT);
        out.extend_from_slice(&self.tree_size.to_be_bytes());
        out.extend_from_slice(&self.root_hash);
        out.extend_from_slice(&self.signed_at_ms.to_be_bytes());
        out.extend_from_slice(&self.ca_fingerprint);
        out
    }
}

/// A checkpoint with its signature and the collector's number for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The collector's number for it (1, 2, …); not signed, for people to refer to.
    pub id: i64,
    pub checkpoint: Checkpoint,
    pub signature: Vec<u8>,
}

/// The JSON form of a signed checkpoint: every field the signature covers, hex encoded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointJson {
    pub format: String,
    pub id: i64,
    pub tree_size: u64,
    pub root_hash: String,
    pub signed_at_ms: i64,
    /// `signed_at_ms` for people (not signed separately).
    pub signed_at: String,
    pub ca_fingerprint: String,
    pub signature_algorithm: String,
    pub signature: String,
}

/// Why a checkpoint is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a checkpoint: {0}")]
    Malformed(String),
    #[error(
        "the checkpoint names collector CA {named}, but the CA certificate given has fingerprint {given}: verify with the CA of the collector that signed it"
    )]
    OtherCa { named: String, given: String },
    #[error("the CA certificate cannot be read: {0}")]
    BadCa(String),
    #[error(
        "the checkpoint's signature does not verify with the CA key: it was altered or not signed by this collector"
    )]
    BadSignature,
}

impl SignedCheckpoint {
    pub fn to_json(&self) -> CheckpointJson {
        let c = &self.checkpoint;
        CheckpointJson {
            format: FORMAT.to_owned(),
            id: self.id,
            tree_size: c.tree_size,
            root_hash: hex::encode(c.root_hash),
            signed_at_ms: c.signed_at_ms,
            signed_at: crate::model::format_unix_ms(c.signed_at_ms),
            ca_fingerprint: hex::encode(c.ca_fingerprint),
            signature_algorithm: SIGNATURE_ALGORITHM.to_owned(),
            signature: hex::encode(&self.signature),
        }
    }

    /// Reads the JSON form (the signature is not checked here: see `verify`).
    pub fn from_json(json: &CheckpointJson) -> Result<SignedCheckpoint, CheckpointError> {
        if json.format != FORMAT {
            return Err(CheckpointError::Malformed(format!(
                "format is {:?}, expected {FORMAT:?}",
                json.format
            )));
        }
        if json.signature_algorithm != SIGNATURE_ALGORITHM {
            return Err(CheckpointError::Malformed(format!(
                "signature_algorithm is {:?}, expected {SIGNATURE_ALGORITHM:?}",
                json.signature_algorithm
            )));
        }
        Ok(SignedCheckpoint {
            id: json.id,
            checkpoint: Checkpoint {
                tree_size: json.tree_size,
                root_hash: hash_from_hex("root_hash", &json.root_hash)
                    .map_err(CheckpointError::Malformed)?,
                signed_at_ms: json.signed_at_ms,
                ca_fingerprint: hash_from_hex("ca_fingerprint", &json.ca_fingerprint)
                    .map_err(CheckpointError::Malformed)?,
            },
            signature: hex::decode(&json.signature)
                .map_err(|e| CheckpointError::Malformed(format!("signature: {e}")))?,
        })
    }

    /// Checks that the collector whose CA certificate is `ca_der` signed this checkpoint.
    pub fn verify(&self, ca_der: &[u8]) -> Result<(), CheckpointError> {
        let given = ring::digest::digest(&ring::digest::SHA256, ca_der);
        if given.as_ref() != self.checkpoint.ca_fingerprint {
            return Err(CheckpointError::OtherCa {
                named: hex::encode(self.checkpoint.ca_fingerprint),
                given: hex::encode(given),
            });
        }
        verify_ca_signature(ca_der, &self.checkpoint.signing_input(), &self.signature)
    }
}

/// Parses a 64-digit hex hash, naming the field when it is not one.
pub fn hash_from_hex(field: &str, text: &str) -> Result<Hash, String> {
    let bytes = hex::decode(text).map_err(|e| format!("{field} is not hex: {e}"))?;
    <Hash>::try_from(bytes.as_slice())
        .map_err(|_| format!("{field} has {} bytes, a SHA-256 hash has 32", bytes.len()))
}

/// Checks an ECDSA P-256/SHA-256 signature made with the key of the CA certificate `ca_der`.
pub fn verify_ca_signature(
    ca_der: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), CheckpointError> {
    let (_, cert) =
        X509Certificate::from_der(ca_der).map_err(|e| CheckpointError::BadCa(e.to_string()))?;
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        cert.public_key().subject_public_key.data.as_ref(),
    );
    key.verify(message, signature)
        .map_err(|_| CheckpointError::BadSignature)
}

/// Reads a PEM CA certificate file (the collector's `tls/ca.pem`) into DER.
pub fn read_ca_pem(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem =
        std::fs::read(path).with_context(|| format!("read CA certificate {}", path.display()))?;
    let der = CertificateDer::from_pem_slice(&pem).with_context(|| {
        format!(
            "{} is not a PEM certificate: give the collector's CA certificate (DATA_DIR/tls/ca.pem)",
            path.display()
        )
    })?;
    Ok(der.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{CaPaths, CertificateAuthority};

    fn signed(ca: &CertificateAuthority) -> SignedCheckpoint {
        let fingerprint = ring::digest::digest(&ring::digest::SHA256, ca.cert_der());
        let checkpoint = Checkpoint {
            tree_size: 7,
            root_hash: [3; 32],
            signed_at_ms: 1_790_000_000_000,
            ca_fingerprint: <Hash>::try_from(fingerprint.as_ref()).expect("32 bytes"),
        };
        let signature = ca.sign(&checkpoint.signing_input()).expect("sign");
        SignedCheckpoint {
            id: 1,
            checkpoint,
            signature,
        }
    }

    #[test]
    fn a_checkpoint_verifies_with_its_ca_only_and_survives_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CertificateAuthority::load_or_create(&CaPaths::new(dir.path())).expect("ca");
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other =
            CertificateAuthority::load_or_create(&CaPaths::new(other_dir.path())).expect("ca");
        let checkpoint = signed(&ca);
        checkpoint.verify(ca.cert_der()).expect("verifies");
        let text = serde_json::to_string(&checkpoint.to_json()).expect("json");
        let back: CheckpointJson = serde_json::from_str(&text).expect("parse");
        let back = SignedCheckpoint::from_json(&back).expect("read");
        assert_eq!(back, checkpoint);
        back.verify(ca.cert_der()).expect("still verifies");
        assert!(matches!(
            checkpoint.verify(other.cert_der()),
            Err(CheckpointError::OtherCa { .. })
        ));
        // Every signed field counts.
        for change in [
            |c: &mut Checkpoint| c.tree_size += 1,
            |c: &mut Checkpoint| c.root_hash[0] ^= 1,
            |c: &mut Checkpoint| c.signed_at_ms += 1,
        ] {
            let mut forged = checkpoint.clone();
            change(&mut forged.checkpoint);
            assert_eq!(
                forged.verify(ca.cert_der()),
                Err(CheckpointError::BadSignature)
            );
        }
        // A checkpoint signed by another CA that claims ours is refused by the signature.
        let mut claimed = signed(&other);
        claimed.checkpoint.ca_fingerprint = checkpoint.checkpoint.ca_fingerprint;
        assert_eq!(
            claimed.verify(ca.cert_der()),
            Err(CheckpointError::BadSignature)
        );
    }
}

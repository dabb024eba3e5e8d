//! The collector's own certificate authority: it signs the server certificate and every agent's
//! certificate, and its fingerprint is what an agent pins when it enrols.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// How long the collector's CA is valid.
const CA_LIFETIME: Duration = Duration::days(3650);
/// How long a server certificate is valid; it is re-issued at every start.
const SERVER_CERT_LIFETIME: Duration = Duration::days(397);
/// Tolerated clock skew: certificates are valid from this long before they were issued.
const BACKDATE: Duration = Duration::minutes(10);

/// Files of the CA and the server identity inside the data directory.
#[derive(Debug, Clone)]
pub struct CaPaths {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl CaPaths {
    pub fn new(data_dir: &Path) -> Self {
        let tls = data_dir.join("tls");
        CaPaths {
            ca_cert: tls.join("ca.pem"),
            ca_key: tls.join("ca.key"),
            server_cert: tls.join("server.pem"),
            server_key: tls.join("server.key"),
        }
    }
}

/// The loaded CA: its certificate and the key that signs with it.
pub struct CertificateAuthority {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// A certificate the CA issued to an agent.
#[derive(Debug, Clone)]
pub struct IssuedAgentCert {
    pub der: CertificateDer<'static>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// The server's TLS identity: its certificate chain (leaf, CA) and private key.
#[derive(Debug)]
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivatePkcs8KeyDer<'static>,
}

/// Why a CSR was refused; the message is shown to the enrolling agent.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("csr is not a valid PKCS#10 request with a correct self-signature: {0}")]
    Invalid(rcgen::Error),
    #[error("csr key algorithm is not supported: only ECDSA P-256 keys are accepted")]
    UnsupportedAlgorithm,
    #[error("signing the certificate failed: {0}")]
    Signing(rcgen::Error),
}

impl CertificateAuthority {
    /// Loads the CA from the data directory, creating it on first use.
    pub fn load_or_create(paths: &CaPaths) -> anyhow::Result<Self> {
        if paths.ca_cert.exists() || paths.ca_key.exists() {
            return Self::load(paths);
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generate CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name("Evident collector CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_LIFETIME;
        params.serial_number = Some(random_serial()?);
        let cert = params
            .self_signed(&key)
            .context("self-sign CA certificate")?;
        let dir = paths.ca_cert.parent().context("CA path has no parent")?;
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        write_private(&paths.ca_key, key.serialize_pem().as_bytes())?;
        write_public(&paths.ca_cert, cert.pem().as_bytes())?;
        Self::load(paths)
    }

    /// Loads an existing CA; fails with a hint when the data directory has none.
    pub fn load(paths: &CaPaths) -> anyhow::Result<Self> {
        if !paths.ca_cert.exists() {
            bail!(
                "no collector CA at {}: start the collector once with `evident-collector serve --data-dir DIR` to create it",
                paths.ca_cert.display()
            );
        }
        let cert_pem = std::fs::read_to_string(&paths.ca_cert)
            .with_context(|| format!("read {}", paths.ca_cert.display()))?;
        let key_pem = std::fs::read_to_string(&paths.ca_key)
            .with_context(|| format!("read {}", paths.ca_key.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("parse CA key {}", paths.ca_key.display()))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .with_context(|| format!("parse CA certificate {}", paths.ca_cert.display()))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .with_context(|| format!("load CA certificate {}", paths.ca_cert.display()))?;
        Ok(CertificateAuthority {
            cert_der,
            cert_pem,
            issuer,
        })
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs `message` with the CA key (ECDSA P-256/SHA-256, DER). Callers start the message
    /// with a context string of their own (e.g. "evident.v1.checkpoint\0"), so that nothing
    /// signed here can pass for a certificate (DER starts with 0x30) or another statement.
    pub fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        use rcgen::SigningKey;
        self.issuer
            .key()
            .sign(message)
            .context("sign with the CA key")
    }

    /// SHA-256 of the CA certificate (DER), lowercase hex: what agents pin at enrolment.
    pub fn fingerprint(&self) -> String {
        fingerprint_hex(&self.cert_der)
    }

    /// Issues a fresh server certificate for the given names (DNS names or IP addresses) and
    /// writes it with its key into the data directory.
    pub fn issue_server_identity(
        &self,
        paths: &CaPaths,
        names: &[String],
    ) -> anyhow::Result<ServerIdentity> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generate server key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name("evident-collector");
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(name.clone().try_into().with_context(
                    || format!("server name {name:?} is not a valid DNS name"),
                )?)),
            })
            .collect::<anyhow::Result<_>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + SERVER_CERT_LIFETIME;
        params.serial_number = Some(random_serial()?);
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("sign server certificate")?;
        write_private(&paths.server_key, key.serialize_pem().as_bytes())?;
        write_public(
            &paths.server_cert,
            format!("{}{}", cert.pem(), self.cert_pem).as_bytes(),
        )?;
        Ok(ServerIdentity {
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// Signs an agent's CSR. Only the CSR's public key is used: the subject is the agent id,
    /// whatever the CSR asked for, and the certificate is for client authentication only.
    pub fn sign_agent_csr(
        &self,
        csr_der: &[u8],
        agent_id: &str,
        lifetime: Duration,
    ) -> Result<IssuedAgentCert, CsrError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(CsrError::Invalid)?;
        if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CsrError::UnsupportedAlgorithm);
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(agent_id);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + lifetime;
        params.serial_number =
            Some(random_serial().map_err(|_| CsrError::Signing(rcgen::Error::RingUnspecified))?);
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        let cert = signed.signed_by(&self.issuer).map_err(CsrError::Signing)?;
        Ok(IssuedAgentCert {
            der: cert.der().clone(),
            not_before: now - BACKDATE,
            not_after: now + lifetime,
        })
    }
}

/// SHA-256 of DER bytes as lowercase hex.
pub fn fingerprint_hex(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Evident");
    name.push(DnType::CommonName, common_name);
    name
}

fn random_serial() -> anyhow::Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("system random number generator failed"))?;
    bytes[0] &= 0x7f; // a positive ASN.1 integer
    Ok(SerialNumber::from_slice(&bytes))
}

/// Writes a file readable only by its owner (private keys).
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("set mode 0600 on {}", path.display()))?;
    }
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", path.display()))
}

fn write_public(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

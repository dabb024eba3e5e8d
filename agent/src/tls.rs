//! TLS for the agent's two kinds of connection to the collector:
//! - enrolment, before the agent has a certificate: the server must chain to a CA whose SHA-256
//!   fingerprint the operator pinned on the command line;
//! - reporting: the server must chain to the CA saved at enrolment, and the agent presents its
//!   own certificate.
//!
//! Both use the same connector under tonic, so the TLS setup lives only here.

use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// A collector address as given to `enroll --collector`: `https://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorUrl {
    pub host: String,
    pub port: u16,
}

impl CollectorUrl {
    pub fn parse(text: &str) -> anyhow::Result<CollectorUrl> {
        let uri: Uri = text.trim().parse().with_context(|| {
            format!("collector address {text:?} is not a URL: write it as https://HOST:PORT")
        })?;
        if uri.scheme_str() != Some("https") {
            bail!("collector address {text:?} must start with https://");
        }
        let host = uri
            .host()
            .with_context(|| format!("collector address {text:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().with_context(|| {
            format!("collector address {text:?} has no port: write it as https://HOST:PORT")
        })?;
        if uri.path() != "/" && !uri.path().is_empty() {
            bail!("collector address {text:?} must not have a path");
        }
        Ok(CollectorUrl { host, port })
    }
}

impl std::fmt::Display for CollectorUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "https://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "https://{}:{}", self.host, self.port)
        }
    }
}

/// A CA fingerprint as an operator types it: 64 hex digits, optionally with colons, spaces or a
/// `sha256:` prefix.
pub fn parse_fingerprint(text: &str) -> anyhow::Result<[u8; 32]> {
    let cleaned: String = text
        .trim()
        .trim_start_matches("sha256:")
        .trim_start_matches("SHA256:")
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .collect();
    let bytes = hex::decode(&cleaned).ok().filter(|b| b.len() == 32).with_context(|| {
        format!(
            "CA fingerprint {text:?} is not a SHA-256 fingerprint: pass the 64 hex digits printed by `evident-collector ca fingerprint`"
        )
    })?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&bytes);
    Ok(out)
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the pinning verifier saw when the fingerprint did not match.
pub type PinMismatch = Arc<Mutex<Option<String>>>;

/// Accepts a server whose chain contains the pinned CA and whose leaf that CA signed for the name.
#[derive(Debug)]
struct PinnedCaVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
    mismatch: PinMismatch,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| sha256(c) == self.pin) else {
            let presented = intermediates.last().map_or_else(
                || hex::encode(sha256(end_entity)),
                |c| hex::encode(sha256(c)),
            );
            if let Ok(mut slot) = self.mismatch.lock() {
                *slot = Some(presented);
            }
            return Err(rustls::Error::General(
                "the collector's CA does not match the pinned fingerprint".into(),
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Client TLS for enrolment: trusts only a server chaining to the pinned CA; no client cert.
pub fn enrollment_config(pin: [u8; 32]) -> anyhow::Result<(ClientConfig, PinMismatch)> {
    let provider = provider();
    let mismatch = PinMismatch::default();
    let verifier = PinnedCaVerifier {
        pin,
        provider: provider.clone(),
        mismatch: mismatch.clone(),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((config, mismatch))
}

/// Client TLS for reporting: trusts the CA saved at enrolment and presents the agent's cert.
pub fn mutual_config(
    ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).context("load the collector CA")?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert, ca], key)
        .context("load the agent certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Opens a gRPC channel to the collector over our own TLS connector.
pub async fn connect(url: &CollectorUrl, tls: ClientConfig) -> anyhow::Result<Channel> {
    let server_name = ServerName::try_from(url.host.clone())
        .with_context(|| format!("{:?} is not a valid server name", url.host))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let address = (url.host.clone(), url.port);
    // The scheme only tells tonic to speak plain HTTP/2 to what the connector returns: the
    // connector has already done TLS.
    let endpoint = Endpoint::from_shared(format!("http://{}:{}", bracket(&url.host), url.port))
        .context("build endpoint")?
        .connect_timeout(std::time::Duration::from_secs(10))
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_timeout(std::time::Duration::from_secs(10));
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let address = address.clone();
            async move {
                let tcp = TcpStream::connect(address).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| anyhow::anyhow!("{}", error_chain(&e)))
        .with_context(|| format!("connect to collector {url}"))
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// An error and its sources on one line; tonic's transport errors hide the cause otherwise.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_urls() {
        assert_eq!(
            CollectorUrl::parse("https://127.0.0.1:7443").expect("v4"),
            CollectorUrl {
                host: "127.0.0.1".into(),
                port: 7443
            }
        );
        let v6 = CollectorUrl::parse("https://[::1]:9/").expect("v6");
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "https://[::1]:9");
        for bad in ["http://h:1", "https://h", "h:1", "https://h:1/x", ""] {
            assert!(CollectorUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprints_in_common_spellings() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&hex).expect("hex"), [0xab; 32]);
        assert_eq!(parse_fingerprint(&colons).expect("colons"), [0xab; 32]);
        assert_eq!(
            parse_fingerprint(&format!("sha256:{hex}\n")).expect("prefix"),
            [0xab; 32]
        );
        let err = parse_fingerprint("abc").expect_err("short").to_string();
        assert!(err.contains("evident-collector ca fingerprint"), "{err}");
    }
}

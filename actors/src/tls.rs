//! TLS for outbound connections: the one setup every `https://` client
//! (trending feeds, printers, the monitor's webhook and liveness poll) and
//! SMTP over TLS share.
//!
//! - Crypto: rustls with the `ring` provider (aws-lc would need cmake to build).
//! - Trust: the system's CA certificates, as rustls-platform-verifier finds
//!   them (on Linux the OpenSSL locations such as `/etc/ssl/certs`, or
//!   `SSL_CERT_FILE` / `SSL_CERT_DIR`), plus the certificates of one optional
//!   PEM bundle (config `tls.ca_file`), so that a private CA works.
//!
//! reqwest is built without a crypto provider of its own
//! (`rustls-no-provider`): a client built the plain way (`reqwest::get`,
//! `reqwest::Client::new()`) panics unless the process has a default
//! provider. [`ClientTls::load`] therefore installs ring as that default,
//! unless the application installed one first. Holdfast's own clients do not
//! depend on it: they are built from [`ClientTls::http_client`], which hands
//! reqwest a complete rustls configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tracing::warn;

/// Why the TLS setup cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA bundle could not be read.
    #[error("cannot read '{path}': {source}")]
    Read {
        /// The bundle's path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The CA bundle is not PEM, holds no certificate, or holds one that is
    /// not a usable CA certificate.
    #[error("'{path}': {reason}")]
    Bundle {
        /// The bundle's path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Makes ring the process-wide default crypto provider unless one is
/// installed already, so that reqwest clients built without
/// [`ClientTls::http_client`] work too. Idempotent.
pub fn install_default_provider() {
    // Err only means a provider is installed already: that one stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The TLS setup of outbound clients; cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    /// The rustls configuration handed to every reqwest client.
    config: Arc<rustls::ClientConfig>,
    /// The extra CA certificates, for clients that build their own rustls
    /// configuration (lettre, for SMTP).
    extra_roots: Arc<[CertificateDer<'static>]>,
    /// Where they came from, for logs.
    ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_file", &self.ca_file)
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

impl ClientTls {
    /// The system's CA certificates plus those of `ca_file`, if given. A
    /// system without any CA certificates is no error: `https://` requests
    /// then fail at the handshake with a message that says so (a server with
    /// only `http://` endpoints must not need them). Installs ring as the
    /// default provider (see [`install_default_provider`]).
    ///
    /// # Errors
    /// `ca_file` cannot be read, holds no PEM certificate, or holds one that
    /// is not a usable CA certificate.
    pub fn load(ca_file: Option<&Path>) -> Result<Self, TlsError> {
        install_default_provider();
        let extra_roots = match ca_file {
            Some(path) => read_bundle(path)?,
            None => Vec::new(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (
            rustls_platform_verifier::Verifier::new_with_extra_roots(
                extra_roots.iter().cloned(),
                provider.clone(),
            ),
            ca_file,
        ) {
            (Ok(v), _) => Arc::new(v),
            // With a bundle the store is never empty: the bundle is at fault.
            (Err(e), Some(path)) => {
                return Err(TlsError::Bundle {
                    path: path.to_path_buf(),
                    reason: format!("not a usable CA certificate: {e}"),
                })
            }
            (Err(e), None) => {
                warn!(error = %e, "no CA certificates on this system: https:// requests will fail unless tls.ca_file names a bundle");
                Arc::new(NoRoots::new(&provider))
            }
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3, the safe defaults")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // reqwest is built for HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            extra_roots: extra_roots.into(),
            ca_file: ca_file.map(Path::to_path_buf),
        })
    }

    /// A reqwest client builder that speaks TLS with this setup; add
    /// timeouts and build it.
    pub fn http_client(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .tls_backend_preconfigured(rustls::ClientConfig::clone(&self.config))
    }

    /// The same for a blocking client (the trace exporter's, which runs on
    /// a thread of its own). Build it outside any async runtime.
    pub fn blocking_http_client(&self) -> reqwest::blocking::ClientBuilder {
        reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(rustls::ClientConfig::clone(&self.config))
    }

    /// The certificates of `tls.ca_file` (DER), trusted beside the system's.
    pub fn extra_roots(&self) -> &[CertificateDer<'static>] {
        &self.extra_roots
    }
}

/// Every certificate of the PEM bundle at `path`, each checked to parse as a
/// trust anchor (config validation reads the bundle this way, without
/// building a client).
///
/// # Errors
/// The file cannot be read, holds no PEM certificate, or holds one that is
/// not a usable CA certificate.
pub fn read_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::Bundle {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let mut store = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        store
            .add(cert.clone())
            .map_err(|e| bad(format!("certificate {} is not usable: {e}", i + 1)))?;
    }
    Ok(certs)
}

/// The verifier of a system without CA certificates and no `tls.ca_file`:
/// every handshake fails, saying why.
#[derive(Debug)]
struct NoRoots {
    schemes: Vec<SignatureScheme>,
}

impl NoRoots {
    const REASON: &'static str =
        "no trusted CA certificates: the system has none and tls.ca_file is not set";

    fn new(provider: &CryptoProvider) -> Self {
        Self {
            schemes: provider
                .signature_verification_algorithms
                .supported_schemes(),
        }
    }
}

impl ServerCertVerifier for NoRoots {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General(Self::REASON.into()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(Self::REASON.into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(Self::REASON.into()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("holdfast-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn the_system_roots_load_without_a_bundle() {
        let tls = ClientTls::load(None).unwrap();
        assert!(tls.extra_roots().is_empty());
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }

    #[test]
    fn a_missing_bundle_is_a_read_error_naming_the_path() {
        let err = ClientTls::load(Some(Path::new("/no/such/ca.pem"))).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("/no/such/ca.pem"), "{err}");
    }

    #[test]
    fn a_bundle_without_a_certificate_is_refused() {
        let path = temp_file("empty.pem", b"just text\n");
        let err = ClientTls::load(Some(&path)).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let path = temp_file(
            "garbage.pem",
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        );
        let err = ClientTls::load(Some(&path)).unwrap_err();
        assert!(err.to_string().contains("certificate 1"), "{err}");
    }

    #[test]
    fn without_roots_every_handshake_fails_saying_why() {
        let provider = rustls::crypto::ring::default_provider();
        let err = NoRoots::new(&provider)
            .verify_server_cert(
                &CertificateDer::from(vec![0u8]),
                &[],
                &ServerName::try_from("example.test").unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("tls.ca_file"), "{err}");
    }
}

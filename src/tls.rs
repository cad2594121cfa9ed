//! TLS on the listeners (rustls with ring). The certificate, its key and the optional client CA
//! come from PEM files that are checked every `tls.reload_interval_secs` and read again when
//! they change (their modification time or size), so a renewed certificate (cert-manager, a
//! Kubernetes Secret) is served without a restart. A file that fails to load keeps the old
//! material in use and says so in the log.
//!
//! With a client CA, a client may present a certificate; rustls verifies one that is
//! presented against the CA and refuses the handshake if it does not verify. Whether the
//! management calls then require one is the service's rule (`OtpService::org_scope`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, String),
    #[error("{0}: {1}")]
    Invalid(PathBuf, String),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the TLS material lives.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Read(path.into(), e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid(path.into(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(path.into(), "no certificate".into()));
    }
    Ok(certs)
}

fn certified_key(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError::Invalid(files.key.clone(), e.to_string()))?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Invalid(files.key.clone(), e.to_string()))?;
    let certified = CertifiedKey::new(certs, key);
    certified
        .keys_match()
        .map_err(|e| TlsError::Invalid(files.key.clone(), e.to_string()))?;
    Ok(Arc::new(certified))
}

fn client_verifier(ca: &Path) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Invalid(ca.into(), e.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Invalid(ca.into(), e.to_string()))
}

/// The server's certificate, replaced when its files change.
#[derive(Debug)]
struct Certificate(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|current| current.clone())
    }
}

/// The client CA's verifier, replaced when its file changes.
#[derive(Debug)]
struct ClientCa(RwLock<Arc<dyn ClientCertVerifier>>);

impl ClientCa {
    fn current(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        self.0
            .read()
            .map(|current| current.clone())
            .map_err(|_| rustls::Error::General("client CA lock poisoned".into()))
    }
}

impl ClientCertVerifier for ClientCa {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        // The hints would borrow from a verifier that may be replaced; clients do without.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.current()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.current()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.current()
            .map(|verifier| verifier.supported_verify_schemes())
            .unwrap_or_default()
    }
}

/// What a file looked like when it was last read.
pub(crate) type Stamp = Option<(SystemTime, u64)>;

pub(crate) fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The TLS material of both listeners.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    certificate: Arc<Certificate>,
    client_ca: Option<Arc<ClientCa>>,
    stamps: Mutex<Vec<Stamp>>,
}

impl Tls {
    /// Reads the files once; a missing or malformed one is an error at start.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let certificate = Arc::new(Certificate(RwLock::new(certified_key(&files)?)));
        let client_ca = match &files.client_ca {
            Some(ca) => Some(Arc::new(ClientCa(RwLock::new(client_verifier(ca)?)))),
            None => None,
        };
        let stamps = Mutex::new(Self::stamps_of(&files));
        Ok(Arc::new(Self {
            files,
            certificate,
            client_ca,
            stamps,
        }))
    }

    fn stamps_of(files: &TlsFiles) -> Vec<Stamp> {
        [
            Some(&files.cert),
            Some(&files.key),
            files.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|path| stamp(path))
        .collect()
    }

    /// Whether clients are asked for certificates (a client CA is configured).
    pub fn verifies_clients(&self) -> bool {
        self.client_ca.is_some()
    }

    /// A server configuration that offers `alpn` (in order of preference).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match &self.client_ca {
            Some(client_ca) => builder.with_client_cert_verifier(client_ca.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(self.certificate.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// Reads the files again if any changed since they were last read. Returns whether new
    /// material is in use.
    pub fn reload_if_changed(&self) -> bool {
        let now = Self::stamps_of(&self.files);
        let Ok(mut stamps) = self.stamps.lock() else {
            return false;
        };
        if *stamps == now {
            return false;
        }
        // Read the certificate and key as a pair, and the CA; keep the old on any failure
        // (half-written files are common while a Secret is updated: the next round retries).
        let loaded = certified_key(&self.files).and_then(|key| {
            let ca = self
                .files
                .client_ca
                .as_deref()
                .map(client_verifier)
                .transpose()?;
            Ok((key, ca))
        });
        match loaded {
            Ok((key, ca)) => {
                if let Ok(mut current) = self.certificate.0.write() {
                    *current = key;
                }
                if let (Some(slot), Some(ca)) = (&self.client_ca, ca)
                    && let Ok(mut current) = slot.0.write()
                {
                    *current = ca;
                }
                *stamps = now;
                tracing::info!(cert = %self.files.cert.display(), "TLS material reloaded");
                true
            }
            Err(err) => {
                tracing::error!(error = %err, "TLS files changed but do not load; keeping the old");
                false
            }
        }
    }
}

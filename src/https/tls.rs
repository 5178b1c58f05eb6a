//! The serving certificate: a rustls certificate resolver whose key pair is swapped in place,
//! so a renewed certificate (cert-manager rewriting the mounted files, or the self-managed CA
//! renewing its own) is served without a restart and without dropping connections.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use super::HttpsError;
use crate::error::Categorized;

/// The current serving certificate. Until one is loaded, handshakes fail and `/readyz` says
/// not ready.
#[derive(Default)]
pub struct CertStore {
    current: RwLock<Option<LoadedCert>>,
}

struct LoadedCert {
    key: Arc<CertifiedKey>,
    /// SHA-256 of the PEM inputs, to notice changes without parsing again.
    fingerprint: [u8; 32],
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

impl CertStore {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.read().is_some()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<LoadedCert>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads a PEM certificate chain and private key; returns whether the served certificate
    /// changed. A chain whose key does not match is refused and the current one kept (a
    /// rewrite of the two files is not atomic: the next poll sees both new).
    pub fn load_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<bool, HttpsError> {
        let mut hasher = Sha256::new();
        hasher.update(cert_pem);
        hasher.update([0]);
        hasher.update(key_pem);
        let fingerprint: [u8; 32] = hasher.finalize().into();
        if self
            .read()
            .as_ref()
            .is_some_and(|l| l.fingerprint == fingerprint)
        {
            return Ok(false);
        }
        let key = certified_key(cert_pem, key_pem)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(LoadedCert {
            key: Arc::new(key),
            fingerprint,
        });
        Ok(true)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.read().as_ref().map(|l| l.key.clone())
    }
}

/// Parses a PEM chain and key into a rustls key pair, checking that they belong together.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, HttpsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| HttpsError::Certificate("the certificate file is not PEM"))?;
    if chain.is_empty() {
        return Err(HttpsError::Certificate(
            "the certificate file holds no certificate",
        ));
    }
    // The key's parse error is dropped: it could quote key material.
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| HttpsError::Certificate("the key file holds no PEM private key"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| HttpsError::Certificate("unsupported private key type"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|_| HttpsError::Certificate("the private key does not match the certificate"))?;
    Ok(certified)
}

/// A TLS 1.2/1.3 server configuration on ring that serves whatever `store` holds, HTTP/1.1 only.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, HttpsError> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(HttpsError::Tls)?
            .with_no_client_auth()
            .with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads the certificate and key files into `store` now and every `interval` until
/// `shutdown`, swapping the served certificate whenever their contents change. Unreadable or
/// mismatched files keep the current certificate and are reported once per change.
pub async fn watch_files(
    store: Arc<CertStore>,
    cert_file: PathBuf,
    key_file: PathBuf,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let poll = async {
        let mut last_problem: Option<String> = None;
        loop {
            match load_files(&store, &cert_file, &key_file).await {
                Ok(true) => {
                    tracing::info!(cert = %cert_file.display(), "loaded the webhook serving certificate");
                    last_problem = None;
                }
                Ok(false) => last_problem = None,
                Err(err) => {
                    let text = err.to_string();
                    if last_problem.as_deref() != Some(text.as_str()) {
                        tracing::warn!(
                            reason = err.category(),
                            "webhook certificate not (re)loaded: {text}"
                        );
                        last_problem = Some(text);
                    }
                }
            }
            tokio::time::sleep(interval).await;
        }
    };
    tokio::select! {
        () = poll => {}
        () = shutdown => {}
    }
}

async fn load_files(store: &CertStore, cert: &Path, key: &Path) -> Result<bool, HttpsError> {
    // Two small files every few seconds: a blocking read is cheaper than a thread hop.
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| HttpsError::ReadFile {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = zeroize::Zeroizing::new(read(key)?);
    store.load_pem(&cert_pem, &key_pem)
}

//! rustls configurations for mutual TLS against the deployment CA.
//!
//! ```text
//!   TLS_DIR/{ca.pem, cert.pem, key.pem} ──TlsMaterial::load──▶ TlsMaterial
//!        │                                                       │
//!        │ (watched: mtime, or reload() on SIGHUP)                ├─▶ server_config ──▶ Arc<ServerConfig>
//!        └──────────── ReloadingResolver ◀────────────────────────┴─▶ client_config ──▶ Arc<ClientConfig>
//!   after the handshake: peer_identity(&conn) ──▶ Identity ──▶ Authorizer
//! ```
//!
//! Only the ring provider is used, and it is passed to every builder, so no
//! process-global provider needs installing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::{CertsError, Result};
use crate::files::{CA_CERT_FILE, CERT_FILE, KEY_FILE, read_required};
use crate::identity::{Identity, identity_from_cert_der};
use crate::inspect::warn_if_expiring;
use crate::reload::{ReloadingClientResolver, ReloadingResolver};

/// The ALPN protocol id gRPC (tonic) needs.
pub const ALPN_H2: &[u8] = b"h2";

/// The crypto provider every configuration is built with (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A node's TLS directory, loaded and checked: the CA to verify peers against, and the
/// node's own certificate and key.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    dir: PathBuf,
    roots: Arc<RootCertStore>,
    ca_certs: Vec<CertificateDer<'static>>,
    certified: Arc<CertifiedKey>,
    identity: Identity,
}

impl TlsMaterial {
    /// Loads `DIR/ca.pem`, `DIR/cert.pem` and `DIR/key.pem`; every error names the file.
    /// Logs a warning when the certificate expires within two weeks.
    pub fn load(dir: &Path) -> Result<TlsMaterial> {
        let ca_path = dir.join(CA_CERT_FILE);
        let ca_certs = read_certs(&ca_path)?;
        let mut roots = RootCertStore::empty();
        for cert in &ca_certs {
            roots
                .add(cert.clone())
                .map_err(|e| CertsError::InvalidFile {
                    path: ca_path.clone(),
                    reason: format!("not a usable CA certificate: {e}"),
                })?;
        }
        let provider = provider();
        let certified = load_certified(&dir.join(CERT_FILE), &dir.join(KEY_FILE), &provider)?;
        let identity =
            identity_from_cert_der(certified.end_entity_cert().map_err(|e| CertsError::Tls {
                what: dir.join(CERT_FILE).display().to_string(),
                source: e,
            })?)?;
        Ok(TlsMaterial {
            dir: dir.to_owned(),
            roots: Arc::new(roots),
            ca_certs,
            certified,
            identity,
        })
    }

    /// The directory this material was loaded from (watched by the reloading resolvers).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The identity this node presents to its peers.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The CA certificates peers are verified against.
    pub fn ca_certs(&self) -> &[CertificateDer<'static>] {
        &self.ca_certs
    }

    /// The node's certificate chain and key, as loaded.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified)
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read_required(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| CertsError::InvalidFile {
            path: path.to_owned(),
            reason: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(CertsError::InvalidFile {
            path: path.to_owned(),
            reason: "no PEM CERTIFICATE block found".to_owned(),
        });
    }
    Ok(certs)
}

/// Loads a certificate chain and its key, checking that they belong together; shared by
/// the initial load and every reload.
pub(crate) fn load_certified(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>> {
    let chain = read_certs(cert_path)?;
    let key_pem = read_required(key_path)?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| CertsError::InvalidFile {
            path: key_path.to_owned(),
            reason: format!("no usable PEM private key: {e}"),
        })?;
    warn_if_expiring(&chain[0], cert_path);
    let certified =
        CertifiedKey::from_der(chain, key, provider).map_err(|source| CertsError::Tls {
            what: format!("{} with {}", cert_path.display(), key_path.display()),
            source,
        })?;
    Ok(Arc::new(certified))
}

/// Whether a server demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// Refuse any client without a certificate from the CA (every inter-node and
    /// inter-region listener).
    #[default]
    Required,
    /// Verify a certificate if one is presented, accept anonymous clients otherwise
    /// (for listeners that authorize later, such as metrics).
    Optional,
}

/// Server-side knobs beyond the material.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Whether a client certificate is required.
    pub client_auth: ClientAuth,
    /// ALPN protocols to offer, most preferred first (gRPC needs [`ALPN_H2`]).
    pub alpn: Vec<Vec<u8>>,
    /// How often, at most, a handshake checks the certificate files for changes.
    pub reload_interval: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            client_auth: ClientAuth::Required,
            alpn: Vec::new(),
            reload_interval: Duration::from_secs(1),
        }
    }
}

/// Client-side knobs beyond the material.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// ALPN protocols to offer, most preferred first (gRPC needs [`ALPN_H2`]).
    pub alpn: Vec<Vec<u8>>,
    /// How often, at most, a handshake checks the certificate files for changes.
    pub reload_interval: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            alpn: Vec::new(),
            reload_interval: Duration::from_secs(1),
        }
    }
}

/// A server configuration and the resolver behind it, so that the shell can force a
/// reload (on SIGHUP) in addition to the automatic mtime check.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Hand this to the acceptor.
    pub config: Arc<ServerConfig>,
    /// Call [`ReloadingResolver::reload`] on SIGHUP.
    pub resolver: Arc<ReloadingResolver>,
}

/// A client configuration and the resolver behind it.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// Hand this to the connector.
    pub config: Arc<ClientConfig>,
    /// Call [`ReloadingClientResolver::reload`] on SIGHUP.
    pub resolver: Arc<ReloadingClientResolver>,
}

/// A server configuration that verifies clients against the deployment CA and presents
/// the node's certificate, re-read when its files change.
pub fn server_config(material: &TlsMaterial, client_auth: ClientAuth) -> Result<Arc<ServerConfig>> {
    let opts = ServerOptions {
        client_auth,
        ..ServerOptions::default()
    };
    Ok(server_config_with(material, &opts)?.config)
}

/// [`server_config`] with every option, returning the resolver too.
pub fn server_config_with(material: &TlsMaterial, opts: &ServerOptions) -> Result<ServerTls> {
    let provider = provider();
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&material.roots), provider.clone());
    if opts.client_auth == ClientAuth::Optional {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier
        .build()
        .map_err(|source| CertsError::Verifier { source })?;
    let resolver = Arc::new(ReloadingResolver::from_material(
        material,
        opts.reload_interval,
    ));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| CertsError::Tls {
            what: "protocol versions".to_owned(),
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = opts.alpn.clone();
    Ok(ServerTls {
        config: Arc::new(config),
        resolver,
    })
}

/// A client configuration that verifies the server against the deployment CA (and the
/// server name) and presents the node's certificate, re-read when its files change.
pub fn client_config(material: &TlsMaterial) -> Result<Arc<ClientConfig>> {
    Ok(client_config_with(material, &ClientOptions::default())?.config)
}

/// [`client_config`] with every option, returning the resolver too.
pub fn client_config_with(material: &TlsMaterial, opts: &ClientOptions) -> Result<ClientTls> {
    let resolver = Arc::new(ReloadingClientResolver::from_material(
        material,
        opts.reload_interval,
    ));
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| CertsError::Tls {
            what: "protocol versions".to_owned(),
            source,
        })?
        .with_root_certificates(Arc::clone(&material.roots))
        .with_client_cert_resolver(resolver.clone());
    config.alpn_protocols = opts.alpn.clone();
    Ok(ClientTls {
        config: Arc::new(config),
        resolver,
    })
}

/// The verified identity of the peer of an established connection (server or client
/// side), or `None` when it presented no certificate or one without a Meridian identity.
///
/// The chain was verified against the CA during the handshake, so the identity can be
/// trusted as-is.
pub fn peer_identity(conn: &rustls::CommonState) -> Option<Identity> {
    peer_identity_from_certs(conn.peer_certificates()?)
}

/// [`peer_identity`] for a verified chain obtained elsewhere (tonic's `peer_certs()`).
pub fn peer_identity_from_certs(certs: &[CertificateDer<'_>]) -> Option<Identity> {
    identity_from_cert_der(certs.first()?).ok()
}

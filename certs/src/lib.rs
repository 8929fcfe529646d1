//! The deployment's PKI: who may connect, and who may do what.
//!
//! ```text
//!   init-ca ─▶ Ca ──issue──▶ Issued ─▶ TLS_DIR/{ca.pem,cert.pem,key.pem}
//!                                           │
//!                               TlsMaterial::load
//!                                           │
//!            server_config / client_config (mTLS, ring, CA-only trust, hot reload)
//!                                           │  handshake
//!                              peer_identity ─▶ Identity (meridian://REGION/ROLE/NAME)
//!                                           │
//!                         Authorizer::authorize(identity, action, resource)
//! ```
//!
//! Nothing here opens sockets: the broker and the CLI own the I/O, this crate owns the
//! decisions, so every rule is testable on its own.

mod authz;
mod ca;
mod deployment;
mod error;
mod files;
mod identity;
mod inspect;
mod reload;
mod tls;

pub use authz::{AclRule, Action, Authorizer, AuthzRules, Denied, Pattern};
pub use ca::{Ca, DEFAULT_DAYS, IssueRequest, Issued};
pub use deployment::{IssuedNode, issue_deployment, mirror_source_dir};
pub use error::{CertsError, Result};
pub use files::{CA_CERT_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE};
pub use identity::{IDENTITY_SCHEME, Identity, Role, identity_from_cert_der};
pub use inspect::{
    CertInfo, EXPIRY_WARNING_DAYS, days_left, fingerprint_sha256, inspect_der, inspect_file,
};
pub use reload::{ReloadOutcome, ReloadingClientResolver, ReloadingResolver};
pub use tls::{
    ALPN_H2, ClientAuth, ClientOptions, ClientTls, ServerOptions, ServerTls, TlsMaterial,
    client_config, client_config_with, peer_identity, peer_identity_from_certs, provider,
    server_config, server_config_with,
};

//! Certificate hot reload: new handshakes pick up replaced cert/key files; established
//! connections keep the keys they negotiated with.
//!
//! The check runs inside the handshake, at most once per interval (a `stat` of two
//! files), or when the shell calls `reload()` on SIGHUP. A broken or mismatched pair is
//! refused with a warning and the previous certificate keeps being served, so a half-done
//! rotation never takes a listener down.
//!
//! A client that resumes an earlier TLS session skips certificates altogether (the
//! resumed session keeps the identities of its full handshake); every full handshake
//! after a reload uses the new certificate. The CA (`ca.pem`) is read once, when the
//! configuration is built: trusting a new CA is a restart, on purpose.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::Result;
use crate::files::{CERT_FILE, KEY_FILE};
use crate::inspect::fingerprint_sha256;
use crate::tls::{TlsMaterial, load_certified, provider};

/// What a forced reload found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files hold a different certificate, now served to new connections.
    Changed {
        /// SHA-256 fingerprint of the certificate now served.
        fingerprint: String,
    },
    /// The files hold the certificate already served.
    Unchanged,
}

/// What identifies one version of a file without reading it: modification time, inode
/// (a rename-into-place always brings a new one, even within one mtime tick) and size.
type FileStamp = Option<(SystemTime, u64, u64)>;
type Stamp = (FileStamp, FileStamp);

#[derive(Debug)]
struct State {
    current: Arc<CertifiedKey>,
    fingerprint: String,
    stamp: Stamp,
    last_check: Option<Instant>,
}

/// The shared machinery of the server and client resolvers.
#[derive(Debug)]
struct Reloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    interval: Duration,
    state: Mutex<State>,
}

fn stamp_of(path: &Path) -> FileStamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.ino(), meta.len()))
}

fn leaf_fingerprint(key: &CertifiedKey) -> String {
    key.cert
        .first()
        .map(|c| fingerprint_sha256(c))
        .unwrap_or_default()
}

impl Reloader {
    fn new(material: &TlsMaterial, interval: Duration) -> Reloader {
        let cert_path = material.dir().join(CERT_FILE);
        let key_path = material.dir().join(KEY_FILE);
        let current = material.certified_key();
        let stamp = (stamp_of(&cert_path), stamp_of(&key_path));
        Reloader {
            provider: provider(),
            interval,
            state: Mutex::new(State {
                fingerprint: leaf_fingerprint(&current),
                current,
                stamp,
                last_check: Some(Instant::now()),
            }),
            cert_path,
            key_path,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated (each field is
        // assigned whole), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the files and swaps them in if they differ; the caller holds the lock.
    fn load_into(&self, state: &mut State) -> Result<ReloadOutcome> {
        let stamp = (stamp_of(&self.cert_path), stamp_of(&self.key_path));
        let key = load_certified(&self.cert_path, &self.key_path, &self.provider)?;
        state.stamp = stamp;
        let fingerprint = leaf_fingerprint(&key);
        if fingerprint == state.fingerprint {
            return Ok(ReloadOutcome::Unchanged);
        }
        tracing::info!(
            cert = %self.cert_path.display(),
            old_fingerprint = %state.fingerprint,
            new_fingerprint = %fingerprint,
            "certificate reloaded; new connections use it"
        );
        state.current = key;
        state.fingerprint.clone_from(&fingerprint);
        Ok(ReloadOutcome::Changed { fingerprint })
    }

    /// The handshake path: at most once per interval, reload if the files changed.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.lock();
        let due = state
            .last_check
            .is_none_or(|t| t.elapsed() >= self.interval);
        if due {
            state.last_check = Some(Instant::now());
            let stamp = (stamp_of(&self.cert_path), stamp_of(&self.key_path));
            if stamp != state.stamp
                && let Err(err) = self.load_into(&mut state)
            {
                tracing::warn!(
                    cert = %self.cert_path.display(),
                    error = %err,
                    "changed certificate files refused; still serving the previous certificate"
                );
            }
        }
        Arc::clone(&state.current)
    }

    fn reload(&self) -> Result<ReloadOutcome> {
        let mut state = self.lock();
        state.last_check = Some(Instant::now());
        self.load_into(&mut state)
    }

    fn fingerprint(&self) -> String {
        self.lock().fingerprint.clone()
    }
}

/// Serves the node's certificate to connecting clients, re-reading `cert.pem`/`key.pem`
/// when they change.
#[derive(Debug)]
pub struct ReloadingResolver {
    inner: Reloader,
}

impl ReloadingResolver {
    /// Starts from the material's certificate and watches the files in its directory,
    /// checking at most once per `interval` (zero: on every handshake).
    pub fn from_material(material: &TlsMaterial, interval: Duration) -> Self {
        ReloadingResolver {
            inner: Reloader::new(material, interval),
        }
    }

    /// Re-reads the files now (the SIGHUP path). On error the previous certificate
    /// stays in service.
    pub fn reload(&self) -> Result<ReloadOutcome> {
        self.inner.reload()
    }

    /// SHA-256 fingerprint of the certificate currently served.
    pub fn fingerprint(&self) -> String {
        self.inner.fingerprint()
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.inner.current())
    }
}

/// Presents the node's certificate to servers it connects to, re-reading the files when
/// they change.
#[derive(Debug)]
pub struct ReloadingClientResolver {
    inner: Reloader,
}

impl ReloadingClientResolver {
    /// Starts from the material's certificate and watches the files in its directory.
    pub fn from_material(material: &TlsMaterial, interval: Duration) -> Self {
        ReloadingClientResolver {
            inner: Reloader::new(material, interval),
        }
    }

    /// Re-reads the files now (the SIGHUP path). On error the previous certificate
    /// stays in service.
    pub fn reload(&self) -> Result<ReloadOutcome> {
        self.inner.reload()
    }

    /// SHA-256 fingerprint of the certificate currently presented.
    pub fn fingerprint(&self) -> String {
        self.inner.fingerprint()
    }
}

impl ResolvesClientCert for ReloadingClientResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.inner.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

//! Connection flags shared by every operator command: `--bootstrap` per command, and the
//! global `--tls-dir` (mutual TLS with the deployment's brokers).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use clap::Args;

static TLS_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Remembers `--tls-dir` for every connection this process makes.
pub fn set_tls_dir(dir: PathBuf) {
    let _ = TLS_DIR.set(dir);
}

/// The client TLS configuration from `--tls-dir`, if given.
pub fn client_tls() -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
    match TLS_DIR.get() {
        None => Ok(None),
        Some(dir) => Ok(Some(
            broker::transport::client_tls_from_dir(dir)
                .map_err(|e| super::UsageError(format!("--tls-dir: {e}")))?,
        )),
    }
}

/// Connects to `bootstrap` with `retry`, over mutual TLS when `--tls-dir` was given.
pub async fn connect_to(
    bootstrap: &str,
    retry: broker::client::RetryPolicy,
) -> anyhow::Result<broker::client::Client> {
    let tls = client_tls()?;
    let plaintext = tls.is_none();
    broker::client::Client::connect_secure(bootstrap, retry, tls)
        .await
        .with_context(|| {
            if plaintext {
                // A TLS-only listener resets a plaintext connection; say what to do.
                format!(
                    "connecting to {bootstrap} without TLS (if the deployment requires mutual TLS, pass --tls-dir DIR or set MERIDIAN_TLS_DIR)"
                )
            } else {
                format!("connecting to {bootstrap}")
            }
        })
}

/// How to reach a region's brokers.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Brokers to bootstrap from, HOST:PORT, comma-separated.
    #[arg(long, env = "MERIDIAN_BOOTSTRAP", default_value = "127.0.0.1:9090")]
    pub bootstrap: String,
}

impl ConnectArgs {
    /// Connects and loads metadata.
    pub async fn connect(&self) -> anyhow::Result<broker::client::Client> {
        connect_to(&self.bootstrap, broker::client::RetryPolicy::default()).await
    }
}

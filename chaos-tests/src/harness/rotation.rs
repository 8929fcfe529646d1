//! Certificate rotation mid-run: every node's certificate is issued again from the same
//! CA while the processes run, as an operator (or a cert-manager job) renews short-lived
//! certificates. Nodes re-read their files without a restart; the harness proves it by
//! completing a real mTLS handshake with each broker and comparing the serial it serves
//! with the one now on disk.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::ChaosError;

/// Where the run's CA lives (outside the nodes' TLS directory: it holds the CA key).
pub fn ca_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("ca")
}

fn failed(what: impl Into<String>, reason: impl std::fmt::Display) -> ChaosError {
    ChaosError::Io {
        what: what.into(),
        source: std::io::Error::other(reason.to_string()),
    }
}

/// Issues every node's certificate again from the run's CA, in place.
pub fn rotate(topology_path: &Path, run_dir: &Path) -> Result<(), ChaosError> {
    let topology = topology::load(topology_path).map_err(|e| failed("load the deployment", e))?;
    let ca = certs::Ca::load(&ca_dir(run_dir)).map_err(|e| failed("load the run's CA", e))?;
    let out = topology.base_dir.join(&topology.tls.dir);
    certs::issue_deployment(&topology, &ca, &out, 2)
        .map_err(|e| failed("issue the rotated certificates", e))?;
    Ok(())
}

/// The serial of the certificate in `dir` (what the node should be serving).
pub fn serial_on_disk(dir: &Path) -> Result<String, ChaosError> {
    certs::inspect_file(&dir.join(certs::CERT_FILE))
        .map(|info| info.serial)
        .map_err(|e| failed(format!("read the certificate in {}", dir.display()), e))
}

/// Completes an mTLS handshake with `addr` as the client whose material is in
/// `client_dir`, and returns the serial of the certificate the server presented.
pub async fn served_serial(addr: SocketAddr, client_dir: &Path) -> Result<String, ChaosError> {
    let material = certs::TlsMaterial::load(client_dir)
        .map_err(|e| failed(format!("load {}", client_dir.display()), e))?;
    let config: Arc<_> =
        certs::client_config(&material).map_err(|e| failed("build a client config", e))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| failed(format!("connect to {addr}"), e))?;
    let name = rustls::pki_types::ServerName::from(addr.ip());
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| failed(format!("TLS handshake with {addr}"), e))?;
    let (_, session) = tls.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| {
            failed(
                format!("TLS handshake with {addr}"),
                "no server certificate",
            )
        })?;
    certs::inspect_der(leaf)
        .map(|info| info.serial)
        .map_err(|e| failed(format!("read {addr}'s certificate"), e))
}

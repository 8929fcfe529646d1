//! TLS health: handshakes and their failures (counted by the transport), authorization
//! refusals (counted by the access policy), and the node certificate's remaining life.

use prometheus::{IntGauge, Opts, Registry};

/// The TLS metrics of one process.
#[derive(Debug, Clone)]
pub struct TlsGauges {
    expiry: IntGauge,
}

impl TlsGauges {
    /// Registers the transport's and access policy's counters, and the expiry gauge when
    /// the node has a certificate.
    pub fn register(registry: &Registry, has_certificate: bool) -> Self {
        let transport = crate::transport::tls_metrics();
        super::register(registry, &transport.handshakes);
        super::register(registry, &transport.failures);
        super::register(registry, crate::access::denied_metric());
        let expiry = IntGauge::with_opts(Opts::new(
            "meridian_tls_certificate_expiry_seconds",
            "Seconds until this node's certificate expires (negative once expired); absent without TLS.",
        ))
        .expect("valid gauge");
        if has_certificate {
            super::register(registry, &expiry);
        }
        TlsGauges { expiry }
    }

    /// Re-reads the certificate at `cert_path` (it may have been rotated).
    pub fn refresh(&self, cert_path: Option<&std::path::Path>) {
        if let Some(seconds) = cert_path.and_then(crate::transport::certificate_expiry_seconds) {
            self.expiry.set(seconds);
        }
    }
}

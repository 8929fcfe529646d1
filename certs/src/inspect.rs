//! Reading a certificate back: what `meridian certs inspect` shows and what expiry
//! warnings are computed from.

use std::net::IpAddr;
use std::path::Path;
use std::time::SystemTime;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;

use crate::error::{CertsError, Result};
use crate::identity::{Identity, identity_from_cert_der};

/// Below this many days left, loading a certificate logs a warning, so that operators
/// rotate before peers start refusing it.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// Everything an operator checks about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The Meridian identity, if the certificate carries exactly one.
    pub identity: Option<Identity>,
    /// The subject distinguished name, RFC 4514 style.
    pub subject: String,
    /// The issuer distinguished name.
    pub issuer: String,
    /// Serial number, lowercase hex with colons.
    pub serial: String,
    /// Subject alternative names, each prefixed with its kind (`URI:`, `DNS:`, `IP:`).
    pub sans: Vec<String>,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before_unix: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// Start of validity, RFC 2822 text.
    pub not_before: String,
    /// End of validity, RFC 2822 text.
    pub not_after: String,
    /// Whole days until expiry (negative once expired).
    pub days_left: i64,
    /// Whether the certificate is a CA.
    pub is_ca: bool,
    /// SHA-256 of the DER encoding, lowercase hex with colons, as `openssl x509
    /// -fingerprint -sha256` prints it (in lowercase).
    pub fingerprint_sha256: String,
}

/// SHA-256 fingerprint of a DER certificate, lowercase hex with colons; the value used to
/// tell a rotated certificate from its predecessor.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    colon_hex(&Sha256::digest(der))
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| hex::encode([*b]))
        .collect::<Vec<_>>()
        .join(":")
}

fn unix_now() -> i64 {
    match SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn parse(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| CertsError::InvalidCertificate {
            reason: e.to_string(),
        })
}

/// Whole days from now until the certificate expires (negative once it has).
pub fn days_left(der: &[u8]) -> Result<i64> {
    let cert = parse(der)?;
    Ok((cert.validity().not_after.timestamp() - unix_now()).div_euclid(86_400))
}

/// Logs a warning when the certificate expires within [`EXPIRY_WARNING_DAYS`]; called
/// wherever certificates are loaded so that the log says so before peers refuse it.
pub(crate) fn warn_if_expiring(der: &[u8], path: &Path) {
    if let Ok(days) = days_left(der)
        && days < EXPIRY_WARNING_DAYS
    {
        let identity = identity_from_cert_der(der)
            .map(|i| i.to_string())
            .unwrap_or_else(|_| "-".to_owned());
        tracing::warn!(
            path = %path.display(),
            identity,
            days_left = days,
            "certificate expires soon or has expired: issue a new one with `meridian certs issue`"
        );
    }
}

/// Describes a DER certificate.
pub fn inspect_der(der: &[u8]) -> Result<CertInfo> {
    let cert = parse(der)?;
    let mut sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            sans.push(match name {
                GeneralName::URI(u) => format!("URI:{u}"),
                GeneralName::DNSName(d) => format!("DNS:{d}"),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => format!(
                        "IP:{}",
                        IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())
                    ),
                    16 => format!(
                        "IP:{}",
                        IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())
                    ),
                    _ => format!("IP:{}", hex::encode(b)),
                },
                other => format!("{other}"),
            });
        }
    }
    let validity = cert.validity();
    let not_before_unix = validity.not_before.timestamp();
    let not_after_unix = validity.not_after.timestamp();
    Ok(CertInfo {
        identity: identity_from_cert_der(der).ok(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: colon_hex(cert.raw_serial()),
        sans,
        not_before_unix,
        not_after_unix,
        not_before: validity.not_before.to_string(),
        not_after: validity.not_after.to_string(),
        days_left: (not_after_unix - unix_now()).div_euclid(86_400),
        is_ca: cert.is_ca(),
        fingerprint_sha256: fingerprint_sha256(der),
    })
}

/// Describes the first certificate of a PEM file (a leaf's `cert.pem` or a `ca.pem`).
pub fn inspect_file(path: &Path) -> Result<CertInfo> {
    let der = first_cert_in_file(path)?;
    inspect_der(&der)
}

pub(crate) fn first_cert_in_file(path: &Path) -> Result<CertificateDer<'static>> {
    let pem = crate::files::read_required(path)?;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| CertsError::InvalidFile {
            path: path.to_owned(),
            reason: "no PEM CERTIFICATE block found".to_owned(),
        })?
        .map_err(|e| CertsError::InvalidFile {
            path: path.to_owned(),
            reason: format!("bad PEM: {e}"),
        })
}

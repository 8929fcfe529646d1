//! The deployment CA and certificate issuance.
//!
//! ```text
//!   Ca::generate(name) ──save──▶ CA_DIR/{ca.pem, ca-key.pem (0600)}
//!   Ca::load(CA_DIR) ──issue(IssueRequest)──▶ Issued ──save──▶ TLS_DIR/{ca.pem, cert.pem, key.pem (0600)}
//! ```
//!
//! The CA may sign leaves only (path length 0). Leaves carry both serverAuth and
//! clientAuth because brokers and mirrors accept and open connections with the same
//! certificate.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::error::{CertsError, Result};
use crate::files::{
    CA_CERT_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE, ensure_dir, io_err, write_atomic,
};
use crate::identity::Identity;

/// How long a new CA is valid: long, because replacing it means re-issuing everything.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Backdating of `not_before`, so that a peer whose clock is a little behind accepts a
/// certificate issued seconds ago.
const CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Default leaf validity in days (one year), used by the CLI when `--days` is absent.
pub const DEFAULT_DAYS: u32 = 365;

fn gen_err(source: rcgen::Error) -> CertsError {
    CertsError::Generate { source }
}

/// A random, positive 128-bit serial, so that two certificates never share one and a
/// rotated certificate is told apart from its predecessor by serial alone.
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CertsError::InvalidRequest {
            reason: "the system random number generator failed".to_owned(),
        })?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The deployment's certificate authority: its certificate and signing key.
///
/// Every peer trusts exactly this certificate; whoever holds `ca-key.pem` can mint any
/// identity, so it is written 0600 and never copied into node directories.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a new self-signed CA named `name` (its subject CN), valid for ten years.
    pub fn generate(name: &str) -> Result<Ca> {
        if name.trim().is_empty() {
            return Err(CertsError::InvalidRequest {
                reason: "the CA name is empty; pass --name NAME".to_owned(),
            });
        }
        let key = KeyPair::generate().map_err(gen_err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "Meridian");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        params.not_before = OffsetDateTime::from(now - CLOCK_SKEW);
        params.not_after = OffsetDateTime::from(now + CA_VALIDITY);
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(gen_err)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Writes `DIR/ca.pem` and `DIR/ca-key.pem` (mode 0600), creating DIR.
    ///
    /// Refuses to overwrite an existing CA key: replacing a CA silently would break every
    /// certificate it issued.
    pub fn save(&self, dir: &Path) -> Result<()> {
        ensure_dir(dir)?;
        let key_path = dir.join(CA_KEY_FILE);
        if key_path.exists() {
            return Err(CertsError::CaExists {
                dir: dir.to_owned(),
            });
        }
        write_atomic(&key_path, self.key_pem.as_bytes(), 0o600)?;
        write_atomic(&dir.join(CA_CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        tracing::info!(dir = %dir.display(), "wrote deployment CA");
        Ok(())
    }

    /// Loads a CA written by [`Ca::save`].
    pub fn load(dir: &Path) -> Result<Ca> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if !cert_path.is_file() || !key_path.is_file() {
            return Err(CertsError::CaNotFound {
                dir: dir.to_owned(),
            });
        }
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CertsError::InvalidFile {
            path: key_path.clone(),
            reason: format!("not a PEM private key: {e}"),
        })?;
        // A key from another CA would sign leaves that no peer accepts; refuse it here,
        // where the operator can still tell which file is wrong.
        let cert_der = crate::inspect::first_cert_in_file(&cert_path)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der).map_err(|e| {
            CertsError::InvalidFile {
                path: cert_path.clone(),
                reason: format!("not an X.509 certificate: {e}"),
            }
        })?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CertsError::InvalidFile {
                path: key_path.clone(),
                reason: format!(
                    "this key does not belong to {}; restore the matching ca-key.pem",
                    cert_path.display()
                ),
            });
        }
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| CertsError::InvalidFile {
                path: cert_path.clone(),
                reason: format!("not a PEM CA certificate: {e}"),
            })?;
        Ok(Ca {
            cert_pem,
            key_pem,
            issuer,
        })
    }

    /// The CA certificate in PEM form, as every peer's `ca.pem` holds it.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a leaf certificate for `req.identity`, signed by this CA.
    pub fn issue(&self, req: &IssueRequest) -> Result<Issued> {
        // The fields are public; check again so that no certificate carries an identity
        // that would not parse back.
        req.identity.validate()?;
        let now = SystemTime::now();
        let not_before = req.not_before.unwrap_or(now - CLOCK_SKEW);
        let not_after = match req.not_after {
            Some(t) => t,
            None => {
                if req.days == 0 {
                    return Err(CertsError::InvalidRequest {
                        reason: "validity of 0 days; pass --days N with N >= 1".to_owned(),
                    });
                }
                now + Duration::from_secs(u64::from(req.days) * 24 * 3600)
            }
        };
        if not_after <= not_before {
            return Err(CertsError::InvalidRequest {
                reason: "not_after is not later than not_before".to_owned(),
            });
        }

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!(
                "{}/{}/{}",
                req.identity.region, req.identity.role, req.identity.name
            ),
        );
        dn.push(DnType::OrganizationName, "Meridian");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = OffsetDateTime::from(not_before);
        params.not_after = OffsetDateTime::from(not_after);
        params.serial_number = Some(random_serial()?);

        let uri = req.identity.to_string();
        let mut sans = vec![SanType::URI(uri.clone().try_into().map_err(|_| {
            CertsError::InvalidRequest {
                reason: format!("identity `{uri}` is not an ASCII URI"),
            }
        })?)];
        let (dns, ips) = if req.dns.is_empty() && req.ips.is_empty() {
            (
                vec!["localhost".to_owned()],
                vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            )
        } else {
            (req.dns.clone(), req.ips.clone())
        };
        for name in dns {
            let ia5 = name
                .clone()
                .try_into()
                .map_err(|_| CertsError::InvalidRequest {
                    reason: format!("DNS name `{name}` is not ASCII"),
                })?;
            sans.push(SanType::DnsName(ia5));
        }
        sans.extend(ips.into_iter().map(SanType::IpAddress));
        params.subject_alt_names = sans;

        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(gen_err)?;
        tracing::info!(identity = %req.identity, "issued certificate");
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
        })
    }
}

/// What to put in a leaf certificate.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// The identity the certificate grants (written as a URI SAN).
    pub identity: Identity,
    /// DNS names the holder serves under. With no DNS names and no IPs, `localhost` and
    /// `127.0.0.1` are used so that local deployments work out of the box.
    pub dns: Vec<String>,
    /// IP addresses the holder serves under.
    pub ips: Vec<IpAddr>,
    /// Validity in days from now; ignored when `not_after` is set.
    pub days: u32,
    /// Start of validity; defaults to five minutes ago (clock skew). Tests set it in the
    /// future to make a not-yet-valid certificate.
    pub not_before: Option<SystemTime>,
    /// End of validity; defaults to now + `days`. Tests set it in the past to make an
    /// expired certificate.
    pub not_after: Option<SystemTime>,
}

impl IssueRequest {
    /// A request with the defaults: local SANs, [`DEFAULT_DAYS`] of validity.
    pub fn new(identity: Identity) -> Self {
        IssueRequest {
            identity,
            dns: Vec::new(),
            ips: Vec::new(),
            days: DEFAULT_DAYS,
            not_before: None,
            not_after: None,
        }
    }
}

/// A freshly issued certificate with its key, ready to be written into a TLS directory.
#[derive(Clone)]
pub struct Issued {
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The leaf's private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The issuing CA's certificate, PEM, so that the TLS directory is self-contained.
    pub ca_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// Writes `DIR/{ca.pem, cert.pem, key.pem}` (key 0600), creating DIR and replacing
    /// what is there. The key is written before the certificate: a reloading peer that
    /// sees the new certificate then finds the matching key (a mismatch in between is
    /// refused and retried, never served).
    pub fn save(&self, dir: &Path) -> Result<()> {
        ensure_dir(dir)?;
        write_atomic(&dir.join(CA_CERT_FILE), self.ca_pem.as_bytes(), 0o644)?;
        write_atomic(&dir.join(KEY_FILE), self.key_pem.as_bytes(), 0o600)?;
        write_atomic(&dir.join(CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        tracing::info!(dir = %dir.display(), "wrote TLS directory");
        Ok(())
    }
}

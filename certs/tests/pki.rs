//! CA creation, issuance and the files they leave behind, read back the way a peer and
//! an operator would.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use certs::{
    Ca, CertsError, Identity, IssueRequest, Role, TlsMaterial, days_left, fingerprint_sha256,
    identity_from_cert_der, inspect_file,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::extensions::GeneralName;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn broker_id() -> Identity {
    Identity::new("us-east", Role::Broker, "b1").unwrap()
}

#[test]
fn ca_is_saved_with_a_private_key_file_and_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let ca = Ca::generate("test-ca").unwrap();
    ca.save(&ca_dir).unwrap();
    assert_eq!(mode(&ca_dir.join("ca-key.pem")), 0o600);

    let loaded = Ca::load(&ca_dir).unwrap();
    assert_eq!(loaded.cert_pem(), ca.cert_pem());

    let der = der_of(ca.cert_pem());
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(cert.is_ca());
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    assert!(!ku.digital_signature());
    assert!(cert.subject().to_string().contains("test-ca"));

    // A leaf issued by the loaded CA names the saved CA as its issuer.
    let issued = loaded.issue(&IssueRequest::new(broker_id())).unwrap();
    let leaf_der = der_of(&issued.cert_pem);
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
    assert_eq!(leaf.issuer().as_raw(), cert.subject().as_raw());
}

#[test]
fn ca_load_refuses_a_key_from_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    Ca::generate("one").unwrap().save(dir.path()).unwrap();
    let other = tempfile::tempdir().unwrap();
    Ca::generate("two").unwrap().save(other.path()).unwrap();
    std::fs::copy(
        other.path().join("ca-key.pem"),
        dir.path().join("ca-key.pem"),
    )
    .unwrap();
    let err = Ca::load(dir.path()).unwrap_err();
    assert!(
        matches!(err, CertsError::InvalidFile { ref path, .. } if path.ends_with("ca-key.pem")),
        "{err}"
    );
}

#[test]
fn ca_save_refuses_to_overwrite_an_existing_ca() {
    let dir = tempfile::tempdir().unwrap();
    let first = Ca::generate("first").unwrap();
    first.save(dir.path()).unwrap();
    let err = Ca::generate("second")
        .unwrap()
        .save(dir.path())
        .unwrap_err();
    assert!(matches!(err, CertsError::CaExists { .. }), "{err}");
    assert_eq!(Ca::load(dir.path()).unwrap().cert_pem(), first.cert_pem());
}

#[test]
fn ca_load_from_a_missing_dir_says_to_run_init_ca() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = Ca::load(&missing).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(text.contains("meridian certs init-ca"), "{text}");
}

#[test]
fn leaf_carries_identity_usages_and_default_local_sans() {
    let ca = Ca::generate("ca").unwrap();
    let issued = ca.issue(&IssueRequest::new(broker_id())).unwrap();
    let der = der_of(&issued.cert_pem);
    assert_eq!(identity_from_cert_der(&der).unwrap(), broker_id());

    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(!cert.is_ca());
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => format!("URI:{u}"),
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::IPAddress(b) => format!("IP:{b:?}"),
            other => format!("{other}"),
        })
        .collect();
    assert_eq!(
        sans,
        [
            "URI:meridian://us-east/broker/b1",
            "DNS:localhost",
            "IP:[127, 0, 0, 1]"
        ]
    );
}

#[test]
fn explicit_sans_replace_the_local_defaults() {
    let ca = Ca::generate("ca").unwrap();
    let mut req = IssueRequest::new(broker_id());
    req.dns = vec!["b1.us-east.example".to_owned()];
    req.ips = vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))];
    let info = certs::inspect_der(&der_of(&ca.issue(&req).unwrap().cert_pem)).unwrap();
    assert_eq!(
        info.sans,
        [
            "URI:meridian://us-east/broker/b1",
            "DNS:b1.us-east.example",
            "IP:10.0.0.7"
        ]
    );
}

#[test]
fn issue_rejects_zero_days_and_an_inverted_window() {
    let ca = Ca::generate("ca").unwrap();
    let mut req = IssueRequest::new(broker_id());
    req.days = 0;
    assert!(ca.issue(&req).unwrap_err().to_string().contains("--days"));
    let now = SystemTime::now();
    let mut req = IssueRequest::new(broker_id());
    req.not_before = Some(now);
    req.not_after = Some(now - Duration::from_secs(60));
    assert!(matches!(
        ca.issue(&req).unwrap_err(),
        CertsError::InvalidRequest { .. }
    ));
}

#[test]
fn issue_refuses_an_identity_built_around_validation() {
    let ca = Ca::generate("ca").unwrap();
    let mut id = broker_id();
    id.region = "us.east".to_owned();
    let err = ca.issue(&IssueRequest::new(id)).unwrap_err();
    assert!(matches!(err, CertsError::InvalidIdentity { .. }), "{err}");
}

#[test]
fn issued_save_makes_a_self_contained_tls_dir() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("ca").unwrap();
    let issued = ca.issue(&IssueRequest::new(broker_id())).unwrap();
    issued.save(dir.path()).unwrap();
    assert_eq!(mode(&dir.path().join("key.pem")), 0o600);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(),
        ca.cert_pem()
    );
    let material = TlsMaterial::load(dir.path()).unwrap();
    assert_eq!(material.identity(), &broker_id());
    assert_eq!(material.ca_certs().len(), 1);
}

#[test]
fn tls_material_errors_name_the_missing_or_invalid_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("ca").unwrap();
    ca.issue(&IssueRequest::new(broker_id()))
        .unwrap()
        .save(dir.path())
        .unwrap();

    let key = dir.path().join("key.pem");
    let key_pem = std::fs::read_to_string(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let err = TlsMaterial::load(dir.path()).unwrap_err();
    assert!(
        matches!(err, CertsError::MissingFile { ref path } if path == &key),
        "{err}"
    );
    assert!(err.to_string().contains("key.pem"), "{err}");

    std::fs::write(&key, "not a key").unwrap();
    let err = TlsMaterial::load(dir.path()).unwrap_err();
    assert!(
        matches!(err, CertsError::InvalidFile { ref path, .. } if path == &key),
        "{err}"
    );

    // A key that belongs to another certificate is refused, naming both files.
    std::fs::write(&key, key_pem).unwrap();
    let other = ca.issue(&IssueRequest::new(broker_id())).unwrap();
    std::fs::write(&key, other.key_pem).unwrap();
    let err = TlsMaterial::load(dir.path()).unwrap_err();
    assert!(matches!(err, CertsError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("cert.pem"), "{err}");

    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, "").unwrap();
    let err = TlsMaterial::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("ca.pem"), "{err}");
}

#[test]
fn inspect_reports_identity_validity_and_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("ca").unwrap();
    let mut req = IssueRequest::new(broker_id());
    req.days = 30;
    let issued = ca.issue(&req).unwrap();
    issued.save(dir.path()).unwrap();
    let info = inspect_file(&dir.path().join("cert.pem")).unwrap();
    let der = der_of(&issued.cert_pem);
    assert_eq!(info.identity, Some(broker_id()));
    assert_eq!(info.fingerprint_sha256, fingerprint_sha256(&der));
    assert_eq!(info.fingerprint_sha256.len(), 32 * 3 - 1);
    assert!((28..=30).contains(&info.days_left), "{}", info.days_left);
    assert!(!info.is_ca);

    let ca_info = inspect_file(&dir.path().join("ca.pem")).unwrap();
    assert!(ca_info.is_ca);
    assert_eq!(ca_info.identity, None);
}

#[test]
fn an_expired_certificate_has_negative_days_left() {
    let ca = Ca::generate("ca").unwrap();
    let now = SystemTime::now();
    let mut req = IssueRequest::new(broker_id());
    req.not_before = Some(now - Duration::from_secs(10 * 86_400));
    req.not_after = Some(now - Duration::from_secs(2 * 86_400));
    let der = der_of(&ca.issue(&req).unwrap().cert_pem);
    assert!(days_left(&der).unwrap() < 0);
}

#[test]
fn a_certificate_without_a_meridian_uri_has_no_identity() {
    let ca = Ca::generate("ca").unwrap();
    let err = identity_from_cert_der(&der_of(ca.cert_pem())).unwrap_err();
    assert!(
        matches!(err, CertsError::NoIdentity { found: 0, .. }),
        "{err}"
    );
}

/// Collects what a tracing subscriber writes, to check log lines as an operator reads them.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs_while_loading(days: u32) -> String {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("ca").unwrap();
    let mut req = IssueRequest::new(broker_id());
    req.days = days;
    ca.issue(&req).unwrap().save(dir.path()).unwrap();
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        TlsMaterial::load(dir.path()).unwrap();
    });
    let bytes = captured.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn loading_a_certificate_that_expires_within_two_weeks_logs_a_warning() {
    let logs = logs_while_loading(5);
    assert!(logs.contains("WARN"), "{logs}");
    assert!(logs.contains("expires soon"), "{logs}");
    assert!(logs.contains("meridian://us-east/broker/b1"), "{logs}");
    assert!(
        logs.contains("days_left=4") || logs.contains("days_left=5"),
        "{logs}"
    );

    assert_eq!(logs_while_loading(30), "");
}

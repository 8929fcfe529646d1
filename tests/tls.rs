//! Mutual TLS and authorization on a real broker process, over real TLS sockets.
//!
//! The deployment has two regions linked by flows both ways; only eu-west's broker runs.
//! Its listener requires mutual TLS: peers without a certificate, with one from another
//! CA, with an expired one, or speaking plaintext are refused (and counted). Verified
//! identities get what their role allows: a mirror of us-east may write `us-east.orders`
//! here but not `eu-west.orders`; a broker may not produce; a client may not write a
//! remote topic. A rotated certificate is picked up without a restart.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use broker::client::{Client, RetryPolicy, TopicSpec};
use broker::record::{Compression, Record, encode_batch};
use broker::{BrokerError, ErrorCode};
use rustls::pki_types::pem::PemObject;

const OCTET: u8 = 181;

struct Deployment {
    dir: tempfile::TempDir,
    grpc: SocketAddr,
    metrics: SocketAddr,
    broker: Child,
    log: PathBuf,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = self.broker.kill();
        let _ = self.broker.wait();
    }
}

impl Deployment {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ip = |host| Ipv4Addr::new(127, 0, OCTET, host);
        let addr = |host| SocketAddr::from((ip(host), support::free_port(ip(host))));
        let (grpc, metrics) = (addr(1), addr(1));
        let text = format!(
            r#"[deployment]
name = "tls-test"

[tls]
dir = "tls"

[tls.listeners]
client = "required"
inter_broker = "required"
inter_region = "required"
kafka = "off"
metrics = "off"

[gossip]
keyring = ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]

[topic_defaults]
partitions = 1
replication_factor = 1
min_insync_replicas = 1

[[regions]]
name = "us-east"
[[regions.brokers]]
name = "b1"
id = 1
grpc = "{}"
gossip = "{}"
metrics = "{}"
data_dir = "data/us-east"
[[regions.mirrors]]
name = "m1"
gossip = "{}"
metrics = "{}"

[[regions]]
name = "eu-west"
[[regions.brokers]]
name = "b1"
id = 2
grpc = "{grpc}"
gossip = "{}"
metrics = "{metrics}"
data_dir = "data/eu-west"
[[regions.mirrors]]
name = "m1"
gossip = "{}"
metrics = "{}"

[[acls]]
principal = "meridian://eu-west/client/app"
actions = ["produce", "consume", "create-topic", "describe-topic"]
resource = "*"

[[flows]]
source = "us-east"
target = "eu-west"
topics = {{ include = [".*"], exclude = [] }}

[[flows]]
source = "eu-west"
target = "us-east"
topics = {{ include = [".*"], exclude = [] }}
"#,
            addr(2),
            addr(2),
            addr(2),
            addr(3),
            addr(3),
            addr(1),
            addr(4),
            addr(4),
        );
        let topology = dir.path().join("topology.toml");
        std::fs::write(&topology, text).unwrap();
        let ca = dir.path().join("ca");
        let t = topology.to_str().unwrap();
        support::run_ok(&["certs", "init-ca", "--out", ca.to_str().unwrap()]);
        let issued = support::run_ok(&[
            "certs",
            "issue-deployment",
            "--topology",
            t,
            "--ca",
            ca.to_str().unwrap(),
        ]);
        assert!(
            issued.contains("meridian://us-east/mirror/eu-west-m1"),
            "the eu-west worker carries us-east's data: {issued}"
        );
        let log = dir.path().join("broker.log");
        let broker = support::meridian()
            .args(["broker", "--topology", t, "--node", "eu-west/b1"])
            .stdout(std::fs::File::create(dir.path().join("broker.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        support::wait_for_port(grpc, Duration::from_secs(30), &log);
        support::wait_for_port(metrics, Duration::from_secs(30), &log);
        Deployment {
            dir,
            grpc,
            metrics,
            broker,
            log,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Issues `identity` into `rel` with the deployment CA (`days` of validity, or
    /// already expired).
    fn issue(&self, identity: &str, rel: &str, expired: bool) -> PathBuf {
        let ca = certs::Ca::load(&self.path("ca")).unwrap();
        let mut request = certs::IssueRequest::new(identity.parse().unwrap());
        if expired {
            let now = std::time::SystemTime::now();
            request.not_before = Some(now - Duration::from_secs(10 * 86_400));
            request.not_after = Some(now - Duration::from_secs(86_400));
        }
        let out = self.path(rel);
        ca.issue(&request).unwrap().save(&out).unwrap();
        out
    }

    async fn client(&self, tls_dir: &Path) -> Result<Client, BrokerError> {
        let tls = broker::transport::client_tls_from_dir(tls_dir)?;
        Client::connect_secure(&self.grpc.to_string(), quick(), Some(tls)).await
    }

    fn counter(&self, name: &str, labels: &str) -> f64 {
        let body = http_get(self.metrics, "/metrics");
        body.lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The certificate the broker presents to a new TLS connection.
async fn presented_certificate(
    d: &Deployment,
    tls_dir: &Path,
) -> rustls::pki_types::CertificateDer<'static> {
    let material = certs::TlsMaterial::load(tls_dir).unwrap();
    let connector = tokio_rustls::TlsConnector::from(certs::client_config(&material).unwrap());
    let tcp = tokio::net::TcpStream::connect(d.grpc).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(d.grpc.ip().into());
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn quick() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(200),
    }
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

fn batch(n: usize) -> bytes::Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record::new(format!("v{i}"), 1_000))
        .collect();
    encode_batch(&records, Compression::None).unwrap()
}

fn assert_denied(result: Result<impl std::fmt::Debug, BrokerError>, identity: &str, rule: &str) {
    match result {
        Err(BrokerError::Remote {
            code: ErrorCode::TopicAuthorizationFailed,
            message,
        }) => {
            assert!(message.contains(identity), "names the identity: {message}");
            assert!(message.contains(rule), "names the rule {rule}: {message}");
        }
        other => panic!("expected PermissionDenied for {identity}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_bad_peers_and_authorizes_by_identity() {
    let d = Deployment::start();
    let server_failures =
        |d: &Deployment| d.counter("meridian_tls_handshake_failures_total", "side=\"server\"");

    // An admin (from issue-deployment) reaches the broker.
    let admin = d
        .client(&d.path("tls/clients/admin"))
        .await
        .unwrap_or_else(|e| panic!("admin over mTLS: {e}\n{}", d.stderr()));
    assert_eq!(admin.cached_metadata().region, "eu-west");

    // Refused: a plaintext client (the CLI without --tls-dir).
    let before = server_failures(&d);
    let plain = support::meridian()
        .args(["topic", "list", "--bootstrap", &d.grpc.to_string()])
        .output()
        .unwrap();
    assert!(!plain.status.success(), "plaintext must be refused");
    // Refused: TLS without a client certificate.
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(d.path("tls/ca.pem")).unwrap();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        Arc::new(roots)
    };
    let mut anonymous = rustls::ClientConfig::builder_with_provider(certs::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    anonymous.alpn_protocols = vec![certs::ALPN_H2.to_vec()];
    let no_cert =
        Client::connect_secure(&d.grpc.to_string(), quick(), Some(Arc::new(anonymous))).await;
    assert!(
        no_cert.is_err(),
        "a client without a certificate must be refused"
    );
    // Refused: a certificate from another CA (the client trusts the right CA).
    let other_ca = certs::Ca::generate("someone-else").unwrap();
    let stranger = d.path("stranger");
    other_ca
        .issue(&certs::IssueRequest::new(
            "meridian://eu-west/admin/stranger".parse().unwrap(),
        ))
        .unwrap()
        .save(&stranger)
        .unwrap();
    std::fs::copy(d.path("tls/ca.pem"), stranger.join("ca.pem")).unwrap();
    assert!(
        d.client(&stranger).await.is_err(),
        "another CA's certificate must be refused"
    );
    // Refused: an expired certificate.
    let expired = d.issue("meridian://eu-west/admin/late", "expired", true);
    assert!(
        d.client(&expired).await.is_err(),
        "an expired certificate must be refused"
    );
    let refused = server_failures(&d) - before;
    assert!(
        refused >= 4.0,
        "every refused handshake is counted: {refused}\n{}",
        http_get(d.metrics, "/metrics")
            .lines()
            .filter(|l| l.contains("meridian_tls"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for reason in [
        "plaintext",
        "no-client-certificate",
        "unknown-ca",
        "expired",
    ] {
        assert!(
            d.counter(
                "meridian_tls_handshake_failures_total",
                &format!("reason=\"{reason}\""),
            ) >= 1.0,
            "a refused handshake is counted with reason {reason}"
        );
    }
    let log = d.stderr();
    assert!(log.contains("refused a plaintext connection"), "{log}");
    assert!(log.contains("refused a TLS connection"), "{log}");

    // The mirror of us-east (the eu-west worker's certificate) may create and write
    // `us-east.orders` here, at source offsets ...
    let mirror = d
        .client(&d.path("tls/eu-west/m1/from-us-east"))
        .await
        .unwrap();
    let spec = |name: &str| TopicSpec {
        name: name.into(),
        partitions: 1,
        replication_factor: 1,
        configs: Default::default(),
    };
    mirror.create_topic(spec("us-east.orders")).await.unwrap();
    mirror
        .append_raw("us-east.orders", 0, batch(3), Duration::from_secs(10))
        .await
        .unwrap();
    // ... but not `eu-west.orders`.
    admin.create_topic(spec("eu-west.orders")).await.unwrap();
    assert_denied(
        mirror
            .append_raw("eu-west.orders", 0, batch(1), Duration::from_secs(10))
            .await,
        "meridian://us-east/mirror/eu-west-m1",
        // Refused at the first step, finding the partition's leader: it may not even
        // describe a topic that is not its own.
        "rule mirror-source-topics",
    );
    // Right CA, wrong role: a broker identity may not produce.
    let broker_id = d.issue("meridian://eu-west/broker/b9", "broker-b9", false);
    let as_broker = d.client(&broker_id).await.unwrap();
    assert_denied(
        as_broker
            .append_raw("eu-west.orders", 0, batch(1), Duration::from_secs(10))
            .await,
        "meridian://eu-west/broker/b9",
        "rule broker-role",
    );
    // A client allowed by the ACLs produces to an ordinary topic, never to a remote one.
    let app_dir = d.issue("meridian://eu-west/client/app", "app", false);
    let app = d.client(&app_dir).await.unwrap();
    app.create_topic(spec("payments")).await.unwrap();
    app.append_raw("payments", 0, batch(2), Duration::from_secs(10))
        .await
        .unwrap();
    assert_denied(
        app.append_raw("us-east.orders", 0, batch(1), Duration::from_secs(10))
            .await,
        "meridian://eu-west/client/app",
        "rule remote-topic",
    );
    assert!(
        d.counter("meridian_authz_denied_total", "role=\"mirror\"") >= 1.0
            && d.counter("meridian_authz_denied_total", "role=\"broker\"") >= 1.0
            && d.counter("meridian_authz_denied_total", "role=\"client\"") >= 1.0,
        "refusals are counted by role"
    );

    // Rotation: a new certificate written over the broker's files is served without a
    // restart; existing connections keep working.
    let long = d.counter("meridian_tls_certificate_expiry_seconds", "");
    assert!(
        long > 300.0 * 86_400.0,
        "issue-deployment's default validity: {long}"
    );
    let original = presented_certificate(&d, &app_dir).await;
    let ca = certs::Ca::load(&d.path("ca")).unwrap();
    let mut rotated = certs::IssueRequest::new("meridian://eu-west/broker/b1".parse().unwrap());
    rotated.days = 5;
    rotated.ips = vec![std::net::IpAddr::from(Ipv4Addr::new(127, 0, OCTET, 1))];
    ca.issue(&rotated)
        .unwrap()
        .save(&d.path("tls/eu-west/b1"))
        .unwrap();
    let short = d.counter("meridian_tls_certificate_expiry_seconds", "");
    assert!(
        short < 6.0 * 86_400.0,
        "the expiry gauge follows the rotated file: {short}"
    );
    let ends = app
        .list_offsets("payments", broker::client::OffsetSpec::Latest)
        .await
        .expect("the existing connection survives the rotation");
    assert_eq!(ends.get(&0), Some(&2), "the two records appended before");
    let rotated_pem = std::fs::read(d.path("tls/eu-west/b1/cert.pem")).unwrap();
    let rotated_der = rustls::pki_types::CertificateDer::pem_slice_iter(&rotated_pem)
        .next()
        .unwrap()
        .unwrap();
    assert_ne!(original, rotated_der, "a new certificate was written");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while presented_certificate(&d, &app_dir).await != rotated_der {
        assert!(
            std::time::Instant::now() < deadline,
            "new connections never presented the rotated certificate"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = d
        .client(&app_dir)
        .await
        .expect("new connections work after the rotation");
    fresh.refresh_metadata().await.unwrap();
    assert!(d.broker.id() > 0, "same broker process throughout");
}

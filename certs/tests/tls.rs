//! Mutual TLS over real sockets on 127.0.0.1: who gets in, who is refused, and what a
//! rotation does to new and established connections.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use certs::{
    ALPN_H2, Ca, ClientAuth, ClientOptions, Identity, IssueRequest, Issued, ReloadOutcome, Role,
    ServerOptions, TlsMaterial, client_config, client_config_with, fingerprint_sha256,
    peer_identity, provider, server_config, server_config_with,
};
use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// What the server saw of one accepted connection.
#[derive(Debug)]
struct Seen {
    identity: Option<Identity>,
    client_cert_fingerprint: Option<String>,
}

/// Guards against a hung test; never part of what is asserted.
const GUARD: Duration = Duration::from_secs(20);

/// An echo server: reports each handshake's outcome on the channel, then echoes bytes.
async fn serve(
    config: Arc<ServerConfig>,
) -> (SocketAddr, mpsc::UnboundedReceiver<std::io::Result<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                    Ok(mut stream) => {
                        let conn = stream.get_ref().1;
                        let seen = Seen {
                            identity: peer_identity(conn),
                            client_cert_fingerprint: conn
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| fingerprint_sha256(c)),
                        };
                        let _ = tx.send(Ok(seen));
                        let mut buf = [0u8; 256];
                        loop {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if stream.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn connect(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(config).connect(name, tcp).await
}

/// Sends a line and expects it back: proves the connection carries data both ways (and,
/// under TLS 1.3, that the server accepted the client certificate).
async fn echo(stream: &mut TlsStream<TcpStream>, msg: &[u8]) -> std::io::Result<()> {
    stream.write_all(msg).await?;
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).await?;
    assert_eq!(back, msg);
    Ok(())
}

async fn next_seen(
    rx: &mut mpsc::UnboundedReceiver<std::io::Result<Seen>>,
) -> std::io::Result<Seen> {
    tokio::time::timeout(GUARD, rx.recv())
        .await
        .unwrap()
        .unwrap()
}

fn rustls_error(err: &std::io::Error) -> &rustls::Error {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a rustls error: {err:?}"))
}

fn server_fingerprint(stream: &TlsStream<TcpStream>) -> String {
    fingerprint_sha256(&stream.get_ref().1.peer_certificates().unwrap()[0])
}

struct Pki {
    _tmp: tempfile::TempDir,
    ca: Ca,
    root: std::path::PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let tmp = tempfile::tempdir().unwrap();
        Pki {
            root: tmp.path().to_owned(),
            _tmp: tmp,
            ca: Ca::generate("test-ca").unwrap(),
        }
    }

    fn issue(&self, req: &IssueRequest) -> Issued {
        self.ca.issue(req).unwrap()
    }

    /// Issues `id` into a TLS directory named after it and loads it.
    fn node(&self, id: &str) -> TlsMaterial {
        let id: Identity = id.parse().unwrap();
        let dir = self.root.join(id.to_string().replace(['/', ':'], "_"));
        self.issue(&IssueRequest::new(id)).save(&dir).unwrap();
        TlsMaterial::load(&dir).unwrap()
    }
}

fn client_without_certificate(material: &TlsMaterial) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in material.ca_certs() {
        roots.add(c.clone()).unwrap();
    }
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[tokio::test]
async fn mtls_handshake_succeeds_and_each_side_sees_the_others_identity() {
    let pki = Pki::new();
    let server = pki.node("meridian://us-east/broker/b1");
    let client = pki.node("meridian://us-east/client/app");
    let server_tls = server_config_with(
        &server,
        &ServerOptions {
            alpn: vec![ALPN_H2.to_vec()],
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let client_tls = client_config_with(
        &client,
        &ClientOptions {
            alpn: vec![ALPN_H2.to_vec()],
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let (addr, mut seen) = serve(server_tls.config).await;

    let mut stream = connect(client_tls.config, addr).await.unwrap();
    echo(&mut stream, b"hello\n").await.unwrap();
    let seen = next_seen(&mut seen).await.unwrap();
    assert_eq!(seen.identity.as_ref(), Some(client.identity()));
    let conn = stream.get_ref().1;
    assert_eq!(peer_identity(conn).as_ref(), Some(server.identity()));
    assert_eq!(conn.alpn_protocol(), Some(ALPN_H2));
}

#[tokio::test]
async fn server_refuses_a_client_without_a_certificate() {
    let pki = Pki::new();
    let server = pki.node("meridian://us-east/broker/b1");
    let (addr, mut seen) = serve(server_config(&server, ClientAuth::Required).unwrap()).await;

    let result = async {
        let mut stream = connect(client_without_certificate(&server), addr).await?;
        echo(&mut stream, b"hello\n").await
    }
    .await;
    assert!(result.is_err(), "an anonymous client got data through");
    let err = next_seen(&mut seen).await.unwrap_err();
    assert!(
        matches!(rustls_error(&err), rustls::Error::NoCertificatesPresented),
        "{err}"
    );
}

#[tokio::test]
async fn optional_client_auth_admits_anonymous_clients_without_an_identity() {
    let pki = Pki::new();
    let server = pki.node("meridian://us-east/broker/b1");
    let (addr, mut seen) = serve(server_config(&server, ClientAuth::Optional).unwrap()).await;
    let mut stream = connect(client_without_certificate(&server), addr)
        .await
        .unwrap();
    echo(&mut stream, b"hello\n").await.unwrap();
    assert_eq!(next_seen(&mut seen).await.unwrap().identity, None);
}

#[tokio::test]
async fn server_refuses_a_certificate_from_another_ca() {
    let pki = Pki::new();
    let server = pki.node("meridian://us-east/broker/b1");
    let (addr, mut seen) = serve(server_config(&server, ClientAuth::Required).unwrap()).await;

    // Same identity, signed by a stranger; the client itself trusts the right CA.
    let stranger = Ca::generate("stranger").unwrap();
    let mut forged = stranger
        .issue(&IssueRequest::new(
            "meridian://us-east/admin/ops".parse().unwrap(),
        ))
        .unwrap();
    forged.ca_pem = pki.ca.cert_pem().to_owned();
    let dir = pki.root.join("forged");
    forged.save(&dir).unwrap();
    let forged = TlsMaterial::load(&dir).unwrap();

    let result = async {
        let mut stream = connect(client_config(&forged).unwrap(), addr).await?;
        echo(&mut stream, b"hello\n").await
    }
    .await;
    assert!(result.is_err(), "a foreign certificate got data through");
    let err = next_seen(&mut seen).await.unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "{err}"
    );
}

#[tokio::test]
async fn client_refuses_a_server_from_another_ca() {
    let pki = Pki::new();
    let client = pki.node("meridian://us-east/client/app");
    let other = Pki::new();
    let server = other.node("meridian://us-east/broker/b1");
    let (addr, _seen) = serve(server_config(&server, ClientAuth::Required).unwrap()).await;
    let err = connect(client_config(&client).unwrap(), addr)
        .await
        .unwrap_err();
    // Both CAs are named "test-ca": the issuer name matches, the signature does not.
    assert!(
        matches!(
            rustls_error(&err),
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            )
        ),
        "{err}"
    );
}

#[tokio::test]
async fn server_refuses_expired_and_not_yet_valid_client_certificates() {
    let pki = Pki::new();
    let server = pki.node("meridian://us-east/broker/b1");
    let (addr, mut seen) = serve(server_config(&server, ClientAuth::Required).unwrap()).await;
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);

    for (name, not_before, not_after) in [
        ("expired", now - 10 * day, now - day),
        ("future", now + day, now + 10 * day),
    ] {
        let mut req = IssueRequest::new(Identity::new("us-east", Role::Client, name).unwrap());
        req.not_before = Some(not_before);
        req.not_after = Some(not_after);
        let dir = pki.root.join(name);
        pki.issue(&req).save(&dir).unwrap();
        let material = TlsMaterial::load(&dir).unwrap();

        let result = async {
            let mut stream = connect(client_config(&material).unwrap(), addr).await?;
            echo(&mut stream, b"hello\n").await
        }
        .await;
        assert!(result.is_err(), "{name} certificate got data through");
        let err = next_seen(&mut seen).await.unwrap_err();
        let ok = match (name, rustls_error(&err)) {
            ("expired", rustls::Error::InvalidCertificate(e)) => matches!(
                e,
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            ),
            ("future", rustls::Error::InvalidCertificate(e)) => matches!(
                e,
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
            ),
            _ => false,
        };
        assert!(ok, "{name}: {err}");
    }
}

#[tokio::test]
async fn plaintext_client_is_refused_and_the_listener_keeps_serving() {
    let pki = Pki::new();
    let server = pki.node("meridian://us-east/broker/b1");
    let client = pki.node("meridian://us-east/client/app");
    let (addr, mut seen) = serve(server_config(&server, ClientAuth::Required).unwrap()).await;

    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let err = next_seen(&mut seen).await.unwrap_err();
    assert!(
        matches!(rustls_error(&err), rustls::Error::InvalidMessage(_)),
        "{err}"
    );
    // The plaintext peer gets no data, only (at most) a TLS alert and a close.
    let mut got = Vec::new();
    let _ = tokio::time::timeout(GUARD, plain.read_to_end(&mut got))
        .await
        .unwrap();
    assert!(!got.windows(4).any(|w| w == b"HTTP"), "{got:?}");

    let mut stream = connect(client_config(&client).unwrap(), addr)
        .await
        .unwrap();
    echo(&mut stream, b"still here\n").await.unwrap();
    assert!(next_seen(&mut seen).await.is_ok());
}

/// A client configuration that always makes a full handshake. A resumed TLS session
/// carries the certificates of the handshake it resumes, so a rotation shows on full
/// handshakes; the rotation tests use fresh sessions to observe exactly that.
fn without_resumption(config: &Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut config = (**config).clone();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

fn rotate(pki: &Pki, dir: &Path, id: &Identity) -> String {
    let issued = pki.issue(&IssueRequest::new(id.clone()));
    issued.save(dir).unwrap();
    fingerprint_sha256(
        &rustls::pki_types::pem::PemObject::from_pem_slice(issued.cert_pem.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
            .unwrap(),
    )
}

#[tokio::test]
async fn rotated_server_cert_is_used_by_new_connections_and_old_ones_keep_working() {
    let pki = Pki::new();
    let server = pki.node("meridian://us-east/broker/b1");
    let client = pki.node("meridian://us-east/client/app");
    let server_tls = server_config_with(
        &server,
        &ServerOptions {
            reload_interval: Duration::ZERO,
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let old_fp = server_tls.resolver.fingerprint();
    let (addr, mut seen) = serve(server_tls.config.clone()).await;
    let client_cfg = without_resumption(&client_config(&client).unwrap());

    let mut first = connect(client_cfg.clone(), addr).await.unwrap();
    echo(&mut first, b"before\n").await.unwrap();
    assert_eq!(server_fingerprint(&first), old_fp);
    next_seen(&mut seen).await.unwrap();

    let new_fp = rotate(&pki, server.dir(), server.identity());
    assert_ne!(new_fp, old_fp);

    // No reload() call: the handshake notices the changed files.
    let mut second = connect(client_cfg, addr).await.unwrap();
    echo(&mut second, b"after\n").await.unwrap();
    assert_eq!(server_fingerprint(&second), new_fp);
    assert_eq!(server_tls.resolver.fingerprint(), new_fp);

    echo(&mut first, b"established\n").await.unwrap();
    assert_eq!(server_fingerprint(&first), old_fp);
}

#[tokio::test]
async fn forced_reload_refuses_broken_files_and_keeps_serving_the_old_cert() {
    let pki = Pki::new();
    let server = pki.node("meridian://us-east/broker/b1");
    let client = pki.node("meridian://us-east/client/app");
    // An interval long enough that only reload() can pick up changes.
    let server_tls = server_config_with(
        &server,
        &ServerOptions {
            reload_interval: Duration::from_secs(3600),
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let old_fp = server_tls.resolver.fingerprint();
    let (addr, _seen) = serve(server_tls.config.clone()).await;
    let client_cfg = without_resumption(&client_config(&client).unwrap());

    assert_eq!(
        server_tls.resolver.reload().unwrap(),
        ReloadOutcome::Unchanged
    );

    // A key that does not match the certificate: refused, old certificate still served.
    let stray = pki.issue(&IssueRequest::new(server.identity().clone()));
    std::fs::write(server.dir().join("key.pem"), &stray.key_pem).unwrap();
    assert!(server_tls.resolver.reload().is_err());
    let mut stream = connect(client_cfg.clone(), addr).await.unwrap();
    echo(&mut stream, b"x\n").await.unwrap();
    assert_eq!(server_fingerprint(&stream), old_fp);

    let new_fp = rotate(&pki, server.dir(), server.identity());
    // Within the check interval a handshake does not look at the files.
    let mut stream = connect(client_cfg.clone(), addr).await.unwrap();
    echo(&mut stream, b"z\n").await.unwrap();
    assert_eq!(server_fingerprint(&stream), old_fp);
    assert_eq!(
        server_tls.resolver.reload().unwrap(),
        ReloadOutcome::Changed {
            fingerprint: new_fp.clone()
        }
    );
    let mut stream = connect(client_cfg, addr).await.unwrap();
    echo(&mut stream, b"y\n").await.unwrap();
    assert_eq!(server_fingerprint(&stream), new_fp);
}

#[tokio::test]
async fn rotated_client_cert_is_presented_on_the_next_connection() {
    let pki = Pki::new();
    let server = pki.node("meridian://us-east/broker/b1");
    let client = pki.node("meridian://us-east/mirror/m1");
    let (addr, mut seen) = serve(server_config(&server, ClientAuth::Required).unwrap()).await;
    let client_tls = client_config_with(
        &client,
        &ClientOptions {
            reload_interval: Duration::ZERO,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let old_fp = client_tls.resolver.fingerprint();
    let client_cfg = without_resumption(&client_tls.config);

    let mut first = connect(client_cfg.clone(), addr).await.unwrap();
    echo(&mut first, b"a\n").await.unwrap();
    assert_eq!(
        next_seen(&mut seen).await.unwrap().client_cert_fingerprint,
        Some(old_fp)
    );

    let new_fp = rotate(&pki, client.dir(), client.identity());
    let mut second = connect(client_cfg, addr).await.unwrap();
    echo(&mut second, b"b\n").await.unwrap();
    let seen_second = next_seen(&mut seen).await.unwrap();
    assert_eq!(seen_second.client_cert_fingerprint, Some(new_fp));
    assert_eq!(seen_second.identity.as_ref(), Some(client.identity()));
    echo(&mut first, b"c\n").await.unwrap();
}

#[tokio::test]
async fn identity_verified_by_the_handshake_drives_the_authorizer() {
    use certs::{Action, Authorizer, AuthzRules};

    let pki = Pki::new();
    let server = pki.node("meridian://eu-west/broker/b1");
    let mirror = pki.node("meridian://us-east/mirror/m1");
    let (addr, mut seen) = serve(server_config(&server, ClientAuth::Required).unwrap()).await;
    let mut stream = connect(client_config(&mirror).unwrap(), addr)
        .await
        .unwrap();
    echo(&mut stream, b"hello\n").await.unwrap();
    let who = next_seen(&mut seen).await.unwrap().identity.unwrap();

    let mut rules = AuthzRules::new("eu-west");
    rules.flow_regions.insert("us-east".to_owned());
    let authz = Authorizer::new(rules).unwrap();
    assert_eq!(
        authz.authorize(&who, Action::Produce, "us-east.orders"),
        Ok(())
    );
    let denied = authz
        .authorize(&who, Action::Produce, "eu-west.orders")
        .unwrap_err();
    assert!(
        denied.to_string().starts_with(
            "permission denied: meridian://us-east/mirror/m1 may not produce `eu-west.orders`"
        ),
        "{denied}"
    );
}

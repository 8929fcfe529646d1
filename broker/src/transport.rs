//! Connections under gRPC: plaintext or mutual TLS, for the broker's listener and for
//! every client channel (the CLI, mirror workers, followers, the controller quorum).
//!
//! The listener takes TLS and, where the deployment allows plaintext clients, plaintext
//! on the same port (the first byte tells: 0x16 opens a TLS handshake). A TLS peer's
//! verified identity travels with each request as [`PeerInfo`], where authorization
//! reads it. Handshakes run concurrently, each in its own task, so one slow or hostile
//! peer never holds up the accept loop.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use certs::Identity;
use prometheus::{IntCounterVec, Opts};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::BrokerError;

/// HTTP/2 receive window per stream (one request/response).
const STREAM_WINDOW: u32 = 32 << 20;
/// HTTP/2 receive window per connection (all streams to one broker).
const CONNECTION_WINDOW: u32 = 128 << 20;

/// How often an idle or busy channel pings its peer (HTTP/2 PING).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may go unanswered before the connection is declared dead.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a peer has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerSecurity {
    /// Plaintext only (no TLS material; single-region deployments with TLS off).
    Plaintext,
    /// TLS with a verified client certificate, or plaintext (anonymous) peers.
    TlsOrPlaintext,
    /// TLS only; the certificate policy is the server config's.
    TlsOnly,
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// The identity its verified certificate names; `None` for plaintext or anonymous TLS.
    pub identity: Option<Identity>,
}

/// TLS handshake counters, by listener and outcome.
#[derive(Debug, Clone)]
pub struct TlsMetrics {
    /// Completed handshakes.
    pub handshakes: IntCounterVec,
    /// Failed handshakes, by reason.
    pub failures: IntCounterVec,
}

static TLS_METRICS: LazyLock<TlsMetrics> = LazyLock::new(|| {
    TlsMetrics {
    handshakes: IntCounterVec::new(
        Opts::new(
            "meridian_tls_handshakes_total",
            "TLS handshakes completed, by side (server, client).",
        ),
        &["side"],
    )
    .expect("valid counter"),
    failures: IntCounterVec::new(
        Opts::new(
            "meridian_tls_handshake_failures_total",
            "TLS handshakes that failed, by side and reason (no-client-certificate, unknown-ca, expired, bad-certificate, timeout, protocol, ...).",
        ),
        &["side", "reason"],
    )
    .expect("valid counter"),
}
});

/// This process's TLS handshake counters.
pub fn tls_metrics() -> &'static TlsMetrics {
    &TLS_METRICS
}

/// A short, stable reason for a failed handshake, for logs and the failure metric.
fn failure_reason(err: &io::Error) -> &'static str {
    let text = err.to_string().to_ascii_lowercase();
    if text.contains("expired") {
        "expired"
    } else if text.contains("unknownissuer")
        || text.contains("unknown issuer")
        || text.contains("unknownca")
    {
        "unknown-ca"
    } else if text.contains("no certificates")
        || text.contains("certificaterequired")
        || text.contains("certificate required")
    {
        "no-client-certificate"
    } else if text.contains("certificate") || text.contains("badcertificate") {
        "bad-certificate"
    } else if text.contains("corrupt message")
        || text.contains("invalidcontenttype")
        || text.contains("invalid message")
    {
        "not-tls"
    } else {
        "protocol"
    }
}

/// One accepted connection: plaintext or TLS.
#[derive(Debug)]
pub enum Conn {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS, with the verified identity (if the peer presented a certificate).
    Tls(Box<server::TlsStream<TcpStream>>, Option<Identity>),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            Conn::Plain(tcp) => PeerInfo {
                remote: tcp.peer_addr().ok(),
                identity: None,
            },
            Conn::Tls(tls, identity) => PeerInfo {
                remote: tls.get_ref().0.peer_addr().ok(),
                identity: identity.clone(),
            },
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts connections on `listener` and yields them ready for gRPC: TLS handshakes done
/// (and refused peers logged and counted) according to `security`.
pub fn incoming(
    listener: TcpListener,
    security: ListenerSecurity,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Conn>> {
    let (ready, stream) = tokio::sync::mpsc::channel(64);
    let acceptor = tls.map(TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            if ready.is_closed() {
                return;
            }
            let ready = ready.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Some(conn) = admit(tcp, remote, security, acceptor).await {
                    let _ = ready.send(Ok(conn)).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(stream)
}

/// Decides one connection: plaintext, a TLS handshake, or a refusal (logged, counted).
async fn admit(
    tcp: TcpStream,
    remote: SocketAddr,
    security: ListenerSecurity,
    acceptor: Option<TlsAcceptor>,
) -> Option<Conn> {
    let acceptor = match (security, acceptor) {
        (ListenerSecurity::Plaintext, _) | (_, None) => return Some(Conn::Plain(tcp)),
        (_, Some(acceptor)) => acceptor,
    };
    let mut first = [0u8; 1];
    let is_tls = matches!(
        tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await,
        Ok(Ok(1)) if first[0] == 0x16
    );
    if !is_tls {
        if security == ListenerSecurity::TlsOrPlaintext {
            return Some(Conn::Plain(tcp));
        }
        tracing::warn!(%remote, "refused a plaintext connection: this listener requires TLS (connect with --tls-dir)");
        tls_metrics()
            .failures
            .with_label_values(&["server", "plaintext"])
            .inc();
        return None;
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            let identity = certs::peer_identity(tls.get_ref().1);
            tls_metrics()
                .handshakes
                .with_label_values(&["server"])
                .inc();
            tracing::debug!(%remote, identity = ?identity.as_ref().map(ToString::to_string), "TLS connection");
            Some(Conn::Tls(Box::new(tls), identity))
        }
        Ok(Err(err)) => {
            let reason = failure_reason(&err);
            tls_metrics()
                .failures
                .with_label_values(&["server", reason])
                .inc();
            tracing::warn!(%remote, reason, %err, "refused a TLS connection");
            None
        }
        Err(_) => {
            tls_metrics()
                .failures
                .with_label_values(&["server", "timeout"])
                .inc();
            tracing::warn!(%remote, "refused a TLS connection: no handshake within 10 s");
            None
        }
    }
}

/// A client TLS configuration from a directory holding `ca.pem`, `cert.pem` and
/// `key.pem` (what `meridian certs issue` writes): mutual TLS with the deployment CA,
/// certificate files re-read when they change.
pub fn client_tls_from_dir(
    dir: &std::path::Path,
) -> Result<Arc<rustls::ClientConfig>, BrokerError> {
    let material = certs::TlsMaterial::load(dir).map_err(|e| BrokerError::InvalidRequest {
        reason: format!("TLS material in {}: {e}", dir.display()),
    })?;
    let options = certs::ClientOptions {
        alpn: vec![certs::ALPN_H2.to_vec()],
        ..certs::ClientOptions::default()
    };
    let tls = certs::client_config_with(&material, &options).map_err(|e| {
        BrokerError::InvalidRequest {
            reason: format!("TLS client configuration from {}: {e}", dir.display()),
        }
    })?;
    Ok(tls.config)
}

/// The address this node speaks from: its own address in the deployment file, so that
/// peers and firewalls see connections come from where the node is known to be.
static NODE_SOURCE_IP: OnceLock<std::net::IpAddr> = OnceLock::new();

/// Makes every channel this process opens connect from `ip` (ignored when unspecified,
/// e.g. a node listening on 0.0.0.0); later calls are ignored.
pub fn set_node_source_ip(ip: std::net::IpAddr) {
    if !ip.is_unspecified() {
        let _ = NODE_SOURCE_IP.set(ip);
    }
}

/// The client TLS configuration this process uses for broker-to-broker channels
/// (replication, controller), set once at start when the node has TLS material.
static NODE_CLIENT_TLS: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();

/// Sets the node's client TLS for internal channels; later calls are ignored.
pub fn set_node_client_tls(config: Arc<rustls::ClientConfig>) {
    let _ = NODE_CLIENT_TLS.set(config);
}

/// The node's client TLS, if it has one.
pub fn node_client_tls() -> Option<Arc<rustls::ClientConfig>> {
    NODE_CLIENT_TLS.get().cloned()
}

/// A lazily connecting gRPC channel to `addr` (`host:port`), over mutual TLS when `tls`
/// is given (the server is verified against the deployment CA and its address).
pub fn channel(
    addr: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
) -> Result<Channel, BrokerError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| BrokerError::InvalidRequest {
            reason: format!("bad broker address {addr:?}: {e}"),
        })?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        // Windows sized for a long fat link: a fetch answer of 16 MiB per partition, many
        // partitions sharing the connection, 100 ms or more of round trip. (Adaptive
        // windows stop growing at 16 MiB per connection, which caps a mirror at
        // ~110 MB/s across 100 ms.)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // A silently cut link (no RST) is detected by HTTP/2 pings within ~10 s; the
        // channel then reconnects, instead of waiting out TCP's retransmission backoff.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let source = NODE_SOURCE_IP.get().copied();
    Ok(match tls {
        None => endpoint.local_address(source).connect_lazy(),
        Some(config) => endpoint.connect_with_connector_lazy(TlsConnect {
            connector: TlsConnector::from(config),
            source,
        }),
    })
}

/// The tower connector behind a TLS channel.
#[derive(Clone)]
struct TlsConnect {
    connector: TlsConnector,
    source: Option<std::net::IpAddr>,
}

impl tower::Service<Uri> for TlsConnect {
    type Response = hyper_util::rt::TokioIo<client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.connector.clone();
        let source = self.source;
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = connect_from(source, &host, port).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
            match connector.connect(name, tcp).await {
                Ok(tls) => {
                    tls_metrics()
                        .handshakes
                        .with_label_values(&["client"])
                        .inc();
                    Ok(hyper_util::rt::TokioIo::new(tls))
                }
                Err(err) => {
                    let reason = failure_reason(&err);
                    tls_metrics()
                        .failures
                        .with_label_values(&["client", reason])
                        .inc();
                    Err(io::Error::new(
                        err.kind(),
                        format!("TLS handshake with {host}:{port} failed ({reason}): {err}"),
                    ))
                }
            }
        })
    }
}

/// A TCP connection to `host:port`, from `source` when given.
async fn connect_from(
    source: Option<std::net::IpAddr>,
    host: &str,
    port: u16,
) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect((host, port)).await;
    };
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = match addr {
            SocketAddr::V4(_) if source.is_ipv4() => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) if source.is_ipv6() => tokio::net::TcpSocket::new_v6()?,
            _ => continue,
        };
        socket.bind(SocketAddr::new(source, 0))?;
        match socket.connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("no address of {host} reachable from {source}"),
        )
    }))
}

/// A node's TLS: its listener's security and configurations, from the deployment file's
/// listener modes and the node's certificate directory.
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// What the listener accepts.
    pub security: ListenerSecurity,
    /// The acceptor's configuration (verifies clients against the deployment CA).
    pub server: Arc<rustls::ServerConfig>,
    /// The node's client configuration (replication, controller, mirror channels).
    pub client: Arc<rustls::ClientConfig>,
    /// The node's certificate, for the expiry gauge.
    pub cert_path: std::path::PathBuf,
    /// The identity the node presents.
    pub identity: Identity,
}

impl NodeTls {
    /// Loads the node's TLS material when its certificate exists. Without it the node
    /// runs plaintext only if the deployment allows it: no mirror flow touches its region
    /// (inter-region traffic is always mutual TLS) and neither client nor inter-broker
    /// listeners require TLS; otherwise start-up fails naming the missing file.
    pub fn load(view: &topology::NodeView) -> Result<Option<NodeTls>, BrokerError> {
        use topology::TlsMode;
        let listeners = view.tls.listeners;
        let cert_path = view.tls.cert.clone();
        if !cert_path.exists() {
            let why = if !view.region_flows.is_empty() {
                Some(format!(
                    "region {} takes part in mirror flows and inter-region traffic is always mutual TLS",
                    view.region
                ))
            } else if listeners.client == TlsMode::Required {
                Some("tls.listeners.client is \"required\"".to_owned())
            } else if listeners.inter_broker == TlsMode::Required {
                Some("tls.listeners.inter_broker is \"required\"".to_owned())
            } else {
                None
            };
            return match why {
                None => Ok(None),
                Some(why) => Err(BrokerError::InvalidRequest {
                    reason: format!(
                        "{}/{} has no certificate at {} but needs one: {why}. Issue the deployment's certificates with `meridian certs issue-deployment --topology FILE --ca CA_DIR`",
                        view.region,
                        view.name,
                        cert_path.display()
                    ),
                }),
            };
        }
        let dir = cert_path.parent().unwrap_or(std::path::Path::new("."));
        let material = certs::TlsMaterial::load(dir).map_err(|e| BrokerError::InvalidRequest {
            reason: format!("{}/{}: {e}", view.region, view.name),
        })?;
        let security = if listeners.client == TlsMode::Required
            && listeners.inter_broker == TlsMode::Required
        {
            ListenerSecurity::TlsOnly
        } else {
            ListenerSecurity::TlsOrPlaintext
        };
        let server = certs::server_config_with(
            &material,
            &certs::ServerOptions {
                client_auth: if security == ListenerSecurity::TlsOnly {
                    certs::ClientAuth::Required
                } else {
                    certs::ClientAuth::Optional
                },
                alpn: vec![certs::ALPN_H2.to_vec()],
                ..certs::ServerOptions::default()
            },
        )
        .map_err(|e| BrokerError::InvalidRequest {
            reason: format!(
                "{}/{} TLS server configuration: {e}",
                view.region, view.name
            ),
        })?;
        let client = certs::client_config_with(
            &material,
            &certs::ClientOptions {
                alpn: vec![certs::ALPN_H2.to_vec()],
                ..certs::ClientOptions::default()
            },
        )
        .map_err(|e| BrokerError::InvalidRequest {
            reason: format!(
                "{}/{} TLS client configuration: {e}",
                view.region, view.name
            ),
        })?;
        Ok(Some(NodeTls {
            security,
            server: server.config,
            client: client.config,
            cert_path,
            identity: material.identity().clone(),
        }))
    }
}

/// Seconds until the certificate at `path` expires (negative once expired), re-read
/// each time so a rotated file shows its new date.
pub fn certificate_expiry_seconds(path: &std::path::Path) -> Option<i64> {
    let info = certs::inspect_file(path).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Some(info.not_after_unix - now)
}

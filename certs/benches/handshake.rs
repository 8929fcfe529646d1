//! Full mutual-TLS handshakes per second with the deployment's configurations (ECDSA
//! P-256 certificates, TLS 1.3, client certificate verified against the CA), in memory:
//! the CPU cost a broker pays per new connection, without socket noise. Session
//! resumption is off, so every handshake is a full one.
//!
//! `cargo bench -p certs --bench handshake`

use std::sync::Arc;

use certs::{Ca, ClientAuth, IssueRequest, TlsMaterial};
use criterion::{Criterion, criterion_group, criterion_main};
use rustls::{ClientConnection, ServerConnection};

fn material(ca: &Ca, identity: &str, dir: &std::path::Path) -> TlsMaterial {
    ca.issue(&IssueRequest::new(identity.parse().unwrap()))
        .unwrap()
        .save(dir)
        .unwrap();
    TlsMaterial::load(dir).unwrap()
}

/// Moves every pending TLS record from one side to the other.
fn pump(from: &mut dyn FnMut(&mut Vec<u8>), to: &mut dyn FnMut(&[u8])) {
    let mut buf = Vec::new();
    from(&mut buf);
    if !buf.is_empty() {
        to(&buf);
    }
}

fn handshake(client_config: &Arc<rustls::ClientConfig>, server_config: &Arc<rustls::ServerConfig>) {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(client_config.clone(), name).unwrap();
    let mut server = ServerConnection::new(server_config.clone()).unwrap();
    while client.is_handshaking() || server.is_handshaking() {
        pump(
            &mut |buf| {
                client.write_tls(buf).unwrap();
            },
            &mut |bytes| {
                server.read_tls(&mut &bytes[..]).unwrap();
                server.process_new_packets().unwrap();
            },
        );
        pump(
            &mut |buf| {
                server.write_tls(buf).unwrap();
            },
            &mut |bytes| {
                client.read_tls(&mut &bytes[..]).unwrap();
                client.process_new_packets().unwrap();
            },
        );
    }
    assert!(
        certs::peer_identity(&server).is_some(),
        "the client was verified"
    );
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("bench-ca").unwrap();
    let server = material(
        &ca,
        "meridian://eu-west/broker/b1",
        &dir.path().join("server"),
    );
    let client = material(
        &ca,
        "meridian://eu-west/client/bench",
        &dir.path().join("client"),
    );
    let server_config = certs::server_config(&server, ClientAuth::Required).unwrap();
    let mut client_config = (*certs::client_config(&client).unwrap()).clone();
    client_config.resumption = rustls::client::Resumption::disabled();
    let client_config = Arc::new(client_config);
    c.bench_function("full mutual-TLS handshake (in memory)", |b| {
        b.iter(|| handshake(&client_config, &server_config))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

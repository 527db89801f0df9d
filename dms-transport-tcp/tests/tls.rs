//! `tcp+tls://` over real loopback sockets: each way a peer's credentials can be wrong is
//! refused with its own typed error on both sides (the dialler's `connect` result, the
//! acceptor's `Incoming::Refused`), a good pair links under the certificates' service
//! paths, a TLS listener never accepts plaintext (RELIABILITY S2), a TLS dialler meeting
//! a plaintext server fails typed, and a stalled TLS handshake ends at the handshake
//! timeout.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod tls_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use dms_core::path::ServicePath;
use dms_core::wire::{Handshake, HandshakeConfig, Limits, SocketType};
use dms_core::{
    AuthError, Endpoint, Incoming, MessageMiddleware, MiddlewareError, Multipart, Rejection, Role,
};
use dms_test_support::wait::{link_up, message, next, within};
use dms_tls::TlsIdentity;
use dms_tls::dev::DevCa;
use dms_transport_tcp::{TcpConfig, TcpMiddleware};
use tls_support::{builder, identity, identity_of, middleware};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SERVER: &str = "/tls/t/tcp/w1/g1/Server/server-1";
const CLIENT: &str = "/tls/t/tcp/w1/g1/Client/client-1";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn path(path: &str) -> ServicePath {
    path.parse().unwrap()
}

fn dev_ca() -> DevCa {
    DevCa::generate().unwrap()
}

/// An identity for `name` issued by `issuer`, trusting `trusted`.
fn id(name: &str, issuer: &DevCa, trusted: &DevCa) -> TlsIdentity {
    identity(&path(name), issuer, trusted)
}

/// An identity for `name` whose certificate expired a day ago, trusting its issuer.
fn expired(name: &str, ca: &DevCa) -> TlsIdentity {
    let now = SystemTime::now();
    let cert = ca
        .issue_with_validity(&path(name), now - 30 * DAY, now - DAY)
        .unwrap();
    identity_of(&cert, ca)
}

fn node(tls: TlsIdentity) -> TcpMiddleware {
    middleware(builder(tls))
}

/// `m` bound on a loopback port, under its own scheme.
async fn bound(m: &TcpMiddleware) -> Endpoint {
    let endpoint = Endpoint::new(m.scheme(), "127.0.0.1:0").unwrap();
    within("bind", m.bind(&endpoint)).await.unwrap()
}

fn addr(endpoint: &Endpoint) -> SocketAddr {
    endpoint.address().parse().unwrap()
}

/// The auth error of a failed `connect`.
async fn connect_refused(client: &TcpMiddleware, endpoint: &Endpoint) -> AuthError {
    match within("connect", client.connect(endpoint)).await {
        Err(MiddlewareError::Auth(error)) => error,
        Err(other) => panic!("dialler: not an auth error: {other:?}"),
        Ok(peer) => panic!("dialler: linked to {peer} instead of being refused"),
    }
}

/// The error of the next connection the acceptor refuses (a link coming up or a message
/// instead fails the test).
async fn accept_refused_with(server: &TcpMiddleware) -> Arc<MiddlewareError> {
    loop {
        match next(server).await {
            Incoming::Refused { error, .. } => return error,
            Incoming::LinkUp { peer, .. } => panic!("acceptor: {peer} linked"),
            Incoming::Message(msg) => panic!("acceptor: delivered {msg:?}"),
            _ => {}
        }
    }
}

/// The auth error of the next connection the acceptor refuses.
async fn accept_refused(server: &TcpMiddleware) -> AuthError {
    match &*accept_refused_with(server).await {
        MiddlewareError::Auth(error) => error.clone(),
        other => panic!("acceptor: not an auth error: {other:?}"),
    }
}

/// Dials `server` from `client` and returns both sides' errors (dialler, acceptor).
async fn refusal(server: &TcpMiddleware, client: &TcpMiddleware) -> (AuthError, AuthError) {
    let endpoint = bound(server).await;
    let dialler = connect_refused(client, &endpoint).await;
    let acceptor = accept_refused(server).await;
    (dialler, acceptor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_mutual_tls_links_under_the_certified_paths() {
    let ca = dev_ca();
    let server = node(id(SERVER, &ca, &ca));
    let client = node(id(CLIENT, &ca, &ca));
    assert_eq!(server.scheme(), "tcp+tls");
    let endpoint = bound(&server).await;
    assert_eq!(endpoint.scheme(), "tcp+tls");
    let server_id = within("connect", client.connect(&endpoint)).await.unwrap();
    assert_eq!(server_id, path(SERVER).peer_id());
    assert_eq!(
        link_up(&client).await,
        (path(SERVER).peer_id(), Role::Connector)
    );
    assert_eq!(
        link_up(&server).await,
        (path(CLIENT).peer_id(), Role::Acceptor)
    );
    client
        .send(Multipart::from_frames([
            server_id.to_frame(),
            "ping".into(),
        ]))
        .await
        .unwrap();
    let msg = message(&server).await;
    assert_eq!(&msg[0][..], path(CLIENT).as_str().as_bytes());
    assert_eq!(&msg[1][..], b"ping");
    server
        .send(Multipart::from_frames([msg[0].clone(), "pong".into()]))
        .await
        .unwrap();
    assert_eq!(&message(&client).await[1][..], b"pong");
    assert_eq!(server.tls_stats().handshake_failures, 0);
}

/// The acceptor's certificate is of a CA the dialler does not trust: the dialler's check
/// fails first (TLS 1.3: the server's certificate comes first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialler_refuses_a_server_of_another_ca() {
    let (ours, theirs) = (dev_ca(), dev_ca());
    let server = node(id(SERVER, &theirs, &theirs));
    let client = node(id(CLIENT, &ours, &ours));
    let (dialler, acceptor) = refusal(&server, &client).await;
    assert_eq!(dialler, AuthError::UnknownIssuer);
    assert_eq!(
        acceptor,
        AuthError::RejectedByPeer(Rejection::UnknownIssuer)
    );
    assert_eq!(client.tls_stats().handshake_failures, 1);
}

/// The dialler trusts the acceptor's CA, but its own certificate is of another CA: the
/// acceptor refuses it once the dialler's side of the handshake is done; the dialler
/// reads the alert where it waits for the ZMTP greeting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptor_refuses_a_client_of_another_ca() {
    let (ca, foreign) = (dev_ca(), dev_ca());
    let server = node(id(SERVER, &ca, &ca));
    let client = node(id(CLIENT, &foreign, &ca));
    let (dialler, acceptor) = refusal(&server, &client).await;
    assert_eq!(acceptor, AuthError::UnknownIssuer);
    assert_eq!(dialler, AuthError::RejectedByPeer(Rejection::UnknownIssuer));
    assert_eq!(server.tls_stats().handshake_failures, 1);
    assert!(server.peers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptor_refuses_an_expired_client_certificate() {
    let ca = dev_ca();
    let server = node(id(SERVER, &ca, &ca));
    let client = node(expired(CLIENT, &ca));
    let (dialler, acceptor) = refusal(&server, &client).await;
    assert_eq!(acceptor, AuthError::Expired);
    assert_eq!(dialler, AuthError::RejectedByPeer(Rejection::Expired));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialler_refuses_an_expired_server_certificate() {
    let ca = dev_ca();
    let server = node(expired(SERVER, &ca));
    let client = node(id(CLIENT, &ca, &ca));
    let (dialler, acceptor) = refusal(&server, &client).await;
    assert_eq!(dialler, AuthError::Expired);
    assert_eq!(acceptor, AuthError::RejectedByPeer(Rejection::Expired));
}

/// A dialler that presents no certificate (a raw rustls client without one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptor_refuses_a_dialler_without_certificate() {
    let ca = dev_ca();
    let server = node(id(SERVER, &ca, &ca));
    let endpoint = bound(&server).await;
    let tls = id(CLIENT, &ca, &ca);
    let config = tls
        .client_config_without_certificate_for_tests(&[dms_tls::ALPN])
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr(&endpoint)).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("dms").unwrap();
    // TLS 1.3: the client's handshake completes before the server checks its (missing)
    // certificate; the refusal arrives as an alert on the first read.
    let mut stream = within("TLS handshake", connector.connect(name, tcp))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = within("the server's answer", stream.read(&mut buf)).await;
    let dialler = dms_tls::auth_error_of_io(&read.unwrap_err()).unwrap();
    assert_eq!(
        dialler,
        AuthError::RejectedByPeer(Rejection::MissingCertificate)
    );
    assert_eq!(accept_refused(&server).await, AuthError::MissingCertificate);
    assert!(server.peers().is_empty());
}

/// The dialler's certificate is valid, but for another path than the identity it
/// announces in ZMTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptor_refuses_a_dialler_announcing_another_path() {
    const OTHER: &str = "/tls/t/tcp/w1/g1/Client/impostor";
    let ca = dev_ca();
    let server = node(id(SERVER, &ca, &ca));
    let client = middleware(builder(id(CLIENT, &ca, &ca)).identity(OTHER));
    let (dialler, acceptor) = refusal(&server, &client).await;
    assert_eq!(
        acceptor,
        AuthError::PathMismatch {
            certified: CLIENT.into(),
            announced: OTHER.into(),
        }
    );
    assert_eq!(dialler, AuthError::RejectedByPeer(Rejection::PathMismatch));
    assert_eq!(server.stats().handshake_failures, 1);
    assert!(server.peers().is_empty());
    assert!(client.peers().is_empty());
}

/// The acceptor announces another path than its certificate's: the dialler refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialler_refuses_an_acceptor_announcing_another_path() {
    const OTHER: &str = "/tls/t/tcp/w1/g1/Server/impostor";
    let ca = dev_ca();
    let server = middleware(builder(id(SERVER, &ca, &ca)).identity(OTHER));
    let client = node(id(CLIENT, &ca, &ca));
    let endpoint = bound(&server).await;
    assert_eq!(
        connect_refused(&client, &endpoint).await,
        AuthError::PathMismatch {
            certified: SERVER.into(),
            announced: OTHER.into(),
        }
    );
    // The acceptor took the dialler's READY before the refusal arrived: its link comes
    // up and goes down at once (or, had it not, it names the refusal).
    loop {
        match next(&server).await {
            Incoming::Refused { error, .. } => {
                assert!(
                    matches!(
                        &*error,
                        MiddlewareError::Auth(AuthError::RejectedByPeer(Rejection::PathMismatch))
                    ),
                    "{error}"
                );
                break;
            }
            Incoming::LinkDown { peer, .. } => {
                assert_eq!(peer, path(CLIENT).peer_id());
                break;
            }
            Incoming::Message(msg) => panic!("acceptor: delivered {msg:?}"),
            _ => {}
        }
    }
}

/// The ZMTP greeting and READY a plaintext peer named `identity` sends first.
fn plaintext_handshake(identity: &str) -> BytesMut {
    let mut handshake = Handshake::new(HandshakeConfig {
        socket_type: SocketType::Dealer,
        identity: bytes::Bytes::copy_from_slice(identity.as_bytes()),
        limits: Limits::default(),
    });
    let mut out = BytesMut::new();
    handshake.poll_transmit(&mut out);
    out
}

/// RELIABILITY S2: a plaintext ZMTP greeting (and READY, and a message) to a TLS
/// listener is closed with nothing read, nothing written and nothing delivered; the
/// refusal is typed and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_refuses_a_plaintext_greeting() {
    let ca = dev_ca();
    let server = node(id(SERVER, &ca, &ca));
    let endpoint = bound(&server).await;
    let mut raw = TcpStream::connect(addr(&endpoint)).await.unwrap();
    let mut hello = plaintext_handshake(CLIENT);
    hello.extend_from_slice(&[0x00, 0x05, b'h', b'e', b'l', b'l', b'o']); // a message
    raw.write_all(&hello).await.unwrap();
    match accept_refused(&server).await {
        AuthError::NotTls(_) => {}
        other => panic!("not NotTls: {other:?}"),
    }
    // Closed without a byte of ours (no TLS alert, no ZMTP greeting).
    let mut answer = Vec::new();
    let read = within("the close", raw.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "the listener wrote {answer:?}");
    assert!(
        read.is_ok() || read.unwrap_err().kind() == std::io::ErrorKind::ConnectionReset,
        "closed"
    );
    let stats = server.tls_stats();
    assert_eq!((stats.plaintext_refused, stats.handshake_failures), (1, 1));
    assert!(server.peers().is_empty());
    assert_eq!(server.stats().links_up, 0);

    // A plaintext DMS middleware dialling it fails and links nothing either.
    let plain = TcpMiddleware::new(TcpConfig::builder().identity(CLIENT).build().unwrap());
    let as_tcp = Endpoint::new("tcp", endpoint.address()).unwrap();
    assert!(
        within("plaintext dial", plain.connect(&as_tcp))
            .await
            .is_err()
    );
    assert!(matches!(
        accept_refused(&server).await,
        AuthError::NotTls(_)
    ));
    assert_eq!(server.tls_stats().plaintext_refused, 2);
    assert!(server.peers().is_empty());
}

/// A TLS dialler meeting a plaintext (ZMTP) server fails with a typed error, and the
/// plaintext server links nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_dialler_refuses_a_plaintext_server() {
    let ca = dev_ca();
    let plain = TcpMiddleware::new(TcpConfig::builder().identity(SERVER).build().unwrap());
    let endpoint = bound(&plain).await;
    let client = node(id(CLIENT, &ca, &ca));
    let as_tls = Endpoint::new("tcp+tls", endpoint.address()).unwrap();
    match connect_refused(&client, &as_tls).await {
        AuthError::NotTls(_) => {}
        other => panic!("not NotTls: {other:?}"),
    }
    assert!(plain.peers().is_empty());
    assert_eq!(plain.stats().links_up, 0);
    // The scheme is the medium: a tcp+tls middleware does not dial tcp:// at all.
    assert!(matches!(
        within("dial tcp://", client.connect(&endpoint)).await,
        Err(MiddlewareError::InvalidEndpoint(_) | MiddlewareError::UnsupportedEndpoint(_))
    ));
}

/// A slowloris on TLS (a ClientHello that never completes, or nothing at all) is closed
/// at the handshake timeout, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_ends_at_the_handshake_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let ca = dev_ca();
    let limits = Limits::builder().handshake_timeout(TIMEOUT).build();
    let server = middleware(builder(id(SERVER, &ca, &ca)).limits(limits));
    let endpoint = bound(&server).await;
    // A TLS record header announcing a ClientHello that never comes, and a silent one.
    let started = Instant::now();
    let mut partial = TcpStream::connect(addr(&endpoint)).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x01, 0x00])
        .await
        .unwrap();
    let mut silent = TcpStream::connect(addr(&endpoint)).await.unwrap();
    for _ in 0..2 {
        match &*accept_refused_with(&server).await {
            MiddlewareError::HandshakeTimeout(t) => assert_eq!(*t, TIMEOUT),
            other => panic!("not a handshake timeout: {other:?}"),
        }
    }
    assert!(started.elapsed() >= TIMEOUT);
    for stream in [&mut partial, &mut silent] {
        let mut rest = Vec::new();
        let read = within("the close", stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok() || read.unwrap_err().kind() == std::io::ErrorKind::ConnectionReset);
    }
    assert_eq!(server.tls_stats().handshake_failures, 2);
    assert!(server.peers().is_empty());
}

//! Mutual TLS over real QUIC connections on loopback: each way a peer's credentials can be
//! wrong is refused with its own typed error on both sides — the dialler's `connect`
//! result and the acceptor's `Incoming::Refused` — and a good pair links under the
//! certificates' service paths.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dms_core::path::ServicePath;
use dms_core::{
    AuthError, Endpoint, Incoming, MessageMiddleware, MiddlewareError, Rejection, Role,
};
use dms_test_support::wait::{link_up, next, within};
use dms_tls::TlsIdentity;
use dms_tls::dev::{DevCa, IssuedCert};
use dms_transport_quic::{ALPN, QuicConfig, QuicConfigBuilder, QuicMiddleware};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

const SERVER: &str = "/tls/t/quic/w1/g1/Server/server-1";
const CLIENT: &str = "/tls/t/quic/w1/g1/Client/client-1";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn path(path: &str) -> ServicePath {
    path.parse().unwrap()
}

fn dev_ca() -> DevCa {
    DevCa::generate().unwrap()
}

/// An identity with `cert` (for its path), trusting `trusted`.
fn identity_of(cert: &IssuedCert, trusted: &DevCa) -> TlsIdentity {
    TlsIdentity::from_pem(
        cert.cert_pem.as_bytes(),
        cert.key_pem.as_bytes(),
        trusted.ca_pem().as_bytes(),
    )
    .unwrap()
}

/// An identity for `name` issued by `issuer`, trusting `trusted`.
fn identity(name: &str, issuer: &DevCa, trusted: &DevCa) -> TlsIdentity {
    identity_of(&issuer.issue(&path(name)).unwrap(), trusted)
}

/// An identity for `name` whose certificate expired a day ago, trusting its issuer.
fn expired(name: &str, ca: &DevCa) -> TlsIdentity {
    let now = SystemTime::now();
    let cert = ca
        .issue_with_validity(&path(name), now - 30 * DAY, now - DAY)
        .unwrap();
    identity_of(&cert, ca)
}

fn middleware(config: QuicConfigBuilder) -> QuicMiddleware {
    QuicMiddleware::new(config.build().unwrap()).unwrap()
}

fn plain(tls: TlsIdentity) -> QuicMiddleware {
    middleware(QuicConfig::builder(tls))
}

/// `server` bound on a loopback port.
async fn bound(server: &QuicMiddleware) -> Endpoint {
    within("bind", server.bind(&"quic://127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap()
}

/// The auth error of a failed `connect`.
async fn connect_refused(client: &QuicMiddleware, endpoint: &Endpoint) -> AuthError {
    match within("connect", client.connect(endpoint)).await {
        Err(MiddlewareError::Auth(error)) => error,
        Err(other) => panic!("dialler: not an auth error: {other:?}"),
        Ok(peer) => panic!("dialler: linked to {peer} instead of being refused"),
    }
}

/// The auth error of the next connection the acceptor refuses (a link coming up instead
/// fails the test).
async fn accept_refused(server: &QuicMiddleware) -> AuthError {
    loop {
        match next(server).await {
            Incoming::Refused { error, .. } => match &*error {
                MiddlewareError::Auth(error) => return error.clone(),
                other => panic!("acceptor: not an auth error: {other:?}"),
            },
            Incoming::LinkUp { peer, .. } => panic!("acceptor: {peer} linked"),
            _ => {}
        }
    }
}

/// Dials `server` from `client` and returns both sides' errors (dialler, acceptor).
async fn refusal(server: &QuicMiddleware, client: &QuicMiddleware) -> (AuthError, AuthError) {
    let endpoint = bound(server).await;
    let dialler = connect_refused(client, &endpoint).await;
    let acceptor = accept_refused(server).await;
    (dialler, acceptor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certified_paths_are_the_peer_ids() {
    let ca = dev_ca();
    let server = plain(identity(SERVER, &ca, &ca));
    let client = plain(identity(CLIENT, &ca, &ca));
    let endpoint = bound(&server).await;
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
    assert_eq!(server.peers(), vec![path(CLIENT).peer_id()]);
}

/// The acceptor's certificate is not signed by the CA the dialler trusts: the dialler's
/// check fails first (TLS 1.3: the server's certificate comes first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialler_refuses_a_server_of_another_ca() {
    let (ours, theirs) = (dev_ca(), dev_ca());
    let server = plain(identity(SERVER, &theirs, &theirs));
    let client = plain(identity(CLIENT, &ours, &ours));
    let (dialler, acceptor) = refusal(&server, &client).await;
    assert_eq!(dialler, AuthError::UnknownIssuer);
    assert_eq!(
        acceptor,
        AuthError::RejectedByPeer(Rejection::UnknownIssuer)
    );
}

/// The dialler trusts the acceptor's CA, but its own certificate is of another CA: the
/// acceptor refuses it after the dialler's side of the handshake is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptor_refuses_a_client_of_another_ca() {
    let (ca, foreign) = (dev_ca(), dev_ca());
    let server = plain(identity(SERVER, &ca, &ca));
    let client = plain(identity(CLIENT, &foreign, &ca));
    let (dialler, acceptor) = refusal(&server, &client).await;
    assert_eq!(acceptor, AuthError::UnknownIssuer);
    assert_eq!(dialler, AuthError::RejectedByPeer(Rejection::UnknownIssuer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptor_refuses_an_expired_client_certificate() {
    let ca = dev_ca();
    let server = plain(identity(SERVER, &ca, &ca));
    let client = plain(expired(CLIENT, &ca));
    let (dialler, acceptor) = refusal(&server, &client).await;
    assert_eq!(acceptor, AuthError::Expired);
    assert_eq!(dialler, AuthError::RejectedByPeer(Rejection::Expired));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialler_refuses_an_expired_server_certificate() {
    let ca = dev_ca();
    let server = plain(expired(SERVER, &ca));
    let client = plain(identity(CLIENT, &ca, &ca));
    let (dialler, acceptor) = refusal(&server, &client).await;
    assert_eq!(dialler, AuthError::Expired);
    assert_eq!(acceptor, AuthError::RejectedByPeer(Rejection::Expired));
}

/// A dialler that presents no certificate (a quinn client configuration without one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptor_refuses_a_dialler_without_certificate() {
    let ca = dev_ca();
    let server = plain(identity(SERVER, &ca, &ca));
    let tls = identity(CLIENT, &ca, &ca);
    let client_tls = QuicClientConfig::try_from(
        tls.client_config_without_certificate_for_tests(&[ALPN])
            .unwrap(),
    )
    .unwrap();
    let server_tls = QuicServerConfig::try_from(tls.server_config(&[ALPN]).unwrap()).unwrap();
    let client = QuicMiddleware::with_configs(
        QuicConfig::builder(tls).build().unwrap(),
        quinn::ServerConfig::with_crypto(Arc::new(server_tls)),
        quinn::ClientConfig::new(Arc::new(client_tls)),
    );
    let (dialler, acceptor) = refusal(&server, &client).await;
    assert_eq!(acceptor, AuthError::MissingCertificate);
    assert_eq!(
        dialler,
        AuthError::RejectedByPeer(Rejection::MissingCertificate)
    );
}

/// The dialler's certificate is valid, but for another path than the identity it
/// announces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptor_refuses_a_dialler_announcing_another_path() {
    const OTHER: &str = "/tls/t/quic/w1/g1/Client/impostor";
    let ca = dev_ca();
    let server = plain(identity(SERVER, &ca, &ca));
    let client =
        middleware(QuicConfig::builder(identity(CLIENT, &ca, &ca)).identity(path(OTHER).peer_id()));
    let (dialler, acceptor) = refusal(&server, &client).await;
    assert_eq!(
        acceptor,
        AuthError::PathMismatch {
            certified: CLIENT.into(),
            announced: OTHER.into(),
        }
    );
    assert_eq!(dialler, AuthError::RejectedByPeer(Rejection::PathMismatch));
    assert_eq!(server.stats().links.handshake_failures, 1);
    assert!(server.peers().is_empty());
}

/// The acceptor announces another path than its certificate's: the dialler refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialler_refuses_an_acceptor_announcing_another_path() {
    const OTHER: &str = "/tls/t/quic/w1/g1/Server/impostor";
    let ca = dev_ca();
    let server =
        middleware(QuicConfig::builder(identity(SERVER, &ca, &ca)).identity(path(OTHER).peer_id()));
    let client = plain(identity(CLIENT, &ca, &ca));
    let endpoint = bound(&server).await;
    assert_eq!(
        connect_refused(&client, &endpoint).await,
        AuthError::PathMismatch {
            certified: SERVER.into(),
            announced: OTHER.into(),
        }
    );
    // The acceptor may have taken the dialler's READY before the refusal arrived (then
    // its link goes down at once); if it had not, it names the refusal.
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
            _ => {}
        }
    }
}

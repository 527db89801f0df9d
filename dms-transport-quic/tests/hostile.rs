//! Hostile input at a QUIC node: random datagrams, a wrong ALPN, garbage on the link's
//! stream after a valid TLS handshake, extra streams. Each case ends at most the offending
//! connection; the node keeps serving (after each, a legitimate client connects and
//! round-trips a message, and a link that was up before still works).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dms_core::wire::{HandshakeError, Limits};
use dms_core::{AuthError, Endpoint, Incoming, MessageMiddleware, MiddlewareError, PeerId};
use dms_test_support::wait::{link_up, next, within};
use dms_transport_quic::{QuicMiddleware, codes};
use support::{Rand, RawLink, assert_serves, node, raw_client_config, raw_endpoint, round_trip};
use tokio::net::UdpSocket;

/// A server with a healthy client linked to it.
struct Setup {
    dir: tempfile::TempDir,
    server: QuicMiddleware,
    endpoint: Endpoint,
    client: QuicMiddleware,
    server_id: PeerId,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::builder()
        .handshake_timeout(Duration::from_secs(2))
        .build();
    let (server, endpoint) = support::server(dir.path(), "server", |b| b.limits(limits)).await;
    let client = node(dir.path(), "healthy", |b| b);
    let server_id = client.connect(&endpoint).await.unwrap();
    link_up(&server).await;
    link_up(&client).await;
    Setup {
        dir,
        server,
        endpoint,
        client,
        server_id,
    }
}

impl Setup {
    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node still serves: the link that was up carries messages both ways, and a new
    /// legitimate client (`name`) connects and round-trips.
    async fn assert_healthy(&self, name: &str) {
        round_trip(&self.client, &self.server_id, &self.server).await;
        let _fresh = assert_serves(self.dir(), name, &self.server, &self.endpoint).await;
    }

    /// The next `Refused` event.
    async fn refused(&self) -> Arc<MiddlewareError> {
        loop {
            match next(&self.server).await {
                Incoming::Refused { error, .. } => return error,
                Incoming::LinkUp { peer, .. } => panic!("hostile peer {peer} linked"),
                Incoming::LinkDown { peer, cause, .. } => panic!("link of {peer} down: {cause}"),
                Incoming::Message(msg) => panic!("hostile message {msg:?} delivered"),
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_datagrams_are_ignored() {
    let s = setup().await;
    let target = support::addr(&s.endpoint);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = Rand::new(0xbad_da7a);
    for i in 0..3_000u32 {
        let len = 1 + rng.below(1500) as usize;
        let mut datagram = rng.bytes(len);
        // A third look like QUIC v1 Initials (long header, version 1, padded to 1,200
        // bytes): they get as far as header parsing and packet decryption.
        if i % 3 == 0 {
            datagram.resize(1200.max(len), 0);
            datagram[0] = 0xc0 | (datagram[0] & 0x0f);
            datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
            datagram[5] = 8 + (datagram[5] % 13); // DCID length 8..=20
        }
        socket.send_to(&datagram, target).await.unwrap();
        if i % 100 == 0 {
            tokio::task::yield_now().await; // let the server drain its socket
        }
    }
    // Nothing becomes a connection, or even a handshake.
    s.assert_healthy("after-junk").await;
    let stats = s.server.stats();
    assert_eq!(stats.links.handshake_failures, 0, "{stats:?}");
    assert_eq!(stats.links.links_up, 2, "{stats:?}");
}

/// A client that offers `h3` only gets no connection: the server's TLS stack refuses the
/// handshake with the alert `no_application_protocol` (0x78, QUIC error 0x178). The
/// server reports it as `Refused` with `MiddlewareError::Auth(AuthError::Tls(_))`
/// carrying rustls' wording (a TLS failure that is not about a certificate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_alpn_is_refused() {
    let s = setup().await;
    let raw = raw_endpoint();
    let tls = support::tls(s.dir(), "h3-client");
    let connecting = raw
        .connect_with(
            raw_client_config(&tls, b"h3"),
            support::addr(&s.endpoint),
            "dms",
        )
        .unwrap();
    let error = within("the refused handshake", connecting)
        .await
        .expect_err("a connection without a common ALPN");
    match &error {
        quinn::ConnectionError::ConnectionClosed(close) => {
            assert_eq!(u64::from(close.error_code), 0x100 + 120, "{error}");
        }
        other => panic!("unexpected client error {other}"),
    }
    let refused = s.refused().await;
    eprintln!("wrong ALPN refused with: {refused:?}");
    assert!(
        matches!(&*refused, MiddlewareError::Auth(AuthError::Tls(_))),
        "{refused:?}"
    );
    s.assert_healthy("after-alpn").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_stream_closes_that_connection() {
    let s = setup().await;
    let raw = raw_endpoint();
    let tls = support::tls(s.dir(), "garbage");
    let connecting = raw
        .connect_with(
            raw_client_config(&tls, dms_transport_quic::ALPN),
            support::addr(&s.endpoint),
            "dms",
        )
        .unwrap();
    let connection = within("a valid TLS handshake", connecting).await.unwrap();
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    let mut junk = Rand::new(0x6a72_b46e).bytes(4096);
    junk[0] = 0x42; // not the greeting's first byte (0xff), so the refusal is fixed
    send.write_all(&junk).await.unwrap();
    let refused = s.refused().await;
    assert!(
        matches!(
            &*refused,
            MiddlewareError::Handshake(HandshakeError::BadSignature {
                offset: 0,
                byte: 0x42
            })
        ),
        "{refused:?}"
    );
    // The server closed that connection, saying why.
    match within("the server to close", connection.closed()).await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(codes::REFUSED));
        }
        other => panic!("closed with {other}"),
    }
    assert_eq!(s.server.stats().links.handshake_failures, 1);
    s.assert_healthy("after-garbage").await;
}

/// The transport parameters give a dialler one bidirectional stream and no unidirectional
/// one: a linked peer that tries to open more waits for credit that never comes (quinn
/// does not even send the stream), and its link goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_streams_cannot_be_opened() {
    let s = setup().await;
    let tls = support::tls(s.dir(), "greedy");
    let mut raw = RawLink::connect(&tls, support::addr(&s.endpoint)).await;
    let greedy = tls.path().peer_id();
    support::link_up_of(&s.server, &greedy).await;

    let wait = Duration::from_millis(500);
    assert!(
        tokio::time::timeout(wait, raw.connection.open_bi())
            .await
            .is_err(),
        "a second bidirectional stream was opened"
    );
    assert!(
        tokio::time::timeout(wait, raw.connection.open_uni())
            .await
            .is_err(),
        "a unidirectional stream was opened"
    );
    assert!(raw.connection.close_reason().is_none());

    // The raw link still works both ways.
    raw.send(&[b"still here"]).await;
    let msg = support::message_from(&s.server, &greedy).await;
    assert_eq!(&msg[1][..], b"still here");
    s.server
        .send(dms_core::Multipart::from_frames([
            greedy.to_frame(),
            "good".into(),
        ]))
        .await
        .unwrap();
    assert_eq!(&raw.message().await[0][..], b"good");
    s.assert_healthy("after-streams").await;
    assert!(s.server.peers().contains(&greedy));
}

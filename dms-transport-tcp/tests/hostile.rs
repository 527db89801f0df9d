//! Hostile bytes from raw sockets: each case gets a typed error and closes only its own
//! connection; the process and the other links go on.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dms_core::wire::{Command, Greeting, HandshakeError, Limits, Metadata, WireError};
use dms_core::{Endpoint, Incoming, LinkDownCause, MessageMiddleware, MiddlewareError, Multipart};
use dms_test_support::wait::{link_up, message, next, within};
use dms_transport_tcp::{TcpConfig, TcpMiddleware};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server with a healthy client linked to it.
struct Setup {
    server: TcpMiddleware,
    endpoint: Endpoint,
    client: TcpMiddleware,
    server_id: dms_core::PeerId,
}

async fn setup() -> Setup {
    setup_with(Duration::from_millis(300)).await
}

/// [`setup`] with this handshake timeout.
async fn setup_with(handshake_timeout: Duration) -> Setup {
    let limits = Limits::builder()
        .handshake_timeout(handshake_timeout)
        .build();
    let server = TcpMiddleware::new(
        TcpConfig::builder()
            .identity("server")
            .limits(limits)
            .build()
            .unwrap(),
    );
    let endpoint = server
        .bind(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = TcpMiddleware::new(TcpConfig::default());
    let server_id = client.connect(&endpoint).await.unwrap();
    link_up(&server).await;
    link_up(&client).await;
    Setup {
        server,
        endpoint,
        client,
        server_id,
    }
}

impl Setup {
    /// The healthy link still carries messages both ways.
    async fn assert_healthy(&self) {
        self.client
            .send(Multipart::from_frames([
                self.server_id.to_frame(),
                "alive?".into(),
            ]))
            .await
            .unwrap();
        let msg = message(&self.server).await;
        assert_eq!(&msg[1][..], b"alive?");
        self.server
            .send(Multipart::from_frames([msg[0].clone(), "yes".into()]))
            .await
            .unwrap();
        assert_eq!(&message(&self.client).await[1][..], b"yes");
    }

    async fn raw(&self) -> TcpStream {
        TcpStream::connect(self.endpoint.address()).await.unwrap()
    }

    /// The next `Refused` event.
    async fn refused(&self) -> MiddlewareError {
        loop {
            match next(&self.server).await {
                Incoming::Refused { error, .. } => {
                    return std::sync::Arc::try_unwrap(error).unwrap_or_else(|e| {
                        panic!("refusal shared unexpectedly: {e}");
                    });
                }
                Incoming::LinkUp { peer, .. } => panic!("hostile peer {peer} linked"),
                _ => {}
            }
        }
    }

    /// The next `LinkDown`, after the hostile link's `LinkUp`.
    async fn protocol_violation(&self) -> WireError {
        loop {
            match next(&self.server).await {
                Incoming::LinkDown {
                    cause: LinkDownCause::Protocol(err),
                    ..
                } => return err,
                Incoming::LinkDown { cause, .. } => panic!("wrong cause {cause:?}"),
                Incoming::Message(msg) => panic!("hostile message {msg:?} delivered"),
                _ => {}
            }
        }
    }
}

/// Reads until the server closes the connection.
async fn assert_closed(mut stream: TcpStream) {
    let mut sink = Vec::new();
    let result = within("the server to close", stream.read_to_end(&mut sink)).await;
    if let Err(err) = result {
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    }
}

fn handshake_bytes() -> BytesMut {
    let mut out = BytesMut::from(&Greeting::encode_null()[..]);
    let mut meta = Metadata::default();
    meta.push("Socket-Type", "DEALER");
    meta.push("Identity", "");
    Command::Ready(meta).encode(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gigabyte_long_frame_header_closes_only_that_link() {
    let s = setup().await;
    let mut raw = s.raw().await;
    let mut bytes = handshake_bytes();
    bytes.extend_from_slice(&[0x02]);
    bytes.extend_from_slice(&(1u64 << 30).to_be_bytes());
    raw.write_all(&bytes).await.unwrap();
    assert_eq!(
        s.protocol_violation().await,
        WireError::FrameTooLarge {
            len: 1 << 30,
            max: Limits::DEFAULT_MAX_FRAME_LEN
        }
    );
    assert_closed(raw).await;
    assert_eq!(s.server.stats().protocol_errors, 1);
    s.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_count_over_limit_closes_only_that_link() {
    let s = setup().await;
    let mut raw = s.raw().await;
    let mut bytes = handshake_bytes();
    for _ in 0..Limits::DEFAULT_MAX_FRAMES_PER_MESSAGE {
        bytes.extend_from_slice(&[0x01, 0x01, b'x']);
    }
    bytes.extend_from_slice(&[0x00, 0x01, b'y']);
    raw.write_all(&bytes).await.unwrap();
    assert_eq!(
        s.protocol_violation().await,
        WireError::TooManyFrames {
            max: Limits::DEFAULT_MAX_FRAMES_PER_MESSAGE
        }
    );
    assert_closed(raw).await;
    s.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_greeting_is_refused() {
    let s = setup().await;
    let mut raw = s.raw().await;
    raw.write_all(b"GET / HTTP/1.1\r\nHost: dms\r\n\r\n")
        .await
        .unwrap();
    assert!(matches!(
        s.refused().await,
        MiddlewareError::Handshake(HandshakeError::BadSignature {
            offset: 0,
            byte: b'G'
        })
    ));
    assert_closed(raw).await;
    let mut raw = s.raw().await;
    let mut greeting = Greeting::encode_null();
    greeting[10] = 2;
    raw.write_all(&greeting).await.unwrap();
    assert!(matches!(
        s.refused().await,
        MiddlewareError::Handshake(HandshakeError::UnsupportedVersion { major: 2, .. })
    ));
    assert_closed(raw).await;
    assert_eq!(s.server.stats().handshake_failures, 2);
    s.assert_healthy().await;
}

/// B10: a TLS client that dials a plaintext `tcp://` port (a peer configured for
/// `tcp+tls://`, a scanner) is refused at its first byte, the ClientHello's record type:
/// a typed error, counted, and the connection closed at once, not at the handshake
/// timeout (30 s here); the healthy link goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_hello_to_a_plaintext_port_is_refused_at_its_first_byte() {
    const TIMEOUT: Duration = Duration::from_secs(30);
    let s = setup_with(TIMEOUT).await;
    let mut raw = s.raw().await;
    // A TLS 1.3 ClientHello's first bytes: a handshake record (22) of version 3.1, then
    // a ClientHello (1) of version 3.3 and its random.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0xf8, 0x01, 0x00, 0x00, 0xf4, 0x03, 0x03,
    ];
    hello.extend((0..32u8).map(|i| i.wrapping_mul(37)));
    let sent = tokio::time::Instant::now();
    raw.write_all(&hello).await.unwrap();
    assert!(matches!(
        s.refused().await,
        MiddlewareError::Handshake(HandshakeError::BadSignature {
            offset: 0,
            byte: 0x16
        })
    ));
    assert_closed(raw).await;
    let closed = sent.elapsed();
    eprintln!("B10: a TLS ClientHello to a plaintext port closed {closed:?} after it was sent");
    assert!(
        closed < TIMEOUT / 3,
        "closed after {closed:?}: by the handshake timeout, not at the first byte"
    );
    assert_eq!(s.server.stats().handshake_failures, 1);
    s.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_are_refused() {
    let s = setup().await;
    let mut rng = fastrand_like(0x5eed);
    for _ in 0..8 {
        let mut raw = s.raw().await;
        let mut junk: Vec<u8> = (0..4096).map(|_| rng()).collect();
        junk[0] = 0x42; // not a signature byte, so the refusal reason is fixed
        raw.write_all(&junk).await.unwrap();
        assert!(matches!(
            s.refused().await,
            MiddlewareError::Handshake(HandshakeError::BadSignature { .. })
        ));
        assert_closed(raw).await;
    }
    s.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_times_out_in_the_handshake() {
    let s = setup().await;
    let raw = s.raw().await;
    assert!(matches!(
        s.refused().await,
        MiddlewareError::HandshakeTimeout(_)
    ));
    assert_closed(raw).await;
    s.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zmtp_ping_gets_a_pong_with_its_context() {
    let s = setup().await;
    let mut raw = s.raw().await;
    let mut bytes = handshake_bytes();
    Command::Ping {
        ttl_deciseconds: 10,
        context: Bytes::from_static(b"ctx-42"),
    }
    .encode(&mut bytes);
    raw.write_all(&bytes).await.unwrap();
    let mut expected = BytesMut::new();
    Command::Pong {
        context: Bytes::from_static(b"ctx-42"),
    }
    .encode(&mut expected);
    // Greeting, the server's READY (its identity is "server"), then the PONG.
    let mut server_ready = BytesMut::new();
    let mut meta = Metadata::default();
    meta.push("Socket-Type", "ROUTER");
    meta.push("Identity", "server");
    Command::Ready(meta).encode(&mut server_ready);
    let mut got = vec![0u8; 64 + server_ready.len() + expected.len()];
    within("the PONG", raw.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got[64..64 + server_ready.len()], &server_ready[..]);
    assert_eq!(&got[64 + server_ready.len()..], &expected[..]);
    s.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_identity_with_a_zero_byte_is_not_taken() {
    let s = setup().await;
    let mut raw = s.raw().await;
    let reserved: &[u8] = b"\0\0\0\0\x07";
    let mut bytes = BytesMut::from(&Greeting::encode_null()[..]);
    let mut meta = Metadata::default();
    meta.push("Socket-Type", "DEALER");
    meta.push("Identity", Bytes::from_static(reserved));
    Command::Ready(meta).encode(&mut bytes);
    raw.write_all(&bytes).await.unwrap();
    let (peer, _) = link_up(&s.server).await;
    assert!(peer.is_generated());
    assert_ne!(
        &peer.as_bytes()[..],
        reserved,
        "a peer chose a generated id"
    );
    s.assert_healthy().await;
}

/// A tiny deterministic generator (xorshift), so the junk is the same on every run.
fn fastrand_like(mut state: u64) -> impl FnMut() -> u8 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 24) as u8
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnecting_a_peer_that_never_reads_is_bounded() {
    let server = TcpMiddleware::new(
        TcpConfig::builder()
            .link_queue_bytes(1 << 20)
            .drain_timeout(Duration::from_millis(200))
            .build()
            .unwrap(),
    );
    let endpoint = server
        .bind(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut raw = TcpStream::connect(endpoint.address()).await.unwrap();
    raw.write_all(&handshake_bytes()).await.unwrap();
    let (peer, _) = link_up(&server).await;
    // Send until a send stays blocked: socket buffers and the link queue are full, since
    // the raw peer reads nothing.
    let chunk = Bytes::from(vec![7u8; 64 << 10]);
    for sent in 0.. {
        assert!(sent < 4096, "256 MiB accepted without pushing back");
        let msg = Multipart::from_frames([peer.to_frame(), chunk.clone()]);
        if tokio::time::timeout(Duration::from_millis(200), server.send(msg))
            .await
            .is_err()
        {
            break;
        }
    }
    within(
        "disconnect of a peer that never reads",
        server.disconnect(&peer),
    )
    .await
    .unwrap();
    assert!(matches!(
        server.try_send(Multipart::from_frames([peer.to_frame(), chunk])),
        Err(dms_core::SendError::UnknownPeer { .. })
    ));
    assert!(server.stats().bytes_dropped_on_link_down > 0);
    drop(raw);
}

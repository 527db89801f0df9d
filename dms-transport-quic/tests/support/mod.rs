//! Shared by the QUIC fault tests (`lossy`, `hostile`, `restart`): development
//! certificates, middlewares, raw quinn clients, a tiny seeded generator, checksums.
#![allow(dead_code, unreachable_pub)] // each test binary uses a part of it
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use dms_core::wire::{Handshake, HandshakeConfig, Inbound, Limits, MessageCodec, SocketType};
use dms_core::{Endpoint, Incoming, MessageMiddleware, Multipart, PeerId};
use dms_test_support::wait::{message, next, within};
use dms_tls::TlsIdentity;
use dms_transport_quic::{QuicConfig, QuicConfigBuilder, QuicMiddleware};

/// The development identity of peer `name` (`/t/t/quic/w1/g1/Peer/<name>`), signed by the
/// development CA in `dir`. DEV-ONLY.
pub fn tls(dir: &Path, name: &str) -> TlsIdentity {
    let path = format!("/t/t/quic/w1/g1/Peer/{name}").parse().unwrap();
    TlsIdentity::dev(dir, &path).unwrap()
}

/// A middleware for peer `name`, its configuration adjusted by `tweak`.
pub fn node(
    dir: &Path,
    name: &str,
    tweak: impl FnOnce(QuicConfigBuilder) -> QuicConfigBuilder,
) -> QuicMiddleware {
    let config = tweak(QuicConfig::builder(tls(dir, name))).build().unwrap();
    QuicMiddleware::new(config).unwrap()
}

/// A middleware for peer `name` bound on a fresh loopback port, and that endpoint.
pub async fn server(
    dir: &Path,
    name: &str,
    tweak: impl FnOnce(QuicConfigBuilder) -> QuicConfigBuilder,
) -> (QuicMiddleware, Endpoint) {
    let server = node(dir, name, tweak);
    let endpoint = server
        .bind(&"quic://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (server, endpoint)
}

/// The socket address of a `quic://` endpoint.
pub fn addr(endpoint: &Endpoint) -> SocketAddr {
    endpoint.address().parse().unwrap()
}

/// A `quic://` endpoint for a socket address.
pub fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_socket_addr("quic", addr).unwrap()
}

/// The next `LinkUp` of `m` for `peer` (other link events and refusals skipped; a message
/// fails the test).
pub async fn link_up_of(m: &QuicMiddleware, peer: &PeerId) {
    loop {
        match next(m).await {
            Incoming::LinkUp { peer: up, .. } if up == *peer => return,
            Incoming::Message(msg) => panic!("message {msg:?} before the LinkUp of {peer}"),
            _ => {}
        }
    }
}

/// The next message of `m`, which must come from `peer` (link events skipped).
pub async fn message_from(m: &QuicMiddleware, peer: &PeerId) -> Multipart {
    let msg = message(m).await;
    assert_eq!(
        &msg[0][..],
        &peer.to_frame()[..],
        "message from another peer"
    );
    msg
}

/// A fresh client `name` connects to `server` at `endpoint` and a message goes there and
/// back: the node still serves. Returns the client (the link stays up while it lives).
pub async fn assert_serves(
    dir: &Path,
    name: &str,
    server: &QuicMiddleware,
    endpoint: &Endpoint,
) -> QuicMiddleware {
    let client = node(dir, name, |b| b);
    let server_id = within("a legitimate connect", client.connect(endpoint))
        .await
        .unwrap();
    let client_id = tls(dir, name).path().peer_id();
    link_up_of(server, &client_id).await;
    round_trip(&client, &server_id, server).await;
    client
}

/// `client` sends to `server_id` (served by `server`), which answers.
pub async fn round_trip(client: &QuicMiddleware, server_id: &PeerId, server: &QuicMiddleware) {
    client
        .send(Multipart::from_frames([
            server_id.to_frame(),
            "alive?".into(),
        ]))
        .await
        .unwrap();
    let msg = message(server).await;
    assert_eq!(&msg[1][..], b"alive?");
    server
        .send(Multipart::from_frames([msg[0].clone(), "yes".into()]))
        .await
        .unwrap();
    let answer = message(client).await;
    assert_eq!(&answer[0][..], &server_id.to_frame()[..]);
    assert_eq!(&answer[1][..], b"yes");
}

/// `client` sends `text` to the echo server `server_id` and gets it back.
pub async fn round_trip_echo(client: &QuicMiddleware, server_id: &PeerId, text: &str) {
    client
        .send(Multipart::from_frames([
            server_id.to_frame(),
            Bytes::copy_from_slice(text.as_bytes()),
        ]))
        .await
        .unwrap();
    let echo = message_from(client, server_id).await;
    assert_eq!(&echo[1][..], text.as_bytes());
}

/// A raw quinn client endpoint on loopback (no DMS on top).
pub fn raw_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap()
}

/// A quinn client configuration presenting `tls`'s certificate and offering `alpn`.
pub fn raw_client_config(tls: &TlsIdentity, alpn: &[u8]) -> quinn::ClientConfig {
    let crypto = tls.client_config(&[alpn]).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// A raw client speaking the ZMTP NULL handshake itself on the link's stream, so a test
/// can also misbehave on the connection (open more streams, ...).
pub struct RawLink {
    pub connection: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub codec: MessageCodec,
    pub inbound: BytesMut,
    pub _endpoint: quinn::Endpoint,
}

impl RawLink {
    /// Connects with `tls`, opens the link's stream and completes the handshake.
    pub async fn connect(tls: &TlsIdentity, to: SocketAddr) -> Self {
        let endpoint = raw_endpoint();
        let connection = endpoint
            .connect_with(raw_client_config(tls, dms_transport_quic::ALPN), to, "dms")
            .unwrap();
        let connection = within("a raw connection", connection).await.unwrap();
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        let mut handshake = Handshake::new(HandshakeConfig {
            socket_type: SocketType::Router,
            identity: tls.path().peer_id().to_frame(),
            limits: Limits::default(),
        });
        let mut out = BytesMut::new();
        handshake.poll_transmit(&mut out);
        send.write_all(&out).await.unwrap();
        let mut inbound = BytesMut::new();
        within("the server's handshake", async {
            loop {
                if handshake.handle_bytes(&mut inbound).unwrap().is_some() {
                    return;
                }
                read_more(&mut recv, &mut inbound).await;
            }
        })
        .await;
        Self {
            connection,
            send,
            recv,
            codec: MessageCodec::new(Limits::default()),
            inbound,
            _endpoint: endpoint,
        }
    }

    /// Sends a message (no peer frame: the stream is the link).
    pub async fn send(&mut self, frames: &[&[u8]]) {
        let mut out = BytesMut::new();
        let msg = Multipart::from_frames(frames.iter().map(|f| Bytes::copy_from_slice(f)));
        self.codec.encode(&msg, &mut out).unwrap();
        self.send.write_all(&out).await.unwrap();
    }

    /// The next message on the link (commands skipped).
    pub async fn message(&mut self) -> Multipart {
        within("a message on the raw link", async {
            loop {
                match self.codec.decode(&mut self.inbound).unwrap() {
                    Some(Inbound::Message(msg)) => return msg,
                    Some(Inbound::Command(_)) => {}
                    None => read_more(&mut self.recv, &mut self.inbound).await,
                }
            }
        })
        .await
    }
}

async fn read_more(recv: &mut quinn::RecvStream, into: &mut BytesMut) {
    let chunk = recv
        .read_chunk(64 << 10, true)
        .await
        .unwrap()
        .expect("the server finished the link's stream");
    into.extend_from_slice(&chunk.bytes);
}

/// SplitMix64: a seeded generator, so test inputs are the same on every run.
pub struct Rand(u64);

impl Rand {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `range` (small ranges; the bias is negligible for tests).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.u64() % bound
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.fill(&mut buf);
        buf
    }
}

/// FNV-1a, 64 bits: the payload checksum the fault tests carry in each message.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

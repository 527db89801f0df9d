//! The [`MessageMiddleware`] conformance suite.
//!
//! Each check builds fresh middlewares through a [`Factory`], so checks are independent.
//! A transport crate runs all of them:
//!
//! ```ignore
//! dms_test_support::conformance_tests!(TcpFactory);
//! ```

use bytes::Bytes;
use dms_core::{
    Endpoint, Incoming, LinkDownCause, MessageMiddleware, MiddlewareError, Multipart, PeerId, Role,
    SendError,
};

use crate::wait::{link_down, link_up, message, next, within};

/// Knobs a check needs; a factory maps them onto its transport's configuration.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Identity announced to peers.
    pub identity: Option<&'static str>,
    /// Peer limit.
    pub max_peers: Option<usize>,
    /// Bytes queued per link before sends are pushed back.
    pub link_queue_bytes: Option<usize>,
    /// Items waiting for `recv` before readers stop reading.
    pub inbound_queue: Option<usize>,
}

/// Makes middlewares of one transport for the suite.
pub trait Factory {
    /// The transport.
    type Middleware: MessageMiddleware + Clone;
    /// A new middleware.
    fn create(&self, options: Options) -> Self::Middleware;
    /// An endpoint to bind (port 0 or a fresh name).
    fn endpoint(&self) -> Endpoint;
}

fn frame(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

/// A server bound on a fresh endpoint and a client linked to it; both sides' `LinkUp`
/// consumed. Returns (server, client, client's id at the server, server's id at the client).
pub async fn pair<F: Factory>(
    factory: &F,
    server: Options,
    client: Options,
) -> (F::Middleware, F::Middleware, PeerId, PeerId) {
    let s = factory.create(server);
    let endpoint = within("bind", s.bind(&factory.endpoint()))
        .await
        .expect("bind");
    let c = factory.create(client);
    let server_id = within("connect", c.connect(&endpoint))
        .await
        .expect("connect");
    let (client_id, role) = link_up(&s).await;
    assert_eq!(role, Role::Acceptor);
    let (seen, role) = link_up(&c).await;
    assert_eq!((seen, role), (server_id.clone(), Role::Connector));
    (s, c, client_id, server_id)
}

/// Messages go both ways with the peer frame stripped on send and added on receive;
/// announced identities are used as peer ids; empty frames survive.
pub async fn roundtrip<F: Factory>(factory: &F) {
    let (s, c, client_id, server_id) = pair(
        factory,
        Options {
            identity: Some("server"),
            ..Options::default()
        },
        Options {
            identity: Some("client"),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(server_id.as_bytes().as_ref(), b"server");
    assert_eq!(client_id.as_bytes().as_ref(), b"client");
    c.send(Multipart::from_frames([
        server_id.to_frame(),
        frame(b"hello"),
        Bytes::new(),
    ]))
    .await
    .expect("send to server");
    let got = message(&s).await;
    assert_eq!(
        got,
        Multipart::from_frames([frame(b"client"), frame(b"hello"), Bytes::new()])
    );
    s.try_send(Multipart::from_frames([
        client_id.to_frame(),
        frame(b"world"),
    ]))
    .expect("reply");
    assert_eq!(
        message(&c).await,
        Multipart::from_frames([frame(b"server"), frame(b"world")])
    );
}

/// Peers without an identity get distinct generated ids; many peers are served at once
/// and replies reach the right one.
pub async fn many_peers<F: Factory>(factory: &F) {
    const CLIENTS: usize = 16;
    const EACH: usize = 50;
    let s = factory.create(Options::default());
    let endpoint = s.bind(&factory.endpoint()).await.expect("bind");
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let c = factory.create(Options::default());
        let server_id = within("connect", c.connect(&endpoint))
            .await
            .expect("connect");
        clients.push((c, server_id));
    }
    for (i, (c, server_id)) in clients.iter().enumerate() {
        for n in 0..EACH {
            c.send(Multipart::from_frames([
                server_id.to_frame(),
                frame(format!("{i}:{n}").as_bytes()),
            ]))
            .await
            .expect("send");
        }
    }
    let mut ids = std::collections::HashMap::new();
    let mut received = 0;
    while received < CLIENTS * EACH {
        match next(&s).await {
            Incoming::Message(msg) => {
                let text = String::from_utf8(msg[1].to_vec()).expect("utf-8");
                let (client, _) = text.split_once(':').expect("i:n");
                let client: usize = client.parse().expect("client index");
                let id = PeerId::new(msg[0].clone()).expect("peer id");
                assert!(id.is_generated(), "no identity announced: id is generated");
                let previous = ids.insert(client, id.clone());
                assert!(previous.is_none_or(|p| p == id), "one id per client");
                received += 1;
            }
            Incoming::LinkUp { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let distinct: std::collections::HashSet<_> = ids.values().collect();
    assert_eq!(distinct.len(), CLIENTS, "every client has its own id");
    for (client, id) in &ids {
        s.send(Multipart::from_frames([
            id.to_frame(),
            frame(client.to_string().as_bytes()),
        ]))
        .await
        .expect("reply");
    }
    for (i, (c, _)) in clients.iter().enumerate() {
        assert_eq!(message(c).await[1], frame(i.to_string().as_bytes()));
    }
}

/// A 4 MiB frame, LONG frames and a many-frame message arrive intact.
pub async fn large_messages<F: Factory>(factory: &F) {
    let (s, c, client_id, server_id) = pair(factory, Options::default(), Options::default()).await;
    let big: Bytes = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut many = Multipart::from_frames([server_id.to_frame()]);
    for i in 0..60u32 {
        many.push(vec![i as u8; 300 + i as usize]);
    }
    c.send(Multipart::from_frames([
        server_id.to_frame(),
        big.clone(),
        frame(b"tail"),
    ]))
    .await
    .expect("send big");
    c.send(many.clone()).await.expect("send many");
    let got = message(&s).await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[1], big);
    assert_eq!(got[2], frame(b"tail"));
    let got = message(&s).await;
    assert_eq!(got.frames()[1..], many.frames()[1..]);
    assert_eq!(got[0], client_id.to_frame());
}

/// 10,000 messages on one link arrive in the order sent.
pub async fn ordering_per_link<F: Factory>(factory: &F) {
    const COUNT: u32 = 10_000;
    let (s, c, _, server_id) = pair(factory, Options::default(), Options::default()).await;
    let sender = {
        let c = c.clone();
        tokio::spawn(async move {
            for n in 0..COUNT {
                c.send(Multipart::from_frames([
                    server_id.to_frame(),
                    frame(&n.to_be_bytes()),
                ]))
                .await
                .expect("send");
            }
        })
    };
    for n in 0..COUNT {
        let msg = message(&s).await;
        assert_eq!(msg[1], frame(&n.to_be_bytes()), "message {n} out of order");
    }
    within("sender", sender).await.expect("sender task");
}

/// `recv_many` hands out what is waiting in order, at most `limit` at a time, and at
/// least one item per call.
pub async fn recv_many_keeps_order<F: Factory>(factory: &F) {
    const COUNT: u32 = 1000;
    let (s, c, _, server_id) = pair(factory, Options::default(), Options::default()).await;
    for n in 0..COUNT {
        c.send(Multipart::from_frames([
            server_id.to_frame(),
            frame(&n.to_be_bytes()),
        ]))
        .await
        .expect("send");
    }
    let mut items = Vec::new();
    let mut next = 0u32;
    while next < COUNT {
        items.clear();
        let taken = within("recv_many", s.recv_many(&mut items, 64))
            .await
            .expect("recv_many");
        assert!((1..=64).contains(&taken), "took {taken}");
        assert_eq!(taken, items.len());
        for item in items.drain(..) {
            if let Incoming::Message(msg) = item {
                assert_eq!(
                    msg[1],
                    frame(&next.to_be_bytes()),
                    "message {next} out of order"
                );
                next += 1;
            }
        }
    }
}

/// `disconnect` writes everything accepted before closing: the peer receives all of it,
/// then `LinkDown`.
pub async fn close_flushes<F: Factory>(factory: &F) {
    const COUNT: usize = 1000;
    let (s, c, _, server_id) = pair(factory, Options::default(), Options::default()).await;
    for n in 0..COUNT {
        c.send(Multipart::from_frames([
            server_id.to_frame(),
            Bytes::from(vec![1u8; 1000 + n]),
        ]))
        .await
        .expect("send");
    }
    within("disconnect", c.disconnect(&server_id))
        .await
        .expect("disconnect");
    for n in 0..COUNT {
        assert_eq!(message(&s).await[1].len(), 1000 + n);
    }
    let (_, cause) = link_down(&s).await;
    assert!(matches!(cause, LinkDownCause::ClosedByPeer), "{cause:?}");
    let (_, cause) = link_down(&c).await;
    assert!(matches!(cause, LinkDownCause::Disconnected), "{cause:?}");
    match c.try_send(Multipart::from_frames([
        server_id.to_frame(),
        frame(b"late"),
    ])) {
        Err(SendError::UnknownPeer { peer, msg }) => {
            assert_eq!(peer, server_id);
            assert_eq!(msg[1], frame(b"late"));
        }
        other => panic!("send after disconnect: {other:?}"),
    }
}

/// A receiver that stops reading makes `send` wait and `try_send` return `Full` after a
/// bounded number of messages (no unbounded buffering anywhere); a cancelled `send` queued
/// nothing; once the receiver reads again, every accepted message arrives, in order, and a
/// waiting `send` completes.
pub async fn backpressure_bounds_memory<F: Factory>(factory: &F) {
    let (s, c, numbered) = congested(factory).await;
    let accepted = fill_until_stalled(&c, &numbered, BOUND_BYTES / CONGESTED_SIZE).await;
    match c.try_send(numbered(accepted)) {
        Err(SendError::Full { msg, .. }) => {
            assert_eq!(
                msg[1],
                frame(&accepted.to_be_bytes()),
                "Full hands the message back"
            );
        }
        other => panic!("a full link must push back: {other:?}"),
    }
    let waiting = {
        let c = c.clone();
        let msg = numbered(accepted);
        tokio::spawn(async move { c.send(msg).await })
    };
    // The send that timed out was cancelled, so it was not queued: `accepted` comes next
    // from the waiting send, exactly once.
    for n in 0..=accepted {
        let msg = message(&s).await;
        assert_eq!(msg[1], frame(&n.to_be_bytes()), "message {n}");
        assert_eq!(msg[2].len(), CONGESTED_SIZE);
    }
    within("waiting send", waiting)
        .await
        .expect("task")
        .expect("send completes once there is room");
}

/// Payload bytes of each message of a [`congested`] pair.
const CONGESTED_SIZE: usize = 16 << 10;

/// Bytes a congested link may accept before pushing back: link queue, socket buffers (a
/// few MiB on loopback), read buffer, inbound queue. Far more means something buffers
/// without bound.
const BOUND_BYTES: usize = 96 << 20;

/// A pair that congests quickly: the server takes 8 items before its readers stop reading,
/// the client queues 256 KiB per link. Returns the server, the client, and the client's
/// message number `n` to the server (`[server][n][16 KiB]`).
async fn congested<F: Factory>(
    factory: &F,
) -> (F::Middleware, F::Middleware, impl Fn(u32) -> Multipart) {
    let (s, c, _, server_id) = pair(
        factory,
        Options {
            inbound_queue: Some(8),
            ..Options::default()
        },
        Options {
            link_queue_bytes: Some(256 << 10),
            ..Options::default()
        },
    )
    .await;
    let payload = Bytes::from(vec![9u8; CONGESTED_SIZE]);
    let numbered = move |n: u32| {
        let mut msg = Multipart::from_frames([server_id.to_frame(), frame(&n.to_be_bytes())]);
        msg.push(payload.clone());
        msg
    };
    (s, c, numbered)
}

/// Sends `numbered(0)`, `numbered(1)`... until a send stays blocked (the whole pipeline is
/// full) and returns how many were accepted. A middleware that buffers without bound
/// never blocks: more than `bound` accepted fails the check.
async fn fill_until_stalled<M: MessageMiddleware>(
    c: &M,
    numbered: impl Fn(u32) -> Multipart,
    bound: usize,
) -> u32 {
    let mut accepted: u32 = 0;
    loop {
        let stalled = std::time::Duration::from_millis(200);
        match tokio::time::timeout(stalled, c.send(numbered(accepted))).await {
            Ok(Ok(())) => accepted += 1,
            Ok(Err(other)) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
        assert!(
            (accepted as usize) < bound,
            "accepted {accepted} messages without pushing back"
        );
    }
    assert!(accepted > 0, "an idle link accepts messages");
    accepted
}

/// An urgent message (a heartbeat) on a link whose queue is full is accepted at once and
/// arrives before the data that was queued ahead of it (not behind the whole queue).
pub async fn urgent_messages_pass_queued_data<F: Factory>(factory: &F) {
    let (s, c, numbered) = congested(factory).await;
    let accepted = fill_until_stalled(&c, &numbered, BOUND_BYTES / CONGESTED_SIZE).await;
    let server_id = numbered(0)[0].clone();
    let urgent = Multipart::from_frames([server_id, frame(b"urgent")]);
    c.try_send_urgent(urgent)
        .expect("an urgent message is accepted on a full link");
    let mut urgent_at = None;
    let mut data_seen = 0;
    while data_seen < accepted {
        let msg = message(&s).await;
        if msg[1] == frame(b"urgent") {
            urgent_at = Some(data_seen);
        } else {
            assert_eq!(
                msg[1],
                frame(&data_seen.to_be_bytes()),
                "data stays in order"
            );
            data_seen += 1;
        }
    }
    let urgent_at = urgent_at.expect("the urgent message arrives before the last data");
    assert!(
        urgent_at < accepted - 1,
        "urgent message after {urgent_at} of {accepted} data messages: it waited behind the \
         queue"
    );
}

/// At the peer limit, a further peer is refused (the refusal is reported) while the
/// existing links keep working; a freed slot can be used again.
pub async fn peer_limit<F: Factory>(factory: &F) {
    let s = factory.create(Options {
        max_peers: Some(2),
        ..Options::default()
    });
    let endpoint = s.bind(&factory.endpoint()).await.expect("bind");
    let a = factory.create(Options {
        identity: Some("a"),
        ..Options::default()
    });
    let b = factory.create(Options::default());
    let a_server = a.connect(&endpoint).await.expect("first peer");
    b.connect(&endpoint).await.expect("second peer");
    link_up(&s).await;
    link_up(&s).await;
    let extra = factory.create(Options::default());
    assert!(
        within("refused connect", extra.connect(&endpoint))
            .await
            .is_err(),
        "third peer refused"
    );
    match next(&s).await {
        Incoming::Refused { error, .. } => {
            assert!(
                matches!(*error, MiddlewareError::PeerLimit { max: 2 }),
                "{error}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    a.send(Multipart::from_frames([
        a_server.to_frame(),
        frame(b"still here"),
    ]))
    .await
    .expect("existing link works");
    assert_eq!(message(&s).await[1], frame(b"still here"));
    within("disconnect", a.disconnect(&a_server))
        .await
        .expect("disconnect");
    let (gone, _) = link_down(&s).await;
    assert_eq!(gone.to_string(), "a");
    let late = factory.create(Options::default());
    within("connect into the freed slot", late.connect(&endpoint))
        .await
        .expect("slot freed");
}

/// A second connection claiming an identity with a live link is refused; the live link
/// is untouched.
pub async fn duplicate_identity_refused<F: Factory>(factory: &F) {
    let dup = Options {
        identity: Some("twin"),
        ..Options::default()
    };
    let (s, first, twin_id, server_id) = pair(factory, Options::default(), dup.clone()).await;
    let endpoint = within("bind", s.bind(&factory.endpoint()))
        .await
        .expect("bind");
    let second = factory.create(dup);
    let _ = within("duplicate connect", second.connect(&endpoint)).await;
    loop {
        match next(&s).await {
            Incoming::Refused { error, .. } => {
                assert!(
                    matches!(&*error, MiddlewareError::DuplicateIdentity(id) if *id == twin_id),
                    "{error}"
                );
                break;
            }
            Incoming::LinkUp { peer, .. } => panic!("duplicate {peer} accepted"),
            _ => {}
        }
    }
    first
        .send(Multipart::from_frames([
            server_id.to_frame(),
            frame(b"original"),
        ]))
        .await
        .expect("live link still works");
    let got = message(&s).await;
    assert_eq!(
        (got[0].clone(), got[1].clone()),
        (twin_id.to_frame(), frame(b"original"))
    );
}

/// Sending to a peer without a link is an error that hands the message back; so is a
/// message without a peer frame.
pub async fn unknown_peer_is_an_error<F: Factory>(factory: &F) {
    let m = factory.create(Options::default());
    let msg = Multipart::from_frames([frame(b"nobody"), frame(b"x")]);
    match m.try_send(msg.clone()) {
        Err(SendError::UnknownPeer { peer, msg: back }) => {
            assert_eq!(peer.as_bytes().as_ref(), b"nobody");
            assert_eq!(*back, msg);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        m.send(msg).await,
        Err(SendError::UnknownPeer { .. })
    ));
    assert!(matches!(
        m.try_send(Multipart::new()),
        Err(SendError::NoPeerFrame)
    ));
}

/// When a peer goes away its link is reported down with the cause, and sends to it fail.
pub async fn peer_loss_is_reported<F: Factory>(factory: &F) {
    let (s, c, client_id, _) = pair(factory, Options::default(), Options::default()).await;
    drop(c);
    let (peer, cause) = link_down(&s).await;
    assert_eq!(peer, client_id);
    assert!(
        matches!(cause, LinkDownCause::ClosedByPeer | LinkDownCause::Io(_)),
        "{cause:?}"
    );
    assert!(matches!(
        s.try_send(Multipart::from_frames([client_id.to_frame(), frame(b"x")])),
        Err(SendError::UnknownPeer { .. })
    ));
}

/// Runs every check of the suite as its own `#[tokio::test]` for a factory expression.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@each $factory;
            roundtrip, many_peers, large_messages, ordering_per_link, recv_many_keeps_order, close_flushes,
            backpressure_bounds_memory, urgent_messages_pass_queued_data, peer_limit,
            duplicate_identity_refused,
            unknown_peer_is_an_error, peer_loss_is_reported);
    };
    (@each $factory:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::middleware::$check(&$factory).await;
            }
        )*
    };
}

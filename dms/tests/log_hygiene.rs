//! Secrets and logs (RELIABILITY S8): every `tracing` event and span a real node emits,
//! at TRACE, captured raw (the field values as the library hands them to a subscriber,
//! before any formatter could escape them). No private key material and no payload ever
//! shows in them, and text a hostile peer supplied (a DISCONNECT detail, a ZMTP `ERROR`
//! reason, a socket type, an identity) shows only made printable (control characters
//! as U+FFFD, `dms_core::text`, or escaped): no ESC, CR, LF or NUL in any record.
#![cfg(feature = "tcp")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::fmt::{self, Write as _};
use std::sync::{Mutex, OnceLock};
#[cfg(feature = "quic")]
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dms::MemoryDiscovery;
#[cfg(feature = "quic")]
use dms::{Multipart, Node, RequestError};
use dms_core::proto::control::{Body, CommandCode, Control, Reason, codes};
use dms_core::wire::frame::encode_frame;
use dms_core::wire::{Command, Greeting, Metadata};
use dms_test_support::wait::within;
#[cfg(feature = "quic")]
use support::cluster;
use support::instance;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Everything logged in this process, one string per event, span or span record.
struct Logs {
    records: Mutex<Vec<String>>,
    changed: Notify,
}

/// The process's log capture, installed as the global subscriber on first use.
fn logs() -> &'static Logs {
    static LOGS: OnceLock<&'static Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Logs = Box::leak(Box::new(Logs {
            records: Mutex::new(Vec::new()),
            changed: Notify::new(),
        }));
        let subscriber = tracing_subscriber::registry().with(Capture(logs));
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        logs
    })
}

impl Logs {
    fn push(&self, record: String) {
        self.records.lock().unwrap().push(record);
        self.changed.notify_waiters();
    }

    fn snapshot(&self) -> Vec<String> {
        self.records.lock().unwrap().clone()
    }

    /// Waits (with the test deadline) until the records satisfy `done`.
    async fn until(&self, what: &str, done: impl Fn(&[String]) -> bool) {
        within(what, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if done(&self.records.lock().unwrap()) {
                    return;
                }
                changed.await;
            }
        })
        .await;
    }

    fn count(&self, needle: &str) -> usize {
        let records = self.records.lock().unwrap();
        records.iter().filter(|r| r.contains(needle)).count()
    }
}

/// A layer that writes every field of every event and span, at every level, raw: `%x`
/// as `x`'s `Display`, `&str` values as they are, `?x` as `x`'s `Debug`.
struct Capture(&'static Logs);

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={value}", field.name());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let _ = write!(self.0, " {}={value}", field.name());
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        let meta = attrs.metadata();
        let mut line = format!("span {} {} {}:", meta.level(), meta.target(), meta.name());
        attrs.record(&mut Fields(&mut line));
        self.0.push(line);
    }

    fn on_record(&self, _: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut line = String::from("span record:");
        values.record(&mut Fields(&mut line));
        self.0.push(line);
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = format!("{} {}:", meta.level(), meta.target());
        event.record(&mut Fields(&mut line));
        self.0.push(line);
    }
}

/// Records holding `needle`, for a failure message.
fn holding<'a>(records: &'a [String], needle: &str) -> Vec<&'a String> {
    records.iter().filter(|r| r.contains(needle)).collect()
}

/// The payload marker: it must never reach a log, in text or hex.
#[cfg(feature = "quic")]
const PAYLOAD_MARKER: &str = "SECRET-PAYLOAD-7f3a9c";

#[cfg(feature = "quic")]
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes standard base64 (PEM bodies), padding and whitespace ignored.
#[cfg(feature = "quic")]
fn base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in text.bytes() {
        let Some(v) = ALPHABET.iter().position(|&a| a == c) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The private keys in `dir` (PEM files whose label says PRIVATE KEY): their base64 body
/// lines and their DER bytes.
#[cfg(feature = "quic")]
fn private_keys(dir: &std::path::Path) -> Vec<(String, Vec<String>, Vec<u8>)> {
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if !text.contains("PRIVATE KEY") {
            continue;
        }
        let body: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with("-----") && !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        let der = base64(&body.concat());
        keys.push((path.display().to_string(), body, der));
    }
    keys
}

/// An instance that echoes requests (or answers an error to a request whose first frame
/// is `fail`) and hands notifications and broadcasts to `notes`.
#[cfg(feature = "quic")]
fn serve(node: &Node, notes: tokio::sync::mpsc::Sender<Multipart>) {
    let server = node.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            if !request.expects_reply() {
                let _ = notes.send(request.body().clone()).await;
            } else if &request.body()[0][..] == b"fail" {
                let _ = request
                    .reply_error(codes::HANDLER_FAILED, "the handler refused it")
                    .await;
            } else {
                let body = request.body().clone();
                let _ = request.reply(body).await;
            }
        }
    });
}

/// Requests, replies (a large one too), an error reply, notifications and broadcasts
/// whose payloads carry the marker, over QUIC and TCP with TLS with development
/// certificates: nothing of the payloads nor of the private keys on disk is logged.
#[cfg(feature = "quic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_and_private_keys_never_reach_the_logs() {
    let logs = logs();
    let dev = std::env::temp_dir().join(format!("dms-log-hygiene-{}", std::process::id()));
    let discovery = MemoryDiscovery::new();
    let battle_cluster = cluster("Vault");
    let mut battle = Node::builder(instance("Vault", "vault-1"))
        .quic_dev_certificates(&dev)
        .heartbeat(Duration::from_millis(100), 3)
        .bind("quic://127.0.0.1:0".parse().unwrap())
        .bind("tcp://127.0.0.1:0".parse().unwrap());
    #[cfg(feature = "tcp-tls")]
    {
        battle = battle.bind("tcp+tls://127.0.0.1:0".parse().unwrap());
    }
    let battle = battle.discovery(discovery.clone()).start().await.unwrap();
    let (notes_tx, mut notes) = tokio::sync::mpsc::channel(8);
    serve(&battle, notes_tx);

    let mut schemes = vec!["quic"];
    #[cfg(feature = "tcp-tls")]
    schemes.push("tcp+tls");
    let mut requesters = Vec::new();
    for (i, scheme) in schemes.iter().enumerate() {
        let node = Node::builder(instance("Teller", &format!("teller-{i}")))
            .quic_dev_certificates(&dev)
            .heartbeat(Duration::from_millis(100), 3)
            .prefer([*scheme])
            .target(battle_cluster.clone())
            .discovery(discovery.clone())
            .start()
            .await
            .unwrap();
        within(
            "the vault",
            node.wait_for_instances(&battle_cluster, 1, Duration::from_secs(10)),
        )
        .await
        .unwrap();
        requesters.push(node);
    }

    let large = PAYLOAD_MARKER.repeat((1 << 20) / PAYLOAD_MARKER.len());
    for node in &requesters {
        let body = Multipart::from_frames([format!("{PAYLOAD_MARKER} small"), "2nd".into()]);
        let reply = node
            .request(&battle_cluster, "k", body.clone())
            .await
            .unwrap();
        assert_eq!(reply.body, body);
        let body = Multipart::from_frames([large.clone()]);
        let reply = node
            .request(&battle_cluster, "k", body.clone())
            .await
            .unwrap();
        assert_eq!(reply.body, body, "the large payload came back whole");
        let refused = node
            .request(
                &battle_cluster,
                "k",
                Multipart::from_frames(["fail".to_owned(), PAYLOAD_MARKER.to_owned()]),
            )
            .await;
        assert!(
            matches!(&refused, Err(RequestError::Remote { code, .. }) if *code == codes::HANDLER_FAILED),
            "{refused:?}"
        );
        let note = Multipart::from_frames([format!("{PAYLOAD_MARKER} note")]);
        node.notify(&battle_cluster, "k", note.clone())
            .await
            .unwrap();
        assert_eq!(
            within("the notification", notes.recv()).await.unwrap(),
            note
        );
        let all = Multipart::from_frames([format!("{PAYLOAD_MARKER} to all")]);
        let reached = node.broadcast(&battle_cluster, all.clone()).await.unwrap();
        assert_eq!(reached, vec![battle.path().clone()]);
        assert_eq!(within("the broadcast", notes.recv()).await.unwrap(), all);
    }

    let keys = private_keys(&dev);
    assert!(
        keys.len() >= 2,
        "the CA's and the nodes' private keys are on disk: {keys:?}"
    );
    for node in requesters {
        node.shutdown().await;
    }
    battle.shutdown().await;

    let records = logs.snapshot();
    // The capture works: the nodes' own records are in it (registrations, sessions,
    // per-write TRACE records of the links).
    assert!(logs.count("registered") >= 3, "{records:#?}");
    assert!(logs.count("peer ready") >= 1, "{records:#?}");
    assert!(logs.count("TRACE") >= 1, "no TRACE record captured");
    for needle in [PAYLOAD_MARKER, &hex(PAYLOAD_MARKER.as_bytes())] {
        assert_eq!(
            holding(&records, needle),
            Vec::<&String>::new(),
            "payload logged"
        );
    }
    for needle in ["PRIVATE KEY", "-----BEGIN"] {
        assert_eq!(
            holding(&records, needle),
            Vec::<&String>::new(),
            "PEM logged"
        );
    }
    for (file, lines, der) in &keys {
        for line in lines {
            let piece = &line[..line.len().min(24)];
            assert_eq!(
                holding(&records, piece),
                Vec::<&String>::new(),
                "key of {file} logged"
            );
        }
        // The DER bytes in hex or as a Debug byte list (the key itself, past the
        // PKCS#8 header that every key of the algorithm shares).
        let secret = &der[der.len() - 24..];
        let list = format!("{:?}", &secret[..12]);
        for needle in [hex(secret), list[1..list.len() - 1].to_owned()] {
            assert_eq!(
                holding(&records, &needle),
                Vec::<&String>::new(),
                "key bytes of {file} logged"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dev);
}

/// Injected text: ANSI colour and screen-clear, a forged log line, a NUL.
const HOSTILE: &str = "\u{1b}[31m\u{1b}[2JEVIL-TEXT\r\nERROR forged log line\0tail";

/// What a record must not hold: the raw bytes of [`HOSTILE`] that break logs.
fn raw_breaks(record: &str) -> bool {
    record.contains(['\u{1b}', '\r', '\n', '\0'])
}

/// A hostile ZMTP peer: it dials `address` and writes `greeting`, then its ZMTP READY
/// with `socket_type` and `identity` (unless `None`), then `after`.
async fn hostile(address: &str, ready: Option<(&[u8], &[u8])>, after: &[u8]) -> TcpStream {
    let mut out = BytesMut::from(&Greeting::encode_null()[..]);
    if let Some((socket_type, identity)) = ready {
        let mut meta = Metadata::default();
        meta.push(
            Bytes::copy_from_slice(b"Socket-Type"),
            Bytes::copy_from_slice(socket_type),
        );
        meta.push(
            Bytes::copy_from_slice(b"Identity"),
            Bytes::copy_from_slice(identity),
        );
        Command::Ready(meta).encode(&mut out);
    }
    out.extend_from_slice(after);
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(&out).await.unwrap();
    stream
}

/// One DMS message of a single control frame.
fn dms_message(control: Control) -> BytesMut {
    let mut out = BytesMut::new();
    encode_frame(false, false, &control.encode(), &mut out);
    out
}

/// The DMS READY probe of `path`, then a DISCONNECT with the hostile detail.
fn ready_then_disconnect(path: &str) -> BytesMut {
    let mut out = dms_message(Control::new(
        CommandCode::Ready,
        0,
        0,
        Body::Ready {
            path: path.to_owned(),
            liveness_timeout_ms: 3000,
            capabilities: 0,
        },
    ));
    out.extend_from_slice(&dms_message(Control::new(
        CommandCode::Disconnect,
        0,
        0,
        Body::Reason(Reason {
            code: codes::SHUTDOWN,
            detail: HOSTILE.to_owned(),
        }),
    )));
    out
}

fn zmtp_error() -> BytesMut {
    let mut out = BytesMut::new();
    Command::Error {
        reason: Bytes::from_static(HOSTILE.as_bytes()),
    }
    .encode(&mut out);
    out
}

/// Hostile peers put control characters in every string of theirs a node may log: the
/// DISCONNECT detail (a DMS session ended by the peer, under a valid identity and under
/// an identity made of control characters), the ZMTP `ERROR` reason (during the handshake
/// and after it), the socket type. Each reaches the node (its records name the event) and
/// is logged printable: no record holds an ESC, CR, LF or NUL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_supplied_strings_reach_the_logs_printable() {
    let logs = logs();
    let discovery = MemoryDiscovery::new();
    let node = support::node_builder(instance("Battle", "battle-1"))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let mut events = node.events();
    let address = node
        .endpoints()
        .iter()
        .find(|e| e.scheme() == "tcp")
        .unwrap()
        .address()
        .to_owned();
    let evil = instance("Lobby", "evil-1");

    // A DMS session that the peer ends with a hostile DISCONNECT detail.
    let _a = hostile(
        &address,
        Some((b"DEALER", evil.as_str().as_bytes())),
        &ready_then_disconnect(evil.as_str()),
    )
    .await;
    let reason = within("evil-1 to be down", async {
        loop {
            if let Ok(dms::NodeEvent::PeerDown { path, reason }) = events.recv().await {
                if path == evil {
                    return reason;
                }
            }
        }
    })
    .await;
    // The protocol shows a detail's control characters as U+FFFD (PROTOCOL.md §9, M24).
    assert!(
        reason.contains("EVIL-TEXT") && !raw_breaks(&reason),
        "the detail reached the node, printable: {reason:?}"
    );

    // The same under an identity of control characters (not a service path).
    let _b = hostile(
        &address,
        Some((b"DEALER", HOSTILE.as_bytes())),
        &ready_then_disconnect(evil.as_str()),
    )
    .await;
    logs.until("the second peer lost", |r| {
        r.iter().filter(|r| r.contains("peer lost")).count() >= 2
    })
    .await;

    // A ZMTP ERROR instead of READY: the handshake is refused.
    let _c = hostile(&address, None, &zmtp_error()).await;
    // A socket type of control characters.
    let _d = hostile(&address, Some((HOSTILE.as_bytes(), b"")), &[]).await;
    logs.until("both handshakes refused", |r| {
        r.iter().any(|r| r.contains("refused the handshake"))
            && r.iter().any(|r| r.contains("not compatible with ROUTER"))
    })
    .await;

    // A ZMTP ERROR after the handshake: the link goes down, refused by the peer.
    let _e = hostile(&address, Some((b"DEALER", b"")), &zmtp_error()).await;
    logs.until("the link refused by the peer", |r| {
        r.iter().any(|r| r.contains("refused by the peer"))
    })
    .await;
    node.shutdown().await;

    let records = logs.snapshot();
    // Each hostile string was logged (made printable): the checks below are not vacuous.
    assert!(
        logs.count("EVIL-TEXT") >= 4,
        "{:#?}",
        holding(&records, "EVIL")
    );
    for refused in [
        "refused the handshake: \u{fffd}[31m",
        "refused by the peer: \u{fffd}[31m",
    ] {
        assert!(logs.count(refused) >= 1, "{:#?}", holding(&records, "EVIL"));
    }
    let broken: Vec<&String> = records.iter().filter(|r| raw_breaks(r)).collect();
    assert_eq!(broken, Vec::<&String>::new(), "peer text logged raw");
}

//! B4 (docs/RELIABILITY.md): malformed control frames, one row per case, each with the
//! outcome docs/PROTOCOL.md ("Malformed input: what a receiver does") documents for it.
//!
//! Every row builds the receiver in a given state, hands it one message (raw bytes, after
//! the peer id frame a ROUTER puts in front), and checks everything that comes out: the
//! messages it sends, the events it reports, the counters that move, the session state. No
//! row may panic, and no malformed input reaches the application. The row ids (`M01`...)
//! are those of the table in docs/PROTOCOL.md; a test checks that the two agree.

use std::time::{Duration, Instant};

use super::control::{Body, CommandCode, Control, HEADER_LEN, Reason, codes, flags};
use super::*;
use crate::path::ServicePath;
use crate::trace::TraceContext;
use crate::{Multipart, PeerId, Role};

/// The receiver's view of the one message a row sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// Responder (acceptor), link up, no READY yet.
    FreshResponder,
    /// Requester (connector), its READY sent, no answer yet.
    FreshRequester,
    /// Responder with a Ready session.
    ReadyResponder,
    /// Requester with a Ready session, having sent one PING (sequence number 1).
    ReadyRequester,
    /// Requester with Ready sessions to `b` and `c` and request 1 pending at `b`; the
    /// message comes from `b`.
    Pending,
    /// As `Pending`, the message comes from `c`.
    PendingFromOther,
    /// Responder with no session with the sender at all.
    NoSession,
}

/// A counter of [`ProtoStats`] a row expects to move by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counter {
    IgnoredMessages,
    IgnoredPayloads,
    LateReplies,
}

/// What the receiver does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// It sends DISCONNECT `code` and ends the session, reported as
    /// `PeerLost(ProtocolViolation(detail))` with `detail` containing the given text;
    /// pending requests to that peer fail with `PeerLost`; nothing else reaches the
    /// application.
    Closed { code: u16, detail: &'static str },
    /// The peer's DISCONNECT ends the session: nothing is sent, `PeerLost(Disconnected {
    /// Remote, reason })` with exactly this reason (control characters replaced).
    PeerClosed { code: u16, detail: String },
    /// Nothing is sent, nothing is reported, the session is as it was.
    Ignored,
    /// A PONG with this id is sent (urgent), nothing is reported.
    Pong(u64),
    /// The session becomes Ready (a responder answers READY) and the peer is declared dead
    /// after exactly this much silence.
    Ready { liveness: Duration },
    /// Delivered as a request with this id and these payload frames.
    Request { id: u64, body: Vec<Vec<u8>> },
    /// Delivered as a request with this id and this trace context (docs/PROTOCOL.md §3.4).
    Traced {
        id: u64,
        trace: Option<TraceContext>,
    },
    /// Delivered as a notification.
    Notification { broadcast: bool, body: Vec<Vec<u8>> },
    /// Request 1 completes with this result.
    Reply(Result<Vec<Vec<u8>>, Reason>),
}

struct Case {
    /// Its row in docs/PROTOCOL.md.
    id: &'static str,
    name: String,
    setup: Setup,
    /// The frames after the peer id: `[control, payload...]` (may be empty).
    frames: Vec<Vec<u8>>,
    expect: Outcome,
    /// Counters that move by one (all others stay).
    counts: &'static [Counter],
}

// ---- the peers ----------------------------------------------------------------------------

fn path(s: &str) -> ServicePath {
    s.parse().unwrap()
}

/// The requester's path (Lobby).
fn a_path() -> ServicePath {
    path("/demo/cn/android/w1/g1/Lobby/lobby-1")
}

/// The responder's path (Battle).
fn b_path() -> ServicePath {
    path("/demo/cn/android/w1/g1/Battle/battle-1")
}

/// A second responder of the requester (Club).
fn c_path() -> ServicePath {
    path("/demo/cn/android/w1/g1/Club/club-1")
}

/// The origin of the virtual clock, the only real clock read.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

// ---- raw control frames -------------------------------------------------------------------

/// A control frame: header fields as given, `N` = the body's length, then the body.
fn raw(version: u8, command: u8, flag_bits: u8, hop_limit: u8, id: u64, body: &[u8]) -> Vec<u8> {
    raw_n(
        version,
        command,
        flag_bits,
        hop_limit,
        id,
        body.len() as u16,
        body,
    )
}

/// A control frame whose header declares `n` body bytes, followed by `body` (whatever its
/// length).
fn raw_n(
    version: u8,
    command: u8,
    flag_bits: u8,
    hop_limit: u8,
    id: u64,
    n: u16,
    body: &[u8],
) -> Vec<u8> {
    let mut out = vec![version, command, flag_bits, hop_limit];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x1111_2222_3333_4444u64.to_be_bytes()); // source: not checked
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cmd(command: CommandCode, flag_bits: u8, id: u64, body: &[u8]) -> Vec<u8> {
    raw(1, command as u8, flag_bits, 16, id, body)
}

fn ready_fields(liveness_ms: u32, capabilities: u32, path: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&liveness_ms.to_be_bytes());
    out.extend_from_slice(&capabilities.to_be_bytes());
    out.push(path.len() as u8);
    out.extend_from_slice(path);
    out
}

fn ready(liveness_ms: u32, path: &ServicePath) -> Vec<u8> {
    cmd(
        CommandCode::Ready,
        0,
        0,
        &ready_fields(liveness_ms, 0, path.as_str().as_bytes()),
    )
}

fn reason_fields(code: u16, detail: &[u8]) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    out.push(detail.len() as u8);
    out.extend_from_slice(detail);
    out
}

/// A frame with the bytes given.
fn frames(list: &[&[u8]]) -> Vec<Vec<u8>> {
    list.iter().map(|f| f.to_vec()).collect()
}

// ---- the table ----------------------------------------------------------------------------

fn case(
    id: &'static str,
    name: &str,
    setup: Setup,
    frames: Vec<Vec<u8>>,
    expect: Outcome,
    counts: &'static [Counter],
) -> Case {
    Case {
        id,
        name: name.to_owned(),
        setup,
        frames,
        expect,
        counts,
    }
}

fn violation(detail: &'static str) -> Outcome {
    Outcome::Closed {
        code: codes::PROTOCOL_VIOLATION,
        detail,
    }
}

const TRACEPARENT: &[u8; 55] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn sample_trace() -> Option<TraceContext> {
    TraceContext::parse(TRACEPARENT)
}

/// The extension block of the entries `(type, value)`, one after the other.
fn extensions(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, value) in entries {
        out.push(*kind);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
    }
    out
}

/// A REQ expecting a reply, id `id`, with `block` as its body.
fn req_ext(id: u64, block: &[u8]) -> Vec<u8> {
    cmd(CommandCode::Req, flags::EXPECT_REPLY, id, block)
}

fn version_mismatch() -> Outcome {
    Outcome::Closed {
        code: codes::VERSION_MISMATCH,
        detail: "version",
    }
}

/// The table, one row a line.
#[rustfmt::skip]
fn table() -> Vec<Case> {
    use Counter::*;
    use Outcome::*;
    use Setup::*;
    let ping = cmd(CommandCode::Ping, 0, 1, &[]);
    let mut cases = Vec::new();

    // Header: truncated at every length, version, command, body length.
    for len in 0..HEADER_LEN {
        cases.push(case(
            "M01",
            &format!("header truncated to {len} bytes"),
            ReadyResponder,
            vec![ping[..len].to_vec()],
            violation("truncated"),
            &[],
        ));
    }
    let mut c = |id, name: &str, setup, frames, expect, counts| {
        cases.push(case(id, name, setup, frames, expect, counts));
    };
    c("M02", "no control frame (only the peer id)", ReadyResponder, vec![], violation("no control frame"), &[]);
    c("M03", "version 0", ReadyResponder, vec![raw(0, 2, 0, 16, 1, &[])], version_mismatch(), &[]);
    c("M03", "version 2", ReadyResponder, vec![raw(2, 2, 0, 16, 1, &[])], version_mismatch(), &[]);
    c("M03", "version 0xff in a 1-byte frame", ReadyResponder, vec![vec![0xff]], version_mismatch(), &[]);
    c("M03", "version 2 before READY", FreshResponder, vec![raw(2, 1, 0, 16, 0, &[])], version_mismatch(), &[]);
    c("M04", "command 0", ReadyResponder, vec![raw(1, 0, 0, 16, 0, &[])], violation("unknown command 0"), &[]);
    c("M04", "command 7", ReadyResponder, vec![raw(1, 7, 0, 16, 0, &[])], violation("unknown command 7"), &[]);
    c("M04", "command 0xff", ReadyResponder, vec![raw(1, 0xff, 0, 16, 0, &[])], violation("unknown command 255"), &[]);
    c("M05", "body length 1, no body", ReadyResponder, vec![raw_n(1, 2, 0, 16, 1, 1, &[])], violation("truncated"), &[]);
    c("M05", "body length 65535, 4 bytes", ReadyResponder, vec![raw_n(1, 5, 1, 16, 1, 0xffff, &[0; 4])], violation("truncated"), &[]);
    c("M06", "PING with 1 byte past 30 + N", ReadyResponder, vec![raw_n(1, 2, 0, 16, 1, 0, &[0])], violation("its header declares 30"), &[]);
    c("M06", "DISCONNECT with bytes past 30 + N", ReadyResponder, vec![raw_n(1, 4, 0, 16, 0, 3, &[0, 1, 0, b'x', b'y'])], violation("its header declares 33"), &[]);
    c("M06", "REQ with 30 + N + 1 bytes", ReadyResponder, vec![raw_n(1, 5, 1, 16, 7, 2, &[0, 0, 0])], violation("its header declares 32"), &[]);

    // READY.
    let a = a_path();
    let a_bytes = a.as_str().as_bytes();
    let mut ready_short = cmd(CommandCode::Ready, 0, 0, &ready_fields(3000, 0, a_bytes));
    ready_short.truncate(HEADER_LEN);
    ready_short.extend_from_slice(&[0; 8]);
    ready_short[29] = 8;
    c("M07", "READY with 8 of its 9 fixed bytes", FreshResponder, vec![ready_short], violation("truncated"), &[]);
    let mut long_len = ready_fields(3000, 0, a_bytes);
    long_len[8] = 200;
    c("M07", "READY path_len past the body", FreshResponder, vec![cmd(CommandCode::Ready, 0, 0, &long_len)], violation("truncated"), &[]);
    c("M07", "READY with no fields", FreshResponder, vec![cmd(CommandCode::Ready, 0, 0, &[])], violation("truncated"), &[]);
    let mut not_utf8 = a_bytes.to_vec();
    not_utf8[1] = 0xff;
    c("M08", "READY path not UTF-8", FreshResponder, vec![cmd(CommandCode::Ready, 0, 0, &ready_fields(3000, 0, &not_utf8))], violation("not UTF-8"), &[]);
    for (name, bad) in [
        ("READY empty path", &b""[..]),
        ("READY path not absolute", b"demo/cn/android/w1/g1/Lobby/lobby-1"),
        ("READY path with a .. segment", b"/demo/cn/android/w1/g1/../lobby-1"),
        ("READY path with a NUL", b"/demo/cn/android/w1/g1/Lobby/lobby\0-1"),
        ("READY path of 6 segments (a cluster)", b"/demo/cn/android/w1/g1/Lobby"),
        ("READY path with a trailing /", b"/demo/cn/android/w1/g1/Lobby/lobby-1/"),
    ] {
        c("M09", name, FreshResponder, vec![cmd(CommandCode::Ready, 0, 0, &ready_fields(3000, 0, bad))], violation("invalid service path"), &[]);
    }
    let long_segment = format!("/demo/cn/android/w1/g1/Lobby/{}", "x".repeat(226));
    assert_eq!(long_segment.len(), 255);
    c("M09", "READY path of 255 bytes, a segment over 64", FreshResponder, vec![cmd(CommandCode::Ready, 0, 0, &ready_fields(3000, 0, long_segment.as_bytes()))], violation("invalid service path"), &[]);
    c("M10", "READY path is not the link identity", FreshResponder, vec![ready(3000, &path("/demo/cn/android/w1/g1/Lobby/lobby-2"))], violation("differs from the link identity"), &[]);
    c("M10", "READY answer path is not the link identity", FreshRequester, vec![ready(0, &c_path())], violation("differs from the link identity"), &[]);
    c("M11", "READY liveness 0: the responder's default", FreshResponder, vec![ready(0, &a)], Ready { liveness: Duration::from_secs(3) }, &[]);
    c("M11", "READY liveness 1 ms: raised to 50 ms", FreshResponder, vec![ready(1, &a)], Ready { liveness: Duration::from_millis(50) }, &[]);
    c("M11", "READY liveness 600,001 ms: cut to 600 s", FreshResponder, vec![ready(600_001, &a)], Ready { liveness: Duration::from_secs(600) }, &[]);
    c("M11", "READY liveness u32::MAX: cut to 600 s", FreshResponder, vec![ready(u32::MAX, &a)], Ready { liveness: Duration::from_secs(600) }, &[]);
    c("M12", "READY capabilities all set", FreshResponder, vec![cmd(CommandCode::Ready, 0, 0, &ready_fields(3000, u32::MAX, a_bytes))], Ready { liveness: Duration::from_secs(3) }, &[]);
    let mut extended = ready_fields(3000, 0, a_bytes);
    extended.extend_from_slice(b"later fields");
    c("M12", "READY with bytes after the path (within N)", FreshResponder, vec![cmd(CommandCode::Ready, 0, 0, &extended)], Ready { liveness: Duration::from_secs(3) }, &[]);
    c("M12", "READY with flags 0xff, id 99, hop limit 0", FreshResponder, vec![raw(1, 1, 0xff, 0, 99, &ready_fields(3000, 0, a_bytes))], Ready { liveness: Duration::from_secs(3) }, &[]);
    c("M13", "READY with payload frames", FreshResponder, vec![ready(3000, &a), b"junk".to_vec()], Ready { liveness: Duration::from_secs(3) }, &[IgnoredPayloads]);
    c("M14", "second READY, same path", ReadyResponder, vec![ready(3000, &a)], Ignored, &[IgnoredMessages]);
    c("M14", "second READY, other liveness", ReadyResponder, vec![ready(1, &a)], Ignored, &[IgnoredMessages]);
    c("M15", "second READY, another path", ReadyResponder, vec![ready(3000, &path("/demo/cn/android/w1/g1/Lobby/lobby-2"))], violation("differs from the link identity"), &[]);

    // Before READY.
    c("M16", "REQ before READY", FreshResponder, frames(&[&cmd(CommandCode::Req, flags::EXPECT_REPLY, 1, &[]), b"body"]), violation("message before READY"), &[]);
    c("M16", "notification before READY", FreshResponder, vec![cmd(CommandCode::Req, 0, 0, &[])], violation("message before READY"), &[]);
    c("M16", "REP before READY", FreshRequester, vec![cmd(CommandCode::Rep, 0, 1, &[])], violation("message before READY"), &[]);
    c("M16", "PING before READY", FreshResponder, vec![ping.clone()], violation("message before READY"), &[]);
    c("M16", "PONG before READY", FreshRequester, vec![cmd(CommandCode::Pong, 0, 1, &[])], violation("message before READY"), &[]);
    c("M17", "DISCONNECT before READY", FreshResponder, vec![cmd(CommandCode::Disconnect, 0, 0, &reason_fields(1, b"bye"))], PeerClosed { code: 1, detail: "bye".into() }, &[]);

    // PING and PONG.
    c("M18", "PING with payload frames", ReadyResponder, frames(&[&ping, b"x", &[0; 64]]), Pong(1), &[IgnoredPayloads]);
    c("M19", "PING with 4 body bytes", ReadyResponder, vec![cmd(CommandCode::Ping, 0, 2, &[1, 2, 3, 4])], Pong(2), &[]);
    c("M19", "PING with id 0 and flags 0xff", ReadyResponder, vec![cmd(CommandCode::Ping, 0xff, 0, &[])], Pong(0), &[]);
    c("M19", "PING from the responder", ReadyRequester, vec![cmd(CommandCode::Ping, 0, 5, &[])], Pong(5), &[]);
    c("M20", "PONG at the responder (no PING ever sent)", ReadyResponder, vec![cmd(CommandCode::Pong, 0, 1, &[])], Ignored, &[IgnoredMessages]);
    c("M20", "PONG id 0", ReadyRequester, vec![cmd(CommandCode::Pong, 0, 0, &[])], Ignored, &[IgnoredMessages]);
    c("M20", "PONG for a PING not sent yet", ReadyRequester, vec![cmd(CommandCode::Pong, 0, 2, &[])], Ignored, &[IgnoredMessages]);
    c("M21", "PONG for the PING sent (a sign of life, nothing more)", ReadyRequester, vec![cmd(CommandCode::Pong, 0, 1, &[])], Ignored, &[]);

    // DISCONNECT.
    c("M22", "DISCONNECT with no reason (N = 0)", ReadyResponder, vec![cmd(CommandCode::Disconnect, 0, 0, &[])], violation("truncated"), &[]);
    c("M22", "DISCONNECT with 2 of its 3 fixed bytes", ReadyResponder, vec![cmd(CommandCode::Disconnect, 0, 0, &[0, 1])], violation("truncated"), &[]);
    let mut overlong = reason_fields(1, b"bye");
    overlong[2] = 255;
    c("M22", "DISCONNECT detail_len 255, 3 bytes of detail", ReadyResponder, vec![cmd(CommandCode::Disconnect, 0, 0, &overlong)], violation("truncated"), &[]);
    c("M23", "DISCONNECT detail not UTF-8", ReadyResponder, vec![cmd(CommandCode::Disconnect, 0, 0, &reason_fields(1, b"by\xc3"))], violation("not UTF-8"), &[]);
    c("M24", "DISCONNECT detail with control characters", ReadyResponder, vec![cmd(CommandCode::Disconnect, 0, 0, &reason_fields(1, b"bye\n\x1b[31mFAKE LOG\0"))], PeerClosed { code: 1, detail: "bye\u{fffd}\u{fffd}[31mFAKE LOG\u{fffd}".into() }, &[]);
    c("M25", "DISCONNECT with an empty detail", ReadyResponder, vec![cmd(CommandCode::Disconnect, 0, 0, &reason_fields(1, b""))], PeerClosed { code: 1, detail: String::new() }, &[]);
    let long_detail = "é".repeat(127) + "x";
    c("M25", "DISCONNECT detail of 255 bytes", ReadyResponder, vec![cmd(CommandCode::Disconnect, 0, 0, &reason_fields(1, long_detail.as_bytes()))], PeerClosed { code: 1, detail: long_detail.clone() }, &[]);
    c("M25", "DISCONNECT code 0xffff", ReadyResponder, vec![cmd(CommandCode::Disconnect, 0, 0, &reason_fields(0xffff, b"?"))], PeerClosed { code: 0xffff, detail: "?".into() }, &[]);
    c("M25", "DISCONNECT with flags 0xff and id 7", ReadyResponder, vec![cmd(CommandCode::Disconnect, 0xff, 7, &reason_fields(1, b"bye"))], PeerClosed { code: 1, detail: "bye".into() }, &[]);
    c("M26", "DISCONNECT with payload frames", ReadyResponder, frames(&[&cmd(CommandCode::Disconnect, 0, 0, &reason_fields(1, b"bye")), b"x"]), PeerClosed { code: 1, detail: "bye".into() }, &[IgnoredPayloads]);

    // REQ.
    let req = |flag_bits, hops, id| raw(1, 5, flag_bits, hops, id, &[]);
    c("M27", "REQ with hop limit 0", ReadyResponder, frames(&[&req(1, 0, 3), b"p"]), Request { id: 3, body: frames(&[b"p"]) }, &[]);
    c("M27", "REQ with hop limit 255", ReadyResponder, frames(&[&req(1, 255, 3), b"p"]), Request { id: 3, body: frames(&[b"p"]) }, &[]);
    let mut routed = req(1, 16, 4);
    routed[20..28].copy_from_slice(&0xdead_beef_u64.to_be_bytes());
    c("M42", "REQ with a destination hash not 0 and no forwarding entries", ReadyResponder, vec![routed], Closed { code: codes::PROTOCOL_VIOLATION, detail: "forwarding fields" }, &[]);
    c("M28", "REQ with unknown flag bits", ReadyResponder, frames(&[&req(0xf9, 16, 5), b"p"]), Request { id: 5, body: frames(&[b"p"]) }, &[]);
    c("M28", "REQ with EXPECT_REPLY and BROADCAST", ReadyResponder, vec![req(0x03, 16, 6)], Request { id: 6, body: vec![] }, &[]);
    c("M28", "REQ with the ERROR flag only", ReadyResponder, frames(&[&req(0x04, 16, 0), b"n"]), Notification { broadcast: false, body: frames(&[b"n"]) }, &[]);
    c("M28", "notification with an id", ReadyResponder, frames(&[&req(0, 16, 77), b"n"]), Notification { broadcast: false, body: frames(&[b"n"]) }, &[]);
    c("M28", "broadcast with unknown flag bits", ReadyResponder, frames(&[&req(0xf2, 16, 0), b"n"]), Notification { broadcast: true, body: frames(&[b"n"]) }, &[]);
    c("M29", "REQ with 5 body bytes", ReadyResponder, vec![raw(1, 5, 1, 16, 8, &[9; 5])], Request { id: 8, body: vec![] }, &[]);
    let inner = cmd(CommandCode::Disconnect, 0, 0, &reason_fields(1, b"bye"));
    c("M30", "REQ whose payload is a control frame", ReadyResponder, frames(&[&req(1, 16, 9), &inner, &ping]), Request { id: 9, body: vec![inner.clone(), ping.clone()] }, &[]);


    // Extension blocks (§3.4).
    let tp: &[u8] = TRACEPARENT;
    c("M38", "REQ with a traceparent entry", ReadyResponder, frames(&[&req_ext(10, &extensions(&[(1, tp)])), b"q"]), Traced { id: 10, trace: sample_trace() }, &[]);
    c("M38", "REQ with unknown entries around the traceparent", ReadyResponder, vec![req_ext(10, &extensions(&[(0, b""), (2, b"/a/b/c/d/e/f/g"), (3, b"x"), (200, &[0xff; 255]), (1, tp), (9, b"later")]))], Traced { id: 10, trace: sample_trace() }, &[]);
    c("M38", "REQ with only unknown entries", ReadyResponder, vec![req_ext(10, &extensions(&[(128, b"app")]))], Traced { id: 10, trace: None }, &[]);
    let upper = TRACEPARENT.to_ascii_uppercase();
    c("M39", "traceparent in uppercase hex", ReadyResponder, vec![req_ext(11, &extensions(&[(1, &upper)]))], Traced { id: 11, trace: None }, &[]);
    c("M39", "traceparent of 54 bytes", ReadyResponder, vec![req_ext(11, &extensions(&[(1, &tp[..54])]))], Traced { id: 11, trace: None }, &[]);
    c("M39", "traceparent of 56 bytes", ReadyResponder, vec![req_ext(11, &extensions(&[(1, &[tp, b"0"].concat())]))], Traced { id: 11, trace: None }, &[]);
    c("M39", "empty traceparent entry", ReadyResponder, vec![req_ext(11, &extensions(&[(1, b"")]))], Traced { id: 11, trace: None }, &[]);
    for version in [b"01", b"ff"] {
        let other = [&version[..], &tp[2..]].concat();
        c("M39", "traceparent of another version", ReadyResponder, vec![req_ext(11, &extensions(&[(1, &other)]))], Traced { id: 11, trace: None }, &[]);
    }
    c("M39", "traceparent with an all-zero trace id", ReadyResponder, vec![req_ext(11, &extensions(&[(1, b"00-00000000000000000000000000000000-00f067aa0ba902b7-01")]))], Traced { id: 11, trace: None }, &[]);
    c("M39", "traceparent with an all-zero parent id", ReadyResponder, vec![req_ext(11, &extensions(&[(1, b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01")]))], Traced { id: 11, trace: None }, &[]);
    c("M39", "traceparent with other separators", ReadyResponder, vec![req_ext(11, &extensions(&[(1, &TRACEPARENT.map(|b| if b == b'-' { b'_' } else { b }))]))], Traced { id: 11, trace: None }, &[]);
    c("M39", "an invalid traceparent before a valid one", ReadyResponder, vec![req_ext(11, &extensions(&[(1, &upper), (1, tp)]))], Traced { id: 11, trace: None }, &[]);
    let mut cut = extensions(&[(1, tp)]);
    cut.pop();
    c("M40", "traceparent entry cut short", ReadyResponder, vec![req_ext(12, &cut)], Traced { id: 12, trace: None }, &[]);
    c("M40", "a lone type byte", ReadyResponder, vec![req_ext(12, &[1])], Traced { id: 12, trace: None }, &[]);
    c("M40", "a truncated entry after the traceparent", ReadyResponder, vec![req_ext(12, &[extensions(&[(1, tp)]), vec![5, 200, 0]].concat())], Traced { id: 12, trace: sample_trace() }, &[]);
    c("M40", "a truncated entry before the traceparent", ReadyResponder, vec![req_ext(12, &[vec![5, 200, 0], extensions(&[(1, tp)])].concat())], Traced { id: 12, trace: None }, &[]);
    let origin = b"/demo/cn/android/w1/g1/Lobby/lobby-1";
    let dest = b"/demo/cn/android/w1/g1/Trade/trade-1";
    let routed = |block: &[u8], dest_hash: u64| {
        let mut frame = req_ext(13, block);
        frame[12..20].copy_from_slice(&crate::path::hash64(origin).to_be_bytes());
        frame[20..28].copy_from_slice(&dest_hash.to_be_bytes());
        frame
    };
    let bad_route = Closed { code: codes::PROTOCOL_VIOLATION, detail: "forwarding fields" };
    let dest_hash = crate::path::hash64(dest);
    c("M42", "routed REQ without forwarding entries", ReadyResponder, vec![routed(&[], dest_hash)], bad_route.clone(), &[]);
    c("M42", "routed REQ without an origin entry", ReadyResponder, vec![routed(&extensions(&[(3, dest)]), dest_hash)], bad_route.clone(), &[]);
    c("M42", "routed REQ whose destination is not a service path", ReadyResponder, vec![routed(&extensions(&[(2, origin), (3, b"trade")]), crate::path::hash64(b"trade"))], bad_route.clone(), &[]);
    c("M42", "routed REQ whose destination does not match its hash", ReadyResponder, vec![routed(&extensions(&[(2, origin), (3, dest)]), dest_hash ^ 1)], bad_route.clone(), &[]);
    c("M42", "routed REQ whose origin is not UTF-8", ReadyResponder, vec![routed(&extensions(&[(2, &[0xff, 0xfe]), (3, dest)]), dest_hash)], bad_route, &[]);
    c("M41", "REP with a traceparent entry", Pending, frames(&[&cmd(CommandCode::Rep, 0, 1, &extensions(&[(1, tp)])), b"r"]), Reply(Ok(frames(&[b"r"]))), &[]);
    c("M41", "REP with ERROR and an extension block after the detail", Pending, vec![cmd(CommandCode::Rep, flags::ERROR, 1, &[reason_fields(18, b"failed"), extensions(&[(1, tp), (7, b"x")]), vec![1]].concat())], Reply(Err(Reason { code: 18, detail: "failed".into() })), &[]);

    // REP.
    c("M31", "REP for an unknown id", Pending, frames(&[&cmd(CommandCode::Rep, 0, 2, &[]), b"r"]), Ignored, &[LateReplies]);
    c("M31", "REP id 0", Pending, vec![cmd(CommandCode::Rep, 0, 0, &[])], Ignored, &[LateReplies]);
    c("M31", "REP at the responder, which sent no request", ReadyResponder, vec![cmd(CommandCode::Rep, 0, 1, &[])], Ignored, &[LateReplies]);
    c("M32", "REP from another peer than the request's", PendingFromOther, vec![cmd(CommandCode::Rep, 0, 1, &[])], violation("reply to a request sent to another peer"), &[]);
    c("M33", "REP with ERROR and no reason", Pending, vec![cmd(CommandCode::Rep, flags::ERROR, 1, &[])], violation("truncated"), &[]);
    c("M33", "REP with ERROR, detail not UTF-8", Pending, vec![cmd(CommandCode::Rep, flags::ERROR, 1, &reason_fields(16, b"\xff"))], violation("not UTF-8"), &[]);
    c("M34", "REP with ERROR and payload frames", Pending, frames(&[&cmd(CommandCode::Rep, flags::ERROR, 1, &reason_fields(18, b"failed")), b"x"]), Reply(Err(Reason { code: 18, detail: "failed".into() })), &[IgnoredPayloads]);
    c("M35", "REP with ERROR, detail with control characters", Pending, vec![cmd(CommandCode::Rep, flags::ERROR, 1, &reason_fields(300, b"a\r\nb"))], Reply(Err(Reason { code: 300, detail: "a\u{fffd}\u{fffd}b".into() })), &[]);
    c("M36", "REP with unknown flag bits", Pending, frames(&[&cmd(CommandCode::Rep, 0xf8, 1, &[]), b"r"]), Reply(Ok(frames(&[b"r"]))), &[]);
    c("M36", "REP with 3 body bytes, no ERROR", Pending, frames(&[&cmd(CommandCode::Rep, 0, 1, &[0, 16, 0]), b"r"]), Reply(Ok(frames(&[b"r"]))), &[]);

    // Nobody.
    c("M37", "any message from a peer with no session", NoSession, vec![cmd(CommandCode::Req, 1, 1, &[])], Ignored, &[IgnoredMessages]);
    c("M37", "garbage from a peer with no session", NoSession, vec![vec![0xff; 3]], Ignored, &[IgnoredMessages]);
    cases
}

// ---- running a row ------------------------------------------------------------------------

struct Run {
    now: Instant,
    proto: Protocol,
    /// The peer the message comes from.
    from: PeerId,
}

fn drain(proto: &mut Protocol) -> (Vec<Transmit>, Vec<Event>) {
    let transmits = std::iter::from_fn(|| proto.poll_transmit()).collect();
    let events = std::iter::from_fn(|| proto.poll_event()).collect();
    (transmits, events)
}

fn msg_from(peer: &PeerId, control: Vec<u8>) -> Multipart {
    Multipart::from_frames([peer.to_frame(), control.into()])
}

fn setup(setup: Setup) -> Run {
    let now = epoch();
    let a = a_path().peer_id();
    let b = b_path().peer_id();
    let c = c_path().peer_id();
    let responder = || Protocol::new(ProtoConfig::new(b_path()));
    let requester = || Protocol::new(ProtoConfig::new(a_path()));
    let run = match setup {
        Setup::NoSession => Run {
            now,
            proto: responder(),
            from: a,
        },
        Setup::FreshResponder | Setup::ReadyResponder => {
            let mut proto = responder();
            proto.handle_link_up(now, a.clone(), Role::Acceptor);
            if setup == Setup::ReadyResponder {
                proto.handle_message(now, a.clone(), msg_from(&a, ready(3000, &a_path())));
            }
            Run {
                now,
                proto,
                from: a,
            }
        }
        Setup::FreshRequester | Setup::ReadyRequester => {
            let mut proto = requester();
            proto.handle_link_up(now, b.clone(), Role::Connector);
            let mut now = now;
            if setup == Setup::ReadyRequester {
                proto.handle_message(now, b.clone(), msg_from(&b, ready(0, &b_path())));
                now += proto.config().ping_interval;
                proto.handle_timeout(now); // PING 1 goes out
            }
            Run {
                now,
                proto,
                from: b,
            }
        }
        Setup::Pending | Setup::PendingFromOther => {
            let mut proto = requester();
            for (peer, path) in [(&b, b_path()), (&c, c_path())] {
                proto.handle_link_up(now, peer.clone(), Role::Connector);
                proto.handle_message(now, peer.clone(), msg_from(peer, ready(0, &path)));
            }
            let id = proto
                .request(
                    now,
                    &b,
                    Multipart::from_frames(["q"]),
                    Duration::from_secs(5),
                )
                .unwrap();
            assert_eq!(id, RequestId(1));
            let from = if setup == Setup::Pending { b } else { c };
            Run { now, proto, from }
        }
    };
    let mut run = run;
    let (_, events) = drain(&mut run.proto);
    assert!(
        !events.iter().any(|e| matches!(e, Event::PeerLost { .. })),
        "{setup:?}: {events:?}"
    );
    run
}

fn expected_stats(before: ProtoStats, counts: &[Counter]) -> ProtoStats {
    let mut stats = before;
    for counter in counts {
        match counter {
            Counter::IgnoredMessages => stats.ignored_messages += 1,
            Counter::IgnoredPayloads => stats.ignored_payloads += 1,
            Counter::LateReplies => stats.late_replies += 1,
        }
    }
    stats
}

fn bodies(body: &Multipart) -> Vec<Vec<u8>> {
    body.frames().iter().map(|f| f.to_vec()).collect()
}

fn run_case(case: &Case) {
    let what = format!("{} {}", case.id, case.name);
    let mut run = setup(case.setup);
    let peer = run.from.clone();
    let state_before = run.proto.session_state(&peer);
    let pending_before = run.proto.pending();
    let stats_before = run.proto.stats();
    let mut msg = Multipart::from_frames([peer.to_frame()]);
    msg.extend(case.frames.iter().map(|f| bytes::Bytes::from(f.clone())));
    run.proto.handle_message(run.now, peer.clone(), msg);
    let (transmits, events) = drain(&mut run.proto);
    assert_eq!(
        run.proto.stats(),
        expected_stats(stats_before, case.counts),
        "{what}: counters"
    );
    let sent: Vec<Control> = transmits
        .iter()
        .map(|t| {
            assert_eq!(t.to, peer, "{what}: sent to another peer");
            Control::decode(&t.msg[1]).unwrap()
        })
        .collect();
    match &case.expect {
        Outcome::Closed { code, detail } => {
            assert_eq!(sent.len(), 1, "{what}: {sent:?}");
            assert_eq!(sent[0].command, CommandCode::Disconnect, "{what}");
            let Body::Reason(reason) = &sent[0].body else {
                panic!("{what}: {sent:?}")
            };
            assert_eq!(reason.code, *code, "{what}: {reason:?}");
            assert!(reason.detail.contains(detail), "{what}: {reason:?}");
            assert_eq!(run.proto.session_state(&peer), None, "{what}");
            let mut lost = 0;
            for event in &events {
                match event {
                    Event::PeerLost {
                        peer: p,
                        reason: LossReason::ProtocolViolation(d),
                        ..
                    } if *p == peer => {
                        assert_eq!(*d, reason.detail, "{what}");
                        lost += 1;
                    }
                    Event::Reply {
                        result: Err(RequestError::PeerLost(_)),
                        ..
                    } => {}
                    other => panic!("{what}: unexpected {other:?}"),
                }
            }
            assert_eq!(lost, 1, "{what}: {events:?}");
        }
        Outcome::PeerClosed { code, detail } => {
            assert!(sent.is_empty(), "{what}: {sent:?}");
            assert_eq!(run.proto.session_state(&peer), None, "{what}");
            let expected = Reason {
                code: *code,
                detail: detail.clone(),
            };
            assert!(
                matches!(
                    events.as_slice(),
                    [Event::PeerLost { reason: LossReason::Disconnected { initiator: Initiator::Remote, reason }, .. }]
                        if *reason == expected
                ),
                "{what}: {events:?}"
            );
        }
        Outcome::Ignored => {
            assert!(sent.is_empty(), "{what}: {sent:?}");
            assert!(events.is_empty(), "{what}: {events:?}");
            assert_eq!(run.proto.session_state(&peer), state_before, "{what}");
            assert_eq!(run.proto.pending(), pending_before, "{what}");
        }
        Outcome::Pong(id) => {
            assert!(events.is_empty(), "{what}: {events:?}");
            assert_eq!(transmits.len(), 1, "{what}: {sent:?}");
            assert!(transmits[0].urgent, "{what}");
            assert_eq!(
                transmits[0].msg.len(),
                2,
                "{what}: a PONG carries no payload"
            );
            assert_eq!(
                (sent[0].command, sent[0].id),
                (CommandCode::Pong, *id),
                "{what}"
            );
        }
        Outcome::Ready { liveness } => {
            assert_eq!(
                run.proto.session_state(&peer),
                Some(SessionState::Ready),
                "{what}"
            );
            assert!(
                matches!(
                    events.as_slice(),
                    [Event::PeerReady {
                        role: Role::Acceptor,
                        ..
                    }]
                ),
                "{what}: {events:?}"
            );
            assert!(
                matches!(
                    sent.as_slice(),
                    [Control {
                        command: CommandCode::Ready,
                        body: Body::Ready {
                            liveness_timeout_ms: 0,
                            ..
                        },
                        ..
                    }]
                ),
                "{what}: {sent:?}"
            );
            let just_before = run.now + *liveness - Duration::from_millis(1);
            run.proto.handle_timeout(just_before);
            assert_eq!(
                run.proto.session_state(&peer),
                Some(SessionState::Ready),
                "{what}: dead before {liveness:?}"
            );
            run.proto.handle_timeout(run.now + *liveness);
            assert_eq!(
                run.proto.session_state(&peer),
                None,
                "{what}: alive after {liveness:?}"
            );
        }
        Outcome::Request { id, body } => {
            assert!(sent.is_empty(), "{what}: {sent:?}");
            match events.as_slice() {
                [
                    Event::Request {
                        peer: p,
                        from,
                        id: got,
                        body: got_body,
                        trace: _,
                    },
                ] => {
                    assert_eq!(
                        (p, from, *got),
                        (&peer, &a_path(), RequestId(*id)),
                        "{what}"
                    );
                    assert_eq!(&bodies(got_body), body, "{what}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        Outcome::Traced { id, trace } => {
            assert!(sent.is_empty(), "{what}: {sent:?}");
            match events.as_slice() {
                [
                    Event::Request {
                        id: got,
                        trace: got_trace,
                        ..
                    },
                ] => assert_eq!((*got, got_trace), (RequestId(*id), trace), "{what}"),
                other => panic!("{what}: {other:?}"),
            }
        }
        Outcome::Notification { broadcast, body } => {
            assert!(sent.is_empty(), "{what}: {sent:?}");
            match events.as_slice() {
                [
                    Event::Notification {
                        broadcast: got,
                        body: got_body,
                        ..
                    },
                ] => {
                    assert_eq!(got, broadcast, "{what}");
                    assert_eq!(&bodies(got_body), body, "{what}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        Outcome::Reply(expected) => {
            assert!(sent.is_empty(), "{what}: {sent:?}");
            match events.as_slice() {
                [Event::Reply { id, result }] => {
                    assert_eq!(*id, RequestId(1), "{what}");
                    let got = match result {
                        Ok(body) => Ok(bodies(body)),
                        Err(RequestError::Remote(reason)) => Err(reason.clone()),
                        Err(other) => panic!("{what}: {other:?}"),
                    };
                    assert_eq!(&got, expected, "{what}");
                }
                other => panic!("{what}: {other:?}"),
            }
            assert_eq!(run.proto.pending(), 0, "{what}");
        }
    }
    // Sessions other than the sender's are untouched.
    if matches!(case.setup, Setup::Pending | Setup::PendingFromOther) {
        let other = if peer == b_path().peer_id() {
            c_path().peer_id()
        } else {
            b_path().peer_id()
        };
        assert_eq!(
            run.proto.session_state(&other),
            Some(SessionState::Ready),
            "{what}: another session suffered"
        );
        if case.setup == Setup::PendingFromOther {
            assert_eq!(
                run.proto.pending_for(&b_path().peer_id()),
                1,
                "{what}: the real request must still wait for its reply"
            );
        }
    }
}

#[test]
fn malformed_control_frames_have_their_documented_outcome() {
    let cases = table();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    for case in &cases {
        run_case(case);
    }
}

/// Every row id of the test table is a row of docs/PROTOCOL.md's table and the reverse,
/// so that the document and the behaviour cannot drift apart.
#[test]
fn the_table_matches_protocol_md() {
    let doc = include_str!("../../../docs/PROTOCOL.md");
    let section = doc
        .split("## 9. Malformed input: what a receiver does")
        .nth(1)
        .expect("PROTOCOL.md has the malformed-input section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let documented: std::collections::BTreeSet<&str> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|rest| rest.split(' ').next())
        .filter(|id| id.len() == 3 && id.starts_with('M'))
        .collect();
    let tested: std::collections::BTreeSet<&str> = table().iter().map(|c| c.id).collect();
    assert_eq!(documented, tested);
}

/// The table's byte helpers build what the encoder builds.
#[test]
fn raw_helpers_build_what_the_encoder_builds() {
    let mut expected = Control::new(
        CommandCode::Ready,
        0,
        0,
        Body::Ready {
            path: a_path().as_str().to_owned(),
            liveness_timeout_ms: 3000,
            capabilities: 0,
        },
    );
    expected.source = 0x1111_2222_3333_4444;
    assert_eq!(expected.encode().to_vec(), ready(3000, &a_path()));
}

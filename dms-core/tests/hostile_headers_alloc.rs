//! B2: hostile headers cost no memory. A counting global allocator (`stats_alloc`, as in
//! `dms-transport-tcp`'s allocation tests) measures what the public decoders
//! (`FrameCodec`, `MessageCodec`, `Handshake`) allocate when they meet headers declaring
//! 2⁶³ bytes, a message of "2³² frames" (MORE frames without end) and a READY declaring a
//! 2¹⁶-byte identity: each is refused with its typed error, and all that decoding
//! allocated, an upper bound of its peak, stays within 64 KiB (the read buffer a transport
//! holds anyway; the input itself is built before the measurement, as the read buffer
//! would be).
//!
//! The counters are process-wide: the tests of this file take turns (see [`turn`]).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::alloc::System;
use std::sync::{Mutex, PoisonError};

use bytes::{BufMut, Bytes, BytesMut};
use dms_core::wire::{
    Command, FrameCodec, GREETING_LEN, Greeting, Handshake, HandshakeConfig, HandshakeError,
    Inbound, Limits, MessageCodec, Metadata, WireError,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// One test at a time: another test's allocations would be counted too.
static SERIAL: Mutex<()> = Mutex::new(());

/// This test's turn (held to its end).
fn turn() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The bound of the matrix (B2): allocation before a refusal.
const PEAK_BOUND: u64 = 64 << 10;

/// What `f` allocated in all, in bytes (a reallocation counts its growth): at least its
/// peak above the start.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let region = Region::new(GLOBAL);
    let out = f();
    let allocated = region.change().bytes_allocated;
    (out, u64::try_from(allocated).unwrap_or(u64::MAX))
}

fn assert_bounded(case: &str, peak: u64) {
    eprintln!("B2 {case}: allocated {peak} bytes");
    assert!(
        peak <= PEAK_BOUND,
        "{case}: decoding allocated {peak} bytes, over {PEAK_BOUND}"
    );
}

/// A long frame header (flags | 8-byte size) declaring `len` bytes, and nothing else.
fn long_header(flags: u8, len: u64) -> BytesMut {
    let mut buf = BytesMut::with_capacity(9);
    buf.put_u8(flags | 0x02);
    buf.put_u64(len);
    buf
}

/// The self-check: the allocator counts what decoding does allocate, so a decoder that
/// reserved on a peer's word would be seen.
#[test]
fn the_counter_sees_a_reservation() {
    let _turn = turn();
    let ((), peak) = peak_of(|| {
        let mut buf = BytesMut::new();
        buf.reserve(1 << 20);
        drop(buf);
    });
    assert!(peak >= 1 << 20, "a 1 MiB reservation counted as {peak}");
}

#[test]
fn a_long_header_declaring_2_pow_63_bytes_is_refused_without_allocating() {
    let _turn = turn();
    let declared = 1u64 << 63;
    // The frame decoder alone, then the message decoder a link runs.
    let mut buf = long_header(0x00, declared);
    let (result, peak) = peak_of(|| FrameCodec::new(Limits::default()).decode(&mut buf));
    assert_eq!(
        result,
        Err(WireError::FrameTooLarge {
            len: declared,
            max: Limits::DEFAULT_MAX_FRAME_LEN
        })
    );
    assert_bounded("FrameCodec, 2^63-byte frame", peak);

    let mut buf = long_header(0x01, declared);
    let mut codec = MessageCodec::new(Limits::default());
    codec.set_prefix(Some(Bytes::from_static(b"peer")));
    let (result, peak) = peak_of(|| codec.decode(&mut buf));
    assert_eq!(
        result,
        Err(WireError::FrameTooLarge {
            len: declared,
            max: Limits::DEFAULT_MAX_FRAME_LEN
        })
    );
    assert_bounded("MessageCodec, 2^63-byte frame", peak);

    // A command frame (the READY) declaring 2^63 bytes during the handshake.
    let mut buf = BytesMut::from(&Greeting::encode_null()[..]);
    buf.extend_from_slice(&long_header(0x04, declared));
    let mut handshake = Handshake::new(HandshakeConfig::default());
    let (result, peak) = peak_of(|| handshake.handle_bytes(&mut buf));
    assert_eq!(
        result,
        Err(HandshakeError::Wire(WireError::FrameTooLarge {
            len: declared,
            max: Limits::MAX_HANDSHAKE_FRAME_LEN
        }))
    );
    assert_bounded("Handshake, 2^63-byte READY", peak);
}

/// With every limit at its maximum the 2⁶³-byte header is legal: the decoder waits for
/// the body and still reserves nothing on the peer's word; the length arithmetic of the
/// message budget saturates instead of overflowing (CVE-2019-6250).
#[test]
fn with_no_limits_a_2_pow_63_header_reserves_nothing_and_the_sums_do_not_overflow() {
    let _turn = turn();
    let open = Limits::builder()
        .max_frame_len(u64::MAX)
        .max_message_len(u64::MAX)
        .build();
    let declared = 1u64 << 63;
    let mut buf = long_header(0x00, declared);
    let capacity = buf.capacity();
    let mut codec = MessageCodec::new(open);
    let (result, peak) = peak_of(|| codec.decode(&mut buf));
    assert_eq!(result, Ok(None), "the body is awaited");
    assert!(codec.has_partial());
    assert_eq!(
        codec.body_missing(buf.len()),
        usize::try_from(declared).unwrap()
    );
    assert!(buf.capacity() <= capacity, "the read buffer grew");
    assert_bounded("MessageCodec without limits, 2^63-byte frame awaited", peak);

    // Ten bytes of a message, then a frame declaring u64::MAX: 10 + u64::MAX would wrap.
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0x01, 10]);
    buf.extend_from_slice(&[0u8; 10]);
    buf.extend_from_slice(&long_header(0x00, u64::MAX));
    let mut codec = MessageCodec::new(open);
    let (result, peak) = peak_of(|| codec.decode(&mut buf));
    assert_eq!(
        result,
        Err(WireError::MessageTooLarge {
            len: u64::MAX,
            max: u64::MAX
        })
    );
    assert_bounded("MessageCodec without limits, 10 + u64::MAX bytes", peak);
}

/// ZMTP carries no frame count: a message "of 2³² frames" is MORE frames without end. The
/// decoder is given 64 KiB of them (32,768 empty frames with MORE) and refuses at the
/// first frame past `max_frames_per_message`, having kept only what it accepted.
#[test]
fn a_message_of_endless_frames_is_refused_at_the_frame_limit_within_the_bound() {
    let _turn = turn();
    let headers = 32 << 10;
    let mut buf = BytesMut::with_capacity(2 * headers);
    for _ in 0..headers {
        buf.extend_from_slice(&[0x01, 0x00]);
    }
    let mut codec = MessageCodec::new(Limits::default());
    codec.set_prefix(Some(Bytes::from_static(b"peer")));
    let (result, peak) = peak_of(|| codec.decode(&mut buf));
    assert_eq!(
        result,
        Err(WireError::TooManyFrames {
            max: Limits::DEFAULT_MAX_FRAMES_PER_MESSAGE
        })
    );
    let accepted = Limits::DEFAULT_MAX_FRAMES_PER_MESSAGE + 1; // the refused one was read
    assert_eq!(buf.len(), 2 * (headers - accepted), "no frame read past it");
    assert_bounded("MessageCodec, endless MORE frames (default 64)", peak);

    // The same with the largest frame count a configuration would sensibly allow
    // (1,024): every accepted frame costs one `Bytes` handle, nothing of the input.
    let limits = Limits::builder().max_frames_per_message(1024).build();
    let mut buf = BytesMut::with_capacity(2 * headers);
    for _ in 0..headers {
        buf.extend_from_slice(&[0x01, 0x00]);
    }
    let mut codec = MessageCodec::new(limits);
    let (result, peak) = peak_of(|| codec.decode(&mut buf));
    assert_eq!(result, Err(WireError::TooManyFrames { max: 1024 }));
    assert_bounded("MessageCodec, endless MORE frames (limit 1,024)", peak);

    // And a well-formed message at the limit still decodes (the bound is not a refusal
    // of everything).
    let mut buf = BytesMut::new();
    for i in 0..Limits::DEFAULT_MAX_FRAMES_PER_MESSAGE {
        let more = i + 1 < Limits::DEFAULT_MAX_FRAMES_PER_MESSAGE;
        buf.extend_from_slice(&[u8::from(more), 0x00]);
    }
    match MessageCodec::new(Limits::default()).decode(&mut buf) {
        Ok(Some(Inbound::Message(msg))) => {
            assert_eq!(msg.len(), Limits::DEFAULT_MAX_FRAMES_PER_MESSAGE);
        }
        other => panic!("{other:?}"),
    }
}

/// A greeting and a READY with `Socket-Type: DEALER` and `identity`.
fn ready_with_identity(identity: &[u8]) -> BytesMut {
    let mut buf = BytesMut::from(&Greeting::encode_null()[..]);
    let mut meta = Metadata::default();
    meta.push("Socket-Type", "DEALER");
    meta.push("Identity", Bytes::copy_from_slice(identity));
    Command::Ready(meta).encode(&mut buf);
    buf
}

#[test]
fn a_2_pow_16_byte_identity_is_refused_within_the_bound() {
    let _turn = turn();
    // The whole READY is there (65,576 bytes): it is refused on its header, over the
    // 64 KiB a peer may send before its handshake is done.
    let identity = vec![b'i'; 1 << 16];
    let mut buf = ready_with_identity(&identity);
    let ready_len = (buf.len() - GREETING_LEN - 9) as u64;
    let mut handshake = Handshake::new(HandshakeConfig::default());
    let (result, peak) = peak_of(|| handshake.handle_bytes(&mut buf));
    assert_eq!(
        result,
        Err(HandshakeError::Wire(WireError::FrameTooLarge {
            len: ready_len,
            max: Limits::MAX_HANDSHAKE_FRAME_LEN
        }))
    );
    assert_bounded("Handshake, READY with a 2^16-byte identity", peak);

    // A small READY whose Identity property declares 2^16 bytes it does not hold.
    let mut body = BytesMut::new();
    body.put_u8(5);
    body.extend_from_slice(b"READY");
    body.put_u8(11);
    body.extend_from_slice(b"Socket-Type");
    body.put_u32(6);
    body.extend_from_slice(b"DEALER");
    body.put_u8(8);
    body.extend_from_slice(b"Identity");
    body.put_u32(1 << 16);
    body.extend_from_slice(b"short");
    let mut buf = BytesMut::from(&Greeting::encode_null()[..]);
    buf.extend_from_slice(&[0x04, u8::try_from(body.len()).unwrap()]);
    buf.extend_from_slice(&body);
    let mut handshake = Handshake::new(HandshakeConfig::default());
    let (result, peak) = peak_of(|| handshake.handle_bytes(&mut buf));
    assert!(
        matches!(
            result,
            Err(HandshakeError::Wire(WireError::MalformedCommand {
                command: "READY",
                ..
            }))
        ),
        "{result:?}"
    );
    assert_bounded("Handshake, Identity declaring 2^16 bytes it lacks", peak);

    // The longest identity a READY within the handshake frame limit can carry: buffered
    // (it is the read buffer), refused for its length, not copied.
    let overhead = 1 + 5 + (1 + 11 + 4 + 6) + (1 + 8 + 4);
    let longest = usize::try_from(Limits::MAX_HANDSHAKE_FRAME_LEN).unwrap() - overhead;
    let identity = vec![b'i'; longest];
    let mut buf = ready_with_identity(&identity);
    let mut handshake = Handshake::new(HandshakeConfig::default());
    let (result, peak) = peak_of(|| handshake.handle_bytes(&mut buf));
    assert_eq!(result, Err(HandshakeError::IdentityTooLong(longest)));
    assert_bounded("Handshake, READY of 64 KiB with its longest identity", peak);

    // One byte over the 255 allowed.
    let mut buf = ready_with_identity(&[b'i'; 256]);
    let mut handshake = Handshake::new(HandshakeConfig::default());
    let (result, peak) = peak_of(|| handshake.handle_bytes(&mut buf));
    assert_eq!(result, Err(HandshakeError::IdentityTooLong(256)));
    assert_bounded("Handshake, 256-byte identity", peak);

    // And 255 bytes are accepted.
    let mut buf = ready_with_identity(&[b'i'; 255]);
    let info = Handshake::new(HandshakeConfig::default())
        .handle_bytes(&mut buf)
        .unwrap()
        .unwrap();
    assert_eq!(info.identity.len(), 255);
}

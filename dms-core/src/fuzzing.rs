//! Entry points of the fuzz targets in `fuzz/`, kept here so that the targets are one-liners
//! and the corpus replay test (run on stable in the test suite) exercises the same code.

use bytes::BytesMut;

use crate::wire::{Handshake, HandshakeConfig, Inbound, Limits, MessageCodec};

/// Limits small enough for a fuzzer to hit every bound.
fn fuzz_limits(selector: u8) -> Limits {
    Limits::builder()
        .max_frame_len(u64::from(selector & 0x3F) * 16 + 1)
        .max_frames_per_message(usize::from(selector >> 6) + 1)
        .max_message_len(600)
        .build()
}

/// Chunk sizes to feed input in, so that every split point is reachable.
fn chunk_len(selector: u8) -> usize {
    usize::from(selector % 17) + 1
}

/// Feeds `data` to a [`MessageCodec`] in chunks; every decoded message is re-encoded and
/// decoded again and must come back equal. Panics only on a bug.
pub fn exercise_wire_decode(data: &[u8]) {
    let [limits_sel, chunk_sel, rest @ ..] = data else {
        return;
    };
    let limits = fuzz_limits(*limits_sel);
    let mut codec = MessageCodec::new(limits);
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(chunk_len(*chunk_sel)) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(Inbound::Message(msg))) => {
                    let mut again = BytesMut::new();
                    let mut echo = MessageCodec::new(limits);
                    echo.encode(&msg, &mut again)
                        .expect("a decoded message is within the limits");
                    assert_eq!(
                        echo.decode(&mut again),
                        Ok(Some(Inbound::Message(msg))),
                        "re-encoded message decodes to itself"
                    );
                }
                Ok(Some(Inbound::Command(_))) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// Feeds `data` to a [`Handshake`] in chunks, then (if it completes) the rest to a
/// [`MessageCodec`]. Panics only on a bug.
pub fn exercise_handshake(data: &[u8]) {
    let [limits_sel, chunk_sel, rest @ ..] = data else {
        return;
    };
    let config = HandshakeConfig {
        limits: fuzz_limits(*limits_sel),
        ..HandshakeConfig::default()
    };
    let mut handshake = Handshake::new(config.clone());
    let mut out = BytesMut::new();
    assert!(handshake.poll_transmit(&mut out));
    let mut buf = BytesMut::new();
    let mut codec: Option<MessageCodec> = None;
    for chunk in rest.chunks(chunk_len(*chunk_sel)) {
        buf.extend_from_slice(chunk);
        if let Some(codec) = codec.as_mut() {
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
            continue;
        }
        match handshake.handle_bytes(&mut buf) {
            Ok(Some(info)) => {
                assert!(info.identity.len() <= 255);
                codec = Some(MessageCodec::new(config.limits));
            }
            Ok(None) => {}
            Err(_) => return,
        }
    }
}

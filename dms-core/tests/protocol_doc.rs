//! The examples of `docs/PROTOCOL.md` are what the encoder produces, byte for byte.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use dms_core::path::hash64;
use dms_core::proto::control::{Body, CommandCode, Control, Reason};
use dms_core::trace::TraceContext;

const LOBBY: &str = "/demo/cn/android/w1/g1/Lobby/lobby-1";
const BATTLE: &str = "/demo/cn/android/w1/g1/Battle/battle-1";

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn control(command: CommandCode, flags: u8, id: u64, from: &str, body: Body) -> Control {
    let mut c = Control::new(command, flags, id, body);
    c.source = hash64(from.as_bytes());
    c
}

#[test]
fn examples_match_the_encoder() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md"))
        .unwrap();
    let reason = |code, detail: &str| {
        Body::Reason(Reason {
            code,
            detail: detail.into(),
        })
    };
    let examples = [
        control(
            CommandCode::Ready,
            0,
            0,
            LOBBY,
            Body::Ready {
                path: LOBBY.into(),
                liveness_timeout_ms: 3000,
                capabilities: 0,
            },
        ),
        control(
            CommandCode::Ready,
            0,
            0,
            BATTLE,
            Body::Ready {
                path: BATTLE.into(),
                liveness_timeout_ms: 0,
                capabilities: 0,
            },
        ),
        control(CommandCode::Ping, 0, 1, LOBBY, Body::Empty),
        control(CommandCode::Pong, 0, 1, BATTLE, Body::Empty),
        control(CommandCode::Req, 0x01, 7, LOBBY, Body::Empty),
        control(CommandCode::Rep, 0, 7, BATTLE, Body::Empty),
        // §3.4: the same request with a trace context in its extension block.
        control(CommandCode::Req, 0x01, 7, LOBBY, Body::Empty).with_trace(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse::<TraceContext>()
                .ok(),
        ),
        control(CommandCode::Rep, 0x04, 7, BATTLE, reason(16, "no handler")),
        control(CommandCode::Disconnect, 0, 0, BATTLE, reason(1, "bye")),
    ];
    for example in examples {
        let encoded = example.encode();
        assert!(
            doc.contains(&hex(&encoded)),
            "{example:?} is not in PROTOCOL.md as\n{}",
            hex(&encoded)
        );
        assert_eq!(Control::decode(&encoded).unwrap(), example);
    }
    assert!(doc.contains(&format!("{:#018x}", hash64(LOBBY.as_bytes()))));
    assert!(doc.contains(&format!("{:#018x}", hash64(BATTLE.as_bytes()))));
}

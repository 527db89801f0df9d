//! Control frame codec: encode and decode of the 30-byte header alone (REQ, PING) and with a
//! READY body (a service path), per frame.
#![allow(missing_docs)]

mod common;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dms_core::proto::control::{Body, CommandCode, Control, flags};

fn frames() -> Vec<(&'static str, Control)> {
    let mut req = Control::new(
        CommandCode::Req,
        flags::EXPECT_REPLY,
        0x1234_5678,
        Body::Empty,
    );
    req.source = 0xcbf2_9ce4_8422_2325;
    req.destination = 0xaf63_dc4c_8601_ec8c;
    let ping = Control::new(CommandCode::Ping, 0, 42, Body::Empty);
    let ready = Control::new(
        CommandCode::Ready,
        0,
        0,
        Body::Ready {
            path: "/demo/cn/android/w1/g1/Battle/battle-1".into(),
            liveness_timeout_ms: 3000,
            capabilities: 0,
        },
    );
    vec![("req", req), ("ping", ping), ("ready", ready)]
}

fn control(c: &mut Criterion) {
    let mut group = c.benchmark_group("control");
    for (name, frame) in frames() {
        let wire = frame.encode();
        let label = format!("{name}_{}B", wire.len());
        group.bench_with_input(BenchmarkId::new("encode", &label), &frame, |b, frame| {
            b.iter(|| std::hint::black_box(frame).encode());
        });
        group.bench_with_input(BenchmarkId::new("decode", &label), &wire, |b, wire| {
            b.iter(|| Control::decode(std::hint::black_box(wire)).expect("decode"));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = control
}
criterion_main!(benches);

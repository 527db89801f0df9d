//! Codec throughput: encode and decode of 64 B and 64 KiB single-frame messages, and a
//! batch of 3 × 64 B multipart messages (what a transport does per read).
#![allow(missing_docs)]

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dms_core::Multipart;
use dms_core::wire::{Inbound, Limits, MessageCodec};

const BATCH: usize = 256;

fn messages(size: usize, frames: usize) -> Multipart {
    Multipart::from_frames((0..frames).map(|_| Bytes::from(vec![7u8; size])))
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for (size, frames) in [(64usize, 1usize), (65_536, 1), (64, 3)] {
        let msg = messages(size, frames);
        let label = format!("{size}Bx{frames}");
        group.throughput(Throughput::Elements(BATCH as u64));

        group.bench_with_input(BenchmarkId::new("encode", &label), &msg, |b, msg| {
            let mut codec = MessageCodec::new(Limits::default());
            let mut buf = BytesMut::with_capacity(BATCH * (size + 9) * frames);
            b.iter(|| {
                buf.clear();
                for _ in 0..BATCH {
                    codec.encode(msg, &mut buf).expect("encode");
                }
                std::hint::black_box(buf.len())
            });
        });

        let mut wire = BytesMut::new();
        let mut enc = MessageCodec::new(Limits::default());
        for _ in 0..BATCH {
            enc.encode(&msg, &mut wire).expect("encode");
        }
        let wire = wire.freeze();
        group.bench_with_input(BenchmarkId::new("decode", &label), &wire, |b, wire| {
            let mut codec = MessageCodec::new(Limits::default());
            codec.set_prefix(Some(Bytes::from_static(b"peer")));
            // The copy into a fresh read buffer is setup, not timed: decoding itself is
            // zero-copy.
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| {
                    let mut n = 0;
                    while let Some(Inbound::Message(m)) = codec.decode(buf).expect("decode") {
                        n += m.len();
                    }
                    std::hint::black_box(n)
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);

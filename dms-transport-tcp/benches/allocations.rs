//! Heap allocations per message on a TCP link in steady state (sending and receiving
//! together, both sides in this process), counted by a counting global allocator.
//! Prints one JSON line per case in the schema of `shared/peers`
//! (metric `allocations_per_msg`).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/factory/mod.rs"]
mod factory;

use std::alloc::System;

use dms_test_support::allocations::{self, Allocations};
use factory::Tcp;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn allocations_so_far() -> u64 {
    let stats = GLOBAL.stats();
    (stats.allocations + stats.reallocations) as u64
}

fn report(pattern: &str, size: usize, frames: usize, counted: Allocations) {
    println!(
        "{{\"peer\":\"dms\",\"transport\":\"tcp\",\"pattern\":\"{pattern}\",\
         \"metric\":\"allocations_per_msg\",\"msg_size\":{size},\"value\":{:.4},\"n\":{},\
         \"frames\":{frames}}}",
        counted.per_message(),
        counted.messages
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, quickly.
    let messages = if std::env::args().any(|a| a == "--bench") {
        200_000
    } else {
        2_000
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (size, frames) in [(64, 1), (1024, 1), (65536, 1), (64, 3)] {
            let n = if size > 4096 { messages / 20 } else { messages };
            let counted = allocations::one_way(&Tcp, size, frames, n, allocations_so_far).await;
            let pattern = if frames == 1 {
                "router-dealer"
            } else {
                "router-dealer-multipart"
            };
            report(pattern, size, frames, counted);
        }
        let counted = allocations::round_trips(&Tcp, 64, messages / 10, allocations_so_far).await;
        // Per message: a round trip is two.
        report(
            "round-trip",
            64,
            1,
            Allocations {
                messages: counted.messages * 2,
                ..counted
            },
        );
    });
}

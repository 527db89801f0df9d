//! Steady-state heap allocations per message on a TCP link, counted by a counting global
//! allocator: the bound (none per single-frame message, sending and receiving together) is a
//! property of the hot path (encode into the link buffer, zero-copy decode, batched
//! hand-over), so a change that allocates per message fails here. The exact numbers are
//! reported by `cargo bench -p dms-transport-tcp --bench allocations`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod factory;

use std::alloc::System;

use dms_test_support::allocations;
use factory::Tcp;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn allocations_so_far() -> u64 {
    let stats = GLOBAL.stats();
    (stats.allocations + stats.reallocations) as u64
}

// One test: the allocator's count is the whole process's, so two tests running at once
// (plain `cargo test` runs them on threads) would count each other's allocations.
#[tokio::test(flavor = "current_thread")]
async fn steady_state_allocations_per_message_are_bounded() {
    // Single-frame messages ([peer][payload]) allocate nothing per message: the payload
    // is encoded into the link buffer, decoded as a slice of the read buffer, and the
    // frames stay inline. Read buffers are allocated per many messages.
    for size in [64, 1024] {
        let counted = allocations::one_way(&Tcp, size, 1, 20_000, allocations_so_far).await;
        assert!(
            counted.per_message() <= 0.25,
            "{size} B: {counted:?} ({:.3} per message)",
            counted.per_message()
        );
    }
    // 64 KiB: the body is sent from where it is (no copy, no buffer), and received into a
    // buffer of its own size: about one allocation per message, not two.
    let counted = allocations::one_way(&Tcp, 64 << 10, 1, 2_000, allocations_so_far).await;
    assert!(
        counted.per_message() <= 1.1,
        "64 KiB: {counted:?} ({:.3} per message)",
        counted.per_message()
    );
    // Three payload frames and the peer frame are more than a message keeps inline (3):
    // the sender's clone and the receiver's decoded message each hold a frame list.
    let counted = allocations::one_way(&Tcp, 64, 3, 20_000, allocations_so_far).await;
    assert!(
        counted.per_message() <= 2.25,
        "64 B x3: {counted:?} ({:.3} per message)",
        counted.per_message()
    );
    // Per round trip (two messages), as for one-way single-frame messages.
    let counted = allocations::round_trips(&Tcp, 64, 2_000, allocations_so_far).await;
    assert!(
        counted.per_message() <= 0.5,
        "{counted:?} ({:.3} per round trip)",
        counted.per_message()
    );
}

//! Heap allocations per message on a [`MessageMiddleware`] in steady state.
//!
//! The caller's binary installs a counting global allocator (for example `stats_alloc`)
//! and passes a function reading its count of allocations (reallocations included); a
//! library cannot install one for it. Both sides run in the caller's runtime, so every
//! allocation of sending, writing, reading, decoding and receiving is counted.

use bytes::Bytes;
use dms_core::{Incoming, MessageMiddleware, Multipart, SendError};

use crate::middleware::{Factory, Options, pair};
use crate::wait::within;

/// Allocations counted while messages went through a middleware pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allocations {
    /// Messages (or round trips) measured.
    pub messages: u64,
    /// Allocations counted meanwhile.
    pub allocations: u64,
}

impl Allocations {
    /// Allocations per message.
    pub fn per_message(&self) -> f64 {
        self.allocations as f64 / self.messages.max(1) as f64
    }
}

/// Sends `messages` one-way messages of `size` bytes (each `frames` payload frames) from a
/// client to a server and receives them all, after as many to warm up; counts the
/// allocations of the measured half with `count`.
pub async fn one_way<F: Factory>(
    factory: &F,
    size: usize,
    frames: usize,
    messages: u64,
    count: impl Fn() -> u64,
) -> Allocations {
    let (server, client, _, server_id) =
        pair(factory, Options::default(), Options::default()).await;
    let payload = Bytes::from(vec![0x5a; size]);
    let mut msg = Multipart::from_frames([server_id.to_frame()]);
    for _ in 0..frames {
        msg.push(payload.clone());
    }
    let mut items = Vec::with_capacity(256);
    let run = async |n: u64| {
        let (mut sent, mut received) = (0, 0);
        while received < n {
            while sent < n {
                match client.try_send(msg.clone()) {
                    Ok(()) => sent += 1,
                    Err(SendError::Full { .. }) => break,
                    Err(error) => panic!("send: {error}"),
                }
            }
            items.clear();
            within("receive", server.recv_many(&mut items, 256))
                .await
                .expect("receive");
            received += items
                .iter()
                .filter(|item| matches!(item, Incoming::Message(_)))
                .count() as u64;
        }
    };
    warm_then_count(messages, count, run).await
}

/// Makes `messages` round trips of `size` bytes (client → server → client) after as many
/// to warm up; counts the allocations of the measured half with `count`.
pub async fn round_trips<F: Factory>(
    factory: &F,
    size: usize,
    messages: u64,
    count: impl Fn() -> u64,
) -> Allocations {
    let (server, client, client_id, server_id) =
        pair(factory, Options::default(), Options::default()).await;
    let request = Multipart::from_frames([server_id.to_frame(), Bytes::from(vec![0x5a; size])]);
    let reply = Multipart::from_frames([client_id.to_frame(), Bytes::from(vec![0xa5; size])]);
    let mut items = Vec::with_capacity(16);
    let run = async |n: u64| {
        for _ in 0..n {
            client.send(request.clone()).await.expect("send request");
            next_message(&server, &mut items).await;
            server.send(reply.clone()).await.expect("send reply");
            next_message(&client, &mut items).await;
        }
    };
    warm_then_count(messages, count, run).await
}

/// Runs `run(messages)` to warm up, then again counting allocations with `count`.
async fn warm_then_count(
    messages: u64,
    count: impl Fn() -> u64,
    mut run: impl AsyncFnMut(u64),
) -> Allocations {
    run(messages).await;
    let before = count();
    run(messages).await;
    Allocations {
        messages,
        allocations: count() - before,
    }
}

/// Waits for the next message on `middleware`, reusing `items`.
async fn next_message<M: MessageMiddleware>(middleware: &M, items: &mut Vec<Incoming>) {
    loop {
        items.clear();
        within("receive", middleware.recv_many(items, 1))
            .await
            .expect("receive");
        if matches!(items.first(), Some(Incoming::Message(_))) {
            return;
        }
    }
}

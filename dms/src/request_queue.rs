//! The requests and notifications waiting for the application: bounded in all and per
//! peer, and served round-robin between the peers they came from, so that a peer that
//! floods a node delays another peer's request by one of its own at most, not by a whole
//! queue of them.

use std::collections::{HashMap, VecDeque};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dms_core::PeerId;
use tokio::sync::Notify;

use crate::incoming::IncomingRequest;

/// A bounded queue, fair between peers: the driver's end ([`QueueSender`]) and the
/// application's ([`QueueReceiver`]). `capacity` items in all, `per_peer` of one peer.
pub(crate) fn request_queue(capacity: usize, per_peer: usize) -> (QueueSender, QueueReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queues: HashMap::new(),
            turns: VecDeque::new(),
            len: 0,
            capacity: capacity.max(1),
            per_peer: per_peer.clamp(1, capacity.max(1)),
            closed: false,
        }),
        readable: Notify::new(),
    });
    (QueueSender(shared.clone()), QueueReceiver(shared))
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// One permit per item queued (`notify_one`); every waiter at close.
    readable: Notify,
}

#[derive(Debug)]
struct State {
    /// Items waiting, per peer (a peer with none has no entry).
    queues: HashMap<PeerId, VecDeque<IncomingRequest>>,
    /// Peers with items, in the order they are served: each takes one, then goes last.
    turns: VecDeque<PeerId>,
    len: usize,
    capacity: usize,
    per_peer: usize,
    /// The driver ended: `recv` returns `None` once the queue is empty.
    closed: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The driver's end. Dropping it closes the queue.
#[derive(Debug)]
pub(crate) struct QueueSender(Arc<Shared>);

impl QueueSender {
    /// Queues `item` from `peer`, or gives it back when the queue or that peer's share of
    /// it is full.
    pub(crate) fn try_push(
        &self,
        peer: &PeerId,
        item: IncomingRequest,
    ) -> Result<(), Box<IncomingRequest>> {
        let mut state = self.0.state();
        if state.len >= state.capacity {
            return Err(Box::new(item));
        }
        let per_peer = state.per_peer;
        let State { queues, turns, .. } = &mut *state;
        match queues.get_mut(peer) {
            Some(queue) if queue.len() >= per_peer => return Err(Box::new(item)),
            Some(queue) => queue.push_back(item),
            None => {
                queues.insert(peer.clone(), VecDeque::from([item]));
                turns.push_back(peer.clone());
            }
        }
        state.len += 1;
        drop(state);
        self.0.readable.notify_one();
        Ok(())
    }
}

impl Drop for QueueSender {
    fn drop(&mut self) {
        self.0.state().closed = true;
        self.0.readable.notify_waiters();
    }
}

/// The application's end: any number of tasks may wait on it.
#[derive(Debug)]
pub(crate) struct QueueReceiver(Arc<Shared>);

impl QueueReceiver {
    /// The next item, taking turns between peers; `None` once the queue is closed and
    /// empty. Cancel-safe: an item is taken only by the poll that returns it.
    pub(crate) async fn recv(&self) -> Option<IncomingRequest> {
        loop {
            // Enabled before looking: an item queued or a close after the look wakes it.
            let mut readable = pin!(self.0.readable.notified());
            readable.as_mut().enable();
            {
                let mut state = self.0.state();
                if let Some(item) = state.pop() {
                    return Some(item);
                }
                if state.closed {
                    return None;
                }
            }
            readable.await;
        }
    }
}

impl State {
    fn pop(&mut self) -> Option<IncomingRequest> {
        let peer = self.turns.pop_front()?;
        let queue = self.queues.get_mut(&peer)?;
        let item = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(&peer);
        } else {
            self.turns.push_back(peer);
        }
        self.len -= usize::from(item.is_some());
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incoming::Kind;
    use dms_core::Multipart;
    use dms_core::path::ServicePath;

    fn note(from: &str, n: u8) -> IncomingRequest {
        IncomingRequest {
            from: from.parse::<ServicePath>().expect("path"),
            body: Multipart::from_frames([bytes::Bytes::from(vec![n])]),
            kind: Kind::Notification { broadcast: false },
        }
    }

    fn peer(name: &str) -> PeerId {
        name.parse::<ServicePath>().expect("path").peer_id()
    }

    #[tokio::test]
    async fn peers_take_turns_and_each_keeps_its_order() {
        let (tx, rx) = request_queue(64, 16);
        let (hog, calm) = ("/a/b/c/d/e/Hog/h1", "/a/b/c/d/e/Calm/c1");
        for n in 0..10 {
            tx.try_push(&peer(hog), note(hog, n)).expect("room");
        }
        tx.try_push(&peer(calm), note(calm, 100)).expect("room");
        tx.try_push(&peer(calm), note(calm, 101)).expect("room");
        let mut order = Vec::new();
        for _ in 0..12 {
            let item = rx.recv().await.expect("item");
            order.push((item.from.to_string(), item.body.frames()[0][0]));
        }
        let calm_at: Vec<usize> = order
            .iter()
            .enumerate()
            .filter(|(_, (from, _))| from == calm)
            .map(|(i, _)| i)
            .collect();
        // The calm peer's first item waited behind one of the hog's, not ten.
        assert_eq!(calm_at, vec![1, 3]);
        let hog_seq: Vec<u8> = order
            .iter()
            .filter(|(from, _)| from == hog)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(hog_seq, (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_peer_gets_its_share_and_the_queue_its_capacity() {
        let (tx, rx) = request_queue(6, 4);
        let (a, b, c) = ("/a/b/c/d/e/A/a1", "/a/b/c/d/e/B/b1", "/a/b/c/d/e/C/c1");
        for n in 0..4 {
            tx.try_push(&peer(a), note(a, n)).expect("a's share");
        }
        assert!(
            tx.try_push(&peer(a), note(a, 4)).is_err(),
            "beyond a's share"
        );
        tx.try_push(&peer(b), note(b, 0)).expect("b has room");
        tx.try_push(&peer(b), note(b, 1)).expect("b has room");
        assert!(
            tx.try_push(&peer(c), note(c, 0)).is_err(),
            "beyond capacity"
        );
        rx.recv().await.expect("item");
        tx.try_push(&peer(c), note(c, 0)).expect("room again");
    }

    #[tokio::test]
    async fn closing_ends_waiters_after_what_is_queued() {
        let (tx, rx) = request_queue(4, 4);
        let waiter = tokio::spawn(async move {
            let mut got = 0;
            while rx.recv().await.is_some() {
                got += 1;
            }
            got
        });
        let a = "/a/b/c/d/e/A/a1";
        tx.try_push(&peer(a), note(a, 0)).expect("room");
        drop(tx);
        assert_eq!(waiter.await.expect("waiter"), 1);
    }
}

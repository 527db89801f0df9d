//! The bounded queue between the link readers and `recv`: readers hand over a whole
//! batch of decoded messages under one lock and one wake-up, and `recv_many` takes a
//! whole batch out the same way. A channel would cost a semaphore acquire, a list push and
//! a notify per message, which is most of a 64-byte message's receive cost.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use dms_core::Incoming;
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Incoming>,
    /// A producer waits for room (the next take wakes the producers).
    producers_waiting: bool,
}

/// A bounded multi-producer queue of [`Incoming`] items, taken in batches.
#[derive(Debug)]
pub(crate) struct Inbox {
    queue: Mutex<Queue>,
    capacity: usize,
    /// Wakes a consumer: the queue went from empty to non-empty (or items were left).
    readable: Notify,
    /// Wakes producers waiting for room.
    room: Notify,
}

impl Inbox {
    /// An inbox holding at most `capacity` items (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::default(),
            capacity: capacity.max(1),
            readable: Notify::new(),
            room: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // No critical section below can panic halfway: a poisoned queue is still valid.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves as many items of `batch` (from its front) as fit; true if the queue was empty.
    fn put(&self, queue: &mut Queue, batch: &mut Vec<Incoming>) -> bool {
        let was_empty = queue.items.is_empty();
        let room = self.capacity.saturating_sub(queue.items.len());
        let take = room.min(batch.len());
        queue.items.extend(batch.drain(..take));
        was_empty && take > 0
    }

    /// Queues every item of `batch` in order, waiting for room as needed; `batch` is left
    /// empty. Cancel-safe in the sense that items not yet queued stay in `batch`.
    pub(crate) async fn push_all(&self, batch: &mut Vec<Incoming>) {
        while !batch.is_empty() {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let woke = {
                let mut queue = self.lock();
                let woke = self.put(&mut queue, batch);
                if !batch.is_empty() {
                    queue.producers_waiting = true;
                }
                woke
            };
            if woke {
                self.readable.notify_one();
            }
            if batch.is_empty() {
                return;
            }
            room.await;
        }
    }

    /// Queues `item` if there is room; gives it back otherwise.
    pub(crate) fn try_push(&self, item: Incoming) -> Result<(), Incoming> {
        let mut batch = vec![item];
        let woke = self.put(&mut self.lock(), &mut batch);
        if woke {
            self.readable.notify_one();
        }
        batch.pop().map_or(Ok(()), Err)
    }

    /// Moves up to `limit` items (at least 1) into `out`, waiting until there is one.
    #[cfg(test)]
    pub(crate) async fn take(&self, out: &mut Vec<Incoming>, limit: usize) -> usize {
        self.take_each(limit, |item| out.push(item)).await
    }

    /// Hands up to `limit` items (at least 1) to `each`, waiting until there is one.
    #[cfg(test)]
    async fn take_each(&self, limit: usize, mut each: impl FnMut(Incoming)) -> usize {
        loop {
            let readable = self.readable.notified();
            tokio::pin!(readable);
            readable.as_mut().enable();
            let taken = self.try_take_each(limit, &mut each);
            if taken > 0 {
                return taken;
            }
            readable.await;
        }
    }

    /// Hands up to `limit` items (at least 1) to `each` if there are any; how many.
    /// Enable a [`readable`](Self::readable) wait before calling it, to wait when it
    /// finds none.
    pub(crate) fn try_take_each(&self, limit: usize, each: impl FnMut(Incoming)) -> usize {
        let (taken, left, wake_producers) = {
            let mut queue = self.lock();
            let taken = limit.max(1).min(queue.items.len());
            queue.items.drain(..taken).for_each(each);
            // Producers are woken once the queue is down to half (not on every take:
            // thousands of blocked readers would all wake for each message).
            let wake = queue.producers_waiting && queue.items.len() <= self.capacity / 2;
            if wake {
                queue.producers_waiting = false;
            }
            (taken, !queue.items.is_empty(), wake)
        };
        if wake_producers {
            self.room.notify_waiters();
        }
        if taken > 0 && left {
            // Another consumer may be waiting: pass the wake-up on.
            self.readable.notify_one();
        }
        taken
    }

    /// Notified when the queue goes from empty to non-empty (or items were left).
    pub(crate) fn readable(&self) -> &Notify {
        &self.readable
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use dms_core::{Multipart, PeerId};

    use super::*;

    fn message(n: u32) -> Incoming {
        Incoming::Message(Multipart::from_frames([PeerId::generated(n).to_frame()]))
    }

    fn number(item: &Incoming) -> Option<u32> {
        match item {
            Incoming::Message(msg) => {
                let id = msg.first()?;
                Some(u32::from_be_bytes(id.get(1..5)?.try_into().ok()?))
            }
            _ => None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_arrive_whole_in_order_and_the_bound_holds() {
        let inbox = Arc::new(Inbox::new(10));
        let producer = {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                for start in (0..1000u32).step_by(25) {
                    let mut batch: Vec<_> = (start..start + 25).map(message).collect();
                    inbox.push_all(&mut batch).await;
                    assert!(batch.is_empty());
                }
            })
        };
        let mut seen = Vec::new();
        let mut out = Vec::new();
        while seen.len() < 1000 {
            out.clear();
            let taken = tokio::time::timeout(Duration::from_secs(20), inbox.take(&mut out, 64))
                .await
                .expect("items within 20 s");
            assert_eq!(taken, out.len());
            assert!(taken <= 10, "took {taken} from an inbox of 10");
            seen.extend(out.iter().filter_map(number));
        }
        producer.await.expect("producer");
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn try_push_gives_the_item_back_when_full() {
        let inbox = Inbox::new(2);
        assert!(inbox.try_push(message(1)).is_ok());
        assert!(inbox.try_push(message(2)).is_ok());
        let back = inbox.try_push(message(3)).expect_err("full");
        assert_eq!(number(&back), Some(3));
        let mut out = Vec::new();
        assert_eq!(inbox.take(&mut out, 1).await, 1);
        assert_eq!(number(&out[0]), Some(1));
        assert!(inbox.try_push(back).is_ok());
    }
}

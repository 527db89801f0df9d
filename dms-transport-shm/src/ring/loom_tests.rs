//! Model checks of the ring's protocol with loom: every interleaving (up to the preemption
//! bound) of one producer and one consumer thread, with loom's atomics and loom cells for
//! the data bytes, so a data race on a byte, a byte lost or reordered, or a lost wake-up
//! (a loom deadlock: both ends waiting on their doorbells) fails the check.
//!
//! Run with
//! `RUSTFLAGS="--cfg dms_loom" CARGO_TARGET_DIR=target/loom cargo test -p dms-transport-shm --lib --release -- loom`;
//! `LOOM_MAX_PREEMPTIONS` bounds the search (3 when unset).
//!
//! Loom keeps each atomic's modification order only as far as threads have seen each
//! other's writes: a plain store by the parked end would be taken as concurrent with
//! the other end's earlier clearing swap, which could then be read after the fence, a
//! lost wake-up the memory model rules out. So the ring writes its parked flags with
//! swaps only (see `Producer::park`); with plain stores these models deadlock.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use super::{Consumer, Producer, RingMemory};

/// One end's doorbell (the eventfd of the real transport): a ring is remembered until the
/// end waits, so a ring before the wait is not lost, and a wait that no ring ever ends is
/// a deadlock loom reports.
#[derive(Default)]
struct Bell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Bell {
    fn ring(&self) {
        *self.rung.lock().unwrap() = true;
        self.cv.notify_one();
    }

    fn wait(&self) {
        let mut rung = self.rung.lock().unwrap();
        while !*rung {
            rung = self.cv.wait(rung).unwrap();
        }
        *rung = false;
    }
}

/// The two doorbells: the consumer's (bytes committed) and the producer's (room freed).
#[derive(Default)]
struct Bells {
    data: Bell,
    space: Bell,
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

fn ring(capacity: usize) -> (Producer, Consumer) {
    let (a, b) = RingMemory::on_heap(capacity);
    (Producer::new(a), Consumer::new(b))
}

/// Sends each chunk whole, as two buffers (its first byte, the rest) so vectored writes
/// that cross the wrap are explored. With `park`, a full ring parks the producer and, if
/// there is still no room, it waits for its doorbell; without, it only yields and looks
/// again (a producer that never sleeps). After each commit it rings the consumer if that
/// one is parked.
fn send(tx: &mut Producer, bells: &Bells, chunks: &[&[u8]], park: bool) {
    for chunk in chunks {
        let mut sent = 0;
        while sent < chunk.len() {
            let (first, rest) = chunk[sent..].split_at(1);
            let n = tx.write_vectored(&[first, rest]).unwrap();
            if n > 0 {
                sent += n;
                if tx.consumer_needs_wake() {
                    bells.data.ring();
                }
            } else if !park {
                thread::yield_now();
            } else if tx.park().unwrap() == 0 {
                bells.space.wait();
                tx.unpark();
            }
        }
    }
}

/// How the consumer learns that the stream is over.
#[derive(Clone, Copy)]
enum End {
    /// After this many bytes (the producer never closes).
    After(usize),
    /// When the producer closed and nothing is left.
    Close,
}

/// Reads until `end`, `dst_len` bytes at most at a time; when the ring is empty it parks
/// and, if still empty (and not closed), waits for its doorbell. After each read it rings
/// the producer if that one is parked. Returns the bytes in the order read.
fn receive(rx: &mut Consumer, bells: &Bells, dst_len: usize, end: End, total: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut dst = vec![0u8; dst_len];
    loop {
        if let End::After(n) = end {
            if got.len() == n {
                return got;
            }
        }
        let n = rx.read(&mut dst).unwrap();
        if n > 0 {
            got.extend_from_slice(&dst[..n]);
            if rx.producer_needs_wake() {
                bells.space.ring();
            }
            continue;
        }
        if matches!(end, End::Close) && rx.is_closed() {
            // Everything committed before the close is visible once the close is.
            let left = rx.available().unwrap();
            assert_eq!(got.len() + left, total, "closed with bytes not yet visible");
            if left == 0 {
                return got;
            }
            continue;
        }
        if rx.park().unwrap() == 0 && !rx.is_closed() {
            bells.data.wait();
            rx.unpark();
        }
    }
}

/// The smallest lost wake-up test, consumer side: the consumer parks once on an empty
/// ring and, if it still finds nothing, sleeps; the producer commits one byte and rings if
/// told to. The consumer must wake and find the byte.
#[test]
fn loom_consumer_parks_once_and_is_woken() {
    model(|| {
        let (mut tx, mut rx) = ring(2);
        let bells = Arc::new(Bells::default());
        let b = bells.clone();
        let producer = thread::spawn(move || {
            assert_eq!(tx.write_vectored(&[&b"x"[..]]).unwrap(), 1);
            if tx.consumer_needs_wake() {
                b.data.ring();
            }
        });
        if rx.park().unwrap() == 0 {
            bells.data.wait();
        }
        let mut out = [0u8; 2];
        assert_eq!(rx.read(&mut out).unwrap(), 1);
        assert_eq!(out[0], b'x');
        producer.join().unwrap();
    });
}

/// The same for the producer: it parks once on a full ring and, if there is still no
/// room, sleeps; the consumer reads one byte and rings if told to. The producer must wake
/// and find the room.
#[test]
fn loom_producer_parks_once_and_is_woken() {
    model(|| {
        let (mut tx, mut rx) = ring(2);
        assert_eq!(tx.write_vectored(&[&b"ab"[..]]).unwrap(), 2);
        let bells = Arc::new(Bells::default());
        let b = bells.clone();
        let consumer = thread::spawn(move || {
            let mut out = [0u8; 1];
            assert_eq!(rx.read(&mut out).unwrap(), 1);
            assert_eq!(&out, b"a");
            if rx.producer_needs_wake() {
                b.space.ring();
            }
            rx
        });
        if tx.park().unwrap() == 0 {
            bells.space.wait();
        }
        assert_eq!(tx.free().unwrap(), 1);
        assert_eq!(tx.write_vectored(&[&b"c"[..]]).unwrap(), 1);
        let mut rx = consumer.join().unwrap();
        let mut out = [0u8; 2];
        assert_eq!(rx.read(&mut out).unwrap(), 2);
        assert_eq!(&out, b"bc");
    });
}

/// A stream of 4 bytes through a ring of 2: it fills, wraps, and both ends park and wake
/// each other. Every byte arrives, in order, and neither end sleeps for ever.
#[test]
fn loom_stream_through_a_tiny_ring_both_ends_parking() {
    model(|| {
        let (mut tx, mut rx) = ring(2);
        let bells = Arc::new(Bells::default());
        let b = bells.clone();
        let producer = thread::spawn(move || send(&mut tx, &b, &[b"a", b"bc", b"d"], true));
        let got = receive(&mut rx, &bells, 2, End::After(4), 4);
        assert_eq!(got, b"abcd");
        producer.join().unwrap();
    });
}

/// Close: the producer writes 3 bytes through a ring of 2, closes and rings. The consumer
/// reads every byte before it sees the end (and, once it sees the close, every byte
/// committed before it is visible).
#[test]
fn loom_close_comes_after_every_byte() {
    model(|| {
        let (mut tx, mut rx) = ring(2);
        let bells = Arc::new(Bells::default());
        let b = bells.clone();
        let producer = thread::spawn(move || {
            send(&mut tx, &b, &[b"abc"], true);
            tx.close();
            if tx.consumer_needs_wake() {
                b.data.ring();
            }
        });
        let got = receive(&mut rx, &bells, 2, End::Close, 3);
        assert_eq!(got, b"abc");
        producer.join().unwrap();
    });
}

/// A close with nothing written wakes a consumer parked on the empty ring.
#[test]
fn loom_close_of_an_empty_stream_wakes_the_consumer() {
    model(|| {
        let (tx, mut rx) = ring(2);
        let bells = Arc::new(Bells::default());
        let b = bells.clone();
        let producer = thread::spawn(move || {
            tx.close();
            if tx.consumer_needs_wake() {
                b.data.ring();
            }
        });
        let got = receive(&mut rx, &bells, 2, End::Close, 0);
        assert!(got.is_empty());
        producer.join().unwrap();
    });
}

/// A producer that never parks (its ring never fills) and rings only when the consumer is
/// parked: its bytes are never lost, whatever the consumer's parking races with.
#[test]
fn loom_producer_that_never_parks_loses_nothing() {
    model(|| {
        let (mut tx, mut rx) = ring(4);
        let bells = Arc::new(Bells::default());
        let b = bells.clone();
        let producer = thread::spawn(move || send(&mut tx, &b, &[b"ab", b"c"], true));
        let got = receive(&mut rx, &bells, 4, End::After(3), 3);
        assert_eq!(got, b"abc");
        producer.join().unwrap();
    });
}

/// A producer that does not sleep on a full ring (it yields and looks again) against a
/// consumer that parks: the consumer's wake-ups still come, bytes arrive in order across
/// the wrap.
#[test]
fn loom_spinning_producer_and_parking_consumer() {
    model(|| {
        let (mut tx, mut rx) = ring(2);
        let bells = Arc::new(Bells::default());
        let b = bells.clone();
        let producer = thread::spawn(move || send(&mut tx, &b, &[b"abc"], false));
        let got = receive(&mut rx, &bells, 1, End::After(3), 3);
        assert_eq!(got, b"abc");
        producer.join().unwrap();
    });
}

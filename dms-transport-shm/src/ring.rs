//! A single-producer single-consumer byte ring in memory shared with another process.
//!
//! # Layout
//!
//! A ring is a 128-byte header followed by `capacity` data bytes (a power of two). The
//! header is two 64-byte cache lines, one per end, so the two processes never write the
//! same line on the hot path:
//!
//! | offset | size | field | written by |
//! |---|---|---|---|
//! | 0 | 8 | `tail`: bytes committed since the ring was made (u64, native endian) | producer |
//! | 8 | 4 | `producer_parked`: 1 while the producer waits for room | both |
//! | 12 | 4 | `closed`: 1 once the producer will write no more | producer |
//! | 64 | 8 | `head`: bytes released since the ring was made | consumer |
//! | 72 | 4 | `consumer_parked`: 1 while the consumer waits for bytes | both |
//!
//! Byte `p` of the stream is at data offset `p mod capacity`. The ring holds
//! `tail - head` bytes (at most `capacity`).
//!
//! # Claim, commit, release
//!
//! The producer copies bytes into the free part and then *commits* them by storing the
//! new `tail` with `Release`; the consumer loads `tail` with `Acquire`, copies the bytes
//! out and *releases* them by storing the new `head` with `Release`, which the producer
//! loads with `Acquire` before it reuses the room. Neither end ever reads back its own
//! position from shared memory: each keeps the authoritative copy locally.
//!
//! # Parking (no lost wake-up)
//!
//! An end that finds nothing to do sets its `parked` flag, issues a `SeqCst` fence and
//! looks again; the other end, after each commit or release, issues a `SeqCst` fence and
//! reads that flag. With the two fences at least one of them sees the other's store:
//! either the waiting end finds the new bytes (or room), or the other end sees the flag,
//! clears it and rings the waiting end's doorbell. Busy links therefore make no syscall:
//! the doorbell is rung only for an end that is really about to sleep.
//!
//! # The other process is hostile
//!
//! Every position read from shared memory is checked before use: the producer's `tail`
//! must lie between the last `tail` seen and `head + capacity`, the consumer's `head`
//! between the last `head` seen and `tail`. Anything else is [`Corrupt`] and ends the
//! link. Offsets are always taken modulo the capacity, so no value the peer writes can
//! make an access leave the ring's memory. The bytes themselves are not trusted either:
//! they are a ZMTP stream, decoded by the same bounded decoder as a socket's.

use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::sync::{AtomicU32, AtomicU64, Ordering, fence};

/// Bytes of a ring's header (two cache lines).
pub(crate) const HEADER_LEN: usize = 128;

/// The fields of one end, on a cache line of their own.
#[repr(C, align(64))]
pub(crate) struct End {
    /// Bytes committed (producer) or released (consumer) since the ring was made.
    pos: AtomicU64,
    /// 1 while this end waits for the other's doorbell.
    parked: AtomicU32,
    /// Producer only: 1 once it will write no more.
    closed: AtomicU32,
}

/// A ring's header: the producer's line, then the consumer's.
#[repr(C)]
pub(crate) struct Header {
    producer: End,
    consumer: End,
}

#[cfg(not(dms_loom))]
const _: () = assert!(size_of::<Header>() == HEADER_LEN);

/// The peer broke the ring's invariants: the link must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corrupt {
    /// The producer's `tail` went back, or past the room it had.
    #[error("shared-memory ring corrupted: producer position {seen} outside {low}..={high}")]
    Tail {
        /// The value read.
        seen: u64,
        /// The lowest valid value (the last one seen).
        low: u64,
        /// The highest valid value (`head + capacity`).
        high: u64,
    },
    /// The consumer's `head` went back, or past what was committed.
    #[error("shared-memory ring corrupted: consumer position {seen} outside {low}..={high}")]
    Head {
        /// The value read.
        seen: u64,
        /// The lowest valid value (the last one seen).
        low: u64,
        /// The highest valid value (`tail`).
        high: u64,
    },
}

/// Whether `x` lies in `low..=high` on the wrapping u64 line (`low <= high` in stream
/// order, at most a ring's capacity apart).
fn within(x: u64, low: u64, high: u64) -> bool {
    x.wrapping_sub(low) <= high.wrapping_sub(low)
}

/// The memory of one ring: a header and `capacity` data bytes, kept alive by `_owner`.
pub(crate) struct RingMemory {
    header: NonNull<Header>,
    data: Data,
    capacity: usize,
    _owner: Arc<dyn Send + Sync>,
}

impl std::fmt::Debug for RingMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingMemory")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

// SAFETY: the header is only accessed through atomics and the data only by the one
// producer or the one consumer that owns this `RingMemory` (each end has its own), under
// the claim/commit/release protocol; the memory lives as long as `_owner`.
unsafe impl Send for RingMemory {}

impl RingMemory {
    /// The ring at `base`: a header of [`HEADER_LEN`] bytes then `capacity` data bytes.
    ///
    /// # Safety
    ///
    /// `base` must be aligned to 64 bytes and valid for reads and writes of
    /// `HEADER_LEN + capacity` bytes for as long as `owner` lives; `capacity` must be a
    /// power of two; the memory must be zeroed when the ring is new; and at most one
    /// [`Producer`] and one [`Consumer`] may use it (in this process or another).
    #[cfg(not(dms_loom))]
    pub(crate) unsafe fn from_raw(
        base: NonNull<u8>,
        capacity: usize,
        owner: Arc<dyn Send + Sync>,
    ) -> Self {
        debug_assert!(capacity.is_power_of_two());
        debug_assert_eq!(base.as_ptr() as usize % 64, 0);
        Self {
            header: base.cast(),
            // SAFETY: the caller guarantees `HEADER_LEN + capacity` valid bytes at `base`.
            data: Data(unsafe { base.add(HEADER_LEN) }),
            capacity,
            _owner: owner,
        }
    }

    #[cfg(test)]
    /// A ring of `capacity` bytes (a power of two) on the heap, and a second handle to
    /// the same memory: one for the producer, one for the consumer (tests, miri, loom).
    pub(crate) fn on_heap(capacity: usize) -> (Self, Self) {
        assert!(
            capacity.is_power_of_two(),
            "capacity must be a power of two"
        );
        let owner = Arc::new(HeapRing::new(capacity));
        let a = owner.memory(owner.clone());
        let b = owner.memory(owner.clone());
        (a, b)
    }

    fn header(&self) -> &Header {
        // SAFETY: `header` points to a live, aligned `Header` for as long as `_owner`
        // lives (constructor contract); it is only accessed through atomics, so shared
        // references from both processes are sound.
        unsafe { self.header.as_ref() }
    }
}

/// The data bytes of a ring.
#[cfg(not(dms_loom))]
struct Data(NonNull<u8>);

#[cfg(not(dms_loom))]
impl Data {
    /// Copies `src` to data offset `at`.
    ///
    /// # Safety
    ///
    /// `at + src.len()` must not exceed the capacity, and the range must be free (not
    /// committed, so the consumer does not read it).
    unsafe fn copy_in(&self, at: usize, src: &[u8]) {
        // SAFETY: in bounds by the caller's contract; `src` is our own memory, so the
        // ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.0.as_ptr().add(at), src.len()) }
    }

    /// Copies data from offset `at` into `dst`.
    ///
    /// # Safety
    ///
    /// `at + dst.len()` must not exceed the capacity, and the range must be committed
    /// (the honest producer does not write it until it is released).
    unsafe fn copy_out(&self, at: usize, dst: &mut [MaybeUninit<u8>]) {
        // SAFETY: in bounds by the caller's contract; `dst` is our own memory (writing
        // bytes into `MaybeUninit` is always allowed). A hostile producer may write the
        // range while we copy: the bytes are then garbage, which the ZMTP decoder rejects
        // like any other garbage; no memory outside the ring is touched.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.0.as_ptr().add(at),
                dst.as_mut_ptr().cast::<u8>(),
                dst.len(),
            );
        }
    }
}

/// Under loom the data bytes are loom cells, so the model checker sees every access and
/// reports one that the positions' orderings do not make safe.
#[cfg(dms_loom)]
struct Data(Arc<[loom::cell::UnsafeCell<u8>]>);

#[cfg(dms_loom)]
impl Data {
    unsafe fn copy_in(&self, at: usize, src: &[u8]) {
        for (i, byte) in src.iter().enumerate() {
            // SAFETY: loom checks that no other access to this cell races with it.
            self.0[at + i].with_mut(|p| unsafe { *p = *byte });
        }
    }

    unsafe fn copy_out(&self, at: usize, dst: &mut [MaybeUninit<u8>]) {
        for (i, byte) in dst.iter_mut().enumerate() {
            // SAFETY: loom checks that no write to this cell races with it.
            byte.write(self.0[at + i].with(|p| unsafe { *p }));
        }
    }
}

#[cfg(test)]
/// A ring on the heap (tests, miri, loom).
struct HeapRing {
    header: Box<Header>,
    #[cfg(not(dms_loom))]
    data: Box<[std::cell::UnsafeCell<u8>]>,
    #[cfg(dms_loom)]
    data: Arc<[loom::cell::UnsafeCell<u8>]>,
    capacity: usize,
}

#[cfg(test)]
// SAFETY: the header is atomics; the data cells are accessed only under the ring protocol
// by one producer and one consumer.
unsafe impl Sync for HeapRing {}
#[cfg(test)]
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl Send for HeapRing {}

#[cfg(test)]
impl HeapRing {
    fn new(capacity: usize) -> Self {
        let end = || End {
            pos: AtomicU64::new(0),
            parked: AtomicU32::new(0),
            closed: AtomicU32::new(0),
        };
        Self {
            header: Box::new(Header {
                producer: end(),
                consumer: end(),
            }),
            #[cfg(not(dms_loom))]
            data: (0..capacity)
                .map(|_| std::cell::UnsafeCell::new(0))
                .collect(),
            #[cfg(dms_loom)]
            data: (0..capacity)
                .map(|_| loom::cell::UnsafeCell::new(0))
                .collect(),
            capacity,
        }
    }

    fn memory(&self, owner: Arc<Self>) -> RingMemory {
        RingMemory {
            header: NonNull::from(&*self.header),
            #[cfg(not(dms_loom))]
            data: Data(
                NonNull::new(self.data.as_ptr().cast::<u8>().cast_mut())
                    .unwrap_or(NonNull::dangling()),
            ),
            #[cfg(dms_loom)]
            data: Data(self.data.clone()),
            capacity: self.capacity,
            _owner: owner,
        }
    }
}

/// The writing end of a ring.
#[derive(Debug)]
pub(crate) struct Producer {
    mem: RingMemory,
    /// Bytes committed (authoritative: never read back from shared memory).
    tail: u64,
    /// The consumer's position last seen.
    head: u64,
}

impl Producer {
    /// The producer of a new (zeroed) ring.
    pub(crate) fn new(mem: RingMemory) -> Self {
        Self {
            mem,
            tail: 0,
            head: 0,
        }
    }

    /// Room for more bytes now.
    pub(crate) fn free(&mut self) -> Result<usize, Corrupt> {
        let head = self.mem.header().consumer.pos.load(Ordering::Acquire);
        if !within(head, self.head, self.tail) {
            return Err(Corrupt::Head {
                seen: head,
                low: self.head,
                high: self.tail,
            });
        }
        self.head = head;
        // `head` is within `tail - capacity..=tail`, so this fits the capacity.
        Ok(self.mem.capacity - (self.tail - head) as usize)
    }

    /// Copies as much of `bufs` as fits and commits it; returns the bytes taken (0 when
    /// the ring is full or `bufs` are empty).
    pub(crate) fn write_vectored<B: std::ops::Deref<Target = [u8]>>(
        &mut self,
        bufs: &[B],
    ) -> Result<usize, Corrupt> {
        let mut room = self.free()?;
        let capacity = self.mem.capacity;
        let mut tail = self.tail;
        for buf in bufs {
            let take = buf.len().min(room);
            if take == 0 {
                if room == 0 {
                    break;
                }
                continue;
            }
            let at = (tail as usize) & (capacity - 1);
            let first = take.min(capacity - at);
            // SAFETY: `at + first <= capacity` and `take - first <= at`, and both ranges
            // lie in the free part (`take <= room`), which the consumer does not read.
            unsafe {
                self.mem.data.copy_in(at, &buf[..first]);
                self.mem.data.copy_in(0, &buf[first..take]);
            }
            tail = tail.wrapping_add(take as u64);
            room -= take;
        }
        let taken = tail.wrapping_sub(self.tail) as usize;
        if taken > 0 {
            self.tail = tail;
            self.mem
                .header()
                .producer
                .pos
                .store(tail, Ordering::Release);
        }
        Ok(taken)
    }

    /// After a commit: whether the consumer is parked and must be woken (the flag is
    /// cleared, so a burst of commits rings once).
    pub(crate) fn consumer_needs_wake(&self) -> bool {
        fence(Ordering::SeqCst);
        let parked = &self.mem.header().consumer.parked;
        parked.load(Ordering::Relaxed) != 0 && parked.swap(0, Ordering::Relaxed) != 0
    }

    /// Declares that the producer is about to wait for room, then looks again: returns
    /// the room now (0: wait for the doorbell; the consumer will ring it).
    pub(crate) fn park(&mut self) -> Result<usize, Corrupt> {
        // A swap, not a store: the same for the memory model (the value read is not
        // used), but loom orders an RMW after the other end's clearing swap, where it
        // would take a plain store for concurrent with it and report a lost wake-up that
        // cannot happen (see `ring/loom_tests.rs`).
        self.mem.header().producer.parked.swap(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let free = self.free()?;
        if free > 0 {
            self.unpark();
        }
        Ok(free)
    }

    /// Clears the parked flag (woken, or no longer waiting).
    pub(crate) fn unpark(&self) {
        self.mem.header().producer.parked.swap(0, Ordering::Relaxed); // a swap: see `park`
    }

    /// Marks the stream as ended: the consumer reads what was committed, then the end.
    pub(crate) fn close(&self) {
        self.mem
            .header()
            .producer
            .closed
            .store(1, Ordering::Release);
    }
}

/// The reading end of a ring.
#[derive(Debug)]
pub(crate) struct Consumer {
    mem: RingMemory,
    /// Bytes released (authoritative: never read back from shared memory).
    head: u64,
    /// The producer's position last seen.
    tail: u64,
}

impl Consumer {
    /// The consumer of a new (zeroed) ring.
    pub(crate) fn new(mem: RingMemory) -> Self {
        Self {
            mem,
            head: 0,
            tail: 0,
        }
    }

    /// Bytes committed and not yet read.
    pub(crate) fn available(&mut self) -> Result<usize, Corrupt> {
        let tail = self.mem.header().producer.pos.load(Ordering::Acquire);
        let high = self.head.wrapping_add(self.mem.capacity as u64);
        if !within(tail, self.tail, high) {
            return Err(Corrupt::Tail {
                seen: tail,
                low: self.tail,
                high,
            });
        }
        self.tail = tail;
        Ok((tail - self.head) as usize)
    }

    /// Copies up to `dst.len()` committed bytes into `dst` and releases them; returns
    /// how many (0 when the ring is empty).
    #[cfg(test)]
    pub(crate) fn read(&mut self, dst: &mut [u8]) -> Result<usize, Corrupt> {
        // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and `read_uninit`
        // only writes initialised bytes into it.
        let dst = unsafe { &mut *(std::ptr::from_mut(dst) as *mut [MaybeUninit<u8>]) };
        self.read_uninit(dst)
    }

    /// [`read`](Self::read) into memory that may be uninitialised; the first `n` bytes
    /// are initialised when it returns `Ok(n)`.
    pub(crate) fn read_uninit(&mut self, dst: &mut [MaybeUninit<u8>]) -> Result<usize, Corrupt> {
        let take = self.available()?.min(dst.len());
        if take == 0 {
            return Ok(0);
        }
        let capacity = self.mem.capacity;
        let at = (self.head as usize) & (capacity - 1);
        let first = take.min(capacity - at);
        // SAFETY: `at + first <= capacity` and `take - first <= at`; both ranges are
        // committed (`take <= tail - head`), so the honest producer leaves them alone.
        unsafe {
            self.mem.data.copy_out(at, &mut dst[..first]);
            self.mem.data.copy_out(0, &mut dst[first..take]);
        }
        self.head = self.head.wrapping_add(take as u64);
        self.mem
            .header()
            .consumer
            .pos
            .store(self.head, Ordering::Release);
        Ok(take)
    }

    /// After a release: whether the producer is parked and must be woken (the flag is
    /// cleared).
    pub(crate) fn producer_needs_wake(&self) -> bool {
        fence(Ordering::SeqCst);
        let parked = &self.mem.header().producer.parked;
        parked.load(Ordering::Relaxed) != 0 && parked.swap(0, Ordering::Relaxed) != 0
    }

    /// Declares that the consumer is about to wait for bytes, then looks again: returns
    /// the bytes available now (0: wait for the doorbell; the producer will ring it).
    pub(crate) fn park(&mut self) -> Result<usize, Corrupt> {
        // A swap, not a store: the same for the memory model (the value read is not
        // used), but loom orders an RMW after the other end's clearing swap, where it
        // would take a plain store for concurrent with it and report a lost wake-up that
        // cannot happen (see `ring/loom_tests.rs`).
        self.mem.header().consumer.parked.swap(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let available = self.available()?;
        if available > 0 || self.is_closed() {
            self.unpark();
        }
        Ok(available)
    }

    /// Clears the parked flag.
    pub(crate) fn unpark(&self) {
        self.mem.header().consumer.parked.swap(0, Ordering::Relaxed); // a swap: see `park`
    }

    /// Whether the producer closed the stream. Bytes committed before the close are
    /// visible once this is true (check [`available`](Self::available) after it).
    pub(crate) fn is_closed(&self) -> bool {
        self.mem.header().producer.closed.load(Ordering::Acquire) != 0
    }
}

#[cfg(all(test, not(dms_loom)))]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    fn ring(capacity: usize) -> (Producer, Consumer) {
        let (a, b) = RingMemory::on_heap(capacity);
        (Producer::new(a), Consumer::new(b))
    }

    #[test]
    fn bytes_cross_the_wrap_in_order() {
        let (mut tx, mut rx) = ring(16);
        let mut next = 0u8;
        let mut expect = 0u8;
        for round in 0..50 {
            let chunk: Vec<u8> = (0..(round % 13 + 1))
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            let mut sent = 0;
            while sent < chunk.len() {
                sent += tx.write_vectored(&[&chunk[sent..]]).unwrap();
                let mut out = [0u8; 7];
                let n = rx.read(&mut out).unwrap();
                for b in &out[..n] {
                    expect = expect.wrapping_add(1);
                    assert_eq!(*b, expect);
                }
            }
        }
        let mut out = [0u8; 16];
        while let n @ 1.. = rx.read(&mut out).unwrap() {
            for b in &out[..n] {
                expect = expect.wrapping_add(1);
                assert_eq!(*b, expect);
            }
        }
        assert_eq!(expect, next);
    }

    #[test]
    fn a_full_ring_takes_nothing_and_vectored_writes_fill_it() {
        let (mut tx, mut rx) = ring(8);
        assert_eq!(
            tx.write_vectored(&[&b"abc"[..], b"", b"defgh", b"ij"])
                .unwrap(),
            8
        );
        assert_eq!(tx.free().unwrap(), 0);
        assert_eq!(tx.write_vectored(&[&b"x"[..]]).unwrap(), 0);
        let mut out = [0u8; 8];
        assert_eq!(rx.read(&mut out).unwrap(), 8);
        assert_eq!(&out, b"abcdefgh");
        assert_eq!(tx.free().unwrap(), 8);
    }

    #[test]
    fn positions_the_peer_could_not_have_written_are_corrupt() {
        let (mut tx, rx) = ring(8);
        tx.write_vectored(&[&b"abcd"[..]]).unwrap();
        // The consumer's head beyond what was committed.
        rx.mem.header().consumer.pos.store(5, Ordering::Release);
        assert!(matches!(tx.free(), Err(Corrupt::Head { seen: 5, .. })));
        // The producer's tail beyond head + capacity, or going back.
        let (tx, mut rx) = ring(8);
        tx.mem.header().producer.pos.store(9, Ordering::Release);
        assert!(matches!(rx.available(), Err(Corrupt::Tail { seen: 9, .. })));
        tx.mem.header().producer.pos.store(3, Ordering::Release);
        assert_eq!(rx.available().unwrap(), 3);
        tx.mem.header().producer.pos.store(2, Ordering::Release);
        assert!(matches!(rx.available(), Err(Corrupt::Tail { seen: 2, .. })));
        // Huge values that wrap around u64 are caught too.
        tx.mem
            .header()
            .producer
            .pos
            .store(u64::MAX, Ordering::Release);
        assert!(rx.available().is_err());
    }

    #[test]
    fn parking_sees_the_other_end_and_wakes_once() {
        let (mut tx, mut rx) = ring(8);
        assert_eq!(rx.park().unwrap(), 0);
        tx.write_vectored(&[&b"a"[..]]).unwrap();
        assert!(tx.consumer_needs_wake());
        // Cleared: a second commit does not ring again.
        tx.write_vectored(&[&b"b"[..]]).unwrap();
        assert!(!tx.consumer_needs_wake());
        // Parking with bytes there returns them and leaves the flag clear.
        assert_eq!(rx.park().unwrap(), 2);
        tx.write_vectored(&[&b"c"[..]]).unwrap();
        assert!(!tx.consumer_needs_wake());
        // The producer parks on a full ring and the consumer's release wakes it.
        tx.write_vectored(&[&b"defgh"[..]]).unwrap();
        assert_eq!(tx.park().unwrap(), 0);
        let mut out = [0u8; 3];
        rx.read(&mut out).unwrap();
        assert!(rx.producer_needs_wake());
        assert!(!rx.producer_needs_wake());
    }

    #[test]
    fn close_comes_after_the_last_bytes() {
        let (mut tx, mut rx) = ring(8);
        tx.write_vectored(&[&b"last"[..]]).unwrap();
        tx.close();
        assert!(rx.is_closed());
        let mut out = [0u8; 8];
        assert_eq!(rx.read(&mut out).unwrap(), 4);
        assert_eq!(rx.read(&mut out).unwrap(), 0);
    }
}

#[cfg(all(test, dms_loom))]
mod loom_tests;

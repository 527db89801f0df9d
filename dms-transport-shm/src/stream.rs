//! A link's two directions as byte streams ([`AsyncRead`], [`AsyncWrite`]) over its
//! rings, for `dms_link` to carry ZMTP on, as it does over a socket.
//!
//! * **Reading** copies what the peer committed into the caller's buffer. With nothing
//!   there, the reader spins a little (adaptive, see [`Spin`]), then parks: it sets the
//!   ring's flag, looks once more, and waits on the data doorbell, which also reports the
//!   peer's death. Bytes committed before a close or a death are read first; then the
//!   stream ends (closed) or fails with `ConnectionReset` (the peer vanished).
//! * **Writing** copies as much as fits (vectored: a batch of frames is one commit) and
//!   rings the peer only if its reader is parked, so a busy link makes no syscall per
//!   message. A full ring parks the writer until the peer releases room: `dms_link`'s
//!   outbox then fills and `try_send` returns `Full`, as on a socket.
//! * A ring position the peer could not have written ([`Corrupt`](crate::Corrupt)) fails
//!   the stream with `InvalidData`: the link ends, the process goes on.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::bells::{Bell, Ring};
use crate::ring::{Consumer, Corrupt, Producer};

/// The two doorbells of a link, shared by its reader and writer.
#[derive(Debug)]
pub(crate) struct Bells {
    /// Rung for a parked reader (bytes committed).
    pub(crate) data: Bell,
    /// Rung for a parked writer (room released).
    pub(crate) space: Bell,
}

/// Counters shared by every link of a middleware.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Rings found corrupted (a link ended for it).
    pub(crate) corrupt: AtomicU64,
    /// Times a reader parked (waited on its doorbell).
    pub(crate) parks: AtomicU64,
    /// Doorbells rung.
    pub(crate) rings: AtomicU64,
}

fn corrupt(counters: &Counters, error: Corrupt) -> io::Error {
    counters.corrupt.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%error, "shared-memory link ended: ring corrupted by the peer");
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// The reader's spin before it parks: up to `max`, adapted to the link. A spin that finds
/// bytes keeps the budget at `max`; one that finds none halves it (down to nothing, so
/// an idle link parks at once and burns no CPU); a park that is woken within `max`
/// (the link is busy again) restores it.
///
/// The spin is cooperative: it looks at the ring a few dozen times per poll, then yields
/// to the runtime (waking its own task) while its budget lasts, so the link's writer and
/// every other task on that thread keep running while a reader spins.
#[derive(Debug, Clone)]
pub(crate) struct Spin {
    max: Duration,
    budget: Duration,
    /// When the spin in progress began.
    started: Option<Instant>,
    parked_at: Option<Instant>,
}

/// What one round of spinning found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spun {
    /// Something to read.
    Ready,
    /// Nothing yet, budget left: yield to the runtime and look again.
    Again,
    /// Budget spent (or none): park.
    Park,
}

/// Doorbell wake-ups one poll handles with nothing to show for them before it yields.
const RINGS_PER_POLL: usize = 8;

/// Looks per round before yielding.
const LOOKS_PER_ROUND: usize = 32;

impl Spin {
    pub(crate) fn new(max: Duration) -> Self {
        Self {
            max,
            budget: max,
            started: None,
            parked_at: None,
        }
    }

    /// One round: looks at `ready` a few dozen times.
    fn round(&mut self, mut ready: impl FnMut() -> bool) -> Spun {
        if self.budget.is_zero() {
            return Spun::Park;
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        for _ in 0..LOOKS_PER_ROUND {
            if ready() {
                self.started = None;
                self.budget = self.max;
                return Spun::Ready;
            }
            std::hint::spin_loop();
        }
        if started.elapsed() < self.budget {
            return Spun::Again;
        }
        self.started = None;
        self.budget /= 2;
        if self.budget < Duration::from_micros(1) {
            self.budget = Duration::ZERO;
        }
        Spun::Park
    }

    fn parking(&mut self) {
        self.started = None;
        if self.parked_at.is_none() && !self.max.is_zero() {
            self.parked_at = Some(Instant::now());
        }
    }

    fn woken(&mut self) {
        if let Some(at) = self.parked_at.take() {
            if at.elapsed() < self.max {
                self.budget = self.max;
            }
        }
    }
}

/// The reading half of a link: the ring the peer writes.
#[derive(Debug)]
pub(crate) struct ShmReader {
    ring: Consumer,
    bells: Arc<Bells>,
    counters: Arc<Counters>,
    spin: Spin,
    /// The peer's end of the data doorbell is closed: read what is left, then fail.
    peer_gone: bool,
}

impl ShmReader {
    pub(crate) fn new(
        ring: Consumer,
        bells: Arc<Bells>,
        counters: Arc<Counters>,
        spin: Spin,
    ) -> Self {
        Self {
            ring,
            bells,
            counters,
            spin,
            peer_gone: false,
        }
    }

    /// Copies what is committed into `buf`; `Ok(false)` when nothing is.
    fn take(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<bool> {
        // SAFETY: `read_uninit` only writes initialised bytes into the unfilled part and
        // reports how many; `assume_init` then covers exactly those.
        let unfilled = unsafe { buf.unfilled_mut() };
        let n = self
            .ring
            .read_uninit(unfilled)
            .map_err(|e| corrupt(&self.counters, e))?;
        if n == 0 {
            return Ok(false);
        }
        // SAFETY: the first `n` unfilled bytes were just written by `read_uninit`.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        if self.ring.producer_needs_wake() {
            self.counters.rings.fetch_add(1, Ordering::Relaxed);
            self.bells.space.ring();
        }
        Ok(true)
    }
}

impl AsyncRead for ShmReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut rings = 0;
        loop {
            if this.take(buf)? {
                return Poll::Ready(Ok(()));
            }
            // Nothing committed. The close flag is stored after the last commit, so once
            // it is seen an empty ring is the end.
            if this.ring.is_closed() {
                // What was committed before the close, else the end.
                this.take(buf)?;
                return Poll::Ready(Ok(()));
            }
            if this.peer_gone {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "the peer process closed its shared-memory link without ending it",
                )));
            }
            let ring = &mut this.ring;
            match this
                .spin
                .round(|| ring.available().map_or(true, |n| n > 0) || ring.is_closed())
            {
                Spun::Ready => continue,
                Spun::Again => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Spun::Park => {}
            }
            if this.ring.park().map_err(|e| corrupt(&this.counters, e))? > 0
                || this.ring.is_closed()
            {
                continue;
            }
            this.spin.parking();
            match this.bells.data.poll_wait(cx) {
                Poll::Ready(Ok(Ring::Rung)) => {
                    rings += 1;
                    if rings >= RINGS_PER_POLL {
                        // Rung again and again with nothing to read: a peer flooding the
                        // doorbell does not keep this task (and its thread) busy.
                        this.ring.unpark();
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                Poll::Ready(Ok(Ring::Gone)) => this.peer_gone = true,
                Poll::Ready(Err(error)) => {
                    this.ring.unpark();
                    return Poll::Ready(Err(error));
                }
                Poll::Pending => {
                    this.counters.parks.fetch_add(1, Ordering::Relaxed);
                    return Poll::Pending;
                }
            }
            this.ring.unpark();
            this.spin.woken();
        }
    }
}

/// The writing half of a link: the ring the peer reads.
#[derive(Debug)]
pub(crate) struct ShmWriter {
    ring: Producer,
    bells: Arc<Bells>,
    counters: Arc<Counters>,
    peer_gone: bool,
    closed: bool,
}

impl ShmWriter {
    pub(crate) fn new(ring: Producer, bells: Arc<Bells>, counters: Arc<Counters>) -> Self {
        Self {
            ring,
            bells,
            counters,
            peer_gone: false,
            closed: false,
        }
    }

    fn wake_reader(&self) {
        self.counters.rings.fetch_add(1, Ordering::Relaxed);
        self.bells.data.ring();
    }

    fn poll_put<B: std::ops::Deref<Target = [u8]>>(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[B],
    ) -> Poll<io::Result<usize>> {
        if self.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        let mut rings = 0;
        loop {
            if self.peer_gone {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the peer process closed its shared-memory link",
                )));
            }
            let n = self
                .ring
                .write_vectored(bufs)
                .map_err(|e| corrupt(&self.counters, e))?;
            if n > 0 {
                if self.ring.consumer_needs_wake() {
                    self.wake_reader();
                }
                return Poll::Ready(Ok(n));
            }
            if self.ring.park().map_err(|e| corrupt(&self.counters, e))? > 0 {
                continue;
            }
            match self.bells.space.poll_wait(cx) {
                Poll::Ready(Ok(Ring::Rung)) => {
                    rings += 1;
                    if rings >= RINGS_PER_POLL {
                        // As for the reader: a flooded doorbell yields.
                        self.ring.unpark();
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                Poll::Ready(Ok(Ring::Gone)) => self.peer_gone = true,
                Poll::Ready(Err(error)) => {
                    self.ring.unpark();
                    return Poll::Ready(Err(error));
                }
                Poll::Pending => return Poll::Pending,
            }
            self.ring.unpark();
        }
    }

    fn end(&mut self) {
        if !self.closed {
            self.closed = true;
            self.ring.close();
            self.wake_reader();
        }
    }
}

impl AsyncWrite for ShmWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_put(cx, &[buf])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_put(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Every write is committed (and the peer rung if it sleeps) before it returns.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().end();
        Poll::Ready(Ok(()))
    }
}

impl Drop for ShmWriter {
    fn drop(&mut self) {
        // A link torn down without a shutdown still ends the peer's stream cleanly after
        // what was committed.
        self.end();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn an_idle_spin_decays_to_nothing_and_a_quick_wake_restores_it() {
        let mut spin = Spin::new(Duration::from_micros(8));
        // Rounds go on while the budget lasts, then the reader parks and the budget halves.
        let mut rounds = 0;
        while spin.round(|| false) == Spun::Again {
            rounds += 1;
            assert!(rounds < 1_000_000, "a spin must end");
        }
        assert_eq!(spin.budget, Duration::from_micros(4));
        while !spin.budget.is_zero() {
            while spin.round(|| false) == Spun::Again {}
        }
        assert_eq!(spin.round(|| true), Spun::Park, "no budget: parks at once");
        // Parked and woken at once: the link is busy, spin again.
        spin.parking();
        spin.woken();
        assert_eq!(spin.budget, Duration::from_micros(8));
        assert_eq!(spin.round(|| true), Spun::Ready);
        // No spin configured: never spins.
        let mut none = Spin::new(Duration::ZERO);
        assert_eq!(none.round(|| true), Spun::Park);
    }
}

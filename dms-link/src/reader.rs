//! The reading half of a link, and who drives it.
//!
//! A link's stream is read by its reader task, which decodes a read's worth of messages
//! and queues them for `recv` in the set's inbox. But a caller waiting in
//! [`LinkSet::recv`](crate::LinkSet::recv) for the link it last heard from (the *hot*
//! link: in request/reply, the one the answer comes back on) reads that link's stream
//! itself when nothing of the link is queued: the stream's readiness then wakes the
//! caller's task directly, and what it decodes is returned to it without passing
//! through the inbox. That saves a hand-over between tasks per message: on a
//! current-thread runtime a `block_on` future woken by another task costs the runtime an
//! extra `epoll_wait`, and on a multi-thread runtime the hand-over may wake another
//! thread (tens of µs on a VM).
//!
//! **Who reads.** [`ReadSide`] sits behind a mutex; whoever holds it may poll the
//! stream. While a caller drives (`driven`), the reader task stands down (it parks with
//! its waker stored). When the caller's `recv` ends — it got something, or its future
//! was dropped — the caller *hands the stream back*: it polls the stream once with the
//! reader task's waker, so the stream wakes the reader task again, without running that
//! task unless there is something to read. So a link is always read by someone, and
//! its ZMTP PINGs are answered, whether or not the application is in `recv`.
//!
//! **Order.** A caller reads a link only if none of the link's items wait anywhere:
//! the inbox is empty and the reader task holds no decoded batch (`holding`), both
//! checked under the read lock; so a link's items reach the application in the order
//! the peer sent them, `LinkUp` first (a caller drives only `started` links) and
//! `LinkDown` last (only the reader task takes a link down: a caller that meets the end
//! of the stream leaves the cause in `ended` and wakes the reader task).
//!
//! **Cancel safety.** A caller decodes only inside the poll that returns what it
//! decoded: nothing is held in a future that could be dropped.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use bytes::{BufMut, BytesMut};
use dms_core::wire::{Command, Inbound, MessageCodec};
use dms_core::{Incoming, LinkDownCause};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::link::{Link, lock};
use crate::registry::LinkSet;

/// Bytes a reader reserves at most for a frame body announced but not yet received.
const READ_AHEAD: usize = 1 << 20;

/// How a reader sizes its reads so that a big frame is neither copied nor read in pieces
/// of a doubling buffer.
///
/// Small frames are read many at a time (`read_size` bytes per read) and handed out as
/// zero-copy slices of the read buffer. A frame body of at least half a read (a *big*
/// frame) gets an allocation of exactly its size: the part already read is copied into it
/// once (at most one read's worth, and little after a big frame, see below) and the rest
/// is read straight into it, ending the read at the frame's end. The read after a big
/// frame is short ([`AFTER_BIG_READ`]): if the next frame is big too, only that much is
/// copied. Without this, frames a little over the read size straddle every read and each
/// one is copied whole when the buffer grows (measured: half of a 64 KiB receiver's time).
///
/// The read size adapts between [`MIN_READ`] and the configured size (`max`, where it
/// starts), as hyper's read strategy does: it halves after two reads in a row that took
/// less than a quarter of it (a quiet link) and doubles after a read that took all it
/// was offered (a busy one). Each link's buffer is walked through before it is reused
/// (the frames handed out share it), so the read size is the memory a link keeps
/// touched; and a buffer much larger than the read size is let go as soon as it is
/// drained, not walked through first: a thousand links that each get a few messages a
/// second hold 8 KiB each, not 64. A busy link keeps reads of the configured size (one
/// buffer per that many bytes: fewer allocations per message).
struct ReadSizing {
    read_size: usize,
    max: usize,
    after_big: bool,
    /// The last read was sized by `read_size` (not a big frame's, not the short read
    /// after one): what it took tells whether the size fits.
    sized: bool,
    /// Reads in a row that took less than a quarter of the read size.
    quiet: u8,
}

/// The smallest read size a link adapts down to.
const MIN_READ: usize = 8 << 10;

/// Bytes read after a big frame (the copy a following big frame costs at most).
const AFTER_BIG_READ: usize = 4 << 10;

impl ReadSizing {
    fn new(max: usize) -> Self {
        Self {
            read_size: max,
            max,
            after_big: false,
            sized: false,
            quiet: 0,
        }
    }

    /// Adapts the read size to a read that took `read` of the `offered` bytes.
    fn took(&mut self, read: usize, offered: usize) {
        if !std::mem::take(&mut self.sized) {
            return;
        }
        if read >= offered.min(self.read_size) {
            self.read_size = (self.read_size * 2).min(self.max);
            self.quiet = 0;
        } else if read < self.read_size / 4 {
            self.quiet += 1;
            if self.quiet >= 2 {
                self.read_size = (self.read_size / 2).max(MIN_READ.min(self.max));
                self.quiet = 0;
            }
        } else {
            self.quiet = 0;
        }
    }

    /// Makes room in `buf` for the next read and returns how many bytes it may read.
    /// `missing`: bytes of the current frame's body not yet in `buf` (the peer's word).
    fn next(&mut self, buf: &mut BytesMut, missing: usize) -> usize {
        let big = self.max / 2;
        self.sized = false;
        if missing > 0 && buf.len() + missing >= big {
            // A big frame: exactly its body, read up to its end. On the peer's word alone
            // at most READ_AHEAD more, or as much again as it has sent (growth by doubling
            // at worst, so a huge frame is copied a bounded number of times).
            let missing = missing.min(READ_AHEAD.max(buf.len()));
            buf.reserve(missing);
            self.after_big = true;
            return missing;
        }
        let (want, limit) = if std::mem::take(&mut self.after_big) {
            (AFTER_BIG_READ, AFTER_BIG_READ)
        } else {
            self.sized = true;
            if buf.is_empty() && buf.capacity() >= 4 * self.read_size {
                // Drained, and far larger than this link's reads now: a right-sized
                // buffer instead of walking through this one (frames handed out keep
                // their part of it alive).
                *buf = BytesMut::new();
            }
            (self.read_size, usize::MAX)
        };
        // A new buffer only once the spare room is down to a quarter of a read: the
        // frames handed out share the buffer, so each new one is an allocation.
        if buf.capacity() - buf.len() < (want / 4).max(missing) {
            buf.reserve(want.max(missing));
        }
        (buf.capacity() - buf.len()).min(limit)
    }
}

/// Messages a reader hands to `recv` at once, at most.
const REPORT_BATCH: usize = 128;

/// Where decoded items go: a batch (`recv_many`, the reader task) or one slot (`recv`).
pub(crate) trait Items {
    /// Items in it.
    fn count(&self) -> usize;
    /// Adds one at the end.
    fn put(&mut self, item: Incoming);
}

impl Items for Vec<Incoming> {
    fn count(&self) -> usize {
        self.len()
    }
    fn put(&mut self, item: Incoming) {
        self.push(item);
    }
}

impl Items for Option<Incoming> {
    fn count(&self) -> usize {
        usize::from(self.is_some())
    }
    fn put(&mut self, item: Incoming) {
        *self = Some(item);
    }
}

/// The reading half of a link: the stream, what was read and not yet decoded, and the
/// decoder; with the flags that say who may read it (see the [module docs](self)).
pub(crate) struct ReadSide {
    stream: Box<dyn AsyncRead + Unpin + Send>,
    buf: BytesMut,
    codec: MessageCodec,
    sizing: ReadSizing,
    /// Why reading ended (the stream's end, an I/O or protocol error, a ZMTP ERROR): the
    /// reader task takes the link down with it.
    ended: Option<LinkDownCause>,
    /// `LinkUp` was queued: a caller may drive.
    started: bool,
    /// A `recv` caller drives the stream (the stream holds the caller's waker).
    driven: bool,
    /// The reader task holds decoded items not yet queued: nobody may read past them.
    holding: bool,
    /// A caller stopped decoding at its limit: complete frames may be left in `buf`.
    more: bool,
    /// Nobody reads the stream (what is buffered is still decoded): see
    /// [`Link::pause_reading`].
    paused: bool,
    /// The reader task's waker, for the hand-back.
    reader: Option<Waker>,
}

impl std::fmt::Debug for ReadSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadSide")
            .field("buffered", &self.buf.len())
            .field("ended", &self.ended)
            .field("driven", &self.driven)
            .field("holding", &self.holding)
            .finish_non_exhaustive()
    }
}

impl ReadSide {
    /// The reading half of a fresh link: `leftover` is what the handshake read past the
    /// peer's READY; `codec` decodes its messages (peer frame first), reads are sized by
    /// `read_size`.
    pub(crate) fn new<R: AsyncRead + Unpin + Send + 'static>(
        stream: R,
        leftover: BytesMut,
        codec: MessageCodec,
        read_size: usize,
    ) -> Self {
        Self {
            stream: Box::new(stream),
            buf: leftover,
            codec,
            sizing: ReadSizing::new(read_size),
            ended: None,
            started: false,
            driven: false,
            holding: false,
            more: false,
            paused: false,
            reader: None,
        }
    }

    /// Reads into `buf` once (the room [`ReadSizing`] gives). Ready(true) if bytes came,
    /// Ready(false) if reading ended (`ended` set), Pending with `cx` registered.
    fn poll_read_once(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let missing = self.codec.body_missing(self.buf.len());
        let limit = self.sizing.next(&mut self.buf, missing);
        let mut room = (&mut self.buf).limit(limit);
        let offered = room.remaining_mut();
        // A `read_buf` future holds no state between polls: polling a fresh one per call
        // is a plain `poll_read` into the buffer's spare room.
        match pin!(self.stream.read_buf(&mut room)).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(0)) => {
                self.ended = Some(LinkDownCause::ClosedByPeer);
                Poll::Ready(false)
            }
            Poll::Ready(Ok(read)) => {
                self.sizing.took(read, offered);
                Poll::Ready(true)
            }
            Poll::Ready(Err(err)) => {
                self.ended = Some(LinkDownCause::Io(Arc::new(err)));
                Poll::Ready(false)
            }
        }
    }

    /// Decodes what is buffered and reads more until `out` got at least one item (at most
    /// `max`) or reading ended (Ready), or the stream has nothing now (Pending, `cx`
    /// registered). ZMTP PINGs are answered on the way.
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        link: &Link,
        out: &mut impl Items,
        max: usize,
    ) -> Poll<()> {
        let start = out.count();
        loop {
            if self.ended.is_some() {
                return Poll::Ready(());
            }
            loop {
                if out.count() - start >= max {
                    // Complete frames may be left: whoever reads next decodes them.
                    self.more = !self.buf.is_empty();
                    return Poll::Ready(());
                }
                match self.codec.decode(&mut self.buf) {
                    Ok(Some(Inbound::Message(msg))) => out.put(Incoming::Message(msg)),
                    Ok(Some(Inbound::Command(command))) => match command {
                        Command::Ping { context, .. } => {
                            link.queue_command(&Command::Pong { context });
                        }
                        Command::Error { reason } => {
                            let reason = dms_core::text::printable_lossy(&reason);
                            self.ended = Some(LinkDownCause::Refused(reason));
                            return Poll::Ready(());
                        }
                        // READY again, PONG, SUBSCRIBE...: ignored, as libzmq does.
                        _ => {}
                    },
                    Ok(None) => break,
                    Err(err) => {
                        // What was decoded before is delivered before the LinkDown.
                        self.ended = Some(LinkDownCause::Protocol(err));
                        return Poll::Ready(());
                    }
                }
            }
            self.more = false;
            if out.count() > start {
                // A request/reply peer: the answer may be written by its sender directly.
                link.direct.store(true, Ordering::Relaxed);
                return Poll::Ready(());
            }
            if self.paused {
                // Resumed by `Link::pause_reading`, which wakes the reader task.
                return Poll::Pending;
            }
            if self.poll_read_once(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// Drops the stream (the link is down): nobody reads it again.
    pub(crate) fn close(&mut self) {
        self.stream = Box::new(tokio::io::empty());
        self.buf = BytesMut::new();
        self.ended.get_or_insert(LinkDownCause::Shutdown);
    }

    /// Keeps the reader task's waker (for the hand-back), cloning only when it changed.
    fn keep_reader_waker(&mut self, waker: &Waker) {
        if !self
            .reader
            .as_ref()
            .is_some_and(|kept| kept.will_wake(waker))
        {
            self.reader = Some(waker.clone());
        }
    }
}

impl Link {
    /// The reader task's poll: stands down while a caller drives; otherwise decodes and
    /// reads into `batch`. Ready with the cause once reading ended (after `batch` got
    /// what came before).
    fn poll_reader(
        &self,
        cx: &mut Context<'_>,
        batch: &mut Vec<Incoming>,
    ) -> Poll<Option<LinkDownCause>> {
        let mut side = lock(&self.read);
        side.keep_reader_waker(cx.waker());
        if side.driven {
            return Poll::Pending;
        }
        match side.poll_fill(cx, self, batch, REPORT_BATCH) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                side.holding = !batch.is_empty();
                Poll::Ready(side.ended.take())
            }
        }
    }

    /// A waiting `recv` caller's attempt to read this link itself: Ready once `out` got
    /// something or reading ended (hand back then), Pending if it drives and the stream
    /// has nothing (the stream holds `cx`'s waker) or if it may not drive now.
    /// `queued_empty` tells, under the read lock, whether nothing waits in the inbox.
    pub(crate) fn poll_drive(
        &self,
        cx: &mut Context<'_>,
        out: &mut impl Items,
        max: usize,
        queued_empty: impl FnOnce() -> bool,
    ) -> Poll<()> {
        let Ok(mut side) = self.read.try_lock() else {
            // The reader task is at it: its items come through the inbox.
            return Poll::Pending;
        };
        if side.paused {
            // The reader task's to resume (`pause_reading` wakes it, not us).
            side.driven = false;
            return Poll::Pending;
        }
        if !side.started
            || side.holding
            || side.ended.is_some()
            || self.down.load(Ordering::Acquire)
            || !(side.driven || queued_empty())
        {
            return Poll::Pending;
        }
        side.driven = true;
        side.poll_fill(cx, self, out, max)
    }

    /// Ends a caller's drive (see the [module docs](self)): the stream is polled once
    /// with the reader task's waker, and that task is woken only if there is something to
    /// read or decode, or reading ended.
    pub(crate) fn hand_back(&self) {
        let mut side = lock(&self.read);
        if !std::mem::take(&mut side.driven) {
            return;
        }
        let Some(reader) = side.reader.clone() else {
            // The reader task has not parked yet: it polls the stream itself.
            return;
        };
        let wake = side.ended.is_some()
            || side.more
            || (!side.paused
                && side
                    .poll_read_once(&mut Context::from_waker(&reader))
                    .is_ready());
        drop(side);
        if wake {
            reader.wake();
        }
    }
}

impl Link {
    /// Stops (`paused`) or resumes reading the stream ([`LinkSet::pause_reading`]).
    /// Resuming wakes the reader task, which reads again (a caller that was driving the
    /// stream gave it up on its next poll).
    pub(crate) fn pause_reading(&self, paused: bool) {
        let mut side = lock(&self.read);
        if std::mem::replace(&mut side.paused, paused) == paused || paused {
            return;
        }
        let reader = side.reader.clone();
        drop(side);
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

/// Queues items of this link for `recv` (all, in order), unless the link is down
/// (false: stop reading). `items` is left empty either way.
async fn report(shared: &LinkSet, link: &Link, items: &mut Vec<Incoming>) -> bool {
    let queued = async {
        let _turn = link.reporting.lock().await;
        if link.down.load(Ordering::Acquire) {
            return false;
        }
        shared.emit_all(items).await;
        true
    };
    let queued = tokio::select! {
        queued = queued => queued,
        () = link.cancel.cancelled() => false,
    };
    items.clear();
    queued
}

/// The reader task: reports the link up, then reads and decodes whatever the peer sends
/// (unless a caller drives the stream) until the link ends. Messages are handed to
/// `recv` a read's worth at a time (one lock and one wake-up per batch).
pub(crate) async fn run_reader(shared: Arc<LinkSet>, link: Arc<Link>) {
    let mut batch = vec![Incoming::LinkUp {
        peer: link.peer.clone(),
        link: link.id,
        endpoint: link.remote.clone(),
        role: link.role,
    }];
    // `report` fails only once the link is down (`fail` ran: the call below does nothing)
    // or cancelled by the set's `close`: the link then ends as `Shutdown`, so that
    // `finished` resolves and the registry lets it go.
    if !report(&shared, &link, &mut batch).await {
        return link.fail(&shared, LinkDownCause::Shutdown).await;
    }
    lock(&link.read).started = true;
    let cause = loop {
        let ended = tokio::select! {
            ended = std::future::poll_fn(|cx| link.poll_reader(cx, &mut batch)) => ended,
            // Cancelled by `fail` (which runs once) or by the set's `close` (see above).
            () = link.cancel.cancelled() => break LinkDownCause::Shutdown,
        };
        if !batch.is_empty() {
            shared.heard_from(&link);
            let queued = report(&shared, &link, &mut batch).await;
            lock(&link.read).holding = false;
            if !queued {
                break LinkDownCause::Shutdown;
            }
        }
        if let Some(cause) = ended {
            break cause;
        }
    };
    link.fail(&shared, cause).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_frame_is_read_to_its_end_into_room_of_its_size() {
        let mut reads = ReadSizing::new(64 << 10);
        // Between frames: a whole read.
        let mut buf = BytesMut::new();
        assert_eq!(reads.next(&mut buf, 0), 64 << 10);
        // A read left 60,000 bytes of a 65,536-byte body: room for exactly the rest, and
        // the read stops at the frame's end (the next frame starts a read).
        let mut buf = BytesMut::with_capacity(60_000);
        buf.resize(60_000, 0);
        assert_eq!(reads.next(&mut buf, 5_536), 5_536);
        assert!(buf.capacity() - buf.len() >= 5_536);
        // After a big frame, a short read: a following big frame copies that little.
        let mut buf = BytesMut::new();
        assert_eq!(reads.next(&mut buf, 0), AFTER_BIG_READ);
        assert_eq!(reads.next(&mut buf, 0), buf.capacity() - buf.len());
        // A huge frame announced by the peer: room grows with what it has sent, not at
        // once on its word.
        let mut buf = BytesMut::new();
        assert_eq!(reads.next(&mut buf, 1 << 30), READ_AHEAD);
        buf.resize(READ_AHEAD, 0);
        assert_eq!(reads.next(&mut buf, (1 << 30) - READ_AHEAD), READ_AHEAD);
    }

    #[test]
    fn the_read_size_grows_on_a_busy_link_and_shrinks_on_a_quiet_one() {
        let mut reads = ReadSizing::new(64 << 10);
        let read = |reads: &mut ReadSizing, took: usize| {
            let mut buf = BytesMut::new();
            let offered = reads.next(&mut buf, 0);
            reads.took(took.min(offered), offered);
            offered
        };
        // Reads start at the configured size; one small read changes nothing, two in a
        // row halve it, down to the smallest.
        assert_eq!(read(&mut reads, 100), 64 << 10);
        assert_eq!(read(&mut reads, 20 << 10), 64 << 10);
        assert_eq!(read(&mut reads, 100), 64 << 10);
        assert_eq!(read(&mut reads, 100), 64 << 10);
        assert_eq!(read(&mut reads, 100), 32 << 10);
        for _ in 0..8 {
            read(&mut reads, 100);
        }
        assert_eq!(read(&mut reads, 100), MIN_READ);
        // Reads that take all they are offered double it, up to the configured size.
        assert_eq!(read(&mut reads, usize::MAX), 8 << 10);
        assert_eq!(read(&mut reads, usize::MAX), 16 << 10);
        assert_eq!(read(&mut reads, usize::MAX), 32 << 10);
        assert_eq!(read(&mut reads, usize::MAX), 64 << 10);
        assert_eq!(read(&mut reads, usize::MAX), 64 << 10);
        for _ in 0..8 {
            read(&mut reads, 100);
        }
        // A drained buffer far larger than the reads is let go: the next one fits them.
        let mut buf = BytesMut::with_capacity(64 << 10);
        assert_eq!(reads.next(&mut buf, 0), MIN_READ);
        assert!(buf.capacity() < 4 * MIN_READ, "{}", buf.capacity());
        // A big frame's read says nothing of the link's pace.
        let mut buf = BytesMut::new();
        let exact = reads.next(&mut buf, 60 << 10);
        reads.took(exact, exact);
        assert_eq!(read(&mut reads, 100), AFTER_BIG_READ);
        assert_eq!(read(&mut reads, 100), MIN_READ);
    }
}

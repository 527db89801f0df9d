//! A link's writer task: it writes what senders queue in the link's outbox, urgent bytes
//! first and between chunks of data, big frame bodies from where they are (vectored
//! writes), one flush per round.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use dms_core::LinkDownCause;
use smallvec::SmallVec;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::trace;

use crate::link::{KEPT_WRITE_CAPACITY, Link, Outbox, OutboxState, lock};
use crate::registry::LinkSet;

/// What the writer took out of the outbox: a buffer of data and its chunk marks, and a
/// buffer of urgent bytes. Kept between rounds so that their capacity is reused.
struct Taken {
    data: BytesMut,
    spliced: VecDeque<(usize, Bytes)>,
    marks: VecDeque<usize>,
    urgent: BytesMut,
}

impl Taken {
    /// Takes the urgent bytes if there are any; true if it did.
    fn urgent_from(&mut self, outbox: &mut Outbox) -> bool {
        if outbox.urgent.is_empty() {
            return false;
        }
        std::mem::swap(&mut outbox.urgent, &mut self.urgent);
        true
    }
}

/// Frees an empty buffer that grew beyond [`KEPT_WRITE_CAPACITY`] (after a burst).
fn give_back(lane: &mut BytesMut) {
    if lane.capacity() > KEPT_WRITE_CAPACITY {
        *lane = BytesMut::new();
    }
}

/// Writes all of `bytes`, or stops when the link is cancelled (`None`).
async fn write_all<W: AsyncWrite + Unpin>(
    socket: &mut W,
    cancel: &CancellationToken,
    bytes: &[u8],
) -> Option<std::io::Result<()>> {
    tokio::select! {
        result = socket.write_all(bytes) => Some(result),
        () = cancel.cancelled() => None,
    }
}

/// Slices a vectored write passes at most (Linux takes up to 1,024).
const MAX_SLICES: usize = 64;

/// Writes `data` with the spliced `bodies` in their places (each right after
/// `data[..offset - at]`), with vectored writes; or stops when the link is cancelled
/// (`None`). The slices stay on the stack for up to 20 bodies (a 256 KiB chunk of bodies
/// of 16 KiB or more has at most 16).
async fn write_spliced<'a, W: AsyncWrite + Unpin>(
    socket: &mut W,
    cancel: &CancellationToken,
    data: &[u8],
    at: usize,
    bodies: impl Iterator<Item = &'a (usize, Bytes)>,
) -> Option<std::io::Result<()>> {
    let mut slices: SmallVec<[IoSlice<'_>; 41]> = SmallVec::new();
    let mut from = 0;
    for (offset, body) in bodies {
        let offset = offset.saturating_sub(at);
        slices.push(IoSlice::new(data.get(from..offset).unwrap_or_default()));
        slices.push(IoSlice::new(body));
        from = offset;
    }
    slices.push(IoSlice::new(data.get(from..).unwrap_or_default()));
    slices.retain(|slice| !slice.is_empty());
    let mut left = &mut slices[..];
    while !left.is_empty() {
        let batch = left.len().min(MAX_SLICES);
        let written = tokio::select! {
            result = socket.write_vectored(&left[..batch]) => result,
            () = cancel.cancelled() => return None,
        };
        match written {
            Ok(0) => return Some(Err(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                // A stream claiming more than it was given must not panic us.
                let total: usize = left.iter().map(|slice| slice.len()).sum();
                IoSlice::advance_slices(&mut left, n.min(total));
            }
            Err(err) => return Some(Err(err)),
        }
    }
    Some(Ok(()))
}

/// Flushes the stream, or stops when the link is cancelled (`None`).
async fn flush<W: AsyncWrite + Unpin>(
    socket: &mut W,
    cancel: &CancellationToken,
) -> Option<std::io::Result<()>> {
    // Biased, flush first: on a TCP socket the flush is ready at once, and the round then
    // never touches the token's lock or its waiter list (this runs once per write round,
    // so once per message on an idle link). A flush that waits still yields to `cancel`.
    tokio::select! {
        biased;
        result = socket.flush() => Some(result),
        () = cancel.cancelled() => None,
    }
}

/// The link's stream as the writer task uses it: each poll locks it for that poll only,
/// so that a sender can write directly between two rounds.
struct SharedStream<'a>(&'a Mutex<Box<dyn AsyncWrite + Unpin + Send>>);

impl AsyncWrite for SharedStream<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut **lock(self.0)).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut **lock(self.0)).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        lock(self.0).is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut **lock(self.0)).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut **lock(self.0)).poll_shutdown(cx)
    }
}

impl Link {
    /// Writes `bytes` (a message a sender just queued on an idle link: the outbox was
    /// empty and the stream free, and `stream_busy` is set for us) from the sender's task,
    /// without waiting: what the stream does not take at once, a failure, or a flush that
    /// does not complete is left to the writer task, which is woken for it (a write never
    /// waits here, so the sender never does).
    pub(crate) fn write_directly(&self, mut bytes: BytesMut) {
        let mut cx = Context::from_waker(Waker::noop());
        let (mut written, mut error, mut flushed) = (0, None, false);
        {
            let mut stream = lock(&self.write);
            while written < bytes.len() {
                let rest = bytes.get(written..).unwrap_or_default();
                match Pin::new(&mut **stream).poll_write(&mut cx, rest) {
                    Poll::Ready(Ok(0)) => {
                        error = Some(std::io::ErrorKind::WriteZero.into());
                        break;
                    }
                    Poll::Ready(Ok(n)) => written += n.min(rest.len()),
                    Poll::Ready(Err(err)) => {
                        error = Some(err);
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if error.is_none() && written == bytes.len() {
                // A no-op on TCP; a stream that buffers is flushed by the writer task.
                flushed = matches!(
                    Pin::new(&mut **stream).poll_flush(&mut cx),
                    Poll::Ready(Ok(()))
                );
            }
        }
        let mut outbox = lock(&self.outbox);
        outbox.stream_busy = false;
        if outbox.state == OutboxState::Closed {
            // The link went down meanwhile: the rest is lost with it, as queued bytes are.
        } else if let Some(error) = error {
            outbox.direct_error = Some(error);
        } else if written < bytes.len() {
            // The rest goes out first, before what others queued meanwhile. (Split only
            // here: a split makes the buffer shared and cuts its capacity.)
            outbox.prepend(bytes.split_off(written));
        } else if !flushed {
            outbox.unflushed = true;
        }
        bytes.clear();
        if outbox.spare.capacity() == 0 && bytes.capacity() <= KEPT_WRITE_CAPACITY {
            outbox.spare = bytes;
        }
        // The writer waits while we hold the stream: it must look again if there is
        // anything for it, or if `disconnect` started draining meanwhile.
        let wake = !outbox.is_empty()
            || outbox.direct_error.is_some()
            || outbox.unflushed
            || outbox.state != OutboxState::Open;
        drop(outbox);
        if wake {
            self.wake_writer.notify_one();
        }
    }
}

/// Takes what the writer writes in its next round out of the outbox (urgent bytes, or
/// else the data), and marks the stream busy if there is anything to write or flush.
/// Returns the outbox state and whether a direct write left a flush to do.
fn take_round(outbox: &mut Outbox, taken: &mut Taken) -> (OutboxState, bool) {
    if !taken.urgent_from(outbox) && !outbox.buf.is_empty() {
        std::mem::swap(&mut outbox.buf, &mut taken.data);
        std::mem::swap(&mut outbox.spliced, &mut taken.spliced);
        std::mem::swap(&mut outbox.marks, &mut taken.marks);
        outbox.spliced_len = 0;
        outbox.since_mark = 0;
    } else if outbox.buf.is_empty() {
        // Idle (after a burst): give the burst's memory back.
        give_back(&mut outbox.buf);
        give_back(&mut outbox.urgent);
    }
    let unflushed = std::mem::take(&mut outbox.unflushed);
    if !taken.data.is_empty() || !taken.urgent.is_empty() || unflushed {
        outbox.stream_busy = true;
    }
    (outbox.state, unflushed)
}

/// Writes whatever senders queue until the link ends: everything queued since the last
/// write, chunk by chunk (a syscall per chunk of at least 256 KiB, or per buffer when
/// less is queued), with urgent bytes first and between chunks, then one flush per round.
pub(crate) async fn run_writer(shared: Arc<LinkSet>, link: Arc<Link>) {
    if let Some(cause) = write_until_down(&link).await {
        link.fail(&shared, cause).await;
    }
}

/// The writer's loop: `Some(cause)` when the link must go down, `None` when it already is.
pub(crate) async fn write_until_down(link: &Link) -> Option<LinkDownCause> {
    let mut socket = SharedStream(&link.write);
    let mut taken = Taken {
        data: BytesMut::new(),
        spliced: VecDeque::new(),
        marks: VecDeque::new(),
        urgent: BytesMut::new(),
    };
    // The stream is ours from a round that found work until the next look at the outbox
    // (one lock per round: the flag is cleared there).
    let mut owns_stream = false;
    let cause = 'link: loop {
        let round = {
            let mut outbox = lock(&link.outbox);
            if std::mem::take(&mut owns_stream) {
                outbox.stream_busy = false;
            }
            if let Some(error) = outbox.direct_error.take() {
                break 'link LinkDownCause::Io(Arc::new(error));
            }
            if outbox.stream_busy {
                // A sender writes directly; it wakes us when it is done, if need be.
                None
            } else {
                Some(take_round(&mut outbox, &mut taken))
            }
        };
        let Some((state, unflushed)) = round else {
            tokio::select! {
                () = link.wake_writer.notified() => continue,
                () = link.cancel.cancelled() => return None,
            }
        };
        if taken.data.is_empty() && taken.urgent.is_empty() && !unflushed {
            give_back(&mut taken.data);
            give_back(&mut taken.urgent);
            match state {
                OutboxState::Open => {
                    // Idle: the next message may be written by its sender.
                    link.direct.store(true, Ordering::Relaxed);
                }
                OutboxState::Draining => {
                    let _ = socket.shutdown().await;
                    break LinkDownCause::Disconnected;
                }
                OutboxState::Closed => return None,
            }
            tokio::select! {
                () = link.wake_writer.notified() => continue,
                () = link.cancel.cancelled() => return None,
            }
        }
        link.room.notify_waiters();
        // Urgent bytes first, then the data chunk by chunk, with urgent bytes queued
        // meanwhile between two chunks.
        let mut at = 0;
        loop {
            if !taken.urgent.is_empty() {
                trace!(peer = %link.peer, bytes = taken.urgent.len(), "write urgent");
                match write_all(&mut socket, &link.cancel, &taken.urgent).await {
                    None => return None,
                    Some(Err(err)) => break 'link LinkDownCause::Io(Arc::new(err)),
                    Some(Ok(())) => taken.urgent.clear(),
                }
            }
            if at == taken.data.len() {
                break;
            }
            let end = taken.marks.pop_front().unwrap_or(taken.data.len());
            let chunk = taken.data.get(at..end).unwrap_or_default();
            trace!(peer = %link.peer, bytes = chunk.len(), "write");
            // The bodies spliced into this chunk: offsets in (at, end].
            let in_chunk = taken
                .spliced
                .iter()
                .take_while(|(offset, _)| *offset <= end)
                .count();
            let written = if in_chunk == 0 {
                write_all(&mut socket, &link.cancel, chunk).await
            } else {
                let bodies = taken.spliced.range(..in_chunk);
                let written = write_spliced(&mut socket, &link.cancel, chunk, at, bodies).await;
                taken.spliced.drain(..in_chunk);
                written
            };
            match written {
                None => return None,
                Some(Err(err)) => break 'link LinkDownCause::Io(Arc::new(err)),
                Some(Ok(())) => at = end,
            }
            if at < taken.data.len() {
                taken.urgent_from(&mut lock(&link.outbox));
            }
        }
        // A no-op on a TCP socket; a buffering stream (TLS) must not sit on the round.
        match flush(&mut socket, &link.cancel).await {
            None => return None,
            Some(Err(err)) => break 'link LinkDownCause::Io(Arc::new(err)),
            Some(Ok(())) => {}
        }
        owns_stream = true;
        // Capacity is kept while the link stays busy (no regrowth per write); it is given
        // back above when the link goes idle.
        taken.data.clear();
        taken.spliced.clear();
        taken.marks.clear();
    };
    Some(cause)
}

//! A link's writer task: it writes what senders queue in the link's outbox, urgent bytes
//! first and between chunks of data, big frame bodies from where they are (vectored
//! writes), one flush per round.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

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

/// Writes whatever senders queue until the link ends: everything queued since the last
/// write, chunk by chunk (a syscall per chunk of at least 256 KiB, or per buffer when
/// less is queued), with urgent bytes first and between chunks, then one flush per round.
pub(crate) async fn run_writer<W: AsyncWrite + Unpin>(
    shared: Arc<LinkSet>,
    link: Arc<Link>,
    socket: W,
) {
    if let Some(cause) = write_until_down(&link, socket).await {
        link.fail(&shared, cause).await;
    }
}

/// The writer's loop: `Some(cause)` when the link must go down, `None` when it already is.
pub(crate) async fn write_until_down<W: AsyncWrite + Unpin>(
    link: &Link,
    mut socket: W,
) -> Option<LinkDownCause> {
    let mut taken = Taken {
        data: BytesMut::new(),
        spliced: VecDeque::new(),
        marks: VecDeque::new(),
        urgent: BytesMut::new(),
    };
    let cause = 'link: loop {
        let state = {
            let mut outbox = lock(&link.outbox);
            if !taken.urgent_from(&mut outbox) && !outbox.buf.is_empty() {
                std::mem::swap(&mut outbox.buf, &mut taken.data);
                std::mem::swap(&mut outbox.spliced, &mut taken.spliced);
                std::mem::swap(&mut outbox.marks, &mut taken.marks);
                outbox.spliced_len = 0;
                outbox.since_mark = 0;
            } else if outbox.buf.is_empty() {
                // Idle (after a burst): give the burst's memory back.
                let Outbox { buf, urgent, .. } = &mut *outbox;
                give_back(buf);
                give_back(urgent);
            }
            outbox.state
        };
        if taken.data.is_empty() && taken.urgent.is_empty() {
            give_back(&mut taken.data);
            give_back(&mut taken.urgent);
            match state {
                OutboxState::Open => {}
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
        // Capacity is kept while the link stays busy (no regrowth per write); it is given
        // back above when the link goes idle.
        taken.data.clear();
        taken.spliced.clear();
        taken.marks.clear();
    };
    Some(cause)
}

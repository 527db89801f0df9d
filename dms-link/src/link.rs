//! One live link: its output buffer, its writer task and its reader task.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::{Bytes, BytesMut};
use dms_core::wire::{Command, MessageCodec};
use dms_core::{Endpoint, Incoming, LinkDownCause, LinkId, Multipart, PeerId, Role, SendError};
use tokio::io::AsyncWrite;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::reader::ReadSide;
use crate::registry::LinkSet;
use crate::stats::Counters;

/// Capacity a link keeps in each of its two output buffers while idle; larger buffers
/// (after a burst or a big message) are freed when the link goes idle.
pub(crate) const KEPT_WRITE_CAPACITY: usize = 1 << 20;

/// Whether a link still takes messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutboxState {
    /// Sends are accepted.
    Open,
    /// `disconnect` was called: what is queued is written, then the link closes.
    Draining,
    /// The link is down.
    Closed,
}

#[derive(Debug)]
pub(crate) struct Outbox {
    /// Data, in order, except the bodies of big frames (see `spliced`).
    pub(crate) buf: BytesMut,
    /// Bodies of big frames, not copied into `buf`: each goes out right after
    /// `buf[..offset]` (offsets ascending, never 0: a header precedes each body).
    pub(crate) spliced: VecDeque<(usize, Bytes)>,
    /// Bytes in `spliced`.
    pub(crate) spliced_len: usize,
    /// Message boundaries in `buf`, at least [`CHUNK`] bytes (spliced bodies included)
    /// apart: the writer writes the data chunk by chunk and may put urgent bytes between
    /// two chunks.
    pub(crate) marks: VecDeque<usize>,
    /// Bytes queued since the last mark, spliced bodies included.
    pub(crate) since_mark: usize,
    /// Heartbeats (ZMTP PONGs, DMS PING/PONG): written before `buf`, or between two
    /// chunks of it, so they wait behind at most one chunk of data.
    pub(crate) urgent: BytesMut,
    pub(crate) state: OutboxState,
    /// Someone holds the stream: the writer task in a round, or a sender writing
    /// directly. The other waits (the writer is woken when a direct write ends).
    pub(crate) stream_busy: bool,
    /// A direct write failed: the writer task takes the link down with it.
    pub(crate) direct_error: Option<std::io::Error>,
    /// A direct write's flush did not complete at once: the writer task flushes.
    pub(crate) unflushed: bool,
    /// The buffer a direct write took, given back for the next message (no allocation).
    pub(crate) spare: BytesMut,
}

/// Bytes of data written, at least, between two chances for urgent bytes to go out (a
/// chunk ends at a message boundary, so a single larger message is one chunk).
pub(crate) const CHUNK: usize = 256 << 10;

/// Frame bodies from this size on are not copied into the output buffer but written from
/// where they are, with a vectored write (a copy of 64 KiB was a third of a sender's time).
const SPLICE_FROM: usize = 16 << 10;

impl Outbox {
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.urgent.is_empty()
    }

    /// Bytes of data queued, spliced bodies included.
    pub(crate) fn data_len(&self) -> usize {
        self.buf.len() + self.spliced_len
    }

    /// Puts `rest` (what a direct write left) before the queued data.
    pub(crate) fn prepend(&mut self, mut rest: BytesMut) {
        let shift = rest.len();
        if !self.buf.is_empty() {
            rest.extend_from_slice(&self.buf);
        }
        self.buf = rest;
        self.marks.iter_mut().for_each(|mark| *mark += shift);
        self.spliced
            .iter_mut()
            .for_each(|(offset, _)| *offset += shift);
        self.since_mark += shift;
    }
}

/// Bytes of urgent messages a link holds at most (beyond it, urgent sends are `Full`).
const URGENT_LIMIT: usize = 64 << 10;

/// A link's shared state. Senders encode into `outbox`; the writer task takes whole
/// buffers out of it.
pub(crate) struct Link {
    pub(crate) peer: PeerId,
    /// This link among the peer's links over time.
    pub(crate) id: LinkId,
    pub(crate) remote: Endpoint,
    pub(crate) role: Role,
    pub(crate) outbox: Mutex<Outbox>,
    queue_limit: usize,
    /// Wakes the writer: the outbox went from empty to non-empty, or started draining.
    pub(crate) wake_writer: Notify,
    /// Wakes senders waiting for room.
    pub(crate) room: Notify,
    /// Stops the reader and writer (child of the middleware's shutdown token).
    pub(crate) cancel: CancellationToken,
    /// Cancelled once the link is fully down and reported.
    finished: CancellationToken,
    pub(crate) down: AtomicBool,
    /// Held while the reader queues an item for `recv` and while `fail` queues `LinkDown`:
    /// once the link is down the reader queues nothing more, so `LinkDown` is the link's
    /// last item.
    pub(crate) reporting: tokio::sync::Mutex<()>,
    cause: Mutex<Option<LinkDownCause>>,
    slot: Mutex<Option<OwnedSemaphorePermit>>,
    /// The reading half: driven by the reader task, or by a waiting `recv` caller.
    pub(crate) read: Mutex<ReadSide>,
    /// The writing half: written by the writer task, or directly by a sender when the
    /// link is idle (see [`Link::write_directly`]).
    pub(crate) write: Mutex<Box<dyn AsyncWrite + Unpin + Send>>,
    /// A send may write directly: set when a message arrives on the link or the writer
    /// goes idle, cleared by each direct write (so a burst costs one syscall per batch,
    /// not per message).
    pub(crate) direct: AtomicBool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("peer", &self.peer)
            .field("remote", &self.remote)
            .field("role", &self.role)
            .field("down", &self.down)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The critical sections below cannot panic halfway; a poisoned lock holds valid data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Link {
    #[allow(clippy::too_many_arguments)] // each is one fact of the link
    pub(crate) fn new(
        peer: PeerId,
        remote: Endpoint,
        role: Role,
        queue_limit: usize,
        cancel: CancellationToken,
        slot: OwnedSemaphorePermit,
        read: ReadSide,
        write: Box<dyn AsyncWrite + Unpin + Send>,
    ) -> Self {
        Self {
            peer,
            id: LinkId::next(),
            remote,
            role,
            outbox: Mutex::new(Outbox {
                buf: BytesMut::new(),
                spliced: VecDeque::new(),
                spliced_len: 0,
                marks: VecDeque::new(),
                since_mark: 0,
                urgent: BytesMut::new(),
                state: OutboxState::Open,
                stream_busy: false,
                direct_error: None,
                unflushed: false,
                spare: BytesMut::new(),
            }),
            queue_limit,
            wake_writer: Notify::new(),
            room: Notify::new(),
            cancel,
            finished: CancellationToken::new(),
            down: AtomicBool::new(false),
            reporting: tokio::sync::Mutex::new(()),
            cause: Mutex::new(None),
            slot: Mutex::new(Some(slot)),
            read: Mutex::new(read),
            write: Mutex::new(write),
            direct: AtomicBool::new(true),
        }
    }

    /// Encodes `msg` (peer frame first, not written) into the outbox if it has room; on an
    /// idle link, writes it from here ([`write_directly`](Self::write_directly)).
    pub(crate) fn try_queue(&self, codec: &MessageCodec, msg: Multipart) -> Result<(), SendError> {
        if let Some(bytes) = self.try_queue_deferred(codec, msg)? {
            self.write_directly(bytes);
        }
        Ok(())
    }

    /// As [`try_queue`](Self::try_queue), but the bytes of a direct write are handed back
    /// to be written with [`write_directly`](Self::write_directly) once the caller let go
    /// of what it holds (the link registry: a write must not stall every other sender).
    pub(crate) fn try_queue_deferred(
        &self,
        codec: &MessageCodec,
        msg: Multipart,
    ) -> Result<Option<BytesMut>, SendError> {
        self.queue(codec, msg, false)
    }

    /// As [`try_queue`](Self::try_queue), into the urgent lane (written before data; never
    /// directly).
    pub(crate) fn try_queue_urgent(
        &self,
        codec: &MessageCodec,
        msg: Multipart,
    ) -> Result<(), SendError> {
        self.queue(codec, msg, true)
            .map(|direct| debug_assert!(direct.is_none()))
    }

    /// Queues `msg`; `Some(bytes)` when this sender is to write them itself (an idle
    /// link, see [`write_directly`](Self::write_directly)): the stream is marked busy
    /// for it.
    fn queue(
        &self,
        codec: &MessageCodec,
        msg: Multipart,
        urgent: bool,
    ) -> Result<Option<BytesMut>, SendError> {
        let body = msg.frames().get(1..).unwrap_or_default();
        let encoded = match codec.check_outbound(body) {
            Ok(len) => len,
            Err(error) => {
                return Err(SendError::Invalid {
                    error,
                    msg: Box::new(msg),
                });
            }
        };
        let mut outbox = lock(&self.outbox);
        if outbox.state != OutboxState::Open {
            drop(outbox);
            return Err(SendError::UnknownPeer {
                peer: self.peer.clone(),
                msg: Box::new(msg),
            });
        }
        let was_empty = outbox.is_empty();
        let (queued, limit) = if urgent {
            (outbox.urgent.len(), URGENT_LIMIT)
        } else {
            (outbox.data_len(), self.queue_limit)
        };
        if queued > 0 && queued + encoded > limit {
            drop(outbox);
            return Err(SendError::Full {
                peer: self.peer.clone(),
                msg: Box::new(msg),
            });
        }
        let encoded = if urgent {
            codec.encode_frames(body, &mut outbox.urgent)
        } else {
            let Outbox {
                buf,
                spliced,
                spliced_len,
                marks,
                since_mark,
                ..
            } = &mut *outbox;
            let result = codec.encode_frames_spliced(body, buf, SPLICE_FROM, |at, bytes| {
                *spliced_len += bytes.len();
                spliced.push_back((at, bytes));
            });
            *since_mark += encoded;
            if *since_mark >= CHUNK {
                marks.push_back(buf.len());
                *since_mark = 0;
            }
            result.map(drop)
        };
        debug_assert!(encoded.is_ok(), "checked above");
        if was_empty
            && !urgent
            && !outbox.stream_busy
            && outbox.spliced.is_empty()
            && self.direct.swap(false, Ordering::Relaxed)
        {
            // An idle link: this sender writes the message itself, no writer wake-up.
            outbox.stream_busy = true;
            let spare = std::mem::take(&mut outbox.spare);
            let bytes = std::mem::replace(&mut outbox.buf, spare);
            outbox.marks.clear();
            outbox.since_mark = 0;
            return Ok(Some(bytes));
        }
        drop(outbox);
        if was_empty {
            self.wake_writer.notify_one();
        }
        Ok(None)
    }

    /// Queues a control command in the urgent lane (a PONG must not wait for room or
    /// behind data), unless that lane is full: a peer that sends PINGs and never reads
    /// must not grow it without bound (it would not read the PONG anyway).
    pub(crate) fn queue_command(&self, command: &Command) {
        let mut outbox = lock(&self.outbox);
        if outbox.state == OutboxState::Closed || outbox.urgent.len() >= URGENT_LIMIT {
            return;
        }
        let was_empty = outbox.is_empty();
        command.encode(&mut outbox.urgent);
        drop(outbox);
        if was_empty {
            self.wake_writer.notify_one();
        }
    }

    /// A future that resolves when room may have appeared; `enable` it before checking.
    pub(crate) fn room(&self) -> &Notify {
        &self.room
    }

    /// Asks the writer to flush what is queued and close the link.
    pub(crate) fn start_draining(&self) {
        let mut outbox = lock(&self.outbox);
        if outbox.state == OutboxState::Open {
            outbox.state = OutboxState::Draining;
        }
        drop(outbox);
        self.wake_writer.notify_one();
    }

    /// Resolves when the link is down and its `LinkDown` was queued.
    pub(crate) async fn finished(&self) {
        self.finished.cancelled().await;
    }

    /// Why the link went down (once it has).
    pub(crate) fn cause(&self) -> Option<LinkDownCause> {
        lock(&self.cause).clone()
    }

    /// Takes the link down once: drops what was queued (counted), stops its tasks, wakes
    /// waiting senders, frees its peer slot, reports `LinkDown`, then unregisters it.
    pub(crate) async fn fail(self: &Arc<Self>, shared: &LinkSet, cause: LinkDownCause) {
        if self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        let (dropped, draining) = {
            let mut outbox = lock(&self.outbox);
            let draining = outbox.state == OutboxState::Draining;
            outbox.state = OutboxState::Closed;
            let dropped = outbox.data_len() + outbox.urgent.len();
            outbox.buf = BytesMut::new();
            outbox.spliced.clear();
            outbox.spliced_len = 0;
            outbox.marks.clear();
            outbox.since_mark = 0;
            outbox.urgent = BytesMut::new();
            (dropped, draining)
        };
        // We asked to disconnect and all was queued out: the peer closing its side in answer
        // (seen by the reader, possibly before the writer reports) is that disconnect.
        let cause = match cause {
            LinkDownCause::ClosedByPeer if draining && dropped == 0 => LinkDownCause::Disconnected,
            cause => cause,
        };
        debug!(peer = %self.peer, %cause, "link down");
        let counters = &shared.counters;
        counters
            .bytes_dropped_on_link_down
            .fetch_add(dropped as u64, Ordering::Relaxed);
        Counters::bump(&counters.links_down);
        if matches!(cause, LinkDownCause::Protocol(_)) {
            Counters::bump(&counters.protocol_errors);
        }
        *lock(&self.cause) = Some(cause.clone());
        self.cancel.cancel();
        // The connection closes now, not when the last handle of the link goes (a
        // reconnect supervisor keeps the dead link's handle while it redials).
        drop(std::mem::replace(
            &mut *lock(&self.write),
            Box::new(tokio::io::sink()),
        ));
        lock(&self.read).close();
        self.room.notify_waiters();
        drop(lock(&self.slot).take());
        if !matches!(cause, LinkDownCause::Shutdown) {
            let _turn = self.reporting.lock().await;
            let mut down = vec![Incoming::LinkDown {
                peer: self.peer.clone(),
                link: self.id,
                cause,
            }];
            tokio::select! {
                () = shared.emit_all(&mut down) => {}
                () = shared.shutdown.cancelled() => {}
            }
        }
        // Unregistered only now: a new link under the same id cannot report its LinkUp
        // before this LinkDown (it is refused as a duplicate until then, and redials).
        shared.unregister(self);
        self.finished.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::write_until_down;
    use tokio::sync::Semaphore;

    /// A link writing into `stream`.
    fn test_link(queue_limit: usize, stream: impl AsyncWrite + Unpin + Send + 'static) -> Link {
        let slot = Arc::new(Semaphore::new(1)).try_acquire_owned();
        let Ok(slot) = slot else {
            panic!("a fresh semaphore has a permit");
        };
        Link::new(
            PeerId::generated(1),
            "tcp://127.0.0.1:1"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
            Role::Acceptor,
            queue_limit,
            CancellationToken::new(),
            slot,
            test_read_side(),
            Box::new(stream),
        )
    }

    fn test_read_side() -> ReadSide {
        use dms_core::wire::Limits;
        ReadSide::new(
            tokio::io::empty(),
            BytesMut::new(),
            MessageCodec::new(Limits::default()),
            4096,
        )
    }

    /// The next message the writer wrote into `reader`, reading as needed.
    async fn next_message(
        reader: &mut (impl tokio::io::AsyncRead + Unpin),
        decoder: &mut MessageCodec,
        buf: &mut BytesMut,
    ) -> Multipart {
        use dms_core::wire::Inbound;
        use tokio::io::AsyncReadExt;
        loop {
            match decoder.decode(buf) {
                Ok(Some(Inbound::Message(msg))) => return msg,
                Ok(_) => {
                    let read = reader.read_buf(buf).await;
                    assert!(read.is_ok_and(|n| n > 0), "the writer stopped early");
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_urgent_message_waits_behind_one_chunk_of_data_at_most() {
        // Bodies copied into the buffer, and bodies written in place.
        urgent_behind_one_chunk(8 << 10).await;
        urgent_behind_one_chunk(SPLICE_FROM + 1000).await;
    }

    async fn urgent_behind_one_chunk(payload: usize) {
        use dms_core::wire::Limits;

        // A peer that has room for 16 KiB until it reads.
        let (writer_end, mut reader_end) = tokio::io::duplex(16 << 10);
        let link = Arc::new(test_link(8 << 20, writer_end));
        // Everything through the writer task (no direct write of the first message).
        link.direct.store(false, Ordering::Relaxed);
        let codec = MessageCodec::new(Limits::default());
        let peer = link.peer.to_frame();
        let payload = Bytes::from(vec![7u8; payload]);
        let msg = Multipart::from_frames([peer.clone(), Bytes::from_static(b"d"), payload]);
        let mut one = BytesMut::new();
        codec
            .encode_frames(msg.frames().get(1..).unwrap_or_default(), &mut one)
            .unwrap_or_else(|e| panic!("{e}"));
        // A chunk ends at the first message boundary at or after CHUNK bytes.
        let per_chunk = CHUNK.div_ceil(one.len());
        let total = 3 * per_chunk;
        for _ in 0..total {
            link.try_queue(&codec, msg.clone())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        // The writer takes every message (three chunks) and blocks in the first chunk.
        let writer = tokio::spawn({
            let link = link.clone();
            async move { write_until_down(&link).await }
        });
        tokio::task::yield_now().await;
        let urgent = Multipart::from_frames([peer.clone(), Bytes::from_static(b"u")]);
        link.try_queue_urgent(&codec, urgent)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut decoder = MessageCodec::new(Limits::default());
        let mut buf = BytesMut::new();
        let (mut data_before_urgent, mut data) = (None, 0);
        while data < total {
            let msg = next_message(&mut reader_end, &mut decoder, &mut buf).await;
            if &msg[0][..] == b"u" {
                data_before_urgent = Some(data);
            } else {
                data += 1;
            }
        }
        link.cancel.cancel();
        let _ = writer.await;
        assert_eq!(
            data_before_urgent,
            Some(per_chunk),
            "the urgent message waited behind more than the chunk in progress"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn big_bodies_written_in_place_arrive_whole_and_in_order() {
        use dms_core::wire::Limits;

        // A peer with little room: the first message, written directly by its sender,
        // does not fit, and the rest of it goes out first through the writer task.
        let (writer_end, mut reader_end) = tokio::io::duplex(7_777);
        let link = Arc::new(test_link(64 << 20, writer_end));
        let codec = MessageCodec::new(Limits::default());
        let peer = link.peer.to_frame();
        // Around the splice size, several bodies per chunk, and more than a chunk queued.
        let sizes = [
            SPLICE_FROM - 1,
            10,
            SPLICE_FROM,
            100,
            70_000,
            5,
            300_000,
            20_000,
        ];
        let mut sent = Vec::new();
        for round in 0..4u8 {
            for (i, &size) in sizes.iter().enumerate() {
                let fill = round.wrapping_mul(31).wrapping_add(i as u8);
                let small = Bytes::from(vec![fill; 3]);
                let body = Bytes::from(vec![fill; size]);
                let msg = Multipart::from_frames([peer.clone(), small.clone(), body.clone()]);
                link.try_queue(&codec, msg)
                    .unwrap_or_else(|e| panic!("{e}"));
                if round == 0 && i == 0 {
                    // Written directly, in part: the stream took 7,777 bytes of it.
                    let left = lock(&link.outbox).buf.len();
                    assert_eq!(left, 5 + 9 + SPLICE_FROM - 1 - 7_777, "direct write");
                }
                sent.push((small, body));
            }
        }
        let writer = tokio::spawn({
            let link = link.clone();
            async move { write_until_down(&link).await }
        });
        let mut decoder = MessageCodec::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut received = Vec::new();
        while received.len() < sent.len() {
            let msg = next_message(&mut reader_end, &mut decoder, &mut buf).await;
            assert_eq!(msg.len(), 2);
            received.push((msg[0].clone(), msg[1].clone()));
        }
        link.cancel.cancel();
        let _ = writer.await;
        assert!(received == sent, "messages differ or came out of order");
    }

    #[test]
    fn pongs_to_a_peer_that_never_reads_stay_bounded() {
        let slot = Arc::new(Semaphore::new(1)).try_acquire_owned();
        let Ok(slot) = slot else {
            panic!("a fresh semaphore has a permit");
        };
        let limit = 4096;
        let link = Link::new(
            PeerId::generated(1),
            "tcp://127.0.0.1:1"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
            Role::Acceptor,
            limit,
            CancellationToken::new(),
            slot,
            test_read_side(),
            Box::new(tokio::io::sink()),
        );
        let pong = Command::Pong {
            context: Bytes::from_static(b"0123456789abcdef"),
        };
        for _ in 0..100_000 {
            link.queue_command(&pong);
        }
        let queued = lock(&link.outbox).urgent.len();
        assert!(queued < URGENT_LIMIT + 64, "{queued} bytes of PONGs queued");
    }
}

//! [`LinkSet`]: the live links of one middleware by peer id, and the state their tasks
//! share (peer slots, id generator, shutdown, inbox, counters, encoder).
//!
//! The links' tasks ([`crate::link`]) take a `&LinkSet`; the handshake
//! ([`crate::handshake`]) takes only the [`LinkConfig`](crate::LinkConfig).

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::Poll;

use dms_core::wire::MessageCodec;
use dms_core::{
    AuthError, Endpoint, Incoming, LinkDownCause, LinkId, MiddlewareError, Multipart, PeerId, Role,
    SendError,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::LinkConfig;
use crate::handshake::{Handshaken, handshake, refuse, send};
use crate::handshakes::{HandshakePermit, Handshakes};
use crate::inbox::Inbox;
use crate::link::{Link, lock};
use crate::reader::{Items, ReadSide, run_reader};
use crate::stats::{Counters, LinkStats};
use crate::writer::run_writer;

/// Bytes a send may encode while holding the link registry's read lock; bigger messages
/// are encoded after it is released.
const COPY_UNDER_LOCK: usize = 64 << 10;

/// The links of one middleware and the state their tasks share: the transport-neutral
/// half of a stream transport. See the [crate docs](crate) for how a transport uses it.
///
/// Made with [`LinkSet::new`] and shared as an `Arc` by the transport's handle, its
/// listener tasks and every link's reader and writer task. The transport calls
/// [`close`](Self::close) when its last handle goes (the tasks hold the set, so it is
/// not dropped before they end).
#[derive(Debug)]
pub struct LinkSet {
    pub(crate) config: LinkConfig,
    pub(crate) counters: Counters,
    pub(crate) shutdown: CancellationToken,
    /// Encoder of outbound messages (holds only the limits; shared by all senders).
    encoder: MessageCodec,
    /// Live links by peer id. foldhash (randomly seeded per process) instead of SipHash:
    /// every send looks its link up here, and the map is bounded by `max_peers`.
    links: RwLock<HashMap<PeerId, Arc<Link>, foldhash::fast::RandomState>>,
    slots: Arc<Semaphore>,
    /// Places of incoming connections whose handshake is unfinished
    /// ([`LinkConfig::max_handshakes`]).
    handshakes: Handshakes,
    next_id: AtomicU32,
    /// Set with `shutdown` (an atomic load is cheaper than the token's lock on every send).
    closed: AtomicBool,
    inbox: Inbox,
    /// The link that last delivered messages: a `recv` caller reads it directly.
    hot: Mutex<Option<Arc<Link>>>,
}

/// Hands a driven link's stream back to its reader task when dropped.
struct HandBack<'a>(&'a Link);

impl Drop for HandBack<'_> {
    fn drop(&mut self) {
        self.0.hand_back();
    }
}

/// A peer slot (one of [`LinkConfig::max_peers`]), taken with
/// [`LinkSet::take_slot`] before a connection is handshaken. It passes to the link
/// [`LinkSet::establish`] makes and is freed when that link goes down, or when the slot is
/// dropped (a failed dial or handshake).
#[derive(Debug)]
pub struct Slot(OwnedSemaphorePermit);

/// A live (or once live) link, as [`LinkSet::establish`] returns it: what a transport's
/// reconnect supervisor watches. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LinkHandle(Arc<Link>);

impl LinkHandle {
    /// The peer the link is registered under.
    pub fn peer(&self) -> &PeerId {
        &self.0.peer
    }

    /// The peer's endpoint (as the transport gave it to [`LinkSet::establish`]).
    pub fn remote(&self) -> &Endpoint {
        &self.0.remote
    }

    /// The link's id (the one its `LinkUp` and `LinkDown` carry).
    pub fn id(&self) -> LinkId {
        self.0.id
    }

    /// Whether we connected (`Connector`) or accepted (`Acceptor`) the link.
    pub fn role(&self) -> Role {
        self.0.role
    }

    /// Resolves when the link is down, its `LinkDown` was queued for `recv` (unless the
    /// set was closed: the link then ends as `Shutdown`, unreported) and it was
    /// unregistered: its peer id is free again.
    pub async fn finished(&self) {
        self.0.finished().await;
    }

    /// Why the link went down (`None` while it is up).
    pub fn cause(&self) -> Option<LinkDownCause> {
        self.0.cause()
    }
}

impl LinkSet {
    /// An empty set with `config`. Needs no runtime; [`establish`](Self::establish) and
    /// the async operations must run inside a tokio runtime.
    pub fn new(config: LinkConfig) -> Arc<Self> {
        Arc::new(Self {
            encoder: MessageCodec::new(config.limits),
            counters: Counters::default(),
            shutdown: CancellationToken::new(),
            closed: AtomicBool::new(false),
            links: RwLock::default(),
            // The builder bounds both by `Semaphore::MAX_PERMITS`.
            slots: Arc::new(Semaphore::new(config.max_peers)),
            handshakes: Handshakes::new(config.max_handshakes),
            next_id: AtomicU32::new(fastrand::u32(..)),
            inbox: Inbox::new(config.inbound_queue),
            hot: Mutex::new(None),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// Counters of refusals and losses (and the handshakes in progress).
    pub fn stats(&self) -> LinkStats {
        let pending = self.handshakes.pending();
        self.counters
            .snapshot(u64::try_from(pending).unwrap_or(u64::MAX))
    }

    /// Peers with a live link, in no particular order.
    pub fn peers(&self) -> Vec<PeerId> {
        self.links
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// A fresh id for a peer that announced none.
    fn generate_id(&self) -> PeerId {
        PeerId::generated(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// A peer slot, or `PeerLimit` (counted in
    /// [`peer_limit_refusals`](LinkStats::peer_limit_refusals)). Take it before dialling
    /// or handshaking, so that handshaking connections count against the limit.
    pub fn take_slot(&self) -> Result<Slot, MiddlewareError> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map(Slot)
            .map_err(|_| {
                Counters::bump(&self.counters.peer_limit_refusals);
                MiddlewareError::PeerLimit {
                    max: self.config.max_peers,
                }
            })
    }

    /// A place for an incoming connection's handshake. When
    /// [`LinkConfig::max_handshakes`] are in progress, the oldest of them gives way
    /// (its permit's [`evicted`](HandshakePermit::evicted) resolves; counted in
    /// [`handshakes_evicted`](LinkStats::handshakes_evicted)): a slowloris holding every
    /// place loses them to newcomers instead of keeping legitimate peers out. A listener
    /// takes it as soon as it accepts a connection, before any other work for it, holds
    /// it until [`establish`](Self::establish) returns, and closes the connection when
    /// it is evicted.
    pub fn begin_handshake(&self) -> HandshakePermit {
        let (permit, evicted) = self.handshakes.begin();
        if evicted {
            Counters::bump(&self.counters.handshakes_evicted);
        }
        permit
    }

    /// Makes a link of a fresh connection: runs the ZMTP handshake within the handshake
    /// timeout, names the peer, registers the link and spawns its reader and writer tasks
    /// (which report `LinkUp` first, and `LinkDown` last).
    ///
    /// * `reader`, `writer`: the two directions of the connection (a TCP socket's halves,
    ///   a QUIC bidirectional stream's receive and send sides).
    /// * `remote`: the peer's endpoint, reported in `LinkUp`.
    /// * `assigned`: the id of a peer that announces no identity (a reconnecting link
    ///   keeps its id); `None` generates one.
    /// * `certified`: the identity the transport authenticated (a TLS certificate's). The
    ///   peer must announce exactly it, or the link fails with
    ///   [`AuthError::PathMismatch`] (counted as a handshake failure, nothing registered).
    ///
    /// **Identity rule**: a peer that announces a non-empty identity that does not start
    /// with a zero byte is known by it; otherwise it gets `assigned` or a generated id. A
    /// second link claiming a peer id with a live link is refused
    /// ([`MiddlewareError::DuplicateIdentity`]); the live link is untouched.
    ///
    /// A peer refused for a ZMTP protocol error, a duplicate identity or an identity
    /// mismatch is told why with a ZMTP ERROR command (best effort, bounded by a short
    /// timeout). Counters: handshake failures and duplicates on refusal, `links_up` on
    /// success.
    #[allow(clippy::too_many_arguments)] // each is one fact of the connection
    pub async fn establish<R, W>(
        self: &Arc<Self>,
        mut reader: R,
        mut writer: W,
        remote: Endpoint,
        role: Role,
        slot: Slot,
        assigned: Option<PeerId>,
        certified: Option<PeerId>,
    ) -> Result<LinkHandle, MiddlewareError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        // An acceptor that binds the identity to a certificate reads the dialler's READY
        // before it sends its own: a dialler refused for its identity never sees a READY,
        // so it never takes the link for up (ZMTP peers send READY without waiting).
        let hold_ours = certified.is_some() && role == Role::Acceptor;
        let done = handshake(&self.config, &mut reader, &mut writer, hold_ours).await;
        let Handshaken {
            info,
            leftover,
            held,
        } = match done {
            Ok(done) => done,
            Err(err) => {
                Counters::bump(&self.counters.handshake_failures);
                drop(slot);
                // An ERROR is only ZMTP after our greeting.
                if let (MiddlewareError::Handshake(e), false) = (&err, hold_ours) {
                    refuse(&mut writer, &e.to_string()).await;
                }
                return Err(err);
            }
        };
        let announced = PeerId::new(info.identity.clone());
        let peer = match certified {
            Some(certified) => {
                if announced.as_ref().ok() != Some(&certified) {
                    Counters::bump(&self.counters.handshake_failures);
                    drop(slot);
                    if held.is_empty() {
                        refuse(&mut writer, "identity does not match the certificate").await;
                    }
                    let announced = match announced {
                        Ok(id) => id.to_string(),
                        Err(_) if info.identity.is_empty() => "no identity".to_owned(),
                        Err(_) => dms_core::text::printable_lossy(&info.identity),
                    };
                    return Err(MiddlewareError::Auth(AuthError::PathMismatch {
                        certified: certified.to_string(),
                        announced,
                    }));
                }
                certified
            }
            // Identities starting with a zero byte are ours to generate: a peer announcing
            // one is treated as announcing none, so it cannot take over a generated id.
            None => match announced {
                Ok(announced) if !announced.is_generated() => announced,
                _ => assigned.unwrap_or_else(|| self.generate_id()),
            },
        };
        // A handshake that finished after `close` registers nothing.
        self.check_open()?;
        if !held.is_empty() {
            let timeout = self.config.limits.handshake_timeout();
            match tokio::time::timeout(timeout, send(&mut writer, &held)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(MiddlewareError::Io(error)),
                Err(_) => return Err(MiddlewareError::HandshakeTimeout(timeout)),
            }
        }
        let mut codec = MessageCodec::new(self.config.limits);
        codec.set_prefix(Some(peer.to_frame()));
        let read = ReadSide::new(reader, leftover, codec, self.config.read_buffer);
        let link = Arc::new(Link::new(
            peer.clone(),
            remote,
            role,
            self.config.link_queue_bytes,
            self.shutdown.child_token(),
            slot.0,
            read,
            Box::new(writer),
        ));
        if !self.register(&link) {
            let mut writer =
                std::mem::replace(&mut *lock(&link.write), Box::new(tokio::io::sink()));
            drop(link); // frees the slot
            Counters::bump(&self.counters.duplicate_identities);
            refuse(&mut writer, "duplicate identity").await;
            return Err(MiddlewareError::DuplicateIdentity(peer));
        }
        if self.is_closed() {
            // `close` ran between the check above and the registration.
            self.unregister(&link);
            return Err(MiddlewareError::Closed);
        }
        Counters::bump(&self.counters.links_up);
        debug!(%peer, ?role, remote = %link.remote, "link up");
        tokio::spawn(run_writer(self.clone(), link.clone()));
        tokio::spawn(run_reader(self.clone(), link.clone()));
        Ok(LinkHandle(link))
    }

    /// Registers a link under its peer id; false if that id has a live link.
    fn register(&self, link: &Arc<Link>) -> bool {
        let mut links = self.links.write().unwrap_or_else(PoisonError::into_inner);
        if links.contains_key(&link.peer) {
            return false;
        }
        links.insert(link.peer.clone(), link.clone());
        true
    }

    /// Removes `link` (and only it) from the registry.
    pub(crate) fn unregister(&self, link: &Arc<Link>) {
        {
            let mut hot = lock(&self.hot);
            if hot.as_ref().is_some_and(|hot| Arc::ptr_eq(hot, link)) {
                *hot = None;
            }
        }
        let mut links = self.links.write().unwrap_or_else(PoisonError::into_inner);
        if links
            .get(&link.peer)
            .is_some_and(|current| Arc::ptr_eq(current, link))
        {
            links.remove(&link.peer);
        }
    }

    fn link(&self, peer: &[u8]) -> Option<Arc<Link>> {
        self.links
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(peer)
            .cloned()
    }

    /// Queues items for `recv` in order, waiting for room (readers stop reading
    /// meanwhile); `items` is left empty.
    pub(crate) async fn emit_all(&self, items: &mut Vec<Incoming>) {
        self.inbox.push_all(items).await;
    }

    /// Reports a refused connection (`Incoming::Refused`) if the inbound queue has room;
    /// counts it in [`events_dropped`](LinkStats::events_dropped) otherwise. For a
    /// listener whose incoming connection failed to become a link.
    pub fn emit_refused(&self, endpoint: Endpoint, error: MiddlewareError) {
        let item = Incoming::Refused {
            endpoint,
            error: Arc::new(error),
        };
        if self.inbox.try_push(item).is_err() {
            Counters::bump(&self.counters.events_dropped);
        }
    }

    /// Counts one reconnect attempt of a transport's supervisor (in
    /// [`reconnect_attempts`](LinkStats::reconnect_attempts)).
    pub fn count_reconnect_attempt(&self) {
        Counters::bump(&self.counters.reconnect_attempts);
    }

    /// Whether the set was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// `Err(Closed)` once the set is closed (for `bind` and `connect`).
    pub fn check_open(&self) -> Result<(), MiddlewareError> {
        if self.is_closed() {
            Err(MiddlewareError::Closed)
        } else {
            Ok(())
        }
    }

    /// Closes the set: every link stops (reporting no `LinkDown`), `recv` returns
    /// `Closed`, and so do sends. Listener loops stop on [`closed`](Self::closed).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.shutdown.cancel();
        // Waiting receivers look again and see the set closed.
        self.inbox.readable().notify_waiters();
    }

    /// Resolves once the set is closed (for a listener's accept loop).
    pub async fn closed(&self) {
        self.shutdown.cancelled().await;
    }

    /// A child of the token [`close`](Self::close) cancels, to stop a transport's own
    /// tasks (a reconnect supervisor) with the set. A child: cancelling it stops only
    /// those tasks, never the set behind the back of its `closed` flag.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.child_token()
    }

    /// Runs `f` with the link `msg` goes to (its first frame names the peer) and `msg`,
    /// under the registry's read lock: no reference count traffic on the hot path. With
    /// `only`, the peer's live link must be that one.
    fn route<T>(
        &self,
        only: Option<LinkId>,
        msg: Multipart,
        f: impl FnOnce(&Arc<Link>, Multipart) -> T,
    ) -> Result<T, SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        let links = self.links.read().unwrap_or_else(PoisonError::into_inner);
        let Some(first) = msg.first() else {
            return Err(SendError::NoPeerFrame);
        };
        match links.get(first.as_ref()) {
            Some(link) if only.is_none_or(|only| only == link.id) => Ok(f(link, msg)),
            _ => {
                drop(links);
                match PeerId::new(first.clone()) {
                    Ok(peer) => Err(SendError::UnknownPeer {
                        peer,
                        msg: Box::new(msg),
                    }),
                    Err(_) => Err(SendError::NoPeerFrame),
                }
            }
        }
    }

    /// Waits for room on `link` and queues `msg` (the slow path of `send`, boxed so that
    /// the `send` future stays small: a future is copied whole when it is awaited).
    async fn send_when_room(&self, link: Arc<Link>, mut msg: Multipart) -> Result<(), SendError> {
        loop {
            let room = link.room().notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match link.try_queue(&self.encoder, msg) {
                Err(SendError::Full { msg: back, .. }) => msg = *back,
                done => return done,
            }
            tokio::select! {
                () = room => {}
                () = self.shutdown.cancelled() => return Err(SendError::Closed),
            }
        }
    }

    /// [`MessageMiddleware::try_send`](dms_core::MessageMiddleware::try_send): encodes
    /// `msg` (peer frame first) into its link's buffer if it has room.
    #[inline] // the transport's trait impl is a one-line forward: no extra call
    pub fn try_send(&self, msg: Multipart) -> Result<(), SendError> {
        self.queue(None, msg)
    }

    /// [`MessageMiddleware::try_send_on`](dms_core::MessageMiddleware::try_send_on): as
    /// [`try_send`](Self::try_send), if the peer's live link is `link`.
    #[inline] // the transport's trait impl is a one-line forward: no extra call
    pub fn try_send_on(&self, link: LinkId, msg: Multipart) -> Result<(), SendError> {
        self.queue(Some(link), msg)
    }

    #[inline]
    fn queue(&self, only: Option<LinkId>, msg: Multipart) -> Result<(), SendError> {
        if msg.payload_len() > COPY_UNDER_LOCK {
            // A big copy must not hold the registry: a waiting (un)registration would
            // stall every other sender behind it.
            let (link, msg) = self.route(only, msg, |link, msg| (link.clone(), msg))?;
            return link.try_queue(&self.encoder, msg);
        }
        let direct = self.route(only, msg, |link, msg| {
            let bytes = link.try_queue_deferred(&self.encoder, msg)?;
            Ok(bytes.map(|bytes| (link.clone(), bytes)))
        })??;
        if let Some((link, bytes)) = direct {
            // An idle link: written from here, after the registry's lock is released.
            link.write_directly(bytes);
        }
        Ok(())
    }

    /// [`MessageMiddleware::try_send_urgent`](dms_core::MessageMiddleware::try_send_urgent):
    /// as [`try_send`](Self::try_send), into the link's urgent lane (written before data
    /// and between chunks of it).
    #[inline] // the transport's trait impl is a one-line forward: no extra call
    pub fn try_send_urgent(&self, msg: Multipart) -> Result<(), SendError> {
        self.route(None, msg, |link, msg| {
            link.try_queue_urgent(&self.encoder, msg)
        })?
    }

    /// [`MessageMiddleware::try_send_urgent_on`](dms_core::MessageMiddleware::try_send_urgent_on):
    /// as [`try_send_urgent`](Self::try_send_urgent), if the peer's live link is `link`.
    #[inline] // the transport's trait impl is a one-line forward: no extra call
    pub fn try_send_urgent_on(&self, link: LinkId, msg: Multipart) -> Result<(), SendError> {
        self.route(Some(link), msg, |link, msg| {
            link.try_queue_urgent(&self.encoder, msg)
        })?
    }

    /// [`MessageMiddleware::send`](dms_core::MessageMiddleware::send): as
    /// [`try_send`](Self::try_send), waiting for room while the link's buffer is full.
    pub async fn send(&self, msg: Multipart) -> Result<(), SendError> {
        match self.try_send(msg) {
            Err(SendError::Full { msg, .. }) => {
                let (link, msg) = self.route(None, *msg, |link, msg| (link.clone(), msg))?;
                Box::pin(self.send_when_room(link, msg)).await
            }
            done => done,
        }
    }

    /// [`MessageMiddleware::recv`](dms_core::MessageMiddleware::recv): the next message
    /// or event of any link.
    ///
    /// While nothing is queued, the caller reads the link it last heard from itself (the
    /// stream then wakes the caller directly; see the crate's "Hot path"). So a pending
    /// `recv` future is to be polled when woken, or dropped: one kept aside unpolled would
    /// hold that link's reading (its ZMTP PINGs unanswered) until it is polled or dropped.
    pub async fn recv(&self) -> Result<Incoming, MiddlewareError> {
        let mut next = None;
        self.receive(&mut next, 1).await?;
        next.ok_or(MiddlewareError::Closed)
    }

    /// [`MessageMiddleware::recv_many`](dms_core::MessageMiddleware::recv_many): moves up
    /// to `limit` items (at least one) into `items` under one lock, or as many as one
    /// read of the hot link decodes (see [`recv`](Self::recv)).
    pub async fn recv_many(
        &self,
        items: &mut Vec<Incoming>,
        limit: usize,
    ) -> Result<usize, MiddlewareError> {
        let before = items.len();
        self.receive(items, limit.max(1)).await?;
        Ok(items.len() - before)
    }

    /// Waits until `out` got between 1 and `max` items: from the inbox, or straight from
    /// the hot link's stream when nothing is queued.
    async fn receive(&self, out: &mut impl Items, max: usize) -> Result<(), MiddlewareError> {
        let hot = self.hot_link();
        // Hands the hot link's stream back to its reader task however this ends.
        let _hand_back = hot.as_deref().map(HandBack);
        loop {
            // Enabled before looking: an item queued or a `close` after the look wakes it.
            let mut readable = pin!(self.inbox.readable().notified());
            readable.as_mut().enable();
            if self.inbox.try_take_each(max, |item| out.put(item)) > 0 {
                return Ok(());
            }
            if self.is_closed() {
                return Err(MiddlewareError::Closed);
            }
            let start = out.count();
            poll_fn(|cx| {
                if let Some(link) = &hot {
                    let drove = link.poll_drive(cx, out, max, || self.inbox.is_empty());
                    if drove.is_ready() {
                        return Poll::Ready(());
                    }
                }
                readable.as_mut().poll(cx)
            })
            .await;
            if out.count() > start {
                return Ok(());
            }
            if let Some(link) = &hot {
                // Nothing for us: reading the hot link ended (its reader task takes it
                // down), or the inbox woke us and another consumer took what was there.
                // The stream goes back to its reader task until the next look.
                link.hand_back();
            }
        }
    }

    /// The link the application last heard from (a caller may read it directly).
    fn hot_link(&self) -> Option<Arc<Link>> {
        lock(&self.hot).clone()
    }

    /// Notes that `link` delivered messages (its reader task calls this per batch).
    pub(crate) fn heard_from(&self, link: &Arc<Link>) {
        let mut hot = lock(&self.hot);
        if !hot.as_ref().is_some_and(|hot| Arc::ptr_eq(hot, link)) {
            *hot = Some(link.clone());
        }
    }

    /// [`MessageMiddleware::pause_reading`](dms_core::MessageMiddleware::pause_reading):
    /// stops or resumes reading `peer`'s link (no effect on an unknown peer).
    pub fn pause_reading(&self, peer: &PeerId, paused: bool) {
        if let Some(link) = self.link(peer.as_bytes()) {
            if paused {
                Counters::bump(&self.counters.reads_paused);
            }
            link.pause_reading(paused);
        }
    }

    /// [`MessageMiddleware::disconnect`](dms_core::MessageMiddleware::disconnect): writes
    /// what is queued to `peer`, then closes its link (`LinkDown` with `Disconnected`). A
    /// peer that does not read within [`LinkConfig::drain_timeout`] loses the rest
    /// (counted). `UnknownPeer` if `peer` has no live link (a transport with a reconnect
    /// supervisor stops it first, and may treat that as done).
    pub async fn disconnect(&self, peer: &PeerId) -> Result<(), MiddlewareError> {
        match self.link(peer.as_bytes()) {
            Some(link) => self.drain(&link).await,
            None => Err(MiddlewareError::UnknownPeer(peer.clone())),
        }
    }

    /// [`MessageMiddleware::disconnect_link`](dms_core::MessageMiddleware::disconnect_link):
    /// as [`disconnect`](Self::disconnect), if `peer`'s live link is `link`.
    pub async fn disconnect_link(
        &self,
        peer: &PeerId,
        link: LinkId,
    ) -> Result<(), MiddlewareError> {
        match self.link(peer.as_bytes()) {
            Some(live) if live.id == link => self.drain(&live).await,
            _ => Err(MiddlewareError::UnknownPeer(peer.clone())),
        }
    }

    /// Closes `link` after writing what is queued on it, within the drain timeout.
    async fn drain(&self, link: &Arc<Link>) -> Result<(), MiddlewareError> {
        link.start_draining();
        tokio::select! {
            () = link.finished() => Ok(()),
            () = tokio::time::sleep(self.config.drain_timeout) => {
                // The peer does not read: close without the rest (counted).
                link.fail(self, LinkDownCause::Disconnected).await;
                Ok(())
            }
            () = self.shutdown.cancelled() => Err(MiddlewareError::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(identity: Option<&'static str>) -> Arc<LinkSet> {
        let mut config = LinkConfig::builder();
        if let Some(identity) = identity {
            config = config.identity(identity);
        }
        LinkSet::new(config.build().unwrap_or_else(|e| panic!("{e}")))
    }

    fn id(name: &'static str) -> PeerId {
        PeerId::try_from(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Establishes a link between `client` and `server` over a pipe; the server binds it
    /// to `certified`.
    async fn pair(
        client: &Arc<LinkSet>,
        server: &Arc<LinkSet>,
        certified: Option<PeerId>,
    ) -> (
        Result<LinkHandle, MiddlewareError>,
        Result<LinkHandle, MiddlewareError>,
    ) {
        let (client_end, server_end) = tokio::io::duplex(64 << 10);
        let (client_read, client_write) = tokio::io::split(client_end);
        let (server_read, server_write) = tokio::io::split(server_end);
        let endpoint: Endpoint = "mem://pipe".parse().unwrap_or_else(|_| unreachable!());
        let client_slot = client.take_slot().unwrap_or_else(|e| panic!("{e}"));
        let server_slot = server.take_slot().unwrap_or_else(|e| panic!("{e}"));
        tokio::join!(
            client.establish(
                client_read,
                client_write,
                endpoint.clone(),
                Role::Connector,
                client_slot,
                None,
                None,
            ),
            server.establish(
                server_read,
                server_write,
                endpoint,
                Role::Acceptor,
                server_slot,
                None,
                certified,
            ),
        )
    }

    #[test]
    fn handshakes_beyond_the_bound_evict_the_oldest_and_are_counted() {
        let config = LinkConfig::builder().max_handshakes(2).build();
        let set = LinkSet::new(config.unwrap_or_else(|e| panic!("{e}")));
        let first = set.begin_handshake();
        let second = set.begin_handshake();
        let third = set.begin_handshake();
        let fourth = set.begin_handshake();
        let stats = set.stats();
        assert_eq!((stats.handshakes_evicted, stats.pending_handshakes), (2, 2));
        drop((first, second));
        assert_eq!(
            set.stats().pending_handshakes,
            2,
            "the evicted held no place"
        );
        drop(third);
        assert_eq!(set.stats().pending_handshakes, 1);
        drop(fourth);
        let stats = set.stats();
        assert_eq!((stats.handshakes_evicted, stats.pending_handshakes), (2, 0));
        // Absurd bounds are clamped, not a panic in `LinkSet::new`.
        let huge = LinkConfig::builder()
            .max_handshakes(usize::MAX)
            .max_peers(usize::MAX)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let set = LinkSet::new(huge);
        assert_eq!(set.stats().pending_handshakes, 0);
        assert_eq!(LinkConfig::default().max_handshakes(), 256);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn closing_the_set_finishes_its_links() {
        let (client, server) = (set(Some("alice")), set(Some("bob")));
        let (to_server, _to_client) = pair(&client, &server, None).await;
        let to_server = to_server.unwrap_or_else(|e| panic!("{e}"));
        client.close();
        // A transport waiting on `finished` (QUIC closes the connection then) is not left
        // hanging, and the link leaves the registry.
        tokio::time::timeout(std::time::Duration::from_secs(10), to_server.finished())
            .await
            .unwrap_or_else(|_| panic!("finished never resolved after close"));
        assert!(matches!(to_server.cause(), Some(LinkDownCause::Shutdown)));
        assert!(client.peers().is_empty());
        // A handshake that completes after `close` registers nothing.
        let (late, _) = pair(&client, &set(Some("carol")), None).await;
        assert!(matches!(late, Err(MiddlewareError::Closed)), "{late:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_certified_peer_announcing_its_identity_is_known_by_it() {
        let (client, server) = (set(Some("alice")), set(None));
        let (_to_server, to_client) = pair(&client, &server, Some(id("alice"))).await;
        let to_client = to_client.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(to_client.peer(), &id("alice"));
        assert_eq!(server.peers(), vec![id("alice")]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_peer_announcing_another_identity_than_its_certificate_is_refused() {
        let (client, server) = (set(Some("mallory")), set(None));
        let (to_server, to_client) = pair(&client, &server, Some(id("alice"))).await;
        match to_client {
            Err(MiddlewareError::Auth(AuthError::PathMismatch {
                certified,
                announced,
            })) => {
                assert_eq!(certified, "alice");
                assert_eq!(announced, "mallory");
            }
            other => panic!("expected PathMismatch, got {other:?}"),
        }
        assert!(server.peers().is_empty());
        assert_eq!(server.stats().handshake_failures, 1);
        assert_eq!(server.stats().links_up, 0);
        // The acceptor checked the READY before sending its own: the refused client never
        // had a link up (a transport tells it why: QUIC with a close code).
        assert!(
            to_server.is_err(),
            "the refused client saw a link: {to_server:?}"
        );
        assert!(client.peers().is_empty());
        assert_eq!(client.stats().links_up, 0);
        // A peer announcing no identity does not match a certificate either.
        let anonymous = set(None);
        let (_, to_anonymous) = pair(&anonymous, &server, Some(id("alice"))).await;
        assert!(matches!(
            to_anonymous,
            Err(MiddlewareError::Auth(AuthError::PathMismatch { .. }))
        ));
        // Refused links hold no slot.
        assert_eq!(server.slots.available_permits(), server.config.max_peers);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_second_link_under_a_live_identity_is_refused() {
        let server = set(None);
        let (first, second) = (set(Some("bob")), set(Some("bob")));
        let (_, live) = pair(&first, &server, None).await;
        assert!(live.is_ok());
        let (_, duplicate) = pair(&second, &server, None).await;
        assert!(matches!(
            duplicate,
            Err(MiddlewareError::DuplicateIdentity(peer)) if peer == id("bob")
        ));
        assert_eq!(server.stats().duplicate_identities, 1);
        assert_eq!(server.peers(), vec![id("bob")]);
    }
}

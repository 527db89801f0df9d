//! [`TcpMiddleware`]: the public handle and the state its tasks share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use dms_core::wire::MessageCodec;
use dms_core::{
    Endpoint, Incoming, LinkDownCause, MessageMiddleware, MiddlewareError, Multipart, PeerId,
    SendError,
};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::TcpConfig;
use crate::address::{SCHEME, endpoint_of, host_port};
use crate::connection::{accept_loop, dial, supervise};
use crate::inbox::Inbox;
use crate::link::Link;
use crate::stats::{Counters, TcpStats};

/// Bytes a send may encode while holding the link registry's read lock; bigger messages
/// are encoded after it is released.
const COPY_UNDER_LOCK: usize = 64 << 10;

/// State shared by the handle and every task of one middleware.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: TcpConfig,
    pub(crate) counters: Counters,
    pub(crate) shutdown: CancellationToken,
    /// Encoder of outbound messages (holds only the limits; shared by all senders).
    encoder: MessageCodec,
    /// Live links by peer id. foldhash (randomly seeded per process) instead of SipHash:
    /// every send looks its link up here, and the map is bounded by `max_peers`.
    links: RwLock<HashMap<PeerId, Arc<Link>, foldhash::fast::RandomState>>,
    supervisors: Mutex<HashMap<PeerId, Arc<CancellationToken>>>,
    slots: Arc<Semaphore>,
    next_id: AtomicU32,
    /// Set with `shutdown` (an atomic load is cheaper than the token's lock on every send).
    closed: AtomicBool,
    inbox: Inbox,
}

impl Shared {
    /// A fresh id for a peer that announced none.
    pub(crate) fn generate_id(&self) -> PeerId {
        PeerId::generated(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// A peer slot, or `PeerLimit` (counted).
    pub(crate) fn take_slot(&self) -> Result<OwnedSemaphorePermit, MiddlewareError> {
        self.slots.clone().try_acquire_owned().map_err(|_| {
            Counters::bump(&self.counters.peer_limit_refusals);
            MiddlewareError::PeerLimit {
                max: self.config.max_peers,
            }
        })
    }

    /// Registers a link under its peer id; false if that id has a live link.
    pub(crate) fn register(&self, link: &Arc<Link>) -> bool {
        let mut links = self.links.write().unwrap_or_else(PoisonError::into_inner);
        if links.contains_key(&link.peer) {
            return false;
        }
        links.insert(link.peer.clone(), link.clone());
        true
    }

    /// Removes `link` (and only it) from the registry.
    pub(crate) fn unregister(&self, link: &Arc<Link>) {
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

    /// Records the supervisor of a connected link under its current peer id (replacing
    /// the entry it had under an earlier id).
    pub(crate) fn track_supervisor(&self, peer: &PeerId, stop: &Arc<CancellationToken>) {
        let mut supervisors = self
            .supervisors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        supervisors.retain(|_, token| !Arc::ptr_eq(token, stop) && !token.is_cancelled());
        supervisors.insert(peer.clone(), stop.clone());
    }

    /// Queues items for `recv` in order, waiting for room (readers stop reading
    /// meanwhile); `items` is left empty.
    pub(crate) async fn emit_all(&self, items: &mut Vec<Incoming>) {
        self.inbox.push_all(items).await;
    }

    /// Whether the middleware was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the middleware: every link and listener stops.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.shutdown.cancel();
    }

    /// Reports a refused connection if the inbound queue has room; counts it otherwise.
    pub(crate) fn emit_refused(&self, endpoint: Endpoint, error: MiddlewareError) {
        let item = Incoming::Refused {
            endpoint,
            error: Arc::new(error),
        };
        if self.inbox.try_push(item).is_err() {
            Counters::bump(&self.counters.events_dropped);
        }
    }
}

/// A [`MessageMiddleware`] over TCP speaking ZMTP 3.1. See the [crate docs](crate) for the
/// hot path and the identity rule.
///
/// Cheap to clone; every clone drives the same links. When the last clone is dropped (or
/// [`close`](Self::close) is called) every link and listener is closed.
#[derive(Debug, Clone)]
pub struct TcpMiddleware {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

/// Shuts the middleware down when the last handle goes.
#[derive(Debug)]
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl TcpMiddleware {
    /// A middleware with `config`. Must be used inside a tokio runtime.
    pub fn new(config: TcpConfig) -> Self {
        let shared = Arc::new(Shared {
            encoder: MessageCodec::new(config.limits),
            counters: Counters::default(),
            shutdown: CancellationToken::new(),
            closed: AtomicBool::new(false),
            links: RwLock::default(),
            supervisors: Mutex::default(),
            slots: Arc::new(Semaphore::new(config.max_peers)),
            next_id: AtomicU32::new(fastrand::u32(..)),
            inbox: Inbox::new(config.inbound_queue),
            config,
        });
        Self {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TcpConfig {
        &self.shared.config
    }

    /// Counters of refusals and losses.
    pub fn stats(&self) -> TcpStats {
        self.shared.counters.snapshot()
    }

    /// Peers with a live link, in no particular order.
    pub fn peers(&self) -> Vec<PeerId> {
        self.shared
            .links
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    fn check_open(&self) -> Result<(), MiddlewareError> {
        if self.shared.is_closed() {
            Err(MiddlewareError::Closed)
        } else {
            Ok(())
        }
    }

    /// Runs `f` with the link `msg` goes to (its first frame names the peer) and `msg`,
    /// under the registry's read lock: no reference count traffic on the hot path.
    fn route<R>(
        &self,
        msg: Multipart,
        f: impl FnOnce(&Arc<Link>, Multipart) -> R,
    ) -> Result<R, SendError> {
        if self.shared.is_closed() {
            return Err(SendError::Closed);
        }
        let links = self
            .shared
            .links
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(first) = msg.first() else {
            return Err(SendError::NoPeerFrame);
        };
        match links.get(first.as_ref()) {
            Some(link) => Ok(f(link, msg)),
            None => {
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
            match link.try_queue(&self.shared.encoder, msg) {
                Err(SendError::Full { msg: back, .. }) => msg = *back,
                done => return done,
            }
            tokio::select! {
                () = room => {}
                () = self.shared.shutdown.cancelled() => return Err(SendError::Closed),
            }
        }
    }
}

impl MessageMiddleware for TcpMiddleware {
    fn scheme(&self) -> &'static str {
        SCHEME
    }

    async fn bind(&self, endpoint: &Endpoint) -> Result<Endpoint, MiddlewareError> {
        self.check_open()?;
        let listener = TcpListener::bind(host_port(endpoint)?).await?;
        let bound = endpoint_of(listener.local_addr()?);
        debug!(%bound, "listening");
        tokio::spawn(accept_loop(self.shared.clone(), listener));
        Ok(bound)
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<PeerId, MiddlewareError> {
        self.check_open()?;
        let link = dial(&self.shared, endpoint, None).await?;
        let peer = link.peer.clone();
        if !self.shared.config.redial {
            return Ok(peer);
        }
        let stop = Arc::new(self.shared.shutdown.child_token());
        self.shared.track_supervisor(&peer, &stop);
        tokio::spawn(supervise(self.shared.clone(), endpoint.clone(), link, stop));
        Ok(peer)
    }

    fn try_send(&self, msg: Multipart) -> Result<(), SendError> {
        if msg.payload_len() > COPY_UNDER_LOCK {
            // A big copy must not hold the registry: a waiting (un)registration would
            // stall every other sender behind it.
            let (link, msg) = self.route(msg, |link, msg| (link.clone(), msg))?;
            return link.try_queue(&self.shared.encoder, msg);
        }
        self.route(msg, |link, msg| link.try_queue(&self.shared.encoder, msg))?
    }

    fn try_send_urgent(&self, msg: Multipart) -> Result<(), SendError> {
        self.route(msg, |link, msg| {
            link.try_queue_urgent(&self.shared.encoder, msg)
        })?
    }

    async fn send(&self, msg: Multipart) -> Result<(), SendError> {
        match self.try_send(msg) {
            Err(SendError::Full { msg, .. }) => {
                let (link, msg) = self.route(*msg, |link, msg| (link.clone(), msg))?;
                Box::pin(self.send_when_room(link, msg)).await
            }
            done => done,
        }
    }

    async fn recv(&self) -> Result<Incoming, MiddlewareError> {
        tokio::select! {
            biased;
            item = self.shared.inbox.take_one() => item.ok_or(MiddlewareError::Closed),
            () = self.shared.shutdown.cancelled() => Err(MiddlewareError::Closed),
        }
    }

    async fn recv_many(
        &self,
        items: &mut Vec<Incoming>,
        limit: usize,
    ) -> Result<usize, MiddlewareError> {
        tokio::select! {
            biased;
            taken = self.shared.inbox.take(items, limit) => Ok(taken),
            () = self.shared.shutdown.cancelled() => Err(MiddlewareError::Closed),
        }
    }

    fn close(&self) {
        self.shared.close();
    }

    async fn disconnect(&self, peer: &PeerId) -> Result<(), MiddlewareError> {
        let stop = self
            .shared
            .supervisors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(peer);
        if let Some(stop) = &stop {
            stop.cancel();
        }
        match self.shared.link(peer.as_bytes()) {
            Some(link) => {
                link.start_draining();
                tokio::select! {
                    () = link.finished() => Ok(()),
                    () = tokio::time::sleep(self.shared.config.drain_timeout) => {
                        // The peer does not read: close without the rest (counted).
                        link.fail(&self.shared, LinkDownCause::Disconnected).await;
                        Ok(())
                    }
                    () = self.shared.shutdown.cancelled() => Err(MiddlewareError::Closed),
                }
            }
            None if stop.is_some() => Ok(()),
            None => Err(MiddlewareError::UnknownPeer(peer.clone())),
        }
    }
}

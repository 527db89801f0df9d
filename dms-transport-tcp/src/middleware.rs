//! [`TcpMiddleware`]: the public handle and the state its tasks share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use dms_core::wire::MessageCodec;
use dms_core::{
    Endpoint, Incoming, LinkDownCause, MessageMiddleware, MiddlewareError, Multipart, PeerId,
    SendError,
};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::TcpConfig;
use crate::address::{SCHEME, endpoint_of, host_port};
use crate::connection::{accept_loop, dial, supervise};
use crate::link::Link;
use crate::stats::{Counters, TcpStats};

/// State shared by the handle and every task of one middleware.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: TcpConfig,
    pub(crate) counters: Counters,
    pub(crate) shutdown: CancellationToken,
    /// Encoder of outbound messages (holds only the limits; shared by all senders).
    encoder: MessageCodec,
    links: RwLock<HashMap<PeerId, Arc<Link>>>,
    supervisors: Mutex<HashMap<PeerId, Arc<CancellationToken>>>,
    slots: Arc<Semaphore>,
    next_id: AtomicU32,
    inbound_tx: mpsc::Sender<Incoming>,
    inbound_rx: tokio::sync::Mutex<mpsc::Receiver<Incoming>>,
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

    /// Queues an item for `recv`, waiting for room (readers stop reading meanwhile).
    pub(crate) async fn emit(&self, item: Incoming) {
        // The receiver lives as long as `self`: sending only fails during teardown.
        let _ = self.inbound_tx.send(item).await;
    }

    /// Reports a refused connection if the inbound queue has room; counts it otherwise.
    pub(crate) fn emit_refused(&self, endpoint: Endpoint, error: MiddlewareError) {
        let item = Incoming::Refused {
            endpoint,
            error: Arc::new(error),
        };
        if self.inbound_tx.try_send(item).is_err() {
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
struct Owner(CancellationToken);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl TcpMiddleware {
    /// A middleware with `config`. Must be used inside a tokio runtime.
    pub fn new(config: TcpConfig) -> Self {
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_queue);
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            encoder: MessageCodec::new(config.limits),
            counters: Counters::default(),
            shutdown: shutdown.clone(),
            links: RwLock::default(),
            supervisors: Mutex::default(),
            slots: Arc::new(Semaphore::new(config.max_peers)),
            next_id: AtomicU32::new(fastrand::u32(..)),
            inbound_tx,
            inbound_rx: tokio::sync::Mutex::new(inbound_rx),
            config,
        });
        Self {
            shared,
            _owner: Arc::new(Owner(shutdown)),
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

    /// Closes every link and listener at once (queued data is not flushed; use
    /// [`disconnect`](MessageMiddleware::disconnect) per peer for that).
    pub fn close(&self) {
        self.shared.shutdown.cancel();
    }

    fn check_open(&self) -> Result<(), MiddlewareError> {
        if self.shared.shutdown.is_cancelled() {
            Err(MiddlewareError::Closed)
        } else {
            Ok(())
        }
    }

    fn route(&self, msg: Multipart) -> Result<(Arc<Link>, Multipart), SendError> {
        if self.shared.shutdown.is_cancelled() {
            return Err(SendError::Closed);
        }
        let Some(first) = msg.first() else {
            return Err(SendError::NoPeerFrame);
        };
        match self.shared.link(first) {
            Some(link) => Ok((link, msg)),
            None => match PeerId::new(first.clone()) {
                Ok(peer) => Err(SendError::UnknownPeer {
                    peer,
                    msg: Box::new(msg),
                }),
                Err(_) => Err(SendError::NoPeerFrame),
            },
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
        let stop = Arc::new(self.shared.shutdown.child_token());
        self.shared.track_supervisor(&peer, &stop);
        tokio::spawn(supervise(self.shared.clone(), endpoint.clone(), link, stop));
        Ok(peer)
    }

    fn try_send(&self, msg: Multipart) -> Result<(), SendError> {
        let (link, msg) = self.route(msg)?;
        link.try_queue(&self.shared.encoder, msg)
    }

    async fn send(&self, msg: Multipart) -> Result<(), SendError> {
        let (link, mut msg) = self.route(msg)?;
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

    async fn recv(&self) -> Result<Incoming, MiddlewareError> {
        let mut inbound = tokio::select! {
            inbound = self.shared.inbound_rx.lock() => inbound,
            () = self.shared.shutdown.cancelled() => return Err(MiddlewareError::Closed),
        };
        tokio::select! {
            biased;
            item = inbound.recv() => item.ok_or(MiddlewareError::Closed),
            () = self.shared.shutdown.cancelled() => Err(MiddlewareError::Closed),
        }
    }

    async fn recv_many(
        &self,
        items: &mut Vec<Incoming>,
        limit: usize,
    ) -> Result<usize, MiddlewareError> {
        let mut inbound = tokio::select! {
            inbound = self.shared.inbound_rx.lock() => inbound,
            () = self.shared.shutdown.cancelled() => return Err(MiddlewareError::Closed),
        };
        tokio::select! {
            biased;
            taken = inbound.recv_many(items, limit.max(1)) => match taken {
                0 => Err(MiddlewareError::Closed),
                taken => Ok(taken),
            },
            () = self.shared.shutdown.cancelled() => Err(MiddlewareError::Closed),
        }
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

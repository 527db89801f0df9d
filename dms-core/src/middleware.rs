//! [`MessageMiddleware`]: moving multipart messages to and from adjacent peers.
//!
//! One trait, three media: TCP (ZMTP 3.1 on a byte stream), QUIC (the same frames on a
//! bidirectional stream) and shared memory (the same frames in ring records). The trait
//! has ROUTER semantics, like a ZeroMQ ROUTER socket:
//!
//! - the first frame of every message sent names the adjacent peer; the middleware strips
//!   it and writes the rest to that peer's link;
//! - every message received has the sending peer's id put in front;
//! - links coming up and going down are reported in the same ordered stream as messages,
//!   so a `LinkDown` follows the last message of that link;
//! - every link has a [`LinkId`] of its own: a peer that links again (it reconnected,
//!   restarted, or came back from a freeze) does so on a new link, and what was meant
//!   for the old one can be sent [on it](MessageMiddleware::try_send_on) so that it never
//!   reaches the new one.
//!
//! Nothing is buffered without bound: a full link hands the message back
//! ([`SendError::Full`] from [`try_send`](MessageMiddleware::try_send)) or makes
//! [`send`](MessageMiddleware::send) wait; a message for a peer that has no link is an
//! error ([`SendError::UnknownPeer`]), never a silent drop.

use std::fmt;
use std::future::Future;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::wire::{HandshakeError, WireError};
use crate::{AuthError, Endpoint, EndpointError, Multipart, PeerId};

/// Which side opened a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// We accepted it on a bound endpoint.
    Acceptor,
    /// We connected to the peer's endpoint.
    Connector,
}

/// One link: unique in the process, never reused. A peer has at most one live link per
/// middleware, but a new one each time it links again, so a `LinkId` tells a message or
/// a close meant for a peer's old link from one for its current link.
///
/// ```
/// use dms_core::LinkId;
///
/// let (a, b) = (LinkId::next(), LinkId::next());
/// assert_ne!(a, b);
/// assert!(b.get() > a.get());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(NonZeroU64);

impl LinkId {
    /// A fresh id (for a transport making a link).
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        // 2^64 links would take millennia at a billion links a second.
        Self(NonZeroU64::new(id).unwrap_or(NonZeroU64::MIN))
    }

    /// The number (for logs and metrics).
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link#{}", self.0)
    }
}

/// Why a link went down.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LinkDownCause {
    /// We closed it with [`MessageMiddleware::disconnect`], after flushing.
    #[error("disconnected locally")]
    Disconnected,
    /// The peer closed the connection.
    #[error("closed by the peer")]
    ClosedByPeer,
    /// The peer refused us with a ZMTP ERROR command.
    #[error("refused by the peer: {0}")]
    Refused(String),
    /// The peer broke the wire protocol (its bytes are hostile or corrupt).
    #[error("protocol violation: {0}")]
    Protocol(#[from] WireError),
    /// An I/O error on the connection.
    #[error("i/o error: {0}")]
    Io(Arc<std::io::Error>),
    /// The middleware was closed.
    #[error("middleware closed")]
    Shutdown,
}

/// What [`MessageMiddleware::recv`] yields, in order.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Incoming {
    /// A message; its first frame is the sending peer's id.
    Message(Multipart),
    /// A link completed its handshake; messages can be sent to `peer`.
    LinkUp {
        /// The peer's id on this middleware.
        peer: PeerId,
        /// This link (what [`try_send_on`](MessageMiddleware::try_send_on) names).
        link: LinkId,
        /// The peer's address.
        endpoint: Endpoint,
        /// Who opened the link.
        role: Role,
    },
    /// A link is gone; sends to `peer` fail until it comes back.
    LinkDown {
        /// The peer's id.
        peer: PeerId,
        /// The link that went down (the one its `LinkUp` named).
        link: LinkId,
        /// Why.
        cause: LinkDownCause,
    },
    /// An inbound connection was refused before it became a link (bad handshake, duplicate
    /// identity, peer limit). Reported so operators can see hostile or misconfigured peers;
    /// dropped (and counted by the middleware) rather than queued when the inbound queue is
    /// full.
    Refused {
        /// The remote address.
        endpoint: Endpoint,
        /// Why.
        error: Arc<MiddlewareError>,
    },
}

/// A send that did not happen. Variants that can carry the message hand it back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The message has no frame naming the peer.
    #[error("message has no peer id frame")]
    NoPeerFrame,
    /// No live link to that peer (never connected, or down), or, from the `_on` sends,
    /// not the named link (that one is down; a newer link of the peer is left alone).
    /// Retry after a `LinkUp`.
    #[error("no link to peer {peer}")]
    UnknownPeer {
        /// The peer named by the first frame.
        peer: PeerId,
        /// The message, handed back (boxed: errors stay small on the success path).
        msg: Box<Multipart>,
    },
    /// The link's queue is full (from `try_send` only): retry later or use `send`.
    #[error("link to peer {peer} is full")]
    Full {
        /// The peer.
        peer: PeerId,
        /// The message, handed back (boxed: errors stay small on the success path).
        msg: Box<Multipart>,
    },
    /// The message exceeds the wire limits; it was not sent.
    #[error("message cannot be sent: {error}")]
    Invalid {
        /// Which limit.
        error: WireError,
        /// The message, handed back (boxed: errors stay small on the success path).
        msg: Box<Multipart>,
    },
    /// The middleware was closed.
    #[error("middleware closed")]
    Closed,
}

impl SendError {
    /// The message, if this error carries it back.
    pub fn into_message(self) -> Option<Multipart> {
        match self {
            Self::UnknownPeer { msg, .. } | Self::Full { msg, .. } | Self::Invalid { msg, .. } => {
                Some(*msg)
            }
            Self::NoPeerFrame | Self::Closed => None,
        }
    }
}

/// Errors of binding, connecting, receiving and disconnecting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MiddlewareError {
    /// The endpoint's scheme belongs to another middleware.
    #[error("endpoint {0} is not served by this middleware")]
    UnsupportedEndpoint(Endpoint),
    /// The endpoint is malformed.
    #[error(transparent)]
    InvalidEndpoint(#[from] EndpointError),
    /// Binding, connecting or accepting failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The ZMTP handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The peer's credentials were not accepted, or it refused ours (secured transports).
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    /// The handshake did not finish in time.
    #[error("handshake did not complete within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    /// The peer's identity is already used by a live link (one live link per identity).
    #[error("identity {0} already has a live link")]
    DuplicateIdentity(PeerId),
    /// The configured peer limit is reached.
    #[error("peer limit of {max} reached")]
    PeerLimit {
        /// The limit.
        max: usize,
    },
    /// No link to that peer.
    #[error("no link to peer {0}")]
    UnknownPeer(PeerId),
    /// The middleware was closed.
    #[error("middleware closed")]
    Closed,
}

/// Moves multipart messages to and from adjacent peers over one medium.
///
/// Implementations are cheap to share (`&self` everywhere) and safe to use from many
/// tasks, except [`recv`](Self::recv), which has one logical consumer.
pub trait MessageMiddleware: Send + Sync + 'static {
    /// The URL scheme served, e.g. `"tcp"`.
    fn scheme(&self) -> &'static str;

    /// Starts accepting peers on `endpoint`; returns the endpoint actually bound (port 0
    /// resolved).
    fn bind(
        &self,
        endpoint: &Endpoint,
    ) -> impl Future<Output = Result<Endpoint, MiddlewareError>> + Send;

    /// Opens a link to `endpoint` and completes the handshake; returns the peer's id.
    ///
    /// One attempt, one link. Whether a lost link is dialled again is the middleware's
    /// configured policy (TCP redials by default, as libzmq does, and can be told not to;
    /// QUIC never does): a caller that owns redialling itself, as the DMS kernel does,
    /// uses a middleware that does not redial, so there is one reconnect policy, not two.
    fn connect(
        &self,
        endpoint: &Endpoint,
    ) -> impl Future<Output = Result<PeerId, MiddlewareError>> + Send;

    /// Queues `msg` (first frame: the peer id) if the link has room now, without waiting.
    /// On a full link the message comes back in [`SendError::Full`].
    fn try_send(&self, msg: Multipart) -> Result<(), SendError>;

    /// Queues a small control message (a heartbeat's PING or PONG) that must not wait
    /// behind data: it goes out before every message queued on the link that is not
    /// already being written, within a small budget of its own (not the link's data
    /// limit). Liveness checks then measure the peer, not the depth of our queue.
    ///
    /// Never use it for messages whose order with data matters (a DISCONNECT must follow
    /// the data before it). The provided implementation is [`try_send`](Self::try_send)
    /// (no priority): a transport must override it to pass the conformance suite's
    /// `urgent_messages_pass_queued_data`.
    fn try_send_urgent(&self, msg: Multipart) -> Result<(), SendError> {
        self.try_send(msg)
    }

    /// As [`try_send`](Self::try_send), onto `link` only: when the peer's live link is
    /// another (a newer link: the peer linked again) or there is none, the message comes
    /// back in [`SendError::UnknownPeer`] and nothing is written. The way to send what
    /// belongs to one link's session (a reply, a heartbeat) without it reaching the
    /// peer's next link, where it would come before that link's handshake of the layer
    /// above.
    fn try_send_on(&self, link: LinkId, msg: Multipart) -> Result<(), SendError>;

    /// As [`try_send_urgent`](Self::try_send_urgent), onto `link` only (see
    /// [`try_send_on`](Self::try_send_on)).
    fn try_send_urgent_on(&self, link: LinkId, msg: Multipart) -> Result<(), SendError>;

    /// Queues `msg`, waiting while the link is full. Cancel-safe: if the future is dropped
    /// before it completes, the message was not queued.
    fn send(&self, msg: Multipart) -> impl Future<Output = Result<(), SendError>> + Send;

    /// The next message or link event. Cancel-safe (usable in `select!`). A pending
    /// future may do the reading itself (the stream transports read the link they last
    /// heard from in the caller's task): poll it when it is woken, or drop it.
    fn recv(&self) -> impl Future<Output = Result<Incoming, MiddlewareError>> + Send;

    /// Waits for the next item, then appends it and whatever else is already waiting, up
    /// to `limit` items in all, to `items`; returns how many it appended (at least one).
    /// One wake-up and one synchronisation for a batch: the way to receive at high rates.
    /// Cancel-safe. The default takes one item with [`recv`](Self::recv).
    fn recv_many(
        &self,
        items: &mut Vec<Incoming>,
        limit: usize,
    ) -> impl Future<Output = Result<usize, MiddlewareError>> + Send {
        let _ = limit;
        async move {
            items.push(self.recv().await?);
            Ok(1)
        }
    }

    /// Stops (`paused`) or resumes reading `peer`'s link. While paused nothing more is
    /// read from it (messages already read are still delivered), so the peer's sends meet
    /// the medium's own flow control (TCP's window, QUIC's stream credit) and cost this
    /// process nothing: the way to throttle a peer that sends requests faster than it
    /// reads their replies. Heartbeats are not read either, so a peer paused for longer
    /// than its liveness bound is declared dead by the protocol above. No effect on an
    /// unknown peer; a new link starts unpaused.
    fn pause_reading(&self, peer: &PeerId, paused: bool);

    /// Closes every link and listener at once, without flushing (use
    /// [`disconnect`](Self::disconnect) per peer for that). Pending and later calls fail
    /// with `Closed`.
    fn close(&self);

    /// Closes the link to `peer` after writing everything already queued on it, and stops
    /// reconnecting it. Resolves when the link is closed.
    fn disconnect(&self, peer: &PeerId)
    -> impl Future<Output = Result<(), MiddlewareError>> + Send;

    /// As [`disconnect`](Self::disconnect), for `link` only: closes it after writing what
    /// is queued on it if it is still `peer`'s live link, and fails with
    /// [`MiddlewareError::UnknownPeer`] otherwise (a newer link of the peer is left
    /// alone). Redialling is unchanged: a transport that redials dials again as after any
    /// loss (use `disconnect` to stop it).
    fn disconnect_link(
        &self,
        peer: &PeerId,
        link: LinkId,
    ) -> impl Future<Output = Result<(), MiddlewareError>> + Send;
}

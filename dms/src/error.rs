//! Errors of the kernel's API.

use std::path::PathBuf;

use dms_core::MiddlewareError;
use dms_core::acl::{AclParseError, Operation};
use dms_core::path::{ClusterPath, ServicePath};
use dms_core::proto::{Initiator, LossReason};
use dms_discovery::{DiscoveryError, KeyError};

/// A node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Binding an endpoint failed.
    #[error("cannot bind: {0}")]
    Bind(#[source] MiddlewareError),
    /// An endpoint's scheme has no transport in this build (enable its cargo feature), or
    /// its transport is not configured (QUIC without TLS credentials).
    #[error("cannot bind {0}")]
    UnsupportedEndpoint(String),
    /// A transport's configuration is invalid.
    #[error("transport configuration: {0}")]
    Transport(String),
    /// Discovery failed (unreachable, refused).
    #[error("discovery: {0}")]
    Discovery(#[from] DiscoveryError),
    /// A path does not make a valid discovery key.
    #[error("discovery key: {0}")]
    Key(#[from] KeyError),
    /// Another live instance is registered under this service path.
    #[error("instance {0} is already registered")]
    AlreadyRegistered(ServicePath),
    /// No dispatch bucket could be claimed.
    #[error("no free dispatch bucket in cluster {0}")]
    NoBucket(ClusterPath),
    /// The ACL policy file is missing, unreadable or does not parse: the node does not
    /// start (it never runs without the policy it was given).
    #[error(transparent)]
    Acl(#[from] AclFileError),
}

/// An ACL policy file that cannot be used (see [`NodeBuilder::acl_file`](crate::NodeBuilder::acl_file)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AclFileError {
    /// The file cannot be read (missing, no permission...).
    #[error("ACL policy {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not parse: the error names the line and the field.
    #[error("ACL policy {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and what.
        #[source]
        source: AclParseError,
    },
}

/// A request, notification or broadcast that did not succeed. Every failure is reported:
/// a request is answered, or fails with one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The cluster is not among the node's targets (`NodeBuilder::target`).
    #[error("cluster {0} is not a target of this node")]
    NotATarget(ClusterPath),
    /// No live, probed instance of the cluster (or no such instance).
    #[error("no live instance of {0}")]
    NoInstance(String),
    /// The ACL of the destination refused the operation: `connect` (every instance
    /// refused our session at READY) or `request` (the instance answered
    /// `ACCESS_DENIED`, within one round trip). Never retried by the node.
    #[error("access denied: {op} to {service} ({detail})")]
    Denied {
        /// The instance that refused.
        service: ServicePath,
        /// The operation refused.
        op: Operation,
        /// The refusal's detail as the instance sent it.
        detail: String,
    },
    /// No reply within the timeout.
    #[error("no reply within the timeout")]
    Timeout,
    /// The instance was lost before replying: its link broke, it fell silent (no
    /// heartbeat within the bound), or it broke the protocol.
    #[error("instance lost before replying: {0}")]
    PeerLost(String),
    /// The instance closed its session before replying: it said DISCONNECT, as a node
    /// that shuts down does (SIGTERM, [`Node::shutdown`](crate::Node::shutdown)). It
    /// left on purpose and its keys move at once; the request may have been handled.
    #[error("instance closed its session before replying: {0}")]
    PeerClosed(String),
    /// The instance replied with an error.
    #[error("instance replied with error {code}: {detail}")]
    Remote {
        /// Error code (see `dms_core::proto::control::codes`).
        code: u16,
        /// Detail.
        detail: String,
    },
    /// The payload exceeds the wire limits.
    #[error("payload too large: {0}")]
    TooLarge(String),
    /// Too many requests are pending.
    #[error("too many pending requests")]
    TooManyPending,
    /// The link to the instance could not take the request (it and the node's backlog for
    /// it were full, or it went down just then): certainly not sent.
    #[error("not sent: {0}")]
    LinkFull(String),
    /// A typed request, notification or broadcast could not be encoded (nothing sent).
    #[error("cannot encode the message: {0}")]
    Encode(String),
    /// The reply to a typed request could not be decoded (the request was delivered and
    /// answered).
    #[error("cannot decode the reply: {0}")]
    Decode(String),
    /// The node is shut down.
    #[error("node is shut down")]
    Closed,
    /// A routed request (through brokers, docs/PROTOCOL.md §3.5) failed on its way: a hop
    /// answered in place of the destination.
    #[error("routing failed ({failure}): {detail}")]
    Route {
        /// What went wrong.
        failure: RouteFailure,
        /// The hop's detail.
        detail: String,
    },
}

/// Why a routed request did not reach its destination (see [`RequestError::Route`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteFailure {
    /// It used up its hop limit (code 21): a path longer than the limit, or a loop while
    /// routing tables disagreed.
    #[error("hop limit exceeded")]
    HopLimitExceeded,
    /// A hop had no route to the destination, or would have sent it back (code 22).
    #[error("destination unreachable")]
    Unreachable,
    /// A hop lost its link onward, or got no reply from it in time (code 23): the request
    /// may have been handled.
    #[error("next hop failed")]
    NextHopFailed,
}

impl RouteFailure {
    /// The failure a REP error code stands for, if it is one of the routing codes.
    pub(crate) fn from_code(code: u16) -> Option<Self> {
        use dms_core::proto::control::codes;
        match code {
            codes::HOP_LIMIT_EXCEEDED => Some(Self::HopLimitExceeded),
            codes::UNREACHABLE => Some(Self::Unreachable),
            codes::NEXT_HOP_FAILED => Some(Self::NextHopFailed),
            _ => None,
        }
    }
}

/// Whether a failed request may have reached its destination: what decides if a retry
/// is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Certainly not sent: retrying cannot duplicate it.
    NotSent,
    /// Sent, fate unknown (no reply in time, or the instance was lost): it may have been
    /// processed; retry only what is idempotent.
    MaybeDelivered,
    /// Delivered and answered (with an error).
    Delivered,
}

impl RequestError {
    /// `service` refused our session at READY with `detail`.
    pub(crate) fn connect_denied(service: &ServicePath, detail: &str) -> Self {
        Self::Denied {
            service: service.clone(),
            op: Operation::Connect,
            detail: detail.to_owned(),
        }
    }

    /// The failure of a request whose session ended for `reason`: [`PeerClosed`]
    /// if the instance said DISCONNECT, else [`PeerLost`].
    ///
    /// [`PeerClosed`]: Self::PeerClosed
    /// [`PeerLost`]: Self::PeerLost
    pub(crate) fn session_ended(reason: &LossReason) -> Self {
        match reason {
            LossReason::Disconnected {
                initiator: Initiator::Remote,
                ..
            } => Self::PeerClosed(reason.to_string()),
            _ => Self::PeerLost(reason.to_string()),
        }
    }

    /// Whether the request may have been delivered (see [`Outcome`]).
    ///
    /// ```
    /// use dms::{Outcome, RequestError};
    /// assert_eq!(RequestError::TooManyPending.outcome(), Outcome::NotSent);
    /// assert_eq!(RequestError::Timeout.outcome(), Outcome::MaybeDelivered);
    /// ```
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::NotATarget(_)
            | Self::NoInstance(_)
            | Self::Denied { .. }
            | Self::TooLarge(_)
            | Self::TooManyPending
            | Self::LinkFull(_)
            | Self::Encode(_)
            | Self::Route {
                failure: RouteFailure::HopLimitExceeded | RouteFailure::Unreachable,
                ..
            } => Outcome::NotSent,
            // A node shut down while the request waited for its reply.
            Self::Timeout
            | Self::PeerLost(_)
            | Self::PeerClosed(_)
            | Self::Closed
            | Self::Route {
                failure: RouteFailure::NextHopFailed,
                ..
            } => Outcome::MaybeDelivered,
            Self::Remote { .. } | Self::Decode(_) => Outcome::Delivered,
        }
    }
}

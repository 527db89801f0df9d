//! Per-peer session state.

use std::time::{Duration, Instant};

use crate::Role;
use crate::acl::Operations;
use crate::path::ServicePath;

/// Where a session with an adjacent peer stands.
///
/// ```text
///  link up ──► AwaitingReady ──READY──► Ready ──DISCONNECT / timeout / link down──► (gone)
///                   │                                        ▲
///                   └── no READY in time, ACL refusal ───────┘
/// ```
///
/// The requester (the side that connected) sends READY on link up and waits for the
/// responder's READY: the probe. The responder answers READY once it accepted the
/// requester's. Only `Ready` sessions carry requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Link up, READY exchange not complete.
    AwaitingReady,
    /// Probed and usable.
    Ready,
}

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) role: Role,
    pub(crate) state: SessionState,
    pub(crate) path: Option<ServicePath>,
    /// When anything was last heard from the peer.
    pub(crate) last_heard: Instant,
    /// The silence since `last_heard` was excused once already (this process was
    /// paused): a later pause does not excuse it again.
    pub(crate) excused: bool,
    /// Silence after which the peer is dead.
    pub(crate) liveness: Duration,
    /// AwaitingReady: the probe's deadline.
    pub(crate) ready_deadline: Instant,
    /// Requester: when the next PING goes out.
    pub(crate) next_ping: Option<Instant>,
    pub(crate) ping_seq: u64,
    /// Requests to this peer waiting for a reply.
    pub(crate) pending: usize,
    /// What the ACL lets the peer do to us, decided once at READY (all before READY:
    /// nothing but READY and DISCONNECT is accepted then anyway).
    pub(crate) permitted: Operations,
    /// The peer's READY announced that it forwards (a broker): it may relay routed
    /// requests of other origins.
    pub(crate) forwards: bool,
    /// PINGs the peer may still send now, in millionths of a PING (token bucket).
    pub(crate) ping_tokens: u64,
    /// When the bucket was last refilled.
    pub(crate) ping_refilled: Instant,
    /// Start of the current flood window.
    pub(crate) flood_window_start: Instant,
    /// PINGs over budget in the current flood window.
    pub(crate) flood_count: u32,
}

impl Session {
    /// The earliest instant this session needs attention.
    pub(crate) fn deadline(&self) -> Instant {
        match self.state {
            SessionState::AwaitingReady => self.ready_deadline,
            SessionState::Ready => {
                let dead = self.last_heard + self.liveness;
                self.next_ping.map_or(dead, |ping| ping.min(dead))
            }
        }
    }
}

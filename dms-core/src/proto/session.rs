//! Per-peer session state.

use std::time::{Duration, Instant};

use crate::Role;
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
    /// Silence after which the peer is dead.
    pub(crate) liveness: Duration,
    /// AwaitingReady: the probe's deadline.
    pub(crate) ready_deadline: Instant,
    /// Requester: when the next PING goes out.
    pub(crate) next_ping: Option<Instant>,
    pub(crate) ping_seq: u64,
    /// Requests to this peer waiting for a reply.
    pub(crate) pending: usize,
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

//! Counters of what a [`LinkSet`](crate::LinkSet) refused or lost, so that no drop is
//! silent.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a [`LinkSet`](crate::LinkSet)'s counters (the transport's stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// Links that completed the handshake (both roles, reconnects included).
    pub links_up: u64,
    /// Links that went down for any reason.
    pub links_down: u64,
    /// Connections dropped because the handshake failed or timed out (or announced
    /// another identity than their certificate's).
    pub handshake_failures: u64,
    /// Connections refused because their identity had a live link.
    pub duplicate_identities: u64,
    /// Connections refused at the peer limit.
    pub peer_limit_refusals: u64,
    /// Unfinished incoming handshakes closed to make room for a newer connection, because
    /// [`max_handshakes`](crate::LinkConfig::max_handshakes) were in progress.
    pub handshakes_evicted: u64,
    /// Incoming connections handshaking now (a gauge, not a counter: at most
    /// [`max_handshakes`](crate::LinkConfig::max_handshakes), back to 0 when none is).
    pub pending_handshakes: u64,
    /// Links closed because the peer broke the wire protocol.
    pub protocol_errors: u64,
    /// Bytes accepted for sending but never written because their link died.
    pub bytes_dropped_on_link_down: u64,
    /// `Refused` events not queued because the inbound queue was full.
    pub events_dropped: u64,
    /// Reconnect attempts of connected links (counted by the transport's supervisor with
    /// [`LinkSet::count_reconnect_attempt`](crate::LinkSet::count_reconnect_attempt)).
    pub reconnect_attempts: u64,
    /// Times reading a link was paused ([`LinkSet::pause_reading`](crate::LinkSet::pause_reading)).
    pub reads_paused: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) links_up: AtomicU64,
    pub(crate) links_down: AtomicU64,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) duplicate_identities: AtomicU64,
    pub(crate) peer_limit_refusals: AtomicU64,
    pub(crate) handshakes_evicted: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) bytes_dropped_on_link_down: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
    pub(crate) reconnect_attempts: AtomicU64,
    pub(crate) reads_paused: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// The counters; `pending_handshakes` is the caller's (it is not a counter).
    pub(crate) fn snapshot(&self, pending_handshakes: u64) -> LinkStats {
        LinkStats {
            links_up: self.links_up.load(Relaxed),
            links_down: self.links_down.load(Relaxed),
            handshake_failures: self.handshake_failures.load(Relaxed),
            duplicate_identities: self.duplicate_identities.load(Relaxed),
            peer_limit_refusals: self.peer_limit_refusals.load(Relaxed),
            handshakes_evicted: self.handshakes_evicted.load(Relaxed),
            pending_handshakes,
            protocol_errors: self.protocol_errors.load(Relaxed),
            bytes_dropped_on_link_down: self.bytes_dropped_on_link_down.load(Relaxed),
            events_dropped: self.events_dropped.load(Relaxed),
            reconnect_attempts: self.reconnect_attempts.load(Relaxed),
            reads_paused: self.reads_paused.load(Relaxed),
        }
    }
}

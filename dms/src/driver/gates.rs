//! Session gates: what lets a handler write its reply to the link from its own task,
//! without a hand-over to the node's task and back (one task wake-up and one turn of the
//! driver less per request served).
//!
//! A gate belongs to one ready session: the driver opens it when the session becomes
//! ready and closes it when the session ends (or the node stops, suspends or dies), and
//! marks it while messages for that peer wait in the driver for room (parked). A
//! [`Responder`](crate::incoming::Responder) holds the gate of the session its request
//! came on and writes the reply itself only while the gate is open and unmarked, so a
//! reply never goes out on another session, never before our READY on a new link, never
//! ahead of what the driver already holds for the peer, and never from a node that
//! stopped. Everything else (the gate closed or marked, the link full, the reply over the
//! link's limits, the link gone) goes the way it always went: to the driver, which
//! parks, throttles, refuses or drops it with the reason counted.

use std::sync::atomic::{AtomicU8, Ordering};

use dms_core::proto::{RequestId, reply_message};
use dms_core::{Multipart, PeerId};

use super::*;
use crate::transport::MediumSender;

/// The gate is closed: its session ended (or the node is stopping).
const CLOSED: u8 = 1;
/// Messages for the peer are parked in the driver: a reply must queue behind them.
const PARKED: u8 = 2;

/// The gate of one ready session (see the module docs).
#[derive(Debug)]
pub(crate) struct SessionGate {
    peer: PeerId,
    /// The [`Protocol::source`] of this node.
    source: u64,
    sender: MediumSender,
    /// [`CLOSED`] and [`PARKED`] bits; 0: open.
    state: AtomicU8,
}

impl SessionGate {
    fn new(peer: PeerId, source: u64, sender: MediumSender) -> Self {
        Self {
            peer,
            source,
            sender,
            state: AtomicU8::new(0),
        }
    }

    /// Writes the reply to request `id` on this session's link, if the gate is open and
    /// the link takes it now; otherwise hands `result` back for the driver.
    pub(crate) fn try_reply(
        &self,
        id: RequestId,
        result: Result<Multipart, Reason>,
    ) -> Result<(), Result<Multipart, Reason>> {
        // Acquire: pairs with the driver's release when it parks or closes, so a message
        // the driver parked before completing one of the handler's calls is seen here.
        if self.state.load(Ordering::Acquire) != 0 {
            return Err(result);
        }
        // The frames are shared, not copied: keeping them for the way back is cheap.
        let kept = result.clone();
        match self
            .sender
            .try_send(reply_message(&self.peer, self.source, id, result))
        {
            Ok(()) => Ok(()),
            // Full, over the limits or gone: the driver decides (parks and throttles,
            // answers REPLY_TOO_LARGE, or drops it for a lost session).
            Err(_) => Err(kept),
        }
    }

    /// Marks (`parked`) or unmarks the gate while messages for its peer are parked.
    pub(super) fn mark_parked(&self, parked: bool) {
        if parked {
            self.state.fetch_or(PARKED, Ordering::Release);
        } else {
            self.state.fetch_and(!PARKED, Ordering::Release);
        }
    }

    fn close(&self) {
        self.state.fetch_or(CLOSED, Ordering::Release);
    }
}

impl Driver {
    /// Opens the gate of `peer`'s new session (closing any gate it had).
    pub(super) fn open_gate(&mut self, peer: &PeerId) {
        let Some(sender) = self.transports.sender_of(peer) else {
            return;
        };
        let gate = Arc::new(SessionGate::new(peer.clone(), self.proto.source(), sender));
        // Messages parked for the peer before its session was ready still go first.
        gate.mark_parked(self.state.parked.contains_key(peer));
        if let Some(old) = self.state.gates.insert(peer.clone(), gate) {
            old.close();
        }
    }

    /// Closes the gate of `peer`'s session, which ended.
    pub(super) fn close_gate(&mut self, peer: &PeerId) {
        if let Some(gate) = self.state.gates.remove(peer) {
            gate.close();
        }
    }

    /// Closes every gate: nothing more is written but by the driver (stopping).
    pub(super) fn close_gates(&mut self) {
        for (_, gate) in self.state.gates.drain() {
            gate.close();
        }
    }

    /// Marks (`parked`) or unmarks `peer`'s gate while messages for it are parked.
    pub(super) fn mark_parked(&self, peer: &PeerId, parked: bool) {
        if let Some(gate) = self.state.gates.get(peer) {
            gate.mark_parked(parked);
        }
    }

    /// The gate a request from `peer` is answered through.
    pub(super) fn gate_of(&self, peer: &PeerId) -> Option<Arc<SessionGate>> {
        self.state.gates.get(peer).cloned()
    }
}

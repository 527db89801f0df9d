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
//!
//! The same gate lets a caller write a request to the link itself (see [`super::direct`]):
//! it registers its waiter in the gate first, so the driver, which decodes the reply,
//! finds it there, and the driver ends every waiter of the gate when the session ends.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};

use dms_core::proto::{RequestId, reply_message, request_message};
use dms_core::{Multipart, PeerId};

use super::*;
use crate::transport::MediumSender;

/// Requests written through one gate and not answered yet, at most (beyond, requests go
/// through the driver, which has its own bound).
const MAX_WAITERS: usize = 4096;

/// Where a request written through a gate hears its outcome.
pub(crate) type ReplySender = oneshot::Sender<Result<Reply, RequestError>>;

/// The gate is closed: its session ended (or the node is stopping).
const CLOSED: u8 = 1;
/// Messages for the peer are parked in the driver: a reply must queue behind them.
const PARKED: u8 = 2;

/// The gate of one ready session (see the module docs).
#[derive(Debug)]
pub(crate) struct SessionGate {
    peer: PeerId,
    /// The peer's service path.
    path: ServicePath,
    /// The [`Protocol::source`] of this node.
    source: u64,
    sender: MediumSender,
    /// [`CLOSED`] and [`PARKED`] bits; 0: open.
    state: AtomicU8,
    /// Requests written through this gate, waiting for their replies, by id.
    waiters: Mutex<HashMap<u64, ReplySender, RandomState>>,
}

impl SessionGate {
    fn new(peer: PeerId, path: ServicePath, source: u64, sender: MediumSender) -> Self {
        Self {
            peer,
            path,
            source,
            sender,
            state: AtomicU8::new(0),
            waiters: Mutex::default(),
        }
    }

    /// The peer's service path.
    pub(crate) fn path(&self) -> &ServicePath {
        &self.path
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ReplySender, RandomState>> {
        // A panic while the lock was held left the map whole (inserts and removes only).
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes request `id` (an external id, see [`RequestId::EXTERNAL`]) on this
    /// session's link, if the gate is open and the link takes it now, with `done` waiting
    /// for its outcome; otherwise hands `body` and `done` back for the driver.
    pub(crate) fn try_request(
        &self,
        id: RequestId,
        body: Multipart,
        trace: Option<TraceContext>,
        done: ReplySender,
    ) -> Result<(), (Multipart, ReplySender)> {
        {
            let mut waiters = self.waiters();
            // Checked under the lock the driver takes to end the waiters when it closes
            // the gate: either this sees CLOSED, or the driver ends this waiter.
            if self.state.load(Ordering::Acquire) != 0 || waiters.len() >= MAX_WAITERS {
                return Err((body, done));
            }
            // Registered before the REQ is written: the reply cannot come before it.
            waiters.insert(id.0, done);
        }
        let kept = body.clone();
        match self
            .sender
            .try_send(request_message(&self.peer, self.source, id, body, trace))
        {
            Ok(()) => Ok(()),
            Err(_) => match self.take_waiter(id) {
                Some(done) => Err((kept, done)),
                // The session ended meanwhile and the driver ended the waiter: the
                // caller hears that; nothing was written.
                None => Ok(()),
            },
        }
    }

    /// The waiter of request `id`, if it still waits (removed).
    pub(crate) fn take_waiter(&self, id: RequestId) -> Option<ReplySender> {
        self.waiters().remove(&id.0)
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

    /// Closes the gate; its waiters hear `failure`, or (`None`: the node is frozen) keep
    /// waiting until their own deadlines.
    fn close(&self, failure: Option<RequestError>) {
        let mut waiters = self.waiters();
        self.state.fetch_or(CLOSED, Ordering::Release);
        if let Some(failure) = failure {
            for (_, done) in waiters.drain() {
                let _ = done.send(Err(failure.clone()));
            }
        }
    }
}

impl Driver {
    /// Opens the gate of `peer`'s new session with `path` (closing any gate it had).
    pub(super) fn open_gate(&mut self, peer: &PeerId, path: &ServicePath) {
        let Some(sender) = self.transports.sender_of(peer) else {
            return;
        };
        let gate = Arc::new(SessionGate::new(
            peer.clone(),
            path.clone(),
            self.proto.source(),
            sender,
        ));
        // Messages parked for the peer before its session was ready still go first.
        gate.mark_parked(self.state.parked.contains_key(peer));
        if let Some(old) = self.state.gates.insert(peer.clone(), gate) {
            old.close(Some(RequestError::PeerLost(format!(
                "{path}: a new session replaced the one the request was sent on"
            ))));
        }
    }

    /// Closes the gate of `peer`'s session, which ended; requests written through it
    /// fail with `failure`.
    pub(super) fn close_gate(&mut self, peer: &PeerId, failure: RequestError) {
        if let Some(gate) = self.state.gates.remove(peer) {
            gate.close(Some(failure));
        }
    }

    /// Closes every gate: nothing more is written but by the driver (stopping), and the
    /// requests written through them fail with `failure` (`None`: frozen, they wait
    /// until their deadlines).
    pub(super) fn close_gates(&mut self, failure: Option<RequestError>) {
        for (_, gate) in self.state.gates.drain() {
            gate.close(failure.clone());
        }
    }

    /// A reply to a request written through `peer`'s gate: to its waiter, or counted
    /// late (it timed out, or its session ended).
    pub(super) fn on_external_reply(
        &mut self,
        peer: &PeerId,
        id: RequestId,
        result: Result<Multipart, dms_core::proto::RequestError>,
    ) {
        let waiter = self.state.gates.get(peer).and_then(|gate| {
            let done = gate.take_waiter(id)?;
            Some((done, gate.path().clone()))
        });
        match waiter {
            Some((done, path)) => {
                let _ = done.send(dispatch::outcome(path, result));
            }
            None => self.proto.count_late_reply(),
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

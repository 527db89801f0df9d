//! The outbox: the protocol's outputs drained into the links, and messages parked while
//! a link is full (one full link never holds up the others).

use super::*;

/// Messages waiting for room in one full link, at most (beyond, they are dropped: their
/// requests fail at once with [`RequestError::LinkFull`]).
pub(super) const MAX_PARKED_PER_PEER: usize = 1024;

/// How often parked messages are retried.
pub(super) const PARKED_RETRY: Duration = Duration::from_millis(2);

impl Driver {
    /// Drains the protocol's outputs until it has none.
    pub(super) fn flush(&mut self) {
        self.retry_parked();
        loop {
            let mut idle = true;
            while let Some(transmit) = self.proto.poll_transmit() {
                idle = false;
                if transmit.urgent {
                    self.transmit_urgent(transmit.msg);
                } else {
                    self.transmit(transmit.msg);
                }
            }
            while let Some(event) = self.proto.poll_event() {
                idle = false;
                self.on_event(event);
            }
            if idle {
                return;
            }
        }
    }

    pub(super) fn transmit(&mut self, msg: Multipart) {
        let peer = msg.first().and_then(|f| PeerId::new(f.clone()).ok());
        if let Some(peer) = peer.as_ref().filter(|p| self.state.parked.contains_key(*p)) {
            // Behind what is already waiting for that link, to keep its order.
            return self.park(peer.clone(), msg);
        }
        match self.transports.try_send(msg) {
            Ok(()) => {}
            Err(SendError::Full { peer, msg }) => self.park(peer, *msg),
            // Requests and notifications are checked before they are queued; what fails
            // here went to a link that just went down (or that the peer replaced).
            Err(error) => {
                debug!(%error, "message not sent");
                let why = error.to_string();
                if let Some(msg) = error.into_message() {
                    if !self.unsent(&msg, why) && carries_data(&msg) {
                        // A reply or a notification: nobody here waits to be told.
                        self.metrics.dropped_peer_lost.increment(1);
                    }
                }
            }
        }
    }

    /// A message the middleware did not take: if it is a request, it fails at once as
    /// certainly not sent (the protocol's reply event says so, and a forwarded one is
    /// answered upstream), instead of waiting for its timeout. True when it did.
    fn unsent(&mut self, msg: &Multipart, why: String) -> bool {
        let Some(control) = msg.frames().get(1) else {
            return false;
        };
        if Control::peek_command(control) != Some(CommandCode::Req) {
            return false;
        }
        Control::decode(control)
            .is_ok_and(|control| self.proto.fail_unsent(RequestId(control.id), why))
    }

    /// A heartbeat: ahead of data queued on the link and of messages parked for it. When
    /// even the urgent lane is full (the peer has not read 64 KiB of heartbeats), it is
    /// dropped rather than parked behind data: a late heartbeat proves nothing, and the
    /// missing PONG is what the liveness check should see.
    pub(super) fn transmit_urgent(&mut self, msg: Multipart) {
        if let Err(error) = self.transports.try_send_urgent(msg) {
            debug!(%error, "heartbeat not sent");
        }
    }

    /// Parks `msg` behind what waits for `peer`'s full link, or drops it when that
    /// backlog is full. A parked reply throttles the peer: its link is not read until
    /// the backlog is gone, so a peer that does not read its replies stops costing us
    /// (its sends meet TCP's flow control) instead of crowding out other peers.
    pub(super) fn park(&mut self, peer: PeerId, msg: Multipart) {
        let throttle = !self.state.throttled.contains(&peer)
            && msg
                .frames()
                .get(1)
                .and_then(|control| Control::peek_command(control))
                == Some(CommandCode::Rep);
        if throttle {
            debug!(node = %self.local, %peer, "replies cannot leave: link no longer read");
            self.transports.pause_reading(&peer, true);
            self.state.throttled.insert(peer.clone());
            self.metrics.throttled.increment(1);
        }
        if !self.state.parked.contains_key(&peer) {
            // Replies written by handlers now queue behind what is parked.
            self.mark_parked(&peer, true);
        }
        let queue = self.state.parked.entry(peer.clone()).or_default();
        if queue.len() < MAX_PARKED_PER_PEER {
            queue.push_back(msg);
            self.metrics.parked.increment(1.0);
        } else {
            self.metrics.dropped_backlog_full.increment(1);
            debug!(%peer, "a peer's outbound backlog is full: message dropped");
            let why = format!(
                "the link to {peer} is full and {MAX_PARKED_PER_PEER} messages wait for it"
            );
            self.unsent(&msg, why);
        }
    }

    pub(super) fn retry_parked(&mut self) {
        let transports = &self.transports;
        let throttled = &mut self.state.throttled;
        let gates = &self.state.gates;
        let metrics = &self.metrics;
        let mut lost: Vec<(Multipart, String)> = Vec::new();
        self.state.parked.retain(|peer, queue| {
            while let Some(msg) = queue.pop_front() {
                match transports.try_send(msg) {
                    Ok(()) => metrics.parked.decrement(1.0),
                    Err(SendError::Full { msg, .. }) => {
                        queue.push_front(*msg);
                        return true;
                    }
                    Err(error) => {
                        // The link is gone: what waited for it goes too (its requests fail
                        // as not sent).
                        let dropped = queue.len() + 1;
                        debug!(%error, dropped, "parked messages not sent");
                        metrics.parked.decrement(dropped as f64);
                        metrics.dropped_peer_lost.increment(dropped as u64);
                        throttled.remove(peer);
                        let why = error.to_string();
                        lost.extend(error.into_message().map(|msg| (msg, why.clone())));
                        lost.extend(queue.drain(..).map(|msg| (msg, why.clone())));
                        return false;
                    }
                }
            }
            if throttled.remove(peer) {
                transports.pause_reading(peer, false);
            }
            if let Some(gate) = gates.get(peer) {
                gate.mark_parked(false);
            }
            false
        });
        for (msg, why) in lost {
            self.unsent(&msg, why);
        }
    }
}

/// Whether `msg` is a REQ or a REP (an application's message, not a session's control).
fn carries_data(msg: &Multipart) -> bool {
    msg.frames()
        .get(1)
        .and_then(|control| Control::peek_command(control))
        .is_some_and(|command| matches!(command, CommandCode::Req | CommandCode::Rep))
}

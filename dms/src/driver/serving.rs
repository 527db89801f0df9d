//! Serving: requests and notifications from peers, queued for the application, and its
//! answers sent back.

use super::*;

impl Driver {
    pub(super) fn on_request(
        &mut self,
        peer: PeerId,
        from: ServicePath,
        id: RequestId,
        body: Multipart,
        trace: Option<TraceContext>,
    ) {
        let span = debug_span!(
            target: crate::trace::TARGET,
            parent: None,
            "dms.handle",
            node = %self.local,
            from = %from,
            request_id = id.0,
            traceparent = tracing::field::Empty,
        );
        crate::trace::incoming(&span, trace);
        let request = IncomingRequest {
            from,
            body,
            kind: Kind::Request(Responder {
                peer: peer.clone(),
                id,
                commands: self.command_tx.upgrade().unwrap_or_else(closed_sender),
                answered: false,
                trace,
                span,
                gate: self.gate_of(&peer),
            }),
        };
        match self.incoming.try_push(&peer, request) {
            Ok(()) => self.metrics.received(true, false),
            Err(mut refused) => {
                self.metrics.overloaded.increment(1);
                // Answer here, not from the responder's drop.
                if let Kind::Request(responder) = &mut refused.kind {
                    responder.answered = true;
                }
                let overloaded = Reason {
                    code: codes::OVERLOADED,
                    detail: format!(
                        "{} has too many requests waiting (from {peer} or in all)",
                        self.local
                    ),
                };
                let _ = self.proto.reply(&peer, id, Err(overloaded));
            }
        }
    }

    pub(super) fn on_notification(
        &mut self,
        peer: PeerId,
        from: ServicePath,
        broadcast: bool,
        body: Multipart,
    ) {
        let note = IncomingRequest {
            from,
            body,
            kind: Kind::Notification { broadcast },
        };
        if self.incoming.try_push(&peer, note).is_ok() {
            self.metrics.received(false, broadcast);
        } else {
            self.metrics.dropped_incoming_full.increment(1);
            warn!(node = %self.local, "incoming queue full: notification dropped");
        }
    }

    /// The application's answer to request `id` from `peer`.
    pub(super) fn answer(
        &mut self,
        peer: &PeerId,
        id: RequestId,
        result: Result<Multipart, Reason>,
    ) {
        // A reply over the link's limits would be dropped at the link and its
        // requester left to time out: it gets an error reply saying why instead.
        let result = match result {
            Ok(body) => match self.transports.too_large(peer, &body) {
                Some(why) => {
                    warn!(%peer, %why, "reply over the link's limits: not sent");
                    self.metrics.replies_too_large.increment(1);
                    Err(Reason {
                        code: codes::REPLY_TOO_LARGE,
                        detail: format!("reply not sent: {why}"),
                    })
                }
                None => Ok(body),
            },
            Err(reason) => Err(reason),
        };
        let _ = self.proto.reply(peer, id, result);
    }
}

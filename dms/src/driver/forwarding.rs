//! The Router's half of the driver: forwarding routed messages for others (brokers), and
//! carrying their replies back hop by hop.
//!
//! A forwarded request is a new request on the next link: the forwarder remembers which
//! upstream request it stands for and answers that one with whatever comes back — the
//! reply, the next hop's error, or its own (the next hop was lost or timed out). So a
//! reply retraces the request's path, and every hop that fails answers in place of the
//! destination: the origin always hears back (docs/PROTOCOL.md §3.5).

use dms_core::Multipart;
use dms_core::PeerId;
use dms_core::proto::control::{Reason, Route, codes};
use dms_core::proto::{RequestError as ProtoRequestError, RequestId, Routed};
use dms_core::route::forward_hop_limit;
use tracing::{Span, debug, debug_span};

use super::{Driver, now};
use crate::telemetry::ForwardFailure;

/// The upstream request a forwarded one stands for.
#[derive(Debug)]
pub(crate) struct Upstream {
    peer: PeerId,
    id: RequestId,
    route: Route,
    /// `dms.forward`: ends when the reply goes back upstream.
    span: Span,
}

impl Driver {
    /// A routed REQ for another instance arrived here (we forward): send it on, or
    /// answer (a request) or count (a notification) why not.
    pub(crate) fn on_forward(&mut self, peer: PeerId, id: RequestId, mut message: Routed) {
        let expects_reply = message.expects_reply();
        let destination = message.route.destination.clone();
        let fail = |this: &mut Self, why: ForwardFailure, code: u16, detail: String| {
            debug!(node = %this.local, %detail, "not forwarded");
            this.metrics.forward_failed(why);
            if expects_reply {
                let _ = this.proto.reply(&peer, id, Err(Reason { code, detail }));
            }
        };
        if message.route.origin == self.local {
            let detail = format!(
                "routing loop: a request for {destination} came back to its origin {}",
                self.local
            );
            return fail(self, ForwardFailure::Loop, codes::UNREACHABLE, detail);
        }
        let Some(left) = forward_hop_limit(message.hop_limit) else {
            let detail = format!(
                "hop limit exhausted at {} on the way to {destination}",
                self.local
            );
            return fail(
                self,
                ForwardFailure::HopLimit,
                codes::HOP_LIMIT_EXCEEDED,
                detail,
            );
        };
        let Some(next) = self.next_hop(&destination) else {
            let detail = format!("{} has no route to {destination}", self.local);
            return fail(
                self,
                ForwardFailure::Unreachable,
                codes::UNREACHABLE,
                detail,
            );
        };
        if next == peer {
            let detail = format!(
                "routing loop: {} would send a request for {destination} back to {next}",
                self.local
            );
            return fail(self, ForwardFailure::Loop, codes::UNREACHABLE, detail);
        }
        if let Some(why) = self.transports.too_large(&next, &message.body) {
            let detail = format!("not forwarded: {why}");
            return fail(
                self,
                ForwardFailure::TooLarge,
                codes::REPLY_TOO_LARGE,
                detail,
            );
        }
        // A hop limit above this node's own is clamped to it: a sender cannot buy a
        // longer life for a message than the brokers allow.
        message.hop_limit = left.min(self.hop_limit);
        let route = message.route.clone();
        let span = debug_span!(
            target: crate::trace::TARGET,
            parent: None,
            "dms.forward",
            node = %self.local,
            origin = %route.origin,
            destination = %route.destination,
            from = %peer,
            upstream_id = id.0,
            next = %next,
            request_id = tracing::field::Empty,
            traceparent = tracing::field::Empty,
        );
        message.trace = crate::trace::forwarded(&span, message.trace);
        match self
            .proto
            .forward(now(), &next, message, self.forward_timeout)
        {
            Ok(sent) => {
                self.metrics.forwarded.increment(1);
                if let Some(sent) = sent {
                    span.record("request_id", sent.0);
                    let upstream = Upstream {
                        peer,
                        id,
                        route,
                        span,
                    };
                    self.state.forwarded.insert(sent, upstream);
                }
            }
            Err(error) => {
                let detail = format!("{} could not forward to {next}: {error}", self.local);
                fail(
                    self,
                    ForwardFailure::NextHopFailed,
                    codes::NEXT_HOP_FAILED,
                    detail,
                );
            }
        }
    }

    /// The outcome of a request this node forwarded: answered upstream. Returns the
    /// outcome back when `id` is not a forwarded request.
    pub(crate) fn on_forwarded_reply(
        &mut self,
        id: RequestId,
        result: Result<Multipart, ProtoRequestError>,
    ) -> Option<Result<Multipart, ProtoRequestError>> {
        let Some(upstream) = self.state.forwarded.remove(&id) else {
            return Some(result);
        };
        let answer = match result {
            Ok(body) => Ok(body),
            Err(ProtoRequestError::Remote(reason)) => Err(reason),
            // The refusal goes upstream as the refusing instance wrote it.
            Err(ProtoRequestError::Denied { detail, .. }) => Err(Reason {
                code: codes::ACCESS_DENIED,
                detail,
            }),
            Err(ProtoRequestError::Timeout) => {
                self.metrics.forward_failed(ForwardFailure::NextHopFailed);
                Err(Reason {
                    code: codes::NEXT_HOP_FAILED,
                    detail: format!(
                        "{}: no reply on the way to {} within {:?}",
                        self.local, upstream.route.destination, self.forward_timeout
                    ),
                })
            }
            Err(other) => {
                self.metrics.forward_failed(ForwardFailure::NextHopFailed);
                Err(Reason {
                    code: codes::NEXT_HOP_FAILED,
                    detail: format!(
                        "{}: next hop towards {} failed: {other}",
                        self.local, upstream.route.destination
                    ),
                })
            }
        };
        let _entered = upstream.span.enter();
        if let Err(error) = self.proto.reply(&upstream.peer, upstream.id, answer) {
            // The upstream link is gone: its own requester hears from its loss.
            debug!(%error, "forwarded reply not sent upstream");
        }
        None
    }
}

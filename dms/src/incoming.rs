//! Requests and notifications that reach a node, and how to answer them.

use std::sync::Arc;

use dms_core::Multipart;
use dms_core::PeerId;
use dms_core::path::ServicePath;
use dms_core::proto::RequestId;
use dms_core::proto::control::{Reason, codes};
use dms_core::trace::TraceContext;
use tokio::sync::mpsc;
use tracing::{Instrument, Span, debug_span};

use crate::RequestError;
use crate::driver::Command;
use crate::driver::gates::SessionGate;

/// A request or notification from another instance.
#[derive(Debug)]
pub struct IncomingRequest {
    pub(crate) from: ServicePath,
    pub(crate) body: Multipart,
    pub(crate) kind: Kind,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Request(Responder),
    Notification { broadcast: bool },
}

/// Answers one request. Dropping it unanswered sends an error reply (`NO_HANDLER`), so a
/// requester never waits for a reply that will not come.
#[derive(Debug)]
pub(crate) struct Responder {
    pub(crate) peer: PeerId,
    pub(crate) id: RequestId,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) answered: bool,
    /// The requester's trace context, as the REQ carried it.
    pub(crate) trace: Option<TraceContext>,
    /// `dms.handle` (see [`crate::trace`]).
    pub(crate) span: Span,
    /// The gate of the session the request came on: the reply is written from this task
    /// while it is open (see [`crate::driver::gates`]).
    pub(crate) gate: Option<Arc<SessionGate>>,
}

impl Responder {
    async fn answer(mut self, result: Result<Multipart, Reason>) -> Result<(), RequestError> {
        self.answered = true;
        let span = self.reply_span(result.as_ref().err().map(|reason| reason.code));
        let result = match &self.gate {
            Some(gate) => match span.in_scope(|| gate.try_reply(self.id, result)) {
                Ok(()) => return Ok(()),
                Err(result) => result,
            },
            None => result,
        };
        let command = Command::Reply {
            peer: self.peer.clone(),
            id: self.id,
            result,
        };
        self.commands
            .send(command)
            .instrument(span)
            .await
            .map_err(|_| RequestError::Closed)
    }

    /// `dms.reply`, a child of `dms.handle`.
    fn reply_span(&self, error_code: Option<u16>) -> Span {
        debug_span!(
            target: crate::trace::TARGET,
            parent: &self.span,
            "dms.reply",
            request_id = self.id.0,
            error_code,
        )
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            let _span = self.reply_span(Some(codes::NO_HANDLER)).entered();
            let _ = self.commands.try_send(Command::Reply {
                peer: self.peer.clone(),
                id: self.id,
                result: Err(Reason {
                    code: codes::NO_HANDLER,
                    detail: "request dropped without a reply".into(),
                }),
            });
        }
    }
}

impl IncomingRequest {
    /// The sender's service path.
    pub fn from(&self) -> &ServicePath {
        &self.from
    }

    /// The payload frames.
    pub fn body(&self) -> &Multipart {
        &self.body
    }

    /// The requester's W3C trace context (docs/PROTOCOL.md §3.4), if its request carried
    /// a valid one; `None` for notifications. Its parent id is the requester's span.
    ///
    /// To keep the trace going through a request this handler makes in turn (without the
    /// feature `otel`, which does it from the current span), pass it on with
    /// [`RequestOptions::trace`](crate::RequestOptions::trace):
    ///
    /// ```no_run
    /// # async fn forward(node: dms::Node, request: dms::IncomingRequest) -> Result<(), dms::RequestError> {
    /// use dms::RequestOptions;
    ///
    /// let next = "/demo/cn/android/w1/g1/Battle".parse().expect("a cluster path");
    /// let options = RequestOptions::new().trace(request.trace_context());
    /// let reply = node.request_with(&next, 7u64, request.body().clone(), options).await?;
    /// request.reply(reply.body).await
    /// # }
    /// ```
    pub fn trace_context(&self) -> Option<TraceContext> {
        match &self.kind {
            Kind::Request(responder) => responder.trace,
            Kind::Notification { .. } => None,
        }
    }

    /// The `dms.handle` span of this request (DEBUG level, target `dms::trace`; fields
    /// `node`, `from`, `request_id`, `traceparent`): run the handler in it, so that what
    /// it logs and the requests it makes belong to the request's trace. With the feature
    /// `otel` its OpenTelemetry parent is the requester's span. A disabled span for a
    /// notification.
    ///
    /// ```no_run
    /// use tracing::Instrument;
    ///
    /// # async fn serve(node: dms::Node) {
    /// while let Some(request) = node.next_request().await {
    ///     let span = request.span();
    ///     tokio::spawn(
    ///         async move {
    ///             tracing::info!("handling");
    ///             let body = request.body().clone();
    ///             let _ = request.reply(body).await;
    ///         }
    ///         .instrument(span),
    ///     );
    /// }
    /// # }
    /// ```
    pub fn span(&self) -> Span {
        match &self.kind {
            Kind::Request(responder) => responder.span.clone(),
            Kind::Notification { .. } => Span::none(),
        }
    }

    /// Whether the sender waits for a reply.
    pub fn expects_reply(&self) -> bool {
        matches!(self.kind, Kind::Request(_))
    }

    /// Whether this is one copy of a broadcast to the cluster.
    pub fn is_broadcast(&self) -> bool {
        matches!(self.kind, Kind::Notification { broadcast: true })
    }

    /// Answers the request with `body` (does nothing for a notification).
    pub async fn reply(self, body: Multipart) -> Result<(), RequestError> {
        match self.kind {
            Kind::Request(responder) => responder.answer(Ok(body)).await,
            Kind::Notification { .. } => Ok(()),
        }
    }

    /// Answers the request with an error the requester sees as `RequestError::Remote`.
    pub async fn reply_error(
        self,
        code: u16,
        detail: impl Into<String>,
    ) -> Result<(), RequestError> {
        match self.kind {
            Kind::Request(responder) => {
                responder
                    .answer(Err(Reason {
                        code,
                        detail: detail.into(),
                    }))
                    .await
            }
            Kind::Notification { .. } => Ok(()),
        }
    }
}

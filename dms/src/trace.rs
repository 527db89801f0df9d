//! Trace context in the kernel: the `tracing` spans of a request's life and, with the
//! feature `otel`, the bridge between their OpenTelemetry contexts and the `traceparent`
//! a REQ carries (docs/PROTOCOL.md §3.4).
//!
//! Spans (all at DEBUG level, target `dms::trace`):
//!
//! - `dms.request`: the caller's side of one request, from [`Node::request`](crate::Node::request)
//!   and its variants to the reply; a child of the caller's current span. Fields `node`,
//!   `cluster`, `key` (cluster requests), `instance` (the instance it went to), `request_id`
//!   (the id on the wire), `traceparent` (what the REQ carried).
//! - `dms.handle`: the responder's side, from the REQ's arrival to the reply; a root span in
//!   `tracing` (the requester's span lives in another process), with the requester's trace
//!   context as its OpenTelemetry parent under `otel`. Fields `node`, `from`, `request_id`,
//!   `traceparent` (what the REQ carried). The handler runs in it with
//!   [`IncomingRequest::span`](crate::IncomingRequest::span).
//! - `dms.reply`: the answer being handed to the kernel; a child of `dms.handle`. Fields
//!   `request_id`, `error_code` (an error reply).
//! - `dms.forward`: a broker handing a routed request on (docs/PROTOCOL.md §3.5), from its
//!   arrival to the reply going back upstream; a root span in `tracing` with the
//!   sender's trace context as its OpenTelemetry parent under `otel`, like `dms.handle`.
//!   Fields `node`, `origin`, `destination`, `from` (the upstream hop), `upstream_id`,
//!   `next` (the next hop), `request_id` (the id on the next link), `traceparent` (what it
//!   arrived with). The request goes on with a traceparent naming `dms.forward` as its
//!   parent under `otel` (unchanged otherwise), so the destination's `dms.handle` is its
//!   child and one trace spans every hop.
//!
//! What a REQ carries: with `otel`, the context of its `dms.request` span when an
//! OpenTelemetry layer records that span (the trace of the caller's current span if it
//! has an OpenTelemetry context, else of the trace context the caller gave; the
//! `dms.request` span as parent id); else the caller's current span's context; else (no
//! `otel`, no layer) the trace context the caller gave, unchanged; nothing when there is
//! none.

use dms_core::trace::TraceContext;
use tracing::Span;

/// The target of the kernel's trace spans.
pub(crate) const TARGET: &str = "dms::trace";

/// The trace context the REQ of the request whose span is `span` (`dms.request`, just
/// created, not entered yet) carries, given the one the caller set.
pub(crate) fn outgoing(span: &Span, explicit: Option<TraceContext>) -> Option<TraceContext> {
    #[cfg(feature = "otel")]
    let chosen = otel::outgoing(span, explicit);
    #[cfg(not(feature = "otel"))]
    let chosen = explicit;
    if let Some(trace) = &chosen {
        span.record("traceparent", tracing::field::display(trace));
    }
    chosen
}

/// Links the `dms.handle` span `span` (just created) to the requester's context.
pub(crate) fn incoming(span: &Span, remote: Option<TraceContext>) {
    let Some(remote) = remote else {
        return;
    };
    span.record("traceparent", tracing::field::display(&remote));
    #[cfg(feature = "otel")]
    otel::set_remote_parent(span, remote);
}

/// Links the `dms.forward` span `span` (just created) to the upstream hop's context and
/// returns the trace context the request goes on with.
pub(crate) fn forwarded(span: &Span, remote: Option<TraceContext>) -> Option<TraceContext> {
    incoming(span, remote);
    #[cfg(feature = "otel")]
    let onward = otel::of_span(span).or(remote);
    #[cfg(not(feature = "otel"))]
    let onward = remote;
    onward
}

#[cfg(feature = "otel")]
mod otel {
    use dms_core::trace::TraceContext;
    use opentelemetry::Context;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    /// An OpenTelemetry context whose (remote) span is the parent `trace` names.
    fn remote(trace: TraceContext) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(trace.trace_id().to_be_bytes()),
            SpanId::from_bytes(trace.parent_id().to_be_bytes()),
            TraceFlags::new(trace.flags()),
            true,
            TraceState::default(),
        ))
    }

    /// The trace context naming the span of `cx` as parent, if it has a valid one.
    fn of(cx: &Context) -> Option<TraceContext> {
        let span = cx.span();
        let span = span.span_context();
        if !span.is_valid() {
            return None;
        }
        TraceContext::new(
            u128::from_be_bytes(span.trace_id().to_bytes()),
            u64::from_be_bytes(span.span_id().to_bytes()),
            span.trace_flags().to_u8(),
        )
    }

    pub(super) fn outgoing(span: &Span, explicit: Option<TraceContext>) -> Option<TraceContext> {
        // The caller's span is the parent when it has a context; else the one given. (A
        // handler passing on `IncomingRequest::trace_context()` from within its
        // `dms.handle` keeps its own span as the parent.)
        let current = of(&Span::current().context());
        if let (None, Some(trace)) = (current, explicit) {
            // Fails only when no layer records the span: then `explicit` goes as it is.
            let _ = span.set_parent(remote(trace));
        }
        of(&span.context()).or(current).or(explicit)
    }

    /// The trace context naming `span` as parent, when an OpenTelemetry layer records it.
    pub(super) fn of_span(span: &Span) -> Option<TraceContext> {
        of(&span.context())
    }

    pub(super) fn set_remote_parent(span: &Span, trace: TraceContext) {
        let _ = span.set_parent(remote(trace));
    }
}

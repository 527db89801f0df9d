//! Requests waiting for a first ready instance.
//!
//! A request to a target cluster whose instances are registered but not probed yet (or
//! whose registrations have not been read from discovery yet, right after start) waits,
//! within its own timeout, for the first one to answer READY, instead of failing with
//! `NoInstance` at once. A request to a cluster that really has no instance (read from
//! discovery: none registered, or every one refused us) still fails at once.

use std::time::{Duration, Instant};

use dms_core::Multipart;
use tokio::sync::oneshot;

use crate::driver::Destination;
use crate::{Reply, RequestError};

/// Requests waiting at most, per node; beyond, requests fail with `TooManyPending`.
const MAX_AWAITING: usize = 4096;

/// A request that waits for a ready instance of its destination.
#[derive(Debug)]
pub(crate) struct AwaitingRequest {
    pub(crate) to: Destination,
    pub(crate) body: Multipart,
    /// When the request times out, counted from when the application made it.
    pub(crate) deadline: Instant,
    pub(crate) done: oneshot::Sender<Result<Reply, RequestError>>,
    /// What the REQ will carry (docs/PROTOCOL.md §3.4).
    pub(crate) trace: Option<dms_core::trace::TraceContext>,
    /// The request's `dms.request` span.
    pub(crate) span: tracing::Span,
}

impl AwaitingRequest {
    /// The time left before `deadline`, if any.
    pub(crate) fn left(&self, now: Instant) -> Option<Duration> {
        self.deadline
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())
    }
}

/// The waiting requests, in arrival order.
#[derive(Debug, Default)]
pub(crate) struct Awaiting {
    queue: Vec<AwaitingRequest>,
}

impl Awaiting {
    /// Queues `request`; when the queue is full it fails at once with `TooManyPending`.
    pub(crate) fn push(&mut self, request: AwaitingRequest) {
        if self.queue.len() >= MAX_AWAITING {
            let _ = request.done.send(Err(RequestError::TooManyPending));
            return;
        }
        self.queue.push(request);
    }

    /// Whether no request waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queue.iter().map(|r| r.deadline).min()
    }

    /// Every waiting request, to be tried again (those that still cannot go are pushed
    /// back by the caller).
    pub(crate) fn take_all(&mut self) -> Vec<AwaitingRequest> {
        std::mem::take(&mut self.queue)
    }
}

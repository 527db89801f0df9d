//! Direct requests: a request the caller's task picks an instance for and writes to the
//! link itself, without a hand-over to the node's task (one task wake-up and one turn of
//! the driver less per request; the reply still comes through the driver, which decodes
//! it).
//!
//! The driver publishes, per target cluster, a [`ClusterView`]: the candidates its
//! dispatch policy picks from and the [session gate](super::gates) of each, only while
//! every live instance of the cluster is linked directly (none reached through a broker)
//! and the policy does not read pending counts. It withdraws every view when what the
//! pick depends on changes (a session up or down, discovery, routes, link costs), and a
//! gate refuses a request once its session ended or while messages for its peer are
//! parked. Whatever is refused here goes through the driver as before: a cluster without
//! a view, a closed or marked gate, a full link, a body over the link's limits.
//!
//! Such a request carries an external id (see [`RequestId::EXTERNAL`]): the protocol does
//! not track it, its waiter sits in the gate, its deadline is the caller's own timer, and
//! the driver ends it when its session ends.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::gates::{ReplySender, SessionGate};
use super::*;

/// What a request to a cluster can be sent on from the caller's task.
pub(crate) struct ClusterView {
    /// What the dispatch policy picks from, as the driver would pass them (every
    /// `pending` 0: the policy does not read it).
    candidates: Vec<Candidate>,
    /// The gate of each candidate's session, in the same order.
    gates: Vec<Arc<SessionGate>>,
}

/// The views of one node and the ids of its direct requests.
pub(crate) struct DirectRequests {
    views: RwLock<HashMap<ClusterPath, Arc<ClusterView>, RandomState>>,
    next_id: AtomicU64,
    /// The node's dispatch policy, if it may pick from the caller's task (it does not
    /// read pending counts).
    policy: Option<Arc<dyn DispatchPolicy>>,
}

impl std::fmt::Debug for DirectRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectRequests")
            .field("enabled", &self.policy.is_some())
            .finish_non_exhaustive()
    }
}

impl DirectRequests {
    pub(crate) fn new(policy: &Arc<dyn DispatchPolicy>) -> Self {
        Self {
            views: RwLock::default(),
            next_id: AtomicU64::new(1),
            policy: (!policy.reads_pending()).then(|| policy.clone()),
        }
    }

    /// Sends a request for `cluster` with `key` from the caller's task, `done` waiting
    /// for its outcome; hands `body` and `done` back when it must go through the driver
    /// (see the module docs).
    pub(crate) fn try_request(
        &self,
        cluster: &ClusterPath,
        key: u64,
        body: Multipart,
        trace: Option<TraceContext>,
        done: ReplySender,
    ) -> Result<Written, (Multipart, ReplySender)> {
        let Some(policy) = &self.policy else {
            return Err((body, done));
        };
        let view = self
            .views
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(cluster)
            .cloned();
        let Some(gate) = view
            .as_ref()
            .and_then(|view| view.gates.get(policy.pick(key, &view.candidates)?))
        else {
            return Err((body, done));
        };
        // Ids of one process never repeat (2^63 of them); the responder echoes them.
        let id = RequestId(self.next_id.fetch_add(1, Ordering::Relaxed) | RequestId::EXTERNAL);
        gate.try_request(id, body, trace, done)?;
        Ok(Written {
            gate: gate.clone(),
            id,
        })
    }

    /// Publishes what requests for `cluster` may be sent on from callers' tasks.
    fn publish(&self, cluster: &ClusterPath, view: ClusterView) {
        self.views
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(cluster.clone(), Arc::new(view));
    }

    /// Withdraws every view: requests go through the driver until it publishes again.
    fn withdraw(&self) {
        let mut views = self
            .views
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !views.is_empty() {
            views.clear();
        }
    }
}

/// A request written from the caller's task, waiting for its reply.
#[derive(Debug)]
pub(crate) struct Written {
    gate: Arc<SessionGate>,
    id: RequestId,
}

impl Written {
    /// The instance it went to.
    pub(crate) fn to(&self) -> &ServicePath {
        self.gate.path()
    }

    /// Its id.
    pub(crate) fn id(&self) -> RequestId {
        self.id
    }

    /// Its outcome, from `reply` (the receiver of the `done` it was sent with), or
    /// [`RequestError::Timeout`] at `deadline` (`None`: no deadline).
    pub(crate) async fn outcome(
        self,
        mut reply: oneshot::Receiver<Result<Reply, RequestError>>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Reply, RequestError> {
        let waited = match deadline {
            Some(at) => tokio::time::timeout_at(at, &mut reply).await.ok(),
            None => Some((&mut reply).await),
        };
        match waited {
            Some(result) => result.unwrap_or(Err(RequestError::Closed)),
            // Timed out: withdrawn, unless its outcome came meanwhile.
            None => match self.gate.take_waiter(self.id) {
                Some(_) => Err(RequestError::Timeout),
                None => reply.try_recv().unwrap_or(Err(RequestError::Timeout)),
            },
        }
    }
}

impl Drop for Written {
    /// A caller that stops waiting (its future dropped) withdraws the waiter: a reply
    /// that still comes is counted late.
    fn drop(&mut self) {
        self.gate.take_waiter(self.id);
    }
}

impl Driver {
    /// Publishes the view of `cluster` built from its `live` instances, if requests for
    /// it may be sent from callers' tasks: every instance linked directly and gated.
    pub(super) fn publish_view(&self, cluster: &ClusterPath, live: &[(u32, dispatch::Picked)]) {
        if self.direct.policy.is_none() {
            return;
        }
        let mut view = ClusterView {
            candidates: Vec::with_capacity(live.len()),
            gates: Vec::with_capacity(live.len()),
        };
        for (bucket, picked) in live {
            let Some(gate) = picked.direct_peer().and_then(|peer| self.gate_of(peer)) else {
                return;
            };
            view.candidates.push(Candidate::new(*bucket));
            view.gates.push(gate);
        }
        self.direct.publish(cluster, view);
    }

    /// Withdraws every published view (see [`DirectRequests::withdraw`]).
    pub(super) fn withdraw_views(&self) {
        self.direct.withdraw();
    }
}

//! The dispatcher: which instance a request, notification or broadcast goes to (the
//! dispatch policy over the instances this node reaches, directly or through brokers),
//! and the requests waiting for their replies.

use super::*;

/// The instance a message goes to and the adjacent peer it is handed to.
#[derive(Debug, Clone)]
pub(crate) struct Picked {
    /// The adjacent peer: `to` itself, or the next hop towards it.
    next: PeerId,
    to: ServicePath,
    /// Sent through the routing table (`next` is not `to`).
    routed: bool,
}

impl Picked {
    /// The adjacent peer, if the instance is reached over its own session.
    pub(super) fn direct_peer(&self) -> Option<&PeerId> {
        (!self.routed).then_some(&self.next)
    }
}

/// What the caller of a request to `to` hears of `result` (the protocol's outcome).
pub(super) fn outcome(
    to: ServicePath,
    result: Result<Multipart, dms_core::proto::RequestError>,
) -> Result<Reply, RequestError> {
    match result {
        Ok(body) => Ok(Reply { from: to, body }),
        Err(dms_core::proto::RequestError::Timeout) => Err(RequestError::Timeout),
        Err(dms_core::proto::RequestError::PeerLost(reason)) => {
            Err(RequestError::session_ended(&reason))
        }
        Err(dms_core::proto::RequestError::Remote(reason)) => {
            match RouteFailure::from_code(reason.code) {
                Some(failure) => Err(RequestError::Route {
                    failure,
                    detail: reason.detail,
                }),
                None => Err(RequestError::Remote {
                    code: reason.code,
                    detail: reason.detail,
                }),
            }
        }
        // The instance asked, also when a broker relayed its refusal.
        Err(dms_core::proto::RequestError::Denied { op, detail, .. }) => {
            Err(RequestError::Denied {
                service: to,
                op,
                detail,
            })
        }
        Err(dms_core::proto::RequestError::NotSent(why)) => Err(RequestError::LinkFull(why)),
        Err(other) => Err(RequestError::PeerLost(other.to_string())),
    }
}

/// A request waiting for its reply.
pub(super) struct Waiter {
    to: ServicePath,
    pub(super) done: oneshot::Sender<Result<Reply, RequestError>>,
}

/// A request or notification the protocol refused to queue (certainly not sent).
pub(super) fn not_sent(error: dms_core::proto::ProtoError, path: &ServicePath) -> RequestError {
    match error {
        dms_core::proto::ProtoError::TooManyPending { .. } => RequestError::TooManyPending,
        dms_core::proto::ProtoError::NotReady(_) => RequestError::NoInstance(path.to_string()),
        other => RequestError::NoInstance(format!("{path}: {other}")),
    }
}

impl Driver {
    /// Sends a request to the instance its destination picks; waits (within its deadline)
    /// when none is ready yet but one may come (see [`crate::awaiting`]).
    pub(super) fn request(&mut self, now: Instant, request: AwaitingRequest) {
        let Some(timeout) = request.left(now) else {
            let _ = request.done.send(Err(RequestError::NoInstance(format!(
                "{}: no instance became ready within the request's timeout",
                request.to
            ))));
            return;
        };
        let picked = self.pick(&request.to);
        if matches!(picked, Err(RequestError::NoInstance(_))) && self.may_come(&request.to) {
            self.state.awaiting.push(request);
            return;
        }
        let AwaitingRequest {
            body,
            done,
            trace,
            span,
            ..
        } = request;
        let result = picked.and_then(|picked| {
            self.check_size(&picked.next, &body)?;
            let sent = if picked.routed {
                self.metrics.routed.increment(1);
                let route = Route {
                    origin: self.local.clone(),
                    destination: picked.to.clone(),
                };
                self.proto
                    .forward(
                        now,
                        &picked.next,
                        Routed {
                            flags: flags::EXPECT_REPLY,
                            route,
                            hop_limit: self.hop_limit,
                            body,
                            trace,
                        },
                        timeout,
                    )
                    .map(|id| id.unwrap_or(RequestId(0)))
            } else {
                self.proto
                    .request_traced(now, &picked.next, body, timeout, trace)
            };
            sent.map(|id| (id, picked.to.clone()))
                .map_err(|e| not_sent(e, &picked.to))
        });
        match result {
            Ok((id, path)) => {
                span.record("instance", tracing::field::display(&path));
                span.record("request_id", id.0);
                self.state.waiting.insert(id, Waiter { to: path, done });
            }
            Err(error) => {
                let _ = done.send(Err(error));
            }
        }
    }

    /// Whether an instance of `to` may become ready: its cluster was not read from
    /// discovery yet, or it has registered instances that did not refuse us.
    pub(super) fn may_come(&self, to: &Destination) -> bool {
        let (cluster, only) = match to {
            Destination::Cluster(cluster, _) => (cluster.clone(), None),
            Destination::Instance(path) => (path.cluster(), Some(path)),
        };
        let Some(instances) = self.targets.get(&cluster) else {
            return false;
        };
        if !self.state.synced.contains(&cluster) {
            return true;
        }
        instances.keys().any(|path| {
            only.is_none_or(|only| only == path) && !self.state.denied.contains_key(path)
        })
    }

    /// Tries the waiting requests again (an instance became ready, discovery changed, or
    /// a deadline passed).
    pub(super) fn retry_awaiting(&mut self) {
        if self.state.awaiting.is_empty() {
            return;
        }
        let now = now();
        for request in self.state.awaiting.take_all() {
            self.request(now, request);
        }
    }

    /// `TooLarge` when `body` breaks the wire limits of `peer`'s link: refused before it
    /// is queued (it would be dropped at the link, its caller left to time out).
    pub(super) fn check_size(&self, peer: &PeerId, body: &Multipart) -> Result<(), RequestError> {
        match self.transports.too_large(peer, body) {
            Some(why) => Err(RequestError::TooLarge(why)),
            None => Ok(()),
        }
    }

    /// Live instances of a target cluster, sorted by bucket: those with a probed session,
    /// and those the routing table reaches. Kept per cluster until what they depend on
    /// changes ([`reachability_changed`](Self::reachability_changed)), so a request
    /// costs no allocation and no sort, however big the cluster.
    pub(super) fn live_instances(
        &mut self,
        cluster: &ClusterPath,
    ) -> Result<Arc<[(u32, Picked)]>, RequestError> {
        if let Some(live) = self.state.live.get(cluster) {
            return Ok(live.clone());
        }
        let instances: Vec<(ServicePath, u32)> = self
            .targets
            .get(cluster)
            .ok_or_else(|| RequestError::NotATarget(cluster.clone()))?
            .iter()
            .map(|(path, reg)| (path.clone(), reg.bucket))
            .collect();
        let mut live: Vec<(u32, Picked)> = instances
            .into_iter()
            .filter_map(|(path, bucket)| Some((bucket, self.reach(&path)?)))
            .collect();
        live.sort_by(|a, b| (a.0, &a.1.to).cmp(&(b.0, &b.1.to)));
        let live: Arc<[(u32, Picked)]> = live.into();
        self.state.live.insert(cluster.clone(), live.clone());
        self.publish_view(cluster, &live);
        Ok(live)
    }

    /// Sessions, registrations, refusals or routes changed: the live instances are
    /// computed again when next asked for.
    pub(super) fn reachability_changed(&mut self) {
        self.state.live.clear();
        self.withdraw_views();
    }

    /// How to reach `to`: over its own session, or else through the routing table (a
    /// routed target always; a direct target while its own link is down, if brokers
    /// reach it).
    pub(super) fn reach(&mut self, to: &ServicePath) -> Option<Picked> {
        let direct = to.peer_id();
        if self.state.ready.contains_key(&direct) {
            return Some(Picked {
                next: direct,
                to: to.clone(),
                routed: false,
            });
        }
        // An instance that refused our session is not reached around its refusal.
        if self.state.denied.contains_key(to) {
            return None;
        }
        let next = self.next_hop(to)?;
        Some(Picked {
            next,
            to: to.clone(),
            routed: true,
        })
    }

    /// The ready adjacent peer to send a message for `to` to: `to` itself when linked,
    /// else the routing table's next hop.
    pub(crate) fn next_hop(&mut self, to: &ServicePath) -> Option<PeerId> {
        let direct = to.peer_id();
        if self.state.ready.contains_key(&direct) {
            return Some(direct);
        }
        let next = self.router.next_hop(to)?.peer_id();
        self.state.ready.contains_key(&next).then_some(next)
    }

    /// A notification or one copy of a broadcast, directly or routed.
    pub(super) fn send_one_way(
        &mut self,
        picked: &Picked,
        body: Multipart,
        broadcast: bool,
    ) -> Result<(), dms_core::proto::ProtoError> {
        if !picked.routed {
            return self.proto.notify(&picked.next, body, broadcast);
        }
        self.metrics.routed.increment(1);
        let route = Route {
            origin: self.local.clone(),
            destination: picked.to.clone(),
        };
        let flag = if broadcast { flags::BROADCAST } else { 0 };
        self.proto
            .forward(
                now(),
                &picked.next,
                Routed {
                    flags: flag,
                    route,
                    hop_limit: self.hop_limit,
                    body,
                    trace: None,
                },
                Duration::ZERO,
            )
            .map(|_| ())
    }

    pub(super) fn pick(&mut self, to: &Destination) -> Result<Picked, RequestError> {
        match to {
            Destination::Instance(path) => {
                if let Some(picked) = self.reach(path) {
                    Ok(picked)
                } else if let Some(detail) = self.state.denied.get(path) {
                    Err(RequestError::connect_denied(path, detail))
                } else {
                    Err(RequestError::NoInstance(path.to_string()))
                }
            }
            Destination::Cluster(cluster, key) => {
                let live = self.live_instances(cluster)?;
                // One buffer for every request's candidates: no allocation per request.
                let mut candidates = std::mem::take(&mut self.state.candidates);
                candidates.clear();
                candidates.extend(live.iter().map(|(bucket, picked)| Candidate {
                    bucket: *bucket,
                    pending: self.proto.pending_for(&picked.next),
                }));
                let chosen = self.policy.pick(*key, &candidates);
                self.state.candidates = candidates;
                match chosen.and_then(|i| live.get(i)) {
                    Some((_, picked)) => Ok(picked.clone()),
                    None => {
                        let denied = self
                            .state
                            .denied
                            .iter()
                            .find(|(path, _)| cluster.contains(path));
                        match denied {
                            Some((path, detail)) => Err(RequestError::connect_denied(path, detail)),
                            None => Err(RequestError::NoInstance(cluster.to_string())),
                        }
                    }
                }
            }
        }
    }

    /// The outcome of request `id`: to its waiting caller, or (a request this node
    /// forwarded) upstream.
    pub(super) fn on_reply(
        &mut self,
        id: RequestId,
        result: Result<Multipart, dms_core::proto::RequestError>,
    ) {
        let Some(result) = self.on_forwarded_reply(id, result) else {
            return;
        };
        if let Some(waiter) = self.state.waiting.remove(&id) {
            // A reply (not a timeout or a loss) whose caller stopped waiting, its future
            // dropped, is counted late, as for a request sent from the caller's task.
            let replied = !matches!(
                result,
                Err(dms_core::proto::RequestError::Timeout
                    | dms_core::proto::RequestError::PeerLost(_)
                    | dms_core::proto::RequestError::NotSent(_))
            );
            if waiter.done.send(outcome(waiter.to, result)).is_err() && replied {
                self.proto.count_late_reply();
            }
        }
    }

    /// Sends a notification to the instance `to` picks.
    pub(super) fn notify(
        &mut self,
        to: &Destination,
        body: Multipart,
    ) -> Result<ServicePath, RequestError> {
        self.pick(to).and_then(|picked| {
            self.check_size(&picked.next, &body)?;
            self.send_one_way(&picked, body, false)
                .map(|()| picked.to.clone())
                .map_err(|e| not_sent(e, &picked.to))
        })
    }

    /// Sends one copy of a broadcast to every live instance of `cluster`.
    pub(super) fn broadcast(
        &mut self,
        cluster: &ClusterPath,
        body: Multipart,
    ) -> Result<Vec<ServicePath>, RequestError> {
        match self.live_instances(cluster) {
            Err(error) => Err(error),
            Ok(live) => {
                // One copy per live instance, directly or through the routing
                // table: each gets it exactly once.
                let mut reached = Vec::new();
                for (_, picked) in live.iter() {
                    if self.send_one_way(picked, body.clone(), true).is_ok() {
                        reached.push(picked.to.clone());
                    }
                }
                Ok(reached)
            }
        }
    }

    /// The instances of `cluster` and how this node reaches them.
    pub(super) fn instances(&mut self, cluster: &ClusterPath) -> Vec<InstanceStatus> {
        let registered: Vec<(ServicePath, Registration)> = self
            .targets
            .get(cluster)
            .into_iter()
            .flat_map(|instances| instances.iter())
            .map(|(path, reg)| (path.clone(), reg.clone()))
            .collect();
        let mut list: Vec<InstanceStatus> = registered
            .iter()
            .map(|(path, reg)| InstanceStatus {
                path: path.clone(),
                bucket: reg.bucket,
                endpoints: reg.endpoints.clone(),
                state: if self.state.ready.contains_key(&path.peer_id()) {
                    InstanceState::Ready
                } else if self.state.denied.contains_key(path) {
                    InstanceState::Denied
                } else if self.next_hop(path).is_some() {
                    InstanceState::Routed
                } else if self.routed_targets.contains(cluster) && !self.router.synced() {
                    // The routing table has not been read yet: a route may come.
                    InstanceState::Connecting
                } else if self.routed_targets.contains(cluster)
                    || self.state.retry_at.contains_key(path)
                {
                    InstanceState::Unreachable
                } else {
                    InstanceState::Connecting
                },
            })
            .collect();
        list.sort_by_key(|s| s.bucket);
        list
    }
}

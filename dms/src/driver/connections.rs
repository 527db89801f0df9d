//! The connection manager: dialling the instances of the targets (Prober: dial, probe,
//! redial with backoff), and what happens when a session ends (Sentinel: the protocol's
//! liveness verdicts close the link).

use super::*;

/// Outcome of a connect attempt, reported back to the driver.
pub(super) struct Connected {
    path: ServicePath,
    result: Result<PeerId, String>,
}

impl Driver {
    pub(super) fn on_peer_lost(
        &mut self,
        peer: PeerId,
        path: Option<ServicePath>,
        reason: LossReason,
    ) {
        self.close_gate(&peer, RequestError::session_ended(&reason));
        if let Some(lost) = self.state.ready.remove(&peer) {
            self.router.link_down(&lost);
        }
        self.metrics.peer_lost(&reason, self.state.ready.len());
        let path = path.or_else(|| std::str::from_utf8(peer.as_bytes()).ok()?.parse().ok());
        info!(node = %self.local, peer = %peer, %reason, "peer lost");
        if let Some(path) = &path {
            let _ = self.events.send(NodeEvent::PeerDown {
                path: path.clone(),
                reason: reason.to_string(),
            });
            if let LossReason::Disconnected {
                initiator: Initiator::Remote,
                reason,
            } = &reason
            {
                if reason.code == codes::ACCESS_DENIED {
                    self.state
                        .denied
                        .insert(path.clone(), reason.detail.clone());
                }
            }
        }
        // Its session, and perhaps a refusal: who is reached changed.
        self.reachability_changed();
        // The session is over but the link may be up (a silent peer, a violation, a
        // DISCONNECT): close it, unless it is down already.
        // The driver redials the instance itself while it is registered (transports never
        // redial).
        if !matches!(reason, LossReason::LinkDown) {
            self.close_link(peer);
        }
        if let Some(path) = path {
            if self.state.deregistered.contains(&path) {
                self.forget(&path);
            } else if self.registration(&path).is_some() && !self.state.denied.contains_key(&path) {
                self.schedule_retry(path);
            }
        }
        // A refusal may leave waiting requests with no instance that could come.
        self.retry_awaiting();
    }

    /// A link closed by [`close_link`](Self::close_link) is gone: dial the instance again
    /// if it is (still, or again) registered.
    pub(super) fn on_closed(&mut self, peer: PeerId, connected_tx: &mpsc::Sender<Connected>) {
        self.state.closing.remove(&peer);
        let path = std::str::from_utf8(peer.as_bytes())
            .ok()
            .and_then(|p| p.parse::<ServicePath>().ok());
        if let Some(path) = path {
            if !self.state.retry_at.contains_key(&path) {
                self.maybe_connect(&path, connected_tx);
            }
        }
    }

    /// Closes the link to `peer` (flushing it) in the background; the peer is not dialled
    /// again until that is done. The link closed is the one the driver knows: a newer
    /// link of the peer that the driver has not seen come up yet stays up.
    pub(super) fn close_link(&mut self, peer: PeerId) {
        if !self.state.closing.insert(peer.clone()) {
            return;
        }
        let link = self.transports.link_of(&peer);
        let report = self.closed_tx.clone();
        tokio::spawn(async move {
            if let Some((dialer, link)) = link {
                let closing = dialer.disconnect_link(&peer, link);
                let _ = tokio::time::timeout(SHUTDOWN_FLUSH, closing).await;
            }
            if let Some(report) = report {
                let _ = report.send(peer).await;
            }
        });
    }

    pub(super) fn connect_cluster(
        &mut self,
        cluster: &ClusterPath,
        connected_tx: &mpsc::Sender<Connected>,
    ) {
        let paths: Vec<ServicePath> = self
            .targets
            .get(cluster)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for path in paths {
            self.maybe_connect(&path, connected_tx);
        }
    }

    /// Dials a registered instance unless a session exists, a dial is under way, it
    /// refused us, or it will dial us (it targets our cluster and its path sorts first:
    /// two instances that target each other share one link).
    pub(super) fn maybe_connect(
        &mut self,
        path: &ServicePath,
        connected_tx: &mpsc::Sender<Connected>,
    ) {
        if *path == self.local
            || self.routed_targets.contains(&path.cluster())
            || self.state.connecting.contains(path)
            || self
                .state
                .closing
                .contains(path.peer_id().as_bytes().as_ref())
            || self.state.denied.contains_key(path)
            || self.state.retry_at.contains_key(path)
            || self.proto.session_state(&path.peer_id()).is_some()
        {
            return;
        }
        let Some(registration) = self.registration(path) else {
            return;
        };
        if registration.targets(&self.local.cluster()) && *path < self.local {
            return;
        }
        let Some((endpoint, dialer)) = self.transports.dialable(&registration.endpoints) else {
            warn!(instance = %path, endpoints = ?registration.endpoints, "no endpoint in its registration that this node can dial");
            return;
        };
        self.state.connecting.insert(path.clone());
        let path = path.clone();
        let report = connected_tx.clone();
        tokio::spawn(async move {
            let result = dialer.connect(&endpoint).await.map_err(|e| e.to_string());
            let _ = report.send(Connected { path, result }).await;
        });
    }

    pub(super) fn on_connected(&mut self, done: Connected) {
        self.state.connecting.remove(&done.path);
        match done.result {
            Ok(peer) if peer == done.path.peer_id() => {
                debug!(node = %self.local, instance = %done.path, "linked; probing");
            }
            Ok(other) => {
                warn!(instance = %done.path, answered = %other, "endpoint answered with another identity");
                self.close_link(other);
                self.schedule_retry(done.path);
            }
            Err(error) => {
                debug!(node = %self.local, instance = %done.path, %error, "connect failed");
                self.schedule_retry(done.path);
            }
        }
    }

    pub(super) fn schedule_retry(&mut self, path: ServicePath) {
        let (initial, cap) = self.reconnect;
        let backoff = self
            .state
            .backoff
            .entry(path.clone())
            .or_insert_with(|| Backoff::new(initial, cap));
        let delay = backoff.next_delay().max(initial / 2);
        self.state.retry_at.insert(path, now() + delay);
        self.metrics.redials.increment(1);
    }
}

//! The kernel's figures, through the [`metrics`] facade: the application installs the
//! recorder it likes (`metrics-exporter-prometheus` in `dms node --metrics`); without
//! one, every figure is a no-op.
//!
//! The figures and their names are listed in the [crate docs](crate#metrics).

use std::sync::OnceLock;
use std::time::Duration;

use dms_core::Role;
use dms_core::proto::control::codes;
use dms_core::proto::{LossReason, ProtoStats};
use dms_link::LinkStats;
use metrics::{Counter, Gauge, counter, gauge};

use crate::RequestError;
use crate::transport::MediaStats;

/// How often the counters kept by the transports and the protocol are copied into the
/// recorder.
pub(crate) const EXPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Handles of one node's figures, registered once at start (an increment is then one
/// atomic add in the recorder, or nothing without one).
#[derive(Debug)]
pub(crate) struct NodeMetrics {
    requests_ok: Counter,
    requests_failed: [Counter; FAILURES.len()],
    received: [Counter; 3],
    pub(crate) dropped_backlog_full: Counter,
    pub(crate) dropped_incoming_full: Counter,
    pub(crate) dropped_peer_lost: Counter,
    pub(crate) overloaded: Counter,
    pub(crate) replies_too_large: Counter,
    pub(crate) throttled: Counter,
    peers_up: [Counter; 2],
    peers_lost: [Counter; LOSSES.len()],
    pub(crate) redials: Counter,
    /// Registration leases lost (expired, revoked, or not kept alive through an outage).
    pub(crate) leases_lost: Counter,
    /// Registrations written again under a new lease after a lost one.
    pub(crate) reregistrations: Counter,
    /// Snapshots of a followed part of discovery read again (compacted history, broken
    /// watch).
    pub(crate) discovery_resyncs: Counter,
    /// Entries read from discovery that are not what their key promises (an instance's
    /// registration, a link record), ignored: `[registration, link_record]`.
    pub(crate) discovery_rejected: [Counter; 2],
    pub(crate) peers_ready: Gauge,
    pub(crate) parked: Gauge,
    /// Routed messages sent on to their next hop.
    pub(crate) forwarded: Counter,
    forward_failures: [Counter; FORWARD_FAILURES.len()],
    /// Requests and notifications this node sent through the routing table.
    pub(crate) routed: Counter,
    node: String,
    /// The handles of the copied counters (see [`export`](Self::export)).
    exported: OnceLock<Exported>,
}

const FAILURES: [&str; 14] = [
    "not_a_target",
    "no_instance",
    "denied",
    "timeout",
    "peer_lost",
    "remote",
    "too_large",
    "too_many_pending",
    "closed",
    "encode",
    "decode",
    "route",
    "link_full",
    "peer_closed",
];

/// Why a routed message was not forwarded on (`dms_forward_failures_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForwardFailure {
    /// Its hop limit was used up.
    HopLimit = 0,
    /// No route to its destination.
    Unreachable = 1,
    /// The next hop would have sent it back where it came from, or to its origin.
    Loop = 2,
    /// The link onward was lost (or timed out) before the reply came.
    NextHopFailed = 3,
    /// Over the link's size limits.
    TooLarge = 4,
}

const FORWARD_FAILURES: [&str; 5] = [
    "hop_limit",
    "unreachable",
    "loop",
    "next_hop_failed",
    "too_large",
];

const LOSSES: [&str; 6] = [
    "heartbeat",
    "probe_timeout",
    "link_down",
    "disconnected",
    "denied",
    "protocol",
];

impl NodeMetrics {
    /// Registers the figures of the node at `node` with the current recorder.
    pub(crate) fn new(node: &str) -> Self {
        let node = node.to_owned();
        let labelled = |name: &'static str, key: &'static str, value: &'static str| counter!(name, "node" => node.clone(), key => value);
        Self {
            requests_ok: labelled("dms_requests_total", "outcome", "ok"),
            requests_failed: FAILURES.map(|f| labelled("dms_requests_total", "outcome", f)),
            received: ["request", "notification", "broadcast"]
                .map(|k| labelled("dms_requests_received_total", "kind", k)),
            dropped_backlog_full: labelled("dms_dropped_total", "reason", "backlog_full"),
            dropped_incoming_full: labelled("dms_dropped_total", "reason", "incoming_full"),
            dropped_peer_lost: labelled("dms_dropped_total", "reason", "peer_lost"),
            overloaded: counter!("dms_overloaded_total", "node" => node.clone()),
            replies_too_large: counter!("dms_replies_too_large_total", "node" => node.clone()),
            throttled: counter!("dms_throttled_total", "node" => node.clone()),
            peers_up: ["connector", "acceptor"].map(|r| labelled("dms_peers_up_total", "role", r)),
            peers_lost: LOSSES.map(|r| labelled("dms_peers_lost_total", "reason", r)),
            redials: counter!("dms_redials_total", "node" => node.clone()),
            leases_lost: counter!("dms_leases_lost_total", "node" => node.clone()),
            reregistrations: counter!("dms_reregistrations_total", "node" => node.clone()),
            discovery_resyncs: counter!("dms_discovery_resyncs_total", "node" => node.clone()),
            discovery_rejected: ["registration", "link_record"]
                .map(|k| labelled("dms_discovery_rejected_total", "kind", k)),
            peers_ready: gauge!("dms_peers_ready", "node" => node.clone()),
            parked: gauge!("dms_parked_messages", "node" => node.clone()),
            forwarded: counter!("dms_forwarded_total", "node" => node.clone()),
            forward_failures: FORWARD_FAILURES
                .map(|r| labelled("dms_forward_failures_total", "reason", r)),
            routed: counter!("dms_routed_total", "node" => node.clone()),
            node,
            exported: OnceLock::new(),
        }
    }

    /// Copies the counters the transports and the protocol keep themselves (atomics on
    /// their own paths) into the recorder, as absolute values. Their handles are
    /// registered at the first call (the media a node has are fixed once it started).
    pub(crate) fn export(&self, media: &MediaStats, proto: &ProtoStats) {
        let exported = self
            .exported
            .get_or_init(|| Exported::register(&self.node, media));
        for ((_, links), counters) in media.links.iter().zip(&exported.links) {
            for (counter, value) in counters.iter().zip(link_values(links)) {
                counter.absolute(value);
            }
        }
        let values = node_values(media, proto);
        for (counter, value) in exported.node.iter().zip(values) {
            counter.absolute(value);
        }
    }

    /// Counts how a request (or notification) this node sent ended.
    pub(crate) fn request_ended<T>(&self, result: &Result<T, RequestError>) {
        match result {
            Ok(_) => self.requests_ok.increment(1),
            Err(error) => self.requests_failed[failure_index(error)].increment(1),
        }
    }

    /// Counts a routed message this node could not forward.
    pub(crate) fn forward_failed(&self, why: ForwardFailure) {
        self.forward_failures[why as usize].increment(1);
    }

    /// Counts a request or notification handed to the application.
    pub(crate) fn received(&self, request: bool, broadcast: bool) {
        let kind = match (request, broadcast) {
            (true, _) => 0,
            (false, false) => 1,
            (false, true) => 2,
        };
        self.received[kind].increment(1);
    }

    /// Counts a session that became ready; `ready`: how many are now.
    pub(crate) fn peer_up(&self, role: Role, ready: usize) {
        self.peers_up[usize::from(role == Role::Acceptor)].increment(1);
        self.peers_ready.set(ready as f64);
    }

    /// Counts a lost session; `ready`: how many are left.
    pub(crate) fn peer_lost(&self, reason: &LossReason, ready: usize) {
        let index = match reason {
            LossReason::HeartbeatTimeout { .. } => 0,
            LossReason::ProbeTimeout => 1,
            LossReason::LinkDown => 2,
            LossReason::Disconnected { reason, .. } if reason.code == codes::ACCESS_DENIED => 4,
            LossReason::Disconnected { .. } => 3,
            LossReason::ProtocolViolation(_) => 5,
            // Causes added later count as the link's.
            _ => 2,
        };
        self.peers_lost[index].increment(1);
        self.peers_ready.set(ready as f64);
    }
}

/// The counters copied per medium: (name, `cause` label), in [`link_values`]' order.
const LINK_COUNTERS: [(&str, Option<&str>); 11] = [
    ("dms_links_up_total", None),
    ("dms_links_down_total", None),
    ("dms_handshake_failures_total", None),
    ("dms_protocol_errors_total", None),
    ("dms_reconnect_attempts_total", None),
    ("dms_reads_paused_total", None),
    ("dms_events_dropped_total", None),
    ("dms_bytes_dropped_total", None),
    ("dms_connections_refused_total", Some("duplicate_identity")),
    ("dms_connections_refused_total", Some("peer_limit")),
    // TCP's cap on accepted connections handshaking at once (QUIC counts its own).
    ("dms_connections_refused_total", Some("handshake_evicted")),
];

fn link_values(links: &LinkStats) -> [u64; LINK_COUNTERS.len()] {
    [
        links.links_up,
        links.links_down,
        links.handshake_failures,
        links.protocol_errors,
        links.reconnect_attempts,
        links.reads_paused,
        links.events_dropped,
        links.bytes_dropped_on_link_down,
        links.duplicate_identities,
        links.peer_limit_refusals,
        links.handshakes_evicted,
    ]
}

/// The counters copied per node: (name, extra label), in [`node_values`]' order.
const NODE_COUNTERS: [(&str, Option<(&str, &str)>); 14] = [
    (
        "dms_connections_refused_total",
        Some(("cause", "handshake_limit")),
    ),
    (
        "dms_connections_refused_total",
        Some(("cause", "plaintext")),
    ),
    (
        "dms_connections_refused_total",
        Some(("cause", "tls_handshake")),
    ),
    ("dms_acl_denied_total", Some(("op", "connect"))),
    ("dms_acl_denied_total", Some(("op", "request"))),
    ("dms_acl_denied_total", Some(("op", "notify"))),
    ("dms_pings_dropped_total", None),
    ("dms_ping_floods_total", None),
    ("dms_late_replies_total", None),
    ("dms_pauses_total", None),
    ("dms_ignored_messages_total", None),
    ("dms_ignored_payloads_total", None),
    (
        "dms_connections_refused_total",
        Some(("cause", "shm_setup")),
    ),
    ("dms_shm_corrupt_rings_total", None),
];

fn node_values(media: &MediaStats, proto: &ProtoStats) -> [u64; NODE_COUNTERS.len()] {
    [
        media.handshakes_refused,
        media.plaintext_refused,
        media.tls_handshake_failures,
        proto.acl_denied_connects,
        proto.acl_denied_requests,
        proto.acl_denied_notifications,
        proto.pings_dropped,
        proto.ping_floods,
        proto.late_replies,
        proto.pauses,
        proto.ignored_messages,
        proto.ignored_payloads,
        media.shm_setup_failures,
        media.shm_corrupt_rings,
    ]
}

/// Handles of the copied counters.
#[derive(Debug)]
struct Exported {
    /// Per medium, in the order [`MediaStats::links`] lists them.
    links: Vec<[Counter; LINK_COUNTERS.len()]>,
    node: [Counter; NODE_COUNTERS.len()],
}

impl Exported {
    fn register(node: &str, media: &MediaStats) -> Self {
        let links = media
            .links
            .iter()
            .map(|(scheme, _)| {
                LINK_COUNTERS.map(|(name, cause)| match cause {
                    Some(cause) => counter!(name, "node" => node.to_owned(),
                        "transport" => *scheme, "cause" => cause),
                    None => counter!(name, "node" => node.to_owned(), "transport" => *scheme),
                })
            })
            .collect();
        let node = NODE_COUNTERS.map(|(name, label)| match label {
            Some((key, value)) => counter!(name, "node" => node.to_owned(), key => value),
            None => counter!(name, "node" => node.to_owned()),
        });
        Self { links, node }
    }
}

fn failure_index(error: &RequestError) -> usize {
    match error {
        RequestError::NotATarget(_) => 0,
        RequestError::NoInstance(_) => 1,
        RequestError::Denied { .. } => 2,
        RequestError::Timeout => 3,
        RequestError::PeerLost(_) => 4,
        RequestError::Remote { .. } => 5,
        RequestError::TooLarge(_) => 6,
        RequestError::TooManyPending => 7,
        RequestError::Closed => 8,
        RequestError::Encode(_) => 9,
        RequestError::Decode(_) => 10,
        RequestError::Route { .. } => 11,
        RequestError::LinkFull(_) => 12,
        RequestError::PeerClosed(_) => 13,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_has_its_own_label() {
        let errors = [
            RequestError::NotATarget("/a/b/c/d/e/F".parse().expect("cluster")),
            RequestError::NoInstance(String::new()),
            RequestError::Denied {
                service: "/a/b/c/d/e/F/f1".parse().expect("path"),
                op: dms_core::acl::Operation::Request,
                detail: String::new(),
            },
            RequestError::Timeout,
            RequestError::PeerLost(String::new()),
            RequestError::Remote {
                code: 1,
                detail: String::new(),
            },
            RequestError::TooLarge(String::new()),
            RequestError::TooManyPending,
            RequestError::Closed,
            RequestError::Encode(String::new()),
            RequestError::Decode(String::new()),
            RequestError::Route {
                failure: crate::RouteFailure::Unreachable,
                detail: String::new(),
            },
            RequestError::LinkFull(String::new()),
            RequestError::PeerClosed(String::new()),
        ];
        let labels: Vec<_> = errors.iter().map(|e| FAILURES[failure_index(e)]).collect();
        assert_eq!(labels, FAILURES);
    }
}

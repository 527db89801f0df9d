//! DMS: server processes that find each other and talk as one distributed system.
//!
//! A [`Node`] is one service instance, named by its service path
//! `/AppID/Area/Platform/WorldID/GroupID/Cluster/Instance`. It registers itself in
//! [discovery](dms_discovery) (ephemeral, with its endpoints and a stable dispatch bucket),
//! watches the clusters it targets, dials and probes their instances (an instance is used
//! only after it answered READY), keeps the links alive with heartbeats it drives, and
//! sends requests, notifications and broadcasts to clusters without caring which instance
//! answers.
//!
//! Layers: `dms-core` (sans-IO wire codec, protocol, dispatch, paths) ← transports
//! (`dms-transport-tcp`, `dms-transport-quic`, built on `dms-link`) and `dms-discovery` ←
//! this crate (the tokio kernel).
//!
//! # Transports
//!
//! The kernel runs over the [`MessageMiddleware`](dms_core::MessageMiddleware) trait; the
//! cargo features choose what is compiled in: `tcp` (default; ZMTP 3.1, libzmq-compatible),
//! `quic` (mutual TLS, the service path bound to the certificate) and `tcp-tls` (the same
//! mutual TLS over TCP, `tcp+tls://`, with the QUIC credentials). A node may bind
//! endpoints of several schemes at once ([`NodeBuilder::bind`]) and publishes all of them;
//! it dials each peer on the first scheme of its preference ([`NodeBuilder::prefer`],
//! default [`DEFAULT_PREFERENCE`]) that the peer published and it can dial. QUIC and
//! TCP+TLS need TLS credentials ([`NodeBuilder::quic`]; `quic_dev_certificates` for
//! development only).
//! A build needs at least one of `tcp` and `quic`.
//!
//! # The application's side
//!
//! [`app`] is the DMS APP interface on one page: what an application may implement or
//! consume (request handlers, typed codecs, tower services, the dispatch policy, the
//! route calculator, the access-control hook, the peer and route events, the discovery
//! backend), each with an example.
//!
//! # Tower
//!
//! With the feature `tower`, `dms::service` makes a cluster a `tower::Service`
//! (`service::Client`, dispatch key taken from each request) and runs any
//! `tower::Service` as a node's request handler (`service::serve`, bounded concurrency,
//! backpressure), so tower's timeout, limit, load-shed and buffer layers compose on
//! either side.
//!
//! # Tracing
//!
//! Each request carries a W3C trace context when it has one (`traceparent`, in the
//! control frame's extension block: `docs/PROTOCOL.md` §3.4; version-1 peers ignore it).
//! The kernel opens `tracing` spans at DEBUG level, target `dms::trace`: `dms.request`
//! on the caller's side (fields `node`, `cluster`, `key`, `instance`, `request_id`,
//! `traceparent`), `dms.handle` on the responder's ([`IncomingRequest::span`]: `node`,
//! `from`, `request_id`, `traceparent`) and `dms.reply` under it. A handler reads the
//! requester's context with [`IncomingRequest::trace_context`]; a caller sets one with
//! [`RequestOptions::trace`]. With the feature `otel` the spans join the caller's
//! OpenTelemetry trace (`tracing-opentelemetry`): the wire carries the `dms.request`
//! span's context and `dms.handle` takes the remote one as parent, so a trace follows a
//! request across processes (`examples/trace.rs` prints such a span tree).
//!
//! # Metrics
//!
//! A node records its figures through the [`metrics`](https://docs.rs/metrics) facade:
//! install the recorder you use (Prometheus, StatsD...) before starting nodes; without
//! one, recording costs nothing. `dms node --metrics ADDR` serves them in Prometheus text
//! format. Every figure carries the label `node` (the instance's service path).
//!
//! | name | labels | counts |
//! |---|---|---|
//! | `dms_requests_total` | `outcome`: `ok` or the error (`timeout`, `peer_lost`, `peer_closed`, `remote`, `no_instance`, `not_a_target`, `denied`, `too_large`, `too_many_pending`, `link_full`, `route`, `closed`, `encode`, `decode`) | requests, notifications and broadcasts this node sent, by how they ended |
//! | `dms_requests_received_total` | `kind`: `request`, `notification`, `broadcast` | what was queued for the application |
//! | `dms_dropped_total` | `reason`: `backlog_full`, `incoming_full`, `peer_lost` | messages dropped: a full link's backlog, a notification the incoming queue had no room for, what waited for a link that died |
//! | `dms_overloaded_total` | | requests answered `OVERLOADED` (the incoming queue, or the sender's share of it, was full) |
//! | `dms_replies_too_large_total` | | replies over the link's limits, not sent: their requesters got `REPLY_TOO_LARGE` (20) instead |
//! | `dms_throttled_total` | | times a peer's link stopped being read because replies to it could not leave |
//! | `dms_peers_up_total` | `role`: `connector`, `acceptor` | sessions that became ready |
//! | `dms_peers_lost_total` | `reason`: `heartbeat`, `probe_timeout`, `link_down`, `disconnected`, `denied`, `protocol` | sessions that ended |
//! | `dms_redials_total` | | redials scheduled for a lost instance |
//! | `dms_discovery_resyncs_total` | | snapshots of a target cluster or of the routing table read again because the watch's history was compacted (or the watch broke) |
//! | `dms_discovery_rejected_total` | `kind`: `registration`, `link_record` | entries read from discovery that are not well-formed (garbage, over 64 KiB, an unknown version, a key under a target cluster that is no instance path of it): ignored, the node goes on with the others |
//! | `dms_leases_lost_total`, `dms_reregistrations_total` | | registration leases lost (expired, revoked, or not kept alive through a discovery outage), and registrations written again under a new lease after one |
//! | `dms_acl_denied_total` | `op`: `connect`, `request`, `notify` | operations the ACL refused |
//! | `dms_pings_dropped_total`, `dms_ping_floods_total`, `dms_late_replies_total` | | PINGs over a peer's budget, sessions ended for a PING flood, replies after their timeout or after their caller stopped waiting |
//! | `dms_ignored_messages_total`, `dms_ignored_payloads_total` | | messages ignored without ending their session (a repeated READY, a PONG answering no PING, a message from a peer without a session) and payload frames dropped from commands that carry none (`docs/PROTOCOL.md` §9) |
//! | `dms_pauses_total` | | timer ticks so late the process cannot have been running (SIGSTOP, VM pause): peers got one more interval instead of a verdict on the stale silence |
//! | `dms_links_up_total`, `dms_links_down_total` | `transport` | links of each medium |
//! | `dms_handshake_failures_total`, `dms_protocol_errors_total` | `transport` | connections whose handshake failed, links closed for breaking the wire protocol |
//! | `dms_connections_refused_total` | `cause`: `duplicate_identity`, `peer_limit`, `handshake_evicted` (TCP: an unfinished handshake closed for a newer one; with `transport`), `handshake_limit` (QUIC: refused), `plaintext`, `tls_handshake`, `shm_setup` (a shared-memory rendezvous refused or failed: bad hello, memory, uid) | connections refused |
//! | `dms_shm_corrupt_rings_total` | | shared-memory links ended because the peer process wrote ring positions it could not have written |
//! | `dms_reconnect_attempts_total`, `dms_reads_paused_total`, `dms_events_dropped_total`, `dms_bytes_dropped_total` | `transport` | redials of a transport's own supervisor, pauses of a link's reading, `Refused` events and bytes lost with a dead link |
//!
//! Gauges: `dms_peers_ready` (ready sessions), `dms_parked_messages` (messages waiting
//! for room in full links). The counters kept by the transports and the protocol
//! (`dms_acl_*`, `dms_pings_*`, `dms_late_*` and those labelled `transport`) are copied
//! into the recorder once a second.
#![forbid(unsafe_code)]

pub mod app;
mod awaiting;
#[cfg(feature = "config")]
pub mod config;
mod driver;
mod error;
mod follow;
mod incoming;
mod node;
mod registrar;
pub mod registration;
mod request_queue;
pub mod routing;
#[cfg(feature = "tower")]
pub mod service;
mod telemetry;
mod trace;
mod transport;
pub mod typed;

/// Access control: policies, rules, patterns, operations (`dms_core::acl`).
pub use dms_core::acl;
pub use dms_core::acl::{AclPolicy, Operation};
pub use dms_core::path::{ClusterPath, PathError, ServicePath};
pub use dms_core::proto::{PingLimit, ProtoStats};
pub use dms_core::trace::TraceContext;
pub use dms_core::{Endpoint, Multipart};
pub use dms_discovery::Discovery;
pub use dms_discovery::memory::MemoryDiscovery;
/// TLS identities: certificates bound to service paths (feature `quic`).
#[cfg(feature = "quic")]
pub use dms_tls as tls;
/// The QUIC transport (feature `quic`).
#[cfg(feature = "quic")]
pub use dms_transport_quic as quic;
/// The shared-memory transport (`shm://NAME`, feature `shm`).
#[cfg(feature = "shm")]
pub use dms_transport_shm as shm;
/// The TCP transport (feature `tcp`).
#[cfg(feature = "tcp")]
pub use dms_transport_tcp as tcp;
pub use error::{AclFileError, Outcome, RequestError, RouteFailure, StartError};
pub use incoming::IncomingRequest;
pub use node::{
    DispatchKey, InstanceState, InstanceStatus, Node, NodeBuilder, NodeEvent, Reply, RequestOptions,
};
pub use transport::DEFAULT_PREFERENCE;

/// The README's Rust blocks, run as doctests (its quick start among them), in the
/// default build: they use TCP.
#[cfg(all(doctest, feature = "tcp"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

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
#![forbid(unsafe_code)]

mod awaiting;
mod driver;
mod error;
mod incoming;
mod request_queue;
mod telemetry;
mod node;
mod registrar;
pub mod registration;
mod transport;

pub use dms_core::path::{ClusterPath, PathError, ServicePath};
pub use dms_core::{Endpoint, Multipart};
pub use dms_discovery::Discovery;
pub use dms_discovery::memory::MemoryDiscovery;
/// TLS identities: certificates bound to service paths (feature `quic`).
#[cfg(feature = "quic")]
pub use dms_tls as tls;
/// The QUIC transport (feature `quic`).
#[cfg(feature = "quic")]
pub use dms_transport_quic as quic;
/// The TCP transport (feature `tcp`).
#[cfg(feature = "tcp")]
pub use dms_transport_tcp as tcp;
/// Access control: policies, rules, patterns, operations (`dms_core::acl`).
pub use dms_core::acl;
pub use dms_core::acl::{AclPolicy, Operation};
pub use dms_core::proto::{PingLimit, ProtoStats};
pub use error::{AclFileError, Outcome, RequestError, StartError};
pub use incoming::IncomingRequest;
pub use node::{DispatchKey, InstanceState, InstanceStatus, Node, NodeBuilder, NodeEvent, Reply};
pub use transport::DEFAULT_PREFERENCE;

//! Test support shared by DMS crates (not published).
//!
//! [`middleware`] is the conformance suite every [`MessageMiddleware`] must pass: each
//! transport crate runs it from its own `tests/conformance.rs` through a [`Factory`].
//!
//! [`allocations`] counts heap allocations per message on a middleware pair, with the
//! counting allocator the calling binary installs.
//!
//! [`discovery`] is the same for every [`Discovery`] backend; [`etcd`] runs real etcd
//! servers and clusters for the etcd backend's tests.
//!
//! [`metrics`] records the figures code under test reports through the `metrics` facade,
//! for tests that assert a counter moved.
//!
//! [`tcp_proxy`] delays, blackholes (half-open), resets, throttles and refuses TCP
//! connections between a client and a server, for fault tests of stream transports.
//!
//! [`udp_proxy`] loses and reorders datagrams between a client and a server, for fault
//! tests of datagram transports.
//!
//! [`MessageMiddleware`]: dms_core::MessageMiddleware
//! [`Discovery`]: dms_discovery::Discovery
//! [`Factory`]: middleware::Factory

pub mod allocations;
pub mod discovery;
pub mod etcd;
pub mod metrics;
pub mod middleware;
pub mod tcp_proxy;
pub mod udp_proxy;
pub mod wait;

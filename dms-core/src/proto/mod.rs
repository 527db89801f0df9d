//! The DMS protocol as a sans-IO state machine: sessions with adjacent peers (READY probe,
//! requester-driven heartbeats, DISCONNECT) and request/reply correlation.
//!
//! [`Protocol`] takes inputs (`handle_*`), application commands (`request`, `notify`,
//! `reply`, `disconnect`) and the current time, and produces outputs (`poll_transmit`,
//! `poll_event`, `poll_timeout`). It never reads a clock, never touches a socket. The kernel
//! drives it on tokio; the tests drive it with a virtual clock.

pub mod control;
mod protocol;
mod session;

pub use protocol::{
    Event, Initiator, LossReason, PingLimit, ProtoConfig, ProtoError, ProtoStats, Protocol,
    RequestError, RequestId, Routed, StatsHandle, Transmit, reply_message, request_message,
};
pub use session::SessionState;

#[cfg(test)]
mod malformed_tests;
#[cfg(test)]
mod routed_tests;
#[cfg(test)]
mod sim_seeds;
#[cfg(test)]
mod tests;

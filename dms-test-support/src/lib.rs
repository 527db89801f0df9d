//! Test support shared by DMS crates (not published).
//!
//! [`middleware`] is the conformance suite every [`MessageMiddleware`] must pass: each
//! transport crate runs it from its own `tests/conformance.rs` through a [`Factory`].
//!
//! [`MessageMiddleware`]: dms_core::MessageMiddleware
//! [`Factory`]: middleware::Factory

pub mod discovery;
pub mod middleware;
pub mod wait;

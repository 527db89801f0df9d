//! The middleware conformance suite, over real QUIC connections on loopback (mutual TLS
//! with development certificates).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod factory;

use factory::Quic;

dms_test_support::conformance_tests!(Quic);

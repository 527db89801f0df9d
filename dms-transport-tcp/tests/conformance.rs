//! The middleware conformance suite, over real TCP sockets on loopback.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod factory;

use factory::Tcp;

dms_test_support::conformance_tests!(Tcp);

//! The middleware conformance suite over `tcp+tls://`: real TCP sockets on loopback,
//! mutual TLS 1.3 with development certificates, ZMTP inside.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod tls_support;

use tls_support::TcpTls;

dms_test_support::conformance_tests!(TcpTls);

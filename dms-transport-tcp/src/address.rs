//! `tcp://host:port` (and `tcp+tls://host:port`) endpoints to socket addresses and back
//! (the rules are [`Endpoint::host_port`]'s, shared by every socket transport).

use std::net::SocketAddr;

use dms_core::{Endpoint, MiddlewareError};

/// The scheme of plaintext TCP.
pub(crate) const SCHEME: &str = "tcp";

/// The scheme of TCP with TLS (feature `tls`).
#[cfg(feature = "tls")]
pub(crate) const SCHEME_TLS: &str = "tcp+tls";

/// The `host:port` to hand to the resolver; `*` stands for every interface (ZeroMQ style).
pub(crate) fn host_port(endpoint: &Endpoint, scheme: &str) -> Result<String, MiddlewareError> {
    endpoint.host_port(scheme)
}

/// The endpoint of a socket address under `scheme`.
pub(crate) fn endpoint_of(addr: SocketAddr, scheme: &str) -> Endpoint {
    // A socket address always prints as a valid `host:port`, and both schemes are valid.
    Endpoint::from_socket_addr(scheme, addr)
        .unwrap_or_else(|_| unreachable!("a socket address is a valid endpoint address"))
}

//! `tcp://host:port` endpoints to socket addresses and back (the rules are
//! [`Endpoint::host_port`]'s, shared by every socket transport).

use std::net::SocketAddr;

use dms_core::{Endpoint, MiddlewareError};

/// The scheme this crate serves.
pub(crate) const SCHEME: &str = "tcp";

/// The `host:port` to hand to the resolver; `*` stands for every interface (ZeroMQ style).
pub(crate) fn host_port(endpoint: &Endpoint) -> Result<String, MiddlewareError> {
    endpoint.host_port(SCHEME)
}

/// The endpoint of a socket address.
pub(crate) fn endpoint_of(addr: SocketAddr) -> Endpoint {
    // A socket address always prints as a valid `host:port`.
    Endpoint::from_socket_addr(SCHEME, addr)
        .unwrap_or_else(|_| unreachable!("a socket address is a valid endpoint address"))
}

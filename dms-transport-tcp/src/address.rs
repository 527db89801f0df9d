//! `tcp://host:port` endpoints to socket addresses and back.

use std::net::SocketAddr;

use dms_core::{Endpoint, EndpointError, MiddlewareError};

/// The scheme this crate serves.
pub(crate) const SCHEME: &str = "tcp";

/// The `host:port` to hand to the resolver; `*` stands for every interface (ZeroMQ style).
pub(crate) fn host_port(endpoint: &Endpoint) -> Result<String, MiddlewareError> {
    if endpoint.scheme() != SCHEME {
        return Err(MiddlewareError::UnsupportedEndpoint(endpoint.clone()));
    }
    let address = endpoint.address();
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(invalid(endpoint, "expected host:port"));
    };
    if port.parse::<u16>().is_err() {
        return Err(invalid(endpoint, "port is not a number from 0 to 65535"));
    }
    match host {
        "" => Err(invalid(endpoint, "host is empty")),
        "*" => Ok(format!("0.0.0.0:{port}")),
        _ => Ok(address.to_owned()),
    }
}

/// The endpoint of a socket address.
pub(crate) fn endpoint_of(addr: SocketAddr) -> Endpoint {
    // A socket address always prints as a valid `host:port`.
    Endpoint::new(SCHEME, &addr.to_string()).unwrap_or_else(|_| unreachable_endpoint())
}

fn unreachable_endpoint() -> Endpoint {
    Endpoint::new(SCHEME, "0.0.0.0:0").unwrap_or_else(|_| unreachable!("literal endpoint"))
}

fn invalid(endpoint: &Endpoint, reason: &'static str) -> MiddlewareError {
    MiddlewareError::InvalidEndpoint(EndpointError::InvalidAddress {
        endpoint: endpoint.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap()
    }

    #[test]
    fn host_ports() {
        assert_eq!(host_port(&ep("tcp://127.0.0.1:0")).unwrap(), "127.0.0.1:0");
        assert_eq!(host_port(&ep("tcp://*:5555")).unwrap(), "0.0.0.0:5555");
        assert_eq!(host_port(&ep("tcp://[::1]:7")).unwrap(), "[::1]:7");
        assert!(matches!(
            host_port(&ep("quic://a:1")),
            Err(MiddlewareError::UnsupportedEndpoint(_))
        ));
        for bad in ["tcp://nohost", "tcp://:1", "tcp://a:99999", "tcp://a:x"] {
            assert!(matches!(
                host_port(&ep(bad)),
                Err(MiddlewareError::InvalidEndpoint(_))
            ));
        }
    }

    #[test]
    fn endpoints_of_addresses() {
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(endpoint_of(v6).as_str(), "tcp://[::1]:80");
    }
}

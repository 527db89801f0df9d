//! [`Endpoint`]: where a middleware binds or connects, as a URL.

use std::sync::Arc;

/// A transport address as a URL: `scheme://address`, e.g. `tcp://127.0.0.1:5555`,
/// `tcp://[::1]:0`, `quic://game-1.internal:7000`, `shm://lobby-1`.
///
/// The scheme picks the middleware; the address is the middleware's business. Port 0 in a
/// bind endpoint asks for any free port; the middleware returns the endpoint it actually
/// bound.
///
/// ```
/// use dms_core::Endpoint;
///
/// let ep: Endpoint = "tcp://127.0.0.1:5555".parse().unwrap();
/// assert_eq!(ep.scheme(), "tcp");
/// assert_eq!(ep.address(), "127.0.0.1:5555");
/// assert!("127.0.0.1:5555".parse::<Endpoint>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    url: Arc<str>,
    scheme_len: usize,
}

/// Why a string is not an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The `scheme://` part is missing.
    #[error("endpoint {0:?} has no scheme (expected e.g. tcp://host:port)")]
    MissingScheme(String),
    /// The scheme has characters other than lowercase letters, digits, `+`, `-`, `.`.
    #[error("endpoint {0:?} has an invalid scheme")]
    InvalidScheme(String),
    /// Nothing follows `scheme://`.
    #[error("endpoint {0:?} has no address")]
    MissingAddress(String),
    /// Longer than [`Endpoint::MAX_LEN`] bytes.
    #[error("endpoint is {len} bytes long; the maximum is {max}")]
    TooLong {
        /// Length given.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The address is not valid for the scheme (reported by a middleware).
    #[error("endpoint {endpoint:?}: {reason}")]
    InvalidAddress {
        /// The endpoint.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Endpoint {
    /// Longest endpoint accepted.
    pub const MAX_LEN: usize = 1024;

    /// Builds an endpoint from its parts.
    pub fn new(scheme: &str, address: &str) -> Result<Self, EndpointError> {
        format!("{scheme}://{address}").parse()
    }

    /// The scheme (`tcp`, `quic`, `shm`, ...).
    pub fn scheme(&self) -> &str {
        &self.url[..self.scheme_len]
    }

    /// Everything after `scheme://`.
    pub fn address(&self) -> &str {
        &self.url[self.scheme_len + 3..]
    }

    /// The whole URL.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The `host:port` of a socket transport's endpoint, checked and ready for a resolver
    /// (`*` stands for every IPv4 interface, ZeroMQ style). Fails when the scheme is not
    /// `scheme` or the address is not `host:port` with a port from 0 to 65535.
    ///
    /// ```
    /// use dms_core::Endpoint;
    ///
    /// let ep: Endpoint = "quic://*:7000".parse().unwrap();
    /// assert_eq!(ep.host_port("quic").unwrap(), "0.0.0.0:7000");
    /// assert!(ep.host_port("tcp").is_err());
    /// ```
    pub fn host_port(&self, scheme: &str) -> Result<String, crate::MiddlewareError> {
        if self.scheme() != scheme {
            return Err(crate::MiddlewareError::UnsupportedEndpoint(self.clone()));
        }
        let address = self.address();
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(self.invalid("expected host:port"));
        };
        if port.parse::<u16>().is_err() {
            return Err(self.invalid("port is not a number from 0 to 65535"));
        }
        match host {
            "" => Err(self.invalid("host is empty")),
            "*" => Ok(format!("0.0.0.0:{port}")),
            _ => Ok(address.to_owned()),
        }
    }

    /// The endpoint of a socket address under `scheme` (a bound or remote address).
    pub fn from_socket_addr(
        scheme: &str,
        addr: std::net::SocketAddr,
    ) -> Result<Self, EndpointError> {
        Self::new(scheme, &addr.to_string())
    }

    fn invalid(&self, reason: &'static str) -> crate::MiddlewareError {
        crate::MiddlewareError::InvalidEndpoint(EndpointError::InvalidAddress {
            endpoint: self.to_string(),
            reason,
        })
    }
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(url: &str) -> Result<Self, EndpointError> {
        if url.len() > Self::MAX_LEN {
            return Err(EndpointError::TooLong {
                len: url.len(),
                max: Self::MAX_LEN,
            });
        }
        let Some((scheme, address)) = url.split_once("://") else {
            return Err(EndpointError::MissingScheme(url.to_owned()));
        };
        let scheme_ok = !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
        if !scheme_ok {
            return Err(EndpointError::InvalidScheme(url.to_owned()));
        }
        if address.is_empty() {
            return Err(EndpointError::MissingAddress(url.to_owned()));
        }
        Ok(Self {
            url: Arc::from(url),
            scheme_len: scheme.len(),
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({})", self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parts() {
        let ep = Endpoint::new("tcp", "[::1]:0").unwrap();
        assert_eq!(ep.scheme(), "tcp");
        assert_eq!(ep.address(), "[::1]:0");
        assert_eq!(ep.to_string(), "tcp://[::1]:0");
    }

    #[test]
    fn host_ports() {
        let ep = |s: &str| s.parse::<Endpoint>().unwrap();
        assert_eq!(
            ep("tcp://127.0.0.1:0").host_port("tcp").unwrap(),
            "127.0.0.1:0"
        );
        assert_eq!(ep("tcp://*:5555").host_port("tcp").unwrap(), "0.0.0.0:5555");
        assert_eq!(ep("quic://[::1]:7").host_port("quic").unwrap(), "[::1]:7");
        for bad in ["quic://a", "quic://a:x", "quic://:1", "quic://a:70000"] {
            assert!(ep(bad).host_port("quic").is_err(), "{bad}");
        }
        assert!(matches!(
            ep("tcp://a:1").host_port("quic"),
            Err(crate::MiddlewareError::UnsupportedEndpoint(_))
        ));
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            "tcp:/x".parse::<Endpoint>(),
            Err(EndpointError::MissingScheme(_))
        ));
        assert!(matches!(
            "TCP://x".parse::<Endpoint>(),
            Err(EndpointError::InvalidScheme(_))
        ));
        assert!(matches!(
            "://x".parse::<Endpoint>(),
            Err(EndpointError::InvalidScheme(_))
        ));
        assert!(matches!(
            "tcp://".parse::<Endpoint>(),
            Err(EndpointError::MissingAddress(_))
        ));
        let long = format!("tcp://{}", "a".repeat(2000));
        assert!(matches!(
            long.parse::<Endpoint>(),
            Err(EndpointError::TooLong { .. })
        ));
    }
}

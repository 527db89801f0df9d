//! `shm://` endpoints: a name, and the key of the host (and network namespace) it lives
//! on, so that a shared-memory endpoint of another host is never dialled.
//!
//! * Bind `shm://NAME`; the endpoint bound (and published) is `shm://NAME?host=KEY`.
//! * `NAME` is 1 to 64 bytes of `A-Z a-z 0-9 . _ -`.
//! * `KEY` is this machine's boot id (`/proc/sys/kernel/random/boot_id`, 32 hex digits,
//!   random at every boot) and, after a `-`, the inode of its network namespace in hex:
//!   the rendezvous socket lives in the abstract Unix namespace, which is per network
//!   namespace. Two processes with the same key can reach each other's socket; a key
//!   from another host or container differs.
//! * [`is_local`] tells whether an endpoint names this host. A dial of an endpoint with
//!   another key fails at once; one without a key (typed by hand, `shm://NAME`) means
//!   this host. The DMS kernel dials only endpoints that carry this host's key.

use std::sync::OnceLock;

use dms_core::{Endpoint, EndpointError, MiddlewareError};

use crate::SCHEME;

/// Longest name of a `shm://` endpoint.
pub const MAX_NAME_LEN: usize = 64;

/// A parsed `shm://` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShmAddress {
    pub(crate) name: String,
    pub(crate) host: Option<String>,
}

fn invalid(endpoint: &Endpoint, reason: &'static str) -> MiddlewareError {
    MiddlewareError::InvalidEndpoint(EndpointError::InvalidAddress {
        endpoint: endpoint.to_string(),
        reason,
    })
}

impl ShmAddress {
    pub(crate) fn parse(endpoint: &Endpoint) -> Result<Self, MiddlewareError> {
        if endpoint.scheme() != SCHEME {
            return Err(MiddlewareError::UnsupportedEndpoint(endpoint.clone()));
        }
        let (name, host) = match endpoint.address().split_once('?') {
            None => (endpoint.address(), None),
            Some((name, query)) => match query.strip_prefix("host=") {
                Some(key) if !key.is_empty() && key.len() <= 80 => (name, Some(key.to_owned())),
                _ => return Err(invalid(endpoint, "the only query is host=KEY")),
            },
        };
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(invalid(endpoint, "a shm name has 1 to 64 bytes"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(invalid(
                endpoint,
                "a shm name has only letters, digits, '.', '_' and '-'",
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            host,
        })
    }

    /// The name of the rendezvous socket in the abstract namespace.
    pub(crate) fn socket_name(&self) -> Vec<u8> {
        format!("dms-shm/{}", self.name).into_bytes()
    }

    /// The endpoint published for this name on this host.
    pub(crate) fn published(&self) -> Result<Endpoint, MiddlewareError> {
        let address = match host_key() {
            Some(key) => format!("{}?host={key}", self.name),
            None => self.name.clone(),
        };
        Ok(Endpoint::new(SCHEME, &address)?)
    }

    /// Fails unless the endpoint is on this host (no key means this host).
    pub(crate) fn check_local(&self, endpoint: &Endpoint) -> Result<(), MiddlewareError> {
        match (&self.host, host_key()) {
            (None, _) => Ok(()),
            (Some(theirs), Some(ours)) if theirs == ours => Ok(()),
            _ => Err(invalid(
                endpoint,
                "a shared-memory endpoint of another host (or network namespace)",
            )),
        }
    }
}

/// This host's key: its boot id (32 hex digits), `-`, and the inode of its network
/// namespace in hex (see the [crate docs](crate)); `None` when `/proc` does not tell.
pub fn host_key() -> Option<&'static str> {
    static KEY: OnceLock<Option<String>> = OnceLock::new();
    KEY.get_or_init(|| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let boot: String = boot.trim().chars().filter(|c| *c != '-').collect();
        if boot.len() != 32 || !boot.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let netns = rustix::fs::stat("/proc/self/ns/net").ok()?.st_ino;
        Some(format!("{boot}-{netns:x}"))
    })
    .as_deref()
}

/// Whether `endpoint` is a `shm://` endpoint carrying this host's key: the only kind the
/// DMS kernel dials (an endpoint published without a key is never dialled).
pub fn is_local(endpoint: &Endpoint) -> bool {
    ShmAddress::parse(endpoint)
        .ok()
        .and_then(|a| a.host)
        .is_some_and(|key| Some(key.as_str()) == host_key())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ShmAddress, MiddlewareError> {
        ShmAddress::parse(&s.parse().unwrap())
    }

    #[test]
    fn names_and_host_keys() {
        let a = parse("shm://battle-1").unwrap();
        assert_eq!(a.name, "battle-1");
        assert_eq!(a.host, None);
        let published = a.published().unwrap();
        let key = host_key().unwrap();
        assert_eq!(published.to_string(), format!("shm://battle-1?host={key}"));
        assert!(is_local(&published));
        // Without a key the kernel does not dial it; with another key nobody does.
        assert!(!is_local(&"shm://battle-1".parse().unwrap()));
        let other: Endpoint = "shm://battle-1?host=0123-4".parse().unwrap();
        assert!(!is_local(&other));
        assert!(
            parse("shm://battle-1?host=0123-4")
                .unwrap()
                .check_local(&other)
                .is_err()
        );
        for bad in [
            "shm://a/b",
            "shm://a b",
            "shm://a?port=1",
            "shm://a?host=",
            &format!("shm://{}", "x".repeat(65)),
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            parse("tcp://1.2.3.4:5"),
            Err(MiddlewareError::UnsupportedEndpoint(_))
        ));
    }
}

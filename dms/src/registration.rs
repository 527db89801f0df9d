//! What an instance writes into discovery: its registration (endpoints, bucket, targets,
//! ACL) under its service path, and its bucket claim.

use bytes::Bytes;
use dms_core::path::{ClusterPath, ServicePath};
use dms_discovery::{Key, KeyError};
use serde::{Deserialize, Serialize};

/// Version of the registration value layout.
const REGISTRATION_VERSION: u8 = 1;
/// Largest registration value accepted from discovery (discovery data is untrusted).
const MAX_REGISTRATION_LEN: usize = 64 << 10;

/// An instance's registration, stored (postcard-encoded) under its service path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Layout version.
    pub version: u8,
    /// Endpoints it accepts links on (`tcp://127.0.0.1:4000`).
    pub endpoints: Vec<String>,
    /// Its stable dispatch bucket.
    pub bucket: u32,
    /// Clusters it targets (so that two instances targeting each other open one link).
    pub targets: Vec<String>,
    /// The principal patterns its ACL allows to `connect` (clusters, path prefixes with
    /// `*` segments, or `*`); informational, deny rules may narrow them. `None`: no ACL,
    /// everyone may.
    pub acl: Option<Vec<String>>,
}

impl Registration {
    /// A registration of the current layout.
    pub fn new(
        endpoints: Vec<String>,
        bucket: u32,
        targets: &[ClusterPath],
        acl: Option<&[String]>,
    ) -> Self {
        Self {
            version: REGISTRATION_VERSION,
            endpoints,
            bucket,
            targets: targets.iter().map(|t| t.to_string()).collect(),
            acl: acl.map(<[String]>::to_vec),
        }
    }

    /// The stored form.
    pub fn encode(&self) -> Bytes {
        // Encoding plain strings and integers into a Vec cannot fail.
        Bytes::from(postcard::to_allocvec(self).unwrap_or_default())
    }

    /// Parses a stored value; `None` for anything malformed, oversized or of another
    /// layout version (ignored and logged by the caller, never routed to).
    pub fn decode(value: &[u8]) -> Option<Self> {
        if value.len() > MAX_REGISTRATION_LEN {
            return None;
        }
        postcard::from_bytes::<Self>(value)
            .ok()
            .filter(|r| r.version == REGISTRATION_VERSION)
    }

    /// Whether this instance targets `cluster`.
    pub fn targets(&self, cluster: &ClusterPath) -> bool {
        self.targets.iter().any(|t| t == cluster.as_str())
    }
}

/// The discovery key of an instance's registration: its service path.
pub fn instance_key(path: &ServicePath) -> Result<Key, KeyError> {
    Key::new(path.as_str())
}

/// The discovery key of a cluster (the prefix its instances live under).
pub fn cluster_key(cluster: &ClusterPath) -> Result<Key, KeyError> {
    Key::new(cluster.as_str())
}

/// The key that gives `bucket` of `cluster` to one instance (created if absent, with the
/// instance's lease). Kept outside the cluster's prefix so that cluster watches see only
/// instances.
pub fn bucket_key(cluster: &ClusterPath, bucket: u32) -> Result<Key, KeyError> {
    Key::new(format!("/@dms/buckets{cluster}/{bucket}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_hostile_values() {
        let cluster: ClusterPath = "/demo/cn/android/w1/g1/Battle".parse().unwrap();
        let reg = Registration::new(
            vec!["tcp://127.0.0.1:1".into()],
            3,
            std::slice::from_ref(&cluster),
            None,
        );
        assert_eq!(Registration::decode(&reg.encode()), Some(reg.clone()));
        assert!(reg.targets(&cluster));
        assert_eq!(Registration::decode(b"\xff\xff\xff"), None);
        assert_eq!(
            Registration::decode(&vec![0u8; MAX_REGISTRATION_LEN + 1]),
            None
        );
        let mut other = reg;
        other.version = 9;
        assert_eq!(Registration::decode(&other.encode()), None);
        assert_eq!(
            bucket_key(&cluster, 2).unwrap().as_str(),
            "/@dms/buckets/demo/cn/android/w1/g1/Battle/2"
        );
    }
}

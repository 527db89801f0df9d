//! What an instance writes into discovery for routing: the links it holds, one record per
//! instance under the routing table's prefix (docs/PROTOCOL.md §8.7).

use bytes::Bytes;
use dms_core::path::ServicePath;
use dms_discovery::{Key, KeyError};
use serde::{Deserialize, Serialize};

/// The segment under `/App/Area/Platform` that holds the routing table. A World of this
/// name is reserved.
pub const ROUTING_TABLE: &str = "routing_table";
/// Version of the link record layout.
const LINKS_VERSION: u8 = 1;
/// Largest link record accepted from discovery (discovery data is untrusted).
pub const MAX_LINKS_RECORD_LEN: usize = 256 << 10;
/// Most links one record may list.
pub const MAX_LINKS_PER_RECORD: usize = 4096;

/// One link of an instance: the peer it holds a live, probed session with, and what the
/// link costs (at least 1).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Link {
    /// The peer's service path.
    pub to: String,
    /// The link's cost (1 by default; `NodeBuilder::link_cost`).
    pub cost: u32,
}

/// An instance's links as published (postcard-encoded) under
/// [`links_key`]`(instance)`, attached to the instance's lease: the edges of a dead
/// instance vanish with it.
///
/// ```
/// use dms::routing::{Link, LinkRecord};
///
/// let record = LinkRecord::new(true, vec![Link { to: "/demo/cn/android/w1/g1/Lobby/lobby-1".into(), cost: 1 }]);
/// let bytes = record.encode();
/// assert_eq!(LinkRecord::decode(&bytes), Ok(record));
/// assert!(LinkRecord::decode(b"\x07").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    /// Layout version (1).
    pub version: u8,
    /// Whether the instance forwards messages for others (a broker): only such instances
    /// are used as intermediate hops.
    pub forwards: bool,
    /// Its live links, sorted by peer path.
    pub links: Vec<Link>,
}

/// Why a link record read from discovery is refused (its instance's links are ignored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkRecordError {
    /// Larger than [`MAX_LINKS_RECORD_LEN`].
    #[error("link record of {0} bytes, the limit is {MAX_LINKS_RECORD_LEN}")]
    TooLarge(usize),
    /// Not a postcard record of this layout.
    #[error("link record does not decode: {0}")]
    Malformed(String),
    /// A layout version other than 1.
    #[error("link record version {0}, this side reads 1")]
    Version(u8),
    /// More than [`MAX_LINKS_PER_RECORD`] links.
    #[error("link record lists {0} links, the limit is {MAX_LINKS_PER_RECORD}")]
    TooManyLinks(usize),
    /// A link to something that is not a service path, or of cost 0.
    #[error("link record entry {index} is invalid: {why}")]
    BadLink {
        /// Its position.
        index: usize,
        /// What is wrong.
        why: String,
    },
}

impl LinkRecord {
    /// A record of the current layout, its links sorted.
    pub fn new(forwards: bool, mut links: Vec<Link>) -> Self {
        links.sort();
        Self {
            version: LINKS_VERSION,
            forwards,
            links,
        }
    }

    /// The stored form.
    pub fn encode(&self) -> Bytes {
        // Encoding plain strings and integers into a Vec cannot fail.
        Bytes::from(postcard::to_allocvec(self).unwrap_or_default())
    }

    /// Parses a stored value, refusing anything oversized, malformed, of another version,
    /// or with a link that is not a service path of cost at least 1.
    pub fn decode(value: &[u8]) -> Result<Self, LinkRecordError> {
        if value.len() > MAX_LINKS_RECORD_LEN {
            return Err(LinkRecordError::TooLarge(value.len()));
        }
        let record: Self =
            postcard::from_bytes(value).map_err(|e| LinkRecordError::Malformed(e.to_string()))?;
        if record.version != LINKS_VERSION {
            return Err(LinkRecordError::Version(record.version));
        }
        if record.links.len() > MAX_LINKS_PER_RECORD {
            return Err(LinkRecordError::TooManyLinks(record.links.len()));
        }
        for (index, link) in record.links.iter().enumerate() {
            if link.cost == 0 {
                return Err(LinkRecordError::BadLink {
                    index,
                    why: "cost 0".into(),
                });
            }
            if let Err(error) = link.to.parse::<ServicePath>() {
                return Err(LinkRecordError::BadLink {
                    index,
                    why: error.to_string(),
                });
            }
        }
        Ok(record)
    }

    /// The links as `(peer, cost)` pairs (every entry parses: [`decode`](Self::decode)
    /// checked them).
    pub fn peers(&self) -> impl Iterator<Item = (ServicePath, u32)> + '_ {
        self.links
            .iter()
            .filter_map(|link| Some((link.to.parse().ok()?, link.cost)))
    }
}

/// The prefix of the routing table that `path`'s instance belongs to:
/// `/App/Area/Platform/routing_table`.
///
/// ```
/// let path = "/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?;
/// assert_eq!(dms::routing::table_key(&path)?.as_str(), "/demo/cn/android/routing_table");
/// assert_eq!(dms::routing::links_key(&path)?.as_str(), "/demo/cn/android/routing_table/w1/g1/Lobby/lobby-1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn table_key(path: &ServicePath) -> Result<Key, KeyError> {
    let (scope, _) = split_scope(path);
    Key::new(format!("{scope}/{ROUTING_TABLE}"))
}

/// The key of `path`'s link record: the table's prefix followed by the path's World,
/// Group, Cluster and Instance.
pub fn links_key(path: &ServicePath) -> Result<Key, KeyError> {
    let (scope, rest) = split_scope(path);
    Key::new(format!("{scope}/{ROUTING_TABLE}{rest}"))
}

/// The instance whose link record `key` is, under the table `table` (`None` for any
/// other key).
pub fn instance_of_links_key(table: &Key, key: &Key) -> Option<ServicePath> {
    let rest = key.as_str().strip_prefix(table.as_str())?;
    let scope = table
        .as_str()
        .strip_suffix(ROUTING_TABLE)?
        .strip_suffix('/')?;
    format!("{scope}{rest}").parse().ok()
}

/// `("/App/Area/Platform", "/World/Group/Cluster/Instance")`.
fn split_scope(path: &ServicePath) -> (&str, &str) {
    let text = path.as_str();
    // A service path has seven segments: the fourth `/` starts the World.
    let cut = text
        .match_indices('/')
        .nth(3)
        .map_or(text.len(), |(at, _)| at);
    text.split_at(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_hostile_records() {
        let path: ServicePath = "/demo/cn/android/w1/g1/Lobby/lobby-1".parse().unwrap();
        let table = table_key(&path).unwrap();
        let key = links_key(&path).unwrap();
        assert_eq!(instance_of_links_key(&table, &key), Some(path.clone()));
        assert_eq!(
            instance_of_links_key(
                &table,
                &Key::new("/demo/cn/android/routing_table/w1").unwrap()
            ),
            None
        );
        let good = LinkRecord::new(
            false,
            vec![Link {
                to: path.to_string(),
                cost: 3,
            }],
        );
        assert_eq!(LinkRecord::decode(&good.encode()).unwrap(), good);
        let zero = LinkRecord::new(
            false,
            vec![Link {
                to: path.to_string(),
                cost: 0,
            }],
        );
        assert!(matches!(
            LinkRecord::decode(&zero.encode()),
            Err(LinkRecordError::BadLink { index: 0, .. })
        ));
        let junk = LinkRecord::new(
            false,
            vec![Link {
                to: "nope".into(),
                cost: 1,
            }],
        );
        assert!(matches!(
            LinkRecord::decode(&junk.encode()),
            Err(LinkRecordError::BadLink { .. })
        ));
        let mut other = good.clone();
        other.version = 2;
        assert_eq!(
            LinkRecord::decode(&other.encode()),
            Err(LinkRecordError::Version(2))
        );
        assert!(matches!(
            LinkRecord::decode(&vec![0u8; MAX_LINKS_RECORD_LEN + 1]),
            Err(LinkRecordError::TooLarge(_))
        ));
        // A count that claims more entries than bytes follow is refused, not allocated.
        assert!(LinkRecord::decode(&[1, 0, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}

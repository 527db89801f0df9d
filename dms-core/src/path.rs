//! Service paths `/AppID/Area/Platform/WorldID/GroupID/ClusterName/InstanceName` and
//! cluster paths (the same without the instance).

use std::sync::Arc;

/// Segments of a service path.
const SERVICE_SEGMENTS: usize = 7;
/// Segments of a cluster path.
const CLUSTER_SEGMENTS: usize = 6;
/// Longest segment, in bytes.
pub const MAX_SEGMENT_LEN: usize = 64;
/// Longest path, in bytes (a service path is also a ZMTP identity: at most 255 bytes).
pub const MAX_PATH_LEN: usize = 255;

/// Why a string is not a path. Each variant names the rule that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// Paths start with `/`.
    #[error("path {0:?} does not start with '/'")]
    NotAbsolute(String),
    /// Longer than [`MAX_PATH_LEN`].
    #[error("path is {len} bytes long; the maximum is {max}")]
    TooLong {
        /// Length given.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Wrong number of segments (7 for a service, 6 for a cluster).
    #[error("path has {found} segments; expected {expected}")]
    SegmentCount {
        /// Segments expected.
        expected: usize,
        /// Segments found.
        found: usize,
    },
    /// A segment is empty (`//` or a trailing `/`).
    #[error("segment {index} is empty")]
    EmptySegment {
        /// Index of the segment (0 = AppID).
        index: usize,
    },
    /// A segment is longer than [`MAX_SEGMENT_LEN`].
    #[error("segment {index} is {len} bytes long; the maximum is {max}")]
    SegmentTooLong {
        /// Index of the segment.
        index: usize,
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Segments use ASCII letters, digits, `-`, `_` and `.` only, and are not `.` or `..`.
    #[error("segment {index} has the forbidden character {found:?}")]
    InvalidCharacter {
        /// Index of the segment.
        index: usize,
        /// The character.
        found: char,
    },
    /// `.` and `..` are not names.
    #[error("segment {index} is a dot segment")]
    DotSegment {
        /// Index of the segment.
        index: usize,
    },
}

fn parse_segments(path: &str, expected: usize) -> Result<(), PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute(path.chars().take(64).collect()));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong {
            len: path.len(),
            max: MAX_PATH_LEN,
        });
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    if segments.len() != expected {
        return Err(PathError::SegmentCount {
            expected,
            found: segments.len(),
        });
    }
    for (index, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            return Err(PathError::EmptySegment { index });
        }
        if segment.len() > MAX_SEGMENT_LEN {
            return Err(PathError::SegmentTooLong {
                index,
                len: segment.len(),
                max: MAX_SEGMENT_LEN,
            });
        }
        if let Some(found) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(PathError::InvalidCharacter { index, found });
        }
        if *segment == "." || *segment == ".." {
            return Err(PathError::DotSegment { index });
        }
    }
    Ok(())
}

/// The path of one service instance: `/AppID/Area/Platform/WorldID/GroupID/Cluster/Instance`.
///
/// Its string is also the instance's identity on every link (a ZMTP `Identity`, hence at
/// most 255 bytes), and [`hash64`](Self::hash64) its compact form in control frames.
///
/// ```
/// use dms_core::path::{PathError, ServicePath};
///
/// let path: ServicePath = "/demo/cn/android/w1/g1/Battle/battle-1".parse()?;
/// assert_eq!(path.cluster().name(), "Battle");
/// assert_eq!(path.instance(), "battle-1");
/// assert_eq!(path.cluster().to_string(), "/demo/cn/android/w1/g1/Battle");
/// assert!(matches!(
///     "/demo/cn/android/w1/g1/Battle/".parse::<ServicePath>(),
///     Err(PathError::EmptySegment { index: 6 })
/// ));
/// # Ok::<(), PathError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePath(Arc<str>);

/// The path of a cluster: a service path without the instance.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterPath(Arc<str>);

impl ServicePath {
    /// Parses and checks a service path.
    pub fn new(path: &str) -> Result<Self, PathError> {
        parse_segments(path, SERVICE_SEGMENTS)?;
        Ok(Self(Arc::from(path)))
    }

    /// The instance's cluster.
    pub fn cluster(&self) -> ClusterPath {
        let cut = self.0.rfind('/').unwrap_or(0);
        ClusterPath(Arc::from(&self.0[..cut]))
    }

    /// The instance name (last segment).
    pub fn instance(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stable 64-bit form: [`hash64`] of the path's UTF-8 bytes.
    pub fn hash64(&self) -> u64 {
        hash64(self.0.as_bytes())
    }

    /// The path as a peer id (its identity on links).
    pub fn peer_id(&self) -> crate::PeerId {
        // A checked path is 1..=255 bytes: always a valid peer id.
        crate::PeerId::new(bytes::Bytes::copy_from_slice(self.0.as_bytes()))
            .unwrap_or_else(|_| crate::PeerId::generated(0))
    }
}

impl ClusterPath {
    /// Parses and checks a cluster path.
    pub fn new(path: &str) -> Result<Self, PathError> {
        parse_segments(path, CLUSTER_SEGMENTS)?;
        Ok(Self(Arc::from(path)))
    }

    /// The cluster name (last segment).
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }

    /// The path of instance `instance` of this cluster.
    pub fn instance(&self, instance: &str) -> Result<ServicePath, PathError> {
        ServicePath::new(&format!("{}/{instance}", self.0))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `service` is an instance of this cluster.
    pub fn contains(&self, service: &ServicePath) -> bool {
        service.cluster() == *self
    }

    /// The stable 64-bit form: [`hash64`] of the path's UTF-8 bytes.
    pub fn hash64(&self) -> u64 {
        hash64(self.0.as_bytes())
    }
}

/// FNV-1a, 64-bit (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`) over `bytes`:
/// the stable integer form of paths and dispatch keys, identical on every platform and in
/// every process (no per-process seed).
///
/// ```
/// assert_eq!(dms_core::path::hash64(b""), 0xcbf2_9ce4_8422_2325);
/// assert_eq!(dms_core::path::hash64(b"a"), 0xaf63_dc4c_8601_ec8c);
/// ```
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

macro_rules! path_traits {
    ($ty:ident) => {
        impl std::str::FromStr for $ty {
            type Err = PathError;

            fn from_str(path: &str) -> Result<Self, PathError> {
                Self::new(path)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.0)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = PathError;

            fn try_from(path: &str) -> Result<Self, PathError> {
                Self::new(path)
            }
        }
    };
}

path_traits!(ServicePath);
path_traits!(ClusterPath);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_rules() {
        let cases: &[(&str, PathError)] = &[
            (
                "demo/a/b/c/d/e/f",
                PathError::NotAbsolute("demo/a/b/c/d/e/f".into()),
            ),
            (
                "/a/b/c/d/e/f",
                PathError::SegmentCount {
                    expected: 7,
                    found: 6,
                },
            ),
            ("/a/b//d/e/f/g", PathError::EmptySegment { index: 2 }),
            (
                "/a/b/c/d/e/f/g h",
                PathError::InvalidCharacter {
                    index: 6,
                    found: ' ',
                },
            ),
            (
                "/a/b/c/d/e/f/\0",
                PathError::InvalidCharacter {
                    index: 6,
                    found: '\0',
                },
            ),
            ("/a/b/c/../e/f/g", PathError::DotSegment { index: 3 }),
        ];
        for (path, expected) in cases {
            assert_eq!(
                ServicePath::new(path).as_ref().err(),
                Some(expected),
                "{path}"
            );
        }
        let long = format!("/a/b/c/d/e/f/{}", "x".repeat(65));
        assert!(matches!(
            ServicePath::new(&long),
            Err(PathError::SegmentTooLong {
                index: 6,
                len: 65,
                ..
            })
        ));
        let huge = format!("/{0}/{0}/{0}/{0}/{0}/{0}/{0}", "x".repeat(60));
        assert!(matches!(
            ServicePath::new(&huge),
            Err(PathError::TooLong { .. })
        ));
    }

    #[test]
    fn cluster_of_instance() {
        let cluster = ClusterPath::new("/demo/cn/android/w1/g1/Club").unwrap();
        let instance = cluster.instance("club-2").unwrap();
        assert!(cluster.contains(&instance));
        assert_eq!(instance.cluster(), cluster);
        assert!(cluster.instance("a/b").is_err());
        assert_eq!(instance.peer_id().to_string(), instance.as_str());
    }

    #[test]
    fn hash_is_fnv1a() {
        assert_eq!(hash64(b"foobar"), 0x85944171f73967e8);
    }
}

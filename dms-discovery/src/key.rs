//! [`Key`]: a validated, `/`-separated discovery key.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A discovery key: `/` followed by one or more non-empty segments separated by `/`.
///
/// Rules (each broken rule has its own [`KeyError`] variant):
///
/// - it starts with `/`;
/// - no segment is empty (no `//`), there is no trailing `/`, and the root `/` alone is
///   not a key;
/// - at most [`Key::MAX_LEN`] bytes;
/// - no control characters (NUL, newline, DEL, ...).
///
/// Keys are cheap to clone (a shared string). Prefixes are segment-aware: see
/// [`Key::covers`].
///
/// ```
/// use dms_discovery::{Key, KeyError};
///
/// let cluster = Key::new("/chat/eu/lobby")?;
/// let instance = cluster.child("i-1")?;
/// assert_eq!(instance.as_str(), "/chat/eu/lobby/i-1");
/// assert_eq!(instance.parent(), Some(cluster.clone()));
/// assert_eq!(instance.last_segment(), "i-1");
/// assert!(cluster.covers(&instance));
/// assert!(!cluster.covers(&Key::new("/chat/eu/lobby2")?));
/// assert_eq!(Key::new("/chat/"), Err(KeyError::TrailingSlash));
/// # Ok::<(), KeyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Key(Arc<str>);

/// Why a string is not a [`Key`]. Each variant names the rule that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Keys contain no control characters (`char::is_control`: NUL, newlines, DEL, ...).
    #[error("key has the control character {found:?} at byte {offset}")]
    ControlCharacter {
        /// Byte offset of the character in the key.
        offset: usize,
        /// The character.
        found: char,
    },
    /// The empty string is not a key.
    #[error("key is empty")]
    Empty,
    /// A segment is empty: `//` inside the key, or the root `/` alone.
    #[error("segment {index} of the key is empty")]
    EmptySegment {
        /// Index of the empty segment (0 = the first after the leading `/`).
        index: usize,
    },
    /// Keys start with `/`.
    #[error("key {0:?} does not start with '/'")]
    NotAbsolute(String),
    /// A segment given to [`Key::child`] contains `/` (add one segment at a time).
    #[error("segment {0:?} contains '/'")]
    SlashInSegment(String),
    /// Longer than [`Key::MAX_LEN`] bytes.
    #[error("key is {len} bytes long; the maximum is {max}")]
    TooLong {
        /// Length given, in bytes.
        len: usize,
        /// The maximum, [`Key::MAX_LEN`].
        max: usize,
    },
    /// Keys do not end with `/`.
    #[error("key ends with '/'")]
    TrailingSlash,
}

impl Key {
    /// Longest key, in bytes.
    pub const MAX_LEN: usize = 1024;

    /// Parses and validates a key.
    pub fn new(key: impl AsRef<str>) -> Result<Self, KeyError> {
        let key = key.as_ref();
        validate(key)?;
        Ok(Self(Arc::from(key)))
    }

    /// The key as a string, e.g. `/svc/a`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This key with one more segment: `/a` and `b` give `/a/b`.
    ///
    /// `segment` must be non-empty and must not contain `/`; the result must be a valid
    /// key (length, control characters).
    pub fn child(&self, segment: &str) -> Result<Self, KeyError> {
        if segment.is_empty() {
            return Err(KeyError::EmptySegment {
                index: self.segments().count(),
            });
        }
        if segment.contains('/') {
            return Err(KeyError::SlashInSegment(segment.to_owned()));
        }
        Self::new(format!("{}/{segment}", self.0))
    }

    /// The key without its last segment; `None` for a single-segment key such as `/a`.
    pub fn parent(&self) -> Option<Self> {
        match self.0.rfind('/') {
            Some(0) | None => None,
            Some(at) => Some(Self(Arc::from(&self.0[..at]))),
        }
    }

    /// The last segment: `c` for `/a/b/c`.
    pub fn last_segment(&self) -> &str {
        match self.0.rfind('/') {
            Some(at) => &self.0[at + 1..],
            None => &self.0,
        }
    }

    /// The segments, in order: `["a", "b"]` for `/a/b`.
    pub fn segments(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.get(1..).unwrap_or_default().split('/')
    }

    /// Whether `key` is this key or lies below it: `key == self` or `key` starts with
    /// `self` followed by `/`. So `/svc/a` covers `/svc/a` and `/svc/a/x`, but not
    /// `/svc/ab`.
    pub fn covers(&self, key: &Self) -> bool {
        match key.0.strip_prefix(&*self.0) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

fn validate(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > Key::MAX_LEN {
        return Err(KeyError::TooLong {
            len: key.len(),
            max: Key::MAX_LEN,
        });
    }
    let Some(body) = key.strip_prefix('/') else {
        return Err(KeyError::NotAbsolute(key.to_owned()));
    };
    if let Some((offset, found)) = key.char_indices().find(|(_, c)| c.is_control()) {
        return Err(KeyError::ControlCharacter { offset, found });
    }
    let last = body.split('/').count() - 1;
    for (index, segment) in body.split('/').enumerate() {
        if segment.is_empty() {
            return Err(if index == last && index > 0 {
                KeyError::TrailingSlash
            } else {
                KeyError::EmptySegment { index }
            });
        }
    }
    Ok(())
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Key {
    type Err = KeyError;

    fn from_str(key: &str) -> Result<Self, KeyError> {
        Self::new(key)
    }
}

impl TryFrom<&str> for Key {
    type Error = KeyError;

    fn try_from(key: &str) -> Result<Self, KeyError> {
        Self::new(key)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by `Key` be searched with a `&str` (a `Key` hashes and orders exactly
/// as its string).
impl std::borrow::Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_keys() {
        for key in ["/a", "/a/b", "/svc/a.b-c_d/ü", "/ /x"] {
            assert_eq!(Key::new(key).map(|k| k.to_string()), Ok(key.to_owned()));
        }
        let max = format!("/{}", "x".repeat(Key::MAX_LEN - 1));
        assert!(Key::new(&max).is_ok());
    }

    #[test]
    fn each_rule_has_its_error() {
        assert_eq!(Key::new(""), Err(KeyError::Empty));
        assert_eq!(Key::new("a/b"), Err(KeyError::NotAbsolute("a/b".into())));
        assert_eq!(Key::new("/"), Err(KeyError::EmptySegment { index: 0 }));
        assert_eq!(Key::new("//a"), Err(KeyError::EmptySegment { index: 0 }));
        assert_eq!(Key::new("/a//b"), Err(KeyError::EmptySegment { index: 1 }));
        assert_eq!(Key::new("/a/"), Err(KeyError::TrailingSlash));
        assert_eq!(Key::new("/a/b/"), Err(KeyError::TrailingSlash));
        assert_eq!(
            Key::new("/a\0b"),
            Err(KeyError::ControlCharacter {
                offset: 2,
                found: '\0'
            })
        );
        assert_eq!(
            Key::new("/a/\nb"),
            Err(KeyError::ControlCharacter {
                offset: 3,
                found: '\n'
            })
        );
        let long = format!("/{}", "x".repeat(Key::MAX_LEN));
        assert_eq!(
            Key::new(long),
            Err(KeyError::TooLong {
                len: Key::MAX_LEN + 1,
                max: Key::MAX_LEN
            })
        );
    }

    #[test]
    fn navigation() {
        let k: Key = "/a/b/c".parse().unwrap();
        assert_eq!(k.parent().unwrap().as_str(), "/a/b");
        assert_eq!(k.parent().unwrap().parent().unwrap().as_str(), "/a");
        assert_eq!(Key::new("/a").unwrap().parent(), None);
        assert_eq!(k.last_segment(), "c");
        assert_eq!(k.segments().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(k.child("d").unwrap().as_str(), "/a/b/c/d");
        assert_eq!(k.child(""), Err(KeyError::EmptySegment { index: 3 }));
        assert_eq!(k.child("d/e"), Err(KeyError::SlashInSegment("d/e".into())));
        assert!(matches!(
            k.child("\u{7f}"),
            Err(KeyError::ControlCharacter {
                found: '\u{7f}',
                ..
            })
        ));
        let near_max = Key::new(format!("/{}", "x".repeat(Key::MAX_LEN - 2))).unwrap();
        assert!(matches!(near_max.child("y"), Err(KeyError::TooLong { .. })));
    }

    #[test]
    fn covers_is_segment_aware() {
        let a = Key::new("/svc/a").unwrap();
        let cases = [
            ("/svc/a", true),
            ("/svc/a/x", true),
            ("/svc/a/x/y", true),
            ("/svc/ab", false),
            ("/svc/a.b", false),
            ("/svc", false),
            ("/svc/b/a", false),
        ];
        for (key, expected) in cases {
            assert_eq!(a.covers(&Key::new(key).unwrap()), expected, "{key}");
        }
    }
}

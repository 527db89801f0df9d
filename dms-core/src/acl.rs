//! Access control: which principals (peers, by service path) may do which operations on
//! which services.
//!
//! An [`AclPolicy`] is a list of [`Rule`]s. Each rule names an [`Effect`] (allow or deny),
//! a set of [`Operations`], the principals it applies to (a [`Pattern`] over the peer's
//! service path) and the services it covers (a [`Pattern`] over the local instance's
//! service path, `*` by default, so one policy file can serve a whole deployment). A
//! decision for (principal, service, operation):
//!
//! 1. a matching **deny** rule denies, whatever allows it (deny overrides allow);
//! 2. otherwise a matching **allow** rule allows;
//! 3. otherwise the operation is **denied** (a configured policy is a white list).
//!
//! A node with no policy at all allows everything (the default, as before ACLs existed);
//! a node given a policy that cannot be read or parsed refuses to start (it never falls
//! back to allowing everything).
//!
//! A policy is data, fixed once the node runs. For decisions that change at run time (a
//! ban list, permissions kept elsewhere), an application implements [`AccessControl`],
//! the decision hook, asked on every message besides the policy (both must allow).
//!
//! # Text format
//!
//! One rule per line; `#` starts a comment that runs to the end of the line; blank lines
//! are ignored. Words are separated by spaces or tabs:
//!
//! ```text
//! EFFECT OPERATIONS from PRINCIPAL [to SERVICE]
//! ```
//!
//! - `EFFECT`: `allow` or `deny`;
//! - `OPERATIONS`: a comma-separated list of `connect`, `request`, `notify`, `broadcast`,
//!   `forward` (spaces after the commas are allowed), or `*` for all five;
//! - `PRINCIPAL` and `SERVICE`: a [`Pattern`]: `*` (everyone), or an absolute path of one
//!   to seven segments, each a name or `*` (any one segment), that matches every service
//!   path it is a prefix of: `/demo` (all of app `demo`), `/demo/cn/*/*/*/Lobby` (every
//!   Lobby instance of area `cn`), `/demo/cn/android/w1/g1/Lobby/lobby-1` (one instance).
//!   `to SERVICE` may be left out: it means `to *`.
//!
//! A text is at most [`MAX_POLICY_LEN`] bytes, with at most [`MAX_RULES`] rules and lines
//! of at most [`MAX_LINE_LEN`] bytes; the parser is total (any input gives a policy or an
//! [`AclParseError`] naming the line and the field, never a panic).
//!
//! ```
//! use dms_core::acl::{AclPolicy, Operation};
//! use dms_core::path::ServicePath;
//!
//! let policy: AclPolicy = "
//!     ## Lobbies may talk to Battle; lobby-9 may not broadcast.
//!     allow connect, request, notify, broadcast from /demo/cn/*/*/*/Lobby to /demo/cn/android/w1/g1/Battle
//!     deny broadcast from /demo/cn/android/w1/g1/Lobby/lobby-9
//! ".parse()?;
//! let battle: ServicePath = "/demo/cn/android/w1/g1/Battle/battle-1".parse()?;
//! let lobby_1: ServicePath = "/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?;
//! let lobby_9: ServicePath = "/demo/cn/android/w1/g1/Lobby/lobby-9".parse()?;
//! let club: ServicePath = "/demo/cn/android/w1/g1/Club/club-1".parse()?;
//! assert!(policy.decide(&lobby_1, &battle, Operation::Broadcast).is_allowed());
//! assert!(!policy.decide(&lobby_9, &battle, Operation::Broadcast).is_allowed()); // deny wins
//! assert!(policy.decide(&lobby_9, &battle, Operation::Request).is_allowed());
//! assert!(!policy.decide(&club, &battle, Operation::Connect).is_allowed()); // no rule
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::path::{ClusterPath, MAX_PATH_LEN, MAX_SEGMENT_LEN, ServicePath};

/// Longest policy text accepted, in bytes (1 MiB).
pub const MAX_POLICY_LEN: usize = 1 << 20;
/// Most rules in one policy.
pub const MAX_RULES: usize = 4096;
/// Longest line of a policy text, in bytes.
pub const MAX_LINE_LEN: usize = 4096;
/// Segments of a service path: the most a pattern may have.
const MAX_PATTERN_SEGMENTS: usize = 7;

/// Something a peer may do to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// Open a session with the service (checked when the service accepts a link, at READY).
    Connect,
    /// Send a request that expects a reply.
    Request,
    /// Send a one-way message to one instance.
    Notify,
    /// Send one copy of a broadcast to the cluster.
    Broadcast,
    /// Have a message forwarded through the service to another one: checked on routed
    /// requests (docs/PROTOCOL.md §3.5), for the adjacent peer that relays for another
    /// origin and, where a broker hands the message on, for its origin.
    Forward,
}

impl Operation {
    /// Every operation, in the order of the text format.
    pub const ALL: [Self; 5] = [
        Self::Connect,
        Self::Request,
        Self::Notify,
        Self::Broadcast,
        Self::Forward,
    ];

    /// Its name in the text format (`connect`, `request`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Request => "request",
            Self::Notify => "notify",
            Self::Broadcast => "broadcast",
            Self::Forward => "forward",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that names no [`Operation`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown operation {0:?} (expected connect, request, notify, broadcast or forward)")]
pub struct UnknownOperation(pub String);

impl FromStr for Operation {
    type Err = UnknownOperation;

    /// ```
    /// use dms_core::acl::Operation;
    /// assert_eq!("notify".parse(), Ok(Operation::Notify));
    /// assert!("shout".parse::<Operation>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| UnknownOperation(truncated(s)))
    }
}

/// A set of [`Operation`]s.
///
/// ```
/// use dms_core::acl::{Operation, Operations};
/// let set = Operations::NONE.with(Operation::Request).with(Operation::Notify);
/// assert!(set.contains(Operation::Request));
/// assert!(!set.contains(Operation::Connect));
/// assert_eq!(set.to_string(), "request,notify");
/// assert_eq!(Operations::ALL.to_string(), "*");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Operations(u8);

impl Operations {
    /// No operation.
    pub const NONE: Self = Self(0);
    /// Every operation.
    pub const ALL: Self = Self(0b1_1111);

    /// This set with `op` added.
    #[must_use]
    pub fn with(self, op: Operation) -> Self {
        Self(self.0 | op.bit())
    }

    /// Whether `op` is in the set.
    pub fn contains(self, op: Operation) -> bool {
        self.0 & op.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The operations in both sets.
    ///
    /// ```
    /// use dms_core::acl::{Operation, Operations};
    /// let both = Operations::ALL.intersection(Operation::Request.into());
    /// assert_eq!(both, Operation::Request.into());
    /// ```
    #[must_use]
    pub fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// This set without `op`.
    ///
    /// ```
    /// use dms_core::acl::{Operation, Operations};
    /// assert!(!Operations::ALL.without(Operation::Notify).contains(Operation::Notify));
    /// ```
    #[must_use]
    pub fn without(self, op: Operation) -> Self {
        Self(self.0 & !op.bit())
    }

    /// The operations of the set, in [`Operation::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Operation> {
        Operation::ALL
            .into_iter()
            .filter(move |op| self.contains(*op))
    }
}

impl From<Operation> for Operations {
    fn from(op: Operation) -> Self {
        Self::NONE.with(op)
    }
}

impl FromIterator<Operation> for Operations {
    fn from_iter<I: IntoIterator<Item = Operation>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

impl fmt::Display for Operations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::ALL {
            return f.write_str("*");
        }
        for (i, op) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(op.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Operations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Operations({self})")
    }
}

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Allows the operations (unless a deny rule matches too).
    Allow,
    /// Denies the operations, whatever allows them.
    Deny,
}

impl Effect {
    /// Its word in the text format.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// Why a string is not a [`Pattern`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// Empty.
    #[error("pattern is empty")]
    Empty,
    /// Neither `*` nor an absolute path.
    #[error("pattern {0:?} is neither '*' nor starts with '/'")]
    NotAbsolute(String),
    /// Longer than a service path may be.
    #[error("pattern is {len} bytes long; the maximum is {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// More segments than a service path has.
    #[error("pattern has {found} segments; a service path has at most {max}")]
    TooManySegments {
        /// Segments found.
        found: usize,
        /// The maximum.
        max: usize,
    },
    /// A segment is empty (`//` or a trailing `/`).
    #[error("segment {index} is empty")]
    EmptySegment {
        /// Index of the segment (0 = AppID).
        index: usize,
    },
    /// A segment is longer than a path segment may be.
    #[error("segment {index} is {len} bytes long; the maximum is {max}")]
    SegmentTooLong {
        /// Index of the segment.
        index: usize,
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A segment that is not `*` nor a valid path segment name.
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

/// A set of service paths: `*` (all), or a path prefix of one to seven segments where a
/// segment `*` matches any one segment.
///
/// ```
/// use dms_core::acl::Pattern;
/// use dms_core::path::ServicePath;
///
/// let lobby: ServicePath = "/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?;
/// assert!("*".parse::<Pattern>()?.matches(&lobby));
/// assert!("/demo".parse::<Pattern>()?.matches(&lobby));
/// assert!("/demo/cn/*/*/*/Lobby".parse::<Pattern>()?.matches(&lobby));
/// assert!(!"/demo/cn/*/*/*/Battle".parse::<Pattern>()?.matches(&lobby));
/// assert!(!"/demo/cn/android/w1/g1/Lobby/lobby-2".parse::<Pattern>()?.matches(&lobby));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    /// `None`: `*`, everyone. Otherwise the segments, `None` for a `*` segment.
    segments: Option<Box<[Option<Box<str>>]>>,
}

impl Pattern {
    /// The pattern `*`: every service path.
    pub fn any() -> Self {
        Self { segments: None }
    }

    /// Whether `path` is in the set.
    pub fn matches(&self, path: &ServicePath) -> bool {
        let Some(segments) = &self.segments else {
            return true;
        };
        let mut parts = path.as_str().split('/').skip(1);
        segments
            .iter()
            .all(|segment| match (segment, parts.next()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(name), Some(part)) => **name == *part,
            })
    }

    /// Whether this is `*`.
    pub fn is_any(&self) -> bool {
        self.segments.is_none()
    }
}

impl From<&ClusterPath> for Pattern {
    /// Every instance of the cluster.
    fn from(cluster: &ClusterPath) -> Self {
        Self {
            segments: Some(
                cluster
                    .as_str()
                    .split('/')
                    .skip(1)
                    .map(|s| Some(s.into()))
                    .collect(),
            ),
        }
    }
}

impl From<&ServicePath> for Pattern {
    /// Exactly that instance.
    fn from(path: &ServicePath) -> Self {
        Self {
            segments: Some(
                path.as_str()
                    .split('/')
                    .skip(1)
                    .map(|s| Some(s.into()))
                    .collect(),
            ),
        }
    }
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        if s == "*" {
            return Ok(Self::any());
        }
        if s.len() > MAX_PATH_LEN {
            return Err(PatternError::TooLong {
                len: s.len(),
                max: MAX_PATH_LEN,
            });
        }
        let Some(rest) = s.strip_prefix('/') else {
            return Err(PatternError::NotAbsolute(truncated(s)));
        };
        let found = rest.split('/').count();
        if found > MAX_PATTERN_SEGMENTS {
            return Err(PatternError::TooManySegments {
                found,
                max: MAX_PATTERN_SEGMENTS,
            });
        }
        let mut segments = Vec::with_capacity(found);
        for (index, segment) in rest.split('/').enumerate() {
            if segment == "*" {
                segments.push(None);
                continue;
            }
            if segment.is_empty() {
                return Err(PatternError::EmptySegment { index });
            }
            if segment.len() > MAX_SEGMENT_LEN {
                return Err(PatternError::SegmentTooLong {
                    index,
                    len: segment.len(),
                    max: MAX_SEGMENT_LEN,
                });
            }
            if let Some(found) = segment
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            {
                return Err(PatternError::InvalidCharacter { index, found });
            }
            if segment == "." || segment == ".." {
                return Err(PatternError::DotSegment { index });
            }
            segments.push(Some(segment.into()));
        }
        Ok(Self {
            segments: Some(segments.into()),
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(segments) = &self.segments else {
            return f.write_str("*");
        };
        for segment in segments.iter() {
            f.write_str("/")?;
            f.write_str(segment.as_deref().unwrap_or("*"))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({self})")
    }
}

/// One line of a policy: `effect operations from principal to service`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Allow or deny.
    pub effect: Effect,
    /// The operations it covers.
    pub operations: Operations,
    /// The peers it applies to.
    pub principal: Pattern,
    /// The services (local instances) it covers.
    pub service: Pattern,
}

impl Rule {
    /// A rule that allows `operations` from `principal` to every service.
    pub fn allow(operations: impl Into<Operations>, principal: Pattern) -> Self {
        Self {
            effect: Effect::Allow,
            operations: operations.into(),
            principal,
            service: Pattern::any(),
        }
    }

    /// A rule that denies `operations` from `principal` to every service.
    pub fn deny(operations: impl Into<Operations>, principal: Pattern) -> Self {
        Self {
            effect: Effect::Deny,
            operations: operations.into(),
            principal,
            service: Pattern::any(),
        }
    }

    /// The same rule restricted to the services of `service`.
    #[must_use]
    pub fn to(mut self, service: Pattern) -> Self {
        self.service = service;
        self
    }

    /// Whether the rule applies to `op` by `principal` on `service`.
    pub fn applies(&self, principal: &ServicePath, service: &ServicePath, op: Operation) -> bool {
        self.operations.contains(op)
            && self.principal.matches(principal)
            && self.service.matches(service)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} from {} to {}",
            self.effect.as_str(),
            self.operations,
            self.principal,
            self.service
        )
    }
}

/// The outcome of [`AclPolicy::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// An allow rule matched and no deny rule did.
    Allow,
    /// A deny rule matched (the index of the first one in [`AclPolicy::rules`]).
    Deny {
        /// Index of the deny rule.
        rule: usize,
    },
    /// No rule matched: denied.
    NoRule,
}

impl Decision {
    /// Whether the operation may go ahead.
    pub fn is_allowed(self) -> bool {
        self == Self::Allow
    }
}

/// An access-control policy: rules evaluated deny-first, default deny. See the
/// [module documentation](self) for the semantics and the text format.
///
/// Cheap to clone (the rules are shared).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AclPolicy {
    rules: Arc<[Rule]>,
}

impl AclPolicy {
    /// A policy of these rules.
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> Self {
        Self {
            rules: rules.into_iter().collect(),
        }
    }

    /// A policy without rules: everything is denied.
    pub fn deny_all() -> Self {
        Self::default()
    }

    /// Allows every operation, `connect` included, from the instances of `clusters`, and
    /// nothing from anyone else (the meaning of the older cluster allow-list).
    ///
    /// ```
    /// use dms_core::acl::{AclPolicy, Operation};
    /// let policy = AclPolicy::allow_clusters(["/demo/cn/android/w1/g1/Lobby".parse()?]);
    /// let me = "/demo/cn/android/w1/g1/Battle/battle-1".parse()?;
    /// assert!(policy.decide(&"/demo/cn/android/w1/g1/Lobby/l-1".parse()?, &me, Operation::Notify).is_allowed());
    /// assert!(!policy.decide(&"/demo/cn/android/w1/g1/Club/c-1".parse()?, &me, Operation::Connect).is_allowed());
    /// # Ok::<(), dms_core::path::PathError>(())
    /// ```
    pub fn allow_clusters(clusters: impl IntoIterator<Item = ClusterPath>) -> Self {
        Self::new(
            clusters
                .into_iter()
                .map(|cluster| Rule::allow(Operations::ALL, Pattern::from(&cluster))),
        )
    }

    /// Parses the text format (see the [module documentation](self)).
    pub fn parse(text: &str) -> Result<Self, AclParseError> {
        if text.len() > MAX_POLICY_LEN {
            return Err(AclParseError::new(
                0,
                AclField::Policy,
                AclErrorKind::TooLarge {
                    len: text.len(),
                    max: MAX_POLICY_LEN,
                },
            ));
        }
        let mut rules = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            if line.len() > MAX_LINE_LEN {
                return Err(AclParseError::new(
                    number,
                    AclField::Line,
                    AclErrorKind::LineTooLong {
                        len: line.len(),
                        max: MAX_LINE_LEN,
                    },
                ));
            }
            let content = line.split('#').next().unwrap_or_default();
            if content.trim().is_empty() {
                continue;
            }
            if rules.len() == MAX_RULES {
                return Err(AclParseError::new(
                    number,
                    AclField::Policy,
                    AclErrorKind::TooManyRules { max: MAX_RULES },
                ));
            }
            rules.push(
                parse_rule(content)
                    .map_err(|(field, kind)| AclParseError::new(number, field, kind))?,
            );
        }
        Ok(Self::new(rules))
    }

    /// Parses the text format from bytes (a file's content): like [`parse`](Self::parse),
    /// and bytes that are not UTF-8 are an error naming their line.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, AclParseError> {
        if bytes.len() > MAX_POLICY_LEN {
            return Err(AclParseError::new(
                0,
                AclField::Policy,
                AclErrorKind::TooLarge {
                    len: bytes.len(),
                    max: MAX_POLICY_LEN,
                },
            ));
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::parse(text),
            Err(err) => {
                let before = bytes.get(..err.valid_up_to()).unwrap_or_default();
                let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                Err(AclParseError::new(
                    line,
                    AclField::Line,
                    AclErrorKind::NotUtf8,
                ))
            }
        }
    }

    /// The rules, in the order given.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether `principal` may do `op` on `service`: deny rules first, then allow rules,
    /// then deny.
    pub fn decide(
        &self,
        principal: &ServicePath,
        service: &ServicePath,
        op: Operation,
    ) -> Decision {
        let mut allowed = false;
        for (rule_index, rule) in self.rules.iter().enumerate() {
            if rule.applies(principal, service, op) {
                match rule.effect {
                    Effect::Deny => return Decision::Deny { rule: rule_index },
                    Effect::Allow => allowed = true,
                }
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::NoRule
        }
    }

    /// Every operation `principal` may do on `service` (what a session caches at READY).
    pub fn permitted(&self, principal: &ServicePath, service: &ServicePath) -> Operations {
        Operation::ALL
            .into_iter()
            .filter(|op| self.decide(principal, service, *op).is_allowed())
            .collect()
    }

    /// The principal patterns of the allow rules that cover `connect` to `service`
    /// (informational, e.g. for a registration: deny rules may narrow them).
    pub fn connect_principals(&self, service: &ServicePath) -> Vec<String> {
        self.rules
            .iter()
            .filter(|rule| {
                rule.effect == Effect::Allow
                    && rule.operations.contains(Operation::Connect)
                    && rule.service.matches(service)
            })
            .map(|rule| rule.principal.to_string())
            .collect()
    }
}

impl FromStr for AclPolicy {
    type Err = AclParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for AclPolicy {
    /// The text format, one rule per line (parses back to the same policy).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for rule in self.rules.iter() {
            writeln!(f, "{rule}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for AclPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.rules.iter().map(ToString::to_string))
            .finish()
    }
}

/// An access-control decision hook: the application's say on which principals (peers,
/// by service path) may do which operations on a service, asked while the node runs.
///
/// [`AclPolicy`] implements it (fixed rules); implement it for a decision of your own: a
/// ban list, a policy reloaded from a file, a lookup in your own permission store. The
/// kernel (`dms::NodeBuilder::access_control`) asks the hook besides the node's
/// [`AclPolicy`], if it has one: an operation goes ahead only when **both** allow it (a
/// hook narrows a policy, it never widens it; without a policy the hook alone decides).
///
/// When it is asked (`dms_core::proto::ProtoConfig::access_control`):
///
/// - at READY, for `connect` (a refused requester gets DISCONNECT `ACCESS_DENIED`);
/// - on **every** REQ, for `request`, `notify` or `broadcast` (and `forward` for routed
///   ones, with the same rules as the policy: docs/PROTOCOL.md §3.5), so a change of its
///   answers applies to the next message of a session already open. A session that was
///   let in stays open: refusals are per message.
///
/// It runs on the node's protocol task, once per incoming REQ: keep it cheap and never
/// block (no I/O; a short [`Mutex`](std::sync::Mutex) or
/// [`RwLock`](std::sync::RwLock) is fine).
///
/// `Arc<T>` is a hook when `T` is, so the application can keep a handle to change what
/// the hook answers:
///
/// ```
/// use std::collections::HashSet;
/// use std::sync::{Arc, Mutex};
///
/// use dms_core::acl::{AccessControl, Operation, Operations};
/// use dms_core::path::ServicePath;
///
/// /// Everyone may do everything, except the banned, who may not even connect.
/// #[derive(Default)]
/// struct BanList(Mutex<HashSet<ServicePath>>);
///
/// impl AccessControl for BanList {
///     fn permitted(&self, principal: &ServicePath, _service: &ServicePath) -> Operations {
///         let banned = self.0.lock().map_or(true, |b| b.contains(principal)); // poisoned: deny
///         if banned { Operations::NONE } else { Operations::ALL }
///     }
/// }
///
/// let bans = Arc::new(BanList::default());
/// let hook: Arc<dyn AccessControl> = bans.clone(); // what the node is given
/// let (cheater, me): (ServicePath, ServicePath) = (
///     "/demo/cn/android/w1/g1/Lobby/lobby-9".parse()?,
///     "/demo/cn/android/w1/g1/Battle/battle-1".parse()?,
/// );
/// assert!(hook.permitted(&cheater, &me).contains(Operation::Request));
/// bans.0.lock().unwrap().insert(cheater.clone()); // while the node runs
/// assert!(hook.permitted(&cheater, &me).is_empty());
/// # Ok::<(), dms_core::path::PathError>(())
/// ```
pub trait AccessControl: Send + Sync + 'static {
    /// Every operation `principal` may do on `service` (the local instance) now.
    fn permitted(&self, principal: &ServicePath, service: &ServicePath) -> Operations;

    /// The principal patterns ([`Pattern`] syntax) this hook may let `connect` to
    /// `service`, published in the instance's registration for people and tools to read
    /// (informational: nothing enforces them). The default, `["*"]`, says "anyone; the
    /// hook decides at READY". A node with both a policy and a hook publishes the
    /// policy's patterns (the hook can only narrow them).
    fn connect_principals(&self, service: &ServicePath) -> Vec<String> {
        let _ = service;
        vec!["*".to_owned()]
    }
}

impl AccessControl for AclPolicy {
    fn permitted(&self, principal: &ServicePath, service: &ServicePath) -> Operations {
        Self::permitted(self, principal, service)
    }

    fn connect_principals(&self, service: &ServicePath) -> Vec<String> {
        Self::connect_principals(self, service)
    }
}

impl<T: AccessControl + ?Sized> AccessControl for Arc<T> {
    fn permitted(&self, principal: &ServicePath, service: &ServicePath) -> Operations {
        (**self).permitted(principal, service)
    }

    fn connect_principals(&self, service: &ServicePath) -> Vec<String> {
        (**self).connect_principals(service)
    }
}

impl<T: AccessControl + ?Sized> AccessControl for Box<T> {
    fn permitted(&self, principal: &ServicePath, service: &ServicePath) -> Operations {
        (**self).permitted(principal, service)
    }

    fn connect_principals(&self, service: &ServicePath) -> Vec<String> {
        (**self).connect_principals(service)
    }
}

/// Which part of a policy text is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclField {
    /// The text as a whole (its size, its rule count).
    Policy,
    /// A line as a whole (its length, its encoding).
    Line,
    /// The first word: `allow` or `deny`.
    Effect,
    /// The operations.
    Operations,
    /// The word `from`.
    From,
    /// The principal pattern.
    Principal,
    /// The word `to`.
    To,
    /// The service pattern.
    Service,
    /// Words after the service.
    Trailing,
}

impl fmt::Display for AclField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Policy => "policy",
            Self::Line => "line",
            Self::Effect => "effect",
            Self::Operations => "operations",
            Self::From => "'from'",
            Self::Principal => "principal",
            Self::To => "'to'",
            Self::Service => "service",
            Self::Trailing => "end of rule",
        })
    }
}

/// What is wrong with a field of a policy text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AclErrorKind {
    /// The text is longer than [`MAX_POLICY_LEN`].
    #[error("{len} bytes; the maximum is {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// More than [`MAX_RULES`] rules.
    #[error("more than {max} rules")]
    TooManyRules {
        /// The maximum.
        max: usize,
    },
    /// A line longer than [`MAX_LINE_LEN`].
    #[error("{len} bytes long; the maximum is {max}")]
    LineTooLong {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Bytes that are not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// The rule ends before this field.
    #[error("missing")]
    Missing,
    /// A word other than the one expected.
    #[error("expected {expected}, found {found:?}")]
    Expected {
        /// What the format has here.
        expected: &'static str,
        /// What the text has (cut at 64 characters).
        found: String,
    },
    /// An operation list with an empty item (`request,,notify`).
    #[error("empty item in the operation list")]
    EmptyOperation,
    /// An unknown operation.
    #[error(transparent)]
    Operation(#[from] UnknownOperation),
    /// An invalid pattern.
    #[error(transparent)]
    Pattern(#[from] PatternError),
}

/// A policy text that does not parse: the line (1-based; 0 for the text as a whole), the
/// field and what is wrong with it.
///
/// ```
/// use dms_core::acl::{AclField, AclPolicy};
/// let err = AclPolicy::parse("allow request from /demo\nallow shout from *").unwrap_err();
/// assert_eq!((err.line, err.field), (2, AclField::Operations));
/// assert!(err.to_string().starts_with("line 2, operations: unknown operation"), "{err}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, {field}: {kind}")]
pub struct AclParseError {
    /// The line, from 1 (0: the whole text).
    pub line: usize,
    /// The field.
    pub field: AclField,
    /// What is wrong.
    #[source]
    pub kind: AclErrorKind,
}

impl AclParseError {
    fn new(line: usize, field: AclField, kind: AclErrorKind) -> Self {
        Self { line, field, kind }
    }
}

/// Parses the content of one non-empty line (comment removed).
fn parse_rule(content: &str) -> Result<Rule, (AclField, AclErrorKind)> {
    let mut words = content.split_whitespace();
    let effect = match words.next() {
        Some("allow") => Effect::Allow,
        Some("deny") => Effect::Deny,
        Some(other) => return Err((AclField::Effect, expected("'allow' or 'deny'", other))),
        None => return Err((AclField::Effect, AclErrorKind::Missing)),
    };
    // The operations run up to `from`, possibly with spaces around their commas.
    let mut list = String::new();
    let mut reached_from = false;
    for word in words.by_ref() {
        if word == "from" {
            reached_from = true;
            break;
        }
        if !list.is_empty() {
            list.push(' ');
        }
        list.push_str(word);
    }
    if list.is_empty() {
        return Err((AclField::Operations, AclErrorKind::Missing));
    }
    let mut operations = Operations::NONE;
    for item in list.split(',').map(str::trim) {
        if item.is_empty() {
            return Err((AclField::Operations, AclErrorKind::EmptyOperation));
        }
        if let Some((op, next)) = item.split_once(' ') {
            // `allow request notify`: a comma is missing, or `from` is.
            if op != "*" {
                op.parse::<Operation>()
                    .map_err(|e| (AclField::Operations, AclErrorKind::Operation(e)))?;
            }
            return Err((AclField::From, expected("',' or 'from'", next)));
        }
        if item == "*" {
            operations = Operations::ALL;
        } else {
            let op = item
                .parse::<Operation>()
                .map_err(|e| (AclField::Operations, AclErrorKind::Operation(e)))?;
            operations = operations.with(op);
        }
    }
    if !reached_from {
        return Err((AclField::From, AclErrorKind::Missing));
    }
    let principal = match words.next() {
        Some(word) => word
            .parse::<Pattern>()
            .map_err(|e| (AclField::Principal, AclErrorKind::Pattern(e)))?,
        None => return Err((AclField::Principal, AclErrorKind::Missing)),
    };
    let service = match words.next() {
        None => Pattern::any(),
        Some("to") => match words.next() {
            Some(word) => word
                .parse::<Pattern>()
                .map_err(|e| (AclField::Service, AclErrorKind::Pattern(e)))?,
            None => return Err((AclField::Service, AclErrorKind::Missing)),
        },
        Some(other) => return Err((AclField::To, expected("'to' or the end of the rule", other))),
    };
    if let Some(extra) = words.next() {
        return Err((AclField::Trailing, expected("the end of the rule", extra)));
    }
    Ok(Rule {
        effect,
        operations,
        principal,
        service,
    })
}

fn expected(expected: &'static str, found: &str) -> AclErrorKind {
    AclErrorKind::Expected {
        expected,
        found: truncated(found),
    }
}

/// At most 64 characters of peer- or file-supplied text, for error messages.
fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> AclParseError {
        AclPolicy::parse(text).expect_err(text)
    }

    #[test]
    fn a_policy_and_its_handles_are_hooks_that_answer_as_the_policy() {
        let policy: AclPolicy = "allow connect, request from /a/b/c/d/e/Lobby\n\
                                 deny request from /a/b/c/d/e/Lobby/l-2"
            .parse()
            .unwrap();
        let me: ServicePath = "/a/b/c/d/e/Battle/b-1".parse().unwrap();
        let hooks: [Box<dyn AccessControl>; 3] = [
            Box::new(policy.clone()),
            Box::new(Arc::new(policy.clone())),
            Box::new(Box::new(policy.clone()) as Box<dyn AccessControl>),
        ];
        for who in [
            "/a/b/c/d/e/Lobby/l-1",
            "/a/b/c/d/e/Lobby/l-2",
            "/a/b/c/d/e/Club/c-1",
        ] {
            let who: ServicePath = who.parse().unwrap();
            for hook in &hooks {
                assert_eq!(hook.permitted(&who, &me), policy.permitted(&who, &me));
                assert_eq!(hook.connect_principals(&me), ["/a/b/c/d/e/Lobby"]);
            }
        }
        /// A hook that says nothing of its principals publishes `*`.
        struct Everyone;
        impl AccessControl for Everyone {
            fn permitted(&self, _: &ServicePath, _: &ServicePath) -> Operations {
                Operations::ALL
            }
        }
        assert_eq!(Everyone.connect_principals(&me), ["*"]);
        let both = Operations::ALL.intersection(Operations::NONE.with(Operation::Notify));
        assert_eq!(both.iter().collect::<Vec<_>>(), [Operation::Notify]);
        assert_eq!(
            Operations::ALL.without(Operation::Forward).to_string(),
            "connect,request,notify,broadcast"
        );
    }

    #[test]
    fn parses_the_format_and_prints_it_back() {
        let policy = AclPolicy::parse(
            "# header\n\n  allow connect, request ,notify from /demo/cn/*/*/*/Lobby to /demo/cn/android/w1/g1/Battle # inline\n\
             deny\t*\tfrom\t*\n\
             allow forward,broadcast from /demo/cn/android/w1/g1/Club/club-1\n",
        )
        .unwrap();
        assert_eq!(policy.rules().len(), 3);
        let first = &policy.rules()[0];
        assert_eq!(first.effect, Effect::Allow);
        assert_eq!(
            first.operations,
            [Operation::Connect, Operation::Request, Operation::Notify]
                .into_iter()
                .collect()
        );
        assert_eq!(first.principal.to_string(), "/demo/cn/*/*/*/Lobby");
        assert_eq!(first.service.to_string(), "/demo/cn/android/w1/g1/Battle");
        assert_eq!(policy.rules()[1].operations, Operations::ALL);
        assert!(policy.rules()[1].principal.is_any());
        assert!(policy.rules()[2].service.is_any());
        assert!(policy.rules()[2].operations.contains(Operation::Forward));
        let printed = policy.to_string();
        assert_eq!(AclPolicy::parse(&printed).unwrap(), policy, "{printed}");
        assert_eq!(AclPolicy::parse("").unwrap(), AclPolicy::deny_all());
        assert_eq!(
            AclPolicy::parse("# nothing\n   \n").unwrap().rules().len(),
            0
        );
    }

    #[test]
    fn bad_input_names_the_line_and_the_field() {
        use AclField as F;
        let long_segment = format!("/{}", "a".repeat(65));
        let cases: &[(&str, usize, AclField)] = &[
            ("permit request from *", 1, F::Effect),
            ("allow", 1, F::Operations),
            ("allow from *", 1, F::Operations),
            ("allow request", 1, F::From),
            ("allow request *", 1, F::From),
            ("allow request notify from *", 1, F::From),
            ("allow shout from *", 1, F::Operations),
            ("allow request,,notify from *", 1, F::Operations),
            ("allow request, from *", 1, F::Operations),
            ("allow ,request from *", 1, F::Operations),
            ("allow request from", 1, F::Principal),
            ("allow request from demo", 1, F::Principal),
            ("allow request from /demo//x", 1, F::Principal),
            ("allow request from /demo/", 1, F::Principal),
            ("allow request from /a/b/c/d/e/f/g/h", 1, F::Principal),
            ("allow request from /demo/c$n", 1, F::Principal),
            ("allow request from /demo/..", 1, F::Principal),
            ("allow request from /demo/**", 1, F::Principal),
            ("allow request from * at /demo", 1, F::To),
            ("allow request from * to", 1, F::Service),
            ("allow request from * to nowhere", 1, F::Service),
            ("allow request from * to /demo extra", 1, F::Trailing),
            (
                "allow request from *\n\n# ok\ndeny x from *",
                4,
                F::Operations,
            ),
        ];
        for (text, line, field) in cases {
            let e = err(text);
            assert_eq!((e.line, e.field), (*line, *field), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("line {line}, ")), "{e}");
        }
        let e = err(&format!("allow request from {long_segment}"));
        assert!(matches!(
            e.kind,
            AclErrorKind::Pattern(PatternError::SegmentTooLong { .. })
        ));
        let e = err("allow request from /demo/ünï");
        assert!(matches!(
            e.kind,
            AclErrorKind::Pattern(PatternError::InvalidCharacter { index: 1, .. })
        ));
    }

    #[test]
    fn hostile_input_is_bounded_and_never_panics() {
        let huge = "#".repeat(MAX_POLICY_LEN + 1);
        let e = err(&huge);
        assert_eq!((e.line, e.field), (0, AclField::Policy));
        let long_line = format!("allow * from *\n{}", " ".repeat(MAX_LINE_LEN + 1));
        let e = err(&long_line);
        assert_eq!((e.line, e.field), (2, AclField::Line));
        let many = "allow * from *\n".repeat(MAX_RULES + 1);
        let e = err(&many);
        assert_eq!(
            (e.line, e.kind.clone()),
            (MAX_RULES + 1, AclErrorKind::TooManyRules { max: MAX_RULES })
        );
        let e = AclPolicy::parse_bytes(b"allow * from *\ndeny \xff from *").unwrap_err();
        assert_eq!(
            (e.line, e.field, e.kind),
            (2, AclField::Line, AclErrorKind::NotUtf8)
        );
        // An error message quotes at most 64 characters of what it found.
        let e = err(&format!("{} request from *", "x".repeat(1000)));
        assert!(e.to_string().len() < 200, "{e}");
        // Junk of every byte value, cut at every length.
        let junk: Vec<u8> = (0..=255u8)
            .cycle()
            .take(2048)
            .map(|b| b.wrapping_mul(151))
            .collect();
        for len in 0..junk.len() {
            let _ = AclPolicy::parse_bytes(&junk[..len]);
            let text = String::from_utf8_lossy(&junk[..len]);
            let _ = AclPolicy::parse(&text);
        }
    }

    #[test]
    fn deny_overrides_allow_in_any_order() {
        let me: ServicePath = "/demo/cn/android/w1/g1/Battle/battle-1".parse().unwrap();
        let peer: ServicePath = "/demo/cn/android/w1/g1/Lobby/lobby-1".parse().unwrap();
        for text in [
            "allow * from *\ndeny request from /demo/cn/android/w1/g1/Lobby",
            "deny request from /demo/cn/android/w1/g1/Lobby\nallow * from *",
        ] {
            let policy = AclPolicy::parse(text).unwrap();
            assert!(matches!(
                policy.decide(&peer, &me, Operation::Request),
                Decision::Deny { .. }
            ));
            assert_eq!(
                policy.decide(&peer, &me, Operation::Notify),
                Decision::Allow
            );
            assert_eq!(
                policy.permitted(&peer, &me),
                Operations::ALL
                    .iter()
                    .filter(|op| *op != Operation::Request)
                    .collect()
            );
        }
        let none = AclPolicy::parse("allow * from /other").unwrap();
        assert_eq!(
            none.decide(&peer, &me, Operation::Connect),
            Decision::NoRule
        );
    }

    #[test]
    fn connect_principals_lists_the_allow_connect_rules_for_a_service() {
        let me: ServicePath = "/demo/cn/android/w1/g1/Battle/battle-1".parse().unwrap();
        let policy = AclPolicy::parse(
            "allow connect from /demo/cn/*/*/*/Lobby to /demo/cn/android/w1/g1/Battle\n\
             allow request from /demo/x\n\
             allow * from /demo/admin to /demo/cn/android/w1/g1/Guild\n\
             deny connect from *",
        )
        .unwrap();
        assert_eq!(policy.connect_principals(&me), ["/demo/cn/*/*/*/Lobby"]);
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_fails_cleanly(text in "[ -~\\t\\n]{0,400}") {
            if let Ok(policy) = AclPolicy::parse(&text) {
                proptest::prop_assert_eq!(AclPolicy::parse(&policy.to_string()), Ok(policy));
            }
        }

        #[test]
        fn rule_like_text_never_panics(
            text in "((allow|deny|x) [a-z*,]{0,20} (from|to)? (\\*|(/[a-z*.]{0,3}){0,9}) ?(to (\\*|(/[a-z*]{0,3}){0,9}))?\\n){0,8}"
        ) {
            if let Ok(policy) = AclPolicy::parse(&text) {
                proptest::prop_assert_eq!(AclPolicy::parse(&policy.to_string()), Ok(policy));
            }
        }
    }
}

//! Node configuration files (feature `config`): [`NodeConfig`], read from TOML with
//! every error reported with its line, overridden by `DMS_*` environment variables, and
//! applied to a builder by [`NodeBuilder::from_config`].
//!
//! # The file
//!
//! Every field is optional; a field left out keeps the kernel's default. `docs/node.example.toml`
//! in the repository shows them all.
//!
//! | field | TOML | meaning |
//! |---|---|---|
//! | `service` | string | this instance's service path `/App/Area/Platform/World/Group/Cluster/Instance` (required by [`NodeBuilder::from_config`]) |
//! | `discovery` | string | `etcd://host:port[,host:port...]` or `memory://`: read by the `dms` tool, which builds the backend; the kernel is given its [`Discovery`](crate::Discovery) in code |
//! | `bind` | array of strings | endpoints to accept links on (`tcp://`, `quic://`, `tcp+tls://`, `shm://NAME`) ([`NodeBuilder::bind`]) |
//! | `advertise` | array of strings | endpoints published instead of the bound ones ([`NodeBuilder::advertise`]) |
//! | `targets` | array of strings | cluster paths this node sends to ([`NodeBuilder::target`]) |
//! | `routed_targets` | array of strings | cluster paths this node sends to only through brokers ([`NodeBuilder::routed_target`]) |
//! | `broker` | boolean | this node forwards routed messages for others ([`NodeBuilder::broker`]) |
//! | `link_cost` | integer | what this node's links cost in the routing table, at least 1 ([`NodeBuilder::link_cost`]) |
//! | `hop_limit` | integer | the hop limit of the routed messages this node sends, 1 to 255 ([`NodeBuilder::hop_limit`]) |
//! | `prefer` | array of strings | schemes dialled, most preferred first ([`NodeBuilder::prefer`]) |
//! | `metrics` | string | `HOST:PORT` of the Prometheus endpoint of `dms node` (the kernel has none) |
//! | `request_timeout_ms` | integer | default request timeout ([`NodeBuilder::request_timeout`]) |
//! | `lease_ttl_s` | integer | registration lease, at least 1 ([`NodeBuilder::lease_ttl`]) |
//! | `heartbeat.interval_ms` | integer | PING interval, at least 10 ([`NodeBuilder::heartbeat`]) |
//! | `heartbeat.missed` | integer | silent intervals before a peer is dead, at least 1 |
//! | `incoming.queue` | integer | requests waiting for the application in all ([`NodeBuilder::incoming_queue`]) |
//! | `incoming.per_peer` | integer | of those, from one peer (at most `incoming.queue`) |
//! | `acl.file` | string | ACL policy file ([`NodeBuilder::acl_file`]) |
//! | `acl.allow` | array of strings | clusters allowed everything ([`NodeBuilder::allow`]) |
//! | `acl.rules` | array of strings | ACL rules, one a string: `allow\|deny OPS from PRINCIPAL [to SERVICE]` ([`NodeBuilder::acl_policy`]) |
//! | `tls.cert`, `tls.key`, `tls.ca` | strings | PEM files of this instance's TLS identity, all three or none (feature `quic`; turns QUIC and TCP+TLS on) |
//! | `tls.dev` | string | DEVELOPMENT ONLY: directory of a development CA (`NodeBuilder::quic_dev_certificates`); excludes `tls.cert` |
//! | `shm.ring_bytes` | integer | ring size of dialled shared-memory links, a power of two from 4 KiB to 16 MiB (feature `shm`) |
//! | `shm.spin_us` | integer | the shared-memory reader's longest spin, in µs (feature `shm`) |
//!
//! Unknown fields are errors (a typo never goes unnoticed), and so are values of the
//! wrong type, paths and endpoints that do not parse, schemes this build has no transport
//! for, zero or negative durations and sizes, incomplete TLS settings and QUIC endpoints
//! without TLS. [`NodeConfig::from_toml_str`] reports **every** such error, each with the
//! field and its line and column ([`ConfigError`]); a TOML syntax error stops the parse,
//! and is then the one error. [`NodeConfig::from_toml_file`] also resolves relative file
//! paths against the file's directory and checks the files it names (the ACL file parses,
//! the TLS files can be read and, with the feature `quic`, hold a certificate for
//! `service`).
//!
//! # Environment overrides
//!
//! [`NodeConfig::apply_env`] overrides fields with `DMS_` + the field's path in capitals,
//! dots as underscores: `DMS_SERVICE`, `DMS_DISCOVERY`, `DMS_BIND`, `DMS_ADVERTISE`,
//! `DMS_TARGETS`, `DMS_ROUTED_TARGETS`, `DMS_BROKER`, `DMS_LINK_COST`, `DMS_HOP_LIMIT`,
//! `DMS_PREFER`, `DMS_METRICS`, `DMS_REQUEST_TIMEOUT_MS`,
//! `DMS_LEASE_TTL_S`, `DMS_HEARTBEAT_INTERVAL_MS`, `DMS_HEARTBEAT_MISSED`,
//! `DMS_INCOMING_QUEUE`, `DMS_INCOMING_PER_PEER`, `DMS_ACL_FILE`, `DMS_ACL_ALLOW`,
//! `DMS_ACL_RULES`, `DMS_TLS_CERT`, `DMS_TLS_KEY`, `DMS_TLS_CA`, `DMS_TLS_DEV`,
//! `DMS_SHM_RING_BYTES`, `DMS_SHM_SPIN_US` ([`ENV_VARS`]). Lists are comma-separated,
//! except `DMS_ACL_RULES`, whose rules are separated by `;` (a rule has commas). A boolean
//! (`DMS_BROKER`) is `true`, `false`, `1`, `0`, `yes` or `no`. A list
//! variable replaces the file's list; an empty variable empties a list, or unsets a
//! single value. Other variables, `DMS_*` or not, are ignored. Errors name the variable.
//!
//! ```
//! use dms::config::NodeConfig;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = NodeConfig::from_toml_str(r#"
//! service = "/demo/cn/linux/w1/g1/Battle/battle-1"
//! targets = ["/demo/cn/linux/w1/g1/Lobby"]
//!
//! [heartbeat]
//! interval_ms = 500
//! "#)?;
//! config.apply_env([("DMS_HEARTBEAT_MISSED", "5")])?;
//! let builder = dms::NodeBuilder::from_config(&config)?; // then .discovery(...).start()
//!
//! let errors = NodeConfig::from_toml_str("service = \"battle-1\"\nheartbeat.interval_ms = 0\n")
//!     .unwrap_err();
//! let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
//! assert_eq!(lines.len(), 2);
//! assert!(lines[0].starts_with("1:11: service: "), "{}", lines[0]);
//! assert!(lines[1].starts_with("2:25: heartbeat.interval_ms: "), "{}", lines[1]);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dms_core::Endpoint;
use dms_core::acl::{AclPolicy, Rule};
use dms_core::path::{ClusterPath, ServicePath};
use toml_edit::{ImDocument, Item, TableLike, Value};

use crate::MemoryDiscovery;
use crate::NodeBuilder;

/// The shortest heartbeat interval accepted.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
/// The smallest and largest shared-memory rings accepted (`shm.ring_bytes`).
pub const SHM_RING_BYTES: (usize, usize) = (4 << 10, 16 << 20);

/// The environment variables [`NodeConfig::apply_env`] reads, with the field each sets.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("DMS_SERVICE", "service"),
    ("DMS_DISCOVERY", "discovery"),
    ("DMS_BIND", "bind"),
    ("DMS_ADVERTISE", "advertise"),
    ("DMS_TARGETS", "targets"),
    ("DMS_ROUTED_TARGETS", "routed_targets"),
    ("DMS_BROKER", "broker"),
    ("DMS_LINK_COST", "link_cost"),
    ("DMS_HOP_LIMIT", "hop_limit"),
    ("DMS_PREFER", "prefer"),
    ("DMS_METRICS", "metrics"),
    ("DMS_REQUEST_TIMEOUT_MS", "request_timeout_ms"),
    ("DMS_LEASE_TTL_S", "lease_ttl_s"),
    ("DMS_HEARTBEAT_INTERVAL_MS", "heartbeat.interval_ms"),
    ("DMS_HEARTBEAT_MISSED", "heartbeat.missed"),
    ("DMS_INCOMING_QUEUE", "incoming.queue"),
    ("DMS_INCOMING_PER_PEER", "incoming.per_peer"),
    ("DMS_ACL_FILE", "acl.file"),
    ("DMS_ACL_ALLOW", "acl.allow"),
    ("DMS_ACL_RULES", "acl.rules"),
    ("DMS_TLS_CERT", "tls.cert"),
    ("DMS_TLS_KEY", "tls.key"),
    ("DMS_TLS_CA", "tls.ca"),
    ("DMS_TLS_DEV", "tls.dev"),
    ("DMS_SHM_RING_BYTES", "shm.ring_bytes"),
    ("DMS_SHM_SPIN_US", "shm.spin_us"),
];

/// The tables of the file.
const SECTIONS: &[&str] = &["heartbeat", "incoming", "acl", "tls", "shm"];

/// What a field holds in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    List,
    Int,
    Bool,
}

/// Every field, by its path.
const FIELDS: &[(&str, Kind)] = &[
    ("service", Kind::Str),
    ("discovery", Kind::Str),
    ("bind", Kind::List),
    ("advertise", Kind::List),
    ("targets", Kind::List),
    ("routed_targets", Kind::List),
    ("broker", Kind::Bool),
    ("link_cost", Kind::Int),
    ("hop_limit", Kind::Int),
    ("prefer", Kind::List),
    ("metrics", Kind::Str),
    ("request_timeout_ms", Kind::Int),
    ("lease_ttl_s", Kind::Int),
    ("heartbeat.interval_ms", Kind::Int),
    ("heartbeat.missed", Kind::Int),
    ("incoming.queue", Kind::Int),
    ("incoming.per_peer", Kind::Int),
    ("acl.file", Kind::Str),
    ("acl.allow", Kind::List),
    ("acl.rules", Kind::List),
    ("tls.cert", Kind::Str),
    ("tls.key", Kind::Str),
    ("tls.ca", Kind::Str),
    ("tls.dev", Kind::Str),
    ("shm.ring_bytes", Kind::Int),
    ("shm.spin_us", Kind::Int),
];

/// The schemes of DMS endpoints: the cargo feature of each, and whether it is in.
const SCHEMES: &[(&str, &str, bool)] = &[
    ("tcp", "tcp", cfg!(feature = "tcp")),
    ("quic", "quic", cfg!(feature = "quic")),
    ("tcp+tls", "tcp-tls", cfg!(feature = "tcp-tls")),
    ("shm", "shm", cfg!(feature = "shm")),
];

/// Whether this build has a transport for `scheme`.
fn compiled_in(scheme: &str) -> bool {
    SCHEMES.iter().any(|s| s.0 == scheme && s.2)
}

/// A node's configuration: everything [`NodeBuilder`] takes besides the discovery and
/// the handlers, plus what the `dms` tool reads (`discovery`, `metrics`). `None` and
/// empty lists keep the kernel's defaults. See the [module docs](self) for the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeConfig {
    /// This instance's service path (`service`).
    pub service: Option<ServicePath>,
    /// The discovery URL (`discovery`), for the `dms` tool: `etcd://host:port[,...]` or
    /// `memory://` (checked for that form).
    pub discovery: Option<String>,
    /// Endpoints to bind (`bind`; empty: the kernel's default).
    pub bind: Vec<Endpoint>,
    /// Endpoints to publish instead of the bound ones (`advertise`).
    pub advertise: Vec<Endpoint>,
    /// Clusters this node sends to (`targets`).
    pub targets: Vec<ClusterPath>,
    /// Clusters this node sends to only through brokers (`routed_targets`).
    pub routed_targets: Vec<ClusterPath>,
    /// Whether this node is a broker: it forwards routed messages for others (`broker`).
    pub broker: bool,
    /// What this node's links cost in the routing table (`link_cost`, at least 1;
    /// default 1).
    pub link_cost: Option<u32>,
    /// The hop limit of the routed messages this node sends (`hop_limit`, 1 to 255;
    /// default 16).
    pub hop_limit: Option<u8>,
    /// Schemes dialled, most preferred first (`prefer`; empty: the default).
    pub prefer: Vec<String>,
    /// Address of the Prometheus endpoint of `dms node` (`metrics`).
    pub metrics: Option<SocketAddr>,
    /// Default request timeout (`request_timeout_ms`).
    pub request_timeout: Option<Duration>,
    /// Registration lease (`lease_ttl_s`).
    pub lease_ttl: Option<Duration>,
    /// `[heartbeat]`.
    pub heartbeat: HeartbeatSection,
    /// `[incoming]`.
    pub incoming: IncomingSection,
    /// `[acl]`.
    pub acl: AclSection,
    /// `[tls]`.
    pub tls: TlsSection,
    /// `[shm]`.
    pub shm: ShmSection,
}

/// `[heartbeat]`: the heartbeats a node drives as requester.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeartbeatSection {
    /// PING interval (`interval_ms`, at least [`MIN_HEARTBEAT`]; default 1 s).
    pub interval: Option<Duration>,
    /// Silent intervals before a peer is dead (`missed`, at least 1; default 3).
    pub missed: Option<u32>,
}

/// `[incoming]`: requests waiting for the application.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IncomingSection {
    /// In all (`queue`, default 1,024).
    pub queue: Option<usize>,
    /// From one peer (`per_peer`, default 256, at most `queue`).
    pub per_peer: Option<usize>,
}

/// `[acl]`: access control (the rules of `allow`, `rules` and `file` add up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AclSection {
    /// A policy file read at start (`file`).
    pub file: Option<PathBuf>,
    /// Clusters allowed every operation (`allow`).
    pub allow: Vec<ClusterPath>,
    /// Rules (`rules`, one a string).
    pub rules: Vec<Rule>,
}

/// `[tls]`: the TLS identity of QUIC and TCP+TLS (feature `quic`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsSection {
    /// PEM certificate (chain) naming the service path (`cert`).
    pub cert: Option<PathBuf>,
    /// Its PEM private key (`key`).
    pub key: Option<PathBuf>,
    /// PEM CA certificate(s) peers must chain to (`ca`).
    pub ca: Option<PathBuf>,
    /// DEVELOPMENT ONLY: the directory of a development CA (`dev`).
    pub dev: Option<PathBuf>,
}

/// `[shm]`: the shared-memory transport (feature `shm`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShmSection {
    /// Ring size of links this node dials (`ring_bytes`).
    pub ring_bytes: Option<usize>,
    /// The reader's longest spin (`spin_us`).
    pub spin: Option<Duration>,
}

/// Where a configuration error comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// A place in the file, both counted from 1 (the column in characters).
    Line {
        /// The line.
        line: usize,
        /// The column.
        column: usize,
    },
    /// An environment variable.
    Env(String),
    /// A value given in code (or the file as a whole).
    Unknown,
}

/// One configuration error: the field, what is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field's path (`heartbeat.interval_ms`, `bind[1]`), or `syntax` for TOML
    /// syntax errors.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// Where.
    pub origin: Origin,
}

impl fmt::Display for ConfigError {
    /// `LINE:COL: field: message`, `DMS_VAR: field: message` or `field: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::Line { line, column } => write!(f, "{line}:{column}: ")?,
            Origin::Env(var) => write!(f, "{var}: ")?,
            Origin::Unknown => {}
        }
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in a configuration (at least one), in the order of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// The errors.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true (there is at least one error); for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn one(field: &str, message: impl Into<String>, origin: Origin) -> Self {
        Self(vec![ConfigError {
            field: field.to_owned(),
            message: message.into(),
            origin,
        }])
    }
}

impl fmt::Display for ConfigErrors {
    /// One error a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A field's value before it is checked: as TOML or the environment gave it.
enum Raw {
    Str(String),
    /// Elements with their origins.
    List(Vec<(String, Origin)>),
    Int(i64),
    Bool(bool),
}

/// What a parse collects: errors and where each field (and list element) was given.
#[derive(Default)]
struct Collector {
    errors: Vec<ConfigError>,
    origins: HashMap<String, Origin>,
}

impl Collector {
    fn error(&mut self, field: &str, message: impl Into<String>, origin: Origin) {
        self.errors.push(ConfigError {
            field: field.to_owned(),
            message: message.into(),
            origin,
        });
    }

    /// Where `field` was given.
    fn at(&self, field: &str) -> Origin {
        self.origins.get(field).cloned().unwrap_or(Origin::Unknown)
    }

    fn error_at(&mut self, field: &str, message: impl Into<String>) {
        let origin = self.at(field);
        self.error(field, message, origin);
    }

    fn finish(mut self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            return Ok(());
        }
        self.errors.sort_by_key(|e| match e.origin {
            Origin::Line { line, column } => (line, column),
            _ => (usize::MAX, 0),
        });
        Err(ConfigErrors(self.errors))
    }
}

/// Line and column (from 1, the column in characters) of a byte offset of `text`.
fn line_col(text: &str, offset: usize) -> Origin {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    Origin::Line {
        line,
        column: before[start..].chars().count() + 1,
    }
}

fn origin_of(text: &str, span: Option<Range<usize>>) -> Origin {
    span.map_or(Origin::Unknown, |s| line_col(text, s.start))
}

fn type_name(item: &Item) -> &'static str {
    match item {
        Item::Value(v) => v.type_name(),
        Item::Table(_) => "table",
        Item::ArrayOfTables(_) => "array of tables",
        Item::None => "nothing",
    }
}

impl NodeConfig {
    /// An empty configuration for `service` (every other field at its default).
    pub fn new(service: ServicePath) -> Self {
        Self {
            service: Some(service),
            ..Self::default()
        }
    }

    /// Parses and checks a TOML configuration: every error found, each naming its field
    /// and line ([`ConfigErrors`]). File paths stay as written (relative to the working
    /// directory) and the files are not read: see [`from_toml_file`](Self::from_toml_file).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigErrors> {
        Self::parse(text, None)
    }

    /// Reads, parses and checks a TOML configuration file: as
    /// [`from_toml_str`](Self::from_toml_str), with relative paths (`acl.file`, `tls.*`)
    /// taken from the file's directory, and the files checked (the ACL file parses, the
    /// TLS files are readable and, with the feature `quic`, hold a certificate for
    /// `service`). A file that cannot be read is one error of field `file`.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ConfigErrors> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::one(
                "file",
                format!("cannot read {}: {e}", path.display()),
                Origin::Unknown,
            )
        })?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        Self::parse(&text, Some(&dir))
    }

    fn parse(text: &str, base: Option<&Path>) -> Result<Self, ConfigErrors> {
        let doc = ImDocument::parse(text).map_err(|e| {
            ConfigErrors::one(
                "syntax",
                e.message()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(": "),
                origin_of(text, e.span()),
            )
        })?;
        let mut config = Self::default();
        let mut collector = Collector::default();
        config.walk(text, doc.as_table(), "", &mut collector);
        if let Some(base) = base {
            config.resolve_paths(base);
        }
        config.check(&mut collector);
        if base.is_some() {
            config.check_files(&mut collector);
        }
        collector.finish().map(|()| config)
    }

    /// Reads the fields of one table (the document or a section).
    fn walk(&mut self, text: &str, table: &dyn TableLike, prefix: &str, out: &mut Collector) {
        for (key, item) in table.iter() {
            let path = if prefix.is_empty() {
                key.to_owned()
            } else {
                format!("{prefix}.{key}")
            };
            let key_origin = origin_of(text, table.key(key).and_then(|k| k.span()));
            let value_origin = match origin_of(text, item.span()) {
                Origin::Unknown => key_origin.clone(),
                known => known,
            };
            if prefix.is_empty() && SECTIONS.contains(&key) {
                match item.as_table_like() {
                    Some(section) => self.walk(text, section, key, out),
                    None => out.error(
                        &path,
                        format!("expected a table ([{key}]), found {}", type_name(item)),
                        value_origin,
                    ),
                }
                continue;
            }
            let Some(&(field, kind)) = FIELDS.iter().find(|(name, _)| *name == path) else {
                out.error(&path, unknown_field(prefix), key_origin);
                continue;
            };
            out.origins.insert(field.to_owned(), value_origin.clone());
            let raw = match (kind, item.as_value()) {
                (Kind::Str, Some(Value::String(s))) => Raw::Str(s.value().clone()),
                (Kind::Int, Some(Value::Integer(i))) => Raw::Int(*i.value()),
                (Kind::Bool, Some(Value::Boolean(b))) => Raw::Bool(*b.value()),
                (Kind::List, Some(Value::Array(array))) => {
                    let mut elements = Vec::new();
                    for (i, element) in array.iter().enumerate() {
                        let origin = origin_of(text, element.span());
                        match element.as_str() {
                            Some(s) => elements.push((s.to_owned(), origin)),
                            None => out.error(
                                &format!("{field}[{i}]"),
                                format!("expected a string, found {}", element.type_name()),
                                origin,
                            ),
                        }
                    }
                    Raw::List(elements)
                }
                _ => {
                    let expected = match kind {
                        Kind::Str => "a string",
                        Kind::Int => "an integer",
                        Kind::List => "an array of strings",
                        Kind::Bool => "a boolean (true or false)",
                    };
                    out.error(
                        field,
                        format!("expected {expected}, found {}", type_name(item)),
                        value_origin,
                    );
                    continue;
                }
            };
            self.set(field, raw, value_origin, out);
        }
    }

    /// Sets one field from its raw value: what does not parse is an error (range and
    /// consistency are for [`check`](Self::check)).
    fn set(&mut self, field: &str, raw: Raw, origin: Origin, out: &mut Collector) {
        let list = |raw: Raw, out: &mut Collector| -> Vec<(usize, String)> {
            match raw {
                Raw::List(elements) => elements
                    .into_iter()
                    .enumerate()
                    .map(|(i, (s, origin))| {
                        out.origins.insert(format!("{field}[{i}]"), origin);
                        (i, s)
                    })
                    .collect(),
                _ => Vec::new(),
            }
        };
        let text = |raw: &Raw| match raw {
            Raw::Str(s) => s.clone(),
            _ => String::new(),
        };
        let int = |raw: &Raw, out: &mut Collector| -> Option<u64> {
            let Raw::Int(i) = raw else { return None };
            match u64::try_from(*i) {
                Ok(u) => Some(u),
                Err(_) => {
                    out.error(
                        field,
                        format!("must not be negative, found {i}"),
                        origin.clone(),
                    );
                    None
                }
            }
        };
        fn each<T: std::str::FromStr>(
            field: &str,
            elements: Vec<(usize, String)>,
            out: &mut Collector,
        ) -> Vec<T>
        where
            T::Err: fmt::Display,
        {
            let mut parsed = Vec::new();
            for (i, s) in elements {
                match s.parse::<T>() {
                    Ok(v) => parsed.push(v),
                    Err(e) => out.error_at(&format!("{field}[{i}]"), e.to_string()),
                }
            }
            parsed
        }
        let path_of = |raw: &Raw| {
            let s = text(raw);
            (!s.is_empty()).then(|| PathBuf::from(s))
        };
        match field {
            "service" => {
                let s = text(&raw);
                self.service = match s.parse::<ServicePath>() {
                    Ok(path) => Some(path),
                    Err(_) if s.is_empty() => None,
                    Err(e) => {
                        out.error(field, e.to_string(), origin);
                        None
                    }
                };
            }
            "discovery" => {
                let s = text(&raw);
                self.discovery = (!s.is_empty()).then_some(s);
            }
            "bind" => self.bind = each(field, list(raw, out), out),
            "advertise" => self.advertise = each(field, list(raw, out), out),
            "targets" => self.targets = each(field, list(raw, out), out),
            "routed_targets" => self.routed_targets = each(field, list(raw, out), out),
            "broker" => self.broker = matches!(raw, Raw::Bool(true)),
            "link_cost" => {
                self.link_cost = int(&raw, out).and_then(|n| match u32::try_from(n) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        out.error(field, format!("{n} is too large"), origin.clone());
                        None
                    }
                });
            }
            "hop_limit" => {
                self.hop_limit = int(&raw, out).and_then(|n| match u8::try_from(n) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        out.error(
                            field,
                            format!("{n} is more than 255 (one byte on the wire)"),
                            origin.clone(),
                        );
                        None
                    }
                });
            }
            "prefer" => self.prefer = list(raw, out).into_iter().map(|(_, s)| s).collect(),
            "acl.allow" => self.acl.allow = each(field, list(raw, out), out),
            "acl.rules" => {
                let policies: Vec<AclPolicy> = each(field, list(raw, out), out);
                self.acl.rules = policies.iter().flat_map(|p| p.rules().to_vec()).collect();
            }
            "metrics" => {
                let s = text(&raw);
                self.metrics = match s.parse::<SocketAddr>() {
                    Ok(addr) => Some(addr),
                    Err(_) if s.is_empty() => None,
                    Err(e) => {
                        out.error(
                            field,
                            format!("{e}: expected HOST:PORT, e.g. 127.0.0.1:9464"),
                            origin,
                        );
                        None
                    }
                };
            }
            "acl.file" => self.acl.file = path_of(&raw),
            "tls.cert" => self.tls.cert = path_of(&raw),
            "tls.key" => self.tls.key = path_of(&raw),
            "tls.ca" => self.tls.ca = path_of(&raw),
            "tls.dev" => self.tls.dev = path_of(&raw),
            "request_timeout_ms" => {
                self.request_timeout = int(&raw, out).map(Duration::from_millis)
            }
            "lease_ttl_s" => self.lease_ttl = int(&raw, out).map(Duration::from_secs),
            "heartbeat.interval_ms" => {
                self.heartbeat.interval = int(&raw, out).map(Duration::from_millis);
            }
            "shm.spin_us" => self.shm.spin = int(&raw, out).map(Duration::from_micros),
            "heartbeat.missed" => {
                self.heartbeat.missed = int(&raw, out).and_then(|n| match u32::try_from(n) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        out.error(field, format!("{n} is too large"), origin.clone());
                        None
                    }
                });
            }
            "incoming.queue" | "incoming.per_peer" | "shm.ring_bytes" => {
                let value = int(&raw, out).and_then(|n| match usize::try_from(n) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        out.error(field, format!("{n} is too large"), origin.clone());
                        None
                    }
                });
                match field {
                    "incoming.queue" => self.incoming.queue = value,
                    "incoming.per_peer" => self.incoming.per_peer = value,
                    _ => self.shm.ring_bytes = value,
                }
            }
            _ => out.error(field, unknown_field(""), origin),
        }
    }

    /// Makes the relative file paths relative to `base`.
    fn resolve_paths(&mut self, base: &Path) {
        for path in [
            &mut self.acl.file,
            &mut self.tls.cert,
            &mut self.tls.key,
            &mut self.tls.ca,
            &mut self.tls.dev,
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// Checks the values' ranges and their consistency (what a configuration made in
    /// code can get wrong too): zero durations and sizes, unknown or absent schemes, QUIC
    /// endpoints without TLS, incomplete TLS, sections of transports not compiled in.
    fn check(&self, out: &mut Collector) {
        let tls = self.tls.cert.is_some() || self.tls.dev.is_some();
        for (name, endpoints) in [("bind", &self.bind), ("advertise", &self.advertise)] {
            for (i, endpoint) in endpoints.iter().enumerate() {
                let field = format!("{name}[{i}]");
                if let Err(message) = check_endpoint(endpoint, name == "bind" && !tls) {
                    out.error_at(&field, message);
                }
            }
        }
        for (i, scheme) in self.prefer.iter().enumerate() {
            if let Err(message) = check_scheme(scheme, false) {
                out.error_at(&format!("prefer[{i}]"), message);
            }
        }
        if let Some(url) = &self.discovery {
            if let Err(message) = check_discovery(url) {
                out.error_at("discovery", message);
            }
        }
        if self.link_cost == Some(0) {
            out.error_at("link_cost", "must be at least 1");
        }
        if self.hop_limit == Some(0) {
            out.error_at("hop_limit", "must be at least 1");
        }
        for (i, cluster) in self.routed_targets.iter().enumerate() {
            if self.targets.contains(cluster) {
                out.error_at(
                    &format!("routed_targets[{i}]"),
                    format!(
                        "{cluster} is in targets too: a cluster is dialled or routed, not both"
                    ),
                );
            }
        }
        if self.request_timeout == Some(Duration::ZERO) {
            out.error_at("request_timeout_ms", "must be at least 1");
        }
        if self
            .lease_ttl
            .is_some_and(|ttl| ttl < Duration::from_secs(1))
        {
            out.error_at("lease_ttl_s", "must be at least 1");
        }
        if self.heartbeat.interval.is_some_and(|i| i < MIN_HEARTBEAT) {
            out.error_at(
                "heartbeat.interval_ms",
                format!("must be at least {} ms", MIN_HEARTBEAT.as_millis()),
            );
        }
        if self.heartbeat.missed == Some(0) {
            out.error_at("heartbeat.missed", "must be at least 1");
        }
        if self.incoming.queue == Some(0) {
            out.error_at("incoming.queue", "must be at least 1");
        }
        match (self.incoming.per_peer, self.incoming.queue) {
            (Some(0), _) => out.error_at("incoming.per_peer", "must be at least 1"),
            (Some(per_peer), Some(queue)) if queue > 0 && per_peer > queue => out.error_at(
                "incoming.per_peer",
                format!("{per_peer} is more than incoming.queue ({queue})"),
            ),
            _ => {}
        }
        self.check_tls(out);
        let shm = [
            ("shm.ring_bytes", self.shm.ring_bytes.is_some()),
            ("shm.spin_us", self.shm.spin.is_some()),
        ];
        for (field, given) in shm {
            if given && !cfg!(feature = "shm") {
                out.error_at(
                    field,
                    "this build has no shared-memory transport (dms feature `shm`)",
                );
            }
        }
        if let Some(bytes) = self.shm.ring_bytes {
            let (min, max) = SHM_RING_BYTES;
            if !bytes.is_power_of_two() || !(min..=max).contains(&bytes) {
                out.error_at(
                    "shm.ring_bytes",
                    format!("{bytes} is not a power of two from {min} to {max}"),
                );
            }
        }
    }

    fn check_tls(&self, out: &mut Collector) {
        let files = [
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
            ("tls.ca", &self.tls.ca),
        ];
        let given: Vec<&str> = files
            .iter()
            .filter(|f| f.1.is_some())
            .map(|f| f.0)
            .collect();
        if !given.is_empty() && given.len() < 3 {
            let at = out.at(given[0]);
            for (field, path) in files {
                if path.is_none() {
                    out.error(
                        field,
                        format!(
                            "missing: {} given, tls.cert, tls.key and tls.ca go together",
                            given.join(" and ")
                        ),
                        at.clone(),
                    );
                }
            }
        }
        if self.tls.dev.is_some() && !given.is_empty() {
            out.error_at(
                "tls.dev",
                format!("conflicts with {}: give either", given.join(", ")),
            );
        }
        if !cfg!(feature = "quic") {
            for field in given
                .iter()
                .copied()
                .chain(self.tls.dev.is_some().then_some("tls.dev"))
            {
                out.error_at(field, "this build has no TLS (dms feature `quic`)");
            }
        }
    }

    /// Checks the files named: the ACL file parses, the TLS files are readable and (with
    /// QUIC) make an identity for `service`.
    fn check_files(&self, out: &mut Collector) {
        if let Some(file) = &self.acl.file {
            match std::fs::read(file) {
                Err(e) => out.error_at("acl.file", format!("cannot read {}: {e}", file.display())),
                Ok(bytes) => {
                    if let Err(e) = AclPolicy::parse_bytes(&bytes) {
                        out.error_at("acl.file", format!("{}: {e}", file.display()));
                    }
                }
            }
        }
        let mut readable = true;
        for (field, path) in [
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
            ("tls.ca", &self.tls.ca),
        ] {
            if let Some(path) = path {
                if let Err(e) = std::fs::File::open(path) {
                    out.error_at(field, format!("cannot read {}: {e}", path.display()));
                    readable = false;
                }
            }
        }
        #[cfg(feature = "quic")]
        if readable {
            if let Err((field, message)) = self.tls_identity() {
                out.error_at(field, message);
            }
        }
        #[cfg(not(feature = "quic"))]
        let _ = readable;
    }

    /// The TLS identity of `tls.cert`, `tls.key` and `tls.ca`, if given, checked against
    /// `service`.
    #[cfg(feature = "quic")]
    fn tls_identity(&self) -> Result<Option<dms_tls::TlsIdentity>, (&'static str, String)> {
        let (Some(cert), Some(key), Some(ca)) = (&self.tls.cert, &self.tls.key, &self.tls.ca)
        else {
            return Ok(None);
        };
        let tls = dms_tls::TlsIdentity::from_pem_files(cert, key, ca)
            .map_err(|e| ("tls.cert", e.to_string()))?;
        if let Some(service) = &self.service {
            if tls.path() != service {
                return Err((
                    "tls.cert",
                    format!(
                        "the certificate is for {}, not for service {service}",
                        tls.path()
                    ),
                ));
            }
        }
        Ok(Some(tls))
    }

    /// Checks a configuration made or changed in code: the checks of
    /// [`from_toml_str`](Self::from_toml_str) on values (ranges, schemes, TLS), without
    /// lines. Files are not read.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut collector = Collector::default();
        self.check(&mut collector);
        collector.finish()
    }

    /// Overrides fields with the `DMS_*` variables among `vars` ([`ENV_VARS`]; see the
    /// [module docs](self)), e.g. `std::env::vars()`; other variables are ignored. Either
    /// every variable applies, or none does and the errors (each naming its variable)
    /// are returned. Returns the names of the variables applied.
    ///
    /// ```
    /// use dms::config::NodeConfig;
    /// let mut config = NodeConfig::default();
    /// let applied = config
    ///     .apply_env([("DMS_SERVICE", "/a/b/c/d/e/Battle/b-1"), ("HOME", "/root")])
    ///     .unwrap();
    /// assert_eq!(applied, ["DMS_SERVICE"]);
    /// let error = config.apply_env([("DMS_HEARTBEAT_MISSED", "x")]).unwrap_err();
    /// assert!(error.to_string().starts_with("DMS_HEARTBEAT_MISSED: heartbeat.missed: "));
    /// ```
    pub fn apply_env<K, V>(
        &mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Vec<String>, ConfigErrors>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut next = self.clone();
        let mut collector = Collector::default();
        let mut applied = Vec::new();
        for (name, value) in vars {
            let (name, value) = (name.as_ref(), value.as_ref());
            let Some(&(var, field)) = ENV_VARS.iter().find(|(var, _)| *var == name) else {
                continue;
            };
            applied.push(var.to_owned());
            let origin = Origin::Env(var.to_owned());
            collector.origins.insert(field.to_owned(), origin.clone());
            let kind = FIELDS
                .iter()
                .find(|(name, _)| *name == field)
                .map_or(Kind::Str, |f| f.1);
            let raw = match kind {
                Kind::Str => Raw::Str(value.trim().to_owned()),
                Kind::List => {
                    let separator = if field == "acl.rules" { ';' } else { ',' };
                    Raw::List(
                        value
                            .split(separator)
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(|s| (s.to_owned(), origin.clone()))
                            .collect(),
                    )
                }
                Kind::Int | Kind::Bool if value.trim().is_empty() => {
                    next.unset(field);
                    continue;
                }
                Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => Raw::Bool(true),
                    "false" | "0" | "no" => Raw::Bool(false),
                    _ => {
                        collector.error(
                            field,
                            format!("expected true or false, found {value:?}"),
                            origin,
                        );
                        continue;
                    }
                },
                Kind::Int => match value.trim().parse::<i64>() {
                    Ok(i) => Raw::Int(i),
                    Err(_) => {
                        collector.error(
                            field,
                            format!("expected an integer, found {value:?}"),
                            origin,
                        );
                        continue;
                    }
                },
            };
            next.set(field, raw, origin, &mut collector);
        }
        next.check(&mut collector);
        collector.finish()?;
        *self = next;
        Ok(applied)
    }

    /// Unsets an integer field (an empty variable).
    fn unset(&mut self, field: &str) {
        match field {
            "request_timeout_ms" => self.request_timeout = None,
            "lease_ttl_s" => self.lease_ttl = None,
            "heartbeat.interval_ms" => self.heartbeat.interval = None,
            "heartbeat.missed" => self.heartbeat.missed = None,
            "incoming.queue" => self.incoming.queue = None,
            "incoming.per_peer" => self.incoming.per_peer = None,
            "shm.ring_bytes" => self.shm.ring_bytes = None,
            "shm.spin_us" => self.shm.spin = None,
            "link_cost" => self.link_cost = None,
            "hop_limit" => self.hop_limit = None,
            "broker" => self.broker = false,
            _ => {}
        }
    }

    /// The configuration as TOML, in the form [`from_toml_str`](Self::from_toml_str)
    /// reads (fields at their defaults are left out; durations in whole units).
    pub fn to_toml_string(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, key: &str, value: String| {
            out.push_str(key);
            out.push_str(" = ");
            out.push_str(&value);
            out.push('\n');
        };
        let list = |items: Vec<String>| {
            let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
            format!("[{}]", quoted.join(", "))
        };
        let strings = |items: &[_]| list(items.iter().map(|i: &Endpoint| i.to_string()).collect());
        if let Some(service) = &self.service {
            line(&mut out, "service", quote(&service.to_string()));
        }
        if let Some(discovery) = &self.discovery {
            line(&mut out, "discovery", quote(discovery));
        }
        if !self.bind.is_empty() {
            line(&mut out, "bind", strings(&self.bind));
        }
        if !self.advertise.is_empty() {
            line(&mut out, "advertise", strings(&self.advertise));
        }
        if !self.targets.is_empty() {
            line(
                &mut out,
                "targets",
                list(self.targets.iter().map(ToString::to_string).collect()),
            );
        }
        if !self.routed_targets.is_empty() {
            line(
                &mut out,
                "routed_targets",
                list(
                    self.routed_targets
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                ),
            );
        }
        if self.broker {
            line(&mut out, "broker", "true".to_owned());
        }
        if let Some(cost) = self.link_cost {
            line(&mut out, "link_cost", cost.to_string());
        }
        if let Some(hops) = self.hop_limit {
            line(&mut out, "hop_limit", hops.to_string());
        }
        if !self.prefer.is_empty() {
            line(&mut out, "prefer", list(self.prefer.clone()));
        }
        if let Some(metrics) = &self.metrics {
            line(&mut out, "metrics", quote(&metrics.to_string()));
        }
        if let Some(timeout) = self.request_timeout {
            line(
                &mut out,
                "request_timeout_ms",
                timeout.as_millis().to_string(),
            );
        }
        if let Some(ttl) = self.lease_ttl {
            line(&mut out, "lease_ttl_s", ttl.as_secs().to_string());
        }
        let section = |out: &mut String, name: &str, fields: Vec<(&str, Option<String>)>| {
            if fields.iter().all(|f| f.1.is_none()) {
                return;
            }
            out.push_str(&format!("\n[{name}]\n"));
            for (key, value) in fields {
                if let Some(value) = value {
                    line(out, key, value);
                }
            }
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| quote(&p.to_string_lossy()));
        section(
            &mut out,
            "heartbeat",
            vec![
                (
                    "interval_ms",
                    self.heartbeat.interval.map(|d| d.as_millis().to_string()),
                ),
                ("missed", self.heartbeat.missed.map(|n| n.to_string())),
            ],
        );
        section(
            &mut out,
            "incoming",
            vec![
                ("queue", self.incoming.queue.map(|n| n.to_string())),
                ("per_peer", self.incoming.per_peer.map(|n| n.to_string())),
            ],
        );
        let allow = self
            .acl
            .allow
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        let rules = self
            .acl
            .rules
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        section(
            &mut out,
            "acl",
            vec![
                ("file", path(&self.acl.file)),
                ("allow", (!allow.is_empty()).then(|| list(allow))),
                ("rules", (!rules.is_empty()).then(|| list(rules))),
            ],
        );
        section(
            &mut out,
            "tls",
            vec![
                ("cert", path(&self.tls.cert)),
                ("key", path(&self.tls.key)),
                ("ca", path(&self.tls.ca)),
                ("dev", path(&self.tls.dev)),
            ],
        );
        section(
            &mut out,
            "shm",
            vec![
                ("ring_bytes", self.shm.ring_bytes.map(|n| n.to_string())),
                ("spin_us", self.shm.spin.map(|d| d.as_micros().to_string())),
            ],
        );
        out
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn unknown_field(section: &str) -> String {
    let names: Vec<&str> = FIELDS
        .iter()
        .filter_map(|(path, _)| match section {
            "" => Some(path.split('.').next().unwrap_or(path)),
            _ => path.strip_prefix(section)?.strip_prefix('.'),
        })
        .fold(Vec::new(), |mut names, name| {
            if !names.contains(&name) {
                names.push(name);
            }
            names
        });
    format!("unknown field; expected one of: {}", names.join(", "))
}

/// A known scheme and, if `compiled`, one this build has a transport for.
fn check_scheme(scheme: &str, compiled: bool) -> Result<(), String> {
    let Some((_, feature, _)) = SCHEMES.iter().find(|(s, _, _)| *s == scheme) else {
        let known: Vec<&str> = SCHEMES.iter().map(|s| s.0).collect();
        return Err(format!(
            "unknown scheme {scheme:?}: expected one of {}",
            known.join(", ")
        ));
    };
    if compiled && !compiled_in(scheme) {
        return Err(format!(
            "this build has no {scheme}:// transport (dms feature `{feature}`)"
        ));
    }
    Ok(())
}

/// An endpoint of a scheme compiled in, with an address of the right form; `no_tls`:
/// TLS schemes are refused (a bound QUIC endpoint needs credentials).
fn check_endpoint(endpoint: &Endpoint, no_tls: bool) -> Result<(), String> {
    let scheme = endpoint.scheme();
    check_scheme(scheme, true)?;
    if scheme == "shm" {
        let name = endpoint.address().split('?').next().unwrap_or_default();
        if name.is_empty() {
            return Err(format!("{endpoint}: expected shm://NAME"));
        }
    } else if let Err(e) = endpoint.host_port(scheme) {
        return Err(format!("{endpoint}: {e}"));
    }
    if no_tls && (scheme == "quic" || scheme == "tcp+tls") {
        return Err(format!(
            "{endpoint}: {scheme}:// needs TLS: set tls.cert, tls.key and tls.ca (or tls.dev)"
        ));
    }
    Ok(())
}

/// `memory://` or `etcd://host:port[,host:port...]`.
fn check_discovery(url: &str) -> Result<(), String> {
    if url == "memory://" || url == "memory:" {
        return Ok(());
    }
    let Some(hosts) = url.strip_prefix("etcd://") else {
        return Err(format!(
            "unsupported discovery URL {url:?}: use etcd://host:port[,host:port...] or memory://"
        ));
    };
    for host in hosts.split(',').map(str::trim) {
        let ok = host
            .rsplit_once(':')
            .is_some_and(|(name, port)| !name.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(format!(
                "bad etcd endpoint {host:?} in {url:?}: expected host:port"
            ));
        }
    }
    Ok(())
}

impl NodeBuilder<MemoryDiscovery> {
    /// A builder with everything `config` sets (its `service` is required; `discovery`
    /// and `metrics` are left to the caller: give the discovery with
    /// [`discovery`](Self::discovery)). Checks the configuration first
    /// ([`NodeConfig::validate`]) and loads the TLS files: a bad configuration is an
    /// error naming the field, never a panic.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut config = dms::config::NodeConfig::new("/demo/cn/linux/w1/g1/Battle/battle-1".parse()?);
    /// config.targets.push("/demo/cn/linux/w1/g1/Lobby".parse()?);
    /// let builder = dms::NodeBuilder::from_config(&config)?.discovery(dms::MemoryDiscovery::new());
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_config(config: &NodeConfig) -> Result<Self, ConfigErrors> {
        config.validate()?;
        let Some(service) = config.service.clone() else {
            return Err(ConfigErrors::one(
                "service",
                "missing: the instance's service path is required",
                Origin::Unknown,
            ));
        };
        let mut builder = crate::Node::builder(service);
        for endpoint in &config.bind {
            builder = builder.bind(endpoint.clone());
        }
        for endpoint in &config.advertise {
            builder = builder.advertise(endpoint.clone());
        }
        for target in &config.targets {
            builder = builder.target(target.clone());
        }
        for target in &config.routed_targets {
            builder = builder.routed_target(target.clone());
        }
        if config.broker {
            builder = builder.broker();
        }
        if let Some(cost) = config.link_cost {
            builder = builder.link_cost(cost);
        }
        if let Some(hops) = config.hop_limit {
            builder = builder.hop_limit(hops);
        }
        if !config.prefer.is_empty() {
            builder = builder.prefer(config.prefer.iter().cloned());
        }
        if let Some(timeout) = config.request_timeout {
            builder = builder.request_timeout(timeout);
        }
        if let Some(ttl) = config.lease_ttl {
            builder = builder.lease_ttl(ttl);
        }
        if config.heartbeat.interval.is_some() || config.heartbeat.missed.is_some() {
            builder = builder.heartbeat(
                config.heartbeat.interval.unwrap_or(Duration::from_secs(1)),
                config.heartbeat.missed.unwrap_or(3),
            );
        }
        match (config.incoming.queue, config.incoming.per_peer) {
            (None, None) => {}
            (queue, per_peer) => {
                let queue = queue.unwrap_or(1024);
                builder = builder.incoming_queue(queue, per_peer.unwrap_or(256).min(queue));
            }
        }
        for cluster in &config.acl.allow {
            builder = builder.allow(cluster.clone());
        }
        if !config.acl.rules.is_empty() {
            builder = builder.acl_policy(AclPolicy::new(config.acl.rules.iter().cloned()));
        }
        if let Some(file) = &config.acl.file {
            builder = builder.acl_file(file.clone());
        }
        #[cfg(feature = "quic")]
        {
            let identity = config
                .tls_identity()
                .map_err(|(field, message)| ConfigErrors::one(field, message, Origin::Unknown))?;
            if let Some(tls) = identity {
                builder = builder.quic(dms_transport_quic::QuicConfig::builder(tls));
            } else if let Some(dir) = &config.tls.dev {
                builder = builder.quic_dev_certificates(dir.clone());
            }
        }
        #[cfg(feature = "shm")]
        if config.shm.ring_bytes.is_some() || config.shm.spin.is_some() {
            let mut shm = dms_transport_shm::ShmConfig::builder();
            if let Some(bytes) = config.shm.ring_bytes {
                shm = shm.ring_bytes(bytes);
            }
            if let Some(spin) = config.shm.spin {
                shm = shm.spin(spin);
            }
            builder = builder.shm(shm);
        }
        Ok(builder)
    }
}

/// Without a transport, its endpoints and sections are errors naming the feature.
#[cfg(all(test, not(all(feature = "tcp", feature = "quic", feature = "shm"))))]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod missing_transports {
    use super::*;

    #[test]
    fn endpoints_and_sections_of_absent_transports_are_errors() {
        let text = "bind = [\"tcp://127.0.0.1:0\", \"quic://127.0.0.1:0\", \"shm://x\"]\n\
                    prefer = [\"shm\", \"tcp\"]\n[shm]\nspin_us = 0\n[tls]\ndev = \"d\"\n";
        let e = NodeConfig::from_toml_str(text).unwrap_err().to_string();
        for (scheme, feature) in [("tcp", "tcp"), ("quic", "quic"), ("shm", "shm")] {
            assert_eq!(
                e.contains(&format!(
                    "no {scheme}:// transport (dms feature `{feature}`)"
                )),
                !compiled_in(scheme),
                "{e}"
            );
        }
        assert!(
            !e.contains("prefer"),
            "absent schemes may be preferred: {e}"
        );
        assert_eq!(
            e.contains("4:11: shm.spin_us: "),
            !cfg!(feature = "shm"),
            "{e}"
        );
        assert_eq!(e.contains("6:7: tls.dev: "), !cfg!(feature = "quic"), "{e}");
    }
}

/// The tests of the file format need every transport the example uses (the CI runs them
/// with all features).
#[cfg(all(test, feature = "tcp", feature = "quic", feature = "shm"))]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../docs/node.example.toml");

    fn errors(text: &str) -> Vec<String> {
        NodeConfig::from_toml_str(text)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_example_parses_and_round_trips() {
        let config = NodeConfig::from_toml_str(EXAMPLE).unwrap();
        assert_eq!(
            config.service.as_ref().unwrap().to_string(),
            "/demo/cn/linux/w1/g1/Battle/battle-1"
        );
        assert_eq!(config.heartbeat.interval, Some(Duration::from_millis(500)));
        assert_eq!(config.acl.rules.len(), 2);
        let text = config.to_toml_string();
        assert_eq!(NodeConfig::from_toml_str(&text).unwrap(), config, "{text}");
    }

    #[test]
    fn a_full_config_round_trips() {
        let mut config = NodeConfig::new("/a/b/c/d/e/Battle/b-1".parse().unwrap());
        config.discovery = Some("etcd://127.0.0.1:2379,db:2379".into());
        config.bind = vec!["tcp://0.0.0.0:7000".parse().unwrap()];
        config.advertise = vec!["tcp://203.0.113.7:7000".parse().unwrap()];
        config.targets = vec!["/a/b/c/d/e/Lobby".parse().unwrap()];
        config.prefer = vec!["tcp".into()];
        config.metrics = Some("127.0.0.1:9464".parse().unwrap());
        config.request_timeout = Some(Duration::from_millis(2500));
        config.lease_ttl = Some(Duration::from_secs(7));
        config.heartbeat = HeartbeatSection {
            interval: Some(Duration::from_millis(200)),
            missed: Some(4),
        };
        config.incoming = IncomingSection {
            queue: Some(64),
            per_peer: Some(8),
        };
        config.acl.file = Some("dir with \"quotes\"/acl.txt".into());
        config.acl.allow = vec!["/a/b/c/d/e/Lobby".parse().unwrap()];
        config.acl.rules = "deny notify from /a/b/c/d/e/Club"
            .parse::<AclPolicy>()
            .unwrap()
            .rules()
            .to_vec();
        config.tls.dev = Some("certs".into());
        config.shm.ring_bytes = Some(1 << 16);
        config.shm.spin = Some(Duration::from_micros(5));
        let text = config.to_toml_string();
        assert_eq!(NodeConfig::from_toml_str(&text).unwrap(), config, "{text}");
    }

    #[test]
    fn a_syntax_error_is_the_one_error_with_its_line() {
        let e = errors("service = \"/a/b/c/d/e/f/g\"\n\nbind = [\"tcp://x:1\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("4:1: syntax: ") || e[0].starts_with("3:"),
            "{e:?}"
        );
        let e = errors("a = = 1\n");
        assert!(e[0].starts_with("1:5: syntax: "), "{e:?}");
    }

    #[test]
    fn every_semantic_error_is_reported_with_its_field_and_line() {
        let text = r#"service = "battle-1"
bind = ["tcp://127.0.0.1:0", "udp://1.2.3.4:5", "tcp://nope", 7]
targets = ["/a/b/c/d/e"]
prefer = ["tcp", "carrier-pigeon"]
metrics = "localhost"
discovery = "zookeeper://x"
lease_ttl_s = 0
request_timeout_ms = -5
colour = "blue"

[heartbeat]
interval_ms = 0
missed = 0
jitter = 1

[incoming]
queue = 10
per_peer = 20

[acl]
rules = ["allow everything"]
allow = ["Lobby"]

[shm]
ring_bytes = 1000
"#;
        let e = errors(text);
        let expect = [
            "1:11: service: ",
            "2:30: bind[1]: unknown scheme \"udp\"",
            "2:49: bind[2]: ",
            "2:63: bind[3]: expected a string, found integer",
            "3:12: targets[0]: ",
            "4:18: prefer[1]: unknown scheme",
            "5:11: metrics: ",
            "6:13: discovery: unsupported discovery URL",
            "7:15: lease_ttl_s: must be at least 1",
            "8:22: request_timeout_ms: must not be negative",
            "9:1: colour: unknown field",
            "12:15: heartbeat.interval_ms: must be at least 10 ms",
            "13:10: heartbeat.missed: must be at least 1",
            "14:1: heartbeat.jitter: unknown field; expected one of: interval_ms, missed",
            "18:12: incoming.per_peer: 20 is more than incoming.queue (10)",
            "21:10: acl.rules[0]: ",
            "22:10: acl.allow[0]: ",
            "25:14: shm.ring_bytes: 1000 is not a power of two",
        ];
        assert_eq!(e.len(), expect.len(), "{e:#?}");
        for (got, want) in e.iter().zip(expect) {
            assert!(
                got.starts_with(want),
                "{got:?} does not start with {want:?}\n{e:#?}"
            );
        }
    }

    #[test]
    fn wrong_types_and_sections_are_errors() {
        let e = errors(
            "service = 3\nheartbeat = 5\ntargets = \"/a/b/c/d/e/f\"\n[tls]\ncert = [\"a\"]\n",
        );
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(
            e[0].starts_with("1:11: service: expected a string, found integer"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("2:13: heartbeat: expected a table"),
            "{e:?}"
        );
        assert!(
            e[2].starts_with("3:11: targets: expected an array of strings, found string"),
            "{e:?}"
        );
        assert!(
            e[3].starts_with("5:8: tls.cert: expected a string, found array"),
            "{e:?}"
        );
    }

    #[test]
    fn tls_settings_are_all_or_none_and_quic_needs_them() {
        let e = errors("bind = [\"tcp://127.0.0.1:0\", \"quic://127.0.0.1:0\"]\n");
        let want = if cfg!(feature = "quic") {
            "1:30: bind[1]: quic://127.0.0.1:0: quic:// needs TLS"
        } else {
            "1:30: bind[1]: this build has no quic:// transport"
        };
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].starts_with(want), "{want:?} in {e:#?}");
        if cfg!(feature = "quic") {
            let e = errors("[tls]\ncert = \"c.pem\"\ndev = \"certs\"\n");
            let want = [
                "2:8: tls.key: missing",
                "2:8: tls.ca: missing",
                "3:7: tls.dev: conflicts with tls.cert",
            ];
            assert_eq!(e.len(), want.len(), "{e:#?}");
            for (got, want) in e.iter().zip(want) {
                assert!(got.starts_with(want), "{want:?} in {e:#?}");
            }
        }
        // With the three files, a QUIC endpoint is fine (the files are not read here).
        let ok = NodeConfig::from_toml_str(
            "bind = [\"quic://127.0.0.1:0\"]\n[tls]\ncert = \"c\"\nkey = \"k\"\nca = \"a\"\n",
        );
        assert_eq!(ok.is_ok(), cfg!(feature = "quic"), "{ok:?}");
    }

    #[test]
    fn from_toml_file_checks_the_files_relative_to_the_file() {
        let dir = std::env::temp_dir().join(format!("dms-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("acl.txt"), "allow * from /a/b/c/d/e/Lobby\n").unwrap();
        let file = dir.join("node.toml");
        std::fs::write(
            &file,
            "service = \"/a/b/c/d/e/f/g\"\n[acl]\nfile = \"acl.txt\"\n",
        )
        .unwrap();
        let config = NodeConfig::from_toml_file(&file).unwrap();
        assert_eq!(config.acl.file, Some(dir.join("acl.txt")));

        std::fs::write(
            dir.join("bad-acl.txt"),
            "allow * from /a/b/c/d/e/Lobby\npermit all\n",
        )
        .unwrap();
        std::fs::write(
            &file,
            "service = \"/a/b/c/d/e/f/g\"\n[acl]\nfile = \"bad-acl.txt\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nca = \"ca.pem\"\n",
        )
        .unwrap();
        let e: Vec<String> = NodeConfig::from_toml_file(&file)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            e[0].starts_with("3:8: acl.file: ") && e[0].contains("line 2"),
            "{e:#?}"
        );
        if cfg!(feature = "quic") {
            assert_eq!(e.len(), 4, "{e:#?}");
            assert!(e[1].starts_with("5:8: tls.cert: cannot read "), "{e:#?}");
            assert!(e[2].starts_with("6:7: tls.key: cannot read "), "{e:#?}");
        }
        let missing = NodeConfig::from_toml_file(dir.join("none.toml")).unwrap_err();
        assert!(
            missing.to_string().starts_with("file: cannot read "),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn env_overrides_fields_and_errors_name_the_variable() {
        let mut config = NodeConfig::default();
        let applied = config
            .apply_env([
                ("DMS_SERVICE", "/x/y/z/w/g/Battle/b-9"),
                ("DMS_BIND", "tcp://127.0.0.1:0, tcp://127.0.0.1:0"),
                ("DMS_HEARTBEAT_INTERVAL_MS", "250"),
                (
                    "DMS_ACL_RULES",
                    "allow * from /x/*/*/*/*/Lobby; deny notify from /x/*/*/*/*/Club",
                ),
                ("DMS_ADVERTISE", ""),
                ("DMS_LOG", "debug"),
                ("PATH", "/bin"),
            ])
            .unwrap();
        assert_eq!(applied.len(), 5);
        assert_eq!(
            config.service.as_ref().unwrap().to_string(),
            "/x/y/z/w/g/Battle/b-9"
        );
        assert_eq!(config.bind.len(), 2);
        assert!(config.advertise.is_empty());
        assert_eq!(config.heartbeat.interval, Some(Duration::from_millis(250)));
        assert_eq!(config.acl.rules.len(), 2);

        let before = config.clone();
        let e = config
            .apply_env([
                ("DMS_HEARTBEAT_MISSED", "many"),
                ("DMS_TARGETS", "/x/y/z/w/g/Lobby,Lobby"),
                ("DMS_INCOMING_QUEUE", "0"),
                ("DMS_LEASE_TTL_S", "-1"),
            ])
            .unwrap_err();
        let e: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(config, before, "nothing applies when a variable is bad");
        let want = [
            "DMS_HEARTBEAT_MISSED: heartbeat.missed: expected an integer",
            "DMS_TARGETS: targets[1]: ",
            "DMS_LEASE_TTL_S: lease_ttl_s: must not be negative",
            "DMS_INCOMING_QUEUE: incoming.queue: must be at least 1",
        ];
        assert_eq!(e.len(), want.len(), "{e:#?}");
        for want in want {
            assert!(
                e.iter().any(|got| got.starts_with(want)),
                "{want:?} in {e:#?}"
            );
        }
        // An empty integer variable unsets the field.
        config
            .apply_env([("DMS_HEARTBEAT_INTERVAL_MS", "")])
            .unwrap();
        assert_eq!(config.heartbeat.interval, None);
    }

    #[test]
    fn the_builder_takes_the_config_and_refuses_a_bad_one() {
        {
            let config = NodeConfig::from_toml_str(EXAMPLE).unwrap();
            let builder = NodeBuilder::from_config(&config).unwrap();
            let debug = format!("{builder:?}");
            assert!(
                debug.contains("Lobby") && debug.contains("battle-1"),
                "{debug}"
            );
        }
        let e = NodeBuilder::from_config(&NodeConfig::default()).unwrap_err();
        assert!(e.to_string().starts_with("service: missing"), "{e}");
        let mut bad = NodeConfig::new("/a/b/c/d/e/f/g".parse().unwrap());
        bad.heartbeat.missed = Some(0);
        bad.bind.push("tcp://127.0.0.1:0".parse().unwrap());
        let e = NodeBuilder::from_config(&bad).unwrap_err();
        assert_eq!(e.to_string(), "heartbeat.missed: must be at least 1");
        #[cfg(feature = "quic")]
        {
            let mut files = NodeConfig::new("/a/b/c/d/e/f/g".parse().unwrap());
            files.tls.cert = Some("/nonexistent/c.pem".into());
            files.tls.key = Some("/nonexistent/k.pem".into());
            files.tls.ca = Some("/nonexistent/ca.pem".into());
            let e = NodeBuilder::from_config(&files).unwrap_err();
            assert!(e.to_string().starts_with("tls.cert: "), "{e}");
        }
    }

    #[test]
    fn routing_settings_parse_round_trip_and_report_their_errors() {
        let text = "service = \"/a/b/c/d/e/Broker/b-1\"\nbroker = true\n\
                    targets = [\"/a/b/c/d/e/Broker\"]\n\
                    routed_targets = [\"/a/b/c/d/e/Trade\", \"/a/b/c/d/e/Guild\"]\n\
                    link_cost = 3\nhop_limit = 4\n";
        let config = NodeConfig::from_toml_str(text).unwrap();
        assert!(config.broker);
        assert_eq!(config.routed_targets.len(), 2);
        assert_eq!(config.link_cost, Some(3));
        assert_eq!(config.hop_limit, Some(4));
        let round = config.to_toml_string();
        assert_eq!(
            NodeConfig::from_toml_str(&round).unwrap(),
            config,
            "{round}"
        );
        assert!(NodeBuilder::from_config(&config).is_ok());

        let e = errors(
            "broker = \"yes\"\nlink_cost = 0\nhop_limit = 256\n\
             routed_targets = [\"Trade\", \"/a/b/c/d/e/Lobby\"]\ntargets = [\"/a/b/c/d/e/Lobby\"]\n\
             hop_limit = 0\n",
        );
        // A TOML document may not repeat a key: that is the one syntax error.
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].starts_with("6:1: syntax: "), "{e:#?}");
        let e = errors(
            "broker = \"yes\"\nlink_cost = 0\nhop_limit = 256\n\
             routed_targets = [\"/a/b/c/d/e/Lobby\", \"Trade\"]\ntargets = [\"/a/b/c/d/e/Lobby\"]\n",
        );
        let want = [
            "1:10: broker: expected a boolean (true or false), found string",
            "2:13: link_cost: must be at least 1",
            "3:13: hop_limit: 256 is more than 255",
            "4:19: routed_targets[0]: /a/b/c/d/e/Lobby is in targets too",
            "4:39: routed_targets[1]: ",
        ];
        assert_eq!(e.len(), want.len(), "{e:#?}");
        for (got, want) in e.iter().zip(want) {
            assert!(
                got.starts_with(want),
                "{got:?} does not start with {want:?}"
            );
        }

        let mut config = NodeConfig::default();
        config
            .apply_env([
                ("DMS_BROKER", "yes"),
                ("DMS_ROUTED_TARGETS", "/a/b/c/d/e/Trade"),
                ("DMS_LINK_COST", "7"),
                ("DMS_HOP_LIMIT", "2"),
            ])
            .unwrap();
        assert!(config.broker);
        assert_eq!(config.routed_targets.len(), 1);
        assert_eq!((config.link_cost, config.hop_limit), (Some(7), Some(2)));
        config
            .apply_env([("DMS_BROKER", ""), ("DMS_HOP_LIMIT", "")])
            .unwrap();
        assert!(!config.broker);
        assert_eq!(config.hop_limit, None);
        let e = config
            .apply_env([("DMS_BROKER", "maybe"), ("DMS_LINK_COST", "0")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("DMS_BROKER: broker: expected true or false")
                && e.contains("DMS_LINK_COST: link_cost: must be at least 1"),
            "{e}"
        );
    }

    #[test]
    fn columns_count_characters() {
        let e = errors("# é\nservice = \"é\"\n");
        assert!(e[0].starts_with("2:11: service: "), "{e:?}");
    }
}

//! [`EtcdDiscovery`]: the etcd v3 backend (cargo feature `etcd`).
//!
//! Keys are stored under their own name (`/svc/a` is the etcd key `/svc/a`), values as
//! they are, and revisions are etcd's: cluster-wide, increasing with every write, kept
//! across restarts. The mapping of the [`Discovery`] contract:
//!
//! | contract | etcd |
//! | --- | --- |
//! | [`lease`](Discovery::lease) | `LeaseGrant`, then a keep-alive every TTL/3 while the [`EtcdLease`] lives; dropping it revokes |
//! | [`create`](Discovery::create) | a txn: `create_revision(key) == 0` → put |
//! | [`set`](Discovery::set) / [`delete`](Discovery::delete) | put (attaching or detaching the lease) / delete |
//! | [`get`](Discovery::get) | one txn reading the key and the range under `key/`, so both come from one revision |
//! | [`list`](Discovery::list) | one range read of `[prefix, prefix + "0")`, filtered with [`Key::covers`] |
//! | [`watch`](Discovery::watch) | a range watch from the revision after `from`, filtered with [`Key::covers`], resumed after a broken connection |
//!
//! etcd rounds lease TTLs up to whole seconds and to its own minimum (1.5 election
//! timeouts: 2 s with the default 1 s election timeout); an [`EtcdLease`]'s
//! [`ttl`](crate::Lease::ttl) reports what etcd granted. A lease whose owner stops sending
//! keep-alives (the process died) expires after its TTL, and etcd deletes its keys:
//! watchers see a [`Delete`](crate::WatchEvent::Delete) for each.
//!
//! # Endpoints and failures
//!
//! The handle keeps one etcd client per endpoint, each with its own (lazily made)
//! connection, and sends everything to one of them at a time, the *current* endpoint
//! (at first the first one given), as etcd's Go client does. When a request to it fails
//! in a way that says something about that member (connection refused or lost, no
//! leader, etcd's own timeout, no answer in time), the current endpoint moves to the next
//! one in the list and the request is retried there at once; after a whole round of
//! failures it waits a little (20 ms, doubling up to 500 ms) before the next round.
//!
//! An operation takes at most [`EtcdOptions::request_timeout`], retries included. Within
//! it, one attempt of an operation that may be repeated (reads, lease grants and
//! keep-alives, revokes, opening a watch) waits at most
//! [`EtcdOptions::attempt_timeout`] for one member, doubled after each whole round, so
//! that a member that cannot answer (it lost its leader and has not noticed yet: etcd
//! then holds the request for up to its own 7 s timeout) does not use up the whole
//! operation. A write (`create`, `set`, `delete`) is retried only if it certainly did
//! not reach etcd (connection refused, no leader); once sent, a write whose outcome is
//! unknown fails with [`DiscoveryError::Unavailable`], as etcd's Go client does.
//!
//! Watches and lease keep-alives are streams on the current endpoint: when a stream
//! breaks, the current endpoint moves on and the stream is opened again there (a watch
//! from the revision after the last one it delivered, see [`EtcdWatch`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use dms_discovery::etcd::{EtcdDiscovery, EtcdOptions};
//! use dms_discovery::{Discovery, Key, Lease, WatchEvent, next_event};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), dms_discovery::DiscoveryError> {
//! let endpoints = ["127.0.0.1:2379".to_owned()];
//! let discovery = EtcdDiscovery::connect(&endpoints, EtcdOptions::default()).await?;
//! let cluster = Key::new("/chat/eu/lobby")?;
//! let mut watch = discovery.watch(&cluster, None).await?;
//!
//! let lease = discovery.lease(Duration::from_secs(10)).await?;
//! let me = cluster.child("i-1")?;
//! discovery.create(&me, "tcp://127.0.0.1:5555".into(), Some(&lease)).await?;
//! if let Some(Ok(WatchEvent::Put(entry))) = next_event(&mut watch).await {
//!     assert_eq!(entry.key, me);
//! }
//! # let shutdown = tokio::time::sleep(Duration::from_secs(3600));
//! tokio::select! {
//!     // Serve until the lease is lost (etcd unreachable for longer than its TTL)...
//!     () = lease.expired() => eprintln!("lease lost: register again"),
//!     // ... or until shutdown; then revoke, so that peers see the instance go at once.
//!     () = shutdown => lease.revoke().await?,
//! }
//! # Ok(())
//! # }
//! ```

mod lease;
mod watch;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, PutOptions, ResponseHeader,
    Txn, TxnOp, TxnOpResponse,
};
use tokio::time::Instant;
use tracing::debug;

use crate::{Discovery, DiscoveryError, Entry, Key, Node, Revision};

pub use lease::EtcdLease;
pub use watch::EtcdWatch;

/// Settings of an [`EtcdDiscovery`]. Start from [`EtcdOptions::default`] and change what
/// you need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// How long [`EtcdDiscovery::connect`] waits for an endpoint to answer. Each TCP
    /// connect (then and later) is also limited to this, or to
    /// [`attempt_timeout`](Self::attempt_timeout) if shorter. Default 5 s.
    pub connect_timeout: Duration,
    /// The longest a single operation (`create`, `get`, a lease grant, opening a watch...)
    /// takes, retries included, before it fails with [`DiscoveryError::Unavailable`].
    /// Default 5 s.
    pub request_timeout: Duration,
    /// How long one attempt of an operation that may be repeated (a read, a lease grant,
    /// keep-alive or revoke, opening a watch) waits for one member before it is retried
    /// on the next endpoint. Doubled after each round over all the endpoints, so that a
    /// slow cluster still gets to answer. Writes, which cannot be repeated once sent, wait
    /// for the whole [`request_timeout`](Self::request_timeout). At least 10 ms.
    /// Default 1 s.
    pub attempt_timeout: Duration,
    /// HTTP/2 ping interval on connections with open streams (watches, lease
    /// keep-alives), to notice a peer that vanished without closing the connection.
    /// etcd refuses pings more frequent than every 5 s by default. Default 10 s.
    pub keep_alive_interval: Duration,
    /// How long a ping may go unanswered before the connection is considered dead.
    /// Default 5 s.
    pub keep_alive_timeout: Duration,
    /// Ask etcd to fail requests, and cancel watches, on members that have lost their
    /// leader, so that they are retried elsewhere instead of hanging on a partitioned
    /// member. Default true.
    pub require_leader: bool,
    /// How long a watch whose connection broke keeps trying to resume before its
    /// stream yields [`DiscoveryError::Unavailable`] and ends. Default 60 s.
    pub watch_reconnect: Duration,
    /// Events a watch buffers for a consumer that has not read them yet. When the
    /// buffer is full the watch stops reading from etcd (which keeps the events for it,
    /// unless they are compacted meanwhile). At least 1. Default 1024.
    pub watch_buffer: usize,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(1),
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            require_leader: true,
            watch_reconnect: Duration::from_secs(60),
            watch_buffer: 1024,
        }
    }
}

/// The etcd [`Discovery`] backend: a client of an etcd v3 cluster (one or more
/// endpoints). Clones share the connections.
///
/// See the [module documentation](self) for how the contract maps onto etcd.
#[derive(Clone)]
pub struct EtcdDiscovery {
    shared: Arc<Shared>,
}

struct Shared {
    /// One per endpoint, in the order given; never empty.
    members: Vec<Member>,
    /// The index in `members` of the endpoint requests go to.
    current: AtomicUsize,
    endpoints: Vec<String>,
    options: EtcdOptions,
}

/// The client of one endpoint: its connection is to that endpoint only.
struct Member {
    endpoint: String,
    client: Client,
}

/// Whether a request may be sent again after a failure whose outcome is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Only if it certainly did not reach etcd (a write).
    IfNotSent,
    /// After any transient failure (a read, or a write whose repetition is harmless).
    Always,
}

/// What a failed request tells about its effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// It never reached etcd, or etcd refused it before acting (no leader).
    NotSent,
    /// It may or may not have been applied (connection lost, leader changed, timeout).
    Transient,
    /// A definitive answer.
    Final,
}

/// The shortest [`EtcdOptions::attempt_timeout`].
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(10);
/// The first pause after a round of failures, doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// gRPC status codes (the `grpc-status` values) this module tells apart.
mod code {
    pub(super) const CANCELLED: i32 = 1;
    pub(super) const UNKNOWN: i32 = 2;
    pub(super) const DEADLINE_EXCEEDED: i32 = 4;
    pub(super) const NOT_FOUND: i32 = 5;
    pub(super) const ABORTED: i32 = 10;
    pub(super) const INTERNAL: i32 = 13;
    pub(super) const UNAVAILABLE: i32 = 14;
}

impl EtcdDiscovery {
    /// Puts `key` (attached to `lease`) in one transaction if `condition` holds; the
    /// revision of the write, or `None` when the condition failed (nothing written).
    async fn put_if(
        &self,
        operation: &'static str,
        key: &Key,
        condition: Compare,
        value: Bytes,
        lease: Option<&EtcdLease>,
    ) -> Result<Option<Revision>, DiscoveryError> {
        let lease_id = self.lease_id(lease);
        let name = key.as_str();
        let value = Vec::from(value);
        let response = self
            .request(
                operation,
                Retry::IfNotSent,
                self.options().request_timeout,
                |client| {
                    let mut kv = client.kv_client();
                    let txn = Txn::new().when([condition.clone()]).and_then([TxnOp::put(
                        name,
                        value.clone(),
                        Some(PutOptions::new().with_lease(lease_id)),
                    )]);
                    async move { kv.txn(txn).await }
                },
            )
            .await?;
        if response.succeeded() {
            header_revision(response.header()).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Connects to the etcd cluster at `endpoints` (`host:port` or `http://host:port`,
    /// one per member; requests go to the first that answers, and move on to the next when
    /// it fails, see [Endpoints and failures](self#endpoints-and-failures)) and checks that
    /// one of them answers within [`EtcdOptions::connect_timeout`].
    ///
    /// Fails with [`DiscoveryError::Unavailable`] if the list is empty or malformed, if
    /// it names an `https://` endpoint (this build has no TLS), or if no endpoint answers
    /// in time.
    pub async fn connect(
        endpoints: &[String],
        options: EtcdOptions,
    ) -> Result<Self, DiscoveryError> {
        if endpoints.is_empty() {
            return Err(DiscoveryError::Unavailable(
                "no etcd endpoint given: pass at least one `host:port` of an etcd member".into(),
            ));
        }
        let options = EtcdOptions {
            watch_buffer: options.watch_buffer.max(1),
            attempt_timeout: options.attempt_timeout.max(MIN_ATTEMPT_TIMEOUT),
            ..options
        };
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout.min(options.attempt_timeout))
            .with_keep_alive(options.keep_alive_interval, options.keep_alive_timeout)
            // etcd answers pings on idle connections with GOAWAY ("too many pings").
            .with_keep_alive_while_idle(false)
            .with_require_leader(options.require_leader);
        // One client per endpoint (connecting lazily, so this does not wait for any), so
        // that a request goes to the member chosen, and nowhere else.
        let clients = async {
            let mut members = Vec::with_capacity(endpoints.len());
            for endpoint in endpoints {
                let client = Client::connect([endpoint], Some(connect.clone())).await?;
                members.push(Member {
                    endpoint: endpoint.clone(),
                    client,
                });
            }
            Ok::<_, etcd_client::Error>(members)
        };
        let members = match tokio::time::timeout(options.connect_timeout, clients).await {
            Ok(Ok(members)) => members,
            Ok(Err(error)) => {
                return Err(DiscoveryError::Unavailable(format!(
                    "cannot use the etcd endpoints {endpoints:?}: {}",
                    describe(&error)
                )));
            }
            Err(_) => {
                return Err(DiscoveryError::Unavailable(format!(
                    "setting up the etcd client for {endpoints:?} took longer than {:?}",
                    options.connect_timeout
                )));
            }
        };
        let discovery = Self {
            shared: Arc::new(Shared {
                members,
                current: AtomicUsize::new(0),
                endpoints: endpoints.to_vec(),
                options,
            }),
        };
        // The client connects lazily: make sure that somebody answers.
        let probe = discovery
            .request_on(
                "status",
                Retry::Always,
                discovery.options().connect_timeout,
                |client| {
                    let mut maintenance = client.maintenance_client();
                    async move { maintenance.status().await }
                },
            )
            .await;
        match probe {
            Ok((status, member)) => {
                debug!(
                    endpoints = ?discovery.shared.endpoints,
                    current = discovery.shared.members[member].endpoint,
                    version = status.version(),
                    member = status.header().map(ResponseHeader::member_id),
                    "etcd discovery connected"
                );
                Ok(discovery)
            }
            Err(error) => Err(DiscoveryError::Unavailable(format!(
                "no etcd endpoint of {endpoints:?} answered within {:?} ({error}); check that \
                 etcd runs and that these are its client URLs (etcd --listen-client-urls / \
                 --advertise-client-urls)",
                discovery.options().connect_timeout
            ))),
        }
    }

    /// The options this handle was connected with.
    pub fn options(&self) -> &EtcdOptions {
        &self.shared.options
    }

    /// The endpoints this handle was connected to.
    pub fn endpoints(&self) -> &[String] {
        &self.shared.endpoints
    }

    /// The current revision of the store (the revision of its last write).
    pub async fn revision(&self) -> Result<Revision, DiscoveryError> {
        // Any key will do: only the response header is needed.
        let response = self
            .request(
                "revision",
                Retry::Always,
                self.options().request_timeout,
                |client| {
                    let mut kv = client.kv_client();
                    async move { kv.get("/", Some(GetOptions::new().with_count_only())).await }
                },
            )
            .await?;
        header_revision(response.header())
    }

    /// Compacts etcd's history up to `revision`: a watch from an older revision then gets
    /// [`DiscoveryError::Compacted`]. Compacting at or below the last compaction is a
    /// no-op; a revision above the current one is an error.
    pub async fn compact(&self, revision: Revision) -> Result<(), DiscoveryError> {
        let at = etcd_revision(revision);
        let result = self
            .request(
                "compact",
                Retry::Always,
                self.options().request_timeout,
                |client| {
                    let mut kv = client.kv_client();
                    async move { kv.compact(at, None).await }
                },
            )
            .await;
        match result {
            Ok(_) => {
                debug!(revision, "etcd history compacted");
                Ok(())
            }
            Err(DiscoveryError::Unavailable(message)) if message.contains("compacted") => {
                debug!(revision, "etcd history already compacted");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Runs `op` (a fresh attempt per call, given the current endpoint's client) until it
    /// succeeds, fails for good, or `timeout` passes; `what` names the operation in
    /// errors and logs. See the [module documentation](self#endpoints-and-failures).
    async fn request<T, F, Fut>(
        &self,
        what: &'static str,
        retry: Retry,
        timeout: Duration,
        op: F,
    ) -> Result<T, DiscoveryError>
    where
        F: FnMut(&Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.request_on(what, retry, timeout, op)
            .await
            .map(|(value, _)| value)
    }

    /// [`request`](Self::request), also telling which member (index in
    /// `Shared::members`) answered: streams opened this way live on that member.
    async fn request_on<T, F, Fut>(
        &self,
        what: &'static str,
        retry: Retry,
        timeout: Duration,
        mut op: F,
    ) -> Result<(T, usize), DiscoveryError>
    where
        F: FnMut(&Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let members = self.shared.members.len();
        let deadline = Instant::now() + timeout;
        let mut backoff = MIN_BACKOFF;
        let mut attempts: usize = 0;
        loop {
            let member = self.current();
            // Only a repeatable request may be cut short: a write, once sent, cannot be
            // sent again, so it gets all the time there is.
            let attempt_deadline = match retry {
                Retry::Always => {
                    let rounds = u32::try_from(attempts / members).unwrap_or(u32::MAX);
                    let patience = self
                        .options()
                        .attempt_timeout
                        .saturating_mul(2_u32.saturating_pow(rounds));
                    deadline.min(Instant::now() + patience)
                }
                Retry::IfNotSent => deadline,
            };
            attempts += 1;
            // `current` is always an index of `members`.
            let attempt = op(&self.shared.members[member].client);
            let error = match tokio::time::timeout_at(attempt_deadline, attempt).await {
                Ok(Ok(value)) => return Ok((value, member)),
                Ok(Err(error)) => error,
                Err(_) => {
                    self.fail_over(member, "no answer in time");
                    if retry == Retry::Always && Instant::now() < deadline {
                        debug!(
                            what,
                            endpoint = self.endpoint(member),
                            "etcd request: no answer in time; retrying"
                        );
                        continue;
                    }
                    debug!(what, ?timeout, "etcd request timed out");
                    return Err(DiscoveryError::Unavailable(format!(
                        "etcd {what}: no answer within {timeout:?}"
                    )));
                }
            };
            let failure = classify(&error);
            if failure != Failure::Final {
                self.fail_over(member, &describe(&error));
            }
            let again = match failure {
                Failure::NotSent => true,
                Failure::Transient => retry == Retry::Always,
                Failure::Final => false,
            };
            // The other endpoints are tried at once; after a round of failures, wait.
            let pause = if attempts % members == 0 {
                backoff
            } else {
                Duration::ZERO
            };
            if !again || Instant::now() + pause >= deadline {
                debug!(
                    what,
                    endpoint = self.endpoint(member),
                    %error,
                    ?failure,
                    "etcd request failed"
                );
                return Err(to_discovery_error(what, &error));
            }
            debug!(
                what,
                endpoint = self.endpoint(member),
                %error,
                ?failure,
                ?pause,
                "etcd request failed; retrying"
            );
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// The index of the current endpoint.
    fn current(&self) -> usize {
        self.shared.current.load(Ordering::Acquire)
    }

    /// The endpoint of member `index`.
    fn endpoint(&self, index: usize) -> &str {
        self.shared
            .members
            .get(index)
            .map_or("?", |member| member.endpoint.as_str())
    }

    /// Moves the current endpoint past `failed` (the index of a member that just failed
    /// for `reason`), unless somebody already did.
    fn fail_over(&self, failed: usize, reason: &str) {
        let members = self.shared.members.len();
        if members < 2 {
            return;
        }
        let next = (failed + 1) % members;
        let moved = self
            .shared
            .current
            .compare_exchange(failed, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if moved {
            debug!(
                failed = self.endpoint(failed),
                next = self.endpoint(next),
                reason,
                "etcd endpoint failed; switching to the next"
            );
        }
    }

    fn lease_id(&self, lease: Option<&EtcdLease>) -> i64 {
        lease.map_or(0, EtcdLease::etcd_id)
    }
}

impl fmt::Debug for EtcdDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdDiscovery")
            .field("endpoints", &self.shared.endpoints)
            .field("current", &self.endpoint(self.current()))
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl Discovery for EtcdDiscovery {
    type Lease = EtcdLease;
    type Watch = EtcdWatch;

    async fn lease(&self, ttl: Duration) -> Result<EtcdLease, DiscoveryError> {
        EtcdLease::grant(self, ttl).await
    }

    async fn create(
        &self,
        key: &Key,
        value: Bytes,
        lease: Option<&EtcdLease>,
    ) -> Result<Revision, DiscoveryError> {
        let absent = Compare::create_revision(key.as_str(), CompareOp::Equal, 0);
        match self.put_if("create", key, absent, value, lease).await? {
            Some(revision) => Ok(revision),
            None => {
                debug!(%key, "etcd create: key already exists");
                Err(DiscoveryError::AlreadyExists { key: key.clone() })
            }
        }
    }

    async fn set(
        &self,
        key: &Key,
        value: Bytes,
        lease: Option<&EtcdLease>,
    ) -> Result<Revision, DiscoveryError> {
        let lease_id = self.lease_id(lease);
        let value = Vec::from(value);
        let response = self
            .request(
                "set",
                Retry::IfNotSent,
                self.options().request_timeout,
                |client| {
                    let mut kv = client.kv_client();
                    let value = value.clone();
                    // Lease 0 detaches the key from any lease, as the contract says.
                    let options = PutOptions::new().with_lease(lease_id);
                    async move { kv.put(key.as_str(), value, Some(options)).await }
                },
            )
            .await?;
        header_revision(response.header())
    }

    async fn replace(
        &self,
        key: &Key,
        expected: Revision,
        value: Bytes,
        lease: Option<&EtcdLease>,
    ) -> Result<Revision, DiscoveryError> {
        let conflict = || DiscoveryError::Conflict { key: key.clone() };
        let expected_i64 = i64::try_from(expected).map_err(|_| conflict())?;
        let unchanged = Compare::mod_revision(key.as_str(), CompareOp::Equal, expected_i64);
        match self.put_if("replace", key, unchanged, value, lease).await? {
            Some(revision) => Ok(revision),
            None => {
                debug!(%key, expected, "etcd replace: key changed");
                Err(conflict())
            }
        }
    }

    async fn delete(&self, key: &Key) -> Result<Option<Revision>, DiscoveryError> {
        let response = self
            .request(
                "delete",
                Retry::IfNotSent,
                self.options().request_timeout,
                |client| {
                    let mut kv = client.kv_client();
                    async move { kv.delete(key.as_str(), None).await }
                },
            )
            .await?;
        if response.deleted() == 0 {
            return Ok(None);
        }
        header_revision(response.header()).map(Some)
    }

    async fn get(&self, key: &Key) -> Result<Node, DiscoveryError> {
        let name = key.as_str();
        let below = format!("{name}/");
        let response = self
            .request(
                "get",
                Retry::Always,
                self.options().request_timeout,
                |client| {
                    let mut kv = client.kv_client();
                    // One txn: both reads see the same revision.
                    let txn = Txn::new().and_then([
                        TxnOp::get(name, None),
                        TxnOp::get(below.as_str(), Some(GetOptions::new().with_prefix())),
                    ]);
                    async move { kv.txn(txn).await }
                },
            )
            .await?;
        let revision = header_revision(response.header())?;
        let mut reads = response.op_responses().into_iter();
        let (Some(TxnOpResponse::Get(own)), Some(TxnOpResponse::Get(under))) =
            (reads.next(), reads.next())
        else {
            return Err(DiscoveryError::Unavailable(
                "etcd get: unexpected txn response (expected two ranges)".into(),
            ));
        };
        let entry = own
            .kvs()
            .iter()
            .find(|kv| kv.key() == name.as_bytes())
            .and_then(to_entry);
        let mut children: Vec<Entry> = under
            .kvs()
            .iter()
            .filter(|kv| {
                kv.key()
                    .get(below.len()..)
                    .is_some_and(|rest| !rest.contains(&b'/'))
            })
            .filter_map(to_entry)
            .collect();
        children.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Node {
            entry,
            children,
            revision,
        })
    }

    async fn list(&self, prefix: &Key) -> Result<(Vec<Entry>, Revision), DiscoveryError> {
        // `[prefix, prefix0)` holds the prefix, its subtree (`/` sorts just before `0`) and
        // string-prefix siblings such as `prefix!`, which `covers` filters out.
        let end = format!("{prefix}0");
        let response = self
            .request(
                "list",
                Retry::Always,
                self.options().request_timeout,
                |client| {
                    let mut kv = client.kv_client();
                    let options = GetOptions::new().with_range(end.as_str());
                    async move { kv.get(prefix.as_str(), Some(options)).await }
                },
            )
            .await?;
        let revision = header_revision(response.header())?;
        let mut entries: Vec<Entry> = response
            .kvs()
            .iter()
            .filter_map(to_entry)
            .filter(|entry| prefix.covers(&entry.key))
            .collect();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((entries, revision))
    }

    async fn watch(
        &self,
        prefix: &Key,
        from: Option<Revision>,
    ) -> Result<EtcdWatch, DiscoveryError> {
        EtcdWatch::open(self, prefix, from).await
    }
}

/// What a failed request tells about its effect on etcd.
fn classify(error: &etcd_client::Error) -> Failure {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            let code = i32::from(status.code());
            let message = status.message();
            if code == code::UNAVAILABLE
                && (is_connect_error(message) || message.contains("no leader"))
            {
                Failure::NotSent
            } else if matches!(
                code,
                code::CANCELLED
                    | code::UNKNOWN
                    | code::DEADLINE_EXCEEDED
                    | code::ABORTED
                    | code::INTERNAL
                    | code::UNAVAILABLE
            ) {
                Failure::Transient
            } else {
                Failure::Final
            }
        }
        etcd_client::Error::TransportError(_) => Failure::NotSent,
        // An I/O error mid-request, or a watch stream that closed before confirming.
        etcd_client::Error::IoError(_) | etcd_client::Error::WatchError(_) => Failure::Transient,
        _ => Failure::Final,
    }
}

/// Whether a gRPC `UNAVAILABLE` message says that the connection could not be made (the
/// request was never sent).
fn is_connect_error(message: &str) -> bool {
    message.contains("tcp connect error")
        || message.contains("error trying to connect")
        || message.contains("Connection refused")
        || message.contains("connection refused")
}

/// The etcd client's error, readably (a gRPC status without its metadata).
fn describe(error: &etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            format!("{:?}: {}", status.code(), status.message())
        }
        other => other.to_string(),
    }
}

fn to_discovery_error(what: &str, error: &etcd_client::Error) -> DiscoveryError {
    let lease_gone = match error {
        etcd_client::Error::GRpcStatus(status) => {
            i32::from(status.code()) == code::NOT_FOUND
                && status.message().contains("lease not found")
        }
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    };
    if lease_gone {
        return DiscoveryError::LeaseExpired;
    }
    DiscoveryError::Unavailable(format!("etcd {what}: {}", describe(error)))
}

/// The revision of a response, from its header.
fn header_revision(header: Option<&ResponseHeader>) -> Result<Revision, DiscoveryError> {
    header.map(|h| revision(h.revision())).ok_or_else(|| {
        DiscoveryError::Unavailable("etcd answered without a response header".into())
    })
}

/// An etcd revision as a [`Revision`] (etcd's are never negative).
fn revision(etcd: i64) -> Revision {
    Revision::try_from(etcd).unwrap_or(0)
}

/// A [`Revision`] as etcd's, saturating.
fn etcd_revision(revision: Revision) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

/// The [`Key`] of an etcd key, if it is one (keys written by other tools may not be).
fn to_key(raw: &[u8]) -> Option<Key> {
    let key = std::str::from_utf8(raw)
        .ok()
        .and_then(|text| Key::new(text).ok());
    if key.is_none() {
        debug!(key = %String::from_utf8_lossy(raw), "etcd key is not a discovery key; ignored");
    }
    key
}

fn to_entry(kv: &KeyValue) -> Option<Entry> {
    Some(Entry {
        key: to_key(kv.key())?,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: revision(kv.create_revision()),
        mod_revision: revision(kv.mod_revision()),
    })
}

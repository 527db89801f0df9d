//! # The DMS APP interface
//!
//! What an application plugs into DMS, and what DMS hands back to it: the seed's "DMS APP
//! Interface". Everything here is optional; a node with none of it answers nothing,
//! dispatches by jump consistent hash, routes by shortest path and lets every peer in.
//!
//! | extension point | you… | set with / read from | default |
//! |---|---|---|---|
//! | [request handlers](#request-handlers) | consume [`IncomingRequest`]s | [`Node::next_request`] | unanswered requests get `NO_HANDLER` |
//! | [typed codecs](#typed-codecs) | implement [`Codec`] | `Node::call_with`, `IncomingRequest::decode_or_reject_with`, `reply_typed_with` | [`Postcard`] |
//! | [tower services](#tower-services) | implement `tower::Service` | `dms::service::serve`, `dms::service::Client` (feature `tower`) | — |
//! | [dispatch policy](#dispatch-policy) | implement [`DispatchPolicy`] | [`NodeBuilder::dispatch`] | [`JumpHash`](dms_core::dispatch::JumpHash) |
//! | [route calculator](#route-calculator) | implement [`RoutePolicy`] (or pass a closure) | [`NodeBuilder::route_policy`] | [`EqualCostMultipath`](dms_core::route::EqualCostMultipath) |
//! | [access control](#access-control) | implement [`AccessControl`] (a hook), or give an [`AclPolicy`] (data) | [`NodeBuilder::access_control`], [`NodeBuilder::acl_policy`] | everyone may do everything |
//! | [peer and route changes](#peer-and-route-changes) | consume [`NodeEvent`]s | [`Node::events`], [`Node::instances`] | — |
//! | [discovery backend](#discovery-backend) | implement [`Discovery`] | [`NodeBuilder::discovery`] | [`MemoryDiscovery`] (in-process) |
//!
//! The traits an application implements are re-exported here: [`AccessControl`],
//! [`DispatchPolicy`] with its [`Candidate`], [`RoutePolicy`] with its [`RoutingTable`],
//! [`Codec`], and [`Role`] (the field of [`NodeEvent::PeerUp`]).
//!
//! Every example on this page runs (in the test command) on the in-process discovery and
//! real loopback links. Their hidden first lines pick QUIC with development certificates
//! in a build without TCP; in your code, `Node::builder(path)` is all it takes.
//!
//! ## Request handlers
//!
//! Requests, notifications and broadcasts for a node arrive, in order per peer and taking
//! turns between peers, from [`Node::next_request`] (several tasks may wait on it; each
//! item goes to one). A request is answered with [`IncomingRequest::reply`] or
//! [`IncomingRequest::reply_error`] (the requester gets [`RequestError::Remote`]);
//! dropping it unanswered answers `NO_HANDLER`, so no requester waits for a reply that
//! will not come. A notification ([`expects_reply`](IncomingRequest::expects_reply) is
//! false) needs no answer. Typed handlers decode with `decode_or_reject` (see
//! [`typed`](crate::typed)).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # #[cfg(not(feature = "tcp"))]
//! # let dev = std::env::temp_dir().join(format!("dms-doc-app-handler-{}", std::process::id()));
//! # let builder = |path| dms::Node::builder(path);
//! # #[cfg(not(feature = "tcp"))]
//! # let builder = |path| dms::Node::builder(path).quic_dev_certificates(&dev);
//! use dms::{MemoryDiscovery, Multipart, RequestError};
//!
//! let discovery = MemoryDiscovery::new();
//! let battle = builder("/demo/cn/android/w1/g1/Battle/battle-1".parse()?)
//!     .discovery(discovery.clone())
//!     .start()
//!     .await?;
//! let server = battle.clone();
//! tokio::spawn(async move {
//!     while let Some(request) = server.next_request().await {
//!         match request.body().first().map(|frame| &frame[..]) {
//!             Some(b"join") => { let _ = request.reply(Multipart::from_frames(["room-1"])).await; }
//!             _ if !request.expects_reply() => {} // a notification: nothing to answer
//!             _ => { let _ = request.reply_error(1000, "unknown command").await; }
//!         }
//!     }
//! });
//! let lobby = builder("/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?)
//!     .discovery(discovery)
//!     .target("/demo/cn/android/w1/g1/Battle".parse()?)
//!     .start()
//!     .await?;
//! let battles = "/demo/cn/android/w1/g1/Battle".parse()?;
//! let reply = lobby.request(&battles, "player-7", Multipart::from_frames(["join"])).await?;
//! assert_eq!(&reply.body[0][..], b"room-1");
//! let refused = lobby.request(&battles, "player-7", Multipart::from_frames(["dance"])).await;
//! assert!(matches!(refused, Err(RequestError::Remote { code: 1000, .. })));
//! # Ok(())
//! # }
//! ```
//!
//! ## Typed codecs
//!
//! A typed message is one payload frame written by a [`Codec`]: [`Postcard`] by default,
//! `Json` with the feature `json`, or one of yours (both ends of a route must use the
//! same). A decode failure is a typed error on either side, never a panic (see
//! [`typed`](crate::typed)). This codec puts a version byte in front of postcard, so that
//! a peer of another version is told so instead of decoding garbage:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # #[cfg(not(feature = "tcp"))]
//! # let dev = std::env::temp_dir().join(format!("dms-doc-app-codec-{}", std::process::id()));
//! # let builder = |path| dms::Node::builder(path);
//! # #[cfg(not(feature = "tcp"))]
//! # let builder = |path| dms::Node::builder(path).quic_dev_certificates(&dev);
//! use bytes::Bytes;
//! use dms::MemoryDiscovery;
//! use dms::app::Codec;
//! use dms::typed::{CodecError, Postcard};
//! use serde::{Serialize, de::DeserializeOwned};
//!
//! /// Postcard behind a version byte.
//! struct V1;
//!
//! impl Codec for V1 {
//!     const NAME: &'static str = "v1";
//!     fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CodecError> {
//!         let mut frame = vec![1];
//!         frame.extend_from_slice(&Postcard.encode(value)?);
//!         Ok(frame.into())
//!     }
//!     fn decode<T: DeserializeOwned>(&self, frame: &[u8]) -> Result<T, CodecError> {
//!         match frame.split_first() {
//!             Some((1, rest)) => Postcard.decode(rest),
//!             _ => Err(CodecError { codec: Self::NAME, detail: "not version 1".into() }),
//!         }
//!     }
//! }
//!
//! let discovery = MemoryDiscovery::new();
//! let battle = builder("/demo/cn/android/w1/g1/Battle/battle-1".parse()?)
//!     .discovery(discovery.clone())
//!     .start()
//!     .await?;
//! let server = battle.clone();
//! tokio::spawn(async move {
//!     while let Some(request) = server.next_request().await {
//!         if let Ok((player, request)) = request.decode_or_reject_with::<_, u64>(&V1).await {
//!             let _ = request.reply_typed_with(&V1, &format!("room-{}", player % 10)).await;
//!         }
//!     }
//! });
//! let lobby = builder("/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?)
//!     .discovery(discovery)
//!     .target("/demo/cn/android/w1/g1/Battle".parse()?)
//!     .start()
//!     .await?;
//! let battles = "/demo/cn/android/w1/g1/Battle".parse()?;
//! let room: String = lobby.call_with(&V1, &battles, 42u64, &42u64).await?;
//! assert_eq!(room, "room-2");
//! // A Postcard request has no version byte: the handler answers BAD_REQUEST.
//! let refused: Result<String, _> = lobby.call(&battles, 42u64, &42u64).await;
//! assert!(matches!(refused, Err(dms::RequestError::Remote { .. })));
//! # Ok(())
//! # }
//! ```
//!
//! ## Tower services
//!
//! With the feature `tower`, `dms::service::serve` runs any `tower::Service<Request,
//! Response = Multipart>` as a node's request handler (bounded concurrency, readiness
//! respected), and `dms::service::Client` is a cluster as a `tower::Service<Multipart>`,
//! so tower's `timeout`, `limit`, `load_shed` and `buffer` layers stack on either side.
//! The `service` module's documentation has the error codes and a longer example.
//!
//! ```
//! # #[cfg(feature = "tower")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! # #[cfg(not(feature = "tcp"))]
//! # let dev = std::env::temp_dir().join(format!("dms-doc-app-tower-{}", std::process::id()));
//! # let builder = |path| dms::Node::builder(path);
//! # #[cfg(not(feature = "tcp"))]
//! # let builder = |path| dms::Node::builder(path).quic_dev_certificates(&dev);
//! use std::time::Duration;
//! use dms::service::{self, Client, Request};
//! use dms::{MemoryDiscovery, Multipart};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! let discovery = MemoryDiscovery::new();
//! let battle = builder("/demo/cn/android/w1/g1/Battle/battle-1".parse()?)
//!     .discovery(discovery.clone())
//!     .start()
//!     .await?;
//! let echo = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(1))
//!     .service_fn(|request: Request| async move { Ok::<_, std::convert::Infallible>(request.into_body()) });
//! tokio::spawn(service::serve(battle.clone(), echo, 16));
//! let lobby = builder("/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?)
//!     .discovery(discovery)
//!     .target("/demo/cn/android/w1/g1/Battle".parse()?)
//!     .start()
//!     .await?;
//! let battles = "/demo/cn/android/w1/g1/Battle".parse()?;
//! let client = Client::new(lobby.clone(), battles, |_: &Multipart| 7u64); // one key
//! let reply = client.oneshot(Multipart::from_frames(["hi"])).await?;
//! assert_eq!(&reply.body[0][..], b"hi");
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "tower"))]
//! # fn main() {}
//! ```
//!
//! ## Dispatch policy
//!
//! Which instance of a cluster gets a request, a notification or a keyed message: a
//! [`DispatchPolicy`] picks one of the live [`Candidate`]s (sorted by their stable
//! bucket, with the requests pending at each) for the message's key. The default,
//! [`JumpHash`](dms_core::dispatch::JumpHash), keeps a key on one instance while the live
//! set is the same ([`dispatch`](dms_core::dispatch) explains the stable buckets). Every
//! process should pick alike for a key to stay sticky. This one sends everything to the
//! lowest bucket alive (a primary and its standbys):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # #[cfg(not(feature = "tcp"))]
//! # let dev = std::env::temp_dir().join(format!("dms-doc-app-dispatch-{}", std::process::id()));
//! # let builder = |path| dms::Node::builder(path);
//! # #[cfg(not(feature = "tcp"))]
//! # let builder = |path| dms::Node::builder(path).quic_dev_certificates(&dev);
//! use std::time::Duration;
//! use dms::app::{Candidate, DispatchPolicy};
//! use dms::{MemoryDiscovery, Multipart};
//!
//! /// The first live instance, whatever the key.
//! struct Primary;
//!
//! impl DispatchPolicy for Primary {
//!     fn pick(&self, _key: u64, candidates: &[Candidate]) -> Option<usize> {
//!         if candidates.is_empty() { None } else { Some(0) } // sorted by bucket
//!     }
//! }
//!
//! let discovery = MemoryDiscovery::new();
//! let mut battles = Vec::new();
//! for name in ["battle-1", "battle-2"] {
//!     let battle = builder(format!("/demo/cn/android/w1/g1/Battle/{name}").parse()?)
//!         .discovery(discovery.clone())
//!         .start()
//!         .await?;
//!     let server = battle.clone();
//!     tokio::spawn(async move {
//!         while let Some(request) = server.next_request().await {
//!             let _ = request.reply(Multipart::new()).await;
//!         }
//!     });
//!     battles.push(battle);
//! }
//! let lobby = builder("/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?)
//!     .discovery(discovery)
//!     .target("/demo/cn/android/w1/g1/Battle".parse()?)
//!     .dispatch(Primary)
//!     .start()
//!     .await?;
//! let cluster = "/demo/cn/android/w1/g1/Battle".parse()?;
//! lobby.wait_for_instances(&cluster, 2, Duration::from_secs(5)).await?;
//! for player in 0..10u64 {
//!     let reply = lobby.request(&cluster, player, Multipart::new()).await?;
//!     assert_eq!(reply.from, *battles[0].path()); // bucket 0, every key
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Route calculator
//!
//! Which neighbour a routed message goes to next, towards an instance this node has no
//! link to (through brokers: [`NodeBuilder::routed_target`], [`NodeBuilder::broker`]): a
//! [`RoutePolicy`] reads the [`RoutingTable`] built from every instance's published
//! links. The default is [`EqualCostMultipath`](dms_core::route::EqualCostMultipath)
//! (shortest paths by link cost, destinations spread over the brokers that start one;
//! [`ShortestPath`](dms_core::route::ShortestPath) is the single-path one); a closure is a policy too. [`RoutePolicy`]'s own documentation has a
//! fewest-hops policy and the rules a custom one should keep (usable links only, transit
//! nodes only, the same tie-break everywhere). This one avoids a broker being drained:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use dms::ServicePath;
//! use dms::app::RoutingTable;
//!
//! let draining: ServicePath = "/demo/cn/android/w1/g1/Broker/broker-2".parse()?;
//! let builder = dms::Node::builder("/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?)
//!     .target("/demo/cn/android/w1/g1/Broker".parse()?)
//!     .routed_target("/demo/cn/android/w1/g1/Trade".parse()?)
//!     .route_policy(move |table: &mut RoutingTable, from: &ServicePath, to: &ServicePath| {
//!         // Shortest paths over the table without the draining broker as a transit.
//!         let mut without = table.clone();
//!         without.set_transit(draining.clone(), false).ok()?;
//!         without.next_hop(from, to).cloned()
//!     });
//! # let _ = builder;
//! # Ok(())
//! # }
//! ```
//!
//! ## Access control
//!
//! Which peers (principals, by service path: the certified one when TLS is on) may
//! `connect`, `request`, `notify`, `broadcast` or `forward` to this node. Two ways, which
//! compose:
//!
//! - **data**: an [`AclPolicy`] (rules, deny first, default deny;
//!   [`acl`](crate::acl) has the text format), given with
//!   [`NodeBuilder::acl_policy`], [`NodeBuilder::allow`] or [`NodeBuilder::acl_file`]. A
//!   session keeps the policy's answer from READY.
//! - **a hook**: an [`AccessControl`] of yours, given with
//!   [`NodeBuilder::access_control`], asked at READY for `connect` and again on every
//!   incoming message, so its answers may change while the node runs (a ban list, your
//!   own permission store). With a policy too, **both must allow**: the hook narrows the
//!   policy, never widens it.
//!
//! Refusals are the same either way: a refused `connect` is a DISCONNECT
//! `ACCESS_DENIED` (the dialler sees the instance as [`InstanceState::Denied`]); a
//! refused request fails at its sender with [`RequestError::Denied`] within one round
//! trip; a refused notification or broadcast is dropped; every one is counted
//! ([`Node::protocol_stats`]). A ban made while a session is open refuses its next
//! message:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # #[cfg(not(feature = "tcp"))]
//! # let dev = std::env::temp_dir().join(format!("dms-doc-app-acl-{}", std::process::id()));
//! # let builder = |path| dms::Node::builder(path);
//! # #[cfg(not(feature = "tcp"))]
//! # let builder = |path| dms::Node::builder(path).quic_dev_certificates(&dev);
//! use std::collections::HashSet;
//! use std::sync::{Arc, Mutex};
//! use dms::acl::Operations;
//! use dms::app::AccessControl;
//! use dms::{MemoryDiscovery, Multipart, RequestError, ServicePath};
//!
//! #[derive(Default)]
//! struct BanList(Mutex<HashSet<ServicePath>>);
//!
//! impl AccessControl for BanList {
//!     fn permitted(&self, principal: &ServicePath, _service: &ServicePath) -> Operations {
//!         match self.0.lock() {
//!             Ok(banned) if !banned.contains(principal) => Operations::ALL,
//!             _ => Operations::NONE, // banned, or a poisoned lock: deny
//!         }
//!     }
//! }
//!
//! let bans = Arc::new(BanList::default());
//! let discovery = MemoryDiscovery::new();
//! let battle = builder("/demo/cn/android/w1/g1/Battle/battle-1".parse()?)
//!     .discovery(discovery.clone())
//!     .access_control(bans.clone()) // the node asks it; we keep a handle
//!     .start()
//!     .await?;
//! let server = battle.clone();
//! tokio::spawn(async move {
//!     while let Some(request) = server.next_request().await {
//!         let _ = request.reply(Multipart::new()).await;
//!     }
//! });
//! let lobby = builder("/demo/cn/android/w1/g1/Lobby/lobby-9".parse()?)
//!     .discovery(discovery)
//!     .target("/demo/cn/android/w1/g1/Battle".parse()?)
//!     .start()
//!     .await?;
//! let battles = "/demo/cn/android/w1/g1/Battle".parse()?;
//! lobby.request(&battles, "p", Multipart::new()).await?; // allowed
//! bans.0.lock().unwrap().insert(lobby.path().clone()); // banned while both run
//! let refused = lobby.request(&battles, "p", Multipart::new()).await;
//! assert!(matches!(refused, Err(RequestError::Denied { .. })));
//! # Ok(())
//! # }
//! ```
//!
//! ## Peer and route changes
//!
//! [`Node::events`] is a typed stream (a tokio broadcast receiver) of [`NodeEvent`]s
//! from the moment it is called:
//!
//! - [`NodeEvent::PeerUp`]: a session with a peer completed READY, both ways (instances
//!   of our targets we dialled, role [`Role::Connector`]; peers that dialled us,
//!   [`Role::Acceptor`]); from then on requests go to it.
//! - [`NodeEvent::PeerDown`]: a session ended, with the reason (heartbeat timeout,
//!   DISCONNECT, link down, ACL refusal, probe timeout, protocol error). It may come
//!   without a `PeerUp` before it (a probe that failed); a lost instance of a target is
//!   redialled while it stays registered.
//! - [`NodeEvent::RoutesChanged`]: the routing table changed (an instance published or
//!   withdrew links): instances reached through brokers may have come or gone.
//!
//! Instances registered in discovery but not yet linked are not events: read them with
//! [`Node::instances`] (each with its [`InstanceState`]), or wait for some with
//! [`Node::wait_for_instances`]. The stream keeps the last 1,024 events for a slow
//! receiver; one that falls further behind gets `RecvError::Lagged(n)` and reads on from
//! the oldest kept (re-read [`Node::instances`] then).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # #[cfg(not(feature = "tcp"))]
//! # let dev = std::env::temp_dir().join(format!("dms-doc-app-events-{}", std::process::id()));
//! # let builder = |path| dms::Node::builder(path);
//! # #[cfg(not(feature = "tcp"))]
//! # let builder = |path| dms::Node::builder(path).quic_dev_certificates(&dev);
//! use std::time::Duration;
//! use dms::app::Role;
//! use dms::{MemoryDiscovery, NodeEvent};
//!
//! let discovery = MemoryDiscovery::new();
//! let lobby = builder("/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?)
//!     .discovery(discovery.clone())
//!     .target("/demo/cn/android/w1/g1/Battle".parse()?)
//!     .start()
//!     .await?;
//! let mut events = lobby.events(); // before the instance comes: no event missed
//! let battle = builder("/demo/cn/android/w1/g1/Battle/battle-1".parse()?)
//!     .discovery(discovery)
//!     .start()
//!     .await?;
//! let wait = Duration::from_secs(5);
//! loop {
//!     if let NodeEvent::PeerUp { path, role } = tokio::time::timeout(wait, events.recv()).await?? {
//!         assert_eq!((&path, role), (battle.path(), Role::Connector));
//!         break;
//!     }
//! }
//! battle.shutdown().await; // says DISCONNECT
//! loop {
//!     if let NodeEvent::PeerDown { path, reason } = tokio::time::timeout(wait, events.recv()).await?? {
//!         assert_eq!(&path, battle.path());
//!         println!("battle-1 left: {reason}");
//!         break;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Discovery backend
//!
//! Where instances register and find each other: a [`Discovery`] (create, set, get,
//! delete, list and watch keys, with ephemeral leases). [`MemoryDiscovery`] serves the
//! nodes of one process (tests, demos); `dms_discovery::etcd` (feature `etcd`) a real
//! deployment. Another store (Consul, ZooKeeper, your own) implements the trait; the
//! conformance suite every backend passes is in the repository's `dms-test-support`
//! crate, and the keys and values DMS writes are specified in `docs/PROTOCOL.md` §8.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # #[cfg(not(feature = "tcp"))]
//! # let dev = std::env::temp_dir().join(format!("dms-doc-app-discovery-{}", std::process::id()));
//! # let builder = |path| dms::Node::builder(path);
//! # #[cfg(not(feature = "tcp"))]
//! # let builder = |path| dms::Node::builder(path).quic_dev_certificates(&dev);
//! use dms::registration::{Registration, instance_key};
//! use dms::{Discovery, MemoryDiscovery};
//!
//! let discovery = MemoryDiscovery::new(); // any `impl Discovery`
//! let battle = builder("/demo/cn/android/w1/g1/Battle/battle-1".parse()?)
//!     .discovery(discovery.clone())
//!     .start()
//!     .await?;
//! let stored = discovery.get(&instance_key(battle.path())?).await?;
//! let record = Registration::decode(&stored.entry.expect("registered").value).expect("a record");
//! assert_eq!(record.bucket, battle.bucket());
//! # Ok(())
//! # }
//! ```

pub use dms_core::Role;
pub use dms_core::acl::AccessControl;
pub use dms_core::dispatch::{Candidate, DispatchPolicy};
pub use dms_core::route::{RoutePolicy, RoutingTable};

pub use crate::typed::Codec;

#[allow(unused_imports)] // the page's links
use crate::typed::Postcard;
#[allow(unused_imports)] // the page's links
use crate::{
    AclPolicy, Discovery, IncomingRequest, InstanceState, MemoryDiscovery, Node, NodeBuilder,
    NodeEvent, RequestError,
};

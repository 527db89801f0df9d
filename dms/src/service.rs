//! [Tower](https://docs.rs/tower) integration (feature `tower`): a cluster as a
//! [`tower::Service`], and any `tower::Service` as a node's request handler, so that
//! tower's middleware (`timeout`, `limit`, `load_shed`, `buffer`, `retry`...) stacks on
//! either side as it does for tonic and axum.
//!
//! - Client side: [`Client`] is a `Service<Multipart>` answering [`Reply`]; each call is a
//!   request to one instance of a cluster, picked with the [`DispatchKey`] a function of
//!   yours takes from the request (as [`Node::request`] does). [`TypedClient`] does the
//!   same with serde values through a [`Codec`]. Errors are [`RequestError`]s.
//! - Server side: [`serve`] takes the requests of a node ([`Node::next_request`]) and runs
//!   a `Service<Request, Response = Multipart>` on each, with at most `max_concurrency`
//!   running at once and never taking a request while the service is not ready. A
//!   response is the reply; an error is an error reply (see [`serve`] for the codes:
//!   a [`Rejection`] chooses its own, a load-shed `Overloaded` is `OVERLOADED`, a tower
//!   timeout is `HANDLER_FAILED`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use std::time::Duration;
//! use dms::service::{self, Client, Request};
//! use dms::{MemoryDiscovery, Multipart, Node};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # // A build without TCP runs this over QUIC with development certificates.
//! # #[cfg(not(feature = "tcp"))]
//! # let dev = std::env::temp_dir().join(format!("dms-doc-service-{}", std::process::id()));
//! # let builder = |path| Node::builder(path);
//! # #[cfg(not(feature = "tcp"))]
//! # let builder = |path| Node::builder(path).quic_dev_certificates(&dev);
//! let discovery = MemoryDiscovery::new();
//! let battle = builder("/demo/cn/android/w1/g1/Battle/battle-1".parse()?)
//!     .discovery(discovery.clone())
//!     .start()
//!     .await?;
//! // The handler: echoes the payload. At most 8 run at once, each for 1 s at most.
//! let handler = ServiceBuilder::new()
//!     .concurrency_limit(8)
//!     .timeout(Duration::from_secs(1))
//!     .service_fn(|request: Request| async move {
//!         Ok::<_, std::convert::Infallible>(request.into_body())
//!     });
//! tokio::spawn(service::serve(battle.clone(), handler, 64));
//!
//! let lobby = builder("/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?)
//!     .discovery(discovery)
//!     .target("/demo/cn/android/w1/g1/Battle".parse()?)
//!     .start()
//!     .await?;
//! let cluster = "/demo/cn/android/w1/g1/Battle".parse()?;
//! lobby.wait_for_instances(&cluster, 1, Duration::from_secs(5)).await?;
//! // The dispatch key is the first frame (a player id): one player, one instance.
//! let client = ServiceBuilder::new()
//!     .timeout(Duration::from_millis(500))
//!     .service(Client::new(lobby.clone(), cluster, |body: &Multipart| {
//!         body.first().map_or(0, |player| dms_core::path::hash64(player))
//!     }));
//! let reply = client.oneshot(Multipart::from_frames(["player-7", "hi"])).await?;
//! assert_eq!(reply.from.instance(), "battle-1");
//! assert_eq!(&reply.body[1][..], b"hi");
//! # Ok(())
//! # }
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use dms_core::Multipart;
use dms_core::path::{ClusterPath, ServicePath};
use dms_core::proto::control::codes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
pub use tower::BoxError;
use tower::Service;

use crate::typed::{Codec, CodecError, Postcard};
use crate::{DispatchKey, IncomingRequest, Node, Reply, RequestError};

/// The future of a [`Client`]'s or [`TypedClient`]'s call.
pub struct ResponseFuture<T> {
    // A named type without lifetimes, so that the futures of services stacked on a client
    // (a buffer's, a timeout's) are provably `Send` inside async blocks.
    inner: Pin<Box<dyn Future<Output = Result<T, RequestError>> + Send + 'static>>,
}

impl<T> ResponseFuture<T> {
    fn new(future: impl Future<Output = Result<T, RequestError>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl<T> Future for ResponseFuture<T> {
    type Output = Result<T, RequestError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<T> fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// A cluster as a [`tower::Service`]: each call sends its [`Multipart`] as a request to
/// one live instance of the cluster, picked by the node's dispatch policy with the key
/// that `key` takes from the payload (the same key reaches the same instance while the
/// live set is the same, see [`Node::request`]), and answers its [`Reply`].
///
/// Always ready: the node queues requests itself and fails a call it cannot send at once
/// ([`RequestError::TooManyPending`], [`RequestError::NoInstance`]...), so stack a
/// concurrency limit to bound what is in flight. The node's request timeout
/// ([`NodeBuilder::request_timeout`](crate::NodeBuilder::request_timeout)) bounds every
/// call ([`RequestError::Timeout`]); stack a tower timeout for a shorter one. Cheap to
/// clone (the node and the key function are shared), and nameable (no type
/// parameters: keep one in a struct); outcomes are counted in the node's
/// metrics as those of [`Node::request`].
///
/// `key` returns anything that converts into a [`DispatchKey`] (`u64`, `&'static str`,
/// a `DispatchKey`...); `|_| 0u64` sends every request to the same instance.
#[derive(Clone)]
pub struct Client {
    node: Node,
    cluster: ClusterPath,
    key: KeyFn<Multipart>,
}

/// A dispatch key function, shared by the clones of a client.
type KeyFn<Req> = Arc<dyn Fn(&Req) -> DispatchKey + Send + Sync>;

impl Client {
    /// A client of `cluster` (which must be a [target](crate::NodeBuilder::target) of
    /// `node`), dispatching each request by `key(&payload)`.
    pub fn new<F, K>(node: Node, cluster: ClusterPath, key: F) -> Self
    where
        F: Fn(&Multipart) -> K + Send + Sync + 'static,
        K: Into<DispatchKey>,
    {
        Self {
            node,
            cluster,
            key: Arc::new(move |body| key(body).into()),
        }
    }

    /// The node it sends through.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The cluster it sends to.
    pub fn cluster(&self) -> &ClusterPath {
        &self.cluster
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("node", self.node.path())
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Service<Multipart> for Client {
    type Response = Reply;
    type Error = RequestError;
    type Future = ResponseFuture<Reply>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), RequestError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, body: Multipart) -> Self::Future {
        let key = (self.key)(&body);
        let node = self.node.clone();
        let cluster = self.cluster.clone();
        ResponseFuture::new(async move { node.request(&cluster, key, body).await })
    }
}

/// A cluster as a [`tower::Service`] of serde values: as [`Client`], with the request
/// encoded and the reply decoded by a [`Codec`] ([`Postcard`] unless
/// [`with_codec`](Self::with_codec) chooses another), as [`Node::call`] does. A request
/// that cannot be encoded fails with [`RequestError::Encode`] (nothing sent), a reply that
/// cannot be decoded with [`RequestError::Decode`].
///
/// ```
/// use dms::service::TypedClient;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize)]
/// struct Join { player: u64 }
/// #[derive(Deserialize)]
/// struct Joined { room: String }
///
/// fn join_client(lobby: dms::Node) -> TypedClient<Join, Joined> {
///     let battle = "/demo/cn/android/w1/g1/Battle".parse().unwrap();
///     TypedClient::new(lobby, battle, |join: &Join| join.player)
/// }
/// ```
pub struct TypedClient<Req, Resp, C = Postcard> {
    node: Node,
    cluster: ClusterPath,
    key: KeyFn<Req>,
    codec: Arc<C>,
    types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> TypedClient<Req, Resp> {
    /// A client of `cluster` (a target of `node`) dispatching each request by
    /// `key(&request)`, with [`Postcard`].
    pub fn new<F, K>(node: Node, cluster: ClusterPath, key: F) -> Self
    where
        F: Fn(&Req) -> K + Send + Sync + 'static,
        K: Into<DispatchKey>,
    {
        Self {
            node,
            cluster,
            key: Arc::new(move |request| key(request).into()),
            codec: Arc::new(Postcard),
            types: PhantomData,
        }
    }
}

impl<Req, Resp, C> TypedClient<Req, Resp, C> {
    /// The same client with another codec (both ends of a route must use the same).
    pub fn with_codec<C2: Codec>(self, codec: C2) -> TypedClient<Req, Resp, C2> {
        TypedClient {
            node: self.node,
            cluster: self.cluster,
            key: self.key,
            codec: Arc::new(codec),
            types: PhantomData,
        }
    }

    /// The node it sends through.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The cluster it sends to.
    pub fn cluster(&self) -> &ClusterPath {
        &self.cluster
    }
}

impl<Req, Resp, C> Clone for TypedClient<Req, Resp, C> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            cluster: self.cluster.clone(),
            key: self.key.clone(),
            codec: self.codec.clone(),
            types: PhantomData,
        }
    }
}

impl<Req, Resp, C> fmt::Debug for TypedClient<Req, Resp, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedClient")
            .field("node", self.node.path())
            .field("cluster", &self.cluster)
            .field("request", &std::any::type_name::<Req>())
            .field("response", &std::any::type_name::<Resp>())
            .finish_non_exhaustive()
    }
}

impl<Req, Resp, C> Service<Req> for TypedClient<Req, Resp, C>
where
    Req: Serialize,
    Resp: DeserializeOwned + Send + 'static,
    C: Codec,
{
    type Response = Resp;
    type Error = RequestError;
    type Future = ResponseFuture<Resp>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), RequestError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let key = (self.key)(&request);
        let body = self
            .codec
            .encode(&request)
            .map(|frame| Multipart::from_frames([frame]))
            .map_err(|e| RequestError::Encode(e.to_string()));
        let node = self.node.clone();
        let cluster = self.cluster.clone();
        let codec = self.codec.clone();
        ResponseFuture::new(async move {
            let called = async {
                let reply = node.request_uncounted(&cluster, key, body?).await?;
                decode_frame(&*codec, &reply.body).map_err(|e| RequestError::Decode(e.to_string()))
            };
            node.counted(called.await)
        })
    }
}

/// A request or notification as a service run by [`serve`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    from: ServicePath,
    body: Multipart,
    expects_reply: bool,
    broadcast: bool,
}

impl Request {
    /// A request from `from` with `body` that expects a reply (to call a service directly,
    /// in tests).
    pub fn new(from: ServicePath, body: Multipart) -> Self {
        Self {
            from,
            body,
            expects_reply: true,
            broadcast: false,
        }
    }

    /// The sender's service path.
    pub fn from(&self) -> &ServicePath {
        &self.from
    }

    /// The payload frames.
    pub fn body(&self) -> &Multipart {
        &self.body
    }

    /// The payload frames, taken.
    pub fn into_body(self) -> Multipart {
        self.body
    }

    /// Whether the sender waits for a reply (a notification's response and error are
    /// dropped).
    pub fn expects_reply(&self) -> bool {
        self.expects_reply
    }

    /// Whether this is one copy of a broadcast to the cluster.
    pub fn is_broadcast(&self) -> bool {
        self.broadcast
    }

    /// The payload decoded with [`Postcard`]; the error converts into a `BAD_REQUEST`
    /// [`Rejection`] (`?` in a handler returning `Rejection`s).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        self.decode_with(&Postcard)
    }

    /// The payload decoded with `codec`.
    pub fn decode_with<C: Codec, T: DeserializeOwned>(&self, codec: &C) -> Result<T, CodecError> {
        decode_frame(codec, &self.body)
    }
}

/// A handler's error that chooses the error reply: its requester gets
/// [`RequestError::Remote`] with this `code` and `detail`. Found anywhere in an error's
/// [`source`](StdError::source) chain (through a `BoxError`, a buffer...).
///
/// ```
/// use dms::service::{Rejection, Request};
/// use dms_core::proto::control::codes;
///
/// async fn double(request: Request) -> Result<dms::Multipart, Rejection> {
///     let n: u64 = request.decode()?; // BAD_REQUEST if the payload is no u64
///     if n > u64::MAX / 2 {
///         return Err(Rejection::new(codes::BAD_REQUEST, "too large to double"));
///     }
///     dms::service::encode(&(n * 2))
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("error {code}: {detail}")]
pub struct Rejection {
    /// The error code (see [`codes`]; codes from 256 up are free for applications).
    pub code: u16,
    /// What went wrong, for people.
    pub detail: String,
}

impl Rejection {
    /// An error reply with `code` and `detail`.
    pub fn new(code: u16, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

/// A payload that does not decode is a bad request.
impl From<CodecError> for Rejection {
    fn from(error: CodecError) -> Self {
        Self::new(
            codes::BAD_REQUEST,
            format!("the request could not be decoded: {error}"),
        )
    }
}

/// `value` as a typed reply payload (one frame, [`Postcard`]); a value that cannot be
/// encoded is a `HANDLER_FAILED` [`Rejection`].
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Multipart, Rejection> {
    encode_with(&Postcard, value)
}

/// As [`encode`], with another codec.
pub fn encode_with<C: Codec, T: Serialize + ?Sized>(
    codec: &C,
    value: &T,
) -> Result<Multipart, Rejection> {
    codec
        .encode(value)
        .map(|frame| Multipart::from_frames([frame]))
        .map_err(|error| {
            Rejection::new(
                codes::HANDLER_FAILED,
                format!("the reply could not be encoded: {error}"),
            )
        })
}

/// The value of a typed payload (exactly one frame).
fn decode_frame<C: Codec, T: DeserializeOwned>(
    codec: &C,
    body: &Multipart,
) -> Result<T, CodecError> {
    match body.frames() {
        [frame] => codec.decode(frame),
        frames => Err(CodecError {
            codec: C::NAME,
            detail: format!("a typed payload is one frame, not {}", frames.len()),
        }),
    }
}

/// Runs `service` as `node`'s request handler: takes each request and notification of
/// the node ([`Node::next_request`]), calls `service` with it as a [`Request`] in a task
/// of its own, and answers the request with the response, or with an error reply
/// ([`RequestError::Remote`] at the requester) for an error:
///
/// | the error, or an error in its `source` chain | code | detail |
/// |---|---|---|
/// | a [`Rejection`] | its `code` | its `detail` |
/// | `tower::load_shed::error::Overloaded` | `OVERLOADED` (17) | `the service is overloaded` |
/// | `tower::timeout::error::Elapsed` | `HANDLER_FAILED` (18) | `the handler timed out` |
/// | anything else | `HANDLER_FAILED` (18) | the error's `Display` |
///
/// At most `max_concurrency` calls run at once (at least 1), and no request is taken
/// while the service is not ready ([`Service::poll_ready`]; polled again once a request
/// is taken, so that its readiness is fresh when called): requests then wait in the
/// node's incoming queue, which answers `OVERLOADED` itself once full. So a
/// `ConcurrencyLimitLayer` bounds the handlers with backpressure, a `LoadShedLayer` above
/// it answers `OVERLOADED` at once instead of waiting, a `TimeoutLayer` answers
/// `HANDLER_FAILED` for a handler too slow, and a `BufferLayer` makes any service fit.
/// A notification's response and error are dropped (its sender waits for nothing); a
/// handler that panics leaves its request answered `NO_HANDLER`.
///
/// The future ends with `Ok(())` once the node is shut down ([`Node::shutdown`]; it holds
/// a clone of the node, so dropping the others does not shut it down), noticed when it
/// next waits for a request, and with the service's error if `poll_ready` fails (a tower
/// service that failed is not called again). Calls still running then finish on their
/// own. Spawn it (`tokio::spawn(serve(...))`) and abort the task to stop serving early:
/// requests not taken stay queued for [`Node::next_request`].
///
/// See the [module's example](self).
pub async fn serve<S>(node: Node, mut service: S, max_concurrency: usize) -> Result<(), BoxError>
where
    S: Service<Request, Response = Multipart>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let running = Arc::new(Semaphore::new(max_concurrency.max(1)));
    loop {
        // Never closed: it lives here.
        let Ok(permit) = running.clone().acquire_owned().await else {
            return Ok(());
        };
        poll_fn(|cx| service.poll_ready(cx))
            .await
            .map_err(Into::into)?;
        let Some(mut incoming) = node.next_request().await else {
            return Ok(());
        };
        // Again, now that there is a request: readiness seen before a long wait may be
        // stale (a load-shed layer would refuse a request its inner service could take).
        poll_fn(|cx| service.poll_ready(cx))
            .await
            .map_err(Into::into)?;
        let request = Request {
            from: incoming.from.clone(),
            body: std::mem::take(&mut incoming.body),
            expects_reply: incoming.expects_reply(),
            broadcast: incoming.is_broadcast(),
        };
        let handled = service.call(request);
        tokio::spawn(async move {
            let result = handled.await.map_err(Into::into);
            answer(incoming, result).await;
            drop(permit);
        });
    }
}

/// Answers `incoming` with what its handler returned.
async fn answer(incoming: IncomingRequest, result: Result<Multipart, BoxError>) {
    let from = incoming.from.clone();
    let sent = match result {
        Ok(body) => incoming.reply(body).await,
        Err(error) => {
            let (code, detail) = error_reply(&*error);
            if !incoming.expects_reply() {
                tracing::debug!(%from, code, detail, "a notification's handler failed");
            }
            incoming.reply_error(code, detail).await
        }
    };
    if let Err(error) = sent {
        tracing::debug!(%from, %error, "reply not sent");
    }
}

/// The error reply for a handler's `error` (see [`serve`]).
fn error_reply(error: &(dyn StdError + Send + Sync + 'static)) -> (u16, String) {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(rejection) = e.downcast_ref::<Rejection>() {
            return (rejection.code, rejection.detail.clone());
        }
        if e.is::<tower::load_shed::error::Overloaded>() {
            return (codes::OVERLOADED, "the service is overloaded".into());
        }
        if e.is::<tower::timeout::error::Elapsed>() {
            return (codes::HANDLER_FAILED, "the handler timed out".into());
        }
        cause = e.source();
    }
    (codes::HANDLER_FAILED, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped")]
    struct Wrapped(#[source] BoxError);

    #[test]
    fn errors_choose_their_reply_codes() {
        let rejection: BoxError = Box::new(Rejection::new(300, "no"));
        assert_eq!(error_reply(&*rejection), (300, "no".into()));
        let shed: BoxError = Box::new(tower::load_shed::error::Overloaded::new());
        assert_eq!(error_reply(&*shed).0, codes::OVERLOADED);
        let deep: BoxError = Box::new(Wrapped(Box::new(Wrapped(shed))));
        assert_eq!(error_reply(&*deep).0, codes::OVERLOADED);
        let other: BoxError = "boom".into();
        assert_eq!(error_reply(&*other), (codes::HANDLER_FAILED, "boom".into()));
        let bad = Rejection::from(CodecError {
            codec: "postcard",
            detail: "eof".into(),
        });
        assert_eq!(bad.code, codes::BAD_REQUEST);
    }

    #[test]
    fn typed_payloads_round_trip() {
        let body = encode(&(7u64, "seven")).unwrap_or_default();
        let request = Request::new(
            "/a/b/c/d/e/F/f-1".parse().unwrap_or_else(|_| panic!()),
            body,
        );
        assert_eq!(
            request.decode::<(u64, String)>().ok(),
            Some((7, "seven".into()))
        );
        let two = Request::new(request.from().clone(), Multipart::from_frames(["a", "b"]));
        assert!(two.decode::<u64>().is_err());
    }
}

//! Requests tied to their replies, on top of the kernel's typed API (`Node::call`,
//! `dms::service::serve`).

use std::future::Future;

use dms::service::{self, BoxError, Rejection, Request};
use dms::typed::{Codec, Postcard};
use dms::{ClusterPath, DispatchKey, Multipart, Node, RequestError, ServicePath};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::GameError;

/// A request of one of the services, tied to its reply: it travels as its service's
/// `Envelope` (one enum per service), and is answered with `Result<Reply, GameError>`.
pub trait Ask: Into<Self::Envelope> {
    /// The service's request enum.
    type Envelope: Serialize + DeserializeOwned;
    /// What a success answers.
    type Reply: Serialize + DeserializeOwned;
}

/// Why a request did not succeed: the service said no (a [`GameError`]), or the request
/// did not get a reply (a [`RequestError`]: timeout, instance lost, no instance...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The service answered with an error.
    #[error("{0}")]
    Game(GameError),
    /// The request failed in transport.
    #[error("{0}")]
    Request(RequestError),
}

impl Failure {
    /// A short name of the failure, for counting by kind: `trade.unknown_offer`,
    /// `request.timeout`...
    pub fn kind(&self) -> String {
        match self {
            Self::Game(error) => error.kind(),
            Self::Request(error) => format!("request.{}", request_kind(error)),
        }
    }

    /// As a [`GameError`] of a service that called `service` on the way: a game error
    /// as it is, a transport error as [`GameError::Upstream`].
    pub fn upstream(self, service: &str) -> GameError {
        match self {
            Self::Game(error) => error,
            Self::Request(error) => GameError::Upstream {
                service: service.to_owned(),
                kind: request_kind(&error).to_owned(),
                detail: error.to_string(),
            },
        }
    }
}

fn request_kind(error: &RequestError) -> &'static str {
    match error {
        RequestError::NotATarget(_) => "not_a_target",
        RequestError::NoInstance(_) => "no_instance",
        RequestError::Denied { .. } => "denied",
        RequestError::Timeout => "timeout",
        RequestError::PeerLost(_) => "peer_lost",
        RequestError::PeerClosed(_) => "peer_closed",
        RequestError::Remote { .. } => "remote",
        RequestError::TooLarge(_) => "too_large",
        RequestError::TooManyPending => "too_many_pending",
        RequestError::Encode(_) => "encode",
        RequestError::Decode(_) => "decode",
        RequestError::Closed => "closed",
        RequestError::Route { .. } => "route",
        _ => "other",
    }
}

fn settle<T>(reply: Result<Result<T, GameError>, RequestError>) -> Result<T, Failure> {
    match reply {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Failure::Game(error)),
        Err(error) => Err(Failure::Request(error)),
    }
}

/// Sends `request` to one instance of `cluster`, picked by `key` (the same key, the same
/// instance), with [`Node::call`].
pub async fn ask<A: Ask>(
    node: &Node,
    cluster: &ClusterPath,
    key: impl Into<DispatchKey>,
    request: A,
) -> Result<A::Reply, Failure> {
    let envelope: A::Envelope = request.into();
    settle(node.call(cluster, key, &envelope).await)
}

/// Sends `request` to the instance `instance`.
pub async fn ask_instance<A: Ask>(
    node: &Node,
    instance: &ServicePath,
    request: A,
) -> Result<A::Reply, Failure> {
    let envelope: A::Envelope = request.into();
    let body = Postcard
        .encode(&envelope)
        .map(|frame| Multipart::from_frames([frame]))
        .map_err(|e| Failure::Request(RequestError::Encode(e.to_string())))?;
    let reply = node
        .request_instance(instance, body)
        .await
        .map_err(Failure::Request)?;
    let decoded = match reply.body.frames() {
        [frame] => Postcard
            .decode::<Result<A::Reply, GameError>>(frame)
            .map_err(|e| RequestError::Decode(e.to_string())),
        frames => Err(RequestError::Decode(format!(
            "a typed payload is one frame, not {}",
            frames.len()
        ))),
    };
    settle(decoded)
}

/// The reply to a request of type `A`: what its handler returns.
pub fn answer<A: Ask>(reply: Result<A::Reply, GameError>) -> Result<Multipart, Rejection> {
    service::encode(&reply)
}

/// A request (or notification, or broadcast) as a typed handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming<E> {
    /// Who sent it (the origin, also through brokers).
    pub from: ServicePath,
    /// The message.
    pub message: E,
    /// Whether it is one copy of a broadcast.
    pub broadcast: bool,
}

/// Runs `handler` on every request of `node` decoded as the service's envelope `E`
/// (`dms::service::serve`: at most `max_concurrency` at once). A payload that does not
/// decode is answered `BAD_REQUEST`; the handler answers with [`answer`].
pub async fn serve_typed<E, F, Fut>(
    node: Node,
    handler: F,
    max_concurrency: usize,
) -> Result<(), BoxError>
where
    E: DeserializeOwned + Send + 'static,
    F: Fn(Incoming<E>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Multipart, Rejection>> + Send + 'static,
{
    let service = tower::service_fn(move |request: Request| {
        let handler = handler.clone();
        async move {
            let message: E = request.decode()?;
            let incoming = Incoming {
                from: request.from().clone(),
                message,
                broadcast: request.is_broadcast(),
            };
            handler(incoming).await
        }
    });
    service::serve(node, service, max_concurrency).await
}

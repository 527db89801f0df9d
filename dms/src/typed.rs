//! Typed messages: requests, replies, notifications and broadcasts as serde values
//! instead of raw frames.
//!
//! A typed message is one payload frame holding the value as its [`Codec`] writes it:
//! [`Postcard`] by default (compact, the seed's choice), [`Json`] with the `json`
//! feature (readable when debugging). Both ends must use the same codec for a route;
//! DMS does not tag the frame. The raw [`Multipart`] API stays for those who want frames.
//!
//! Decoding is checked on both sides: a requester that cannot decode the reply gets
//! [`RequestError::Decode`] (the request was delivered and answered); a responder that
//! cannot decode the request answers it with the error code
//! [`BAD_REQUEST`](dms_core::proto::control::codes::BAD_REQUEST)
//! ([`IncomingRequest::decode_or_reject`]), which the requester sees as
//! [`RequestError::Remote`]. Nothing panics on a malformed payload.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use dms::{MemoryDiscovery, Node};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Join { player: u64 }
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct Joined { room: String }
//!
//! # // A build without TCP runs this over QUIC with development certificates.
//! # #[cfg(not(feature = "tcp"))]
//! # let dev = std::env::temp_dir().join(format!("dms-doc-typed-{}", std::process::id()));
//! # let builder = |path| Node::builder(path);
//! # #[cfg(not(feature = "tcp"))]
//! # let builder = |path| Node::builder(path).quic_dev_certificates(&dev);
//! let discovery = MemoryDiscovery::new();
//! let battle = builder("/demo/cn/android/w1/g1/Battle/battle-1".parse()?)
//!     .discovery(discovery.clone())
//!     .start()
//!     .await?;
//! let server = battle.clone();
//! tokio::spawn(async move {
//!     while let Some(request) = server.next_request().await {
//!         // A payload that is not a `Join` is answered BAD_REQUEST.
//!         let Ok((join, request)) = request.decode_or_reject::<Join>().await else {
//!             continue;
//!         };
//!         let _ = request
//!             .reply_typed(&Joined { room: format!("room-{}", join.player % 10) })
//!             .await;
//!     }
//! });
//! let lobby = builder("/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?)
//!     .target("/demo/cn/android/w1/g1/Battle".parse()?)
//!     .discovery(discovery)
//!     .start()
//!     .await?;
//! let cluster = "/demo/cn/android/w1/g1/Battle".parse()?;
//! let joined: Joined = lobby.call(&cluster, 42u64, &Join { player: 42 }).await?;
//! assert_eq!(joined, Joined { room: "room-2".into() });
//! # Ok(())
//! # }
//! ```

use bytes::Bytes;
use dms_core::Multipart;
use dms_core::path::{ClusterPath, ServicePath};
use dms_core::proto::control::codes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{DispatchKey, IncomingRequest, Node, RequestError};

/// A value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{codec}: {detail}")]
pub struct CodecError {
    /// The codec's name (`postcard`, `json`).
    pub codec: &'static str,
    /// What went wrong.
    pub detail: String,
}

/// Turns values into one payload frame and back. Implement it to use another format.
pub trait Codec: Send + Sync + 'static {
    /// The format's name, for errors.
    const NAME: &'static str;
    /// Encodes `value`.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CodecError>;
    /// Decodes a value from `frame`; hostile input gets an error, never a panic.
    fn decode<T: DeserializeOwned>(&self, frame: &[u8]) -> Result<T, CodecError>;
}

/// [postcard](https://docs.rs/postcard): compact varint encoding (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

impl Codec for Postcard {
    const NAME: &'static str = "postcard";

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CodecError> {
        postcard::to_allocvec(value)
            .map(Bytes::from)
            .map_err(|e| error::<Self>(e.to_string()))
    }

    fn decode<T: DeserializeOwned>(&self, frame: &[u8]) -> Result<T, CodecError> {
        postcard::from_bytes(frame).map_err(|e| error::<Self>(e.to_string()))
    }
}

/// JSON (feature `json`): readable on the wire, for debugging and foreign peers.
#[cfg(feature = "json")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

#[cfg(feature = "json")]
impl Codec for Json {
    const NAME: &'static str = "json";

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CodecError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| error::<Self>(e.to_string()))
    }

    fn decode<T: DeserializeOwned>(&self, frame: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(frame).map_err(|e| error::<Self>(e.to_string()))
    }
}

fn error<C: Codec>(detail: String) -> CodecError {
    CodecError {
        codec: C::NAME,
        detail,
    }
}

/// The one frame of a typed payload.
fn single_frame<C: Codec>(body: &Multipart) -> Result<&[u8], CodecError> {
    match body.frames() {
        [frame] => Ok(frame),
        frames => Err(error::<C>(format!(
            "a typed payload is one frame, not {}",
            frames.len()
        ))),
    }
}

fn encode<C: Codec, T: Serialize + ?Sized>(
    codec: &C,
    value: &T,
) -> Result<Multipart, RequestError> {
    codec
        .encode(value)
        .map(|frame| Multipart::from_frames([frame]))
        .map_err(|e| RequestError::Encode(e.to_string()))
}

impl Node {
    /// Sends `request` to one instance of `cluster` (picked by `key`, as
    /// [`request`](Self::request) does) and decodes its reply, with [`Postcard`].
    pub async fn call<Req, Resp>(
        &self,
        cluster: &ClusterPath,
        key: impl Into<DispatchKey>,
        request: &Req,
    ) -> Result<Resp, RequestError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.call_with(&Postcard, cluster, key, request).await
    }

    /// As [`call`](Self::call), with another codec.
    pub async fn call_with<C, Req, Resp>(
        &self,
        codec: &C,
        cluster: &ClusterPath,
        key: impl Into<DispatchKey>,
        request: &Req,
    ) -> Result<Resp, RequestError>
    where
        C: Codec,
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let called = async {
            let body = encode(codec, request)?;
            let reply = self.request_uncounted(cluster, key, body).await?;
            single_frame::<C>(&reply.body)
                .and_then(|frame| codec.decode(frame))
                .map_err(|e| RequestError::Decode(e.to_string()))
        };
        self.counted(called.await)
    }

    /// Sends `value` one way to one instance of `cluster` (see [`notify`](Self::notify)),
    /// with [`Postcard`]; returns the instance it went to.
    pub async fn notify_typed<T: Serialize + ?Sized>(
        &self,
        cluster: &ClusterPath,
        key: impl Into<DispatchKey>,
        value: &T,
    ) -> Result<ServicePath, RequestError> {
        match encode(&Postcard, value) {
            Ok(body) => self.notify(cluster, key, body).await,
            Err(error) => self.counted(Err(error)),
        }
    }

    /// Sends `value` to every live instance of `cluster` (see
    /// [`broadcast`](Self::broadcast)), with [`Postcard`]; returns the instances reached.
    pub async fn broadcast_typed<T: Serialize + ?Sized>(
        &self,
        cluster: &ClusterPath,
        value: &T,
    ) -> Result<Vec<ServicePath>, RequestError> {
        match encode(&Postcard, value) {
            Ok(body) => self.broadcast(cluster, body).await,
            Err(error) => self.counted(Err(error)),
        }
    }
}

impl IncomingRequest {
    /// The payload decoded with [`Postcard`].
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        self.decode_with(&Postcard)
    }

    /// The payload decoded with `codec`.
    pub fn decode_with<C: Codec, T: DeserializeOwned>(&self, codec: &C) -> Result<T, CodecError> {
        single_frame::<C>(self.body()).and_then(|frame| codec.decode(frame))
    }

    /// The payload decoded with [`Postcard`], with the request to answer. If it does not
    /// decode, a request is answered with the error code `BAD_REQUEST` (its requester
    /// gets `RequestError::Remote` at once, not a timeout), a notification is dropped,
    /// and the error is returned.
    pub async fn decode_or_reject<T: DeserializeOwned>(self) -> Result<(T, Self), CodecError> {
        self.decode_or_reject_with(&Postcard).await
    }

    /// As [`decode_or_reject`](Self::decode_or_reject), with another codec.
    pub async fn decode_or_reject_with<C: Codec, T: DeserializeOwned>(
        self,
        codec: &C,
    ) -> Result<(T, Self), CodecError> {
        match self.decode_with(codec) {
            Ok(value) => Ok((value, self)),
            Err(error) => {
                let detail = format!("the request could not be decoded: {error}");
                // The requester may be gone already: nothing more to tell it then.
                let _ = self.reply_error(codes::BAD_REQUEST, detail).await;
                Err(error)
            }
        }
    }

    /// Answers the request with `value` encoded with [`Postcard`].
    pub async fn reply_typed<T: Serialize + ?Sized>(self, value: &T) -> Result<(), RequestError> {
        self.reply_typed_with(&Postcard, value).await
    }

    /// Answers the request with `value` encoded with `codec`. If `value` cannot be
    /// encoded, the requester is answered `HANDLER_FAILED` and the error returned.
    pub async fn reply_typed_with<C: Codec, T: Serialize + ?Sized>(
        self,
        codec: &C,
        value: &T,
    ) -> Result<(), RequestError> {
        match encode(codec, value) {
            Ok(body) => self.reply(body).await,
            Err(error) => {
                let detail = format!("the reply could not be encoded: {error}");
                self.reply_error(codes::HANDLER_FAILED, detail).await?;
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Move {
        player: u64,
        to: (i32, i32),
        note: Option<String>,
    }

    fn round_trip<C: Codec>(codec: &C) {
        let value = Move {
            player: 7,
            to: (-3, 12),
            note: Some("dash".into()),
        };
        let frame = codec.encode(&value).unwrap();
        assert_eq!(codec.decode::<Move>(&frame).unwrap(), value);
        // Truncated and garbage frames are errors, not panics.
        for cut in 0..frame.len() {
            let _ = codec.decode::<Move>(&frame[..cut]);
        }
        assert!(
            codec
                .decode::<Move>(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
                .is_err()
        );
    }

    #[test]
    fn postcard_round_trips_and_rejects_garbage() {
        round_trip(&Postcard);
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_round_trips_and_rejects_garbage() {
        round_trip(&Json);
    }

    #[test]
    fn a_typed_payload_is_exactly_one_frame() {
        let two = Multipart::from_frames(["a", "b"]);
        assert!(single_frame::<Postcard>(&two).is_err());
        assert!(single_frame::<Postcard>(&Multipart::from_frames(Vec::<Bytes>::new())).is_err());
    }
}

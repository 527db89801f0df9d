//! Typed messages end to end: serde values over real TCP, decode failures on either side
//! as typed errors, never a panic or a timeout.
#![cfg(feature = "tcp")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::{Duration, Instant};

use dms::typed::{Codec, Postcard};
use dms::{MemoryDiscovery, Multipart, Node, Outcome, RequestError};
use dms_core::proto::control::codes;
use dms_test_support::wait::within;
use serde::{Deserialize, Serialize};
use support::{cluster, counter, instance};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Trade {
    seller: u64,
    buyer: u64,
    item: String,
    price: u32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Verdict {
    Done { receipt: u64 },
    Refused(String),
}

/// A Trade server: a `Trade` is answered with a `Verdict`; the payload "raw" is answered
/// with bytes that are no `Verdict`; notifications are passed to `seen`.
async fn trade_server(discovery: &MemoryDiscovery, seen: tokio::sync::mpsc::Sender<Trade>) -> Node {
    let node = Node::builder(instance("Trade", "trade-1"))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let server = node.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            if request
                .body()
                .frames()
                .first()
                .is_some_and(|f| &f[..] == b"raw")
            {
                let _ = request.reply(Multipart::from_frames([vec![0xff; 3]])).await;
                continue;
            }
            if !request.expects_reply() {
                if let Ok(trade) = request.decode::<Trade>() {
                    let _ = seen.send(trade).await;
                }
                continue;
            }
            let Ok((trade, request)) = request.decode_or_reject::<Trade>().await else {
                continue;
            };
            let verdict = if trade.price > 0 {
                Verdict::Done {
                    receipt: trade.seller * 1000 + trade.buyer,
                }
            } else {
                Verdict::Refused("free trades are not allowed".into())
            };
            let _ = request.reply_typed(&verdict).await;
        }
    });
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_requests_notifications_and_decode_failures() {
    dms_test_support::metrics::recorder();
    let discovery = MemoryDiscovery::new();
    let (seen_tx, mut seen) = tokio::sync::mpsc::channel(8);
    let _server = trade_server(&discovery, seen_tx).await;
    let lobby = Node::builder(instance("Lobby", "lobby-1"))
        .target(cluster("Trade"))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    within(
        "the trade instance",
        lobby.wait_for_instances(&cluster("Trade"), 1, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let trade = Trade {
        seller: 7,
        buyer: 9,
        item: "sword".into(),
        price: 120,
    };

    // A typed round trip, and the handler's own typed refusal.
    let verdict: Verdict = lobby.call(&cluster("Trade"), 7u64, &trade).await.unwrap();
    assert_eq!(verdict, Verdict::Done { receipt: 7009 });
    let free = Trade {
        price: 0,
        ..trade.clone()
    };
    let verdict: Verdict = lobby.call(&cluster("Trade"), 7u64, &free).await.unwrap();
    assert_eq!(
        verdict,
        Verdict::Refused("free trades are not allowed".into())
    );

    // The responder cannot decode what it got: BAD_REQUEST at once, not a timeout.
    let started = Instant::now();
    let wrong: Result<Verdict, _> = lobby.call(&cluster("Trade"), 7u64, &"not a trade").await;
    match wrong {
        Err(RequestError::Remote { code, detail }) => {
            assert_eq!(code, codes::BAD_REQUEST, "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered, not timed out"
    );

    // The requester cannot decode the reply: Decode, and the request was delivered.
    let raw = lobby
        .request(&cluster("Trade"), 7u64, Multipart::from_frames(["raw"]))
        .await
        .unwrap();
    assert!(Postcard.decode::<Verdict>(&raw.body[0]).is_err());
    let undecodable: Result<Verdict, _> = lobby
        .call_with(&RawMarker, &cluster("Trade"), 7u64, &())
        .await;
    match undecodable {
        Err(error @ RequestError::Decode(_)) => assert_eq!(error.outcome(), Outcome::Delivered),
        other => panic!("{other:?}"),
    }
    // Each typed call is counted once, by its final outcome (the undecodable reply as
    // `decode`, not as the `ok` of the request under it).
    let lobby_path = instance("Lobby", "lobby-1");
    let outcome = |o: &str| counter("dms_requests_total", &lobby_path, &[("outcome", o)]);
    assert_eq!(
        (outcome("ok"), outcome("decode"), outcome("remote")),
        (3, 1, 1),
        "two typed calls and one raw request answered, one undecodable, one BAD_REQUEST"
    );

    // A typed notification arrives as the value sent.
    lobby
        .notify_typed(&cluster("Trade"), 7u64, &trade)
        .await
        .unwrap();
    let got = within("the typed notification", seen.recv()).await.unwrap();
    assert_eq!(got, trade);
}

/// A codec that sends the payload "raw" (which the server answers with garbage) and
/// decodes with postcard: the reply side's failure, reached through the public API.
struct RawMarker;

impl Codec for RawMarker {
    const NAME: &'static str = "raw-marker";

    fn encode<T: Serialize + ?Sized>(&self, _: &T) -> Result<bytes::Bytes, dms::typed::CodecError> {
        Ok(bytes::Bytes::from_static(b"raw"))
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        frame: &[u8],
    ) -> Result<T, dms::typed::CodecError> {
        Postcard.decode(frame)
    }
}

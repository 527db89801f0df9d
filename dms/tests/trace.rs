//! Trace context across processes (docs/PROTOCOL.md §3.4): a request's W3C traceparent
//! reaches its handler, a handler passes it on to the request it makes in turn, and with
//! the feature `otel` the kernel's spans (`dms.request` → `dms.handle` → `dms.request` →
//! `dms.handle`, each with its `dms.reply`) form one OpenTelemetry trace, checked with an
//! in-memory exporter (no collector).
//!
//! Three nodes over TCP: Lobby asks Gate, whose handler asks Battle.
#![cfg(feature = "tcp")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use dms::{MemoryDiscovery, Multipart, Node, RequestOptions, TraceContext};
use dms_test_support::wait::within;
use support::{cluster, instance};
use tokio::sync::mpsc;
use tracing::Instrument;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The tests of this file run one at a time: a thread-local `tracing` subscriber (the
/// OpenTelemetry test's) and spans made meanwhile on other threads without one race on
/// the callsites' cached interest.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a handler saw: the node, the trace context of the request, the payload.
type Seen = (String, Option<TraceContext>, Multipart);

/// Battle answers with its payload; Gate asks Battle with the payload and the trace
/// context it received and answers with Battle's reply. Both report what they saw, and
/// run their handlers in the request's `dms.handle` span.
async fn world(discovery: &MemoryDiscovery) -> (Node, Node, Node, mpsc::Receiver<Seen>) {
    let (seen_tx, seen) = mpsc::channel(16);
    let battle = Node::builder(instance("Battle", "battle-1"))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let gate = Node::builder(instance("Gate", "gate-1"))
        .discovery(discovery.clone())
        .target(cluster("Battle"))
        .start()
        .await
        .unwrap();
    let lobby = Node::builder(instance("Lobby", "lobby-1"))
        .discovery(discovery.clone())
        .target(cluster("Gate"))
        .target(cluster("Battle"))
        .start()
        .await
        .unwrap();
    let (server, seen_by_battle) = (battle.clone(), seen_tx.clone());
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let span = request.span();
            let seen = seen_by_battle.clone();
            async move {
                let body = request.body().clone();
                let _ = seen
                    .send(("battle".into(), request.trace_context(), body.clone()))
                    .await;
                let _ = request.reply(body).await;
            }
            .instrument(span)
            .await;
        }
    });
    let server = gate.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let span = request.span();
            let (node, seen) = (server.clone(), seen_tx.clone());
            tokio::spawn(
                async move {
                    let body = request.body().clone();
                    let _ = seen
                        .send(("gate".into(), request.trace_context(), body.clone()))
                        .await;
                    let onward = RequestOptions::new().trace(request.trace_context());
                    match node
                        .request_with(&cluster("Battle"), 1u64, body, onward)
                        .await
                    {
                        Ok(reply) => drop(request.reply(reply.body).await),
                        Err(error) => drop(request.reply_error(300, error.to_string()).await),
                    }
                }
                .instrument(span),
            );
        }
    });
    for (node, target) in [(&gate, "Battle"), (&lobby, "Gate"), (&lobby, "Battle")] {
        node.wait_for_instances(&cluster(target), 1, Duration::from_secs(10))
            .await
            .unwrap();
    }
    (lobby, gate, battle, seen)
}

async fn next_seen(seen: &mut mpsc::Receiver<Seen>) -> Seen {
    within("a handler to see a request", seen.recv())
        .await
        .unwrap()
}

/// Without an OpenTelemetry layer (with or without the feature): the trace context the
/// caller gives is what the handler sees, byte for byte (same trace id, the caller's span
/// as parent), through a hop that passes it on; no context, none seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_traceparent_reaches_every_hop() {
    let _serial = SERIAL.lock().await;
    let discovery = MemoryDiscovery::new();
    let (lobby, _gate, _battle, mut seen) = world(&discovery).await;
    let trace: TraceContext = TRACEPARENT.parse().unwrap();

    // Lobby → Gate → Battle, traced.
    let options = RequestOptions::new()
        .trace(Some(trace))
        .timeout(Duration::from_secs(10));
    let reply = within(
        "a traced request through Gate",
        lobby.request_with(
            &cluster("Gate"),
            7u64,
            Multipart::from_frames(["a"]),
            options,
        ),
    )
    .await
    .unwrap();
    assert_eq!(reply.body, Multipart::from_frames(["a"]));
    for hop in ["gate", "battle"] {
        let (node, got, body) = next_seen(&mut seen).await;
        assert_eq!((node.as_str(), body), (hop, Multipart::from_frames(["a"])));
        let got = got.unwrap_or_else(|| panic!("{hop} saw no trace context"));
        assert_eq!(got, trace, "{hop}");
        assert_eq!(got.trace_id(), 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
        assert_eq!(
            got.parent_id(),
            0x00f0_67aa_0ba9_02b7,
            "{hop}: the caller's span"
        );
        assert_eq!(got.to_string(), TRACEPARENT);
    }

    // To one given instance.
    let battle = instance("Battle", "battle-1");
    let other = trace.with_parent(0x1234).unwrap();
    let options = RequestOptions::new().trace(Some(other));
    within(
        "a traced request to battle-1",
        lobby.request_instance_with(&battle, Multipart::from_frames(["b"]), options),
    )
    .await
    .unwrap();
    assert_eq!(next_seen(&mut seen).await.1, Some(other));

    // Untraced: nothing on the wire, nothing seen, at every hop.
    within(
        "an untraced request",
        lobby.request(&cluster("Gate"), 7u64, Multipart::from_frames(["c"])),
    )
    .await
    .unwrap();
    for hop in ["gate", "battle"] {
        let (node, got, _) = next_seen(&mut seen).await;
        assert_eq!((node.as_str(), got), (hop, None));
    }
    // The default options are the plain request.
    within(
        "a request with default options",
        lobby.request_with(
            &cluster("Battle"),
            7u64,
            Multipart::from_frames(["d"]),
            RequestOptions::new(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(next_seen(&mut seen).await.1, None);
}

/// With `otel` and a `tracing-opentelemetry` layer exporting to memory: one trace from the
/// caller's span to the last hop, each `dms.handle` the child of the `dms.request` that
/// sent it (a remote parent, through the traceparent on the wire), each `dms.request` the
/// child of the span it was made in, each `dms.reply` the child of its `dms.handle`.
#[cfg(feature = "otel")]
#[tokio::test(flavor = "current_thread")]
async fn otel_spans_form_one_trace_across_nodes() {
    let _serial = SERIAL.lock().await;
    use opentelemetry::trace::{SpanId, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use tracing_subscriber::layer::SubscriberExt;

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("dms-test")));
    // The whole test runs on this thread (current-thread runtime): the nodes' tasks too.
    let _default = tracing::subscriber::set_default(subscriber);

    let discovery = MemoryDiscovery::new();
    let (lobby, _gate, _battle, mut seen) = world(&discovery).await;
    let client = tracing::info_span!("client.operation");
    let reply = within(
        "a request made in the client's span",
        lobby
            .request(&cluster("Gate"), 7u64, Multipart::from_frames(["x"]))
            .instrument(client.clone()),
    )
    .await
    .unwrap();
    drop(client);
    assert_eq!(reply.body, Multipart::from_frames(["x"]));
    let (_, at_gate, _) = next_seen(&mut seen).await;
    let (_, at_battle, _) = next_seen(&mut seen).await;
    let (at_gate, at_battle) = (at_gate.unwrap(), at_battle.unwrap());

    // Every span has ended once both replies went out (the handlers' tasks finish).
    let spans: Vec<SpanData> = within("the spans to be exported", async {
        loop {
            let spans = exporter.get_finished_spans().unwrap();
            let count = |name: &str| spans.iter().filter(|s| s.name == name).count();
            if count("client.operation") == 1
                && count("dms.request") == 2
                && count("dms.handle") == 2
                && count("dms.reply") == 2
            {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let one = |name: &str, node: &str| -> &SpanData {
        spans
            .iter()
            .find(|s| {
                s.name == name
                    && s.attributes
                        .iter()
                        .any(|kv| kv.key.as_str() == "node" && kv.value.as_str().contains(node))
            })
            .unwrap_or_else(|| panic!("no {name} span of {node}: {spans:#?}"))
    };
    let client = spans.iter().find(|s| s.name == "client.operation").unwrap();
    let lobby_request = one("dms.request", "lobby-1");
    let gate_handle = one("dms.handle", "gate-1");
    let gate_request = one("dms.request", "gate-1");
    let battle_handle = one("dms.handle", "battle-1");
    let id = |span: &SpanData| span.span_context.span_id();

    let trace_id = client.span_context.trace_id();
    for span in &spans {
        assert_eq!(
            span.span_context.trace_id(),
            trace_id,
            "{} in another trace",
            span.name
        );
    }
    assert_eq!(
        client.parent_span_id,
        SpanId::INVALID,
        "the client's span is the root"
    );
    assert_eq!(lobby_request.parent_span_id, id(client));
    assert_eq!(gate_handle.parent_span_id, id(lobby_request));
    assert!(
        gate_handle.parent_span_is_remote,
        "dms.handle's parent is in another process"
    );
    assert_eq!(gate_request.parent_span_id, id(gate_handle));
    assert_eq!(battle_handle.parent_span_id, id(gate_request));
    assert!(battle_handle.parent_span_is_remote);
    for reply in spans.iter().filter(|s| s.name == "dms.reply") {
        assert!(
            [id(gate_handle), id(battle_handle)].contains(&reply.parent_span_id),
            "dms.reply under a dms.handle: {reply:#?}"
        );
    }

    // On the wire: the trace id, and the sending dms.request span as parent.
    let wire = |span: &SpanData| {
        TraceContext::new(
            u128::from_be_bytes(trace_id.to_bytes()),
            u64::from_be_bytes(id(span).to_bytes()),
            TraceContext::SAMPLED,
        )
    };
    assert_eq!(Some(at_gate), wire(lobby_request));
    assert_eq!(Some(at_battle), wire(gate_request));

    // The span fields: service paths and request ids.
    let field = |span: &SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.as_str().into_owned())
            .unwrap_or_else(|| panic!("no {key} on {}: {:#?}", span.name, span.attributes))
    };
    assert!(field(lobby_request, "cluster").ends_with("/Gate"));
    assert!(field(lobby_request, "instance").ends_with("/Gate/gate-1"));
    assert_eq!(
        field(lobby_request, "request_id"),
        field(gate_handle, "request_id")
    );
    assert!(field(gate_handle, "from").ends_with("/Lobby/lobby-1"));
    assert_eq!(field(gate_handle, "traceparent"), at_gate.to_string());
    assert_eq!(field(lobby_request, "traceparent"), at_gate.to_string());
    let _ = provider.shutdown();
}

/// Lobby reaches Trade only through a broker: Trade's handler sees the caller's trace
/// context (unchanged without an OpenTelemetry layer).
async fn routed_world(discovery: &MemoryDiscovery) -> (Node, Node, Node, mpsc::Receiver<Seen>) {
    let (seen_tx, seen) = mpsc::channel(16);
    let broker = Node::builder(instance("Broker", "broker-1"))
        .discovery(discovery.clone())
        .broker()
        .start()
        .await
        .unwrap();
    let trade = Node::builder(instance("Trade", "trade-1"))
        .discovery(discovery.clone())
        .target(cluster("Broker"))
        .start()
        .await
        .unwrap();
    let lobby = Node::builder(instance("Lobby", "lobby-r"))
        .discovery(discovery.clone())
        .target(cluster("Broker"))
        .routed_target(cluster("Trade"))
        .start()
        .await
        .unwrap();
    let server = trade.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let span = request.span();
            let seen = seen_tx.clone();
            async move {
                let body = request.body().clone();
                let _ = seen
                    .send(("trade".into(), request.trace_context(), body.clone()))
                    .await;
                let _ = request.reply(body).await;
            }
            .instrument(span)
            .await;
        }
    });
    lobby
        .wait_for_instances(&cluster("Trade"), 1, Duration::from_secs(10))
        .await
        .unwrap();
    (lobby, broker, trade, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_traceparent_crosses_a_broker() {
    let _serial = SERIAL.lock().await;
    let discovery = MemoryDiscovery::new();
    let (lobby, _broker, _trade, mut seen) = routed_world(&discovery).await;
    let trace: TraceContext = TRACEPARENT.parse().unwrap();
    let options = RequestOptions::new().trace(Some(trace));
    within(
        "a traced request through the broker",
        lobby.request_with(
            &cluster("Trade"),
            7u64,
            Multipart::from_frames(["a"]),
            options,
        ),
    )
    .await
    .unwrap();
    let (node, got, _) = next_seen(&mut seen).await;
    assert_eq!((node.as_str(), got), ("trade", Some(trace)));
}

/// With `otel`: `dms.request` at Lobby → `dms.forward` at the broker → `dms.handle` at
/// Trade, one trace, each the (remote) parent of the next.
#[cfg(feature = "otel")]
#[tokio::test(flavor = "current_thread")]
async fn otel_spans_follow_a_request_through_a_broker() {
    let _serial = SERIAL.lock().await;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use tracing_subscriber::layer::SubscriberExt;

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("dms-test")));
    let _default = tracing::subscriber::set_default(subscriber);

    let discovery = MemoryDiscovery::new();
    let (lobby, _broker, _trade, mut seen) = routed_world(&discovery).await;
    let client = tracing::info_span!("client.operation");
    within(
        "a request made in the client's span",
        lobby
            .request(&cluster("Trade"), 7u64, Multipart::from_frames(["x"]))
            .instrument(client.clone()),
    )
    .await
    .unwrap();
    drop(client);
    let (_, at_trade, _) = next_seen(&mut seen).await;
    let spans: Vec<SpanData> = within("the spans to be exported", async {
        loop {
            let spans = exporter.get_finished_spans().unwrap();
            let count = |name: &str| spans.iter().filter(|s| s.name == name).count();
            if count("dms.request") == 1 && count("dms.forward") == 1 && count("dms.handle") == 1 {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let one = |name: &str| spans.iter().find(|s| s.name == name).unwrap();
    let (request, forward, handle) = (one("dms.request"), one("dms.forward"), one("dms.handle"));
    let trace_id = request.span_context.trace_id();
    assert_eq!(forward.span_context.trace_id(), trace_id);
    assert_eq!(handle.span_context.trace_id(), trace_id);
    assert_eq!(forward.parent_span_id, request.span_context.span_id());
    assert!(forward.parent_span_is_remote);
    assert_eq!(handle.parent_span_id, forward.span_context.span_id());
    assert!(handle.parent_span_is_remote);
    // On the wire to Trade: the broker's span as the parent.
    assert_eq!(
        at_trade.unwrap().parent_id(),
        u64::from_be_bytes(forward.span_context.span_id().to_bytes())
    );
    let field = |span: &SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.as_str().into_owned())
    };
    assert_eq!(
        field(forward, "origin").as_deref(),
        Some(instance("Lobby", "lobby-r").as_str())
    );
    assert_eq!(
        field(forward, "destination").as_deref(),
        Some(instance("Trade", "trade-1").as_str())
    );
}

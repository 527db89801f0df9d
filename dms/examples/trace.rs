//! One request's trace across three nodes, with `tracing-opentelemetry` and an in-memory
//! exporter (no collector): Lobby asks Gate, whose handler asks Battle; the kernel's spans
//! `dms.request`, `dms.handle` and `dms.reply` carry the W3C traceparent over the wire
//! (docs/PROTOCOL.md §3.4) and come out as one span tree.
//!
//! ```text
//! cargo run -p dms --example trace --features otel
//! ```
#![allow(clippy::print_stdout)] // an example prints what it shows

use std::collections::HashMap;
use std::time::Duration;

use dms::{ClusterPath, MemoryDiscovery, Multipart, Node, RequestOptions};
use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

const WORLD: &str = "/demo/cn/android/w1/g1";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("dms-example")));
    tracing::subscriber::set_global_default(subscriber)?;

    // A build without TCP runs this over QUIC with development certificates.
    #[cfg(not(feature = "tcp"))]
    let dev = std::env::temp_dir().join(format!("dms-trace-example-{}", std::process::id()));
    let builder = |name: &str| -> Result<_, dms::PathError> {
        let node = Node::builder(format!("{WORLD}/{name}").parse()?);
        #[cfg(not(feature = "tcp"))]
        let node = node.quic_dev_certificates(&dev);
        Ok(node)
    };
    let cluster = |name: &str| format!("{WORLD}/{name}").parse::<ClusterPath>();
    let discovery = MemoryDiscovery::new();
    let battle = builder("Battle/battle-1")?
        .discovery(discovery.clone())
        .start()
        .await?;
    let gate = builder("Gate/gate-1")?
        .discovery(discovery.clone())
        .target(cluster("Battle")?)
        .start()
        .await?;
    let lobby = builder("Lobby/lobby-1")?
        .discovery(discovery.clone())
        .target(cluster("Gate")?)
        .start()
        .await?;

    let server = battle.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let span = request.span();
            async move {
                let body = request.body().clone();
                let _ = request.reply(body).await;
            }
            .instrument(span)
            .await;
        }
    });
    let (server, battle_cluster) = (gate.clone(), cluster("Battle")?);
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let span = request.span();
            let (node, battle) = (server.clone(), battle_cluster.clone());
            tokio::spawn(
                async move {
                    // Under `otel` the onward request is traced from the current span
                    // (this dms.handle); without it, pass the context on explicitly.
                    let options = RequestOptions::new().trace(request.trace_context());
                    let body = request.body().clone();
                    match node.request_with(&battle, 1u64, body, options).await {
                        Ok(reply) => drop(request.reply(reply.body).await),
                        Err(error) => drop(request.reply_error(300, error.to_string()).await),
                    }
                }
                .instrument(span),
            );
        }
    });
    gate.wait_for_instances(&cluster("Battle")?, 1, Duration::from_secs(10))
        .await?;
    lobby
        .wait_for_instances(&cluster("Gate")?, 1, Duration::from_secs(10))
        .await?;

    let reply = lobby
        .request(
            &cluster("Gate")?,
            "player-42",
            Multipart::from_frames(["hello"]),
        )
        .instrument(tracing::info_span!("lobby.join"))
        .await?;
    println!("reply from {}", reply.from);
    // The handlers' tasks end their spans right after replying.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let spans = exporter.get_finished_spans()?;
    let mut children: HashMap<SpanId, Vec<&SpanData>> = HashMap::new();
    for span in &spans {
        children.entry(span.parent_span_id).or_default().push(span);
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_time);
    }
    if let Some(root) = spans.first() {
        println!("trace {}", root.span_context.trace_id());
    }
    for root in children.get(&SpanId::INVALID).into_iter().flatten() {
        print_tree(root, &children, 0);
    }
    let _ = provider.shutdown();
    Ok(())
}

fn print_tree(span: &SpanData, children: &HashMap<SpanId, Vec<&SpanData>>, depth: usize) {
    let fields: Vec<String> = span
        .attributes
        .iter()
        .filter(|kv| {
            !kv.key.as_str().starts_with("code.") && !kv.key.as_str().starts_with("thread.")
        })
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect();
    println!(
        "{:indent$}{} [{}{}] {}",
        "",
        span.name,
        span.span_context.span_id(),
        if span.parent_span_is_remote {
            ", remote parent"
        } else {
            ""
        },
        fields.join(" "),
        indent = depth * 2
    );
    for child in children
        .get(&span.span_context.span_id())
        .into_iter()
        .flatten()
    {
        print_tree(child, children, depth + 1);
    }
}

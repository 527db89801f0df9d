//! `dms node`: runs one service instance until SIGINT/SIGTERM.

use std::io::Write;
use std::time::Duration;

use dms::{ClusterPath, Discovery, Endpoint, Multipart, Node, ServicePath};

use crate::discovery_url::{DiscoveryUrl, with_discovery};
use crate::failure::Failure;
use crate::stats::serve::MetricsEndpoint;
use crate::transport_args::TransportArgs;

/// Options of `dms node`.
#[derive(Debug, clap::Args)]
pub(crate) struct NodeArgs {
    /// Discovery: etcd://host:port[,host:port...] (memory:// is in-process only).
    #[arg(long)]
    discovery: DiscoveryUrl,
    /// This instance's service path: /App/Area/Platform/World/Group/Cluster/Instance.
    #[arg(long)]
    service: ServicePath,
    /// Endpoint to accept links on (repeatable, several schemes at once: tcp://,
    /// shm://NAME for processes of this host (published as shm://NAME?host=KEY; NAME must
    /// be unique on the host), and quic:// with --tls-* or --tls-dev; port 0 picks a
    /// free port).
    #[arg(long, default_value = "tcp://127.0.0.1:0")]
    bind: Vec<Endpoint>,
    #[command(flatten)]
    transport: TransportArgs,
    /// Cluster path this instance sends to (repeatable).
    #[arg(long)]
    target: Vec<ClusterPath>,
    /// Answer every request with its payload frames plus one frame holding this
    /// instance's service path.
    #[arg(long)]
    echo: bool,
    /// Heartbeat interval in ms this instance drives as requester (dead after 3 silent).
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Allow only these clusters to talk to this instance (repeatable; default: all):
    /// each is the ACL rule `allow * from CLUSTER`.
    #[arg(long)]
    allow: Vec<ClusterPath>,
    /// ACL policy file (one rule a line: `allow|deny OPS from PRINCIPAL [to SERVICE]`,
    /// see the README). Added to the --allow rules; a file that is missing or does not
    /// parse stops the start with an error naming the line and the field.
    #[arg(long, value_name = "FILE")]
    acl: Option<std::path::PathBuf>,
    /// Registration lease TTL in seconds (how long a killed node stays listed).
    #[arg(long, default_value_t = 5)]
    lease_ttl_s: u64,
    /// Serve this node's figures in the Prometheus text format over HTTP on this address
    /// (e.g. 127.0.0.1:9464; port 0 picks a free port); the bound address is printed as
    /// `metrics HOST:PORT`. Read them with `dms stats HOST:PORT`.
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<std::net::SocketAddr>,
}

pub(crate) async fn run(args: NodeArgs) -> Result<(), Failure> {
    // The recorder goes in first: the kernel (and the discovery client) register their
    // figures when they are built, with the recorder installed then.
    let exporter = match args.metrics {
        Some(addr) => {
            let endpoint = MetricsEndpoint::bind(addr)
                .await
                .map_err(|e| Failure::Other(e.to_string()))?;
            Some((endpoint.local_addr(), endpoint.spawn()))
        }
        None => None,
    };
    let metrics = exporter.as_ref().map(|(addr, _)| *addr);
    let url = args.discovery.clone();
    let result = with_discovery!(&url, |d| serve(d, &url, args, metrics));
    if let Some((_, task)) = exporter {
        task.abort();
    }
    result
}

async fn serve<D: Discovery>(
    discovery: D,
    url: &DiscoveryUrl,
    args: NodeArgs,
    metrics: Option<std::net::SocketAddr>,
) -> Result<(), Failure> {
    let builder = Node::builder(args.service.clone()).discovery(discovery);
    let mut builder = args
        .transport
        .apply(builder)?
        .heartbeat(Duration::from_millis(args.heartbeat_ms.max(10)), 3)
        .lease_ttl(Duration::from_secs(args.lease_ttl_s.max(1)));
    for endpoint in args.bind {
        builder = builder.bind(endpoint);
    }
    for target in args.target {
        builder = builder.target(target);
    }
    for cluster in args.allow {
        builder = builder.allow(cluster);
    }
    if let Some(file) = args.acl {
        builder = builder.acl_file(file);
    }
    let node = builder
        .start()
        .await
        .map_err(|error| crate::discovery_url::start_failure(url, error))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "service {}", node.path());
        for endpoint in node.endpoints() {
            let _ = writeln!(out, "endpoint {endpoint}");
        }
        if let Some(metrics) = metrics {
            let _ = writeln!(out, "metrics {metrics}");
        }
        let _ = writeln!(out, "bucket {}", node.bucket());
        let _ = out.flush();
    }
    let server = node.clone();
    let echo = args.echo;
    let handler = tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            if echo {
                let mut body: Multipart = request.body().clone();
                body.push(server.path().to_string());
                let _ = request.reply(body).await;
            }
            // Without --echo a request is dropped, which answers it with NO_HANDLER.
        }
    });
    wait_for_signal().await;
    node.shutdown().await;
    handler.abort();
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

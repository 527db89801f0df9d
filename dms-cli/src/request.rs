//! `dms request` and `dms broadcast`: a short-lived requester instance.

use std::time::{Duration, Instant};

use dms::{ClusterPath, Discovery, Multipart, Node, ServicePath};

use crate::discovery_url::{DiscoveryUrl, with_discovery};
use crate::failure::Failure;
use crate::transport_args::TransportArgs;

/// Options of `dms request`.
#[derive(Debug, clap::Args)]
pub(crate) struct RequestArgs {
    /// Discovery: etcd://host:port[,host:port...].
    #[arg(long)]
    discovery: DiscoveryUrl,
    /// A cluster path (one instance picked by key) or an instance path.
    #[arg(long)]
    to: String,
    /// Dispatch key (e.g. a player id): the same key reaches the same instance. Default:
    /// the request's index.
    #[arg(long)]
    key: Option<String>,
    /// Payload (one UTF-8 frame).
    #[arg(long, default_value = "")]
    data: String,
    /// Number of requests, one after the other.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Timeout of each request, in ms.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Time to wait for instances to be discovered and probed, in ms.
    #[arg(long, default_value_t = 5000)]
    discover_ms: u64,
    /// Pause between requests, in ms.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// Heartbeat interval of this requester, in ms.
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// One JSON object per line: {"instance","payload","rtt_us","frames"} or {"error",...}.
    #[arg(long)]
    json: bool,
    /// Reach --to through brokers (multi-hop routing): this requester dials the
    /// instances of this cluster (a broker cluster; repeatable) and never --to's, which it
    /// treats as a routed target (`dms node --routed-target`): requests go hop by hop
    /// along the routing table. See `dms route --from ... --to ...`.
    #[arg(long, value_name = "BROKER_CLUSTER")]
    via: Vec<ClusterPath>,
    #[command(flatten)]
    transport: TransportArgs,
}

/// Options of `dms broadcast`.
#[derive(Debug, clap::Args)]
pub(crate) struct BroadcastArgs {
    /// Discovery: etcd://host:port[,host:port...].
    #[arg(long)]
    discovery: DiscoveryUrl,
    /// The cluster path: every live instance gets the message.
    #[arg(long)]
    to: ClusterPath,
    /// Payload (one UTF-8 frame).
    #[arg(long, default_value = "")]
    data: String,
    /// Time to wait for instances to be discovered and probed, in ms.
    #[arg(long, default_value_t = 5000)]
    discover_ms: u64,
    /// One JSON object: {"reached": [...]}.
    #[arg(long)]
    json: bool,
    /// Reach --to through brokers: dial this (broker) cluster only (repeatable), as
    /// `dms request --via`.
    #[arg(long, value_name = "BROKER_CLUSTER")]
    via: Vec<ClusterPath>,
    #[command(flatten)]
    transport: TransportArgs,
}

/// Where a request goes.
enum To {
    Cluster(ClusterPath),
    Instance(ServicePath),
}

impl To {
    fn parse(text: &str) -> Result<Self, Failure> {
        if let Ok(cluster) = text.parse::<ClusterPath>() {
            return Ok(Self::Cluster(cluster));
        }
        match text.parse::<ServicePath>() {
            Ok(instance) => Ok(Self::Instance(instance)),
            Err(error) => Err(Failure::Usage(format!(
                "--to {text:?} is neither a cluster path (6 segments) nor an instance path (7): {error}"
            ))),
        }
    }

    fn cluster(&self) -> ClusterPath {
        match self {
            Self::Cluster(c) => c.clone(),
            Self::Instance(i) => i.cluster(),
        }
    }
}

/// A requester instance in cluster `dms-cli` of the target's group; with `via`, it dials
/// those (broker) clusters and reaches `cluster` through them.
async fn requester<D: Discovery>(
    discovery: D,
    url: &DiscoveryUrl,
    cluster: &ClusterPath,
    via: &[ClusterPath],
    heartbeat: Duration,
    settle: Duration,
    transport: &TransportArgs,
) -> Result<Node, Failure> {
    if via.contains(cluster) {
        return Err(Failure::Usage(format!(
            "--via {cluster} is --to's own cluster: it is dialled or routed, not both"
        )));
    }
    let group = cluster.as_str().rsplit_once('/').map_or("", |(g, _)| g);
    // With a production certificate the requester is the instance it names.
    let path: ServicePath = match transport.certified_path()? {
        Some(path) => path,
        None => format!(
            "{group}/dms-cli/cli-{}-{:08x}",
            std::process::id(),
            fastrand_u32()
        )
        .parse()
        .map_err(|e| Failure::Usage(format!("cannot name the requester: {e}")))?,
    };
    let mut builder = transport
        .apply(Node::builder(path))?
        .discovery(discovery)
        .heartbeat(heartbeat, 3)
        .lease_ttl(Duration::from_secs(5));
    if via.is_empty() {
        builder = builder.target(cluster.clone());
    } else {
        for broker in via {
            builder = builder.target(broker.clone());
        }
        builder = builder.routed_target(cluster.clone());
    }
    let node = builder
        .start()
        .await
        .map_err(|error| crate::discovery_url::start_failure(url, error))?;
    let instances = if via.is_empty() {
        node.settle(cluster, settle).await
    } else {
        settle_routed(&node, cluster, settle).await
    };
    if !via.is_empty() && !instances.iter().any(dms::InstanceStatus::is_ready) {
        node.shutdown().await;
        let brokers: Vec<String> = via.iter().map(ToString::to_string).collect();
        return Err(Failure::NoInstance(format!(
            "no instance of {cluster} is reachable through {} ({} registered); \
             `dms ls --routes` shows the links, `dms route --from ... --to ...` why",
            brokers.join(", "),
            instances.len()
        )));
    }
    if !instances.iter().any(dms::InstanceStatus::is_ready) {
        node.shutdown().await;
        // TLS-only instances (quic://, tcp+tls://) cannot be dialled without TLS
        // credentials: say so.
        let tls_only = instances.iter().find(|i| {
            !i.endpoints.is_empty()
                && i.endpoints
                    .iter()
                    .all(|e| e.starts_with("quic://") || e.starts_with("tcp+tls://"))
        });
        let hint = match tls_only {
            Some(instance) => {
                let mut schemes: Vec<&str> = instance
                    .endpoints
                    .iter()
                    .filter_map(|e| e.split_once("://").map(|(scheme, _)| scheme))
                    .collect();
                schemes.sort_unstable();
                schemes.dedup();
                let schemes: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
                format!(
                    "; they publish only {} endpoints: dialling them needs TLS credentials \
                     from their CA (--tls-dev DIR, or --tls-cert/--tls-key/--tls-ca)",
                    schemes.join(" and ")
                )
            }
            None if instances.iter().any(shm_elsewhere) => {
                "; they publish only shm:// endpoints of another host (shared memory joins \
                 processes of one host only)"
                    .to_owned()
            }
            None => String::new(),
        };
        return Err(Failure::NoInstance(format!(
            "no live instance of {cluster} ({} registered){hint}",
            instances.len()
        )));
    }
    Ok(node)
}

/// Waits until every registered instance of the routed target `cluster` is reachable
/// through the brokers (the routing table reaches it), or `timeout` passes; returns the
/// instances as they are then.
async fn settle_routed(
    node: &Node,
    cluster: &ClusterPath,
    timeout: Duration,
) -> Vec<dms::InstanceStatus> {
    let mut events = node.events();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let instances = node.instances(cluster).await;
        if !instances.is_empty() && instances.iter().all(dms::InstanceStatus::is_ready) {
            return instances;
        }
        if tokio::time::Instant::now() >= deadline {
            return instances;
        }
        // Woken by any event (routes changed, a broker came up), or every 50 ms.
        let tick = tokio::time::Instant::now() + Duration::from_millis(50);
        if let Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) =
            tokio::time::timeout_at(deadline.min(tick), events.recv()).await
        {
            return instances;
        }
    }
}

/// Whether an instance published shared-memory endpoints only, none of this host.
fn shm_elsewhere(instance: &dms::InstanceStatus) -> bool {
    !instance.endpoints.is_empty()
        && instance.endpoints.iter().all(|e| {
            e.parse::<dms::Endpoint>()
                .is_ok_and(|e| e.scheme() == dms::shm::SCHEME && !dms::shm::is_local(&e))
        })
}

fn fastrand_u32() -> u32 {
    // Unique enough for a requester's name: time and pid mixed.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}

pub(crate) async fn run(args: RequestArgs) -> Result<(), Failure> {
    let url = args.discovery.clone();
    with_discovery!(&url, |d| requests(d, &url, &args))
}

async fn requests<D: Discovery>(
    discovery: D,
    url: &DiscoveryUrl,
    args: &RequestArgs,
) -> Result<(), Failure> {
    let to = To::parse(&args.to)?;
    let node = requester(
        discovery,
        url,
        &to.cluster(),
        &args.via,
        Duration::from_millis(args.heartbeat_ms.max(10)),
        Duration::from_millis(args.discover_ms),
        &args.transport,
    )
    .await?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut last_failure = None;
    for i in 0..args.count {
        let body = Multipart::from_frames([args.data.clone()]);
        let start = Instant::now();
        let result = match &to {
            To::Cluster(cluster) => {
                let key: dms::DispatchKey = match &args.key {
                    Some(key) => key.as_str().into(),
                    None => i.into(),
                };
                node.request_timeout(cluster, key, body, timeout).await
            }
            To::Instance(instance) => node.request_instance_timeout(instance, body, timeout).await,
        };
        let rtt = start.elapsed();
        match result {
            Ok(reply) => {
                let payload = reply
                    .body
                    .frames()
                    .first()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .unwrap_or_default();
                if args.json {
                    let line = serde_json::json!({
                        "instance": reply.from.to_string(),
                        "payload": payload,
                        "rtt_us": rtt.as_micros() as u64,
                        "frames": reply.body.len(),
                        "seq": i,
                    });
                    crate::print_line(&line.to_string());
                } else {
                    crate::print_line(&format!(
                        "{} {payload} ({} us)",
                        reply.from,
                        rtt.as_micros()
                    ));
                }
            }
            Err(error) => {
                let failure = Failure::from(error);
                if args.json {
                    let line = serde_json::json!({"error": failure.to_string(), "kind": failure.kind(), "seq": i});
                    crate::print_line(&line.to_string());
                } else {
                    eprintln!("dms: request {i} failed: {failure}");
                }
                last_failure = Some(failure);
            }
        }
        if args.interval_ms > 0 && i + 1 < args.count {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
    }
    node.shutdown().await;
    match last_failure {
        // The failures were printed already: exit with the last one's code, say nothing more.
        Some(failure) => Err(Failure::Reported(Box::new(failure))),
        None => Ok(()),
    }
}

pub(crate) async fn broadcast(args: BroadcastArgs) -> Result<(), Failure> {
    let url = args.discovery.clone();
    with_discovery!(&url, |d| broadcast_with(d, &url, &args))
}

async fn broadcast_with<D: Discovery>(
    discovery: D,
    url: &DiscoveryUrl,
    args: &BroadcastArgs,
) -> Result<(), Failure> {
    let node = requester(
        discovery,
        url,
        &args.to,
        &args.via,
        Duration::from_secs(1),
        Duration::from_millis(args.discover_ms),
        &args.transport,
    )
    .await?;
    let result = node
        .broadcast(&args.to, Multipart::from_frames([args.data.clone()]))
        .await;
    node.shutdown().await;
    let reached = result?;
    if args.json {
        let names: Vec<String> = reached.iter().map(ToString::to_string).collect();
        crate::print_line(&serde_json::json!({"reached": names}).to_string());
    } else {
        for path in &reached {
            crate::print_line(&format!("sent to {path}"));
        }
    }
    Ok(())
}

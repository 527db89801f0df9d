//! `dms node`: runs one service instance until SIGINT/SIGTERM.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use dms::config::{MIN_HEARTBEAT, NodeConfig, TlsSection};
use dms::{ClusterPath, Discovery, Endpoint, Multipart, NodeBuilder, ServicePath};

use crate::discovery_url::{DiscoveryUrl, with_discovery};
use crate::failure::Failure;
use crate::stats::serve::MetricsEndpoint;

/// Options of `dms node`. With `--config FILE` the options come from the file (see
/// docs/node.example.toml), then from the DMS_* environment variables, then from the
/// command line: file < environment < command line (a list option replaces the list).
#[derive(Debug, clap::Args)]
pub(crate) struct NodeArgs {
    /// Node configuration file (TOML: service, discovery, bind, targets, heartbeat, acl,
    /// tls, metrics...; see docs/node.example.toml and `dms config check FILE`). DMS_*
    /// variables override it (DMS_SERVICE, DMS_BIND, DMS_HEARTBEAT_INTERVAL_MS...), and
    /// the options below override both.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Discovery: etcd://host:port[,host:port...] (memory:// is in-process only).
    /// Required here, as `discovery` in --config or as DMS_DISCOVERY.
    #[arg(long)]
    discovery: Option<DiscoveryUrl>,
    /// This instance's service path: /App/Area/Platform/World/Group/Cluster/Instance.
    /// Required here, as `service` in --config or as DMS_SERVICE.
    #[arg(long)]
    service: Option<ServicePath>,
    /// Endpoint to accept links on (repeatable, several schemes at once: tcp://,
    /// shm://NAME for processes of this host (published as shm://NAME?host=KEY; NAME must
    /// be unique on the host), and quic:// with --tls-* or --tls-dev; port 0 picks a
    /// free port). Default: tcp://127.0.0.1:0.
    #[arg(long)]
    bind: Vec<Endpoint>,
    /// PEM certificate (chain) of this instance, naming its service path as a URI SAN
    /// `dms:/App/...`; with --tls-key and --tls-ca it turns QUIC and TCP+TLS on (bind
    /// quic:// or tcp+tls:// endpoints, dial peers that publish them).
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) that peers' certificates must chain to.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// DEVELOPMENT ONLY, never in production: turns QUIC and TCP+TLS on with a
    /// certificate issued at start by the development CA kept in this directory (created
    /// if missing; see `dms certs dev`). Every node given the same directory trusts the
    /// others.
    #[arg(long, conflicts_with = "tls_cert")]
    tls_dev: Option<PathBuf>,
    /// Schemes this node dials, most preferred first, comma-separated (default
    /// shm,quic,tcp+tls,tcp; a scheme not listed is never dialled).
    #[arg(long, value_delimiter = ',')]
    prefer: Vec<String>,
    /// Cluster path this instance sends to (repeatable).
    #[arg(long)]
    target: Vec<ClusterPath>,
    /// Cluster path this instance sends to only through brokers (repeatable): watched,
    /// never dialled; requests to it go hop by hop along the routing table. The node must
    /// reach a broker, usually with --target BROKER_CLUSTER. See `dms ls --routes` and
    /// `dms route`.
    #[arg(long, value_name = "CLUSTER")]
    routed_target: Vec<ClusterPath>,
    /// Run as a broker: forward routed messages for others (announced in READY and in
    /// this instance's link record, so routes may pass through it). A broker has no
    /// business logic: requests addressed to the broker itself are handled as without
    /// --broker (answered by --echo, otherwise refused with NO_HANDLER). Services and
    /// requesters reach it with --target BROKER_CLUSTER; two broker clusters are joined
    /// by one of them targeting the other.
    #[arg(long)]
    broker: bool,
    /// What this instance's links cost in the routing table (at least 1; default 1): a
    /// link is used at the larger of the costs its two ends publish.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    link_cost: Option<u32>,
    /// Most links a routed message this instance sends may cross (1 to 255; default 16).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..))]
    hop_limit: Option<u8>,
    /// Answer every request with its payload frames plus one frame holding this
    /// instance's service path.
    #[arg(long)]
    echo: bool,
    /// With --echo, answer each request this many ms after it came, each on its own
    /// task (default 0: at once): to try timeouts, failover and shutdowns with requests
    /// in flight.
    #[arg(long, value_name = "MS", requires = "echo")]
    echo_delay_ms: Option<u64>,
    /// Heartbeat interval in ms this instance drives as requester (dead after 3 silent;
    /// default 1000).
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// Allow only these clusters to talk to this instance (repeatable; default: all):
    /// each is the ACL rule `allow * from CLUSTER`.
    #[arg(long)]
    allow: Vec<ClusterPath>,
    /// ACL policy file (one rule a line: `allow|deny OPS from PRINCIPAL [to SERVICE]`,
    /// see the README). Added to the --allow rules; a file that is missing or does not
    /// parse stops the start with an error naming the line and the field.
    #[arg(long, value_name = "FILE")]
    acl: Option<PathBuf>,
    /// Registration lease TTL in seconds (how long a killed node stays listed; default 5).
    #[arg(long)]
    lease_ttl_s: Option<u64>,
    /// Serve this node's figures in the Prometheus text format over HTTP on this address
    /// (e.g. 127.0.0.1:9464; port 0 picks a free port); the bound address is printed as
    /// `metrics HOST:PORT`. Read them with `dms stats HOST:PORT`.
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<std::net::SocketAddr>,
}

impl NodeArgs {
    /// The configuration in effect: the file, the environment over it, these options
    /// over both, and the defaults of `dms node` for what none of them gives.
    fn configuration(&self) -> Result<(NodeConfig, DiscoveryUrl), Failure> {
        let mut config = crate::config::load(self.config.as_deref())?;
        if let Some(service) = &self.service {
            config.service = Some(service.clone());
        }
        if !self.bind.is_empty() {
            config.bind = self.bind.clone();
        }
        if config.bind.is_empty() {
            config.bind = vec![
                DEFAULT_BIND
                    .parse()
                    .map_err(|e| Failure::Other(format!("{e}")))?,
            ];
        }
        if let (Some(cert), Some(key), Some(ca)) = (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            config.tls = TlsSection::default();
            config.tls.cert = Some(cert.clone());
            config.tls.key = Some(key.clone());
            config.tls.ca = Some(ca.clone());
        } else if let Some(dir) = &self.tls_dev {
            config.tls = TlsSection::default();
            config.tls.dev = Some(dir.clone());
        }
        if !self.prefer.is_empty() {
            config.prefer = self.prefer.clone();
        }
        if !self.target.is_empty() {
            config.targets = self.target.clone();
        }
        if !self.routed_target.is_empty() {
            config.routed_targets = self.routed_target.clone();
        }
        if self.broker {
            config.broker = true;
        }
        if let Some(cost) = self.link_cost {
            config.link_cost = Some(cost);
        }
        if let Some(hops) = self.hop_limit {
            config.hop_limit = Some(hops);
        }
        if let Some(ms) = self.heartbeat_ms {
            config.heartbeat.interval = Some(Duration::from_millis(ms).max(MIN_HEARTBEAT));
        }
        if !self.allow.is_empty() {
            config.acl.allow = self.allow.clone();
        }
        if let Some(file) = &self.acl {
            config.acl.file = Some(file.clone());
        }
        if let Some(ttl) = self.lease_ttl_s {
            config.lease_ttl = Some(Duration::from_secs(ttl.max(1)));
        }
        config.lease_ttl = config.lease_ttl.or(Some(DEFAULT_LEASE_TTL));
        if let Some(metrics) = self.metrics {
            config.metrics = Some(metrics);
        }
        if config.service.is_none() {
            return Err(Failure::Usage(
                "no service path: give --service, `service` in --config FILE or DMS_SERVICE".into(),
            ));
        }
        let url = match (&self.discovery, &config.discovery) {
            (Some(url), _) => url.clone(),
            (None, Some(url)) => url.parse().map_err(Failure::Usage)?,
            (None, None) => {
                return Err(Failure::Usage(
                    "no discovery: give --discovery, `discovery` in --config FILE or DMS_DISCOVERY"
                        .into(),
                ));
            }
        };
        config.discovery = Some(url.to_string());
        config
            .validate()
            .map_err(|e| Failure::Usage(e.to_string()))?;
        Ok((config, url))
    }
}

/// What `dms node` binds when nothing says.
const DEFAULT_BIND: &str = "tcp://127.0.0.1:0";
/// The registration lease of `dms node` when nothing says.
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

pub(crate) async fn run(args: NodeArgs) -> Result<(), Failure> {
    let (config, url) = args.configuration()?;
    // The recorder goes in first: the kernel (and the discovery client) register their
    // figures when they are built, with the recorder installed then.
    let exporter = match config.metrics {
        Some(addr) => {
            let endpoint = MetricsEndpoint::bind(addr)
                .await
                .map_err(|e| Failure::Other(e.to_string()))?;
            Some((endpoint.local_addr(), endpoint.spawn()))
        }
        None => None,
    };
    let metrics = exporter.as_ref().map(|(addr, _)| *addr);
    let echo = args
        .echo
        .then(|| Duration::from_millis(args.echo_delay_ms.unwrap_or(0)));
    let result = with_discovery!(&url, |d| serve(d, &url, &config, echo, metrics));
    if let Some((_, task)) = exporter {
        task.abort();
    }
    result
}

async fn serve<D: Discovery>(
    discovery: D,
    url: &DiscoveryUrl,
    config: &NodeConfig,
    echo: Option<Duration>,
    metrics: Option<std::net::SocketAddr>,
) -> Result<(), Failure> {
    let builder = NodeBuilder::from_config(config)
        .map_err(|e| Failure::Usage(e.to_string()))?
        .discovery(discovery);
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
        if config.broker {
            let _ = writeln!(out, "broker forwards routed messages");
        }
        for cluster in &config.routed_targets {
            let _ = writeln!(out, "routed-target {cluster}");
        }
        let _ = writeln!(out, "bucket {}", node.bucket());
        let _ = out.flush();
    }
    let server = node.clone();
    let handler = tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            // Without --echo a request is dropped, which answers it with NO_HANDLER.
            let Some(delay) = echo else { continue };
            let mut body: Multipart = request.body().clone();
            body.push(server.path().to_string());
            if delay.is_zero() {
                let _ = request.reply(body).await;
            } else {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = request.reply(body).await;
                });
            }
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

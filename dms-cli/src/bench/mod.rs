//! `dms bench`: measures DMS on this machine and prints lines in the schema of
//! `shared/peers` (`peer`, `transport`, `pattern`, `metric`, `msg_size`, `value`, `n`,
//! `frames`), so that its numbers compare with libzmq's and raw sockets' in one run.
//! `--plot DIR` also draws them as SVG charts.

mod broadcast;
mod discovery;
mod peers;
mod plot;
mod report;
mod request;
mod transport;
mod worker;

use std::path::PathBuf;
use std::time::Duration;

pub(crate) use report::Line;

use crate::discovery_url::{DiscoveryUrl, with_discovery};
use crate::failure::Failure;
use worker::WorkerPeer;

/// Which measurements to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// `MessageMiddleware` alone between two peers: one-way throughput and round trips.
    Transport,
    /// Kernel request/reply between two nodes: latency and throughput in flight.
    Request,
    /// Kernel broadcast from one node to a cluster of 8: round latency and broadcasts/s.
    Broadcast,
    /// Registration churn on discovery (see --discovery): registrations/s, watch latency.
    Discovery,
    /// Everything.
    All,
}

impl Scenario {
    /// Whether running `self` runs `scenario`.
    fn runs(self, scenario: Self) -> bool {
        self == scenario || self == Self::All
    }
}

/// Options of `dms bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// Seconds each measurement runs (throughput windows and round-trip loops).
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Run both sides of the transport and request scenarios in this process (default:
    /// the other side in a second process).
    #[arg(long)]
    in_process: bool,
    /// One JSON object per line (the schema of shared/peers) instead of a table.
    #[arg(long)]
    json: bool,
    /// Discovery backend of the discovery scenario: memory:// or
    /// etcd://host:port[,host:port...] (with the `etcd` feature). The other scenarios
    /// always use the in-process one.
    #[arg(long, value_name = "URL", default_value = "memory://")]
    discovery: DiscoveryUrl,
    /// Also write SVG charts into DIR (created if missing): latency.svg (latency
    /// percentiles) and throughput.svg (per second, by message size).
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// Also run the transport scenario on the peers DMS is judged against, in this run:
    /// raw tokio TCP, and libzmq ROUTER/DEALER when built with `--features zmq` (needs
    /// libzmq3-dev); then print DMS / peer for every metric both measured.
    #[arg(long)]
    peers: bool,
    /// The medium of the transport scenario (default: every medium built in, TCP then
    /// QUIC).
    #[arg(long, value_enum)]
    transport: Option<transport::Medium>,
    /// Tokio worker threads of each side (0: a current-thread runtime, the default: a
    /// side's hot path then costs no cross-thread wake-up). Try 2 to see what a
    /// multi-thread runtime costs on this machine.
    #[arg(long, value_name = "N", default_value_t = 0)]
    worker_threads: usize,
}

impl BenchArgs {
    /// Worker threads of the runtime to run on (0: current thread).
    pub(crate) fn worker_threads(&self) -> usize {
        self.worker_threads
    }
}

/// Options of the hidden worker a transport bench runs in a second process.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    /// Which side to serve.
    #[arg(long, value_enum, default_value_t = WorkerPeer::Dms)]
    peer: WorkerPeer,
    /// Tokio worker threads (0: current thread), as the bench's.
    #[arg(long, value_name = "N", default_value_t = 0)]
    worker_threads: usize,
}

impl WorkerArgs {
    /// Worker threads of the runtime to run on (0: current thread).
    pub(crate) fn worker_threads(&self) -> usize {
        self.worker_threads
    }
}

/// A bench failure: what failed and why.
fn fail(what: &str, error: impl std::fmt::Display) -> Failure {
    Failure::Other(format!("bench {what}: {error}"))
}

/// `dms bench`: runs the scenarios asked for, then prints the table and draws the charts.
pub(crate) async fn run(args: BenchArgs) -> Result<(), Failure> {
    if let Some(dir) = &args.plot {
        plot::prepare(dir)?;
    }
    let window = Duration::from_secs_f64(args.duration.clamp(0.05, 600.0));
    let mut lines = Vec::new();
    let mut sink = |line| emit(&args, line, &mut lines);
    if args.scenario.runs(Scenario::Transport) {
        let media = match args.transport {
            Some(medium) => vec![medium],
            None => transport::Medium::ALL.to_vec(),
        };
        for medium in media {
            transport::run(medium, window, args.in_process, &mut sink).await?;
        }
        if args.peers {
            peers::run(window, &mut sink).await?;
        }
    }
    if args.scenario.runs(Scenario::Request) {
        request::run(window, args.in_process, &mut sink).await?;
    }
    if args.scenario.runs(Scenario::Broadcast) {
        broadcast::run(window, &mut sink).await?;
    }
    if args.scenario.runs(Scenario::Discovery) {
        let backend = match &args.discovery {
            DiscoveryUrl::Memory => "memory",
            DiscoveryUrl::Etcd(_) => "etcd",
        };
        with_discovery!(&args.discovery, |d| discovery::run(
            d, backend, window, &mut sink
        ))?;
    }
    if !args.json {
        report::table(&lines);
    }
    if args.peers {
        // On stderr with --json: stdout stays one JSON object per line.
        for row in peers::ratios(&lines) {
            if args.json {
                eprintln!("{row}");
            } else {
                crate::print_line(&row);
            }
        }
    }
    if let Some(dir) = &args.plot {
        for path in plot::write(dir, &lines)? {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// Prints a JSON line at once, or keeps the line for the table.
fn emit(args: &BenchArgs, line: Line, lines: &mut Vec<Line>) {
    if args.json {
        crate::print_line(&line.to_json());
    } else {
        eprintln!("  {}", line.summary());
    }
    lines.push(line);
}

/// `dms bench-worker`: the transport scenario's second process.
pub(crate) async fn worker(args: WorkerArgs) -> Result<(), Failure> {
    match args.peer {
        WorkerPeer::Dms => transport::worker_process(transport::Medium::Tcp).await,
        WorkerPeer::DmsQuic => transport::worker_process(transport::Medium::Quic).await,
        WorkerPeer::DmsNode => request::worker_process().await,
        peer => peers::worker(peer).await,
    }
}

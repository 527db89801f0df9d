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
mod route;
mod transport;
mod worker;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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
    /// Kernel request/reply between two nodes: latency, throughput with 1, 16 and 256 in
    /// flight (closed loop), then latency under load: requests issued at a fixed rate of
    /// half the 256-in-flight throughput, timed from their scheduled send (open loop,
    /// `request-reply-open-loop`).
    Request,
    /// Kernel broadcast from one node to a cluster of 8: round latency and broadcasts/s.
    Broadcast,
    /// Registration churn on discovery (see --discovery): registrations/s, watch latency.
    Discovery,
    /// Multi-hop forwarding through brokers, all nodes in this process: request/reply
    /// latency direct, through 1 broker and through a chain of 2 (`route-rr-*`), and
    /// one-way notifications/s direct and through 1 broker (`route-oneway-*`).
    Route,
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
    /// percentiles), throughput.svg (per second, by message size) and latency-cdf.svg (the
    /// distribution of each 64-byte TCP round trip, one curve per runtime).
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// Also run the transport scenario on the peers DMS is judged against, in this run:
    /// raw tokio TCP (`raw-tokio-tcp`, its round trips on every runtime of
    /// --worker-threads), and libzmq ROUTER/DEALER when built with `--features zmq` (needs
    /// libzmq3-dev); then print DMS / peer for every metric both measured on the same
    /// runtime.
    #[arg(long)]
    peers: bool,
    /// The medium of the transport scenario (default: every medium built in, TCP, QUIC,
    /// then shared memory: with parking readers, then with spinning ones, whose patterns
    /// end with `-spin`).
    #[arg(long, value_enum)]
    transport: Option<transport::Medium>,
    /// The runtimes to measure on, as a comma-separated list of tokio worker threads
    /// (0: a current-thread runtime; default: that one and a 2-worker multi-thread one).
    /// The transport scenario over TCP, the request scenario and the raw tokio peer's
    /// round trips run once on each, fewest workers first, both sides on a fresh runtime
    /// of that kind; the patterns of lines measured on N workers end with `-mtN` (e.g.
    /// `router-dealer-mt2`) and come after every current-thread line of their scenario.
    /// The other measurements (QUIC, shared memory, the raw tokio peer's throughput,
    /// broadcast, discovery, route) run on the runtime with the fewest workers only. `0`
    /// measures only on a current-thread runtime (a side's hot path then costs no
    /// cross-thread wake-up).
    #[arg(
        long,
        value_name = "N,...",
        value_delimiter = ',',
        default_value = "0,2"
    )]
    worker_threads: Vec<usize>,
}

impl BenchArgs {
    /// The runtimes to measure on, by worker threads (0: current thread), fewest first:
    /// the current-thread lines of a scenario come before its `-mtN` lines.
    fn flavours(&self) -> Result<Vec<usize>, Failure> {
        let mut flavours = self.worker_threads.clone();
        flavours.sort_unstable();
        flavours.dedup();
        if flavours.is_empty() {
            return Err(Failure::Usage(
                "--worker-threads: at least one runtime (0: current thread)".into(),
            ));
        }
        Ok(flavours)
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
    let flavours = args.flavours()?;
    let first = flavours[0];
    if let Some(dir) = &args.plot {
        plot::prepare(dir)?;
    }
    let window = Duration::from_secs_f64(args.duration.clamp(0.05, 600.0));
    let in_process = args.in_process;
    let sink = Sink::new(args.json);
    if args.scenario.runs(Scenario::Transport) {
        let media = match args.transport {
            Some(medium) => vec![medium],
            None => transport::Medium::ALL.to_vec(),
        };
        for &threads in &flavours {
            for &medium in &media {
                // QUIC and shared memory on the runtime with the fewest workers only.
                if medium != transport::Medium::Tcp && threads != first {
                    continue;
                }
                on_runtime(threads, &sink, move |out| async move {
                    transport::run(medium, window, in_process, &mut |l| out.emit(l)).await
                })
                .await?;
            }
        }
        if args.peers {
            peers::run(window, &flavours, &sink).await?;
        }
    }
    if args.scenario.runs(Scenario::Request) {
        for &threads in &flavours {
            on_runtime(threads, &sink, move |out| async move {
                request::run(window, in_process, &mut |l| out.emit(l)).await
            })
            .await?;
        }
    }
    if args.scenario.runs(Scenario::Broadcast) {
        on_runtime(first, &sink, move |out| async move {
            broadcast::run(window, &mut |l| out.emit(l)).await
        })
        .await?;
    }
    if args.scenario.runs(Scenario::Discovery) {
        let url = args.discovery.clone();
        on_runtime(first, &sink, move |out| async move {
            let backend = match &url {
                DiscoveryUrl::Memory => "memory",
                DiscoveryUrl::Etcd(_) => "etcd",
            };
            with_discovery!(&url, |d| discovery::run(d, backend, window, &mut |l| out
                .emit(l)))
        })
        .await?;
    }
    if args.scenario.runs(Scenario::Route) {
        on_runtime(first, &sink, move |out| async move {
            route::run(window, &mut |l| out.emit(l)).await
        })
        .await?;
    }
    let lines = sink.lines();
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

/// Where measurements go as they are made: printed at once (a JSON line on stdout with
/// `--json`, else a summary on stderr) and kept for the table, the ratios and the charts.
/// Each runtime's sink suffixes its patterns with the runtime (`-mtN`; none on a
/// current-thread runtime).
#[derive(Debug, Clone)]
pub(crate) struct Sink {
    json: bool,
    suffix: String,
    lines: Arc<Mutex<Vec<Line>>>,
}

impl Sink {
    fn new(json: bool) -> Self {
        Self {
            json,
            suffix: String::new(),
            lines: Arc::default(),
        }
    }

    /// The sink of measurements made on a runtime of `threads` workers (0: current thread).
    fn on(&self, threads: usize) -> Self {
        Self {
            suffix: report::flavour_suffix(threads),
            ..self.clone()
        }
    }

    /// Prints a line at once and keeps it.
    pub(crate) fn emit(&self, mut line: Line) {
        line.pattern.push_str(&self.suffix);
        if self.json {
            crate::print_line(&line.to_json());
        } else {
            eprintln!("  {}", line.summary());
        }
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
    }

    /// Every line emitted so far, in order.
    fn lines(&self) -> Vec<Line> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Runs `scenario` as a task of a fresh runtime with `threads` workers (0: a
/// current-thread runtime), from a thread of the blocking pool, with the sink of that
/// runtime. A fresh runtime per scenario and flavour: nothing of a previous measurement
/// (tasks, timers, the I/O driver's registrations) runs beside the next, and the worker
/// processes it spawns (see [`worker::spawn`]) run on the same kind of runtime.
pub(crate) async fn on_runtime<F, Fut>(
    threads: usize,
    sink: &Sink,
    scenario: F,
) -> Result<(), Failure>
where
    F: FnOnce(Sink) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Failure>> + Send + 'static,
{
    let runtime = crate::runtime(threads).map_err(|e| fail("runtime", e))?;
    let sink = sink.on(threads);
    tokio::task::spawn_blocking(move || {
        // On a multi-thread runtime, a task: the future `block_on` polls runs on this
        // thread, not on the runtime's workers as an application's tasks do. On a
        // current-thread runtime, that future (as `dms bench` always measured it there).
        let result = if threads == 0 {
            Ok(runtime.block_on(scenario(sink)))
        } else {
            let task = runtime.spawn(scenario(sink));
            runtime.block_on(task)
        };
        // Tasks the scenario left behind (an in-process worker) end with the runtime.
        runtime.shutdown_timeout(Duration::from_secs(1));
        result
    })
    .await
    .map_err(|e| fail("runtime", e))?
    .map_err(|e| fail("scenario", e))?
}

/// `dms bench-worker`: the transport scenario's second process.
pub(crate) async fn worker(args: WorkerArgs) -> Result<(), Failure> {
    let served = async move {
        match args.peer {
            WorkerPeer::Dms => transport::worker_process(transport::Link::Tcp).await,
            WorkerPeer::DmsQuic => transport::worker_process(transport::Link::Quic).await,
            WorkerPeer::DmsShm => {
                transport::worker_process(transport::Link::Shm(transport::ShmWait::Park)).await
            }
            WorkerPeer::DmsShmSpin => {
                transport::worker_process(transport::Link::Shm(transport::ShmWait::Spin)).await
            }
            WorkerPeer::DmsNode => request::worker_process().await,
            peer => peers::worker(peer).await,
        }
    };
    // As on the bench's side (see [`on_runtime`]): a task on a multi-thread runtime, so
    // that it runs on the workers; the future `block_on` polls on a current-thread one.
    if worker::current_threads() == 0 {
        served.await
    } else {
        tokio::spawn(served).await.map_err(|e| fail("worker", e))?
    }
}

#[cfg(test)]
mod tests {
    use super::Scenario;

    #[test]
    fn all_runs_every_scenario() {
        for scenario in [
            Scenario::Transport,
            Scenario::Request,
            Scenario::Broadcast,
            Scenario::Discovery,
            Scenario::Route,
        ] {
            assert!(Scenario::All.runs(scenario), "{scenario:?}");
            assert!(scenario.runs(scenario));
        }
        assert!(!Scenario::Route.runs(Scenario::Request));
    }
}

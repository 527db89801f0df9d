//! `dms`: the DMS command-line tool.
#![forbid(unsafe_code)]
// A command-line tool talks to people on stdout.
#![allow(clippy::print_stdout)]

mod bench;
mod config;
mod demo;
mod discovery_url;
mod failure;
mod ls;
mod node;
mod request;
mod route;
mod stats;
mod transport_args;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::failure::Failure;

/// DMS: server processes that find each other and talk as one distributed system.
///
/// Exit codes: 0 success, 1 error, 2 bad command line or path, 3 discovery unreachable,
/// 4 no instance available, 5 request timed out.
#[derive(Debug, Parser)]
#[command(name = "dms", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
    /// Log filter for diagnostics on stderr (e.g. `info`, `dms=debug`); off by default.
    #[arg(long, global = true, env = "DMS_LOG")]
    log: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Runs a game backend in one process (Lobby ×2, Battle ×3, Club ×2 on the embedded
    /// discovery and real TCP loopback) and narrates registration, routing by player,
    /// broadcast, an instance failing and coming back; then Trade reached from Lobby only
    /// through two brokers, one of which is killed under traffic (multi-hop routing).
    Demo(demo::DemoArgs),
    /// Runs one service instance until SIGINT/SIGTERM (then deregisters and says
    /// DISCONNECT to its peers); prints its service path and bound endpoints.
    Node(node::NodeArgs),
    /// Sends requests to a cluster (one instance picked by key) or to one instance and
    /// prints each reply.
    Request(request::RequestArgs),
    /// Sends a message to every live instance of a cluster.
    Broadcast(request::BroadcastArgs),
    /// Lists clusters, instances, buckets and endpoints registered in discovery; with
    /// `--routes`, the routing table of multi-hop forwarding (links, usable or not).
    Ls(ls::LsArgs),
    /// Prints the path a message from one instance to another would take through
    /// brokers (hop by hop, each link's cost, the total), or why there is none (exit 4).
    Route(route::RouteArgs),
    /// Prints a node's figures from its metrics endpoint (`dms node --metrics ADDR`): a
    /// table grouped by metric name, or with `--json` one JSON array.
    Stats(stats::StatsArgs),
    /// Prints registrations and deregistrations as they happen.
    Watch(ls::WatchArgs),
    /// Measures throughput and latency (transport alone, kernel request/reply, broadcast,
    /// discovery churn), with `--peers` also raw TCP and libzmq in the same run, and prints
    /// a table or, with `--json`, lines comparable with shared/peers.
    Bench(bench::BenchArgs),
    /// Node configuration files: `dms config check FILE` reports every error with its
    /// line (`FILE:LINE:COL: field: message`, exit 2) or prints `ok` and the
    /// configuration in effect.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Certificates for QUIC: `dms certs dev DIR --service PATH` makes a DEVELOPMENT CA
    /// and node certificates (never in production).
    #[command(subcommand)]
    Certs(CertsCommand),
    /// The second process of `dms bench` (internal).
    #[command(hide = true)]
    BenchWorker(bench::WorkerArgs),
}

/// `dms config` subcommands.
#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Checks a node configuration file (as `dms node --config FILE` reads it): every
    /// error with its line, or `ok` and the configuration in effect.
    Check(config::CheckArgs),
}

/// `dms certs` subcommands.
#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// DEVELOPMENT ONLY: creates (or reuses) a development CA in DIR and issues a
    /// certificate for each --service; prints the --tls-* options to start each node with.
    Dev(transport_args::DevCertsArgs),
}

/// Prints a line on stdout and flushes it (output is read by scripts and tests as it
/// comes). A closed stdout is not an error worth a panic.
pub(crate) fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A tokio runtime with I/O and timers: current-thread for `threads == 0`, else
/// multi-thread with that many workers.
pub(crate) fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(filter) = &cli.log {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    // `dms bench` builds a runtime per measurement and flavour (see bench::on_runtime);
    // its own only waits for them. Its worker runs on the flavour it is told.
    let threads = match &cli.command {
        Commands::Bench(_) => 0,
        Commands::BenchWorker(args) => args.worker_threads(),
        _ => 2,
    };
    let runtime = match runtime(threads) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dms: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Commands::Demo(args) => demo::run(args)
                .await
                .map_err(|e| Failure::Other(e.to_string()))
                .and_then(|code| {
                    if code == ExitCode::SUCCESS {
                        Ok(())
                    } else {
                        Err(Failure::Reported(Box::new(Failure::Other(String::new()))))
                    }
                }),
            Commands::Node(args) => node::run(args).await,
            Commands::Request(args) => request::run(args).await,
            Commands::Broadcast(args) => request::broadcast(args).await,
            Commands::Ls(args) => ls::run(args).await,
            Commands::Route(args) => route::run(args).await,
            Commands::Stats(args) => stats::run(args).await,
            Commands::Watch(args) => ls::watch(args).await,
            Commands::Bench(args) => bench::run(args).await,
            Commands::BenchWorker(args) => bench::worker(args).await,
            Commands::Certs(CertsCommand::Dev(args)) => transport_args::dev_certs(&args),
            Commands::Config(ConfigCommand::Check(args)) => config::check(&args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Reported(inner)) => inner.exit_code(),
        Err(failure) => {
            eprintln!("dms: {failure}");
            failure.exit_code()
        }
    }
}

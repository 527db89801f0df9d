//! `dms bench`: measures DMS on this machine and prints lines in the schema of
//! `shared/peers` (`peer`, `transport`, `pattern`, `metric`, `msg_size`, `value`, `n`,
//! `frames`), so that its numbers compare with libzmq's and raw sockets' in one run.

mod report;
mod request;
mod transport;

use std::time::Duration;

pub(crate) use report::Line;

use crate::failure::Failure;

/// Which measurements to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// `MessageMiddleware` alone between two peers: one-way throughput and round trips.
    Transport,
    /// Kernel request/reply between two nodes: latency and throughput in flight.
    Request,
    /// Everything.
    All,
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
    /// Run the transport's two peers in this process (default: a second process).
    #[arg(long)]
    in_process: bool,
    /// One JSON object per line (the schema of shared/peers) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Options of the hidden worker a transport bench runs in a second process.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {}

pub(crate) async fn run(args: BenchArgs) -> Result<(), Failure> {
    let window = Duration::from_secs_f64(args.duration.clamp(0.05, 600.0));
    let mut lines = Vec::new();
    if matches!(args.scenario, Scenario::Transport | Scenario::All) {
        transport::run(window, args.in_process, &mut |line| {
            emit(&args, line, &mut lines)
        })
        .await?;
    }
    if matches!(args.scenario, Scenario::Request | Scenario::All) {
        request::run(window, &mut |line| emit(&args, line, &mut lines)).await?;
    }
    if !args.json {
        report::table(&lines);
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

pub(crate) async fn worker(_args: WorkerArgs) -> Result<(), Failure> {
    transport::worker_process().await
}

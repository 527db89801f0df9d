//! `dms`: the DMS command-line tool.
#![forbid(unsafe_code)]
// A command-line tool talks to people on stdout.
#![allow(clippy::print_stdout)]

mod demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// DMS: server processes that find each other and talk as one distributed system.
#[derive(Debug, Parser)]
#[command(name = "dms", version, about)]
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
    /// broadcast, an instance failing and coming back.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(filter) = &cli.log {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dms: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Commands::Demo(args) => demo::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("dms: {error}");
            ExitCode::FAILURE
        }
    }
}

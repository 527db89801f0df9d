//! `backend`: one process of the example game backend. `backend ROLE --discovery
//! etcd://HOST:PORT --instance NAME` runs one instance of Lobby, Battle, Club, Trade or
//! the broker cluster until SIGINT/SIGTERM; `backend driver` plays players through them
//! and prints a summary. See `examples/backend/run.sh`.
#![allow(clippy::print_stdout)] // a binary prints what happens

mod roles;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// One process of the example game backend on DMS.
#[derive(Debug, Parser)]
#[command(name = "backend")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Queues players, pairs them, plays their matches on Battle, hands the loot through
    /// Trade (reached through the brokers).
    Lobby {
        #[command(flatten)]
        common: Common,
        /// How long a player waits for an opponent before `NoOpponent`.
        #[arg(long, default_value_t = 3000)]
        queue_timeout_ms: u64,
    },
    /// Holds and plays matches (dispatched by match id).
    Battle {
        #[command(flatten)]
        common: Common,
    },
    /// Clubs: members, chat (broadcast to the cluster), gifts through Trade.
    Club {
        #[command(flatten)]
        common: Common,
    },
    /// Item trades; links only to the brokers.
    Trade {
        #[command(flatten)]
        common: Common,
    },
    /// A broker: forwards routed messages between Lobby or Club and Trade.
    Broker {
        #[command(flatten)]
        common: Common,
    },
    /// Plays players through the backend and prints a summary; exits 1 if any request
    /// was lost, failed unexpectedly or a match or trade left its instance.
    Driver {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        driver: roles::driver::DriverArgs,
    },
}

/// What every process takes.
#[derive(Debug, Clone, Args)]
struct Common {
    /// Discovery: etcd://host:port[,host:port...]
    #[arg(long)]
    discovery: String,
    /// The instance's name in its cluster (battle-1...).
    #[arg(long, default_value = "driver-1")]
    instance: String,
    /// How long a request waits for its reply, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    request_timeout_ms: u64,
}

/// Prints a line on stdout and flushes it (scripts and tests read it as it comes).
fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("backend: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        // The node runs in tasks: requests are not issued from `main`'s future.
        let task = tokio::spawn(run(cli.role));
        task.await
            .unwrap_or_else(|e| Err(format!("the role's task failed: {e}")))
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("backend: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(role: Role) -> Result<ExitCode, String> {
    let (name, common) = match &role {
        Role::Lobby { common, .. } => (dms_example_backend::clusters::LOBBY, common),
        Role::Battle { common } => (dms_example_backend::clusters::BATTLE, common),
        Role::Club { common } => (dms_example_backend::clusters::CLUB, common),
        Role::Trade { common } => (dms_example_backend::clusters::TRADE, common),
        Role::Broker { common } => (dms_example_backend::clusters::BROKER, common),
        Role::Driver { common, .. } => (dms_example_backend::clusters::DRIVER, common),
    };
    let setup = roles::Setup {
        path: dms_example_backend::instance(name, &common.instance)
            .map_err(|e| format!("bad instance name {:?}: {e}", common.instance))?,
        discovery: dms_example_backend::connect(&common.discovery).await?,
        request_timeout: Duration::from_millis(common.request_timeout_ms),
    };
    match role {
        Role::Lobby {
            queue_timeout_ms, ..
        } => roles::lobby::run(setup, Duration::from_millis(queue_timeout_ms)).await,
        Role::Battle { .. } => roles::battle::run(setup).await,
        Role::Club { .. } => roles::club::run(setup).await,
        Role::Trade { .. } => roles::trade::run(setup).await,
        Role::Broker { .. } => roles::broker::run(setup).await,
        Role::Driver { driver, .. } => return roles::driver::run(setup, driver).await,
    }
    .map(|()| ExitCode::SUCCESS)
}

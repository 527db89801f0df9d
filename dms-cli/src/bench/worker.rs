//! The second process of a two-process bench: `dms bench-worker --peer <which>` binds a
//! loopback port, prints `endpoint <address>` and serves until the bench leaves.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use super::fail;
use crate::failure::Failure;

/// Which side a worker process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum WorkerPeer {
    /// DMS's TCP `MessageMiddleware`.
    Dms,
    /// Raw tokio TCP, length-prefixed frames.
    RawTcp,
    /// A libzmq ROUTER (feature `zmq`).
    Libzmq,
}

/// A running worker process; killed when dropped.
#[derive(Debug)]
pub(crate) struct Worker {
    child: Child,
    /// What the worker printed after `endpoint `.
    pub(crate) endpoint: String,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dms bench-worker --peer <peer>` and reads the endpoint it serves.
pub(crate) async fn spawn(peer: WorkerPeer) -> Result<Worker, Failure> {
    let exe = std::env::current_exe().map_err(|e| fail("worker", e))?;
    let name = clap::ValueEnum::to_possible_value(&peer)
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default();
    let mut child = Command::new(exe)
        .args(["bench-worker", "--peer", &name])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| fail("worker", e))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        return Err(fail("worker", "no stdout"));
    };
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .next()
            .and_then(Result::ok)
            .unwrap_or_default()
    })
    .await
    .map_err(|e| fail("worker", e));
    // From here on the worker is killed on every way out.
    let mut worker = Worker {
        child,
        endpoint: String::new(),
    };
    let line = line?;
    let endpoint = line
        .strip_prefix("endpoint ")
        .ok_or_else(|| fail("worker", format!("unexpected first line {line:?}")))?;
    worker.endpoint = endpoint.to_owned();
    Ok(worker)
}

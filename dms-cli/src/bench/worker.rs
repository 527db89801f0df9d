//! The second process of a two-process bench: `dms bench-worker --peer <which>` binds a
//! loopback port (or a shared-memory name), prints `endpoint <address>` and serves until
//! the bench leaves.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use super::fail;
use crate::failure::Failure;

/// Which side a worker process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum WorkerPeer {
    /// DMS's TCP `MessageMiddleware`.
    Dms,
    /// DMS's QUIC `MessageMiddleware` (development certificates).
    DmsQuic,
    /// DMS's shared-memory `MessageMiddleware`, readers parking at once.
    DmsShm,
    /// DMS's shared-memory `MessageMiddleware`, readers spinning before they park.
    DmsShmSpin,
    /// A DMS kernel node answering requests (the request scenario).
    DmsNode,
    /// Raw tokio TCP, length-prefixed frames.
    RawTokioTcp,
    /// A libzmq ROUTER (feature `zmq`).
    Libzmq,
}

/// A running worker process; killed when dropped.
#[derive(Debug)]
pub(crate) struct Worker {
    child: Child,
    /// What the worker printed after `endpoint `.
    pub(crate) endpoint: String,
    /// The lines it printed before that one.
    pub(crate) preamble: Vec<String>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Worker threads of the runtime this runs on (0: a current-thread runtime).
pub(crate) fn current_threads() -> usize {
    let handle = tokio::runtime::Handle::current();
    match handle.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => 0,
        _ => handle.metrics().num_workers(),
    }
}

/// The runtime this runs on, for progress lines.
pub(crate) fn flavour_name() -> String {
    match current_threads() {
        0 => "current-thread runtime".to_owned(),
        n => format!("multi-thread runtime ({n} workers)"),
    }
}

/// Starts `dms bench-worker --peer <peer>` and reads the endpoint it serves.
pub(crate) async fn spawn(peer: WorkerPeer) -> Result<Worker, Failure> {
    let exe = std::env::current_exe().map_err(|e| fail("worker", e))?;
    let name = clap::ValueEnum::to_possible_value(&peer)
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default();
    // The worker runs on the same kind of runtime as this side.
    let threads = current_threads();
    let mut child = Command::new(exe)
        .args(["bench-worker", "--peer", &name])
        .args(["--worker-threads", &threads.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| fail("worker", e))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        return Err(fail("worker", "no stdout"));
    };
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let last = line.starts_with("endpoint ");
            lines.push(line);
            if last {
                break;
            }
        }
        lines
    })
    .await
    .map_err(|e| fail("worker", e));
    // From here on the worker is killed on every way out.
    let mut worker = Worker {
        child,
        endpoint: String::new(),
        preamble: Vec::new(),
    };
    let mut lines = lines?;
    let last = lines.pop().unwrap_or_default();
    let endpoint = last
        .strip_prefix("endpoint ")
        .ok_or_else(|| fail("worker", format!("no endpoint line, last line {last:?}")))?;
    worker.endpoint = endpoint.to_owned();
    worker.preamble = lines;
    Ok(worker)
}

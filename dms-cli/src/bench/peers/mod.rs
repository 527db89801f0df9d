//! `dms bench --peers`: the transport scenario on the peers DMS is judged against, in the
//! same run: raw tokio TCP (always) and libzmq ROUTER/DEALER (feature `zmq`, which needs
//! the system's libzmq: `apt-get install libzmq3-dev`), then the ratio DMS / peer for every
//! metric both measured.

#[cfg(feature = "zmq")]
mod libzmq;
mod raw_tcp;

use std::time::Duration;

use hdrhistogram::Histogram;

pub(super) use super::fail;
use super::report::{Line, rtt_lines, throughput_lines};
use super::worker::{self, WorkerPeer};
use crate::failure::Failure;

/// Messages received and the receiver's time from the first to the last.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measured {
    pub(crate) received: u64,
    pub(crate) elapsed_ns: u64,
}

impl Measured {
    fn throughput(received: u64, elapsed_ns: u64) -> Self {
        Self {
            received,
            elapsed_ns,
        }
    }
}

/// A histogram of nanoseconds with 3 significant digits.
fn histogram() -> Result<Histogram<u64>, Failure> {
    Histogram::new(3).map_err(|e| fail("histogram", e))
}

/// Runs every peer built in, emitting their lines.
pub(crate) async fn run(window: Duration, emit: &mut impl FnMut(Line)) -> Result<(), Failure> {
    raw_tcp(window, emit).await?;
    libzmq(window, emit).await
}

async fn raw_tcp(window: Duration, emit: &mut impl FnMut(Line)) -> Result<(), Failure> {
    eprintln!("peer raw-tcp: tokio TCP, length-prefixed, two processes ...");
    let worker = worker::spawn(WorkerPeer::RawTcp).await?;
    let mut client = raw_tcp::Client::connect(&worker.endpoint).await?;
    for size in [64, 1024, 65536] {
        let m = client.throughput(size, window).await?;
        let pattern = "stream-length-prefixed";
        for line in throughput_lines("raw-tcp", pattern, size, 1, m.received, m.elapsed_ns) {
            emit(line);
        }
    }
    for size in [64, 1024] {
        let histogram = client.round_trips(size, window).await?;
        for line in rtt_lines("tcp", "ping-pong", size, &histogram) {
            emit(Line {
                peer: "raw-tcp",
                ..line
            });
        }
    }
    Ok(())
}

#[cfg(feature = "zmq")]
async fn libzmq(window: Duration, emit: &mut impl FnMut(Line)) -> Result<(), Failure> {
    eprintln!("peer libzmq: ROUTER <- DEALER over tcp, two processes ...");
    let worker = worker::spawn(WorkerPeer::Libzmq).await?;
    let endpoint = worker.endpoint.clone();
    let lines = tokio::task::spawn_blocking(move || -> Result<Vec<Line>, Failure> {
        let client = libzmq::Client::connect(&endpoint)?;
        let mut lines = Vec::new();
        for (size, frames) in [(64, 1), (1024, 1), (65536, 1), (64, 3)] {
            let m = client.throughput(size, frames, window)?;
            let pattern = if frames == 1 {
                "router-dealer"
            } else {
                "router-dealer-multipart"
            };
            lines.extend(throughput_lines(
                "libzmq",
                pattern,
                size,
                frames,
                m.received,
                m.elapsed_ns,
            ));
        }
        for size in [64, 1024] {
            let histogram = client.round_trips(size, window)?;
            lines.extend(
                rtt_lines("tcp", "router-dealer", size, &histogram)
                    .into_iter()
                    .map(|line| Line {
                        peer: "libzmq",
                        ..line
                    }),
            );
        }
        let _ = client.quit();
        Ok(lines)
    })
    .await
    .map_err(|e| fail("libzmq", e))??;
    drop(worker);
    lines.into_iter().for_each(emit);
    Ok(())
}

#[cfg(not(feature = "zmq"))]
async fn libzmq(_window: Duration, _emit: &mut impl FnMut(Line)) -> Result<(), Failure> {
    eprintln!(
        "peer libzmq: not built in; rebuild with `--features zmq` (needs libzmq3-dev: \
         apt-get install libzmq3-dev)"
    );
    Ok(())
}

/// Serves as the second process of a peer bench (`dms bench-worker --peer ...`).
pub(crate) async fn worker(peer: WorkerPeer) -> Result<(), Failure> {
    match peer {
        WorkerPeer::Dms | WorkerPeer::DmsQuic | WorkerPeer::DmsNode => {
            Err(fail("worker", "not a peer"))
        }
        WorkerPeer::RawTcp => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| fail("raw-tcp bind", e))?;
            let addr = listener.local_addr().map_err(|e| fail("raw-tcp bind", e))?;
            crate::print_line(&format!("endpoint {addr}"));
            raw_tcp::serve(listener).await
        }
        #[cfg(feature = "zmq")]
        WorkerPeer::Libzmq => {
            let (router, endpoint) = libzmq::bind()?;
            crate::print_line(&format!("endpoint {endpoint}"));
            tokio::task::spawn_blocking(move || libzmq::serve(&router))
                .await
                .map_err(|e| fail("libzmq", e))?
        }
        #[cfg(not(feature = "zmq"))]
        WorkerPeer::Libzmq => Err(fail("worker", "libzmq is not built in (feature zmq)")),
    }
}

/// DMS / peer for every DMS transport metric a peer measured too (same metric, size and
/// frames), as table rows. Throughput: above 1 is DMS faster; latency: below 1 is.
pub(crate) fn ratios(lines: &[Line]) -> Vec<String> {
    let mut rows = vec![format!(
        "{:<10} {:<24} {:>8} {:>6} {:>12} {:>12} {:>10}",
        "vs peer", "metric", "size", "frames", "dms", "peer", "dms/peer"
    )];
    for peer in lines.iter().filter(|l| l.peer != "dms") {
        let dms = lines.iter().find(|l| {
            l.peer == "dms"
                && l.transport == peer.transport
                && l.metric == peer.metric
                && l.msg_size == peer.msg_size
                && l.frames == peer.frames
                && l.pattern.starts_with("router-dealer")
        });
        if let Some(dms) = dms {
            rows.push(format!(
                "{:<10} {:<24} {:>8} {:>6} {:>12.1} {:>12.1} {:>9.2}x",
                peer.peer,
                peer.metric,
                peer.msg_size,
                peer.frames,
                dms.value,
                peer.value,
                dms.value / peer.value.max(f64::MIN_POSITIVE)
            ));
        }
    }
    rows
}

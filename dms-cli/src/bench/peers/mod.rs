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
use super::report::{self, Line, rtt_lines, throughput_lines};
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

/// The raw tokio peer's name in lines (never `raw-tcp`: that is the C kit's raw TCP peer
/// in `shared/peers`, which the judge matches by that name).
pub(crate) const RAW_TOKIO_TCP: &str = "raw-tokio-tcp";

/// Runs every peer built in, emitting their lines: the raw tokio peer on every runtime of
/// `flavours` (its throughput on the first only), then libzmq.
pub(crate) async fn run(
    window: Duration,
    flavours: &[usize],
    sink: &super::Sink,
) -> Result<(), Failure> {
    for (i, &threads) in flavours.iter().enumerate() {
        let throughput = i == 0;
        super::on_runtime(threads, sink, move |out| async move {
            raw_tokio_tcp(window, throughput, &mut |l| out.emit(l)).await
        })
        .await?;
    }
    // libzmq's own threads do its I/O: measured once, its lines carry no runtime suffix.
    libzmq(window, &mut |l| sink.emit(l)).await
}

/// The raw tokio peer on the current runtime: throughput (if `throughput`), then round
/// trips.
async fn raw_tokio_tcp(
    window: Duration,
    throughput: bool,
    emit: &mut impl FnMut(Line),
) -> Result<(), Failure> {
    eprintln!(
        "peer {RAW_TOKIO_TCP}: tokio TCP, length-prefixed, two processes, {} ...",
        worker::flavour_name()
    );
    let worker = worker::spawn(WorkerPeer::RawTokioTcp).await?;
    let mut client = raw_tcp::Client::connect(&worker.endpoint).await?;
    if throughput {
        for size in [64, 1024, 65536] {
            let m = client.throughput(size, window).await?;
            let pattern = "stream-length-prefixed";
            for line in throughput_lines(RAW_TOKIO_TCP, pattern, size, 1, m.received, m.elapsed_ns)
            {
                emit(line);
            }
        }
    }
    for size in [64, 1024] {
        let histogram = client.round_trips(size, window).await?;
        for line in rtt_lines("tcp", "ping-pong", size, &histogram) {
            emit(Line {
                peer: RAW_TOKIO_TCP,
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
        WorkerPeer::Dms
        | WorkerPeer::DmsQuic
        | WorkerPeer::DmsShm
        | WorkerPeer::DmsShmSpin
        | WorkerPeer::DmsNode => Err(fail("worker", "not a peer")),
        WorkerPeer::RawTokioTcp => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| fail("raw-tokio-tcp bind", e))?;
            let addr = listener
                .local_addr()
                .map_err(|e| fail("raw-tokio-tcp bind", e))?;
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

/// DMS / peer for every metric a peer measured that DMS measured too, as table rows: the
/// same transport, metric, size, frames and runtime (`-mtN`), DMS's ROUTER/DEALER lines
/// against every peer line, and DMS's kernel request/reply round trips against the raw
/// tokio peer's. Throughput: above 1 is DMS faster; latency: below 1 is.
pub(crate) fn ratios(lines: &[Line]) -> Vec<String> {
    let mut rows = vec![format!(
        "{:<14} {:<5} {:<14} {:<24} {:>8} {:>6} {:>12} {:>12} {:>10}",
        "vs peer", "rt", "dms", "metric", "size", "frames", "dms", "peer", "dms/peer"
    )];
    for peer in lines.iter().filter(|l| l.peer != "dms") {
        let (_, threads) = report::flavour(&peer.pattern);
        let against = |l: &&Line, dms: &str| {
            let (base, dms_threads) = report::flavour(&l.pattern);
            l.peer == "dms"
                && dms_threads == threads
                && l.transport == peer.transport
                && l.metric == peer.metric
                && l.msg_size == peer.msg_size
                && l.frames == peer.frames
                && match dms {
                    "router-dealer" => base.starts_with("router-dealer"),
                    _ => base == dms,
                }
        };
        let mut bases = vec!["router-dealer"];
        if peer.peer == RAW_TOKIO_TCP && peer.metric.starts_with("rtt_") {
            bases.push("request-reply");
        }
        for base in bases {
            let Some(dms) = lines.iter().find(|l| against(l, base)) else {
                continue;
            };
            let runtime = match threads {
                0 => "ct".to_owned(),
                n => format!("mt{n}"),
            };
            rows.push(format!(
                "{:<14} {:<5} {:<14} {:<24} {:>8} {:>6} {:>12.1} {:>12.1} {:>9.2}x",
                peer.peer,
                runtime,
                base,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(peer: &'static str, pattern: &str, metric: &'static str, value: f64) -> Line {
        Line {
            peer,
            transport: "tcp",
            pattern: pattern.to_owned(),
            metric,
            msg_size: 64,
            value,
            n: 10,
            frames: 1,
            histogram: None,
        }
    }

    #[test]
    fn ratios_compare_the_same_runtime() {
        let lines = [
            line("dms", "router-dealer", "rtt_p50_us", 30.0),
            line("dms", "router-dealer-mt2", "rtt_p50_us", 60.0),
            line("dms", "request-reply", "rtt_p50_us", 40.0),
            line("dms", "request-reply-mt2", "rtt_p50_us", 80.0),
            line(RAW_TOKIO_TCP, "ping-pong", "rtt_p50_us", 20.0),
            line(RAW_TOKIO_TCP, "ping-pong-mt2", "rtt_p50_us", 40.0),
        ];
        let rows = ratios(&lines);
        assert_eq!(rows.len(), 5, "{rows:#?}");
        let ratio = |row: &str| row.split_whitespace().last().unwrap().to_owned();
        assert!(rows[1].contains(" ct ") && rows[1].contains("router-dealer"));
        assert_eq!(ratio(&rows[1]), "1.50x");
        assert!(rows[2].contains("request-reply"));
        assert_eq!(ratio(&rows[2]), "2.00x");
        assert!(rows[3].contains(" mt2 ") && rows[3].contains("router-dealer"));
        assert_eq!(ratio(&rows[3]), "1.50x");
        assert_eq!(ratio(&rows[4]), "2.00x");
    }
}

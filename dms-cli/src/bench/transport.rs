//! The `transport` scenario: a TCP `MessageMiddleware` alone between two peers (two
//! processes by default). One-way throughput is timed at the receiver, from its first to
//! its last message; round trips are timed at the sender after a warm-up, as the peers in
//! `shared/peers` do.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dms::{Endpoint, Multipart};
use dms_core::{Incoming, MessageMiddleware, PeerId, SendError};
use dms_transport_tcp::{TcpConfig, TcpMiddleware};
use hdrhistogram::Histogram;

use super::report::{RoundTrips, rtt_lines, throughput_lines};
use super::worker::{Worker, WorkerPeer, spawn};
use super::{Line, fail};
use crate::failure::Failure;

/// First bytes of the worker's control messages (data frames never start with them).
const CONTROL: &[u8] = b"\0dms-bench:";
const TRANSPORT: &str = "tcp";
/// The payload bytes of throughput messages (the largest size measured).
static PAYLOAD: [u8; 65536] = [0x5a; 65536];

fn control(peer: &PeerId, command: &str) -> Multipart {
    let mut frame = CONTROL.to_vec();
    frame.extend_from_slice(command.as_bytes());
    Multipart::from_frames([peer.to_frame(), Bytes::from(frame)])
}

/// The bench's other side: echoes data messages, or counts them between `count` and `end`
/// and answers `done:<elapsed ns from first to last>:<count>`.
async fn serve(middleware: TcpMiddleware) -> Result<(), Failure> {
    let mut counting = false;
    let (mut first, mut last, mut count) = (None::<Instant>, Instant::now(), 0u64);
    let mut items = Vec::with_capacity(256);
    loop {
        items.clear();
        middleware
            .recv_many(&mut items, 256)
            .await
            .map_err(|e| fail("worker", e))?;
        // One clock read per batch: the messages of a batch arrived together.
        let now = Instant::now();
        for item in items.drain(..) {
            let msg = match item {
                Incoming::Message(msg) => msg,
                Incoming::LinkDown { .. } => return Ok(()),
                _ => continue,
            };
            match msg.frames().get(1).and_then(|f| f.strip_prefix(CONTROL)) {
                None if counting => {
                    last = now;
                    first.get_or_insert(now);
                    count += 1;
                }
                None => middleware.send(msg).await.map_err(|e| fail("echo", e))?,
                Some(b"count") => {
                    counting = true;
                    (first, count) = (None, 0);
                }
                Some(b"end") => {
                    counting = false;
                    let elapsed = first.map_or(0, |f| last.duration_since(f).as_nanos());
                    let peer = PeerId::new(msg[0].clone()).map_err(|e| fail("worker", e))?;
                    let done = control(&peer, &format!("done:{elapsed}:{count}"));
                    middleware.send(done).await.map_err(|e| fail("worker", e))?;
                }
                Some(_) => {}
            }
        }
    }
}

/// `dms bench-worker`: binds a loopback port, prints it, serves until the bench leaves.
pub(crate) async fn worker_process() -> Result<(), Failure> {
    let middleware = TcpMiddleware::new(TcpConfig::default());
    let endpoint = bind(&middleware).await?;
    crate::print_line(&format!("endpoint {endpoint}"));
    serve(middleware).await
}

async fn bind(middleware: &TcpMiddleware) -> Result<Endpoint, Failure> {
    let any: Endpoint = "tcp://127.0.0.1:0".parse().map_err(|e| fail("bind", e))?;
    middleware.bind(&any).await.map_err(|e| fail("bind", e))
}

/// Starts the other side: a second `dms` process, or a task here.
async fn start_worker(in_process: bool) -> Result<(Endpoint, Option<Worker>), Failure> {
    if in_process {
        let middleware = TcpMiddleware::new(TcpConfig::default());
        let endpoint = bind(&middleware).await?;
        tokio::spawn(serve(middleware));
        return Ok((endpoint, None));
    }
    let worker = spawn(WorkerPeer::Dms).await?;
    let endpoint = worker.endpoint.parse().map_err(|e| fail("worker", e))?;
    Ok((endpoint, Some(worker)))
}

/// The next message, skipping link events.
async fn next_message(middleware: &TcpMiddleware) -> Result<Multipart, Failure> {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(30), middleware.recv())
            .await
            .map_err(|_| fail("receive", "no message within 30 s"))?
            .map_err(|e| fail("receive", e))?;
        match item {
            Incoming::Message(msg) => return Ok(msg),
            Incoming::LinkDown { cause, .. } => return Err(fail("link", cause)),
            _ => {}
        }
    }
}

/// Sends without waiting while the link has room; gives the message back when it is full.
fn try_push(middleware: &TcpMiddleware, msg: Multipart) -> Result<Option<Multipart>, Failure> {
    match middleware.try_send(msg) {
        Ok(()) => Ok(None),
        Err(SendError::Full { msg, .. }) => Ok(Some(*msg)),
        Err(error) => Err(fail("send", error)),
    }
}

/// Sends, waiting for room if the link is full.
async fn push(middleware: &TcpMiddleware, msg: Multipart) -> Result<(), Failure> {
    middleware.send(msg).await.map_err(|e| fail("send", e))
}

async fn throughput(
    middleware: &TcpMiddleware,
    peer: &PeerId,
    peer_frame: &'static [u8],
    size: usize,
    frames: usize,
    window: Duration,
) -> Result<Vec<Line>, Failure> {
    push(middleware, control(peer, "count")).await?;
    // Frames borrowed from static memory, as libzmq's bench sends from one static buffer:
    // a message costs what DMS does with it, not reference counting in the harness.
    let payload = Bytes::from_static(&PAYLOAD[..size.min(PAYLOAD.len())]);
    let mut msg = Multipart::from_frames([Bytes::from_static(peer_frame)]);
    for _ in 0..frames {
        msg.push(payload.clone());
    }
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < window {
        for _ in 0..64 {
            // The common case builds no future: one is copied whole when it is awaited.
            if let Some(full) = try_push(middleware, msg.clone())? {
                push(middleware, full).await?;
            }
        }
        sent += 64;
    }
    push(middleware, control(peer, "end")).await?;
    let done = next_message(middleware).await?;
    let report = done
        .frames()
        .get(1)
        .and_then(|f| f.strip_prefix(CONTROL))
        .unwrap_or_default();
    let report = String::from_utf8_lossy(report);
    let mut fields = report.trim_start_matches("done:").split(':');
    let elapsed_ns: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let received: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    if received != sent {
        return Err(fail(
            "throughput",
            format!("sent {sent} messages, {received} arrived"),
        ));
    }
    let pattern = if frames == 1 {
        "router-dealer"
    } else {
        "router-dealer-multipart"
    };
    Ok(throughput_lines(
        "dms",
        pattern,
        size,
        frames,
        received,
        elapsed_ns as u64,
    ))
}

async fn round_trips(
    middleware: &TcpMiddleware,
    peer: &PeerId,
    size: usize,
    window: Duration,
) -> Result<Vec<Line>, Failure> {
    push(middleware, control(peer, "echo")).await?;
    let msg = Multipart::from_frames([peer.to_frame(), Bytes::from(vec![0x5a; size])]);
    let mut histogram = Histogram::<u64>::new(3).map_err(|e| fail("histogram", e))?;
    let mut round_trips = RoundTrips::new(window);
    while let Some(record) = round_trips.next_one() {
        let sent = Instant::now();
        push(middleware, msg.clone()).await?;
        next_message(middleware).await?;
        if record {
            let _ = histogram.record(sent.elapsed().as_nanos() as u64);
        }
    }
    Ok(rtt_lines(TRANSPORT, "router-dealer", size, &histogram))
}

pub(crate) async fn run(
    window: Duration,
    in_process: bool,
    emit: &mut impl FnMut(Line),
) -> Result<(), Failure> {
    eprintln!(
        "transport: tcp, {} ...",
        if in_process {
            "in one process"
        } else {
            "two processes"
        }
    );
    let (endpoint, child) = start_worker(in_process).await?;
    let result = async {
        let middleware = TcpMiddleware::new(TcpConfig::default());
        let peer = middleware
            .connect(&endpoint)
            .await
            .map_err(|e| fail("connect", e))?;
        // The peer frame of throughput messages, in static memory like their payload
        // (leaked once per run: a few bytes).
        let peer_frame: &'static [u8] = Box::leak(peer.to_frame().to_vec().into_boxed_slice());
        for (size, frames) in [(64, 1), (1024, 1), (65536, 1), (64, 3)] {
            for line in throughput(&middleware, &peer, peer_frame, size, frames, window).await? {
                emit(line);
            }
        }
        for size in [64, 1024] {
            for line in round_trips(&middleware, &peer, size, window).await? {
                emit(line);
            }
        }
        let _ = middleware.disconnect(&peer).await;
        Ok(())
    }
    .await;
    drop(child);
    result
}

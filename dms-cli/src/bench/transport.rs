//! The `transport` scenario: a `MessageMiddleware` (TCP, QUIC with development
//! certificates, or shared memory) alone between two peers (two processes by default).
//! One-way throughput is timed at the receiver, from its first to its last message; round
//! trips are timed at the sender after a warm-up, as the peers in `shared/peers` do.
//!
//! Shared memory runs twice, each time with a fresh worker: with readers that park at
//! once (`spin(Duration::ZERO)`: the receiver sleeps until its doorbell rings; the lines'
//! patterns as over TCP) and with readers that busy-poll up to [`SHM_SPIN`] before they
//! park (patterns with `-spin`, e.g. `router-dealer-spin`, which `shared/peers/ratios.py`
//! judges against its busy-polling ring).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dms::quic::{QuicConfig, QuicMiddleware};
use dms::shm::{ShmConfig, ShmMiddleware};
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

/// The longest busy-poll of a shared-memory reader in the spinning runs: 1 ms, so that a
/// hiccup of the peer (preempted, an interrupt) is still caught spinning. With 50 µs the
/// p99 round trip was 63-96 µs (each hiccup paid a park and a doorbell on top); with 1 ms
/// it is 5.6-6.7 µs on the same 2-vCPU machine, p50 unchanged at 3.6-4.1 µs.
pub(crate) const SHM_SPIN: Duration = Duration::from_millis(1);

/// The medium a transport bench measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Medium {
    /// ZMTP over TCP.
    Tcp,
    /// ZMTP over one QUIC stream, mutual TLS (development certificates).
    Quic,
    /// ZMTP over shared-memory rings (`shm://NAME`), with parking readers, then with
    /// spinning ones.
    Shm,
}

impl Medium {
    /// Every medium, in the order `--scenario all` measures them.
    pub(crate) const ALL: [Self; 3] = [Self::Tcp, Self::Quic, Self::Shm];

    /// The runs of this medium, in order.
    fn links(self) -> &'static [Link] {
        match self {
            Self::Tcp => &[Link::Tcp],
            Self::Quic => &[Link::Quic],
            Self::Shm => &[Link::Shm(ShmWait::Park), Link::Shm(ShmWait::Spin)],
        }
    }
}

/// How a shared-memory reader waits for data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShmWait {
    /// Parks at once (`spin(Duration::ZERO)`): sleeps until the writer rings.
    Park,
    /// Busy-polls up to [`SHM_SPIN`] (adaptive), then parks.
    Spin,
}

/// One run of the scenario: a medium, and how a shared-memory reader waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// ZMTP over TCP.
    Tcp,
    /// ZMTP over QUIC.
    Quic,
    /// ZMTP over shared memory.
    Shm(ShmWait),
}

impl Link {
    fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Quic => "quic",
            Self::Shm(_) => "shm",
        }
    }

    /// What the patterns of this run's lines end with (before the runtime's `-mtN`).
    fn pattern_suffix(self) -> &'static str {
        match self {
            Self::Shm(ShmWait::Spin) => "-spin",
            _ => "",
        }
    }

    fn describe(self) -> String {
        match self {
            Self::Shm(ShmWait::Park) => "shm (parking readers)".to_owned(),
            Self::Shm(ShmWait::Spin) => format!("shm (readers spin up to {SHM_SPIN:?})"),
            other => other.name().to_owned(),
        }
    }

    fn worker(self) -> WorkerPeer {
        match self {
            Self::Tcp => WorkerPeer::Dms,
            Self::Quic => WorkerPeer::DmsQuic,
            Self::Shm(ShmWait::Park) => WorkerPeer::DmsShm,
            Self::Shm(ShmWait::Spin) => WorkerPeer::DmsShmSpin,
        }
    }
}

/// A shared-memory middleware whose readers wait as `wait` says.
fn shm(wait: ShmWait) -> Result<ShmMiddleware, Failure> {
    let spin = match wait {
        ShmWait::Park => Duration::ZERO,
        ShmWait::Spin => SHM_SPIN,
    };
    let config = ShmConfig::builder()
        .spin(spin)
        .build()
        .map_err(|e| fail("shm", e))?;
    Ok(ShmMiddleware::new(config))
}

/// The development CA both processes of a QUIC bench share (development only).
fn dev_certs() -> std::path::PathBuf {
    std::env::temp_dir().join("dms-bench-dev-certs")
}

/// A QUIC middleware named `name` with a development certificate.
fn quic(name: &str) -> Result<QuicMiddleware, Failure> {
    let path = format!("/bench/local/any/w1/g1/Bench/{name}-{}", std::process::id())
        .parse()
        .map_err(|e| fail("quic", e))?;
    let tls = dms::tls::TlsIdentity::dev(&dev_certs(), &path).map_err(|e| fail("quic", e))?;
    let config = QuicConfig::builder(tls)
        .build()
        .map_err(|e| fail("quic", e))?;
    QuicMiddleware::new(config).map_err(|e| fail("quic", e))
}
/// The payload bytes of throughput messages (the largest size measured).
static PAYLOAD: [u8; 65536] = [0x5a; 65536];

fn control(peer: &PeerId, command: &str) -> Multipart {
    let mut frame = CONTROL.to_vec();
    frame.extend_from_slice(command.as_bytes());
    Multipart::from_frames([peer.to_frame(), Bytes::from(frame)])
}

/// The bench's other side: echoes data messages, or counts them between `count` and `end`
/// and answers `done:<elapsed ns from first to last>:<count>`.
async fn serve<M: MessageMiddleware>(middleware: M) -> Result<(), Failure> {
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

/// `dms bench-worker`: binds a loopback port (a shared-memory name), prints it, serves
/// until the bench leaves.
pub(crate) async fn worker_process(link: Link) -> Result<(), Failure> {
    match link {
        Link::Tcp => serve_process(TcpMiddleware::new(TcpConfig::default())).await,
        Link::Quic => serve_process(quic("worker")?).await,
        Link::Shm(wait) => serve_process(shm(wait)?).await,
    }
}

async fn serve_process<M: MessageMiddleware>(middleware: M) -> Result<(), Failure> {
    let endpoint = bind(&middleware).await?;
    crate::print_line(&format!("endpoint {endpoint}"));
    serve(middleware).await
}

/// Binds a free loopback port, or a shared-memory name of this process's own.
async fn bind<M: MessageMiddleware>(middleware: &M) -> Result<Endpoint, Failure> {
    static NAMES: AtomicU64 = AtomicU64::new(0);
    let address = if middleware.scheme() == dms::shm::SCHEME {
        let n = NAMES.fetch_add(1, Ordering::Relaxed);
        format!("dms-bench-{}-{n}", std::process::id())
    } else {
        "127.0.0.1:0".to_owned()
    };
    let any = Endpoint::new(middleware.scheme(), &address).map_err(|e| fail("bind", e))?;
    middleware.bind(&any).await.map_err(|e| fail("bind", e))
}

/// Starts the other side: a second `dms` process, or a task here.
async fn start_worker(link: Link, in_process: bool) -> Result<(Endpoint, Option<Worker>), Failure> {
    if in_process {
        let endpoint = match link {
            Link::Tcp => spawn_serve(TcpMiddleware::new(TcpConfig::default())).await?,
            Link::Quic => spawn_serve(quic("worker")?).await?,
            Link::Shm(wait) => spawn_serve(shm(wait)?).await?,
        };
        return Ok((endpoint, None));
    }
    let worker = spawn(link.worker()).await?;
    let endpoint = worker.endpoint.parse().map_err(|e| fail("worker", e))?;
    Ok((endpoint, Some(worker)))
}

async fn spawn_serve<M: MessageMiddleware>(middleware: M) -> Result<Endpoint, Failure> {
    let endpoint = bind(&middleware).await?;
    tokio::spawn(serve(middleware));
    Ok(endpoint)
}

/// The next message, skipping link events, within 30 s.
async fn next_message<M: MessageMiddleware>(middleware: &M) -> Result<Multipart, Failure> {
    tokio::time::timeout(Duration::from_secs(30), next_message_untimed(middleware))
        .await
        .map_err(|_| fail("receive", "no message within 30 s"))?
}

/// The next message, skipping link events (the round-trip loop's: no timer per message,
/// as the raw tokio peer has none; the loop as a whole has one).
async fn next_message_untimed<M: MessageMiddleware>(middleware: &M) -> Result<Multipart, Failure> {
    loop {
        let item = middleware.recv().await.map_err(|e| fail("receive", e))?;
        match item {
            Incoming::Message(msg) => return Ok(msg),
            Incoming::LinkDown { cause, .. } => return Err(fail("link", cause)),
            _ => {}
        }
    }
}

/// Sends without waiting while the link has room; gives the message back when it is full.
fn try_push<M: MessageMiddleware>(
    middleware: &M,
    msg: Multipart,
) -> Result<Option<Multipart>, Failure> {
    match middleware.try_send(msg) {
        Ok(()) => Ok(None),
        Err(SendError::Full { msg, .. }) => Ok(Some(*msg)),
        Err(error) => Err(fail("send", error)),
    }
}

/// Sends, waiting for room if the link is full.
async fn push<M: MessageMiddleware>(middleware: &M, msg: Multipart) -> Result<(), Failure> {
    middleware.send(msg).await.map_err(|e| fail("send", e))
}

async fn throughput<M: MessageMiddleware>(
    middleware: &M,
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

async fn round_trips<M: MessageMiddleware>(
    middleware: &M,
    peer: &PeerId,
    size: usize,
    window: Duration,
) -> Result<Vec<Line>, Failure> {
    push(middleware, control(peer, "echo")).await?;
    let msg = Multipart::from_frames([peer.to_frame(), Bytes::from(vec![0x5a; size])]);
    let mut histogram = Histogram::<u64>::new(3).map_err(|e| fail("histogram", e))?;
    let mut round_trips = RoundTrips::new(window);
    let measured = async {
        while let Some(record) = round_trips.next_one() {
            let sent = Instant::now();
            push(middleware, msg.clone()).await?;
            next_message_untimed(middleware).await?;
            if record {
                let _ = histogram.record(sent.elapsed().as_nanos() as u64);
            }
        }
        Ok::<_, Failure>(())
    };
    tokio::time::timeout(window + Duration::from_secs(30), measured)
        .await
        .map_err(|_| fail("round trips", "no end within the window + 30 s"))??;
    Ok(rtt_lines("tcp", "router-dealer", size, &histogram))
}

pub(crate) async fn run(
    medium: Medium,
    window: Duration,
    in_process: bool,
    emit: &mut impl FnMut(Line),
) -> Result<(), Failure> {
    for &link in medium.links() {
        run_link(link, window, in_process, emit).await?;
    }
    Ok(())
}

/// One run of the scenario, with a worker of its own.
async fn run_link(
    link: Link,
    window: Duration,
    in_process: bool,
    emit: &mut impl FnMut(Line),
) -> Result<(), Failure> {
    eprintln!(
        "transport: {}, {}, {} ...",
        link.describe(),
        if in_process {
            "in one process"
        } else {
            "two processes"
        },
        super::worker::flavour_name()
    );
    let (endpoint, child) = start_worker(link, in_process).await?;
    let mut emit = |mut line: Line| {
        line.transport = link.name();
        line.pattern.push_str(link.pattern_suffix());
        emit(line);
    };
    let result = match link {
        Link::Tcp => {
            measure(
                TcpMiddleware::new(TcpConfig::default()),
                &endpoint,
                window,
                &mut emit,
            )
            .await
        }
        Link::Quic => measure(quic("bench")?, &endpoint, window, &mut emit).await,
        Link::Shm(wait) => measure(shm(wait)?, &endpoint, window, &mut emit).await,
    };
    drop(child);
    result
}

/// Every measurement of the scenario from a fresh `middleware` to the worker at
/// `endpoint`, the connect (handshake) time first.
async fn measure<M: MessageMiddleware>(
    middleware: M,
    endpoint: &Endpoint,
    window: Duration,
    emit: &mut impl FnMut(Line),
) -> Result<(), Failure> {
    let started = Instant::now();
    let peer = middleware
        .connect(endpoint)
        .await
        .map_err(|e| fail("connect", e))?;
    emit(Line {
        peer: "dms",
        transport: "tcp",
        pattern: "connect".to_owned(),
        metric: "handshake_us",
        // No payload: the time from dialling to a link ready for messages.
        msg_size: 0,
        value: started.elapsed().as_secs_f64() * 1e6,
        n: 1,
        frames: 1,
        histogram: None,
    });
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

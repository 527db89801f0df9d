//! A loopback TCP fault proxy: delay, jitter, blackhole (half-open), reset, bandwidth
//! cap and refusal, each one way or both, changeable while connections are live.
//!
//! A client connects to [`TcpProxy::local_addr`] instead of the target; for each
//! accepted connection the proxy opens one upstream connection to the target and pumps
//! bytes both ways. What it does to them is set at run time through the proxy's setters
//! (they apply to live connections at once, and to new ones):
//!
//! - [`set_delay`](TcpProxy::set_delay) and [`set_jitter`](TcpProxy::set_jitter): each
//!   chunk read is written `delay + U[0, jitter]` after it was read, never before the
//!   chunk read ahead of it (order is preserved; jitter only bunches chunks up);
//! - [`set_blackhole`](TcpProxy::set_blackhole): nothing is forwarded any more, not even
//!   an end of stream, while both sockets stay open: a true half-open link, which only
//!   heartbeats can detect. The proxy stops reading the blackholed direction, so its
//!   sender meets TCP's flow control as behind a dead path. Off again, what was held is
//!   forwarded;
//! - [`reset`](TcpProxy::reset): every live connection is closed at once with
//!   `SO_LINGER = 0`, so the side(s) chosen get an RST (`ConnectionReset`), the other a
//!   plain close;
//! - [`set_bandwidth`](TcpProxy::set_bandwidth): at most that many bytes per second;
//! - [`set_refuse`](TcpProxy::set_refuse): new connections are accepted and closed at
//!   once, without dialling the target (live ones are untouched).
//!
//! Each knob but refusal applies to one [`Way`] or both. Every buffer is bounded: one
//! read chunk of [`TcpProxy::CHUNK`] bytes in hand and [`TcpProxy::QUEUED_CHUNKS`] in
//! flight per direction of a connection, and at most [`TcpProxy::MAX_CONNECTIONS`]
//! connections at once (beyond, new ones are refused and counted).
//!
//! The jitter of each connection and direction comes from a [`fastrand::Rng`] seeded from
//! [`TcpProxy::start_seeded`]'s seed (printed on stderr when a test panics while the
//! proxy is alive). Counters ([`TcpProxy::stats`]) tell what happened, so a test can
//! assert that a fault really occurred. Dropping the proxy stops every task and closes
//! every socket.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use dms_test_support::tcp_proxy::{TcpProxy, Way};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let server = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let proxy = TcpProxy::start(server.local_addr()?);
//! proxy.set_delay(Way::Both, std::time::Duration::from_millis(5));
//! let mut client = tokio::net::TcpStream::connect(proxy.local_addr()).await?;
//! let (mut upstream, _) = server.accept().await?;
//! client.write_all(b"hello").await?;
//! let mut buf = [0u8; 5];
//! upstream.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"hello");
//! assert_eq!(proxy.stats().to_target.bytes, 5);
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Which direction a knob applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Client → target.
    ToTarget,
    /// Target → client.
    ToClient,
    /// Both.
    Both,
}

impl Way {
    fn includes(self, dir: Dir) -> bool {
        matches!(
            (self, dir),
            (Self::Both, _) | (Self::ToTarget, Dir::ToTarget) | (Self::ToClient, Dir::ToClient)
        )
    }
}

/// One direction, as the pumps know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToTarget,
    ToClient,
}

/// The knobs of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DirKnobs {
    delay: Duration,
    jitter: Duration,
    blackhole: bool,
    /// Bytes per second; `None`: unlimited.
    bandwidth: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Knobs {
    to_target: DirKnobs,
    to_client: DirKnobs,
    refuse: bool,
}

impl Knobs {
    fn dir(&self, dir: Dir) -> &DirKnobs {
        match dir {
            Dir::ToTarget => &self.to_target,
            Dir::ToClient => &self.to_client,
        }
    }

    fn set(&mut self, way: Way, change: impl Fn(&mut DirKnobs)) {
        if way.includes(Dir::ToTarget) {
            change(&mut self.to_target);
        }
        if way.includes(Dir::ToClient) {
            change(&mut self.to_client);
        }
    }
}

/// A reset order: its sequence number and the sides that get an RST.
#[derive(Debug, Clone, Copy)]
struct ResetOrder {
    seq: u64,
    way: Way,
}

/// What happened to the bytes going one way.
#[derive(Debug, Default)]
struct Counters {
    bytes: AtomicU64,
    chunks: AtomicU64,
    held: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Counts {
        Counts {
            bytes: self.bytes.load(Ordering::Relaxed),
            chunks: self.chunks.load(Ordering::Relaxed),
            held: self.held.load(Ordering::Relaxed),
        }
    }
}

/// Counts of one direction, over every connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Bytes written on.
    pub bytes: u64,
    /// Chunks written on (a chunk is what one read returned).
    pub chunks: u64,
    /// Chunks (or ends of stream) a blackhole held back: each time one is found
    /// blackholed when it is read or about to be written.
    pub held: u64,
}

/// Counters of a proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted and joined to an upstream connection.
    pub accepted: u64,
    /// Connections accepted and closed at once (refusal on, or too many connections).
    pub refused: u64,
    /// Connections whose upstream connection to the target failed (closed at once).
    pub upstream_failed: u64,
    /// Connections closed by [`TcpProxy::reset`].
    pub reset: u64,
    /// Connections open now.
    pub live: u64,
    /// Client → target.
    pub to_target: Counts,
    /// Target → client.
    pub to_client: Counts,
}

#[derive(Debug, Default)]
struct Shared {
    accepted: AtomicU64,
    refused: AtomicU64,
    upstream_failed: AtomicU64,
    reset: AtomicU64,
    live: AtomicU64,
    to_target: Counters,
    to_client: Counters,
}

impl Shared {
    fn counters(&self, dir: Dir) -> &Counters {
        match dir {
            Dir::ToTarget => &self.to_target,
            Dir::ToClient => &self.to_client,
        }
    }
}

/// A running proxy; see the [module docs](self). Dropping it stops it.
#[derive(Debug)]
pub struct TcpProxy {
    local_addr: SocketAddr,
    target: SocketAddr,
    seed: u64,
    knobs: watch::Sender<Knobs>,
    resets: watch::Sender<ResetOrder>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Largest chunk read at once.
    pub const CHUNK: usize = 16 << 10;
    /// Chunks in flight (read, not yet written) per direction of a connection.
    pub const QUEUED_CHUNKS: usize = 64;
    /// Connections at once; beyond, new ones are refused.
    pub const MAX_CONNECTIONS: usize = 4096;
    /// Longest the proxy waits for its upstream connection.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    /// Starts a proxy on a fresh loopback port forwarding to `target`, without faults,
    /// the jitter seeded from `DMS_PROXY_SEED` or at random. Must be called inside a
    /// tokio runtime.
    ///
    /// # Panics
    ///
    /// If the loopback socket cannot be bound.
    pub fn start(target: SocketAddr) -> Self {
        Self::start_seeded(target, crate::udp_proxy::Faults::seed_from_env())
    }

    /// As [`start`](Self::start), with the jitter's seed.
    ///
    /// # Panics
    ///
    /// If the loopback socket cannot be bound.
    pub fn start_seeded(target: SocketAddr, seed: u64) -> Self {
        let ip: std::net::IpAddr = if target.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        let listener = std::net::TcpListener::bind(SocketAddr::new(ip, 0))
            .expect("bind the proxy's loopback port");
        listener.set_nonblocking(true).expect("non-blocking socket");
        let listener =
            TcpListener::from_std(listener).expect("the proxy needs a tokio runtime with net");
        let local_addr = listener.local_addr().expect("proxy socket address");
        let (knobs, _) = watch::channel(Knobs::default());
        let (resets, _) = watch::channel(ResetOrder {
            seq: 0,
            way: Way::Both,
        });
        let shared = Arc::new(Shared::default());
        let front = Front {
            listener,
            target,
            seed,
            knobs: knobs.subscribe(),
            resets: resets.subscribe(),
            shared: shared.clone(),
        };
        let task = tokio::spawn(front.run());
        Self {
            local_addr,
            target,
            seed,
            knobs,
            resets,
            shared,
            task,
        }
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address connections are forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The jitter's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Each chunk going `way` is written `delay` (plus the jitter) after it was read.
    pub fn set_delay(&self, way: Way, delay: Duration) {
        self.knobs.send_modify(|k| k.set(way, |d| d.delay = delay));
    }

    /// A random extra delay in `[0, jitter]` per chunk going `way` (order preserved).
    pub fn set_jitter(&self, way: Way, jitter: Duration) {
        self.knobs
            .send_modify(|k| k.set(way, |d| d.jitter = jitter));
    }

    /// Stops (`true`) or resumes (`false`) forwarding `way`, sockets kept open.
    pub fn set_blackhole(&self, way: Way, on: bool) {
        self.knobs.send_modify(|k| k.set(way, |d| d.blackhole = on));
    }

    /// Caps `way` at `bytes_per_second` (each direction of each connection on its own);
    /// `None` lifts the cap.
    pub fn set_bandwidth(&self, way: Way, bytes_per_second: Option<u64>) {
        let cap = bytes_per_second.map(|b| b.max(1));
        self.knobs
            .send_modify(|k| k.set(way, |d| d.bandwidth = cap));
    }

    /// Refuses new connections (accepted and closed at once) while `true`.
    pub fn set_refuse(&self, on: bool) {
        self.knobs.send_modify(|k| k.refuse = on);
    }

    /// Every connection live now is closed at once; the client gets an RST if `way`
    /// includes [`Way::ToClient`], the target if it includes [`Way::ToTarget`] (the other
    /// side, if any, a plain close). New connections are not affected.
    pub fn reset(&self, way: Way) {
        self.resets.send_modify(|r| {
            r.seq += 1;
            r.way = way;
        });
    }

    /// What happened so far.
    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            accepted: s.accepted.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            upstream_failed: s.upstream_failed.load(Ordering::Relaxed),
            reset: s.reset.load(Ordering::Relaxed),
            live: s.live.load(Ordering::Relaxed),
            to_target: s.to_target.snapshot(),
            to_client: s.to_client.snapshot(),
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // The front task owns the connection tasks (a JoinSet), which own their pumps:
        // aborting it drops every task and socket.
        self.task.abort();
        if std::thread::panicking() {
            eprintln!(
                "TcpProxy to {} (replay with DMS_PROXY_SEED={}), knobs {:?}, {:?}",
                self.target,
                self.seed,
                *self.knobs.borrow(),
                self.stats()
            );
        }
    }
}

/// The accept loop.
struct Front {
    listener: TcpListener,
    target: SocketAddr,
    seed: u64,
    knobs: watch::Receiver<Knobs>,
    resets: watch::Receiver<ResetOrder>,
    shared: Arc<Shared>,
}

impl Front {
    async fn run(mut self) {
        let mut connections = JoinSet::new();
        let mut index: u64 = 0;
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let Ok((client, _)) = accepted else {
                        // Out of descriptors, or reset before accept: do not spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let refuse = self.knobs.borrow().refuse
                        || connections.len() >= TcpProxy::MAX_CONNECTIONS;
                    if refuse {
                        self.shared.refused.fetch_add(1, Ordering::Relaxed);
                        drop(client);
                        continue;
                    }
                    index = index.wrapping_add(1);
                    // Resets ordered before the accept are not for it (a clone keeps the
                    // version seen).
                    self.resets.borrow_and_update();
                    let connection = Connection {
                        target: self.target,
                        seed: self.seed.wrapping_add(index.wrapping_mul(2)),
                        knobs: self.knobs.clone(),
                        resets: self.resets.clone(),
                        shared: self.shared.clone(),
                    };
                    connections.spawn(connection.run(client));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }
}

/// One accepted connection and its upstream connection.
struct Connection {
    target: SocketAddr,
    seed: u64,
    knobs: watch::Receiver<Knobs>,
    resets: watch::Receiver<ResetOrder>,
    shared: Arc<Shared>,
}

/// What goes from a direction's reader to its writer.
enum Item {
    /// A chunk and when it may be written.
    Data(Instant, Bytes),
    /// The source was reset or failed: close the destination with an RST.
    Abort,
}

/// How one direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// End of stream forwarded (or the proxy is stopping).
    Clean,
    /// The source failed: the destination gets an RST, the connection ends.
    RstDestination,
    /// The destination failed: the source gets an RST, the connection ends.
    RstSource,
}

/// Keeps the live-connection gauge right whatever way the connection ends.
struct LiveGuard(Arc<Shared>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Closes a socket with an RST when it is dropped.
fn rst_on_close(stream: &TcpStream) {
    // Deprecated because a non-zero linger blocks the thread on drop; a zero linger
    // never blocks (the kernel discards the queue and sends the RST).
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
}

impl Connection {
    async fn run(self, client: TcpStream) {
        let connect =
            tokio::time::timeout(TcpProxy::CONNECT_TIMEOUT, TcpStream::connect(self.target));
        let Ok(Ok(upstream)) = connect.await else {
            self.shared.upstream_failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.shared.accepted.fetch_add(1, Ordering::Relaxed);
        self.shared.live.fetch_add(1, Ordering::Relaxed);
        let _live = LiveGuard(self.shared.clone());
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (mut client_read, mut client_write) = client.into_split();
        let (mut upstream_read, mut upstream_write) = upstream.into_split();
        // (RST the client, RST the upstream) once the pumps are gone.
        let rst = {
            let to_target = self.direction(Dir::ToTarget, &mut client_read, &mut upstream_write);
            let to_client = self.direction(Dir::ToClient, &mut upstream_read, &mut client_write);
            let mut to_target = std::pin::pin!(to_target);
            let mut to_client = std::pin::pin!(to_client);
            let (mut target_done, mut client_done) = (false, false);
            // It has seen the resets ordered before its accept (see `Front::run`): one
            // ordered since, even while it was dialling the target, is for it.
            let mut resets = self.resets.clone();
            loop {
                tokio::select! {
                    changed = resets.changed() => {
                        if changed.is_err() {
                            break (false, false);
                        }
                        let way = resets.borrow_and_update().way;
                        self.shared.reset.fetch_add(1, Ordering::Relaxed);
                        break (way.includes(Dir::ToClient), way.includes(Dir::ToTarget));
                    }
                    ended = &mut to_target, if !target_done => {
                        target_done = true;
                        match ended {
                            Ended::Clean => {}
                            Ended::RstDestination => break (false, true),
                            Ended::RstSource => break (true, false),
                        }
                    }
                    ended = &mut to_client, if !client_done => {
                        client_done = true;
                        match ended {
                            Ended::Clean => {}
                            Ended::RstDestination => break (true, false),
                            Ended::RstSource => break (false, true),
                        }
                    }
                }
                if target_done && client_done {
                    break (false, false);
                }
            }
        };
        // A write half dropped sends a FIN first: `forget` leaves the close to the read
        // half, with the RST.
        if rst.0 {
            rst_on_close(client_read.as_ref());
            client_write.forget();
        }
        if rst.1 {
            rst_on_close(upstream_read.as_ref());
            upstream_write.forget();
        }
    }

    /// Pumps one direction until it ends.
    async fn direction(
        &self,
        dir: Dir,
        read: &mut OwnedReadHalf,
        write: &mut OwnedWriteHalf,
    ) -> Ended {
        let seed = match dir {
            Dir::ToTarget => self.seed,
            Dir::ToClient => self.seed.wrapping_add(1),
        };
        let (tx, rx) = mpsc::channel(TcpProxy::QUEUED_CHUNKS);
        let mut reader = Pump {
            dir,
            knobs: self.knobs.clone(),
            shared: self.shared.clone(),
        };
        let mut writer = Pump {
            dir,
            knobs: self.knobs.clone(),
            shared: self.shared.clone(),
        };
        let rng = fastrand::Rng::with_seed(seed);
        // The writer decides: it ends once the reader has ended (its queue closed) and
        // everything read is written, or at once on a failure.
        let reader = async {
            reader.read(read, tx, rng).await;
            std::future::pending::<()>().await;
        };
        tokio::select! {
            ended = writer.write(rx, write) => ended,
            () = reader => Ended::Clean,
        }
    }
}

/// One end of one direction of a connection.
struct Pump {
    dir: Dir,
    knobs: watch::Receiver<Knobs>,
    shared: Arc<Shared>,
}

impl Pump {
    fn knobs(&self) -> DirKnobs {
        *self.knobs.borrow().dir(self.dir)
    }

    /// Waits while the direction is blackholed (counting a hold if it is); `false` if the
    /// proxy is gone.
    async fn through_blackhole(&mut self) -> bool {
        if !self.knobs().blackhole {
            return true;
        }
        self.shared
            .counters(self.dir)
            .held
            .fetch_add(1, Ordering::Relaxed);
        let dir = self.dir;
        self.knobs.wait_for(|k| !k.dir(dir).blackhole).await.is_ok()
    }

    /// Reads chunks (not while blackholed) and stamps each with the time it may be
    /// written, until end of stream or an error.
    async fn read(
        &mut self,
        read: &mut OwnedReadHalf,
        tx: mpsc::Sender<Item>,
        mut rng: fastrand::Rng,
    ) {
        let mut buf = vec![0u8; TcpProxy::CHUNK];
        let mut last_due = Instant::now();
        loop {
            if !self.through_blackhole().await {
                return;
            }
            let Ok(n) = read.read(&mut buf).await else {
                let _ = tx.send(Item::Abort).await;
                return;
            };
            // Read just before a blackhole began: held too (an end of stream as well).
            if !self.through_blackhole().await {
                return;
            }
            if n == 0 {
                return; // dropping `tx` ends the writer, which forwards the end of stream
            }
            let knobs = self.knobs();
            let jitter = u64::try_from(knobs.jitter.as_nanos()).unwrap_or(u64::MAX);
            let extra = Duration::from_nanos(if jitter == 0 { 0 } else { rng.u64(0..=jitter) });
            let due = (Instant::now() + knobs.delay + extra).max(last_due);
            last_due = due;
            let chunk = Bytes::copy_from_slice(&buf[..n]);
            if tx.send(Item::Data(due, chunk)).await.is_err() {
                return;
            }
        }
    }

    /// Writes the chunks when due, at the bandwidth cap, not while blackholed.
    async fn write(&mut self, mut rx: mpsc::Receiver<Item>, write: &mut OwnedWriteHalf) -> Ended {
        let mut next_at = Instant::now();
        loop {
            let (due, chunk) = match rx.recv().await {
                None => {
                    let _ = write.shutdown().await;
                    return Ended::Clean;
                }
                Some(Item::Abort) => return Ended::RstDestination,
                Some(Item::Data(due, chunk)) => (due, chunk),
            };
            tokio::time::sleep_until(due).await;
            if !self.through_blackhole().await {
                return Ended::Clean;
            }
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let cap = self.knobs().bandwidth;
                let piece = match cap {
                    // About 50 writes a second at the cap, at least one byte each.
                    Some(rate) => rest
                        .len()
                        .min(usize::try_from(rate / 50).unwrap_or(usize::MAX).max(1)),
                    None => rest.len(),
                };
                tokio::time::sleep_until(next_at).await;
                if write.write_all(&rest[..piece]).await.is_err() {
                    return Ended::RstSource;
                }
                if let Some(rate) = cap {
                    #[allow(clippy::cast_precision_loss)] // a pacing interval
                    let spent = Duration::from_secs_f64(piece as f64 / rate as f64);
                    next_at = next_at.max(Instant::now()) + spent;
                }
                let counters = self.shared.counters(self.dir);
                counters.bytes.fetch_add(piece as u64, Ordering::Relaxed);
                rest = &rest[piece..];
            }
            self.shared
                .counters(self.dir)
                .chunks
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait::within;

    /// A server, a proxy to it, a client through the proxy and the server's side of it.
    async fn pair() -> (TcpStream, TcpStream, TcpProxy) {
        let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = TcpProxy::start_seeded(server.local_addr().expect("addr"), 7);
        let client = TcpStream::connect(proxy.local_addr())
            .await
            .expect("connect");
        let (upstream, _) = within("the upstream connection", server.accept())
            .await
            .expect("accept");
        (client, upstream, proxy)
    }

    async fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        within("bytes through the proxy", stream.read_exact(&mut buf))
            .await
            .expect("read");
        buf
    }

    /// Whether `stream` stays without anything to read (not even an end) for `quiet`.
    async fn silent_for(stream: &mut TcpStream, quiet: Duration) -> bool {
        let mut buf = [0u8; 64];
        tokio::time::timeout(quiet, stream.read(&mut buf))
            .await
            .is_err()
    }

    #[tokio::test]
    async fn forwards_both_ways_and_ends_of_stream() {
        let (mut client, mut upstream, proxy) = pair().await;
        client.write_all(b"ping").await.expect("write");
        assert_eq!(read_exactly(&mut upstream, 4).await, b"ping");
        upstream.write_all(b"pong!").await.expect("write");
        assert_eq!(read_exactly(&mut client, 5).await, b"pong!");
        client.shutdown().await.expect("half-close");
        let mut rest = Vec::new();
        within("the end of stream", upstream.read_to_end(&mut rest))
            .await
            .expect("read");
        assert!(rest.is_empty());
        // Half-closed, the other way still flows.
        upstream.write_all(b"late").await.expect("write");
        assert_eq!(read_exactly(&mut client, 4).await, b"late");
        let stats = proxy.stats();
        assert_eq!((stats.to_target.bytes, stats.to_client.bytes), (4, 9));
        assert_eq!((stats.accepted, stats.live), (1, 1));
        drop(upstream);
        within("the connection to end", async {
            while proxy.stats().live > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    #[tokio::test]
    async fn delay_and_jitter_hold_chunks_back_in_order() {
        let (mut client, mut upstream, proxy) = pair().await;
        proxy.set_delay(Way::ToTarget, Duration::from_millis(40));
        proxy.set_jitter(Way::ToTarget, Duration::from_millis(40));
        let sent_at = Instant::now();
        for i in 0u8..30 {
            client.write_all(&[i]).await.expect("write");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let got = read_exactly(&mut upstream, 30).await;
        assert_eq!(got, (0u8..30).collect::<Vec<_>>(), "order preserved");
        assert!(sent_at.elapsed() >= Duration::from_millis(40));
        // The other way is not delayed: a reply comes back before the delay could pass.
        proxy.set_delay(Way::ToTarget, Duration::from_secs(3600));
        let asked = Instant::now();
        upstream.write_all(b"x").await.expect("write");
        read_exactly(&mut client, 1).await;
        assert!(asked.elapsed() < Duration::from_secs(60));
        assert!(proxy.stats().to_target.chunks >= 1);
    }

    #[tokio::test]
    async fn a_blackhole_holds_everything_keeps_both_sockets_open_and_heals() {
        let (mut client, mut upstream, proxy) = pair().await;
        client.write_all(b"before").await.expect("write");
        assert_eq!(read_exactly(&mut upstream, 6).await, b"before");
        proxy.set_blackhole(Way::Both, true);
        client.write_all(b"held").await.expect("write");
        upstream.write_all(b"also").await.expect("write");
        // Even the end of stream is held: the server sees neither data nor a close.
        client.shutdown().await.expect("half-close");
        assert!(silent_for(&mut upstream, Duration::from_millis(200)).await);
        assert!(silent_for(&mut client, Duration::from_millis(50)).await);
        let held = proxy.stats();
        assert!(
            held.to_target.held >= 1 && held.to_client.held >= 1,
            "{held:?}"
        );
        assert_eq!(held.to_target.bytes, 6);
        assert_eq!(held.live, 1, "both sockets still open");
        proxy.set_blackhole(Way::Both, false);
        assert_eq!(read_exactly(&mut upstream, 4).await, b"held");
        assert_eq!(read_exactly(&mut client, 4).await, b"also");
        let mut rest = Vec::new();
        within("the held end of stream", upstream.read_to_end(&mut rest))
            .await
            .expect("read");
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn a_one_way_blackhole_lets_the_other_way_through() {
        let (mut client, mut upstream, proxy) = pair().await;
        proxy.set_blackhole(Way::ToClient, true);
        client.write_all(b"up").await.expect("write");
        assert_eq!(read_exactly(&mut upstream, 2).await, b"up");
        upstream.write_all(b"down").await.expect("write");
        assert!(silent_for(&mut client, Duration::from_millis(200)).await);
        proxy.set_blackhole(Way::ToClient, false);
        assert_eq!(read_exactly(&mut client, 4).await, b"down");
    }

    #[tokio::test]
    async fn reset_gives_both_sides_an_rst() {
        let (mut client, mut upstream, proxy) = pair().await;
        client.write_all(b"hi").await.expect("write");
        assert_eq!(read_exactly(&mut upstream, 2).await, b"hi");
        proxy.reset(Way::Both);
        let mut buf = [0u8; 8];
        for side in [&mut client, &mut upstream] {
            let read = within("the reset", side.read(&mut buf)).await;
            let err = read.expect_err("an RST, not data or a clean end");
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        }
        assert_eq!(proxy.stats().reset, 1);
    }

    #[tokio::test]
    async fn a_reset_spares_later_connections() {
        let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = TcpProxy::start_seeded(server.local_addr().expect("addr"), 3);
        proxy.reset(Way::Both);
        let mut client = TcpStream::connect(proxy.local_addr())
            .await
            .expect("connect");
        let (mut upstream, _) = within("the upstream connection", server.accept())
            .await
            .expect("accept");
        client.write_all(b"again").await.expect("write");
        assert_eq!(read_exactly(&mut upstream, 5).await, b"again");
        assert_eq!(proxy.stats().reset, 0);
    }

    #[tokio::test]
    async fn a_one_way_reset_closes_the_other_side_cleanly() {
        let (mut client, mut upstream, proxy) = pair().await;
        proxy.reset(Way::ToClient);
        let mut buf = [0u8; 8];
        let err = within("the client's RST", client.read(&mut buf))
            .await
            .expect_err("an RST");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        let n = within("the server's close", upstream.read(&mut buf))
            .await
            .expect("a clean close");
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn bandwidth_slows_a_transfer() {
        let (mut client, mut upstream, proxy) = pair().await;
        // 64 KiB at 128 KiB/s: about half a second; asserted loosely (at least a
        // quarter of a second), never tightly.
        proxy.set_bandwidth(Way::ToTarget, Some(128 << 10));
        let data = vec![7u8; 64 << 10];
        let started = Instant::now();
        let writer = tokio::spawn(async move {
            client.write_all(&data).await.expect("write");
            client
        });
        let got = read_exactly(&mut upstream, 64 << 10).await;
        let took = started.elapsed();
        assert!(got.iter().all(|&b| b == 7));
        assert!(took >= Duration::from_millis(250), "64 KiB took {took:?}");
        let mut client = writer.await.expect("writer");
        // Lifted, the same transfer is not paced.
        proxy.set_bandwidth(Way::ToTarget, None);
        client.write_all(&[1u8; 1024]).await.expect("write");
        read_exactly(&mut upstream, 1024).await;
        assert_eq!(proxy.stats().to_target.bytes, (64 << 10) + 1024);
    }

    #[tokio::test]
    async fn refused_connections_are_closed_without_reaching_the_target() {
        let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = TcpProxy::start_seeded(server.local_addr().expect("addr"), 1);
        proxy.set_refuse(true);
        let mut client = TcpStream::connect(proxy.local_addr())
            .await
            .expect("the listener accepts");
        let mut buf = [0u8; 8];
        let read = within("the refusal", client.read(&mut buf)).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let stats = proxy.stats();
        assert_eq!((stats.refused, stats.accepted), (1, 0));
        proxy.set_refuse(false);
        let _client = TcpStream::connect(proxy.local_addr())
            .await
            .expect("connect");
        within("an accepted connection", server.accept())
            .await
            .expect("accept");
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_its_connections() {
        let (mut client, mut upstream, proxy) = pair().await;
        drop(proxy);
        let mut buf = [0u8; 8];
        for side in [&mut client, &mut upstream] {
            let read = within("the close", side.read(&mut buf)).await;
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
    }
}

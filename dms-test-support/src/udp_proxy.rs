//! A loopback UDP proxy that loses and reorders datagrams, for fault tests of datagram
//! transports (QUIC).
//!
//! A client sends to [`UdpProxy::local_addr`] instead of the server; the proxy forwards
//! each datagram to the target from an upstream socket of its own (one per client
//! address, so the target sees one address per client, as behind a NAT), and the
//! target's answers back to the client. In both directions each datagram is
//!
//! - **dropped** with probability [`Faults::drop`];
//! - otherwise **held back** with probability [`Faults::reorder`] and sent right after
//!   the next datagram of the same direction, so it arrives after a datagram sent later
//!   (a held datagram nothing overtakes within [`UdpProxy::HOLD_MAX`] is sent then, late
//!   but not reordered, so a quiet link does not turn a hold into a loss);
//! - otherwise forwarded at once.
//!
//! Every decision comes from a [`fastrand::Rng`] seeded from [`Faults::seed`] (one
//! generator per client and direction, derived from the seed), so the fault pattern of a
//! run can be replayed: the seed is printed on stderr when a test panics while the proxy
//! is alive, and [`Faults::seed_from_env`] reads it back from `DMS_PROXY_SEED`. (Timing
//! still varies between runs; the decisions for the n-th datagram of a direction do not.)
//!
//! Counters ([`UdpProxy::stats`]) tell what happened, so a test can assert that faults
//! really occurred and did not pass vacuously. Dropping the proxy stops all its tasks
//! and closes its sockets.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use dms_test_support::udp_proxy::{Faults, UdpProxy};
//!
//! let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
//! let proxy = UdpProxy::start(server.local_addr()?, Faults::none());
//! let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
//! client.send_to(b"hello", proxy.local_addr()).await?;
//! let mut buf = [0u8; 16];
//! let (n, via) = server.recv_from(&mut buf).await?;
//! assert_eq!(&buf[..n], b"hello");
//! server.send_to(b"back", via).await?;
//! let (n, from) = client.recv_from(&mut buf).await?;
//! assert_eq!((&buf[..n], from), (&b"back"[..], proxy.local_addr()));
//! assert_eq!(proxy.stats().forwarded(), 2);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// Largest datagram forwarded (bigger ones are truncated by the socket, as on a real path
/// with that MTU; QUIC sends at most ~1,500 bytes).
const MAX_DATAGRAM: usize = 64 << 10;

/// Datagrams from one client waiting to be forwarded before more are dropped.
const CLIENT_QUEUE: usize = 1024;

/// What the proxy does to datagrams, in both directions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Probability that a datagram is dropped (0.0..=1.0).
    pub drop: f64,
    /// Probability that a datagram not dropped is held back and sent after the next one.
    pub reorder: f64,
    /// Seed of the fault decisions.
    pub seed: u64,
}

impl Faults {
    /// No faults: every datagram is forwarded at once.
    pub fn none() -> Self {
        Self {
            drop: 0.0,
            reorder: 0.0,
            seed: 0,
        }
    }

    /// The seed in the environment variable `DMS_PROXY_SEED` (to replay a failed run),
    /// else a fresh random one.
    pub fn seed_from_env() -> u64 {
        std::env::var("DMS_PROXY_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| fastrand::u64(..))
    }
}

/// What happened to datagrams going one way.
#[derive(Debug, Default)]
struct Counters {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    reordered: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Counts {
        Counts {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            reordered: self.reordered.load(Ordering::Relaxed),
        }
    }
}

/// Counts of datagrams going one way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Datagrams sent on (reordered ones included).
    pub forwarded: u64,
    /// Datagrams dropped (by the fault rolls, or because a queue or socket was full).
    pub dropped: u64,
    /// Datagrams that were held back and sent after a later one.
    pub reordered: u64,
}

/// Counters of a proxy, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client → target.
    pub to_target: Counts,
    /// Target → client.
    pub to_client: Counts,
}

impl ProxyStats {
    /// Datagrams forwarded, both ways.
    pub fn forwarded(&self) -> u64 {
        self.to_target.forwarded + self.to_client.forwarded
    }

    /// Datagrams dropped, both ways.
    pub fn dropped(&self) -> u64 {
        self.to_target.dropped + self.to_client.dropped
    }

    /// Datagrams delivered out of order, both ways.
    pub fn reordered(&self) -> u64 {
        self.to_target.reordered + self.to_client.reordered
    }
}

#[derive(Debug, Default)]
struct Shared {
    to_target: Counters,
    to_client: Counters,
    /// Every datagram is dropped, both ways (counted as dropped), while set.
    blackhole: std::sync::atomic::AtomicBool,
}

/// A running proxy; see the [module docs](self). Dropping it stops it.
#[derive(Debug)]
pub struct UdpProxy {
    local_addr: SocketAddr,
    faults: Faults,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl UdpProxy {
    /// Longest a held-back datagram waits for a later one to overtake it.
    pub const HOLD_MAX: Duration = Duration::from_millis(20);

    /// Starts a proxy on a fresh loopback port forwarding to `target` with `faults`. Must
    /// be called inside a tokio runtime.
    ///
    /// # Panics
    ///
    /// If the loopback socket cannot be bound, or a probability is outside 0.0..=1.0.
    pub fn start(target: SocketAddr, faults: Faults) -> Self {
        assert!(
            (0.0..=1.0).contains(&faults.drop) && (0.0..=1.0).contains(&faults.reorder),
            "fault probabilities must be within 0.0..=1.0: {faults:?}"
        );
        let ip: std::net::IpAddr = if target.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        let front = bind(SocketAddr::new(ip, 0));
        let local_addr = front.local_addr().expect("proxy socket address");
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(front_loop(Arc::new(front), target, faults, shared.clone()));
        Self {
            local_addr,
            faults,
            shared,
            task,
        }
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The faults applied (with the seed).
    pub fn faults(&self) -> Faults {
        self.faults
    }

    /// Drops every datagram both ways while `on` (a path gone dark: no ICMP, nothing
    /// back), on top of the faults; counted as dropped.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::Relaxed);
    }

    /// What happened so far.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            to_target: self.shared.to_target.snapshot(),
            to_client: self.shared.to_client.snapshot(),
        }
    }

    /// Datagrams forwarded, both ways.
    pub fn forwarded(&self) -> u64 {
        self.stats().forwarded()
    }

    /// Datagrams dropped, both ways.
    pub fn dropped(&self) -> u64 {
        self.stats().dropped()
    }

    /// Datagrams delivered out of order, both ways.
    pub fn reordered(&self) -> u64 {
        self.stats().reordered()
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        // The front task owns the client tasks (a JoinSet): aborting it aborts them all.
        self.task.abort();
        if std::thread::panicking() {
            eprintln!(
                "UdpProxy faults {:?} (replay with DMS_PROXY_SEED={}), {:?}",
                self.faults,
                self.faults.seed,
                self.stats()
            );
        }
    }
}

fn bind(addr: SocketAddr) -> UdpSocket {
    let socket = std::net::UdpSocket::bind(addr).expect("bind a proxy socket");
    socket.set_nonblocking(true).expect("non-blocking socket");
    UdpSocket::from_std(socket).expect("proxy sockets need a tokio runtime")
}

/// Receives from every client; gives each client's datagrams to its own forwarding task.
async fn front_loop(
    front: Arc<UdpSocket>,
    target: SocketAddr,
    faults: Faults,
    shared: Arc<Shared>,
) {
    let mut clients: HashMap<SocketAddr, mpsc::Sender<Bytes>> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        // ICMP errors (a client went away) surface here on some systems: keep going.
        let Ok((n, client)) = front.recv_from(&mut buf).await else {
            continue;
        };
        let datagram = Bytes::copy_from_slice(&buf[..n]);
        let index = clients.len() as u64;
        let queue = clients.entry(client).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
            let upstream = Arc::new(bind(SocketAddr::new(target.ip(), 0)));
            let seed = faults.seed.wrapping_add(index.wrapping_mul(2));
            let mut up = Direction::new(faults, seed, &shared, true);
            let mut down = Direction::new(faults, seed.wrapping_add(1), &shared, false);
            let to_target = Sink(upstream.clone(), target);
            tasks.spawn(async move { up.run(Queue(rx), to_target).await });
            let from_target = FromTarget {
                socket: upstream,
                target,
                buf: vec![0u8; MAX_DATAGRAM],
            };
            let to_client = Sink(front.clone(), client);
            tasks.spawn(async move { down.run(from_target, to_client).await });
            tx
        });
        if queue.try_send(datagram).is_err() {
            shared.to_target.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The fault state of one direction of one client.
struct Direction {
    faults: Faults,
    rng: fastrand::Rng,
    shared: Arc<Shared>,
    to_target: bool,
    held: Option<Bytes>,
}

impl Direction {
    fn new(faults: Faults, seed: u64, shared: &Arc<Shared>, to_target: bool) -> Self {
        Self {
            faults,
            rng: fastrand::Rng::with_seed(seed),
            shared: shared.clone(),
            to_target,
            held: None,
        }
    }

    fn counters(&self) -> &Counters {
        if self.to_target {
            &self.shared.to_target
        } else {
            &self.shared.to_client
        }
    }

    /// Forwards what `source` yields to `sink` with the faults, until `source` ends.
    async fn run(&mut self, mut source: impl Source, sink: Sink) {
        loop {
            let next = if self.held.is_some() {
                match tokio::time::timeout(UdpProxy::HOLD_MAX, source.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        // Nothing overtook it: send it late, in order.
                        if let Some(held) = self.held.take() {
                            self.forward(&sink, &held, false).await;
                        }
                        continue;
                    }
                }
            } else {
                source.next().await
            };
            let Some(datagram) = next else { return };
            if self.shared.blackhole.load(Ordering::Relaxed) || self.rng.f64() < self.faults.drop {
                self.counters().dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if self.held.is_none() && self.rng.f64() < self.faults.reorder {
                self.held = Some(datagram);
                continue;
            }
            self.forward(&sink, &datagram, false).await;
            if let Some(held) = self.held.take() {
                self.forward(&sink, &held, true).await;
            }
        }
    }

    async fn forward(&self, sink: &Sink, datagram: &[u8], reordered: bool) {
        let counters = self.counters();
        match sink.0.send_to(datagram, sink.1).await {
            Ok(_) => {
                counters.forwarded.fetch_add(1, Ordering::Relaxed);
                if reordered {
                    counters.reordered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Where one direction's datagrams come from. `next` must be cancel-safe.
trait Source: Send {
    fn next(&mut self) -> impl Future<Output = Option<Bytes>> + Send;
}

/// A client's datagrams, as the front task received them.
struct Queue(mpsc::Receiver<Bytes>);

impl Source for Queue {
    async fn next(&mut self) -> Option<Bytes> {
        self.0.recv().await
    }
}

/// The target's datagrams on a client's upstream socket.
struct FromTarget {
    socket: Arc<UdpSocket>,
    target: SocketAddr,
    buf: Vec<u8>,
}

impl Source for FromTarget {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.socket.recv_from(&mut self.buf).await {
                Ok((n, from)) if from == self.target => {
                    return Some(Bytes::copy_from_slice(&self.buf[..n]));
                }
                // Not from the target, or an ICMP error (the target is gone): ignore.
                _ => {}
            }
        }
    }
}

/// A socket and the address it sends one direction's datagrams to.
struct Sink(Arc<UdpSocket>, SocketAddr);

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(faults: Faults) -> (UdpSocket, UdpSocket, UdpProxy) {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let proxy = UdpProxy::start(server.local_addr().expect("addr"), faults);
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        (server, client, proxy)
    }

    async fn recv(socket: &UdpSocket) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("a datagram in time")
            .expect("recv");
        buf.truncate(n);
        buf
    }

    #[tokio::test]
    async fn forwards_both_ways_without_faults() {
        let (server, client, proxy) = pair(Faults::none()).await;
        client
            .send_to(b"one", proxy.local_addr())
            .await
            .expect("send");
        let mut buf = [0u8; 16];
        let (n, via) = server.recv_from(&mut buf).await.expect("recv");
        assert_eq!(&buf[..n], b"one");
        assert_ne!(via, client.local_addr().expect("addr"));
        server.send_to(b"two", via).await.expect("send");
        assert_eq!(recv(&client).await, b"two");
        let stats = proxy.stats();
        assert_eq!(stats.to_target.forwarded, 1);
        assert_eq!(stats.to_client.forwarded, 1);
        assert_eq!((stats.dropped(), stats.reordered()), (0, 0));
    }

    #[tokio::test]
    async fn a_blackhole_drops_both_ways_until_it_is_lifted() {
        let (server, client, proxy) = pair(Faults::none()).await;
        client
            .send_to(b"one", proxy.local_addr())
            .await
            .expect("send");
        let mut buf = [0u8; 16];
        let (_, via) = crate::wait::within("the first datagram", server.recv_from(&mut buf))
            .await
            .expect("recv");
        proxy.set_blackhole(true);
        client
            .send_to(b"dark", proxy.local_addr())
            .await
            .expect("send");
        server.send_to(b"dark", via).await.expect("send");
        crate::wait::within("both dropped", async {
            while proxy.dropped() < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        proxy.set_blackhole(false);
        client
            .send_to(b"two", proxy.local_addr())
            .await
            .expect("send");
        // The next datagram through is the one after the heal: the dark one was dropped.
        assert_eq!(recv(&server).await, b"two");
        assert_eq!((proxy.forwarded(), proxy.dropped()), (2, 2));
    }

    #[tokio::test]
    async fn drops_everything_at_probability_one() {
        let (server, client, proxy) = pair(Faults {
            drop: 1.0,
            reorder: 0.0,
            seed: 1,
        })
        .await;
        for _ in 0..10 {
            client
                .send_to(b"lost", proxy.local_addr())
                .await
                .expect("send");
        }
        let waited = crate::wait::within("ten drops", async {
            while proxy.dropped() < 10 {
                tokio::task::yield_now().await;
            }
        });
        waited.await;
        assert_eq!(proxy.forwarded(), 0);
        let mut buf = [0u8; 16];
        assert!(
            tokio::time::timeout(Duration::from_millis(50), server.recv_from(&mut buf))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn reorders_held_datagrams_behind_the_next() {
        let (server, client, proxy) = pair(Faults {
            drop: 0.0,
            reorder: 1.0,
            seed: 7,
        })
        .await;
        // At probability 1 every other datagram is held and overtaken: 1 0 3 2 ...
        for i in 0u8..6 {
            client
                .send_to(&[i], proxy.local_addr())
                .await
                .expect("send");
        }
        let mut order = Vec::new();
        for _ in 0..6 {
            order.extend(recv(&server).await);
        }
        assert_eq!(order, [1, 0, 3, 2, 5, 4]);
        assert_eq!(proxy.reordered(), 3);
        assert_eq!(proxy.forwarded(), 6);
    }

    #[tokio::test]
    async fn a_held_datagram_alone_is_sent_late() {
        let (server, client, proxy) = pair(Faults {
            drop: 0.0,
            reorder: 1.0,
            seed: 7,
        })
        .await;
        client
            .send_to(b"alone", proxy.local_addr())
            .await
            .expect("send");
        assert_eq!(recv(&server).await, b"alone");
        assert_eq!(proxy.reordered(), 0);
    }

    #[tokio::test]
    async fn the_same_seed_makes_the_same_decisions() {
        let faults = Faults {
            drop: 0.5,
            reorder: 0.0,
            seed: 42,
        };
        let mut runs = Vec::new();
        for _ in 0..2 {
            let (server, client, proxy) = pair(faults).await;
            for i in 0u8..40 {
                client
                    .send_to(&[i], proxy.local_addr())
                    .await
                    .expect("send");
            }
            crate::wait::within("40 decisions", async {
                while proxy.forwarded() + proxy.dropped() < 40 {
                    tokio::task::yield_now().await;
                }
            })
            .await;
            let mut got = Vec::new();
            for _ in 0..proxy.forwarded() {
                got.extend(recv(&server).await);
            }
            runs.push(got);
        }
        assert_eq!(runs[0], runs[1]);
        assert!(!runs[0].is_empty() && runs[0].len() < 40, "{:?}", runs[0]);
    }

    #[tokio::test]
    async fn dropping_the_proxy_stops_it() {
        let (server, client, proxy) = pair(Faults::none()).await;
        let addr = proxy.local_addr();
        drop(proxy);
        // The front socket closes once its task is gone; sends then go nowhere.
        crate::wait::within("the proxy to stop", async {
            while std::net::UdpSocket::bind(addr).is_err() {
                tokio::task::yield_now().await;
            }
        })
        .await;
        let _ = client.send_to(b"x", addr).await;
        let mut buf = [0u8; 16];
        assert!(
            tokio::time::timeout(Duration::from_millis(50), server.recv_from(&mut buf))
                .await
                .is_err()
        );
    }
}

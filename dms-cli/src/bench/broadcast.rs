//! The `broadcast` scenario: kernel broadcast from one node to a cluster of eight (TCP
//! loopback, the embedded discovery, all in this process).
//!
//! A broadcast is one-way: [`Node::broadcast`] returns once the copies are queued, and
//! nothing comes back. So delivery is timed where it happens: each of the eight
//! instances' handlers stamps the moment it takes its copy from `next_request`, on the
//! same clock as the sender. A round lasts from the `broadcast` call until the eighth
//! handler has its copy (one broadcast in flight); throughput counts broadcasts that all
//! eight handlers received, with up to [`IN_FLIGHT`] of them outstanding, from the first
//! call to the last delivery.

use std::time::{Duration, Instant};

use dms::{ClusterPath, MemoryDiscovery, Multipart, Node};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use super::Line;
use super::report::{ROUND, latency_lines};
use crate::failure::Failure;

const WORLD: &str = "/bench/cn/linux/w1/g1";
/// Instances of the cluster broadcast to.
const INSTANCES: usize = 8;
/// Payload bytes of each broadcast (its first 8 are the broadcast's sequence number).
const SIZE: usize = 64;
/// Broadcasts sent and not yet received by every instance, at most, in the throughput
/// run (well under the receivers' inbound queue, so that no copy is dropped).
const IN_FLIGHT: u64 = 64;
/// Longest wait for a copy before the run is declared broken.
const LOST: Duration = Duration::from_secs(10);
const PATTERN: &str = "broadcast-8";

fn fail(what: &str, error: impl std::fmt::Display) -> Failure {
    Failure::Other(format!("bench broadcast {what}: {error}"))
}

fn parse<T: std::str::FromStr>(text: &str) -> Result<T, Failure>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| fail("path", e))
}

/// A copy received: the broadcast's sequence number and when a handler had it.
type Receipt = (u64, Instant);

/// The cluster, the sender, and the receipts of the cluster's handlers.
struct Cluster {
    cluster: ClusterPath,
    sender: Node,
    receivers: Vec<Node>,
    receipts: mpsc::Receiver<Receipt>,
}

impl Cluster {
    async fn start() -> Result<Self, Failure> {
        let discovery = MemoryDiscovery::new();
        // Room for every copy of the broadcasts in flight.
        let (stamp, receipts) = mpsc::channel(2 * INSTANCES * IN_FLIGHT as usize);
        let mut receivers = Vec::with_capacity(INSTANCES);
        for i in 1..=INSTANCES {
            let node = Node::builder(parse(&format!("{WORLD}/Battle/battle-{i}"))?)
                .discovery(discovery.clone())
                .start()
                .await
                .map_err(|e| fail("start", e))?;
            let (server, stamp) = (node.clone(), stamp.clone());
            tokio::spawn(async move {
                while let Some(copy) = server.next_request().await {
                    let at = Instant::now();
                    let seq = copy
                        .body()
                        .frames()
                        .first()
                        .and_then(|frame| frame.get(..8))
                        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                        .map(u64::from_le_bytes);
                    if let Some(seq) = seq {
                        let _ = stamp.send((seq, at)).await;
                    }
                }
            });
            receivers.push(node);
        }
        let cluster: ClusterPath = parse(&format!("{WORLD}/Battle"))?;
        let sender = Node::builder(parse(&format!("{WORLD}/Lobby/lobby-1"))?)
            .discovery(discovery)
            .target(cluster.clone())
            .start()
            .await
            .map_err(|e| fail("start", e))?;
        sender
            .wait_for_instances(&cluster, INSTANCES, Duration::from_secs(10))
            .await
            .map_err(|e| fail("discovery", e))?;
        Ok(Self {
            cluster,
            sender,
            receivers,
            receipts,
        })
    }

    /// Sends broadcast `seq`; fails unless every instance was reached.
    async fn send(&self, seq: u64) -> Result<(), Failure> {
        let mut payload = vec![0x5a_u8; SIZE];
        payload[..8].copy_from_slice(&seq.to_le_bytes());
        let reached = self
            .sender
            .broadcast(&self.cluster, Multipart::from_frames([payload]))
            .await
            .map_err(|e| fail("send", e))?;
        if reached.len() != INSTANCES {
            return Err(fail(
                "send",
                format!("reached {} of {INSTANCES} instances", reached.len()),
            ));
        }
        Ok(())
    }

    /// The next copy received by a handler.
    async fn receipt(&mut self) -> Result<Receipt, Failure> {
        tokio::time::timeout(LOST, self.receipts.recv())
            .await
            .map_err(|_| fail("receive", format!("a copy did not arrive within {LOST:?}")))?
            .ok_or_else(|| fail("receive", "the handlers stopped"))
    }

    /// Sends broadcast `seq` alone and returns how long until all handlers had it.
    async fn round(&mut self, seq: u64) -> Result<Duration, Failure> {
        let sent = Instant::now();
        self.send(seq).await?;
        let mut last = sent;
        for _ in 0..INSTANCES {
            let (got, at) = self.receipt().await?;
            if got != seq {
                return Err(fail(
                    "receive",
                    format!("copy of {got} while waiting for {seq}"),
                ));
            }
            last = last.max(at);
        }
        Ok(last.duration_since(sent))
    }

    /// Broadcasts for `window` with up to [`IN_FLIGHT`] outstanding; returns the
    /// broadcasts every handler received and the time from the first call to the last
    /// delivery.
    async fn flood(&mut self, first: u64, window: Duration) -> Result<(u64, Duration), Failure> {
        // Copies received per broadcast, indexed from `first`.
        let mut copies: Vec<u8> = Vec::new();
        let (mut sent, mut complete) = (0u64, 0u64);
        let start = Instant::now();
        let mut last = start;
        loop {
            while sent - complete < IN_FLIGHT && start.elapsed() < window {
                self.send(first + sent).await?;
                copies.push(0);
                sent += 1;
            }
            if complete == sent {
                return Ok((complete, last.duration_since(start)));
            }
            let (seq, at) = self.receipt().await?;
            let slot = seq
                .checked_sub(first)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| copies.get_mut(i))
                .ok_or_else(|| fail("receive", format!("copy of unknown broadcast {seq}")))?;
            *slot += 1;
            if usize::from(*slot) == INSTANCES {
                complete += 1;
                last = last.max(at);
            }
        }
    }

    async fn shutdown(self) {
        self.sender.shutdown().await;
        for node in self.receivers {
            node.shutdown().await;
        }
    }
}

/// Runs the scenario and emits its lines.
pub(crate) async fn run(window: Duration, emit: &mut impl FnMut(Line)) -> Result<(), Failure> {
    eprintln!("broadcast: one node to a cluster of {INSTANCES}, TCP loopback ...");
    let mut cluster = Cluster::start().await?;
    let result = measure(&mut cluster, window, emit).await;
    cluster.shutdown().await;
    result
}

async fn measure(
    cluster: &mut Cluster,
    window: Duration,
    emit: &mut impl FnMut(Line),
) -> Result<(), Failure> {
    let mut seq = 0u64;
    for _ in 0..200 {
        cluster.round(seq).await?;
        seq += 1;
    }
    let mut histogram = Histogram::<u64>::new(3).map_err(|e| fail("histogram", e))?;
    let start = Instant::now();
    while start.elapsed() < window {
        let took = cluster.round(seq).await?;
        seq += 1;
        let _ = histogram.record(took.as_nanos() as u64);
    }
    for line in latency_lines(&ROUND, "tcp", PATTERN, SIZE, &histogram) {
        emit(line);
    }

    let (n, elapsed) = cluster.flood(seq, window).await?;
    if n > 0 {
        emit(Line {
            peer: "dms",
            transport: "tcp",
            pattern: PATTERN.to_owned(),
            metric: "broadcasts_per_s",
            msg_size: SIZE,
            value: n as f64 / elapsed.as_secs_f64().max(1e-9),
            n,
            frames: 1,
            histogram: None,
        });
    }
    Ok(())
}

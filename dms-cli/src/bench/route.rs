//! The `route` scenario: what multi-hop forwarding through brokers costs, all nodes in
//! this process, real TCP on loopback, the embedded discovery.
//!
//! Three topologies, each started fresh (its own discovery and nodes) and shut down
//! before the next:
//!
//! - `direct`: the origin targets the service cluster (`Trade`) and holds a session with
//!   its instance;
//! - `1-broker`: one broker (`Broker/broker-1`); the service and the origin target the
//!   broker cluster, the origin reaches `Trade` as a routed target;
//! - `2-brokers`: a chain of two broker clusters of one instance each (`LobbyGate`, which
//!   targets `TradeGate`); the origin targets `LobbyGate`, the service `TradeGate`.
//!
//! On each: request/reply round trips, one at a time (`route-rr-<topology>`, the
//! `rtt_*_us` metrics, 1,000 warm-up requests first); on `direct` and `1-broker` also
//! one-way throughput (`route-oneway-<topology>`, notifications, `throughput_msgs_per_s`
//! timed at the service's handler from the first notification to the last), with
//! [`SENDERS`] sending tasks and at most [`WINDOW`] notifications sent and not yet handled
//! (under the service's per-peer queue, so that none is dropped). The ratios of the
//! routed lines to the direct ones are printed on stderr at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dms::{ClusterPath, InstanceState, MemoryDiscovery, Multipart, Node, NodeBuilder};
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use super::Line;
use super::report::{RoundTrips, rtt_lines, throughput_lines};
use crate::failure::Failure;

const WORLD: &str = "/bench/cn/linux/w1/g1";
/// Payload bytes of every request and notification.
const SIZE: usize = 64;
/// Notifications sent and not yet handled by the service, at most (its per-peer queue
/// holds 256: none is dropped).
const WINDOW: usize = 192;
/// Tasks sending notifications at once (each waits for the driver to queue its
/// notification before sending the next one).
const SENDERS: usize = 8;
/// Notifications sent to warm a one-way run up (not measured).
const ONE_WAY_WARM_UP: u64 = 2000;
/// Longest wait for a route to settle or for a notification to arrive.
const LOST: Duration = Duration::from_secs(10);

fn fail(what: &str, error: impl std::fmt::Display) -> Failure {
    Failure::Other(format!("bench route {what}: {error}"))
}

fn parse<T: std::str::FromStr>(text: &str) -> Result<T, Failure>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| fail("path", e))
}

fn cluster(name: &str) -> Result<ClusterPath, Failure> {
    parse(&format!("{WORLD}/{name}"))
}

/// How the origin reaches the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hops {
    Direct,
    OneBroker,
    TwoBrokers,
}

impl Hops {
    /// The topology's name in the lines' patterns.
    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::OneBroker => "1-broker",
            Self::TwoBrokers => "2-brokers",
        }
    }
}

/// What the service's handler saw of the notifications: how many, and when the first and
/// the last were handled (ns since `base`, plus one; 0: none yet). Each one handled gives
/// the senders one credit back.
#[derive(Debug)]
struct Receipts {
    base: Instant,
    count: AtomicU64,
    first: AtomicU64,
    last: AtomicU64,
    credit: Semaphore,
}

impl Receipts {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            count: AtomicU64::new(0),
            first: AtomicU64::new(0),
            last: AtomicU64::new(0),
            credit: Semaphore::new(0),
        }
    }

    fn handled(&self) {
        let at = self.base.elapsed().as_nanos() as u64 + 1;
        let _ = self
            .first
            .compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
        self.last.store(at, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.credit.add_permits(1);
    }

    fn reset(&self) {
        self.count.store(0, Ordering::Relaxed);
        self.first.store(0, Ordering::Relaxed);
        self.last.store(0, Ordering::Relaxed);
    }
}

/// One topology, running.
struct Topology {
    hops: Hops,
    origin: Node,
    /// The service, then the brokers.
    others: Vec<Node>,
    service: ClusterPath,
    receipts: Arc<Receipts>,
}

impl Topology {
    async fn start(hops: Hops) -> Result<Self, Failure> {
        let discovery = MemoryDiscovery::new();
        let node = |path: &str| -> Result<NodeBuilder<MemoryDiscovery>, Failure> {
            Ok(Node::builder(parse(&format!("{WORLD}/{path}"))?).discovery(discovery.clone()))
        };
        let service = cluster("Trade")?;
        let receipts = Arc::new(Receipts::new());
        let mut others = Vec::new();
        let (service_builder, origin_builder) = match hops {
            Hops::Direct => (
                node("Trade/trade-1")?,
                node("Lobby/lobby-1")?.target(service.clone()),
            ),
            Hops::OneBroker => {
                let brokers = cluster("Broker")?;
                others.push(start(node("Broker/broker-1")?.broker()).await?);
                (
                    node("Trade/trade-1")?.target(brokers.clone()),
                    node("Lobby/lobby-1")?
                        .target(brokers)
                        .routed_target(service.clone()),
                )
            }
            Hops::TwoBrokers => {
                let (lobby_gate, trade_gate) = (cluster("LobbyGate")?, cluster("TradeGate")?);
                others.push(start(node("TradeGate/gate-b1")?.broker()).await?);
                others.push(
                    start(
                        node("LobbyGate/gate-a1")?
                            .broker()
                            .target(trade_gate.clone()),
                    )
                    .await?,
                );
                (
                    node("Trade/trade-1")?.target(trade_gate),
                    node("Lobby/lobby-1")?
                        .target(lobby_gate)
                        .routed_target(service.clone()),
                )
            }
        };
        let server = start(service_builder).await?;
        serve(&server, receipts.clone());
        others.insert(0, server);
        let origin = start(origin_builder).await?;
        let topology = Self {
            hops,
            origin,
            others,
            service,
            receipts,
        };
        if let Err(error) = topology.settle().await {
            topology.shutdown().await;
            return Err(error);
        }
        Ok(topology)
    }

    /// Waits until the origin reaches the service the way the topology says (over its
    /// own session, or routed) and a request makes it there and back.
    async fn settle(&self) -> Result<(), Failure> {
        self.origin
            .wait_for_instances(&self.service, 1, LOST)
            .await
            .map_err(|e| fail("discovery", e))?;
        let expected = if self.hops == Hops::Direct {
            InstanceState::Ready
        } else {
            InstanceState::Routed
        };
        let started = Instant::now();
        let mut last_error = String::new();
        while started.elapsed() < LOST {
            let states: Vec<InstanceState> = self
                .origin
                .instances(&self.service)
                .await
                .iter()
                .map(|i| i.state)
                .collect();
            if states == [expected] {
                match self.origin.request(&self.service, 1u64, body()).await {
                    Ok(_) => return Ok(()),
                    Err(error) => last_error = error.to_string(),
                }
            } else {
                last_error = format!("the service is {states:?}, not [{expected:?}]");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(fail(
            "settle",
            format!(
                "{}: no round trip within {LOST:?}: {last_error}",
                self.hops.name()
            ),
        ))
    }

    async fn shutdown(self) {
        self.origin.shutdown().await;
        for node in self.others {
            node.shutdown().await;
        }
    }
}

async fn start(builder: NodeBuilder<MemoryDiscovery>) -> Result<Node, Failure> {
    builder.start().await.map_err(|e| fail("start", e))
}

fn body() -> Multipart {
    Multipart::from_frames([vec![0x5a_u8; SIZE]])
}

/// The service's handler: echoes requests, counts notifications.
fn serve(node: &Node, receipts: Arc<Receipts>) {
    let server = node.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            if request.expects_reply() {
                let body = request.body().clone();
                let _ = request.reply(body).await;
            } else {
                receipts.handled();
            }
        }
    });
}

/// Round trips of one request at a time, 1,000 to warm up, then for `window`.
async fn round_trips(topology: &Topology, window: Duration) -> Result<Histogram<u64>, Failure> {
    let mut histogram = Histogram::<u64>::new(3).map_err(|e| fail("histogram", e))?;
    let mut trips = RoundTrips::new(window);
    let body = body();
    while let Some(record) = trips.next_one() {
        let sent = Instant::now();
        topology
            .origin
            .request(&topology.service, 1u64, body.clone())
            .await
            .map_err(|e| fail("request", e))?;
        if record {
            let _ = histogram.record(sent.elapsed().as_nanos() as u64);
        }
    }
    Ok(histogram)
}

/// What a one-way run measured at the service.
#[derive(Debug)]
struct Flood {
    /// Notifications the handler got.
    received: u64,
    /// From the first handled to the last.
    elapsed_ns: u64,
}

/// Sends notifications for `window` or until `cap` were sent, with [`SENDERS`] tasks and
/// at most [`WINDOW`] outstanding; waits (at most [`LOST`]) until every one sent was
/// handled.
async fn flood(topology: &Topology, window: Duration, cap: u64) -> Result<Flood, Failure> {
    let receipts = &topology.receipts;
    receipts.reset();
    receipts.credit.add_permits(WINDOW);
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(SENDERS);
    for key in 0..SENDERS as u64 {
        let (origin, service, receipts, sent, failed) = (
            topology.origin.clone(),
            topology.service.clone(),
            receipts.clone(),
            sent.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let body = body();
            while start.elapsed() < window {
                if sent.fetch_add(1, Ordering::Relaxed) >= cap {
                    sent.fetch_sub(1, Ordering::Relaxed);
                    break;
                }
                let Ok(credit) = receipts.credit.acquire().await else {
                    break;
                };
                credit.forget();
                if origin.notify(&service, key, body.clone()).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                    receipts.credit.add_permits(1);
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| fail("sender", e))?;
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    // Every credit back: every notification sent was handled.
    let drained = tokio::time::timeout(LOST, receipts.credit.acquire_many(WINDOW as u32)).await;
    match drained {
        Ok(Ok(credits)) => credits.forget(),
        _ => {
            let handled = receipts.count.load(Ordering::Relaxed);
            eprintln!(
                "route: {}: {} of {} notifications not handled within {LOST:?}",
                topology.hops.name(),
                (sent - failed).saturating_sub(handled),
                sent - failed
            );
            // What came back, so that the next run starts from no credit.
            let left = receipts.credit.available_permits() as u32;
            if let Ok(credits) = receipts.credit.try_acquire_many(left) {
                credits.forget();
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "route: {}: {failed} of {sent} notifications failed to send (not counted)",
            topology.hops.name()
        );
    }
    let (first, last) = (
        receipts.first.load(Ordering::Relaxed),
        receipts.last.load(Ordering::Relaxed),
    );
    Ok(Flood {
        received: receipts.count.load(Ordering::Relaxed),
        elapsed_ns: last.saturating_sub(first),
    })
}

/// Runs the scenario and emits its lines.
pub(crate) async fn run(window: Duration, emit: &mut impl FnMut(Line)) -> Result<(), Failure> {
    eprintln!(
        "route: request/reply and notifications direct, through 1 and 2 brokers, one \
         process, TCP loopback, {} ...",
        super::worker::flavour_name()
    );
    let mut p50 = Vec::new();
    let mut one_way = Vec::new();
    for hops in [Hops::Direct, Hops::OneBroker, Hops::TwoBrokers] {
        let topology = Topology::start(hops).await?;
        let measured = measure(&topology, window, emit).await;
        topology.shutdown().await;
        let (rtt, throughput) = measured?;
        p50.push((hops, rtt));
        if let Some(throughput) = throughput {
            one_way.push((hops, throughput));
        }
    }
    // The table: routed / direct, with its floors and targets.
    let ratio = |of: &[(Hops, f64)], hops: Hops| {
        let get = |h: Hops| of.iter().find(|(x, _)| *x == h).map(|(_, v)| *v);
        Some(get(hops)? / get(Hops::Direct).filter(|v| *v > 0.0)?)
    };
    let rows = [
        (
            "rr p50 1 broker / direct",
            ratio(&p50, Hops::OneBroker),
            "<=",
            2.5,
            2.0,
        ),
        (
            "rr p50 2 brokers / direct",
            ratio(&p50, Hops::TwoBrokers),
            "<=",
            3.8,
            3.0,
        ),
        (
            "one-way thr 1 broker / direct",
            ratio(&one_way, Hops::OneBroker),
            ">=",
            0.4,
            0.6,
        ),
    ];
    for (name, ratio, op, floor, target) in rows {
        let Some(x) = ratio else { continue };
        let (floor_ok, target_ok) = if op == "<=" {
            (x <= floor, x <= target)
        } else {
            (x >= floor, x >= target)
        };
        let verdict = if target_ok {
            "target"
        } else if floor_ok {
            "floor ok"
        } else {
            "BELOW FLOOR"
        };
        eprintln!("route: {name:<30} {x:6.2}x  (floor {op} {floor}, target {target}): {verdict}");
    }
    Ok(())
}

/// The round trips and, unless through 2 brokers, the one-way throughput of one
/// topology: emits their lines, returns the p50 (µs) and the notifications/s.
async fn measure(
    topology: &Topology,
    window: Duration,
    emit: &mut impl FnMut(Line),
) -> Result<(f64, Option<f64>), Failure> {
    let name = topology.hops.name();
    let histogram = round_trips(topology, window).await?;
    let p50 = histogram.value_at_quantile(0.5) as f64 / 1000.0;
    for line in rtt_lines("tcp", &format!("route-rr-{name}"), SIZE, &histogram) {
        emit(line);
    }
    if topology.hops == Hops::TwoBrokers {
        return Ok((p50, None));
    }
    flood(topology, LOST, ONE_WAY_WARM_UP).await?;
    let run = flood(topology, window, u64::MAX).await?;
    let mut throughput = None;
    if run.received > 1 && run.elapsed_ns > 0 {
        let lines = throughput_lines(
            "dms",
            &format!("route-oneway-{name}"),
            SIZE,
            1,
            run.received,
            run.elapsed_ns,
        );
        throughput = lines.first().map(|l| l.value);
        lines.into_iter().for_each(&mut *emit);
    }
    Ok((p50, throughput))
}

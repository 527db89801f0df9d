//! What the routing table's key layout costs on a real etcd: keys, bytes and watch events
//! of a full start, one link change and one instance's death, for 1,000 instances of ~10
//! links each.
//!
//! It starts no etcd: give it one (`ENDPOINT` argument, else `$DMS_ETCD_ENDPOINT`, else
//! `127.0.0.1:2379`; an etcd with nothing else going on, since its server metrics are
//! read too):
//!
//! ```text
//! cargo run --release -p dms --features etcd --example routing_etcd_cost -- 127.0.0.1:2379
//! ```
//!
//! It writes what the kernel writes, through the crate's [`EtcdDiscovery`]: each instance
//! has its own lease and its [`LinkRecord`] under [`links_key`] (postcard, whole, with
//! that lease), rewritten once per change of its link list. The links form a random graph
//! of degree ~10 (deterministic seed). One watcher watches the table's prefix, as every
//! node does, through a counting TCP proxy: the events and the bytes of their keys and
//! values it gets from the API, and the bytes etcd sent it on the wire (gRPC over
//! HTTP/2). The writers are [`WRITERS`] client connections shared by the instances (a
//! node has its own; connections add no key, write or event).
//!
//! Phases, each until the watcher has every event it causes:
//!
//! 1. **full start, link by link**: the links come up one at a time in a random order;
//!    both ends of each rewrite their record (an instance writes once per link of its);
//! 2. **one link change**: a link goes down, its two ends rewrite their records;
//! 3. **one instance's death**: its lease is revoked (one delete event), then each of its
//!    neighbours rewrites its record without it;
//! 4. **full stop**: every lease revoked (a delete event per record);
//! 5. **full start, coalesced**: each instance writes its record once, every link in it
//!    (what the registrar's coalescing gives when the links come up during one write).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dms::routing::{Link, LinkRecord, links_key, table_key};
use dms::{Discovery, ServicePath};
use dms_discovery::etcd::{EtcdDiscovery, EtcdLease, EtcdOptions};
use dms_discovery::{Key, WatchEvent, next_event};
use dms_test_support::tcp_proxy::TcpProxy;
use tokio::sync::Semaphore;

/// Instances simulated.
const INSTANCES: usize = 1000;
/// Links per instance (the graph's degree, before duplicates are dropped).
const DEGREE: usize = 10;
/// Instances per cluster (the first cluster, `Broker`, forwards).
const PER_CLUSTER: usize = 50;
/// Client connections the instances' writes and leases share.
const WRITERS: usize = 16;
/// Writes in flight at once, over all writers.
const IN_FLIGHT: usize = 64;
/// The graph's seed.
const SEED: u64 = 0x00d5_7ab1_e5ee_d001;
/// Lease TTL: long enough that no lease expires during a run.
const TTL: Duration = Duration::from_secs(120);
/// Longest wait for a phase's events.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// splitmix64: a small deterministic generator (no dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// The instances' paths.
fn paths() -> Result<Vec<ServicePath>, Error> {
    (0..INSTANCES)
        .map(|i| {
            let (cluster, n) = (i / PER_CLUSTER, i % PER_CLUSTER);
            let (name, instance) = if cluster == 0 {
                ("Broker".to_owned(), format!("broker-{n:02}"))
            } else {
                (
                    format!("Svc{cluster:02}"),
                    format!("svc{cluster:02}-{n:02}"),
                )
            };
            Ok(format!("/game/eu/linux/w1/g1/{name}/{instance}").parse()?)
        })
        .collect()
}

/// A random graph of degree ~[`DEGREE`]: every instance gets `DEGREE` stubs, the stubs
/// are paired at random, self-loops and duplicate pairs are dropped. Its edges, in a
/// random order.
fn graph(rng: &mut Rng) -> Vec<(usize, usize)> {
    let mut stubs: Vec<usize> = (0..INSTANCES)
        .flat_map(|i| std::iter::repeat_n(i, DEGREE))
        .collect();
    rng.shuffle(&mut stubs);
    let mut edges = BTreeSet::new();
    for pair in stubs.chunks_exact(2) {
        let (a, b) = (pair[0].min(pair[1]), pair[0].max(pair[1]));
        if a != b {
            edges.insert((a, b));
        }
    }
    let mut edges: Vec<(usize, usize)> = edges.into_iter().collect();
    rng.shuffle(&mut edges);
    edges
}

/// Instance `i`'s record, with links to `peers`.
fn record(paths: &[ServicePath], i: usize, peers: &BTreeSet<usize>) -> LinkRecord {
    let links = peers
        .iter()
        .map(|&p| Link {
            to: paths[p].to_string(),
            cost: 1,
        })
        .collect();
    LinkRecord::new(i / PER_CLUSTER == 0, links)
}

/// What the watcher counted.
#[derive(Default)]
struct Seen {
    events: AtomicU64,
    puts: AtomicU64,
    deletes: AtomicU64,
    /// Bytes of the keys and values of the events.
    bytes: AtomicU64,
}

impl Seen {
    fn snapshot(&self) -> [u64; 4] {
        [
            self.events.load(Ordering::Relaxed),
            self.puts.load(Ordering::Relaxed),
            self.deletes.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        ]
    }
}

/// The etcd server's counters this program reports, from its `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
struct Server {
    keys: f64,
    db_bytes: f64,
    db_in_use_bytes: f64,
    puts: f64,
    grpc_sent: f64,
    grpc_received: f64,
}

fn server_metrics(addr: SocketAddr) -> Result<Server, Error> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let value = |name: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Ok(Server {
        keys: value("etcd_debugging_mvcc_keys_total"),
        db_bytes: value("etcd_mvcc_db_total_size_in_bytes"),
        db_in_use_bytes: value("etcd_mvcc_db_total_size_in_use_in_bytes"),
        puts: value("etcd_mvcc_put_total"),
        grpc_sent: value("etcd_network_client_grpc_sent_bytes_total"),
        grpc_received: value("etcd_network_client_grpc_received_bytes_total"),
    })
}

/// The whole simulation's state.
struct Run {
    metrics_addr: SocketAddr,
    paths: Vec<ServicePath>,
    keys: Vec<Key>,
    writers: Vec<EtcdDiscovery>,
    leases: Vec<Option<Arc<EtcdLease>>>,
    links: Vec<BTreeSet<usize>>,
    seen: Arc<Seen>,
    proxy: TcpProxy,
    in_flight: Arc<Semaphore>,
}

/// One phase's costs.
#[derive(Debug, Default, Clone)]
struct Cost {
    /// `set`s made, and the bytes of their keys and values.
    writes: u64,
    write_bytes: u64,
    /// Leases revoked.
    revokes: u64,
    /// What the watcher got: events, of which puts and deletes, their key and value
    /// bytes, and the bytes on its connection.
    events: u64,
    puts: u64,
    deletes: u64,
    event_bytes: u64,
    wire_bytes: u64,
    /// etcd's own counters: puts applied, gRPC bytes sent to and received from every
    /// client (the writers' requests and lease keep-alives included).
    server_puts: f64,
    grpc_sent: f64,
    grpc_received: f64,
    took: Duration,
}

/// A phase's writes: for each instance, the records it writes, in order.
type Writes = Vec<(usize, Vec<LinkRecord>)>;

impl Run {
    fn record(&self, i: usize) -> LinkRecord {
        record(&self.paths, i, &self.links[i])
    }

    /// Takes every instance's lease.
    async fn lease_all(&mut self) -> Result<(), Error> {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..INSTANCES {
            let writer = self.writers[i % WRITERS].clone();
            let in_flight = self.in_flight.clone();
            tasks.spawn(async move {
                let _slot = in_flight.acquire().await;
                (i, writer.lease(TTL).await)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (i, lease) = done?;
            self.leases[i] = Some(Arc::new(lease?));
        }
        Ok(())
    }

    /// Writes each instance's records in order (instances concurrently, at most
    /// [`IN_FLIGHT`] writes at once, each with the instance's lease); returns the writes
    /// and their key + value bytes.
    async fn write(&self, writes: Writes) -> Result<(u64, u64), Error> {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, records) in writes {
            let writer = self.writers[i % WRITERS].clone();
            let key = self.keys[i].clone();
            let lease = self.leases[i].clone().ok_or("write without a lease")?;
            let in_flight = self.in_flight.clone();
            tasks.spawn(async move {
                let (mut writes, mut bytes) = (0u64, 0u64);
                for record in records {
                    let value = record.encode();
                    let len = (key.as_str().len() + value.len()) as u64;
                    let _slot = in_flight.acquire().await;
                    writer.set(&key, value, Some(&*lease)).await?;
                    writes += 1;
                    bytes += len;
                }
                Ok::<_, Error>((writes, bytes))
            });
        }
        let (mut writes, mut bytes) = (0, 0);
        while let Some(done) = tasks.join_next().await {
            let (w, b) = done??;
            writes += w;
            bytes += b;
        }
        Ok((writes, bytes))
    }

    /// Revokes instance `i`'s lease and waits for etcd to confirm.
    async fn revoke(&mut self, i: usize) -> Result<(), Error> {
        let lease = self.leases[i].take().ok_or("no lease")?;
        let lease = Arc::try_unwrap(lease).map_err(|_| "lease still in use")?;
        lease.revoke().await?;
        Ok(())
    }

    /// Runs `phase`, then waits until the watcher has `events` more events; the costs.
    async fn phase<F>(&mut self, events: u64, phase: F) -> Result<Cost, Error>
    where
        F: AsyncFnOnce(&mut Self) -> Result<(u64, u64, u64), Error>,
    {
        let server = server_metrics(self.metrics_addr)?;
        let seen = self.seen.snapshot();
        let wire = self.proxy.stats().to_client.bytes;
        let started = Instant::now();
        let (writes, write_bytes, revokes) = phase(self).await?;
        while self.seen.snapshot()[0] < seen[0] + events {
            if started.elapsed() > PHASE_TIMEOUT {
                return Err(format!(
                    "the watcher got {} of {events} events within {PHASE_TIMEOUT:?}",
                    self.seen.snapshot()[0] - seen[0]
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = started.elapsed();
        // Anything beyond the events expected (there should be none).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = self.seen.snapshot();
        let server_after = server_metrics(self.metrics_addr)?;
        Ok(Cost {
            writes,
            write_bytes,
            revokes,
            events: after[0] - seen[0],
            puts: after[1] - seen[1],
            deletes: after[2] - seen[2],
            event_bytes: after[3] - seen[3],
            wire_bytes: self.proxy.stats().to_client.bytes - wire,
            server_puts: server_after.puts - server.puts,
            grpc_sent: server_after.grpc_sent - server.grpc_sent,
            grpc_received: server_after.grpc_received - server.grpc_received,
            took,
        })
    }
}

/// Counts every event of `watch` into `seen`.
async fn count_events(mut watch: dms_discovery::etcd::EtcdWatch, seen: Arc<Seen>) {
    while let Some(event) = next_event(&mut watch).await {
        let Ok(event) = event else {
            eprintln!("watch failed: {event:?}");
            return;
        };
        let bytes = match &event {
            WatchEvent::Put(entry) => {
                seen.puts.fetch_add(1, Ordering::Relaxed);
                entry.key.as_str().len() + entry.value.len()
            }
            WatchEvent::Delete { key, .. } => {
                seen.deletes.fetch_add(1, Ordering::Relaxed);
                key.as_str().len()
            }
        };
        seen.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        seen.events.fetch_add(1, Ordering::Relaxed);
    }
}

fn print_cost(name: &str, cost: &Cost) {
    let per = |x: u64| {
        if cost.events == 0 {
            0.0
        } else {
            x as f64 / cost.events as f64
        }
    };
    println!(
        "{name:<28} writes {:>6} ({:>9} B)  revokes {:>4}  | watcher: events {:>6} \
         (put {:>6}, delete {:>4}) key+value {:>9} B, wire {:>9} B ({:.0} B/event)  \
         x1000 watchers: {:>10} events, {:>12} B on the wire  | etcd: puts {:>6}, gRPC \
         sent {:>10} B, received {:>9} B  | {:.2} s",
        cost.writes,
        cost.write_bytes,
        cost.revokes,
        cost.events,
        cost.puts,
        cost.deletes,
        cost.event_bytes,
        cost.wire_bytes,
        per(cost.wire_bytes),
        cost.events * 1000,
        cost.wire_bytes * 1000,
        cost.server_puts,
        cost.grpc_sent,
        cost.grpc_received,
        cost.took.as_secs_f64(),
    );
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let endpoint = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DMS_ETCD_ENDPOINT").ok())
        .unwrap_or_else(|| "127.0.0.1:2379".to_owned());
    let endpoint = endpoint
        .trim_start_matches("etcd://")
        .trim_start_matches("http://")
        .to_owned();
    let addr = endpoint
        .to_socket_addrs()?
        .next()
        .ok_or("the endpoint resolves to no address")?;

    let paths = paths()?;
    let keys: Vec<Key> = paths.iter().map(links_key).collect::<Result<_, _>>()?;
    let table = table_key(&paths[0])?;
    let mut rng = Rng(SEED);
    let edges = graph(&mut rng);
    let mut degree = vec![0usize; INSTANCES];
    for &(a, b) in &edges {
        degree[a] += 1;
        degree[b] += 1;
    }
    println!(
        "{INSTANCES} instances, {} links (degree min {}, mean {:.2}, max {}), table {table}, \
         etcd {endpoint}",
        edges.len(),
        degree.iter().min().unwrap_or(&0),
        2.0 * edges.len() as f64 / INSTANCES as f64,
        degree.iter().max().unwrap_or(&0),
    );

    // The watcher, through a counting proxy, as a node watches the table.
    let proxy = TcpProxy::start(addr);
    let watcher =
        EtcdDiscovery::connect(&[proxy.local_addr().to_string()], EtcdOptions::default()).await?;
    let seen = Arc::new(Seen::default());
    let watch = watcher.watch(&table, None).await?;
    tokio::spawn(count_events(watch, seen.clone()));
    let mut writers = Vec::with_capacity(WRITERS);
    for _ in 0..WRITERS {
        writers.push(
            EtcdDiscovery::connect(std::slice::from_ref(&endpoint), EtcdOptions::default()).await?,
        );
    }
    let before = server_metrics(addr)?;
    let mut run = Run {
        metrics_addr: addr,
        paths,
        keys,
        writers,
        leases: (0..INSTANCES).map(|_| None).collect(),
        links: vec![BTreeSet::new(); INSTANCES],
        seen,
        proxy,
        in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
    };
    run.lease_all().await?;

    // 1. Full start, link by link: both ends of each link rewrite their record.
    let mut writes: Vec<Vec<LinkRecord>> = vec![Vec::new(); INSTANCES];
    for &(a, b) in &edges {
        run.links[a].insert(b);
        run.links[b].insert(a);
        writes[a].push(run.record(a));
        writes[b].push(run.record(b));
    }
    let expected = 2 * edges.len() as u64;
    let per_link = run
        .phase(expected, async move |run| {
            let (w, b) = run.write(writes.into_iter().enumerate().collect()).await?;
            Ok((w, b, 0))
        })
        .await?;
    let stored: Vec<usize> = (0..INSTANCES)
        .map(|i| run.keys[i].as_str().len() + run.record(i).encode().len())
        .collect();
    let stored_bytes: usize = stored.iter().sum();
    let values: Vec<usize> = (0..INSTANCES)
        .map(|i| run.record(i).encode().len())
        .collect();
    let after_start = server_metrics(addr)?;

    // 2. One link change: a link goes down; both ends rewrite their record.
    let (a, b) = edges[0];
    run.links[a].remove(&b);
    run.links[b].remove(&a);
    let change_writes = vec![(a, vec![run.record(a)]), (b, vec![run.record(b)])];
    let change = run
        .phase(2, async move |run| {
            let (w, bytes) = run.write(change_writes).await?;
            Ok((w, bytes, 0))
        })
        .await?;

    // 3. One instance's death: its lease revoked (its record deleted), then each
    // neighbour rewrites its record without it.
    let victim = (0..INSTANCES)
        .max_by_key(|&i| (run.links[i].len() == DEGREE, std::cmp::Reverse(i)))
        .unwrap_or(0);
    let neighbours: Vec<usize> = run.links[victim].iter().copied().collect();
    for &n in &neighbours {
        run.links[n].remove(&victim);
    }
    run.links[victim].clear();
    let rewrites: Writes = neighbours
        .iter()
        .map(|&n| (n, vec![run.record(n)]))
        .collect();
    let death = run
        .phase(1 + neighbours.len() as u64, async move |run| {
            run.revoke(victim).await?;
            let (w, bytes) = run.write(rewrites).await?;
            Ok((w, bytes, 1))
        })
        .await?;

    // 4. Full stop: every lease revoked.
    let live = run.leases.iter().filter(|l| l.is_some()).count() as u64;
    let stop = run
        .phase(live, async move |run| {
            let mut revoked = 0;
            for i in 0..INSTANCES {
                if run.leases[i].is_some() {
                    run.revoke(i).await?;
                    revoked += 1;
                }
            }
            Ok((0, 0, revoked))
        })
        .await?;

    // 5. Full start, coalesced: each instance writes its whole record once.
    for &(a, b) in &edges {
        run.links[a].insert(b);
        run.links[b].insert(a);
    }
    run.lease_all().await?;
    let once: Writes = (0..INSTANCES).map(|i| (i, vec![run.record(i)])).collect();
    let coalesced = run
        .phase(INSTANCES as u64, async move |run| {
            let (w, bytes) = run.write(once).await?;
            Ok((w, bytes, 0))
        })
        .await?;
    let after_all = server_metrics(addr)?;

    println!();
    println!(
        "keys: {INSTANCES} (one per instance); stored key+value bytes: {stored_bytes} \
         (value {}..{} B, mean {:.0} B; key {} B); etcd keys +{:.0}, db size {:.0} -> {:.0} B \
         (in use {:.0} -> {:.0} B, history included)",
        values.iter().min().unwrap_or(&0),
        values.iter().max().unwrap_or(&0),
        values.iter().sum::<usize>() as f64 / INSTANCES as f64,
        run.keys[0].as_str().len(),
        after_start.keys - before.keys,
        before.db_bytes,
        after_start.db_bytes,
        before.db_in_use_bytes,
        after_start.db_in_use_bytes,
    );
    print_cost("full start, link by link", &per_link);
    print_cost("one link change", &change);
    print_cost("one instance's death", &death);
    print_cost("full stop", &stop);
    print_cost("full start, coalesced", &coalesced);
    println!(
        "db size at the end: {:.0} B (in use {:.0} B)",
        after_all.db_bytes, after_all.db_in_use_bytes
    );
    for i in 0..INSTANCES {
        if run.leases[i].is_some() {
            run.revoke(i).await?;
        }
    }
    Ok(())
}

//! `dms demo`: a small game backend in one process, narrated.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use dms::{ClusterPath, MemoryDiscovery, Multipart, Node, NodeEvent, RequestError, ServicePath};

const WORLD: &str = "/demo/cn/android/w1/g1";

/// Options of `dms demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Heartbeat interval in milliseconds (a peer is dead after 3 silent intervals).
    #[arg(long, default_value_t = 200)]
    heartbeat_ms: u64,
    /// Number of players whose requests are routed.
    #[arg(long, default_value_t = 200)]
    players: u32,
    /// The medium of every link: tcp, quic (mutual TLS with DEVELOPMENT certificates
    /// made for the demo in a temporary directory), or shm (shared memory: each instance
    /// binds `shm://dms-demo-<pid>-<n>` instead of a TCP loopback port).
    #[arg(long, value_enum, default_value_t = DemoTransport::Tcp)]
    transport: DemoTransport,
}

/// The medium the demo runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DemoTransport {
    /// ZMTP over TCP loopback.
    Tcp,
    /// ZMTP over QUIC on loopback, mutual TLS (development certificates).
    Quic,
    /// ZMTP over shared-memory rings (`shm://NAME`, this host only).
    Shm,
}

/// How the demo's nodes are built: on which medium, with which certificates.
struct Network {
    transport: DemoTransport,
    /// The development CA of a QUIC demo (removed at the end).
    dev_certs: std::path::PathBuf,
    /// Shared-memory endpoints named so far (each instance gets its own name).
    shm_names: AtomicU64,
}

impl Network {
    fn new(transport: DemoTransport) -> Self {
        let dev_certs =
            std::env::temp_dir().join(format!("dms-demo-dev-certs-{}", std::process::id()));
        Self {
            transport,
            dev_certs,
            shm_names: AtomicU64::new(0),
        }
    }

    fn describe(&self) -> &'static str {
        match self.transport {
            DemoTransport::Tcp => "real TCP loopback",
            DemoTransport::Quic => "real QUIC loopback, mutual TLS (development certificates)",
            DemoTransport::Shm => "real shared memory (shm:// rings, one name per instance)",
        }
    }

    fn builder(&self, path: ServicePath) -> Res<dms::NodeBuilder> {
        let builder = Node::builder(path);
        Ok(match self.transport {
            DemoTransport::Tcp => builder,
            DemoTransport::Quic => builder
                .quic_dev_certificates(&self.dev_certs)
                .bind("quic://127.0.0.1:0".parse()?)
                .prefer(["quic"]),
            DemoTransport::Shm => {
                // Unique on the host: the pid, then the instance's number in this run.
                let n = self.shm_names.fetch_add(1, Ordering::Relaxed);
                builder
                    .bind(format!("shm://dms-demo-{}-{n}", std::process::id()).parse()?)
                    .prefer(["shm"])
            }
        })
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if self.transport == DemoTransport::Quic {
            let _ = std::fs::remove_dir_all(&self.dev_certs);
        }
    }
}

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

fn cluster(name: &str) -> Res<ClusterPath> {
    Ok(format!("{WORLD}/{name}").parse()?)
}

/// Request accounting: every request ends answered or failed with an error.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    async fn request(
        &self,
        lobby: &Node,
        battle: &ClusterPath,
        player: &str,
    ) -> Result<(String, Duration), RequestError> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let result = lobby
            .request(battle, player, Multipart::from_frames([player.to_owned()]))
            .await;
        match result {
            Ok(reply) => {
                self.answered.fetch_add(1, Ordering::Relaxed);
                Ok((reply.from.instance().to_owned(), start.elapsed()))
            }
            Err(error) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                Err(error)
            }
        }
    }
}

/// Broadcast copies received by the service instances.
#[derive(Default)]
struct Broadcasts {
    received: AtomicU64,
    arrived: Notify,
}

/// A Battle or Club instance: answers every request with the payload and its own path,
/// and counts the broadcasts it receives.
async fn start_service(
    network: &Network,
    discovery: &MemoryDiscovery,
    path: ServicePath,
    heartbeat: Duration,
    broadcasts: Arc<Broadcasts>,
) -> Res<Node> {
    let node = network
        .builder(path)?
        .discovery(discovery.clone())
        .heartbeat(heartbeat, 3)
        .start()
        .await?;
    serve(&node, broadcasts);
    Ok(node)
}

/// Answers every request `node` gets with the payload and its own path, and counts the
/// broadcasts.
fn serve(node: &Node, broadcasts: Arc<Broadcasts>) {
    let server = node.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            if request.is_broadcast() {
                broadcasts.received.fetch_add(1, Ordering::Relaxed);
                broadcasts.arrived.notify_waiters();
                continue;
            }
            let mut body = request.body().clone();
            body.push(server.path().to_string());
            let _ = request.reply(body).await;
        }
    });
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Routes every player once from `lobby`; returns player → instance and latencies.
async fn route_all(
    tally: &Tally,
    lobby: &Node,
    battle: &ClusterPath,
    players: u32,
) -> Res<(BTreeMap<String, String>, Vec<Duration>)> {
    let mut owners = BTreeMap::new();
    let mut latencies = Vec::new();
    for p in 0..players {
        let player = format!("player-{p}");
        let (instance, rtt) = tally.request(lobby, battle, &player).await?;
        owners.insert(player, instance);
        latencies.push(rtt);
    }
    latencies.sort();
    Ok((owners, latencies))
}

/// A request error in a few words: the routing failures by name, the others by the
/// first words of their message.
fn error_kind(error: &RequestError) -> String {
    match error {
        RequestError::Route { failure, .. } => format!("route: {failure}"),
        other => format!("{other}")
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// `lobby`'s route to `to` as the routing table in discovery says: the instance names
/// of the hops, and the total cost.
async fn route_of(
    discovery: &MemoryDiscovery,
    lobby: &ServicePath,
    to: &ServicePath,
) -> Res<Option<(Vec<String>, u64)>> {
    let snapshot = dms::routing::read_table(discovery, &dms::routing::table_key(lobby)?).await?;
    let mut table = snapshot.to_table();
    Ok(table.path(lobby, to).map(|path| {
        let cost = table.distance(lobby, to).unwrap_or_default();
        (path.iter().map(|p| p.instance().to_owned()).collect(), cost)
    }))
}

/// The peers `path`'s link record lists (the sessions it holds), as instance names.
async fn links_of(discovery: &MemoryDiscovery, path: &ServicePath) -> Res<Vec<String>> {
    let snapshot = dms::routing::read_table(discovery, &dms::routing::table_key(path)?).await?;
    Ok(snapshot
        .records
        .iter()
        .filter(|(p, _)| p == path)
        .flat_map(|(_, record)| record.peers())
        .map(|(peer, _)| peer.instance().to_owned())
        .collect())
}

/// Act 7: Trade is reached from Lobby only through a cluster of two brokers; the broker
/// on the route is killed under traffic. Prints its summary line; returns whether it kept
/// its promises (none lost, the route moved to the other broker, every player answered
/// by the same Trade instance as before).
async fn routed_act(
    network: &Network,
    discovery: &MemoryDiscovery,
    heartbeat: Duration,
    players: u32,
) -> Res<bool> {
    let bound = heartbeat * 3;
    let (broker, trade) = (cluster("Broker")?, cluster("Trade")?);
    println!(
        "\n== 7. Multi-hop routing: Trade reached from Lobby only through a broker cluster (Broker ×2)"
    );
    let mut brokers: HashMap<String, Node> = HashMap::new();
    for i in 1..=2 {
        let node = network
            .builder(format!("{WORLD}/Broker/broker-{i}").parse()?)?
            .discovery(discovery.clone())
            .heartbeat(heartbeat, 3)
            .broker()
            .start()
            .await?;
        println!("   {:<40} broker (forwards)", node.path().to_string());
        brokers.insert(node.path().instance().to_owned(), node);
    }
    let mut trades = Vec::new();
    for i in 1..=2 {
        let node = network
            .builder(format!("{WORLD}/Trade/trade-{i}").parse()?)?
            .discovery(discovery.clone())
            .heartbeat(heartbeat, 3)
            .target(broker.clone())
            .start()
            .await?;
        serve(&node, Arc::new(Broadcasts::default()));
        println!("   {:<40} targets Broker", node.path().to_string());
        trades.push(node);
    }
    let lobby = network
        .builder(format!("{WORLD}/Lobby/lobby-3").parse()?)?
        .discovery(discovery.clone())
        .heartbeat(heartbeat, 3)
        .request_timeout(bound * 3)
        .target(broker.clone())
        .routed_target(trade.clone())
        .start()
        .await?;
    println!(
        "   {:<40} targets Broker, routed target Trade",
        lobby.path().to_string()
    );
    let t = Instant::now();
    lobby
        .wait_for_instances(&broker, 2, Duration::from_secs(10))
        .await?;
    lobby
        .wait_for_instances(&trade, 2, Duration::from_secs(10))
        .await?;
    let states: Vec<String> = lobby
        .instances(&trade)
        .await
        .iter()
        .map(|i| format!("{} {:?}", i.path.instance(), i.state))
        .collect();
    println!(
        "   lobby-3 reaches Trade after {}: {}",
        ms(t.elapsed()),
        states.join(", ")
    );
    let target = trades[0].path().clone();
    // Wait until the table in discovery shows the route lobby-3 follows.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (before, cost) = loop {
        if let Some(route) = route_of(discovery, lobby.path(), &target).await? {
            if route.0.len() == 3 {
                break route;
            }
        }
        if Instant::now() > deadline {
            return Err("no route from lobby-3 to trade-1 in the routing table".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let links = links_of(discovery, lobby.path()).await?;
    let direct = links.iter().any(|peer| peer.starts_with("trade-"));
    println!(
        "   route lobby-3 -> trade-1: {} (cost {cost}); lobby-3's links: {} ({})",
        before.join(" -> "),
        links.join(", "),
        if direct {
            "a session with Trade!"
        } else {
            "none with Trade"
        }
    );

    let tally = Arc::new(Tally::default());
    let (owners, latencies) = route_all(&tally, &lobby, &trade, players).await?;
    println!(
        "   lobby-3 routed {} players through the brokers: {}; p50 {}",
        owners.len(),
        spread(&owners),
        ms(percentile(&latencies, 0.5))
    );

    let victim_name = before[1].clone();
    let victim = brokers
        .get(&victim_name)
        .ok_or("the route's broker is not ours")?
        .clone();
    let killed = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (tally, lobby, trade, killed) =
            (tally.clone(), lobby.clone(), trade.clone(), killed.clone());
        tokio::spawn(async move {
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let (mut p, mut streak) = (0u32, 0u32);
            let started = Instant::now();
            // Until 50 answers in a row after the kill (or 10 s).
            while streak < 50 && started.elapsed() < Duration::from_secs(10) {
                let player = format!("player-{}", p % players);
                match tally.request(&lobby, &trade, &player).await {
                    Ok(_) if killed.load(Ordering::Relaxed) => streak += 1,
                    Ok(_) => {}
                    Err(error) => {
                        streak = 0;
                        *errors.entry(error_kind(&error)).or_default() += 1;
                    }
                }
                p += 1;
            }
            (errors, streak)
        })
    };
    tokio::time::sleep(heartbeat).await;
    let killed_at = Instant::now();
    victim.kill().await;
    killed.store(true, Ordering::Relaxed);
    let deadline = killed_at + bound * 4 + Duration::from_secs(2);
    let after = loop {
        if let Some((route, _)) = route_of(discovery, lobby.path(), &target).await? {
            if !route.contains(&victim_name) {
                break route;
            }
        }
        if Instant::now() > deadline {
            return Err(format!("the route still goes through {victim_name}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let rerouted = killed_at.elapsed();
    let (errors, streak) = traffic.await?;
    println!(
        "   {victim_name} killed (no DISCONNECT): the table routes lobby-3 -> trade-1 through {} after {} (detection bound {})",
        after.join(" -> "),
        ms(rerouted),
        ms(bound)
    );
    let failed: u64 = errors.values().sum();
    println!(
        "   traffic during the kill: {failed} requests failed with a typed error ({errors:?}), then {streak} answered in a row"
    );
    let (again, _) = route_all(&tally, &lobby, &trade, players).await?;
    let kept = owners
        .iter()
        .filter(|(p, i)| again.get(*p) == Some(*i))
        .count();
    println!(
        "   {kept}/{} players are still served by the same Trade instance (brokers carry, they do not own)",
        owners.len()
    );

    for node in brokers.values().chain(&trades).chain([&lobby]) {
        if node.path().instance() != victim_name {
            node.shutdown().await;
        }
    }
    let sent = tally.sent.load(Ordering::Relaxed);
    let answered = tally.answered.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let lost = sent - answered - failed;
    let ok = lost == 0
        && !direct
        && streak >= 50
        && kept == owners.len()
        && !after.contains(&victim_name);
    println!(
        "   routed summary: sent={sent} answered={answered} failed_with_error={failed} lost_silently={lost} \
         route_before={} route_after={} reroute_ms={:.0} players_kept={kept}/{} result={}",
        before.join(">"),
        after.join(">"),
        rerouted.as_secs_f64() * 1e3,
        owners.len(),
        if ok { "ok" } else { "FAILED" }
    );
    Ok(ok)
}

fn spread(owners: &BTreeMap<String, String>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for instance in owners.values() {
        *counts.entry(instance).or_default() += 1;
    }
    counts
        .iter()
        .map(|(i, n)| format!("{i}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) async fn run(args: DemoArgs) -> Res<ExitCode> {
    let started = Instant::now();
    let heartbeat = Duration::from_millis(args.heartbeat_ms.max(10));
    let bound = heartbeat * 3;
    let discovery = MemoryDiscovery::new();
    let battle = cluster("Battle")?;
    let club = cluster("Club")?;
    let tally = Arc::new(Tally::default());
    let broadcasts = Arc::new(Broadcasts::default());
    let network = Network::new(args.transport);

    println!(
        "== 1. Registration: 7 instances under {WORLD}/ on the embedded discovery, {}",
        network.describe()
    );
    let mut services: HashMap<String, Node> = HashMap::new();
    for (name, count) in [("Battle", 3), ("Club", 2)] {
        for i in 1..=count {
            let path: ServicePath =
                format!("{WORLD}/{name}/{}-{i}", name.to_lowercase()).parse()?;
            let node =
                start_service(&network, &discovery, path, heartbeat, broadcasts.clone()).await?;
            println!(
                "   {:<40} bucket {}  {}",
                node.path().to_string(),
                node.bucket(),
                node.endpoints()[0]
            );
            services.insert(node.path().instance().to_owned(), node);
        }
    }
    let mut lobbies = Vec::new();
    for i in 1..=2 {
        let lobby = network
            .builder(format!("{WORLD}/Lobby/lobby-{i}").parse()?)?
            .discovery(discovery.clone())
            .heartbeat(heartbeat, 3)
            .target(battle.clone())
            .target(club.clone())
            .start()
            .await?;
        println!(
            "   {:<40} bucket {}  {}  targets Battle, Club",
            lobby.path().to_string(),
            lobby.bucket(),
            lobby.endpoints()[0]
        );
        lobbies.push(lobby);
    }

    println!("\n== 2. Discovery and probing (an instance is used only after it answers READY)");
    for lobby in &lobbies {
        let t = Instant::now();
        lobby
            .wait_for_instances(&battle, 3, Duration::from_secs(10))
            .await?;
        lobby
            .wait_for_instances(&club, 2, Duration::from_secs(10))
            .await?;
        println!(
            "   {} sees Battle ×3 and Club ×2, all probed, after {}",
            lobby.path().instance(),
            ms(t.elapsed())
        );
    }

    println!("\n== 3. Requests routed by player id (jump consistent hash over stable buckets)");
    let (owners, latencies) = route_all(&tally, &lobbies[0], &battle, args.players).await?;
    println!(
        "   lobby-1 routed {} players: {}",
        owners.len(),
        spread(&owners)
    );
    println!(
        "   request/reply latency: p50 {}  p99 {}  max {}",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0))
    );
    let (again, _) = route_all(&tally, &lobbies[1], &battle, args.players).await?;
    let agree = owners
        .iter()
        .filter(|(p, i)| again.get(*p) == Some(*i))
        .count();
    println!(
        "   lobby-2 (another requester) agrees on {agree}/{} players",
        owners.len()
    );

    println!("\n== 4. Broadcast to every Club instance");
    let reached = lobbies[0]
        .broadcast(&club, Multipart::from_frames(["guild war starts at 20:00"]))
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let received = loop {
        let arrived = broadcasts.arrived.notified();
        let received = broadcasts.received.load(Ordering::Relaxed) as usize;
        if received >= reached.len() || tokio::time::timeout_at(deadline, arrived).await.is_err() {
            break received;
        }
    };
    println!(
        "   sent to {} instances, received by {received}",
        reached.len()
    );

    println!("\n== 5. battle-2 hangs (stops answering, sockets open, like SIGSTOP) under traffic");
    let victim = services.get("battle-2").ok_or("battle-2 missing")?.clone();
    let mut events = lobbies[0].events();
    let traffic_on = Arc::new(AtomicBool::new(true));
    let traffic = {
        let (tally, lobby, battle, on) = (
            tally.clone(),
            lobbies[0].clone(),
            battle.clone(),
            traffic_on.clone(),
        );
        let players = args.players;
        tokio::spawn(async move {
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut p = 0u32;
            while on.load(Ordering::Relaxed) {
                let player = format!("player-{}", p % players);
                if let Err(error) = tally.request(&lobby, &battle, &player).await {
                    let kind = format!("{error}")
                        .split(':')
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    *errors.entry(kind).or_default() += 1;
                }
                p += 1;
            }
            errors
        })
    };
    tokio::time::sleep(heartbeat).await;
    let suspended_at = Instant::now();
    victim.suspend().await;
    let detection = tokio::time::timeout(bound * 4, async {
        loop {
            match events.recv().await {
                Ok(NodeEvent::PeerDown { path, reason }) if path.instance() == "battle-2" => {
                    return Ok(reason);
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
    })
    .await;
    let detected = suspended_at.elapsed();
    let Ok(Ok(reason)) = detection else {
        return Err("battle-2's failure was not detected".into());
    };
    println!(
        "   lobby-1 declared battle-2 dead after {} (bound {}): {reason}",
        ms(detected),
        ms(bound)
    );
    tokio::time::sleep(heartbeat).await;
    traffic_on.store(false, Ordering::Relaxed);
    let errors = traffic.await?;
    let failed: u64 = errors.values().sum();
    println!(
        "   traffic during the failure: {failed} requests failed with an error ({errors:?}), none hung"
    );
    let (during, _) = route_all(&tally, &lobbies[0], &battle, args.players).await?;
    let moved = owners
        .iter()
        .filter(|(p, i)| i.as_str() == "battle-2" && during.get(*p) != Some(*i))
        .count();
    let had = owners.values().filter(|i| i.as_str() == "battle-2").count();
    let others_moved = owners
        .iter()
        .filter(|(p, i)| i.as_str() != "battle-2" && during.get(*p) != Some(*i))
        .count();
    println!(
        "   battle-2's {had} players moved: {moved}; other players moved: {others_moved}; now {}",
        spread(&during)
    );

    println!("\n== 6. battle-2 dies for good and a new process takes its place");
    victim.kill().await;
    let restarted = start_service(
        &network,
        &discovery,
        victim.path().clone(),
        heartbeat,
        broadcasts.clone(),
    )
    .await?;
    let t = Instant::now();
    lobbies[0]
        .wait_for_instances(&battle, 3, Duration::from_secs(10))
        .await?;
    println!(
        "   battle-2 re-registered (bucket {}), discovered and probed after {}",
        restarted.bucket(),
        ms(t.elapsed())
    );
    let (after, _) = route_all(&tally, &lobbies[0], &battle, args.players).await?;
    let returned = owners
        .iter()
        .filter(|(p, i)| i.as_str() == "battle-2" && after.get(*p) == Some(*i))
        .count();
    let unchanged = owners
        .iter()
        .filter(|(p, i)| after.get(*p) == Some(*i))
        .count();
    println!(
        "   {returned}/{had} of its players came back; {unchanged}/{} players are where they started",
        owners.len()
    );

    let routed = routed_act(&network, &discovery, heartbeat, args.players).await?;

    for node in lobbies.iter().chain(services.values()).chain([&restarted]) {
        node.shutdown().await;
    }
    let sent = tally.sent.load(Ordering::Relaxed);
    let answered = tally.answered.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let lost = sent - answered - failed;
    let ok = lost == 0
        && detected <= bound * 2
        && agree == owners.len()
        && moved == had
        && others_moved == 0
        && returned == had
        && received == 2
        && routed;
    println!(
        "\nsummary: requests sent={sent} answered={answered} failed_with_error={failed} lost_silently={lost} \
         failure_detection_ms={:.0} detection_bound_ms={} players_moved={moved}/{had} others_moved={others_moved} \
         players_returned={returned}/{had} elapsed_s={:.1} result={}",
        detected.as_secs_f64() * 1e3,
        bound.as_millis(),
        started.elapsed().as_secs_f64(),
        if ok { "ok" } else { "FAILED" }
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

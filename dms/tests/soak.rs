//! L9 soak (RELIABILITY L9, the heavier tier): two nodes over real TCP on loopback for
//! `DMS_SOAK_SECS` seconds (default 3,600): requests at a steady rate, notifications and
//! broadcasts beside them, and the client node shut down and started again every
//! `DMS_SOAK_CHURN_SECS` (default 10 s, at most a quarter of the run), alternately with
//! its old identity and a fresh one. The server node lives for the whole run.
//!
//! Every request must end answered (a typed error would be an unexplained failure: the
//! server is up and the client stops sending before it shuts down), every notification
//! and broadcast sent must reach the server, and at the quiet points between client
//! generations (only the server alive) the process's open descriptors and tokio's alive
//! tasks must be back at their baseline and RSS within a bound of its value after the
//! warm-up. Samples RSS (`/proc/self/status` VmRSS), descriptors (`/proc/self/fd`) and
//! tasks (`RuntimeMetrics::num_alive_tasks`) every second and prints a `soak figures`
//! line at the end.
//!
//! Ignored by the normal suite; run by `bash scripts/heavy.sh soak [SECONDS]`, i.e.
//! `DMS_SOAK_SECS=3600 cargo test --release -p dms --test soak -- --ignored --nocapture`
//! (`DMS_SOAK_SECS=20` is a smoke run). No metrics recorder is installed: its per-label
//! registry would grow with every fresh client identity and hide the library's memory.
#![cfg(all(feature = "tcp", target_os = "linux"))]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dms::{MemoryDiscovery, Multipart, Node, ServicePath};
use dms_test_support::wait::within;
use support::{cluster, instance};
use tokio::sync::Semaphore;

/// Requests in flight at most.
const IN_FLIGHT: usize = 64;
/// One request every this often (200 a second).
const REQUEST_EVERY: Duration = Duration::from_millis(5);
/// One notification every this many requests.
const NOTIFY_EVERY: u64 = 10;
/// One broadcast every this many requests.
const BROADCAST_EVERY: u64 = 200;
/// Each request's own timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// RSS after the warm-up may grow by this much at most by the end.
const RSS_GROWTH_BOUND: u64 = 10 * 1024 * 1024;

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The process's resident set, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// The process's open file descriptors.
fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Tokio's alive tasks on the runtime of `handle`.
fn tasks(handle: &tokio::runtime::Handle) -> usize {
    handle.metrics().num_alive_tasks()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// What the server saw.
#[derive(Default)]
struct Served {
    requests: AtomicU64,
    notifications: AtomicU64,
    broadcasts: AtomicU64,
}

/// What the clients sent and how each call ended.
#[derive(Default)]
struct Sent {
    requests: AtomicU64,
    answered: AtomicU64,
    notifications: AtomicU64,
    broadcasts: AtomicU64,
    /// Failures by kind, with the first message of each kind.
    failures: Mutex<BTreeMap<String, (u64, String)>>,
}

impl Sent {
    fn failed(&self, what: &str, error: &dms::RequestError) {
        let debug = format!("{error:?}");
        let kind = debug
            .split(['(', '{', ' '])
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut failures = self.failures.lock().unwrap();
        let entry = failures
            .entry(format!("{what} {kind}"))
            .or_insert_with(|| (0, error.to_string()));
        entry.0 += 1;
    }

    fn failure_count(&self) -> u64 {
        self.failures.lock().unwrap().values().map(|(n, _)| n).sum()
    }
}

async fn server(discovery: &MemoryDiscovery, path: &ServicePath, served: Arc<Served>) -> Node {
    let node = Node::builder(path.clone())
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let responder = node.clone();
    tokio::spawn(async move {
        while let Some(request) = responder.next_request().await {
            if request.is_broadcast() {
                served.broadcasts.fetch_add(1, Ordering::Relaxed);
            } else if request.expects_reply() {
                served.requests.fetch_add(1, Ordering::Relaxed);
                let body = request.body().clone();
                let _ = request.reply(body).await;
            } else {
                served.notifications.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    node
}

/// One client generation: starts a node at `path`, sends for `length`, waits for every
/// call in flight, shuts the node down.
async fn generation(
    discovery: &MemoryDiscovery,
    path: ServicePath,
    length: Duration,
    sent: &Arc<Sent>,
) {
    let to = cluster("SoakServer");
    let client = Node::builder(path)
        .target(to.clone())
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    within(
        "the server instance",
        client.wait_for_instances(&to, 1, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tick = tokio::time::interval(REQUEST_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + length;
    while Instant::now() < end {
        tick.tick().await;
        let i = sent.requests.fetch_add(1, Ordering::Relaxed);
        let permit = permits.clone().acquire_owned().await.unwrap();
        let (client, to, sent) = (client.clone(), to.clone(), sent.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let body = Multipart::from_frames([i.to_be_bytes().to_vec()]);
            match client.request_timeout(&to, i, body, REQUEST_TIMEOUT).await {
                Ok(reply) => {
                    assert_eq!(&reply.body[0][..], &i.to_be_bytes(), "wrong reply");
                    sent.answered.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => sent.failed("request", &error),
            }
            if i % NOTIFY_EVERY == 0 {
                let body = Multipart::from_frames([b"note".to_vec()]);
                match client.notify(&to, i, body).await {
                    Ok(_) => {
                        sent.notifications.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => sent.failed("notify", &error),
                }
            }
            if i % BROADCAST_EVERY == 0 {
                let body = Multipart::from_frames([b"all".to_vec()]);
                match client.broadcast(&to, body).await {
                    Ok(reached) => {
                        sent.broadcasts
                            .fetch_add(reached.len() as u64, Ordering::Relaxed);
                    }
                    Err(error) => sent.failed("broadcast", &error),
                }
            }
        });
    }
    // Every call in flight ends (each request by its reply or its timeout).
    within(
        "the calls in flight",
        permits.acquire_many(IN_FLIGHT as u32),
    )
    .await
    .unwrap()
    .forget();
    client.shutdown().await;
}

/// A quiet point: only the server alive.
#[derive(Debug, Clone, Copy)]
struct Quiet {
    at: Duration,
    rss: u64,
    fds: usize,
    /// Alive tasks on the server's runtime (its node only).
    server_tasks: usize,
    /// Alive tasks on the test's runtime (the client nodes, the sampler, the test).
    client_tasks: usize,
}

impl Quiet {
    fn now(started: Instant, server: &tokio::runtime::Handle) -> Self {
        Self {
            at: started.elapsed(),
            rss: rss(),
            fds: fds(),
            server_tasks: tasks(server),
            client_tasks: tasks(&tokio::runtime::Handle::current()),
        }
    }

    /// Descriptors and tasks no more than `baseline`'s.
    fn back_to(&self, baseline: &Self) -> bool {
        self.fds <= baseline.fds
            && self.server_tasks <= baseline.server_tasks
            && self.client_tasks <= baseline.client_tasks
    }
}

/// Waits (up to 5 s) until descriptors and tasks are back at `baseline`, or, without a
/// baseline, until they have held still for half a second (the server is still closing
/// the session of the client that just left); returns the quiet point as it is then.
async fn quiet_point(
    started: Instant,
    server: &tokio::runtime::Handle,
    baseline: Option<Quiet>,
) -> Quiet {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut still = 0;
    let mut previous: Option<Quiet> = None;
    loop {
        let now = Quiet::now(started, server);
        let settled = match baseline {
            Some(b) => now.back_to(&b),
            None => {
                still = match previous {
                    Some(p) if p.back_to(&now) && now.back_to(&p) => still + 1,
                    _ => 0,
                };
                still >= 10
            }
        };
        if settled || Instant::now() >= deadline {
            return now;
        }
        previous = Some(now);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Least-squares slope of RSS over time, in MiB per hour.
fn slope_mib_per_hour(points: &[Quiet]) -> f64 {
    if points.len() < 2 {
        return 0.0;
    }
    let n = points.len() as f64;
    let xs: Vec<f64> = points.iter().map(|p| p.at.as_secs_f64() / 3600.0).collect();
    let ys: Vec<f64> = points.iter().map(|p| mib(p.rss)).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "L9 soak, minutes to an hour: bash scripts/heavy.sh soak"]
async fn soak_two_nodes_over_tcp_with_requests_notifications_and_client_churn() {
    let secs = env_secs("DMS_SOAK_SECS", 3_600).max(8);
    let churn = env_secs("DMS_SOAK_CHURN_SECS", 10).clamp(1, (secs / 4).max(1));
    let total = Duration::from_secs(secs);
    let generation_length = Duration::from_secs(churn);
    // Warm-up: the first fifth of the run, at most 5 minutes.
    let warm_up = (total / 5).min(Duration::from_secs(300));
    println!(
        "soak: {secs} s, a client generation every {churn} s, warm-up {} s, \
         {} requests/s, a notification every {NOTIFY_EVERY}, a broadcast every {BROADCAST_EVERY}",
        warm_up.as_secs(),
        1_000 / REQUEST_EVERY.as_millis()
    );

    let started = Instant::now();
    let discovery = MemoryDiscovery::new();
    let served = Arc::new(Served::default());
    let sent = Arc::new(Sent::default());
    let server_path = instance("SoakServer", "server-1");
    // The server node on a runtime of its own, so that its tasks are counted apart from
    // the clients'.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("soak-server")
        .enable_all()
        .build()
        .unwrap();
    let server_handle = server_runtime.handle().clone();
    let server = {
        let (discovery, path, served) = (discovery.clone(), server_path.clone(), served.clone());
        server_handle
            .spawn(async move { server(&discovery, &path, served).await })
            .await
            .unwrap()
    };

    // Samples every second, whatever the phase.
    let samples = Arc::new(Mutex::new(Vec::<Quiet>::new()));
    let sampler = {
        let (samples, server_handle) = (samples.clone(), server_handle.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let now = Quiet::now(started, &server_handle);
                samples.lock().unwrap().push(now);
            }
        })
    };

    let mut quiet: Vec<Quiet> = Vec::new();
    let mut baseline: Option<Quiet> = None;
    let mut generations = 0u64;
    while started.elapsed() + generation_length <= total {
        // Alternately the same identity again and a fresh one.
        let name = if generations % 2 == 0 {
            "client-again".to_owned()
        } else {
            format!("client-{generations}")
        };
        generation(
            &discovery,
            instance("SoakClient", &name),
            generation_length,
            &sent,
        )
        .await;
        generations += 1;
        let point = quiet_point(started, &server_handle, baseline).await;
        if baseline.is_none() && started.elapsed() >= warm_up {
            baseline = Some(point);
        }
        if std::env::var_os("DMS_SOAK_VERBOSE").is_some() {
            println!("soak quiet point {generations}: {point:?}");
        }
        quiet.push(point);
    }
    // A run shorter than the warm-up plus one generation takes its last point as baseline.
    let baseline = baseline.unwrap_or(*quiet.last().unwrap());
    let last = *quiet.last().unwrap();
    sampler.abort();

    // Notifications and broadcasts arrive after their call returned: wait for the server
    // to have taken them all.
    let wanted = (
        sent.notifications.load(Ordering::Relaxed),
        sent.broadcasts.load(Ordering::Relaxed),
    );
    let arrived = || {
        (
            served.notifications.load(Ordering::Relaxed),
            served.broadcasts.load(Ordering::Relaxed),
        )
    };
    let wait = Instant::now();
    while arrived() != wanted && wait.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let samples = samples.lock().unwrap().clone();
    let after_warm_up: Vec<Quiet> = quiet
        .iter()
        .copied()
        .filter(|q| q.at >= baseline.at)
        .collect();
    let slope = slope_mib_per_hour(&after_warm_up);
    let max_rss = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    let max_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let max_server_tasks = samples.iter().map(|s| s.server_tasks).max().unwrap_or(0);
    let max_client_tasks = samples.iter().map(|s| s.client_tasks).max().unwrap_or(0);
    let requests = sent.requests.load(Ordering::Relaxed);
    let answered = sent.answered.load(Ordering::Relaxed);
    let failures = sent.failure_count();
    let rss_growth = last.rss.saturating_sub(baseline.rss);
    println!(
        "soak figures: {:.0} s, {generations} client generations, requests {requests} sent / \
         {answered} answered / {failures} failed (server handled {}), notifications {} sent / {} \
         received, broadcasts {} sent / {} received; RSS {:.1} MiB after warm-up (t = {:.0} s) -> \
         {:.1} MiB at the end (+{:.2} MiB, slope {slope:.2} MiB/h over {} quiet points), max {:.1} \
         MiB under load; fds {} -> {} (max {max_fds}); tokio alive tasks, server runtime {} -> {} \
         (max {max_server_tasks}), client runtime {} -> {} (max {max_client_tasks})",
        started.elapsed().as_secs_f64(),
        served.requests.load(Ordering::Relaxed),
        wanted.0,
        arrived().0,
        wanted.1,
        arrived().1,
        mib(baseline.rss),
        baseline.at.as_secs_f64(),
        mib(last.rss),
        mib(rss_growth),
        after_warm_up.len(),
        mib(max_rss),
        baseline.fds,
        last.fds,
        baseline.server_tasks,
        last.server_tasks,
        baseline.client_tasks,
        last.client_tasks,
    );
    let failures = sent.failures.lock().unwrap().clone();
    for (kind, (n, first)) in &failures {
        println!("soak failure: {kind} x{n}, first: {first}");
    }

    assert!(generations >= 2, "fewer than two client generations ran");
    assert!(failures.is_empty(), "unexplained failures: {failures:?}");
    assert_eq!(
        answered, requests,
        "a request ended neither answered nor failed"
    );
    assert_eq!(
        served.requests.load(Ordering::Relaxed),
        requests,
        "the server handled another number of requests than were answered"
    );
    assert_eq!(arrived(), wanted, "notifications or broadcasts lost");
    assert!(
        rss_growth < RSS_GROWTH_BOUND,
        "RSS grew by {:.2} MiB after the warm-up (bound {:.0} MiB)",
        mib(rss_growth),
        mib(RSS_GROWTH_BOUND)
    );
    assert!(
        last.back_to(&baseline),
        "descriptors or tasks not back at their baseline: {last:?} at the end, {baseline:?} \
         after the warm-up"
    );
    server_handle
        .spawn(async move { server.shutdown().await })
        .await
        .unwrap();
    server_runtime.shutdown_background();
}

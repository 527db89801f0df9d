//! The `request` scenario: kernel request/reply between two nodes (TCP loopback, the
//! embedded discovery): latency with one request in flight, throughput with 1, 16 and 256
//! in flight (closed loop), then latency under load: requests issued at a fixed rate,
//! half the closed-loop maximum (open loop, see [`open_loop`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dms::{ClusterPath, MemoryDiscovery, Multipart, Node};
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use super::report::rtt_lines;
use super::worker::{self, WorkerPeer, spawn};
use super::{Line, fail};
use crate::failure::Failure;
use dms::Discovery;

const WORLD: &str = "/bench/cn/linux/w1/g1";
/// The open-loop run's rate, as a fraction of the closed-loop maximum.
const OPEN_LOOP_LOAD: f64 = 0.5;
/// Requests of the open-loop run outstanding at once, at most.
const OPEN_LOOP_OUTSTANDING: usize = 4096;
/// Pattern of the open-loop run's lines.
const OPEN_LOOP: &str = "request-reply-open-loop";

fn parse<T: std::str::FromStr>(text: &str) -> Result<T, Failure>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| fail("path", e))
}

/// Starts the responder: an echoing node on `discovery`.
async fn start_responder(discovery: MemoryDiscovery) -> Result<Node, Failure> {
    let responder = Node::builder(parse(&format!("{WORLD}/Battle/battle-1"))?)
        .discovery(discovery)
        .start()
        .await
        .map_err(|e| fail("start", e))?;
    let server = responder.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let body = request.body().clone();
            let _ = request.reply(body).await;
        }
    });
    Ok(responder)
}

/// `dms bench-worker --peer dms-node`: an echoing node on its own in-process discovery;
/// prints that discovery's entries (`entry <key> <hex value>`), which the bench copies
/// into its own, then `endpoint <its endpoint>`, and serves until the bench leaves.
pub(crate) async fn worker_process() -> Result<(), Failure> {
    let discovery = MemoryDiscovery::new();
    let responder = start_responder(discovery.clone()).await?;
    let world = dms_discovery::Key::new(WORLD).map_err(|e| fail("key", e))?;
    let (entries, _) = discovery.list(&world).await.map_err(|e| fail("list", e))?;
    for entry in entries {
        let hex: String = entry.value.iter().map(|b| format!("{b:02x}")).collect();
        crate::print_line(&format!("entry {} {hex}", entry.key));
    }
    let endpoint = responder
        .endpoints()
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    crate::print_line(&format!("endpoint {endpoint}"));
    std::future::pending::<()>().await;
    Ok(())
}

/// Copies an `entry <key> <hex value>` line of the worker into `discovery`.
async fn copy_entry(discovery: &MemoryDiscovery, line: &str) -> Result<(), Failure> {
    let mut fields = line.strip_prefix("entry ").unwrap_or_default().split(' ');
    let (Some(key), Some(hex)) = (fields.next(), fields.next()) else {
        return Err(fail("worker", format!("bad entry line {line:?}")));
    };
    let value = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| fail("worker", format!("bad hex in {line:?}")))
        })
        .collect::<Result<Vec<u8>, Failure>>()?;
    let key = dms_discovery::Key::new(key).map_err(|e| fail("key", e))?;
    discovery
        .set(&key, value.into(), None)
        .await
        .map_err(|e| fail("discovery", e))?;
    Ok(())
}

/// Kernel request/reply: the responder in a second process (default; its registration is
/// copied into this process's discovery, so both sides speak over real TCP between
/// processes, as the transport scenario does) or in this one.
pub(crate) async fn run(
    window: Duration,
    in_process: bool,
    emit: &mut impl FnMut(Line),
) -> Result<(), Failure> {
    let discovery = MemoryDiscovery::new();
    let runtime = worker::flavour_name();
    let (responder, _worker) = if in_process {
        eprintln!("request: two nodes in one process, TCP loopback, {runtime} ...");
        (Some(start_responder(discovery.clone()).await?), None)
    } else {
        eprintln!("request: two nodes in two processes, TCP loopback, {runtime} ...");
        let worker = spawn(WorkerPeer::DmsNode).await?;
        for line in &worker.preamble {
            copy_entry(&discovery, line).await?;
        }
        (None, Some(worker))
    };
    let cluster: ClusterPath = parse(&format!("{WORLD}/Battle"))?;
    let requester = Node::builder(parse(&format!("{WORLD}/Lobby/lobby-1"))?)
        .discovery(discovery)
        .target(cluster.clone())
        .start()
        .await
        .map_err(|e| fail("start", e))?;
    requester
        .wait_for_instances(&cluster, 1, Duration::from_secs(10))
        .await
        .map_err(|e| fail("discovery", e))?;
    let body = Multipart::from_frames([vec![0x5a_u8; 64]]);

    // One request at a time, from a spawned task (where a server's request code runs: a
    // session's or a handler's task); on a current-thread runtime also from the
    // `block_on` future itself, which tokio polls only after one more `epoll_wait` each
    // time another task (the node's driver, with the reply) wakes it.
    let histogram = {
        let (requester, cluster, body) = (requester.clone(), cluster.clone(), body.clone());
        tokio::spawn(async move { sequential(&requester, &cluster, &body, window).await })
            .await
            .map_err(|e| fail("request task", e))??
    };
    for line in rtt_lines("tcp", "request-reply", 64, &histogram) {
        emit(line);
    }
    if worker::current_threads() == 0 {
        let histogram = sequential(&requester, &cluster, &body, window).await?;
        for line in rtt_lines("tcp", "request-reply-block-on", 64, &histogram) {
            emit(line);
        }
    }

    // Closed loop: `in_flight` requesters, each sending its next request when its reply
    // is in. The last (the most in flight) estimates the maximum throughput.
    let mut max = 0.0;
    for in_flight in [1u64, 16, 256] {
        let done = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for key in 0..in_flight {
            let (requester, cluster, body, done, failed) = (
                requester.clone(),
                cluster.clone(),
                body.clone(),
                done.clone(),
                failed.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while start.elapsed() < window {
                    let counter = match requester.request(&cluster, key, body.clone()).await {
                        Ok(_) => &done,
                        Err(_) => &failed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for task in tasks {
            task.await.map_err(|e| fail("request task", e))?;
        }
        let n = done.load(Ordering::Relaxed);
        let failed = failed.load(Ordering::Relaxed);
        if failed > 0 {
            eprintln!(
                "request: {failed} of {} requests failed with {in_flight} in flight \
                 (not counted in the throughput)",
                n + failed
            );
        }
        max = n as f64 / start.elapsed().as_secs_f64();
        emit(Line {
            peer: "dms",
            transport: "tcp",
            pattern: format!("request-reply-in-flight-{in_flight}"),
            metric: "throughput_msgs_per_s",
            msg_size: 64,
            value: max,
            n,
            frames: 1,
            histogram: None,
        });
    }

    let rate = max * OPEN_LOOP_LOAD;
    if rate < 1.0 {
        return Err(fail(
            "open loop",
            "no closed-loop throughput to take the rate from",
        ));
    }
    let run = open_loop(&requester, &cluster, &body, rate, window).await?;
    open_loop_lines(&run, rate).into_iter().for_each(&mut *emit);
    requester.shutdown().await;
    if let Some(responder) = responder {
        responder.shutdown().await;
    }
    Ok(())
}

/// What an open-loop run measured.
#[derive(Debug)]
struct OpenLoopRun {
    /// Latency of each request answered, from its scheduled send time to its reply (ns).
    histogram: Histogram<u64>,
    /// Requests issued.
    issued: u64,
    /// Requests answered.
    answered: u64,
    /// Requests failed (an error or the request timeout), and the first error.
    failed: u64,
    first_error: Option<String>,
    /// Requests that found every slot taken and went out late (see [`open_loop`]).
    late: u64,
    /// From the first scheduled send until the last reply or failure.
    elapsed: Duration,
}

/// What the requests of an open-loop run share: their outcomes.
#[derive(Debug)]
struct Outcomes {
    histogram: Histogram<u64>,
    answered: u64,
    failed: u64,
    first_error: Option<String>,
    last: Instant,
}

/// Round trips of one request at a time for `window`, after 1,000 warm-up requests.
async fn sequential(
    requester: &Node,
    cluster: &ClusterPath,
    body: &Multipart,
    window: Duration,
) -> Result<Histogram<u64>, Failure> {
    for _ in 0..1000 {
        requester
            .request(cluster, 1u64, body.clone())
            .await
            .map_err(|e| fail("request", e))?;
    }
    let mut histogram = Histogram::<u64>::new(3).map_err(|e| fail("histogram", e))?;
    let start = Instant::now();
    while start.elapsed() < window {
        let sent = Instant::now();
        requester
            .request(cluster, 1u64, body.clone())
            .await
            .map_err(|e| fail("request", e))?;
        let _ = histogram.record(sent.elapsed().as_nanos() as u64);
    }
    Ok(histogram)
}

/// Open loop: request `i` is scheduled at `start + i / rate` for `window`, whatever the
/// replies do, and issued as a task of its own at that time; its latency runs from the
/// scheduled time to the reply. A slow reply thus never delays the next request (a closed
/// loop would wait, and leave the requests it did not send out of the distribution:
/// coordinated omission), and a sender that falls behind its schedule charges the delay to
/// the requests it sends late.
///
/// At most [`OPEN_LOOP_OUTSTANDING`] requests are outstanding: a request scheduled while
/// every slot is taken waits for one, goes out late, and its latency still counts from its
/// scheduled time (the wait is part of it); such requests are counted and reported. Failed
/// requests are counted (not in the latency) and reported: a line `failed_requests`, and
/// the first error on stderr. (The responder queues at most 1,024 requests, the kernel's
/// default, and refuses the next ones as overloaded: a stall of a few milliseconds at
/// this rate shows up as failures, not only as latency.)
async fn open_loop(
    requester: &Node,
    cluster: &ClusterPath,
    body: &Multipart,
    rate: f64,
    window: Duration,
) -> Result<OpenLoopRun, Failure> {
    let outcomes = Arc::new(Mutex::new(Outcomes {
        histogram: Histogram::new(3).map_err(|e| fail("histogram", e))?,
        answered: 0,
        failed: 0,
        first_error: None,
        last: Instant::now(),
    }));
    let slots = Arc::new(Semaphore::new(OPEN_LOOP_OUTSTANDING));
    let (mut issued, mut late) = (0u64, 0u64);
    let start = Instant::now();
    loop {
        let offset = Duration::from_secs_f64(issued as f64 / rate);
        if offset >= window {
            break;
        }
        let scheduled = start + offset;
        wait_until(scheduled).await;
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                late += 1;
                slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| fail("open loop", e))?
            }
        };
        let (requester, cluster, body, outcomes) = (
            requester.clone(),
            cluster.clone(),
            body.clone(),
            outcomes.clone(),
        );
        tokio::spawn(async move {
            let result = requester.request(&cluster, issued, body).await.map(drop);
            let now = Instant::now();
            let mut outcomes = outcomes.lock().unwrap_or_else(PoisonError::into_inner);
            match result {
                Ok(()) => {
                    let latency = now.duration_since(scheduled).as_nanos() as u64;
                    let _ = outcomes.histogram.record(latency);
                    outcomes.answered += 1;
                }
                Err(error) => {
                    outcomes.failed += 1;
                    outcomes
                        .first_error
                        .get_or_insert_with(|| error.to_string());
                }
            }
            outcomes.last = outcomes.last.max(now);
            drop(slot);
        });
        issued += 1;
    }
    // Every slot back: each request was answered or failed (within its timeout).
    let _all = slots
        .acquire_many(OPEN_LOOP_OUTSTANDING as u32)
        .await
        .map_err(|e| fail("open loop", e))?;
    let outcomes = outcomes.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(OpenLoopRun {
        histogram: outcomes.histogram.clone(),
        issued,
        answered: outcomes.answered,
        failed: outcomes.failed,
        first_error: outcomes.first_error.clone(),
        late,
        elapsed: outcomes.last.saturating_duration_since(start),
    })
}

/// Waits until `at`. On a multi-thread runtime: on the timer while that is more than
/// 2 ms away (tokio's timer ticks every millisecond), then yielding to the runtime's
/// other tasks until it is time, so that requests go out within microseconds of their
/// schedule (the cost is a busy worker while the run lasts). On a current-thread runtime
/// the generator shares the node's only thread, and spinning there starves the node
/// (measured: the run saturates, latencies of hundreds of ms): it waits on the timer
/// alone, so requests go out in bursts on its 1 ms ticks, and their latency, timed from
/// the schedule, includes up to 1 ms of that lateness.
async fn wait_until(at: Instant) {
    if worker::current_threads() == 0 {
        if at > Instant::now() {
            tokio::time::sleep_until(at.into()).await;
        }
        return;
    }
    let coarse = Duration::from_millis(2);
    if at.saturating_duration_since(Instant::now()) > coarse {
        tokio::time::sleep_until((at - coarse).into()).await;
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

/// The lines of an open-loop run at `rate` (offered, requests/s): the latency
/// percentiles, the rate achieved (`throughput_msgs_per_s`), the rate offered and the
/// failed requests (a line even when none failed). Late and failed requests are also
/// reported on stderr.
fn open_loop_lines(run: &OpenLoopRun, rate: f64) -> Vec<Line> {
    if run.late > 0 {
        eprintln!(
            "request: open loop: {} of {} requests found {OPEN_LOOP_OUTSTANDING} \
             outstanding and went out late (their latency counts from their schedule)",
            run.late, run.issued
        );
    }
    if run.failed > 0 {
        eprintln!(
            "request: open loop: {} of {} requests failed, first: {}",
            run.failed,
            run.issued,
            run.first_error.as_deref().unwrap_or("?")
        );
    }
    let line = |metric, value, n| Line {
        peer: "dms",
        transport: "tcp",
        pattern: OPEN_LOOP.to_owned(),
        metric,
        msg_size: 64,
        value,
        n,
        frames: 1,
        histogram: None,
    };
    let mut lines = rtt_lines("tcp", OPEN_LOOP, 64, &run.histogram);
    if run.answered > 0 {
        let achieved = run.answered as f64 / run.elapsed.as_secs_f64().max(1e-9);
        lines.push(line("throughput_msgs_per_s", achieved, run.answered));
    }
    lines.push(line("offered_msgs_per_s", rate, run.issued));
    lines.push(line("failed_requests", run.failed as f64, run.issued));
    lines
}

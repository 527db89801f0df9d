//! Resource limits against hostile peers on a TCP listener (RELIABILITY B11, S5, P10),
//! over real loopback sockets: a slowloris (connections dribbling their greeting a byte
//! at a time) is closed at the handshake timeout at the latest and cannot hold more than
//! `max_handshakes` places: beyond them the oldest unfinished handshake gives way to the
//! newcomer, so legitimate clients still get in; connections beyond the peer cap are
//! closed at once, counted, and cost no buffer; everything returns to its baseline once
//! the attack ends.
//!
//! The tests take turns (one lock): the heap is counted process-wide, and the timing
//! figures mean something only when the two cores are not shared with another attack.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![allow(clippy::print_stdout)] // the measured figures are reported

use std::alloc::System;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dms_core::wire::{Greeting, Limits};
use dms_core::{Endpoint, Incoming, MessageMiddleware, MiddlewareError};
use dms_test_support::wait::{link_up, within};
use dms_transport_tcp::{TcpConfig, TcpMiddleware};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// One test at a time (see the module docs).
static SERIAL: Mutex<()> = Mutex::const_new(());

/// A listener with `max_handshakes`, `max_peers` and `handshake_timeout`, and its address.
async fn server(
    max_handshakes: usize,
    max_peers: usize,
    handshake_timeout: Duration,
) -> (TcpMiddleware, Endpoint, SocketAddr) {
    let config = TcpConfig::builder()
        .identity("server")
        .max_handshakes(max_handshakes)
        .max_peers(max_peers)
        .limits(
            Limits::builder()
                .handshake_timeout(handshake_timeout)
                .build(),
        )
        .build()
        .unwrap();
    let server = TcpMiddleware::new(config);
    let endpoint = server
        .bind(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = endpoint
        .as_str()
        .trim_start_matches("tcp://")
        .parse()
        .unwrap();
    (server, endpoint, addr)
}

/// A client that does not redial (each legitimate connect is one fresh peer).
fn client() -> TcpMiddleware {
    TcpMiddleware::new(TcpConfig::builder().redial(false).build().unwrap())
}

/// Polls `cond` every millisecond until it holds, failing after the test deadline.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

/// What happened to one hostile connection.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    /// The server sent its greeting: the connection got a handshake place.
    admitted: bool,
    /// From connect to the server closing it.
    lived: Duration,
}

/// Connects and dribbles a valid greeting one byte per `every` (never its last byte),
/// reading whatever the server sends, until the server closes the connection.
async fn dribble(addr: SocketAddr, every: Duration) -> std::io::Result<Outcome> {
    let mut stream = TcpStream::connect(addr).await?;
    let opened = Instant::now();
    let greeting = Greeting::encode_null();
    let (mut sent, mut got) = (0, 0);
    let mut buf = [0u8; 256];
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            },
            _ = tick.tick(), if sent + 1 < greeting.len() => {
                if stream.write_all(&greeting[sent..=sent]).await.is_err() {
                    break;
                }
                sent += 1;
            }
        }
    }
    Ok(Outcome {
        admitted: got > 0,
        lived: opened.elapsed(),
    })
}

/// Connects and waits for the server to close the connection; true if the server sent
/// nothing first (it was refused before any handshake work).
async fn refused_at_once(addr: SocketAddr) -> bool {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    match within("the refused connection's close", stream.read(&mut buf)).await {
        Ok(0) | Err(_) => true,
        Ok(_) => false,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// B11 at PR-tier size: 300 hostile connections dribbling a greeting byte every 300 ms,
/// reconnecting whenever they are closed, for 3 s against a listener with a 1 s
/// handshake timeout and 100 handshake places; 50 legitimate clients connect meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_closed_at_the_handshake_timeout_and_capped() {
    let _serial = SERIAL.lock().await;
    const ATTACKERS: usize = 300;
    const CAP: usize = 100;
    const LEGIT: usize = 50;
    let timeout = Duration::from_secs(1);
    let every = Duration::from_millis(300);
    let attack = Duration::from_secs(3);
    let (server, endpoint, addr) = server(CAP, 10_000, timeout).await;

    // The server's own view: handshakes that ended at the timeout, and the most places
    // ever taken at once.
    let timeouts = Arc::new(AtomicU64::new(0));
    let drain = {
        let (server, timeouts) = (server.clone(), timeouts.clone());
        tokio::spawn(async move {
            while let Ok(item) = server.recv().await {
                if matches!(&item, Incoming::Refused { error, .. }
                    if matches!(**error, MiddlewareError::HandshakeTimeout(_)))
                {
                    timeouts.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let max_pending = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let sampler = {
        let (server, max_pending) = (server.clone(), max_pending.clone());
        tokio::spawn(async move {
            while started.elapsed() < attack + timeout * 2 {
                max_pending.fetch_max(server.stats().pending_handshakes, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let mut attackers = tokio::task::JoinSet::new();
    for _ in 0..ATTACKERS {
        attackers.spawn(async move {
            let mut outcomes = Vec::new();
            while started.elapsed() < attack {
                if let Ok(outcome) = dribble(addr, every).await {
                    outcomes.push(outcome);
                }
                // Closed (at the timeout, or evicted by a newer connection): come back a
                // little later, as a real attacker would, without spinning the two cores.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            outcomes
        });
    }
    until("the handshake places filled by the attack", || {
        server.stats().pending_handshakes == CAP as u64
    })
    .await;

    // Legitimate clients, one every 40 ms while the attack goes on, each retrying every
    // 10 ms while it is refused: the time from its first attempt to its link.
    let mut legit = tokio::task::JoinSet::new();
    for _ in 0..LEGIT {
        let endpoint = endpoint.clone();
        legit.spawn(async move {
            let first = Instant::now();
            let mut attempts = 0u32;
            loop {
                attempts += 1;
                let client = client();
                if client.connect(&endpoint).await.is_ok() {
                    return (first.elapsed(), attempts, client);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let legit = within("the legitimate clients' links", legit.join_all()).await;
    let outcomes: Vec<Outcome> = within("the attack's end", attackers.join_all())
        .await
        .into_iter()
        .flatten()
        .collect();

    // Every hostile connection is gone with the attack: no handshake place is held.
    until("no handshake in progress after the attack", || {
        server.stats().pending_handshakes == 0
    })
    .await;
    sampler.abort();
    let stats = server.stats();

    let mut admitted: Vec<Duration> = outcomes
        .iter()
        .filter(|o| o.admitted)
        .map(|o| o.lived)
        .collect();
    let never_admitted = outcomes.iter().filter(|o| !o.admitted).count();
    admitted.sort();
    let mut legit_times: Vec<Duration> = legit.iter().map(|(t, _, _)| *t).collect();
    legit_times.sort();
    let max_attempts = legit.iter().map(|(_, a, _)| *a).max().unwrap_or(0);
    println!(
        "slowloris: {ATTACKERS} attackers x {:.1} s, cap {CAP}, handshake timeout {timeout:?}: \
         {} connections closed after min {:.0} / p50 {:.0} / max {:.0} ms ({never_admitted} \
         closed before the greeting); server: {} handshake timeouts, {} handshakes evicted, \
         {} pending at most; {LEGIT} legitimate connects: p50 {:.1} / p99 {:.1} / \
         max {:.1} ms, at most {max_attempts} attempts",
        attack.as_secs_f64(),
        admitted.len(),
        ms(admitted[0]),
        ms(percentile(&admitted, 50.0)),
        ms(admitted[admitted.len() - 1]),
        timeouts.load(Ordering::Relaxed),
        stats.handshakes_evicted,
        max_pending.load(Ordering::Relaxed),
        ms(percentile(&legit_times, 50.0)),
        ms(percentile(&legit_times, 99.0)),
        ms(legit_times[legit_times.len() - 1]),
    );

    // Each dribbler was closed at the handshake timeout at the latest (not kept alive by
    // its bytes), or earlier, evicted by a newer connection.
    let slack_after = Duration::from_millis(1500);
    for lived in &admitted {
        assert!(
            *lived <= timeout + slack_after,
            "a dribbling connection lived {lived:?} for a {timeout:?} handshake timeout"
        );
    }
    assert!(admitted.len() >= CAP, "the attack filled the places");
    // The cap held: never more than the cap in progress; the oldest gave way, counted.
    assert!(stats.handshakes_evicted > 0, "{stats:?}");
    assert_eq!(max_pending.load(Ordering::Relaxed), CAP as u64);
    // Legitimate clients get in while the attack holds every place: their handshake
    // takes a round trip or two, so they are not the oldest long enough to be evicted.
    // Bounded generously for a loaded CI machine (RELIABILITY B11 asks p99 <= 100 ms;
    // the figure is printed above).
    assert_eq!(legit_times.len(), LEGIT);
    assert!(
        percentile(&legit_times, 99.0) < timeout,
        "legitimate connects: {legit_times:?}"
    );

    // Back to baseline: the legitimate links close, no slot is held, and a new client
    // links at once.
    drop(legit);
    until("the legitimate links gone", || server.peers().is_empty()).await;
    let late = client();
    let connected = Instant::now();
    within("a connect after the attack", late.connect(&endpoint))
        .await
        .unwrap();
    assert!(connected.elapsed() < Duration::from_secs(1));
    until("the late link up on the server", || {
        server.peers().len() == 1
    })
    .await;
    drain.abort();
}

/// Beyond `max_handshakes`, the oldest unfinished handshake is closed to make room (it is
/// counted, and no handshake failure is reported for it): a legitimate client links at
/// once while silent connections hold every place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_handshake_gives_way_to_a_new_connection() {
    let _serial = SERIAL.lock().await;
    let (server, endpoint, addr) = server(3, 10_000, Duration::from_secs(30)).await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(addr).await.unwrap());
        // One at a time, so that their order is the order they were accepted in.
        let n = silent.len() as u64;
        until("the handshake in progress", || {
            server.stats().pending_handshakes == n
        })
        .await;
    }
    // A legitimate client links at once, and the oldest silent connection is closed.
    let ok = client();
    let started = Instant::now();
    within(
        "a connect while every place is taken",
        ok.connect(&endpoint),
    )
    .await
    .unwrap();
    println!(
        "connect with every handshake place taken: {:.2} ms",
        ms(started.elapsed())
    );
    within("the link up", link_up(&server)).await;
    let mut oldest = silent.remove(0);
    let mut buf = [0u8; 256];
    let closed = within("the oldest closed", async {
        loop {
            match oldest.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {} // the server's greeting, then the close
            }
        }
    })
    .await;
    assert!(closed);
    let stats = server.stats();
    assert_eq!(stats.handshakes_evicted, 1);
    assert_eq!(stats.pending_handshakes, 2);
    assert_eq!(stats.handshake_failures, 0);
    drop(silent);
    until("the places free", || server.stats().pending_handshakes == 0).await;
}

/// Heap bytes allocated so far, and held now.
fn heap() -> (usize, isize) {
    // stats_alloc counts a reallocation's growth in `bytes_allocated` and its shrinking
    // in `bytes_deallocated` already.
    let stats = GLOBAL.stats();
    let held = stats.bytes_allocated as isize - stats.bytes_deallocated as isize;
    (stats.bytes_allocated, held)
}

/// At `max_peers`, a connection is closed as soon as it is accepted and reported
/// (`Refused` with `PeerLimit`, counted); it takes no handshake place, spawns no task
/// and allocates no read buffer: the heap of 2,000 refusals (both sides of the socket
/// counted) stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_peer_cap_are_refused_fast_with_flat_memory() {
    let _serial = SERIAL.lock().await;
    let (server, endpoint, addr) = server(256, 2, Duration::from_secs(5)).await;
    let (a, b) = (client(), client());
    a.connect(&endpoint).await.unwrap();
    b.connect(&endpoint).await.unwrap();
    within("two links up", async {
        link_up(&server).await;
        link_up(&server).await;
    })
    .await;
    let refusals = Arc::new(AtomicU64::new(0));
    let drain = {
        let (server, refusals) = (server.clone(), refusals.clone());
        tokio::spawn(async move {
            while let Ok(item) = server.recv().await {
                match item {
                    Incoming::Refused { error, .. }
                        if matches!(*error, MiddlewareError::PeerLimit { max: 2 }) =>
                    {
                        refusals.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        })
    };
    // Warm-up: the runtime's and the sockets' one-time allocations.
    for _ in 0..200 {
        assert!(refused_at_once(addr).await);
    }
    until("the warm-up refusals reported", || {
        refusals.load(Ordering::Relaxed) == 200
    })
    .await;
    // Two rounds of N: what the first leaves held may be tables grown once; the second
    // must leave nothing more (memory flat in the number of refusals).
    const N: u64 = 2_000;
    let (allocated_before, held_before) = heap();
    let mut held = Vec::new();
    let start = Instant::now();
    for round in 1..=2 {
        for _ in 0..N {
            assert!(refused_at_once(addr).await, "refused before any handshake");
        }
        until("every refusal reported", || {
            refusals.load(Ordering::Relaxed) == 200 + round * N
        })
        .await;
        held.push(heap().1 - held_before);
    }
    let elapsed = start.elapsed();
    let per_refusal = (heap().0 - allocated_before) as f64 / (2 * N) as f64;
    let stats = server.stats();
    println!(
        "peer cap refusals: {} in {:.0} ms ({:.0} µs each, connect to close); heap allocated \
         per refusal {per_refusal:.0} B (both ends), held {:+} B after {N}, {:+} B after {}; \
         {stats:?}",
        2 * N,
        ms(elapsed),
        elapsed.as_secs_f64() * 1e6 / (2 * N) as f64,
        held[0],
        held[1],
        2 * N,
    );
    assert_eq!(stats.peer_limit_refusals, 200 + 2 * N);
    assert_eq!(stats.handshakes_evicted, 0);
    assert_eq!(stats.pending_handshakes, 0);
    assert_eq!(stats.handshake_failures, 0);
    // A read buffer is 64 KiB, a handshake buffer 1 KiB: a refusal allocates neither.
    assert!(per_refusal < 1024.0, "{per_refusal} B per refusal");
    // Flat: what the refusals allocated is freed (a little slack for the allocator's and
    // the runtime's lazily grown tables), and the second round adds nothing to the first.
    assert!(held[0] < 64 << 10, "{held:?} B still held");
    assert!(held[1] - held[0] < 16 << 10, "{held:?} B still held");
    // The two links are untouched; once one goes, a new peer links.
    drain.abort();
    drop(a);
    until("a slot free", || server.peers().len() == 1).await;
    let c = client();
    within("a connect under the cap", c.connect(&endpoint))
        .await
        .unwrap();
    until("the new link up", || server.peers().len() == 2).await;
}

//! Load smokes of the PR tier (RELIABILITY L1, L3, L10), asserting bounds, not speed: a burst
//! arrives whole, in order and without duplicates, every message accounted for; 1,000
//! peers of another process fan in for a minute at a bounded cost per peer; a churn of
//! connections leaves no link, file descriptor or memory behind. Real TCP on loopback.
//! The tests take turns (one lock): descriptors and RSS are the process's.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use dms_core::{Incoming, MessageMiddleware, Multipart, PeerId};
use dms_test_support::wait::{link_up, within};
use dms_transport_tcp::{TcpConfig, TcpMiddleware};

/// One test at a time (see the module docs).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn server() -> (TcpMiddleware, dms_core::Endpoint) {
    let server = TcpMiddleware::new(TcpConfig::builder().identity("server").build().unwrap());
    let endpoint = server
        .bind(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (server, endpoint)
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_a_burst_arrives_whole_in_order_and_without_duplicates() {
    let _serial = SERIAL.lock().await;
    let (server, endpoint) = server().await;
    let client = TcpMiddleware::new(TcpConfig::default());
    let peer = client.connect(&endpoint).await.unwrap();
    link_up(&server).await;
    // 64 B and 1 KiB messages, and 3-frame multiparts (RELIABILITY L1's sizes but
    // 16 KiB), each carrying its sequence number.
    const COUNT: u64 = 60_000;
    let sender = tokio::spawn(async move {
        for seq in 0..COUNT {
            let size = match seq % 3 {
                0 => 64,
                1 => 1024,
                _ => 32,
            };
            let mut body = vec![0u8; size];
            body[..8].copy_from_slice(&seq.to_be_bytes());
            let mut msg = Multipart::from_frames([peer.to_frame(), body.into()]);
            if seq % 3 == 2 {
                msg.push(vec![7u8; 32]);
            }
            client.send(msg).await.unwrap();
        }
        client
    });
    let mut next = 0u64;
    let mut items = Vec::new();
    within("the whole burst", async {
        while next < COUNT {
            items.clear();
            server.recv_many(&mut items, 256).await.unwrap();
            for item in items.drain(..) {
                let Incoming::Message(msg) = item else {
                    continue;
                };
                let seq = u64::from_be_bytes(msg.frames()[1][..8].try_into().unwrap());
                assert_eq!(seq, next, "out of order or duplicated");
                let expected_frames = if seq % 3 == 2 { 3 } else { 2 };
                assert_eq!(msg.len(), expected_frames);
                next += 1;
            }
        }
    })
    .await;
    let client = sender.await.unwrap();
    // Accounting: everything sent was delivered; nothing was dropped anywhere.
    assert_eq!(next, COUNT);
    for stats in [server.stats(), client.stats()] {
        assert_eq!(stats.bytes_dropped_on_link_down, 0);
        assert_eq!(stats.events_dropped, 0);
        assert_eq!(stats.protocol_errors, 0);
    }
}

/// One connect → handshake → one message → disconnect cycle; `client` is fresh (a new
/// identity) or reused (the same identity again).
async fn cycle(server: &TcpMiddleware, endpoint: &dms_core::Endpoint, client: &TcpMiddleware) {
    let peer: PeerId = client.connect(endpoint).await.unwrap();
    client
        .send(Multipart::from_frames([peer.to_frame(), "one".into()]))
        .await
        .unwrap();
    // Up, the message, then down when the client disconnects.
    let mut got_message = false;
    loop {
        match server.recv().await.unwrap() {
            Incoming::Message(_) => {
                got_message = true;
                client.disconnect(&peer).await.unwrap();
            }
            Incoming::LinkDown { .. } => break,
            _ => {}
        }
    }
    assert!(got_message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l10_connection_churn_leaves_nothing_behind() {
    let _serial = SERIAL.lock().await;
    let (server, endpoint) = server().await;
    let reused = TcpMiddleware::new(TcpConfig::builder().redial(false).build().unwrap());
    // Its link events are read (a middleware whose events nobody reads holds its links'
    // teardown once its bounded inbound queue is full).
    let events = {
        let reused = reused.clone();
        tokio::spawn(async move { while reused.recv().await.is_ok() {} })
    };
    let fresh = || TcpMiddleware::new(TcpConfig::builder().redial(false).build().unwrap());
    // Warm-up: the allocator's and the runtime's caches fill.
    for _ in 0..100 {
        cycle(&server, &endpoint, &reused).await;
        cycle(&server, &endpoint, &fresh()).await;
    }
    let (fds, memory) = (open_fds(), rss());
    const CYCLES: usize = 500;
    within("the churn", async {
        for _ in 0..CYCLES {
            cycle(&server, &endpoint, &reused).await;
            cycle(&server, &endpoint, &fresh()).await;
        }
    })
    .await;
    // Every link is gone from the server's map (a link is unregistered just after its
    // `LinkDown` is queued) and counted both ways.
    within("the server's map empty", async {
        while !server.peers().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let stats = server.stats();
    assert_eq!(stats.links_up, stats.links_down);
    assert_eq!(stats.links_up, 2 * (100 + CYCLES) as u64);
    // Closed connections leave no descriptor (a few may still be closing: allow a
    // handful, far below the 1,000 connections made), and memory stays flat.
    let settled = within("descriptors back to the baseline", async {
        loop {
            let now = open_fds();
            if now <= fds + 4 {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let grown = rss().saturating_sub(memory);
    eprintln!(
        "churn of {} connections: fds {fds} -> {settled}, RSS grew {grown} B",
        2 * CYCLES
    );
    assert!(grown <= 2 << 20, "RSS grew {grown} B over the churn");
    events.abort();
}

/// What the server of the fan-in test has received so far.
#[derive(Debug, Default)]
struct FanIn {
    ups: usize,
    downs: usize,
    messages: u64,
    /// The next sequence number expected from each peer.
    next: std::collections::HashMap<PeerId, u64>,
    /// Messages that came out of order or twice.
    misordered: u64,
}

/// L3 at the PR tier's size: 1,000 peers in a generator process (`tcp-peer`, one
/// runtime) fan in to one ROUTER here, each sending 10 messages a second of 256 B for a
/// minute (`DMS_L3_SECONDS` sets another length, 20 s at least; `bash scripts/heavy.sh
/// l3` runs ten). Every message arrives, in order per peer, none twice; linked and idle, a peer costs
/// the server at most 32 KiB; the server's memory stays flat while they send; and once
/// they are gone no link, descriptor or task is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l3_a_thousand_peers_fan_in_and_leave_nothing_behind() {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    const PEERS: usize = 1000;
    const RATE: u64 = 10;
    let seconds: u64 = std::env::var("DMS_L3_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
        // Enough per-second samples of RSS after the settling time for three thirds.
        .max(20);
    let _serial = SERIAL.lock().await;
    let (server, endpoint) = server().await;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let (fds, memory, tasks_before) = (open_fds(), rss(), tasks());
    let seen = Arc::new(Mutex::new(FanIn::default()));
    let receiver = {
        let (server, seen) = (server.clone(), seen.clone());
        tokio::spawn(async move {
            let mut items = Vec::new();
            while server.recv_many(&mut items, 256).await.is_ok() {
                let mut seen = seen.lock().unwrap();
                for item in items.drain(..) {
                    match item {
                        Incoming::LinkUp { .. } => seen.ups += 1,
                        Incoming::LinkDown { .. } => seen.downs += 1,
                        Incoming::Message(msg) => {
                            let peer = PeerId::new(msg.frames()[0].clone()).unwrap();
                            let seq = u64::from_le_bytes(msg.frames()[1][..8].try_into().unwrap());
                            let next = seen.next.entry(peer).or_default();
                            if seq == *next {
                                *next += 1;
                            } else {
                                seen.misordered += 1;
                            }
                            seen.messages += 1;
                        }
                        _ => {}
                    }
                }
            }
        })
    };
    let wait_until = async |what: &str, done: &dyn Fn(&FanIn) -> bool| {
        within(what, async {
            while !done(&seen.lock().unwrap()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    };
    let mut generator = tokio::process::Command::new(env!("CARGO_BIN_EXE_tcp-peer"))
        .args(["fan-in", &endpoint.to_string(), &PEERS.to_string()])
        .args([RATE.to_string(), "256".to_owned(), seconds.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut said = BufReader::new(generator.stdout.take().unwrap()).lines();
    let mut cue = generator.stdin.take().unwrap();
    let line = within("the generator linked", said.next_line())
        .await
        .unwrap();
    assert_eq!(line.as_deref(), Some(format!("linked {PEERS}").as_str()));
    wait_until("every peer linked at the server", &|s| s.ups == PEERS).await;

    // Idle: what 1,000 linked peers cost the server.
    let linked_fds = open_fds();
    let idle = rss().saturating_sub(memory) / PEERS as u64;
    eprintln!(
        "L3: {PEERS} idle peers: {idle} B of RSS each (RSS {memory} B before they linked), \
         fds {fds} -> {linked_fds}"
    );
    assert!(linked_fds >= fds + PEERS, "fds {fds} -> {linked_fds}");
    assert!(idle <= 32 << 10, "an idle peer costs the server {idle} B");

    cue.write_all(b"go\n").await.unwrap();
    // Memory while they send: sampled each second; the first sample after a fifth of the
    // run (RELIABILITY's minute 2 of 10), but at least 30 s in (or half a shorter run),
    // is the reference: buffers, maps and the allocator's arenas have grown to their
    // working size by then.
    let settle = (Duration::from_secs(seconds) / 5)
        .max(Duration::from_secs(30))
        .min(Duration::from_secs(seconds) / 2);
    let started = tokio::time::Instant::now();
    let mut samples = Vec::new();
    // The run, then at most the suite's deadline for the generator's last flush.
    let report_by = started + Duration::from_secs(seconds) + dms_test_support::wait::DEADLINE;
    let report = loop {
        tokio::select! {
            line = said.next_line() => break line.unwrap(),
            () = tokio::time::sleep_until(report_by) => panic!("no report from the generator"),
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if started.elapsed() >= settle {
                    samples.push(rss());
                }
            }
        }
    };
    let report = report.expect("the generator's report");
    let [sent, full]: [u64; 2] = report
        .strip_prefix("sent ")
        .map(|r| r.split(' ').map(|n| n.parse().unwrap()).collect::<Vec<_>>())
        .and_then(|v| v.try_into().ok())
        .unwrap_or_else(|| panic!("not a report: {report}"));
    assert_eq!(full, 0, "10 messages a second never fill a link");
    assert_eq!(sent, PEERS as u64 * RATE * seconds);
    wait_until("every message received and every peer gone", &|s| {
        s.messages == sent && s.downs == PEERS
    })
    .await;
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.misordered, 0, "messages out of order or twice");
        assert_eq!(seen.next.len(), PEERS);
        assert!(
            seen.next.values().all(|n| *n == RATE * seconds),
            "each peer's messages arrive whole"
        );
    }
    // Flat: the allocator gives pages back and takes them again (about ±1 MiB), so
    // the median of the last third of the samples is compared with the first third's.
    let third = samples.len() / 3;
    assert!(third >= 3, "{} samples of RSS", samples.len());
    let median = |part: &[u64]| {
        let mut part = part.to_vec();
        part.sort_unstable();
        part[part.len() / 2]
    };
    let (early, late) = (median(&samples[..third]), median(&samples[2 * third..]));
    let highest = samples.iter().copied().max().unwrap_or(0);
    eprintln!("L3: RSS while sending: median {early} B, then {late} B; at most {highest} B");
    assert!(
        late <= early + early / 20,
        "RSS grew from {early} B to {late} B while the peers sent"
    );
    assert!(generator.wait().await.unwrap().success());

    // Nothing left: links, descriptors, tasks.
    assert!(server.peers().is_empty());
    let stats = server.stats();
    assert_eq!(
        (stats.links_up, stats.links_down),
        (PEERS as u64, PEERS as u64)
    );
    assert_eq!(stats.bytes_dropped_on_link_down, 0);
    within("descriptors back to the baseline", async {
        while open_fds() > fds + 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    within("tasks back to the baseline", async {
        // The receiver is the one task added.
        while tasks() > tasks_before + 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    receiver.abort();
}

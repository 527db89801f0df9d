//! A server process killed and restarted under the same `shm://` name, 100 times: each
//! restart binds first time (the name is an abstract socket, free the moment its holder
//! dies), a client reaches it, and nothing is left behind: no file in `/dev/shm` (the
//! rings are memfds) and no `@dms-shm/NAME` socket once the last server is gone.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![allow(clippy::print_stdout)] // timings are reported

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dms_core::{Incoming, MessageMiddleware, Multipart};
use dms_transport_shm::{ShmConfig, ShmMiddleware};
use support::Peer;

const CYCLES: usize = 100;

fn dev_shm() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a Unix socket bound to `@dms-shm/NAME` exists (listening or accepted).
fn abstract_socket(name: &str) -> bool {
    let want = format!("@dms-shm/{name}");
    std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .any(|line| line.split_whitespace().nth(7) == Some(want.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_restarts_under_its_name_at_once_and_leaves_nothing_behind() {
    let name = support::unique("restart");
    let shm_before = dev_shm();
    assert!(!abstract_socket(&name));
    let client = ShmMiddleware::new(ShmConfig::builder().identity("client").build().unwrap());
    let start = Instant::now();
    for cycle in 0..CYCLES {
        let mut server = Peer::spawn(&["echo", &name]);
        // The first line is READY: the bind succeeded first time, no BINDFAIL, no retry.
        let first = server.line(Duration::from_secs(10)).await;
        let endpoint = match first.as_deref().and_then(|l| l.strip_prefix("READY ")) {
            Some(endpoint) => endpoint.parse().unwrap(),
            None => panic!("cycle {cycle}: restart did not bind first time: {first:?}"),
        };
        if cycle == 0 {
            assert!(abstract_socket(&name), "the listener is in /proc/net/unix");
        }
        let peer = support::within(Duration::from_secs(5), "connect", client.connect(&endpoint))
            .await
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        let ping = Bytes::from(format!("ping {cycle}"));
        client
            .send(Multipart::from_frames([peer.to_frame(), ping.clone()]))
            .await
            .unwrap();
        let echo = support::event(&client, Duration::from_secs(5), "echo", |e| match e {
            Incoming::Message(m) => Some(m[1].clone()),
            _ => None,
        })
        .await;
        assert_eq!(echo, ping);
        server.kill().await;
        support::event(&client, Duration::from_secs(2), "LinkDown", |e| {
            matches!(e, Incoming::LinkDown { peer: p, .. } if *p == peer).then_some(())
        })
        .await;
    }
    let elapsed = start.elapsed();
    println!(
        "{CYCLES} kill-and-restart cycles in {elapsed:?} ({:?} each)",
        elapsed / CYCLES as u32
    );
    let stats = client.stats();
    assert_eq!(stats.links.links_up, CYCLES as u64);
    assert_eq!(stats.links.links_down, CYCLES as u64);
    assert_eq!(stats.setup_failures, 0);
    // Nothing left: the last server is gone, and with it its name.
    assert!(
        !abstract_socket(&name),
        "@dms-shm/{name} still in /proc/net/unix"
    );
    let shm_after = dev_shm();
    let left: Vec<_> = shm_after.difference(&shm_before).collect();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
}

//! A peer process killed (`SIGKILL`) in the middle of a link: the other process stays
//! up, sees `LinkDown` at once (its doorbells are the dead process's sockets, closed by
//! its kernel: no heartbeat wait), delivers no partial message, and counts what it could
//! not deliver.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![allow(clippy::print_stdout)] // timings are reported

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use dms_core::{Incoming, LinkDownCause, MessageMiddleware, Multipart, SendError};
use dms_transport_shm::{ShmConfig, ShmMiddleware};
use rustix::process::Signal;
use support::{Peer, numbered};

/// Far below any heartbeat or handshake timeout.
const PROMPT: Duration = Duration::from_secs(2);

fn middleware(identity: &'static str) -> ShmMiddleware {
    ShmMiddleware::new(ShmConfig::builder().identity(identity).build().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_mid_message_costs_its_link_only_and_delivers_no_torn_message() {
    const BIG: usize = 8 << 20; // eight times the ring: always being written
    let shm = middleware("reader");
    let name = support::unique("kill-writer");
    let endpoint = shm
        .bind(&format!("shm://{name}").parse().unwrap())
        .await
        .unwrap();
    let big = BIG.to_string();
    let mut writer = Peer::spawn(&["send", &endpoint.to_string(), "1000000", "3", &big, &big]);
    let mut whole = 0u64;
    let mut killed_at = None;
    let cause = support::within(Duration::from_secs(60), "LinkDown", async {
        loop {
            match shm.recv().await.unwrap() {
                Incoming::Message(msg) => {
                    // Every message delivered is whole, before the kill and after it.
                    let seq = numbered::verify(&msg.frames()[1..])
                        .unwrap_or_else(|why| panic!("torn message: {why}"));
                    assert_eq!(seq, whole);
                    whole += 1;
                    if whole == 3 {
                        // The writer streams 8 MiB messages into a 1 MiB ring: it is in
                        // the middle of one now.
                        writer.signal(Signal::KILL);
                        killed_at = Some(Instant::now());
                    }
                }
                Incoming::LinkUp { .. } => {}
                Incoming::LinkDown { cause, .. } => return cause,
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    let killed_at = killed_at.expect("LinkDown before the kill");
    let after = killed_at.elapsed();
    println!("LinkDown {after:?} after SIGKILL ({cause}); {whole} whole messages");
    assert!(after < PROMPT, "LinkDown {after:?} after the kill");
    assert!(
        matches!(&cause, LinkDownCause::Io(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "a vanished peer is a reset, not a clean close: {cause}"
    );
    assert_eq!(writer.wait(Duration::from_secs(5)).await, None, "killed");
    let stats = shm.stats();
    assert_eq!(stats.links.links_down, 1);
    assert_eq!(stats.corrupt_rings, 0);
    assert_eq!(stats.links.protocol_errors, 0);
    // This process goes on: it still accepts a new writer.
    let mut again = Peer::spawn(&["send", &endpoint.to_string(), "3", "4", "1", "1000"]);
    let peer = support::event(&shm, Duration::from_secs(10), "end marker", |e| match e {
        Incoming::Message(m) if numbered::end_count(&m.frames()[1..]) == Some(3) => {
            Some(m.frames()[0].clone())
        }
        _ => None,
    })
    .await;
    shm.send(Multipart::from_frames([
        peer,
        Bytes::from_static(numbered::ACK),
    ]))
    .await
    .unwrap();
    again.expect("ACKED", Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_killed_with_messages_queued_is_seen_at_once_and_the_loss_counted() {
    const MSG: usize = 64 << 10;
    let mut reader = Peer::spawn(&["sink", &support::unique("kill-reader")]);
    let endpoint = reader.expect("READY", Duration::from_secs(10)).await;
    let shm = middleware("writer");
    let peer = shm.connect(&endpoint.parse().unwrap()).await.unwrap();
    reader.expect("UP", Duration::from_secs(5)).await;
    let pool = numbered::pool(5, MSG);
    let message = |seq| {
        let mut frames = vec![peer.to_frame()];
        frames.extend(numbered::message(&pool, 5, seq, MSG));
        Multipart::from_frames(frames)
    };
    // A few delivered, then the reader stops (SIGSTOP: it reads nothing more) and we
    // queue until the link says Full.
    for seq in 0..10 {
        shm.send(message(seq)).await.unwrap();
    }
    reader.signal(Signal::STOP);
    let (mut seq, mut queued) = (10, 0u64);
    support::within(Duration::from_secs(10), "Full", async {
        loop {
            match shm.try_send(message(seq)) {
                Ok(()) => {
                    seq += 1;
                    queued += MSG as u64;
                }
                Err(SendError::Full { .. }) => return,
                Err(error) => panic!("{error}"),
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let dropped_before = shm.stats().links.bytes_dropped_on_link_down;
    reader.signal(Signal::KILL);
    let killed_at = Instant::now();
    let cause = support::event(&shm, PROMPT, "LinkDown after SIGKILL", |e| match e {
        Incoming::LinkDown { cause, .. } => Some(cause.clone()),
        _ => None,
    })
    .await;
    let after = killed_at.elapsed();
    assert_eq!(reader.wait(Duration::from_secs(5)).await, None, "killed");
    let dropped = shm.stats().links.bytes_dropped_on_link_down - dropped_before;
    println!(
        "LinkDown {after:?} after SIGKILL ({cause}); {queued} bytes queued while stopped, \
         {dropped} counted as dropped"
    );
    assert!(matches!(cause, LinkDownCause::Io(_)), "{cause}");
    // What was queued went either into the dead reader's ring (1 MiB) and read buffer
    // (64 KiB), or is counted.
    let in_flight = (1 << 20) + (64 << 10) + 2 * MSG as u64;
    assert!(dropped > 0, "nothing counted as dropped");
    assert!(
        dropped + in_flight >= queued,
        "{queued} bytes queued, {dropped} counted: more than the ring lost silently"
    );
    // Sends to the dead peer are refused, not lost.
    assert!(matches!(
        shm.try_send(message(seq)),
        Err(SendError::UnknownPeer { .. })
    ));
}

//! A reader process stopped (`SIGSTOP`) for 2 s while this process sends as fast as
//! `try_send` lets it: the sends see `Full` (backpressure, bounded memory), and after
//! `SIGCONT` every message accepted arrives, in order, whole.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![allow(clippy::print_stdout)] // figures are reported

mod support;

use std::time::{Duration, Instant};

use dms_core::{Incoming, MessageMiddleware, Multipart, SendError};
use dms_transport_shm::{ShmConfig, ShmMiddleware};
use rustix::process::Signal;
use support::{Peer, numbered};

const MAX: usize = 64 << 10;

struct Writer<'a> {
    shm: &'a ShmMiddleware,
    peer: bytes::Bytes,
    pool: bytes::Bytes,
    seq: u64,
    pending: Option<Multipart>,
    fulls: u64,
}

impl Writer<'_> {
    /// Sends as fast as try_send allows for `time`; a message refused as Full is offered
    /// again (the sequence has no gap). Returns the payload bytes accepted.
    async fn flood(&mut self, time: Duration) -> u64 {
        let end = Instant::now() + time;
        let mut bytes = 0u64;
        while Instant::now() < end {
            let msg = self.pending.take().unwrap_or_else(|| {
                let len = numbered::len_of(11, self.seq, 1, MAX);
                let mut frames = vec![self.peer.clone()];
                frames.extend(numbered::message(&self.pool, 11, self.seq, len));
                Multipart::from_frames(frames)
            });
            let len = msg.payload_len() as u64;
            match self.shm.try_send(msg) {
                Ok(()) => {
                    self.seq += 1;
                    bytes += len;
                }
                Err(SendError::Full { msg, .. }) => {
                    self.fulls += 1;
                    self.pending = Some(*msg);
                    tokio::task::yield_now().await;
                }
                Err(error) => panic!("{error}"),
            }
        }
        bytes
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_reader_makes_sends_full_and_loses_nothing_once_continued() {
    const QUEUE: usize = 8 << 20; // the default link queue
    let mut reader = Peer::spawn(&["sink", &support::unique("stop")]);
    let endpoint = reader.expect("READY", Duration::from_secs(10)).await;
    let shm = ShmMiddleware::new(ShmConfig::builder().identity("writer").build().unwrap());
    let peer = shm.connect(&endpoint.parse().unwrap()).await.unwrap();
    reader.expect("UP", Duration::from_secs(5)).await;
    let mut w = Writer {
        shm: &shm,
        peer: peer.to_frame(),
        pool: numbered::pool(11, MAX),
        seq: 0,
        pending: None,
        fulls: 0,
    };
    let rss_before = support::rss();
    let mut accepted_bytes = w.flood(Duration::from_millis(300)).await;
    let (before_stop, fulls_before) = (w.seq, w.fulls);
    reader.signal(Signal::STOP);
    let while_stopped = w.flood(Duration::from_secs(2)).await;
    let fulls_stopped = w.fulls - fulls_before;
    let rss_stopped = support::rss();
    reader.signal(Signal::CONT);
    accepted_bytes += while_stopped;
    accepted_bytes += w.flood(Duration::from_millis(300)).await;
    let fulls = w.fulls - fulls_stopped;
    let accepted = w.seq; // a message still refused (pending) was never accepted
    let mut end = vec![peer.to_frame()];
    end.extend(numbered::end(accepted));
    shm.send(Multipart::from_frames(end)).await.unwrap();
    let result = reader.expect("RESULT", Duration::from_secs(30)).await;
    println!(
        "{accepted} messages ({} MiB) accepted, {} while stopped ({} KiB), {} Full while \
         stopped, {fulls} otherwise; RSS {} -> {} MiB; sink: {result}",
        accepted_bytes >> 20,
        accepted - before_stop,
        while_stopped >> 10,
        fulls_stopped,
        rss_before >> 20,
        rss_stopped >> 20,
    );
    assert!(
        fulls_stopped > 0,
        "no backpressure while the reader was stopped"
    );
    // What a stopped reader can make us hold: the link queue, its ring (1 MiB), its
    // read buffer, a message.
    let bound = (QUEUE + (1 << 20) + (64 << 10) + MAX) as u64;
    assert!(
        while_stopped <= bound,
        "{while_stopped} bytes accepted for a stopped reader (bound {bound})"
    );
    assert!(
        rss_stopped < rss_before + (64 << 20),
        "memory grew from {rss_before} to {rss_stopped} bytes"
    );
    assert_eq!(
        result,
        format!("received={accepted} bad=0 expected={accepted}"),
        "every message accepted arrives whole and in order"
    );
    support::event(&shm, Duration::from_secs(10), "ACK", |e| match e {
        Incoming::Message(m) => (m[1] == numbered::ACK).then_some(()),
        _ => None,
    })
    .await;
    shm.disconnect(&peer).await.unwrap();
    assert_eq!(shm.stats().links.bytes_dropped_on_link_down, 0);
    assert_eq!(reader.wait(Duration::from_secs(10)).await, Some(0));
}

//! The libzmq peer (feature `zmq`, through the `zmq` crate over the system's libzmq):
//! ROUTER ← DEALER with default socket options, measured as `shared/peers/zmq_bench.c`
//! measures it: one-way throughput timed at the ROUTER, round trips at the DEALER.
//! Blocking calls: the client runs on a blocking thread, the worker in its own process.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::{Measured, fail};
use crate::bench::report::RoundTrips;
use crate::failure::Failure;

/// First bytes of control messages (data frames never start with them).
const CONTROL: &[u8] = b"\0dms-bench:";

fn zmq_fail(error: zmq::Error) -> Failure {
    fail("libzmq", error)
}

/// Binds a ROUTER on a loopback port; returns it and its endpoint.
pub(crate) fn bind() -> Result<(zmq::Socket, String), Failure> {
    let context = zmq::Context::new();
    let router = context.socket(zmq::ROUTER).map_err(zmq_fail)?;
    router.bind("tcp://127.0.0.1:*").map_err(zmq_fail)?;
    let endpoint = router
        .get_last_endpoint()
        .map_err(zmq_fail)?
        .map_err(|_| fail("libzmq", "endpoint is not UTF-8"))?;
    Ok((router, endpoint))
}

/// The worker: counts data messages between `count` and `end` (answering
/// `done:<ns from first to last>:<count>`), or echoes them.
pub(crate) fn serve(router: &zmq::Socket) -> Result<(), Failure> {
    let (mut id, mut body) = (zmq::Message::new(), zmq::Message::new());
    let (mut counting, mut count) = (false, 0u64);
    let (mut first, mut last) = (None::<Instant>, Instant::now());
    loop {
        router.recv(&mut id, 0).map_err(zmq_fail)?;
        router.recv(&mut body, 0).map_err(zmq_fail)?;
        let mut frames = 1;
        while router.get_rcvmore().map_err(zmq_fail)? {
            router.recv(&mut body, 0).map_err(zmq_fail)?;
            frames += 1;
        }
        match body.strip_prefix(CONTROL) {
            None if counting => {
                last = Instant::now();
                first.get_or_insert(last);
                count += 1;
            }
            None if frames == 1 => {
                router.send(&id[..], zmq::SNDMORE).map_err(zmq_fail)?;
                router.send(&body[..], 0).map_err(zmq_fail)?;
            }
            None => {}
            Some(b"count") => (counting, count, first) = (true, 0, None),
            Some(b"end") => {
                counting = false;
                let elapsed = first.map_or(0, |f| last.duration_since(f).as_nanos());
                let done = [CONTROL, format!("done:{elapsed}:{count}").as_bytes()].concat();
                router.send(&id[..], zmq::SNDMORE).map_err(zmq_fail)?;
                router.send(done, 0).map_err(zmq_fail)?;
            }
            Some(b"echo") => counting = false,
            Some(b"quit") => return Ok(()),
            Some(_) => {}
        }
    }
}

/// The bench side: a DEALER connected to the worker's ROUTER.
pub(crate) struct Client {
    dealer: zmq::Socket,
    _context: zmq::Context,
}

impl Client {
    pub(crate) fn connect(endpoint: &str) -> Result<Self, Failure> {
        let context = zmq::Context::new();
        let dealer = context.socket(zmq::DEALER).map_err(zmq_fail)?;
        dealer.connect(endpoint).map_err(zmq_fail)?;
        Ok(Self {
            dealer,
            _context: context,
        })
    }

    fn control(&self, command: &str) -> Result<(), Failure> {
        let frame = [CONTROL, command.as_bytes()].concat();
        self.dealer.send(frame, 0).map_err(zmq_fail)
    }

    /// One-way throughput of `frames` × `size`-byte messages for `window`.
    pub(crate) fn throughput(
        &self,
        size: usize,
        frames: usize,
        window: Duration,
    ) -> Result<Measured, Failure> {
        self.control("count")?;
        let payload = vec![0x5a; size];
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < window {
            for _ in 0..64 {
                for frame in 0..frames {
                    let more = if frame + 1 < frames { zmq::SNDMORE } else { 0 };
                    self.dealer.send(&payload[..], more).map_err(zmq_fail)?;
                }
            }
            sent += 64;
        }
        self.control("end")?;
        let mut done = zmq::Message::new();
        self.dealer.recv(&mut done, 0).map_err(zmq_fail)?;
        let report =
            String::from_utf8_lossy(done.strip_prefix(CONTROL).unwrap_or_default()).into_owned();
        let mut fields = report.trim_start_matches("done:").split(':');
        let elapsed: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let received: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        if received != sent {
            return Err(fail("libzmq", format!("sent {sent}, {received} arrived")));
        }
        Ok(Measured::throughput(received, elapsed))
    }

    /// Round trips of `size`-byte messages for `window`, after a warm-up.
    pub(crate) fn round_trips(
        &self,
        size: usize,
        window: Duration,
    ) -> Result<Histogram<u64>, Failure> {
        self.control("echo")?;
        let payload = vec![0x5a; size];
        let mut reply = zmq::Message::new();
        let mut histogram = super::histogram()?;
        let mut round_trips = RoundTrips::new(window);
        while let Some(record) = round_trips.next_one() {
            let sent = Instant::now();
            self.dealer.send(&payload[..], 0).map_err(zmq_fail)?;
            self.dealer.recv(&mut reply, 0).map_err(zmq_fail)?;
            if record {
                let _ = histogram.record(sent.elapsed().as_nanos() as u64);
            }
        }
        Ok(histogram)
    }

    /// Tells the worker to stop.
    pub(crate) fn quit(&self) -> Result<(), Failure> {
        self.control("quit")
    }
}

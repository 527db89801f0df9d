//! The raw tokio TCP peer: length-prefixed frames (`u32` little-endian length, then a
//! kind byte and the payload) with the same freedom to batch as DMS has: the sender packs
//! frames into 64 KiB writes, the receiver parses every frame of each read. What DMS adds
//! on top of this (ZMTP framing, routing by peer id, links, backpressure) is what the
//! ratio DMS / raw TCP prices.

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Measured, fail};
use crate::bench::report::RoundTrips;
use crate::failure::Failure;

const DATA: u8 = 0;
const COUNT: u8 = 1;
const END: u8 = 2;
const ECHO: u8 = 3;
const DONE: u8 = 4;

/// Bytes the sender packs into one write (whole frames), as `shared/peers/tcp_bench.c`.
const WRITE_BATCH: usize = 64 * 1024;
/// Largest frame either side accepts (the biggest payload measured is 64 KiB).
const MAX_FRAME: usize = 1 << 20;

fn put_frame(buf: &mut BytesMut, kind: u8, payload: &[u8]) {
    buf.put_u32_le((payload.len() + 1) as u32);
    buf.put_u8(kind);
    buf.put_slice(payload);
}

/// A whole frame at the start of a buffer.
struct RawFrame<'a> {
    kind: u8,
    payload: &'a [u8],
    /// Bytes the frame takes, prefix included.
    len: usize,
}

/// The whole frame at the start of `buf`, if one is there.
fn frame_at(buf: &[u8]) -> Result<Option<RawFrame<'_>>, Failure> {
    let Some(&[a, b, c, d]) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([a, b, c, d]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(fail("raw-tokio-tcp", format!("bad frame length {len}")));
    }
    Ok(buf
        .get(4..4 + len)
        .and_then(|body| body.split_first())
        .map(|(&kind, payload)| RawFrame {
            kind,
            payload,
            len: 4 + len,
        }))
}

/// The next whole frame in `buf` (kind, payload), taken out of it, if one is there.
fn next_frame(buf: &mut BytesMut) -> Result<Option<(u8, BytesMut)>, Failure> {
    let Some(RawFrame { kind, len, .. }) = frame_at(buf)? else {
        return Ok(None);
    };
    let mut frame = buf.split_to(len);
    frame.advance(5);
    Ok(Some((kind, frame)))
}

/// Reads until `buf` holds a whole frame.
async fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<(u8, BytesMut), Failure> {
    loop {
        if let Some(frame) = next_frame(buf)? {
            return Ok(frame);
        }
        buf.reserve(WRITE_BATCH);
        if stream
            .read_buf(buf)
            .await
            .map_err(|e| fail("raw-tokio-tcp read", e))?
            == 0
        {
            return Err(fail("raw-tokio-tcp", "connection closed"));
        }
    }
}

/// The worker side: accepts one connection; counts data frames between COUNT and END
/// (answering DONE with the receive time from first to last and the count), or echoes
/// them after ECHO.
pub(crate) async fn serve(listener: TcpListener) -> Result<(), Failure> {
    let (mut stream, _) = listener
        .accept()
        .await
        .map_err(|e| fail("raw-tokio-tcp accept", e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| fail("raw-tokio-tcp", e))?;
    let mut buf = BytesMut::with_capacity(4 * WRITE_BATCH);
    let mut out = BytesMut::new();
    let (mut counting, mut count) = (false, 0u64);
    let (mut first, mut last) = (None::<Instant>, Instant::now());
    loop {
        // Reads of up to 1 MiB: what DMS's reader allows itself too.
        if buf.capacity() - buf.len() < WRITE_BATCH {
            buf.reserve(4 * WRITE_BATCH);
        }
        if stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| fail("raw-tokio-tcp read", e))?
            == 0
        {
            return Ok(());
        }
        // One clock read per read: the frames of a read arrived together. Frames are
        // parsed in place; the buffer advances once per read.
        let now = Instant::now();
        let mut at = 0;
        while let Some(RawFrame { kind, payload, len }) =
            frame_at(buf.get(at..).unwrap_or_default())?
        {
            at += len;
            match kind {
                DATA if counting => {
                    last = now;
                    first.get_or_insert(now);
                    count += 1;
                }
                DATA => put_frame(&mut out, DATA, payload),
                COUNT => (counting, count, first) = (true, 0, None),
                END => {
                    counting = false;
                    let elapsed = first.map_or(0, |f| last.duration_since(f).as_nanos() as u64);
                    let mut report = [0u8; 16];
                    report[..8].copy_from_slice(&elapsed.to_le_bytes());
                    report[8..].copy_from_slice(&count.to_le_bytes());
                    put_frame(&mut out, DONE, &report);
                }
                ECHO => counting = false,
                _ => return Err(fail("raw-tokio-tcp", format!("unknown frame kind {kind}"))),
            }
        }
        buf.advance(at);
        if !out.is_empty() {
            stream
                .write_all(&out)
                .await
                .map_err(|e| fail("raw-tokio-tcp write", e))?;
            out.clear();
        }
    }
}

/// The bench side, connected to a worker.
pub(crate) struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    pub(crate) async fn connect(addr: &str) -> Result<Self, Failure> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| fail("raw-tokio-tcp connect", e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| fail("raw-tokio-tcp", e))?;
        Ok(Self {
            stream,
            buf: BytesMut::with_capacity(4 * WRITE_BATCH),
        })
    }

    async fn control(&mut self, kind: u8) -> Result<(), Failure> {
        let mut out = BytesMut::new();
        put_frame(&mut out, kind, &[]);
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| fail("raw-tokio-tcp write", e))
    }

    /// One-way throughput of `size`-byte frames for `window`, timed at the receiver.
    pub(crate) async fn throughput(
        &mut self,
        size: usize,
        window: Duration,
    ) -> Result<Measured, Failure> {
        self.control(COUNT).await?;
        let payload = vec![0x5a; size];
        let mut out = BytesMut::with_capacity(WRITE_BATCH + size + 5);
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < window {
            for _ in 0..64 {
                // Whole frames only in each write, as the C kit packs them.
                if !out.is_empty() && out.len() + size + 5 > WRITE_BATCH {
                    self.stream
                        .write_all(&out)
                        .await
                        .map_err(|e| fail("raw-tokio-tcp write", e))?;
                    out.clear();
                }
                put_frame(&mut out, DATA, &payload);
            }
            sent += 64;
        }
        put_frame(&mut out, END, &[]);
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| fail("raw-tokio-tcp write", e))?;
        let (kind, report) = read_frame(&mut self.stream, &mut self.buf).await?;
        let (Some(elapsed), Some(received)) = (report.get(..8), report.get(8..16)) else {
            return Err(fail("raw-tokio-tcp", format!("bad report (kind {kind})")));
        };
        let elapsed = u64::from_le_bytes(elapsed.try_into().unwrap_or_default());
        let received = u64::from_le_bytes(received.try_into().unwrap_or_default());
        if kind != DONE || received != sent {
            return Err(fail(
                "raw-tokio-tcp",
                format!("sent {sent}, {received} arrived"),
            ));
        }
        Ok(Measured::throughput(received, elapsed))
    }

    /// Round trips of `size`-byte frames for `window`, after a warm-up.
    pub(crate) async fn round_trips(
        &mut self,
        size: usize,
        window: Duration,
    ) -> Result<Histogram<u64>, Failure> {
        self.control(ECHO).await?;
        let mut out = BytesMut::new();
        put_frame(&mut out, DATA, &vec![0x5a; size]);
        let mut histogram = super::histogram()?;
        let mut round_trips = RoundTrips::new(window);
        while let Some(record) = round_trips.next_one() {
            let sent = Instant::now();
            self.stream
                .write_all(&out)
                .await
                .map_err(|e| fail("raw-tokio-tcp write", e))?;
            read_frame(&mut self.stream, &mut self.buf).await?;
            if record {
                let _ = histogram.record(sent.elapsed().as_nanos() as u64);
            }
        }
        Ok(histogram)
    }
}

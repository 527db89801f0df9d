//! Numbered, checksummed messages: what the `shm-peer` sender streams and what its sink
//! (or a test) verifies. Shared by the peer program and the tests (`#[path]`).
//!
//! A message is `[header, chunk...]`: the header is 24 bytes, `seq`, payload length and
//! checksum (u64, little endian); the payload is cut into chunks of at most
//! [`CHUNK`] bytes (so that big messages stay under the default frame limit). The
//! payload is a slice of a random pool picked by `seq`, so a torn, shifted or mixed-up
//! message fails its checksum.

#![allow(dead_code)] // each user takes the half it needs

use bytes::Bytes;

/// Bytes of a header frame.
pub(crate) const HEADER_LEN: usize = 24;
/// Largest payload frame.
pub(crate) const CHUNK: usize = 1 << 20;
/// The first frame of the end-of-stream marker: `[END, count (u64 LE)]`.
pub(crate) const END: &[u8] = b"END";
/// The first frame of the answer to an end-of-stream marker.
pub(crate) const ACK: &[u8] = b"ACK";

/// A small, fast pseudo-random generator (xorshift64*): the peer program has no
/// dependency for it.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Fills `buf` with random bytes.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// The random bytes payloads are cut from: `max_len` plus 64 KiB.
pub(crate) fn pool(seed: u64, max_len: usize) -> Bytes {
    let mut bytes = vec![0u8; max_len + (64 << 10)];
    Rng::new(seed ^ 0x5EED).fill(&mut bytes);
    Bytes::from(bytes)
}

/// The payload length of message `seq`: log-uniform in `min..=max`.
pub(crate) fn len_of(seed: u64, seq: u64, min: usize, max: usize) -> usize {
    if min >= max {
        return min;
    }
    let mut rng = Rng::new(seed ^ seq.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let bits = usize::BITS - max.leading_zeros();
    let top = 1usize << rng.below(u64::from(bits) + 1);
    let len = (rng.next_u64() as usize) % top.max(1);
    len.clamp(min, max)
}

/// A 64-bit checksum of `seq` and the payload chunks (four lanes: fast even unoptimised).
pub(crate) fn checksum<B: AsRef<[u8]>>(seq: u64, chunks: &[B]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut lanes = [seq ^ K, 1, 2, 3];
    let mut total = 0u64;
    for chunk in chunks {
        let chunk = chunk.as_ref();
        total += chunk.len() as u64;
        let mut words = chunk.chunks_exact(32);
        for w in &mut words {
            let (a, rest) = w.split_at(8);
            let (b, rest) = rest.split_at(8);
            let (c, d) = rest.split_at(8);
            for (lane, word) in lanes.iter_mut().zip([a, b, c, d]) {
                let word = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
                *lane = (*lane ^ word).wrapping_mul(K).rotate_left(29);
            }
        }
        for (i, byte) in words.remainder().iter().enumerate() {
            lanes[i % 4] = (lanes[i % 4] ^ u64::from(*byte)).wrapping_mul(K);
        }
    }
    lanes
        .iter()
        .fold(total.wrapping_mul(K), |h, lane| (h ^ lane).wrapping_mul(K))
}

/// The frames of message `seq` with a payload of `len` bytes (the peer id not included).
pub(crate) fn message(pool: &Bytes, seed: u64, seq: u64, len: usize) -> Vec<Bytes> {
    let room = (pool.len() - len) as u64 + 1;
    let at = (Rng::new(seq ^ seed).next_u64() % room) as usize;
    let payload = pool.slice(at..at + len);
    let chunks: Vec<Bytes> = (0..len.div_ceil(CHUNK))
        .map(|i| payload.slice(i * CHUNK..((i + 1) * CHUNK).min(len)))
        .collect();
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(&seq.to_le_bytes());
    header.extend_from_slice(&(len as u64).to_le_bytes());
    header.extend_from_slice(&checksum(seq, &chunks).to_le_bytes());
    let mut frames = vec![Bytes::from(header)];
    frames.extend(chunks);
    frames
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Checks a received message (its frames after the peer id): returns its `seq`, or what
/// is wrong with it.
pub(crate) fn verify(frames: &[Bytes]) -> Result<u64, String> {
    let Some((header, chunks)) = frames.split_first() else {
        return Err("no frame".into());
    };
    if header.len() != HEADER_LEN {
        return Err(format!("header of {} bytes", header.len()));
    }
    let seq = u64_at(header, 0);
    let len = u64_at(header, 8);
    let sum = u64_at(header, 16);
    let got: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    if got != len {
        return Err(format!(
            "message {seq}: {got} payload bytes, header says {len}"
        ));
    }
    if checksum(seq, chunks) != sum {
        return Err(format!("message {seq}: checksum mismatch"));
    }
    Ok(seq)
}

/// The end-of-stream marker after `count` messages.
pub(crate) fn end(count: u64) -> Vec<Bytes> {
    vec![
        Bytes::from_static(END),
        Bytes::copy_from_slice(&count.to_le_bytes()),
    ]
}

/// The count an end-of-stream marker carries, if `frames` is one.
pub(crate) fn end_count(frames: &[Bytes]) -> Option<u64> {
    match frames {
        [tag, count] if &tag[..] == END && count.len() == 8 => Some(u64_at(count, 0)),
        _ => None,
    }
}

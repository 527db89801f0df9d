//! [`TraceContext`]: the W3C Trace Context `traceparent` a request carries across
//! processes (docs/PROTOCOL.md §3.4, extension type 1).
//!
//! The wire form is the 55 ASCII bytes `00-<32 hex trace-id>-<16 hex parent-id>-<2 hex
//! flags>` of <https://www.w3.org/TR/trace-context/#traceparent-header>. Parsing is
//! strict: exactly 55 bytes, version `00`, lowercase hex, `-` separators, neither id all
//! zeros. Anything else is not a trace context (`None`/`Err`), never a panic: a receiver
//! then treats the request as carrying none.

use std::fmt;
use std::str::FromStr;

/// Length of a version-00 `traceparent`.
pub const TRACEPARENT_LEN: usize = 55;

/// A W3C trace context: which trace a request belongs to and which span is its parent.
///
/// `Copy` and allocation-free: the kernel carries it with every traced request.
///
/// ```
/// use dms_core::trace::TraceContext;
///
/// let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// let ctx: TraceContext = text.parse()?;
/// assert_eq!(ctx.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
/// assert_eq!(ctx.parent_id(), 0x00f067aa0ba902b7);
/// assert!(ctx.is_sampled());
/// assert_eq!(ctx.to_string(), text);
/// // Strict: uppercase hex, another version or an all-zero id is no trace context.
/// assert!(TraceContext::parse(text.to_uppercase().as_bytes()).is_none());
/// assert!(TraceContext::new(0, 1, 0).is_none());
/// # Ok::<(), dms_core::trace::InvalidTraceparent>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: u128,
    parent_id: u64,
    flags: u8,
}

/// A `traceparent` that is not a valid version-00 W3C trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid version-00 W3C traceparent")]
pub struct InvalidTraceparent;

impl TraceContext {
    /// The `sampled` bit of the trace flags.
    pub const SAMPLED: u8 = 0x01;

    /// A trace context; `None` if either id is zero (W3C: invalid).
    pub fn new(trace_id: u128, parent_id: u64, flags: u8) -> Option<Self> {
        (trace_id != 0 && parent_id != 0).then_some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// Parses the 55-byte `traceparent` form; `None` unless it is exactly a valid
    /// version-00 one.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; TRACEPARENT_LEN] = bytes.try_into().ok()?;
        if &bytes[..3] != b"00-" || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trace_id = hex(&bytes[3..35])?;
        let parent_id = u64::try_from(hex(&bytes[36..52])?).ok()?;
        let flags = u8::try_from(hex(&bytes[53..55])?).ok()?;
        Self::new(trace_id, parent_id, flags)
    }

    /// The 55-byte `traceparent` form, without allocating.
    pub fn to_bytes(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [b'-'; TRACEPARENT_LEN];
        out[..2].copy_from_slice(b"00");
        put_hex(&mut out[3..35], self.trace_id);
        put_hex(&mut out[36..52], u128::from(self.parent_id));
        put_hex(&mut out[53..55], u128::from(self.flags));
        out
    }

    /// The trace id (16 bytes, big-endian).
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// The id of the parent span (8 bytes, big-endian): the span that sent the request.
    pub fn parent_id(&self) -> u64 {
        self.parent_id
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the `sampled` flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// The same trace with another parent span (`None` if `parent_id` is 0): what a
    /// participant that records its own span sends on.
    pub fn with_parent(self, parent_id: u64) -> Option<Self> {
        Self::new(self.trace_id, parent_id, self.flags)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceContext({self})")
    }
}

impl FromStr for TraceContext {
    type Err = InvalidTraceparent;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s.as_bytes()).ok_or(InvalidTraceparent)
    }
}

/// Lowercase hex digits as a number (at most 32 of them); `None` for any other byte.
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some((acc << 4) | u128::from(v))
    })
}

fn put_hex(out: &mut [u8], mut value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_w3c_example() {
        let ctx = TraceContext::parse(SAMPLE.as_bytes()).expect("valid");
        assert_eq!(ctx.to_string(), SAMPLE);
        assert_eq!(&ctx.to_bytes()[..], SAMPLE.as_bytes());
        assert_eq!(ctx.flags(), 1);
        let child = ctx.with_parent(0xabc).expect("non-zero");
        assert_eq!(
            child.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000abc-01"
        );
    }

    #[test]
    fn rejects_everything_else() {
        let bad: [&str; 13] = [
            "",
            &SAMPLE[..54],
            &format!("{SAMPLE}-"),
            &format!("{SAMPLE}0"),
            &SAMPLE.replacen("00-", "01-", 1),
            &SAMPLE.replacen("00-", "ff-", 1),
            &SAMPLE.to_uppercase(),
            &SAMPLE.replace('-', "_"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for text in bad {
            assert_eq!(TraceContext::parse(text.as_bytes()), None, "{text:?}");
            assert_eq!(text.parse::<TraceContext>(), Err(InvalidTraceparent));
        }
        assert!(TraceContext::new(1, 0, 0).is_none());
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..60)) {
            let _ = TraceContext::parse(&bytes);
        }

        #[test]
        fn roundtrip(trace in 1..=u128::MAX, parent in 1..=u64::MAX, flags in any::<u8>()) {
            let ctx = TraceContext::new(trace, parent, flags).expect("non-zero ids");
            prop_assert_eq!(TraceContext::parse(&ctx.to_bytes()), Some(ctx));
            prop_assert_eq!(ctx.to_string().parse::<TraceContext>(), Ok(ctx));
        }
    }
}

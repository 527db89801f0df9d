//! One measurement, as a JSON line of the peers' schema or a table row.

use std::sync::Arc;

use hdrhistogram::Histogram;

/// One number measured.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    /// Who was measured: `dms`, or a peer of `dms bench --peers` (`raw-tokio-tcp`,
    /// `libzmq`).
    pub(crate) peer: &'static str,
    /// `tcp`, `quic`, `shm`; `memory` or `etcd` for the discovery backend measured.
    pub(crate) transport: &'static str,
    /// `router-dealer`, `router-dealer-multipart`, `request-reply`, `broadcast-8`, ...;
    /// measured on a multi-thread runtime of N workers, it ends with `-mtN`.
    pub(crate) pattern: String,
    /// `throughput_msgs_per_s`, `rtt_p50_us`, ...
    pub(crate) metric: &'static str,
    /// Payload bytes per frame (the registration's bytes for discovery churn).
    pub(crate) msg_size: usize,
    /// The number.
    pub(crate) value: f64,
    /// Messages or round trips measured.
    pub(crate) n: u64,
    /// Frames per message.
    pub(crate) frames: usize,
    /// The distribution (nanoseconds) a latency line was read from, for `--plot`'s CDF
    /// (shared by the lines of one distribution; not printed).
    pub(crate) histogram: Option<Arc<Histogram<u64>>>,
}

impl Line {
    /// The line as one JSON object of the peers' schema.
    pub(crate) fn to_json(&self) -> String {
        serde_json::json!({
            "peer": self.peer,
            "transport": self.transport,
            "pattern": self.pattern,
            "metric": self.metric,
            "msg_size": self.msg_size,
            "value": (self.value * 1000.0).round() / 1000.0,
            "n": self.n,
            "frames": self.frames,
        })
        .to_string()
    }

    /// The line as one line of progress on stderr.
    pub(crate) fn summary(&self) -> String {
        format!(
            "{:<13} {:<6} {:<32} {:>6} B x{} {:<22} {:>14.1}  (n={})",
            self.peer,
            self.transport,
            self.pattern,
            self.msg_size,
            self.frames,
            self.metric,
            self.value,
            self.n
        )
    }
}

/// Prints the lines as a table.
pub(crate) fn table(lines: &[Line]) {
    crate::print_line(&format!(
        "{:<13} {:<6} {:<32} {:>8} {:>6} {:<22} {:>14} {:>10}",
        "peer", "tr", "pattern", "size", "frames", "metric", "value", "n"
    ));
    for l in lines {
        crate::print_line(&format!(
            "{:<13} {:<6} {:<32} {:>8} {:>6} {:<22} {:>14.1} {:>10}",
            l.peer, l.transport, l.pattern, l.msg_size, l.frames, l.metric, l.value, l.n
        ));
    }
}

/// What the pattern of a line measured on a runtime of `threads` workers ends with:
/// `-mt{threads}`, or nothing on a current-thread runtime (0).
pub(crate) fn flavour_suffix(threads: usize) -> String {
    if threads == 0 {
        String::new()
    } else {
        format!("-mt{threads}")
    }
}

/// A pattern without its runtime suffix, and the runtime's workers (0: current thread).
pub(crate) fn flavour(pattern: &str) -> (&str, usize) {
    pattern
        .rsplit_once("-mt")
        .and_then(|(base, n)| {
            let threads = n.parse::<usize>().ok().filter(|&n| n > 0)?;
            n.bytes()
                .all(|b| b.is_ascii_digit())
                .then_some((base, threads))
        })
        .unwrap_or((pattern, 0))
}

/// The metric names of one latency distribution: the `_p50_us`, `_p99_us`, `_p999_us`,
/// `_max_us` and `_mean_us` of one prefix (the names are static: they are the schema).
pub(crate) struct LatencyMetrics {
    /// Median.
    pub(crate) p50: &'static str,
    /// 99th percentile.
    pub(crate) p99: &'static str,
    /// 99.9th percentile.
    pub(crate) p999: &'static str,
    /// Largest value seen.
    pub(crate) max: &'static str,
    /// Mean.
    pub(crate) mean: &'static str,
}

/// Names of a distribution whose metrics start with `$prefix`.
macro_rules! latency_metrics {
    ($prefix:literal) => {
        LatencyMetrics {
            p50: concat!($prefix, "_p50_us"),
            p99: concat!($prefix, "_p99_us"),
            p999: concat!($prefix, "_p999_us"),
            max: concat!($prefix, "_max_us"),
            mean: concat!($prefix, "_mean_us"),
        }
    };
}

/// Round trips (a message and its echo, a request and its reply).
pub(crate) const RTT: LatencyMetrics = latency_metrics!("rtt");
/// Broadcast rounds: from the call until the last instance's handler has the message.
pub(crate) const ROUND: LatencyMetrics = latency_metrics!("round");
/// Registrations: lease, bucket claim and registration created.
pub(crate) const REGISTER: LatencyMetrics = latency_metrics!("register");
/// Watches: from the `create` call until a watcher of the cluster has the event.
pub(crate) const WATCH: LatencyMetrics = latency_metrics!("watch_latency");

/// Round-trip percentiles from a histogram of nanoseconds.
pub(crate) fn rtt_lines(
    transport: &'static str,
    pattern: &str,
    msg_size: usize,
    histogram: &Histogram<u64>,
) -> Vec<Line> {
    latency_lines(&RTT, transport, pattern, msg_size, histogram)
}

/// Percentiles, in microseconds, from a histogram of nanoseconds; none if it is empty.
pub(crate) fn latency_lines(
    names: &LatencyMetrics,
    transport: &'static str,
    pattern: &str,
    msg_size: usize,
    histogram: &Histogram<u64>,
) -> Vec<Line> {
    let n = histogram.len();
    if n == 0 {
        return Vec::new();
    }
    let at = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let shared = Arc::new(histogram.clone());
    [
        (names.p50, at(0.5)),
        (names.p99, at(0.99)),
        (names.p999, at(0.999)),
        (names.max, histogram.max() as f64 / 1000.0),
        (names.mean, histogram.mean() / 1000.0),
    ]
    .into_iter()
    .map(|(metric, value)| Line {
        peer: "dms",
        transport,
        pattern: pattern.to_owned(),
        metric,
        msg_size,
        value,
        n,
        frames: 1,
        histogram: Some(shared.clone()),
    })
    .collect()
}

/// One-way throughput (messages/s and MB/s) from the receiver's count and its time from
/// the first message to the last.
pub(crate) fn throughput_lines(
    peer: &'static str,
    pattern: &str,
    msg_size: usize,
    frames: usize,
    received: u64,
    elapsed_ns: u64,
) -> Vec<Line> {
    let per_s = received.saturating_sub(1) as f64 / (elapsed_ns as f64 / 1e9).max(1e-9);
    [
        ("throughput_msgs_per_s", per_s),
        (
            "throughput_MB_per_s",
            per_s * (msg_size * frames) as f64 / 1e6,
        ),
    ]
    .into_iter()
    .map(|(metric, value)| Line {
        peer,
        transport: "tcp",
        pattern: pattern.to_owned(),
        metric,
        msg_size,
        value,
        n: received,
        frames,
        histogram: None,
    })
    .collect()
}

/// The round trips of one latency measurement: 1,000 to warm up (not recorded), then as
/// many as fit in the window (recorded), as the peers in `shared/peers` measure them.
#[derive(Debug)]
pub(crate) struct RoundTrips {
    window: std::time::Duration,
    warm_up_left: u32,
    started: Option<std::time::Instant>,
}

impl RoundTrips {
    pub(crate) fn new(window: std::time::Duration) -> Self {
        Self {
            window,
            warm_up_left: 1000,
            started: None,
        }
    }

    /// Whether to make another round trip (`Some`), and whether to record it.
    pub(crate) fn next_one(&mut self) -> Option<bool> {
        if self.warm_up_left > 0 {
            self.warm_up_left -= 1;
            return Some(false);
        }
        let started = *self.started.get_or_insert_with(std::time::Instant::now);
        (started.elapsed() < self.window).then_some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavours_of_patterns() {
        assert_eq!(flavour_suffix(0), "");
        assert_eq!(flavour_suffix(2), "-mt2");
        assert_eq!(flavour("router-dealer"), ("router-dealer", 0));
        assert_eq!(flavour("router-dealer-mt2"), ("router-dealer", 2));
        assert_eq!(
            flavour("request-reply-in-flight-16-mt12"),
            ("request-reply-in-flight-16", 12)
        );
        assert_eq!(flavour("ping-pong-mt"), ("ping-pong-mt", 0));
        assert_eq!(flavour("x-mt+2"), ("x-mt+2", 0));
    }
}

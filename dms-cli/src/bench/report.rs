//! One measurement, as a JSON line of the peers' schema or a table row.

/// One number measured.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    /// `tcp`, `quic`, `shm`.
    pub(crate) transport: &'static str,
    /// `router-dealer`, `router-dealer-multipart`, `request-reply`, ...
    pub(crate) pattern: String,
    /// `throughput_msgs_per_s`, `rtt_p50_us`, ...
    pub(crate) metric: &'static str,
    /// Payload bytes per frame.
    pub(crate) msg_size: usize,
    /// The number.
    pub(crate) value: f64,
    /// Messages or round trips measured.
    pub(crate) n: u64,
    /// Frames per message.
    pub(crate) frames: usize,
}

impl Line {
    pub(crate) fn to_json(&self) -> String {
        serde_json::json!({
            "peer": "dms",
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

    pub(crate) fn summary(&self) -> String {
        format!(
            "{:<5} {:<28} {:>6} B x{} {:<22} {:>14.1}  (n={})",
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
        "{:<5} {:<28} {:>8} {:>6} {:<22} {:>14} {:>10}",
        "tr", "pattern", "size", "frames", "metric", "value", "n"
    ));
    for l in lines {
        crate::print_line(&format!(
            "{:<5} {:<28} {:>8} {:>6} {:<22} {:>14.1} {:>10}",
            l.transport, l.pattern, l.msg_size, l.frames, l.metric, l.value, l.n
        ));
    }
}

/// Round-trip percentiles from a histogram of microseconds.
pub(crate) fn rtt_lines(
    transport: &'static str,
    pattern: &str,
    msg_size: usize,
    histogram: &hdrhistogram::Histogram<u64>,
) -> Vec<Line> {
    let n = histogram.len();
    let at = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    [
        ("rtt_p50_us", at(0.5)),
        ("rtt_p99_us", at(0.99)),
        ("rtt_p999_us", at(0.999)),
        ("rtt_max_us", histogram.max() as f64 / 1000.0),
        ("rtt_mean_us", histogram.mean() / 1000.0),
    ]
    .into_iter()
    .map(|(metric, value)| Line {
        transport,
        pattern: pattern.to_owned(),
        metric,
        msg_size,
        value,
        n,
        frames: 1,
    })
    .collect()
}

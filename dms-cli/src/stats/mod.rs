//! `dms stats ADDR`: fetches a node's figures from its `--metrics` endpoint (plain
//! HTTP/1.1 GET) and prints them as a table grouped by metric name, or as JSON.
//!
//! The response is treated as hostile: it is read within a deadline and a size cap, and
//! anything unexpected (not HTTP, a status other than 200, a body that is not the text
//! format) is a typed error, never a panic.

mod fetch;
pub(crate) mod parse;
pub(crate) mod serve;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::failure::Failure;
use crate::print_line;
use fetch::FetchError;
use parse::{ParseError, Sample};

/// Options of `dms stats`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatsArgs {
    /// The metrics address of a node (`dms node --metrics`), as host:port (or
    /// http://host:port[/path]; the path defaults to /metrics).
    addr: String,
    /// One JSON document: an array of {"name", "labels": {...}, "value"} (a value that is
    /// not finite is the string "NaN", "+Inf" or "-Inf").
    #[arg(long)]
    json: bool,
    /// Only the metrics whose name starts with this prefix.
    #[arg(long)]
    prefix: Option<String>,
    /// Time to connect and read the whole response, in ms.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

/// Why `dms stats` has no figures to print.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StatsError {
    /// The HTTP exchange failed.
    #[error("cannot fetch metrics from {url}: {source}")]
    Fetch {
        /// What was fetched.
        url: String,
        /// What went wrong.
        source: FetchError,
    },
    /// The body is not the Prometheus text format.
    #[error("{url} did not answer the Prometheus text format: {source}")]
    Parse {
        /// What was fetched.
        url: String,
        /// The first bad line.
        source: ParseError,
    },
}

pub(crate) async fn run(args: StatsArgs) -> Result<(), Failure> {
    let samples = scrape(&args.addr, Duration::from_millis(args.timeout_ms.max(1)))
        .await
        .map_err(|e| match &e {
            StatsError::Fetch {
                source: FetchError::BadAddress(_),
                ..
            } => Failure::Usage(e.to_string()),
            _ => Failure::Other(format!(
                "{e}\n  hint: is a node running there with `dms node --metrics {}`?",
                args.addr
            )),
        })?;
    let samples: Vec<Sample> = match &args.prefix {
        Some(prefix) => samples
            .into_iter()
            .filter(|s| s.name.starts_with(prefix.as_str()))
            .collect(),
        None => samples,
    };
    if args.json {
        print_line(&to_json(&samples).to_string());
    } else {
        for line in table(&samples) {
            print_line(&line);
        }
    }
    Ok(())
}

/// Fetches and parses the figures at `addr`.
pub(crate) async fn scrape(addr: &str, timeout: Duration) -> Result<Vec<Sample>, StatsError> {
    let target = fetch::Target::parse(addr).map_err(|source| StatsError::Fetch {
        url: addr.to_owned(),
        source,
    })?;
    let url = target.to_string();
    let body = fetch::get(&target, timeout)
        .await
        .map_err(|source| StatsError::Fetch {
            url: url.clone(),
            source,
        })?;
    parse::parse(&body).map_err(|source| StatsError::Parse { url, source })
}

/// The samples as one JSON array, in the order they came.
fn to_json(samples: &[Sample]) -> serde_json::Value {
    samples
        .iter()
        .map(|s| {
            // Integral values (every counter) as JSON integers, exactly.
            #[allow(clippy::cast_possible_truncation)]
            let value = if s.value.fract() == 0.0 && s.value.abs() < 9.0e15 {
                serde_json::json!(s.value as i64)
            } else if s.value.is_finite() {
                serde_json::json!(s.value)
            } else {
                serde_json::json!(format_value(s.value))
            };
            serde_json::json!({"name": s.name, "labels": s.labels, "value": value})
        })
        .collect()
}

/// A number as the text format writes it: integers without a fraction.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        value.to_string()
    }
}

/// The table: NAME, LABELS, VALUE; rows grouped by metric name (names sorted, rows of a
/// name in the order they came), a blank line between groups.
fn table(samples: &[Sample]) -> Vec<String> {
    let mut groups: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for sample in samples {
        groups.entry(&sample.name).or_default().push(sample);
    }
    let rows: Vec<Vec<(&str, String, String)>> = groups
        .values()
        .map(|group| {
            group
                .iter()
                .map(|s| {
                    let labels: Vec<String> = s
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.escape_debug()))
                        .collect();
                    (s.name.as_str(), labels.join(","), format_value(s.value))
                })
                .collect()
        })
        .collect();
    let flat = || rows.iter().flatten();
    let name_width = flat().map(|r| r.0.len()).max().unwrap_or(0).max(4);
    let labels_width = flat().map(|r| r.1.len()).max().unwrap_or(0).max(6);
    let mut lines = vec![format!(
        "{:name_width$}  {:labels_width$}  VALUE",
        "NAME", "LABELS"
    )];
    for (index, group) in rows.iter().enumerate() {
        if index > 0 {
            lines.push(String::new());
        }
        for (name, labels, value) in group {
            lines.push(
                format!("{name:name_width$}  {labels:labels_width$}  {value}")
                    .trim_end()
                    .to_owned(),
            );
        }
    }
    lines
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn table_groups_by_name_and_json_keeps_labels() {
        let samples = parse::parse(
            "b_total{node=\"/x\",kind=\"request\"} 2\na 1.5\nb_total{node=\"/x\",kind=\"broadcast\"} 0\nc NaN\n",
        )
        .unwrap();
        let lines = table(&samples);
        assert!(lines[0].starts_with("NAME"), "{lines:?}");
        assert!(lines[1].starts_with("a "), "{lines:?}");
        assert!(lines[1].ends_with(" 1.5"), "{lines:?}");
        assert_eq!(lines[2], "");
        assert!(lines[3].contains("kind=request,node=/x"), "{lines:?}");
        assert!(lines[3].ends_with(" 2"), "{lines:?}");
        assert!(lines[4].contains("kind=broadcast,node=/x"), "{lines:?}");
        assert!(lines[6].ends_with(" NaN"), "{lines:?}");
        let json = to_json(&samples);
        assert_eq!(json[0]["name"], "b_total");
        assert_eq!(json[0]["labels"]["kind"], "request");
        assert_eq!(json[0]["value"], 2);
        assert_eq!(json[1]["value"], 1.5);
        assert_eq!(json[3]["value"], "NaN");
    }

    #[test]
    fn values_print_as_the_text_format_writes_them() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(-0.25), "-0.25");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(1e20), "100000000000000000000");
    }
}

//! `dms bench --plot DIR`: SVG charts of a run's lines.
//!
//! - `latency.svg`: the p50, p99, p999 and max of each latency distribution measured
//!   (round trips, broadcast rounds, registrations, watches), one line per transport,
//!   pattern and message size, on a log scale;
//! - `throughput.svg`: messages (or broadcasts) per second against the message size, one
//!   line per transport, pattern and frame count, both axes on log scales;
//! - `latency-cdf.svg`: the distribution of every 64-byte TCP round trip measured (the
//!   transport's, kernel request/reply's closed and open loop, the peers'), one curve per
//!   pattern and runtime (`-mtN`): the fraction of round trips (y) that took at most
//!   so many µs (x, log scale), read from the histograms at [`CDF_POINTS`] quantiles.
//!
//! Charts are drawn into a string and written with one `fs::write` each, so that a
//! write failure names its file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::Line;
use crate::failure::Failure;

/// Width and height of a chart, in pixels.
const SIZE: (u32, u32) = (1100, 620);
/// Width of the legend on the right of a chart.
const LEGEND_WIDTH: u32 = 340;
/// Metric suffixes of the latency chart, and their axis labels, in axis order.
const PERCENTILES: [(&str, &str); 4] = [
    ("_p50_us", "p50"),
    ("_p99_us", "p99"),
    ("_p999_us", "p999"),
    ("_max_us", "max"),
];
/// Metrics of the throughput chart, and what they count.
const RATES: [(&str, &str); 2] = [
    ("throughput_msgs_per_s", "msgs/s"),
    ("broadcasts_per_s", "broadcasts/s"),
];
const FONT: &str = "sans-serif";
/// Quantiles a CDF curve is drawn at.
const CDF_POINTS: usize = 100;
/// Message size of the round trips the CDF chart draws.
const CDF_SIZE: usize = 64;

/// One line of a chart.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

/// Creates `dir` if needed and checks that files can be written in it (before a run, so
/// that a bad directory fails at once rather than after the measurements).
pub(crate) fn prepare(dir: &Path) -> Result<(), Failure> {
    let cannot =
        |e: std::io::Error| Failure::Other(format!("cannot write plots to {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(cannot)?;
    let probe = dir.join(".dms-bench-write-test");
    std::fs::write(&probe, b"").map_err(cannot)?;
    std::fs::remove_file(&probe).map_err(cannot)
}

/// Writes `latency.svg`, `throughput.svg` and `latency-cdf.svg` into `dir`; returns
/// their paths.
pub(crate) fn write(dir: &Path, lines: &[Line]) -> Result<Vec<PathBuf>, Failure> {
    let charts = [
        ("latency.svg", latency_chart(lines)),
        ("throughput.svg", throughput_chart(lines)),
        ("latency-cdf.svg", cdf_chart(lines)),
    ];
    let mut written = Vec::new();
    for (name, svg) in charts {
        let path = dir.join(name);
        let svg =
            svg.map_err(|e| Failure::Other(format!("cannot draw {}: {e}", path.display())))?;
        std::fs::write(&path, svg)
            .map_err(|e| Failure::Other(format!("cannot write {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

/// `peer transport pattern [what] size B [xframes]`.
fn label(line: &Line, what: &str, with_size: bool) -> String {
    let mut label = format!("{} {} {}", line.peer, line.transport, line.pattern);
    if !what.is_empty() {
        label.push(' ');
        label.push_str(what);
    }
    if with_size {
        label.push_str(&format!(" {} B", line.msg_size));
    }
    if line.frames > 1 {
        label.push_str(&format!(" x{}", line.frames));
    }
    label
}

fn usable(line: &Line) -> bool {
    line.value.is_finite() && line.value > 0.0
}

/// One series per latency distribution; x is the percentile's index in [`PERCENTILES`].
fn latency_series(lines: &[Line]) -> Vec<Series> {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in lines.iter().filter(|l| usable(l)) {
        let found = PERCENTILES.iter().enumerate().find_map(|(i, (suffix, _))| {
            line.metric.strip_suffix(suffix).map(|prefix| (i, prefix))
        });
        let Some((i, prefix)) = found else { continue };
        let what = if prefix == "rtt" { "" } else { prefix };
        series
            .entry(label(line, what, true))
            .or_default()
            .push((i as f64, line.value));
    }
    into_series(series)
}

/// One series per transport, pattern, frame count and rate; x is the message size.
fn throughput_series(lines: &[Line]) -> Vec<Series> {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in lines.iter().filter(|l| usable(l)) {
        let Some((_, unit)) = RATES.iter().find(|(metric, _)| *metric == line.metric) else {
            continue;
        };
        let what = if *unit == "msgs/s" {
            String::new()
        } else {
            format!("({unit})")
        };
        series
            .entry(label(line, &what, false))
            .or_default()
            .push((line.msg_size as f64, line.value));
    }
    into_series(series)
}

/// The quantiles a CDF is drawn at: 0, then closer and closer to 1 (`1 - 10^(-4k/99)`
/// up to 0.9999), so that the tail gets as many points as the body.
fn cdf_quantiles() -> impl Iterator<Item = f64> {
    let last = (CDF_POINTS - 1) as f64;
    (0..CDF_POINTS).map(move |k| 1.0 - 10f64.powf(-4.0 * k as f64 / last))
}

/// One series per 64-byte TCP round-trip distribution (peer, pattern and runtime): points
/// (latency µs, fraction at most that).
fn cdf_series(lines: &[Line]) -> Vec<Series> {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in lines {
        // One line per distribution carries it to the chart: its median's.
        let Some(histogram) = &line.histogram else {
            continue;
        };
        if line.metric != "rtt_p50_us"
            || line.transport != "tcp"
            || line.msg_size != CDF_SIZE
            || histogram.is_empty()
        {
            continue;
        }
        let points = cdf_quantiles()
            .map(|q| {
                let us = histogram.value_at_quantile(q) as f64 / 1000.0;
                (us.max(0.001), q)
            })
            .collect();
        series.insert(label(line, "", false), points);
    }
    into_series(series)
}

fn into_series(map: BTreeMap<String, Vec<(f64, f64)>>) -> Vec<Series> {
    map.into_iter()
        .map(|(label, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series { label, points }
        })
        .collect()
}

/// The smallest and largest of `values`, widened by `margin` (a factor) on a log scale.
fn log_bounds(values: impl Iterator<Item = f64>, margin: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (1.0, 10.0);
    }
    (lo / margin, hi * margin)
}

/// `1.5k`, `2.3M`, `12`, `0.8`.
fn short(value: f64) -> String {
    let (scaled, unit) = match value.abs() {
        v if v >= 1e9 => (value / 1e9, "G"),
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    let text = if scaled.abs() >= 10.0 || scaled == scaled.round() {
        format!("{scaled:.0}")
    } else {
        format!("{scaled:.1}")
    };
    format!("{text}{unit}")
}

/// Ten colours that stay apart on white (matplotlib's `tab10`), then plotters' palette.
const COLORS: [(u8, u8, u8); 10] = [
    (0x1f, 0x77, 0xb4),
    (0xff, 0x7f, 0x0e),
    (0x2c, 0xa0, 0x2c),
    (0xd6, 0x27, 0x28),
    (0x94, 0x67, 0xbd),
    (0x8c, 0x56, 0x4b),
    (0xe3, 0x77, 0xc2),
    (0x7f, 0x7f, 0x7f),
    (0xbc, 0xbd, 0x22),
    (0x17, 0xbe, 0xcf),
];

fn color(i: usize) -> RGBAColor {
    match COLORS.get(i) {
        Some(&(r, g, b)) => RGBColor(r, g, b).mix(1.0),
        None => Palette99::pick(i).mix(1.0),
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Draws the legend of `series` down `area`.
fn legend(area: &Area<'_>, series: &[Series]) -> Result<(), String> {
    let style = (FONT, 13).into_font().color(&BLACK);
    for (i, s) in series.iter().enumerate() {
        let y = 60 + 20 * i as i32;
        let c = color(i);
        area.draw(&PathElement::new(vec![(8, y), (36, y)], c.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        area.draw(&Circle::new((22, y), 3, c.filled()))
            .map_err(|e| e.to_string())?;
        area.draw(&Text::new(s.label.clone(), (44, y - 7), style.clone()))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A chart with only a title and a note (nothing of its kind was measured).
fn empty(root: &Area<'_>, title: &str, note: &str) -> Result<(), String> {
    root.draw(&Text::new(
        title.to_owned(),
        (20, 20),
        (FONT, 22).into_font(),
    ))
    .map_err(|e| e.to_string())?;
    root.draw(&Text::new(
        note.to_owned(),
        (20, 70),
        (FONT, 16).into_font(),
    ))
    .map_err(|e| e.to_string())
}

/// Draws a chart into an SVG string: `draw` gets the plotting area on the left (the legend
/// of `series` goes on the right); with no series, the chart says `nothing`.
fn svg_chart(
    title: &str,
    nothing: &str,
    series: &[Series],
    draw: impl FnOnce(&Area<'_>) -> Result<(), String>,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        if series.is_empty() {
            empty(&root, title, nothing)?;
        } else {
            let (plot, side) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
            draw(&plot)?;
            legend(&side, series)?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn latency_chart(lines: &[Line]) -> Result<String, String> {
    let series = latency_series(lines);
    let title = "dms bench: latency percentiles (µs, log scale)";
    svg_chart(
        title,
        "no latency was measured in this run",
        &series,
        |plot| {
            let (lo, hi) = log_bounds(
                series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
                1.5,
            );
            let mut chart = ChartBuilder::on(plot)
                .caption(title, (FONT, 22))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(
                    (0..PERCENTILES.len() as i32 - 1).into_segmented(),
                    (lo..hi).log_scale(),
                )
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_labels(PERCENTILES.len())
                .x_label_formatter(&|x| match x {
                    SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => usize::try_from(*i)
                        .ok()
                        .and_then(|i| PERCENTILES.get(i))
                        .map_or(String::new(), |p| p.1.to_owned()),
                    SegmentValue::Last => String::new(),
                })
                .y_label_formatter(&|y| short(*y))
                .y_desc("µs")
                .x_desc("percentile")
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, s) in series.iter().enumerate() {
                let c = color(i);
                let at = |(x, y): (f64, f64)| (SegmentValue::CenterOf(x as i32), y);
                chart
                    .draw_series(LineSeries::new(
                        s.points.iter().copied().map(at),
                        c.stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?;
                chart
                    .draw_series(
                        s.points
                            .iter()
                            .copied()
                            .map(at)
                            .map(|p| Circle::new(p, 3, c.filled())),
                    )
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        },
    )
}

fn throughput_chart(lines: &[Line]) -> Result<String, String> {
    let series = throughput_series(lines);
    let title = "dms bench: throughput per second by message size (log scales)";
    svg_chart(
        title,
        "no throughput was measured in this run",
        &series,
        |plot| {
            let (x_lo, x_hi) = log_bounds(
                series.iter().flat_map(|s| s.points.iter().map(|p| p.0)),
                2.0,
            );
            let (y_lo, y_hi) = log_bounds(
                series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
                1.5,
            );
            let mut chart = ChartBuilder::on(plot)
                .caption(title, (FONT, 22))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_label_formatter(&|x| format!("{} B", short(*x)))
                .y_label_formatter(&|y| short(*y))
                .x_desc("message size (payload bytes per frame)")
                .y_desc("per second")
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, s) in series.iter().enumerate() {
                let c = color(i);
                chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                    .map_err(|e| e.to_string())?;
                chart
                    .draw_series(s.points.iter().map(|p| Circle::new(*p, 4, c.filled())))
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        },
    )
}

fn cdf_chart(lines: &[Line]) -> Result<String, String> {
    let series = cdf_series(lines);
    let title = "dms bench: round trips of 64 B over TCP, CDF per runtime";
    svg_chart(
        title,
        "no 64-byte TCP round trip was measured in this run",
        &series,
        |plot| {
            // A log scale by hand (x is log10 µs): labels at even steps whatever the range.
            let (lo, hi) = log_bounds(
                series.iter().flat_map(|s| s.points.iter().map(|p| p.0)),
                1.2,
            );
            let mut chart = ChartBuilder::on(plot)
                .caption(title, (FONT, 22))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(lo.log10()..hi.log10(), 0.0..1.0)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_labels(12)
                .x_label_formatter(&|x| short(10f64.powf(*x)))
                .y_labels(11)
                .y_label_formatter(&|y| format!("{y:.1}"))
                .x_desc("latency (µs, log scale)")
                .y_desc("fraction of round trips")
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, s) in series.iter().enumerate() {
                chart
                    .draw_series(LineSeries::new(
                        s.points.iter().map(|&(us, q)| (us.log10(), q)),
                        color(i).stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(transport: &'static str, pattern: &str, metric: &'static str, size: usize) -> Line {
        Line {
            peer: "dms",
            transport,
            pattern: pattern.to_owned(),
            metric,
            msg_size: size,
            value: 12.5,
            n: 10,
            frames: 1,
            histogram: None,
        }
    }

    #[test]
    fn series_group_lines_by_distribution_and_rate() {
        let lines = [
            line("tcp", "router-dealer", "rtt_p50_us", 64),
            line("tcp", "router-dealer", "rtt_p999_us", 64),
            line("tcp", "router-dealer", "rtt_mean_us", 64),
            line("tcp", "broadcast-8", "round_p99_us", 64),
            line("memory", "discovery-churn", "watch_latency_max_us", 70),
            line("tcp", "router-dealer", "throughput_msgs_per_s", 64),
            line("tcp", "router-dealer", "throughput_msgs_per_s", 1024),
            line("tcp", "broadcast-8", "broadcasts_per_s", 64),
            line("memory", "discovery-churn", "registrations_per_s", 70),
        ];
        let latency = latency_series(&lines);
        let labels: Vec<&str> = latency.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "dms memory discovery-churn watch_latency 70 B",
                "dms tcp broadcast-8 round 64 B",
                "dms tcp router-dealer 64 B"
            ]
        );
        assert_eq!(latency[2].points, [(0.0, 12.5), (2.0, 12.5)]);
        let throughput = throughput_series(&lines);
        let labels: Vec<&str> = throughput.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "dms tcp broadcast-8 (broadcasts/s)",
                "dms tcp router-dealer"
            ]
        );
        assert_eq!(throughput[1].points, [(64.0, 12.5), (1024.0, 12.5)]);
    }

    #[test]
    fn cdf_series_per_round_trip_distribution() {
        let mut histogram = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for ns in 1..=10_000u64 {
            histogram.record(ns * 10).unwrap();
        }
        let histogram = std::sync::Arc::new(histogram);
        let with = |pattern: &str, metric: &'static str, size: usize| Line {
            histogram: Some(histogram.clone()),
            ..line("tcp", pattern, metric, size)
        };
        let lines = [
            with("router-dealer", "rtt_p50_us", 64),
            with("router-dealer", "rtt_p99_us", 64),
            with("router-dealer", "rtt_p50_us", 1024),
            with("router-dealer-mt2", "rtt_p50_us", 64),
            with("request-reply", "rtt_p50_us", 64),
            line("tcp", "request-reply-mt2", "rtt_p50_us", 64),
        ];
        let cdf = cdf_series(&lines);
        let labels: Vec<&str> = cdf.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "dms tcp request-reply",
                "dms tcp router-dealer",
                "dms tcp router-dealer-mt2"
            ]
        );
        let points = &cdf[0].points;
        assert_eq!(points.len(), CDF_POINTS);
        assert_eq!(points[0].1, 0.0);
        assert!((points[CDF_POINTS - 1].1 - 0.9999).abs() < 1e-9);
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1)
        );
        // 10 ns .. 100 µs, uniform: the median near 50 µs.
        let median = points.iter().find(|p| p.1 >= 0.5).unwrap().0;
        assert!((45.0..55.0).contains(&median), "{median}");
        assert!(cdf_chart(&lines).unwrap().contains("router-dealer-mt2"));
    }

    #[test]
    fn charts_are_svg_even_without_data() {
        for svg in [latency_chart(&[]), throughput_chart(&[]), cdf_chart(&[])] {
            let svg = svg.unwrap();
            assert!(svg.starts_with("<svg"), "{svg}");
            assert!(svg.contains("no "), "{svg}");
        }
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short(1500.0), "1.5k");
        assert_eq!(short(2_300_000.0), "2.3M");
        assert_eq!(short(12.0), "12");
        assert_eq!(short(0.84), "0.8");
    }
}

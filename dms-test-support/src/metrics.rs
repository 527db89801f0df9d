//! A [`metrics`] recorder for tests: the figures the code under test records, kept
//! cumulatively (reading them resets nothing) and read by name and labels, so that a
//! test can assert that a failure path moved its counter.
//!
//! ```
//! let recorder = dms_test_support::metrics::recorder();
//! metrics::counter!("doc_total", "node" => "/a/b/c/d/e/F/f1").increment(2);
//! assert_eq!(recorder.counter("doc_total", &[("node", "/a/b/c/d/e/F/f1")]), 2);
//! assert_eq!(recorder.counter("doc_total", &[("node", "elsewhere")]), 0);
//! ```

use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// The process's test recorder.
pub struct TestRecorder {
    registry: Registry<Key, AtomicStorage>,
}

impl std::fmt::Debug for TestRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRecorder").finish_non_exhaustive()
    }
}

/// The recorder, installed as the global one on first use. Call it before the code under
/// test registers its figures (a node registers them when it starts).
///
/// # Panics
/// If another global recorder was installed first.
pub fn recorder() -> &'static TestRecorder {
    static RECORDER: OnceLock<&'static TestRecorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder: &'static TestRecorder = Box::leak(Box::new(TestRecorder {
            registry: Registry::atomic(),
        }));
        #[allow(clippy::expect_used)] // test support: a second recorder is a broken test
        metrics::set_global_recorder(Installed(recorder))
            .expect("no other global metrics recorder");
        recorder
    })
}

fn matches(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && labels
            .iter()
            .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}

impl TestRecorder {
    /// The sum of the counters named `name` that carry all of `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let mut sum = 0;
        self.registry.visit_counters(|key, value| {
            if matches(key, name, labels) {
                sum += value.load(Ordering::Relaxed);
            }
        });
        sum
    }

    /// The sum of the gauges named `name` that carry all of `labels`.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut sum = 0.0;
        self.registry.visit_gauges(|key, value| {
            if matches(key, name, labels) {
                sum += f64::from_bits(value.load(Ordering::Relaxed));
            }
        });
        sum
    }
}

/// The global recorder's handle on the leaked [`TestRecorder`].
struct Installed(&'static TestRecorder);

impl Recorder for Installed {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

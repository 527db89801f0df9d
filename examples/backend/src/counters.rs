//! Two of the kernel's figures, counted in this process: what its node forwarded for
//! others (`dms_forwarded_total`, a broker's work) and what it sent through the routing
//! table (`dms_routed_total`). A [`metrics`] recorder that keeps only those; install it
//! before the node starts, as the node registers its figures then.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// The counters of this process's node.
#[derive(Debug, Default)]
pub struct Counters {
    forwarded: Arc<AtomicU64>,
    routed: Arc<AtomicU64>,
}

impl Counters {
    /// Routed messages this process sent on to their next hop.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Requests and notifications this process sent through the routing table.
    pub fn routed(&self) -> u64 {
        self.routed.load(Ordering::Relaxed)
    }
}

/// The recorder's handle on the process's counters.
struct Capture(&'static Counters);

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match key.name() {
            "dms_forwarded_total" => Counter::from_arc(self.0.forwarded.clone()),
            "dms_routed_total" => Counter::from_arc(self.0.routed.clone()),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The process's counters, their recorder installed as the global one on first use (if
/// another recorder was installed first, they stay at 0).
pub fn install() -> &'static Counters {
    static COUNTERS: OnceLock<&'static Counters> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        let counters: &'static Counters = Box::leak(Box::default());
        let _ = metrics::set_global_recorder(Capture(counters));
        counters
    })
}

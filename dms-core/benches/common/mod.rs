//! What the dms-core benches share.

use std::time::Duration;

use criterion::Criterion;

/// Short runs (1 s warm-up, 2 s of 50 samples) so that the whole dms-core bench run stays
/// within a couple of minutes on 2 cores.
pub(crate) fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

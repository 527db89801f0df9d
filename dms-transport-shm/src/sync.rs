//! The atomics the ring uses, behind one facade: `std`'s in a normal build, loom's when
//! the crate is built with `--cfg dms_loom` (the ring's model checks, `ring/loom_tests.rs`;
//! not `--cfg loom`, under which tokio does not build).

#[cfg(dms_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(dms_loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

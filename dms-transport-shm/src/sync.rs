//! The atomics the ring uses, behind one facade: `std`'s in a normal build, loom's when
//! the crate is built with `--cfg loom` (the ring's model checks, `tests/loom.rs`).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

//! DMS [`MessageMiddleware`](dms_core::MessageMiddleware) over shared memory between
//! processes on one Linux host.
#![cfg(target_os = "linux")]

mod ring;
mod sync;

pub use ring::Corrupt;

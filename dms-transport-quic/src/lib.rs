//! DMS over QUIC (to be written).
#![forbid(unsafe_code)]

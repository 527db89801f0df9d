//! DMS link commons (being extracted from dms-transport-tcp).
#![forbid(unsafe_code)]

//! Fuzz targets for Bauta; the bodies live in `entry.rs`, which the stable
//! replay test `tests/tests/fuzz_regressions.rs` includes too.

pub mod entry;

//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// Path of the built `prereg-station` binary.
pub fn station_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_prereg-station"))
}

//! `prereg-station demo` (SPEC §11). Owned by the station work; not built yet.

use crate::error::{CliError, CliResult};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> CliResult {
    let _ = PathBuf::new();
    Err(CliError::failed("demo is not built yet in this version"))
}

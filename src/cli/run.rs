//! `prereg-station run` (SPEC §11). Owned by the station work; not built yet.

use crate::error::{CliError, CliResult};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_config: &Option<PathBuf>, _args: Args) -> CliResult {
    Err(CliError::failed("run is not built yet in this version"))
}

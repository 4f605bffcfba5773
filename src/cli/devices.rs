//! `prereg-station devices …` (SPEC §11). Not built yet.

use crate::error::{CliError, CliResult};
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// (not built yet)
    List,
}

pub fn run(_config: &Option<PathBuf>, _cmd: Command) -> CliResult {
    Err(CliError::failed("devices is not built yet in this version"))
}

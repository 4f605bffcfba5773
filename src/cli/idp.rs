//! `prereg-station idp …` (SPEC §11). Not built yet.

use crate::error::{CliError, CliResult};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// (not built yet)
    Help,
}

pub fn run(_cmd: Command) -> CliResult {
    Err(CliError::failed("idp is not built yet in this version"))
}

//! The command line of SPEC §11. One file per command group; each exposes an
//! `Args` type (clap) and a `run` function returning [`CliResult`]. `main.rs`
//! only parses, initialises logging and maps errors to exit codes.
//!
//! Output goes through [`output`]'s `outln!` / `out!` / `errln!`, never
//! `outln!` (a closed pipe must not panic, issue #17): the lint below holds it.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use crate::error::CliResult;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

// First: its macros are in scope for the modules declared after it.
#[macro_use]
pub mod output;

pub mod demo;
pub mod demo_upstream;
pub mod devices;
pub mod fleet;
pub mod idp;
pub mod idp_serve;
pub mod jobs;
pub mod keys;
pub mod localtime;
pub mod run;
pub mod sim;

/// Default configuration file (SPEC §11).
pub const DEFAULT_CONFIG: &str = "/etc/prereg-station/station.toml";

#[derive(Debug, Parser)]
#[command(
    name = "prereg-station",
    version,
    about = "Programs pre-registered FIDO security keys"
)]
pub struct Cli {
    /// Station configuration (TOML). Accepted before or after the subcommand.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "PREREG_STATION_CONFIG"
    )]
    pub config: Option<PathBuf>,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The embedded default: simulated rig, reference IdP, program and verify everything.
    Demo(demo::Args),
    /// The daemon: pull jobs, program keys in every slot, deliver results.
    Run(run::Args),
    /// Job intake and inspection.
    #[command(subcommand)]
    Jobs(jobs::Command),
    /// Station key custody: transport and signing keys, JWKS export.
    #[command(subcommand)]
    Keys(keys::Command),
    /// Security keys attached to this machine (HID, UDP bridge, PC/SC, simulator).
    #[command(subcommand)]
    Devices(devices::Command),
    /// The simulated YubiKey.
    #[command(subcommand)]
    Sim(sim::Command),
    /// The reference identity provider: make jobs, verify results.
    #[command(subcommand)]
    Idp(idp::Command),
    /// The stations sharing a PostgreSQL store (SPEC §13).
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// The station's store: migrations.
    #[command(subcommand)]
    Store(fleet::StoreCommand),
}

/// Where the configuration comes from: `--config`, else the default path.
pub fn config_path(cli_config: &Option<PathBuf>) -> PathBuf {
    cli_config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

/// Dispatches a parsed command line.
pub fn dispatch(cli: Cli) -> CliResult {
    let config = cli.config;
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Run(args) => run::run(&config, args),
        Command::Jobs(cmd) => jobs::run(&config, cmd),
        Command::Keys(cmd) => keys::run(&config, cmd),
        Command::Devices(cmd) => devices::run(&config, cmd),
        Command::Sim(cmd) => sim::run(cmd),
        Command::Idp(cmd) => idp::run(cmd),
        Command::Fleet(cmd) => fleet::run_fleet(&config, cmd),
        Command::Store(cmd) => fleet::run_store(&config, cmd),
    }
}

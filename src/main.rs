//! Thin entry point: parse, set up logging and process hardening, dispatch, map
//! errors to exit codes (SPEC §11).

use clap::Parser;
use prereg_station::cli::{self, Cli, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = Cli::parse();
    // The demo prints its own summary; its per-key log lines come with -v.
    let quiet = matches!(cli.command, cli::Command::Demo(_));
    init_tracing(cli.log_format, cli.verbose, quiet);
    prereg_station::hardening::apply();
    if let Err(err) = cli::dispatch(cli) {
        // Not eprintln!: a closed stderr must not turn an error into a panic.
        cli::output::write_stderr(format_args!("prereg-station: {err}\n"));
        std::process::exit(err.exit_code());
    }
    if cli::output::lost_output() {
        // Said on stderr at the failed write (cli/output.rs).
        std::process::exit(1);
    }
}

fn init_tracing(format: LogFormat, verbose: u8, quiet: bool) {
    let default = match verbose {
        0 if quiet => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

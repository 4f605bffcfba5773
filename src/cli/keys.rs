//! `prereg-station keys …` (SPEC §2, §11): station key custody.

use crate::error::{CliError, CliResult};
use crate::jose::StationKeys;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Add a new P-384 transport key and signing key to DIR (created 0700,
    /// key files 0600); the new signing key becomes the active one.
    Generate {
        /// Keys directory (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Write the public `transport-keys.jwks` and `sign.jwks` into OUT.
    ExportJwks {
        /// Keys directory; default $CREDENTIALS_DIRECTORY.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Directory the two JWK sets are written to (created if missing).
        #[arg(long, value_name = "OUT")]
        out: PathBuf,
    },
    /// List the key ids in DIR and which signing key is active.
    List {
        /// Keys directory; default $CREDENTIALS_DIRECTORY.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

fn load(dir: &Option<PathBuf>) -> Result<StationKeys, CliError> {
    StationKeys::load(dir.as_deref()).map_err(|e| CliError::failed(format!("keys: {e}")))
}

pub fn run(cmd: Command) -> CliResult {
    match cmd {
        Command::Generate { dir } => {
            let keys = StationKeys::generate(&dir)
                .map_err(|e| CliError::failed(format!("keys generate: {e}")))?;
            outln!(
                "keys in {}: transport {}; active signing key {}",
                dir.display(),
                keys.transport_kids().collect::<Vec<_>>().join(", "),
                keys.active_signing().kid
            );
            Ok(())
        }
        Command::ExportJwks { dir, out } => {
            let keys = load(&dir)?;
            let (t, s) = keys
                .export_jwks(&out)
                .map_err(|e| CliError::failed(format!("keys export-jwks: {e}")))?;
            outln!("wrote {} and {}", t.display(), s.display());
            Ok(())
        }
        Command::List { dir } => {
            let keys = load(&dir)?;
            for k in keys.transport_kids() {
                outln!("transport {k}");
            }
            let active = keys.active_signing().kid.clone();
            for k in keys.signing_jwks().keys {
                let mark = if k.kid == active { " (active)" } else { "" };
                outln!("signing   {}{mark}", k.kid);
            }
            Ok(())
        }
    }
}

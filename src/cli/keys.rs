//! `prereg-station keys …` (SPEC §2, §11, §14): station key custody, in key
//! files or — with `--config` naming a `[keys]` section — a PKCS#11 token.

use crate::config::Config;
use crate::error::{CliError, CliResult};
use crate::jose::pkcs11::HsmConfig;
use crate::jose::StationKeys;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Add a new P-384 transport key and signing key; the new signing key
    /// becomes the active one. Key files go to DIR (created 0700, files
    /// 0600); with `[keys]` in the configuration the pairs are generated
    /// inside the token (sensitive, non-extractable) and DIR holds the
    /// manifest and PIN file.
    Generate {
        /// Keys directory (created if missing); default: the configuration's
        /// keys_dir.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Write the public `transport-keys.jwks` and `sign.jwks` into OUT.
    ExportJwks {
        /// Keys directory; default keys_dir of --config, else $CREDENTIALS_DIRECTORY.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Directory the two JWK sets are written to (created if missing).
        #[arg(long, value_name = "OUT")]
        out: PathBuf,
    },
    /// Write a PKCS#10 certificate request for the active signing key,
    /// signed by the key custody (the token, with `[keys]`).
    Csr {
        /// Keys directory; default keys_dir of --config, else $CREDENTIALS_DIRECTORY.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Organization name in the request's subject (CN is the key id).
        #[arg(long, default_value = "prereg-station")]
        org: String,
        /// Where the PEM request is written.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Attach the certificate chain (PEM, leaf first) the facility CA issued
    /// for the active signing key; `sign.jwks` then carries it as `x5c`.
    ImportCert {
        /// Keys directory; default keys_dir of --config, else $CREDENTIALS_DIRECTORY.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The PEM chain, leaf first.
        #[arg(long, value_name = "FILE")]
        chain: PathBuf,
    },
    /// List the key ids, where they are held, and which signing key is active.
    List {
        /// Keys directory; default keys_dir of --config, else $CREDENTIALS_DIRECTORY.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// One JSON line per key (docs/cli.md) instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// The keys directory and `[keys]` from an explicit `--config` (none without
/// one: key files in `--dir`, as before SPEC §14).
fn custody(
    config: &Option<PathBuf>,
    dir: Option<PathBuf>,
) -> Result<(Option<PathBuf>, Option<HsmConfig>), CliError> {
    let Some(path) = config else {
        return Ok((dir, None));
    };
    let c = Config::load(path).map_err(|e| CliError::usage(e.to_string()))?;
    Ok((dir.or(c.keys_dir), c.keys))
}

fn load(config: &Option<PathBuf>, dir: Option<PathBuf>) -> Result<StationKeys, CliError> {
    let (dir, hsm) = custody(config, dir)?;
    StationKeys::open(dir.as_deref(), hsm.as_ref())
        .map_err(|e| CliError::failed(format!("keys: {e}")))
}

pub fn run(config: &Option<PathBuf>, cmd: Command) -> CliResult {
    match cmd {
        Command::Generate { dir } => {
            let (dir, hsm) = custody(config, dir)?;
            let keys = match (&dir, &hsm) {
                (_, Some(hsm)) => StationKeys::generate_in_token(dir.as_deref(), hsm),
                (Some(dir), None) => StationKeys::generate(dir),
                (None, None) => {
                    return Err(CliError::usage(
                        "keys generate: pass --dir DIR (or --config with keys_dir)",
                    ))
                }
            }
            .map_err(|e| CliError::failed(format!("keys generate: {e}")))?;
            outln!(
                "keys in {}: transport {}; active signing key {}",
                keys.custody_name(),
                keys.transport_kids().join(", "),
                keys.active_signing_kid()
            );
            Ok(())
        }
        Command::ExportJwks { dir, out } => {
            let keys = load(config, dir)?;
            let (t, s) = keys
                .export_jwks(&out)
                .map_err(|e| CliError::failed(format!("keys export-jwks: {e}")))?;
            outln!("wrote {} and {}", t.display(), s.display());
            Ok(())
        }
        Command::Csr { dir, org, out } => {
            let keys = load(config, dir)?;
            let pem = crate::jose::x5c::csr_pem(&keys, &org)
                .map_err(|e| CliError::failed(format!("keys csr: {e}")))?;
            std::fs::write(&out, pem)
                .map_err(|e| CliError::failed(format!("keys csr: {}: {e}", out.display())))?;
            outln!(
                "wrote {} for signing key {}",
                out.display(),
                keys.active_signing_kid()
            );
            Ok(())
        }
        Command::ImportCert { dir, chain } => {
            let (dir, hsm) = custody(config, dir)?;
            let mut keys = StationKeys::open(dir.as_deref(), hsm.as_ref())
                .map_err(|e| CliError::failed(format!("keys: {e}")))?;
            let pem = std::fs::read(&chain).map_err(|e| {
                CliError::failed(format!("keys import-cert: {}: {e}", chain.display()))
            })?;
            let path = keys
                .import_chain(dir.as_deref(), &pem)
                .map_err(|e| CliError::failed(format!("keys import-cert: {e}")))?;
            outln!(
                "stored {} for signing key {}; run keys export-jwks to publish x5c",
                path.display(),
                keys.active_signing_kid()
            );
            Ok(())
        }
        Command::List { dir, json } => {
            let keys = load(config, dir)?;
            if !json {
                outln!("custody   {}", keys.custody_name());
            }
            for k in keys.transport_kids() {
                if json {
                    crate::cli::output::json_line(
                        &serde_json::json!({ "use": "transport", "kid": k, "active": true }),
                    );
                } else {
                    outln!("transport {k}");
                }
            }
            let active = keys.active_signing_kid().to_string();
            for k in keys.signing_jwks().keys {
                let is_active = k.kid == active;
                if json {
                    crate::cli::output::json_line(
                        &serde_json::json!({ "use": "signing", "kid": k.kid, "active": is_active }),
                    );
                } else {
                    let mark = if is_active { " (active)" } else { "" };
                    outln!("signing   {}{mark}", k.kid);
                }
            }
            Ok(())
        }
    }
}

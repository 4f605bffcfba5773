//! `prereg-station jobs import FILE…` / `jobs list` / `jobs show ID` (SPEC §11).

use crate::config::Config;
use crate::error::{CliError, CliResult};
use crate::escape::{untrusted, Untrusted};
use crate::station::intake;
use crate::store::Store;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Imports shipment files (one JSON shipment or JSON lines of them). Idempotent.
    Import {
        /// Shipment files (SPEC §3): one JSON shipment, or JSON lines of them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Lists jobs, newest first.
    List {
        /// At most this many jobs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows one job and its audit trail.
    Show {
        /// The job's shipment id.
        id: String,
        /// JSON (times as Unix seconds) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Lists quarantined keys.
    Quarantine {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub use crate::station::intake::ImportCounts;

/// Imports every shipment in `path` into `store` (SPEC §3): all or nothing
/// for parsing, then each shipment queued, a duplicate, or refused (and
/// recorded) with its reason.
pub fn import_file(store: &Store, config: &Config, path: &Path) -> Result<ImportCounts, CliError> {
    let shown = || crate::escape::untrusted(&path.display().to_string());
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::failed(format!("{}: cannot read ({e})", shown())))?;
    let shipments = intake::parse(&bytes)
        .map_err(|e| CliError::failed(format!("{}: {e}; nothing imported", shown())))?;
    intake::import_shipments(store, config, shipments).map_err(CliError::failed)
}

/// Loads the configuration named on the command line (or the default path).
pub fn load_config(config: &Option<PathBuf>) -> Result<Config, CliError> {
    Config::load(&crate::cli::config_path(config)).map_err(CliError::usage)
}

/// Opens the station database, creating the state directory (0700).
pub fn open_store(config: &Config) -> Result<Store, CliError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.state_dir)
        .map_err(|e| {
            CliError::failed(format!(
                "{}: cannot create state directory ({e})",
                config.state_dir.display()
            ))
        })?;
    Store::open_config(config).map_err(|e| match e {
        crate::store::StoreError::Config(_) => CliError::usage(e),
        other => CliError::failed(other),
    })
}

pub fn run(config: &Option<PathBuf>, cmd: Command) -> CliResult {
    let config = load_config(config)?;
    let store = open_store(&config)?;
    match cmd {
        Command::Import { files } => {
            let mut total = ImportCounts::default();
            for f in &files {
                let c = import_file(&store, &config, f)?;
                outln!(
                    "{}: imported {}, already known {}, refused {}",
                    Untrusted(&f.display().to_string()),
                    c.imported,
                    c.duplicate,
                    c.refused
                );
                for r in &c.refusals {
                    outln!("  {r}");
                }
                total.add(c);
            }
            outln!(
                "imported {} job(s), {} already known, {} refused (see `jobs list`)",
                total.imported,
                total.duplicate,
                total.refused
            );
            Ok(())
        }
        Command::List { limit, json } => {
            let rows = store.list(limit).map_err(CliError::failed)?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                );
                return Ok(());
            }
            outln!(
                "{:<26} {:>7} {:<10} {:<11} {:>8}  REASON",
                "SHIPMENT",
                "PRODUCT",
                "CUSTOM",
                "STATE",
                "ATTEMPTS"
            );
            for r in rows {
                // Rows come from the database: ids and reasons imported
                // before intake checked them, or written by anything else.
                outln!(
                    "{:<26} {:>7} {:<10} {:<11} {:>8}  {}",
                    untrusted(&r.shipment_id),
                    r.product_id,
                    untrusted(&r.customization_id),
                    r.state,
                    r.attempts,
                    untrusted(&r.reason.unwrap_or_default())
                );
            }
            print_delivery(&store)
        }
        Command::Show { id, json } => {
            let (row, audit) = store.show(&id).map_err(CliError::failed)?;
            if json {
                outln!("{}", serde_json::json!({ "job": row, "audit": audit }));
                return Ok(());
            }
            // People read local RFC 3339 time; --json above keeps Unix seconds.
            let when = crate::cli::localtime::rfc3339_local;
            outln!("shipment   {}\nproduct    {}\ncustom.    {}\nstate      {}\nattempts   {}\nreason     {}\nupdated    {}",
                untrusted(&row.shipment_id), row.product_id, untrusted(&row.customization_id), row.state, row.attempts, untrusted(&row.reason.unwrap_or_default()), when(row.updated_at));
            for a in audit {
                outln!(
                    "  {} {:<12} slot={} serial={} fw={} {}",
                    when(a.at),
                    untrusted(&a.event),
                    untrusted(&a.slot.unwrap_or_default()),
                    untrusted(&a.serial.unwrap_or_default()),
                    untrusted(&a.firmware.unwrap_or_default()),
                    untrusted(&a.detail.unwrap_or_default())
                );
            }
            Ok(())
        }
        Command::Quarantine { json } => {
            let rows = store.quarantined().map_err(CliError::failed)?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                );
            } else {
                for q in rows {
                    outln!(
                        "{} job={} step={} {}",
                        untrusted(&q.serial),
                        untrusted(&q.shipment_id.unwrap_or_default()),
                        untrusted(&q.step),
                        untrusted(&q.reason)
                    );
                }
            }
            Ok(())
        }
    }
}

/// The delivery section of `jobs list`: results waiting for the sink whose
/// last attempt failed, with attempts, next try and named reason (SPEC §6).
fn print_delivery(store: &Store) -> CliResult {
    let pending = store.delivery_status().map_err(CliError::failed)?;
    let failing: Vec<_> = pending.iter().filter(|p| p.attempts > 0).collect();
    if failing.is_empty() {
        return Ok(());
    }
    let now_ms = crate::store::now_secs() * 1000;
    outln!(
        "\n{} result(s) waiting for the sink, {} failing:",
        pending.len(),
        failing.len()
    );
    outln!(
        "{:<26} {:>8} {:>9}  REASON",
        "SHIPMENT",
        "ATTEMPTS",
        "NEXT TRY"
    );
    for p in failing {
        outln!(
            "{:<26} {:>8} {:>8}s  {}: {}",
            crate::escape::untrusted(&p.shipment_id),
            p.attempts,
            (p.next_attempt_ms - now_ms).max(0) / 1000,
            p.reason.as_deref().unwrap_or_default(),
            crate::escape::untrusted(p.error.as_deref().unwrap_or_default())
        );
    }
    Ok(())
}

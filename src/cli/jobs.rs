//! `prereg-station jobs import FILE…` / `jobs list` / `jobs show ID` (SPEC §11).

use crate::config::Config;
use crate::error::{CliError, CliResult};
use crate::station::policy::Intake;
use crate::store::{Imported, Store};
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

/// Counts of one import.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportCounts {
    pub imported: usize,
    pub duplicate: usize,
    pub refused: usize,
}

/// Imports every shipment in `path` into `store`, refusing (and recording)
/// the ones that break SPEC §3's rules.
pub fn import_file(store: &Store, config: &Config, path: &Path) -> Result<ImportCounts, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::failed(format!("{}: cannot read ({e})", path.display())))?;
    let shipments: Vec<crate::shipment::Shipment> =
        crate::shipment::parse_stream(&text).map_err(|e| {
            CliError::failed(format!(
            "{}: not a shipment or JSON lines of shipments (line {}, column {}); nothing imported",
            path.display(),
            e.line(),
            e.column()
        ))
        })?;
    let profiles = crate::profile::builtin();
    let intake = Intake {
        profiles: &profiles,
        customizations: &config.customizations,
    };
    let mut counts = ImportCounts::default();
    for s in shipments {
        let store_err = |e: crate::store::StoreError| CliError::failed(e);
        let outcome = match s.validate(&intake) {
            Ok(job) => {
                let mut digests = vec![crate::jose::response::request_digest(&job.pin_request)];
                digests.extend(
                    job.credential_requests
                        .iter()
                        .map(|c| crate::jose::response::request_digest(c)),
                );
                store.import(&job, digests).map_err(store_err)?
            }
            Err(refusal) => {
                tracing::warn!(shipment = %s.shipment_id, "refused at intake: {refusal}");
                counts.refused += 1;
                let item = s.shipment_items.first();
                store
                    .import_refused(
                        &s.shipment_id,
                        item.map_or(0, |i| i.product_id),
                        item.map_or("", |i| i.customization_id.as_str()),
                        &refusal.to_string(),
                    )
                    .map_err(store_err)?;
                continue;
            }
        };
        match outcome {
            Imported::New => counts.imported += 1,
            Imported::Duplicate => counts.duplicate += 1,
        }
    }
    Ok(counts)
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
    Store::open(&config.db_path()).map_err(CliError::failed)
}

pub fn run(config: &Option<PathBuf>, cmd: Command) -> CliResult {
    let config = load_config(config)?;
    let store = open_store(&config)?;
    match cmd {
        Command::Import { files } => {
            let mut total = ImportCounts::default();
            for f in &files {
                let c = import_file(&store, &config, f)?;
                total.imported += c.imported;
                total.duplicate += c.duplicate;
                total.refused += c.refused;
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
                outln!(
                    "{:<26} {:>7} {:<10} {:<11} {:>8}  {}",
                    r.shipment_id,
                    r.product_id,
                    r.customization_id,
                    r.state,
                    r.attempts,
                    r.reason.unwrap_or_default()
                );
            }
            Ok(())
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
                row.shipment_id, row.product_id, row.customization_id, row.state, row.attempts, row.reason.unwrap_or_default(), when(row.updated_at));
            for a in audit {
                outln!(
                    "  {} {:<12} slot={} serial={} fw={} {}",
                    when(a.at),
                    a.event,
                    a.slot.unwrap_or_default(),
                    a.serial.unwrap_or_default(),
                    a.firmware.unwrap_or_default(),
                    a.detail.unwrap_or_default()
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
                        q.serial,
                        q.shipment_id.unwrap_or_default(),
                        q.step,
                        q.reason
                    );
                }
            }
            Ok(())
        }
    }
}

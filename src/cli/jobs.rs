//! `prereg-station jobs import FILE…` / `jobs list` / `jobs show ID` (SPEC §11).

use crate::cli::output;
use crate::config::Config;
use crate::error::{CliError, CliResult};
use crate::escape::{untrusted, Untrusted};
use crate::station::intake;
use crate::store::Store;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Imports shipment files (one JSON shipment or JSON lines of them). Idempotent.
    /// Reports imported, already known and refused per file; exits 1 when a
    /// file could not be read or parsed, or any shipment was refused.
    Import {
        /// Shipment files (SPEC §3): one JSON shipment, or JSON lines of them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// One JSON line per file (docs/cli.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Lists jobs, newest first.
    List {
        /// At most this many jobs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON line per job (docs/cli.md) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows one job and its audit trail.
    Show {
        /// The job's shipment id.
        id: String,
        /// One JSON line (times as Unix seconds) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Lists quarantined keys.
    Quarantine {
        /// One JSON line per key (docs/cli.md) instead of text.
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
    let shipments = intake::parse(&bytes).map_err(|e| {
        CliError::failed(format!("{}: {e}; nothing imported from this file", shown()))
    })?;
    intake::import_shipments(store, config, shipments).map_err(CliError::failed)
}

/// Loads the configuration named on the command line (or the default path).
pub fn load_config(config: &Option<PathBuf>) -> Result<Config, CliError> {
    let path = crate::cli::config_path(config);
    Config::load(&path).map_err(|e| {
        // Only point at --config when it was not given: the default was read.
        if config.is_none() && !path.exists() {
            CliError::usage(format!(
                "{e}; pass --config FILE (or set PREREG_STATION_CONFIG)"
            ))
        } else {
            CliError::usage(e)
        }
    })
}

/// Opens the station database, creating the state directory (0700).
/// A state directory this user cannot create, enter, read or write is a
/// configuration error (exit 2) naming the path, the reason and the fix.
pub fn open_store(config: &Config) -> Result<Store, CliError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = &config.state_dir;
    let fix = "fix [station] state_dir or give the station's user read and write access to it";
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            CliError::usage(format!(
                "{}: cannot create the state directory ([station] state_dir): {e}; {fix}",
                dir.display()
            ))
        })?;
    // Listing it proves read and search access; the database open below
    // proves write access only by failing with SQLite's vaguer words.
    if let Err(e) = std::fs::read_dir(dir) {
        return Err(CliError::usage(format!(
            "{}: cannot read the state directory ([station] state_dir): {e}; {fix}",
            dir.display()
        )));
    }
    if !writable(dir) {
        return Err(CliError::usage(format!(
            "{}: the state directory ([station] state_dir) is not writable by this user; {fix}",
            dir.display()
        )));
    }
    Store::open_config(config).map_err(|e| match e {
        crate::store::StoreError::Config(_) => CliError::usage(e),
        other => CliError::failed(other),
    })
}

/// Whether this process may create files in `dir`: creates and removes a
/// probe file (what the database will do), so ACLs and read-only mounts count.
fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .is_ok();
    if made {
        let _ = std::fs::remove_file(&probe);
    }
    made
}

pub fn run(config: &Option<PathBuf>, cmd: Command) -> CliResult {
    let config = load_config(config)?;
    let store = open_store(&config)?;
    match cmd {
        Command::Import { files, json } => import(&store, &config, &files, json),
        Command::List { limit, json } => {
            let rows = store.list(limit).map_err(CliError::failed)?;
            if json {
                for r in &rows {
                    output::json_line(&job_json(r));
                }
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
            print_turned_away(&store)?;
            print_delivery(&store)
        }
        Command::Show { id, json } => {
            let (row, audit) = store.show(&id).map_err(CliError::failed)?;
            if json {
                let audit: Vec<_> = audit.iter().map(audit_json).collect();
                output::json_line(&serde_json::json!({ "job": job_json(&row), "audit": audit }));
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
                for q in &rows {
                    output::json_line(q);
                }
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

/// Splits a stored reason into its stable code and its sentence: reasons are
/// stored as `code: message` (`intake.quantity: product_quantity 2, must be 1`),
/// a code being lowercase dotted words. A reason without one (written by an
/// older build) is all message.
pub fn split_reason(reason: &str) -> (Option<&str>, &str) {
    let is_code = |c: &str| {
        c.contains('.')
            && !c.starts_with('.')
            && !c.ends_with('.')
            && !c.contains("..")
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
    };
    match reason.split_once(": ") {
        Some((code, message)) if is_code(code) => (Some(code), message),
        _ => (None, reason),
    }
}

/// `code` and `message` of a reason as JSON fields (both null without one).
fn reason_fields(reason: Option<&str>) -> (serde_json::Value, serde_json::Value) {
    match reason.map(split_reason) {
        Some((code, message)) => (code.into(), message.into()),
        None => (serde_json::Value::Null, serde_json::Value::Null),
    }
}

/// A job for `--json`: the row's fields, its reason split into `code` and
/// `message` (no combined string), times in Unix seconds.
pub fn job_json(r: &crate::store::JobRow) -> serde_json::Value {
    let (code, message) = reason_fields(r.reason.as_deref());
    serde_json::json!({
        "shipment_id": r.shipment_id,
        "product_id": r.product_id,
        "customization_id": r.customization_id,
        "state": r.state,
        "code": code,
        "message": message,
        "attempts": r.attempts,
        "lease_owner": r.lease_owner,
        "updated_at": r.updated_at,
    })
}

/// An audit event for `--json`: its fields, plus `code` and `message` when
/// its detail is a coded reason (a refusal, a key turned away).
fn audit_json(a: &crate::store::AuditRow) -> serde_json::Value {
    let (code, message) = match a.detail.as_deref().map(split_reason) {
        Some((Some(code), message)) => (code.into(), message.into()),
        _ => (serde_json::Value::Null, serde_json::Value::Null),
    };
    serde_json::json!({
        "at": a.at,
        "shipment_id": a.shipment_id,
        "event": a.event,
        "slot": a.slot,
        "serial": a.serial,
        "firmware": a.firmware,
        "detail": a.detail,
        "code": code,
        "message": message,
    })
}

/// `jobs import`: every file in turn (a file that cannot be read or parsed
/// stops only itself), one report per file, a total, and exit 1 when a
/// file failed or any shipment was refused.
fn import(store: &Store, config: &Config, files: &[PathBuf], json: bool) -> CliResult {
    let mut total = ImportCounts::default();
    let mut failed_files = 0usize;
    for f in files {
        let name = f.display().to_string();
        let result = import_file(store, config, f);
        if json {
            let refusals: Vec<_> = result
                .as_ref()
                .map(|c| c.refusals.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    let text = r.refusal.to_string();
                    let (_, message) = split_reason(&text);
                    serde_json::json!({
                        "shipment_id": r.shipment_id,
                        "code": r.refusal.code(),
                        "message": message,
                    })
                })
                .collect();
            let c = result.as_ref().ok();
            output::json_line(&serde_json::json!({
                "file": name,
                "imported": c.map_or(0, |c| c.imported),
                "duplicate": c.map_or(0, |c| c.duplicate),
                "refused": c.map_or(0, |c| c.refused),
                "refusals": refusals,
                "error": result.as_ref().err().map(ToString::to_string),
            }));
        }
        match result {
            Ok(c) => {
                if !json {
                    outln!(
                        "{}: imported {}, already known {}, refused {}",
                        Untrusted(&name),
                        c.imported,
                        c.duplicate,
                        c.refused
                    );
                    for r in &c.refusals {
                        outln!("  {r}");
                    }
                }
                total.add(c);
            }
            Err(e) => {
                failed_files += 1;
                if !json {
                    outln!("{e}");
                }
            }
        }
    }
    if !json {
        outln!(
            "total: imported {} job(s), {} already known, {} refused{} (see `jobs list`)",
            total.imported,
            total.duplicate,
            total.refused,
            if failed_files > 0 {
                format!(", {failed_files} file(s) not imported")
            } else {
                String::new()
            }
        );
    }
    if failed_files > 0 || total.refused > 0 {
        return Err(CliError::failed(format!(
            "jobs import: {} refused, {failed_files} file(s) not imported; {} imported, {} already known",
            total.refused, total.imported, total.duplicate
        )));
    }
    Ok(())
}

/// Keys shown in `jobs list`'s "turned away" section, newest last.
const TURNED_AWAY_SHOWN: usize = 10;

/// The "turned away" section of `jobs list`: the latest keys that fit no
/// waiting job (wrong product …), with slot, serial and reason; no job row
/// holds that reason, since no job was touched.
fn print_turned_away(store: &Store) -> CliResult {
    let events = store
        .events(crate::station::worker::TURNED_AWAY_EVENT)
        .map_err(CliError::failed)?;
    if events.is_empty() {
        return Ok(());
    }
    outln!(
        "\n{} key(s) turned away untouched, latest {}:",
        events.len(),
        events.len().min(TURNED_AWAY_SHOWN)
    );
    let when = crate::cli::localtime::rfc3339_local;
    for e in events
        .iter()
        .skip(events.len().saturating_sub(TURNED_AWAY_SHOWN))
    {
        outln!(
            "  {} slot={} serial={} {}",
            when(e.at),
            untrusted(e.slot.as_deref().unwrap_or_default()),
            untrusted(e.serial.as_deref().unwrap_or_default()),
            untrusted(e.detail.as_deref().unwrap_or_default())
        );
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::split_reason;

    #[test]
    fn a_stored_reason_splits_into_code_and_message_only_at_a_code() {
        assert_eq!(
            split_reason("intake.quantity: product_quantity 2, must be 1"),
            (Some("intake.quantity"), "product_quantity 2, must be 1")
        );
        assert_eq!(
            split_reason("key.rejected: key 1 rejected: wrong product"),
            (Some("key.rejected"), "key 1 rejected: wrong product")
        );
        // Not codes: no dot, capitals, spaces, an empty part.
        for plain in [
            "wrong product: the job wants X",
            "Key.Rejected: x",
            "a b.c: x",
            "a..b: x",
            ".a: x",
            "no colon at all",
        ] {
            assert_eq!(split_reason(plain), (None, plain));
        }
    }
}

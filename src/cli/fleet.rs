//! `prereg-station fleet status [--json]` and `prereg-station store migrate`
//! (SPEC §11, §13).

use crate::cli::jobs::{load_config, open_store};
use crate::error::{CliError, CliResult};
use crate::escape::Untrusted;
use crate::store::FleetStatus;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// The stations sharing the PostgreSQL store and the queue depth by state.
    Status {
        /// One JSON object: `stations` (id, version, slots, heartbeat, leased,
        /// in flight) and `queue` (state, count).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Applies the store's pending migrations (also done at every start-up).
    /// On PostgreSQL, run it with a `[store]` that names the schema owner's role.
    Migrate,
}

pub fn run_fleet(config: &Option<PathBuf>, cmd: FleetCommand) -> CliResult {
    let config = load_config(config)?;
    let store = open_store(&config)?;
    match cmd {
        FleetCommand::Status { json } => {
            let status = store.fleet_status().map_err(|e| match e {
                crate::store::StoreError::NotFleet => CliError::usage(e),
                other => CliError::failed(other),
            })?;
            if json {
                let text = serde_json::to_string_pretty(&status).map_err(CliError::failed)?;
                outln!("{text}");
            } else {
                out!("{}", render(&status));
            }
            Ok(())
        }
    }
}

pub fn run_store(config: &Option<PathBuf>, cmd: StoreCommand) -> CliResult {
    let config = load_config(config)?;
    match cmd {
        StoreCommand::Migrate => {
            // Opening migrates; `migrate` again reports what is left (nothing).
            let store = open_store(&config)?;
            let more = store.migrate().map_err(CliError::failed)?;
            outln!(
                "store ({}) is at the latest schema{}",
                store.backend_name(),
                if more > 0 { " (applied more)" } else { "" }
            );
            Ok(())
        }
    }
}

/// The human table of `fleet status`. Station ids come from other stations'
/// configuration: printed escaped.
fn render(status: &FleetStatus) -> String {
    let mut out = String::new();
    out.push_str("STATION              VERSION   SLOTS  LEASED  IN-FLIGHT  HEARTBEAT\n");
    for s in &status.stations {
        out.push_str(&format!(
            "{:<20} {:<9} {:>5}  {:>6}  {:>9}  {:.1} s ago\n",
            Untrusted(&s.id).to_string(),
            Untrusted(&s.version).to_string(),
            s.slots,
            s.leased,
            s.in_flight,
            s.heartbeat_age_ms as f64 / 1000.0
        ));
    }
    out.push_str("\nQUEUE\n");
    if status.queue.is_empty() {
        out.push_str("  (no jobs)\n");
    }
    for (state, n) in &status.queue {
        out.push_str(&format!("  {:<12} {n}\n", Untrusted(state).to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StationStatus;

    #[test]
    fn status_table_escapes_station_ids() {
        let status = FleetStatus {
            backend: "postgresql",
            stations: vec![StationStatus {
                id: "rig\x1b[31m1".into(),
                version: "0.1.0".into(),
                slots: 16,
                last_heartbeat_ms: 0,
                heartbeat_age_ms: 1500,
                in_flight: 2,
                leased: 3,
            }],
            queue: vec![("queued".into(), 60)],
        };
        let text = render(&status);
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.contains("1.5 s ago"), "{text}");
        assert!(text.contains("queued       60"), "{text}");
    }
}

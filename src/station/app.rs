//! Building a [`Setup`](super::Setup) from a validated configuration: keys,
//! attestation roots, profiles, rig, status board.

use super::policy::ProfilePolicy;
use super::Setup;
use crate::config::Config;
use crate::error::CliError;
use crate::jose::keys::StationKeys;
use crate::rig::serial::{SerialRig, SerialRigOptions};
use crate::rig::Rig;
use crate::store::Store;
use crate::web::StatusBoard;
use crate::webauthn::TrustRoots;
use std::sync::Arc;

/// The start-up directory checks ([`super::preflight`]) as a usage error
/// (exit 2): one line naming the path and the fix.
pub fn preflight(config: &Config) -> Result<(), CliError> {
    super::preflight::check(config).map_err(|e| CliError::usage(format!("cannot start: {e}")))
}

/// Loads everything `config` names; each failure is one line naming the file.
pub fn setup(config: Config, store: Store) -> Result<Setup, CliError> {
    // Before any key is loaded: a directory the station cannot write is found
    // now, not after a key was programmed (issue #12).
    preflight(&config)?;
    let keys =
        StationKeys::open(config.keys_dir.as_deref(), config.keys.as_ref()).map_err(|e| {
            CliError::usage(format!(
                "station keys: {e} (create them with `prereg-station keys generate --dir DIR`)"
            ))
        })?;
    let roots = TrustRoots::from_files(&config.attestation_roots)
        .map_err(|e| CliError::usage(format!("attestation_roots: {e}")))?;
    if roots.is_empty() {
        return Err(CliError::usage(
            "[station] attestation_roots is empty: no key could be verified as genuine",
        ));
    }
    let config_seed = config.sim_seed;
    let board = StatusBoard::new(config.station_id.clone(), config.slots.len());
    let rig: Option<Arc<dyn Rig>> = config.rig_port.as_ref().map(|(port, baud)| {
        let rig = SerialRig::open(
            port.clone(),
            *baud,
            SerialRigOptions {
                on_health: Some(board.rig_health_hook()),
                ..SerialRigOptions::default()
            },
        );
        Arc::new(rig) as Arc<dyn Rig>
    });
    Ok(Setup {
        config,
        store,
        keys,
        roots,
        policy: Box::new(ProfilePolicy::new(crate::profile::builtin())),
        board,
        rig,
        sim_seed: config_seed.unwrap_or_else(rand::random),
        sim_hook: None,
    })
}

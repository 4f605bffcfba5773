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
    let keys = StationKeys::open(config.keys_dir.as_deref(), config.keys.as_ref())
        .map_err(|e| CliError::usage(format!("station keys: {e}{}", keys_hint(&e))))?;
    keys.check_mechanisms()
        .map_err(|e| CliError::usage(format!("station keys: {e}")))?;
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

/// What to do about a key-loading error, appended to its line. Missing keys
/// already say how to make them; a file the station may not read needs its
/// owner or mode fixed, not new keys.
fn keys_hint(e: &crate::jose::keys::KeyError) -> &'static str {
    use crate::jose::keys::KeyError;
    match e {
        KeyError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            "; give the station's user read access (its owner, mode 700 on the directory, 600 on key files)"
        }
        KeyError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            "; check [station] keys_dir, or create keys with `prereg-station keys generate --dir DIR`"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::keys::KeyError;
    use std::io::{Error, ErrorKind};

    #[test]
    fn a_permission_error_on_keys_asks_for_access_not_new_keys() {
        let io = |kind| KeyError::Io {
            path: "/etc/prereg-station/keys".into(),
            source: Error::from(kind),
        };
        let denied = keys_hint(&io(ErrorKind::PermissionDenied));
        assert!(denied.contains("read access") && !denied.contains("keys generate"));
        assert!(keys_hint(&io(ErrorKind::NotFound)).contains("keys generate"));
        let none = KeyError::NoTransportKey { dir: "/k".into() };
        assert_eq!(keys_hint(&none), "", "{none} says it already");
    }
}

//! A throw-away SoftHSM2 token for the benches (SPEC §14): its own
//! configuration and token directory under `dir`, set as `SOFTHSM2_CONF`
//! for this process, and the PIN file `hsm-pin` (0600) in `dir/keys` (0700),
//! the key custody directory. Shared by `crypto` and `station`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Debian's `softhsm2` package (scripts/setup.sh installs it).
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The label of the bench token.
pub const LABEL: &str = "bench";

/// Makes the token; returns the key custody directory, or why the HSM
/// figures are skipped. Call before anything in this process initialises
/// SoftHSM2 (it reads `SOFTHSM2_CONF` at `C_Initialize`).
pub fn throwaway_token(dir: &Path, module: &str) -> Result<PathBuf, String> {
    if !Path::new(module).exists() {
        return Err(format!(
            "SoftHSM2 is not installed ({module} missing; scripts/setup.sh installs softhsm2)"
        ));
    }
    let tokens = dir.join("tokens");
    let keys_dir = dir.join("keys");
    let conf = dir.join("softhsm2.conf");
    std::fs::create_dir_all(&tokens)
        .and_then(|()| std::fs::create_dir_all(&keys_dir))
        .and_then(|()| std::fs::set_permissions(&keys_dir, std::fs::Permissions::from_mode(0o700)))
        .and_then(|()| {
            std::fs::write(
                &conf,
                format!(
                    "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                    tokens.display()
                ),
            )
        })
        .map_err(|e| format!("cannot set up the token directory: {e}"))?;
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let pin = "246810";
    let init = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", LABEL, "--pin", pin])
        .args(["--so-pin", "13579111"])
        .output()
        .map_err(|e| format!("cannot run softhsm2-util ({e}); the softhsm2 package provides it"))?;
    if !init.status.success() {
        return Err(format!(
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&init.stderr).trim()
        ));
    }
    let pin_path = keys_dir.join("hsm-pin");
    std::fs::write(&pin_path, pin)
        .and_then(|()| std::fs::set_permissions(&pin_path, std::fs::Permissions::from_mode(0o600)))
        .map_err(|e| format!("cannot write the PIN file: {e}"))?;
    Ok(keys_dir)
}

//! `demo --upstream` (SPEC §12): the reference back end (`idp serve`) on
//! 127.0.0.1 with its own CA, server and station client certificates; the
//! station's client certificate goes into its key custody and the station
//! configuration gets an `[upstream]` section pointing at the back end.

use crate::error::CliError;
use crate::idp::serve::{self, ServeHandle, TlsMaterial};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where the back end keeps the results it received.
pub fn results_dir(dir: &Path) -> PathBuf {
    dir.join("idp").join(serve::RESULTS)
}

/// How many results the back end holds.
pub fn results_held(dir: &Path) -> usize {
    std::fs::read_dir(results_dir(dir))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

/// Makes the TLS material, starts the back end on an ephemeral loopback
/// port, installs the station's client certificate, and appends
/// `[upstream]` to `config_text`.
pub fn start(
    dir: &Path,
    keys_dir: &Path,
    mut config_text: String,
) -> Result<(String, ServeHandle), CliError> {
    let tls =
        TlsMaterial::load_or_make(&dir.join("upstream-tls"), &[]).map_err(CliError::failed)?;
    let server_config = tls.server_config().map_err(CliError::failed)?;
    let handle = serve::spawn(
        &dir.join("idp"),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        server_config,
    )
    .map_err(|e| CliError::failed(format!("idp serve: {e}")))?;
    for (from, to) in [
        (serve::CLIENT_CERT, "upstream-client.pem"),
        (serve::CLIENT_KEY, "upstream-client.key"),
    ] {
        let target = keys_dir.join(to);
        std::fs::copy(tls.path(from), &target)
            .and_then(|_| std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)))
            .map_err(|e| CliError::failed(format!("{}: {e}", target.display())))?;
    }
    let q = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    config_text.push_str(&format!(
        "\n[upstream]\nurl = \"https://127.0.0.1:{}\"\nca = {}\nclient_cert = \"upstream-client.pem\"\nclient_key = \"upstream-client.key\"\npoll_secs = 1\n",
        handle.local_addr().port(),
        q(&tls.path(serve::CA_CERT)),
    ));
    Ok((config_text, handle))
}

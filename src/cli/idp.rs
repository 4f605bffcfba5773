//! `prereg-station idp …` (SPEC §11): the reference IdP.

use crate::error::{CliError, CliResult};
use crate::idp::{read_results, unix_now, EnrollOptions, Idp};
use crate::jose::{Jwks, KeyManagement};
use crate::webauthn::TrustRoots;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make shipment jobs (SPEC §3) for N new users, as an IdP plus the
    /// YubiEnterprise order system would. Writes JSON lines.
    Enroll(EnrollArgs),
    /// Verify delivered results (SPEC §6) as the IdP's activate endpoint must.
    Activate(ActivateArgs),
    /// The reference fulfillment back end (SPEC §12): offers the enrolled
    /// shipments over mutual TLS and keeps the results for `idp activate`.
    Serve(crate::cli::idp_serve::Args),
}

#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    /// IdP state directory (response keys, issued requests).
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// The station's transport-keys.jwks.
    #[arg(long, value_name = "FILE")]
    pub station_jwks: PathBuf,
    /// Users to enroll: one shipment (one key) each.
    #[arg(long, default_value_t = 1)]
    pub users: usize,
    /// WebAuthn relying party id of the first credential.
    #[arg(long, default_value = "myorg.okta.com")]
    pub rp_id: String,
    /// Relying party display name.
    #[arg(long, default_value = "MyOrg")]
    pub rp_name: String,
    /// Default https:// + rp id.
    #[arg(long)]
    pub origin: Option<String>,
    /// SPEC §3 customization_id (a `[[customization]]` id of the station).
    #[arg(long, default_value = "C19881")]
    pub customization: String,
    /// SPEC §3 product_id (key model) of every shipment.
    #[arg(long, default_value_t = 1)]
    pub product: u32,
    /// SPEC §3 inventory_product_id (the order system's SKU).
    #[arg(long, default_value_t = 106)]
    pub inventory_product: u32,
    /// Credential requests (enrollments) per user: the first on --rp-id, the k-th on a sibling RP (myorg-2.okta.com, …).
    #[arg(long, default_value_t = 1)]
    pub credentials: usize,
    /// JWE key management: ECDH-ES+A256KW or ECDH-ES.
    #[arg(long, default_value = "ECDH-ES+A256KW")]
    pub alg: String,
    /// WebAuthn attestation conveyance: direct, none or enterprise.
    #[arg(long, default_value = "direct")]
    pub attestation: String,
    /// Request lifetime in days (exp = iat + this).
    #[arg(long, default_value_t = 30)]
    pub lifetime_days: i64,
    /// PIN policy without forceChangePin and minPinLength, for keys without
    /// authenticatorConfig (YubiKey 5.2 / 5.4 firmware).
    #[arg(long)]
    pub no_force_change_pin: bool,
    /// Sign every request (SPEC §4 IdP-signed requests): an ES384 JWS by the
    /// IdP's signing key (made on first use in the state directory) inside
    /// each JWE. Writes the public key to STATE/idp-signing.jwks, the file
    /// the station's `[[customization]] idp_signing_jwks` names.
    #[arg(long)]
    pub sign: bool,
    /// Output file (JSON lines); default stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ActivateArgs {
    /// IdP state directory (as given to `idp enroll`).
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// The station's sign.jwks.
    #[arg(long, value_name = "FILE")]
    pub sign_jwks: PathBuf,
    /// Attestation root (PEM or DER); repeat for several.
    #[arg(long = "roots", value_name = "PEM", required = true)]
    pub roots: Vec<PathBuf>,
    /// Trust station signing keys certified by this facility CA (PEM): only
    /// keys of sign.jwks whose x5c chains to it verify responses (SPEC §14).
    #[arg(long, value_name = "PEM")]
    pub sign_ca: Option<PathBuf>,
    /// Print each delivered PIN (the only place a PIN is ever shown).
    #[arg(long)]
    pub show_pin: bool,
    /// One JSON object per shipment instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Result files (JSON or JSON lines) or outbox directories.
    #[arg(required = true, value_name = "RESULT_FILE")]
    pub results: Vec<PathBuf>,
}

fn read_jwks(path: &Path) -> Result<Jwks, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    Jwks::from_json(&text)
        .map_err(|_| CliError::usage(format!("{}: not a P-384 JWK set", path.display())))
}

pub fn run(cmd: Command) -> CliResult {
    match cmd {
        Command::Enroll(a) => enroll(a),
        Command::Activate(a) => activate(a),
        Command::Serve(a) => crate::cli::idp_serve::run(a),
    }
}

fn enroll(a: EnrollArgs) -> CliResult {
    let jwks = read_jwks(&a.station_jwks)?;
    let alg = KeyManagement::from_name(&a.alg)
        .ok_or_else(|| CliError::usage("--alg must be ECDH-ES+A256KW or ECDH-ES"))?;
    if !["direct", "none", "enterprise"].contains(&a.attestation.as_str()) {
        return Err(CliError::usage(
            "--attestation must be direct, none or enterprise",
        ));
    }
    let opts = EnrollOptions {
        users: a.users,
        rp_id: a.rp_id,
        rp_name: a.rp_name,
        origin: a.origin,
        customization_id: a.customization,
        product_id: a.product,
        inventory_product_id: a.inventory_product,
        credentials_per_user: a.credentials,
        alg,
        attestation: a.attestation,
        lifetime_secs: a.lifetime_days * 24 * 3600,
        now: unix_now(),
        force_change_pin: !a.no_force_change_pin,
        pin_min_length: (!a.no_force_change_pin).then_some(6),
        sign: a.sign,
        ..EnrollOptions::default()
    };
    let idp = Idp::open(&a.state).map_err(|e| CliError::failed(format!("idp: {e}")))?;
    let shipments = idp
        .enroll(&jwks, &opts)
        .map_err(|e| CliError::failed(format!("idp enroll: {e}")))?;
    // `idp serve` offers what was enrolled (SPEC §12).
    idp.offer(&shipments)
        .map_err(|e| CliError::failed(format!("idp enroll: {e}")))?;
    if a.sign {
        errln!(
            "idp: requests signed; station configuration: idp_signing_jwks = {}",
            toml::Value::String(idp.signing_jwks_path().display().to_string())
        );
    }
    let mut text = String::new();
    for s in &shipments {
        text.push_str(&serde_json::to_string(s).unwrap_or_default());
        text.push('\n');
    }
    match &a.out {
        Some(path) => {
            std::fs::write(path, text)
                .map_err(|e| CliError::failed(format!("{}: {e}", path.display())))?;
            errln!(
                "idp: {} shipment(s) written to {}",
                shipments.len(),
                path.display()
            );
        }
        None => out!("{text}"),
    }
    Ok(())
}

fn activate(a: ActivateArgs) -> CliResult {
    let mut jwks = read_jwks(&a.sign_jwks)?;
    if let Some(ca) = &a.sign_ca {
        let ca = TrustRoots::from_files(std::slice::from_ref(ca))
            .map_err(|e| CliError::usage(format!("--sign-ca: {e}")))?;
        let (certified, refused) = crate::jose::x5c::certified_signers(&jwks, &ca, unix_now());
        for (kid, why) in refused {
            errln!(
                "signing key {} refused: {}",
                crate::escape::Untrusted(&kid),
                crate::escape::Untrusted(&why)
            );
        }
        jwks = certified;
    }
    let roots = TrustRoots::from_files(&a.roots).map_err(|e| CliError::usage(e.to_string()))?;
    let idp = Idp::open(&a.state).map_err(|e| CliError::failed(format!("idp: {e}")))?;
    let results = read_results(&a.results).map_err(|e| CliError::usage(e.to_string()))?;
    let reports = idp.activate(&jwks, &roots, &results, unix_now());
    let mut out = std::io::stdout().lock();
    for r in &reports {
        if a.json {
            let _ = writeln!(out, "{}", r.to_json(a.show_pin));
            continue;
        }
        let status = if r.verified() { "VERIFIED" } else { "FAILED" };
        let _ = writeln!(
            out,
            "{status} shipment {} user {} serial {} firmware {} pin {}{}",
            r.shipment_id,
            r.user_id,
            r.serial_number.as_deref().unwrap_or("-"),
            r.firmware_version.as_deref().unwrap_or("-"),
            if r.pin_delivered {
                "delivered"
            } else {
                "MISSING"
            },
            match (&r.pin, a.show_pin) {
                (Some(p), true) => format!(" {}", p.expose()),
                _ => String::new(),
            }
        );
        for c in &r.credentials {
            let _ = writeln!(
                out,
                "  credential {} enrollment {} {} {}",
                c.credential_id.as_deref().unwrap_or("-"),
                c.enrollment_id.as_deref().unwrap_or("-"),
                if c.verified {
                    "verified"
                } else {
                    "NOT VERIFIED"
                },
                c.failure.as_deref().or(c.trust.as_deref()).unwrap_or("")
            );
        }
        for f in &r.failures {
            let _ = writeln!(out, "  failure {f}");
        }
    }
    let failed = reports.iter().filter(|r| !r.verified()).count();
    if failed > 0 || reports.is_empty() {
        return Err(CliError::failed(format!(
            "idp activate: {failed} of {} shipment(s) failed verification",
            reports.len()
        )));
    }
    Ok(())
}

//! `prereg-station demo [--keys N] [--slots M] [--profile P]` (SPEC §11): the
//! embedded default. Everything in a fresh directory: station keys, the
//! simulator's attestation root, jobs from the reference IdP, a simulated rig,
//! every key programmed in parallel and every result verified as the IdP would.

use crate::cli::jobs::{import_file, open_store};
use crate::config::Config;
use crate::error::{CliError, CliResult};
use crate::idp::{self, EnrollOptions, Idp};
use crate::jose::keys::StationKeys;
use crate::station::{app, Station};
use crate::webauthn::TrustRoots;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keys (jobs) to program.
    #[arg(long, default_value_t = 8)]
    pub keys: usize,
    /// Simulated rig slots programming in parallel.
    #[arg(long, default_value_t = 4)]
    pub slots: usize,
    /// Firmware profile of the simulated keys.
    #[arg(long, default_value = "yubikey-5.7")]
    pub profile: String,
    /// Credentials per key: the first on the demo RP, each further one on its own RP.
    #[arg(long, default_value_t = 1)]
    pub credentials: usize,
    /// Keep everything in this directory (default: a temporary one, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Serve the operator status page here while the demo runs (e.g. 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub web: Option<std::net::SocketAddr>,
    /// With --web: keep the page up this many seconds before the first key
    /// starts and again after the last one, so a viewer (or a browser test)
    /// sees the tiles go from idle to PASS and can read the final board.
    #[arg(long, value_name = "SECS", default_value_t = 0, requires = "web")]
    pub web_hold: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// The whole demo over the network (SPEC §12): the reference back end
    /// (`idp serve`) offers the jobs over mutual TLS on 127.0.0.1, the
    /// station pulls them and returns the results there.
    #[arg(long)]
    pub upstream: bool,
    /// One JSON line with every key's result (docs/cli.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Certify the station's signing key by a made-up facility CA (SPEC §14:
    /// `keys csr`, the CA issues, `keys import-cert`) and have the IdP trust
    /// that CA, as `idp activate --sign-ca` does, instead of pinning the key.
    #[arg(long)]
    pub facility_ca: bool,
}

/// The simulator's attestation CA seed used by `sim:` slots and `sim ca`.
pub const SIM_CA_SEED: u64 = crate::station::simslot::SIM_CA_SEED;

pub fn run(args: Args) -> CliResult {
    if args.keys == 0 || args.slots == 0 || args.credentials == 0 {
        return Err(CliError::usage(
            "--keys, --slots and --credentials must be at least 1",
        ));
    }
    if let Some(addr) = args.web.filter(|a| !a.ip().is_loopback()) {
        // The demo has no token to give the page; a station does.
        return Err(CliError::usage(format!(
                "--web {addr}: the demo serves its status page on loopback only (e.g. --web 127.0.0.1:{}); \
                 to show a station's page on the network use `run` with [web] listen and token or token_file (docs/operator.md)",
                addr.port()
            )));
    }
    crate::config::check_slot_count(args.slots)
        .map_err(|e| CliError::usage(format!("--slots: {e}")))?;
    let profile = crate::profile::builtin_profile(&args.profile).map_err(CliError::usage)?;
    let product = profile
        .products
        .first()
        .map(|p| p.product_id)
        .ok_or_else(|| CliError::usage(format!("profile {} lists no product", args.profile)))?;
    let temp;
    let dir: PathBuf = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .map_err(|e| CliError::failed(format!("{}: {e}", d.display())))?;
            d.clone()
        }
        None => {
            temp = tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let t0 = Instant::now();
    let json = args.json;
    // With --json, stdout carries the one result line only.
    let say = |line: std::fmt::Arguments<'_>| {
        if !json {
            outln!("{line}");
        }
    };
    say(format_args!(
        "prereg-station demo: {} keys over {} simulated {} slots, in {}",
        args.keys,
        args.slots,
        args.profile,
        dir.display()
    ));

    // Station keys and the simulator's attestation root.
    let keys_dir = dir.join("keys");
    let mut keys = StationKeys::generate(&keys_dir).map_err(CliError::failed)?;
    let facility_ca = if args.facility_ca {
        let pem = certify_signing_key(&mut keys, &keys_dir, &dir)?;
        say(format_args!(
            "signing key {} certified by a made-up facility CA ({}); the IdP trusts the CA, not the key",
            keys.active_signing_kid(),
            pem.display()
        ));
        Some(pem)
    } else {
        None
    };
    let (transport_jwks, sign_jwks) = (keys.transport_jwks(), keys.signing_jwks());
    let ca_path = dir.join("sim-attestation-root.pem");
    let pem = crate::sim::attestation::root_pem(SIM_CA_SEED).map_err(CliError::failed)?;
    std::fs::write(&ca_path, pem)
        .map_err(|e| CliError::failed(format!("{}: {e}", ca_path.display())))?;

    // The IdP signs its requests (SPEC §4); the station verifies them against
    // the IdP's public JWKS, so a job made with the public transport key alone
    // is refused.
    let idp = Idp::open(&dir.join("idp")).map_err(CliError::failed)?;
    idp.signing_key().map_err(CliError::failed)?;

    // Station configuration, written out so `run --config` can reuse the directory.
    let config_text = demo_config(
        &dir,
        &keys_dir,
        &ca_path,
        &idp.signing_jwks_path(),
        &args.profile,
        product,
        args.slots,
        &profile.min_firmware.to_string(),
    );
    // `--upstream`: the back end listens first; the station is configured to pull from it.
    let (config_text, backend) = if args.upstream {
        let (text, backend) = crate::cli::demo_upstream::start(&dir, &keys_dir, config_text)?;
        (text, Some(backend))
    } else {
        (config_text, None)
    };
    let config_path = dir.join("station.toml");
    std::fs::write(&config_path, &config_text)
        .map_err(|e| CliError::failed(format!("{}: {e}", config_path.display())))?;
    let config = Config::parse(&config_text).map_err(CliError::failed)?;

    // The IdP enrolls users and hands the fulfillment order to the station.
    let shipments = idp
        .enroll(
            &transport_jwks,
            &EnrollOptions {
                users: args.keys,
                product_id: product,
                credentials_per_user: args.credentials,
                // Keys without authenticatorConfig (5.2 / 5.4) cannot enforce
                // forceChangePin or a minimum PIN length; the IdP asks for neither.
                force_change_pin: profile.has_set_min_pin_length(),
                pin_min_length: profile.has_set_min_pin_length().then_some(6),
                sign: true,
                ..EnrollOptions::default()
            },
        )
        .map_err(CliError::failed)?;
    let jobs_path = dir.join("jobs.jsonl");
    let lines: Vec<String> = shipments
        .iter()
        .filter_map(|s| serde_json::to_string(s).ok())
        .collect();
    std::fs::write(&jobs_path, lines.join("\n") + "\n")
        .map_err(|e| CliError::failed(format!("{}: {e}", jobs_path.display())))?;
    app::preflight(&config)?;
    let store = open_store(&config)?;
    if let Some(b) = &backend {
        idp.offer(&shipments).map_err(CliError::failed)?;
        say(format_args!(
            "  IdP enrolled {} users; back end https://{} offers them over mutual TLS",
            shipments.len(),
            b.local_addr()
        ));
    } else {
        let counts = import_file(&store, &config, &jobs_path)?;
        say(format_args!(
            "  IdP enrolled {} users; station imported {} jobs",
            shipments.len(),
            counts.imported
        ));
    }
    drop(keys);

    // Program everything.
    let setup = app::setup(config.clone(), store.clone())?;
    let web = match args.web {
        Some(addr) => {
            let cfg = crate::web::WebConfig::new(addr, None).map_err(CliError::usage)?;
            let handle = crate::web::spawn(cfg, setup.board.clone()).map_err(CliError::failed)?;
            // Said on stderr with --json, so stdout stays one JSON line.
            if json {
                errln!("  status page: http://{}/", handle.local_addr());
            } else {
                outln!("  status page: http://{}/", handle.local_addr());
            }
            hold(args.web_hold, "before programming starts", json);
            Some(handle)
        }
        None => None,
    };
    let station = Station::start(setup).map_err(CliError::failed)?;
    let poller = crate::cli::run::start_upstream(&station, &store, &config)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let done = |station: &Station| {
        station.drained()
            && (backend.is_none() || crate::cli::demo_upstream::results_held(&dir) >= args.keys)
    };
    while !done(&station) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let finished = done(&station);
    if let Some(p) = poller {
        p.stop(Duration::from_secs(2));
    }
    let programmed = station
        .shared()
        .programmed
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    station.shutdown();
    if let Some(w) = web {
        hold(args.web_hold, "showing the final board", json);
        let _ = w.shutdown();
    }
    let took = t0.elapsed();
    if !finished {
        return Err(CliError::failed(format!(
            "demo timed out after {}s; see `prereg-station jobs list --config {}`",
            args.timeout,
            config_path.display()
        )));
    }

    // Verify every delivered result as the IdP's activate endpoint would.
    let roots = TrustRoots::from_files(&[&ca_path]).map_err(CliError::failed)?;
    let results_dir = match backend {
        Some(b) => {
            b.shutdown();
            crate::cli::demo_upstream::results_dir(&dir)
        }
        None => config.outbox_dir.clone(),
    };
    let results = idp::read_results(&[results_dir]).map_err(CliError::failed)?;
    let now = crate::idp::unix_now();
    // With a facility CA the IdP keeps only the signing keys whose x5c
    // chains to it, as `idp activate --sign-ca` does.
    let sign_jwks = match &facility_ca {
        Some(pem) => {
            let ca = TrustRoots::from_files(&[pem]).map_err(CliError::failed)?;
            let (trusted, refused) = crate::jose::x5c::certified_signers(&sign_jwks, &ca, now);
            for (kid, why) in refused {
                tracing::warn!(kid = %kid, "signing key refused: {why}");
            }
            trusted
        }
        None => sign_jwks,
    };
    let reports = idp.activate(&sign_jwks, &roots, &results, now);
    say(format_args!(""));
    say(format_args!(
        "{:<5} {:<10} {:<8} {:<5} {:<9} SHIPMENT",
        "SLOT", "SERIAL", "FIRMWARE", "CREDS", "VERIFIED"
    ));
    let mut ok = 0;
    let mut rows = Vec::new();
    for r in &reports {
        // The slot's number: its position in the configuration, the number
        // on the rig, the page and /metrics (docs/operator.md).
        let slot = programmed
            .iter()
            .position(|p| Some(&p.serial) == r.serial_number.as_ref())
            .and_then(|_| slot_of(&store, &r.shipment_id))
            .and_then(|name| config.slots.iter().position(|s| s.name == name));
        let verified = r.verified();
        ok += usize::from(verified);
        let failures: Vec<String> = r
            .failures
            .iter()
            .chain(r.credentials.iter().filter_map(|c| c.failure.as_ref()))
            .map(ToString::to_string)
            .collect();
        say(format_args!(
            "{:<5} {:<10} {:<8} {:<5} {:<9} {}",
            slot.map_or_else(|| "-".to_string(), |n| n.to_string()),
            r.serial_number.as_deref().unwrap_or("-"),
            r.firmware_version.as_deref().unwrap_or("-"),
            r.credentials.iter().filter(|c| c.verified).count(),
            if verified { "yes" } else { "NO" },
            r.shipment_id
        ));
        for f in &failures {
            say(format_args!("      failure: {f}"));
        }
        rows.push(serde_json::json!({
            "slot": slot,
            "serial": r.serial_number,
            "firmware": r.firmware_version,
            "credentials": r.credentials.iter().filter(|c| c.verified).count(),
            "verified": verified,
            "shipment_id": r.shipment_id,
            "failures": failures,
        }));
    }
    let quarantined = store.quarantined().map(|q| q.len()).unwrap_or(0);
    let per_hour = ok as f64 * 3600.0 / took.as_secs_f64().max(0.001);
    if json {
        crate::cli::output::json_line(&serde_json::json!({
            "keys": args.keys,
            "verified": ok,
            "quarantined": quarantined,
            "seconds": took.as_secs_f64(),
            "keys_per_hour": per_hour,
            "dir": args.dir.as_ref().map(|d| d.display().to_string()),
            "results": rows,
        }));
    }
    say(format_args!(""));
    say(format_args!(
        "{ok}/{} keys programmed and verified by the reference IdP in {:.1}s ({per_hour:.0} keys/hour); {quarantined} quarantined",
        args.keys,
        took.as_secs_f64(),
    ));
    if ok == args.keys && reports.len() == args.keys {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "{} of {} keys did not verify",
            args.keys - ok.min(args.keys),
            args.keys
        )))
    }
}

/// `--web-hold`: the status page stays up while nothing else happens.
fn hold(secs: u64, why: &str, json: bool) {
    if secs > 0 {
        if json {
            errln!("  status page held {secs}s {why}");
        } else {
            outln!("  status page held {secs}s {why}");
        }
        std::thread::sleep(Duration::from_secs(secs));
    }
}

fn slot_of(store: &crate::store::Store, shipment_id: &str) -> Option<String> {
    store.show(shipment_id).ok().and_then(|(_, audit)| {
        audit
            .into_iter()
            .rev()
            .find(|a| a.event == "programmed")
            .and_then(|a| a.slot)
    })
}

#[allow(clippy::too_many_arguments)]
fn demo_config(
    dir: &Path,
    keys: &Path,
    ca: &Path,
    idp_signing_jwks: &Path,
    profile: &str,
    product: u32,
    slots: usize,
    min_fw: &str,
) -> String {
    let q = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let mut text = format!(
        "[station]\nid = \"demo\"\nstate_dir = {}\nkeys_dir = {}\noutbox_dir = {}\nattestation_roots = [{}]\n\n\
         [[customization]]\nid = \"C19881\"\nmin_firmware = \"{min_fw}\"\nproducts = [{product}]\nidp_signing_jwks = {}\n",
        q(&dir.join("state")),
        q(keys),
        q(&dir.join("outbox")),
        q(ca),
        q(idp_signing_jwks),
    );
    // Default names (slot0, slot1, …): the same numbers as the rig and the page.
    for _ in 0..slots {
        text.push_str(&format!("\n[[slot]]\ndevice = \"sim:{profile}\"\n"));
    }
    // SPEC §10: the demo's keys sit in a simulated rig driven over a pty, so
    // LED, TOUCH and PRESENT? run through the real serial driver.
    text.push_str("\n[rig]\nsimulated = true\n");
    text
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> Result<TempDir, CliError> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for _ in 0..16 {
        let p = base.join(format!("prereg-demo-{:016x}", rand::random::<u64>()));
        if std::fs::DirBuilder::new().mode(0o700).create(&p).is_ok() {
            return Ok(TempDir(p));
        }
    }
    Err(CliError::failed(format!(
        "cannot create a directory in {}",
        base.display()
    )))
}

/// `demo --facility-ca`: a made-up facility CA certifies the active signing
/// key from its CSR and the chain is attached as `x5c` (SPEC §14); returns
/// the CA certificate's path (`facility-ca.pem` in the demo directory).
fn certify_signing_key(
    keys: &mut StationKeys,
    keys_dir: &Path,
    dir: &Path,
) -> Result<PathBuf, CliError> {
    let ca = crate::idp::facility_ca::FacilityCa::new("Demo Facility Signing CA")
        .map_err(CliError::failed)?;
    let csr = crate::jose::x5c::csr_pem(keys, "Demo Fulfillment").map_err(CliError::failed)?;
    let chain = ca.issue(&csr).map_err(CliError::failed)?;
    keys.import_chain(Some(keys_dir), chain.as_bytes())
        .map_err(CliError::failed)?;
    let pem = dir.join("facility-ca.pem");
    std::fs::write(&pem, ca.pem().map_err(CliError::failed)?)
        .map_err(|e| CliError::failed(format!("{}: {e}", pem.display())))?;
    Ok(pem)
}

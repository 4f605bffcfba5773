//! PKCS#11 key custody (SPEC §14) against SoftHSM2: throw-away tokens, the
//! station flow with keys in the token, and what the token says about them.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once per process (at `C_Initialize`), so
//! this process gets one configuration and token directory in a temp dir;
//! every test makes its own token in it (in-process, on SoftHSM's free slot).
//! Without SoftHSM2 the tests say why and return, unless
//! `PREREG_REQUIRE_PEERS` is set (scripts/test.sh, CI): then they fail.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use prereg_station::jose::pkcs11::{HsmConfig, DEFAULT_SESSIONS};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Debian's `softhsm2` package (scripts/setup.sh installs it).
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// When set, SoftHSM2's token directory for this process (instead of one in
/// a temp dir).
pub const TOKENDIR_ENV: &str = "PREREG_TEST_SOFTHSM_TOKENDIR";

struct Env {
    _dir: tempfile::TempDir,
    ctx: Pkcs11,
}

static ENV: OnceLock<Option<Mutex<Env>>> = OnceLock::new();

fn env() -> Option<&'static Mutex<Env>> {
    ENV.get_or_init(|| {
        if !Path::new(SOFTHSM_MODULE).exists() {
            let why = format!(
                "SoftHSM2 is not installed ({SOFTHSM_MODULE} missing; run scripts/setup.sh)"
            );
            if std::env::var_os("PREREG_REQUIRE_PEERS").is_some() {
                panic!("PREREG_REQUIRE_PEERS is set but {why}");
            }
            eprintln!("skipping HSM test: {why}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        // The token-full test (tests/it/hsm_process.rs) runs this process
        // again inside a mount namespace with a small tmpfs as token storage.
        let tokens = match std::env::var_os(TOKENDIR_ENV) {
            Some(d) => PathBuf::from(d),
            None => dir.path().join("tokens"),
        };
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        // Before the module is first initialised in this process.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let ctx = Pkcs11::new(SOFTHSM_MODULE).unwrap();
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .unwrap();
        Some(Mutex::new(Env { _dir: dir, ctx }))
    })
    .as_ref()
}

/// A fresh token and the `[keys]` that names it; the PIN file is written
/// (0600) into `keys_dir`.
pub struct TestToken {
    pub config: HsmConfig,
    pub pin: String,
}

impl TestToken {
    pub fn toml(&self) -> String {
        format!(
            "\n[keys]\npkcs11_module = {:?}\ntoken_label = {:?}\npin_file = {:?}\n",
            self.config.module, self.config.token_label, self.config.pin_file
        )
    }
}

/// Makes a throw-away token labelled uniquely; `None` (after saying why)
/// when SoftHSM2 is missing and peers are not required.
pub fn throwaway_token(keys_dir: &Path) -> Option<TestToken> {
    throwaway_token_labelled(keys_dir, &format!("t{:08x}", rand::random::<u32>()))
}

/// [`throwaway_token`] with a label of the caller's (unique in the process).
pub fn throwaway_token_labelled(keys_dir: &Path, label: &str) -> Option<TestToken> {
    let env = env()?.lock().unwrap();
    let label = label.to_string();
    let pin = format!("{:06}", rand::random::<u32>() % 1_000_000);
    let so_pin = AuthPin::from("so-12345678");
    let slot = env
        .ctx
        .get_all_slots()
        .unwrap()
        .into_iter()
        .find(|s| {
            env.ctx
                .get_token_info(*s)
                .map(|t| !t.token_initialized())
                .unwrap_or(false)
        })
        .expect("SoftHSM2 offers a free slot");
    env.ctx.init_token(slot, &so_pin, &label).unwrap();
    // The token moved to a new slot id; find it by label.
    let slot = env
        .ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| env.ctx.get_token_info(*s).unwrap().label().trim_end() == label)
        .unwrap();
    let s = env.ctx.open_rw_session(slot).unwrap();
    s.login(UserType::So, Some(&so_pin)).unwrap();
    s.init_pin(&AuthPin::from(pin.as_str())).unwrap();
    PINS.lock().unwrap().push((label.clone(), pin.clone()));
    s.logout().unwrap();
    drop(s);
    std::fs::create_dir_all(keys_dir).unwrap();
    std::fs::set_permissions(keys_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let pin_path = keys_dir.join("hsm-pin");
    std::fs::write(&pin_path, format!("{pin}\n")).unwrap();
    std::fs::set_permissions(&pin_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    Some(TestToken {
        config: HsmConfig {
            module: PathBuf::from(SOFTHSM_MODULE),
            token_label: label,
            pin_file: PathBuf::from("hsm-pin"),
            sessions: DEFAULT_SESSIONS,
        },
        pin,
    })
}

fn slot_of(env: &Env, label: &str) -> cryptoki::slot::Slot {
    env.ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| env.ctx.get_token_info(*s).unwrap().label().trim_end() == label)
        .unwrap()
}

/// Starts a token outage: the PIN changes and every session is logged out,
/// so the station cannot log in again until [`outage_end`].
pub fn outage_begin(label: &str, pin: &str) {
    let other = AuthPin::from("999999");
    let pin = AuthPin::from(pin);
    let env = env().unwrap().lock().unwrap();
    let s = env.ctx.open_rw_session(slot_of(&env, label)).unwrap();
    let _ = s.login(UserType::User, Some(&pin));
    s.set_pin(&pin, &other).unwrap();
    s.logout().unwrap();
}

/// Ends an outage begun by [`outage_begin`]: the PIN is restored.
pub fn outage_end(label: &str, pin: &str) {
    let other = AuthPin::from("999999");
    let pin = AuthPin::from(pin);
    let env = env().unwrap().lock().unwrap();
    let s = env.ctx.open_rw_session(slot_of(&env, label)).unwrap();
    s.login(UserType::User, Some(&other)).unwrap();
    s.set_pin(&other, &pin).unwrap();
    // Keep this session (and with it the login) until the station relogs in.
    std::mem::forget(s);
}

/// A temp dir, its `keys/` custody directory, a fresh token named there and
/// the station keys generated in it; `None` (after saying why) without
/// SoftHSM2.
pub fn token_with_station_keys() -> Option<(
    tempfile::TempDir,
    PathBuf,
    TestToken,
    prereg_station::jose::StationKeys,
)> {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let token = throwaway_token(&keys_dir)?;
    let keys = prereg_station::jose::StationKeys::generate_in_token(Some(&keys_dir), &token.config)
        .unwrap();
    Some((dir, keys_dir, token, keys))
}

/// The PIN of the token `label` made by [`throwaway_token_labelled`].
pub fn pin_of(label: &str) -> String {
    PINS.lock()
        .unwrap()
        .iter()
        .find(|(l, _)| l == label)
        .unwrap()
        .1
        .clone()
}

static PINS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Puts a KNOWN P-384 private key into the token the way `keys generate`
/// leaves its own (src/jose/pkcs11.rs): a token object, private, sensitive,
/// non-extractable, `CKA_LABEL` = `CKA_ID` = `kid`, derive-only (transport)
/// or sign-only (signing), and its public-key object with the same
/// `CKA_ID` and `CKA_EC_POINT`. Tests that must know the scalar (to look
/// for it in a process's memory) use this instead of generating in the token.
pub fn import_known_key(token: &TestToken, kid: &str, secret: &p384::SecretKey, sign: bool) {
    use cryptoki::object::KeyType;
    use p384::elliptic_curve::sec1::ToEncodedPoint;
    use prereg_station::jose::pkcs11::P384_EC_PARAMS;
    let env = env().unwrap().lock().unwrap();
    let s = env
        .ctx
        .open_rw_session(slot_of(&env, &token.config.token_label))
        .unwrap();
    let _ = s.login(UserType::User, Some(&AuthPin::from(token.pin.as_str())));
    let point = secret.public_key().to_encoded_point(false);
    // CKA_EC_POINT: DER OCTET STRING around the SEC1 point (PKCS#11 v2.40 §2.3.3).
    let mut ec_point = vec![0x04, point.as_bytes().len() as u8];
    ec_point.extend_from_slice(point.as_bytes());
    let name = kid.as_bytes().to_vec();
    s.create_object(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::EcParams(P384_EC_PARAMS.to_vec()),
        Attribute::Value(secret.to_bytes().to_vec()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Derive(!sign),
        Attribute::Sign(sign),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Label(name.clone()),
        Attribute::Id(name.clone()),
    ])
    .unwrap();
    s.create_object(&[
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::EcParams(P384_EC_PARAMS.to_vec()),
        Attribute::EcPoint(ec_point),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(sign),
        Attribute::Derive(false),
        Attribute::Label(name.clone()),
        Attribute::Id(name),
    ])
    .unwrap();
}

/// Every object in the token as (class, label), read through PKCS#11 by
/// this test (logged in, so private objects are listed too).
pub fn token_objects(token: &TestToken) -> Vec<(String, String)> {
    let env = env().unwrap().lock().unwrap();
    let s = env
        .ctx
        .open_ro_session(slot_of(&env, &token.config.token_label))
        .unwrap();
    let _ = s.login(UserType::User, Some(&AuthPin::from(token.pin.as_str())));
    let mut out = Vec::new();
    for h in s.find_objects(&[]).unwrap() {
        let mut row = (String::from("?"), String::new());
        if let Ok(attrs) = s.get_attributes(h, &[AttributeType::Class, AttributeType::Label]) {
            for a in attrs {
                match a {
                    Attribute::Class(c) => row.0 = format!("{c}"),
                    Attribute::Label(l) => row.1 = String::from_utf8_lossy(&l).into_owned(),
                    _ => {}
                }
            }
        }
        out.push(row);
    }
    out.sort();
    out
}

/// What the token itself says about every private key on it, read by this
/// test through PKCS#11 (not through the station's code): (label,
/// CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_TOKEN, CKA_NEVER_EXTRACTABLE).
pub fn private_key_attributes(token: &TestToken) -> Vec<(String, bool, bool, bool, bool)> {
    let env = env().unwrap().lock().unwrap();
    let slot = env
        .ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| {
            env.ctx.get_token_info(*s).unwrap().label().trim_end() == token.config.token_label
        })
        .unwrap();
    let s = env.ctx.open_ro_session(slot).unwrap();
    // Login is per application: the station's pool may have logged in already.
    let _ = s.login(UserType::User, Some(&AuthPin::from(token.pin.as_str())));
    let mut out = Vec::new();
    for h in s
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap()
    {
        let attrs = s
            .get_attributes(
                h,
                &[
                    AttributeType::Label,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Token,
                    AttributeType::NeverExtractable,
                    AttributeType::Value,
                ],
            )
            .unwrap();
        let mut row = (String::new(), false, true, false, false);
        for a in attrs {
            match a {
                Attribute::Label(l) => row.0 = String::from_utf8(l).unwrap(),
                Attribute::Sensitive(b) => row.1 = b,
                Attribute::Extractable(b) => row.2 = b,
                Attribute::Token(b) => row.3 = b,
                Attribute::NeverExtractable(b) => row.4 = b,
                Attribute::Value(v) => panic!("the token revealed CKA_VALUE ({} bytes)", v.len()),
                _ => {}
            }
        }
        out.push(row);
    }
    out
}

/// SoftHSM2 is here (or the test must fail because it is required and not).
pub fn available() -> bool {
    env().is_some()
}

/// SPEC §14: `keys generate` with `[keys]` makes key pairs the token holds
/// as sensitive, never-extractable token objects (read back through
/// PKCS#11 by this test, not through the station); rotation keeps the old
/// transport key decrypting.
#[test]
fn generated_token_keys_are_sensitive_non_extractable_and_rotate() {
    use prereg_station::jose::jwe::{self, KeyResolver};
    use prereg_station::jose::{KeyManagement, StationKeys};
    let Some((_dir, keys_dir, token, first)) = token_with_station_keys() else {
        return;
    };
    let old_kid = first.transport_kids()[0].to_string();
    let old_public = first.transport_jwks().keys[0]
        .to_public_key_for(prereg_station::jose::jwk::KeyUse::Enc)
        .unwrap();
    let second = StationKeys::generate_in_token(Some(&keys_dir), &token.config).unwrap();
    assert_eq!(second.transport_kids().len(), 2);
    assert_ne!(second.active_signing_kid(), first.active_signing_kid());
    // A request made for the old transport key still decrypts after rotation.
    let jwe = jwe::encrypt(
        b"hello",
        &old_public,
        &old_kid,
        "c",
        KeyManagement::EcdhEsA256Kw,
    )
    .unwrap();
    assert!(second.has_decryption_key(&old_kid));
    let d = jwe::decrypt(&jwe, &second, "c").unwrap();
    assert_eq!(d.plaintext.expose(), b"hello");

    let attrs = private_key_attributes(&token);
    assert_eq!(
        attrs.len(),
        4,
        "two transport and two signing keys: {attrs:?}"
    );
    for (label, sensitive, extractable, on_token, never_extractable) in attrs {
        assert!(label.starts_with("prereg-"), "{label}");
        assert!(sensitive, "{label} is not CKA_SENSITIVE");
        assert!(!extractable, "{label} is CKA_EXTRACTABLE");
        assert!(on_token, "{label} is not a token object");
        assert!(never_extractable, "{label} was extractable once");
    }
    // The keys directory holds the PIN file and the manifest only.
    let mut names: Vec<String> = std::fs::read_dir(&keys_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["hsm-pin", "manifest.json"]);
}

/// SPEC §14: a wrong PIN, an unknown token label and a missing module are
/// one-line errors naming the cause (no PIN in the text).
#[test]
fn wrong_pin_missing_token_and_missing_module_are_one_line_errors() {
    use prereg_station::jose::StationKeys;
    let Some((_dir, keys_dir, token, _)) = token_with_station_keys() else {
        return;
    };
    let wrong = if token.pin == "000000" {
        "111111"
    } else {
        "000000"
    };
    std::fs::write(keys_dir.join("hsm-pin"), wrong).unwrap();
    let e = StationKeys::open(Some(&keys_dir), Some(&token.config))
        .unwrap_err()
        .to_string();
    assert!(e.contains("CKR_PIN_INCORRECT"), "{e}");
    assert!(!e.contains(wrong) && !e.contains('\n'), "{e}");
    std::fs::write(keys_dir.join("hsm-pin"), &token.pin).unwrap();
    let mut missing = token.config.clone();
    missing.token_label = "no-such-token".into();
    let e = StationKeys::open(Some(&keys_dir), Some(&missing))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no token labelled \"no-such-token\""), "{e}");
    let mut no_module = token.config.clone();
    no_module.module = "/nonexistent/libpkcs11.so".into();
    let e = StationKeys::open(Some(&keys_dir), Some(&no_module))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot load the PKCS#11 module"), "{e}");
    // A PIN file others can read is refused like a key file.
    std::fs::set_permissions(
        keys_dir.join("hsm-pin"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let e = StationKeys::open(Some(&keys_dir), Some(&token.config)).unwrap_err();
    assert_eq!(e.code(), "keys.loose_permissions");
}

/// The made-up facility CA of the demo (SPEC §14) issues the signing
/// certificates of these tests too.
pub use prereg_station::idp::facility_ca::FacilityCa;

/// SPEC §14: `keys csr` is signed by the token's signing key; the chain a
/// facility CA issues is attached as `x5c`; the IdP's CA check accepts that
/// key, refuses it under another CA, and refuses a chain for another key.
#[test]
fn csr_signed_in_the_token_and_x5c_chain_is_trusted_by_the_facility_ca_only() {
    use prereg_station::jose::x5c::{certified_signers, csr_pem};
    use prereg_station::jose::StationKeys;
    use prereg_station::webauthn::TrustRoots;
    let Some((_dir, keys_dir, token, mut keys)) = token_with_station_keys() else {
        return;
    };
    let ca = FacilityCa::new("Facility Signing CA").unwrap();
    let chain = ca.issue(&csr_pem(&keys, "Fulfillment").unwrap()).unwrap();
    assert!(keys.signing_jwks().keys[0].x5c.is_none());
    keys.import_chain(Some(&keys_dir), chain.as_bytes())
        .unwrap();
    let jwks = keys.signing_jwks();
    let active = jwks.find(keys.active_signing_kid()).unwrap();
    assert_eq!(active.x5c.as_ref().unwrap().len(), 2);
    // Published (reloaded from the keys directory, as export-jwks does).
    let reloaded = StationKeys::open(Some(&keys_dir), Some(&token.config)).unwrap();
    assert_eq!(reloaded.signing_jwks(), jwks);

    let roots = TrustRoots::from_pem(ca.pem().unwrap().as_bytes()).unwrap();
    let (ok, refused) = certified_signers(&jwks, &roots, prereg_station::idp::unix_now());
    assert_eq!(ok.keys.len(), 1, "{refused:?}");
    let other = FacilityCa::new("Facility Signing CA").unwrap();
    let other_roots = TrustRoots::from_pem(other.pem().unwrap().as_bytes()).unwrap();
    let (ok, refused) = certified_signers(&jwks, &other_roots, prereg_station::idp::unix_now());
    assert!(ok.keys.is_empty());
    assert!(refused[0].1.contains("does not chain"), "{refused:?}");
    // A chain for another key, attached to this key, is refused by both sides.
    let files = StationKeys::generate_ephemeral();
    let foreign = ca.issue(&csr_pem(&files, "Other").unwrap()).unwrap();
    let e = keys
        .import_chain(Some(&keys_dir), foreign.as_bytes())
        .unwrap_err();
    assert_eq!(e.code(), "keys.bad_chain");
    let mut forged = jwks.clone();
    let foreign_x5c = {
        let mut f = StationKeys::generate_ephemeral();
        let fdir = tempfile::tempdir().unwrap();
        let fchain = ca.issue(&csr_pem(&f, "Other").unwrap()).unwrap();
        f.import_chain(Some(fdir.path()), fchain.as_bytes())
            .unwrap();
        f.signing_jwks().keys[0].x5c.clone()
    };
    for k in &mut forged.keys {
        k.x5c = foreign_x5c.clone();
    }
    let (ok, refused) = certified_signers(&forged, &roots, prereg_station::idp::unix_now());
    assert!(ok.keys.is_empty());
    assert!(refused[0].1.contains("another key"), "{refused:?}");
}

/// SPEC §14: `run` with a `[keys]` token it cannot use stops at start-up with
/// exit 2 and one line naming the cause (here: no such token label; then a
/// wrong PIN), before any slot is opened; the PIN never appears.
#[test]
fn run_with_an_unusable_token_exits_2_with_one_line() {
    let Some((dir, keys_dir, token, _)) = token_with_station_keys() else {
        return;
    };
    let d = dir.path();
    let ca = d.join("ca.pem");
    std::fs::write(&ca, prereg_station::sim::attestation::root_pem(0).unwrap()).unwrap();
    let write_config = |label: &str| {
        let text = format!(
            "[station]\nid = \"t\"\nstate_dir = {:?}\nkeys_dir = {:?}\nattestation_roots = [{:?}]\n\n[[slot]]\ndevice = \"sim:yubikey-5.7\"\n\n[keys]\npkcs11_module = {:?}\ntoken_label = {label:?}\npin_file = \"hsm-pin\"\n",
            d.join("state"),
            keys_dir,
            ca,
            SOFTHSM_MODULE
        );
        std::fs::write(d.join("station.toml"), text).unwrap();
    };
    let run = || {
        std::process::Command::new(super::util::station_bin())
            .arg("--config")
            .arg(d.join("station.toml"))
            .arg("run")
            .output()
            .unwrap()
    };
    write_config("no-such-token");
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no token labelled \"no-such-token\""), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    write_config(&token.config.token_label);
    let wrong = if token.pin == "000000" {
        "111111"
    } else {
        "000000"
    };
    std::fs::write(keys_dir.join("hsm-pin"), wrong).unwrap();
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("CKR_PIN_INCORRECT") && !err.contains(wrong),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// The CLI on a token (SPEC §14): `keys generate`, `list`, `csr`,
/// `import-cert` and `export-jwks` with `--config` naming `[keys]`; the
/// published `sign.jwks` carries the facility chain as `x5c`.
#[test]
fn keys_cli_generates_in_the_token_and_publishes_the_certified_signing_key() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys_dir = d.join("keys");
    let token = throwaway_token(&keys_dir).unwrap();
    let config = d.join("station.toml");
    std::fs::write(
        &config,
        format!(
            "[station]\nid = \"t\"\nstate_dir = {:?}\nkeys_dir = {:?}\n{}",
            d.join("state"),
            keys_dir,
            token.toml()
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(super::util::station_bin())
            .arg("--config")
            .arg(&config)
            .args(["keys"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keys {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let made = cli(&["generate"]);
    assert!(made.contains("pkcs11 token"), "{made}");
    let list = cli(&["list"]);
    assert!(
        list.contains("custody   pkcs11 token") && list.contains("(active)"),
        "{list}"
    );
    let csr = d.join("sign.csr");
    cli(&[
        "csr",
        "--out",
        csr.to_str().unwrap(),
        "--org",
        "Fulfillment",
    ]);
    let ca = FacilityCa::new("Facility Signing CA").unwrap();
    let chain = d.join("chain.pem");
    std::fs::write(
        &chain,
        ca.issue(&std::fs::read_to_string(&csr).unwrap()).unwrap(),
    )
    .unwrap();
    cli(&["import-cert", "--chain", chain.to_str().unwrap()]);
    let out = d.join("pub");
    cli(&["export-jwks", "--out", out.to_str().unwrap()]);
    let sign = prereg_station::jose::Jwks::from_json(
        &std::fs::read_to_string(out.join("sign.jwks")).unwrap(),
    )
    .unwrap();
    assert_eq!(sign.keys.len(), 1);
    assert_eq!(sign.keys[0].x5c.as_ref().map(Vec::len), Some(2));
    let roots =
        prereg_station::webauthn::TrustRoots::from_pem(ca.pem().unwrap().as_bytes()).unwrap();
    let (ok, refused) = prereg_station::jose::x5c::certified_signers(
        &sign,
        &roots,
        prereg_station::idp::unix_now(),
    );
    assert_eq!(ok.keys.len(), 1, "{refused:?}");
}

/// The session pool (SPEC §14): with one session, a second caller waits for
/// the first to put it back (no deadlock, no second session), and a caller
/// that waits longer than the pool's limit gets a one-line custody error
/// instead of hanging the slot.
#[test]
fn a_busy_session_pool_makes_callers_wait_then_fails_after_the_limit() {
    use prereg_station::jose::pkcs11::{Token, SESSION_WAIT};
    use std::time::{Duration, Instant};
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token = throwaway_token(&dir.path().join("keys")).unwrap();
    let mut cfg = token.config.clone();
    cfg.sessions = 1;
    let t = Token::open(&cfg, zeroize::Zeroizing::new(token.pin.clone())).unwrap();
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            t.with_session("holding", |_| {
                std::thread::sleep(Duration::from_millis(300));
                Ok(())
            })
            .unwrap();
        });
        std::thread::sleep(Duration::from_millis(50));
        // Waits for the holder, then runs.
        t.with_session("second", |_| Ok(())).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
    });
    let started = Instant::now();
    let e = std::thread::scope(|s| {
        s.spawn(|| {
            t.with_session("holding", |_| {
                std::thread::sleep(SESSION_WAIT + Duration::from_secs(1));
                Ok(())
            })
            .unwrap();
        });
        std::thread::sleep(Duration::from_millis(50));
        t.with_session("second", |_| Ok(()))
            .unwrap_err()
            .to_string()
    });
    assert!(e.contains("all 1 sessions busy"), "{e}");
    assert!(!e.contains('\n'));
    assert!(started.elapsed() >= SESSION_WAIT);
}

/// The pool's statistics (issue #18, "measure it"): a JWE decryption is
/// counted as one ECDH derive and a signature as one ES384 sign, each with
/// its hold time; with one session, a caller that finds it busy is counted
/// as blocked and its wait covers the holder's call.
#[test]
fn pool_statistics_attribute_token_calls_and_measure_waiting_for_a_busy_session() {
    use prereg_station::jose::jwe::{self, KeyResolver};
    use prereg_station::jose::jws::Es384Signer;
    use prereg_station::jose::pkcs11::TokenOp;
    use prereg_station::jose::{KeyManagement, StationKeys};
    use std::time::Duration;
    let Some((_dir, keys_dir, token, _)) = token_with_station_keys() else {
        return;
    };
    let mut cfg = token.config.clone();
    cfg.sessions = 1;
    let keys = StationKeys::open(Some(&keys_dir), Some(&cfg)).unwrap();
    let before = keys.token_stats().unwrap();
    assert_eq!(before.max_sessions, 1);
    assert_eq!(before.derive.hold.count, 0);
    assert!(before.other.hold.count >= 1, "listing keys is a token call");

    let kid = keys.transport_kids()[0].to_string();
    let public = keys.transport_jwks().keys[0]
        .to_public_key_for(prereg_station::jose::jwk::KeyUse::Enc)
        .unwrap();
    let jwe = jwe::encrypt(b"hello", &public, &kid, "c", KeyManagement::EcdhEs).unwrap();
    assert!(keys.has_decryption_key(&kid));
    jwe::decrypt(&jwe, &keys, "c").unwrap();
    keys.sign_es384(b"payload").unwrap();
    let after = keys.token_stats().unwrap();
    assert_eq!(after.derive.hold.count, 1);
    assert_eq!(after.derive.wait.count, 1);
    assert_eq!(after.sign.hold.count, 1);
    assert!(after.derive.hold.max > Duration::ZERO);
    assert_eq!(after.derive.blocked + after.sign.blocked, 0);
    // File custody has no pool to report.
    assert!(StationKeys::generate_ephemeral().token_stats().is_none());

    // One session held for 300 ms: the second caller waits for it.
    let t =
        prereg_station::jose::pkcs11::Token::open(&cfg, zeroize::Zeroizing::new(token.pin.clone()))
            .unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            t.with_session_as(TokenOp::Sign, "holding", |_| {
                std::thread::sleep(Duration::from_millis(300));
                Ok(())
            })
            .unwrap();
        });
        std::thread::sleep(Duration::from_millis(50));
        t.with_session_as(TokenOp::Derive, "second", |_| Ok(()))
            .unwrap();
    });
    let busy = t.stats();
    assert_eq!(busy.sign.hold.count, 1);
    assert!(busy.sign.hold.max >= Duration::from_millis(300));
    assert_eq!(busy.derive.blocked, 1);
    assert!(
        busy.derive.wait.max >= Duration::from_millis(200),
        "{:?}",
        busy.derive.wait
    );
    assert!(busy.derive.hold.max < Duration::from_millis(200));
    assert_eq!(busy.opened, 1, "one session, never a second");
}

//! Integration tests: the station end to end over simulated keys — every
//! result verified by the reference IdP, the keys usable by their users,
//! refusals that touch no key, a fault matrix, crash recovery, and a scan for
//! secrets in everything the station wrote.

use prereg_station::cli::jobs::{import_file, open_store};
use prereg_station::config::Config;
use prereg_station::ctap2::{Client, CredentialDescriptor, GetAssertion, Permissions};
use prereg_station::ctaphid::{HidChannel, Timeouts};
use prereg_station::idp::{self, ActivationReport, EnrollOptions, Idp};
use prereg_station::jose::jwe;
use prereg_station::jose::keys::{NamedKey, StationKeys};
use prereg_station::jose::response::open_credential_response;
use prereg_station::jose::Jwks;
use prereg_station::pin::PinProtocol;
use prereg_station::secret::SecretString;
use prereg_station::shipment::Shipment;
use prereg_station::sim::{FaultPlan, SimControl};
use prereg_station::station::{app, Station};
use prereg_station::store::Store;
use prereg_station::webauthn::{self, AttestationObject, AuthenticatorData, TrustRoots};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Called with (slot, n-th key of the slot, key) for every simulated key.
type OnKey = Arc<dyn Fn(usize, usize, &SimControl) + Send + Sync>;

/// A station over simulated slots, the IdP that made its jobs, and every key it saw.
struct Line {
    dir: tempfile::TempDir,
    idp: Idp,
    sign_jwks: Jwks,
    roots: TrustRoots,
    config: Config,
    store: Store,
    keys: Arc<Mutex<Vec<SimControl>>>,
    shipments: Vec<Shipment>,
}

struct LineSpec<'a> {
    profile: &'a str,
    slots: usize,
    jobs: usize,
    min_firmware: &'a str,
    enroll: EnrollOptions,
    /// Faults (or other changes) for the n-th key made on the line (slot, index in slot).
    on_key: Option<OnKey>,
    max_attempts: u32,
    /// Stop early when this holds (jobs that are meant to wait).
    until: Option<fn(&Store) -> bool>,
    /// The slots' key profile when it differs from the jobs' (`profile`).
    slot_profile: Option<&'a str>,
    /// Keys in a throw-away SoftHSM2 token of this label instead of key
    /// files (SPEC §14).
    hsm: Option<&'a str>,
}

impl Default for LineSpec<'_> {
    fn default() -> Self {
        LineSpec {
            profile: "yubikey-5.7",
            slots: 2,
            jobs: 2,
            min_firmware: "5.7.0",
            enroll: EnrollOptions::default(),
            on_key: None,
            max_attempts: 3,
            until: None,
            slot_profile: None,
            hsm: None,
        }
    }
}

fn product_of(profile: &str) -> u32 {
    prereg_station::profile::builtin_profile(profile)
        .unwrap()
        .products[0]
        .product_id
}

impl Line {
    fn new(spec: LineSpec<'_>) -> Line {
        let line = Line::prepare(&spec, "");
        let until = spec.until.unwrap_or(|_| false);
        line.run_until(spec.on_key, until);
        line
    }

    /// Keys, IdP, configuration (plus `extra` TOML) and imported jobs; no station yet.
    fn prepare(spec: &LineSpec<'_>, extra: &str) -> Line {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (keys, hsm_toml) = if let Some(label) = spec.hsm {
            let token =
                super::hsm::throwaway_token_labelled(&d.join("keys"), label).expect("SoftHSM2");
            let keys =
                StationKeys::generate_in_token(Some(&d.join("keys")), &token.config).unwrap();
            (keys, token.toml())
        } else {
            (
                StationKeys::generate(&d.join("keys")).unwrap(),
                String::new(),
            )
        };
        let ca = d.join("ca.pem");
        std::fs::write(&ca, prereg_station::sim::attestation::root_pem(0).unwrap()).unwrap();
        let product = product_of(spec.profile);
        let mut text = format!(
            "[station]\nid = \"test\"\nstate_dir = {:?}\nkeys_dir = {:?}\noutbox_dir = {:?}\nattestation_roots = [{:?}]\nmax_attempts = {}\ntouch_timeout_secs = 5\n\n[[customization]]\nid = \"C19881\"\nmin_firmware = \"{}\"\nproducts = [{product}]\n",
            d.join("state"),
            d.join("keys"),
            d.join("outbox"),
            ca,
            spec.max_attempts,
            spec.min_firmware,
        );
        for _ in 0..spec.slots {
            text.push_str(&format!(
                "\n[[slot]]\ndevice = \"sim:{}\"\n",
                spec.slot_profile.unwrap_or(spec.profile)
            ));
        }
        text.push_str(&crate::util::store_section());
        text.push_str(extra);
        text.push_str(&hsm_toml);
        let config = Config::parse(&text).unwrap();
        let idp = Idp::open(&d.join("idp")).unwrap();
        let shipments = idp
            .enroll(
                &keys.transport_jwks(),
                &EnrollOptions {
                    users: spec.jobs,
                    product_id: product,
                    ..spec.enroll.clone()
                },
            )
            .unwrap();
        let store = open_store(&config).unwrap();
        let line = Line {
            sign_jwks: keys.signing_jwks(),
            roots: TrustRoots::from_files(&[&ca]).unwrap(),
            dir,
            idp,
            config,
            store,
            keys: Arc::default(),
            shipments,
        };
        line.import(&line.shipments);
        line
    }

    fn import(&self, shipments: &[Shipment]) {
        let path = self
            .dir
            .path()
            .join(format!("jobs-{}.jsonl", rand::random::<u32>()));
        let text: Vec<String> = shipments
            .iter()
            .map(|s| serde_json::to_string(s).unwrap())
            .collect();
        std::fs::write(&path, text.join("\n")).unwrap();
        import_file(&self.store, &self.config, &path).unwrap();
    }

    /// Runs the station until every job is finished (or 60 s pass).
    fn run_with(&self, on_key: Option<OnKey>) {
        self.run_until(on_key, |_| false)
    }

    /// Runs the station until every job is finished, `done` says so, or 60 s pass.
    fn run_until(&self, on_key: Option<OnKey>, done: impl Fn(&Store) -> bool) {
        let station = self.start(on_key);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !station.drained() && !done(&self.store) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        station.shutdown();
    }

    /// Starts the station; every simulated key goes through `on_key` and into `keys`.
    fn start(&self, on_key: Option<OnKey>) -> Station {
        let mut setup = app::setup(self.config.clone(), self.store.clone()).unwrap();
        let keys = self.keys.clone();
        let counts: Arc<Mutex<Vec<usize>>> = Arc::new(Mutex::new(vec![0; self.config.slots.len()]));
        setup.sim_hook = Some(Arc::new(move |slot, key: &SimControl| {
            let n = {
                let mut c = counts.lock().unwrap();
                c[slot] += 1;
                c[slot] - 1
            };
            if let Some(f) = &on_key {
                f(slot, n, key);
            }
            keys.lock().unwrap().push(key.clone());
        }));
        Station::start(setup).unwrap()
    }

    fn outbox(&self) -> PathBuf {
        self.config.outbox_dir.clone()
    }

    fn activate(&self) -> Vec<ActivationReport> {
        let results = idp::read_results(&[self.outbox()]).unwrap();
        self.idp
            .activate(&self.sign_jwks, &self.roots, &results, idp::unix_now())
    }

    fn key(&self, serial: &str) -> SimControl {
        self.keys
            .lock()
            .unwrap()
            .iter()
            .find(|k| k.serial().to_string() == serial)
            .cloned()
            .unwrap_or_else(|| panic!("no simulated key {serial}"))
    }

    fn job_state(&self, id: &str) -> (String, Option<String>) {
        let (row, _) = self.store.show(id).unwrap();
        (row.state, row.reason)
    }

    fn untouched_keys(&self) -> bool {
        self.keys
            .lock()
            .unwrap()
            .iter()
            .all(|k| !k.pin_status().pin_set && k.credentials().is_empty())
    }
}

fn client(key: &SimControl) -> Client<HidChannel<prereg_station::sim::SimKey>> {
    Client::new(HidChannel::open(key.transport(), Timeouts::short()).unwrap())
}

/// The credential public key the IdP received, from its own copy of the response.
fn delivered_cose_key(line: &Line, response_jwe: &str) -> (Vec<u8>, p256::PublicKey, String) {
    let kid = jwe::peek_header(response_jwe).unwrap().kid.unwrap();
    let jwk = std::fs::read(line.dir.path().join("idp/keys").join(format!("{kid}.jwk"))).unwrap();
    let (key, _) = NamedKey::from_private_jwk(&jwk).unwrap();
    let resp = open_credential_response(response_jwe, &kid, key.secret(), &line.sign_jwks).unwrap();
    let att =
        prereg_station::jose::b64url_decode(&resp.credential.response.attestation_object).unwrap();
    let obj = AttestationObject::parse(&att).unwrap();
    let data = AuthenticatorData::parse(&obj.auth_data).unwrap();
    let attested = data.attested.unwrap();
    let public = webauthn::cose_es256_key(&attested.public_key).unwrap();
    let rp_id = "myorg.okta.com".to_string();
    (attested.credential_id, public, rp_id)
}

#[test]
fn programmed_keys_verify_at_the_idp_and_work_for_their_users() {
    let line = Line::new(LineSpec {
        slots: 3,
        jobs: 6,
        ..LineSpec::default()
    });
    let reports = line.activate();
    assert_eq!(reports.len(), 6, "one verified result per job");
    for r in &reports {
        assert!(
            r.verified(),
            "{} failed: {:?} {:?}",
            r.shipment_id,
            r.failures,
            r.credentials
        );
    }
    assert_eq!(line.store.count("purged").unwrap(), 6);
    assert!(line.store.quarantined().unwrap().is_empty());

    let results = idp::read_results(&[line.outbox()]).unwrap();
    for (r, result) in reports.iter().zip(&results) {
        assert_eq!(r.shipment_id, result.shipment_id);
        let data = &result.shipment_items[0].product_data[0];
        let key = line.key(&data.serial_number);
        let status = key.pin_status();
        assert!(
            status.pin_set && status.force_pin_change,
            "forcePINChange set on the key"
        );

        let mut c = client(&key);
        let info = c.get_info().unwrap();
        assert!(info.force_pin_change);
        // The user's first sign-in: the delivered PIN, then a PIN of their own.
        let delivered = r.pin.as_ref().expect("IdP decrypted the PIN");
        let mine = SecretString::new("739164".into());
        c.change_pin(PinProtocol::Two, delivered, &mine).unwrap();
        assert!(!c.get_info().unwrap().force_pin_change);

        // An assertion with the delivered credential verifies with the delivered public key.
        let (cred_id, public, rp_id) =
            delivered_cose_key(&line, &data.fido_credential_responses[0]);
        let token = c
            .get_pin_uv_auth_token_using_pin_with_permissions(
                PinProtocol::Two,
                &mine,
                Permissions::GA,
                Some(&rp_id),
            )
            .unwrap();
        let client_data_hash: [u8; 32] = Sha256::digest(b"{\"type\":\"webauthn.get\"}").into();
        let req = GetAssertion {
            rp_id: rp_id.clone(),
            client_data_hash,
            allow_list: vec![CredentialDescriptor::public_key(cred_id.clone())],
            up: None,
        };
        let touch = key.clone();
        let a = c
            .get_assertion(&req, Some(&token), &mut |_| touch.touch())
            .unwrap();
        let mut signed = a.auth_data.clone();
        signed.extend_from_slice(&client_data_hash);
        let sig = p256::ecdsa::Signature::from_der(&a.signature).unwrap();
        use p256::ecdsa::signature::Verifier;
        p256::ecdsa::VerifyingKey::from(&public)
            .verify(&signed, &sig)
            .unwrap();
    }
}

/// SPEC §14: the whole line with the station keys in a PKCS#11 token —
/// 8 keys over 3 slots, every result verified by the IdP — and the token
/// itself says the private keys are sensitive and never extractable, and no
/// private key file exists anywhere under the line's directory.
#[test]
fn keys_in_softhsm_program_a_line_that_the_idp_verifies_and_never_leave_the_token() {
    if !super::hsm::available() {
        return;
    }
    let line = Line::prepare(
        &LineSpec {
            slots: 3,
            jobs: 8,
            hsm: Some("line-8-keys"),
            ..LineSpec::default()
        },
        "",
    );
    let station = line.start(None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !station.drained() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The token's pool on /metrics: per key 2 derives (the PIN and the
    // credential request) and 3 signatures (the step-4 probe, the PIN and
    // the credential response).
    let metrics = prereg_station::web::metrics::render(&station.shared().board);
    station.shutdown();
    for line in [
        "prereg_custody_token_calls_total{op=\"derive\"} 16",
        "prereg_custody_token_calls_total{op=\"sign\"} 24",
        "prereg_custody_token_no_session_total{op=\"derive\"} 0",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    let reports = line.activate();
    assert_eq!(reports.len(), 8, "one verified result per job");
    for r in &reports {
        assert!(r.verified(), "{} failed: {:?}", r.shipment_id, r.failures);
    }
    // The same results under `--sign-ca`: the IdP trusts the facility CA that
    // certified the token's signing key, not a pinned key; a different CA
    // makes every result fail.
    let keys_dir = line.dir.path().join("keys");
    let mut keys = StationKeys::open(Some(&keys_dir), line.config.keys.as_ref()).unwrap();
    let ca = super::hsm::FacilityCa::new("Facility Signing CA").unwrap();
    let csr = prereg_station::jose::x5c::csr_pem(&keys, "Fulfillment").unwrap();
    keys.import_chain(Some(&keys_dir), ca.issue(&csr).unwrap().as_bytes())
        .unwrap();
    let results = idp::read_results(&[line.outbox()]).unwrap();
    let now = idp::unix_now();
    let roots = TrustRoots::from_pem(ca.pem().unwrap().as_bytes()).unwrap();
    let (trusted, _) =
        prereg_station::jose::x5c::certified_signers(&keys.signing_jwks(), &roots, now);
    let reports = line.idp.activate(&trusted, &line.roots, &results, now);
    assert!(reports.iter().all(|r| r.verified()), "{reports:?}");
    let other = super::hsm::FacilityCa::new("Facility Signing CA").unwrap();
    let other_roots = TrustRoots::from_pem(other.pem().unwrap().as_bytes()).unwrap();
    let (untrusted, _) =
        prereg_station::jose::x5c::certified_signers(&keys.signing_jwks(), &other_roots, now);
    let reports = line.idp.activate(&untrusted, &line.roots, &results, now);
    assert!(reports.iter().all(|r| !r.verified()));
    assert!(line.store.quarantined().unwrap().is_empty());
    // No private key material on disk: no JWK with "d", no PEM private key.
    for path in walk(line.dir.path()) {
        if path.starts_with(line.dir.path().join("idp")) {
            continue; // the IdP's own response keys
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !contains(&bytes, b"\"d\"") && !contains(&bytes, b"PRIVATE KEY"),
            "{} holds private key material",
            path.display()
        );
    }
}

/// SPEC §14: the token fails under the running station for 2.5 s (logged
/// out, and its PIN no longer the station's): the job that meets the fault fails
/// before its key is touched and goes back to the queue; the pool opens and
/// logs in fresh sessions and every job is still programmed, each on the
/// first key its slot saw — no key is quarantined or half-programmed.
#[test]
fn a_token_that_fails_mid_run_requeues_the_job_before_any_key_is_touched() {
    if !super::hsm::available() {
        return;
    }
    let label = "line-logout";
    let line = Line::new(LineSpec {
        slots: 2,
        jobs: 4,
        hsm: Some(label),
        on_key: Some(Arc::new(move |slot, n, _key: &SimControl| {
            if slot == 0 && n == 0 {
                // The outage begins before this key's job reaches step 4
                // (the hook runs as the key is inserted), so that job meets
                // it for certain; it ends 2.5 s later on its own.
                let pin = super::hsm::pin_of(label);
                super::hsm::outage_begin(label, &pin);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(2500));
                    super::hsm::outage_end(label, &pin);
                });
            }
        })),
        ..LineSpec::default()
    });
    let reports = line.activate();
    assert_eq!(reports.len(), 4);
    for r in &reports {
        assert!(r.verified(), "{} failed: {:?}", r.shipment_id, r.failures);
    }
    assert!(line.store.quarantined().unwrap().is_empty());
    // Exactly the four programmed keys carry a PIN; every other key the
    // line saw is blank (nothing half-programmed).
    let keys = line.keys.lock().unwrap();
    let with_pin = keys.iter().filter(|k| k.pin_status().pin_set).count();
    assert_eq!(with_pin, 4);
    assert!(keys
        .iter()
        .filter(|k| !k.pin_status().pin_set)
        .all(|k| k.credentials().is_empty()));
    // The fault happened and was a requeue (no attempt counted), not a refusal.
    let requeued: usize = reports
        .iter()
        .map(|r| {
            let (_, audit) = line.store.show(&r.shipment_id).unwrap();
            audit
                .iter()
                .filter(|a| {
                    a.event == "requeued"
                        && a.detail
                            .as_deref()
                            .is_some_and(|d| d.contains("jose.custody"))
                })
                .count()
        })
        .sum();
    assert!(requeued >= 1, "a job met the token fault and was requeued");
}

#[test]
fn bad_jobs_are_refused_with_a_reason_and_touch_no_key() {
    let now = idp::unix_now();
    // Expired: issued 40 days ago with a 30-day life.
    let line = Line::new(LineSpec {
        slots: 1,
        jobs: 1,
        enroll: EnrollOptions {
            now: now - 40 * 86_400,
            ..EnrollOptions::default()
        },
        ..LineSpec::default()
    });
    let (state, reason) = line.job_state(&line.shipments[0].shipment_id);
    assert_eq!(state, "refused");
    assert!(reason.unwrap().contains("expired"));
    assert!(line.untouched_keys());

    // Mis-bound: one user's credential request inside another user's shipment.
    let line = Line::new(LineSpec {
        slots: 1,
        jobs: 0,
        ..LineSpec::default()
    });
    let keys = StationKeys::load_dir(&line.dir.path().join("keys")).unwrap();
    let mut pair = line
        .idp
        .enroll(
            &keys.transport_jwks(),
            &EnrollOptions {
                users: 2,
                product_id: 1,
                ..EnrollOptions::default()
            },
        )
        .unwrap();
    let stolen =
        pair[1].shipment_items[0].product_customizations[0].fido_credential_requests[0].clone();
    pair[0].shipment_items[0].product_customizations[0].fido_credential_requests = vec![stolen];
    line.import(&pair[..1]);
    line.run_with(None);
    let (state, reason) = line.job_state(&pair[0].shipment_id);
    assert_eq!(state, "refused");
    assert!(reason.unwrap().contains("userId"), "binding refusal named");
    assert!(line.untouched_keys());
}

/// Runs until the first job carries a reason (a key was turned away).
fn until_reason(store: &Store) -> bool {
    store
        .list(1)
        .unwrap()
        .first()
        .is_some_and(|r| r.reason.is_some())
}

#[test]
fn keys_that_do_not_fit_are_rejected_untouched_and_the_job_waits() {
    // Firmware below the customization's minimum.
    let line = Line::new(LineSpec {
        slots: 1,
        jobs: 1,
        min_firmware: "5.8.0",
        until: Some(until_reason),
        ..LineSpec::default()
    });
    let (state, reason) = line.job_state(&line.shipments[0].shipment_id);
    assert_eq!(state, "queued", "the job waits for a suitable key");
    assert!(reason
        .unwrap()
        .contains("below the customization's minimum"));
    assert!(line.untouched_keys());

    // forceChangePin asked of keys without authenticatorConfig (5.2: FIDO_2_1_PRE).
    let line = Line::new(LineSpec {
        profile: "yubikey-5.2",
        slots: 1,
        jobs: 1,
        min_firmware: "5.2.0",
        until: Some(until_reason),
        ..LineSpec::default()
    });
    let (state, reason) = line.job_state(&line.shipments[0].shipment_id);
    assert_eq!(state, "queued");
    assert!(reason.unwrap().contains("forceChangePin"));
    assert!(line.untouched_keys());
}

/// Issue #17 item 1 (docs/operator.md: REMOVE "wrong product"): a Security
/// Key while only YubiKey 5 NFC jobs wait is turned away untouched — REMOVE
/// with the reason on the tile, the ATTN lamp, a `turned-away` audit event
/// (`jobs list`), a `/metrics` count by reason — and the job keeps waiting.
#[test]
fn a_security_key_while_only_yubikey_jobs_wait_is_turned_away_with_the_reason() {
    use prereg_station::rig::Lamp;
    use prereg_station::web::SlotState;
    let line = Line::prepare(
        &LineSpec {
            slots: 1,
            jobs: 1,
            slot_profile: Some("security-key-5.7"),
            ..LineSpec::default()
        },
        "",
    );
    let setup = app::setup(line.config.clone(), line.store.clone()).unwrap();
    let board = setup.board.clone();
    let station = Station::start(setup).unwrap();
    wait_for("the slot to show REMOVE", || {
        board.slot(0).is_some_and(|v| v.state == SlotState::Remove)
    });
    let view = board.slot(0).unwrap();
    // Five more polls of the slot: the key still in it is not recorded again.
    std::thread::sleep(Duration::from_secs(1));
    station.shutdown();
    let why = view.last_error.clone().unwrap();
    assert!(why.starts_with("Wrong product"), "{why}");
    assert!(why.contains("YubiKey 5 NFC"), "{why}");
    assert!(
        view.instruction
            .as_deref()
            .unwrap()
            .contains("Wrong product"),
        "{view:?}"
    );
    assert_eq!(SlotState::Remove.lamp(), Lamp::Attn);
    let events = line.store.events("turned-away").unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0]
        .detail
        .as_deref()
        .unwrap()
        .starts_with("key.wrong_product: Wrong product"));
    let metrics = prereg_station::web::metrics::render(&board);
    assert!(
        metrics.contains("prereg_keys_turned_away_total{reason=\"key.wrong_product\"} 1\n"),
        "{metrics}"
    );
    let (state, _) = line.job_state(&line.shipments[0].shipment_id);
    assert_eq!(state, "queued", "the job waits for a YubiKey");
    assert!(line.untouched_keys());
}

#[test]
fn a_key_that_is_not_blank_is_refused_and_the_next_key_programmed() {
    let line = Line::new(LineSpec {
        slots: 1,
        jobs: 1,
        on_key: Some(Arc::new(|_, n, key| {
            if n == 0 {
                client(key)
                    .set_pin(PinProtocol::Two, &SecretString::new("271828".into()))
                    .unwrap();
            }
        })),
        ..LineSpec::default()
    });
    let reports = line.activate();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].verified());
    let keys = line.keys.lock().unwrap();
    assert!(keys[0].credentials().is_empty(), "the used key got nothing");
    assert_ne!(
        reports[0].serial_number.as_deref(),
        Some(keys[0].serial().to_string().as_str())
    );
}

/// Unplugging the first key at every message of the recipe: the job always
/// completes on another key, exactly once; a key that got a PIN is always
/// quarantined, an untouched one only when it vanished inside setPIN.
#[test]
fn fault_matrix_unplug_at_every_step() {
    // 5.2/5.4 keys have no authenticatorConfig: their jobs ask for no
    // forceChangePin and no minimum PIN length (see the refusal test).
    let lines = [
        ("yubikey-5.7", "5.7.0", true),
        ("security-key-5.7", "5.7.0", true),
        ("yubikey-5.4", "5.4.0", false),
        ("yubikey-5.2", "5.2.0", false),
    ];
    for (profile, min_firmware, force) in lines {
        for at in 0..20u64 {
            if std::env::var("FAULT_AT").is_ok_and(|v| v != at.to_string()) {
                continue;
            }
            let line = Line::new(LineSpec {
                profile,
                slots: 1,
                jobs: 1,
                min_firmware,
                enroll: EnrollOptions {
                    force_change_pin: force,
                    pin_min_length: force.then_some(6),
                    ..EnrollOptions::default()
                },
                on_key: Some(Arc::new(move |_, n, key| {
                    if n == 0 {
                        key.set_faults(FaultPlan {
                            unplug_at_command: Some(at),
                            ..FaultPlan::default()
                        });
                    }
                })),
                ..LineSpec::default()
            });
            let ctx = format!("{profile}, unplug at message {at}");
            let reports = line.activate();
            assert_eq!(
                reports.len(),
                1,
                "{ctx}: delivered exactly once; job: {:?}",
                line.store
                    .show(&line.shipments[0].shipment_id)
                    .map(|(r, a)| (
                        r,
                        a.into_iter()
                            .map(|a| format!("{} {:?} {:?}", a.event, a.serial, a.detail))
                            .collect::<Vec<_>>()
                    ))
            );
            assert!(reports[0].verified(), "{ctx}: {:?}", reports[0].failures);
            let files = std::fs::read_dir(line.outbox()).unwrap().count();
            assert_eq!(files, 1, "{ctx}: one result file");
            let first = line.keys.lock().unwrap()[0].clone();
            let quarantined: Vec<String> = line
                .store
                .quarantined()
                .unwrap()
                .into_iter()
                .map(|q| q.serial)
                .collect();
            let began = first.pin_status().pin_set;
            let serial = first.serial().to_string();
            if reports[0].serial_number.as_deref() == Some(serial.as_str()) {
                // The fault fell after the last message: the first key finished.
                assert!(quarantined.is_empty(), "{ctx}");
            } else if began {
                // A key with a PIN must never come back as blank stock.
                assert!(
                    quarantined.contains(&serial),
                    "{ctx}: touched key quarantined"
                );
            } else if quarantined.contains(&serial) {
                // Lost during setPIN itself: the station cannot know whether the PIN
                // landed, so it errs on the safe side.
                let q = line.store.quarantined().unwrap();
                assert_eq!(
                    q[0].step, "setPIN",
                    "{ctx}: only an unknowable setPIN is quarantined untouched"
                );
            }
        }
    }
}

/// Everything the station wrote (database, WAL, outbox, logs) holds no PIN
/// and no decrypted request, except inside the encrypted responses.
#[test]
fn no_secret_reaches_disk_or_logs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let demo = std::process::Command::new(crate::util::station_bin())
        .args(["demo", "--keys", "3", "--slots", "2", "-vv", "--dir"])
        .arg(d)
        .output()
        .unwrap();
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let export = std::process::Command::new(crate::util::station_bin())
        .args(["keys", "export-jwks", "--dir"])
        .arg(d.join("keys"))
        .arg("--out")
        .arg(d.join("pub"))
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let activate = std::process::Command::new(crate::util::station_bin())
        .args(["idp", "activate", "--json", "--show-pin", "--state"])
        .arg(d.join("idp"))
        .arg("--sign-jwks")
        .arg(d.join("pub/sign.jwks"))
        .arg("--roots")
        .arg(d.join("sim-attestation-root.pem"))
        .arg(d.join("outbox"))
        .output()
        .unwrap();
    assert!(
        activate.status.success(),
        "{}",
        String::from_utf8_lossy(&activate.stderr)
    );
    let text = String::from_utf8(activate.stdout).unwrap();
    let pins: Vec<String> = text
        .split("\"pin\":")
        .skip(1)
        .filter_map(|s| {
            s.trim_start()
                .strip_prefix('"')?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(pins.len(), 3, "the IdP got three PINs: {text}");

    // Plaintext markers: what only the decrypted requests contain.
    let mut secrets: Vec<String> = pins.clone();
    secrets.push("@example.com".into());
    secrets.push("\"challenge\"".into());
    let mut scanned = vec![
        ("demo stdout".to_string(), demo.stdout.clone()),
        ("demo stderr".to_string(), demo.stderr.clone()),
    ];
    for entry in walk(&d.join("state")) {
        scanned.push((entry.display().to_string(), std::fs::read(&entry).unwrap()));
    }
    for entry in walk(&d.join("outbox")) {
        // The result file minus its encrypted responses.
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&entry).unwrap()).unwrap();
        for item in v["shipment_items"].as_array_mut().unwrap() {
            for data in item["product_data"].as_array_mut().unwrap() {
                data["fido_pin_response"] = serde_json::Value::Null;
                data["fido_credential_responses"] = serde_json::Value::Null;
            }
        }
        scanned.push((entry.display().to_string(), v.to_string().into_bytes()));
    }
    assert!(scanned.iter().any(|(n, _)| n.ends_with("station.db")));
    for (name, bytes) in &scanned {
        for secret in &secrets {
            assert!(
                !contains(bytes, secret.as_bytes()),
                "{secret:?} found in {name}"
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs `prereg-station` with `args`, panicking with its stderr on failure.
fn station(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let out = std::process::Command::new(crate::util::station_bin())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The daemon killed with SIGKILL at random moments, restarted each time:
/// afterwards every job is delivered exactly once and verifies at the IdP,
/// and no key that was mid-programming at a kill was shipped.
#[test]
fn sigkill_at_random_points_loses_nothing_and_ships_no_half_programmed_key() {
    use rand::Rng;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let os = |s: &str| std::ffi::OsString::from(s);
    let p = |sub: &str| d.join(sub).into_os_string();
    station(&[&os("keys"), &os("generate"), &os("--dir"), &p("keys")]);
    station(&[
        &os("keys"),
        &os("export-jwks"),
        &os("--dir"),
        &p("keys"),
        &os("--out"),
        &p("pub"),
    ]);
    station(&[&os("sim"), &os("ca"), &os("--out"), &p("ca.pem")]);
    let jobs = 8;
    station(&[
        &os("idp"),
        &os("enroll"),
        &os("--state"),
        &p("idp"),
        &os("--station-jwks"),
        &p("pub/transport-keys.jwks"),
        &os("--users"),
        &os(&jobs.to_string()),
        &os("--out"),
        &p("jobs.jsonl"),
    ]);
    let config = d.join("station.toml");
    let write_config = |seed: u64| {
        let text = format!(
            "[station]\nid = \"crash\"\nstate_dir = {:?}\nkeys_dir = {:?}\noutbox_dir = {:?}\nattestation_roots = [{:?}]\nsim_seed = {seed}\nmax_attempts = 20\n\n[[customization]]\nid = \"C19881\"\nmin_firmware = \"5.7.0\"\nproducts = [1]\n\n[[slot]]\ndevice = \"sim:yubikey-5.7\"\n\n[[slot]]\ndevice = \"sim:yubikey-5.7\"\n",
            d.join("state"), d.join("keys"), d.join("outbox"), d.join("ca.pem")
        );
        std::fs::write(&config, text).unwrap();
    };
    write_config(1);
    let cfg = config.clone().into_os_string();
    station(&[
        &os("jobs"),
        &os("import"),
        &p("jobs.jsonl"),
        &os("--config"),
        &cfg,
    ]);

    let mut rng = rand::thread_rng();
    for round in 0..5u64 {
        // A new seed per start: a fresh process is a fresh batch of blank keys.
        write_config(100 + round);
        let mut child = std::process::Command::new(crate::util::station_bin())
            .args([os("run"), os("--config"), cfg.clone()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..1500)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    write_config(999);
    let out = station(&[&os("run"), &os("--once"), &os("--config"), &cfg]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("purged"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Exactly one result per job, each verified as the IdP would.
    let files: Vec<_> = std::fs::read_dir(d.join("outbox"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), jobs, "one result file per shipment");
    let out = station(&[
        &os("idp"),
        &os("activate"),
        &os("--json"),
        &os("--state"),
        &p("idp"),
        &os("--sign-jwks"),
        &p("pub/sign.jwks"),
        &os("--roots"),
        &p("ca.pem"),
        &p("outbox"),
    ]);
    // One JSON object per report.
    let reports: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(reports.len(), jobs);
    assert!(reports.iter().all(|r| r["verified"] == true), "{reports:?}");

    // No delivered key is a quarantined one.
    let q = station(&[
        &os("jobs"),
        &os("quarantine"),
        &os("--json"),
        &os("--config"),
        &cfg,
    ]);
    // JSON lines (docs/cli.md): one quarantined key per line.
    let quarantined: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&q.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    for r in &reports {
        let serial = r["serial_number"].as_str().unwrap();
        assert!(
            !quarantined.iter().any(|x| x["serial"] == serial),
            "delivered key {serial} is quarantined"
        );
    }
}

// ---------------------------------------------------------------------------
// The rig and the operator (issue #6, SPEC §9): the station drives its
// simulated rig over a pty through the serial driver; when the rig fails
// mid-run, touch-free keys keep passing and touch-needing slots wait for the
// operator, who touches them; nothing is lost.

use prereg_station::rig::sim::{SimRig, SimRigFault};
use prereg_station::rig::{Lamp, RigHealth};
use prereg_station::sim::TouchMode;
use prereg_station::station::power;
use prereg_station::web::SlotState;

/// How the rig fails mid-run.
#[derive(Debug, Clone, Copy)]
enum RigFailure {
    Garbage,
    Silent,
    Disappears,
}

impl RigFailure {
    fn inject(self, rig: &SimRig) {
        match self {
            RigFailure::Garbage => rig.set_fault(SimRigFault::Garbage),
            RigFailure::Silent => rig.set_fault(SimRigFault::Silent),
            RigFailure::Disappears => rig.disappear(),
        }
    }
}

/// Waits for `cond` (an event, not a duration: the deadline only stops a hang).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Keys of `slot` (by the order the hook saw them) that hold a credential.
fn programmed_in(keys: &Mutex<Vec<(usize, SimControl)>>, slots: &[usize]) -> usize {
    keys.lock()
        .unwrap()
        .iter()
        .filter(|(s, k)| slots.contains(s) && !k.credentials().is_empty())
        .count()
}

fn rig_goes_down_mid_run(failure: RigFailure) {
    // Slots 0 and 1 hold keys that need no touch; slots 2 and 3 keys that
    // only the rig's actuator (or the operator) can satisfy.
    const AUTO: [usize; 2] = [0, 1];
    const TOUCH: [usize; 2] = [2, 3];
    let spec = LineSpec {
        slots: 4,
        jobs: 16,
        ..LineSpec::default()
    };
    let line = Line::prepare(&spec, "\n[rig]\nsimulated = true\n");
    let by_slot: Arc<Mutex<Vec<(usize, SimControl)>>> = Arc::default();
    let seen = by_slot.clone();
    let station = line.start(Some(Arc::new(move |slot, _, key: &SimControl| {
        if AUTO.contains(&slot) {
            key.set_touch_mode(TouchMode::Auto);
        }
        seen.lock().unwrap().push((slot, key.clone()));
    })));
    let board = &station.shared().board;
    let rig = station
        .sim_rig()
        .expect("[rig] simulated = true starts a rig");
    wait_for("the rig to come up", || board.rig_health().is_up());

    // Before the fault: a touch-needing key is programmed, which only the
    // rig's TOUCH over the serial line can have done (sim slots never press
    // themselves when the rig drives them).
    wait_for("a key touched by the rig", || {
        programmed_in(&by_slot, &TOUCH) >= 1
    });
    assert!(rig.engine().requests_seen() > 0);
    assert!(
        (0..4u8).any(|s| rig.lamp(s) != Lamp::Off),
        "slot lamps were set over the pty"
    );

    failure.inject(rig);
    wait_for("the board to report the rig down", || {
        matches!(board.rig_health(), RigHealth::Down { .. })
    });
    let auto_before = programmed_in(&by_slot, &AUTO);

    // The operator: touches a touch-needing slot's key only once the board
    // asks for it, and notes what it said.
    let mut instructions = Vec::new();
    wait_for("every job to be delivered", || {
        for slot in TOUCH {
            let view = board.slot(slot).unwrap();
            if view.state == SlotState::Touch {
                if let Some(i) = &view.instruction {
                    if !instructions.contains(i) {
                        instructions.push(i.clone());
                    }
                }
                for (s, k) in by_slot.lock().unwrap().iter() {
                    if *s == slot && k.waiting_for_touch() {
                        k.touch();
                    }
                }
            }
        }
        station.drained()
    });
    assert!(
        programmed_in(&by_slot, &AUTO) > auto_before,
        "touch-free keys kept passing while the rig was down"
    );
    assert!(
        matches!(board.rig_health(), RigHealth::Down { .. }),
        "the rig stayed down: {}",
        board.rig_health()
    );
    assert!(
        !instructions.is_empty(),
        "a touch-needing slot asked the operator"
    );
    for i in &instructions {
        assert!(
            i.starts_with("Touch the key now") && i.contains("rig"),
            "the instruction says what to do and why: {i:?}"
        );
    }

    // The rig comes back: the station reconnects and reports it up again.
    match failure {
        RigFailure::Disappears => rig.reappear(),
        _ => rig.set_fault(SimRigFault::None),
    }
    wait_for("the rig to be reported up again", || {
        board.rig_health().is_up()
    });
    station.shutdown();

    // Nothing lost: every job delivered and verified, none leased, nothing quarantined.
    let reports = line.activate();
    assert_eq!(reports.len(), spec.jobs, "one verified result per job");
    for r in &reports {
        assert!(r.verified(), "{} failed: {:?}", r.shipment_id, r.failures);
    }
    assert_eq!(line.store.count("leased").unwrap(), 0);
    assert_eq!(line.store.unfinished().unwrap(), 0);
    let quarantined = line.store.quarantined().unwrap();
    assert!(quarantined.is_empty(), "{quarantined:?}");
    assert!(
        programmed_in(&by_slot, &TOUCH) > 1,
        "touch-needing slots kept programming through the operator"
    );
}

#[test]
fn rig_answering_garbage_mid_run_leaves_touch_to_the_operator() {
    rig_goes_down_mid_run(RigFailure::Garbage);
}

#[test]
fn rig_falling_silent_mid_run_leaves_touch_to_the_operator() {
    rig_goes_down_mid_run(RigFailure::Silent);
}

#[test]
fn rig_disappearing_mid_run_leaves_touch_to_the_operator() {
    rig_goes_down_mid_run(RigFailure::Disappears);
}

/// Runs `line` with the simulated rig until every job is delivered; returns
/// the board's failure list (one line per failed or quarantined key).
fn run_on_the_rig(line: &Line, on_key: OnKey) -> Vec<(Option<u32>, String)> {
    let station = line.start(Some(on_key));
    assert!(station.sim_rig().is_some());
    wait_for("every job to be delivered", || station.drained());
    let failures = station
        .shared()
        .board
        .snapshot()
        .failures
        .into_iter()
        .map(|f| (f.serial, f.error.unwrap_or_default()))
        .collect();
    station.shutdown();
    failures
}

#[test]
fn a_key_that_stops_answering_is_power_cycled_once_and_programmed() {
    let spec = LineSpec {
        slots: 1,
        jobs: 1,
        ..LineSpec::default()
    };
    let line = Line::prepare(&spec, "\n[rig]\nsimulated = true\n");
    // The first key hangs (keepalives forever, never an answer) until its
    // power is cycled.
    let failures = run_on_the_rig(
        &line,
        Arc::new(|_, n, key: &SimControl| {
            if n == 0 {
                key.set_faults(FaultPlan {
                    endless_keepalive: true,
                    ..FaultPlan::default()
                });
            }
        }),
    );
    let reports = line.activate();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].verified(), "{:?}", reports[0].failures);
    let first = line.keys.lock().unwrap()[0].clone();
    assert_eq!(
        reports[0].serial_number.as_deref(),
        Some(first.serial().to_string().as_str()),
        "the stuck key itself was revived and programmed, not replaced"
    );
    assert!(!first.credentials().is_empty());
    let cycles = line.store.events(power::POWER_CYCLE_EVENT).unwrap();
    assert_eq!(cycles.len(), 1, "one power cycle, no loop: {cycles:?}");
    assert!(cycles[0]
        .detail
        .as_deref()
        .unwrap()
        .contains("power-cycled"));
    assert!(failures.is_empty(), "{failures:?}");
    assert!(line.store.quarantined().unwrap().is_empty());
}

/// The first key of the only slot arrives with a PIN set (not blank).
fn first_key_not_blank() -> OnKey {
    Arc::new(|_, n, key: &SimControl| {
        if n == 0 {
            client(key)
                .set_pin(PinProtocol::Two, &SecretString::new("271828".into()))
                .unwrap();
        }
    })
}

#[test]
fn reset_non_blank_off_rejects_the_key_and_names_the_option() {
    let spec = LineSpec {
        slots: 1,
        jobs: 1,
        ..LineSpec::default()
    };
    let line = Line::prepare(&spec, "\n[rig]\nsimulated = true\n");
    let failures = run_on_the_rig(&line, first_key_not_blank());
    let first = line.keys.lock().unwrap()[0].clone();
    assert!(
        first.pin_status().pin_set,
        "the used key was left as it was"
    );
    assert!(first.credentials().is_empty());
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, Some(first.serial()));
    assert!(
        failures[0].1.contains("reset_non_blank"),
        "the rejection names the option: {:?}",
        failures[0].1
    );
    assert!(line.store.events(power::RESET_EVENT).unwrap().is_empty());
    let reports = line.activate();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].verified());
    assert_ne!(
        reports[0].serial_number.as_deref(),
        Some(first.serial().to_string().as_str())
    );
}

#[test]
fn reset_non_blank_on_resets_the_key_in_its_power_up_window_and_programs_it() {
    let spec = LineSpec {
        slots: 1,
        jobs: 1,
        ..LineSpec::default()
    };
    let mut line = Line::prepare(&spec, "\n[rig]\nsimulated = true\n");
    line.config.reset_non_blank = true;
    let failures = run_on_the_rig(&line, first_key_not_blank());
    assert!(failures.is_empty(), "{failures:?}");
    let first = line.keys.lock().unwrap()[0].clone();
    let reports = line.activate();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].verified(), "{:?}", reports[0].failures);
    assert_eq!(
        reports[0].serial_number.as_deref(),
        Some(first.serial().to_string().as_str()),
        "the reset key itself was programmed"
    );
    // The station's PIN replaced the old one: the delivered PIN works.
    let status = first.pin_status();
    assert!(status.pin_set && status.force_pin_change);
    let resets = line.store.events(power::RESET_EVENT).unwrap();
    assert_eq!(resets.len(), 1, "{resets:?}");
    assert_eq!(
        resets[0].serial.as_deref(),
        Some(first.serial().to_string().as_str())
    );
    assert!(resets[0]
        .detail
        .as_deref()
        .unwrap()
        .contains("reset after power-up"));
    assert!(line.store.quarantined().unwrap().is_empty());
}

// ---------------------------------------------------------------------------
// Nothing lost at the boundary, delivery half (issue #12, SPEC §6): each
// result is delivered on its own, a result that cannot be delivered backs off
// with its reason and never holds up the others, no file is ever overwritten
// or reached through a planted link, and `run --once` ends naming what is stuck.

use prereg_station::shipment::{Job, ShipmentId};

/// A station directory (keys, CA, configuration) whose store is seeded with
/// programmed results directly, so 50 results need no 50 keys.
struct Bench {
    dir: tempfile::TempDir,
    config_path: PathBuf,
    config: Config,
}

impl Bench {
    /// `extra` is appended to the `[station]` table's configuration text.
    fn new(slots: usize, extra: &str) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        StationKeys::generate(&d.join("keys")).unwrap();
        std::fs::write(
            d.join("ca.pem"),
            prereg_station::sim::attestation::root_pem(0).unwrap(),
        )
        .unwrap();
        let mut text = format!(
            "[station]\nid = \"bench\"\nstate_dir = {:?}\nkeys_dir = {:?}\noutbox_dir = {:?}\nattestation_roots = [{:?}]\n\n[[customization]]\nid = \"C19881\"\nmin_firmware = \"5.7.0\"\nproducts = [1]\n",
            d.join("state"),
            d.join("keys"),
            d.join("outbox"),
            d.join("ca.pem"),
        );
        for _ in 0..slots {
            text.push_str("\n[[slot]]\ndevice = \"sim:yubikey-5.7\"\n");
        }
        text.push_str(&crate::util::store_section());
        text.push_str(extra);
        let config_path = d.join("station.toml");
        std::fs::write(&config_path, &text).unwrap();
        Bench {
            config: Config::parse(&text).unwrap(),
            config_path,
            dir,
        }
    }

    /// The result JSON seeded for `id`.
    fn result(id: &str) -> String {
        format!("{{\"shipment_id\":\"{id}\",\"shipment_state\":{{\"shipment_state_id\":103}}}}")
    }

    /// Stores a programmed result for each id, as a slot would have.
    fn seed(&self, ids: &[String]) {
        let store = open_store(&self.config).unwrap();
        for id in ids {
            let job = Job {
                shipment_id: ShipmentId::parse(id).unwrap(),
                product_id: 1,
                inventory_product_id: 106,
                customization_id: "C19881".into(),
                // Unique per id: intake refuses a request seen before (replay).
                pin_request: format!("p.i.n.{id}.we"),
                credential_requests: vec![],
            };
            store.import(&job).unwrap();
            store
                .lease("seed", &[1], Duration::from_secs(60))
                .unwrap()
                .unwrap();
            store.begin_programming("seed", id, "1000").unwrap();
            store
                .store_result("seed", id, "1000", "5.7.1", Bench::result(id))
                .unwrap();
        }
    }

    fn outbox(&self) -> PathBuf {
        self.config.outbox_dir.clone()
    }

    /// `prereg-station ARGS --config F`, killed after `limit`.
    fn run(&self, args: &[&str], limit: Duration) -> (Option<i32>, String, Duration) {
        self.run_in_shell("", args, limit)
    }

    /// Like [`Bench::run`], after `shell` (e.g. `umask 000`) in a POSIX shell.
    fn run_in_shell(
        &self,
        shell: &str,
        args: &[&str],
        limit: Duration,
    ) -> (Option<i32>, String, Duration) {
        let t0 = Instant::now();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{shell}\nexec \"$0\" \"$@\""))
            .arg(crate::util::station_bin())
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if t0.elapsed() > limit {
                child.kill().unwrap();
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        (status.and_then(|s| s.code()), stderr, t0.elapsed())
    }
}

fn fifty_ids() -> Vec<String> {
    (0..50).map(|i| format!("R{i:02}")).collect()
}

/// The error line of a `prereg-station` run (tracing may log before it).
fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("prereg-station: "))
        .unwrap_or_else(|| panic!("no error line in {stderr:?}"))
}

/// Done when (issue #12): 50 pending results, one whose outbox name is taken
/// by a different result (what `COLL.1` and `COLL_1` did when both mapped to
/// `COLL_1.json`): the 49 others are delivered promptly, the taken file is
/// untouched, the stuck result stays pending with its reason, and `run
/// --once` exits 1 naming it (before: it stopped at the first error and never
/// returned).
#[test]
fn fifty_results_one_outbox_name_taken_49_delivered_and_run_once_names_the_stuck_one() {
    let bench = Bench::new(0, "");
    let ids = fifty_ids();
    bench.seed(&ids);
    std::fs::create_dir_all(bench.outbox()).unwrap();
    let planted = bench.outbox().join("R07.json");
    std::fs::write(&planted, "the result of another key").unwrap();

    let (code, stderr, took) = bench.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let line = error_line(&stderr);
    assert!(
        line.contains("1 result(s) cannot be delivered")
            && line.contains("R07 (delivery.outbox_conflict: "),
        "{line}"
    );
    assert_eq!(
        std::fs::read_to_string(&planted).unwrap(),
        "the result of another key"
    );
    for id in ids.iter().filter(|i| *i != "R07") {
        let got = std::fs::read_to_string(bench.outbox().join(format!("{id}.json"))).unwrap();
        assert_eq!(got, Bench::result(id));
    }
    assert_eq!(std::fs::read_dir(bench.outbox()).unwrap().count(), 50);
    // The stuck result is still there to deliver, with its reason.
    let store = open_store(&bench.config).unwrap();
    assert_eq!(store.count("purged").unwrap(), 49);
    let (row, _) = store.show("R07").unwrap();
    assert_eq!(row.state, "programmed");
    assert!(row
        .reason
        .as_deref()
        .unwrap()
        .starts_with("delivery.outbox_conflict: "));
    drop(store);
    let cfg = bench.config_path.clone().into_os_string();
    let list = station(&["jobs".as_ref(), "list".as_ref(), "--config".as_ref(), &cfg]);
    let list = String::from_utf8_lossy(&list.stdout);
    let section = list
        .split_once("1 result(s) waiting for the sink, 1 failing:")
        .map(|(_, s)| s)
        .unwrap_or_default();
    assert!(
        section.contains("R07") && section.contains("delivery.outbox_conflict: "),
        "{list}"
    );
    // Moved aside, it is delivered by the next run.
    std::fs::rename(&planted, bench.dir.path().join("R07.other")).unwrap();
    let (code, stderr, _) = bench.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&planted).unwrap(),
        Bench::result("R07")
    );
}

/// A test HTTP receiver: answers 422 for one shipment id forever and 201 for
/// every other; records (when, Idempotency-Key) of every request.
/// Every request a test receiver saw: when, and its `Idempotency-Key`.
type Requests = Arc<Mutex<Vec<(Instant, String)>>>;

fn receiver(refuse: &'static str) -> (String, Requests) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/results", listener.local_addr().unwrap());
    let seen: Requests = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Head, then Content-Length bytes of body.
            let key = loop {
                let n = c.read(&mut buf).unwrap_or(0);
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    // Header names are case-insensitive (RFC 9110 §5.1);
                    // hyper sends them in lower case.
                    let header = |name: &str| {
                        head.lines().find_map(|l| {
                            let (n, v) = l.split_once(':')?;
                            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                        })
                    };
                    let len: usize = header("Content-Length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break header("Idempotency-Key").unwrap_or_default();
                    }
                }
                if n == 0 {
                    break String::new();
                }
            };
            let status = if key == refuse {
                "422 Unprocessable Entity"
            } else {
                "201 Created"
            };
            log.lock().unwrap().push((Instant::now(), key));
            let _ = write!(c, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (url, seen)
}

/// Done when (issue #12), HTTP sink: a receiver that answers 422 for one
/// result forever. The 49 others are delivered (once each) without waiting for
/// it; the refused one is retried with growing gaps (before: 16 times in 25 s,
/// and nothing after it was sent); its reason shows in the store, the board and
/// `/metrics`; the station names it as undeliverable, and `run --once` exits 1
/// naming it.
#[test]
fn fifty_results_one_refused_by_the_http_sink_49_delivered_and_the_refused_one_backs_off() {
    let (url, seen) = receiver("R23");
    let bench = Bench::new(0, &format!("\n[sink]\nhttp_url = \"{url}\"\n"));
    let ids = fifty_ids();
    bench.seed(&ids);
    let store = open_store(&bench.config).unwrap();
    let setup = app::setup(bench.config.clone(), store.clone()).unwrap();
    let t0 = Instant::now();
    let station = Station::start(setup).unwrap();
    wait_for("49 results delivered", || {
        store.count("purged").unwrap() == 49
    });
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    wait_for("the refused result named undeliverable", || {
        !station.stuck_on_delivery().is_empty()
    });
    let stuck = station.stuck_on_delivery();
    assert_eq!(stuck.len(), 1);
    assert_eq!(stuck[0].shipment_id, "R23");
    assert_eq!(stuck[0].failure.reason.code(), "delivery.sink_refused");
    // Keep the station running 12 s in all, then count the attempts.
    std::thread::sleep(Duration::from_secs(12).saturating_sub(t0.elapsed()));
    let board = station.shared().board.clone();
    let snapshot = board.snapshot().delivery;
    let metrics = prereg_station::web::metrics::render(&board);
    station.shutdown();

    let seen = seen.lock().unwrap().clone();
    for id in ids.iter().filter(|i| *i != "R23") {
        assert_eq!(
            seen.iter().filter(|(_, k)| k == id).count(),
            1,
            "{id} posted once"
        );
    }
    let tries: Vec<Instant> = seen
        .iter()
        .filter(|(_, k)| k == "R23")
        .map(|(t, _)| *t)
        .collect();
    // Backoff 0.5-1 s, 1-2 s, 2-4 s, 4-8 s: 3 to 5 attempts in 12 s.
    assert!(
        (3..=5).contains(&tries.len()),
        "{} attempts in 12 s",
        tries.len()
    );
    let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("R23: {} attempts in 12 s, gaps {gaps:?}", tries.len());
    assert!(gaps[0] >= Duration::from_millis(450), "{gaps:?}");
    for g in gaps.windows(2) {
        // Scheduling noise aside (two shared cores), a gap never shrinks.
        assert!(
            g[1] + Duration::from_millis(250) >= g[0],
            "gaps shrink: {gaps:?}"
        );
    }
    // The reason, wherever an operator looks.
    let (row, _) = store.show("R23").unwrap();
    assert!(row
        .reason
        .as_deref()
        .unwrap()
        .starts_with("delivery.sink_refused: "));
    assert_eq!(snapshot.pending, 1);
    assert_eq!(snapshot.failing[0].shipment_id, "R23");
    assert_eq!(snapshot.failing[0].reason, "delivery.sink_refused");
    assert!(metrics.contains("prereg_delivery_pending 1\n"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "prereg_delivery_failures_total{{reason=\"delivery.sink_refused\"}} {}\n",
            tries.len()
        )),
        "{metrics}"
    );
    drop(store);

    // The daemon's `--once` gives up on it after its first refusal in the run.
    let (code, stderr, took) = bench.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let line = error_line(&stderr);
    assert!(
        line.contains("R23 (delivery.sink_refused: sink http://"),
        "{line}"
    );
}

/// An `outbox_dir` that is a regular file is found at start-up: `run` exits 2
/// with one line naming the path and the fix, before any key is touched
/// (before: a key was programmed, then its delivery failed forever).
#[test]
fn an_outbox_dir_that_is_a_file_stops_run_at_start_up_with_exit_2_and_no_key_touched() {
    let spec = LineSpec {
        slots: 1,
        jobs: 1,
        ..LineSpec::default()
    };
    let line = Line::prepare(&spec, "");
    std::fs::write(line.outbox(), "not a directory").unwrap();
    let config_path = line.dir.path().join("station.toml");
    // `Line` keeps its configuration in memory: the same, as a file.
    let text = format!(
        "[station]\nid = \"test\"\nstate_dir = {:?}\nkeys_dir = {:?}\noutbox_dir = {:?}\nattestation_roots = [{:?}]\n\n[[customization]]\nid = \"C19881\"\nmin_firmware = \"5.7.0\"\nproducts = [1]\n\n[[slot]]\ndevice = \"sim:yubikey-5.7\"\n",
        line.config.state_dir,
        line.dir.path().join("keys"),
        line.outbox(),
        line.dir.path().join("ca.pem"),
    );
    std::fs::write(&config_path, text).unwrap();
    let t0 = Instant::now();
    let mut child = std::process::Command::new(crate::util::station_bin())
        .args(["run", "--once", "--config"])
        .arg(&config_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let want = format!(
        "prereg-station: cannot start: outbox_dir {} is not a directory: remove or rename it, or point outbox_dir elsewhere",
        line.outbox().display()
    );
    assert_eq!(stderr.trim_end(), want);
    // Nothing was programmed or even leased; the file is as it was.
    assert_eq!(line.job_state(&line.shipments[0].shipment_id).0, "queued");
    assert_eq!(
        std::fs::read_to_string(line.outbox()).unwrap(),
        "not a directory"
    );
}

/// Under `umask 000` (no help from the environment) the station still makes
/// its directories 0700 and its result and database files 0600 (before: the
/// outbox was 0755 and the database 0644 outside systemd).
#[test]
fn directories_and_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::MetadataExt;
    let bench = Bench::new(1, "");
    // One real job, programmed by the binary under umask 000.
    let d = bench.dir.path();
    let keys = StationKeys::load(Some(&d.join("keys"))).unwrap();
    let idp = Idp::open(&d.join("idp")).unwrap();
    let shipments = idp
        .enroll(
            &keys.transport_jwks(),
            &EnrollOptions {
                users: 1,
                product_id: 1,
                ..EnrollOptions::default()
            },
        )
        .unwrap();
    let jobs = d.join("jobs.json");
    std::fs::write(&jobs, serde_json::to_string(&shipments[0]).unwrap()).unwrap();
    let import = ["jobs", "import", jobs.to_str().unwrap()];
    let (code, stderr, _) = bench.run_in_shell("umask 000", &import, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr, _) =
        bench.run_in_shell("umask 000", &["run", "--once"], Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
    assert_eq!(mode(&bench.config.state_dir), 0o700);
    assert_eq!(mode(&bench.outbox()), 0o700);
    let results: Vec<PathBuf> = walk(&bench.outbox());
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(mode(&results[0]), 0o600);
    let db: Vec<PathBuf> = walk(&bench.config.state_dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("station.db"))
        .collect();
    // On the fleet store (PREREG_TEST_STORE=postgres) there is no database file here.
    assert_eq!(db.is_empty(), bench.config.store.is_some());
    for f in &db {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
}

#[test]
fn a_signing_customization_refuses_unsigned_and_unknown_signer_jobs_and_programs_signed_ones() {
    // The IdP that signs (its public JWKS is the customization's idp_signing_jwks).
    let signer_dir = tempfile::tempdir().unwrap();
    let signer = Idp::open(signer_dir.path()).unwrap();
    signer.signing_key().unwrap();
    let extra = format!(
        "\n[[customization]]\nid = \"SIGNED\"\nproducts = [1]\nidp_signing_jwks = {:?}\n",
        signer.signing_jwks_path()
    );
    let line = Line::prepare(
        &LineSpec {
            slots: 1,
            jobs: 0,
            ..LineSpec::default()
        },
        &extra,
    );
    let keys = StationKeys::load_dir(&line.dir.path().join("keys")).unwrap();
    let opts = |sign: bool| EnrollOptions {
        users: 1,
        product_id: 1,
        customization_id: "SIGNED".into(),
        sign,
        ..EnrollOptions::default()
    };
    // Made with the public transport key alone, and signed by a key the
    // station does not know.
    let unsigned = line
        .idp
        .enroll(&keys.transport_jwks(), &opts(false))
        .unwrap();
    let stranger = line
        .idp
        .enroll(&keys.transport_jwks(), &opts(true))
        .unwrap();
    line.import(&unsigned);
    line.import(&stranger);
    line.run_with(None);
    for (jobs, code) in [
        (&unsigned, "request.unsigned"),
        (&stranger, "jws.kid_unknown"),
    ] {
        let (state, reason) = line.job_state(&jobs[0].shipment_id);
        assert_eq!(state, "refused", "{code}");
        let reason = reason.unwrap();
        assert!(reason.contains(code), "{reason:?} should name {code}");
    }
    assert!(line.untouched_keys());

    // Signed by the configured IdP: programmed and verified at that IdP.
    let signed = signer.enroll(&keys.transport_jwks(), &opts(true)).unwrap();
    line.import(&signed);
    line.run_with(None);
    let results = idp::read_results(&[line.outbox()]).unwrap();
    let ours: Vec<_> = results
        .into_iter()
        .filter(|r| r.shipment_id == signed[0].shipment_id)
        .collect();
    let reports = signer.activate(&line.sign_jwks, &line.roots, &ours, idp::unix_now());
    assert_eq!(reports.len(), 1);
    assert!(reports[0].verified(), "{:?}", reports[0]);
}

#[path = "station_savings.rs"]
mod savings;

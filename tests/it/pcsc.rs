//! Integration tests: keys over PC/SC through a REAL pcscd with vsmartcard's
//! vpcd driver. Run by `scripts/test.sh` via `tests/pcsc/run-pcscd.sh -- ...`,
//! which starts a private pcscd and sets `PREREG_PCSC=1` and
//! `PREREG_PCSC_DIR`. Without `PREREG_PCSC=1` each test prints why it skips.

use prereg_station::cbor::{self, Value};
use prereg_station::ctap2::{
    Client, MakeCredential, Permissions, PubKeyCredParam, RpEntity, SetMinPinLength, StatusCode,
    UserEntity,
};
use prereg_station::ctaphid::KeepaliveStatus;
use prereg_station::pcsc::apdu::{Command, LengthMode, Response};
use prereg_station::pcsc::simcard::SimCard;
use prereg_station::pcsc::vcard::{self, CardBackend, Fault, VirtualCard, VpcdCard};
use prereg_station::pcsc::{
    self, CardChannel, NfcCtap, NfcTiming, PcscCard, PcscError, ReaderEvent,
};
use prereg_station::secret::SecretString;
use prereg_station::sim::{SimConfig, SimKey, TouchMode};
use prereg_station::yubikey::{DeviceInfo, FormFactor, Version};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The vpcd reader the tests use (slot 0).
const READER: &str = "Virtual PCD 00 00";

/// One pcscd, one vpcd slot: the tests take turns.
static PCSCD: Mutex<()> = Mutex::new(());

struct Env {
    _turn: MutexGuard<'static, ()>,
    vpcd: SocketAddr,
    /// Set when run-pcscd.sh owns pcscd, so a test may stop and restart it.
    dir: Option<PathBuf>,
}

fn env(test: &str) -> Option<Env> {
    if std::env::var("PREREG_PCSC").as_deref() != Ok("1") {
        eprintln!("skip {test}: needs a pcscd with the vpcd driver; run tests/pcsc/run-pcscd.sh -- cargo test --test it pcsc");
        return None;
    }
    let turn = PCSCD.lock().unwrap_or_else(|p| p.into_inner());
    let port: u16 = std::env::var("PREREG_VPCD_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(vcard::VPCD_DEFAULT_PORT);
    Some(Env {
        _turn: turn,
        vpcd: SocketAddr::from(([127, 0, 0, 1], port)),
        dir: std::env::var_os("PREREG_PCSC_DIR").map(PathBuf::from),
    })
}

/// Echo authenticator: status 0x00 then the request reversed. A request
/// starting 0xFF waits for a touch, reporting UPNEEDED meanwhile.
struct Echo {
    touched: Arc<AtomicBool>,
}

impl CardBackend for Echo {
    fn ctap(&mut self, request: &[u8], keepalive: &mut dyn FnMut(KeepaliveStatus)) -> Vec<u8> {
        if request.first() == Some(&0xFF) {
            keepalive(KeepaliveStatus::UPNEEDED);
            for _ in 0..2000 {
                if self.touched.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let mut out = vec![0x00];
        out.extend(request.iter().rev());
        out
    }
    fn management_version(&mut self) -> Option<String> {
        Some("5.7.1".into())
    }
    fn read_config(&mut self, page: u8) -> Option<Vec<u8>> {
        // Two pages, so paging is exercised: serial 12345678 on page 0
        // (with "more data"), form factor and firmware on page 1.
        match page {
            0 => Some(vec![
                9, 0x02, 0x04, 0x00, 0xBC, 0x61, 0x4E, 0x10, 0x01, 0x01,
            ]),
            1 => Some(vec![8, 0x04, 0x01, 0x03, 0x05, 0x03, 5, 7, 1]),
            _ => None,
        }
    }
}

fn echo_card(env: &Env) -> (VpcdCard, Arc<AtomicBool>) {
    // pcscd polls vpcd every ~0.4 s: let it notice the previous test's card left.
    pcsc::wait_for_removal(READER, Duration::from_secs(5)).expect("reader empties");
    let touched = Arc::new(AtomicBool::new(false));
    let card = vcard::serve(
        env.vpcd,
        VirtualCard::new(Echo {
            touched: Arc::clone(&touched),
        }),
    );
    assert!(
        card.wait_connected(Duration::from_secs(5)),
        "virtual card did not reach vpcd at {}",
        env.vpcd
    );
    pcsc::wait_for_card(READER, Duration::from_secs(5)).expect("pcscd sees the virtual card");
    (card, touched)
}

fn quick() -> NfcTiming {
    NfcTiming {
        poll_interval: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
    }
}

#[test]
fn pcsc_readers_and_hotplug_events_through_pcscd() {
    let Some(env) = env("pcsc_readers_and_hotplug_events_through_pcscd") else {
        return;
    };
    // The test before may have just stopped its card; pcscd notices within
    // its polling interval (this raced with the `devices … --device SERIAL` test).
    pcsc::wait_for_removal(READER, Duration::from_secs(5)).expect("reader empties");
    let readers = pcsc::list_readers().unwrap();
    let vpcd = readers
        .iter()
        .find(|r| r.name == READER)
        .unwrap_or_else(|| panic!("{READER} not in {readers:?}"));
    assert!(
        !vpcd.card_present,
        "no card before the virtual card connects"
    );

    let mut monitor = pcsc::Monitor::new().unwrap();
    let mut initial = Vec::new();
    while let Some(ev) = monitor.next(Duration::from_millis(300)).unwrap() {
        initial.push(ev);
    }
    assert!(
        initial.contains(&ReaderEvent::ReaderAdded(READER.into())),
        "{initial:?}"
    );

    let (card, _) = echo_card(&env);
    let ev = monitor.next(Duration::from_secs(5)).unwrap();
    let Some(ReaderEvent::CardInserted { reader, atr }) = ev else {
        panic!("expected insertion, got {ev:?}")
    };
    assert_eq!(reader, READER);
    assert_eq!(atr, vcard::contactless_atr());
    let listed = pcsc::list_readers().unwrap();
    assert!(listed
        .iter()
        .any(|r| r.name == READER && r.card_present && r.atr.as_deref() == Some(&atr[..])));

    card.remove();
    let ev = monitor.next(Duration::from_secs(5)).unwrap();
    assert_eq!(ev, Some(ReaderEvent::CardRemoved(READER.into())));
    assert!(matches!(
        PcscCard::connect(READER),
        Err(PcscError::NoCard(_))
    ));
    card.stop();
}

#[test]
fn pcsc_ctap_messages_chain_poll_and_return_long_responses() {
    let Some(env) = env("pcsc_ctap_messages_chain_poll_and_return_long_responses") else {
        return;
    };
    let (card, touched) = echo_card(&env);
    let request: Vec<u8> = (0..1800u32).map(|i| (i * 7 % 256) as u8).collect();
    let expected: Vec<u8> = std::iter::once(0)
        .chain(request.iter().rev().copied())
        .collect();
    for mode in [LengthMode::Short, LengthMode::Extended] {
        let mut dev = NfcCtap::open(READER, mode).unwrap().with_timing(quick());
        assert_eq!(
            dev.cbor(&request, &mut |_| {}).unwrap(),
            expected,
            "{mode:?}"
        );
    }

    // UPNEEDED through SW 9100 polling reaches the callback; the touch ends it.
    let mut dev = NfcCtap::open(READER, LengthMode::Short)
        .unwrap()
        .with_timing(quick());
    let mut seen = Vec::new();
    let rsp = dev
        .cbor(&[0xFF, 0x01], &mut |s| {
            seen.push(s);
            if seen.len() == 3 {
                touched.store(true, Ordering::SeqCst);
            }
        })
        .unwrap();
    assert_eq!(rsp, vec![0x00, 0x01, 0xFF]);
    assert!(
        seen.len() >= 3 && seen.iter().all(|s| *s == KeepaliveStatus::UPNEEDED),
        "{seen:?}"
    );
    card.stop();
}

#[test]
fn pcsc_device_info_through_the_management_application() {
    let Some(env) = env("pcsc_device_info_through_the_management_application") else {
        return;
    };
    let (card, _) = echo_card(&env);
    // Two hand-written pages: paging and the raw TLVs.
    let raw = pcsc::management::device_info(READER).unwrap();
    assert_eq!(raw.version, "5.7.1");
    assert_eq!(raw.tlv(0x02), Some(&12_345_678u32.to_be_bytes()[..]));
    assert_eq!(raw.tlv(0x04), Some(&[0x03][..]));
    assert_eq!(raw.tlv(0x05), Some(&[5, 7, 1][..]));
    // Parsed by the yubikey module.
    let info = pcsc::device_info(READER).unwrap();
    assert_eq!(info.serial, Some(12_345_678));
    assert_eq!(info.form_factor, FormFactor(3));
    assert_eq!(info.firmware, Some(Version::new(5, 7, 1)));
    card.stop();
}

#[test]
fn pcsc_faults_become_typed_errors() {
    let Some(env) = env("pcsc_faults_become_typed_errors") else {
        return;
    };
    let (card, _) = echo_card(&env);

    // Malformed: a one-byte answer has no status word.
    let mut dev = NfcCtap::open(READER, LengthMode::Short)
        .unwrap()
        .with_timing(quick());
    card.inject(Fault::RawAnswer(vec![0x90]));
    let err = dev.cbor(&[0x04], &mut |_| {}).unwrap_err();
    assert!(matches!(err, PcscError::Malformed(_)), "{err:?}");

    // An unexpected status word is reported, not guessed at.
    card.inject(Fault::RawAnswer(vec![0x6F, 0x00]));
    let err = dev.cbor(&[0x04], &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            PcscError::Status {
                sw: pcsc::StatusWord::NO_PRECISE_DIAGNOSIS,
                ..
            }
        ),
        "{err:?}"
    );

    // A card stuck in "processing" (9100 forever) hits the deadline.
    let mut slow = NfcCtap::open(READER, LengthMode::Short)
        .unwrap()
        .with_timing(NfcTiming {
            poll_interval: Duration::from_millis(10),
            timeout: Duration::from_millis(200),
        });
    for _ in 0..40 {
        card.inject(Fault::RawAnswer(vec![0x01, 0x91, 0x00]));
    }
    let err = slow.cbor(&[0x04], &mut |_| {}).unwrap_err();
    assert!(matches!(err, PcscError::Timeout(_)), "{err:?}");
    drop(slow);
    card.stop();

    // Card removed mid-exchange: the card drops off while a command is in flight.
    let (card, _) = echo_card(&env);
    let mut dev = NfcCtap::open(READER, LengthMode::Short)
        .unwrap()
        .with_timing(quick());
    card.inject(Fault::RemoveOnNextApdu);
    let err = dev.cbor(&[0x04; 600], &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, PcscError::CardRemoved(ref r) if r == READER),
        "{err:?}"
    );
    drop(dev);
    card.stop();

    // Taken off the reader while the key waits for a touch (9100 polling).
    let (card, _) = echo_card(&env);
    let card = Arc::new(card);
    let mut dev = NfcCtap::open(READER, LengthMode::Short)
        .unwrap()
        .with_timing(quick());
    let remover = Arc::clone(&card);
    let mut polls = 0;
    let err = dev
        .cbor(&[0xFF], &mut |_| {
            polls += 1;
            if polls == 3 {
                remover.remove();
            }
        })
        .unwrap_err();
    assert!(
        matches!(err, PcscError::CardRemoved(ref r) if r == READER),
        "{err:?}"
    );
    assert!(polls >= 3);
}

#[test]
fn pcsc_reader_unplugged_is_a_typed_error() {
    let Some(env) = env("pcsc_reader_unplugged_is_a_typed_error") else {
        return;
    };
    let Some(dir) = env.dir.clone() else {
        eprintln!("skip pcsc_reader_unplugged_is_a_typed_error: pcscd not owned by run-pcscd.sh (PREREG_PCSC_DIR unset)");
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pcsc/run-pcscd.sh");
    let (card, _) = echo_card(&env);
    let mut raw = PcscCard::connect(READER).unwrap();
    let select = Command::select(prereg_station::pcsc::apdu::aid::FIDO)
        .encode(LengthMode::Short)
        .unwrap();
    assert!(Response::parse(&raw.transmit(&select).unwrap())
        .unwrap()
        .sw
        .is_success());

    // The vpcd reader lives inside pcscd: stopping pcscd unplugs it.
    let stop = std::process::Command::new(&script)
        .arg("stop")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(stop.success());
    let err = raw.transmit(&select).unwrap_err();
    assert!(
        matches!(err, PcscError::ReaderGone(ref r) if r == READER),
        "{err:?}"
    );
    assert!(matches!(pcsc::list_readers(), Err(PcscError::NoService(_))));
    drop(raw);

    // Plugged back in: the same card is found again.
    let start = std::process::Command::new(&script)
        .arg("start")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(start.success());
    pcsc::wait_for_card(READER, Duration::from_secs(10)).unwrap();
    let mut dev = NfcCtap::open(READER, LengthMode::Short).unwrap();
    assert_eq!(dev.cbor(&[1, 2], &mut |_| {}).unwrap(), vec![0, 2, 1]);
    card.stop();
}

#[test]
fn pcsc_python_fido2_talks_to_the_virtual_card() {
    let Some(env) = env("pcsc_python_fido2_talks_to_the_virtual_card") else {
        return;
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    let has_peer = std::process::Command::new(&python)
        .args(["-c", "import fido2.pcsc, smartcard"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_peer {
        eprintln!("skip pcsc_python_fido2_talks_to_the_virtual_card: needs python-fido2 and pyscard (scripts/setup.sh --with-python)");
        return;
    }
    let (card, touched) = echo_card(&env);
    // The touch comes from "the rig" while python-fido2 polls with 9100.
    let toucher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        touched.store(true, Ordering::SeqCst);
    });
    let out = std::process::Command::new(&python)
        .arg(root.join("tests/pcsc/fido2_pcsc_check.py"))
        .arg(READER)
        .output()
        .unwrap();
    toucher.join().unwrap();
    assert!(
        out.status.success(),
        "python-fido2 check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    card.stop();
}

/// A YubiKey 5C NFC on firmware 5.7.1 as its management application describes it.
fn yubikey_5c_nfc() -> DeviceInfo {
    DeviceInfo {
        serial: Some(31_337_001),
        form_factor: FormFactor(3),
        firmware: Some(Version::new(5, 7, 1)),
        ..Default::default()
    }
}

#[test]
fn pcsc_ctap2_client_and_device_info_over_a_simulated_key() {
    let Some(env) = env("pcsc_ctap2_client_and_device_info_over_a_simulated_key") else {
        return;
    };
    // A getInfo-only core: enough to show the unchanged CTAP 2.1 client
    // parsing a reply that crossed pcscd (the full flow needs the simulator).
    let get_info = cbor::encode(&Value::map([
        (
            1,
            Value::Array(vec![
                Value::Text("FIDO_2_0".into()),
                Value::Text("FIDO_2_1".into()),
            ]),
        ),
        (3, Value::Bytes(vec![0xA2; 16])),
        (5, Value::Integer(1200)),
    ]));
    let core = move |req: &[u8], _: &mut dyn FnMut(KeepaliveStatus)| match req.first() {
        Some(0x04) => [&[0u8][..], &get_info].concat(),
        _ => vec![0x01], // CTAP1_ERR_INVALID_COMMAND
    };
    let key = vcard::SimulatedKey::new(core, yubikey_5c_nfc());
    pcsc::wait_for_removal(READER, Duration::from_secs(5)).unwrap();
    let card = vcard::serve(env.vpcd, VirtualCard::new(key));
    assert!(card.wait_connected(Duration::from_secs(5)));
    pcsc::wait_for_card(READER, Duration::from_secs(5)).unwrap();

    let mut client = Client::new(NfcCtap::open(READER, LengthMode::Short).unwrap());
    let info = client.get_info().unwrap();
    assert_eq!(info.versions, vec!["FIDO_2_0", "FIDO_2_1"]);
    assert_eq!(info.aaguid, [0xA2; 16]);
    assert_eq!(info.max_msg_size, Some(1200));
    let err = client.reset(&mut |_| {}).unwrap_err();
    assert_eq!(err.status().map(|s| s.0), Some(0x01), "{err:?}");
    drop(client);

    let dev = pcsc::device_info(READER).unwrap();
    assert_eq!(dev, yubikey_5c_nfc());
    card.stop();
}

fn make_credential(rp: &str, user: u8) -> MakeCredential {
    MakeCredential {
        client_data_hash: [user; 32],
        rp: RpEntity {
            id: rp.into(),
            name: Some(rp.into()),
        },
        user: UserEntity {
            id: vec![user; 16],
            name: Some(format!("user{user}")),
            display_name: None,
        },
        pub_key_cred_params: vec![PubKeyCredParam::es256()],
        exclude_list: vec![],
        extensions: Default::default(),
        rk: true,
        enterprise_attestation: None,
    }
}

#[test]
fn pcsc_programming_flow_on_a_simulated_5_7_key_through_pcscd() {
    let Some(env) = env("pcsc_programming_flow_on_a_simulated_5_7_key_through_pcscd") else {
        return;
    };
    // YubiKey 5C NFC (product 29) on firmware 5.7; the rig touches it.
    let cfg = SimConfig::builtin("yubikey-5.7", 29)
        .unwrap()
        .serial(27_182_818)
        .touch(TouchMode::Rig);
    let expected_info = cfg.device_info();
    let sim = SimCard::new(SimKey::new(cfg).unwrap()).unwrap();
    let control = sim.control();
    pcsc::wait_for_removal(READER, Duration::from_secs(5)).unwrap();
    let card = vcard::serve(env.vpcd, VirtualCard::new(sim));
    assert!(card.wait_connected(Duration::from_secs(5)));
    pcsc::wait_for_card(READER, Duration::from_secs(5)).unwrap();

    // Device info through the management application.
    let info = pcsc::device_info(READER).unwrap();
    assert_eq!(info, expected_info);
    assert_eq!(info.serial, Some(27_182_818));
    assert_eq!(
        info.firmware,
        Some(Version::new(5, 7, info.firmware.unwrap().patch))
    );
    assert!(info.has_nfc());

    let mut client = Client::new(NfcCtap::open(READER, LengthMode::Short).unwrap());
    let gi = client.get_info().unwrap();
    assert!(
        gi.versions.iter().any(|v| v == "FIDO_2_1"),
        "{:?}",
        gi.versions
    );
    assert_eq!(gi.pin_set(), Some(false));
    let protocol = gi.preferred_pin_protocol().unwrap();
    let pin = SecretString::new("572913".into());
    client.set_pin(protocol, &pin).unwrap();

    // makeCredential rk: UPNEEDED arrives as SW 9100 polls; the rig touches.
    let mut upneeded = 0;
    for (rp, user) in [("a.example", 1u8), ("b.example", 2)] {
        let token = client
            .get_pin_uv_auth_token_using_pin_with_permissions(
                protocol,
                &pin,
                Permissions::MC,
                Some(rp),
            )
            .unwrap();
        let resp = client
            .make_credential(&make_credential(rp, user), Some(&token), &mut |s| {
                if s == KeepaliveStatus::UPNEEDED {
                    upneeded += 1;
                    control.touch();
                }
            })
            .unwrap();
        let ad = resp.authenticator_data().unwrap();
        assert_eq!(ad.attested.unwrap().aaguid, control.aaguid());
    }
    assert!(upneeded >= 2, "UPNEEDED seen {upneeded} times");
    assert_eq!(control.credentials().len(), 2);

    // Credential management: both resident credentials are listed.
    let cm = gi
        .credential_management_command()
        .expect("5.7 supports credential management");
    let token = client
        .get_pin_uv_auth_token_using_pin_with_permissions(protocol, &pin, Permissions::CM, None)
        .unwrap();
    let meta = client.get_creds_metadata(cm, &token).unwrap();
    assert_eq!(meta.existing_resident_credentials_count, 2);
    let mut rps: Vec<String> = client
        .enumerate_rps(cm, &token)
        .unwrap()
        .into_iter()
        .map(|r| r.rp.id)
        .collect();
    rps.sort();
    assert_eq!(rps, vec!["a.example", "b.example"]);

    // setMinPINLength with forceChangePin, last (SPEC §7).
    let token = client
        .get_pin_uv_auth_token_using_pin_with_permissions(protocol, &pin, Permissions::ACFG, None)
        .unwrap();
    let params = SetMinPinLength {
        new_min_pin_length: Some(6),
        min_pin_length_rpids: None,
        force_change_pin: true,
    };
    client.set_min_pin_length(&params, Some(&token)).unwrap();
    let after = client.get_info().unwrap();
    assert!(after.force_pin_change);
    assert_eq!(after.min_pin_length, 6);
    assert!(control.pin_status().force_pin_change);
    // With forcePINChange set, the PIN no longer yields tokens.
    let err = client
        .get_pin_uv_auth_token_using_pin_with_permissions(
            protocol,
            &pin,
            Permissions::MC,
            Some("a.example"),
        )
        .unwrap_err();
    // PIN_INVALID, as a real YubiKey answers (research §2.3).
    assert_eq!(err.status(), Some(StatusCode::PIN_INVALID), "{err:?}");
    drop(client);
    card.stop();
}

/// A station with one `pcsc:READER` slot and `jobs` imported jobs.
struct NfcLine {
    _dir: tempfile::TempDir,
    config: prereg_station::config::Config,
    store: prereg_station::store::Store,
    idp: prereg_station::idp::Idp,
    keys: prereg_station::jose::keys::StationKeys,
    ca: PathBuf,
}

impl NfcLine {
    fn new(jobs: usize) -> NfcLine {
        use prereg_station::cli::jobs::{import_file, open_store};
        use prereg_station::idp::{EnrollOptions, Idp};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let keys = prereg_station::jose::keys::StationKeys::generate(&d.join("keys")).unwrap();
        let ca = d.join("ca.pem");
        std::fs::write(&ca, prereg_station::sim::attestation::root_pem(0).unwrap()).unwrap();
        let text = format!(
            "[station]\nid = \"nfc\"\nstate_dir = {:?}\nkeys_dir = {:?}\noutbox_dir = {:?}\nattestation_roots = [{:?}]\ntouch_timeout_secs = 60\n\n[[customization]]\nid = \"C19881\"\nmin_firmware = \"5.7.0\"\nproducts = [1]\n\n[[slot]]\ndevice = \"pcsc:{READER}\"\n",
            d.join("state"),
            d.join("keys"),
            d.join("outbox"),
            ca
        );
        let config = prereg_station::config::Config::parse(&text).unwrap();
        let idp = Idp::open(&d.join("idp")).unwrap();
        let shipments = idp
            .enroll(
                &keys.transport_jwks(),
                &EnrollOptions {
                    users: jobs,
                    ..EnrollOptions::default()
                },
            )
            .unwrap();
        let lines: Vec<String> = shipments
            .iter()
            .map(|s| serde_json::to_string(s).unwrap())
            .collect();
        let path = d.join("jobs.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let store = open_store(&config).unwrap();
        import_file(&store, &config, &path).unwrap();
        NfcLine {
            _dir: dir,
            config,
            store,
            idp,
            keys,
            ca,
        }
    }

    fn start(&self) -> prereg_station::station::Station {
        use prereg_station::station::{app, Station};
        Station::start(app::setup(self.config.clone(), self.store.clone()).unwrap()).unwrap()
    }

    fn activate(&self) -> Vec<prereg_station::idp::ActivationReport> {
        use prereg_station::idp;
        let results = idp::read_results(std::slice::from_ref(&self.config.outbox_dir)).unwrap();
        let roots = prereg_station::webauthn::TrustRoots::from_files(&[&self.ca]).unwrap();
        self.idp
            .activate(&self.keys.signing_jwks(), &roots, &results, idp::unix_now())
    }
}

/// A simulated YubiKey 5 NFC as a contactless card in the vpcd reader.
fn nfc_key(
    env: &Env,
    serial: u32,
    touch: TouchMode,
) -> (VpcdCard, prereg_station::sim::SimControl) {
    let cfg = SimConfig::builtin("yubikey-5.7", 1)
        .unwrap()
        .serial(serial)
        .ca_seed(0)
        .touch(touch);
    let sim = SimCard::new(SimKey::new(cfg).unwrap()).unwrap();
    let control = sim.control();
    let card = vcard::serve(env.vpcd, VirtualCard::new(sim));
    assert!(card.wait_connected(Duration::from_secs(5)));
    pcsc::wait_for_card(READER, Duration::from_secs(5)).unwrap();
    (card, control)
}

fn wait_until(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The station's whole recipe on a key behind a PC/SC reader: a slot
/// configured as `pcsc:READER`, the simulated YubiKey as a contactless card
/// through the real pcscd, every result verified by the reference IdP.
#[test]
fn station_programs_a_key_in_a_pcsc_reader() {
    let Some(env) = env("station_programs_a_key_in_a_pcsc_reader") else {
        return;
    };
    pcsc::wait_for_removal(READER, Duration::from_secs(5)).unwrap();
    let (card, control) = nfc_key(&env, 27_000_001, TouchMode::Auto);
    let line = NfcLine::new(1);
    let station = line.start();
    wait_until("the job delivered", Duration::from_secs(90), || {
        station.drained()
    });
    station.shutdown();
    card.stop();

    let reports = line.activate();
    assert_eq!(reports.len(), 1, "jobs: {:?}", line.store.list(5));
    assert!(reports[0].verified(), "{:?}", reports[0].failures);
    assert_eq!(reports[0].serial_number.as_deref(), Some("27000001"));
    let status = control.pin_status();
    assert!(status.pin_set && status.force_pin_change);
}

/// A card taken off the reader mid-programming (after its PIN was set, while
/// makeCredential waits for presence) is quarantined by serial, and its job
/// goes back to the queue and is programmed on the next card; one result.
#[test]
fn card_removed_mid_programming_is_quarantined_and_the_job_requeued() {
    let Some(env) = env("card_removed_mid_programming_is_quarantined_and_the_job_requeued") else {
        return;
    };
    pcsc::wait_for_removal(READER, Duration::from_secs(5)).unwrap();
    // Touch mode `rig` and no rig: makeCredential waits for a touch that never
    // comes, which holds the key at a known point after setPIN.
    let (card, first) = nfc_key(&env, 27_000_002, TouchMode::Rig);
    let line = NfcLine::new(1);
    let station = line.start();
    wait_until(
        "makeCredential waiting for presence",
        Duration::from_secs(60),
        || first.waiting_for_touch(),
    );
    assert!(
        first.pin_status().pin_set,
        "setPIN came before makeCredential"
    );
    card.stop();
    pcsc::wait_for_removal(READER, Duration::from_secs(5)).unwrap();
    wait_until(
        "the first card quarantined",
        Duration::from_secs(60),
        || line.store.is_quarantined("27000002").unwrap_or(false),
    );
    let (card, second) = nfc_key(&env, 27_000_003, TouchMode::Auto);
    wait_until("the job delivered", Duration::from_secs(90), || {
        station.drained()
    });
    station.shutdown();
    card.stop();

    let reports = line.activate();
    assert_eq!(reports.len(), 1, "delivered once: {:?}", line.store.list(5));
    assert!(reports[0].verified(), "{:?}", reports[0].failures);
    assert_eq!(reports[0].serial_number.as_deref(), Some("27000003"));
    let q = line.store.quarantined().unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].serial, "27000002");
    assert!(second.pin_status().force_pin_change);
    assert_eq!(
        first.credentials().len(),
        0,
        "the removed card got no credential"
    );
}

/// `devices list` shows PC/SC readers and whether a card is in them.
#[test]
fn devices_list_shows_readers_and_cards() {
    let Some(env) = env("devices_list_shows_readers_and_cards") else {
        return;
    };
    let list = || {
        let out = std::process::Command::new(crate::util::station_bin())
            .args(["devices", "list", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["pcsc"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["device"] == format!("pcsc:{READER}"))
            .cloned()
            .expect("the virtual reader is listed")
    };
    pcsc::wait_for_removal(READER, Duration::from_secs(5)).unwrap();
    assert_eq!(list()["card_present"], false);
    let (card, _) = echo_card(&env);
    assert_eq!(list()["card_present"], true);
    card.stop();
}

/// Issue #17 item 11 over PC/SC: `devices list` shows the card's serial,
/// `devices info` and `devices reset` find the key by it, and reset works
/// over CTAP-over-PC/SC as over HID.
#[test]
fn devices_find_a_key_in_a_reader_by_serial_and_reset_it() {
    let Some(env) = env("devices_find_a_key_in_a_reader_by_serial_and_reset_it") else {
        return;
    };
    pcsc::wait_for_removal(READER, Duration::from_secs(5)).unwrap();
    let (card, _control) = nfc_key(&env, 27_500_001, TouchMode::Auto);
    let station = |args: &[&str]| {
        let out = std::process::Command::new(crate::util::station_bin())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let list: serde_json::Value =
        serde_json::from_str(&station(&["devices", "list", "--json"])).unwrap();
    assert!(
        list["keys"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({
                "device": format!("pcsc:{READER}"),
                "serial": 27_500_001
            })),
        "{list}"
    );
    let info: serde_json::Value = serde_json::from_str(&station(&[
        "devices", "info", "--json", "--device", "27500001",
    ]))
    .unwrap();
    assert_eq!(info["device"], format!("pcsc:{READER}"));
    assert_eq!(info["device_info"]["serial"], 27_500_001);
    let reset = station(&["devices", "reset", "--yes", "--device", "27500001"]);
    assert!(
        reset.contains(&format!("Key at pcsc:{READER} reset")),
        "{reset}"
    );
    card.stop();
    pcsc::wait_for_removal(READER, Duration::from_secs(5)).expect("reader empties");
}

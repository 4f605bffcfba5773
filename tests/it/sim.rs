//! Integration tests: the simulated YubiKey driven by the host stack
//! (HidChannel + ctap2::Client) in-process, over its public API.

use prereg_station::ctap2::{
    Client, CredentialDescriptor, CtapCommand, MakeCredential, MakeCredentialExtensions,
    Permissions, PubKeyCredParam, RpEntity, SetMinPinLength, StatusCode, UserEntity,
};
use prereg_station::ctaphid::{HidChannel, Timeouts};
use prereg_station::pin::PinProtocol;
use prereg_station::secret::SecretString;
use prereg_station::sim::{FaultPlan, ManualClock, SimConfig, SimControl, SimKey, TouchMode};
use prereg_station::transport::{Transport, TransportError};
use prereg_station::webauthn::{self, Expected, TrustRoots};
use std::sync::Arc;
use std::time::Duration;

type Dev = Client<HidChannel<SimKey>>;

fn key(profile: &str, clock: Arc<ManualClock>, touch: TouchMode) -> (Dev, SimControl) {
    let cfg = SimConfig::builtin(profile, 1)
        .unwrap()
        .serial(12345678)
        .seed(7)
        .ca_seed(7)
        .touch(touch);
    let key = SimKey::with_clock(cfg, clock).unwrap();
    let control = key.control();
    let chan = HidChannel::open(key, Timeouts::short()).unwrap();
    (Client::new(chan), control)
}

fn pin(s: &str) -> SecretString {
    SecretString::new(s.to_string())
}

fn request(rp: &str, user: u8, cdh: [u8; 32]) -> MakeCredential {
    MakeCredential {
        client_data_hash: cdh,
        rp: RpEntity {
            id: rp.into(),
            name: Some("RP".into()),
        },
        user: UserEntity {
            id: vec![user; 8],
            name: Some(format!("user{user}")),
            display_name: Some(format!("User {user}")),
        },
        pub_key_cred_params: vec![PubKeyCredParam::es256()],
        exclude_list: vec![],
        extensions: MakeCredentialExtensions {
            cred_protect: Some(3),
            min_pin_length: true,
            hmac_secret: false,
        },
        rk: true,
        enterprise_attestation: None,
    }
}

fn status(e: prereg_station::ctap2::CtapError) -> StatusCode {
    e.status().unwrap_or_else(|| panic!("not a status: {e}"))
}

/// SPEC §7 steps 2–10 against the 5.7 profile, ending in forcePINChange.
#[test]
fn programming_recipe_on_yubikey_5_7() {
    let clock = Arc::new(ManualClock::default());
    let (mut c, control) = key("yubikey-5.7", clock, TouchMode::Auto);
    let info = c.get_info().unwrap();
    assert_eq!(info.option("clientPin"), Some(false));
    assert_eq!(info.remaining_discoverable_credentials, Some(100));
    assert_eq!(info.firmware_version, Some(0x050701));
    let p2 = PinProtocol::Two;
    c.set_pin(p2, &pin("482913")).unwrap();
    assert!(c.get_info().unwrap().option("clientPin").unwrap());
    let cdh = [9u8; 32];
    let mut ids = Vec::new();
    for user in 1..=2u8 {
        let tok = c
            .get_pin_uv_auth_token_using_pin_with_permissions(
                p2,
                &pin("482913"),
                Permissions::MC,
                Some("example.com"),
            )
            .unwrap();
        let r = c
            .make_credential(&request("example.com", user, cdh), Some(&tok), &mut |_| {})
            .unwrap();
        // The token lost mc after the UP-bearing makeCredential.
        let again = c.make_credential(&request("example.com", 9, cdh), Some(&tok), &mut |_| {});
        assert_eq!(status(again.unwrap_err()), StatusCode::PIN_AUTH_INVALID);
        // Attestation chains to the simulator root and carries the AAGUID.
        let roots =
            TrustRoots::from_pem(prereg_station::sim::ca_root_pem(7).unwrap().as_bytes()).unwrap();
        let obj = webauthn::AttestationObject::parse(&r.attestation_object()).unwrap();
        let verified = webauthn::verify_attestation_parts(
            &obj,
            &Expected {
                rp_id: "example.com",
                client_data_hash: &cdh,
                require_uv: true,
                cred_protect: Some(3),
                allow_none: false,
                now: 1_800_000_000,
            },
            &roots,
        )
        .unwrap();
        let _ = &verified;
        ids.push(
            r.authenticator_data()
                .unwrap()
                .attested
                .unwrap()
                .credential_id,
        );
    }
    // Credential management with a cm token.
    let tok = c
        .get_pin_uv_auth_token_using_pin_with_permissions(p2, &pin("482913"), Permissions::CM, None)
        .unwrap();
    let cmd = CtapCommand::CREDENTIAL_MANAGEMENT;
    let meta = c.get_creds_metadata(cmd, &tok).unwrap();
    assert_eq!(meta.existing_resident_credentials_count, 2);
    assert_eq!(meta.max_possible_remaining_resident_credentials_count, 98);
    let rps = c.enumerate_rps(cmd, &tok).unwrap();
    assert_eq!(rps.len(), 1);
    let creds = c
        .enumerate_credentials(cmd, &rps[0].rp_id_hash, &tok)
        .unwrap();
    assert_eq!(creds.len(), 2);
    let mut listed: Vec<_> = creds.iter().map(|c| c.credential_id.id.clone()).collect();
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
    // Last: forceChangePin with a new minimum.
    let tok = c
        .get_pin_uv_auth_token_using_pin_with_permissions(
            p2,
            &pin("482913"),
            Permissions::ACFG,
            None,
        )
        .unwrap();
    c.set_min_pin_length(
        &SetMinPinLength {
            new_min_pin_length: Some(6),
            min_pin_length_rpids: None,
            force_change_pin: true,
        },
        Some(&tok),
    )
    .unwrap();
    let info = c.get_info().unwrap();
    assert!(info.force_pin_change);
    assert_eq!(info.min_pin_length, 6);
    // No token until the PIN is changed (CTAP 2.1 §6.5.5.7).
    let e = c
        .get_pin_uv_auth_token_using_pin_with_permissions(
            p2,
            &pin("482913"),
            Permissions::MC,
            Some("x"),
        )
        .unwrap_err();
    assert_eq!(status(e), StatusCode::PIN_POLICY_VIOLATION);
    // Same PIN refused, short PIN refused, a new one accepted.
    assert_eq!(
        status(
            c.change_pin(p2, &pin("482913"), &pin("482913"))
                .unwrap_err()
        ),
        StatusCode::PIN_POLICY_VIOLATION
    );
    assert_eq!(
        status(c.change_pin(p2, &pin("482913"), &pin("97531")).unwrap_err()),
        StatusCode::PIN_POLICY_VIOLATION
    );
    c.change_pin(p2, &pin("482913"), &pin("970531")).unwrap();
    assert!(!c.get_info().unwrap().force_pin_change);
    let st = control.pin_status();
    assert!(st.pin_set && !st.force_pin_change && st.retries == 8);
    assert_eq!(control.credentials().len(), 2);
    assert_eq!(control.credentials()[0].cred_protect, 3);
}

#[test]
fn pin_retries_block_per_power_cycle_and_in_total() {
    let clock = Arc::new(ManualClock::default());
    let (mut c, control) = key("yubikey-5.7", clock, TouchMode::Auto);
    let p = PinProtocol::One;
    assert_eq!(
        status(c.get_pin_retries(p).unwrap_err()),
        StatusCode::PIN_NOT_SET
    );
    c.set_pin(p, &pin("135790")).unwrap();
    let wrong = |c: &mut Dev| status(c.get_pin_token(p, &pin("000001")).unwrap_err());
    assert_eq!(wrong(&mut c), StatusCode::PIN_INVALID);
    assert_eq!(wrong(&mut c), StatusCode::PIN_INVALID);
    assert_eq!(wrong(&mut c), StatusCode::PIN_AUTH_BLOCKED);
    assert_eq!(wrong(&mut c), StatusCode::PIN_AUTH_BLOCKED);
    let r = c.get_pin_retries(p).unwrap();
    assert_eq!((r.retries, r.power_cycle_state), (5, Some(true)));
    // Power cycle, then the right PIN restores 8.
    control.power_cycle();
    let mut c = Client::new(HidChannel::open(control.transport(), Timeouts::short()).unwrap());
    c.get_pin_token(p, &pin("135790")).unwrap();
    assert_eq!(c.get_pin_retries(p).unwrap().retries, 8);
    // Eight wrong in total (power cycling every three) blocks the PIN.
    let mut last = StatusCode::SUCCESS;
    for i in 0..8 {
        if i % 3 == 0 && i > 0 {
            control.power_cycle();
            c = Client::new(HidChannel::open(control.transport(), Timeouts::short()).unwrap());
        }
        last = wrong(&mut c);
    }
    assert_eq!(last, StatusCode::PIN_BLOCKED);
    assert_eq!(
        status(c.get_pin_token(p, &pin("135790")).unwrap_err()),
        StatusCode::PIN_BLOCKED
    );
    assert_eq!(control.pin_status().retries, 0);
}

#[test]
fn fido_2_1_pre_quirks_on_5_4() {
    let clock = Arc::new(ManualClock::default());
    let (mut c, _control) = key("yubikey-5.4", clock, TouchMode::Auto);
    let info = c.get_info().unwrap();
    assert!(info.has_version("FIDO_2_1_PRE") && !info.has_version("FIDO_2_1"));
    assert_eq!(info.option("authnrCfg"), None);
    let e = c
        .set_min_pin_length(&SetMinPinLength::default(), None)
        .unwrap_err();
    assert_eq!(status(e), StatusCode::INVALID_COMMAND);
    c.set_pin(PinProtocol::Two, &pin("482913")).unwrap();
    let e = c
        .get_pin_uv_auth_token_using_pin_with_permissions(
            PinProtocol::Two,
            &pin("482913"),
            Permissions::MC,
            Some("a"),
        )
        .unwrap_err();
    assert_eq!(status(e), StatusCode::INVALID_SUBCOMMAND);
    // Legacy token works for mc and for credential management 0x41.
    let tok = c.get_pin_token(PinProtocol::Two, &pin("482913")).unwrap();
    c.make_credential(&request("example.com", 1, [1; 32]), Some(&tok), &mut |_| {})
        .unwrap();
    let tok = c.get_pin_token(PinProtocol::Two, &pin("482913")).unwrap();
    let m = c
        .get_creds_metadata(CtapCommand::CREDENTIAL_MANAGEMENT_PREVIEW, &tok)
        .unwrap();
    assert_eq!(m.existing_resident_credentials_count, 1);
    assert_eq!(m.max_possible_remaining_resident_credentials_count, 24);
    let e = c
        .get_creds_metadata(CtapCommand::CREDENTIAL_MANAGEMENT, &tok)
        .unwrap_err();
    assert_eq!(status(e), StatusCode::INVALID_COMMAND);
}

#[test]
fn rig_touch_keepalives_timeouts_and_reset_window() {
    let clock = Arc::new(ManualClock::default());
    let (mut c, control) = key("yubikey-5.7", clock.clone(), TouchMode::Rig);
    // A touch from the rig while the key asks for it completes makeCredential.
    let mut keepalives = 0;
    let ctl = control.clone();
    c.make_credential(&request("example.com", 1, [2; 32]), None, &mut |s| {
        keepalives += 1;
        assert_eq!(s.0, 2, "UPNEEDED");
        ctl.touch();
    })
    .unwrap();
    assert!(keepalives >= 1);
    // Nobody touches: the clock runs past 30 s and the key gives up.
    let clk = clock.clone();
    let e = c
        .make_credential(&request("example.com", 2, [2; 32]), None, &mut |_| {
            clk.advance(Duration::from_secs(31))
        })
        .unwrap_err();
    assert_eq!(status(e), StatusCode::USER_ACTION_TIMEOUT);
    // Reset is refused 10 s after power-up, allowed (with touch) after a power cycle.
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        status(c.reset(&mut |_| {}).unwrap_err()),
        StatusCode::NOT_ALLOWED
    );
    control.power_cycle();
    let mut c = Client::new(HidChannel::open(control.transport(), Timeouts::short()).unwrap());
    let ctl = control.clone();
    c.reset(&mut |_| ctl.touch()).unwrap();
    assert!(control.credentials().is_empty());
}

#[test]
fn store_full_exclude_list_and_assertions() {
    let clock = Arc::new(ManualClock::default());
    let (mut c, control) = key("yubikey-5.7", clock, TouchMode::Auto);
    let mut req = request("a.example", 1, [3; 32]);
    req.extensions.cred_protect = None;
    let r = c.make_credential(&req, None, &mut |_| {}).unwrap();
    let id = r
        .authenticator_data()
        .unwrap()
        .attested
        .unwrap()
        .credential_id;
    // Excluded.
    let mut again = request("a.example", 2, [3; 32]);
    again.exclude_list = vec![CredentialDescriptor::public_key(id.clone())];
    assert_eq!(
        status(c.make_credential(&again, None, &mut |_| {}).unwrap_err()),
        StatusCode::CREDENTIAL_EXCLUDED
    );
    // Discoverable assertion.
    let ga = prereg_station::ctap2::GetAssertion {
        rp_id: "a.example".into(),
        client_data_hash: [4; 32],
        allow_list: vec![],
        up: None,
    };
    let a = c.get_assertion(&ga, None, &mut |_| {}).unwrap();
    assert_eq!(a.credential.unwrap().id, id);
    // Store full fault.
    control.set_faults(FaultPlan {
        store_full: true,
        ..FaultPlan::default()
    });
    assert_eq!(
        status(
            c.make_credential(&request("b.example", 3, [3; 32]), None, &mut |_| {})
                .unwrap_err()
        ),
        StatusCode::KEY_STORE_FULL
    );
    assert_eq!(
        c.get_info().unwrap().remaining_discoverable_credentials,
        Some(0)
    );
}

#[test]
fn unplug_fault_and_replug() {
    let clock = Arc::new(ManualClock::default());
    let (mut c, control) = key("yubikey-5.7", clock, TouchMode::Auto);
    // INIT was message 0; getInfo is 1; unplug on message 2.
    control.set_faults(FaultPlan {
        unplug_at_command: Some(2),
        ..FaultPlan::default()
    });
    c.get_info().unwrap();
    assert!(c.get_info().is_err());
    assert!(!control.is_present());
    let mut t = control.transport();
    assert!(matches!(
        t.send(&[0; 64]),
        Err(TransportError::Disconnected)
    ));
    control.plug();
    control.set_faults(FaultPlan::default());
    let mut c = Client::new(HidChannel::open(control.transport(), Timeouts::short()).unwrap());
    c.get_info().unwrap();
}

#[test]
fn read_config_reports_serial_and_form_factor() {
    let clock = Arc::new(ManualClock::default());
    let (c, _control) = key("yubikey-5.7", clock, TouchMode::Auto);
    let mut chan = c.into_device();
    let info = prereg_station::yubikey::read_device_info(&mut chan).unwrap();
    assert_eq!(info.serial, Some(12345678));
    assert_eq!(info.form_factor.0, 1);
    assert!(info.has_nfc());
    assert_eq!(info.firmware.unwrap().to_string(), "5.7.1");
    assert_eq!(chan.info().device_version, (5, 7, 1));
}

/// Packet and device faults reach the host as typed errors, never a hang or a panic.
#[test]
fn faults_give_typed_host_errors() {
    use prereg_station::ctap2::CtapError;
    use prereg_station::ctaphid::{HidError, TimeoutKind};
    let clock = Arc::new(ManualClock::default());
    // A lost continuation packet of the getInfo reply (INIT reply = packet 0).
    let (mut c, control) = key("yubikey-5.7", clock.clone(), TouchMode::Auto);
    control.set_faults(FaultPlan {
        drop_packets: vec![2],
        ..FaultPlan::default()
    });
    assert!(matches!(c.get_info().unwrap_err(), CtapError::Hid(_)));
    // The reply on a wrong channel: the host hears nothing on its own.
    let (mut c, control) = key("yubikey-5.7", clock.clone(), TouchMode::Auto);
    control.set_faults(FaultPlan {
        wrong_channel_at_command: Some(1),
        ..FaultPlan::default()
    });
    assert!(matches!(
        c.get_info().unwrap_err(),
        CtapError::Hid(HidError::Timeout {
            kind: TimeoutKind::Silent,
            ..
        })
    ));
    control.set_faults(FaultPlan::default());
    c.get_info().unwrap();
    // Flash write failure: setPIN answers CTAP2_ERR_OTHER and the PIN stays unset.
    let (mut c, control) = key("yubikey-5.7", clock.clone(), TouchMode::Auto);
    control.set_faults(FaultPlan {
        flash_write_failure: true,
        ..FaultPlan::default()
    });
    let e = c.set_pin(PinProtocol::Two, &pin("482913")).unwrap_err();
    assert_eq!(status(e), StatusCode::OTHER);
    assert!(!control.pin_status().pin_set);
    // Touch refused in rig mode: the key times out waiting for user presence.
    let (mut c, control) = key("yubikey-5.7", clock.clone(), TouchMode::Rig);
    control.set_faults(FaultPlan {
        refuse_touch: true,
        ..FaultPlan::default()
    });
    let (ctl, clk) = (control.clone(), clock.clone());
    let e = c
        .make_credential(&request("example.com", 1, [2; 32]), None, &mut |_| {
            ctl.touch();
            clk.advance(Duration::from_secs(31));
        })
        .unwrap_err();
    assert_eq!(status(e), StatusCode::USER_ACTION_TIMEOUT);
    // Endless keepalives (wall clock): the host's transaction deadline ends it.
    let cfg = SimConfig::builtin("yubikey-5.7", 1).unwrap();
    let key = SimKey::new(cfg).unwrap();
    key.control().set_faults(FaultPlan {
        endless_keepalive: true,
        ..FaultPlan::default()
    });
    let mut c = Client::new(HidChannel::open(key, Timeouts::short()).unwrap());
    assert!(matches!(
        c.get_info().unwrap_err(),
        CtapError::Hid(HidError::Timeout {
            kind: TimeoutKind::Deadline,
            ..
        })
    ));
}

/// A slot's key sequence: every key is new and blank, with the next serial.
#[test]
fn key_sequence_gives_fresh_blank_keys() {
    use prereg_station::sim::KeySequence;
    let clock = Arc::new(ManualClock::default());
    let base = SimConfig::builtin("yubikey-5.7", 1)
        .unwrap()
        .serial(20_000_000)
        .seed(3);
    let mut seq = KeySequence::with_clock(base, clock);
    let first = seq.next_key().unwrap();
    let ctl1 = first.control();
    let mut c = Client::new(HidChannel::open(first, Timeouts::short()).unwrap());
    c.set_pin(PinProtocol::Two, &pin("482913")).unwrap();
    let second = seq.next_key().unwrap();
    let ctl2 = second.control();
    assert_eq!((ctl1.serial(), ctl2.serial()), (20_000_000, 20_000_001));
    assert!(ctl1.pin_status().pin_set);
    assert!(!ctl2.pin_status().pin_set);
    let mut c = Client::new(HidChannel::open(second, Timeouts::short()).unwrap());
    assert_eq!(c.get_info().unwrap().option("clientPin"), Some(false));
    let info = prereg_station::yubikey::read_device_info(c.device_mut()).unwrap();
    assert_eq!(info.serial, Some(20_000_001));
    assert_eq!(seq.made(), 2);
}

/// The PC/SC virtual card's backend: CTAP without CTAPHID, touch from the rig.
#[test]
fn card_backend_answers_ctap_and_waits_for_touch() {
    use prereg_station::pcsc::vcard::CardBackend;
    let clock = Arc::new(ManualClock::default());
    let (_c, control) = key("yubikey-5.7", clock, TouchMode::Rig);
    let mut card = control.card_backend();
    assert_eq!(card.management_version().as_deref(), Some("5.7.1"));
    let page = card.read_config(0).unwrap();
    let info = prereg_station::yubikey::DeviceInfo::parse_pages(&[&page]).unwrap();
    assert_eq!(info.serial, Some(12345678));
    let reply = card.ctap(&[0x04], &mut |_| {});
    assert_eq!(reply[0], 0);
    prereg_station::cbor::decode(&reply[1..]).unwrap();
    // Reset needs a touch: the rig touches once the key asks.
    let ctl = control.clone();
    let toucher = std::thread::spawn(move || {
        while !ctl.waiting_for_touch() {
            std::thread::sleep(Duration::from_millis(2));
        }
        ctl.touch();
    });
    let mut keepalives = 0;
    let reply = card.ctap(&[0x07], &mut |_| keepalives += 1);
    toucher.join().unwrap();
    assert_eq!(reply, vec![0]);
    assert!(keepalives >= 1);
}

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
    // PIN_INVALID as on a real YubiKey (research §2.3), though the PIN was right.
    assert_eq!(status(e), StatusCode::PIN_INVALID);
    assert_eq!(control.pin_status().retries, 8);
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

// ---- raw CTAPHID (CTAP 2.1 §11.2) against the device side ----

fn report(cid: u32, first: u8, rest: &[u8]) -> [u8; 64] {
    let mut r = [0u8; 64];
    r[..4].copy_from_slice(&cid.to_be_bytes());
    r[4] = first;
    r[5..5 + rest.len()].copy_from_slice(rest);
    r
}

fn init_packet(cid: u32, cmd: u8, payload: &[u8]) -> [u8; 64] {
    let mut body = (payload.len() as u16).to_be_bytes().to_vec();
    body.extend(payload);
    report(cid, 0x80 | cmd, &body)
}

fn raw_key(clock: Arc<ManualClock>, touch: TouchMode) -> (SimKey, SimControl, u32) {
    let cfg = SimConfig::builtin("yubikey-5.7", 1).unwrap().touch(touch);
    let mut key = SimKey::with_clock(cfg, clock).unwrap();
    let control = key.control();
    key.send(&init_packet(0xffff_ffff, 0x06, &[1, 2, 3, 4, 5, 6, 7, 8]))
        .unwrap();
    let r = key.recv(Duration::ZERO).unwrap().unwrap();
    assert_eq!(&r[..7], &[0xff, 0xff, 0xff, 0xff, 0x86, 0, 17]);
    assert_eq!(&r[7..15], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(&r[19..24], &[2, 5, 7, 1, 0x05]);
    let cid = u32::from_be_bytes([r[15], r[16], r[17], r[18]]);
    (key, control, cid)
}

fn next(key: &mut SimKey) -> [u8; 64] {
    key.recv(Duration::ZERO).unwrap().expect("a report")
}

fn hid_error(r: &[u8; 64]) -> u8 {
    assert_eq!(&r[4..7], &[0xbf, 0, 1], "an ERROR frame: {r:02x?}");
    r[7]
}

#[test]
fn ctaphid_errors() {
    let clock = Arc::new(ManualClock::default());
    let (mut key, _c, cid) = raw_key(clock.clone(), TouchMode::Auto);
    // Unallocated channel, reserved channel, non-INIT on broadcast.
    key.send(&init_packet(0x1234_5678, 0x10, &[4])).unwrap();
    assert_eq!(hid_error(&next(&mut key)), 0x0b);
    key.send(&init_packet(0, 0x10, &[4])).unwrap();
    assert_eq!(hid_error(&next(&mut key)), 0x0b);
    key.send(&init_packet(0xffff_ffff, 0x10, &[4])).unwrap();
    assert_eq!(hid_error(&next(&mut key)), 0x0b);
    // INIT with a 7-byte nonce.
    key.send(&init_packet(0xffff_ffff, 0x06, &[0; 7])).unwrap();
    assert_eq!(hid_error(&next(&mut key)), 0x03);
    // Unknown command; vendor command other than READ_CONFIG.
    key.send(&init_packet(cid, 0x7e, &[])).unwrap();
    assert_eq!(hid_error(&next(&mut key)), 0x01);
    // A continuation without a message, then a wrong sequence number.
    key.send(&report(cid, 0, &[])).unwrap();
    assert_eq!(hid_error(&next(&mut key)), 0x04);
    let mut long = 100u16.to_be_bytes().to_vec();
    long.extend([0x81; 57]);
    key.send(&report(cid, 0x81, &long)).unwrap();
    key.send(&report(cid, 1, &[0; 59])).unwrap();
    assert_eq!(hid_error(&next(&mut key)), 0x04);
    // A half message times out after 500 ms of the key's clock.
    key.send(&report(cid, 0x81, &long)).unwrap();
    assert!(key.recv(Duration::ZERO).unwrap().is_none());
    clock.advance(Duration::from_millis(600));
    assert_eq!(hid_error(&next(&mut key)), 0x05);
    // PING echoes; WINK counts; MSG U2F_VERSION.
    key.send(&init_packet(cid, 0x01, b"hello")).unwrap();
    assert_eq!(
        &next(&mut key)[4..12],
        &[0x81, 0, 5, b'h', b'e', b'l', b'l', b'o']
    );
    key.send(&init_packet(cid, 0x08, &[])).unwrap();
    assert_eq!(&next(&mut key)[4..7], &[0x88, 0, 0]);
    key.send(&init_packet(cid, 0x03, &[0, 3, 0, 0, 0])).unwrap();
    assert_eq!(&next(&mut key)[4..15], b"\x83\x00\x08U2F_V2\x90\x00");
    // Garbage CBOR: a CTAP status, not a crash.
    key.send(&init_packet(cid, 0x10, &[0x04, 0xff])).unwrap();
    assert_eq!(&next(&mut key)[4..8], &[0x90, 0, 1, 0x12]);
    key.send(&init_packet(cid, 0x10, &[0x01, 0xa0])).unwrap();
    assert_eq!(&next(&mut key)[4..8], &[0x90, 0, 1, 0x14]);
}

#[test]
fn busy_cancel_and_resync() {
    let clock = Arc::new(ManualClock::default());
    let (mut key, control, cid) = raw_key(clock.clone(), TouchMode::Never);
    // selection waits for a touch that never comes: UPNEEDED keepalives.
    key.send(&init_packet(cid, 0x10, &[0x0b])).unwrap();
    assert_eq!(&next(&mut key)[4..8], &[0xbb, 0, 1, 2]);
    assert!(control.waiting_for_touch());
    clock.advance(Duration::from_millis(150));
    assert_eq!(&next(&mut key)[4..8], &[0xbb, 0, 1, 2]);
    // Another channel is told the key is busy.
    key.send(&init_packet(0xffff_ffff, 0x06, &[9; 8])).unwrap();
    let other = next(&mut key);
    let cid2 = u32::from_be_bytes([other[15], other[16], other[17], other[18]]);
    key.send(&init_packet(cid2, 0x01, b"x")).unwrap();
    assert_eq!(hid_error(&next(&mut key)), 0x06);
    // CANCEL ends the request with KEEPALIVE_CANCEL.
    key.send(&init_packet(cid, 0x11, &[])).unwrap();
    assert_eq!(&next(&mut key)[4..8], &[0x90, 0, 1, 0x2d]);
    assert!(!control.waiting_for_touch());
    // Touch timeout.
    key.send(&init_packet(cid, 0x10, &[0x0b])).unwrap();
    next(&mut key);
    clock.advance(Duration::from_secs(31));
    let mut last = next(&mut key);
    while last[4] == 0xbb {
        last = next(&mut key);
    }
    assert_eq!(&last[4..8], &[0x90, 0, 1, 0x2f]);
}

#[test]
fn packet_faults() {
    let clock = Arc::new(ManualClock::default());
    let (mut key, control, cid) = raw_key(clock.clone(), TouchMode::Auto);
    // Reply on a wrong channel (INIT was message 0, this PING is message 1).
    control.set_faults(FaultPlan {
        wrong_channel_at_command: Some(1),
        ..FaultPlan::default()
    });
    key.send(&init_packet(cid, 0x01, b"a")).unwrap();
    let r = next(&mut key);
    assert_ne!(u32::from_be_bytes([r[0], r[1], r[2], r[3]]), cid);
    // Outgoing report 2 (the INIT reply was 0, the PING reply 1) is dropped, 3 duplicated.
    control.set_faults(FaultPlan {
        drop_packets: vec![2],
        duplicate_packets: vec![3],
        ..FaultPlan::default()
    });
    key.send(&init_packet(cid, 0x01, b"b")).unwrap();
    assert!(key.recv(Duration::ZERO).unwrap().is_none());
    key.send(&init_packet(cid, 0x01, b"c")).unwrap();
    assert_eq!(next(&mut key)[7], b'c');
    assert_eq!(next(&mut key)[7], b'c');
    // Endless keepalive.
    control.set_faults(FaultPlan {
        endless_keepalive: true,
        ..FaultPlan::default()
    });
    key.send(&init_packet(cid, 0x10, &[0x04])).unwrap();
    for _ in 0..5 {
        assert_eq!(&next(&mut key)[4..8], &[0xbb, 0, 1, 1]);
        clock.advance(Duration::from_secs(60));
    }
}

#[test]
fn arbitrary_input_never_panics() {
    use rand::{Rng, RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for _ in 0..120 {
        let len = rng.gen_range(1..400);
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        prereg_station::sim::exercise(&data);
    }
    // Structured starts: every CTAP command byte with random CBOR-ish bodies.
    for cmd in [1u8, 2, 4, 6, 7, 8, 0x0a, 0x0b, 0x0d, 0x41] {
        for _ in 0..6 {
            let mut data = vec![0u8, cmd, 0xa0 | rng.gen_range(0..8u8)];
            let mut tail = vec![0u8; rng.gen_range(0..64)];
            rng.fill_bytes(&mut tail);
            data.extend(tail);
            prereg_station::sim::exercise(&data);
        }
    }
}

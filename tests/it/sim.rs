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

// ---- issue #15: every promise getInfo makes ----

use prereg_station::cbor::Value;
use prereg_station::ctap2::{CredMgmtSubCommand, GetAssertion, PubKeyCredParam as Alg};
use sha2::{Digest, Sha256};

/// U2F extended-length APDU (U2F Raw Message Formats §3.1): CLA INS P1 P2 00 Lc Lc data 00 00.
fn apdu(ins: u8, p1: u8, data: &[u8]) -> Vec<u8> {
    let mut a = vec![0, ins, p1, 0, 0];
    a.extend((data.len() as u16).to_be_bytes());
    a.extend(data);
    a.extend([0, 0]);
    a
}

fn u2f(c: &mut Dev, apdu: &[u8]) -> (Vec<u8>, u16) {
    let mut r = c.device_mut().msg(apdu, &mut |_| {}).unwrap();
    let sw = r.split_off(r.len() - 2);
    (r, u16::from_be_bytes([sw[0], sw[1]]))
}

fn authenticate_apdu(p1: u8, challenge: &[u8; 32], app: &[u8; 32], handle: &[u8]) -> Vec<u8> {
    let data = [&challenge[..], app, &[handle.len() as u8], handle].concat();
    apdu(0x02, p1, &data)
}

fn p256_verify(public_sec1: &[u8], message: &[u8], der_sig: &[u8]) -> bool {
    use p256::ecdsa::signature::Verifier;
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(public_sec1).unwrap();
    let sig = p256::ecdsa::DerSignature::from_bytes(der_sig).unwrap();
    vk.verify(message, &sig).is_ok()
}

fn cose_p256_sec1(key: &Value) -> Vec<u8> {
    let x = key.get(-2).and_then(Value::as_bytes).unwrap();
    let y = key.get(-3).and_then(Value::as_bytes).unwrap();
    [&[4u8][..], x, y].concat()
}

/// A parsed U2F REGISTER response: (public key, key handle, certificate DER, signature).
fn parse_register(r: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    use der::{Decode, Encode};
    assert_eq!(r[0], 0x05, "reserved byte");
    let public = r[1..66].to_vec();
    let l = r[66] as usize;
    let handle = r[67..67 + l].to_vec();
    let rest = &r[67 + l..];
    let cert = x509_cert::Certificate::from_der(&rest[..cert_len(rest)]).unwrap();
    let cert_der = cert.to_der().unwrap();
    let sig = rest[cert_der.len()..].to_vec();
    (public, handle, cert_der, sig)
}

/// Length of the DER SEQUENCE at the start of `b`.
fn cert_len(b: &[u8]) -> usize {
    assert_eq!(b[0], 0x30);
    match b[1] {
        n if n < 0x80 => 2 + n as usize,
        0x81 => 3 + b[2] as usize,
        0x82 => 4 + u16::from_be_bytes([b[2], b[3]]) as usize,
        _ => panic!("certificate too long"),
    }
}

fn cert_public_key(cert_der: &[u8]) -> Vec<u8> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(cert_der).unwrap();
    cert.tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec()
}

/// A non-resident credential without PIN, with the given algorithms and credProtect.
fn non_resident(
    c: &mut Dev,
    rp: &str,
    algs: Vec<Alg>,
    cred_protect: Option<u8>,
) -> (Vec<u8>, Value) {
    let mut req = request(rp, 1, [5; 32]);
    req.rk = false;
    req.pub_key_cred_params = algs;
    req.extensions = MakeCredentialExtensions {
        cred_protect,
        min_pin_length: false,
        hmac_secret: false,
    };
    let r = c.make_credential(&req, None, &mut |_| {}).unwrap();
    let att = r.authenticator_data().unwrap().attested.unwrap();
    (att.credential_id, att.public_key)
}

#[test]
fn u2f_register_and_authenticate_follow_raw_message_formats_1_2() {
    let clock = Arc::new(ManualClock::default());
    let (mut c, control) = key("yubikey-5.7", clock, TouchMode::Auto);
    let (v, sw) = u2f(&mut c, &[0, 0x03, 0, 0]);
    assert_eq!((v.as_slice(), sw), (&b"U2F_V2"[..], 0x9000));
    // python-fido2's form: extended Lc 0000 and Le 0000.
    assert_eq!(u2f(&mut c, &apdu(0x03, 0, &[])).1, 0x9000);
    let app: [u8; 32] = Sha256::digest(b"https://u2f.example").into();
    let challenge = [7u8; 32];
    let (r, sw) = u2f(&mut c, &apdu(0x01, 0x03, &[challenge, app].concat()));
    assert_eq!(sw, 0x9000);
    let (public, handle, cert, sig) = parse_register(&r);
    // The attestation certificate is the simulator's leaf for the AAGUID.
    let leaf = prereg_station::sim::attestation::AttestationIdentity::new(7, &control.aaguid())
        .unwrap()
        .cert_der;
    assert_eq!(cert, leaf);
    let signed = [&[0u8][..], &app, &challenge, &handle, &public].concat();
    assert!(p256_verify(&cert_public_key(&cert), &signed, &sig));

    // Check-only: 6985 for a handle of this application, 6A80 for another one.
    let (_, sw) = u2f(&mut c, &authenticate_apdu(0x07, &challenge, &app, &handle));
    assert_eq!(sw, 0x6985);
    let other: [u8; 32] = Sha256::digest(b"https://other.example").into();
    let (_, sw) = u2f(
        &mut c,
        &authenticate_apdu(0x07, &challenge, &other, &handle),
    );
    assert_eq!(sw, 0x6a80);
    let mut bad = handle.clone();
    bad[20] ^= 1;
    let (_, sw) = u2f(&mut c, &authenticate_apdu(0x03, &challenge, &app, &bad));
    assert_eq!(sw, 0x6a80);

    // Enforce and don't-enforce: presence byte, counter, signature.
    let mut last = 0;
    for (p1, presence) in [(0x03u8, 1u8), (0x08, 0)] {
        let (r, sw) = u2f(&mut c, &authenticate_apdu(p1, &challenge, &app, &handle));
        assert_eq!(sw, 0x9000);
        assert_eq!(r[0], presence);
        let counter = u32::from_be_bytes(r[1..5].try_into().unwrap());
        assert!(counter > last);
        last = counter;
        let signed = [&app[..], &r[..5], &challenge].concat();
        assert!(p256_verify(&public, &signed, &r[5..]));
    }

    // Malformed APDUs.
    assert_eq!(u2f(&mut c, &[0, 0x01, 0]).1, 0x6700);
    assert_eq!(u2f(&mut c, &apdu(0x01, 0, &[0; 63])).1, 0x6700);
    assert_eq!(u2f(&mut c, &[0, 0x02, 3, 0, 0, 0, 70, 1, 2]).1, 0x6700);
    assert_eq!(u2f(&mut c, &[0x80, 0x03, 0, 0]).1, 0x6e00);
    assert_eq!(u2f(&mut c, &[0, 0x04, 0, 0]).1, 0x6d00);
    assert_eq!(
        u2f(
            &mut c,
            &apdu(0x02, 0x05, &[[0; 64].as_slice(), &[61], &handle].concat())
        )
        .1,
        0x6a80
    );
}

#[test]
fn u2f_key_handles_work_across_ctap1_and_ctap2() {
    let clock = Arc::new(ManualClock::default());
    let (mut c, _control) = key("yubikey-5.7", clock, TouchMode::Auto);
    // U2F registration, CTAP2 assertion with rpIdHash = appParam (CTAP 2.1 §10.2).
    let app: [u8; 32] = Sha256::digest(b"interop.example").into();
    let (r, sw) = u2f(&mut c, &apdu(0x01, 0x03, &[[1u8; 32], app].concat()));
    assert_eq!(sw, 0x9000);
    let (public, handle, _, _) = parse_register(&r);
    let ga = GetAssertion {
        rp_id: "interop.example".into(),
        client_data_hash: [2; 32],
        allow_list: vec![CredentialDescriptor::public_key(handle.clone())],
        up: None,
    };
    let a = c.get_assertion(&ga, None, &mut |_| {}).unwrap();
    assert_eq!(a.credential.unwrap().id, handle);
    assert!(p256_verify(
        &public,
        &[a.auth_data.as_slice(), &[2; 32]].concat(),
        &a.signature
    ));

    // A non-resident CTAP2 credential in U2F AUTHENTICATE.
    let (id, key) = non_resident(&mut c, "ctap2.example", vec![Alg::es256()], None);
    let app2: [u8; 32] = Sha256::digest(b"ctap2.example").into();
    let (r, sw) = u2f(&mut c, &authenticate_apdu(0x03, &[3; 32], &app2, &id));
    assert_eq!(sw, 0x9000);
    let signed = [&app2[..], &r[..5], &[3; 32]].concat();
    assert!(p256_verify(&cose_p256_sec1(&key), &signed, &r[5..]));

    // Not over U2F: EdDSA keys (U2F is P-256) and credProtect 3 (needs UV).
    let (ed, _) = non_resident(&mut c, "ctap2.example", vec![Alg::eddsa()], None);
    assert_eq!(
        u2f(&mut c, &authenticate_apdu(0x07, &[3; 32], &app2, &ed)).1,
        0x6a80
    );
    let (cp3, _) = non_resident(&mut c, "ctap2.example", vec![Alg::es256()], Some(3));
    assert_eq!(
        u2f(&mut c, &authenticate_apdu(0x07, &[3; 32], &app2, &cp3)).1,
        0x6a80
    );
    let (cp2, _) = non_resident(&mut c, "ctap2.example", vec![Alg::es256()], Some(2));
    assert_eq!(
        u2f(&mut c, &authenticate_apdu(0x07, &[3; 32], &app2, &cp2)).1,
        0x6985
    );
}

#[test]
fn u2f_user_presence_is_polled_until_the_rig_touches() {
    let clock = Arc::new(ManualClock::default());
    let (mut c, control) = key("yubikey-5.4", clock, TouchMode::Rig);
    let reg = apdu(0x01, 0x03, &[[1u8; 32], [2u8; 32]].concat());
    assert!(!control.waiting_for_touch());
    assert_eq!(u2f(&mut c, &reg).1, 0x6985);
    assert!(control.waiting_for_touch(), "the key blinks after 6985");
    assert_eq!(u2f(&mut c, &reg).1, 0x6985);
    control.touch();
    let (r, sw) = u2f(&mut c, &reg);
    assert_eq!(sw, 0x9000);
    assert!(!control.waiting_for_touch());
    // The touch was used up.
    assert_eq!(u2f(&mut c, &reg).1, 0x6985);
    let (_, handle, _, _) = parse_register(&r);
    let auth = authenticate_apdu(0x03, &[1; 32], &[2; 32], &handle);
    assert_eq!(u2f(&mut c, &auth).1, 0x6985);
    control.touch();
    assert_eq!(u2f(&mut c, &auth).1, 0x9000);
    // Don't-enforce needs no touch.
    assert_eq!(
        u2f(
            &mut c,
            &authenticate_apdu(0x08, &[1; 32], &[2; 32], &handle)
        )
        .1,
        0x9000
    );
}

#[test]
fn eddsa_credentials_are_made_and_sign_on_every_profile() {
    for profile in [
        "yubikey-5.2",
        "yubikey-5.4",
        "yubikey-5.7",
        "security-key-5.7",
    ] {
        let clock = Arc::new(ManualClock::default());
        let cfg = SimConfig::builtin(
            profile,
            SimConfig::default_product(&prereg_station::profile::builtin_profile(profile).unwrap()),
        )
        .unwrap()
        .seed(3);
        let key = SimKey::with_clock(cfg, clock).unwrap();
        let mut c = Client::new(HidChannel::open(key, Timeouts::short()).unwrap());
        assert!(
            c.get_info().unwrap().algorithms.contains(&Alg::eddsa()),
            "{profile}"
        );
        // -8 first: an Ed25519 credential (COSE OKP, crv Ed25519).
        let (id, key) = non_resident(&mut c, "ed.example", vec![Alg::eddsa(), Alg::es256()], None);
        assert_eq!(
            key.get(1).and_then(Value::as_i64),
            Some(1),
            "{profile}: kty OKP"
        );
        assert_eq!(key.get(3).and_then(Value::as_i64), Some(-8));
        assert_eq!(key.get(-1).and_then(Value::as_i64), Some(6));
        let x: [u8; 32] = key
            .get(-2)
            .and_then(Value::as_bytes)
            .unwrap()
            .try_into()
            .unwrap();
        let ga = GetAssertion {
            rp_id: "ed.example".into(),
            client_data_hash: [8; 32],
            allow_list: vec![CredentialDescriptor::public_key(id)],
            up: None,
        };
        let a = c.get_assertion(&ga, None, &mut |_| {}).unwrap();
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&a.signature).unwrap();
        vk.verify_strict(&[a.auth_data.as_slice(), &[8; 32]].concat(), &sig)
            .unwrap();
        // -7 first still makes ES256.
        let (_, key) = non_resident(&mut c, "ed.example", vec![Alg::es256(), Alg::eddsa()], None);
        assert_eq!(key.get(3).and_then(Value::as_i64), Some(-7));
    }
}

#[test]
fn eddsa_resident_credential_verifies_and_lists_its_okp_key() {
    let clock = Arc::new(ManualClock::default());
    let (mut c, _control) = key("yubikey-5.7", clock, TouchMode::Auto);
    let p2 = PinProtocol::Two;
    c.set_pin(p2, &pin("482913")).unwrap();
    let tok = c
        .get_pin_uv_auth_token_using_pin_with_permissions(
            p2,
            &pin("482913"),
            Permissions::MC,
            Some("example.com"),
        )
        .unwrap();
    let mut req = request("example.com", 1, [9; 32]);
    req.pub_key_cred_params = vec![Alg::eddsa()];
    let r = c.make_credential(&req, Some(&tok), &mut |_| {}).unwrap();
    // The station's parsers and attestation check take an OKP key.
    let roots =
        TrustRoots::from_pem(prereg_station::sim::ca_root_pem(7).unwrap().as_bytes()).unwrap();
    let obj = webauthn::AttestationObject::parse(&r.attestation_object()).unwrap();
    let verified = webauthn::verify_attestation_parts(
        &obj,
        &Expected {
            rp_id: "example.com",
            client_data_hash: &[9; 32],
            require_uv: true,
            cred_protect: Some(3),
            allow_none: false,
            now: 1_800_000_000,
        },
        &roots,
    )
    .unwrap();
    let public = r.authenticator_data().unwrap().attested.unwrap().public_key;
    assert_eq!(public.get(3).and_then(Value::as_i64), Some(-8));
    assert!(!verified.public_key_cose.is_empty());
    let tok = c
        .get_pin_uv_auth_token_using_pin_with_permissions(p2, &pin("482913"), Permissions::CM, None)
        .unwrap();
    let hash: [u8; 32] = Sha256::digest(b"example.com").into();
    let creds = c
        .enumerate_credentials(CtapCommand::CREDENTIAL_MANAGEMENT, &hash, &tok)
        .unwrap();
    assert_eq!(creds[0].public_key, public);
}

/// makeCredential with a hand-made pubKeyCredParams (CTAP 2.1 §6.1.2 step 3).
fn make_credential_with_params(c: &mut Dev, params: Value) -> Result<Option<Value>, StatusCode> {
    let req = Value::map([
        (Value::from(1), Value::from(vec![1u8; 32])),
        (
            Value::from(2),
            Value::map([(Value::from("id"), Value::from("p.example"))]),
        ),
        (
            Value::from(3),
            Value::map([(Value::from("id"), Value::from(vec![1u8]))]),
        ),
        (Value::from(4), params),
    ]);
    c.call(CtapCommand::MAKE_CREDENTIAL, Some(&req), &mut |_| {})
        .map_err(status)
}

fn param(ty: Option<Value>, alg: Option<Value>) -> Value {
    let mut m = Vec::new();
    if let Some(a) = alg {
        m.push((Value::from("alg"), a));
    }
    if let Some(t) = ty {
        m.push((Value::from("type"), t));
    }
    Value::Map(m)
}

#[test]
fn every_pub_key_cred_params_element_is_checked() {
    let clock = Arc::new(ManualClock::default());
    let (mut c, _control) = key("yubikey-5.7", clock, TouchMode::Auto);
    let pk = || Some(Value::from("public-key"));
    let es = || param(pk(), Some(Value::from(-7)));
    let cases = [
        (
            vec![es(), Value::Map(vec![])],
            StatusCode::MISSING_PARAMETER,
        ),
        (
            vec![es(), param(None, Some(Value::from(-7)))],
            StatusCode::MISSING_PARAMETER,
        ),
        (vec![es(), param(pk(), None)], StatusCode::MISSING_PARAMETER),
        (
            vec![es(), param(Some(Value::from(1)), Some(Value::from(-7)))],
            StatusCode::CBOR_UNEXPECTED_TYPE,
        ),
        (
            vec![es(), param(pk(), Some(Value::from("ES256")))],
            StatusCode::CBOR_UNEXPECTED_TYPE,
        ),
        (
            vec![es(), Value::from("public-key")],
            StatusCode::CBOR_UNEXPECTED_TYPE,
        ),
        (
            vec![param(Some(Value::from("other")), Some(Value::from(-7)))],
            StatusCode::UNSUPPORTED_ALGORITHM,
        ),
        (
            vec![param(pk(), Some(Value::from(-257)))],
            StatusCode::UNSUPPORTED_ALGORITHM,
        ),
        (vec![], StatusCode::UNSUPPORTED_ALGORITHM),
    ];
    for (params, want) in cases {
        let got = make_credential_with_params(&mut c, Value::Array(params.clone()));
        assert_eq!(got.unwrap_err(), want, "{params:?}");
    }
    // Unknown types and algorithms are skipped; the first supported one wins.
    let ok = make_credential_with_params(
        &mut c,
        Value::Array(vec![
            param(Some(Value::from("other")), Some(Value::from(-8))),
            param(pk(), Some(Value::from(-257))),
            es(),
        ]),
    )
    .unwrap()
    .unwrap();
    let ad = prereg_station::ctap2::AuthenticatorData::parse(
        ok.get(2).and_then(Value::as_bytes).unwrap(),
    )
    .unwrap();
    assert_eq!(
        ad.attested
            .unwrap()
            .public_key
            .get(3)
            .and_then(Value::as_i64),
        Some(-7)
    );
}

#[test]
fn cred_protect_level_1_is_echoed() {
    let clock = Arc::new(ManualClock::default());
    let (mut c, _control) = key("yubikey-5.7", clock, TouchMode::Auto);
    let mut req = request("cp.example", 1, [1; 32]);
    for (level, want) in [(Some(1u8), Some(1u64)), (Some(2), Some(2)), (None, None)] {
        req.extensions.cred_protect = level;
        req.user.id = vec![level.unwrap_or(0); 4];
        let ad = c
            .make_credential(&req, None, &mut |_| {})
            .unwrap()
            .authenticator_data()
            .unwrap();
        let got = ad
            .extensions
            .as_ref()
            .and_then(|e| e.get("credProtect"))
            .and_then(Value::as_u64);
        assert_eq!(got, want, "credProtect {level:?}");
    }
}

#[test]
fn cred_mgmt_preview_0x41_is_served_where_advertised() {
    let clock = Arc::new(ManualClock::default());
    let (mut c, control) = key("yubikey-5.7", clock.clone(), TouchMode::Auto);
    let info = c.get_info().unwrap();
    assert_eq!(info.option("credMgmt"), Some(true));
    assert_eq!(info.option("credentialMgmtPreview"), Some(true));
    let p2 = PinProtocol::Two;
    c.set_pin(p2, &pin("482913")).unwrap();
    let tok = c
        .get_pin_uv_auth_token_using_pin_with_permissions(
            p2,
            &pin("482913"),
            Permissions::MC,
            Some("example.com"),
        )
        .unwrap();
    c.make_credential(&request("example.com", 1, [1; 32]), Some(&tok), &mut |_| {})
        .unwrap();
    let tok = c
        .get_pin_uv_auth_token_using_pin_with_permissions(p2, &pin("482913"), Permissions::CM, None)
        .unwrap();
    for cmd in [
        CtapCommand::CREDENTIAL_MANAGEMENT_PREVIEW,
        CtapCommand::CREDENTIAL_MANAGEMENT,
    ] {
        let meta = c.get_creds_metadata(cmd, &tok).unwrap();
        assert_eq!(meta.existing_resident_credentials_count, 1);
        let rps = c.enumerate_rps(cmd, &tok).unwrap();
        assert_eq!(rps.len(), 1);
    }
    // updateUserInformation (0x07) on 0x41 too: the same handler as 0x0A.
    let hash: [u8; 32] = Sha256::digest(b"example.com").into();
    let cred = c
        .enumerate_credentials(CtapCommand::CREDENTIAL_MANAGEMENT_PREVIEW, &hash, &tok)
        .unwrap()
        .remove(0);
    let update = |user: &[u8]| {
        Value::map([
            (Value::from(2), cred.credential_id.to_cbor()),
            (
                Value::from(3),
                Value::map([
                    (Value::from("id"), Value::from(user.to_vec())),
                    (Value::from("name"), Value::from("renamed")),
                ]),
            ),
        ])
    };
    c.credential_management(
        CtapCommand::CREDENTIAL_MANAGEMENT_PREVIEW,
        CredMgmtSubCommand::UPDATE_USER_INFORMATION,
        Some(&update(&cred.user.id)),
        Some(&tok),
    )
    .unwrap();
    assert_eq!(
        control.credentials()[0].user_name.as_deref(),
        Some("renamed")
    );
    // The same permission rule: a token without cm is refused on 0x41 too.
    let ga = c
        .get_pin_uv_auth_token_using_pin_with_permissions(
            p2,
            &pin("482913"),
            Permissions::GA,
            Some("example.com"),
        )
        .unwrap();
    let e = c
        .get_creds_metadata(CtapCommand::CREDENTIAL_MANAGEMENT_PREVIEW, &ga)
        .unwrap_err();
    assert_eq!(status(e), StatusCode::PIN_AUTH_INVALID);
    // 5.4 advertises only the preview: 0x0A is no command there.
    let (mut c54, _) = key("yubikey-5.4", clock, TouchMode::Auto);
    c54.set_pin(p2, &pin("482913")).unwrap();
    let tok = c54.get_pin_token(p2, &pin("482913")).unwrap();
    let e = c54
        .get_creds_metadata(CtapCommand::CREDENTIAL_MANAGEMENT, &tok)
        .unwrap_err();
    assert_eq!(status(e), StatusCode::INVALID_COMMAND);
    c54.get_creds_metadata(CtapCommand::CREDENTIAL_MANAGEMENT_PREVIEW, &tok)
        .unwrap();
    // The preview has no updateUserInformation.
    let e = c54
        .credential_management(
            CtapCommand::CREDENTIAL_MANAGEMENT_PREVIEW,
            CredMgmtSubCommand::UPDATE_USER_INFORMATION,
            Some(&update(&cred.user.id)),
            Some(&tok),
        )
        .unwrap_err();
    assert_eq!(status(e), StatusCode::INVALID_SUBCOMMAND);
}

#[test]
fn ctap_2_0_pin_token_stays_valid_until_power_cycle_on_5_2() {
    let clock = Arc::new(ManualClock::default());
    let (mut c, control) = key("yubikey-5.2", clock, TouchMode::Auto);
    let p1 = PinProtocol::One;
    c.set_pin(p1, &pin("482913")).unwrap();
    let tok = c.get_pin_token(p1, &pin("482913")).unwrap();
    // One pinToken for several credentials, RPs and assertions (CTAP 2.0 §5.5.4).
    for (rp, user) in [("a.example", 1), ("a.example", 2), ("b.example", 3)] {
        c.make_credential(&request(rp, user, [1; 32]), Some(&tok), &mut |_| {})
            .unwrap();
    }
    let ga = GetAssertion {
        rp_id: "a.example".into(),
        client_data_hash: [1; 32],
        allow_list: vec![],
        up: None,
    };
    c.get_assertion(&ga, Some(&tok), &mut |_| {}).unwrap();
    c.make_credential(&request("b.example", 4, [1; 32]), Some(&tok), &mut |_| {})
        .unwrap();
    // Power-off ends it.
    control.power_cycle();
    let mut c = Client::new(HidChannel::open(control.transport(), Timeouts::short()).unwrap());
    let e = c
        .make_credential(&request("a.example", 5, [1; 32]), Some(&tok), &mut |_| {})
        .unwrap_err();
    assert_eq!(status(e), StatusCode::PIN_AUTH_INVALID);
}

#[test]
fn user_present_get_assertion_clears_token_permissions_on_2_1() {
    let clock = Arc::new(ManualClock::default());
    let (mut c, _control) = key("yubikey-5.7", clock, TouchMode::Auto);
    let p2 = PinProtocol::Two;
    c.set_pin(p2, &pin("482913")).unwrap();
    let mc = c
        .get_pin_uv_auth_token_using_pin_with_permissions(
            p2,
            &pin("482913"),
            Permissions::MC,
            Some("example.com"),
        )
        .unwrap();
    c.make_credential(&request("example.com", 1, [1; 32]), Some(&mc), &mut |_| {})
        .unwrap();
    let ga_tok = c
        .get_pin_uv_auth_token_using_pin_with_permissions(
            p2,
            &pin("482913"),
            Permissions(Permissions::GA.0 | Permissions::MC.0),
            Some("example.com"),
        )
        .unwrap();
    let mut ga = GetAssertion {
        rp_id: "example.com".into(),
        client_data_hash: [1; 32],
        allow_list: vec![],
        up: Some(false),
    };
    // Without user presence the token keeps its permissions (§6.2.2 step 9 is for up only).
    c.get_assertion(&ga, Some(&ga_tok), &mut |_| {}).unwrap();
    c.get_assertion(&ga, Some(&ga_tok), &mut |_| {}).unwrap();
    ga.up = None;
    let a = c.get_assertion(&ga, Some(&ga_tok), &mut |_| {}).unwrap();
    assert_eq!(a.auth_data[32] & 0x05, 0x05, "UP and UV");
    // After it: neither ga nor mc (only lbw survives, §6.2.2 step 9).
    let e = c
        .get_assertion(&ga, Some(&ga_tok), &mut |_| {})
        .unwrap_err();
    assert_eq!(status(e), StatusCode::PIN_AUTH_INVALID);
    let e = c
        .make_credential(
            &request("example.com", 2, [1; 32]),
            Some(&ga_tok),
            &mut |_| {},
        )
        .unwrap_err();
    assert_eq!(status(e), StatusCode::PIN_AUTH_INVALID);
}

#[test]
fn make_cred_uv_not_rqd_allows_non_resident_without_pin_until_always_uv() {
    let clock = Arc::new(ManualClock::default());
    let (mut c, _control) = key("yubikey-5.7", clock.clone(), TouchMode::Auto);
    assert_eq!(c.get_info().unwrap().option("makeCredUvNotRqd"), Some(true));
    let p2 = PinProtocol::Two;
    c.set_pin(p2, &pin("482913")).unwrap();
    let mut req = request("nr.example", 1, [1; 32]);
    req.extensions.cred_protect = None;
    req.rk = false;
    let r = c.make_credential(&req, None, &mut |_| {}).unwrap();
    assert!(!r.authenticator_data().unwrap().user_verified());
    req.rk = true;
    let e = c.make_credential(&req, None, &mut |_| {}).unwrap_err();
    assert_eq!(status(e), StatusCode::PUAT_REQUIRED);
    // alwaysUv on: makeCredUvNotRqd reads false and is not honoured (CTAP 2.1 §7.2).
    let tok = c
        .get_pin_uv_auth_token_using_pin_with_permissions(
            p2,
            &pin("482913"),
            Permissions::ACFG,
            None,
        )
        .unwrap();
    c.toggle_always_uv(Some(&tok)).unwrap();
    let info = c.get_info().unwrap();
    assert_eq!(info.option("alwaysUv"), Some(true));
    assert_eq!(info.option("makeCredUvNotRqd"), Some(false));
    req.rk = false;
    let e = c.make_credential(&req, None, &mut |_| {}).unwrap_err();
    assert_eq!(status(e), StatusCode::PUAT_REQUIRED);
    // U2F is off while alwaysUv is on.
    assert_eq!(u2f(&mut c, &apdu(0x01, 0x03, &[0; 64])).1, 0x6986);
    // A CTAP 2.0-era profile has no such option: a PIN means a token, rk or not.
    let (mut c52, _) = key("yubikey-5.2", clock, TouchMode::Auto);
    assert_eq!(c52.get_info().unwrap().option("makeCredUvNotRqd"), None);
    c52.set_pin(PinProtocol::One, &pin("482913")).unwrap();
    let e = c52.make_credential(&req, None, &mut |_| {}).unwrap_err();
    assert_eq!(status(e), StatusCode::PUAT_REQUIRED);
}

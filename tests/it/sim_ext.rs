//! Integration tests: the simulated key's extensions (hmac-secret at
//! getAssertion, credBlob, largeBlobKey; CTAP 2.1 §12.5, §12.2, §12.3) and
//! authenticatorLargeBlobs (§6.10), driven in-process through the host stack
//! with raw CBOR requests. python-fido2 checks the same from outside in
//! tests/python/test_sim_fido2.py.

use prereg_station::cbor::{self, Value};
use prereg_station::ctap2::{
    AuthenticatorData, Client, CtapCommand, CtapError, Permissions, PinUvAuthToken, StatusCode,
};
use prereg_station::ctaphid::{HidChannel, Timeouts};
use prereg_station::pin::{self, PinProtocol, SharedSecret};
use prereg_station::profile::FirmwareProfile;
use prereg_station::secret::SecretString;
use prereg_station::sim::{ManualClock, SimConfig, SimControl, SimKey, TouchMode};
use sha2::{Digest, Sha256};
use std::sync::Arc;

type Dev = Client<HidChannel<SimKey>>;

const RP: &str = "example.com";
const PIN: &str = "482913";

fn key(profile: &str) -> (Dev, SimControl) {
    let cfg = SimConfig::builtin(
        profile,
        SimConfig::default_product(prereg_station::profile::builtin().get(profile).unwrap()),
    )
    .unwrap()
    .serial(4242)
    .seed(11)
    .ca_seed(11)
    .touch(TouchMode::Auto);
    let key = SimKey::with_clock(cfg, Arc::new(ManualClock::default())).unwrap();
    let control = key.control();
    let chan = HidChannel::open(key, Timeouts::short()).unwrap();
    (Client::new(chan), control)
}

fn reopen(control: &SimControl) -> Dev {
    Client::new(HidChannel::open(control.transport(), Timeouts::short()).unwrap())
}

fn call(c: &mut Dev, cmd: CtapCommand, params: Value) -> Result<Value, StatusCode> {
    c.call(cmd, Some(&params), &mut |_| {})
        .map(|v| v.unwrap_or(Value::Map(Vec::new())))
        .map_err(status)
}

fn status(e: CtapError) -> StatusCode {
    e.status().unwrap_or_else(|| panic!("not a status: {e}"))
}

fn map(entries: Vec<(Value, Value)>) -> Value {
    Value::Map(entries)
}

fn int(n: i64) -> Value {
    Value::from(n)
}

fn text(s: &str) -> Value {
    Value::from(s)
}

/// makeCredential ES256 with `extensions`; returns the response map.
fn make_credential(
    c: &mut Dev,
    user: &[u8],
    rk: bool,
    extensions: Vec<(Value, Value)>,
    uv: Option<&PinUvAuthToken>,
) -> Result<Value, StatusCode> {
    let cdh = [7u8; 32];
    let mut m = vec![
        (int(1), Value::from(cdh.to_vec())),
        (int(2), map(vec![(text("id"), text(RP))])),
        (
            int(3),
            map(vec![
                (text("id"), Value::from(user.to_vec())),
                (text("name"), text("jan")),
            ]),
        ),
        (
            int(4),
            Value::Array(vec![map(vec![
                (text("alg"), int(-7)),
                (text("type"), text("public-key")),
            ])]),
        ),
        (int(6), map(extensions)),
        (int(7), map(vec![(text("rk"), Value::from(rk))])),
    ];
    if let Some(tok) = uv {
        m.push((int(8), Value::from(tok.authenticate(&cdh))));
        m.push((int(9), int(tok.protocol().number() as i64)));
    }
    call(c, CtapCommand::MAKE_CREDENTIAL, map(m))
}

fn auth_data(response: &Value, key: i64) -> AuthenticatorData {
    AuthenticatorData::parse(response.get(key).unwrap().as_bytes().unwrap()).unwrap()
}

fn credential_id(response: &Value) -> Vec<u8> {
    auth_data(response, 2).attested.unwrap().credential_id
}

/// getAssertion for `id` with `extensions` and an optional UV token.
fn get_assertion(
    c: &mut Dev,
    id: &[u8],
    extensions: Vec<(Value, Value)>,
    uv: Option<&PinUvAuthToken>,
) -> Result<Value, StatusCode> {
    let cdh = [5u8; 32];
    let mut m = vec![
        (int(1), text(RP)),
        (int(2), Value::from(cdh.to_vec())),
        (
            int(3),
            Value::Array(vec![map(vec![
                (text("id"), Value::from(id.to_vec())),
                (text("type"), text("public-key")),
            ])]),
        ),
        (int(4), map(extensions)),
    ];
    if let Some(tok) = uv {
        m.push((int(6), Value::from(tok.authenticate(&cdh))));
        m.push((int(7), int(tok.protocol().number() as i64)));
    }
    call(c, CtapCommand::GET_ASSERTION, map(m))
}

/// An hmac-secret input for `salts` and the platform's shared secret.
fn hmac_secret_input(
    c: &mut Dev,
    protocol: PinProtocol,
    salts: &[u8],
) -> (SharedSecret, Vec<(Value, Value)>) {
    let peer = c.get_key_agreement(protocol).unwrap();
    let (platform, shared) = pin::encapsulate(protocol, &peer);
    let salt_enc = shared.encrypt(salts).unwrap();
    let salt_auth = shared.authenticate(&salt_enc);
    let input = vec![
        (int(1), platform.to_cbor()),
        (int(2), Value::from(salt_enc)),
        (int(3), Value::from(salt_auth)),
        (int(4), int(protocol.number() as i64)),
    ];
    (shared, input)
}

fn hmac_secret(input: Vec<(Value, Value)>) -> Vec<(Value, Value)> {
    vec![(text("hmac-secret"), map(input))]
}

fn ext_of(assertion: &Value) -> Value {
    auth_data(assertion, 2)
        .extensions
        .unwrap_or(Value::Map(Vec::new()))
}

fn pin(s: &str) -> SecretString {
    SecretString::new(s.to_string())
}

#[test]
fn hmac_secret_outputs_agree_across_protocols_and_differ_with_uv() {
    let (mut c, _control) = key("yubikey-5.7");
    c.set_pin(PinProtocol::Two, &pin(PIN)).unwrap();
    let mc = c
        .get_pin_uv_auth_token_using_pin_with_permissions(
            PinProtocol::Two,
            &pin(PIN),
            Permissions::MC,
            Some(RP),
        )
        .unwrap();
    let r = make_credential(
        &mut c,
        b"user-hs",
        false,
        vec![(text("hmac-secret"), Value::from(true))],
        Some(&mc),
    )
    .unwrap();
    assert_eq!(
        auth_data(&r, 2).extensions,
        Some(map(vec![(text("hmac-secret"), Value::from(true))]))
    );
    let id = credential_id(&r);
    let (salt1, salt2) = ([0x11u8; 32], [0x22u8; 32]);
    let mut outputs = Vec::new();
    for protocol in [PinProtocol::One, PinProtocol::Two] {
        for uv in [false, true] {
            let tok = uv.then(|| {
                c.get_pin_uv_auth_token_using_pin_with_permissions(
                    protocol,
                    &pin(PIN),
                    Permissions::GA,
                    Some(RP),
                )
                .unwrap()
            });
            let (shared, input) = hmac_secret_input(&mut c, protocol, &[salt1, salt2].concat());
            let a = get_assertion(&mut c, &id, hmac_secret(input), tok.as_ref()).unwrap();
            let ad = auth_data(&a, 2);
            assert_ne!(ad.flags & AuthenticatorData::FLAG_ED, 0);
            assert_eq!(ad.flags & AuthenticatorData::FLAG_UV != 0, uv);
            let enc = ext_of(&a)
                .get("hmac-secret")
                .unwrap()
                .as_bytes()
                .unwrap()
                .to_vec();
            let plain = shared.decrypt(&enc).unwrap().expose().to_vec();
            assert_eq!(plain.len(), 64);
            outputs.push(((protocol, uv), plain));
        }
    }
    let out = |p, uv| {
        outputs
            .iter()
            .find(|(k, _)| *k == (p, uv))
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(out(PinProtocol::One, false), out(PinProtocol::Two, false));
    assert_eq!(out(PinProtocol::One, true), out(PinProtocol::Two, true));
    assert_ne!(out(PinProtocol::One, false), out(PinProtocol::One, true));
    let without_uv = out(PinProtocol::One, false);
    assert_ne!(without_uv[..32], without_uv[32..]);
    // One salt gives the first half of the two-salt output.
    let (shared, input) = hmac_secret_input(&mut c, PinProtocol::Two, &salt1);
    let a = get_assertion(&mut c, &id, hmac_secret(input), None).unwrap();
    let enc = ext_of(&a)
        .get("hmac-secret")
        .unwrap()
        .as_bytes()
        .unwrap()
        .to_vec();
    assert_eq!(enc.len(), 16 + 32);
    assert_eq!(shared.decrypt(&enc).unwrap().expose(), &without_uv[..32]);
}

#[test]
fn hmac_secret_malformed_inputs_get_the_errors_of_section_12_5() {
    let (mut c, _control) = key("yubikey-5.7");
    let r = make_credential(
        &mut c,
        b"u",
        true,
        vec![(text("hmac-secret"), Value::from(true))],
        None,
    )
    .unwrap();
    let id = credential_id(&r);
    let p = PinProtocol::Two;
    for missing in [1, 2, 3] {
        let (_, mut input) = hmac_secret_input(&mut c, p, &[1; 32]);
        input.retain(|(k, _)| *k != int(missing));
        let e = get_assertion(&mut c, &id, hmac_secret(input), None).unwrap_err();
        assert_eq!(e, StatusCode::MISSING_PARAMETER, "without key {missing}");
    }
    let (_, mut input) = hmac_secret_input(&mut c, p, &[1; 32]);
    input[2].1 = Value::from(vec![0u8; 32]);
    let e = get_assertion(&mut c, &id, hmac_secret(input), None).unwrap_err();
    assert_eq!(e, StatusCode::PIN_AUTH_INVALID);
    for bad_len in [16usize, 48, 96] {
        let (_, input) = hmac_secret_input(&mut c, p, &vec![1; bad_len]);
        let e = get_assertion(&mut c, &id, hmac_secret(input), None).unwrap_err();
        assert_eq!(e, StatusCode::INVALID_LENGTH, "{bad_len}-byte salts");
    }
    let (_, mut input) = hmac_secret_input(&mut c, p, &[1; 32]);
    input[3].1 = int(3);
    let e = get_assertion(&mut c, &id, hmac_secret(input), None).unwrap_err();
    assert_eq!(e, StatusCode::INVALID_PARAMETER);
    let e = get_assertion(
        &mut c,
        &id,
        vec![(text("hmac-secret"), Value::from(true))],
        None,
    )
    .unwrap_err();
    assert_eq!(e, StatusCode::CBOR_UNEXPECTED_TYPE);
    // Protocol 1 is the default when key 4 is absent.
    let (shared, mut input) = hmac_secret_input(&mut c, PinProtocol::One, &[1; 32]);
    input.pop();
    let a = get_assertion(&mut c, &id, hmac_secret(input), None).unwrap();
    let enc = ext_of(&a)
        .get("hmac-secret")
        .unwrap()
        .as_bytes()
        .unwrap()
        .to_vec();
    assert_eq!(shared.decrypt(&enc).unwrap().expose().len(), 32);
    // Protocol 2 is refused on a profile that only has protocol 1.
    let (mut c, _control) = key("yubikey-5.2");
    let r = make_credential(
        &mut c,
        b"u",
        false,
        vec![(text("hmac-secret"), Value::from(true))],
        None,
    )
    .unwrap();
    let id = credential_id(&r);
    let (_, input) = hmac_secret_input(&mut c, PinProtocol::One, &[1; 32]);
    let mut two = input.clone();
    two[3].1 = int(2);
    assert!(get_assertion(&mut c, &id, hmac_secret(input), None).is_ok());
    let e = get_assertion(&mut c, &id, hmac_secret(two), None).unwrap_err();
    assert_eq!(e, StatusCode::INVALID_PARAMETER);
}

#[test]
fn hmac_secret_answers_only_for_credentials_made_with_it() {
    let (mut c, _control) = key("yubikey-5.7");
    for (rk, with) in [(false, false), (true, false), (false, true)] {
        let ext = if with {
            vec![(text("hmac-secret"), Value::from(true))]
        } else {
            vec![]
        };
        let r = make_credential(&mut c, &[rk as u8, with as u8], rk, ext, None).unwrap();
        let id = credential_id(&r);
        let (_, input) = hmac_secret_input(&mut c, PinProtocol::Two, &[3; 32]);
        let a = get_assertion(&mut c, &id, hmac_secret(input), None).unwrap();
        let ad = auth_data(&a, 2);
        assert_eq!(ad.extensions.is_some(), with, "rk {rk} hmac-secret {with}");
        assert_eq!(ad.flags & AuthenticatorData::FLAG_ED != 0, with);
    }
}

#[test]
fn cred_blob_and_large_blob_key_are_stored_and_returned() {
    let (mut c, control) = key("yubikey-5.7");
    let blob = vec![0x5au8; 32];
    let r = make_credential(
        &mut c,
        b"u-blob",
        true,
        vec![
            (text("credBlob"), Value::from(blob.clone())),
            (text("largeBlobKey"), Value::from(true)),
        ],
        None,
    )
    .unwrap();
    assert_eq!(
        auth_data(&r, 2).extensions,
        Some(map(vec![(text("credBlob"), Value::from(true))]))
    );
    let lbk = r.get(5).unwrap().as_bytes().unwrap().to_vec();
    assert_eq!(lbk.len(), 32);
    let id = credential_id(&r);
    let want = vec![
        (text("credBlob"), Value::from(true)),
        (text("largeBlobKey"), Value::from(true)),
    ];
    let a = get_assertion(&mut c, &id, want.clone(), None).unwrap();
    assert_eq!(a.get(7).unwrap().as_bytes().unwrap(), lbk.as_slice());
    assert_eq!(
        ext_of(&a),
        map(vec![(text("credBlob"), Value::from(blob.clone()))])
    );
    // Without the inputs, neither comes back.
    let a = get_assertion(&mut c, &id, vec![], None).unwrap();
    assert!(a.get(7).is_none() && auth_data(&a, 2).extensions.is_none());
    // Both survive a power cycle (they live in the credential store).
    control.power_cycle();
    let mut c = reopen(&control);
    let a = get_assertion(&mut c, &id, want, None).unwrap();
    assert_eq!(a.get(7).unwrap().as_bytes().unwrap(), lbk.as_slice());
    // A second credential gets its own key.
    let r2 = make_credential(
        &mut c,
        b"u-blob-2",
        true,
        vec![(text("largeBlobKey"), Value::from(true))],
        None,
    )
    .unwrap();
    assert_ne!(r2.get(5).unwrap().as_bytes().unwrap(), lbk.as_slice());
}

#[test]
fn cred_blob_over_the_limit_or_non_resident_is_not_stored() {
    let (mut c, _control) = key("yubikey-5.7");
    let too_long = make_credential(
        &mut c,
        b"u-33",
        true,
        vec![(text("credBlob"), Value::from(vec![1u8; 33]))],
        None,
    )
    .unwrap();
    assert_eq!(
        auth_data(&too_long, 2).extensions,
        Some(map(vec![(text("credBlob"), Value::from(false))]))
    );
    let id = credential_id(&too_long);
    let a = get_assertion(
        &mut c,
        &id,
        vec![(text("credBlob"), Value::from(true))],
        None,
    )
    .unwrap();
    assert_eq!(
        ext_of(&a),
        map(vec![(text("credBlob"), Value::from(Vec::<u8>::new()))])
    );
    let nrk = make_credential(
        &mut c,
        b"u-nrk",
        false,
        vec![(text("credBlob"), Value::from(vec![1u8; 4]))],
        None,
    )
    .unwrap();
    assert_eq!(
        auth_data(&nrk, 2).extensions,
        Some(map(vec![(text("credBlob"), Value::from(false))]))
    );
    // largeBlobKey needs rk and accepts only true (§12.3).
    let e = make_credential(
        &mut c,
        b"u-x",
        false,
        vec![(text("largeBlobKey"), Value::from(true))],
        None,
    )
    .unwrap_err();
    assert_eq!(e, StatusCode::INVALID_OPTION);
    let e = make_credential(
        &mut c,
        b"u-x",
        true,
        vec![(text("largeBlobKey"), Value::from(false))],
        None,
    )
    .unwrap_err();
    assert_eq!(e, StatusCode::INVALID_OPTION);
}

#[test]
fn get_info_advertises_blob_limits_only_with_the_features() {
    for (profile, lb, cb) in [
        ("yubikey-5.7", Some(4096), Some(32)),
        ("security-key-5.7", Some(4096), Some(32)),
        ("yubikey-5.4", None, None),
        ("yubikey-5.2", None, None),
    ] {
        let (mut c, _control) = key(profile);
        let info = c.get_info().unwrap();
        assert_eq!(info.max_serialized_large_blob_array, lb, "{profile}");
        assert_eq!(info.max_cred_blob_length, cb, "{profile}");
        assert_eq!(info.option("largeBlobs") == Some(true), lb.is_some());
        assert_eq!(info.has_extension("credBlob"), cb.is_some());
        if lb.is_none() {
            let e = call(
                &mut c,
                CtapCommand::LARGE_BLOBS,
                map(vec![(int(1), int(10)), (int(3), int(0))]),
            )
            .unwrap_err();
            assert_eq!(e, StatusCode::INVALID_COMMAND);
        }
    }
}

/// The serialized array of `entries`: CBOR ‖ LEFT(SHA-256, 16).
fn serialized(entries: Vec<Value>) -> Vec<u8> {
    let mut data = cbor::encode(&Value::Array(entries));
    let check = Sha256::digest(&data);
    data.extend_from_slice(&check[..16]);
    data
}

fn lb_get(c: &mut Dev, offset: usize, get: usize) -> Result<Vec<u8>, StatusCode> {
    let r = call(
        c,
        CtapCommand::LARGE_BLOBS,
        map(vec![
            (int(1), int(get as i64)),
            (int(3), int(offset as i64)),
        ]),
    )?;
    Ok(r.get(1).unwrap().as_bytes().unwrap().to_vec())
}

fn lb_read_all(c: &mut Dev) -> Vec<u8> {
    let frag = c.get_info().unwrap().max_msg_size.unwrap() as usize - 64;
    let mut out = Vec::new();
    loop {
        let part = lb_get(c, out.len(), frag).unwrap();
        out.extend_from_slice(&part);
        if part.len() < frag {
            return out;
        }
    }
}

fn lb_set(
    c: &mut Dev,
    offset: usize,
    fragment: &[u8],
    length: Option<usize>,
    token: Option<&PinUvAuthToken>,
) -> Result<(), StatusCode> {
    let mut m = vec![
        (int(2), Value::from(fragment.to_vec())),
        (int(3), int(offset as i64)),
    ];
    if let Some(l) = length {
        m.push((int(4), int(l as i64)));
    }
    if let Some(t) = token {
        let mut msg = vec![0xffu8; 32];
        msg.extend_from_slice(&[0x0c, 0x00]);
        msg.extend_from_slice(&(offset as u32).to_le_bytes());
        msg.extend_from_slice(&Sha256::digest(fragment));
        m.push((int(5), Value::from(t.authenticate(&msg))));
        m.push((int(6), int(t.protocol().number() as i64)));
    }
    call(c, CtapCommand::LARGE_BLOBS, map(m)).map(|_| ())
}

fn lb_write(c: &mut Dev, data: &[u8], token: Option<&PinUvAuthToken>) -> Result<(), StatusCode> {
    let frag = 1200 - 64;
    for (i, chunk) in data.chunks(frag).enumerate() {
        let length = (i == 0).then_some(data.len());
        lb_set(c, i * frag, chunk, length, token)?;
    }
    Ok(())
}

#[test]
fn large_blobs_fragmented_write_persists_over_power_cycle_and_reset_clears_it() {
    let (mut c, control) = key("yubikey-5.7");
    let factory = serialized(vec![]);
    assert_eq!(lb_read_all(&mut c), factory);
    let data = serialized(vec![map(vec![(int(1), Value::from(vec![0xabu8; 3000]))])]);
    assert!(data.len() > 2 * (1200 - 64));
    lb_write(&mut c, &data, None).unwrap();
    assert_eq!(lb_read_all(&mut c), data);
    // A get past the end is refused; one at the end is empty.
    assert_eq!(lb_get(&mut c, data.len(), 10).unwrap(), Vec::<u8>::new());
    assert_eq!(
        lb_get(&mut c, data.len() + 1, 10).unwrap_err(),
        StatusCode::INVALID_PARAMETER
    );
    control.power_cycle();
    let mut c = reopen(&control);
    assert_eq!(lb_read_all(&mut c), data);
    call(&mut c, CtapCommand::RESET, map(vec![])).unwrap();
    assert_eq!(lb_read_all(&mut c), factory);
}

#[test]
fn large_blobs_write_rules_of_section_6_10() {
    let (mut c, control) = key("yubikey-5.7");
    let old = serialized(vec![Value::from(1)]);
    lb_write(&mut c, &old, None).unwrap();
    let data = serialized(vec![map(vec![(int(1), Value::from(vec![7u8; 100]))])]);
    // An interrupted write is forgotten at power-up; the stored array stays.
    lb_set(&mut c, 0, &data[..50], Some(data.len()), None).unwrap();
    assert_eq!(lb_read_all(&mut c), old);
    control.power_cycle();
    let mut c = reopen(&control);
    assert_eq!(
        lb_set(&mut c, 50, &data[50..], None, None).unwrap_err(),
        StatusCode::INVALID_SEQ
    );
    assert_eq!(lb_read_all(&mut c), old);
    // Too big for the key, too small for a checksum, bad checksum.
    assert_eq!(
        lb_set(&mut c, 0, &data[..10], Some(4097), None).unwrap_err(),
        StatusCode::LARGE_BLOB_STORAGE_FULL
    );
    assert_eq!(
        lb_set(&mut c, 0, &data[..16], Some(16), None).unwrap_err(),
        StatusCode::INVALID_PARAMETER
    );
    let mut bad = data.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(
        lb_write(&mut c, &bad, None).unwrap_err(),
        StatusCode::INTEGRITY_FAILURE
    );
    assert_eq!(lb_read_all(&mut c), old);
    // get and set together, neither, no offset.
    let both = map(vec![
        (int(1), int(1)),
        (int(2), Value::from(vec![0u8])),
        (int(3), int(0)),
    ]);
    assert_eq!(
        call(&mut c, CtapCommand::LARGE_BLOBS, both).unwrap_err(),
        StatusCode::INVALID_PARAMETER
    );
    assert_eq!(
        call(
            &mut c,
            CtapCommand::LARGE_BLOBS,
            map(vec![(int(3), int(0))])
        )
        .unwrap_err(),
        StatusCode::INVALID_PARAMETER
    );
    assert_eq!(
        call(
            &mut c,
            CtapCommand::LARGE_BLOBS,
            map(vec![(int(1), int(1))])
        )
        .unwrap_err(),
        StatusCode::MISSING_PARAMETER
    );
    assert_eq!(
        lb_get(&mut c, 0, 1137).unwrap_err(),
        StatusCode::INVALID_LENGTH
    );

    // With a PIN: lbw token required, over the §6.10.2 message.
    c.set_pin(PinProtocol::Two, &pin(PIN)).unwrap();
    assert_eq!(
        lb_write(&mut c, &data, None).unwrap_err(),
        StatusCode::PUAT_REQUIRED
    );
    for protocol in [PinProtocol::One, PinProtocol::Two] {
        let cm = c
            .get_pin_uv_auth_token_using_pin_with_permissions(
                protocol,
                &pin(PIN),
                Permissions::CM,
                None,
            )
            .unwrap();
        assert_eq!(
            lb_write(&mut c, &data, Some(&cm)).unwrap_err(),
            StatusCode::PIN_AUTH_INVALID
        );
        let lbw = c
            .get_pin_uv_auth_token_using_pin_with_permissions(
                protocol,
                &pin(PIN),
                Permissions::LBW,
                None,
            )
            .unwrap();
        // A fragment authenticated for another offset fails.
        let mut m = vec![0xffu8; 32];
        m.extend_from_slice(&[0x0c, 0x00]);
        m.extend_from_slice(&1u32.to_le_bytes());
        m.extend_from_slice(&Sha256::digest(&data));
        let wrong = map(vec![
            (int(2), Value::from(data.clone())),
            (int(3), int(0)),
            (int(4), int(data.len() as i64)),
            (int(5), Value::from(lbw.authenticate(&m))),
            (int(6), int(protocol.number() as i64)),
        ]);
        assert_eq!(
            call(&mut c, CtapCommand::LARGE_BLOBS, wrong).unwrap_err(),
            StatusCode::PIN_AUTH_INVALID
        );
        lb_write(&mut c, &data, Some(&lbw)).unwrap();
        assert_eq!(lb_read_all(&mut c), data);
        lb_write(&mut c, &old, Some(&lbw)).unwrap();
    }
}

#[test]
fn profiles_must_state_blob_limits_for_what_they_advertise() {
    let text = include_str!("../../firmware-profiles/yubikey-5.7.toml");
    assert!(FirmwareProfile::from_toml(text).is_ok());
    for (from, to) in [
        ("max_cred_blob_length = 32\n", ""),
        ("max_cred_blob_length = 32\n", "max_cred_blob_length = 31\n"),
        ("max_serialized_large_blob_array = 4096\n", ""),
        (
            "max_serialized_large_blob_array = 4096\n",
            "max_serialized_large_blob_array = 1023\n",
        ),
        ("largeBlobs = true\n", "largeBlobs = false\n"),
        (", \"credBlob\"", ""),
    ] {
        assert!(text.contains(from), "{from}");
        let changed = text.replacen(from, to, 1);
        assert!(
            FirmwareProfile::from_toml(&changed).is_err(),
            "accepted after replacing {from:?} with {to:?}"
        );
    }
}

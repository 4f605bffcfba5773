//! Known-answer tests against tests/vectors/pin-protocols.json (made with
//! python-fido2; provenance inside the file) and round trips.

use super::*;
use crate::cbor;
use serde_json::Value as Json;
use sha2::Digest;

fn vectors() -> Json {
    serde_json::from_str(include_str!("../../tests/vectors/pin-protocols.json")).unwrap()
}

fn h(v: &Json, key: &str) -> Vec<u8> {
    hex::decode(v[key].as_str().unwrap_or_else(|| panic!("{key}"))).unwrap()
}

fn scalar(v: &Json, key: &str) -> KeyAgreement {
    let s = v[key].as_str().unwrap();
    let s = if s.len() % 2 == 1 {
        format!("0{s}")
    } else {
        s.to_owned()
    };
    KeyAgreement::from_scalar(&hex::decode(s).unwrap()).unwrap()
}

#[test]
fn key_agreement_matches_python_fido2() {
    let v = vectors();
    let auth = scalar(&v, "authenticator_scalar");
    let plat = scalar(&v, "platform_scalar");
    let (ax, ay) = auth.public_key().coordinates();
    assert_eq!(
        (ax.to_vec(), ay.to_vec()),
        (h(&v, "authenticator_x"), h(&v, "authenticator_y"))
    );
    let cose = plat.public_key().to_cbor();
    assert_eq!(cbor::encode(&cose), h(&v, "platform_key_agreement_cbor"));
    // Both sides agree on Z.
    let z = h(&v, "z");
    assert_eq!(plat.ecdh(&auth.public_key()).expose(), &z);
    assert_eq!(auth.ecdh(&CoseKey::from_cbor(&cose).unwrap()).expose(), &z);
}

#[test]
fn protocol_operations_match_python_fido2() {
    let v = vectors();
    let z = h(&v, "z");
    let iv: [u8; 16] = h(&v, "iv_v2").try_into().unwrap();
    let token = h(&v, "token");
    let pin = SecretString::new(v["pin"].as_str().unwrap().to_owned());
    assert_eq!(pin_hash(&pin).expose(), &h(&v, "pin_hash_left16"));
    assert_eq!(pad_pin(&pin).unwrap().expose(), &h(&v, "padded_pin"));
    for (num, protocol) in [("1", PinProtocol::One), ("2", PinProtocol::Two)] {
        let p = &v["protocols"][num];
        let ss = SharedSecret::from_z(protocol, &z);
        assert_eq!(ss.expose_bytes(), h(p, "shared_secret"), "protocol {num}");
        let pin_hash_enc = ss.encrypt_with_iv(pin_hash(&pin).expose(), &iv).unwrap();
        assert_eq!(pin_hash_enc, h(p, "pin_hash_enc"), "protocol {num}");
        let new_pin_enc = ss
            .encrypt_with_iv(pad_pin(&pin).unwrap().expose(), &iv)
            .unwrap();
        assert_eq!(new_pin_enc, h(p, "new_pin_enc"), "protocol {num}");
        assert_eq!(ss.authenticate(&new_pin_enc), h(p, "set_pin_auth"));
        let change = [new_pin_enc.as_slice(), &pin_hash_enc].concat();
        assert_eq!(ss.authenticate(&change), h(p, "change_pin_auth"));
        assert!(ss.verify(&change, &h(p, "change_pin_auth")));
        // The token comes back encrypted; decrypt recovers it.
        assert_eq!(ss.decrypt(&h(p, "token_enc")).unwrap().expose(), &token);
        assert_eq!(ss.encrypt_with_iv(&token, &iv).unwrap(), h(p, "token_enc"));
        // Token MACs: config (§6.11) and makeCredential clientDataHash.
        let msg = h(p, "config_message");
        assert_eq!(authenticate(protocol, &token, &msg), h(p, "config_auth"));
        assert!(verify(protocol, &token, &msg, &h(p, "config_auth")));
        let cdh = sha2::Sha256::digest(br#"{"type":"webauthn.create"}"#);
        assert_eq!(authenticate(protocol, &token, &cdh), h(p, "cdh_auth"));
    }
}

#[test]
fn protocol_two_macs_are_full_length_and_never_truncated() {
    let token = [0x11; 32];
    let mac = authenticate(PinProtocol::Two, &token, b"m");
    assert_eq!(mac.len(), 32);
    // A v1-length (truncated) MAC must not verify under v2 (YSA-2025-02).
    assert!(!verify(PinProtocol::Two, &token, b"m", &mac[..16]));
    assert!(verify(PinProtocol::One, &token, b"m", &mac[..16]));
    let mut bad = mac.clone();
    bad[31] ^= 1;
    assert!(!verify(PinProtocol::Two, &token, b"m", &bad));
}

#[test]
fn random_iv_round_trip_and_length_errors() {
    let ss = SharedSecret::from_z(PinProtocol::Two, &[7; 32]);
    let a = ss.encrypt(&[1; 32]).unwrap();
    let b = ss.encrypt(&[1; 32]).unwrap();
    assert_eq!(a.len(), 48);
    assert_ne!(a[..16], b[..16], "IV must be random");
    assert_eq!(ss.decrypt(&a).unwrap().expose(), &vec![1; 32]);
    assert_eq!(
        ss.encrypt(&[0; 15]).unwrap_err(),
        PinError::PlaintextLength(15)
    );
    assert_eq!(
        ss.decrypt(&[0; 15]).unwrap_err(),
        PinError::CiphertextLength(15)
    );
    assert_eq!(
        ss.decrypt(&[0; 33]).unwrap_err(),
        PinError::CiphertextLength(33)
    );
    let one = SharedSecret::from_z(PinProtocol::One, &[7; 32]);
    assert_eq!(
        one.decrypt(&[0; 17]).unwrap_err(),
        PinError::CiphertextLength(17)
    );
    assert_eq!(one.encrypt(&[0; 16]).unwrap().len(), 16);
    assert!(SharedSecret::from_bytes(PinProtocol::Two, SecretBytes::new(vec![0; 32])).is_err());
}

#[test]
fn encapsulate_agrees_with_the_authenticator() {
    let auth = KeyAgreement::generate();
    for protocol in [PinProtocol::One, PinProtocol::Two] {
        let (platform_key, platform_ss) = encapsulate(protocol, &auth.public_key());
        let auth_ss = auth.shared_secret(protocol, &platform_key);
        assert_eq!(platform_ss.expose_bytes(), auth_ss.expose_bytes());
        let ct = platform_ss.encrypt(&[9; 64]).unwrap();
        assert_eq!(auth_ss.decrypt(&ct).unwrap().expose(), &vec![9; 64]);
    }
}

#[test]
fn bad_cose_keys_are_refused() {
    let good = KeyAgreement::generate().public_key().to_cbor();
    assert!(CoseKey::from_cbor(&good).is_ok());
    let (x, _) = KeyAgreement::generate().public_key().coordinates();
    let off_curve = cbor::Value::map([
        (cbor::Value::from(1), cbor::Value::from(2)),
        (cbor::Value::from(-1), cbor::Value::from(1)),
        (cbor::Value::from(-2), cbor::Value::from(x.to_vec())),
        (cbor::Value::from(-3), cbor::Value::from(vec![0u8; 32])),
    ]);
    assert_eq!(
        CoseKey::from_cbor(&off_curve).unwrap_err(),
        PinError::InvalidKey("point is not on P-256")
    );
    let wrong_crv = cbor::Value::map([(1, 2), (-1, 2)]);
    assert!(CoseKey::from_cbor(&wrong_crv).is_err());
    assert!(CoseKey::from_cbor(&cbor::Value::Null).is_err());
    assert!(KeyAgreement::from_scalar(&[0; 32]).is_err());
    assert!(KeyAgreement::from_scalar(&[0xff; 32]).is_err());
    assert!(KeyAgreement::from_scalar(&[1; 33]).is_err());
}

#[test]
fn pin_padding_rules() {
    let p = |s: &str| SecretString::new(s.to_owned());
    assert_eq!(pad_pin(&p("123")).unwrap_err(), PinError::PinLength(3));
    assert_eq!(
        pad_pin(&p(&"1".repeat(64))).unwrap_err(),
        PinError::PinLength(64)
    );
    let padded = pad_pin(&p(&"9".repeat(63))).unwrap();
    assert_eq!(
        unpad_pin(padded.expose()).unwrap().expose(),
        &"9".repeat(63)
    );
    assert_eq!(unpad_pin(&[0x31; 64]).unwrap_err(), PinError::PaddedPin);
    assert_eq!(unpad_pin(&[0x31; 63]).unwrap_err(), PinError::PaddedPin);
    let mut bad_utf8 = vec![0u8; 64];
    bad_utf8[..4].copy_from_slice(&[0xff, 0xfe, 0x31, 0x32]);
    assert_eq!(unpad_pin(&bad_utf8).unwrap_err(), PinError::PaddedPin);
    assert_eq!(
        format!("{:?}", pad_pin(&p("583920")).unwrap()),
        "Secret(<redacted>)"
    );
    assert!(!format!("{:?}", KeyAgreement::generate()).contains("SecretKey {"));
}

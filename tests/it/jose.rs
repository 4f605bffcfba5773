//! Integration tests: jose, webauthn and the reference IdP.
//!
//! - `end_to_end_*`: IdP enroll → a software station (jose + webauthn, a test
//!   attestation CA) → IdP activate.
//! - `refusal_table`: ≥20 refused inputs, each with its stable reason code.
//! - `cli_paths_never_write_pin_or_plaintext`: the CLI paths in a temp dir,
//!   every file and all output grepped for the PIN and payload markers.
//! - `interop_jwcrypto_*`: both directions against jwcrypto (Python).

use crate::util::station_bin;
use prereg_station::idp::wire::{ResultItem, ShipmentState};
use prereg_station::idp::{EnrollOptions, Idp, ProductData, Shipment, ShipmentResult};
use prereg_station::jose::jwe::{self, KeyManagement};
use prereg_station::jose::jwk::{EcJwk, KeyUse};
use prereg_station::jose::keys::NamedKey;
use prereg_station::jose::request::Attestation;
use prereg_station::jose::response::{
    open_credential_response, open_pin_response, seal_credential_response, seal_pin_response,
    DeviceIdentity, MadeCredential,
};
use prereg_station::jose::signed;
use prereg_station::jose::{
    b64url_decode, b64url_encode, cty, decrypt_job, IdpSigners, RequestPolicy, StationKeys,
};
use prereg_station::secret::SecretString;
use prereg_station::webauthn::testkit::SoftCa;
use prereg_station::webauthn::{self, Expected, TrustRoots};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const NOW: i64 = 1_764_320_000;
const AAGUID: [u8; 16] = [
    0xa2, 0x53, 0x42, 0xc0, 0x3c, 0xdc, 0x44, 0x14, 0x8e, 0x46, 0xf4, 0x80, 0x7f, 0xca, 0x51, 0x1c,
];

fn random_pin() -> SecretString {
    use rand::Rng;
    SecretString::new(format!(
        "{:06}",
        rand::thread_rng().gen_range(0..1_000_000u32)
    ))
}

/// What a station does with one shipment, minus the USB: decrypt, attest
/// (software CA), verify on the spot, seal responses. Returns the result and the PIN.
fn software_station(
    keys: &StationKeys,
    policy: &RequestPolicy<'_>,
    ca: &SoftCa,
    roots: &TrustRoots,
    shipment: &Shipment,
    serial: &str,
    now: i64,
) -> (ShipmentResult, SecretString) {
    let item = &shipment.shipment_items[0];
    let pc = &item.product_customizations[0];
    let reqs = decrypt_job(
        keys,
        policy,
        &pc.fido_pin_request,
        &pc.fido_credential_requests,
        now,
    )
    .expect("job decrypts");
    // A key keeps one discoverable credential per (rp.id, user handle): the
    // IdP must never ask for two on the same pair (the station refuses that).
    let mut slots: Vec<_> = reqs
        .credentials
        .iter()
        .map(|c| (c.rp_id.clone(), c.user_handle.clone()))
        .collect();
    slots.sort();
    slots.dedup();
    assert_eq!(
        slots.len(),
        reqs.credentials.len(),
        "one credential per RP and user"
    );
    let device = DeviceIdentity {
        serial_number: serial.into(),
        firmware_version: "5.7.1".into(),
    };
    let pin = random_pin();
    let pin_jwe = seal_pin_response(keys, &reqs.pin, &device, &pin, now).unwrap();
    let mut cred_jwes = Vec::new();
    for c in &reqs.credentials {
        let cdj = webauthn::client_data_json(c.challenge.expose(), &c.origin);
        let cdh = webauthn::client_data_hash(&cdj);
        let (obj, cred_id) = ca.attest(&c.rp_id, &cdh, c.cred_protect.map(|p| p.value()));
        let expected = Expected {
            rp_id: &c.rp_id,
            client_data_hash: &cdh,
            require_uv: true,
            cred_protect: c.cred_protect.map(|p| p.value()),
            allow_none: false,
            now,
        };
        webauthn::verify_attestation_parts(&obj, &expected, roots).expect("genuine");
        let delivered = if c.attestation == Attestation::None {
            obj.to_none()
        } else {
            obj
        };
        let att = delivered.encode();
        let made = MadeCredential {
            aaguid: ca.aaguid,
            credential_id: &cred_id,
            client_data_json: &cdj,
            attestation_object: &att,
            transports: &["nfc", "usb"],
        };
        cred_jwes.push(seal_credential_response(keys, c, &device, &made, now).unwrap());
    }
    let result = ShipmentResult {
        shipment_id: shipment.shipment_id.clone(),
        shipment_state: ShipmentState {
            shipment_state_id: 103,
        },
        shipment_items: vec![ResultItem {
            product_id: item.product_id,
            product_data: vec![ProductData {
                serial_number: serial.into(),
                firmware_version: "5.7.1".into(),
                fido_pin_response: pin_jwe,
                fido_credential_responses: cred_jwes,
            }],
        }],
    };
    (result, pin)
}

fn enroll_opts(users: usize) -> EnrollOptions {
    EnrollOptions {
        users,
        now: NOW - 60,
        ..EnrollOptions::default()
    }
}

#[test]
fn end_to_end_enroll_program_activate() {
    let dir = tempfile::tempdir().unwrap();
    let keys = StationKeys::generate_ephemeral();
    let ca = SoftCa::new(AAGUID);
    let roots = TrustRoots::from_pem(ca.root_pem().as_bytes()).unwrap();
    let idp = Idp::open(dir.path()).unwrap();
    for (alg, attestation, creds) in [
        (KeyManagement::EcdhEsA256Kw, "direct", 1),
        (KeyManagement::EcdhEs, "none", 2),
    ] {
        let mut opts = enroll_opts(3);
        opts.alg = alg;
        opts.attestation = attestation.into();
        opts.credentials_per_user = creds;
        let shipments = idp.enroll(&keys.transport_jwks(), &opts).unwrap();
        assert_eq!(shipments.len(), 3);
        // What the IdP makes passes the station's own intake rules (SPEC §3).
        struct C19881;
        impl prereg_station::shipment::IntakePolicy for C19881 {
            fn product_known(&self, p: u32) -> bool {
                p == 1
            }
            fn customization_products(&self, c: &str) -> Option<Vec<u32>> {
                (c == "C19881").then(|| vec![1, 29])
            }
        }
        for s in &shipments {
            let job = s.validate(&C19881).expect("intake accepts IdP jobs");
            assert_eq!(job.credential_requests.len(), creds);
        }
        let mut results = Vec::new();
        let mut pins = Vec::new();
        for (i, s) in shipments.iter().enumerate() {
            let (r, pin) = software_station(
                &keys,
                &RequestPolicy::default(),
                &ca,
                &roots,
                s,
                &format!("1234567{i}"),
                NOW,
            );
            results.push(r);
            pins.push(pin);
        }
        let reports = idp.activate(&keys.signing_jwks(), &roots, &results, NOW);
        for (r, pin) in reports.iter().zip(&pins) {
            assert!(r.verified(), "{:?}", r.to_json(false));
            assert_eq!(r.credentials.len(), creds);
            assert_eq!(r.pin.as_ref().unwrap().expose(), pin.expose());
            assert!(!r.to_json(false).to_string().contains(pin.expose().as_str()));
            assert!(r.to_json(true).to_string().contains(pin.expose().as_str()));
        }

        // Credential responses swapped between two keys: the IdP notices.
        let mut swapped = results.clone();
        let a = swapped[0].shipment_items[0].product_data[0].clone();
        let b = swapped[1].shipment_items[0].product_data[0].clone();
        swapped[0].shipment_items[0].product_data[0].fido_credential_responses =
            b.fido_credential_responses;
        swapped[1].shipment_items[0].product_data[0].fido_pin_response = a.fido_pin_response;
        let reports = idp.activate(&keys.signing_jwks(), &roots, &swapped[..2], NOW);
        assert!(reports.iter().all(|r| !r.verified()));
        // One key reported for two shipments.
        let mut twice = results[..2].to_vec();
        twice[1].shipment_items[0].product_data[0].serial_number = twice[0].shipment_items[0]
            .product_data[0]
            .serial_number
            .clone();
        let reports = idp.activate(&keys.signing_jwks(), &roots, &twice, NOW);
        assert!(reports.iter().all(|r| r
            .failures
            .iter()
            .any(|f| f.starts_with("idp.duplicate_serial"))));
        // Signed by a key not in sign.jwks.
        let other = StationKeys::generate_ephemeral();
        let reports = idp.activate(&other.signing_jwks(), &roots, &results[..1], NOW);
        assert!(!reports[0].verified());
        assert!(reports[0].failures[0].starts_with("jose.kid_unknown"));
        // Unknown attestation root (direct only: none is not provable anyway).
        if attestation == "direct" {
            let stranger = SoftCa::new(AAGUID);
            let other_roots = TrustRoots::from_pem(stranger.root_pem().as_bytes()).unwrap();
            let reports = idp.activate(&keys.signing_jwks(), &other_roots, &results[..1], NOW);
            let f = reports[0].credentials[0].failure.as_deref().unwrap();
            assert!(f.starts_with("attestation.untrusted_root"), "{f}");
        }
    }
}

// ---- refusal table ---------------------------------------------------------

struct Fixture {
    keys: StationKeys,
    resp: NamedKey,
}

fn pin_plain(f: &Fixture) -> Value {
    json!({
        "v": 1, "userId": "00us2hPODQncCkxef0g3",
        "authenticatorEnrollmentIds": ["fwf2rovRxogXJ0nDd0g4"],
        "pinPolicy": {"length": 6, "forceChangePin": true, "minPinLength": 6},
        "responseKey": f.resp.public_jwk(KeyUse::Enc),
        "iat": NOW - 100, "exp": NOW + 3600
    })
}

fn cred_plain(f: &Fixture) -> Value {
    json!({
        "v": 1, "userId": "00us2hPODQncCkxef0g3",
        "authenticatorEnrollmentId": "fwf2rovRxogXJ0nDd0g4",
        "responseKey": f.resp.public_jwk(KeyUse::Enc),
        "origin": "https://myorg.okta.com",
        "publicKey": {
            "rp": {"id": "myorg.okta.com", "name": "MyOrg"},
            "user": {"id": b64url_encode([5u8; 16]), "name": "jan@example.com", "displayName": "Jan Lindberg"},
            "challenge": b64url_encode([9u8; 32]),
            "pubKeyCredParams": [{"type": "public-key", "alg": -7}, {"type": "public-key", "alg": -8}],
            "excludeCredentials": [],
            "authenticatorSelection": {"residentKey": "required", "userVerification": "required"},
            "attestation": "direct",
            "extensions": {"credentialProtectionPolicy": "userVerificationRequired",
                           "enforceCredentialProtectionPolicy": true, "minPinLength": true}
        },
        "iat": NOW - 100, "exp": NOW + 3600
    })
}

fn enc(f: &Fixture, v: &Value, content_type: &str) -> String {
    let t = &f.keys.transport_jwks().keys[0];
    jwe::encrypt(
        &serde_json::to_vec(v).unwrap(),
        &t.to_public_key().unwrap(),
        &t.kid,
        content_type,
        KeyManagement::EcdhEsA256Kw,
    )
    .unwrap()
}

/// Rewrites a JWE's protected header (the tag no longer matches, but every
/// header check runs before decryption).
fn with_header(jwe: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut parts: Vec<String> = jwe.split('.').map(String::from).collect();
    let mut h: Value = serde_json::from_slice(&b64url_decode(&parts[0]).unwrap()).unwrap();
    edit(&mut h);
    parts[0] = b64url_encode(serde_json::to_vec(&h).unwrap());
    parts.join(".")
}

fn with_part(jwe: &str, i: usize, edit: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut parts: Vec<String> = jwe.split('.').map(String::from).collect();
    let mut bytes = b64url_decode(&parts[i]).unwrap();
    edit(&mut bytes);
    parts[i] = b64url_encode(bytes);
    parts.join(".")
}

#[test]
fn refusal_table() {
    let f = Fixture {
        keys: StationKeys::generate_ephemeral(),
        resp: NamedKey::generate("idp-resp"),
    };
    let pin_ok = enc(&f, &pin_plain(&f), cty::PIN_REQUEST);
    let cred_ok = enc(&f, &cred_plain(&f), cty::CRED_REQUEST);
    // The base case passes: every refusal below is caused by its one change.
    decrypt_job(
        &f.keys,
        &RequestPolicy::default(),
        &pin_ok,
        std::slice::from_ref(&cred_ok),
        NOW,
    )
    .expect("base case is valid");

    let cred_with = |edit: &dyn Fn(&mut Value)| {
        let mut v = cred_plain(&f);
        edit(&mut v);
        enc(&f, &v, cty::CRED_REQUEST)
    };
    let pin_with = |edit: &dyn Fn(&mut Value)| {
        let mut v = pin_plain(&f);
        edit(&mut v);
        enc(&f, &v, cty::PIN_REQUEST)
    };
    let p256 = p256::SecretKey::random(&mut rand_core::OsRng);
    let p256_jwk = {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let pt = p256.public_key().to_encoded_point(false);
        json!({"kty": "EC", "crv": "P-256", "x": b64url_encode(pt.x().unwrap()), "y": b64url_encode(pt.y().unwrap())})
    };

    // (name, pin JWE, credential JWEs, expected code)
    let cases: Vec<(&str, String, Vec<String>, &str)> = vec![
        (
            "tampered ciphertext",
            pin_ok.clone(),
            vec![with_part(&cred_ok, 3, |b| b[0] ^= 1)],
            "jwe.tag_invalid",
        ),
        (
            "tampered tag",
            pin_ok.clone(),
            vec![with_part(&cred_ok, 4, |b| b[15] ^= 0x80)],
            "jwe.tag_invalid",
        ),
        (
            "tampered header (AAD)",
            with_header(&pin_ok, |h| h["x-extra"] = json!(1)),
            vec![cred_ok.clone()],
            "jwe.tag_invalid",
        ),
        (
            "tampered encrypted key",
            pin_ok.clone(),
            vec![with_part(&cred_ok, 1, |b| b[3] ^= 1)],
            "jwe.key_unwrap_failed",
        ),
        (
            "truncated tag",
            pin_ok.clone(),
            vec![with_part(&cred_ok, 4, |b| b.truncate(12))],
            "jwe.tag_length",
        ),
        (
            "IV not 96 bits",
            pin_ok.clone(),
            vec![with_part(&cred_ok, 2, |b| b.push(0))],
            "jwe.iv_invalid",
        ),
        (
            "expired",
            pin_with(&|v| v["exp"] = json!(NOW - 1)),
            vec![cred_ok.clone()],
            "request.expired",
        ),
        (
            "not yet valid",
            pin_ok.clone(),
            vec![cred_with(&|v| v["iat"] = json!(NOW + 3600))],
            "request.not_yet_valid",
        ),
        (
            "mis-bound userId",
            pin_ok.clone(),
            vec![cred_with(&|v| v["userId"] = json!("00uSOMEONEELSE"))],
            "request.user_mismatch",
        ),
        (
            "enrollment id not listed",
            pin_ok.clone(),
            vec![cred_with(&|v| {
                v["authenticatorEnrollmentId"] = json!("fwfOTHER")
            })],
            "request.enrollment_not_listed",
        ),
        (
            "duplicate enrollment",
            pin_ok.clone(),
            vec![cred_ok.clone(), cred_ok.clone()],
            "request.duplicate_enrollment",
        ),
        (
            "no credential request",
            pin_ok.clone(),
            vec![],
            "request.no_credential_request",
        ),
        (
            "wrong alg A128KW",
            with_header(&pin_ok, |h| h["alg"] = json!("ECDH-ES+A128KW")),
            vec![cred_ok.clone()],
            "jwe.alg_unsupported",
        ),
        (
            "alg dir",
            with_header(&pin_ok, |h| h["alg"] = json!("dir")),
            vec![cred_ok.clone()],
            "jwe.alg_unsupported",
        ),
        (
            "alg none",
            with_header(&pin_ok, |h| h["alg"] = json!("none")),
            vec![cred_ok.clone()],
            "jwe.alg_unsupported",
        ),
        (
            "alg RSA-OAEP-256",
            with_header(&pin_ok, |h| h["alg"] = json!("RSA-OAEP-256")),
            vec![cred_ok.clone()],
            "jwe.alg_unsupported",
        ),
        (
            "alg RSA1_5",
            pin_ok.clone(),
            vec![with_header(&cred_ok, |h| h["alg"] = json!("RSA1_5"))],
            "jwe.alg_unsupported",
        ),
        (
            "wrong enc A128GCM",
            with_header(&pin_ok, |h| h["enc"] = json!("A128GCM")),
            vec![cred_ok.clone()],
            "jwe.enc_unsupported",
        ),
        (
            "wrong enc A256CBC-HS512",
            pin_ok.clone(),
            vec![with_header(&cred_ok, |h| h["enc"] = json!("A256CBC-HS512"))],
            "jwe.enc_unsupported",
        ),
        (
            "wrong curve (epk P-256)",
            with_header(&pin_ok, |h| h["epk"] = p256_jwk.clone()),
            vec![cred_ok.clone()],
            "jose.curve_unsupported",
        ),
        (
            "epk not on curve",
            with_header(&pin_ok, |h| {
                let mut y = b64url_decode(h["epk"]["y"].as_str().unwrap()).unwrap();
                y[47] ^= 1;
                h["epk"]["y"] = json!(b64url_encode(y));
            }),
            vec![cred_ok.clone()],
            "jwe.epk_invalid",
        ),
        (
            "epk missing",
            with_header(&pin_ok, |h| {
                h.as_object_mut().unwrap().remove("epk");
            }),
            vec![cred_ok.clone()],
            "jwe.epk_invalid",
        ),
        (
            "missing kid",
            with_header(&pin_ok, |h| {
                h.as_object_mut().unwrap().remove("kid");
            }),
            vec![cred_ok.clone()],
            "jose.kid_missing",
        ),
        (
            "unknown kid",
            with_header(&pin_ok, |h| h["kid"] = json!("not-a-station-key")),
            vec![cred_ok.clone()],
            "jose.kid_unknown",
        ),
        (
            "crit header",
            with_header(&pin_ok, |h| h["crit"] = json!(["exp"])),
            vec![cred_ok.clone()],
            "jose.crit_unsupported",
        ),
        (
            "zip header",
            with_header(&pin_ok, |h| h["zip"] = json!("DEF")),
            vec![cred_ok.clone()],
            "jose.crit_unsupported",
        ),
        (
            "wrong cty: credential request in the PIN slot",
            cred_ok.clone(),
            vec![cred_ok.clone()],
            "jwe.cty_mismatch",
        ),
        (
            "wrong cty: PIN request in the credential list",
            pin_ok.clone(),
            vec![pin_ok.clone()],
            "jwe.cty_mismatch",
        ),
        (
            "ECDH-ES with an encrypted key",
            with_header(&pin_ok, |h| h["alg"] = json!("ECDH-ES")),
            vec![cred_ok.clone()],
            "jwe.encrypted_key_invalid",
        ),
        (
            "residentKey preferred",
            pin_ok.clone(),
            vec![cred_with(&|v| {
                v["publicKey"]["authenticatorSelection"]["residentKey"] = json!("preferred")
            })],
            "request.resident_key_not_required",
        ),
        (
            "short challenge (15 bytes)",
            pin_ok.clone(),
            vec![cred_with(&|v| {
                v["publicKey"]["challenge"] = json!(b64url_encode([1u8; 15]))
            })],
            "request.challenge_too_short",
        ),
        (
            "origin http",
            pin_ok.clone(),
            vec![cred_with(&|v| v["origin"] = json!("http://myorg.okta.com"))],
            "request.origin_invalid",
        ),
        (
            "origin of another site",
            pin_ok.clone(),
            vec![cred_with(&|v| v["origin"] = json!("https://evil-okta.com"))],
            "request.origin_invalid",
        ),
        (
            "ES256 not offered",
            pin_ok.clone(),
            vec![cred_with(&|v| {
                v["publicKey"]["pubKeyCredParams"] = json!([{"type": "public-key", "alg": -8}])
            })],
            "request.es256_missing",
        ),
        (
            "attestation indirect",
            pin_ok.clone(),
            vec![cred_with(&|v| {
                v["publicKey"]["attestation"] = json!("indirect")
            })],
            "request.attestation_unsupported",
        ),
        (
            "responseKey on P-256",
            pin_with(&|v| {
                v["responseKey"] = {
                    let mut k = p256_jwk.clone();
                    k["kid"] = json!("r");
                    k["use"] = json!("enc");
                    k
                }
            }),
            vec![cred_ok.clone()],
            "request.response_key_invalid",
        ),
        (
            "responseKey use sig",
            pin_ok.clone(),
            vec![cred_with(&|v| v["responseKey"]["use"] = json!("sig"))],
            "request.response_key_invalid",
        ),
        (
            "v = 2",
            pin_with(&|v| v["v"] = json!(2)),
            vec![cred_ok.clone()],
            "request.version",
        ),
        (
            "PIN length 8",
            pin_with(&|v| v["pinPolicy"]["length"] = json!(8)),
            vec![cred_ok.clone()],
            "request.pin_policy_invalid",
        ),
        (
            "missing userId",
            pin_with(&|v| {
                v.as_object_mut().unwrap().remove("userId");
            }),
            vec![cred_ok.clone()],
            "request.schema",
        ),
        (
            "bad JSON plaintext",
            enc(&f, &json!("not an object"), cty::PIN_REQUEST),
            vec![cred_ok.clone()],
            "request.schema",
        ),
        (
            "challenge not base64url",
            pin_ok.clone(),
            vec![cred_with(&|v| v["publicKey"]["challenge"] = json!("***"))],
            "request.schema",
        ),
        (
            "malformed compact (4 parts)",
            pin_ok.rsplit_once('.').unwrap().0.to_string(),
            vec![cred_ok.clone()],
            "jose.malformed",
        ),
        (
            "malformed compact (6 parts)",
            format!("{pin_ok}.AA"),
            vec![cred_ok.clone()],
            "jose.malformed",
        ),
        (
            "bad base64 (padding)",
            pin_ok.clone(),
            vec![{
                let mut p: Vec<String> = cred_ok.split('.').map(String::from).collect();
                p[2].push('=');
                p.join(".")
            }],
            "jose.bad_base64",
        ),
        (
            "bad base64 (alphabet)",
            format!("+{}", &pin_ok[1..]),
            vec![cred_ok.clone()],
            "jose.bad_base64",
        ),
        (
            "header not JSON",
            format!(
                "{}{}",
                b64url_encode(b"{alg"),
                &pin_ok[pin_ok.find('.').unwrap()..]
            ),
            vec![cred_ok.clone()],
            "jose.bad_header",
        ),
        (
            "oversized",
            "A".repeat(300 * 1024),
            vec![cred_ok.clone()],
            "jose.too_large",
        ),
    ];
    assert!(cases.len() >= 20);
    let mut table = String::new();
    for (name, pin, creds, code) in &cases {
        let err = decrypt_job(&f.keys, &RequestPolicy::default(), pin, creds, NOW)
            .map(|_| ())
            .expect_err(name);
        table.push_str(&format!("{name:<48} {}\n", err.code()));
        assert_eq!(err.code(), *code, "case {name:?}: {err}");
        // Errors never quote plaintext values.
        assert!(!err.to_string().contains("jan@example.com"), "{name}");
    }
    println!("{} refused inputs:\n{table}", cases.len());
}

#[test]
fn response_tamper_and_wrong_key_are_refused() {
    let f = Fixture {
        keys: StationKeys::generate_ephemeral(),
        resp: NamedKey::generate("idp-resp"),
    };
    let t = &f.keys.transport_jwks().keys[0];
    let seal_req = |v: Value, c: &str| {
        let plain = serde_json::to_vec(&v).unwrap();
        jwe::encrypt(
            &plain,
            &t.to_public_key().unwrap(),
            &t.kid,
            c,
            KeyManagement::EcdhEs,
        )
        .unwrap()
    };
    let pin_jwe = seal_req(pin_plain(&f), cty::PIN_REQUEST);
    let cred_jwe = seal_req(cred_plain(&f), cty::CRED_REQUEST);
    let reqs = decrypt_job(
        &f.keys,
        &RequestPolicy::default(),
        &pin_jwe,
        &[cred_jwe],
        NOW,
    )
    .unwrap();
    let device = DeviceIdentity {
        serial_number: "1".into(),
        firmware_version: "5.7.1".into(),
    };
    let pin = SecretString::new("482913".into());
    let sealed = seal_pin_response(&f.keys, &reqs.pin, &device, &pin, NOW).unwrap();
    let sign = f.keys.signing_jwks();
    let opened = open_pin_response(&sealed, &f.resp.kid, f.resp.secret(), &sign).unwrap();
    assert_eq!(opened.pin.expose(), "482913");
    assert_eq!(
        opened.request_digest,
        prereg_station::jose::response::request_digest(&pin_jwe)
    );
    let wrong = NamedKey::generate("x");
    let e = open_pin_response(&sealed, &f.resp.kid, wrong.secret(), &sign).unwrap_err();
    assert_eq!(e.code(), "jwe.key_unwrap_failed");
    let e = open_pin_response(&sealed, "other-kid", f.resp.secret(), &sign).unwrap_err();
    assert_eq!(e.code(), "jose.kid_unknown");
    let e = open_credential_response(&sealed, &f.resp.kid, f.resp.secret(), &sign).unwrap_err();
    assert_eq!(e.code(), "jws.typ_mismatch");
    let e = open_pin_response(
        &sealed,
        &f.resp.kid,
        f.resp.secret(),
        &StationKeys::generate_ephemeral().signing_jwks(),
    )
    .unwrap_err();
    assert_eq!(e.code(), "jose.kid_unknown");
    let _ = EcJwk::from_public(&f.resp.secret().public_key(), "k", KeyUse::Enc);
}

// ---- no PIN or plaintext on disk or in output --------------------------------

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(station_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn cli_paths_never_write_pin_or_plaintext() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let keys_dir = d.join("keys");
    let pub_dir = d.join("pub");
    let state = d.join("idp");
    let jobs = d.join("jobs.jsonl");
    let mut outputs = Vec::new();
    let (ok, o, e) = run(&["keys", "generate", "--dir", &s(&keys_dir)]);
    assert!(ok, "{e}");
    outputs.push(o + &e);
    let (ok, o, e) = run(&[
        "keys",
        "export-jwks",
        "--dir",
        &s(&keys_dir),
        "--out",
        &s(&pub_dir),
    ]);
    assert!(ok, "{e}");
    outputs.push(o + &e);
    let (ok, o, e) = run(&[
        "idp",
        "enroll",
        "--state",
        &s(&state),
        "--station-jwks",
        &s(&pub_dir.join("transport-keys.jwks")),
        "--users",
        "3",
        "--credentials",
        "2",
        "--out",
        &s(&jobs),
    ]);
    assert!(ok, "{e}");
    outputs.push(o + &e);

    // The station's part, in-process (its own CLI is the station's area).
    let keys = StationKeys::load_dir(&keys_dir).unwrap();
    let ca = SoftCa::new(AAGUID);
    let roots_pem = d.join("root.pem");
    std::fs::write(&roots_pem, ca.root_pem()).unwrap();
    let roots = TrustRoots::from_pem(ca.root_pem().as_bytes()).unwrap();
    let shipments: Vec<Shipment> = std::fs::read_to_string(&jobs)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(shipments.len(), 3);
    let outbox = d.join("outbox");
    std::fs::create_dir(&outbox).unwrap();
    let mut pins = Vec::new();
    let now = prereg_station::idp::unix_now();
    for (i, sh) in shipments.iter().enumerate() {
        let (r, pin) = software_station(
            &keys,
            &RequestPolicy::default(),
            &ca,
            &roots,
            sh,
            &format!("900000{i}"),
            now,
        );
        std::fs::write(
            outbox.join(format!("{}.json", r.shipment_id)),
            serde_json::to_vec(&r).unwrap(),
        )
        .unwrap();
        pins.push(pin.expose().clone());
    }

    let base = |json: bool, show: bool| {
        let mut a = vec![
            "idp".to_string(),
            "activate".into(),
            "--state".into(),
            s(&state),
            "--sign-jwks".into(),
            s(&pub_dir.join("sign.jwks")),
            "--roots".into(),
            s(&roots_pem),
        ];
        if json {
            a.push("--json".into());
        }
        if show {
            a.push("--show-pin".into());
        }
        a.push(s(&outbox));
        a
    };
    for json in [false, true] {
        let args = base(json, false);
        let (ok, o, e) = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(ok, "{o}{e}");
        let verified = o
            .lines()
            .filter(|l| {
                l.starts_with("VERIFIED ")
                    || serde_json::from_str::<Value>(l).is_ok_and(|v| v["verified"] == json!(true))
            })
            .count();
        assert_eq!(verified, 3, "{o}");
        outputs.push(o + &e);
    }

    // Markers: the PINs; the "pin" member of a decrypted PIN response; the
    // base64url of a JWS ES384 header (a decrypted response); names that
    // exist only inside request plaintexts.
    let mut markers: Vec<String> = pins.clone();
    markers.extend([
        "\"pin\"".into(),
        "eyJhbGciOiJFUzM4NCI".into(),
        "User 00u".into(),
        "@example.com".into(),
        "\"d\"".into(),
    ]);
    let mut files = Vec::new();
    all_files(d, &mut files);
    for f in &files {
        // Key files legitimately hold private keys ("d"); nothing else may.
        let is_key = f.extension().is_some_and(|x| x == "jwk");
        let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        for m in &markers {
            if is_key && m == "\"d\"" {
                continue;
            }
            assert!(!text.contains(m.as_str()), "{} contains {m}", f.display());
        }
        #[cfg(unix)]
        if is_key || f.starts_with(&state) {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", f.display());
        }
    }
    for o in &outputs {
        for m in &markers {
            assert!(!o.contains(m.as_str()), "output contains {m}: {o}");
        }
    }
    // Positive control: --show-pin prints exactly these PINs, so the scan above could see them.
    let args = base(false, true);
    let (ok, o, _) = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok);
    for p in &pins {
        assert!(o.contains(p.as_str()));
    }
    // A result for an unknown shipment fails with exit 1.
    let bogus = d.join("bogus.json");
    let mut r: Value = serde_json::from_slice(
        &std::fs::read(
            std::fs::read_dir(&outbox)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap(),
    )
    .unwrap();
    r["shipment_id"] = json!("NoSuchShipment");
    std::fs::write(&bogus, r.to_string()).unwrap();
    let out = Command::new(station_bin())
        .args([
            "idp",
            "activate",
            "--state",
            &s(&state),
            "--sign-jwks",
            &s(&pub_dir.join("sign.jwks")),
            "--roots",
            &s(&roots_pem),
            &s(&bogus),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

// ---- interop with jwcrypto -------------------------------------------------

/// The venv python with jwcrypto, or `None` (then the test says so and
/// returns, unless PREREG_REQUIRE_PEERS is set, as scripts/test.sh does).
fn peer_python() -> Option<PathBuf> {
    let p = std::env::var_os("PREREG_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let ok = Command::new(&p)
        .args(["-c", "import jwcrypto"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(p);
    }
    if std::env::var_os("PREREG_REQUIRE_PEERS").is_some() {
        panic!("PREREG_REQUIRE_PEERS is set but {} has no jwcrypto (run scripts/setup.sh --with-python)", p.display());
    }
    eprintln!(
        "SKIPPED: no jwcrypto peer at {} (scripts/setup.sh --with-python)",
        p.display()
    );
    None
}

fn peer(python: &Path, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/jose_peer.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jose_peer {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn interop_jwcrypto_requests_decrypt_here() {
    let Some(py) = peer_python() else { return };
    jwcrypto_requests_decrypt_with(&py, StationKeys::generate_ephemeral());
}

/// SPEC §14: jwcrypto's requests to a transport key held in SoftHSM2 decrypt
/// (the token derives Z).
#[test]
fn interop_jwcrypto_requests_decrypt_with_a_transport_key_in_the_hsm() {
    let Some(py) = peer_python() else { return };
    if !super::hsm::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token = super::hsm::throwaway_token(&dir.path().join("keys")).unwrap();
    let keys =
        StationKeys::generate_in_token(Some(&dir.path().join("keys")), &token.config).unwrap();
    jwcrypto_requests_decrypt_with(&py, keys);
}

fn jwcrypto_requests_decrypt_with(py: &Path, keys: StationKeys) {
    let tmp = tempfile::tempdir().unwrap();
    let resp = NamedKey::generate("idp-resp");
    let f = Fixture { keys, resp };
    std::fs::write(
        tmp.path().join("transport.jwks"),
        f.keys.transport_jwks().to_json_pretty(),
    )
    .unwrap();
    std::fs::write(tmp.path().join("pin.json"), pin_plain(&f).to_string()).unwrap();
    std::fs::write(tmp.path().join("cred.json"), cred_plain(&f).to_string()).unwrap();
    let out = peer(py, &["encrypt-requests", tmp.path().to_str().unwrap()]);
    let made: Value = serde_json::from_str(&out).unwrap();
    for alg in ["ECDH-ES+A256KW", "ECDH-ES"] {
        let pin = made[alg]["pin"].as_str().unwrap();
        let cred = made[alg]["cred"].as_str().unwrap().to_string();
        let h = jwe::peek_header(pin).unwrap();
        assert_eq!(h.alg, alg);
        let reqs = decrypt_job(&f.keys, &RequestPolicy::default(), pin, &[cred], NOW)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(reqs.pin.user_id, "00us2hPODQncCkxef0g3");
        assert_eq!(reqs.credentials[0].challenge.expose(), &vec![9u8; 32]);
        assert_eq!(reqs.credentials[0].rp_id, "myorg.okta.com");
    }
    // jwcrypto with apu/apv set (RFC 7518 §4.6.1.2-3): the KDF must include them.
    let with_apu = made["ECDH-ES+A256KW"]["pin_apu"].as_str().unwrap();
    let h = jwe::peek_header(with_apu).unwrap();
    assert!(h.apu.is_some() && h.apv.is_some());
    let cred = made["ECDH-ES+A256KW"]["cred"].as_str().unwrap().to_string();
    decrypt_job(&f.keys, &RequestPolicy::default(), with_apu, &[cred], NOW)
        .expect("apu/apv honoured");
}

#[test]
fn interop_jwcrypto_opens_responses_made_here() {
    let Some(py) = peer_python() else { return };
    jwcrypto_opens_responses_signed_by(&py, StationKeys::generate_ephemeral());
}

/// SPEC §14: responses signed in SoftHSM2 (`CKM_ECDSA`) verify in jwcrypto.
#[test]
fn interop_jwcrypto_opens_responses_signed_in_the_hsm() {
    let Some(py) = peer_python() else { return };
    if !super::hsm::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token = super::hsm::throwaway_token(&dir.path().join("keys")).unwrap();
    let keys =
        StationKeys::generate_in_token(Some(&dir.path().join("keys")), &token.config).unwrap();
    jwcrypto_opens_responses_signed_by(&py, keys);
}

fn jwcrypto_opens_responses_signed_by(py: &Path, keys: StationKeys) {
    let tmp = tempfile::tempdir().unwrap();
    let ca = SoftCa::new(AAGUID);
    let roots = TrustRoots::from_pem(ca.root_pem().as_bytes()).unwrap();
    let idp_dir = tmp.path().join("idp");
    let idp = Idp::open(&idp_dir).unwrap();
    let shipments = idp.enroll(&keys.transport_jwks(), &enroll_opts(1)).unwrap();
    let (result, pin) = software_station(
        &keys,
        &RequestPolicy::default(),
        &ca,
        &roots,
        &shipments[0],
        "12345678",
        NOW,
    );
    let data = &result.shipment_items[0].product_data[0];
    std::fs::write(
        tmp.path().join("sign.jwks"),
        keys.signing_jwks().to_json_pretty(),
    )
    .unwrap();
    std::fs::write(tmp.path().join("pin.jwe"), &data.fido_pin_response).unwrap();
    std::fs::write(
        tmp.path().join("cred.jwe"),
        &data.fido_credential_responses[0],
    )
    .unwrap();
    // The IdP's response key (one private JWK file per enrollment; kid from the JWE header).
    let kid = jwe::peek_header(&data.fido_pin_response)
        .unwrap()
        .kid
        .unwrap();
    std::fs::copy(
        idp_dir.join("keys").join(format!("{kid}.jwk")),
        tmp.path().join("response.jwk"),
    )
    .unwrap();
    let out = peer(py, &["open-responses", tmp.path().to_str().unwrap()]);
    let opened: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        opened["pin"]["pin"].as_str().unwrap(),
        pin.expose().as_str()
    );
    assert_eq!(opened["pin"]["serialNumber"], "12345678");
    assert_eq!(opened["pin_jws_header"]["alg"], "ES384");
    assert_eq!(opened["pin_jws_header"]["typ"], cty::PIN_RESPONSE);
    assert_eq!(opened["pin_jwe_header"]["cty"], "JWT");
    assert_eq!(opened["cred"]["credential"]["type"], "public-key");
    assert_eq!(opened["cred_jws_header"]["typ"], cty::CRED_RESPONSE);
    assert_eq!(opened["fido2"]["origin"], "https://myorg.okta.com");
    assert_eq!(
        opened["fido2"]["rp_id_hash"].as_str().unwrap(),
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"myorg.okta.com"))
    );
}

/// Bad input gets a typed error, never a panic: random truncations and byte
/// flips of a valid request JWE, response JWE, attestation object and
/// authenticator data (seeded, so a failure reproduces).
#[test]
fn random_mutations_are_errors_not_panics() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let f = Fixture {
        keys: StationKeys::generate_ephemeral(),
        resp: NamedKey::generate("idp-resp"),
    };
    let pin_ok = enc(&f, &pin_plain(&f), cty::PIN_REQUEST);
    let cred_ok = enc(&f, &cred_plain(&f), cty::CRED_REQUEST);
    let reqs = decrypt_job(
        &f.keys,
        &RequestPolicy::default(),
        &pin_ok,
        std::slice::from_ref(&cred_ok),
        NOW,
    )
    .unwrap();
    let device = DeviceIdentity {
        serial_number: "1".into(),
        firmware_version: "5.7.1".into(),
    };
    let sealed = seal_pin_response(
        &f.keys,
        &reqs.pin,
        &device,
        &SecretString::new("1".into()),
        NOW,
    )
    .unwrap();
    let ca = SoftCa::new(AAGUID);
    let roots = TrustRoots::from_pem(ca.root_pem().as_bytes()).unwrap();
    let (obj, _) = ca.attest("myorg.okta.com", &[0; 32], Some(3));
    let att = obj.encode();
    let expected = Expected {
        rp_id: "myorg.okta.com",
        client_data_hash: &[0; 32],
        require_uv: true,
        cred_protect: Some(3),
        allow_none: true,
        now: NOW,
    };
    let sign = f.keys.signing_jwks();
    let mut mutate = |bytes: &[u8]| -> Vec<u8> {
        let mut b = bytes.to_vec();
        match rng.gen_range(0..3) {
            0 => b.truncate(rng.gen_range(0..b.len())),
            1 => {
                for _ in 0..rng.gen_range(1..4) {
                    let i = rng.gen_range(0..b.len());
                    b[i] ^= 1 << rng.gen_range(0..8);
                }
            }
            _ => {
                let i = rng.gen_range(0..b.len());
                b.insert(i, rng.gen());
            }
        }
        b
    };
    for _ in 0..300 {
        let p = String::from_utf8_lossy(&mutate(pin_ok.as_bytes())).into_owned();
        assert!(decrypt_job(
            &f.keys,
            &RequestPolicy::default(),
            &p,
            std::slice::from_ref(&cred_ok),
            NOW
        )
        .is_err());
        let r = String::from_utf8_lossy(&mutate(sealed.as_bytes())).into_owned();
        assert!(open_pin_response(&r, &f.resp.kid, f.resp.secret(), &sign).is_err());
        let a = mutate(&att);
        assert!(webauthn::verify_attestation(&a, &expected, &roots).is_err());
        let ad = mutate(&obj.auth_data);
        let _ = webauthn::AuthenticatorData::parse(&ad);
    }
}

/// The simulator's attestation CA (src/sim/attestation.rs) meets the packed
/// checks: leaf profile, AAGUID extension, P-384 root signing with SHA-384.
#[test]
fn simulator_attestation_verifies_against_its_root() {
    use prereg_station::cbor::Value as C;
    use prereg_station::sim::attestation::{root_pem, AttestationIdentity};
    let aaguid = AAGUID;
    let identity = AttestationIdentity::new(7, &aaguid).unwrap();
    let cdh = webauthn::client_data_hash(&webauthn::client_data_json(
        &[1; 32],
        "https://myorg.okta.com",
    ));
    // authData as the simulated key builds it: rpIdHash, UP|UV|AT, counter,
    // attested credential data with an ES256 COSE key.
    let (reference, _) = SoftCa::new(aaguid).attest("myorg.okta.com", &cdh, None);
    let mut signed = reference.auth_data.clone();
    signed.extend_from_slice(&cdh);
    let obj = webauthn::AttestationObject {
        fmt: "packed".into(),
        att_stmt: C::map([
            (C::from("alg"), C::from(-7)),
            (C::from("sig"), C::Bytes(identity.sign(&signed))),
            (
                C::from("x5c"),
                C::Array(vec![C::Bytes(identity.cert_der.clone())]),
            ),
        ]),
        auth_data: reference.auth_data.clone(),
    };
    let expected = Expected {
        rp_id: "myorg.okta.com",
        client_data_hash: &cdh,
        require_uv: true,
        cred_protect: None,
        allow_none: false,
        now: NOW,
    };
    let roots = TrustRoots::from_pem(root_pem(7).unwrap().as_bytes()).unwrap();
    let v = webauthn::verify_attestation(&obj.encode(), &expected, &roots).unwrap();
    assert_eq!(v.aaguid, aaguid);
    let other = TrustRoots::from_pem(root_pem(8).unwrap().as_bytes()).unwrap();
    assert_eq!(
        webauthn::verify_attestation(&obj.encode(), &expected, &other)
            .unwrap_err()
            .code(),
        "attestation.untrusted_root"
    );
    // The simulator's leaf for another AAGUID does not vouch for this one.
    let stranger = AttestationIdentity::new(7, &[1; 16]).unwrap();
    let mut wrong = obj.clone();
    wrong.att_stmt = C::map([
        (C::from("alg"), C::from(-7)),
        (C::from("sig"), C::Bytes(stranger.sign(&signed))),
        (
            C::from("x5c"),
            C::Array(vec![C::Bytes(stranger.cert_der.clone())]),
        ),
    ]);
    assert_eq!(
        webauthn::verify_attestation(&wrong.encode(), &expected, &roots)
            .unwrap_err()
            .code(),
        "attestation.aaguid_mismatch"
    );
}

// ---- request policy: one response key, bounded lifetime, IdP signatures ----

fn fixture() -> Fixture {
    Fixture {
        keys: StationKeys::generate_ephemeral(),
        resp: NamedKey::generate("idp-resp"),
    }
}

fn code_of(
    f: &Fixture,
    policy: &RequestPolicy<'_>,
    pin: &str,
    creds: Vec<String>,
) -> Result<(), &'static str> {
    decrypt_job(&f.keys, policy, pin, &creds, NOW)
        .map(|_| ())
        .map_err(|e| e.code())
}

#[test]
fn a_credential_request_with_another_response_key_is_refused() {
    let f = fixture();
    let pin = enc(&f, &pin_plain(&f), cty::PIN_REQUEST);
    let same = enc(&f, &cred_plain(&f), cty::CRED_REQUEST);
    let policy = RequestPolicy::default();
    assert_eq!(code_of(&f, &policy, &pin, vec![same.clone()]), Ok(()));
    // Another key under the same kid, and another kid: both refused.
    let stranger = NamedKey::generate("idp-resp");
    for key in [
        stranger.public_jwk(KeyUse::Enc),
        EcJwk {
            kid: "another-kid".into(),
            ..f.resp.public_jwk(KeyUse::Enc)
        },
        EcJwk {
            kid: f.resp.kid.clone(),
            ..stranger.public_jwk(KeyUse::Enc)
        },
    ] {
        let mut v = cred_plain(&f);
        v["responseKey"] = serde_json::to_value(key).unwrap();
        let other = enc(&f, &v, cty::CRED_REQUEST);
        assert_eq!(
            code_of(&f, &policy, &pin, vec![other]),
            Err("request.response_key_mismatch")
        );
    }
}

#[test]
fn request_lifetime_is_bounded_by_max_request_lifetime_days() {
    let f = fixture();
    let with_times = |v: Value, iat: i64, exp: i64, c: &str| {
        let mut v = v;
        v["iat"] = iat.into();
        v["exp"] = exp.into();
        enc(&f, &v, c)
    };
    let cred = enc(&f, &cred_plain(&f), cty::CRED_REQUEST);
    let policy = RequestPolicy::default();
    let day = 86_400;
    // iat 0, exp in the year 3000: refused, on either request.
    let year_3000 = 32_503_680_000;
    let forever = with_times(pin_plain(&f), 0, year_3000, cty::PIN_REQUEST);
    assert_eq!(
        code_of(&f, &policy, &forever, vec![cred.clone()]),
        Err("request.lifetime")
    );
    let pin = enc(&f, &pin_plain(&f), cty::PIN_REQUEST);
    let long_cred = with_times(cred_plain(&f), NOW - 100, NOW + 31 * day, cty::CRED_REQUEST);
    assert_eq!(
        code_of(&f, &policy, &pin, vec![long_cred.clone()]),
        Err("request.lifetime")
    );
    // Exactly 30 days is the default limit and passes; a tighter station refuses it.
    let month = with_times(
        pin_plain(&f),
        NOW - 100,
        NOW - 100 + 30 * day,
        cty::PIN_REQUEST,
    );
    assert_eq!(code_of(&f, &policy, &month, vec![cred.clone()]), Ok(()));
    let tight = RequestPolicy {
        max_lifetime_secs: 7 * day,
        ..RequestPolicy::default()
    };
    assert_eq!(
        code_of(&f, &tight, &month, vec![cred.clone()]),
        Err("request.lifetime")
    );
    // exp before iat is no lifetime at all.
    let backwards = with_times(pin_plain(&f), NOW + 200, NOW + 100, cty::PIN_REQUEST);
    assert_eq!(
        code_of(&f, &policy, &backwards, vec![cred]),
        Err("request.lifetime")
    );
}

/// An IdP signing key (P-384) and the station-side verifier set of its JWKS.
fn idp_signer(kid: &str) -> (NamedKey, IdpSigners) {
    let key = NamedKey::new(kid, p384::SecretKey::random(&mut rand::rngs::OsRng));
    let jwks = prereg_station::jose::Jwks {
        keys: vec![key.public_jwk(KeyUse::Sig)],
    };
    let signers = IdpSigners::from_json(&jwks.to_json_pretty()).unwrap();
    (key, signers)
}

/// A signed request JWE (SPEC §4): JWS by `signer` inside a JWE `cty`+`+jws`.
fn enc_signed(f: &Fixture, v: &Value, content_type: &str, signer: &NamedKey) -> String {
    let jws = signed::sign_request(
        &serde_json::to_vec(v).unwrap(),
        signer.secret(),
        &signer.kid,
        content_type,
    );
    let t = &f.keys.transport_jwks().keys[0];
    jwe::encrypt(
        jws.as_bytes(),
        &t.to_public_key().unwrap(),
        &t.kid,
        &signed::signed_cty(content_type),
        KeyManagement::EcdhEsA256Kw,
    )
    .unwrap()
}

/// A JWE around an arbitrary plaintext with the signed `cty`.
fn enc_raw_signed_cty(f: &Fixture, plaintext: &[u8], content_type: &str) -> String {
    let t = &f.keys.transport_jwks().keys[0];
    jwe::encrypt(
        plaintext,
        &t.to_public_key().unwrap(),
        &t.kid,
        &signed::signed_cty(content_type),
        KeyManagement::EcdhEsA256Kw,
    )
    .unwrap()
}

#[test]
fn signing_customization_refuses_unsigned_forged_and_unknown_kid_requests() {
    let f = fixture();
    let (idp_key, signers) = idp_signer("idp-sign-1");
    let signing = RequestPolicy {
        idp_signers: Some(&signers),
        ..RequestPolicy::default()
    };
    let pin = enc_signed(&f, &pin_plain(&f), cty::PIN_REQUEST, &idp_key);
    let cred = enc_signed(&f, &cred_plain(&f), cty::CRED_REQUEST, &idp_key);
    let reqs = decrypt_job(&f.keys, &signing, &pin, std::slice::from_ref(&cred), NOW)
        .expect("signed job is accepted");
    assert_eq!(reqs.pin.user_id, "00us2hPODQncCkxef0g3");
    // The digest is over the request JWE as received (SPEC §5), signed or not.
    assert_eq!(reqs.credentials[0].jwe, cred);

    let unsigned_pin = enc(&f, &pin_plain(&f), cty::PIN_REQUEST);
    let unsigned_cred = enc(&f, &cred_plain(&f), cty::CRED_REQUEST);
    // Same kid, another key: a forgery by someone who read the JWKS.
    let forger = NamedKey::new(
        "idp-sign-1",
        p384::SecretKey::random(&mut rand::rngs::OsRng),
    );
    let stranger = NamedKey::new(
        "idp-sign-9",
        p384::SecretKey::random(&mut rand::rngs::OsRng),
    );
    let pin_jws_es512 = {
        let h =
            b64url_encode(br#"{"alg":"ES512","kid":"idp-sign-1","cty":"prereg.pin-request.v1"}"#);
        format!(
            "{h}.{}.{}",
            b64url_encode(pin_plain(&f).to_string()),
            b64url_encode([1u8; 132])
        )
    };
    let pin_jws_none = {
        let h =
            b64url_encode(br#"{"alg":"none","kid":"idp-sign-1","cty":"prereg.pin-request.v1"}"#);
        format!("{h}.{}.", b64url_encode(pin_plain(&f).to_string()))
    };
    let cases: Vec<(&str, String, Vec<String>, &str)> = vec![
        (
            "unsigned PIN request",
            unsigned_pin.clone(),
            vec![cred.clone()],
            "request.unsigned",
        ),
        (
            "unsigned credential request",
            pin.clone(),
            vec![unsigned_cred.clone()],
            "request.unsigned",
        ),
        (
            "forged signature (same kid)",
            enc_signed(&f, &pin_plain(&f), cty::PIN_REQUEST, &forger),
            vec![cred.clone()],
            "jws.signature_invalid",
        ),
        (
            "unknown kid",
            pin.clone(),
            vec![enc_signed(
                &f,
                &cred_plain(&f),
                cty::CRED_REQUEST,
                &stranger,
            )],
            "jws.kid_unknown",
        ),
        (
            "alg ES512",
            enc_raw_signed_cty(&f, pin_jws_es512.as_bytes(), cty::PIN_REQUEST),
            vec![cred.clone()],
            "jws.alg_unsupported",
        ),
        (
            "alg none",
            enc_raw_signed_cty(&f, pin_jws_none.as_bytes(), cty::PIN_REQUEST),
            vec![cred.clone()],
            "jws.alg_unsupported",
        ),
        (
            "plain JSON under a +jws cty",
            enc_raw_signed_cty(&f, pin_plain(&f).to_string().as_bytes(), cty::PIN_REQUEST),
            vec![cred.clone()],
            "jose.malformed",
        ),
        (
            "JWS cty of another request type",
            enc_raw_signed_cty(
                &f,
                signed::sign_request(
                    pin_plain(&f).to_string().as_bytes(),
                    idp_key.secret(),
                    &idp_key.kid,
                    cty::CRED_REQUEST,
                )
                .as_bytes(),
                cty::PIN_REQUEST,
            ),
            vec![cred.clone()],
            "jws.cty_mismatch",
        ),
        (
            "signed PIN request in the credential slot",
            pin.clone(),
            vec![pin.clone()],
            "jwe.cty_mismatch",
        ),
    ];
    for (name, p, c, want) in &cases {
        assert_eq!(code_of(&f, &signing, p, c.clone()), Err(*want), "{name}");
    }
    // Without idp_signing_jwks, unsigned requests pass as before and a signed
    // one is refused, never accepted unverified.
    let plain = RequestPolicy::default();
    assert_eq!(
        code_of(&f, &plain, &unsigned_pin, vec![unsigned_cred.clone()]),
        Ok(())
    );
    assert_eq!(
        code_of(&f, &plain, &pin, vec![unsigned_cred]),
        Err("request.signed_not_configured")
    );
}

#[test]
fn signed_end_to_end_idp_enroll_sign_program_activate() {
    let dir = tempfile::tempdir().unwrap();
    let keys = StationKeys::generate_ephemeral();
    let ca = SoftCa::new(AAGUID);
    let roots = TrustRoots::from_pem(ca.root_pem().as_bytes()).unwrap();
    let idp = Idp::open(dir.path()).unwrap();
    let shipments = idp
        .enroll(
            &keys.transport_jwks(),
            &EnrollOptions {
                sign: true,
                credentials_per_user: 2,
                ..enroll_opts(2)
            },
        )
        .unwrap();
    // The station reads the IdP's published JWKS, as `idp_signing_jwks` would.
    let text = std::fs::read_to_string(idp.signing_jwks_path()).unwrap();
    let signers = IdpSigners::from_json(&text).unwrap();
    let policy = RequestPolicy {
        idp_signers: Some(&signers),
        ..RequestPolicy::default()
    };
    let pc = &shipments[0].shipment_items[0].product_customizations[0];
    assert_eq!(
        jwe::peek_header(&pc.fido_pin_request)
            .unwrap()
            .cty
            .as_deref(),
        Some("prereg.pin-request.v1+jws")
    );
    let results: Vec<_> = shipments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            software_station(&keys, &policy, &ca, &roots, s, &format!("7000000{i}"), NOW).0
        })
        .collect();
    let reports = idp.activate(&keys.signing_jwks(), &roots, &results, NOW);
    assert!(reports.iter().all(|r| r.verified()), "{reports:?}");
    // The IdP keeps one signing key: a second enroll signs with the same kid.
    let again = idp
        .enroll(
            &keys.transport_jwks(),
            &EnrollOptions {
                sign: true,
                ..enroll_opts(1)
            },
        )
        .unwrap();
    let pc = &again[0].shipment_items[0].product_customizations[0];
    decrypt_job(
        &keys,
        &policy,
        &pc.fido_pin_request,
        &pc.fido_credential_requests,
        NOW,
    )
    .expect("same signing key");
}

#[test]
fn interop_jwcrypto_signed_requests_are_accepted() {
    let Some(py) = peer_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture();
    std::fs::write(
        tmp.path().join("transport.jwks"),
        f.keys.transport_jwks().to_json_pretty(),
    )
    .unwrap();
    std::fs::write(tmp.path().join("pin.json"), pin_plain(&f).to_string()).unwrap();
    std::fs::write(tmp.path().join("cred.json"), cred_plain(&f).to_string()).unwrap();
    let out = peer(&py, &["sign-requests", tmp.path().to_str().unwrap()]);
    let made: Value = serde_json::from_str(&out).unwrap();
    let jwks = std::fs::read_to_string(tmp.path().join("idp-signing.jwks")).unwrap();
    let signers = IdpSigners::from_json(&jwks).expect("jwcrypto's public JWKS loads");
    let policy = RequestPolicy {
        idp_signers: Some(&signers),
        ..RequestPolicy::default()
    };
    for alg in ["ES256", "ES384"] {
        let pin = made[alg]["pin"].as_str().unwrap();
        let cred = made[alg]["cred"].as_str().unwrap().to_string();
        let reqs = decrypt_job(&f.keys, &policy, pin, std::slice::from_ref(&cred), NOW)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(reqs.credentials[0].challenge.expose(), &vec![9u8; 32]);
        // The same JWEs without the JWKS: refused, not accepted unverified.
        assert_eq!(
            code_of(&f, &RequestPolicy::default(), pin, vec![cred]),
            Err("request.signed_not_configured"),
            "{alg}"
        );
    }
}

// ---- josekit (OpenSSL-backed) as an independent cross-check ----------------
// The JOSE crate named in the product brief; a dev-dependency only. What it
// checks is in docs/jose.md.

mod josekit_peer {
    use super::*;
    use josekit::jwe::{JweHeader, ECDH_ES, ECDH_ES_A256KW};
    use josekit::jwk::{Jwk, KeyPair};
    use josekit::jws::{JwsHeader, ES256, ES384};

    fn jwk_of(v: &impl serde::Serialize) -> Jwk {
        Jwk::from_bytes(serde_json::to_vec(v).unwrap()).unwrap()
    }

    /// A request JWE made by josekit to the station's first transport key.
    fn josekit_jwe(f: &Fixture, alg: &str, plaintext: &[u8], content_type: &str) -> String {
        let transport = jwk_of(&f.keys.transport_jwks().keys[0]);
        let mut header = JweHeader::new();
        header.set_content_encryption("A256GCM");
        header.set_content_type(content_type);
        header.set_key_id(transport.key_id().unwrap());
        let token = match alg {
            "ECDH-ES+A256KW" => josekit::jwe::serialize_compact(
                plaintext,
                &header,
                &ECDH_ES_A256KW.encrypter_from_jwk(&transport).unwrap(),
            ),
            "ECDH-ES" => josekit::jwe::serialize_compact(
                plaintext,
                &header,
                &ECDH_ES.encrypter_from_jwk(&transport).unwrap(),
            ),
            other => panic!("{other}"),
        }
        .unwrap();
        assert_eq!(jwe::peek_header(&token).unwrap().alg, alg);
        token
    }

    #[test]
    fn josekit_encrypted_requests_are_accepted() {
        let f = fixture();
        for alg in ["ECDH-ES+A256KW", "ECDH-ES"] {
            let pin = josekit_jwe(
                &f,
                alg,
                pin_plain(&f).to_string().as_bytes(),
                cty::PIN_REQUEST,
            );
            let cred = josekit_jwe(
                &f,
                alg,
                cred_plain(&f).to_string().as_bytes(),
                cty::CRED_REQUEST,
            );
            let reqs = decrypt_job(&f.keys, &RequestPolicy::default(), &pin, &[cred], NOW)
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(reqs.pin.user_id, "00us2hPODQncCkxef0g3");
            assert_eq!(reqs.credentials[0].challenge.expose(), &vec![9u8; 32]);
        }
    }

    #[test]
    fn josekit_signed_requests_are_accepted_and_unsigned_or_forged_refused() {
        let f = fixture();
        // ES384 with the reference IdP's kind of key (a P-384 private JWK) and
        // ES256 with a key josekit made itself.
        let p384 = NamedKey::generate("idp-sign");
        let p384_private = Jwk::from_bytes(&*p384.private_jwk_json(KeyUse::Sig)).unwrap();
        let p256_pair = ES256.generate_key_pair().unwrap();
        let mut p256_private = p256_pair.to_jwk_private_key();
        p256_private.set_key_id("josekit-es256");
        let mut p256_public = p256_pair.to_jwk_public_key();
        p256_public.set_key_id("josekit-es256");
        p256_public.set_key_use("sig");
        let jwks = json!({"keys": [
            serde_json::to_value(p384.public_jwk(KeyUse::Sig)).unwrap(),
            Value::Object(p256_public.as_ref().clone()),
        ]});
        let signers = IdpSigners::from_json(&jwks.to_string()).unwrap();
        let policy = RequestPolicy {
            idp_signers: Some(&signers),
            ..RequestPolicy::default()
        };
        let sign = |alg: &str, payload: &Value, content_type: &str| -> String {
            let mut header = JwsHeader::new();
            header.set_content_type(content_type);
            let payload = payload.to_string();
            let jws = if alg == "ES384" {
                header.set_key_id(p384.kid.clone());
                josekit::jws::serialize_compact(
                    payload.as_bytes(),
                    &header,
                    &ES384.signer_from_jwk(&p384_private).unwrap(),
                )
            } else {
                header.set_key_id("josekit-es256");
                josekit::jws::serialize_compact(
                    payload.as_bytes(),
                    &header,
                    &ES256.signer_from_jwk(&p256_private).unwrap(),
                )
            }
            .unwrap();
            josekit_jwe(
                &f,
                "ECDH-ES+A256KW",
                jws.as_bytes(),
                &signed::signed_cty(content_type),
            )
        };
        for alg in ["ES256", "ES384"] {
            let pin = sign(alg, &pin_plain(&f), cty::PIN_REQUEST);
            let cred = sign(alg, &cred_plain(&f), cty::CRED_REQUEST);
            decrypt_job(&f.keys, &policy, &pin, std::slice::from_ref(&cred), NOW)
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            // Unsigned (josekit-encrypted) requests: refused for this customization.
            let unsigned = josekit_jwe(
                &f,
                "ECDH-ES+A256KW",
                pin_plain(&f).to_string().as_bytes(),
                cty::PIN_REQUEST,
            );
            assert_eq!(
                code_of(&f, &policy, &unsigned, vec![cred.clone()]),
                Err("request.unsigned")
            );
        }
        // josekit signing with its own key under the trusted ES384 kid: forged.
        let mut forger = ES384.generate_key_pair().unwrap().to_jwk_private_key();
        forger.set_key_id(p384.kid.clone());
        let mut header = JwsHeader::new();
        header.set_content_type(cty::PIN_REQUEST);
        header.set_key_id(p384.kid.clone());
        let forged = josekit::jws::serialize_compact(
            pin_plain(&f).to_string().as_bytes(),
            &header,
            &ES384.signer_from_jwk(&forger).unwrap(),
        )
        .unwrap();
        let forged = josekit_jwe(
            &f,
            "ECDH-ES+A256KW",
            forged.as_bytes(),
            &signed::signed_cty(cty::PIN_REQUEST),
        );
        let cred = sign("ES384", &cred_plain(&f), cty::CRED_REQUEST);
        assert_eq!(
            code_of(&f, &policy, &forged, vec![cred]),
            Err("jws.signature_invalid")
        );
    }

    #[test]
    fn station_responses_open_and_verify_in_josekit() {
        let dir = tempfile::tempdir().unwrap();
        let keys = StationKeys::generate_ephemeral();
        let ca = SoftCa::new(AAGUID);
        let roots = TrustRoots::from_pem(ca.root_pem().as_bytes()).unwrap();
        let idp = Idp::open(dir.path()).unwrap();
        let shipments = idp.enroll(&keys.transport_jwks(), &enroll_opts(1)).unwrap();
        let (result, pin) = software_station(
            &keys,
            &RequestPolicy::default(),
            &ca,
            &roots,
            &shipments[0],
            "12345678",
            NOW,
        );
        let data = &result.shipment_items[0].product_data[0];
        let sign_jwk = jwk_of(&keys.signing_jwks().keys[0]);
        let verifier = ES384.verifier_from_jwk(&sign_jwk).unwrap();
        for (jwe_text, typ) in [
            (&data.fido_pin_response, cty::PIN_RESPONSE),
            (&data.fido_credential_responses[0], cty::CRED_RESPONSE),
        ] {
            let kid = jwe::peek_header(jwe_text).unwrap().kid.unwrap();
            let private =
                std::fs::read(dir.path().join("keys").join(format!("{kid}.jwk"))).unwrap();
            let decrypter = ECDH_ES_A256KW
                .decrypter_from_jwk(&Jwk::from_bytes(&private).unwrap())
                .unwrap();
            let (inner, outer_header) =
                josekit::jwe::deserialize_compact(jwe_text, &decrypter).unwrap();
            assert_eq!(outer_header.content_type(), Some(cty::JWT));
            assert_eq!(
                outer_header.claim("enc").and_then(Value::as_str),
                Some("A256GCM")
            );
            let (payload, header) = josekit::jws::deserialize_compact(&inner, &verifier).unwrap();
            assert_eq!(header.algorithm(), Some("ES384"));
            assert_eq!(header.token_type(), Some(typ));
            let body: Value = serde_json::from_slice(&payload).unwrap();
            if typ == cty::PIN_RESPONSE {
                assert_eq!(body["pin"].as_str(), Some(pin.expose().as_str()));
            } else {
                assert_eq!(body["serialNumber"].as_str(), Some("12345678"));
            }
            // One flipped bit of the signature: josekit refuses it too.
            let mut parts: Vec<String> = std::str::from_utf8(&inner)
                .unwrap()
                .split('.')
                .map(String::from)
                .collect();
            let mut sig = b64url_decode(&parts[2]).unwrap();
            sig[5] ^= 1;
            parts[2] = b64url_encode(sig);
            assert!(josekit::jws::deserialize_compact(parts.join("."), &verifier).is_err());
        }
    }
}

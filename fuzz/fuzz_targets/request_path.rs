//! The request path of recipe step 4 (SPEC §2, §4) on arbitrary input, chosen
//! by the first byte: a compact JWE string into `decrypt_job` (plain and
//! signing policies), plaintext bytes into the PIN and credential request
//! validators, and a compact JWS into the IdP-signature check. No panic, and
//! every refusal has a stable code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prereg_station::jose::jwk::{Jwks, KeyUse};
use prereg_station::jose::keys::{NamedKey, StationKeys};
use prereg_station::jose::request::{
    decrypt_job, validate_credential_request, validate_pin_request, RequestPolicy,
};
use prereg_station::jose::signed::{verify_request_jws, IdpSigners};
use prereg_station::jose::{cty, signed};
use std::sync::OnceLock;

/// Keys made once per process: the fuzzer explores parsing, not key generation.
fn fixture() -> &'static (StationKeys, IdpSigners) {
    static KEYS: OnceLock<(StationKeys, IdpSigners)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let signer = NamedKey::generate("idp-sign");
        let jwks = Jwks {
            keys: vec![signer.public_jwk(KeyUse::Sig)],
        };
        let text = serde_json::to_string(&jwks).expect("a JWKS serializes");
        let signers = IdpSigners::from_json(&text).expect("a generated JWKS parses");
        (StationKeys::generate_ephemeral(), signers)
    })
}

/// 2026-12-01T00:00:00Z: inside the validity window fuzzed inputs may name.
const NOW: i64 = 1_796_083_200;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (keys, signers) = fixture();
    match mode % 5 {
        0 | 1 => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            // PIN request, then credential requests, separated by whitespace.
            let mut parts = text.split_whitespace();
            let pin = parts.next().unwrap_or("");
            let creds: Vec<String> = parts.map(str::to_owned).collect();
            let signing = RequestPolicy {
                idp_signers: Some(signers),
                ..RequestPolicy::default()
            };
            let policy = if mode % 5 == 0 { RequestPolicy::default() } else { signing };
            if let Err(e) = decrypt_job(keys, &policy, pin, &creds, NOW) {
                assert!(!e.code().is_empty());
            }
        }
        2 => {
            if let Err(e) = validate_pin_request(rest, "a.b.c.d.e", NOW) {
                assert!(!e.code().is_empty());
            }
        }
        3 => {
            if let Err(e) = validate_credential_request(rest, "a.b.c.d.e", NOW) {
                assert!(!e.code().is_empty());
            }
        }
        _ => {
            let _ = verify_request_jws(rest, signers, cty::PIN_REQUEST);
            let _ = signed::signed_cty(cty::CRED_REQUEST);
        }
    }
});

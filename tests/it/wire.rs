//! docs/wire-format.md's example files (issue #17 item 8) come from a real
//! demo run: this test runs one, decrypts what the IdP and the station would,
//! and compares every file in docs/examples/ with what the run produced.
//!
//! The values are random on every run (keys, ids, ciphertexts, times), so the
//! comparison is of shape: the same field names at the same places with the
//! same JSON types. A field the station adds, drops, renames or retypes
//! fails here until the examples are regenerated
//! (`PREREG_UPDATE_EXAMPLES=1 cargo test --test it wire::`) and the document
//! names it: every field name in the examples must appear in
//! docs/wire-format.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use prereg_station::jose::jwe::{self, SingleKey};
use prereg_station::jose::keys::NamedKey;
use prereg_station::jose::signed::{self, IdpSigners};
use prereg_station::jose::{cty, jws, StationKeys};
use serde_json::{json, Value};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The protected header of a compact JWS or JWE (its first part).
fn header(compact: &str) -> Value {
    let first = compact.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn secret_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Decrypts a response JWE with the IdP's response key (the IdP keeps it as
/// `idp/keys/<kid>.jwk`), verifies the JWS inside with the station's signing
/// JWKS, and returns (JWE header, JWS header, payload).
fn open_response(dir: &Path, jwe_text: &str, typ: &str) -> (Value, Value, Value) {
    let jwe_header = header(jwe_text);
    let kid = jwe_header["kid"].as_str().unwrap();
    let private = std::fs::read(dir.join("idp/keys").join(format!("{kid}.jwk"))).unwrap();
    let (key, _) = NamedKey::from_private_jwk(&private).unwrap();
    let single = SingleKey {
        kid,
        key: key.secret(),
    };
    let inner = jwe::decrypt(jwe_text, &single, cty::JWT).unwrap();
    let jws_text = std::str::from_utf8(inner.plaintext.expose()).unwrap();
    let keys = StationKeys::load_dir(&dir.join("keys")).unwrap();
    let verified = jws::verify(jws_text, &keys.signing_jwks(), typ).unwrap();
    (
        jwe_header,
        header(jws_text),
        secret_json(verified.payload.expose()),
    )
}

/// Every example file, by name, from one demo run (one key, two credentials).
fn generate() -> BTreeMap<&'static str, Value> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = Command::new(crate::util::station_bin())
        .args(["demo", "--keys", "1", "--slots", "1", "--credentials", "2"])
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs = std::fs::read_to_string(dir.join("jobs.jsonl")).unwrap();
    let shipment: Value = serde_json::from_str(jobs.lines().next().unwrap()).unwrap();
    let custom = &shipment["shipment_items"][0]["product_customizations"][0];
    let pin_request_jwe = custom["fido_pin_request"].as_str().unwrap();
    let cred_request_jwe = custom["fido_credential_requests"][0].as_str().unwrap();

    // The demo's IdP signs its requests (SPEC §4): the JWE's plaintext is a
    // JWS, verified with the IdP's public JWKS, whose payload is the request.
    let keys = StationKeys::load_dir(&dir.join("keys")).unwrap();
    let signers = IdpSigners::from_json(
        &std::fs::read_to_string(dir.join("idp").join("idp-signing.jwks")).unwrap(),
    )
    .unwrap();
    let open_request = |compact: &str, content_type: &str| {
        let jws = jwe::decrypt(compact, &keys, &signed::signed_cty(content_type)).unwrap();
        let payload =
            signed::verify_request_jws(jws.plaintext.expose(), &signers, content_type).unwrap();
        let jws_header = header(std::str::from_utf8(jws.plaintext.expose()).unwrap());
        (jws_header, secret_json(payload.expose()))
    };
    let (pin_request_jws_header, pin_request) = open_request(pin_request_jwe, cty::PIN_REQUEST);
    let (cred_request_jws_header, cred_request) = open_request(cred_request_jwe, cty::CRED_REQUEST);

    let id = shipment["shipment_id"].as_str().unwrap();
    let result = read_json(&dir.join("outbox").join(format!("{id}.json")));
    let data = &result["shipment_items"][0]["product_data"][0];
    let (response_jwe_header, pin_jws_header, pin_response) = open_response(
        dir,
        data["fido_pin_response"].as_str().unwrap(),
        cty::PIN_RESPONSE,
    );
    let (_, cred_jws_header, cred_response) = open_response(
        dir,
        data["fido_credential_responses"][0].as_str().unwrap(),
        cty::CRED_RESPONSE,
    );
    let headers = json!({
        "pin_request_jwe": header(pin_request_jwe),
        "pin_request_jws": pin_request_jws_header,
        "credential_request_jwe": header(cred_request_jwe),
        "credential_request_jws": cred_request_jws_header,
        "response_jwe": response_jwe_header,
        "pin_response_jws": pin_jws_header,
        "credential_response_jws": cred_jws_header,
    });
    let jwks = |j: prereg_station::jose::Jwks| serde_json::to_value(j).unwrap();
    BTreeMap::from([
        ("shipment.json", shipment.clone()),
        ("pin-request.json", pin_request),
        ("credential-request.json", cred_request),
        ("pin-response.json", pin_response),
        ("credential-response.json", cred_response),
        ("result.json", result),
        ("jose-headers.json", headers),
        ("transport-keys.jwks", jwks(keys.transport_jwks())),
        ("sign.jwks", jwks(keys.signing_jwks())),
    ])
}

/// The JSON types and field names of `v`, without its values. An array's
/// shape is the distinct shapes of its elements.
fn shape(v: &Value) -> Value {
    match v {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(a) => {
            let mut shapes: Vec<Value> = Vec::new();
            for s in a.iter().map(shape) {
                if !shapes.contains(&s) {
                    shapes.push(s);
                }
            }
            Value::Array(shapes)
        }
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
    }
}

fn field_names(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| field_names(x, out)),
        Value::Object(o) => {
            for (k, x) in o {
                out.push(k.clone());
                field_names(x, out);
            }
        }
        _ => {}
    }
}

#[test]
fn docs_examples_match_a_real_demo_run_and_every_field_is_documented() {
    let examples = repo().join("docs/examples");
    let generated = generate();
    let update = std::env::var_os("PREREG_UPDATE_EXAMPLES").is_some();
    let mut stale = Vec::new();
    for (name, value) in &generated {
        let path = examples.join(name);
        if update {
            std::fs::create_dir_all(&examples).unwrap();
            let mut text = serde_json::to_string_pretty(value).unwrap();
            text.push('\n');
            std::fs::write(&path, text).unwrap();
            continue;
        }
        if !path.exists() {
            stale.push(format!("{name}: missing"));
            continue;
        }
        if shape(&read_json(&path)) != shape(value) {
            stale.push(format!(
                "{name}: committed {} vs run {}",
                shape(&read_json(&path)),
                shape(value)
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "docs/examples are stale (regenerate with PREREG_UPDATE_EXAMPLES=1 \
         cargo test --test it wire:: and update docs/wire-format.md):\n{}",
        stale.join("\n")
    );
    // No example file the run does not make.
    let mut extra = Vec::new();
    for e in std::fs::read_dir(&examples).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if !generated.contains_key(name.as_str()) {
            extra.push(name);
        }
    }
    assert!(
        extra.is_empty(),
        "docs/examples has files no run makes: {extra:?}"
    );

    let doc = std::fs::read_to_string(repo().join("docs/wire-format.md")).unwrap();
    let mut names = Vec::new();
    generated.values().for_each(|v| field_names(v, &mut names));
    names.sort();
    names.dedup();
    let undocumented: Vec<&String> = names
        .iter()
        .filter(|n| !doc.contains(&format!("`{n}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "docs/wire-format.md does not name these fields: {undocumented:?}"
    );
    for name in generated.keys() {
        assert!(
            doc.contains(&format!("examples/{name}")),
            "docs/wire-format.md does not point to examples/{name}"
        );
    }
}

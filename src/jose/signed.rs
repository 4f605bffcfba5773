//! IdP-signed requests (SPEC §4, optional per customization): a request JWE
//! whose `cty` is the content type + `+jws` carries a compact JWS (RFC 7515
//! §7.1) as its plaintext, signed `ES256` or `ES384` (RFC 7518 §3.4) by a key
//! of the customization's `idp_signing_jwks`; the JWS payload is the request
//! JSON. Without it, anyone holding the *public* transport key could make a
//! job the station would program.
//!
//! - [`IdpSigners`]: the verification keys of one `idp_signing_jwks` file
//!   (EC P-256 / P-384 public JWKs, by `kid`).
//! - [`verify_request_jws`]: the checks, cheapest first, each a named
//!   [`JoseError`]; the payload only ever exists in a [`SecretBytes`].
//! - [`sign_request`]: the reference IdP's side (`idp enroll --sign`).

use super::jws::{self, JwsHeader};
use super::{b64, JoseError, MAX_COMPACT_LEN};
use crate::secret::SecretBytes;
use serde::Deserialize;
use zeroize::Zeroizing;

/// Suffix of a signed request's JWE `cty` (SPEC §4: `prereg.pin-request.v1+jws`).
pub const JWS_CTY_SUFFIX: &str = "+jws";

/// The JWE `cty` of a signed request of content type `content_type`.
pub fn signed_cty(content_type: &str) -> String {
    format!("{content_type}{JWS_CTY_SUFFIX}")
}

/// A public verification key and the one JWS `alg` it verifies (RFC 7518
/// §3.4: ES256 is P-256 with SHA-256, ES384 is P-384 with SHA-384; a key is
/// never used with the other hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignerKey {
    Es256(p256::PublicKey),
    Es384(p384::PublicKey),
}

impl SignerKey {
    pub fn alg(&self) -> &'static str {
        match self {
            SignerKey::Es256(_) => "ES256",
            SignerKey::Es384(_) => "ES384",
        }
    }
}

/// The IdP's request-signing keys of one customization, by `kid`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdpSigners {
    keys: Vec<(String, SignerKey)>,
}

/// One JWK as an `idp_signing_jwks` file may hold it. `d` is read only to be
/// refused: a private key has no business in the station's configuration.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    crv: String,
    #[serde(default)]
    kid: String,
    #[serde(default, rename = "use")]
    key_use: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    x: String,
    y: String,
    #[serde(default)]
    d: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<RawJwk>,
}

impl IdpSigners {
    /// Parses a JWKS (RFC 7517 §5) of EC P-256 / P-384 public signing keys.
    /// Every key needs a unique non-empty `kid`; `use`, when present, is
    /// `sig`; `alg`, when present, matches the curve. The error says which
    /// key and what is wrong (it becomes a one-line configuration error).
    pub fn from_json(text: &str) -> Result<Self, String> {
        let raw: RawJwks = serde_json::from_str(text)
            .map_err(|e| format!("not a JWK set ({})", json_problem(&e)))?;
        if raw.keys.is_empty() {
            return Err("the JWK set holds no key".into());
        }
        let mut keys: Vec<(String, SignerKey)> = Vec::with_capacity(raw.keys.len());
        for (i, k) in raw.keys.iter().enumerate() {
            let name = format!("key {} (kid {:?})", i + 1, k.kid);
            if k.kid.is_empty() {
                return Err(format!("key {} has no kid", i + 1));
            }
            if keys.iter().any(|(kid, _)| kid == &k.kid) {
                return Err(format!("{name}: kid appears twice"));
            }
            if k.d.is_some() {
                return Err(format!(
                    "{name} is a private key: give the station the public JWKS only"
                ));
            }
            if k.key_use.as_deref().is_some_and(|u| u != "sig") {
                return Err(format!("{name}: use must be \"sig\""));
            }
            if k.kty != "EC" {
                return Err(format!("{name}: kty must be EC"));
            }
            let key = match k.crv.as_str() {
                "P-256" => p256_point(&k.x, &k.y).map(SignerKey::Es256),
                "P-384" => super::jwk::point_from_coords(&k.x, &k.y).map(SignerKey::Es384),
                _ => return Err(format!("{name}: crv must be P-256 or P-384")),
            }
            .ok_or_else(|| format!("{name}: x/y is not a point on {}", k.crv))?;
            if k.alg.as_deref().is_some_and(|a| a != key.alg()) {
                return Err(format!("{name}: alg must be {} for {}", key.alg(), k.crv));
            }
            keys.push((k.kid.clone(), key));
        }
        Ok(IdpSigners { keys })
    }

    /// The key `kid` names, if any.
    pub fn find(&self, kid: &str) -> Option<&SignerKey> {
        self.keys.iter().find(|(k, _)| k == kid).map(|(_, key)| key)
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(k, _)| k.as_str())
    }
}

/// What kind of JSON problem `e` is, without quoting the input.
fn json_problem(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O",
        serde_json::error::Category::Syntax => "JSON syntax",
        serde_json::error::Category::Data => "wrong members",
        serde_json::error::Category::Eof => "truncated",
    }
}

/// P-256 coordinates are 32 bytes (RFC 7518 §6.2.1.2); the point is checked
/// to be on the curve.
fn p256_point(x: &str, y: &str) -> Option<p256::PublicKey> {
    use p256::elliptic_curve::sec1::FromEncodedPoint;
    let x = b64::decode(x).ok()?;
    let y = b64::decode(y).ok()?;
    if x.len() != 32 || y.len() != 32 {
        return None;
    }
    let point = p256::EncodedPoint::from_affine_coordinates(
        p256::FieldBytes::from_slice(&x),
        p256::FieldBytes::from_slice(&y),
        false,
    );
    Option::from(p256::PublicKey::from_encoded_point(&point))
}

/// Verifies a signed request's JWS (the decrypted JWE plaintext) against
/// `signers` and returns its payload, the request JSON. Checks, in order:
/// compact shape, header JSON, no `crit`, `alg` ES256 or ES384, `kid`
/// present and in the JWKS, `alg` = the key's, header `cty` = `content_type`,
/// then the signature (raw `R || S`, RFC 7518 §3.4).
pub fn verify_request_jws(
    compact: &[u8],
    signers: &IdpSigners,
    content_type: &str,
) -> Result<SecretBytes, JoseError> {
    if compact.len() > MAX_COMPACT_LEN {
        return Err(JoseError::TooLarge);
    }
    let compact = std::str::from_utf8(compact).map_err(|_| JoseError::Malformed)?;
    let parts: Vec<&str> = compact.split('.').collect();
    if parts.len() != 3 {
        return Err(JoseError::Malformed);
    }
    let header_bytes = b64::decode(parts[0]).map_err(|_| JoseError::BadBase64)?;
    let header: JwsHeader =
        serde_json::from_slice(&header_bytes).map_err(|_| JoseError::BadHeader)?;
    // RFC 7515 §4.1.11: a recipient must understand every crit member; this
    // profile defines none (so `b64: false` and friends are refused too).
    if header.crit.is_some() {
        return Err(JoseError::CritUnsupported);
    }
    if !matches!(header.alg.as_str(), "ES256" | "ES384") {
        return Err(JoseError::SigAlgUnsupported);
    }
    let kid = header.kid.as_deref().ok_or(JoseError::KidMissing)?;
    let key = signers.find(kid).ok_or(JoseError::SignerUnknown)?;
    if header.alg != key.alg() {
        return Err(JoseError::SigAlgKeyMismatch);
    }
    if header.cty.as_deref() != Some(content_type) {
        return Err(JoseError::JwsCtyMismatch);
    }
    let sig = b64::decode(parts[2]).map_err(|_| JoseError::BadBase64)?;
    let signing_input = &compact.as_bytes()[..parts[0].len() + 1 + parts[1].len()];
    let ok = match key {
        SignerKey::Es256(k) => {
            use p256::ecdsa::signature::Verifier;
            p256::ecdsa::Signature::from_slice(&sig).is_ok_and(|s| {
                p256::ecdsa::VerifyingKey::from(k)
                    .verify(signing_input, &s)
                    .is_ok()
            })
        }
        SignerKey::Es384(k) => {
            use p384::ecdsa::signature::Verifier;
            p384::ecdsa::Signature::from_slice(&sig).is_ok_and(|s| {
                p384::ecdsa::VerifyingKey::from(k)
                    .verify(signing_input, &s)
                    .is_ok()
            })
        }
    };
    if !ok {
        return Err(JoseError::SignatureInvalid);
    }
    // Only a verified payload is decoded, straight into zeroizing memory
    // (the caller's plaintext, which holds the encoded form, zeroizes too).
    Ok(SecretBytes::new(
        b64::decode(parts[1]).map_err(|_| JoseError::BadBase64)?,
    ))
}

/// The reference IdP's side: `request_json` signed `ES384` with `key` under
/// `kid`, header `cty` = `content_type` (the JWE around it then gets
/// [`signed_cty`]). The JWS embeds the request, so it zeroizes.
pub fn sign_request(
    request_json: &[u8],
    key: &p384::SecretKey,
    kid: &str,
    content_type: &str,
) -> Zeroizing<String> {
    let header = JwsHeader {
        alg: "ES384".into(),
        kid: Some(kid.into()),
        typ: None,
        cty: Some(content_type.into()),
        crit: None,
    };
    jws::sign_with_header(request_json, key, &header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::jwk::{EcJwk, KeyUse};

    fn signers_for(sk: &p384::SecretKey, kid: &str) -> IdpSigners {
        let jwk = EcJwk::from_public(&sk.public_key(), kid, KeyUse::Sig);
        IdpSigners::from_json(&format!(
            "{{\"keys\":[{}]}}",
            serde_json::to_string(&jwk).unwrap()
        ))
        .unwrap()
    }

    #[test]
    fn signed_request_verifies_and_each_fault_has_its_code() {
        let sk = p384::SecretKey::random(&mut rand_core::OsRng);
        let signers = signers_for(&sk, "idp-1");
        let jws = sign_request(b"{\"v\":1}", &sk, "idp-1", "ct.v1");
        let payload = verify_request_jws(jws.as_bytes(), &signers, "ct.v1").unwrap();
        assert_eq!(payload.expose(), b"{\"v\":1}");
        let code = |c: &str, ct: &str| {
            verify_request_jws(c.as_bytes(), &signers, ct)
                .unwrap_err()
                .code()
        };
        assert_eq!(code(&jws, "other.v1"), "jws.cty_mismatch");
        let other = p384::SecretKey::random(&mut rand_core::OsRng);
        assert_eq!(
            code(&sign_request(b"{}", &other, "idp-1", "ct.v1"), "ct.v1"),
            "jws.signature_invalid"
        );
        assert_eq!(
            code(&sign_request(b"{}", &sk, "idp-2", "ct.v1"), "ct.v1"),
            "jws.kid_unknown"
        );
        let forged_payload = {
            let p: Vec<&str> = jws.split('.').collect();
            format!("{}.{}.{}", p[0], b64::encode(b"{\"v\":2}"), p[2])
        };
        assert_eq!(code(&forged_payload, "ct.v1"), "jws.signature_invalid");
        let with_alg = |alg: &str| {
            let p: Vec<&str> = jws.split('.').collect();
            let h = format!(r#"{{"alg":"{alg}","kid":"idp-1","cty":"ct.v1"}}"#);
            format!("{}.{}.{}", b64::encode(h), p[1], p[2])
        };
        assert_eq!(code(&with_alg("none"), "ct.v1"), "jws.alg_unsupported");
        assert_eq!(code(&with_alg("HS256"), "ct.v1"), "jws.alg_unsupported");
        assert_eq!(code(&with_alg("ES256"), "ct.v1"), "jws.alg_key_mismatch");
        assert_eq!(code("a.b", "ct.v1"), "jose.malformed");
    }

    #[test]
    fn es256_keys_verify_es256_requests() {
        use p256::ecdsa::signature::Signer;
        let sk = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let point = sk.verifying_key().to_encoded_point(false);
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "p256", "use": "sig", "alg": "ES256",
            "x": b64::encode(point.x().unwrap()), "y": b64::encode(point.y().unwrap()),
        }]});
        let signers = IdpSigners::from_json(&jwks.to_string()).unwrap();
        let h = b64::encode(r#"{"alg":"ES256","kid":"p256","cty":"ct.v1"}"#);
        let input = format!("{h}.{}", b64::encode(b"{}"));
        let sig: p256::ecdsa::Signature = sk.sign(input.as_bytes());
        let jws = format!("{input}.{}", b64::encode(sig.to_bytes()));
        assert_eq!(
            verify_request_jws(jws.as_bytes(), &signers, "ct.v1")
                .unwrap()
                .expose(),
            b"{}"
        );
    }

    #[test]
    fn jwks_file_problems_are_named() {
        let sk = p384::SecretKey::random(&mut rand_core::OsRng);
        let jwk =
            serde_json::to_value(EcJwk::from_public(&sk.public_key(), "k", KeyUse::Sig)).unwrap();
        let set = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut k = jwk.clone();
            edit(&mut k);
            IdpSigners::from_json(&serde_json::json!({ "keys": [k] }).to_string())
        };
        assert!(set(&|_| {}).is_ok());
        type Edit<'a> = &'a dyn Fn(&mut serde_json::Value);
        let cases: [(Edit, &str); 6] = [
            (&|k| k["d"] = "AAAA".into(), "private key"),
            (&|k| k["use"] = "enc".into(), "use must be"),
            (&|k| k["crv"] = "P-521".into(), "crv must be"),
            (&|k| k["kid"] = "".into(), "no kid"),
            (&|k| k["alg"] = "ES256".into(), "alg must be ES384"),
            (&|k| k["x"] = k["y"].clone(), "not a point"),
        ];
        for (edit, want) in cases {
            let e = set(edit).unwrap_err();
            assert!(e.contains(want), "{e:?} should say {want:?}");
        }
        assert!(IdpSigners::from_json(r#"{"keys":[]}"#).is_err());
        let twice = serde_json::json!({ "keys": [jwk.clone(), jwk] }).to_string();
        assert!(IdpSigners::from_json(&twice).unwrap_err().contains("twice"));
    }
}

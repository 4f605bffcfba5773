//! Compact JWS (RFC 7515 §7.1) with `ES384` only (RFC 7518 §3.4: ECDSA P-384
//! with SHA-384, signature = raw `R || S`, 48 bytes each, not DER).

use super::{b64, JoseError, MAX_COMPACT_LEN};
use crate::secret::SecretBytes;
use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::PublicKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A JWS protected header as this profile reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwsHeader {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Content type of the payload (RFC 7515 §4.1.10); an IdP-signed request
    /// names its request type here (SPEC §4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cty: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crit: Option<serde_json::Value>,
}

/// Finds the public key a JWS names by `kid`.
pub trait VerifierResolver {
    fn verification_key(&self, kid: &str) -> Option<PublicKey>;
}

impl VerifierResolver for super::Jwks {
    fn verification_key(&self, kid: &str) -> Option<PublicKey> {
        self.find(kid)
            .and_then(|k| k.to_public_key_for(super::jwk::KeyUse::Sig).ok())
    }
}

/// The signing half of key custody (SPEC §2, §14): the active signing key
/// makes an ES384 signature over a JWS signing input. File custody signs in
/// memory; PKCS#11 custody hashes here and has the token sign the SHA-384
/// digest (`CKM_ECDSA`).
pub trait Es384Signer {
    /// `kid` of the key that signs.
    fn signing_kid(&self) -> &str;
    /// Raw `R || S` (RFC 7518 §3.4), 96 bytes, over `signing_input`.
    fn sign_es384(&self, signing_input: &[u8]) -> Result<[u8; 96], JoseError>;
}

/// ES384 in memory with a private key this process holds.
pub fn sign_es384_in_memory(key: &p384::SecretKey, signing_input: &[u8]) -> [u8; 96] {
    // RFC 6979 deterministic nonce: no RNG failure mode while signing.
    let sig: Signature = SigningKey::from(key).sign(signing_input);
    let mut out = [0u8; 96];
    out.copy_from_slice(&sig.to_bytes());
    out
}

/// Signs `payload` as a compact JWS `{alg: ES384, kid, typ}` with a custody's
/// signer. The result embeds the payload, so it zeroizes.
pub fn sign_with(
    payload: &[u8],
    signer: &dyn Es384Signer,
    typ: &str,
) -> Result<Zeroizing<String>, JoseError> {
    let header = JwsHeader {
        alg: "ES384".into(),
        kid: Some(signer.signing_kid().into()),
        typ: Some(typ.into()),
        cty: None,
        crit: None,
    };
    let mut out = signing_input(payload, &header);
    let sig = signer.sign_es384(out.as_bytes())?;
    out.push('.');
    out.push_str(&b64::encode(sig));
    Ok(out)
}

/// `BASE64URL(header) . BASE64URL(payload)`, in a zeroizing buffer with room
/// for the signature.
fn signing_input(payload: &[u8], header: &JwsHeader) -> Zeroizing<String> {
    // Serializing three strings cannot fail.
    let header_b64 = b64::encode(serde_json::to_vec(&header).unwrap_or_default());
    let payload_b64 = Zeroizing::new(b64::encode(payload));
    let mut out = Zeroizing::new(String::with_capacity(
        header_b64.len() + payload_b64.len() + 2 + 128,
    ));
    out.push_str(&header_b64);
    out.push('.');
    out.push_str(&payload_b64);
    out
}

/// Signs `payload` as a compact JWS `{alg: ES384, kid, typ}`. The result
/// embeds the payload (a PIN response carries the PIN), so it zeroizes.
pub fn sign(payload: &[u8], key: &p384::SecretKey, kid: &str, typ: &str) -> Zeroizing<String> {
    let header = JwsHeader {
        alg: "ES384".into(),
        kid: Some(kid.into()),
        typ: Some(typ.into()),
        cty: None,
        crit: None,
    };
    sign_with_header(payload, key, &header)
}

/// Signs `payload` as a compact ES384 JWS under `header` (whose `alg` must be
/// `ES384`: the key is P-384). The result embeds the payload, so it zeroizes.
pub fn sign_with_header(
    payload: &[u8],
    key: &p384::SecretKey,
    header: &JwsHeader,
) -> Zeroizing<String> {
    let mut out = signing_input(payload, header);
    let sig = sign_es384_in_memory(key, out.as_bytes());
    out.push('.');
    out.push_str(&b64::encode(sig));
    out
}

/// A verified JWS: header and payload (secret: a PIN response carries the PIN).
#[derive(Debug)]
pub struct Verified {
    pub header: JwsHeader,
    pub payload: SecretBytes,
}

/// Verifies `compact` against the key its `kid` names, requiring `typ` =
/// `expected_typ`.
pub fn verify(
    compact: &str,
    keys: &dyn VerifierResolver,
    expected_typ: &str,
) -> Result<Verified, JoseError> {
    if compact.len() > MAX_COMPACT_LEN {
        return Err(JoseError::TooLarge);
    }
    let parts: Vec<&str> = compact.split('.').collect();
    if parts.len() != 3 {
        return Err(JoseError::Malformed);
    }
    let header_bytes = b64::decode(parts[0]).map_err(|_| JoseError::BadBase64)?;
    let header: JwsHeader =
        serde_json::from_slice(&header_bytes).map_err(|_| JoseError::BadHeader)?;
    if header.crit.is_some() {
        return Err(JoseError::CritUnsupported);
    }
    if header.alg != "ES384" {
        return Err(JoseError::SigAlgUnsupported);
    }
    let kid = header.kid.as_deref().ok_or(JoseError::KidMissing)?;
    let key = keys.verification_key(kid).ok_or(JoseError::KidUnknown)?;
    if header.typ.as_deref() != Some(expected_typ) {
        return Err(JoseError::TypMismatch);
    }
    let payload = SecretBytes::new(b64::decode(parts[1]).map_err(|_| JoseError::BadBase64)?);
    let sig_bytes = b64::decode(parts[2]).map_err(|_| JoseError::BadBase64)?;
    let sig = Signature::from_slice(&sig_bytes).map_err(|_| JoseError::SignatureInvalid)?;
    let signing_input_len = parts[0].len() + 1 + parts[1].len();
    VerifyingKey::from(&key)
        .verify(&compact.as_bytes()[..signing_input_len], &sig)
        .map_err(|_| JoseError::SignatureInvalid)?;
    Ok(Verified { header, payload })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::jwk::{EcJwk, KeyUse};
    use crate::jose::Jwks;

    #[test]
    fn sign_verify_and_tamper() {
        let sk = p384::SecretKey::random(&mut rand_core::OsRng);
        let jwks = Jwks {
            keys: vec![EcJwk::from_public(&sk.public_key(), "s1", KeyUse::Sig)],
        };
        let jws = sign(b"{\"a\":1}", &sk, "s1", "t");
        let sig_len = b64::decode(jws.rsplit('.').next().unwrap()).unwrap().len();
        assert_eq!(sig_len, 96);
        let v = verify(&jws, &jwks, "t").unwrap();
        assert_eq!(v.payload.expose(), b"{\"a\":1}");
        assert_eq!(
            verify(&jws, &jwks, "u").unwrap_err(),
            JoseError::TypMismatch
        );
        let tampered = jws.replacen(&b64::encode(b"{\"a\":1}"), &b64::encode(b"{\"a\":2}"), 1);
        assert_eq!(
            verify(&tampered, &jwks, "t").unwrap_err(),
            JoseError::SignatureInvalid
        );
        let other = sign(b"x", &sk, "s2", "t");
        assert_eq!(
            verify(&other, &jwks, "t").unwrap_err(),
            JoseError::KidUnknown
        );
    }
}

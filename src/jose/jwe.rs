//! Compact JWE (RFC 7516 §7.1) with key agreement `ECDH-ES+A256KW` (default)
//! or `ECDH-ES` direct (RFC 7518 §4.6), content encryption `A256GCM`
//! (RFC 7518 §5.3), on P-384 only (SPEC §2). Anything else is a named refusal.

use super::{b64, JoseError, MAX_COMPACT_LEN};
use crate::secret::SecretBytes;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use aes_kw::KekAes256;
use p384::elliptic_curve::sec1::ToEncodedPoint;
use p384::{PublicKey, SecretKey};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The two key-management algorithms of the profile (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyManagement {
    /// `ECDH-ES+A256KW`: Concat KDF output wraps a random CEK (RFC 7518 §4.6, §4.4).
    #[default]
    EcdhEsA256Kw,
    /// `ECDH-ES`: Concat KDF output is the CEK itself (RFC 7518 §4.6, "Direct Key Agreement").
    EcdhEs,
}

impl KeyManagement {
    pub fn name(self) -> &'static str {
        match self {
            KeyManagement::EcdhEsA256Kw => "ECDH-ES+A256KW",
            KeyManagement::EcdhEs => "ECDH-ES",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ECDH-ES+A256KW" => Some(KeyManagement::EcdhEsA256Kw),
            "ECDH-ES" => Some(KeyManagement::EcdhEs),
            _ => None,
        }
    }
}

/// The only content encryption algorithm of the profile.
pub const ENC_A256GCM: &str = "A256GCM";

/// A JWE protected header as this profile reads and writes it. Unknown
/// members are ignored except `crit` and `zip`, which are refused (RFC 7516
/// §4.1.13: a recipient must understand every `crit` member).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JweHeader {
    pub alg: String,
    pub enc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cty: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epk: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crit: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zip: Option<serde_json::Value>,
}

/// ECDH-ES shared secret `Z` for P-384: the 48-byte x-coordinate of the
/// shared point (RFC 7518 §4.6.2). Zeroized on drop; the only secret a
/// hardware custody lets into station memory (SPEC §14).
pub type EcdhSecret = Zeroizing<[u8; 48]>;

/// The decrypting half of key custody (SPEC §2, §14): whoever holds the
/// transport private keys derives `Z` for a `kid`. File custody computes it
/// in memory; PKCS#11 custody asks the token (`CKM_ECDH1_DERIVE`), so the
/// private key never leaves it.
pub trait KeyResolver {
    /// Whether a transport key with this `kid` is held (checked before any
    /// other header check that needs the key, so an unknown `kid` is refused
    /// without touching custody).
    fn has_decryption_key(&self, kid: &str) -> bool;
    /// `Z` = x(d · epk) for the key `kid`. `JoseError::KidUnknown` for an
    /// unknown `kid`, `JoseError::Custody` when the custody failed.
    fn ecdh_z(&self, kid: &str, epk: &PublicKey) -> Result<EcdhSecret, JoseError>;
}

/// `Z` computed in memory with a private key this process holds.
pub fn ecdh_z_in_memory(key: &SecretKey, epk: &PublicKey) -> EcdhSecret {
    // RFC 7518 §4.6: Z is the x-coordinate of the shared point; SharedSecret zeroizes.
    let shared = p384::ecdh::diffie_hellman(key.to_nonzero_scalar(), epk.as_affine());
    let mut z = Zeroizing::new([0u8; 48]);
    z.copy_from_slice(shared.raw_secret_bytes());
    z
}

/// One private key under one `kid` (the IdP's per-enrollment response key).
#[derive(Debug)]
pub struct SingleKey<'a> {
    pub kid: &'a str,
    pub key: &'a SecretKey,
}

impl KeyResolver for SingleKey<'_> {
    fn has_decryption_key(&self, kid: &str) -> bool {
        kid == self.kid
    }

    fn ecdh_z(&self, kid: &str, epk: &PublicKey) -> Result<EcdhSecret, JoseError> {
        if kid != self.kid {
            return Err(JoseError::KidUnknown);
        }
        Ok(ecdh_z_in_memory(self.key, epk))
    }
}

/// A decrypted JWE: its header and the plaintext, which stays secret.
#[derive(Debug)]
pub struct Decrypted {
    pub header: JweHeader,
    pub plaintext: SecretBytes,
}

/// The five parts of a compact JWE, decoded (RFC 7516 §7.1).
struct Parts<'a> {
    header_b64: &'a str,
    header: JweHeader,
    encrypted_key: Vec<u8>,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: Vec<u8>,
}

fn split(compact: &str) -> Result<Parts<'_>, JoseError> {
    if compact.len() > MAX_COMPACT_LEN {
        return Err(JoseError::TooLarge);
    }
    let parts: Vec<&str> = compact.split('.').collect();
    if parts.len() != 5 {
        return Err(JoseError::Malformed);
    }
    let decode = |s: &str| b64::decode(s).map_err(|_| JoseError::BadBase64);
    let header_bytes = decode(parts[0])?;
    let header: JweHeader =
        serde_json::from_slice(&header_bytes).map_err(|_| JoseError::BadHeader)?;
    Ok(Parts {
        header_b64: parts[0],
        header,
        encrypted_key: decode(parts[1])?,
        iv: decode(parts[2])?,
        ciphertext: decode(parts[3])?,
        tag: decode(parts[4])?,
    })
}

/// Reads the protected header without decrypting (for routing by `kid`/`cty`).
pub fn peek_header(compact: &str) -> Result<JweHeader, JoseError> {
    split(compact).map(|p| p.header)
}

/// Concat KDF of RFC 7518 §4.6.2 (NIST SP 800-56A §5.8.1) with SHA-256, for a
/// 256-bit output (one round). `AlgorithmID` is the `enc` value for direct
/// `ECDH-ES` and the `alg` value for `ECDH-ES+A256KW`; `PartyUInfo` and
/// `PartyVInfo` are the decoded `apu`/`apv` (empty if absent); every field is
/// prefixed with its 32-bit big-endian length; `SuppPubInfo` is keydatalen
/// (256) in bits, 32-bit big-endian; `SuppPrivInfo` is empty.
pub fn concat_kdf(z: &[u8], algorithm_id: &str, apu: &[u8], apv: &[u8]) -> Zeroizing<[u8; 32]> {
    kdf_round(z, algorithm_id, apu, apv, 256)
}

/// One SHA-256 round of the Concat KDF; callers take the first
/// `keydatalen_bits / 8` bytes.
fn kdf_round(
    z: &[u8],
    algorithm_id: &str,
    apu: &[u8],
    apv: &[u8],
    keydatalen_bits: u32,
) -> Zeroizing<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(1u32.to_be_bytes()); // round counter
    h.update(z);
    for field in [algorithm_id.as_bytes(), apu, apv] {
        h.update((field.len() as u32).to_be_bytes());
        h.update(field);
    }
    h.update(keydatalen_bits.to_be_bytes());
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&h.finalize());
    out
}

fn epk_point(epk: &serde_json::Value) -> Result<PublicKey, JoseError> {
    let obj = epk.as_object().ok_or(JoseError::EpkInvalid)?;
    let field = |name: &str| obj.get(name).and_then(|v| v.as_str());
    if field("kty") != Some("EC") {
        return Err(JoseError::EpkInvalid);
    }
    if field("crv") != Some("P-384") {
        return Err(JoseError::CurveUnsupported);
    }
    let (x, y) = match (field("x"), field("y")) {
        (Some(x), Some(y)) => (x, y),
        _ => return Err(JoseError::EpkInvalid),
    };
    // from_encoded_point refuses points not on P-384 (invalid-curve attacks).
    super::jwk::point_from_coords(x, y).ok_or(JoseError::EpkInvalid)
}

fn optional_b64(value: &Option<String>) -> Result<Vec<u8>, JoseError> {
    match value {
        Some(s) => b64::decode(s).map_err(|_| JoseError::BadHeader),
        None => Ok(Vec::new()),
    }
}

/// Decrypts `compact` with the key its `kid` names, requiring `cty` =
/// `expected_cty`. Checks run cheapest-first and every failure is a distinct
/// [`JoseError`]; the plaintext only ever exists in a [`SecretBytes`].
pub fn decrypt(
    compact: &str,
    keys: &dyn KeyResolver,
    expected_cty: &str,
) -> Result<Decrypted, JoseError> {
    let parts = split(compact)?;
    let h = &parts.header;
    if h.crit.is_some() || h.zip.is_some() {
        return Err(JoseError::CritUnsupported);
    }
    let alg = KeyManagement::from_name(&h.alg).ok_or(JoseError::AlgUnsupported)?;
    if h.enc != ENC_A256GCM {
        return Err(JoseError::EncUnsupported);
    }
    let kid = h.kid.as_deref().ok_or(JoseError::KidMissing)?;
    if !keys.has_decryption_key(kid) {
        return Err(JoseError::KidUnknown);
    }
    if h.cty.as_deref() != Some(expected_cty) {
        return Err(JoseError::CtyMismatch);
    }
    let epk = epk_point(h.epk.as_ref().ok_or(JoseError::EpkInvalid)?)?;
    let apu = optional_b64(&h.apu)?;
    let apv = optional_b64(&h.apv)?;
    if parts.iv.len() != 12 {
        return Err(JoseError::IvInvalid);
    }
    if parts.tag.len() != 16 {
        return Err(JoseError::TagLength);
    }
    // Last check before the custody is asked: everything cheap has passed.
    let z_buf = keys.ecdh_z(kid, &epk)?;
    let z = z_buf.as_slice();
    let cek: Zeroizing<[u8; 32]> = match alg {
        KeyManagement::EcdhEs => {
            // RFC 7516 §5.2 step 10: the JWE Encrypted Key must be empty.
            if !parts.encrypted_key.is_empty() {
                return Err(JoseError::EncryptedKeyInvalid);
            }
            concat_kdf(z, ENC_A256GCM, &apu, &apv)
        }
        KeyManagement::EcdhEsA256Kw => {
            // RFC 3394: a wrapped 256-bit key is 40 bytes.
            if parts.encrypted_key.len() != 40 {
                return Err(JoseError::EncryptedKeyInvalid);
            }
            let kek = concat_kdf(z, alg.name(), &apu, &apv);
            let kw = KekAes256::from(*kek);
            let mut cek = Zeroizing::new([0u8; 32]);
            kw.unwrap(&parts.encrypted_key, cek.as_mut())
                .map_err(|_| JoseError::KeyUnwrapFailed)?;
            cek
        }
    };
    let cipher = Aes256Gcm::new(cek.as_ref().into());
    let mut plaintext = SecretBytes::new(parts.ciphertext);
    // RFC 7516 §5.2 step 14: AAD = ASCII(BASE64URL(UTF8(JWE Protected Header))).
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&parts.iv),
            parts.header_b64.as_bytes(),
            plaintext.expose_mut(),
            Tag::from_slice(&parts.tag),
        )
        .map_err(|_| JoseError::TagInvalid)?;
    Ok(Decrypted {
        header: parts.header,
        plaintext,
    })
}

/// Encrypts `plaintext` to `recipient` as a compact JWE with header
/// `{alg, enc: A256GCM, kid, cty, epk}` (RFC 7516 §5.1).
pub fn encrypt(
    plaintext: &[u8],
    recipient: &PublicKey,
    kid: &str,
    cty: &str,
    alg: KeyManagement,
) -> Result<String, JoseError> {
    let ephemeral = p384::ecdh::EphemeralSecret::random(&mut OsRng);
    let epk_point = ephemeral.public_key().to_encoded_point(false);
    let epk = serde_json::json!({
        "kty": "EC",
        "crv": "P-384",
        "x": b64::encode(epk_point.x().ok_or(JoseError::Internal)?),
        "y": b64::encode(epk_point.y().ok_or(JoseError::Internal)?),
    });
    let shared = ephemeral.diffie_hellman(recipient);
    let z = shared.raw_secret_bytes();
    let (cek, encrypted_key) = match alg {
        KeyManagement::EcdhEs => (concat_kdf(z, ENC_A256GCM, &[], &[]), Vec::new()),
        KeyManagement::EcdhEsA256Kw => {
            let kek = concat_kdf(z, alg.name(), &[], &[]);
            let mut cek = Zeroizing::new([0u8; 32]);
            OsRng.fill_bytes(cek.as_mut());
            let mut wrapped = vec![0u8; 40];
            KekAes256::from(*kek)
                .wrap(cek.as_ref(), &mut wrapped)
                .map_err(|_| JoseError::Internal)?;
            (cek, wrapped)
        }
    };
    let header = JweHeader {
        alg: alg.name().into(),
        enc: ENC_A256GCM.into(),
        kid: Some(kid.into()),
        cty: Some(cty.into()),
        epk: Some(epk),
        apu: None,
        apv: None,
        crit: None,
        zip: None,
    };
    let header_b64 = b64::encode(serde_json::to_vec(&header).map_err(|_| JoseError::Internal)?);
    let mut iv = [0u8; 12];
    OsRng.fill_bytes(&mut iv);
    // The buffer holds plaintext until encrypted in place, so it zeroizes.
    let mut buf = Zeroizing::new(plaintext.to_vec());
    let tag = Aes256Gcm::new(cek.as_ref().into())
        .encrypt_in_place_detached(Nonce::from_slice(&iv), header_b64.as_bytes(), &mut buf)
        .map_err(|_| JoseError::Internal)?;
    Ok(format!(
        "{header_b64}.{}.{}.{}.{}",
        b64::encode(&encrypted_key),
        b64::encode(iv),
        b64::encode(buf.as_slice()),
        b64::encode(tag)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::random(&mut OsRng)
    }

    #[test]
    fn round_trip_both_algs() {
        let sk = key();
        for alg in [KeyManagement::EcdhEsA256Kw, KeyManagement::EcdhEs] {
            let jwe = encrypt(b"hello", &sk.public_key(), "k1", "c", alg).unwrap();
            let r = SingleKey {
                kid: "k1",
                key: &sk,
            };
            let d = decrypt(&jwe, &r, "c").unwrap();
            assert_eq!(d.plaintext.expose(), b"hello");
            assert_eq!(d.header.alg, alg.name());
            assert_eq!(
                decrypt(&jwe, &r, "other").unwrap_err(),
                JoseError::CtyMismatch
            );
            let other = key();
            let wrong = SingleKey {
                kid: "k1",
                key: &other,
            };
            let err = decrypt(&jwe, &wrong, "c").unwrap_err();
            assert!(matches!(
                err,
                JoseError::KeyUnwrapFailed | JoseError::TagInvalid
            ));
        }
    }

    /// RFC 7518 Appendix C: the ECDH-ES Concat KDF example (Z from its P-256
    /// keys, AlgorithmID "A128GCM", apu "Alice", apv "Bob", keydatalen 128).
    #[test]
    fn concat_kdf_matches_rfc7518_appendix_c() {
        let z: [u8; 32] = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49,
            110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let out = kdf_round(&z, "A128GCM", b"Alice", b"Bob", 128);
        assert_eq!(b64::encode(&out[..16]), "VqqN6vgjbSBcIijNcacQGg");
    }
}

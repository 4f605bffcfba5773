//! Credential key pairs of the simulated key: ES256 (COSE −7, P-256 ECDSA)
//! and EdDSA (COSE −8, Ed25519), the two algorithms YubiKey 5 firmware from
//! 5.2.3 on makes (research §3.4; getInfo 0x0A lists both).
//!
//! A credential's private key is 32 bytes either way (a P-256 scalar or an
//! Ed25519 seed, RFC 8032 §5.1.5), so both fit the credential-id wrapping of
//! [`super::authenticator`] and the store unchanged; the algorithm travels in
//! the wrapped id's flags byte.
//!
//! Ed25519 comes from `ed25519-dalek` (dalek-cryptography; RustCrypto has no
//! maintained Ed25519 signer of its own, and dalek 2.x shares sha2 0.10 /
//! rand_core 0.6 with the RustCrypto crates already in the tree).

use crate::cbor::Value;
use crate::secret::Secret;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand::rngs::StdRng;
use rand::RngCore;

/// COSE algorithm of a credential (RFC 9053 / IANA COSE Algorithms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredAlg {
    /// ECDSA P-256 with SHA-256 (−7).
    Es256,
    /// EdDSA over Ed25519 (−8).
    EdDsa,
}

impl CredAlg {
    pub const ES256: i64 = -7;
    pub const EDDSA: i64 = -8;

    /// The COSE identifier.
    pub fn cose(self) -> i64 {
        match self {
            Self::Es256 => Self::ES256,
            Self::EdDsa => Self::EDDSA,
        }
    }

    /// The algorithm of a COSE identifier the simulator can make.
    pub fn from_cose(alg: i64) -> Option<Self> {
        match alg {
            Self::ES256 => Some(Self::Es256),
            Self::EDDSA => Some(Self::EdDsa),
            _ => None,
        }
    }

    /// The bit this algorithm sets in a wrapped credential id's flags byte
    /// (low nibble: credProtect 1–3; bits 4–6: algorithm; bit 7: made with
    /// hmac-secret, `extensions::HMAC_SECRET_BIT`).
    pub(crate) fn flag(self) -> u8 {
        match self {
            Self::Es256 => 0,
            Self::EdDsa => 0x10,
        }
    }

    pub(crate) fn from_flags(flags: u8) -> Option<Self> {
        match flags & 0x70 {
            0 => Some(Self::Es256),
            0x10 => Some(Self::EdDsa),
            _ => None,
        }
    }

    /// A fresh private key (P-256 scalar or Ed25519 seed).
    pub fn generate(self, rng: &mut StdRng) -> Secret<[u8; 32]> {
        match self {
            Self::Es256 => {
                let sk = p256::SecretKey::random(rng);
                let mut out = [0u8; 32];
                out.copy_from_slice(&sk.to_bytes());
                Secret::new(out)
            }
            Self::EdDsa => {
                let mut seed = [0u8; 32];
                rng.fill_bytes(&mut seed);
                Secret::new(seed)
            }
        }
    }

    /// The COSE_Key of the public key (WebAuthn §6.5.1.1): ES256 as EC2
    /// `{1:2, 3:-7, -1:1, -2:x, -3:y}`, EdDSA as OKP `{1:1, 3:-8, -1:6, -2:x}`
    /// (RFC 9053 §7.2, crv 6 = Ed25519).
    pub fn public_cose(self, private: &Secret<[u8; 32]>) -> Option<Value> {
        match self {
            Self::Es256 => {
                let sk = p256::SecretKey::from_slice(private.expose()).ok()?;
                let p = sk.public_key().to_encoded_point(false);
                Some(Value::map([
                    (Value::from(1), Value::from(2)),
                    (Value::from(3), Value::from(Self::ES256)),
                    (Value::from(-1), Value::from(1)),
                    (Value::from(-2), Value::from(p.x()?.to_vec())),
                    (Value::from(-3), Value::from(p.y()?.to_vec())),
                ]))
            }
            Self::EdDsa => {
                let sk = ed25519_dalek::SigningKey::from_bytes(private.expose());
                Some(Value::map([
                    (Value::from(1), Value::from(1)),
                    (Value::from(3), Value::from(Self::EDDSA)),
                    (Value::from(-1), Value::from(6)),
                    (
                        Value::from(-2),
                        Value::from(sk.verifying_key().to_bytes().to_vec()),
                    ),
                ]))
            }
        }
    }

    /// The signature over `message`: ES256 as DER ECDSA over SHA-256,
    /// EdDSA as the 64-byte pure Ed25519 signature (WebAuthn §6.5.5:
    /// authenticatorData ‖ clientDataHash, not prehashed).
    pub fn sign(self, private: &Secret<[u8; 32]>, message: &[u8]) -> Option<Vec<u8>> {
        match self {
            Self::Es256 => {
                use p256::ecdsa::signature::Signer;
                let sk = p256::ecdsa::SigningKey::from_slice(private.expose()).ok()?;
                let sig: p256::ecdsa::DerSignature = sk.sign(message);
                Some(sig.as_bytes().to_vec())
            }
            Self::EdDsa => {
                use ed25519_dalek::Signer;
                let sk = ed25519_dalek::SigningKey::from_bytes(private.expose());
                Some(sk.sign(message).to_bytes().to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn eddsa_key_is_okp_and_signs_verifiably() {
        let mut rng = StdRng::seed_from_u64(3);
        let sk = CredAlg::EdDsa.generate(&mut rng);
        let cose = CredAlg::EdDsa.public_cose(&sk).unwrap();
        assert_eq!(cose.get(1).and_then(Value::as_i64), Some(1));
        assert_eq!(cose.get(3).and_then(Value::as_i64), Some(-8));
        assert_eq!(cose.get(-1).and_then(Value::as_i64), Some(6));
        let x: [u8; 32] = cose
            .get(-2)
            .and_then(Value::as_bytes)
            .unwrap()
            .try_into()
            .unwrap();
        assert!(cose.get(-3).is_none());
        let sig = CredAlg::EdDsa.sign(&sk, b"authData||cdh").unwrap();
        assert_eq!(sig.len(), 64);
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
        vk.verify_strict(b"authData||cdh", &sig).unwrap();
        assert!(vk.verify_strict(b"other", &sig).is_err());
    }

    #[test]
    fn es256_key_is_ec2_and_signs_verifiably() {
        let mut rng = StdRng::seed_from_u64(4);
        let sk = CredAlg::Es256.generate(&mut rng);
        let cose = CredAlg::Es256.public_cose(&sk).unwrap();
        assert_eq!(cose.get(3).and_then(Value::as_i64), Some(-7));
        let sig = CredAlg::Es256.sign(&sk, b"m").unwrap();
        let x = cose.get(-2).and_then(Value::as_bytes).unwrap();
        let y = cose.get(-3).and_then(Value::as_bytes).unwrap();
        let point = [[4u8].as_slice(), x, y].concat();
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
        use p256::ecdsa::signature::Verifier;
        let sig = p256::ecdsa::DerSignature::from_bytes(&sig).unwrap();
        vk.verify(b"m", &sig).unwrap();
    }

    #[test]
    fn flags_round_trip() {
        for alg in [CredAlg::Es256, CredAlg::EdDsa] {
            assert_eq!(CredAlg::from_flags(alg.flag() | 3), Some(alg));
            assert_eq!(CredAlg::from_cose(alg.cose()), Some(alg));
        }
        assert_eq!(CredAlg::from_flags(0x20), None);
        // The hmac-secret bit does not change the algorithm.
        assert_eq!(CredAlg::from_flags(0x80 | 0x10 | 2), Some(CredAlg::EdDsa));
        assert_eq!(CredAlg::from_cose(-257), None);
    }
}

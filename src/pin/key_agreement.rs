//! P-256 key agreement of the PIN/UV auth protocols (CTAP 2.1 §6.5.6 "initialize",
//! "encapsulate", "ecdh"), usable by the platform and by the authenticator.

use super::{PinError, PinProtocol, SharedSecret};
use crate::cbor::Value;
use crate::secret::SecretBytes;
use p256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
use p256::{EncodedPoint, PublicKey, SecretKey};

/// COSE labels and values of a key-agreement key (§6.5.6, RFC 9053).
const KTY: i64 = 1;
const ALG: i64 = 3;
const CRV: i64 = -1;
const X: i64 = -2;
const Y: i64 = -3;
const KTY_EC2: i64 = 2;
const CRV_P256: i64 = 1;
/// "ECDH-ES+HKDF-256": what CTAP puts in `alg` for both protocols, as a placeholder.
pub(crate) const ALG_ECDH_ES_HKDF_256: i64 = -25;

/// A P-256 public key in COSE_Key form, checked to be on the curve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoseKey {
    public: PublicKey,
}

impl CoseKey {
    /// From affine coordinates; refuses points not on P-256.
    pub fn from_coordinates(x: &[u8], y: &[u8]) -> Result<Self, PinError> {
        if x.len() != 32 || y.len() != 32 {
            return Err(PinError::InvalidKey("coordinates must be 32 bytes"));
        }
        let point = EncodedPoint::from_affine_coordinates(x.into(), y.into(), false);
        let public = Option::from(PublicKey::from_encoded_point(&point))
            .ok_or(PinError::InvalidKey("point is not on P-256"))?;
        Ok(Self { public })
    }

    /// Parses `{1: 2, 3: -25, -1: 1, -2: x, -3: y}`. kty and crv must be EC2
    /// and P-256; `alg` is a placeholder (§6.5.6) and only checked to be an integer.
    pub fn from_cbor(value: &Value) -> Result<Self, PinError> {
        if value.as_map().is_none() {
            return Err(PinError::InvalidKey("not a map"));
        }
        if value.get(KTY).and_then(Value::as_i64) != Some(KTY_EC2) {
            return Err(PinError::InvalidKey("kty is not EC2"));
        }
        if value.get(CRV).and_then(Value::as_i64) != Some(CRV_P256) {
            return Err(PinError::InvalidKey("crv is not P-256"));
        }
        if let Some(alg) = value.get(ALG) {
            alg.as_i64()
                .ok_or(PinError::InvalidKey("alg is not an integer"))?;
        }
        let x = value
            .get(X)
            .and_then(Value::as_bytes)
            .ok_or(PinError::InvalidKey("x missing"))?;
        let y = value
            .get(Y)
            .and_then(Value::as_bytes)
            .ok_or(PinError::InvalidKey("y missing"))?;
        Self::from_coordinates(x, y)
    }

    /// The COSE_Key map, with `alg` -25.
    pub fn to_cbor(&self) -> Value {
        let (x, y) = self.coordinates();
        Value::map([
            (Value::from(KTY), Value::from(KTY_EC2)),
            (Value::from(ALG), Value::from(ALG_ECDH_ES_HKDF_256)),
            (Value::from(CRV), Value::from(CRV_P256)),
            (Value::from(X), Value::from(x.to_vec())),
            (Value::from(Y), Value::from(y.to_vec())),
        ])
    }

    /// The affine coordinates.
    pub fn coordinates(&self) -> ([u8; 32], [u8; 32]) {
        let point = self.public.to_encoded_point(false);
        let mut x = [0u8; 32];
        let mut y = [0u8; 32];
        // Uncompressed, non-identity points always carry both coordinates.
        x.copy_from_slice(point.x().expect("uncompressed point"));
        y.copy_from_slice(point.y().expect("uncompressed point"));
        (x, y)
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }
}

/// A P-256 key-agreement key pair. The private half zeroizes on drop
/// (`p256::SecretKey` does) and is never printed.
pub struct KeyAgreement {
    secret: SecretKey,
}

impl std::fmt::Debug for KeyAgreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeyAgreement(public: {:?}, <redacted>)",
            self.public_key()
        )
    }
}

impl KeyAgreement {
    /// A fresh key pair from the OS CSPRNG.
    pub fn generate() -> Self {
        Self {
            secret: SecretKey::random(&mut rand_core::OsRng),
        }
    }

    /// A key pair from a big-endian scalar of at most 32 bytes (known-answer
    /// tests, deterministic simulators). Zero or ≥ n is refused.
    pub fn from_scalar(scalar: &[u8]) -> Result<Self, PinError> {
        if scalar.len() > 32 {
            return Err(PinError::KeyLength(scalar.len()));
        }
        let mut padded = zeroize::Zeroizing::new([0u8; 32]);
        padded[32 - scalar.len()..].copy_from_slice(scalar);
        let secret = SecretKey::from_bytes((&*padded).into())
            .map_err(|_| PinError::InvalidKey("scalar out of range"))?;
        Ok(Self { secret })
    }

    /// The public half, to send as keyAgreement.
    pub fn public_key(&self) -> CoseKey {
        CoseKey {
            public: self.secret.public_key(),
        }
    }

    /// ecdh(peer): Z, the x-coordinate of the shared point (32 bytes).
    pub fn ecdh(&self, peer: &CoseKey) -> SecretBytes {
        let shared =
            p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), peer.public.as_affine());
        SecretBytes::from_slice(shared.raw_secret_bytes())
    }

    /// ecdh followed by the protocol's KDF.
    pub fn shared_secret(&self, protocol: PinProtocol, peer: &CoseKey) -> SharedSecret {
        SharedSecret::from_z(protocol, self.ecdh(peer).expose())
    }
}

/// The platform's encapsulate (§6.5.6): a fresh ephemeral key pair, ECDH with
/// the authenticator's key, KDF. Returns the key to send as keyAgreement and
/// the shared secret; the ephemeral private key is dropped (zeroized) here.
pub fn encapsulate(protocol: PinProtocol, authenticator_key: &CoseKey) -> (CoseKey, SharedSecret) {
    let ephemeral = KeyAgreement::generate();
    (
        ephemeral.public_key(),
        ephemeral.shared_secret(protocol, authenticator_key),
    )
}

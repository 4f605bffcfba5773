//! Public EC JWKs (RFC 7517 §4, RFC 7518 §6.2) restricted to P-384, and JWK
//! sets. Okta's `ECKeyJWK` requires `kty`, `crv`, `x`, `y`, `use`, `kid`
//! (SPEC §2), so those are required here too.

use super::{b64, JoseError};
use p384::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
use p384::{EncodedPoint, PublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// P-384 coordinates are 48 bytes (RFC 7518 §6.2.1.2: full length, no trimming).
const COORD_LEN: usize = 48;

/// What a key is for (RFC 7517 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, zeroize::Zeroize)]
pub enum KeyUse {
    #[serde(rename = "enc")]
    Enc,
    #[serde(rename = "sig")]
    Sig,
}

/// A public EC P-384 JWK. (`Zeroize` so that request payloads holding one can
/// wipe themselves; a public key is not secret.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, zeroize::Zeroize)]
pub struct EcJwk {
    pub kty: String,
    pub crv: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub key_use: KeyUse,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    pub x: String,
    pub y: String,
    /// The certificate chain of a signing key (RFC 7517 §4.7, standard
    /// base64 DER, leaf first), once a facility CA certified it (SPEC §14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
}

impl EcJwk {
    /// The JWK of `key`.
    pub fn from_public(key: &PublicKey, kid: &str, key_use: KeyUse) -> Self {
        let point = key.to_encoded_point(false);
        // Uncompressed SEC1 points always carry both coordinates.
        let x = point.x().map(b64::encode).unwrap_or_default();
        let y = point.y().map(b64::encode).unwrap_or_default();
        EcJwk {
            kty: "EC".into(),
            crv: "P-384".into(),
            kid: kid.into(),
            key_use,
            alg: match key_use {
                KeyUse::Sig => Some("ES384".into()),
                KeyUse::Enc => None,
            },
            x,
            y,
            x5c: None,
        }
    }

    /// The point, checked to be on P-384 (an off-curve point is an invalid-curve
    /// attack on ECDH, so this is never skipped).
    pub fn to_public_key(&self) -> Result<PublicKey, JoseError> {
        if self.kty != "EC" || self.crv != "P-384" {
            return Err(JoseError::CurveUnsupported);
        }
        point_from_coords(&self.x, &self.y).ok_or(JoseError::JwkInvalid)
    }

    /// [`to_public_key`](Self::to_public_key), also requiring `use`.
    pub fn to_public_key_for(&self, key_use: KeyUse) -> Result<PublicKey, JoseError> {
        if self.key_use != key_use {
            return Err(JoseError::JwkInvalid);
        }
        self.to_public_key()
    }

    /// RFC 7638 thumbprint (SHA-256 over the required members in
    /// lexicographic order, no whitespace), base64url.
    pub fn thumbprint(&self) -> String {
        thumbprint_of(&self.x, &self.y)
    }
}

pub(crate) fn thumbprint_of(x: &str, y: &str) -> String {
    // Members are fixed strings and base64url text, so no JSON escaping is needed.
    let canonical = format!(r#"{{"crv":"P-384","kty":"EC","x":"{x}","y":"{y}"}}"#);
    b64::encode(Sha256::digest(canonical.as_bytes()))
}

/// Decodes base64url coordinates into a point on P-384, or `None`.
pub(crate) fn point_from_coords(x: &str, y: &str) -> Option<PublicKey> {
    let x = b64::decode(x).ok()?;
    let y = b64::decode(y).ok()?;
    if x.len() != COORD_LEN || y.len() != COORD_LEN {
        return None;
    }
    let point = EncodedPoint::from_affine_coordinates(
        p384::FieldBytes::from_slice(&x),
        p384::FieldBytes::from_slice(&y),
        false,
    );
    Option::from(PublicKey::from_encoded_point(&point))
}

/// A JWK set (RFC 7517 §5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<EcJwk>,
}

impl Jwks {
    /// The key with `kid`, if any.
    pub fn find(&self, kid: &str) -> Option<&EcJwk> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Parses a JWKS document.
    pub fn from_json(text: &str) -> Result<Self, JoseError> {
        serde_json::from_str(text).map_err(|_| JoseError::JwkInvalid)
    }

    pub fn to_json_pretty(&self) -> String {
        // Serializing plain strings cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_curve_check() {
        let sk = p384::SecretKey::random(&mut rand_core::OsRng);
        let jwk = EcJwk::from_public(&sk.public_key(), "k1", KeyUse::Enc);
        assert_eq!(jwk.to_public_key().unwrap(), sk.public_key());
        let mut off = jwk.clone();
        // Flip a bit of y: almost surely off the curve.
        let mut y = b64::decode(&off.y).unwrap();
        y[47] ^= 1;
        off.y = b64::encode(&y);
        assert_eq!(off.to_public_key(), Err(JoseError::JwkInvalid));
        let mut p256 = jwk.clone();
        p256.crv = "P-256".into();
        assert_eq!(p256.to_public_key(), Err(JoseError::CurveUnsupported));
        assert_eq!(
            jwk.to_public_key_for(KeyUse::Sig),
            Err(JoseError::JwkInvalid)
        );
    }

    #[test]
    fn thumbprint_is_rfc7638_shape() {
        let sk = p384::SecretKey::random(&mut rand_core::OsRng);
        let jwk = EcJwk::from_public(&sk.public_key(), "k", KeyUse::Sig);
        let t = jwk.thumbprint();
        assert_eq!(b64::decode(&t).unwrap().len(), 32);
    }
}

//! Every way a JOSE object is refused. Closed: these are our decisions, each
//! with a stable short code for logs, audit rows and the refusal table test.
//! No variant carries key material, plaintext or attacker-sized data.

use thiserror::Error;

/// Why a compact JWE or JWS was refused (or could not be made).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum JoseError {
    #[error("not a compact JOSE object (wrong number of parts)")]
    Malformed,
    #[error("JOSE object larger than the station accepts")]
    TooLarge,
    #[error("a part is not unpadded base64url")]
    BadBase64,
    #[error("protected header is not a JSON object of the expected shape")]
    BadHeader,
    #[error("JWE alg is not ECDH-ES+A256KW or ECDH-ES")]
    AlgUnsupported,
    #[error("JWE enc is not A256GCM")]
    EncUnsupported,
    #[error("header carries crit or zip, which this profile does not support")]
    CritUnsupported,
    #[error("header has no kid")]
    KidMissing,
    #[error("kid names no configured key")]
    KidUnknown,
    #[error("cty does not match what this slot expects")]
    CtyMismatch,
    #[error("typ does not match what this slot expects")]
    TypMismatch,
    #[error("key is not on curve P-384 (or not an EC key)")]
    CurveUnsupported,
    #[error("ephemeral public key (epk) is missing or not a point on P-384")]
    EpkInvalid,
    #[error("encrypted key has the wrong length for the alg")]
    EncryptedKeyInvalid,
    #[error("content encryption key could not be unwrapped (wrong key or tampered)")]
    KeyUnwrapFailed,
    #[error("IV is not 96 bits")]
    IvInvalid,
    #[error("authentication tag is not 128 bits")]
    TagLength,
    #[error("AES-GCM authentication failed (tampered ciphertext, header or tag)")]
    TagInvalid,
    #[error(
        "JWS alg is not one this profile accepts (ES384; ES256 or ES384 for IdP-signed requests)"
    )]
    SigAlgUnsupported,
    #[error("JWS alg does not match the curve of the key its kid names")]
    SigAlgKeyMismatch,
    #[error("JWS kid names no key of the IdP signing JWKS")]
    SignerUnknown,
    #[error("JWS cty does not match the content type of the request")]
    JwsCtyMismatch,
    #[error("JWS signature is invalid")]
    SignatureInvalid,
    #[error("JWK is not an EC P-384 key of the expected use")]
    JwkInvalid,
    #[error("a cryptographic primitive failed unexpectedly")]
    Internal,
    /// The station's own key custody (an HSM) could not decrypt or sign: a
    /// fault of the station, not of the request — the job is retried.
    #[error("the station's key custody (HSM) failed; nothing was decrypted or signed")]
    Custody,
}

impl JoseError {
    /// A station-side failure (the request itself may be fine): retry the
    /// job, never refuse it for good (SPEC §14).
    pub fn is_custody(&self) -> bool {
        matches!(self, JoseError::Custody)
    }
}

impl JoseError {
    /// Stable short code (`jwe.alg_unsupported`, …): part of the station's
    /// audit vocabulary, never reworded.
    pub fn code(&self) -> &'static str {
        use JoseError::*;
        match self {
            Malformed => "jose.malformed",
            TooLarge => "jose.too_large",
            BadBase64 => "jose.bad_base64",
            BadHeader => "jose.bad_header",
            AlgUnsupported => "jwe.alg_unsupported",
            EncUnsupported => "jwe.enc_unsupported",
            CritUnsupported => "jose.crit_unsupported",
            KidMissing => "jose.kid_missing",
            KidUnknown => "jose.kid_unknown",
            CtyMismatch => "jwe.cty_mismatch",
            TypMismatch => "jws.typ_mismatch",
            CurveUnsupported => "jose.curve_unsupported",
            EpkInvalid => "jwe.epk_invalid",
            EncryptedKeyInvalid => "jwe.encrypted_key_invalid",
            KeyUnwrapFailed => "jwe.key_unwrap_failed",
            IvInvalid => "jwe.iv_invalid",
            TagLength => "jwe.tag_length",
            TagInvalid => "jwe.tag_invalid",
            SigAlgUnsupported => "jws.alg_unsupported",
            SigAlgKeyMismatch => "jws.alg_key_mismatch",
            SignerUnknown => "jws.kid_unknown",
            JwsCtyMismatch => "jws.cty_mismatch",
            SignatureInvalid => "jws.signature_invalid",
            JwkInvalid => "jose.jwk_invalid",
            Internal => "jose.internal",
            Custody => "jose.custody",
        }
    }
}

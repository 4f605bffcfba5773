//! JOSE for the station (SPEC §2, §4, §5): key custody, request JWE decryption,
//! response JWS-in-JWE. Implemented directly on RustCrypto (p384, aes-gcm,
//! aes-kw, sha2): compact serialization only, P-384 only, and a closed list of
//! algorithms, so everything outside the profile is a named refusal.
//!
//! | file | job |
//! |---|---|
//! | [`error`] | [`JoseError`]: every refusal with a stable short code |
//! | [`jwk`] | public EC JWKs and JWK sets, RFC 7638 thumbprints |
//! | [`keys`] | station key custody: generate, load, refuse loose modes, export JWKS |
//! | [`pkcs11`] | PKCS#11 custody: keys in a token, ECDH derive and ECDSA by the token (SPEC §14) |
//! | [`jwe`] | compact JWE, `ECDH-ES+A256KW` / `ECDH-ES` with `A256GCM` (RFC 7516, RFC 7518 §4.6) |
//! | [`jws`] | compact JWS `ES384` (RFC 7515, RFC 7518 §3.4) |
//! | [`request`] | typed, validated PIN and credential requests (SPEC §4) |
//! | [`signed`] | IdP-signed requests: JWS ES256/ES384 inside the request JWE (SPEC §4) |
//! | [`x5c`] | the signing certificate: CSR by the custody, x5c chain, IdP check against a facility CA (SPEC §14) |
//! | [`response`] | PIN and credential responses, signed then encrypted (SPEC §5) |

pub mod error;
pub mod jwe;
pub mod jwk;
pub mod jws;
pub mod keys;
pub mod pkcs11;
pub mod request;
pub mod response;
pub mod signed;
pub mod x5c;

pub use error::JoseError;
pub use jwe::KeyManagement;
pub use jwk::{EcJwk, Jwks};
pub use keys::{KeyError, StationKeys};
pub use request::{decrypt_job, DecryptedRequests, RequestError, RequestPolicy, RequestRefusal};
pub use signed::IdpSigners;

/// The `cty` values of SPEC §2.
pub mod cty {
    pub const PIN_REQUEST: &str = "prereg.pin-request.v1";
    pub const CRED_REQUEST: &str = "prereg.cred-request.v1";
    pub const PIN_RESPONSE: &str = "prereg.pin-response.v1";
    pub const CRED_RESPONSE: &str = "prereg.cred-response.v1";
    /// Outer `cty` of a response JWE: its plaintext is a JWS (RFC 7516 §4.1.12).
    pub const JWT: &str = "JWT";
}

/// Largest compact JOSE string we parse (a request is a few KiB; refuse
/// anything that would make us allocate on an attacker's say-so).
pub const MAX_COMPACT_LEN: usize = 256 * 1024;

/// Unpadded base64url (RFC 7515 §2), strict: padding and non-canonical trailing
/// bits are refused.
pub(crate) mod b64 {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    pub fn encode(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
        URL_SAFE_NO_PAD.decode(text)
    }
}

pub use b64::{decode as b64url_decode, encode as b64url_encode};

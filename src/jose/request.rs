//! PIN and credential requests (SPEC §4): the plaintexts of the request JWEs,
//! typed and validated. Validation is one pass into [`ValidatedPinRequest`] /
//! [`ValidatedCredentialRequest`]; the job is then checked for binding.
//! Everything decrypted is zeroized on drop; the challenge is a [`SecretBytes`].

use super::jwe::{self, KeyResolver};
use super::jwk::{EcJwk, KeyUse};
use super::signed::{self, IdpSigners};
use super::{b64, cty, JoseError};
use crate::secret::SecretBytes;
use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Clock skew tolerated on `iat` (a request issued "in the future" by less
/// than this is accepted). `exp` gets no leeway.
pub const IAT_LEEWAY_SECS: i64 = 300;
/// WebAuthn §13.4.3: challenges of at least 16 random bytes.
pub const MIN_CHALLENGE_LEN: usize = 16;
/// COSE alg ES256 (RFC 9053): every YubiKey supports it, so it must be offered.
pub const COSE_ES256: i64 = -7;
/// `[station] max_request_lifetime_days` when unset (SPEC §4).
pub const DEFAULT_MAX_REQUEST_LIFETIME_DAYS: u32 = 30;

/// What one customization asks of its requests (SPEC §4), beside the rules
/// every request obeys.
#[derive(Debug, Clone, Copy)]
pub struct RequestPolicy<'a> {
    /// `idp_signing_jwks`: every request must be an IdP-signed JWS verified
    /// against these keys. `None`: requests are plain JSON, and a signed one
    /// is refused (it cannot be verified, and is never accepted unverified).
    pub idp_signers: Option<&'a IdpSigners>,
    /// Largest `exp - iat`, seconds (`max_request_lifetime_days`).
    pub max_lifetime_secs: i64,
}

impl Default for RequestPolicy<'_> {
    fn default() -> Self {
        RequestPolicy {
            idp_signers: None,
            max_lifetime_secs: i64::from(DEFAULT_MAX_REQUEST_LIFETIME_DAYS) * 86_400,
        }
    }
}

/// Which request of a job an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestPart {
    Pin,
    /// The i-th credential request (0-based).
    Credential(usize),
    /// The job as a whole (binding, counts).
    Job,
}

impl fmt::Display for RequestPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestPart::Pin => f.write_str("PIN request"),
            RequestPart::Credential(i) => write!(f, "credential request {i}"),
            RequestPart::Job => f.write_str("job"),
        }
    }
}

/// Why a request was refused. Closed; each has a stable code. Messages name
/// fields, never values from the (secret) plaintext.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RequestRefusal {
    #[error("{0}")]
    Jose(JoseError),
    #[error("plaintext is not JSON of the request schema ({0})")]
    Schema(String),
    #[error("unsupported request version (v must be 1)")]
    Version,
    #[error("request expired (exp is in the past)")]
    Expired,
    #[error("request not yet valid (iat/nbf in the future)")]
    NotYetValid,
    #[error("credential request's userId differs from the PIN request's")]
    UserMismatch,
    #[error("authenticatorEnrollmentId is not listed in the PIN request")]
    EnrollmentNotListed,
    #[error("two credential requests carry the same authenticatorEnrollmentId")]
    DuplicateEnrollment,
    #[error("job has no credential request")]
    NoCredentialRequest,
    #[error("authenticatorSelection.residentKey is not \"required\"")]
    ResidentKeyNotRequired,
    #[error("challenge shorter than {MIN_CHALLENGE_LEN} bytes")]
    ChallengeTooShort,
    #[error("origin is not https or does not match rp.id")]
    OriginInvalid,
    #[error("rp.id is not a valid domain")]
    RpIdInvalid,
    #[error("pubKeyCredParams does not offer ES256 (-7)")]
    Es256Missing,
    #[error("attestation is not direct, none or enterprise")]
    AttestationUnsupported,
    #[error("responseKey is not a P-384 enc JWK with a kid and a point on the curve")]
    ResponseKeyInvalid,
    #[error("pinPolicy is not one this station can apply")]
    PinPolicyInvalid,
    #[error("an extension value is not supported")]
    ExtensionUnsupported,
    #[error("responseKey differs from the PIN request's (one job, one response key)")]
    ResponseKeyMismatch,
    #[error("exp - iat exceeds max_request_lifetime_days (or exp is before iat)")]
    Lifetime,
    #[error("request is not IdP-signed but its customization requires signed requests")]
    Unsigned,
    #[error(
        "request is IdP-signed (+jws) but its customization has no idp_signing_jwks to verify it"
    )]
    SignedNotConfigured,
}

impl RequestRefusal {
    /// Stable short code.
    pub fn code(&self) -> &'static str {
        use RequestRefusal::*;
        match self {
            Jose(e) => e.code(),
            Schema(_) => "request.schema",
            Version => "request.version",
            Expired => "request.expired",
            NotYetValid => "request.not_yet_valid",
            UserMismatch => "request.user_mismatch",
            EnrollmentNotListed => "request.enrollment_not_listed",
            DuplicateEnrollment => "request.duplicate_enrollment",
            NoCredentialRequest => "request.no_credential_request",
            ResidentKeyNotRequired => "request.resident_key_not_required",
            ChallengeTooShort => "request.challenge_too_short",
            OriginInvalid => "request.origin_invalid",
            RpIdInvalid => "request.rp_id_invalid",
            Es256Missing => "request.es256_missing",
            AttestationUnsupported => "request.attestation_unsupported",
            ResponseKeyInvalid => "request.response_key_invalid",
            PinPolicyInvalid => "request.pin_policy_invalid",
            ExtensionUnsupported => "request.extension_unsupported",
            ResponseKeyMismatch => "request.response_key_mismatch",
            Lifetime => "request.lifetime",
            Unsigned => "request.unsigned",
            SignedNotConfigured => "request.signed_not_configured",
        }
    }
}

/// A refused request: which one, and why.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{part}: {reason}")]
pub struct RequestError {
    pub part: RequestPart,
    pub reason: RequestRefusal,
}

impl RequestError {
    pub fn code(&self) -> &'static str {
        self.reason.code()
    }

    /// The station's key custody failed, not the request (SPEC §14): the
    /// job is retried, never refused.
    pub fn is_custody(&self) -> bool {
        matches!(self.reason, RequestRefusal::Jose(e) if e.is_custody())
    }
}

fn err(part: RequestPart, reason: RequestRefusal) -> RequestError {
    RequestError { part, reason }
}

// ---- wire (serde) shapes of SPEC §4 ----------------------------------------
// Decrypted plaintext is parsed into these; they zeroize on drop, and the
// validated types below take copies that zeroize too.

/// `pinPolicy` of a PIN request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Zeroize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PinPolicy {
    /// Digits of the generated PIN (this product: 6).
    pub length: u8,
    pub force_change_pin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_pin_length: Option<u8>,
}

/// PIN request plaintext (`prereg.pin-request.v1`).
#[derive(Debug, Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(rename_all = "camelCase")]
pub struct PinRequestWire {
    pub v: u32,
    pub user_id: String,
    pub authenticator_enrollment_ids: Vec<String>,
    pub pin_policy: PinPolicy,
    pub response_key: EcJwk,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

/// Credential request plaintext (`prereg.cred-request.v1`).
#[derive(Debug, Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRequestWire {
    pub v: u32,
    pub user_id: String,
    pub authenticator_enrollment_id: String,
    pub response_key: EcJwk,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    pub public_key: CreationOptions,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

/// WebAuthn `PublicKeyCredentialCreationOptions` in its JSON form (WebAuthn L3
/// §5.4, `PublicKeyCredentialCreationOptionsJSON`: binaries as base64url).
#[derive(Debug, Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(rename_all = "camelCase")]
pub struct CreationOptions {
    pub rp: RpEntity,
    pub user: UserEntity,
    pub challenge: String,
    pub pub_key_cred_params: Vec<CredParam>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(default)]
    pub exclude_credentials: Vec<CredentialDescriptor>,
    pub authenticator_selection: AuthenticatorSelection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Extensions>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct RpEntity {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(rename_all = "camelCase")]
pub struct UserEntity {
    pub id: String,
    pub name: String,
    pub display_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct CredParam {
    #[serde(rename = "type")]
    pub kind: String,
    pub alg: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct CredentialDescriptor {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transports: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticatorSelection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticator_attachment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_resident_key: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_verification: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(rename_all = "camelCase")]
pub struct Extensions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_protection_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce_credential_protection_policy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_pin_length: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cred_props: Option<bool>,
}

// ---- validated, typed requests ---------------------------------------------

/// Where a response goes: the IdP's per-enrollment key (SPEC §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseKey {
    pub kid: String,
    pub key: p384::PublicKey,
}

impl ResponseKey {
    fn from_jwk(jwk: &EcJwk) -> Option<Self> {
        if jwk.kid.is_empty() {
            return None;
        }
        let key = jwk.to_public_key_for(KeyUse::Enc).ok()?;
        Some(ResponseKey {
            kid: jwk.kid.clone(),
            key,
        })
    }
}

/// `attestation` conveyance (WebAuthn §5.4.7), `indirect` excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Zeroize)]
pub enum Attestation {
    Direct,
    None,
    Enterprise,
}

/// `userVerification` requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Zeroize)]
pub enum UserVerification {
    Required,
    Preferred,
    Discouraged,
}

/// CTAP 2.1 §12.1 credProtect levels, from WebAuthn `credentialProtectionPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Zeroize)]
pub enum CredProtect {
    /// 0x01 `userVerificationOptional`
    UvOptional = 1,
    /// 0x02 `userVerificationOptionalWithCredentialIDList`
    UvOptionalWithCredIdList = 2,
    /// 0x03 `userVerificationRequired`
    UvRequired = 3,
}

impl CredProtect {
    pub fn from_policy(name: &str) -> Option<Self> {
        match name {
            "userVerificationOptional" => Some(CredProtect::UvOptional),
            "userVerificationOptionalWithCredentialIDList" => {
                Some(CredProtect::UvOptionalWithCredIdList)
            }
            "userVerificationRequired" => Some(CredProtect::UvRequired),
            _ => None,
        }
    }

    /// The CTAP extension value.
    pub fn value(self) -> u8 {
        self as u8
    }
}

/// A validated PIN request.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct ValidatedPinRequest {
    /// The request JWE exactly as received (for `requestDigest`, SPEC §5).
    #[zeroize(skip)]
    pub jwe: String,
    pub user_id: String,
    pub enrollment_ids: Vec<String>,
    pub pin_length: u8,
    pub force_change_pin: bool,
    pub min_pin_length: Option<u8>,
    #[zeroize(skip)]
    pub response_key: ResponseKey,
    pub iat: i64,
    pub exp: i64,
}

impl fmt::Debug for ValidatedPinRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatedPinRequest")
            .field("user_id", &self.user_id)
            .field("enrollment_ids", &self.enrollment_ids)
            .field("response_kid", &self.response_key.kid)
            .finish_non_exhaustive()
    }
}

/// A validated credential request: what `makeCredential` needs.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct ValidatedCredentialRequest {
    #[zeroize(skip)]
    pub jwe: String,
    pub user_id: String,
    pub enrollment_id: String,
    #[zeroize(skip)]
    pub response_key: ResponseKey,
    /// `origin`, or `https://` + rp.id (SPEC §4).
    pub origin: String,
    pub rp_id: String,
    pub rp_name: String,
    /// `user.id` (the user handle), decoded.
    pub user_handle: Vec<u8>,
    pub user_name: String,
    pub user_display_name: String,
    /// The challenge, decoded; secret until it is in the signed clientDataJSON.
    #[zeroize(skip)]
    pub challenge: SecretBytes,
    /// COSE algorithms in the RP's order of preference.
    pub algorithms: Vec<i64>,
    /// `excludeCredentials` ids, decoded.
    pub exclude_credentials: Vec<Vec<u8>>,
    pub user_verification: UserVerification,
    pub attestation: Attestation,
    pub cred_protect: Option<CredProtect>,
    pub enforce_cred_protect: bool,
    /// `minPinLength` extension asked for.
    pub min_pin_length_ext: bool,
    pub iat: i64,
    pub exp: i64,
}

impl fmt::Debug for ValidatedCredentialRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatedCredentialRequest")
            .field("user_id", &self.user_id)
            .field("enrollment_id", &self.enrollment_id)
            .field("rp_id", &self.rp_id)
            .field("response_kid", &self.response_key.kid)
            .finish_non_exhaustive()
    }
}

/// A job's requests after decryption, validation and binding checks.
#[derive(Debug)]
pub struct DecryptedRequests {
    pub pin: ValidatedPinRequest,
    pub credentials: Vec<ValidatedCredentialRequest>,
}

// ---- validation ------------------------------------------------------------

/// serde messages can quote plaintext values; keep only field names.
fn schema_error(e: &serde_json::Error) -> RequestRefusal {
    let msg = e.to_string();
    let kept = if msg.starts_with("missing field") || msg.starts_with("duplicate field") {
        msg.split(" at line").next().unwrap_or("").to_string()
    } else {
        format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        )
    };
    RequestRefusal::Schema(kept)
}

fn check_times(iat: i64, exp: i64, nbf: Option<i64>, now: i64) -> Result<(), RequestRefusal> {
    if exp <= now {
        return Err(RequestRefusal::Expired);
    }
    if iat > now + IAT_LEEWAY_SECS || nbf.is_some_and(|n| n > now + IAT_LEEWAY_SECS) {
        return Err(RequestRefusal::NotYetValid);
    }
    Ok(())
}

/// Decodes and validates a PIN request plaintext.
pub fn validate_pin_request(
    plaintext: &[u8],
    jwe: &str,
    now: i64,
) -> Result<ValidatedPinRequest, RequestRefusal> {
    let w: PinRequestWire = serde_json::from_slice(plaintext).map_err(|e| schema_error(&e))?;
    if w.v != 1 {
        return Err(RequestRefusal::Version);
    }
    check_times(w.iat, w.exp, w.nbf, now)?;
    if w.user_id.is_empty() || w.authenticator_enrollment_ids.iter().any(|e| e.is_empty()) {
        return Err(RequestRefusal::Schema(
            "empty userId or enrollment id".into(),
        ));
    }
    if w.authenticator_enrollment_ids.is_empty() {
        return Err(RequestRefusal::NoCredentialRequest);
    }
    let p = w.pin_policy;
    // This product sets a 6-digit PIN (SPEC §1); CTAP 2.1 PINs are 4..=63 bytes.
    if p.length != 6
        || p.min_pin_length
            .is_some_and(|m| !(4..=p.length).contains(&m))
    {
        return Err(RequestRefusal::PinPolicyInvalid);
    }
    let response_key =
        ResponseKey::from_jwk(&w.response_key).ok_or(RequestRefusal::ResponseKeyInvalid)?;
    Ok(ValidatedPinRequest {
        jwe: jwe.to_string(),
        user_id: w.user_id.clone(),
        enrollment_ids: w.authenticator_enrollment_ids.clone(),
        pin_length: p.length,
        force_change_pin: p.force_change_pin,
        min_pin_length: p.min_pin_length,
        response_key,
        iat: w.iat,
        exp: w.exp,
    })
}

/// A syntactically valid DNS name (WebAuthn §5.1.2: an RP ID is a valid domain).
fn valid_rp_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 253
        && id.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// WebAuthn §5.1.2 / HTML "is a registrable domain suffix of or is equal to",
/// simplified: `https://` + host (+ optional port), host = rp.id or ends with
/// `.` + rp.id. No path, query, userinfo or fragment.
pub fn origin_matches(origin: &str, rp_id: &str) -> bool {
    let Some(rest) = origin.strip_prefix("https://") else {
        return false;
    };
    let host = match rest.rsplit_once(':') {
        Some((h, port)) => {
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
                return false;
            }
            h
        }
        None => rest,
    };
    valid_rp_id(host) && (host == rp_id || host.ends_with(&format!(".{rp_id}")))
}

fn b64_field(text: &str, name: &str) -> Result<Vec<u8>, RequestRefusal> {
    b64::decode(text).map_err(|_| RequestRefusal::Schema(format!("{name} is not base64url")))
}

/// Decodes and validates a credential request plaintext.
pub fn validate_credential_request(
    plaintext: &[u8],
    jwe: &str,
    now: i64,
) -> Result<ValidatedCredentialRequest, RequestRefusal> {
    let w: CredentialRequestWire =
        serde_json::from_slice(plaintext).map_err(|e| schema_error(&e))?;
    if w.v != 1 {
        return Err(RequestRefusal::Version);
    }
    check_times(w.iat, w.exp, w.nbf, now)?;
    if w.user_id.is_empty() || w.authenticator_enrollment_id.is_empty() {
        return Err(RequestRefusal::Schema(
            "empty userId or enrollment id".into(),
        ));
    }
    let o = &w.public_key;
    let sel = &o.authenticator_selection;
    // WebAuthn L2 §5.4.6: residentKey wins over the legacy requireResidentKey.
    let rk_required = match sel.resident_key.as_deref() {
        Some(rk) => rk == "required",
        None => sel.require_resident_key == Some(true),
    };
    if !rk_required {
        return Err(RequestRefusal::ResidentKeyNotRequired);
    }
    if !valid_rp_id(&o.rp.id) {
        return Err(RequestRefusal::RpIdInvalid);
    }
    let origin = w
        .origin
        .clone()
        .unwrap_or_else(|| format!("https://{}", o.rp.id));
    if !origin_matches(&origin, &o.rp.id) {
        return Err(RequestRefusal::OriginInvalid);
    }
    let challenge = SecretBytes::new(b64_field(&o.challenge, "challenge")?);
    if challenge.expose().len() < MIN_CHALLENGE_LEN {
        return Err(RequestRefusal::ChallengeTooShort);
    }
    let user_handle = b64_field(&o.user.id, "user.id")?;
    // WebAuthn §5.4.3: a user handle is 1..=64 bytes.
    if user_handle.is_empty() || user_handle.len() > 64 {
        return Err(RequestRefusal::Schema(
            "user.id must be 1..=64 bytes".into(),
        ));
    }
    let algorithms: Vec<i64> = o
        .pub_key_cred_params
        .iter()
        .filter(|p| p.kind == "public-key")
        .map(|p| p.alg)
        .collect();
    if !algorithms.contains(&COSE_ES256) {
        return Err(RequestRefusal::Es256Missing);
    }
    let attestation = match o.attestation.as_deref().unwrap_or("none") {
        "direct" => Attestation::Direct,
        "none" => Attestation::None,
        "enterprise" => Attestation::Enterprise,
        _ => return Err(RequestRefusal::AttestationUnsupported),
    };
    let user_verification = match sel.user_verification.as_deref().unwrap_or("preferred") {
        "required" => UserVerification::Required,
        "preferred" => UserVerification::Preferred,
        "discouraged" => UserVerification::Discouraged,
        _ => return Err(RequestRefusal::Schema("userVerification".into())),
    };
    let ext = o.extensions.clone().unwrap_or_default();
    let cred_protect = match ext.credential_protection_policy.as_deref() {
        None => None,
        Some(p) => Some(CredProtect::from_policy(p).ok_or(RequestRefusal::ExtensionUnsupported)?),
    };
    let exclude_credentials = o
        .exclude_credentials
        .iter()
        .map(|c| b64_field(&c.id, "excludeCredentials.id"))
        .collect::<Result<Vec<_>, _>>()?;
    let response_key =
        ResponseKey::from_jwk(&w.response_key).ok_or(RequestRefusal::ResponseKeyInvalid)?;
    Ok(ValidatedCredentialRequest {
        jwe: jwe.to_string(),
        user_id: w.user_id.clone(),
        enrollment_id: w.authenticator_enrollment_id.clone(),
        response_key,
        origin,
        rp_id: o.rp.id.clone(),
        rp_name: o.rp.name.clone(),
        user_handle,
        user_name: o.user.name.clone(),
        user_display_name: o.user.display_name.clone(),
        challenge,
        algorithms,
        exclude_credentials,
        user_verification,
        attestation,
        cred_protect,
        enforce_cred_protect: ext.enforce_credential_protection_policy.unwrap_or(false),
        min_pin_length_ext: ext.min_pin_length.unwrap_or(false),
        iat: w.iat,
        exp: w.exp,
    })
}

/// The request JSON of one request JWE under `policy` (SPEC §4): plain JSON
/// in a JWE of `cty` = `content_type`, or — for a signing customization — a
/// JWS verified against the IdP's keys in a JWE of `cty` = `content_type` +
/// `+jws`. The signed/unsigned decision is read from the header before any
/// decryption, and decryption authenticates that header (it is the AAD).
fn open_request(
    keys: &dyn KeyResolver,
    policy: &RequestPolicy<'_>,
    compact: &str,
    content_type: &str,
) -> Result<SecretBytes, RequestRefusal> {
    let header_cty = jwe::peek_header(compact)
        .map_err(RequestRefusal::Jose)?
        .cty
        .unwrap_or_default();
    let signed_cty = signed::signed_cty(content_type);
    match policy.idp_signers {
        Some(signers) => {
            if header_cty == content_type {
                return Err(RequestRefusal::Unsigned);
            }
            let outer = jwe::decrypt(compact, keys, &signed_cty).map_err(RequestRefusal::Jose)?;
            signed::verify_request_jws(outer.plaintext.expose(), signers, content_type)
                .map_err(RequestRefusal::Jose)
        }
        None => {
            if header_cty == signed_cty {
                return Err(RequestRefusal::SignedNotConfigured);
            }
            let outer = jwe::decrypt(compact, keys, content_type).map_err(RequestRefusal::Jose)?;
            Ok(outer.plaintext)
        }
    }
}

/// SPEC §4: `exp - iat` at most `max_request_lifetime_days` (a request valid
/// for years is a standing licence to program keys).
fn check_lifetime(iat: i64, exp: i64, policy: &RequestPolicy<'_>) -> Result<(), RequestRefusal> {
    match exp.checked_sub(iat) {
        Some(life) if (0..=policy.max_lifetime_secs).contains(&life) => Ok(()),
        _ => Err(RequestRefusal::Lifetime),
    }
}

/// Decrypts and validates a job's requests (SPEC §4, recipe step 4) with the
/// station's transport keys under the customization's `policy`, `now` in
/// Unix seconds: each JWE must carry the `cty` of its slot (and be signed,
/// if the customization says so); each request's lifetime is bounded; then
/// the binding rules — every credential request's `userId` equals the PIN
/// request's, every enrollment id is listed there, and every request names
/// the same `responseKey`.
pub fn decrypt_job(
    keys: &dyn KeyResolver,
    policy: &RequestPolicy<'_>,
    pin_jwe: &str,
    cred_jwes: &[String],
    now: i64,
) -> Result<DecryptedRequests, RequestError> {
    use RequestPart::*;
    if cred_jwes.is_empty() {
        return Err(err(Job, RequestRefusal::NoCredentialRequest));
    }
    let pin_plain =
        open_request(keys, policy, pin_jwe, cty::PIN_REQUEST).map_err(|r| err(Pin, r))?;
    let pin = validate_pin_request(pin_plain.expose(), pin_jwe, now).map_err(|r| err(Pin, r))?;
    check_lifetime(pin.iat, pin.exp, policy).map_err(|r| err(Pin, r))?;
    let mut credentials = Vec::with_capacity(cred_jwes.len());
    for (i, c) in cred_jwes.iter().enumerate() {
        let plain =
            open_request(keys, policy, c, cty::CRED_REQUEST).map_err(|r| err(Credential(i), r))?;
        let req = validate_credential_request(plain.expose(), c, now)
            .map_err(|r| err(Credential(i), r))?;
        check_lifetime(req.iat, req.exp, policy).map_err(|r| err(Credential(i), r))?;
        if req.user_id != pin.user_id {
            return Err(err(Credential(i), RequestRefusal::UserMismatch));
        }
        if !pin.enrollment_ids.contains(&req.enrollment_id) {
            return Err(err(Credential(i), RequestRefusal::EnrollmentNotListed));
        }
        if credentials
            .iter()
            .any(|c: &ValidatedCredentialRequest| c.enrollment_id == req.enrollment_id)
        {
            return Err(err(Credential(i), RequestRefusal::DuplicateEnrollment));
        }
        // SPEC §4: one job, one response key (kid and point), so a
        // credential response cannot be steered to another party's key.
        if req.response_key != pin.response_key {
            return Err(err(Credential(i), RequestRefusal::ResponseKeyMismatch));
        }
        credentials.push(req);
    }
    Ok(DecryptedRequests { pin, credentials })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_rule() {
        assert!(origin_matches("https://myorg.okta.com", "myorg.okta.com"));
        assert!(origin_matches(
            "https://login.myorg.okta.com",
            "myorg.okta.com"
        ));
        assert!(origin_matches(
            "https://myorg.okta.com:8443",
            "myorg.okta.com"
        ));
        assert!(!origin_matches("http://myorg.okta.com", "myorg.okta.com"));
        assert!(!origin_matches(
            "https://evilmyorg.okta.com",
            "myorg.okta.com"
        ));
        assert!(!origin_matches("https://okta.com", "myorg.okta.com"));
        assert!(!origin_matches(
            "https://myorg.okta.com/path",
            "myorg.okta.com"
        ));
        assert!(!origin_matches(
            "https://a@myorg.okta.com",
            "myorg.okta.com"
        ));
        assert!(!origin_matches("https://myorg.okta.com:", "myorg.okta.com"));
    }

    #[test]
    fn schema_errors_do_not_quote_values() {
        let bad = br#"{"v":1,"userId":"SECRET-VALUE-123","authenticatorEnrollmentIds":"SECRET-VALUE-123"}"#;
        let e = validate_pin_request(bad, "x", 0).unwrap_err();
        assert!(!e.to_string().contains("SECRET-VALUE"), "{e}");
        assert_eq!(e.code(), "request.schema");
    }
}

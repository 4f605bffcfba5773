//! PIN and credential responses (SPEC §5): a JSON payload, signed as a compact
//! JWS (ES384, `kid` = the active signing key, `typ` = the response `cty`),
//! then encrypted as a compact JWE to the request's `responseKey` (`kid` = its
//! kid, `cty` = `JWT`). The PIN exists only inside the encrypted response; all
//! intermediate buffers (payload JSON, JWS) zeroize.

use super::jwe::{self, KeyManagement, SingleKey};
use super::jws::{self, VerifierResolver};
use super::keys::StationKeys;
use super::request::{ResponseKey, ValidatedCredentialRequest, ValidatedPinRequest};
use super::{b64, cty, JoseError};
use crate::secret::SecretString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

/// SPEC §5 `requestDigest`: base64url SHA-256 of the request JWE string, as received.
pub fn request_digest(request_jwe: &str) -> String {
    b64::encode(Sha256::digest(request_jwe.as_bytes()))
}

/// The key's identity as reported in every response (SPEC §5, §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIdentity {
    pub serial_number: String,
    pub firmware_version: String,
}

fn ser_secret<S: Serializer>(v: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.expose())
}

fn de_secret<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    String::deserialize(d).map(SecretString::new)
}

/// PIN response payload (`prereg.pin-response.v1`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PinResponse {
    pub v: u32,
    pub user_id: String,
    pub request_digest: String,
    pub serial_number: String,
    pub firmware_version: String,
    #[serde(serialize_with = "ser_secret", deserialize_with = "de_secret")]
    pub pin: SecretString,
    pub force_change_pin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_pin_length: Option<u8>,
    pub iat: i64,
}

/// WebAuthn `RegistrationResponseJSON` (WebAuthn L3 §5.1, base64url binaries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationResponseJson {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub raw_id: String,
    pub authenticator_attachment: String,
    pub response: AttestationResponseJson,
    pub client_extension_results: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttestationResponseJson {
    #[serde(rename = "clientDataJSON")]
    pub client_data_json: String,
    pub attestation_object: String,
    pub transports: Vec<String>,
}

/// Credential response payload (`prereg.cred-response.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialResponse {
    pub v: u32,
    pub authenticator_enrollment_id: String,
    pub request_digest: String,
    pub serial_number: String,
    pub firmware_version: String,
    pub aaguid: String,
    pub credential: RegistrationResponseJson,
    pub iat: i64,
}

/// What the station has after `makeCredential` for one request.
#[derive(Debug, Clone)]
pub struct MadeCredential<'a> {
    pub aaguid: [u8; 16],
    pub credential_id: &'a [u8],
    pub client_data_json: &'a [u8],
    /// The attestation object as delivered (after any `none` conversion).
    pub attestation_object: &'a [u8],
    pub transports: &'a [&'a str],
}

/// JSON-serializes into a pre-reserved zeroizing buffer (no reallocation copies).
fn to_secret_json<T: Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>, JoseError> {
    let mut out = Zeroizing::new(Vec::with_capacity(16 * 1024));
    serde_json::to_writer(&mut *out, value).map_err(|_| JoseError::Internal)?;
    Ok(out)
}

/// Signs `payload` with `signer` (typ = `inner_cty`) and encrypts the JWS to
/// `to` (cty JWT).
pub fn seal(
    payload: &[u8],
    inner_cty: &str,
    signer: &dyn jws::Es384Signer,
    to: &ResponseKey,
    alg: KeyManagement,
) -> Result<String, JoseError> {
    let jws = jws::sign_with(payload, signer, inner_cty)?;
    jwe::encrypt(jws.as_bytes(), &to.key, &to.kid, cty::JWT, alg)
}

/// Builds, signs and encrypts the PIN response for `req`.
pub fn seal_pin_response(
    keys: &StationKeys,
    req: &ValidatedPinRequest,
    device: &DeviceIdentity,
    pin: &SecretString,
    now: i64,
) -> Result<String, JoseError> {
    let payload = PinResponse {
        v: 1,
        user_id: req.user_id.clone(),
        request_digest: request_digest(&req.jwe),
        serial_number: device.serial_number.clone(),
        firmware_version: device.firmware_version.clone(),
        pin: pin.clone(),
        force_change_pin: req.force_change_pin,
        min_pin_length: req.min_pin_length,
        iat: now,
    };
    let json = to_secret_json(&payload)?;
    seal(
        &json,
        cty::PIN_RESPONSE,
        keys,
        &req.response_key,
        KeyManagement::default(),
    )
}

/// The credential response payload for `req` (public data, but delivered encrypted).
pub fn credential_response(
    req: &ValidatedCredentialRequest,
    device: &DeviceIdentity,
    made: &MadeCredential<'_>,
    now: i64,
) -> CredentialResponse {
    let id = b64::encode(made.credential_id);
    CredentialResponse {
        v: 1,
        authenticator_enrollment_id: req.enrollment_id.clone(),
        request_digest: request_digest(&req.jwe),
        serial_number: device.serial_number.clone(),
        firmware_version: device.firmware_version.clone(),
        aaguid: crate::webauthn::format_aaguid(&made.aaguid),
        credential: RegistrationResponseJson {
            kind: "public-key".into(),
            id: id.clone(),
            raw_id: id,
            authenticator_attachment: "cross-platform".into(),
            response: AttestationResponseJson {
                client_data_json: b64::encode(made.client_data_json),
                attestation_object: b64::encode(made.attestation_object),
                transports: made.transports.iter().map(|t| t.to_string()).collect(),
            },
            // rk is always true: residentKey "required" is enforced (SPEC §4).
            client_extension_results: serde_json::json!({ "credProps": { "rk": true } }),
        },
        iat: now,
    }
}

/// Builds, signs and encrypts the credential response for `req`.
pub fn seal_credential_response(
    keys: &StationKeys,
    req: &ValidatedCredentialRequest,
    device: &DeviceIdentity,
    made: &MadeCredential<'_>,
    now: i64,
) -> Result<String, JoseError> {
    let json = to_secret_json(&credential_response(req, device, made, now))?;
    seal(
        &json,
        cty::CRED_RESPONSE,
        keys,
        &req.response_key,
        KeyManagement::default(),
    )
}

/// Why a response could not be opened (IdP side).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ResponseError {
    #[error("{0}")]
    Jose(JoseError),
    #[error("response payload is not JSON of the response schema")]
    Schema,
    #[error("response payload version is not 1")]
    Version,
}

impl ResponseError {
    pub fn code(&self) -> &'static str {
        match self {
            ResponseError::Jose(e) => e.code(),
            ResponseError::Schema => "response.schema",
            ResponseError::Version => "response.version",
        }
    }
}

impl From<JoseError> for ResponseError {
    fn from(e: JoseError) -> Self {
        ResponseError::Jose(e)
    }
}

/// Decrypts a response JWE with the IdP's response key (`kid`) and verifies the
/// inner JWS against `signers` (the station's `sign.jwks`), `typ` = `inner_cty`.
/// Returns the verified payload bytes (secret).
pub fn open(
    response_jwe: &str,
    response_kid: &str,
    response_key: &p384::SecretKey,
    signers: &dyn VerifierResolver,
    inner_cty: &str,
) -> Result<crate::secret::SecretBytes, ResponseError> {
    let outer = jwe::decrypt(
        response_jwe,
        &SingleKey {
            kid: response_kid,
            key: response_key,
        },
        cty::JWT,
    )?;
    let jws_text =
        std::str::from_utf8(outer.plaintext.expose()).map_err(|_| JoseError::Malformed)?;
    Ok(jws::verify(jws_text, signers, inner_cty)?.payload)
}

/// [`open`] + parse as a PIN response.
pub fn open_pin_response(
    response_jwe: &str,
    response_kid: &str,
    response_key: &p384::SecretKey,
    signers: &dyn VerifierResolver,
) -> Result<PinResponse, ResponseError> {
    let payload = open(
        response_jwe,
        response_kid,
        response_key,
        signers,
        cty::PIN_RESPONSE,
    )?;
    let r: PinResponse =
        serde_json::from_slice(payload.expose()).map_err(|_| ResponseError::Schema)?;
    if r.v != 1 {
        return Err(ResponseError::Version);
    }
    Ok(r)
}

/// [`open`] + parse as a credential response.
pub fn open_credential_response(
    response_jwe: &str,
    response_kid: &str,
    response_key: &p384::SecretKey,
    signers: &dyn VerifierResolver,
) -> Result<CredentialResponse, ResponseError> {
    let payload = open(
        response_jwe,
        response_kid,
        response_key,
        signers,
        cty::CRED_RESPONSE,
    )?;
    let r: CredentialResponse =
        serde_json::from_slice(payload.expose()).map_err(|_| ResponseError::Schema)?;
    if r.v != 1 {
        return Err(ResponseError::Version);
    }
    Ok(r)
}

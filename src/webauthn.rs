//! WebAuthn pieces the station and the IdP share (SPEC §5, §7 step 7):
//! clientDataJSON, authenticator data and attestation object parsing, and
//! verification of `packed` attestation (x5c chain to configured roots) and
//! of `none`. Pure functions over bytes; certificates parsed with `x509-cert`.

use crate::cbor::{self, Value};
use crate::jose::b64url_encode;
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use sha2::{Digest, Sha256, Sha384};
use std::path::Path;
use thiserror::Error;
use x509_cert::Certificate;

pub mod testkit;

/// Authenticator data flags (WebAuthn §6.1).
pub mod flags {
    pub const UP: u8 = 0x01;
    pub const UV: u8 = 0x04;
    pub const AT: u8 = 0x40;
    pub const ED: u8 = 0x80;
}

/// id-fido-gen-ce-aaguid (FIDO Metadata / WebAuthn §8.2.1).
pub const OID_FIDO_AAGUID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.45724.1.1.4");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const OID_SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const OID_AUTHORITY_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
const OID_SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");

/// Extensions this verifier understands well enough to accept as critical
/// (RFC 5280 §4.2: "A certificate-using system MUST reject the certificate if
/// it encounters a critical extension it does not recognize"):
/// basicConstraints and keyUsage are enforced on every issuer; the key
/// identifiers and subjectAltName carry no constraint on this path (RFC 5280
/// §4.2.1.6 has subjectAltName critical when the subject is empty). Not here,
/// so refused when critical: nameConstraints, certificatePolicies, policy
/// constraints, extendedKeyUsage and anything private — none of them is
/// processed, so none may constrain a chain we accept.
const KNOWN_CRITICAL: [ObjectIdentifier; 5] = [
    OID_BASIC_CONSTRAINTS,
    OID_KEY_USAGE,
    OID_SUBJECT_KEY_ID,
    OID_AUTHORITY_KEY_ID,
    OID_SUBJECT_ALT_NAME,
];
const OID_OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");

/// COSE alg ES256.
pub const COSE_ES256: i64 = -7;
/// Longest x5c chain accepted (leaf + intermediates).
pub const MAX_X5C: usize = 4;

/// Why an attestation or its surroundings were refused. Closed, stable codes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AttestationError {
    #[error("attestation object is not the CBOR map {{fmt, attStmt, authData}}")]
    ObjectMalformed,
    #[error("authenticator data is malformed or truncated")]
    AuthDataMalformed,
    #[error("rpIdHash does not match the rp id")]
    RpIdHashMismatch,
    #[error("user presence flag (UP) not set")]
    UserNotPresent,
    #[error("user verification flag (UV) not set but required")]
    UserNotVerified,
    #[error("no attested credential data (AT flag)")]
    NoAttestedCredential,
    #[error("credential public key is not a valid COSE key")]
    CoseKeyInvalid,
    #[error("credProtect in authenticator data differs from the requested level")]
    CredProtectMismatch,
    #[error("attestation format is not packed (or none where allowed)")]
    FormatUnsupported,
    #[error("fmt none is not acceptable for this request")]
    NoneNotAllowed,
    #[error("attestation statement is malformed")]
    StatementMalformed,
    #[error("packed attestation without x5c (self attestation) is not trusted")]
    SelfAttestation,
    #[error("attestation alg is not ES256")]
    AlgUnsupported,
    #[error("a certificate in x5c or the roots does not parse")]
    CertificateMalformed,
    #[error("attestation certificate does not meet WebAuthn §8.2.1 (v3, OU, CA false)")]
    LeafProfile,
    #[error("attestation certificate has no id-fido-gen-ce-aaguid extension")]
    AaguidExtensionMissing,
    #[error("AAGUID in the certificate differs from authenticator data")]
    AaguidMismatch,
    #[error("attestation signature does not verify")]
    SignatureInvalid,
    #[error("a certificate is outside its validity period")]
    CertificateExpired,
    #[error("an issuing certificate is not a CA (basicConstraints cA missing or false)")]
    NotCa,
    #[error("an issuing certificate's pathLenConstraint is exceeded")]
    PathLenExceeded,
    #[error("an issuing certificate's keyUsage lacks keyCertSign")]
    KeyUsageNoCertSign,
    #[error("a certificate carries a critical extension this verifier does not process")]
    UnknownCriticalExtension,
    #[error("certificate signature algorithm or key type is not supported")]
    CertAlgUnsupported,
    #[error("a certificate signature in the chain does not verify")]
    ChainSignatureInvalid,
    #[error("the chain does not end at a configured attestation root")]
    UntrustedRoot,
    #[error("clientDataJSON is not valid JSON of the expected shape")]
    ClientDataMalformed,
    #[error("clientDataJSON type is not webauthn.create")]
    ClientDataType,
    #[error("clientDataJSON challenge differs from the request")]
    ClientDataChallenge,
    #[error("clientDataJSON origin differs from the request")]
    ClientDataOrigin,
    #[error("clientDataJSON crossOrigin is true")]
    ClientDataCrossOrigin,
}

impl AttestationError {
    /// Stable short code.
    pub fn code(&self) -> &'static str {
        use AttestationError::*;
        match self {
            ObjectMalformed => "attestation.object_malformed",
            AuthDataMalformed => "attestation.auth_data_malformed",
            RpIdHashMismatch => "attestation.rp_id_hash",
            UserNotPresent => "attestation.up",
            UserNotVerified => "attestation.uv",
            NoAttestedCredential => "attestation.no_credential",
            CoseKeyInvalid => "attestation.cose_key",
            CredProtectMismatch => "attestation.cred_protect",
            FormatUnsupported => "attestation.fmt_unsupported",
            NoneNotAllowed => "attestation.none_not_allowed",
            StatementMalformed => "attestation.statement_malformed",
            SelfAttestation => "attestation.self",
            AlgUnsupported => "attestation.alg_unsupported",
            CertificateMalformed => "attestation.cert_malformed",
            LeafProfile => "attestation.leaf_profile",
            AaguidExtensionMissing => "attestation.aaguid_ext_missing",
            AaguidMismatch => "attestation.aaguid_mismatch",
            SignatureInvalid => "attestation.signature",
            CertificateExpired => "attestation.cert_expired",
            NotCa => "attestation.not_ca",
            PathLenExceeded => "attestation.path_len",
            KeyUsageNoCertSign => "attestation.key_usage",
            UnknownCriticalExtension => "attestation.critical_extension",
            CertAlgUnsupported => "attestation.cert_alg_unsupported",
            ChainSignatureInvalid => "attestation.chain_signature",
            UntrustedRoot => "attestation.untrusted_root",
            ClientDataMalformed => "client_data.malformed",
            ClientDataType => "client_data.type",
            ClientDataChallenge => "client_data.challenge",
            ClientDataOrigin => "client_data.origin",
            ClientDataCrossOrigin => "client_data.cross_origin",
        }
    }
}

// ---- clientDataJSON (WebAuthn §5.8.1) ---------------------------------------

/// clientDataJSON of a registration, in the member order of WebAuthn §5.8.1.1
/// (type, challenge, origin, crossOrigin), as the station builds it (SPEC §5).
pub fn client_data_json(challenge: &[u8], origin: &str) -> Vec<u8> {
    // serde_json's string escaping is a valid JSON serialization of the origin.
    let origin = serde_json::to_string(origin).unwrap_or_default();
    format!(
        r#"{{"type":"webauthn.create","challenge":"{}","origin":{origin},"crossOrigin":false}}"#,
        b64url_encode(challenge)
    )
    .into_bytes()
}

/// SHA-256 of clientDataJSON: the `clientDataHash` sent to the key.
pub fn client_data_hash(client_data_json: &[u8]) -> [u8; 32] {
    Sha256::digest(client_data_json).into()
}

/// Checks clientDataJSON as a relying party does (WebAuthn §7.1 steps 7–10).
pub fn check_client_data(
    client_data_json: &[u8],
    challenge: &[u8],
    origin: &str,
) -> Result<(), AttestationError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Cd {
        #[serde(rename = "type")]
        kind: String,
        challenge: String,
        origin: String,
        #[serde(default)]
        cross_origin: Option<bool>,
    }
    let cd: Cd = serde_json::from_slice(client_data_json)
        .map_err(|_| AttestationError::ClientDataMalformed)?;
    if cd.kind != "webauthn.create" {
        return Err(AttestationError::ClientDataType);
    }
    let got = crate::jose::b64url_decode(&cd.challenge)
        .map_err(|_| AttestationError::ClientDataMalformed)?;
    if got != challenge {
        return Err(AttestationError::ClientDataChallenge);
    }
    if cd.origin != origin {
        return Err(AttestationError::ClientDataOrigin);
    }
    if cd.cross_origin == Some(true) {
        return Err(AttestationError::ClientDataCrossOrigin);
    }
    Ok(())
}

/// AAGUID as a lowercase hyphenated UUID (`a25342c0-3cdc-4414-8e46-f4807fca511c`).
pub fn format_aaguid(aaguid: &[u8; 16]) -> String {
    crate::ctap2::format_uuid(aaguid)
}

// ---- authenticator data (WebAuthn §6.1) -------------------------------------

/// Attested credential data (WebAuthn §6.5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedCredential {
    pub aaguid: [u8; 16],
    pub credential_id: Vec<u8>,
    /// The COSE_Key exactly as encoded in authenticator data.
    pub public_key_cose: Vec<u8>,
    pub public_key: Value,
}

/// Parsed authenticator data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatorData {
    pub rp_id_hash: [u8; 32],
    pub flags: u8,
    pub sign_count: u32,
    pub attested: Option<AttestedCredential>,
    pub extensions: Option<Value>,
}

impl AuthenticatorData {
    /// Parses `rpIdHash(32) flags(1) signCount(4) [attestedCredentialData] [extensions]`
    /// with the CTAP layer's strict parser (one implementation of the layout),
    /// adding WebAuthn's limit on credential id length.
    pub fn parse(bytes: &[u8]) -> Result<Self, AttestationError> {
        use AttestationError::AuthDataMalformed as M;
        let d = crate::ctap2::AuthenticatorData::parse(bytes).map_err(|_| M)?;
        let attested = match d.attested {
            // WebAuthn §6.5.1: credentialIdLength ≤ 1023.
            Some(a) if a.credential_id.len() > 1023 => return Err(M),
            // The strict decoder accepted only canonical CBOR, so re-encoding
            // gives back exactly the bytes in the authenticator data.
            Some(a) => Some(AttestedCredential {
                aaguid: a.aaguid,
                credential_id: a.credential_id,
                public_key_cose: cbor::encode(&a.public_key),
                public_key: a.public_key,
            }),
            None => None,
        };
        Ok(AuthenticatorData {
            rp_id_hash: d.rp_id_hash,
            flags: d.flags,
            sign_count: d.sign_count,
            attested,
            extensions: d.extensions,
        })
    }

    /// The `credProtect` extension output, if present (CTAP 2.1 §12.1).
    pub fn cred_protect(&self) -> Option<u8> {
        self.extensions
            .as_ref()?
            .get("credProtect")?
            .as_u64()
            .and_then(|v| u8::try_from(v).ok())
    }
}

// ---- attestation object (WebAuthn §6.5.4) -----------------------------------

/// A parsed attestation object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationObject {
    pub fmt: String,
    pub att_stmt: Value,
    pub auth_data: Vec<u8>,
}

impl AttestationObject {
    pub fn parse(bytes: &[u8]) -> Result<Self, AttestationError> {
        let v = cbor::decode(bytes).map_err(|_| AttestationError::ObjectMalformed)?;
        let fmt = v
            .get("fmt")
            .and_then(Value::as_text)
            .ok_or(AttestationError::ObjectMalformed)?;
        let att_stmt = v.get("attStmt").ok_or(AttestationError::ObjectMalformed)?;
        let auth_data = v
            .get("authData")
            .and_then(Value::as_bytes)
            .ok_or(AttestationError::ObjectMalformed)?;
        if att_stmt.as_map().is_none() || v.as_map().map(|m| m.len()) != Some(3) {
            return Err(AttestationError::ObjectMalformed);
        }
        Ok(AttestationObject {
            fmt: fmt.to_string(),
            att_stmt: att_stmt.clone(),
            auth_data: auth_data.to_vec(),
        })
    }

    /// From a CTAP 2.1 authenticatorMakeCredential response map (§6.1:
    /// 0x01 fmt, 0x02 authData, 0x03 attStmt; epAtt and largeBlobKey ignored).
    pub fn from_ctap_response(response: &Value) -> Result<Self, AttestationError> {
        let fmt = response
            .get(1)
            .and_then(Value::as_text)
            .ok_or(AttestationError::ObjectMalformed)?;
        let auth_data = response
            .get(2)
            .and_then(Value::as_bytes)
            .ok_or(AttestationError::ObjectMalformed)?;
        let att_stmt = response
            .get(3)
            .filter(|v| v.as_map().is_some())
            .ok_or(AttestationError::ObjectMalformed)?;
        Ok(AttestationObject {
            fmt: fmt.to_string(),
            att_stmt: att_stmt.clone(),
            auth_data: auth_data.to_vec(),
        })
    }

    /// Canonical CBOR `{fmt, attStmt, authData}`, e.g. from a CTAP
    /// makeCredential response (keys 1, 3, 2).
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(&Value::Map(vec![
            (Value::from("fmt"), Value::from(self.fmt.as_str())),
            (Value::from("attStmt"), self.att_stmt.clone()),
            (
                Value::from("authData"),
                Value::Bytes(self.auth_data.clone()),
            ),
        ]))
    }

    /// What a WebAuthn client delivers for `attestation: "none"` (WebAuthn L3
    /// §5.1.3 step 21, SPEC §4): fmt `none`, empty attStmt, authData unchanged
    /// (L3 no longer zeroes the AAGUID).
    pub fn to_none(&self) -> AttestationObject {
        AttestationObject {
            fmt: "none".into(),
            att_stmt: Value::Map(Vec::new()),
            auth_data: self.auth_data.clone(),
        }
    }
}

// ---- trust roots and certificate checks -------------------------------------

/// The configured attestation roots (`attestation_roots`, SPEC §11).
#[derive(Debug, Clone, Default)]
pub struct TrustRoots {
    roots: Vec<Certificate>,
}

impl TrustRoots {
    /// From PEM text (one or more certificates) or a single DER certificate.
    pub fn add_pem_or_der(&mut self, bytes: &[u8]) -> Result<usize, AttestationError> {
        let certs = if bytes.starts_with(b"-----") || bytes.iter().take(64).all(|b| b.is_ascii()) {
            Certificate::load_pem_chain(bytes)
                .map_err(|_| AttestationError::CertificateMalformed)?
        } else {
            vec![Certificate::from_der(bytes).map_err(|_| AttestationError::CertificateMalformed)?]
        };
        let n = certs.len();
        self.roots.extend(certs);
        Ok(n)
    }

    pub fn from_pem(bytes: &[u8]) -> Result<Self, AttestationError> {
        let mut r = TrustRoots::default();
        r.add_pem_or_der(bytes)?;
        Ok(r)
    }

    /// Reads every file (PEM or DER).
    pub fn from_files<P: AsRef<Path>>(paths: &[P]) -> Result<Self, RootsError> {
        let mut r = TrustRoots::default();
        for p in paths {
            let p = p.as_ref();
            let bytes = std::fs::read(p).map_err(|e| RootsError {
                path: p.to_path_buf(),
                reason: e.to_string(),
            })?;
            r.add_pem_or_der(&bytes).map_err(|e| RootsError {
                path: p.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        Ok(r)
    }

    pub fn len(&self) -> usize {
        self.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }
}

/// A roots file that could not be read or parsed.
#[derive(Debug, Error)]
#[error("attestation root {path}: {reason}")]
pub struct RootsError {
    pub path: std::path::PathBuf,
    pub reason: String,
}

fn check_validity(cert: &Certificate, now: i64) -> Result<(), AttestationError> {
    let v = &cert.tbs_certificate.validity;
    let nb = v.not_before.to_unix_duration().as_secs() as i64;
    let na = v.not_after.to_unix_duration().as_secs() as i64;
    if now < nb || now > na {
        return Err(AttestationError::CertificateExpired);
    }
    Ok(())
}

fn extension<'a>(
    cert: &'a Certificate,
    oid: &ObjectIdentifier,
) -> Option<&'a x509_cert::ext::Extension> {
    cert.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| &e.extn_id == oid)
}

fn is_ca(cert: &Certificate) -> bool {
    extension(cert, &OID_BASIC_CONSTRAINTS)
        .and_then(|e| {
            x509_cert::ext::pkix::BasicConstraints::from_der(e.extn_value.as_bytes()).ok()
        })
        .is_some_and(|bc| bc.ca)
}

fn subject_ou(cert: &Certificate) -> Vec<String> {
    let mut out = Vec::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid == OID_OU {
                if let Ok(s) = std::str::from_utf8(atv.value.value()) {
                    out.push(s.to_string());
                }
            }
        }
    }
    out
}

/// A public key that can verify certificate signatures.
enum IssuerKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    /// Yubico's attestation roots are RSA (PKCS#1 v1.5 with SHA-256).
    Rsa(Box<rsa::RsaPublicKey>),
}

/// Weaker RSA keys are refused outright.
const MIN_RSA_BITS: usize = 2048;

fn issuer_key(cert: &Certificate) -> Result<IssuerKey, AttestationError> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let point = spki.subject_public_key.raw_bytes();
    if spki.algorithm.oid == OID_RSA_ENCRYPTION {
        use rsa::pkcs1::DecodeRsaPublicKey;
        use rsa::traits::PublicKeyParts;
        // RFC 3279 §2.3.1: the BIT STRING holds a PKCS#1 RSAPublicKey.
        let key = rsa::RsaPublicKey::from_pkcs1_der(point)
            .map_err(|_| AttestationError::CertificateMalformed)?;
        if key.size() * 8 < MIN_RSA_BITS {
            return Err(AttestationError::CertAlgUnsupported);
        }
        return Ok(IssuerKey::Rsa(Box::new(key)));
    }
    if spki.algorithm.oid != OID_EC_PUBLIC_KEY {
        return Err(AttestationError::CertAlgUnsupported);
    }
    let curve: ObjectIdentifier = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as().ok())
        .ok_or(AttestationError::CertificateMalformed)?;
    if curve == OID_P256 {
        p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
            .map(IssuerKey::P256)
            .map_err(|_| AttestationError::CertificateMalformed)
    } else if curve == OID_P384 {
        p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
            .map(IssuerKey::P384)
            .map_err(|_| AttestationError::CertificateMalformed)
    } else {
        Err(AttestationError::CertAlgUnsupported)
    }
}

/// Verifies that `issuer` signed `cert` (RFC 5280 §4.1.1.3), ECDSA with
/// SHA-256 or SHA-384 by a P-256 or P-384 key.
fn verify_cert_signature(cert: &Certificate, issuer: &Certificate) -> Result<(), AttestationError> {
    use ecdsa::signature::hazmat::PrehashVerifier;
    if cert.tbs_certificate.issuer != issuer.tbs_certificate.subject {
        return Err(AttestationError::ChainSignatureInvalid);
    }
    let tbs = cert
        .tbs_certificate
        .to_der()
        .map_err(|_| AttestationError::CertificateMalformed)?;
    let sig = cert
        .signature
        .as_bytes()
        .ok_or(AttestationError::CertificateMalformed)?;
    let alg = &cert.signature_algorithm.oid;
    if *alg == OID_RSA_SHA256 {
        use rsa::signature::Verifier;
        let IssuerKey::Rsa(key) = issuer_key(issuer)? else {
            return Err(AttestationError::ChainSignatureInvalid);
        };
        let sig = rsa::pkcs1v15::Signature::try_from(sig)
            .map_err(|_| AttestationError::ChainSignatureInvalid)?;
        return rsa::pkcs1v15::VerifyingKey::<Sha256>::new(*key)
            .verify(&tbs, &sig)
            .map_err(|_| AttestationError::ChainSignatureInvalid);
    }
    let digest: Vec<u8> = if *alg == OID_ECDSA_SHA256 {
        Sha256::digest(&tbs).to_vec()
    } else if *alg == OID_ECDSA_SHA384 {
        Sha384::digest(&tbs).to_vec()
    } else {
        return Err(AttestationError::CertAlgUnsupported);
    };
    let ok = match issuer_key(issuer)? {
        IssuerKey::P256(k) => p256::ecdsa::Signature::from_der(sig)
            .ok()
            .is_some_and(|s| k.verify_prehash(&digest, &s).is_ok()),
        IssuerKey::P384(k) => p384::ecdsa::Signature::from_der(sig)
            .ok()
            .is_some_and(|s| k.verify_prehash(&digest, &s).is_ok()),
        IssuerKey::Rsa(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(AttestationError::ChainSignatureInvalid)
    }
}

/// The AAGUID in the leaf's id-fido-gen-ce-aaguid extension: an OCTET STRING
/// wrapping a 16-byte OCTET STRING; must not be critical (WebAuthn §8.2.1).
fn cert_aaguid(cert: &Certificate) -> Result<[u8; 16], AttestationError> {
    let ext = extension(cert, &OID_FIDO_AAGUID).ok_or(AttestationError::AaguidExtensionMissing)?;
    if ext.critical {
        return Err(AttestationError::LeafProfile);
    }
    let inner = der::asn1::OctetString::from_der(ext.extn_value.as_bytes())
        .map_err(|_| AttestationError::CertificateMalformed)?;
    inner
        .as_bytes()
        .try_into()
        .map_err(|_| AttestationError::CertificateMalformed)
}

/// RFC 5280 §4.2: every critical extension must be one this verifier knows.
fn check_critical_extensions(cert: &Certificate) -> Result<(), AttestationError> {
    let unknown = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .any(|e| e.critical && !KNOWN_CRITICAL.contains(&e.extn_id));
    if unknown {
        return Err(AttestationError::UnknownCriticalExtension);
    }
    Ok(())
}

/// RFC 5280 §6.1.4 (k), (l), (m), (n) for a certificate that issues another
/// on the path: basicConstraints present with cA true; its
/// pathLenConstraint, if any, at least the number of non-self-issued
/// intermediates below it (`intermediates_below`, the leaf not counted);
/// keyUsage, if present, asserting keyCertSign.
fn check_issuer(cert: &Certificate, intermediates_below: usize) -> Result<(), AttestationError> {
    let bc = extension(cert, &OID_BASIC_CONSTRAINTS).ok_or(AttestationError::NotCa)?;
    let bc = x509_cert::ext::pkix::BasicConstraints::from_der(bc.extn_value.as_bytes())
        .map_err(|_| AttestationError::CertificateMalformed)?;
    if !bc.ca {
        return Err(AttestationError::NotCa);
    }
    if bc
        .path_len_constraint
        .is_some_and(|max| intermediates_below > usize::from(max))
    {
        return Err(AttestationError::PathLenExceeded);
    }
    if let Some(ku) = extension(cert, &OID_KEY_USAGE) {
        let ku = x509_cert::ext::pkix::KeyUsage::from_der(ku.extn_value.as_bytes())
            .map_err(|_| AttestationError::CertificateMalformed)?;
        if !ku.key_cert_sign() {
            return Err(AttestationError::KeyUsageNoCertSign);
        }
    }
    Ok(())
}

/// Non-self-issued intermediates (RFC 5280 §6.1.4 (l): a self-issued
/// certificate does not count against pathLenConstraint) in `certs`.
fn count_intermediates(certs: &[Certificate]) -> usize {
    certs
        .iter()
        .filter(|c| c.tbs_certificate.subject != c.tbs_certificate.issuer)
        .count()
}

/// Walks `chain` (leaf first) to one of `roots`; returns the root's subject.
/// Every certificate, leaf and root included, is in its validity period and
/// has no unknown critical extension; every issuer (x5c intermediates and
/// the root) passes [`check_issuer`].
fn verify_chain(
    chain: &[Certificate],
    roots: &TrustRoots,
    now: i64,
) -> Result<String, AttestationError> {
    for (i, cert) in chain.iter().enumerate() {
        check_validity(cert, now)?;
        check_critical_extensions(cert)?;
        if i > 0 {
            check_issuer(cert, count_intermediates(&chain[1..i]))?;
        }
        if let Some(issuer) = chain.get(i + 1) {
            verify_cert_signature(cert, issuer)?;
        }
    }
    let top = chain.last().ok_or(AttestationError::StatementMalformed)?;
    let top_der = top
        .to_der()
        .map_err(|_| AttestationError::CertificateMalformed)?;
    for root in &roots.roots {
        // A chain that includes the root itself is trusted by identity.
        if root.to_der().ok().as_deref() == Some(top_der.as_slice()) {
            return Ok(root.tbs_certificate.subject.to_string());
        }
    }
    // A same-named root whose key did not sign the chain is just as untrusted.
    for root in &roots.roots {
        if root.tbs_certificate.subject == top.tbs_certificate.issuer
            && verify_cert_signature(top, root).is_ok()
        {
            check_validity(root, now)?;
            check_critical_extensions(root)?;
            check_issuer(root, count_intermediates(&chain[1..]))?;
            return Ok(root.tbs_certificate.subject.to_string());
        }
    }
    Err(AttestationError::UntrustedRoot)
}

/// [`verify_chain`] for other certificate users (the station's signing
/// certificate, SPEC §14): `chain` leaf first, to one of `roots`; returns the
/// root's subject.
pub fn verify_certificate_chain(
    chain: &[Certificate],
    roots: &TrustRoots,
    now: i64,
) -> Result<String, AttestationError> {
    verify_chain(chain, roots, now)
}

// ---- verification -----------------------------------------------------------

/// What the attestation must show.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub rp_id: &'a str,
    pub client_data_hash: &'a [u8; 32],
    /// UV flag required (the station always creates with a PIN token, so true).
    pub require_uv: bool,
    /// The credProtect level requested, which the key must report.
    pub cred_protect: Option<u8>,
    /// Accept fmt `none` (a request with `attestation: "none"`).
    pub allow_none: bool,
    /// Unix seconds, for certificate validity.
    pub now: i64,
}

/// How far the attestation was trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// `packed` with x5c chaining to the named root.
    Chained { root_subject: String },
    /// `none`: genuineness was (if at all) checked by the station, not provable here.
    NoneFormat,
}

/// A verified credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCredential {
    pub fmt: String,
    pub aaguid: [u8; 16],
    pub credential_id: Vec<u8>,
    pub public_key_cose: Vec<u8>,
    pub sign_count: u32,
    pub flags: u8,
    pub cred_protect: Option<u8>,
    pub trust: Trust,
}

/// A COSE EC2 P-256 ES256 key (RFC 9053 §7.1.1) → point on the curve.
pub fn cose_es256_key(key: &Value) -> Option<p256::PublicKey> {
    if key.get(1)?.as_i64()? != 2
        || key.get(3)?.as_i64()? != COSE_ES256
        || key.get(-1)?.as_i64()? != 1
    {
        return None;
    }
    let x = key.get(-2)?.as_bytes()?;
    let y = key.get(-3)?.as_bytes()?;
    if x.len() != 32 || y.len() != 32 {
        return None;
    }
    let point = p256::EncodedPoint::from_affine_coordinates(x.into(), y.into(), false);
    use p256::elliptic_curve::sec1::FromEncodedPoint;
    Option::from(p256::PublicKey::from_encoded_point(&point))
}

/// Verifies an attestation object (WebAuthn §7.1 steps 12–21; §8.2 packed;
/// §8.7 none) and returns the credential.
pub fn verify_attestation(
    attestation_object: &[u8],
    expected: &Expected<'_>,
    roots: &TrustRoots,
) -> Result<VerifiedCredential, AttestationError> {
    let obj = AttestationObject::parse(attestation_object)?;
    verify_attestation_parts(&obj, expected, roots)
}

/// [`verify_attestation`] on an already parsed object.
pub fn verify_attestation_parts(
    obj: &AttestationObject,
    expected: &Expected<'_>,
    roots: &TrustRoots,
) -> Result<VerifiedCredential, AttestationError> {
    let ad = AuthenticatorData::parse(&obj.auth_data)?;
    let rp_hash: [u8; 32] = Sha256::digest(expected.rp_id.as_bytes()).into();
    if ad.rp_id_hash != rp_hash {
        return Err(AttestationError::RpIdHashMismatch);
    }
    if ad.flags & flags::UP == 0 {
        return Err(AttestationError::UserNotPresent);
    }
    if expected.require_uv && ad.flags & flags::UV == 0 {
        return Err(AttestationError::UserNotVerified);
    }
    let cred = ad
        .attested
        .as_ref()
        .ok_or(AttestationError::NoAttestedCredential)?;
    let alg = cred
        .public_key
        .get(3)
        .and_then(Value::as_i64)
        .ok_or(AttestationError::CoseKeyInvalid)?;
    if alg == COSE_ES256 && cose_es256_key(&cred.public_key).is_none() {
        return Err(AttestationError::CoseKeyInvalid);
    }
    if let Some(level) = expected.cred_protect {
        if ad.cred_protect() != Some(level) {
            return Err(AttestationError::CredProtectMismatch);
        }
    }
    let trust = match obj.fmt.as_str() {
        "none" => {
            if !expected.allow_none {
                return Err(AttestationError::NoneNotAllowed);
            }
            if obj.att_stmt.as_map().is_none_or(|m| !m.is_empty()) {
                return Err(AttestationError::StatementMalformed);
            }
            Trust::NoneFormat
        }
        "packed" => verify_packed(obj, &ad, cred, expected, roots)?,
        _ => return Err(AttestationError::FormatUnsupported),
    };
    Ok(VerifiedCredential {
        fmt: obj.fmt.clone(),
        aaguid: cred.aaguid,
        credential_id: cred.credential_id.clone(),
        public_key_cose: cred.public_key_cose.clone(),
        sign_count: ad.sign_count,
        flags: ad.flags,
        cred_protect: ad.cred_protect(),
        trust,
    })
}

/// WebAuthn §8.2 packed, x5c case.
fn verify_packed(
    obj: &AttestationObject,
    _ad: &AuthenticatorData,
    cred: &AttestedCredential,
    expected: &Expected<'_>,
    roots: &TrustRoots,
) -> Result<Trust, AttestationError> {
    use p256::ecdsa::signature::Verifier;
    use AttestationError::StatementMalformed as S;
    let stmt = &obj.att_stmt;
    let alg = stmt.get("alg").and_then(Value::as_i64).ok_or(S)?;
    let sig = stmt.get("sig").and_then(Value::as_bytes).ok_or(S)?;
    let Some(x5c) = stmt.get("x5c") else {
        return Err(AttestationError::SelfAttestation);
    };
    if alg != COSE_ES256 {
        return Err(AttestationError::AlgUnsupported);
    }
    let x5c = x5c.as_array().ok_or(S)?;
    if x5c.is_empty() || x5c.len() > MAX_X5C {
        return Err(S);
    }
    let chain = x5c
        .iter()
        .map(|c| {
            c.as_bytes().ok_or(S).and_then(|d| {
                Certificate::from_der(d).map_err(|_| AttestationError::CertificateMalformed)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = &chain[0];
    // WebAuthn §8.2.1: v3, Subject-OU "Authenticator Attestation", CA false.
    if leaf.tbs_certificate.version != x509_cert::Version::V3
        || !subject_ou(leaf)
            .iter()
            .any(|ou| ou == "Authenticator Attestation")
        || is_ca(leaf)
    {
        return Err(AttestationError::LeafProfile);
    }
    if cert_aaguid(leaf)? != cred.aaguid {
        return Err(AttestationError::AaguidMismatch);
    }
    let leaf_key = match issuer_key(leaf)? {
        IssuerKey::P256(k) => k,
        IssuerKey::P384(_) | IssuerKey::Rsa(_) => return Err(AttestationError::AlgUnsupported),
    };
    let sig =
        p256::ecdsa::Signature::from_der(sig).map_err(|_| AttestationError::SignatureInvalid)?;
    let mut signed = obj.auth_data.clone();
    signed.extend_from_slice(expected.client_data_hash);
    leaf_key
        .verify(&signed, &sig)
        .map_err(|_| AttestationError::SignatureInvalid)?;
    let root_subject = verify_chain(&chain, roots, expected.now)?;
    Ok(Trust::Chained { root_subject })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_data_shape() {
        let cd = client_data_json(&[1, 2, 3], "https://example.com");
        assert_eq!(
            std::str::from_utf8(&cd).unwrap(),
            r#"{"type":"webauthn.create","challenge":"AQID","origin":"https://example.com","crossOrigin":false}"#
        );
        check_client_data(&cd, &[1, 2, 3], "https://example.com").unwrap();
        assert_eq!(
            check_client_data(&cd, &[1, 2, 4], "https://example.com"),
            Err(AttestationError::ClientDataChallenge)
        );
        assert_eq!(
            check_client_data(&cd, &[1, 2, 3], "https://evil.com"),
            Err(AttestationError::ClientDataOrigin)
        );
    }

    #[test]
    fn aaguid_format() {
        let a = hex::decode("a25342c03cdc44148e46f4807fca511c").unwrap();
        assert_eq!(
            format_aaguid(&a.try_into().unwrap()),
            "a25342c0-3cdc-4414-8e46-f4807fca511c"
        );
    }

    use super::testkit::{CaOptions, SoftCa};

    const AAGUID: [u8; 16] = [
        0xa2, 0x53, 0x42, 0xc0, 0x3c, 0xdc, 0x44, 0x14, 0x8e, 0x46, 0xf4, 0x80, 0x7f, 0xca, 0x51,
        0x1c,
    ];
    const NOW: i64 = 1_764_320_000;

    fn expected<'a>(cdh: &'a [u8; 32]) -> Expected<'a> {
        Expected {
            rp_id: "myorg.okta.com",
            client_data_hash: cdh,
            require_uv: true,
            cred_protect: Some(3),
            allow_none: false,
            now: NOW,
        }
    }

    #[test]
    fn packed_chain_verifies_and_every_tamper_is_named() {
        let ca = SoftCa::new(AAGUID);
        let roots = TrustRoots::from_pem(ca.root_pem().as_bytes()).unwrap();
        let cd = client_data_json(&[7; 32], "https://myorg.okta.com");
        let cdh = client_data_hash(&cd);
        let (obj, cred_id) = ca.attest("myorg.okta.com", &cdh, Some(3));
        let bytes = obj.encode();
        let v = verify_attestation(&bytes, &expected(&cdh), &roots).unwrap();
        assert_eq!(v.credential_id, cred_id);
        assert_eq!(v.aaguid, AAGUID);
        assert_eq!(v.cred_protect, Some(3));
        assert!(matches!(v.trust, Trust::Chained { .. }));

        // Wrong clientDataHash → signature.
        let other = client_data_hash(b"x");
        assert_eq!(
            verify_attestation(&bytes, &expected(&other), &roots),
            Err(AttestationError::SignatureInvalid)
        );
        // Wrong rp.
        let mut e = expected(&cdh);
        e.rp_id = "evil.example";
        assert_eq!(
            verify_attestation(&bytes, &e, &roots),
            Err(AttestationError::RpIdHashMismatch)
        );
        // credProtect level asked differs.
        let mut e = expected(&cdh);
        e.cred_protect = Some(2);
        assert_eq!(
            verify_attestation(&bytes, &e, &roots),
            Err(AttestationError::CredProtectMismatch)
        );
        // Another CA's root.
        let stranger = SoftCa::new(AAGUID);
        let other_roots = TrustRoots::from_pem(stranger.root_pem().as_bytes()).unwrap();
        assert_eq!(
            verify_attestation(&bytes, &expected(&cdh), &other_roots),
            Err(AttestationError::UntrustedRoot)
        );
        // Certificates not yet valid.
        let mut e = expected(&cdh);
        e.now = 1_500_000_000;
        assert_eq!(
            verify_attestation(&bytes, &e, &roots),
            Err(AttestationError::CertificateExpired)
        );
        // Tampered authData (flip the sign count) → signature.
        let mut t = obj.clone();
        t.auth_data[36] ^= 1;
        assert_eq!(
            verify_attestation(&t.encode(), &expected(&cdh), &roots),
            Err(AttestationError::SignatureInvalid)
        );
        // UV missing (flags rewritten, so the signature would fail too: flags checked first).
        let mut t = obj.clone();
        t.auth_data[32] &= !flags::UV;
        assert_eq!(
            verify_attestation(&t.encode(), &expected(&cdh), &roots),
            Err(AttestationError::UserNotVerified)
        );
        // none where not allowed / allowed.
        let none = obj.to_none().encode();
        assert_eq!(
            verify_attestation(&none, &expected(&cdh), &roots),
            Err(AttestationError::NoneNotAllowed)
        );
        let mut e = expected(&cdh);
        e.allow_none = true;
        assert_eq!(
            verify_attestation(&none, &e, &roots).unwrap().trust,
            Trust::NoneFormat
        );
        // Self attestation (no x5c).
        let mut t = obj.clone();
        t.att_stmt = Value::map([
            (Value::from("alg"), Value::from(-7)),
            (Value::from("sig"), obj.att_stmt.get("sig").unwrap().clone()),
        ]);
        assert_eq!(
            verify_attestation(&t.encode(), &expected(&cdh), &roots),
            Err(AttestationError::SelfAttestation)
        );
        // Unknown fmt.
        let mut t = obj.clone();
        t.fmt = "tpm".into();
        assert_eq!(
            verify_attestation(&t.encode(), &expected(&cdh), &roots),
            Err(AttestationError::FormatUnsupported)
        );
        // Garbage.
        assert_eq!(
            verify_attestation(b"\xa0", &expected(&cdh), &roots),
            Err(AttestationError::ObjectMalformed)
        );
    }

    #[test]
    fn leaf_profile_and_aaguid_extension_are_enforced() {
        let cd = client_data_json(&[7; 32], "https://myorg.okta.com");
        let cdh = client_data_hash(&cd);
        let mut o = CaOptions::new(AAGUID);
        o.cert_aaguid = Some([9; 16]);
        let ca = SoftCa::with_options(&o);
        let roots = TrustRoots::from_pem(ca.root_pem().as_bytes()).unwrap();
        let (obj, _) = ca.attest("myorg.okta.com", &cdh, Some(3));
        assert_eq!(
            verify_attestation(&obj.encode(), &expected(&cdh), &roots),
            Err(AttestationError::AaguidMismatch)
        );
        let mut o = CaOptions::new(AAGUID);
        o.cert_aaguid = None;
        let ca = SoftCa::with_options(&o);
        let (obj, _) = ca.attest("myorg.okta.com", &cdh, Some(3));
        let roots = TrustRoots::from_pem(ca.root_pem().as_bytes()).unwrap();
        assert_eq!(
            verify_attestation(&obj.encode(), &expected(&cdh), &roots),
            Err(AttestationError::AaguidExtensionMissing)
        );
        let mut o = CaOptions::new(AAGUID);
        o.leaf_ou = "Something Else";
        let ca = SoftCa::with_options(&o);
        let (obj, _) = ca.attest("myorg.okta.com", &cdh, Some(3));
        let roots = TrustRoots::from_pem(ca.root_pem().as_bytes()).unwrap();
        assert_eq!(
            verify_attestation(&obj.encode(), &expected(&cdh), &roots),
            Err(AttestationError::LeafProfile)
        );
    }

    #[test]
    fn rsa_root_chain_verifies_and_tamper_fails() {
        let mut o = CaOptions::new(AAGUID);
        o.rsa_root = true;
        let ca = SoftCa::with_options(&o);
        let roots = TrustRoots::from_pem(ca.root_pem().as_bytes()).unwrap();
        let cdh = client_data_hash(&client_data_json(&[7; 32], "https://myorg.okta.com"));
        let (obj, _) = ca.attest("myorg.okta.com", &cdh, Some(3));
        let v = verify_attestation(&obj.encode(), &expected(&cdh), &roots).unwrap();
        assert!(matches!(v.trust, Trust::Chained { .. }));
        // Same names, another RSA key: untrusted.
        let other = SoftCa::with_options(&o);
        let other_roots = TrustRoots::from_pem(other.root_pem().as_bytes()).unwrap();
        assert_eq!(
            verify_attestation(&obj.encode(), &expected(&cdh), &other_roots),
            Err(AttestationError::UntrustedRoot)
        );
    }

    /// A real YubiKey's packed attestation under Yubico's real RSA root
    /// (provenance in the vector file).
    #[test]
    fn real_yubikey_attestation_verifies_to_the_yubico_root() {
        let v: serde_json::Value = serde_json::from_str(include_str!(
            "../tests/vectors/yubikey-packed-attestation.json"
        ))
        .unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        let b = |k: &str| crate::jose::b64url_decode(&s(k)).unwrap();
        let roots = TrustRoots::from_pem(include_bytes!(
            "../tests/vectors/yubico-u2f-root-ca-457200631.pem"
        ))
        .unwrap();
        let cdj = b("client_data_json");
        check_client_data(&cdj, &b("challenge"), &s("origin")).unwrap();
        let cdh = client_data_hash(&cdj);
        let e = Expected {
            rp_id: "localhost",
            client_data_hash: &cdh,
            require_uv: true,
            cred_protect: None,
            allow_none: false,
            now: NOW,
        };
        let att = b("attestation_object");
        let got = verify_attestation(&att, &e, &roots).unwrap();
        assert_eq!(got.credential_id, b("credential_id"));
        assert_eq!(format_aaguid(&got.aaguid), s("aaguid"));
        assert_eq!(
            got.trust,
            Trust::Chained {
                root_subject: "CN=Yubico U2F Root CA Serial 457200631".into()
            }
        );
        // One bit of the leaf's RSA signature flipped (it ends 207 bytes before
        // the end: "authData" key and the 196-byte authData follow it).
        let mut t = att.clone();
        let i = t.len() - 207 - 100;
        t[i] ^= 1;
        assert_eq!(
            verify_attestation(&t, &e, &roots),
            Err(AttestationError::UntrustedRoot)
        );
        // Without the Yubico root configured: untrusted.
        let other = SoftCa::new(AAGUID);
        let other_roots = TrustRoots::from_pem(other.root_pem().as_bytes()).unwrap();
        assert_eq!(
            verify_attestation(&att, &e, &other_roots),
            Err(AttestationError::UntrustedRoot)
        );
    }

    #[test]
    fn from_ctap_response_round_trips() {
        let ca = SoftCa::new(AAGUID);
        let (obj, _) = ca.attest("myorg.okta.com", &[0; 32], None);
        let ctap = Value::map([
            (Value::from(1), Value::from(obj.fmt.as_str())),
            (Value::from(2), Value::Bytes(obj.auth_data.clone())),
            (Value::from(3), obj.att_stmt.clone()),
        ]);
        assert_eq!(AttestationObject::from_ctap_response(&ctap).unwrap(), obj);
        assert_eq!(AttestationObject::parse(&obj.encode()).unwrap(), obj);
        assert_eq!(
            AttestationObject::from_ctap_response(&Value::map([(
                Value::from(1),
                Value::from("packed")
            )])),
            Err(AttestationError::ObjectMalformed)
        );
    }

    #[test]
    fn auth_data_truncations_are_errors() {
        for n in 0..37 {
            assert!(AuthenticatorData::parse(&vec![0x41; n]).is_err());
        }
        let mut ad = vec![0u8; 32];
        ad.push(flags::UP | flags::AT);
        ad.extend_from_slice(&[0, 0, 0, 1]);
        ad.extend_from_slice(&[0u8; 16]);
        ad.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(
            AuthenticatorData::parse(&ad),
            Err(AttestationError::AuthDataMalformed)
        );
    }

    // ---- chain rules (RFC 5280 §4.2, §6.1.4) on purpose-built chains ----

    mod chain_rules {
        use super::super::*;
        use p256::ecdsa::signature::Signer;
        use std::str::FromStr;
        use x509_cert::builder::{Builder, CertificateBuilder, Profile};
        use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
        use x509_cert::ext::Extension;
        use x509_cert::name::Name;
        use x509_cert::serial_number::SerialNumber;
        use x509_cert::spki::SubjectPublicKeyInfoOwned;
        use x509_cert::time::Validity;

        const NOW: i64 = 1_764_320_000;

        struct Ca {
            cert: Certificate,
            key: p256::ecdsa::SigningKey,
        }

        fn name(cn: &str) -> Name {
            Name::from_str(&format!("CN={cn},O=prereg chain test")).unwrap()
        }

        fn issue(profile: Profile, cn: &str, issuer: Option<&Ca>, serial: u32) -> Ca {
            let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
            let spki = SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).unwrap();
            let t = |secs| {
                x509_cert::time::Time::try_from(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
                )
                .unwrap()
            };
            let validity = Validity {
                not_before: t(1_577_836_800),
                not_after: t(2_524_521_600),
            };
            let signer = issuer.map(|i| &i.key).unwrap_or(&key);
            let cert = CertificateBuilder::new(
                profile,
                SerialNumber::from(serial),
                validity,
                name(cn),
                spki,
                signer,
            )
            .unwrap()
            .build::<p256::ecdsa::DerSignature>()
            .unwrap();
            Ca { cert, key }
        }

        /// A root, one intermediate (pathLen 0) and a leaf, as the builder makes them.
        fn base() -> (Ca, Ca, Ca) {
            let root = issue(Profile::Root, "root", None, 1);
            let int = issue(
                Profile::SubCA {
                    issuer: name("root"),
                    path_len_constraint: Some(0),
                },
                "int",
                Some(&root),
                2,
            );
            let leaf = issue(
                Profile::Leaf {
                    issuer: name("int"),
                    enable_key_agreement: false,
                    enable_key_encipherment: false,
                },
                "leaf",
                Some(&int),
                3,
            );
            (root, int, leaf)
        }

        /// `cert` with its extensions edited and re-signed by `signer`.
        fn edit(
            cert: &Certificate,
            signer: &p256::ecdsa::SigningKey,
            f: impl FnOnce(&mut Vec<Extension>),
        ) -> Certificate {
            let mut c = cert.clone();
            let mut exts = c.tbs_certificate.extensions.take().unwrap_or_default();
            f(&mut exts);
            c.tbs_certificate.extensions = Some(exts);
            let tbs = c.tbs_certificate.to_der().unwrap();
            let sig: p256::ecdsa::DerSignature = signer.sign(&tbs);
            c.signature = der::asn1::BitString::from_bytes(sig.as_bytes()).unwrap();
            c
        }

        fn set(exts: &mut Vec<Extension>, oid: ObjectIdentifier, critical: bool, value: Vec<u8>) {
            exts.retain(|e| e.extn_id != oid);
            exts.push(Extension {
                extn_id: oid,
                critical,
                extn_value: der::asn1::OctetString::new(value).unwrap(),
            });
        }

        fn basic(ca: bool, path_len: Option<u8>) -> Vec<u8> {
            BasicConstraints {
                ca,
                path_len_constraint: path_len,
            }
            .to_der()
            .unwrap()
        }

        const PRIVATE_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.7");

        fn roots_of(root: &Certificate) -> TrustRoots {
            let mut roots = TrustRoots::default();
            roots.add_pem_or_der(&root.to_der().unwrap()).unwrap();
            roots
        }

        #[test]
        fn builder_chain_verifies() {
            let (root, int, leaf) = base();
            let roots = roots_of(&root.cert);
            verify_chain(&[leaf.cert.clone(), int.cert.clone()], &roots, NOW).unwrap();
            // The root in x5c too (trusted by identity) is still fine.
            verify_chain(&[leaf.cert, int.cert, root.cert], &roots, NOW).unwrap();
        }

        #[test]
        fn an_issuer_without_ca_true_is_refused() {
            let (root, int, leaf) = base();
            let roots = roots_of(&root.cert);
            let not_ca = edit(&int.cert, &root.key, |e| {
                set(e, OID_BASIC_CONSTRAINTS, true, basic(false, None))
            });
            let no_bc = edit(&int.cert, &root.key, |e| {
                e.retain(|x| x.extn_id != OID_BASIC_CONSTRAINTS)
            });
            for int in [not_ca, no_bc] {
                assert_eq!(
                    verify_chain(&[leaf.cert.clone(), int], &roots, NOW),
                    Err(AttestationError::NotCa)
                );
            }
            // The root as trust anchor obeys the same rule.
            let root_not_ca = edit(&root.cert, &root.key, |e| {
                set(e, OID_BASIC_CONSTRAINTS, true, basic(false, None))
            });
            assert_eq!(
                verify_chain(&[leaf.cert, int.cert], &roots_of(&root_not_ca), NOW),
                Err(AttestationError::NotCa)
            );
        }

        #[test]
        fn a_path_longer_than_path_len_constraint_is_refused() {
            // root -> int1 (pathLen 0) -> int2 -> leaf: int1 has one intermediate below.
            let root = issue(Profile::Root, "root", None, 1);
            let sub = |issuer: &str, len| Profile::SubCA {
                issuer: name(issuer),
                path_len_constraint: len,
            };
            let int1 = issue(sub("root", Some(0)), "int1", Some(&root), 2);
            let int2 = issue(sub("int1", None), "int2", Some(&int1), 3);
            let leaf = issue(
                Profile::Leaf {
                    issuer: name("int2"),
                    enable_key_agreement: false,
                    enable_key_encipherment: false,
                },
                "leaf",
                Some(&int2),
                4,
            );
            let roots = roots_of(&root.cert);
            let chain = [leaf.cert.clone(), int2.cert.clone(), int1.cert.clone()];
            assert_eq!(
                verify_chain(&chain, &roots, NOW),
                Err(AttestationError::PathLenExceeded)
            );
            // pathLen 1 on int1 allows it.
            let int1_ok = edit(&int1.cert, &root.key, |e| {
                set(e, OID_BASIC_CONSTRAINTS, true, basic(true, Some(1)))
            });
            let chain = [leaf.cert.clone(), int2.cert.clone(), int1_ok];
            verify_chain(&chain, &roots, NOW).unwrap();
            // A root with pathLen 0 cannot have an intermediate below it.
            let (root, int, leaf) = base();
            let tight_root = edit(&root.cert, &root.key, |e| {
                set(e, OID_BASIC_CONSTRAINTS, true, basic(true, Some(0)))
            });
            assert_eq!(
                verify_chain(&[leaf.cert, int.cert], &roots_of(&tight_root), NOW),
                Err(AttestationError::PathLenExceeded)
            );
        }

        #[test]
        fn an_issuer_whose_key_usage_lacks_key_cert_sign_is_refused() {
            let (root, int, leaf) = base();
            let roots = roots_of(&root.cert);
            let ku = KeyUsage(KeyUsages::DigitalSignature | KeyUsages::CRLSign)
                .to_der()
                .unwrap();
            let int_bad = edit(&int.cert, &root.key, |e| set(e, OID_KEY_USAGE, true, ku));
            assert_eq!(
                verify_chain(&[leaf.cert.clone(), int_bad], &roots, NOW),
                Err(AttestationError::KeyUsageNoCertSign)
            );
            // keyUsage absent altogether is allowed (RFC 5280 §4.2.1.3 "when present").
            let int_no_ku = edit(&int.cert, &root.key, |e| {
                e.retain(|x| x.extn_id != OID_KEY_USAGE)
            });
            verify_chain(&[leaf.cert, int_no_ku], &roots, NOW).unwrap();
        }

        #[test]
        fn an_unknown_critical_extension_is_refused_on_any_certificate() {
            let (root, int, leaf) = base();
            let roots = roots_of(&root.cert);
            let crit = |cert: &Certificate, signer: &p256::ecdsa::SigningKey, critical| {
                edit(cert, signer, |e| {
                    set(e, PRIVATE_OID, critical, vec![0x05, 0x00])
                })
            };
            // On the leaf, the intermediate, and the root.
            assert_eq!(
                verify_chain(
                    &[crit(&leaf.cert, &int.key, true), int.cert.clone()],
                    &roots,
                    NOW
                ),
                Err(AttestationError::UnknownCriticalExtension)
            );
            assert_eq!(
                verify_chain(
                    &[leaf.cert.clone(), crit(&int.cert, &root.key, true)],
                    &roots,
                    NOW
                ),
                Err(AttestationError::UnknownCriticalExtension)
            );
            let root_crit = crit(&root.cert, &root.key, true);
            assert_eq!(
                verify_chain(
                    &[leaf.cert.clone(), int.cert.clone()],
                    &roots_of(&root_crit),
                    NOW
                ),
                Err(AttestationError::UnknownCriticalExtension)
            );
            // A critical nameConstraints is not processed here, so it is refused too.
            let name_constraints = ObjectIdentifier::new_unwrap("2.5.29.30");
            let int_nc = edit(&int.cert, &root.key, |e| {
                set(e, name_constraints, true, vec![0x30, 0x00])
            });
            assert_eq!(
                verify_chain(&[leaf.cert.clone(), int_nc], &roots, NOW),
                Err(AttestationError::UnknownCriticalExtension)
            );
            // The same extension, not critical, is ignored.
            verify_chain(&[crit(&leaf.cert, &int.key, false), int.cert], &roots, NOW).unwrap();
        }
    }
}

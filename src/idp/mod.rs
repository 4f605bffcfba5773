//! The reference identity provider (SPEC §11 `idp enroll` / `idp activate`):
//! makes shipment jobs as an IdP plus the YubiEnterprise order system would,
//! and verifies delivered results as an IdP's activate endpoint must.
//!
//! State lives in a directory (0700): one record per shipment
//! (`shipments/<id>.json`) and one private response key per shipment
//! (`keys/<kid>.jwk`, created 0600: SPEC §4 has every request of a job name
//! the same `responseKey`). With `--sign`, the IdP's request-signing key
//! (`signing/<kid>.jwk`, 0600) and its public JWKS (`idp-signing.jwks`, for
//! the station's `idp_signing_jwks`). The PIN is never written anywhere: it is
//! decrypted at activation and shown only when the caller asks (`--show-pin`).

pub mod facility_ca;
pub mod serve;
pub mod wire;

use crate::jose::jwe::{self, KeyManagement};
use crate::jose::jwk::{Jwks, KeyUse};
use crate::jose::keys::{read_private, write_atomic, write_private, NamedKey};
use crate::jose::request::{
    AuthenticatorSelection, CreationOptions, CredParam, CredentialRequestWire, Extensions,
    PinPolicy, PinRequestWire, RpEntity, UserEntity,
};
use crate::jose::response::{self, request_digest};
use crate::jose::signed;
use crate::jose::{b64url_decode, b64url_encode, cty};
use crate::secret::SecretString;
use crate::webauthn::{self, AttestationObject, Expected, TrustRoots};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use thiserror::Error;
pub use wire::{ProductCustomization, ProductData, Shipment, ShipmentItem, ShipmentResult};

/// Why the IdP could not do its job (as opposed to a result failing verification).
#[derive(Debug, Error)]
pub enum IdpError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("station transport JWKS has no P-384 enc key")]
    NoTransportKey,
    #[error("{0}")]
    Keys(#[from] crate::jose::KeyError),
    #[error("encrypting a request failed: {0}")]
    Jose(#[from] crate::jose::JoseError),
    #[error("{path}: IdP state record is unreadable")]
    BadRecord { path: PathBuf },
    #[error("invalid enroll options: {0}")]
    Options(&'static str),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdpError + '_ {
    move |source| IdpError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `idp enroll` makes.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    pub users: usize,
    pub rp_id: String,
    pub rp_name: String,
    /// Default `https://` + rp_id.
    pub origin: Option<String>,
    pub customization_id: String,
    pub product_id: u32,
    pub inventory_product_id: u32,
    /// Credential requests (enrollments) per user. The first is on `rp_id`;
    /// the k-th (k ≥ 2) on its own RP, see [`enrollment_rp_id`].
    pub credentials_per_user: usize,
    pub alg: KeyManagement,
    /// `direct`, `none` or `enterprise`.
    pub attestation: String,
    /// WebAuthn credentialProtectionPolicy name, or none.
    pub cred_protect: Option<String>,
    pub pin_min_length: Option<u8>,
    /// `pinPolicy.forceChangePin`: the user must change the PIN at first use.
    pub force_change_pin: bool,
    pub lifetime_secs: i64,
    /// Unix seconds (`iat`).
    pub now: i64,
    /// IdP-signed requests (SPEC §4): each request is an ES384 JWS by the
    /// IdP's signing key inside the JWE (`cty` + `+jws`).
    pub sign: bool,
}

impl Default for EnrollOptions {
    fn default() -> Self {
        EnrollOptions {
            users: 1,
            rp_id: "myorg.okta.com".into(),
            rp_name: "MyOrg".into(),
            origin: None,
            customization_id: "C19881".into(),
            product_id: 1,
            inventory_product_id: 106,
            credentials_per_user: 1,
            alg: KeyManagement::EcdhEsA256Kw,
            attestation: "direct".into(),
            cred_protect: Some("userVerificationRequired".into()),
            pin_min_length: Some(6),
            force_change_pin: true,
            lifetime_secs: 30 * 24 * 3600,
            now: unix_now(),
            sign: false,
        }
    }
}

/// The RP of a user's `k`-th enrollment (from 0): `rp_id` itself, then a
/// sibling per further enrollment (`myorg.okta.com` → `myorg-2.okta.com`),
/// like one company's several IdP orgs. A key keeps one discoverable
/// credential per RP and user handle (CTAP 2.1 §6.1.2), so two enrollments of
/// one user on one RP could never both be on the key; the station refuses
/// such jobs.
pub fn enrollment_rp_id(rp_id: &str, k: usize) -> String {
    if k == 0 {
        return rp_id.to_string();
    }
    match rp_id.split_once('.') {
        Some((label, rest)) => format!("{label}-{}.{rest}", k + 1),
        None => format!("{rp_id}-{}", k + 1),
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What the IdP remembers about one enrollment (no secrets: the challenge is
/// the IdP's own and the private key lives in its own file).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EnrollmentRecord {
    enrollment_id: String,
    request_digest: String,
    response_kid: String,
    rp_id: String,
    origin: String,
    challenge: String,
    user_handle: String,
    attestation: String,
    cred_protect: Option<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ShipmentRecord {
    v: u32,
    shipment_id: String,
    user_id: String,
    pin_request_digest: String,
    pin_response_kid: String,
    force_change_pin: bool,
    min_pin_length: Option<u8>,
    enrollments: Vec<EnrollmentRecord>,
}

/// The reference IdP over a state directory.
#[derive(Debug, Clone)]
pub struct Idp {
    state_dir: PathBuf,
}

const ALPHANUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

fn random_id(prefix: &str, alphabet: &[u8], len: usize) -> String {
    let mut s = String::from(prefix);
    while s.len() < prefix.len() + len {
        let b = (OsRng.next_u32() & 0xff) as usize;
        // Rejection sampling keeps the choice uniform.
        if b < 256 - 256 % alphabet.len() {
            s.push(alphabet[b % alphabet.len()] as char);
        }
    }
    s
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    OsRng.fill_bytes(&mut v);
    v
}

fn cred_protect_level(name: &Option<String>) -> Result<Option<u8>, IdpError> {
    match name.as_deref() {
        None => Ok(None),
        Some(n) => crate::jose::request::CredProtect::from_policy(n)
            .map(|c| Some(c.value()))
            .ok_or(IdpError::Options("unknown credentialProtectionPolicy")),
    }
}

impl Idp {
    /// Opens (creating 0700) the state directory.
    pub fn open(state_dir: &Path) -> Result<Self, IdpError> {
        for sub in ["", "shipments", "keys"] {
            let d = state_dir.join(sub);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(io(&d))?;
        }
        Ok(Idp {
            state_dir: state_dir.to_path_buf(),
        })
    }

    fn keys_dir(&self) -> PathBuf {
        self.state_dir.join("keys")
    }

    fn signing_dir(&self) -> PathBuf {
        self.state_dir.join("signing")
    }

    /// Where the public JWKS of the IdP's request-signing key is written: the
    /// file a station's `[[customization]] idp_signing_jwks` names.
    pub fn signing_jwks_path(&self) -> PathBuf {
        self.state_dir.join("idp-signing.jwks")
    }

    /// The IdP's request-signing key (EC P-384, ES384), made on first use
    /// and kept in `signing/`; its public JWKS is (re)written to
    /// [`signing_jwks_path`](Self::signing_jwks_path).
    pub fn signing_key(&self) -> Result<NamedKey, IdpError> {
        let dir = self.signing_dir();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io(&dir))?;
        let mut existing: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(io(&dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jwk"))
            .collect();
        existing.sort();
        let key = match existing.first() {
            Some(path) => {
                let text = read_private(path)?;
                let (key, key_use) = NamedKey::from_private_jwk(&text).map_err(|reason| {
                    IdpError::Keys(crate::jose::KeyError::BadKeyFile {
                        path: path.clone(),
                        reason,
                    })
                })?;
                if key_use != KeyUse::Sig {
                    return Err(IdpError::Keys(crate::jose::KeyError::BadKeyFile {
                        path: path.clone(),
                        reason: "the IdP signing key file is not a sig key",
                    }));
                }
                key
            }
            None => {
                let key = NamedKey::generate("idp-sign");
                write_private(&dir, &key, KeyUse::Sig)?;
                key
            }
        };
        let jwks = Jwks {
            keys: vec![key.public_jwk(KeyUse::Sig)],
        };
        write_atomic(
            &self.state_dir,
            "idp-signing.jwks",
            jwks.to_json_pretty().as_bytes(),
            0o644,
        )?;
        Ok(key)
    }

    fn record_path(&self, shipment_id: &str) -> PathBuf {
        self.state_dir
            .join("shipments")
            .join(format!("{shipment_id}.json"))
    }

    /// Makes `opts.users` shipments, each for one new user with
    /// `credentials_per_user` enrollments, encrypted to a random key of the
    /// station's transport JWKS (as Yubico's Okta guide picks one).
    pub fn enroll(
        &self,
        transport_jwks: &Jwks,
        opts: &EnrollOptions,
    ) -> Result<Vec<Shipment>, IdpError> {
        if opts.credentials_per_user == 0 {
            return Err(IdpError::Options("at least one credential per user"));
        }
        let transport: Vec<_> = transport_jwks
            .keys
            .iter()
            .filter_map(|k| {
                k.to_public_key_for(KeyUse::Enc)
                    .ok()
                    .map(|p| (k.kid.clone(), p))
            })
            .collect();
        if transport.is_empty() {
            return Err(IdpError::NoTransportKey);
        }
        let cred_protect = cred_protect_level(&opts.cred_protect)?;
        let signer = if opts.sign {
            Some(self.signing_key()?)
        } else {
            None
        };
        // A request JWE: the JSON itself, or (signing) a JWS of it (SPEC §4).
        let seal =
            |json: &[u8], tkey: &p384::PublicKey, tkid: &str, content_type: &str| match &signer {
                None => jwe::encrypt(json, tkey, tkid, content_type, opts.alg),
                Some(sk) => {
                    let jws = signed::sign_request(json, sk.secret(), &sk.kid, content_type);
                    jwe::encrypt(
                        jws.as_bytes(),
                        tkey,
                        tkid,
                        &signed::signed_cty(content_type),
                        opts.alg,
                    )
                }
            };
        let origin = opts
            .origin
            .clone()
            .unwrap_or_else(|| format!("https://{}", opts.rp_id));
        let mut shipments = Vec::with_capacity(opts.users);
        for _ in 0..opts.users {
            let (tkid, tkey) = &transport[(OsRng.next_u32() as usize) % transport.len()];
            let user_id = random_id("00u", ALPHANUM, 17);
            let user_handle = random_bytes(32);
            let user_name = format!("{}@example.com", user_id.to_lowercase());
            let shipment_id = random_id("", BASE58, 22);
            let mut enrollments = Vec::new();
            let mut cred_jwes = Vec::new();
            // SPEC §4: one response key for the job's PIN and credential requests.
            let response_key = NamedKey::generate("idp-resp");
            write_private(&self.keys_dir(), &response_key, KeyUse::Enc)?;
            let enrollment_ids: Vec<String> = (0..opts.credentials_per_user)
                .map(|_| random_id("fwf", ALPHANUM, 17))
                .collect();
            for (k, enrollment_id) in enrollment_ids.iter().enumerate() {
                let rp_id = enrollment_rp_id(&opts.rp_id, k);
                let origin = if k == 0 {
                    origin.clone()
                } else {
                    format!("https://{rp_id}")
                };
                let key = &response_key;
                let challenge = random_bytes(32);
                let req = CredentialRequestWire {
                    v: 1,
                    user_id: user_id.clone(),
                    authenticator_enrollment_id: enrollment_id.clone(),
                    response_key: key.public_jwk(KeyUse::Enc),
                    origin: if k == 0 {
                        opts.origin.clone()
                    } else {
                        Some(origin.clone())
                    },
                    public_key: CreationOptions {
                        rp: RpEntity {
                            id: rp_id.clone(),
                            name: opts.rp_name.clone(),
                        },
                        user: UserEntity {
                            id: b64url_encode(&user_handle),
                            name: user_name.clone(),
                            display_name: format!("User {user_id}"),
                        },
                        challenge: b64url_encode(&challenge),
                        pub_key_cred_params: vec![
                            CredParam {
                                kind: "public-key".into(),
                                alg: -7,
                            },
                            CredParam {
                                kind: "public-key".into(),
                                alg: -8,
                            },
                        ],
                        timeout: None,
                        exclude_credentials: Vec::new(),
                        authenticator_selection: AuthenticatorSelection {
                            authenticator_attachment: Some("cross-platform".into()),
                            resident_key: Some("required".into()),
                            require_resident_key: Some(true),
                            user_verification: Some("required".into()),
                        },
                        attestation: Some(opts.attestation.clone()),
                        extensions: Some(Extensions {
                            credential_protection_policy: opts.cred_protect.clone(),
                            enforce_credential_protection_policy: opts
                                .cred_protect
                                .as_ref()
                                .map(|_| true),
                            min_pin_length: Some(true),
                            cred_props: Some(true),
                        }),
                    },
                    iat: opts.now,
                    exp: opts.now + opts.lifetime_secs,
                    nbf: None,
                };
                let plain = zeroize::Zeroizing::new(
                    serde_json::to_vec(&req).map_err(|_| IdpError::Options("json"))?,
                );
                let jwe = seal(&plain, tkey, tkid, cty::CRED_REQUEST)?;
                enrollments.push(EnrollmentRecord {
                    enrollment_id: enrollment_id.clone(),
                    request_digest: request_digest(&jwe),
                    response_kid: key.kid.clone(),
                    rp_id,
                    origin,
                    challenge: b64url_encode(&challenge),
                    user_handle: b64url_encode(&user_handle),
                    attestation: opts.attestation.clone(),
                    cred_protect,
                });
                cred_jwes.push(jwe);
            }
            let pin_key = &response_key;
            let pin_req = PinRequestWire {
                v: 1,
                user_id: user_id.clone(),
                authenticator_enrollment_ids: enrollment_ids.clone(),
                pin_policy: PinPolicy {
                    length: 6,
                    force_change_pin: opts.force_change_pin,
                    min_pin_length: opts.pin_min_length,
                },
                response_key: pin_key.public_jwk(KeyUse::Enc),
                iat: opts.now,
                exp: opts.now + opts.lifetime_secs,
                nbf: None,
            };
            let plain = zeroize::Zeroizing::new(
                serde_json::to_vec(&pin_req).map_err(|_| IdpError::Options("json"))?,
            );
            let pin_jwe = seal(&plain, tkey, tkid, cty::PIN_REQUEST)?;
            let record = ShipmentRecord {
                v: 1,
                shipment_id: shipment_id.clone(),
                user_id: user_id.clone(),
                pin_request_digest: request_digest(&pin_jwe),
                pin_response_kid: pin_key.kid.clone(),
                force_change_pin: opts.force_change_pin,
                min_pin_length: opts.pin_min_length,
                enrollments,
            };
            let text = serde_json::to_vec_pretty(&record).map_err(|_| IdpError::Options("json"))?;
            write_atomic(
                &self.state_dir.join("shipments"),
                &format!("{shipment_id}.json"),
                &text,
                0o600,
            )?;
            shipments.push(Shipment {
                shipment_id,
                shipment_items: vec![ShipmentItem {
                    product_id: opts.product_id,
                    inventory_product_id: opts.inventory_product_id,
                    product_quantity: 1,
                    customization_id: opts.customization_id.clone(),
                    product_customizations: vec![ProductCustomization {
                        fido_pin_request: pin_jwe,
                        fido_credential_requests: cred_jwes,
                    }],
                }],
            });
        }
        Ok(shipments)
    }

    fn load_record(&self, shipment_id: &str) -> Result<ShipmentRecord, IdpError> {
        // Shipment ids come from a result file: refuse anything path-like.
        if shipment_id.is_empty() || !shipment_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(IdpError::BadRecord {
                path: PathBuf::from(shipment_id),
            });
        }
        let path = self.record_path(shipment_id);
        let bytes = fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes).map_err(|_| IdpError::BadRecord { path })
    }

    fn load_key(&self, kid: &str) -> Result<NamedKey, IdpError> {
        let path = self.keys_dir().join(format!("{kid}.jwk"));
        let text = read_private(&path)?;
        let (key, _) = NamedKey::from_private_jwk(&text).map_err(|reason| {
            IdpError::Keys(crate::jose::KeyError::BadKeyFile {
                path: path.clone(),
                reason,
            })
        })?;
        Ok(key)
    }

    /// Verifies every delivered shipment as an activate endpoint must; one
    /// report per shipment item's key. Never fails as a whole: problems are
    /// in each report's `failures`.
    pub fn activate(
        &self,
        sign_jwks: &Jwks,
        roots: &TrustRoots,
        results: &[ShipmentResult],
        now: i64,
    ) -> Vec<ActivationReport> {
        let mut reports: Vec<ActivationReport> = results
            .iter()
            .map(|r| self.activate_one(sign_jwks, roots, r, now))
            .collect();
        // One physical key cannot fulfil two shipments.
        let serials: Vec<Option<String>> =
            reports.iter().map(|r| r.serial_number.clone()).collect();
        for (i, r) in reports.iter_mut().enumerate() {
            let dup = serials[i]
                .as_ref()
                .is_some_and(|s| serials.iter().filter(|t| t.as_ref() == Some(s)).count() > 1);
            if dup {
                r.fail(
                    "idp.duplicate_serial",
                    "the same key serial fulfils several shipments",
                );
            }
        }
        reports
    }

    fn activate_one(
        &self,
        sign_jwks: &Jwks,
        roots: &TrustRoots,
        result: &ShipmentResult,
        now: i64,
    ) -> ActivationReport {
        let mut rep = ActivationReport {
            shipment_id: result.shipment_id.clone(),
            user_id: String::new(),
            serial_number: None,
            firmware_version: None,
            pin_delivered: false,
            pin: None,
            credentials: Vec::new(),
            failures: Vec::new(),
        };
        let record = match self.load_record(&result.shipment_id) {
            Ok(r) => r,
            Err(_) => {
                rep.fail("idp.unknown_shipment", "no such shipment in the IdP state");
                return rep;
            }
        };
        rep.user_id = record.user_id.clone();
        // YubiEnterprise: responses are available in state 103 (and 104, delivered).
        if !matches!(result.shipment_state.shipment_state_id, 103 | 104) {
            rep.fail("idp.shipment_state", "shipment state is not 103/104");
        }
        let data = match result.shipment_items.as_slice() {
            [item] => match item.product_data.as_slice() {
                [d] => d,
                _ => {
                    rep.fail(
                        "idp.result_shape",
                        "expected exactly one product_data entry",
                    );
                    return rep;
                }
            },
            _ => {
                rep.fail("idp.result_shape", "expected exactly one shipment item");
                return rep;
            }
        };
        rep.serial_number = Some(data.serial_number.clone());
        rep.firmware_version = Some(data.firmware_version.clone());
        self.check_pin(sign_jwks, &record, data, &mut rep);
        let mut seen = Vec::new();
        for jwe_text in &data.fido_credential_responses {
            let c = self.check_credential(sign_jwks, roots, &record, data, jwe_text, now);
            if let Some(e) = &c.enrollment_id {
                if seen.contains(e) {
                    rep.fail("idp.duplicate_response", "two responses for one enrollment");
                }
                seen.push(e.clone());
            }
            rep.credentials.push(c);
        }
        for e in &record.enrollments {
            if !seen.contains(&e.enrollment_id) {
                rep.fail(
                    "idp.missing_response",
                    "an enrollment has no credential response",
                );
            }
        }
        rep
    }

    fn check_pin(
        &self,
        sign_jwks: &Jwks,
        record: &ShipmentRecord,
        data: &ProductData,
        rep: &mut ActivationReport,
    ) {
        let key = match self.load_key(&record.pin_response_kid) {
            Ok(k) => k,
            Err(_) => return rep.fail("idp.key_missing", "PIN response key is missing"),
        };
        let pin = match response::open_pin_response(
            &data.fido_pin_response,
            &key.kid,
            key.secret(),
            sign_jwks,
        ) {
            Ok(p) => p,
            Err(e) => return rep.fail(e.code(), &format!("PIN response: {e}")),
        };
        if pin.user_id != record.user_id {
            return rep.fail("idp.user_mismatch", "PIN response is for another user");
        }
        if pin.request_digest != record.pin_request_digest {
            return rep.fail("idp.request_digest", "PIN response answers another request");
        }
        if pin.serial_number != data.serial_number || pin.firmware_version != data.firmware_version
        {
            return rep.fail("idp.device_mismatch", "PIN response names another key");
        }
        let p = pin.pin.expose();
        if p.len() != 6 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return rep.fail("idp.pin_format", "PIN is not 6 digits");
        }
        if pin.force_change_pin != record.force_change_pin
            || pin.min_pin_length != record.min_pin_length
        {
            return rep.fail("idp.pin_policy", "PIN policy differs from the request");
        }
        rep.pin_delivered = true;
        rep.pin = Some(pin.pin);
    }

    fn check_credential(
        &self,
        sign_jwks: &Jwks,
        roots: &TrustRoots,
        record: &ShipmentRecord,
        data: &ProductData,
        jwe_text: &str,
        now: i64,
    ) -> CredentialReport {
        let mut c = CredentialReport::default();
        let fail = |mut c: CredentialReport, code: &str, msg: &str| {
            c.failure = Some(format!("{code}: {msg}"));
            c
        };
        let kid = match jwe::peek_header(jwe_text) {
            Ok(h) => h.kid.unwrap_or_default(),
            Err(e) => return fail(c, e.code(), "credential response is not a JWE"),
        };
        // One response key per shipment (older records: one per enrollment).
        if kid != record.pin_response_kid
            && !record.enrollments.iter().any(|e| e.response_kid == kid)
        {
            return fail(
                c,
                "idp.kid_unknown",
                "response encrypted to a key of no enrollment",
            );
        }
        let key = match self.load_key(&kid) {
            Ok(k) => k,
            Err(_) => return fail(c, "idp.key_missing", "response key is missing"),
        };
        let r = match response::open_credential_response(jwe_text, &kid, key.secret(), sign_jwks) {
            Ok(r) => r,
            Err(e) => return fail(c, e.code(), &e.to_string()),
        };
        let Some(enr) = record
            .enrollments
            .iter()
            .find(|e| e.enrollment_id == r.authenticator_enrollment_id && e.response_kid == kid)
        else {
            return fail(
                c,
                "idp.enrollment_mismatch",
                "response names no enrollment of this shipment under its key",
            );
        };
        c.enrollment_id = Some(enr.enrollment_id.clone());
        if r.request_digest != enr.request_digest {
            return fail(c, "idp.request_digest", "response answers another request");
        }
        if r.serial_number != data.serial_number || r.firmware_version != data.firmware_version {
            return fail(c, "idp.device_mismatch", "response names another key");
        }
        let cred = &r.credential;
        c.credential_id = Some(cred.id.clone());
        c.aaguid = Some(r.aaguid.clone());
        if cred.kind != "public-key" || cred.id != cred.raw_id {
            return fail(
                c,
                "idp.credential_shape",
                "credential type or id/rawId mismatch",
            );
        }
        let (Ok(cdj), Ok(att), Ok(challenge), Ok(cred_id)) = (
            b64url_decode(&cred.response.client_data_json),
            b64url_decode(&cred.response.attestation_object),
            b64url_decode(&enr.challenge),
            b64url_decode(&cred.id),
        ) else {
            return fail(c, "idp.bad_base64", "credential fields are not base64url");
        };
        if let Err(e) = webauthn::check_client_data(&cdj, &challenge, &enr.origin) {
            return fail(c, e.code(), &e.to_string());
        }
        let cdh = webauthn::client_data_hash(&cdj);
        let expected = Expected {
            rp_id: &enr.rp_id,
            client_data_hash: &cdh,
            require_uv: true,
            cred_protect: enr.cred_protect,
            allow_none: enr.attestation == "none",
            now,
        };
        let obj = match AttestationObject::parse(&att) {
            Ok(o) => o,
            Err(e) => return fail(c, e.code(), &e.to_string()),
        };
        if enr.attestation != "none" && obj.fmt == "none" {
            return fail(
                c,
                "idp.attestation_stripped",
                "attestation was asked for but is none",
            );
        }
        let v = match webauthn::verify_attestation_parts(&obj, &expected, roots) {
            Ok(v) => v,
            Err(e) => return fail(c, e.code(), &e.to_string()),
        };
        if v.credential_id != cred_id {
            return fail(
                c,
                "idp.credential_id",
                "credential id differs from authenticator data",
            );
        }
        if webauthn::format_aaguid(&v.aaguid) != r.aaguid {
            return fail(c, "idp.aaguid", "aaguid differs from authenticator data");
        }
        c.fmt = Some(v.fmt.clone());
        c.trust = Some(match v.trust {
            webauthn::Trust::Chained { root_subject } => format!("chained to {root_subject}"),
            webauthn::Trust::NoneFormat => "none (not provable)".into(),
        });
        c.verified = true;
        c
    }
}

/// One credential of an activation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CredentialReport {
    pub enrollment_id: Option<String>,
    pub credential_id: Option<String>,
    pub aaguid: Option<String>,
    pub fmt: Option<String>,
    pub trust: Option<String>,
    pub verified: bool,
    /// `code: message` of the first failed check.
    pub failure: Option<String>,
}

/// What activation found for one shipment.
#[derive(Debug)]
pub struct ActivationReport {
    pub shipment_id: String,
    pub user_id: String,
    pub serial_number: Option<String>,
    pub firmware_version: Option<String>,
    pub pin_delivered: bool,
    /// The delivered PIN (only shown with `--show-pin`).
    pub pin: Option<SecretString>,
    pub credentials: Vec<CredentialReport>,
    /// Shipment-level failures (`code: message`).
    pub failures: Vec<String>,
}

impl ActivationReport {
    fn fail(&mut self, code: &str, msg: &str) {
        self.failures.push(format!("{code}: {msg}"));
    }

    /// Everything verified: PIN delivered, every credential verified.
    pub fn verified(&self) -> bool {
        self.failures.is_empty()
            && self.pin_delivered
            && !self.credentials.is_empty()
            && self.credentials.iter().all(|c| c.verified)
    }

    /// JSON for `--json`; the PIN only when `show_pin`.
    pub fn to_json(&self, show_pin: bool) -> serde_json::Value {
        let mut v = serde_json::json!({
            "shipment_id": self.shipment_id,
            "user_id": self.user_id,
            "serial_number": self.serial_number,
            "firmware_version": self.firmware_version,
            "verified": self.verified(),
            "pin_delivered": self.pin_delivered,
            "credentials": self.credentials,
            "failures": self.failures,
        });
        if show_pin {
            if let Some(p) = &self.pin {
                v["pin"] = serde_json::Value::String(p.expose().clone());
            }
        }
        v
    }
}

/// Reads result files (one JSON object or JSON lines each) or directories of
/// `*.json` files (an outbox).
pub fn read_results(paths: &[PathBuf]) -> Result<Vec<ShipmentResult>, IdpError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = fs::read_dir(p)
                .map_err(io(p))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "json"))
                .collect();
            v.sort();
            files.extend(v);
        } else {
            files.push(p.clone());
        }
    }
    let mut out = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).map_err(io(&f))?;
        let items = wire::parse_stream::<ShipmentResult>(&text)
            .map_err(|_| IdpError::BadRecord { path: f.clone() })?;
        out.extend(items);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::enrollment_rp_id;

    #[test]
    fn later_enrollments_get_sibling_rps() {
        assert_eq!(enrollment_rp_id("myorg.okta.com", 0), "myorg.okta.com");
        assert_eq!(enrollment_rp_id("myorg.okta.com", 1), "myorg-2.okta.com");
        assert_eq!(enrollment_rp_id("myorg.okta.com", 2), "myorg-3.okta.com");
        assert_eq!(enrollment_rp_id("localhost", 1), "localhost-2");
    }
}

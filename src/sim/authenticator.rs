//! CTAP 2.1 command logic of the simulated key: a command byte and CBOR in,
//! a status and CBOR out. No I/O and no clock of its own: the HID layer passes
//! the request time and whether the user has touched the key, and re-runs a
//! command that answered [`Outcome::NeedsTouch`] once the touch came (every
//! check before the touch point is side-effect free, so a re-run is exact).

use super::attestation::AttestationIdentity;
use super::cred_key::CredAlg;
use super::store::{CredentialMeta, CredentialStore, StoreError, StoredCredential};
use crate::cbor::{self, Value};
use crate::ctap2::StatusCode as S;
use crate::pin::{self, CoseKey, KeyAgreement, PinProtocol};
use crate::profile::FirmwareProfile;
use crate::secret::{Secret, SecretBytes};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::time::Duration;

#[path = "extensions.rs"]
mod extensions;
#[path = "large_blobs.rs"]
mod large_blobs;

/// CTAP command bytes (CTAP 2.1 §6; research §2.0).
pub mod cmd {
    pub const MAKE_CREDENTIAL: u8 = 0x01;
    pub const GET_ASSERTION: u8 = 0x02;
    pub const GET_INFO: u8 = 0x04;
    pub const CLIENT_PIN: u8 = 0x06;
    pub const RESET: u8 = 0x07;
    pub const GET_NEXT_ASSERTION: u8 = 0x08;
    pub const CRED_MGMT: u8 = 0x0a;
    pub const SELECTION: u8 = 0x0b;
    pub const LARGE_BLOBS: u8 = 0x0c;
    pub const CONFIG: u8 = 0x0d;
    pub const CRED_MGMT_PREVIEW: u8 = 0x41;
}

/// Token permissions (CTAP 2.1 §6.5.5.7).
pub mod perm {
    pub const MC: u8 = 0x01;
    pub const GA: u8 = 0x02;
    pub const CM: u8 = 0x04;
    pub const BE: u8 = 0x08;
    pub const LBW: u8 = 0x10;
    pub const ACFG: u8 = 0x20;
}

/// Retries after a reset or a correct PIN (research §2.2).
pub const PIN_RETRIES: u8 = 8;
/// Wrong PINs in one power cycle before PIN_AUTH_BLOCKED.
pub const MAX_CONSECUTIVE_FAILURES: u8 = 3;

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Status byte ‖ CBOR, ready to send.
    Reply(Vec<u8>),
    /// User presence is needed; run the command again with `touched = true`.
    NeedsTouch,
}

/// How the key was made.
#[derive(Debug, Clone)]
pub struct AuthenticatorConfig {
    pub profile: FirmwareProfile,
    pub product_id: u32,
    pub aaguid: [u8; 16],
    pub seed: u64,
    pub ca_seed: u64,
}

/// Volatile PIN token state (CTAP 2.1 §6.5.2.1). On profiles without the
/// `pinUvAuthToken` option (5.2, 5.4: FIDO_2_0 + FIDO_2_1_PRE) this is a
/// CTAP 2.0 pinToken: no permissions of its own (it may do everything), no
/// RP ID, valid until the next power cycle or a new token (CTAP 2.0 §5.5.4).
struct Token {
    key: Secret<[u8; 32]>,
    permissions: u8,
    rp_id: Option<String>,
    /// beginUsingPinUvAuthToken was called (§6.5.5.7 step 6): the clear…
    /// functions of §6.5.2.1 act only on a token in use.
    in_use: bool,
}

struct PinState {
    hash: Secret<[u8; 16]>,
    code_points: usize,
}

/// Enumeration state of getNextAssertion / credential management GetNext.
enum Pending {
    None,
    Assertions {
        rp_id_hash: [u8; 32],
        cdh: Vec<u8>,
        flags: u8,
        ids: Vec<Vec<u8>>,
        ext: extensions::GaExtensions,
    },
    Rps(Vec<(String, Option<String>)>),
    Creds(Vec<Vec<u8>>),
}

/// Test and rig read-back: never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinStatus {
    pub pin_set: bool,
    pub retries: u8,
    pub consecutive_failures: u8,
    pub force_pin_change: bool,
    pub min_pin_length: u8,
}

/// Faults the authenticator itself acts on (set by the HID layer per command).
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthFaults {
    pub store_full: bool,
    pub flash_write_failure: bool,
    /// Regenerate the key-agreement key after every PIN check (FaultPlan::forget_key_agreement).
    pub forget_key_agreement: bool,
}

/// The simulated authenticator's state machine.
pub struct Authenticator {
    cfg: AuthenticatorConfig,
    rng: StdRng,
    attestation: AttestationIdentity,
    wrap_key: Secret<[u8; 32]>,
    // Persistent (survives power cycles).
    pin: Option<PinState>,
    retries: u8,
    min_pin_length: u8,
    min_pin_rp_ids: Vec<String>,
    force_pin_change: bool,
    pin_complexity: bool,
    always_uv: bool,
    ep_enabled: bool,
    store: CredentialStore,
    large_blobs: large_blobs::LargeBlobs,
    sign_count: u32,
    // Volatile.
    consecutive_failures: u8,
    key_agreement: KeyAgreement,
    token: Option<Token>,
    powered_at: Duration,
    pending: Pending,
    pub faults: AuthFaults,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("profile", &self.cfg.profile.name)
            .field("pin", &self.pin_status())
            .field("credentials", &self.store.len())
            .finish_non_exhaustive()
    }
}

type R<T> = Result<T, S>;

fn reply(status: S, body: Option<Value>) -> Vec<u8> {
    let mut out = vec![status.0];
    if let Some(b) = body {
        cbor::encode_into(&b, &mut out);
    }
    out
}

fn ok(body: Value) -> R<Outcome> {
    Ok(Outcome::Reply(reply(S::SUCCESS, Some(body))))
}

fn ok_empty() -> R<Outcome> {
    Ok(Outcome::Reply(vec![0]))
}

/// A CBOR field of the expected type, or CBOR_UNEXPECTED_TYPE; absent is `None`.
fn typed<'a, T>(v: Option<&'a Value>, get: impl FnOnce(&'a Value) -> Option<T>) -> R<Option<T>> {
    v.map(|v| get(v).ok_or(S::CBOR_UNEXPECTED_TYPE)).transpose()
}
fn bytes(v: Option<&Value>) -> R<Option<&[u8]>> {
    typed(v, Value::as_bytes)
}
fn text(v: Option<&Value>) -> R<Option<&str>> {
    typed(v, Value::as_text)
}
fn uint(v: Option<&Value>) -> R<Option<u64>> {
    typed(v, Value::as_u64)
}
fn boolean(v: Option<&Value>) -> R<Option<bool>> {
    typed(v, Value::as_bool)
}
fn map(v: Option<&Value>) -> R<Option<&Value>> {
    match v {
        None => Ok(None),
        Some(v) if v.as_map().is_some() => Ok(Some(v)),
        Some(_) => Err(S::CBOR_UNEXPECTED_TYPE),
    }
}
fn array(v: Option<&Value>) -> R<Option<&[Value]>> {
    match v {
        None => Ok(None),
        Some(v) => v.as_array().map(Some).ok_or(S::CBOR_UNEXPECTED_TYPE),
    }
}

fn descriptor(id: &[u8]) -> Value {
    Value::map([
        (Value::from("id"), Value::from(id.to_vec())),
        (Value::from("type"), Value::from("public-key")),
    ])
}

/// A credential recovered from its id (CTAP 2.1 §6.1.2: non-resident
/// credentials are wrapped into their id; we wrap resident ones too, and
/// U2F key handles are the same ids, so they work across CTAP1/CTAP2).
pub(super) struct Unwrapped {
    pub(super) key: Secret<[u8; 32]>,
    pub(super) cred_protect: u8,
    pub(super) alg: CredAlg,
    pub(super) hmac_secret: bool,
}

impl Authenticator {
    /// A blank key for `cfg`, powered up at `now`.
    pub fn new(cfg: AuthenticatorConfig, now: Duration) -> Result<Self, super::SimError> {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let attestation = AttestationIdentity::new(cfg.ca_seed, &cfg.aaguid)
            .map_err(|e| super::SimError::Attestation(e.to_string()))?;
        let mut wrap = [0u8; 32];
        rng.fill_bytes(&mut wrap);
        let key_agreement = new_key_agreement(&mut rng);
        let min_pin_length = cfg.profile.min_pin_length_for(cfg.product_id);
        let pin_complexity = cfg.profile.pin_complexity_for(cfg.product_id);
        let store = CredentialStore::new(cfg.profile.resident_capacity);
        Ok(Self {
            cfg,
            rng,
            attestation,
            wrap_key: Secret::new(wrap),
            pin: None,
            retries: PIN_RETRIES,
            min_pin_length,
            min_pin_rp_ids: Vec::new(),
            force_pin_change: false,
            pin_complexity,
            always_uv: false,
            ep_enabled: false,
            store,
            large_blobs: large_blobs::LargeBlobs::new(),
            sign_count: 0,
            consecutive_failures: 0,
            key_agreement,
            token: None,
            powered_at: now,
            pending: Pending::None,
            faults: AuthFaults::default(),
        })
    }

    pub fn profile(&self) -> &FirmwareProfile {
        &self.cfg.profile
    }
    pub fn aaguid(&self) -> [u8; 16] {
        self.cfg.aaguid
    }
    pub fn pin_complexity(&self) -> bool {
        self.pin_complexity
    }

    /// Power cycle: volatile state is lost (CTAP 2.1 §6.5.2.1, §6.5.5.7).
    pub fn power_up(&mut self, now: Duration) {
        self.consecutive_failures = 0;
        self.token = None;
        self.pending = Pending::None;
        self.large_blobs.power_up();
        self.key_agreement = new_key_agreement(&mut self.rng);
        self.powered_at = now;
    }

    // ---- hooks for CTAP1/U2F (super::u2f) ----

    /// A new non-resident ES256 credential for U2F REGISTER, wrapped like a
    /// CTAP2 one with the application parameter as its rpIdHash:
    /// (key handle, private key).
    pub(super) fn u2f_new_credential(
        &mut self,
        app_param: &[u8; 32],
    ) -> (Vec<u8>, Secret<[u8; 32]>) {
        let key = CredAlg::Es256.generate(&mut self.rng);
        let handle = self.wrap(&key, 1, CredAlg::Es256, app_param);
        (handle, key)
    }

    /// The next value of the signature counter (one counter for CTAP1 and CTAP2).
    pub(super) fn next_sign_count(&mut self) -> u32 {
        self.sign_count = self.sign_count.wrapping_add(1);
        self.sign_count
    }

    /// The attestation identity (U2F REGISTER signs with it too).
    pub(super) fn attestation(&self) -> &AttestationIdentity {
        &self.attestation
    }

    /// alwaysUv is on (U2F is off then: CTAP 2.1 §7.2).
    pub(super) fn always_uv(&self) -> bool {
        self.always_uv
    }

    pub fn pin_status(&self) -> PinStatus {
        PinStatus {
            pin_set: self.pin.is_some(),
            retries: self.retries,
            consecutive_failures: self.consecutive_failures,
            force_pin_change: self.force_pin_change,
            min_pin_length: self.min_pin_length,
        }
    }

    pub fn credentials(&self) -> Vec<CredentialMeta> {
        self.store.metadata()
    }

    /// Whether the command needs a touch timeout answered as ACTION_TIMEOUT
    /// (reset, YubiKey) rather than USER_ACTION_TIMEOUT.
    pub fn timeout_status(command: u8) -> S {
        if command == cmd::RESET {
            S::ACTION_TIMEOUT
        } else {
            S::USER_ACTION_TIMEOUT
        }
    }

    /// Runs one CTAP command: `request` = command byte ‖ CBOR parameters.
    pub fn process(&mut self, request: &[u8], now: Duration, touched: bool) -> Outcome {
        let Some((&command, body)) = request.split_first() else {
            return Outcome::Reply(vec![S::INVALID_LENGTH.0]);
        };
        if request.len() > self.cfg.profile.max_msg_size {
            return Outcome::Reply(vec![S::REQUEST_TOO_LARGE.0]);
        }
        let params = if body.is_empty() {
            None
        } else {
            match cbor::decode(body) {
                Ok(v) if v.as_map().is_some() => Some(v),
                Ok(_) => return Outcome::Reply(vec![S::CBOR_UNEXPECTED_TYPE.0]),
                Err(_) => return Outcome::Reply(vec![S::INVALID_CBOR.0]),
            }
        };
        let empty = Value::Map(Vec::new());
        let p = params.as_ref().unwrap_or(&empty);
        let keeps_pending = matches!(
            (command, p.get(1).and_then(Value::as_u64)),
            (cmd::GET_NEXT_ASSERTION, _)
                | (cmd::CRED_MGMT | cmd::CRED_MGMT_PREVIEW, Some(3) | Some(5))
        );
        if !keeps_pending && command != cmd::GET_INFO {
            self.pending = Pending::None;
        }
        let result = match command {
            cmd::GET_INFO => ok(self.get_info()),
            cmd::CLIENT_PIN => self.client_pin(p),
            cmd::MAKE_CREDENTIAL => self.make_credential(p, touched),
            cmd::GET_ASSERTION => self.get_assertion(p, touched),
            cmd::GET_NEXT_ASSERTION => self.get_next_assertion(),
            cmd::RESET => self.reset(now, touched),
            cmd::SELECTION if self.cfg.profile.has_version("FIDO_2_1") => {
                if touched {
                    ok_empty()
                } else {
                    Ok(Outcome::NeedsTouch)
                }
            }
            cmd::CONFIG if self.cfg.profile.has_authenticator_config() => self.config(p, body),
            cmd::LARGE_BLOBS if self.cfg.profile.options.get("largeBlobs") == Some(&true) => {
                self.large_blobs(p)
            }
            c if self.is_cred_mgmt_command(c) => self.cred_mgmt(p, c),
            _ => Err(S::INVALID_COMMAND),
        };
        match result {
            Ok(o) => o,
            Err(status) => Outcome::Reply(vec![status.0]),
        }
    }

    fn get_info(&self) -> Value {
        let prof = &self.cfg.profile;
        let mut options: Vec<(Value, Value)> = prof
            .options
            .iter()
            .map(|(k, v)| {
                let v = match k.as_str() {
                    "clientPin" => self.pin.is_some(),
                    "alwaysUv" => self.always_uv,
                    "makeCredUvNotRqd" => self.make_cred_uv_not_rqd(),
                    "ep" => self.ep_enabled,
                    _ => *v,
                };
                (Value::from(k.as_str()), Value::from(v))
            })
            .collect();
        options.sort_by_key(|a| cbor::encode(&a.0));
        let mut m = vec![
            (
                Value::from(1),
                Value::Array(
                    prof.versions
                        .iter()
                        .map(|v| Value::from(v.as_str()))
                        .collect(),
                ),
            ),
            (
                Value::from(2),
                Value::Array(
                    prof.extensions
                        .iter()
                        .map(|v| Value::from(v.as_str()))
                        .collect(),
                ),
            ),
            (Value::from(3), Value::from(self.cfg.aaguid.to_vec())),
            (Value::from(4), Value::Map(options)),
            (Value::from(5), Value::from(prof.max_msg_size as u64)),
            (
                Value::from(6),
                Value::Array(
                    prof.pin_uv_auth_protocols
                        .iter()
                        .map(|&p| Value::from(p))
                        .collect(),
                ),
            ),
            (Value::from(7), Value::from(prof.max_cred_count_in_list)),
            (Value::from(8), Value::from(prof.max_cred_id_length)),
            (
                Value::from(9),
                Value::Array(
                    if crate::profile::product(self.cfg.product_id).is_some_and(|p| p.nfc) {
                        vec![Value::from("nfc"), Value::from("usb")]
                    } else {
                        vec![Value::from("usb")]
                    },
                ),
            ),
            (
                Value::from(10),
                Value::Array(
                    prof.algorithms
                        .iter()
                        .map(|&a| {
                            Value::map([
                                (Value::from("alg"), Value::from(a)),
                                (Value::from("type"), Value::from("public-key")),
                            ])
                        })
                        .collect(),
                ),
            ),
        ];
        let fw = prof.firmware;
        let is_21 = prof.has_version("FIDO_2_1_PRE") || prof.has_version("FIDO_2_1");
        if is_21 {
            // forcePINChange, minPINLength, firmwareVersion: present on 5.4.3 too (research §2.1).
            m.push((Value::from(0x0c), Value::from(self.force_pin_change)));
            m.push((Value::from(0x0d), Value::from(self.min_pin_length)));
            m.push((
                Value::from(0x0e),
                Value::from((fw.major as u64) << 16 | (fw.minor as u64) << 8 | fw.patch as u64),
            ));
        }
        if let Some(n) = prof.max_serialized_large_blob_array {
            m.push((Value::from(0x0b), Value::from(n)));
        }
        if let Some(n) = prof.max_cred_blob_length {
            m.push((Value::from(0x0f), Value::from(n)));
        }
        if prof.has_set_min_pin_length() {
            m.push((
                Value::from(0x10),
                Value::from(prof.max_rpids_for_set_min_pin_length),
            ));
        }
        if prof.has_version("FIDO_2_1") {
            m.push((Value::from(0x14), Value::from(self.remaining() as u64)));
        }
        Value::Map(m)
    }

    fn remaining(&self) -> usize {
        if self.faults.store_full {
            0
        } else {
            self.store.remaining()
        }
    }

    fn protocol(&self, v: Option<&Value>) -> R<PinProtocol> {
        let n = uint(v)?.ok_or(S::MISSING_PARAMETER)?;
        if !self.cfg.profile.pin_uv_auth_protocols.contains(&(n as u8)) || n > 2 {
            return Err(S::INVALID_PARAMETER);
        }
        PinProtocol::from_number(n).ok_or(S::INVALID_PARAMETER)
    }

    fn mac_ok(&self, protocol: PinProtocol, key: &[u8], msg: &[u8], param: &[u8]) -> bool {
        if protocol == PinProtocol::Two
            && param.len() == 16
            && self.cfg.profile.quirks.accepts_truncated_v2_pin_auth
        {
            let full = pin::authenticate(protocol, key, msg);
            return full[..16] == *param;
        }
        pin::verify(protocol, key, msg, param)
    }

    /// makeCredential / getAssertion steps on pinUvAuthParam (CTAP 2.1 §6.1.2
    /// steps 5–11, §6.2.2): `Some(true)` when a valid token verified the user,
    /// `Some(false)` when no parameter was sent and none is required, `None`
    /// when an empty parameter (the "is a PIN set?" probe) waits for a touch.
    #[allow(clippy::too_many_arguments)]
    fn token_uv(
        &mut self,
        param: Option<&Value>,
        protocol: Option<&Value>,
        client_data_hash: &[u8],
        permission: u8,
        rp_id: &str,
        touched: bool,
        token_required: bool,
    ) -> Result<Option<bool>, S> {
        match bytes(param)? {
            Some([]) if !touched => Ok(None),
            Some([]) => Err(if self.pin.is_some() {
                S::PIN_INVALID
            } else {
                S::PIN_NOT_SET
            }),
            Some(param) => {
                let protocol = self.protocol(protocol)?;
                if self.pin.is_none() {
                    return Err(S::PIN_NOT_SET);
                }
                self.check_token(protocol, client_data_hash, param, permission, Some(rp_id))?;
                Ok(Some(true))
            }
            None if token_required => Err(S::PUAT_REQUIRED),
            None => Ok(Some(false)),
        }
    }

    /// Verifies `param` over `msg` with the current token and its permission.
    fn check_token(
        &mut self,
        protocol: PinProtocol,
        msg: &[u8],
        param: &[u8],
        permission: u8,
        rp_id: Option<&str>,
    ) -> R<()> {
        let Some(token) = &self.token else {
            return Err(S::PIN_AUTH_INVALID);
        };
        if !self.mac_ok(protocol, token.key.expose(), msg, param) {
            return Err(S::PIN_AUTH_INVALID);
        }
        if token.permissions & permission == 0 {
            return Err(S::PIN_AUTH_INVALID);
        }
        if !self.cfg.profile.has_pin_uv_auth_token() {
            // A CTAP 2.0 pinToken is bound to no RP (CTAP 2.0 §5.5.4).
            return Ok(());
        }
        match (&token.rp_id, rp_id) {
            (Some(bound), Some(rp)) if bound != rp => return Err(S::PIN_AUTH_INVALID),
            _ => {}
        }
        // §6.1.2 step 11.1.3 / §6.2.2 step 6: a token without a permissions
        // RP ID is bound to the first RP it is used for.
        if let (None, Some(rp)) = (&token.rp_id, rp_id) {
            if let Some(t) = self.token.as_mut() {
                t.rp_id = Some(rp.to_string());
            }
        }
        Ok(())
    }

    /// CTAP 2.1 §6.1.2 step 14 d) and §6.2.2 step 9: after a user-present
    /// makeCredential or getAssertion, clearUserPresentFlag(),
    /// clearUserVerifiedFlag() and clearPinUvAuthTokenPermissionsExceptLbw()
    /// on the token in use, whether or not this request used it. PIN tokens
    /// never carry the UP flag here, so what remains is the permissions:
    /// only lbw survives, and the platform needs a fresh token for the next
    /// makeCredential or getAssertion (SPEC §7: one token per credential).
    /// A CTAP 2.0 pinToken (profiles without `pinUvAuthToken`) is left
    /// alone: it stays valid until power-off (CTAP 2.0 §5.5.4).
    fn clear_token_after_user_presence(&mut self) {
        if !self.cfg.profile.has_pin_uv_auth_token() {
            return;
        }
        if let Some(t) = self.token.as_mut().filter(|t| t.in_use) {
            t.permissions &= perm::LBW;
        }
    }

    /// getInfo's `makeCredUvNotRqd` as it stands: the profile's value, and
    /// false while alwaysUv is on (CTAP 2.1 §7.2; OpenSK does the same).
    fn make_cred_uv_not_rqd(&self) -> bool {
        self.cfg.profile.options.get("makeCredUvNotRqd") == Some(&true) && !self.always_uv
    }

    /// Whether `command` is a credential-management command of this profile:
    /// 0x0A with `credMgmt`, the preview 0x41 with `credentialMgmtPreview`.
    /// 5.7 advertises both and real keys answer both (libfido2 picks 0x41).
    fn is_cred_mgmt_command(&self, command: u8) -> bool {
        let opt = |n: &str| self.cfg.profile.options.get(n) == Some(&true);
        (command == cmd::CRED_MGMT && opt("credMgmt"))
            || (command == cmd::CRED_MGMT_PREVIEW && opt("credentialMgmtPreview"))
    }

    /// pubKeyCredParams (CTAP 2.1 §6.1.2 step 3): every element is checked,
    /// not only the one chosen. A missing `type` or `alg` is
    /// MISSING_PARAMETER, a member of the wrong CBOR type (or an element
    /// that is no map) CBOR_UNEXPECTED_TYPE; elements of an unknown type
    /// string are skipped (WebAuthn §5.8.2). The first supported algorithm
    /// in the platform's order wins; none → UNSUPPORTED_ALGORITHM.
    fn choose_algorithm(&self, params: &[Value]) -> R<CredAlg> {
        let mut chosen = None;
        for param in params {
            map(Some(param))?;
            let ty = text(param.get("type"))?.ok_or(S::MISSING_PARAMETER)?;
            let alg = param.get("alg").ok_or(S::MISSING_PARAMETER)?;
            let alg = alg.as_i64().ok_or(S::CBOR_UNEXPECTED_TYPE)?;
            if chosen.is_none() && ty == "public-key" && self.cfg.profile.algorithms.contains(&alg)
            {
                chosen = CredAlg::from_cose(alg);
            }
        }
        chosen.ok_or(S::UNSUPPORTED_ALGORITHM)
    }

    // ---- clientPIN (CTAP 2.1 §6.5.5) ----

    fn client_pin(&mut self, p: &Value) -> R<Outcome> {
        let sub = uint(p.get(2))?.ok_or(S::MISSING_PARAMETER)?;
        match sub {
            0x01 => {
                // Observed on YubiKey: no PIN → PIN_NOT_SET (research §2.2).
                if self.pin.is_none() {
                    return Err(S::PIN_NOT_SET);
                }
                ok(Value::map([
                    (Value::from(3), Value::from(self.retries)),
                    (
                        Value::from(4),
                        Value::from(self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES),
                    ),
                ]))
            }
            0x02 => {
                self.protocol(p.get(1))?;
                ok(Value::map([(
                    Value::from(1),
                    self.key_agreement.public_key().to_cbor(),
                )]))
            }
            0x03 => self.set_pin(p),
            0x04 => self.change_pin(p),
            0x05 => {
                if p.get(9).is_some() || p.get(10).is_some() {
                    return Err(S::INVALID_PARAMETER);
                }
                let all = perm::MC | perm::GA | perm::CM | perm::ACFG;
                let legacy = if self.cfg.profile.has_pin_uv_auth_token() {
                    perm::MC | perm::GA
                } else {
                    all
                };
                self.get_token(p, legacy, None)
            }
            0x09 if self.cfg.profile.has_pin_uv_auth_token() => {
                let permissions = uint(p.get(9))?.ok_or(S::MISSING_PARAMETER)?;
                if permissions == 0 || permissions > 0xff {
                    return Err(S::INVALID_PARAMETER);
                }
                let permissions = permissions as u8;
                let mut supported = perm::MC | perm::GA;
                if self.cfg.profile.cred_mgmt_command().is_some() {
                    supported |= perm::CM;
                }
                if self.cfg.profile.has_authenticator_config() {
                    supported |= perm::ACFG;
                }
                if self.cfg.profile.options.get("largeBlobs") == Some(&true) {
                    supported |= perm::LBW;
                }
                if permissions & !supported != 0 {
                    return Err(S::UNAUTHORIZED_PERMISSION);
                }
                // A line that grants cm and acfg only one token at a time (profile
                // `pin_session.combined_token_permissions = false`) refuses the
                // pair before any PIN check, so no retry is spent (§6.5.5.7).
                if !self.cfg.profile.pin_session.combined_token_permissions
                    && (permissions & (perm::CM | perm::ACFG)).count_ones() > 1
                {
                    return Err(S::UNAUTHORIZED_PERMISSION);
                }
                let rp_id = text(p.get(10))?.map(str::to_string);
                if permissions & (perm::MC | perm::GA) != 0 && rp_id.is_none() {
                    return Err(S::MISSING_PARAMETER);
                }
                self.get_token(p, permissions, rp_id)
            }
            _ => Err(S::INVALID_SUBCOMMAND),
        }
    }

    /// ECDH with the platform key of request key 3.
    fn shared(&self, p: &Value, protocol: PinProtocol) -> R<pin::SharedSecret> {
        let peer = map(p.get(3))?.ok_or(S::MISSING_PARAMETER)?;
        let peer = CoseKey::from_cbor(peer).map_err(|_| S::INVALID_PARAMETER)?;
        Ok(self.key_agreement.shared_secret(protocol, &peer))
    }

    fn blocked(&self) -> R<()> {
        if self.retries == 0 {
            return Err(S::PIN_BLOCKED);
        }
        if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES {
            return Err(S::PIN_AUTH_BLOCKED);
        }
        Ok(())
    }

    /// Decrypts and checks pinHashEnc (§6.5.5.5 steps for changePIN/getPinToken).
    fn check_pin_hash(&mut self, shared: &pin::SharedSecret, enc: &[u8]) -> R<()> {
        let expected_len = match shared.protocol() {
            PinProtocol::One => 16,
            PinProtocol::Two => 32,
        };
        if enc.len() != expected_len {
            return Err(S::INVALID_PARAMETER);
        }
        self.retries = self.retries.saturating_sub(1);
        let got = shared.decrypt(enc).map_err(|_| S::INVALID_PARAMETER)?;
        let good = self
            .pin
            .as_ref()
            .is_some_and(|p| constant_eq(p.hash.expose(), got.expose()));
        if !good {
            // A wrong PIN regenerates the key agreement key (CTAP 2.1 §6.5.5.5).
            self.key_agreement = new_key_agreement(&mut self.rng);
            self.consecutive_failures += 1;
            if self.retries == 0 {
                return Err(S::PIN_BLOCKED);
            }
            if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES {
                return Err(S::PIN_AUTH_BLOCKED);
            }
            return Err(S::PIN_INVALID);
        }
        self.retries = PIN_RETRIES;
        self.consecutive_failures = 0;
        if self.faults.forget_key_agreement {
            self.key_agreement = new_key_agreement(&mut self.rng);
        }
        Ok(())
    }

    /// Decrypts newPinEnc and applies the PIN policy; returns (hash, code points).
    fn new_pin(&self, shared: &pin::SharedSecret, enc: &[u8]) -> R<PinState> {
        let expected = match shared.protocol() {
            PinProtocol::One => 64,
            PinProtocol::Two => 80,
        };
        if enc.len() != expected {
            return Err(S::INVALID_PARAMETER);
        }
        let padded = shared.decrypt(enc).map_err(|_| S::INVALID_PARAMETER)?;
        let pin = pin::unpad_pin(padded.expose()).map_err(|_| S::PIN_POLICY_VIOLATION)?;
        let code_points = pin.expose().chars().count();
        if code_points < self.min_pin_length as usize
            || pin.expose().len() < pin::MIN_PIN_BYTES
            || pin.expose().len() > pin::MAX_PIN_BYTES
        {
            return Err(S::PIN_POLICY_VIOLATION);
        }
        if self.pin_complexity && self.cfg.profile.is_trivial_pin(pin.expose()) {
            return Err(S::PIN_POLICY_VIOLATION);
        }
        let h = pin::pin_hash(&pin);
        let mut hash = [0u8; 16];
        hash.copy_from_slice(h.expose());
        Ok(PinState {
            hash: Secret::new(hash),
            code_points,
        })
    }

    fn set_pin(&mut self, p: &Value) -> R<Outcome> {
        let protocol = self.protocol(p.get(1))?;
        let shared = self.shared(p, protocol)?;
        let param = bytes(p.get(4))?.ok_or(S::MISSING_PARAMETER)?;
        let new_enc = bytes(p.get(5))?.ok_or(S::MISSING_PARAMETER)?;
        if self.pin.is_some() {
            return Err(S::NOT_ALLOWED);
        }
        if !shared.verify(new_enc, param) {
            return Err(S::PIN_AUTH_INVALID);
        }
        let state = self.new_pin(&shared, new_enc)?;
        if self.faults.flash_write_failure {
            return Err(S::OTHER);
        }
        self.pin = Some(state);
        self.retries = PIN_RETRIES;
        if self.faults.forget_key_agreement {
            self.key_agreement = new_key_agreement(&mut self.rng);
        }
        ok_empty()
    }

    fn change_pin(&mut self, p: &Value) -> R<Outcome> {
        let protocol = self.protocol(p.get(1))?;
        let shared = self.shared(p, protocol)?;
        let param = bytes(p.get(4))?.ok_or(S::MISSING_PARAMETER)?;
        let new_enc = bytes(p.get(5))?.ok_or(S::MISSING_PARAMETER)?;
        let hash_enc = bytes(p.get(6))?.ok_or(S::MISSING_PARAMETER)?;
        if self.pin.is_none() {
            return Err(S::PIN_NOT_SET);
        }
        self.blocked()?;
        if !shared.verify(&[new_enc, hash_enc].concat(), param) {
            return Err(S::PIN_AUTH_INVALID);
        }
        self.check_pin_hash(&shared, hash_enc)?;
        let state = self.new_pin(&shared, new_enc)?;
        // A forced change must pick a different PIN (CTAP 2.1 §6.5.5.6).
        if self.force_pin_change
            && self
                .pin
                .as_ref()
                .is_some_and(|old| constant_eq(old.hash.expose(), state.hash.expose()))
        {
            return Err(S::PIN_POLICY_VIOLATION);
        }
        if self.faults.flash_write_failure {
            return Err(S::OTHER);
        }
        self.pin = Some(state);
        self.force_pin_change = false;
        self.token = None;
        ok_empty()
    }

    fn get_token(&mut self, p: &Value, permissions: u8, rp_id: Option<String>) -> R<Outcome> {
        let protocol = self.protocol(p.get(1))?;
        let shared = self.shared(p, protocol)?;
        let hash_enc = bytes(p.get(6))?.ok_or(S::MISSING_PARAMETER)?;
        if self.pin.is_none() {
            return Err(S::PIN_NOT_SET);
        }
        self.blocked()?;
        self.check_pin_hash(&shared, hash_enc)?;
        // The PIN was right (retries reset) but must be changed first: real
        // YubiKeys answer PIN_INVALID (CTAP 2.1 §6.5.5.7; python-fido2's
        // device test_force_pin_change; research §2.3).
        if self.force_pin_change {
            return Err(S::PIN_INVALID);
        }
        // A new token invalidates the previous one (CTAP 2.1 §6.5.5.7 step 7).
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        let key = Secret::new(key);
        let enc = match protocol {
            PinProtocol::One => shared.encrypt(key.expose()),
            PinProtocol::Two => {
                let mut iv = [0u8; 16];
                self.rng.fill_bytes(&mut iv);
                shared.encrypt_with_iv(key.expose(), &iv)
            }
        }
        .map_err(|_| S::OTHER)?;
        // §6.5.5.7 step 6: beginUsingPinUvAuthToken(userIsPresent: false).
        self.token = Some(Token {
            key,
            permissions,
            rp_id,
            in_use: true,
        });
        ok(Value::map([(Value::from(2), Value::from(enc))]))
    }

    // ---- makeCredential (CTAP 2.1 §6.1.2) ----

    fn make_credential(&mut self, p: &Value, touched: bool) -> R<Outcome> {
        let cdh = bytes(p.get(1))?.ok_or(S::MISSING_PARAMETER)?.to_vec();
        let rp = map(p.get(2))?.ok_or(S::MISSING_PARAMETER)?;
        let user = map(p.get(3))?.ok_or(S::MISSING_PARAMETER)?;
        let params = array(p.get(4))?.ok_or(S::MISSING_PARAMETER)?;
        let rp_id = text(rp.get("id"))?.ok_or(S::MISSING_PARAMETER)?.to_string();
        let rp_name = text(rp.get("name"))?.map(str::to_string);
        let user_id = bytes(user.get("id"))?.ok_or(S::MISSING_PARAMETER)?.to_vec();
        let user_name = text(user.get("name"))?.map(truncate64);
        let user_display = text(user.get("displayName"))?.map(truncate64);
        if user_id.len() > 64 || cdh.len() != 32 {
            return Err(S::INVALID_PARAMETER);
        }
        let alg = self.choose_algorithm(params)?;
        let options = map(p.get(7))?;
        let rk = boolean(options.and_then(|o| o.get("rk")))?.unwrap_or(false);
        if boolean(options.and_then(|o| o.get("up")))? == Some(false) {
            return Err(S::INVALID_OPTION);
        }
        if boolean(options.and_then(|o| o.get("uv")))? == Some(true) {
            return Err(S::INVALID_OPTION); // no built-in UV on a YubiKey 5
        }
        let ext = map(p.get(6))?;
        let cred_protect_in = match uint(ext.and_then(|e| e.get("credProtect")))? {
            None => None,
            Some(n @ 1..=3) => Some(n as u8),
            Some(_) => return Err(S::INVALID_OPTION),
        };
        let cred_protect = cred_protect_in.unwrap_or(1);
        let has_ext = |n: &str| self.cfg.profile.extensions.iter().any(|e| e == n);
        let hmac_secret = has_ext("hmac-secret")
            && boolean(ext.and_then(|e| e.get("hmac-secret")))? == Some(true);
        let min_pin_ext = has_ext("minPinLength")
            && boolean(ext.and_then(|e| e.get("minPinLength")))? == Some(true);
        // Every requested level is echoed, 1 included (CTAP 2.1 §12.1: the
        // output is the policy the authenticator applied).
        let cred_protect_out = has_ext("credProtect") && cred_protect_in.is_some();
        let more_ext = self.mc_extensions(ext, rk)?;
        let ep = match uint(p.get(0x0a))? {
            None => false,
            Some(1 | 2) if self.ep_enabled => true,
            Some(1 | 2) => return Err(S::INVALID_PARAMETER),
            Some(_) => return Err(S::INVALID_OPTION),
        };
        // User verification via the token (§6.1.2 steps 5–11). With
        // makeCredUvNotRqd a PIN-protected key makes non-discoverable
        // credentials without UV (§6.1.2 step 6; §7.2: not under alwaysUv).
        let pin_required =
            self.always_uv || (self.pin.is_some() && (rk || !self.make_cred_uv_not_rqd()));
        let uv = match self.token_uv(
            p.get(8),
            p.get(9),
            &cdh,
            perm::MC,
            &rp_id,
            touched,
            pin_required,
        )? {
            Some(uv) => uv,
            None => return Ok(Outcome::NeedsTouch),
        };
        let rp_id_hash: [u8; 32] = Sha256::digest(rp_id.as_bytes()).into();
        if let Some(list) = array(p.get(5))? {
            for d in list {
                map(Some(d))?;
                let id = bytes(d.get("id"))?.ok_or(S::MISSING_PARAMETER)?;
                if let Some(c) = self.unwrap_id(id, &rp_id_hash) {
                    if c.cred_protect < 3 || uv {
                        if !touched {
                            return Ok(Outcome::NeedsTouch);
                        }
                        return Err(S::CREDENTIAL_EXCLUDED);
                    }
                }
            }
        }
        if rk && (self.faults.store_full || self.store.would_overflow(&rp_id, &user_id)) {
            return Err(S::KEY_STORE_FULL);
        }
        if !touched {
            return Ok(Outcome::NeedsTouch);
        }
        if self.faults.flash_write_failure {
            return Err(S::OTHER);
        }
        // Create the credential.
        let scalar = alg.generate(&mut self.rng);
        let public = alg.public_cose(&scalar).ok_or(S::OTHER)?;
        let wrapped_flags = if hmac_secret {
            extensions::HMAC_SECRET_BIT
        } else {
            0
        };
        let id = self.wrap(&scalar, cred_protect | wrapped_flags, alg, &rp_id_hash);
        let mut ext_out: Vec<(Value, Value)> = Vec::new();
        let more = self.mc_extension_results(more_ext, rk, &mut ext_out);
        if rk {
            let stored = StoredCredential {
                id: id.clone(),
                rp_id: rp_id.clone(),
                rp_name,
                user_id,
                user_name,
                user_display_name: user_display,
                cred_protect,
                hmac_secret,
                cred_blob: more.cred_blob,
                large_blob_key: more
                    .large_blob_key
                    .as_ref()
                    .map(|k| Secret::new(*k.expose())),
                created: 0,
                private_key: Secret::new(*scalar.expose()),
            };
            self.store
                .insert(stored)
                .map_err(|StoreError::Full| S::KEY_STORE_FULL)?;
        }
        // §6.1.2 step 14 d): after a user-present makeCredential.
        self.clear_token_after_user_presence();
        self.sign_count = self.sign_count.wrapping_add(1);
        if cred_protect_out {
            ext_out.push((Value::from("credProtect"), Value::from(cred_protect)));
        }
        if hmac_secret {
            ext_out.push((Value::from("hmac-secret"), Value::from(true)));
        }
        if min_pin_ext && self.min_pin_rp_ids.contains(&rp_id) {
            ext_out.push((
                Value::from("minPinLength"),
                Value::from(self.min_pin_length),
            ));
        }
        let mut flags = 0x01 | 0x40;
        if uv {
            flags |= 0x04;
        }
        if !ext_out.is_empty() {
            flags |= 0x80;
        }
        let mut auth_data = rp_id_hash.to_vec();
        auth_data.push(flags);
        auth_data.extend(self.sign_count.to_be_bytes());
        auth_data.extend(self.cfg.aaguid);
        auth_data.extend((id.len() as u16).to_be_bytes());
        auth_data.extend(&id);
        cbor::encode_into(&public, &mut auth_data);
        if !ext_out.is_empty() {
            cbor::encode_into(&Value::Map(ext_out), &mut auth_data);
        }
        let sig = self
            .attestation
            .sign(&[auth_data.as_slice(), &cdh].concat());
        let att_stmt = Value::map([
            (Value::from("alg"), Value::from(-7)),
            (Value::from("sig"), Value::from(sig)),
            (
                Value::from("x5c"),
                Value::Array(vec![Value::from(self.attestation.cert_der.clone())]),
            ),
        ]);
        let mut out = vec![
            (Value::from(1), Value::from("packed")),
            (Value::from(2), Value::from(auth_data)),
            (Value::from(3), att_stmt),
        ];
        if ep {
            out.push((Value::from(4), Value::from(true)));
        }
        if let Some(k) = &more.large_blob_key {
            out.push((Value::from(5), Value::from(k.expose().to_vec())));
        }
        ok(Value::Map(out))
    }

    /// credential id = nonce(12) ‖ AES-256-GCM(wrap key, private key ‖ flags;
    /// aad rpIdHash), flags = credProtect (low nibble) | algorithm
    /// ([`CredAlg::flag`]). For a U2F key handle the rpIdHash is the
    /// application parameter, which is what CTAP 2.1 §10.2 (CTAP1/CTAP2
    /// interoperability) needs: getAssertion with rpIdHash = appParam finds it.
    pub(super) fn wrap(
        &mut self,
        scalar: &Secret<[u8; 32]>,
        cred_protect: u8,
        alg: CredAlg,
        rp_id_hash: &[u8; 32],
    ) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        self.rng.fill_bytes(&mut nonce);
        let mut pt = zeroize::Zeroizing::new([0u8; 33]);
        pt[..32].copy_from_slice(scalar.expose());
        pt[32] = (cred_protect & (0x0f | extensions::HMAC_SECRET_BIT)) | alg.flag();
        let cipher = Aes256Gcm::new(self.wrap_key.expose().into());
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: pt.as_slice(),
                    aad: rp_id_hash,
                },
            )
            .unwrap_or_default();
        [nonce.as_slice(), &ct].concat()
    }

    pub(super) fn unwrap_id(&self, id: &[u8], rp_id_hash: &[u8; 32]) -> Option<Unwrapped> {
        if id.len() != 12 + 33 + 16 {
            return None;
        }
        let cipher = Aes256Gcm::new(self.wrap_key.expose().into());
        let pt = zeroize::Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(&id[..12]),
                    Payload {
                        msg: &id[12..],
                        aad: rp_id_hash,
                    },
                )
                .ok()?,
        );
        let mut key = [0u8; 32];
        key.copy_from_slice(&pt[..32]);
        Some(Unwrapped {
            key: Secret::new(key),
            cred_protect: pt[32] & 0x0f,
            alg: CredAlg::from_flags(pt[32])?,
            hmac_secret: pt[32] & extensions::HMAC_SECRET_BIT != 0,
        })
    }

    // ---- getAssertion (CTAP 2.1 §6.2.2) ----

    fn get_assertion(&mut self, p: &Value, touched: bool) -> R<Outcome> {
        let rp_id = text(p.get(1))?.ok_or(S::MISSING_PARAMETER)?.to_string();
        let cdh = bytes(p.get(2))?.ok_or(S::MISSING_PARAMETER)?.to_vec();
        if cdh.len() != 32 {
            return Err(S::INVALID_PARAMETER);
        }
        let options = map(p.get(5))?;
        let up = boolean(options.and_then(|o| o.get("up")))?.unwrap_or(true);
        if boolean(options.and_then(|o| o.get("uv")))? == Some(true) {
            return Err(S::INVALID_OPTION);
        }
        if boolean(options.and_then(|o| o.get("rk")))?.is_some() {
            return Err(S::INVALID_OPTION);
        }
        let uv = match self.token_uv(
            p.get(6),
            p.get(7),
            &cdh,
            perm::GA,
            &rp_id,
            touched,
            self.always_uv,
        )? {
            Some(uv) => uv,
            None => return Ok(Outcome::NeedsTouch),
        };
        let ext = self.ga_extensions(map(p.get(4))?)?;
        let rp_id_hash: [u8; 32] = Sha256::digest(rp_id.as_bytes()).into();
        // Applicable credentials with credProtect enforced (CTAP 2.1 §12.1).
        let mut ids: Vec<Vec<u8>> = Vec::new();
        match array(p.get(3))? {
            Some(list) if !list.is_empty() => {
                for d in list {
                    map(Some(d))?;
                    let id = bytes(d.get("id"))?.ok_or(S::MISSING_PARAMETER)?;
                    if let Some(c) = self.unwrap_id(id, &rp_id_hash) {
                        if c.cred_protect < 3 || uv {
                            ids.push(id.to_vec());
                        }
                    }
                }
            }
            _ => {
                for c in self.store.for_rp(&rp_id) {
                    if c.cred_protect == 1 || uv {
                        ids.push(c.id.clone());
                    }
                }
            }
        }
        if ids.is_empty() {
            return Err(S::NO_CREDENTIALS);
        }
        if up && !touched {
            return Ok(Outcome::NeedsTouch);
        }
        let mut flags = 0u8;
        if up {
            flags |= 0x01;
            // §6.2.2 step 9: the same clearing as after makeCredential.
            self.clear_token_after_user_presence();
        }
        if uv {
            flags |= 0x04;
        }
        let total = ids.len();
        let first = ids.remove(0);
        let mut out = self.assertion(&first, &rp_id_hash, &cdh, flags, &ext)?;
        if total > 1 {
            out.push((Value::from(5), Value::from(total as u64)));
            self.pending = Pending::Assertions {
                rp_id_hash,
                cdh,
                flags,
                ids,
                ext,
            };
        }
        ok(Value::Map(out))
    }

    fn assertion(
        &mut self,
        id: &[u8],
        rp_id_hash: &[u8; 32],
        cdh: &[u8],
        flags: u8,
        ext: &extensions::GaExtensions,
    ) -> R<Vec<(Value, Value)>> {
        let c = self
            .unwrap_id(id, rp_id_hash)
            .ok_or(S::INVALID_CREDENTIAL)?;
        let stored = self.store.find(id);
        let cred_blob = stored.map(|s| s.cred_blob.clone());
        let large_blob_key = stored
            .and_then(|s| s.large_blob_key.as_ref())
            .map(|k| Secret::new(*k.expose()));
        let ext_out = self.assertion_extensions(
            ext,
            extensions::AssertedCredential {
                id,
                hmac_secret: c.hmac_secret,
                cred_blob: cred_blob.as_deref(),
                large_blob_key: large_blob_key.as_ref(),
            },
            flags,
        )?;
        self.sign_count = self.sign_count.wrapping_add(1);
        let mut auth_data = rp_id_hash.to_vec();
        auth_data.push(if ext_out.auth_data.is_empty() {
            flags
        } else {
            flags | 0x80
        });
        auth_data.extend(self.sign_count.to_be_bytes());
        if !ext_out.auth_data.is_empty() {
            cbor::encode_into(&Value::Map(ext_out.auth_data), &mut auth_data);
        }
        // ES256 or Ed25519, as the credential was made (WebAuthn §6.3.3 step 11).
        let sig = c
            .alg
            .sign(&c.key, &[auth_data.as_slice(), cdh].concat())
            .ok_or(S::OTHER)?;
        let mut out = vec![
            (Value::from(1), descriptor(id)),
            (Value::from(2), Value::from(auth_data)),
            (Value::from(3), Value::from(sig)),
        ];
        if let Some(k) = ext_out.large_blob_key {
            out.push((Value::from(7), Value::from(k)));
        }
        if let Some(stored) = self.store.find(id) {
            let mut user = vec![(Value::from("id"), Value::from(stored.user_id.clone()))];
            // Identifiable user fields only after UV (CTAP 2.1 §6.2.2 step 12).
            if flags & 0x04 != 0 {
                if let Some(n) = &stored.user_name {
                    user.push((Value::from("name"), Value::from(n.as_str())));
                }
                if let Some(n) = &stored.user_display_name {
                    user.push((Value::from("displayName"), Value::from(n.as_str())));
                }
            }
            out.push((Value::from(4), Value::Map(user)));
        }
        Ok(out)
    }

    fn get_next_assertion(&mut self) -> R<Outcome> {
        let Pending::Assertions {
            rp_id_hash,
            cdh,
            flags,
            mut ids,
            ext,
        } = std::mem::replace(&mut self.pending, Pending::None)
        else {
            return Err(S::NOT_ALLOWED);
        };
        if ids.is_empty() {
            return Err(S::NOT_ALLOWED);
        }
        let id = ids.remove(0);
        let out = self.assertion(&id, &rp_id_hash, &cdh, flags, &ext)?;
        if !ids.is_empty() {
            self.pending = Pending::Assertions {
                rp_id_hash,
                cdh,
                flags,
                ids,
                ext,
            };
        }
        ok(Value::Map(out))
    }

    // ---- reset (CTAP 2.1 §6.6) ----

    fn reset(&mut self, now: Duration, touched: bool) -> R<Outcome> {
        if now.saturating_sub(self.powered_at)
            > Duration::from_millis(self.cfg.profile.reset_window_ms)
        {
            return Err(S::NOT_ALLOWED);
        }
        if !touched {
            return Ok(Outcome::NeedsTouch);
        }
        if self.faults.flash_write_failure {
            return Err(S::OTHER);
        }
        self.store.clear();
        self.large_blobs = large_blobs::LargeBlobs::new();
        self.pin = None;
        self.retries = PIN_RETRIES;
        self.consecutive_failures = 0;
        self.min_pin_length = self.cfg.profile.min_pin_length_for(self.cfg.product_id);
        self.min_pin_rp_ids.clear();
        self.force_pin_change = false;
        self.always_uv = false;
        self.ep_enabled = false;
        self.token = None;
        let mut wrap = [0u8; 32];
        self.rng.fill_bytes(&mut wrap);
        self.wrap_key = Secret::new(wrap);
        self.key_agreement = new_key_agreement(&mut self.rng);
        ok_empty()
    }

    // ---- authenticatorConfig (CTAP 2.1 §6.11) ----

    fn config(&mut self, p: &Value, _raw: &[u8]) -> R<Outcome> {
        let sub = uint(p.get(1))?.ok_or(S::MISSING_PARAMETER)?;
        let sub_params = map(p.get(2))?;
        if self.pin.is_some() || self.always_uv {
            let param = bytes(p.get(4))?.ok_or(S::PUAT_REQUIRED)?;
            let protocol = self.protocol(p.get(3))?;
            // 32×0xff ‖ 0x0d ‖ subCommand ‖ subCommandParams (the strict
            // decoder accepted only canonical bytes, so re-encoding is exact).
            let mut msg = vec![0xff; 32];
            msg.push(cmd::CONFIG);
            msg.push(sub as u8);
            if let Some(sp) = sub_params {
                cbor::encode_into(sp, &mut msg);
            }
            self.check_token(protocol, &msg, param, perm::ACFG, None)?;
        }
        match sub {
            0x01 if self.cfg.profile.has_option("ep") => {
                self.ep_enabled = true;
                ok_empty()
            }
            0x02 if self.cfg.profile.has_option("alwaysUv") => {
                self.always_uv = !self.always_uv;
                ok_empty()
            }
            0x03 if self.cfg.profile.has_set_min_pin_length() => {
                let empty = Value::Map(Vec::new());
                let sp = sub_params.unwrap_or(&empty);
                let new_min = uint(sp.get(1))?;
                let rp_ids = array(sp.get(2))?;
                let force = boolean(sp.get(3))?.unwrap_or(false);
                let new_min = match new_min {
                    Some(n) if n > 63 => return Err(S::PIN_POLICY_VIOLATION),
                    Some(n) if (n as u8) < self.min_pin_length => {
                        return Err(S::PIN_POLICY_VIOLATION)
                    }
                    Some(n) => n as u8,
                    None => self.min_pin_length,
                };
                let rp_ids = match rp_ids {
                    Some(list) => {
                        if list.len() as u64
                            > self.cfg.profile.max_rpids_for_set_min_pin_length as u64
                        {
                            return Err(S::PIN_POLICY_VIOLATION);
                        }
                        let mut v = Vec::new();
                        for r in list {
                            v.push(text(Some(r))?.ok_or(S::CBOR_UNEXPECTED_TYPE)?.to_string());
                        }
                        Some(v)
                    }
                    None => None,
                };
                if force && self.pin.is_none() {
                    return Err(S::PIN_NOT_SET);
                }
                if self.faults.flash_write_failure {
                    return Err(S::OTHER);
                }
                self.min_pin_length = new_min;
                if let Some(v) = rp_ids {
                    self.min_pin_rp_ids = v;
                }
                let too_short = self
                    .pin
                    .as_ref()
                    .is_some_and(|pin| pin.code_points < new_min as usize);
                if force || too_short {
                    self.force_pin_change = true;
                }
                ok_empty()
            }
            _ => Err(S::INVALID_SUBCOMMAND),
        }
    }

    // ---- credential management (CTAP 2.1 §6.8; preview 0x41) ----

    fn cred_mgmt(&mut self, p: &Value, command: u8) -> R<Outcome> {
        let sub = uint(p.get(1))?.ok_or(S::MISSING_PARAMETER)?;
        let sub_params = map(p.get(2))?;
        let needs_auth = matches!(sub, 1 | 2 | 4 | 6 | 7);
        // updateUserInformation is not in the 2.1 preview; where 0x0A exists
        // too (5.7) the preview command is the same handler.
        if sub == 7
            && command == cmd::CRED_MGMT_PREVIEW
            && !self.is_cred_mgmt_command(cmd::CRED_MGMT)
        {
            return Err(S::INVALID_SUBCOMMAND);
        }
        if !(1..=7).contains(&sub) {
            return Err(S::INVALID_SUBCOMMAND);
        }
        if needs_auth {
            let param = bytes(p.get(4))?.ok_or(S::PUAT_REQUIRED)?;
            let protocol = self.protocol(p.get(3))?;
            if self.pin.is_none() {
                return Err(S::PIN_NOT_SET);
            }
            let mut msg = vec![sub as u8];
            if let Some(sp) = sub_params {
                cbor::encode_into(sp, &mut msg);
            }
            self.check_token(protocol, &msg, param, perm::CM, None)?;
            // Metadata and RP enumeration need a token without an RP ID.
            if matches!(sub, 1 | 2) && self.token.as_ref().is_some_and(|t| t.rp_id.is_some()) {
                return Err(S::PIN_AUTH_INVALID);
            }
        }
        let empty = Value::Map(Vec::new());
        let sp = sub_params.unwrap_or(&empty);
        match sub {
            1 => ok(Value::map([
                (Value::from(1), Value::from(self.store.len() as u64)),
                (Value::from(2), Value::from(self.remaining() as u64)),
            ])),
            2 => {
                let mut rps = self.store.rp_ids();
                if rps.is_empty() {
                    return Err(S::NO_CREDENTIALS);
                }
                let total = rps.len();
                let first = rps.remove(0);
                self.pending = Pending::Rps(rps);
                let mut out = rp_entry(&first);
                out.push((Value::from(5), Value::from(total as u64)));
                ok(Value::Map(out))
            }
            3 => match std::mem::replace(&mut self.pending, Pending::None) {
                Pending::Rps(mut rps) if !rps.is_empty() => {
                    let next = rps.remove(0);
                    self.pending = Pending::Rps(rps);
                    ok(Value::Map(rp_entry(&next)))
                }
                _ => Err(S::NOT_ALLOWED),
            },
            4 => {
                let hash = bytes(sp.get(1))?.ok_or(S::MISSING_PARAMETER)?;
                let rp = self
                    .store
                    .rp_ids()
                    .into_iter()
                    .find(|(id, _)| Sha256::digest(id.as_bytes()).as_slice() == hash);
                let Some((rp_id, _)) = rp else {
                    return Err(S::NO_CREDENTIALS);
                };
                let mut ids: Vec<Vec<u8>> = self
                    .store
                    .for_rp(&rp_id)
                    .iter()
                    .map(|c| c.id.clone())
                    .collect();
                let total = ids.len();
                let first = ids.remove(0);
                self.pending = Pending::Creds(ids);
                let mut out = self.cred_entry(&first)?;
                out.push((Value::from(9), Value::from(total as u64)));
                ok(Value::Map(out))
            }
            5 => match std::mem::replace(&mut self.pending, Pending::None) {
                Pending::Creds(mut ids) if !ids.is_empty() => {
                    let next = ids.remove(0);
                    self.pending = Pending::Creds(ids);
                    ok(Value::Map(self.cred_entry(&next)?))
                }
                _ => Err(S::NOT_ALLOWED),
            },
            6 => {
                let d = map(sp.get(2))?.ok_or(S::MISSING_PARAMETER)?;
                let id = bytes(d.get("id"))?.ok_or(S::MISSING_PARAMETER)?;
                if self.faults.flash_write_failure {
                    return Err(S::OTHER);
                }
                if self.store.delete(id) {
                    ok_empty()
                } else {
                    Err(S::NO_CREDENTIALS)
                }
            }
            _ => {
                let d = map(sp.get(2))?.ok_or(S::MISSING_PARAMETER)?;
                let id = bytes(d.get("id"))?.ok_or(S::MISSING_PARAMETER)?;
                let user = map(sp.get(3))?.ok_or(S::MISSING_PARAMETER)?;
                let uid = bytes(user.get("id"))?.ok_or(S::MISSING_PARAMETER)?.to_vec();
                let name = text(user.get("name"))?.map(truncate64);
                let display = text(user.get("displayName"))?.map(truncate64);
                let Some(c) = self.store.find_mut(id) else {
                    return Err(S::NO_CREDENTIALS);
                };
                if c.user_id != uid {
                    return Err(S::INVALID_PARAMETER);
                }
                c.user_name = name;
                c.user_display_name = display;
                ok_empty()
            }
        }
    }

    fn cred_entry(&self, id: &[u8]) -> R<Vec<(Value, Value)>> {
        let c = self.store.find(id).ok_or(S::NO_CREDENTIALS)?;
        // The algorithm is in the wrapped id (the store keeps only the key).
        let rp_id_hash: [u8; 32] = Sha256::digest(c.rp_id.as_bytes()).into();
        let alg = self
            .unwrap_id(&c.id, &rp_id_hash)
            .map(|u| u.alg)
            .ok_or(S::OTHER)?;
        let public = alg.public_cose(&c.private_key).ok_or(S::OTHER)?;
        let mut user = vec![(Value::from("id"), Value::from(c.user_id.clone()))];
        if let Some(n) = &c.user_name {
            user.push((Value::from("name"), Value::from(n.as_str())));
        }
        if let Some(n) = &c.user_display_name {
            user.push((Value::from("displayName"), Value::from(n.as_str())));
        }
        let mut out = vec![
            (Value::from(6), Value::Map(user)),
            (Value::from(7), descriptor(&c.id)),
            (Value::from(8), public),
            (Value::from(0x0a), Value::from(c.cred_protect)),
        ];
        // §6.8.4: the credential's largeBlobKey, when it has one.
        if let Some(k) = &c.large_blob_key {
            out.push((Value::from(0x0b), Value::from(k.expose().to_vec())));
        }
        Ok(out)
    }
}

fn rp_entry((id, name): &(String, Option<String>)) -> Vec<(Value, Value)> {
    let mut rp = vec![(Value::from("id"), Value::from(id.as_str()))];
    if let Some(n) = name {
        rp.push((Value::from("name"), Value::from(n.as_str())));
    }
    vec![
        (Value::from(3), Value::Map(rp)),
        (
            Value::from(4),
            Value::from(Sha256::digest(id.as_bytes()).to_vec()),
        ),
    ]
}

fn truncate64(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn new_key_agreement(rng: &mut StdRng) -> KeyAgreement {
    loop {
        let mut s = SecretBytes::new(vec![0u8; 32]);
        rng.fill_bytes(s.expose_mut());
        if let Ok(k) = KeyAgreement::from_scalar(s.expose()) {
            return k;
        }
    }
}

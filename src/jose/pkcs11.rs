//! PKCS#11 key custody (SPEC §14): the station's transport and signing keys
//! live in a token (a network HSM, a YubiHSM 2, SoftHSM2 in tests) and never
//! leave it. The station asks the token for two things only:
//!
//! - **decrypt**: `CKM_ECDH1_DERIVE` (null KDF) of the transport key with the
//!   JWE's `epk` into a *session* generic secret of 48 bytes that is created
//!   non-sensitive and extractable — the derived object, not the private key —
//!   whose value (`Z`) is read into a zeroizing buffer and the object destroyed
//!   at once. The Concat KDF and AES run in the station as with files.
//! - **sign**: `CKM_ECDSA` over the SHA-384 digest of the JWS signing input
//!   (computed here); PKCS#11 returns raw `r || s`, which is the JOSE form
//!   (RFC 7518 §3.4). The signature is verified with the public key before it
//!   is used, so a module that answers garbage is a custody error, not a bad
//!   response.
//!
//! Keys made by `keys generate` are P-384 pairs generated inside the token:
//! `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE` true, `CKA_EXTRACTABLE` false;
//! `CKA_LABEL` = `CKA_ID` = the kid; transport keys may only derive
//! (`CKA_DERIVE`), signing keys may only sign (`CKA_SIGN`).
//!
//! ## Concurrency
//!
//! A PKCS#11 session runs one operation at a time, but many sessions of one
//! application may run at once (the module is initialised with
//! `CKF_OS_LOCKING_OK`). Slots decrypt and sign in parallel, so the token
//! keeps a small pool of sessions (`[keys] sessions`, default 4). The pool's
//! mutex guards only the list of idle sessions: a worker takes a session out
//! (or reserves the right to open a new one), *releases the lock*, makes its
//! token call, and puts the session back. No lock is held across a token
//! call. When every session is busy the worker waits on a condition variable
//! for at most [`SESSION_WAIT`]; after that the call fails as a custody error
//! and the job is retried. Login state is per application and token, so a
//! session opened later is already logged in; it still calls `C_Login` and
//! accepts `CKR_USER_ALREADY_LOGGED_IN` (the token may have been re-plugged).
//! A session whose call failed with a session or device error is closed
//! instead of being returned.

use super::jwe::EcdhSecret;
use super::jwk::{EcJwk, KeyUse};
use super::JoseError;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use p384::ecdsa::signature::hazmat::PrehashVerifier;
use p384::ecdsa::{Signature, VerifyingKey};
use p384::elliptic_curve::sec1::ToEncodedPoint;
use p384::PublicKey;
use sha2::{Digest, Sha384};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::Duration;
use zeroize::{Zeroize, Zeroizing};

/// DER of the named curve secp384r1 (OID 1.3.132.0.34), `CKA_EC_PARAMS`.
pub const P384_EC_PARAMS: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// How long a worker waits for a free session before the call fails.
pub const SESSION_WAIT: Duration = Duration::from_secs(10);

/// Default size of the session pool.
pub const DEFAULT_SESSIONS: usize = 4;

/// `[keys]` of the configuration (SPEC §14). The PIN is not here: it is read
/// from `pin_file` in the key custody directory when the token is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmConfig {
    pub module: PathBuf,
    pub token_label: String,
    /// A file name in `keys_dir` / `$CREDENTIALS_DIRECTORY` (mode 0600/0400).
    pub pin_file: PathBuf,
    pub sessions: usize,
}

/// Why the token could not be used. One line each; no PIN, no key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmError(pub String);

impl fmt::Display for HsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HsmError {}

/// A PKCS#11 failure as one line an operator can act on.
fn describe(what: &str, e: &CkError) -> HsmError {
    let text = match e {
        CkError::Pkcs11(rv, _) => match rv {
            RvError::PinIncorrect => "the token refused the PIN in pin_file (CKR_PIN_INCORRECT)".into(),
            RvError::PinLocked => "the token's user PIN is locked (CKR_PIN_LOCKED); unlock it with the SO PIN".into(),
            RvError::PinExpired => "the token's user PIN has expired (CKR_PIN_EXPIRED)".into(),
            RvError::SessionCount => "the token has no free session (CKR_SESSION_COUNT); lower [keys] sessions or free sessions".into(),
            RvError::DeviceMemory => "the token is full (CKR_DEVICE_MEMORY); delete retired keys".into(),
            RvError::TokenNotPresent | RvError::DeviceRemoved => "the token is not present (CKR_TOKEN_NOT_PRESENT)".into(),
            RvError::DeviceError => "the token reported a device error (CKR_DEVICE_ERROR)".into(),
            RvError::GeneralError => "the token failed without saying why (CKR_GENERAL_ERROR)".into(),
            RvError::FunctionFailed => "the token could not carry out the call (CKR_FUNCTION_FAILED)".into(),
            // p11-kit's RPC client (Debian bookworm's 0.24) forwards only the
            // mechanisms whose parameters it can serialise, and
            // CKM_ECDH1_DERIVE is not among them: the call never reaches the token.
            RvError::MechanismInvalid => "the token or a PKCS#11 proxy in front of it (p11-kit before 0.25) does not offer this mechanism (CKR_MECHANISM_INVALID)".into(),
            other => format!("PKCS#11 error {other}"),
        },
        CkError::LibraryLoading(l) => format!("cannot load the PKCS#11 module: {l}"),
        other => format!("PKCS#11 call failed: {other}"),
    };
    HsmError(format!("{what}: {text}"))
}

/// A session error that makes the session unusable.
fn session_broken(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
                // After a logout elsewhere (an HSM restart), private key
                // handles vanish from a session that is no longer logged in.
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid,
            _
        )
    )
}

struct Pool {
    idle: Vec<Session>,
    /// Sessions open now (idle + in use + being opened).
    open: usize,
}

/// An open, logged-in token with its session pool.
pub struct Token {
    ctx: Pkcs11,
    slot: Slot,
    label: String,
    pin: AuthPin,
    pool: Mutex<Pool>,
    freed: Condvar,
    max: usize,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}, <pin>)", self.label)
    }
}

impl Token {
    /// Loads `module`, finds the token labelled `label`, logs in with `pin`
    /// (read by the caller from the PIN file), and keeps one session open.
    pub fn open(cfg: &HsmConfig, pin: Zeroizing<String>) -> Result<Self, HsmError> {
        let module = cfg.module.display().to_string();
        let ctx = Pkcs11::new(&cfg.module).map_err(|e| describe(&module, &e))?;
        // A process that opens the token twice (`keys generate` reloads; tests)
        // finds the module initialised already: that is fine, the module is
        // process-wide and never finalised while the station runs.
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(describe(&module, &e)),
        }
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| describe(&module, &e))?;
        let mut labels = Vec::new();
        let mut found = None;
        for slot in slots {
            let info = ctx
                .get_token_info(slot)
                .map_err(|e| describe(&module, &e))?;
            let l = info.label().trim_end().to_string();
            if l == cfg.token_label {
                found = Some(slot);
                break;
            }
            labels.push(l);
        }
        let slot = found.ok_or_else(|| {
            HsmError(format!(
                "{module}: no token labelled {:?} (tokens present: {})",
                cfg.token_label,
                if labels.is_empty() {
                    "none".to_string()
                } else {
                    labels
                        .iter()
                        .map(|l| format!("{l:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))
        })?;
        let token = Token {
            ctx,
            slot,
            label: cfg.token_label.clone(),
            pin: AuthPin::from(pin.as_str()),
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            max: cfg.sessions.max(1),
        };
        // One session now: a wrong PIN or a full token is a start-up error.
        let first = token.open_session()?;
        token.lock().idle.push(first);
        token.lock().open = 1;
        Ok(token)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open_session(&self) -> Result<Session, HsmError> {
        let what = format!("token {:?}", self.label);
        let s = self
            .ctx
            .open_rw_session(self.slot)
            .map_err(|e| describe(&what, &e))?;
        match s.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(s),
            Err(e) => Err(describe(&what, &e)),
        }
    }

    /// Takes an idle session, or opens one if the pool may grow, or waits
    /// for one to come back. The lock is held only while the list changes.
    fn acquire(&self) -> Result<Session, HsmError> {
        let mut pool = self.lock();
        loop {
            if let Some(s) = pool.idle.pop() {
                return Ok(s);
            }
            if pool.open < self.max {
                pool.open += 1;
                drop(pool);
                return self.open_session().inspect_err(|_| {
                    self.lock().open -= 1;
                    self.freed.notify_one();
                });
            }
            let (p, timeout) = self
                .freed
                .wait_timeout(pool, SESSION_WAIT)
                .unwrap_or_else(|p| p.into_inner());
            pool = p;
            if timeout.timed_out() && pool.idle.is_empty() {
                return Err(HsmError(format!(
                    "token {:?}: all {} sessions busy for {}s",
                    self.label,
                    self.max,
                    SESSION_WAIT.as_secs()
                )));
            }
        }
    }

    /// Runs `f` on a pooled session (no lock held during the call).
    pub fn with_session<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Session) -> Result<T, CkError>,
    ) -> Result<T, HsmError> {
        let session = self.acquire()?;
        let result = f(&session);
        match &result {
            Err(e) if session_broken(e) => {
                drop(session);
                self.lock().open -= 1;
            }
            _ => self.lock().idle.push(session),
        }
        self.freed.notify_one();
        result.map_err(|e| describe(&format!("token {:?}: {what}", self.label), &e))
    }
}

/// A key pair in the token, by kid. The private key's handle is cached; a
/// token that restarts (or logs the station out) hands out new handles, so a
/// stale one is looked up again by label.
#[derive(Debug)]
pub struct TokenKey {
    pub kid: String,
    pub public: PublicKey,
    handle: Mutex<ObjectHandle>,
}

impl TokenKey {
    fn handle(&self) -> ObjectHandle {
        *self.handle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The handle went stale or the session lost its login (token restarted,
/// logged out elsewhere): worth one re-login and lookup before failing.
fn recoverable(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid | RvError::UserNotLoggedIn,
            _
        )
    )
}

/// After a failed C_GenerateKeyPair: destroys the objects that were not on
/// the token `before` and carry either our temporary label or no label at
/// all (a half-written object whose attributes never reached the store).
/// Objects with any other label are someone else's and are left alone.
/// Returns how many such objects the token still lists afterwards (a
/// destroy can fail too: SoftHSM2 removes the object file, then fails on
/// the lock file it could not create). The generation's error is what is
/// reported; this count is added to it.
fn remove_half_made(s: &Session, before: &[ObjectHandle], tmp_label: &[u8]) -> usize {
    let half_made = || -> Vec<ObjectHandle> {
        let Ok(now) = s.find_objects(&[]) else {
            return Vec::new();
        };
        now.into_iter()
            .filter(|h| !before.contains(h))
            .filter(|h| {
                let label = s
                    .get_attributes(*h, &[AttributeType::Label])
                    .ok()
                    .and_then(|attrs| {
                        attrs.into_iter().find_map(|a| match a {
                            Attribute::Label(l) => Some(l),
                            _ => None,
                        })
                    })
                    .unwrap_or_default();
                label.is_empty() || label == tmp_label
            })
            .collect()
    };
    for h in half_made() {
        let _ = s.destroy_object(h);
    }
    half_made().len()
}

/// The station keys found in a token.
#[derive(Debug)]
pub struct TokenKeys {
    pub token: Token,
    pub transport: Vec<TokenKey>,
    pub signing: Vec<TokenKey>,
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the SEC1 point (PKCS#11 v2.40
/// §2.3.3); some modules return the bare point. Either way, P-384 only.
fn parse_ec_point(bytes: &[u8]) -> Option<PublicKey> {
    let sec1 = match bytes {
        [0x04, 0x61, rest @ ..] if rest.len() == 97 => rest,
        [0x04, ..] if bytes.len() == 97 => bytes,
        _ => return None,
    };
    PublicKey::from_sec1_bytes(sec1).ok()
}

impl TokenKeys {
    /// Every EC P-384 private key in the token whose label is a kid, with its
    /// public half (the public-key object with the same `CKA_ID`).
    pub fn load(token: Token) -> Result<Self, HsmError> {
        let found = token.with_session("listing keys", |s| {
            let handles = s.find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC),
            ])?;
            let mut keys = Vec::new();
            for h in handles {
                let attrs = s.get_attributes(
                    h,
                    &[
                        AttributeType::Label,
                        AttributeType::Id,
                        AttributeType::Derive,
                        AttributeType::Sign,
                    ],
                )?;
                let (mut label, mut id, mut derive, mut sign) = (None, None, false, false);
                for a in attrs {
                    match a {
                        Attribute::Label(l) => label = Some(l),
                        Attribute::Id(i) => id = Some(i),
                        Attribute::Derive(d) => derive = d,
                        Attribute::Sign(d) => sign = d,
                        _ => {}
                    }
                }
                // An object without a label is not one of ours (a half-made
                // object a failed generation left behind, on a token where
                // it could not be removed): skip it rather than fail start-up.
                let (Some(label), Some(id)) = (label.filter(|l| !l.is_empty()), id) else {
                    continue;
                };
                let publics = s.find_objects(&[
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::Id(id),
                ])?;
                let mut point = None;
                if let Some(p) = publics.first() {
                    for a in s.get_attributes(*p, &[AttributeType::EcPoint])? {
                        if let Attribute::EcPoint(b) = a {
                            point = parse_ec_point(&b);
                        }
                    }
                }
                keys.push((label, h, derive, sign, point));
            }
            Ok(keys)
        })?;
        let mut transport = Vec::new();
        let mut signing = Vec::new();
        for (label, handle, derive, sign, point) in found {
            let Ok(kid) = String::from_utf8(label) else {
                continue;
            };
            let Some(public) = point else {
                return Err(HsmError(format!(
                    "token {:?}: key {kid:?} has no P-384 public key object with its CKA_ID",
                    token.label
                )));
            };
            let key = TokenKey {
                kid,
                public,
                handle: Mutex::new(handle),
            };
            match (derive, sign) {
                (true, false) => transport.push(key),
                (false, true) => signing.push(key),
                // Neither or both: not one of ours; leave it alone.
                _ => {}
            }
        }
        transport.sort_by(|a, b| a.kid.cmp(&b.kid));
        signing.sort_by(|a, b| a.kid.cmp(&b.kid));
        Ok(TokenKeys {
            token,
            transport,
            signing,
        })
    }

    /// Generates a P-384 pair inside the token: private half sensitive and
    /// non-extractable, kid `<prefix>-<RFC 7638 thumbprint>` as label and id.
    pub fn generate(&self, prefix: &str, key_use: KeyUse) -> Result<String, HsmError> {
        let (derive, sign) = match key_use {
            KeyUse::Enc => (true, false),
            KeyUse::Sig => (false, true),
        };
        // A temporary label until the thumbprint is known (it names the key).
        let mut tmp = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut tmp);
        let tmp_label = format!("prereg-new-{}", super::b64::encode(tmp));
        // Why the token refused, kept for the message below.
        let refused = std::cell::Cell::new(None);
        // Half-made objects the token still lists after the clean-up.
        let left = std::cell::Cell::new(0usize);
        self.token
            .with_session("generating a key pair (CKM_EC_KEY_PAIR_GEN)", |s| {
                // What is on the token before: a failed generation may leave
                // a half-written object behind (SoftHSM2 does when its store
                // fills up between the two objects of the pair).
                let before = s.find_objects(&[])?;
                let public_template = [
                    Attribute::Token(true),
                    Attribute::Private(false),
                    Attribute::EcParams(P384_EC_PARAMS.to_vec()),
                    Attribute::Verify(sign),
                    Attribute::Derive(false),
                    Attribute::Label(tmp_label.clone().into_bytes()),
                    Attribute::Id(tmp_label.clone().into_bytes()),
                ];
                let private_template = [
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Derive(derive),
                    Attribute::Sign(sign),
                    Attribute::Decrypt(false),
                    Attribute::Unwrap(false),
                    Attribute::Label(tmp_label.clone().into_bytes()),
                    Attribute::Id(tmp_label.clone().into_bytes()),
                ];
                let (public, private) = match s.generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &public_template,
                    &private_template,
                ) {
                    Ok(pair) => pair,
                    Err(e) => {
                        if let CkError::Pkcs11(rv, _) = &e {
                            refused.set(Some(*rv));
                        }
                        left.set(remove_half_made(s, &before, tmp_label.as_bytes()));
                        return Err(e);
                    }
                };
                let mut point = None;
                for a in s.get_attributes(public, &[AttributeType::EcPoint])? {
                    if let Attribute::EcPoint(b) = a {
                        point = parse_ec_point(&b);
                    }
                }
                let Some(point) = point else {
                    let _ = s.destroy_object(public);
                    let _ = s.destroy_object(private);
                    return Err(CkError::NotSupported);
                };
                let jwk = EcJwk::from_public(&point, "", KeyUse::Enc);
                let kid = format!("{prefix}-{}", &jwk.thumbprint()[..22]);
                let names = [
                    Attribute::Label(kid.clone().into_bytes()),
                    Attribute::Id(kid.clone().into_bytes()),
                ];
                s.update_attributes(public, &names)?;
                s.update_attributes(private, &names)?;
                Ok(kid)
            })
            .map_err(|e| {
                // SoftHSM2 answers CKR_GENERAL_ERROR when its object store
                // cannot take another file; a hardware token says
                // CKR_DEVICE_MEMORY. Either way the operator's move is the same.
                let hint = match refused.get() {
                    Some(
                        RvError::GeneralError | RvError::DeviceMemory | RvError::FunctionFailed,
                    ) => {
                        "; no key was added: the token's storage may be full \
                         (delete retired keys, or free the storage of a software token)"
                    }
                    _ => "",
                };
                let left = match left.get() {
                    0 => String::new(),
                    n => format!(
                        "; {n} half-made object(s) without a label could not be removed \
                         (remove them with the token's own tool)"
                    ),
                };
                HsmError(format!("{e}{hint}{left}"))
            })
    }

    /// Removes the pair `kid` (both objects), for a rotation that could not
    /// make its second pair: `keys generate` adds both pairs or neither.
    pub fn destroy_pair(&self, kid: &str) -> Result<(), HsmError> {
        self.token
            .with_session("removing a half-made rotation", |s| {
                for h in s.find_objects(&[Attribute::Label(kid.as_bytes().to_vec())])? {
                    s.destroy_object(h)?;
                }
                Ok(())
            })
    }

    /// Runs `op` with `key`'s private handle on a pooled session; after a
    /// stale handle or a lost login, logs in again, finds the key by label
    /// and tries once more.
    fn with_key<T>(
        &self,
        what: &str,
        key: &TokenKey,
        op: impl Fn(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<T, HsmError> {
        self.token
            .with_session(what, |s| match op(s, key.handle()) {
                Err(e) if recoverable(&e) => {
                    match s.login(UserType::User, Some(&self.token.pin)) {
                        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                        Err(e) => return Err(e),
                    }
                    let found = s.find_objects(&[
                        Attribute::Class(ObjectClass::PRIVATE_KEY),
                        Attribute::Label(key.kid.clone().into_bytes()),
                    ])?;
                    let handle = *found.first().ok_or(e)?;
                    *key.handle.lock().unwrap_or_else(|p| p.into_inner()) = handle;
                    op(s, handle)
                }
                other => other,
            })
    }

    /// `Z` for the transport key `kid` with the sender's `epk` (SPEC §14).
    pub fn ecdh_z(&self, kid: &str, epk: &PublicKey) -> Result<EcdhSecret, JoseError> {
        let key = self
            .transport
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(JoseError::KidUnknown)?;
        let point = epk.to_encoded_point(false);
        let result = self.with_key("ECDH derive (CKM_ECDH1_DERIVE)", key, |s, handle| {
            let params = Ecdh1DeriveParams::new(EcKdf::null(), point.as_bytes());
            let template = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::ValueLen(48u64.into()),
                // A session object, readable once: the derived secret, not the key.
                Attribute::Token(false),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
            ];
            let derived = s.derive_key(&Mechanism::Ecdh1Derive(params), handle, &template)?;
            let value = s.get_attributes(derived, &[AttributeType::Value]);
            let destroyed = s.destroy_object(derived);
            let mut z = Zeroizing::new([0u8; 48]);
            let mut ok = false;
            for a in value? {
                if let Attribute::Value(mut v) = a {
                    if v.len() == 48 {
                        z.copy_from_slice(&v);
                        ok = true;
                    }
                    v.zeroize();
                }
            }
            destroyed?;
            if ok {
                Ok(z)
            } else {
                Err(CkError::NotSupported)
            }
        });
        result.map_err(|e| {
            tracing::error!("key custody: {e}");
            JoseError::Custody
        })
    }

    /// ES384 by the token with the signing key `kid` (raw `r || s`).
    pub fn sign_es384(&self, kid: &str, signing_input: &[u8]) -> Result<[u8; 96], JoseError> {
        let key = self
            .signing
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(JoseError::KidUnknown)?;
        let digest = Sha384::digest(signing_input);
        let sig = self
            .with_key("ECDSA sign (CKM_ECDSA)", key, |s, handle| {
                s.sign(&Mechanism::Ecdsa, handle, &digest)
            })
            .map_err(|e| {
                tracing::error!("key custody: {e}");
                JoseError::Custody
            })?;
        let parsed = Signature::from_slice(&sig).map_err(|_| JoseError::Custody)?;
        // A module that returns a wrong signature must not ship a response
        // the IdP refuses: check it against the public key first.
        VerifyingKey::from(&key.public)
            .verify_prehash(&digest, &parsed)
            .map_err(|_| {
                tracing::error!("key custody: the token's ES384 signature does not verify");
                JoseError::Custody
            })?;
        let mut out = [0u8; 96];
        out.copy_from_slice(&parsed.to_bytes());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    #[test]
    fn a_mechanism_the_module_or_its_proxy_lacks_is_named_with_its_code() {
        let e = describe(
            "token \"t\": ECDH derive (CKM_ECDH1_DERIVE)",
            &CkError::Pkcs11(RvError::MechanismInvalid, Function::DeriveKey),
        )
        .to_string();
        assert!(e.contains("CKM_ECDH1_DERIVE") && e.contains("CKR_MECHANISM_INVALID"));
        assert!(
            e.contains("p11-kit before 0.25") && !e.contains('\n'),
            "{e}"
        );
    }
}

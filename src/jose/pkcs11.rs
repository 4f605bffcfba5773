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
//!
//! Nothing else is locked around a token call either: a key's cached object
//! handle sits behind its own mutex, held only to copy the handle out (and,
//! after a token restart, to store the one found again), never during the
//! call. Whatever serialises calls inside the module (SoftHSM2's own mutexes,
//! an HSM's queue) is the module's; [`Token::stats`] measures it from outside.
//!
//! ## Statistics
//!
//! Every pooled call records, by kind ([`TokenOp`]: ECDH derive, ES384 sign,
//! other), how long the caller *waited* for a session (including opening a
//! new one while the pool grows) and how long it *held* it (the token call
//! and our handling of its answer), in fixed log-linear histograms of
//! atomics: no lock, two clock reads and a few relaxed adds per call, so
//! they are always on. `benches/station.rs` reads them (docs/benchmarks.md).

use super::jwe::EcdhSecret;
use super::jwk::{EcJwk, KeyUse};
use super::JoseError;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::{Mechanism, MechanismInfo, MechanismType};
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
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

/// What a pooled session was taken for; the pool's statistics keep the kinds
/// apart because they cost differently (SPEC §14: decrypt = ECDH derive,
/// sign = ES384).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOp {
    /// `C_DeriveKey` (ECDH) + reading and destroying the derived secret.
    Derive,
    /// `C_Sign` (ECDSA over a SHA-384 digest); our check of the signature
    /// runs after the session is back in the pool.
    Sign,
    /// Listing and generating keys (start-up, `keys generate`).
    Other,
}

/// Values below this many microseconds have a bucket each.
const EXACT_US: u64 = 16;
/// Sub-buckets per power of two above [`EXACT_US`] (2^3): a quantile read
/// from the histogram is at most 1/8 above the true value.
const SUB_BITS: u32 = 3;
/// Powers of two covered above [`EXACT_US`]: up to 2^40 µs (~12 days);
/// anything longer lands in the last bucket.
const OCTAVES: usize = 36;
const BUCKETS: usize = EXACT_US as usize + (OCTAVES << SUB_BITS);

fn bucket_of(us: u64) -> usize {
    if us < EXACT_US {
        return us as usize;
    }
    let octave = 63 - us.leading_zeros(); // >= 4
    let i = (octave as usize - 4) * (1 << SUB_BITS)
        + ((us >> (octave - SUB_BITS)) & ((1 << SUB_BITS) - 1)) as usize;
    (EXACT_US as usize + i).min(BUCKETS - 1)
}

/// The smallest value (µs) that no longer falls into bucket `i`.
fn bucket_end(i: usize) -> u64 {
    if i < EXACT_US as usize {
        return i as u64 + 1;
    }
    let octave = 4 + (i - EXACT_US as usize) / (1 << SUB_BITS);
    let sub = ((i - EXACT_US as usize) % (1 << SUB_BITS)) as u64;
    ((1 << SUB_BITS) + sub + 1) << (octave as u32 - SUB_BITS)
}

/// A latency histogram in atomics (microseconds): lock-free to record and
/// to read; a reading taken while calls record may be off by those calls.
struct Latency {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Latency {
    fn new() -> Self {
        Latency {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }

    fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum: Duration::from_micros(self.sum_us.load(Ordering::Relaxed)),
            max: Duration::from_micros(self.max_us.load(Ordering::Relaxed)),
        }
    }
}

/// A reading of one latency histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencySnapshot {
    buckets: Vec<u64>,
    pub count: u64,
    pub sum: Duration,
    /// Exact (not bucketed).
    pub max: Duration,
}

impl LatencySnapshot {
    /// The `q` quantile (0 < q ≤ 1) as the end of its bucket, capped at the
    /// exact maximum: never below the true value, at most 1/8 above it
    /// (exact below 16 µs). Zero when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let end = Duration::from_micros(bucket_end(i).saturating_sub(1));
                return end.min(self.max);
            }
        }
        self.max
    }

    /// Mean, or zero when nothing was recorded.
    pub fn mean(&self) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        self.sum / u32::try_from(self.count).unwrap_or(u32::MAX)
    }
}

struct OpStats {
    wait: Latency,
    hold: Latency,
    /// Calls that found every session busy and had to wait for one back.
    blocked: AtomicU64,
    /// Calls that got no session (waited [`SESSION_WAIT`] in vain, or
    /// opening one failed).
    no_session: AtomicU64,
}

impl OpStats {
    fn new() -> Self {
        OpStats {
            wait: Latency::new(),
            hold: Latency::new(),
            blocked: AtomicU64::new(0),
            no_session: AtomicU64::new(0),
        }
    }

    fn snapshot(&self) -> OpSnapshot {
        OpSnapshot {
            wait: self.wait.snapshot(),
            hold: self.hold.snapshot(),
            blocked: self.blocked.load(Ordering::Relaxed),
            no_session: self.no_session.load(Ordering::Relaxed),
        }
    }
}

/// Session wait and hold times of one kind of token call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpSnapshot {
    /// From asking the pool to holding a session (opening one included).
    pub wait: LatencySnapshot,
    /// From holding the session to giving it back: the token call.
    pub hold: LatencySnapshot,
    /// Calls that found every session busy.
    pub blocked: u64,
    /// Calls that got no session (custody errors).
    pub no_session: u64,
}

/// The pool's statistics since the token was opened ([`Token::stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// `[keys] sessions`: the most sessions the pool opens.
    pub max_sessions: usize,
    /// Sessions opened so far (the first at start-up; replacements of
    /// broken ones count again).
    pub opened: u64,
    pub derive: OpSnapshot,
    pub sign: OpSnapshot,
    pub other: OpSnapshot,
}

struct PoolStats {
    ops: [OpStats; 3],
    opened: AtomicU64,
}

#[cfg(test)]
impl PoolSnapshot {
    /// A pool of 4 that made one 2 ms derive after waiting 1 ms behind a
    /// busy session, and one 3 ms signature (tests elsewhere in the crate).
    pub(crate) fn example() -> Self {
        let stats = PoolStats::new();
        stats.opened.store(4, Ordering::Relaxed);
        let derive = stats.op(TokenOp::Derive);
        derive.wait.record(Duration::from_millis(1));
        derive.hold.record(Duration::from_millis(2));
        derive.blocked.fetch_add(1, Ordering::Relaxed);
        stats
            .op(TokenOp::Sign)
            .hold
            .record(Duration::from_millis(3));
        stats.op(TokenOp::Sign).wait.record(Duration::ZERO);
        PoolSnapshot {
            max_sessions: 4,
            opened: 4,
            derive: stats.op(TokenOp::Derive).snapshot(),
            sign: stats.op(TokenOp::Sign).snapshot(),
            other: stats.op(TokenOp::Other).snapshot(),
        }
    }
}

impl PoolStats {
    fn new() -> Self {
        PoolStats {
            ops: std::array::from_fn(|_| OpStats::new()),
            opened: AtomicU64::new(0),
        }
    }

    fn op(&self, op: TokenOp) -> &OpStats {
        &self.ops[match op {
            TokenOp::Derive => 0,
            TokenOp::Sign => 1,
            TokenOp::Other => 2,
        }]
    }
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
    stats: PoolStats,
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
            stats: PoolStats::new(),
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

    /// The mechanisms the station needs (SPEC §14) that the module does not
    /// offer for that use, asked with `C_GetMechanismInfo`: CKM_ECDH1_DERIVE
    /// to derive (decrypting requests) and CKM_ECDSA to sign (responses).
    /// Empty when both are there. Asked when `run` starts, so a module — or
    /// a proxy in front of it, such as p11-kit before 0.25 — that cannot
    /// decrypt stops the station with one line, instead of every job
    /// failing at step 4 and going back to the queue for ever.
    pub fn missing_mechanisms(&self) -> Vec<String> {
        type Offers = fn(&MechanismInfo) -> bool;
        let needs: [(MechanismType, &str, &str, Offers); 2] = [
            (
                MechanismType::ECDH1_DERIVE,
                "CKM_ECDH1_DERIVE",
                "derive",
                MechanismInfo::derive,
            ),
            (
                MechanismType::ECDSA,
                "CKM_ECDSA",
                "sign",
                MechanismInfo::sign,
            ),
        ];
        let mut missing = Vec::new();
        for (mechanism, name, use_, offers) in needs {
            match self.ctx.get_mechanism_info(self.slot, mechanism) {
                Ok(info) if offers(&info) => {}
                Ok(_) => missing.push(format!("{name} (offered, but not to {use_})")),
                Err(CkError::Pkcs11(RvError::MechanismInvalid, _)) => {
                    missing.push(format!("{name} (not offered: CKR_MECHANISM_INVALID)"))
                }
                Err(CkError::Pkcs11(rv, _)) => {
                    missing.push(format!("{name} (asking failed: {rv:?})"))
                }
                Err(e) => missing.push(format!("{name} (asking failed: {e})")),
            }
        }
        missing
    }

    /// Session wait and hold times since the token was opened, by kind of
    /// call (lock-free to read; see the module docs).
    pub fn stats(&self) -> PoolSnapshot {
        PoolSnapshot {
            max_sessions: self.max,
            opened: self.stats.opened.load(Ordering::Relaxed),
            derive: self.stats.op(TokenOp::Derive).snapshot(),
            sign: self.stats.op(TokenOp::Sign).snapshot(),
            other: self.stats.op(TokenOp::Other).snapshot(),
        }
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
        self.stats.opened.fetch_add(1, Ordering::Relaxed);
        match s.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(s),
            Err(e) => Err(describe(&what, &e)),
        }
    }

    /// Takes an idle session, or opens one if the pool may grow, or waits
    /// for one to come back. The lock is held only while the list changes.
    /// `blocked` is set when every session was busy.
    fn acquire(&self, blocked: &mut bool) -> Result<Session, HsmError> {
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
            *blocked = true;
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

    /// Runs `f` on a pooled session (no lock held during the call),
    /// counted as [`TokenOp::Other`].
    pub fn with_session<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Session) -> Result<T, CkError>,
    ) -> Result<T, HsmError> {
        self.with_session_as(TokenOp::Other, what, f)
    }

    /// Runs `f` on a pooled session (no lock held during the call) and
    /// records the session's wait and hold times under `op`.
    pub fn with_session_as<T>(
        &self,
        op: TokenOp,
        what: &str,
        f: impl FnOnce(&Session) -> Result<T, CkError>,
    ) -> Result<T, HsmError> {
        let stats = self.stats.op(op);
        let asked = Instant::now();
        let mut blocked = false;
        let acquired = self.acquire(&mut blocked);
        let got = Instant::now();
        stats.wait.record(got - asked);
        if blocked {
            stats.blocked.fetch_add(1, Ordering::Relaxed);
        }
        let session = acquired.inspect_err(|_| {
            stats.no_session.fetch_add(1, Ordering::Relaxed);
        })?;
        let result = f(&session);
        stats.hold.record(got.elapsed());
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
        kind: TokenOp,
        what: &str,
        key: &TokenKey,
        op: impl Fn(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<T, HsmError> {
        self.token
            .with_session_as(kind, what, |s| match op(s, key.handle()) {
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
        let result = self.with_key(
            TokenOp::Derive,
            "ECDH derive (CKM_ECDH1_DERIVE)",
            key,
            |s, handle| {
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
            },
        );
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
            .with_key(TokenOp::Sign, "ECDSA sign (CKM_ECDSA)", key, |s, handle| {
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

    /// Every value falls into the bucket whose range holds it, and the
    /// buckets tile the line without gaps: a quantile read back is never
    /// below the true value and at most 1/8 above it.
    #[test]
    fn histogram_buckets_hold_their_values_within_one_eighth() {
        let mut prev_end = 0;
        for i in 0..BUCKETS - 1 {
            let end = bucket_end(i);
            assert!(end > prev_end, "bucket {i} is empty");
            prev_end = end;
        }
        for us in (0..5_000u64).chain([65_535, 65_536, 1_234_567, 999_999_999]) {
            let i = bucket_of(us);
            let start = if i == 0 { 0 } else { bucket_end(i - 1) };
            assert!(start <= us && us < bucket_end(i), "{us} µs in bucket {i}");
            let reported = bucket_end(i) - 1;
            assert!(
                reported * 8 <= us * 9 || us < EXACT_US,
                "{us} µs read as {reported}"
            );
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    /// p50 / p99 / max / mean of a known sample, and an empty histogram
    /// reads as zero (the bench prints it for a custody that made no call).
    #[test]
    fn latency_quantiles_of_a_known_sample() {
        let h = Latency::new();
        assert_eq!(h.snapshot().quantile(0.5), Duration::ZERO);
        // 1..=1000 µs, then one slow call of 40 ms.
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        h.record(Duration::from_millis(40));
        let s = h.snapshot();
        assert_eq!(s.count, 1001);
        assert_eq!(s.max, Duration::from_millis(40));
        assert_eq!(s.sum, Duration::from_micros(500_500 + 40_000));
        let p50 = s.quantile(0.5).as_micros() as u64;
        assert!((501..=501 * 9 / 8).contains(&p50), "p50 {p50}");
        let p99 = s.quantile(0.99).as_micros() as u64;
        assert!((991..=991 * 9 / 8).contains(&p99), "p99 {p99}");
        assert_eq!(s.quantile(1.0), Duration::from_millis(40));
        assert_eq!(s.mean(), Duration::from_micros(540_500) / 1001);
    }

    /// Records from many threads at once are all counted (relaxed atomics,
    /// no lock), each kind of call in its own histograms.
    #[test]
    fn pool_stats_count_every_call_from_many_threads_by_kind() {
        let stats = PoolStats::new();
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let stats = &stats;
                s.spawn(move || {
                    for i in 0..1000u64 {
                        let op = if i % 2 == 0 {
                            TokenOp::Derive
                        } else {
                            TokenOp::Sign
                        };
                        stats.op(op).wait.record(Duration::from_micros(t));
                        stats.op(op).hold.record(Duration::from_micros(100 + i));
                    }
                });
            }
        });
        let derive = stats.op(TokenOp::Derive).snapshot();
        let sign = stats.op(TokenOp::Sign).snapshot();
        assert_eq!(derive.hold.count, 4000);
        assert_eq!(sign.wait.count, 4000);
        assert_eq!(stats.op(TokenOp::Other).snapshot().hold.count, 0);
        assert_eq!(derive.wait.max, Duration::from_micros(7));
        assert_eq!(sign.hold.max, Duration::from_micros(1099));
        assert_eq!(derive.hold.max, Duration::from_micros(1098));
    }
}

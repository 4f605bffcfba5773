//! Latency injection for simulated keys: a [`Transport`] wrapper that holds
//! back each CTAPHID reply for as long as a real key would need for that
//! command, so throughput figures from `sim:` slots mean something
//! (benchmarks, `demo` with `PREREG_SIM_LATENCY=yubikey`).
//!
//! The delay is chosen from the first (initialisation) packet of each
//! outgoing message: the CTAPHID command byte (CTAP 2.1 §11.2.4), and for
//! CBOR the CTAP command byte plus the clientPIN / config / credMgmt
//! sub-command (the first keys of the canonical request map, §6.5, §6.11,
//! §6.8). The numbers are assumptions, documented in docs/benchmarks.md:
//! YubiKey timings are not published.
//!
//! While a CBOR reply is held back the wrapper sends KEEPALIVE PROCESSING
//! every 100 ms (§11.2.9.1.4), as a busy key does. A touch is modelled as
//! `touch` after the key first asks for one (KEEPALIVE UPNEEDED), then the
//! command's own time.
//!
//! Metering (off unless [`set_metering`]): process-wide counters of the
//! modelled device time, messages per command class, and the simulator's own
//! CPU time (thread CPU time around every call into the wrapped transport,
//! read from `/proc/thread-self/schedstat`), so a benchmark can tell the
//! station's CPU from the simulator's.

use crate::transport::{Report, Transport, TransportError};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

/// Environment variable that switches latency on for `sim:` slots:
/// `off` (default), `yubikey`, or `yubikey:SCALE` (e.g. `yubikey:0.5`).
pub const ENV: &str = "PREREG_SIM_LATENCY";

/// Interval of KEEPALIVEs while busy (CTAP 2.1 §11.2.9.1.4; research §1.6).
const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(100);
/// How often the wrapper looks at the wrapped transport while nothing is due.
const POLL: Duration = Duration::from_millis(1);

// CTAPHID command bytes (CTAP 2.1 §11.2.9), as on the wire (bit 7 clear).
const HID_PING: u8 = 0x01;
const HID_MSG: u8 = 0x03;
const HID_INIT: u8 = 0x06;
const HID_WINK: u8 = 0x08;
const HID_CBOR: u8 = 0x10;
const HID_CANCEL: u8 = 0x11;
const HID_KEEPALIVE: u8 = 0x3b;
/// YubiKey vendor READ_CONFIG (management over CTAPHID).
const HID_READ_CONFIG: u8 = 0x42;
const KEEPALIVE_PROCESSING: u8 = 0x01;
const KEEPALIVE_UPNEEDED: u8 = 0x02;

/// What a message costs the key; our own classification, hence closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandClass {
    Init,
    ReadConfig,
    /// PING, WINK and other short CTAPHID commands.
    Hid,
    /// U2F over CTAPHID_MSG.
    U2f,
    GetInfo,
    /// clientPIN getPINRetries / getUVRetries.
    PinRetries,
    /// clientPIN getKeyAgreement (a fresh P-256 key pair on the key).
    KeyAgreement,
    /// clientPIN setPIN / changePIN (ECDH, decrypt, PIN hash to flash).
    SetPin,
    /// clientPIN getPinToken / getPinUvAuthTokenUsing…WithPermissions.
    PinToken,
    MakeCredential,
    GetAssertion,
    /// One credential-management sub-command (0x0A or the 0x41 preview).
    CredMgmt,
    /// authenticatorConfig setMinPINLength (flash write).
    SetMinPinLength,
    /// Other authenticatorConfig sub-commands.
    Config,
    Reset,
    /// Any other CBOR command.
    OtherCbor,
    /// Unknown CTAPHID command or a packet we cannot read.
    Other,
}

impl CommandClass {
    pub const ALL: [CommandClass; 17] = [
        Self::Init,
        Self::ReadConfig,
        Self::Hid,
        Self::U2f,
        Self::GetInfo,
        Self::PinRetries,
        Self::KeyAgreement,
        Self::SetPin,
        Self::PinToken,
        Self::MakeCredential,
        Self::GetAssertion,
        Self::CredMgmt,
        Self::SetMinPinLength,
        Self::Config,
        Self::Reset,
        Self::OtherCbor,
        Self::Other,
    ];

    fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Init => "CTAPHID_INIT",
            Self::ReadConfig => "READ_CONFIG",
            Self::Hid => "PING/WINK",
            Self::U2f => "U2F MSG",
            Self::GetInfo => "getInfo",
            Self::PinRetries => "getPINRetries",
            Self::KeyAgreement => "getKeyAgreement",
            Self::SetPin => "setPIN/changePIN",
            Self::PinToken => "getPinUvAuthToken",
            Self::MakeCredential => "makeCredential",
            Self::GetAssertion => "getAssertion",
            Self::CredMgmt => "credMgmt",
            Self::SetMinPinLength => "setMinPINLength",
            Self::Config => "config (other)",
            Self::Reset => "reset",
            Self::OtherCbor => "other CBOR",
            Self::Other => "other",
        }
    }

    /// Whether the key may ask for a touch (the model then adds `touch`).
    fn may_need_touch(self) -> bool {
        matches!(
            self,
            Self::MakeCredential | Self::GetAssertion | Self::Reset | Self::U2f
        )
    }
}

/// Classifies an outgoing message from its initialisation packet; `None` for
/// continuation packets and CANCEL (which gets no reply of its own).
pub fn classify(packet: &Report) -> Option<CommandClass> {
    let cmd = packet[4];
    if cmd & 0x80 == 0 {
        return None; // continuation packet (§11.2.4: seq has bit 7 clear)
    }
    let payload = &packet[7..];
    let class = match cmd & 0x7f {
        HID_CANCEL => return None,
        HID_INIT => CommandClass::Init,
        HID_READ_CONFIG => CommandClass::ReadConfig,
        HID_PING | HID_WINK => CommandClass::Hid,
        HID_MSG => CommandClass::U2f,
        HID_CBOR => classify_cbor(payload),
        _ => CommandClass::Other,
    };
    Some(class)
}

/// CTAP 2.1 §6: command byte, then the canonical request map.
fn classify_cbor(payload: &[u8]) -> CommandClass {
    let Some((&command, map)) = payload.split_first() else {
        return CommandClass::Other;
    };
    match command {
        0x01 => CommandClass::MakeCredential,
        0x02 | 0x08 => CommandClass::GetAssertion,
        0x04 => CommandClass::GetInfo,
        0x07 => CommandClass::Reset,
        // clientPIN (§6.5.5): subCommand is key 0x02.
        0x06 => match small_uint_value(map, 0x02) {
            Some(0x01) | Some(0x07) => CommandClass::PinRetries,
            Some(0x02) => CommandClass::KeyAgreement,
            Some(0x03) | Some(0x04) => CommandClass::SetPin,
            Some(0x05) | Some(0x06) | Some(0x09) => CommandClass::PinToken,
            _ => CommandClass::OtherCbor,
        },
        // authenticatorConfig (§6.11): subCommand is key 0x01; 0x03 setMinPINLength.
        0x0d => match small_uint_value(map, 0x01) {
            Some(0x03) => CommandClass::SetMinPinLength,
            _ => CommandClass::Config,
        },
        0x0a | 0x41 => CommandClass::CredMgmt,
        _ => CommandClass::OtherCbor,
    }
}

/// The value of `key` in a CBOR map whose leading entries are small unsigned
/// integers (keys 0..=23, values 0..=255), as in every request classified here;
/// stops at the first entry it cannot read.
fn small_uint_value(map: &[u8], key: u8) -> Option<u8> {
    let (&header, mut rest) = map.split_first()?;
    if !(0xa0..=0xb7).contains(&header) {
        return None;
    }
    for _ in 0..(header - 0xa0) {
        let (&k, r) = rest.split_first()?;
        if k > 0x17 {
            return None;
        }
        let (v, r) = match r.split_first()? {
            (&v, r) if v <= 0x17 => (v, r),
            (&0x18, r) => {
                let (&v, r) = r.split_first()?;
                (v, r)
            }
            _ => return None,
        };
        if k == key {
            return Some(v);
        }
        rest = r;
    }
    None
}

/// Time a key needs per command class, plus the touch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyModel {
    delays: [Duration; CommandClass::ALL.len()],
    /// From the key's first UPNEEDED to the touch registering (rig actuator).
    pub touch: Duration,
    /// Each delay is drawn uniformly from ±`jitter` (a fraction) around its
    /// value, so slots that start together do not stay in lockstep.
    pub jitter: f64,
}

impl LatencyModel {
    /// No delay at all (the plain simulator).
    pub fn zero() -> Self {
        Self {
            delays: [Duration::ZERO; CommandClass::ALL.len()],
            touch: Duration::ZERO,
            jitter: 0.0,
        }
    }

    /// Assumed YubiKey 5 (firmware 5.7) timings over USB HID; sources and
    /// reasoning in docs/benchmarks.md. Not measured on a key.
    pub fn yubikey() -> Self {
        let ms = Duration::from_millis;
        let mut m = Self {
            touch: ms(200),
            jitter: 0.1,
            ..Self::zero()
        };
        for (class, d) in [
            (CommandClass::Init, ms(2)),
            (CommandClass::ReadConfig, ms(5)),
            (CommandClass::Hid, ms(2)),
            (CommandClass::U2f, ms(100)),
            (CommandClass::GetInfo, ms(10)),
            (CommandClass::PinRetries, ms(10)),
            (CommandClass::KeyAgreement, ms(60)),
            (CommandClass::SetPin, ms(250)),
            (CommandClass::PinToken, ms(120)),
            (CommandClass::MakeCredential, ms(300)),
            (CommandClass::GetAssertion, ms(150)),
            (CommandClass::CredMgmt, ms(30)),
            (CommandClass::SetMinPinLength, ms(150)),
            (CommandClass::Config, ms(150)),
            (CommandClass::Reset, ms(500)),
            (CommandClass::OtherCbor, ms(20)),
            (CommandClass::Other, ms(5)),
        ] {
            m.set(class, d);
        }
        m
    }

    /// Every delay (and the touch) multiplied by `factor` (≥ 0).
    pub fn scaled(mut self, factor: f64) -> Self {
        let f = factor.max(0.0);
        for d in &mut self.delays {
            *d = d.mul_f64(f);
        }
        self.touch = self.touch.mul_f64(f);
        self
    }

    /// The nominal delay of `class` (no jitter).
    pub fn delay(&self, class: CommandClass) -> Duration {
        self.delays[class.index()]
    }

    /// `d` with this model's jitter applied.
    fn jittered(&self, d: Duration) -> Duration {
        if self.jitter <= 0.0 || d.is_zero() {
            return d;
        }
        let j = self.jitter.min(1.0);
        d.mul_f64(1.0 + rand::Rng::gen_range(&mut rand::thread_rng(), -j..=j))
    }

    pub fn set(&mut self, class: CommandClass, d: Duration) {
        self.delays[class.index()] = d;
    }

    /// `off`, `yubikey` or `yubikey:SCALE`; anything else is an error naming the forms.
    pub fn parse(text: &str) -> Result<Option<Self>, String> {
        let text = text.trim();
        match text.split_once(':') {
            _ if text.is_empty() || text == "off" => Ok(None),
            None if text == "yubikey" => Ok(Some(Self::yubikey())),
            Some(("yubikey", scale)) => match scale.parse::<f64>() {
                Ok(f) if f.is_finite() && f >= 0.0 => Ok(Some(Self::yubikey().scaled(f))),
                _ => Err(format!("{ENV}: bad scale {scale:?} (a number ≥ 0)")),
            },
            _ => Err(format!(
                "{ENV}: {text:?} is not off, yubikey or yubikey:SCALE"
            )),
        }
    }
}

fn model_cell() -> &'static RwLock<Option<LatencyModel>> {
    static MODEL: OnceLock<RwLock<Option<LatencyModel>>> = OnceLock::new();
    MODEL.get_or_init(|| {
        let model = match std::env::var(ENV) {
            Ok(v) => LatencyModel::parse(&v).unwrap_or_else(|e| {
                tracing::warn!("{e}; simulated keys run without latency");
                None
            }),
            Err(_) => None,
        };
        RwLock::new(model)
    })
}

/// The model [`wrap`] applies now (first read from [`ENV`]).
pub fn model() -> Option<LatencyModel> {
    *model_cell().read().unwrap_or_else(|e| e.into_inner())
}

/// Replaces the process-wide model (benchmarks); `None` turns latency off.
pub fn set_model(model: Option<LatencyModel>) {
    *model_cell().write().unwrap_or_else(|e| e.into_inner()) = model;
}

/// Wraps a simulated key's transport with the current model, if any.
pub fn wrap(transport: Box<dyn Transport>) -> Box<dyn Transport> {
    match model() {
        Some(model) => {
            WRAPPED.fetch_add(1, Ordering::Relaxed);
            Box::new(LatencyTransport::new(transport, model))
        }
        None => transport,
    }
}

static WRAPPED: AtomicU64 = AtomicU64::new(0);
static METERING: AtomicBool = AtomicBool::new(false);
static SIM_CPU_NS: AtomicU64 = AtomicU64::new(0);
static METERED_CALLS: AtomicU64 = AtomicU64::new(0);
static MODELLED_NS: AtomicU64 = AtomicU64::new(0);
static MESSAGES: [AtomicU64; CommandClass::ALL.len()] =
    [const { AtomicU64::new(0) }; CommandClass::ALL.len()];

/// Turns the simulator CPU meter on or off (it costs two small file reads per call).
pub fn set_metering(on: bool) {
    METERING.store(on, Ordering::SeqCst);
}

/// Process-wide counters since the last [`reset_stats`].
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Transports [`wrap`] has wrapped (0: the hook is not in place).
    pub wrapped: u64,
    /// Thread CPU time spent inside the wrapped transports (the simulator).
    pub sim_cpu: Duration,
    /// Calls the CPU meter bracketed (each costs two schedstat reads).
    pub metered_calls: u64,
    /// Device time the model imposed (command delays and touches).
    pub modelled: Duration,
    /// Messages sent, per class.
    pub messages: Vec<(CommandClass, u64)>,
}

pub fn stats() -> Stats {
    Stats {
        wrapped: WRAPPED.load(Ordering::Relaxed),
        sim_cpu: Duration::from_nanos(SIM_CPU_NS.load(Ordering::Relaxed)),
        metered_calls: METERED_CALLS.load(Ordering::Relaxed),
        modelled: Duration::from_nanos(MODELLED_NS.load(Ordering::Relaxed)),
        messages: CommandClass::ALL
            .iter()
            .map(|c| (*c, MESSAGES[c.index()].load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect(),
    }
}

pub fn reset_stats() {
    for a in [&WRAPPED, &SIM_CPU_NS, &METERED_CALLS, &MODELLED_NS]
        .into_iter()
        .chain(MESSAGES.iter())
    {
        a.store(0, Ordering::Relaxed);
    }
}

/// CPU time of the calling thread (Linux `/proc/thread-self/schedstat`, ns on CPU).
pub fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = text.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Runs `f` (a call into the simulator), charging its thread CPU time when metering.
fn metered<R>(f: impl FnOnce() -> R) -> R {
    if !METERING.load(Ordering::Relaxed) {
        return f();
    }
    let before = thread_cpu_time();
    let r = f();
    if let (Some(a), Some(b)) = (before, thread_cpu_time()) {
        SIM_CPU_NS.fetch_add(b.saturating_sub(a).as_nanos() as u64, Ordering::Relaxed);
        METERED_CALLS.fetch_add(1, Ordering::Relaxed);
    }
    r
}

/// The request whose reply is being held back.
#[derive(Debug)]
struct Pending {
    cid: [u8; 4],
    class: CommandClass,
    /// This message's delay (jitter drawn) and touch time once asked for.
    delay: Duration,
    touch: Duration,
    /// When the reply may go up (recomputed by every packet of the request
    /// and by the first UPNEEDED).
    ready_at: Instant,
    touch_seen: bool,
    released: bool,
    last_keepalive: Instant,
}

/// A transport whose replies come as late as the model says.
pub struct LatencyTransport<T: Transport> {
    inner: T,
    model: LatencyModel,
    pending: Option<Pending>,
    held: VecDeque<Report>,
}

impl<T: Transport> std::fmt::Debug for LatencyTransport<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyTransport")
            .field("inner", &self.inner.describe())
            .field("pending", &self.pending.as_ref().map(|p| p.class))
            .finish_non_exhaustive()
    }
}

impl<T: Transport> LatencyTransport<T> {
    pub fn new(inner: T, model: LatencyModel) -> Self {
        Self {
            inner,
            model,
            pending: None,
            held: VecDeque::new(),
        }
    }

    /// Takes what the wrapped key has ready, without waiting; a reply report is
    /// held back, a KEEPALIVE goes up at once (and an UPNEEDED starts the touch).
    fn pull(&mut self) -> Result<Option<Report>, TransportError> {
        let Some(r) = metered(|| self.inner.recv(Duration::ZERO))? else {
            return Ok(None);
        };
        let Some(p) = self.pending.as_mut().filter(|p| !p.released) else {
            return Ok(Some(r));
        };
        if r[4] == 0x80 | HID_KEEPALIVE {
            if r[7] == KEEPALIVE_UPNEEDED && !p.touch_seen && p.class.may_need_touch() {
                p.touch_seen = true;
                p.touch = self.model.jittered(self.model.touch);
                p.ready_at = Instant::now() + p.touch + p.delay;
                MODELLED_NS.fetch_add(p.touch.as_nanos() as u64, Ordering::Relaxed);
            }
            p.last_keepalive = Instant::now();
            return Ok(Some(r));
        }
        self.held.push_back(r);
        Ok(None)
    }
}

impl<T: Transport> Transport for LatencyTransport<T> {
    fn send(&mut self, report: &Report) -> Result<(), TransportError> {
        let now = Instant::now();
        if let Some(class) = classify(report) {
            // A new request: anything still held belongs to an abandoned one.
            self.held.clear();
            let mut cid = [0u8; 4];
            cid.copy_from_slice(&report[..4]);
            let delay = self.model.jittered(self.model.delay(class));
            MESSAGES[class.index()].fetch_add(1, Ordering::Relaxed);
            MODELLED_NS.fetch_add(delay.as_nanos() as u64, Ordering::Relaxed);
            self.pending = Some(Pending {
                cid,
                class,
                delay,
                touch: Duration::ZERO,
                ready_at: now + delay,
                touch_seen: false,
                released: false,
                last_keepalive: now,
            });
        } else if let Some(p) = self.pending.as_mut().filter(|p| !p.released) {
            // The key starts work when the last packet of the request is in.
            if report[4] & 0x80 == 0 {
                p.ready_at = now + p.touch + p.delay;
            }
        }
        metered(|| self.inner.send(report))
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<Report>, TransportError> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if let Some(p) = self.pending.as_mut() {
                if !p.released && now >= p.ready_at && !self.held.is_empty() {
                    p.released = true;
                }
            }
            let released = self.pending.as_ref().is_none_or(|p| p.released);
            if released {
                if let Some(r) = self.held.pop_front() {
                    return Ok(Some(r));
                }
            }
            if let Some(r) = self.pull()? {
                return Ok(Some(r));
            }
            if !self.held.is_empty() && self.pending.as_ref().is_some_and(|p| p.released) {
                continue;
            }
            // Holding a CBOR reply: keep the host informed, as a busy key does.
            let mut wake = deadline;
            if let Some(p) = self.pending.as_mut().filter(|p| !p.released) {
                if !self.held.is_empty() {
                    wake = wake.min(p.ready_at);
                    if p.class != CommandClass::Init
                        && p.class != CommandClass::ReadConfig
                        && p.class != CommandClass::Hid
                        && p.class != CommandClass::U2f
                        && p.class != CommandClass::Other
                    {
                        let next = p.last_keepalive + KEEPALIVE_INTERVAL;
                        if now >= next {
                            p.last_keepalive = now;
                            return Ok(Some(keepalive(p.cid, KEEPALIVE_PROCESSING)));
                        }
                        wake = wake.min(next);
                    }
                } else {
                    wake = wake.min(now + POLL);
                }
            } else {
                wake = wake.min(now + POLL);
            }
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(
                wake.saturating_duration_since(now)
                    .max(Duration::from_micros(50)),
            );
        }
    }

    fn describe(&self) -> String {
        format!("{} (+latency)", self.inner.describe())
    }
}

/// A KEEPALIVE initialisation packet (§11.2.9.1.4).
fn keepalive(cid: [u8; 4], status: u8) -> Report {
    let mut r = [0u8; 64];
    r[..4].copy_from_slice(&cid);
    r[4] = 0x80 | HID_KEEPALIVE;
    r[6] = 1;
    r[7] = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::memory;

    fn init_packet(cmd: u8, payload: &[u8]) -> Report {
        let mut r = [0u8; 64];
        r[..4].copy_from_slice(&[1, 2, 3, 4]);
        r[4] = 0x80 | cmd;
        r[6] = payload.len() as u8;
        r[7..7 + payload.len()].copy_from_slice(payload);
        r
    }

    #[test]
    fn classifies_by_command_and_subcommand() {
        let c = |cmd, p: &[u8]| classify(&init_packet(cmd, p));
        assert_eq!(c(HID_INIT, &[0; 8]), Some(CommandClass::Init));
        assert_eq!(c(HID_READ_CONFIG, &[0]), Some(CommandClass::ReadConfig));
        assert_eq!(c(HID_CBOR, &[0x04]), Some(CommandClass::GetInfo));
        // clientPIN {1: 2, 2: 2} = getKeyAgreement, protocol two
        assert_eq!(
            c(HID_CBOR, &[0x06, 0xa2, 0x01, 0x02, 0x02, 0x02]),
            Some(CommandClass::KeyAgreement)
        );
        // clientPIN {1: 1, 2: 3, 3: {...}} = setPIN
        assert_eq!(
            c(HID_CBOR, &[0x06, 0xa5, 0x01, 0x01, 0x02, 0x03, 0x03, 0xa5]),
            Some(CommandClass::SetPin)
        );
        assert_eq!(
            c(HID_CBOR, &[0x06, 0xa5, 0x01, 0x02, 0x02, 0x09, 0x03, 0xa5]),
            Some(CommandClass::PinToken)
        );
        assert_eq!(
            c(HID_CBOR, &[0x06, 0xa2, 0x01, 0x02, 0x02, 0x01]),
            Some(CommandClass::PinRetries)
        );
        // config {1: 3, 2: {...}}
        assert_eq!(
            c(HID_CBOR, &[0x0d, 0xa4, 0x01, 0x03, 0x02, 0xa1]),
            Some(CommandClass::SetMinPinLength)
        );
        assert_eq!(
            c(HID_CBOR, &[0x0d, 0xa1, 0x01, 0x02]),
            Some(CommandClass::Config)
        );
        assert_eq!(
            c(HID_CBOR, &[0x01, 0xa5]),
            Some(CommandClass::MakeCredential)
        );
        assert_eq!(c(HID_CBOR, &[0x41, 0xa1]), Some(CommandClass::CredMgmt));
        // Truncated or odd maps never panic.
        assert_eq!(c(HID_CBOR, &[0x06]), Some(CommandClass::OtherCbor));
        assert_eq!(
            c(HID_CBOR, &[0x06, 0xa2, 0x01]),
            Some(CommandClass::OtherCbor)
        );
        assert_eq!(c(HID_CBOR, &[]), Some(CommandClass::OtherCbor));
        assert_eq!(c(HID_CANCEL, &[]), None);
        let mut cont = init_packet(0, &[]);
        cont[4] = 0x00;
        assert_eq!(classify(&cont), None);
    }

    #[test]
    fn parses_the_environment_forms() {
        assert_eq!(LatencyModel::parse("off"), Ok(None));
        assert_eq!(LatencyModel::parse(""), Ok(None));
        assert_eq!(
            LatencyModel::parse("yubikey"),
            Ok(Some(LatencyModel::yubikey()))
        );
        let j = LatencyModel::yubikey();
        for _ in 0..100 {
            let d = j.jittered(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(90) && d <= Duration::from_millis(110));
        }
        let half = LatencyModel::parse("yubikey:0.5").unwrap().unwrap();
        assert_eq!(
            half.delay(CommandClass::MakeCredential),
            Duration::from_millis(150)
        );
        assert!(LatencyModel::parse("yubikey:-1").is_err());
        assert!(LatencyModel::parse("fast").is_err());
    }

    #[test]
    fn holds_a_reply_for_the_modelled_time_with_keepalives() {
        let (host, mut device) = memory::pair("latency");
        let mut model = LatencyModel::zero();
        model.set(CommandClass::GetInfo, Duration::from_millis(250));
        let mut t = LatencyTransport::new(host, model);
        let started = Instant::now();
        t.send(&init_packet(HID_CBOR, &[0x04])).unwrap();
        let request = device.recv(Duration::from_secs(1)).unwrap().unwrap();
        assert_eq!(request[7], 0x04);
        let reply = init_packet(HID_CBOR, &[0x00, 0xa0]);
        device.send(&reply).unwrap();
        let mut keepalives = 0;
        let got = loop {
            let r = t.recv(Duration::from_secs(1)).unwrap().unwrap();
            if r[4] == 0x80 | HID_KEEPALIVE {
                assert_eq!(r[7], KEEPALIVE_PROCESSING);
                assert_eq!(&r[..4], &[1, 2, 3, 4]);
                keepalives += 1;
                continue;
            }
            break r;
        };
        let took = started.elapsed();
        assert_eq!(got, reply);
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!((1..=3).contains(&keepalives), "{keepalives}");
        // A short wait before the reply is due gives nothing, not an error.
        t.send(&init_packet(HID_CBOR, &[0x04])).unwrap();
        device.recv(Duration::from_secs(1)).unwrap().unwrap();
        device.send(&reply).unwrap();
        assert_eq!(t.recv(Duration::from_millis(20)).unwrap(), None);
    }
}

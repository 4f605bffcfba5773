//! The simulated YubiKey (SPEC §10).
//!
//! A software authenticator that behaves like a YubiKey of a given firmware
//! profile, deterministic from a seed, with fault injection. Layout:
//! [`authenticator`] (CTAP 2.1 logic, no I/O), [`hid`] (device-side CTAPHID),
//! [`store`] (resident credentials), [`attestation`] (the seed-derived
//! simulator CA), [`faults`] (scripted failures), [`udp`] (the UDP HID bridge),
//! [`u2f`] (CTAP1/U2F over CTAPHID_MSG), [`latency`] (a real key's timing, for
//! benchmarks and `PREREG_SIM_LATENCY`).
//!
//! Handles: [`SimKey`] is a [`Transport`] the host stack talks to in-process;
//! [`SimControl`] (cloneable) is what a rig or a test holds to touch,
//! power-cycle, unplug and inspect the key. Both share one mutex-guarded
//! device: the key does all its work synchronously inside `send`/`recv`, so
//! no thread is needed in-process, and the UDP server thread is just another
//! caller of the same two methods.

pub mod attestation;
pub mod authenticator;
pub mod card;
pub mod cred_key;
pub mod faults;
pub mod hid;
#[cfg(test)]
mod host_fault_tests;
pub mod latency;
pub mod store;
pub mod u2f;
pub mod udp;

pub use authenticator::PinStatus;
pub use faults::FaultPlan;
pub use store::CredentialMeta;

use crate::profile::{self, FirmwareProfile};
use crate::transport::{Report, Transport, TransportError};
use crate::yubikey::{Capabilities, DeviceInfo};
use authenticator::{Authenticator, AuthenticatorConfig};
use hid::HidDevice;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why a simulated key could not be made.
#[derive(Debug, Error)]
pub enum SimError {
    #[error(transparent)]
    Profile(#[from] profile::ProfileError),
    #[error("firmware profile {profile} has no product {product}")]
    UnknownProduct { profile: String, product: u32 },
    #[error("attestation: {0}")]
    Attestation(String),
    #[error("UDP bridge: {0}")]
    Io(String),
}

/// Time as the simulator sees it, so "10 s after power-up" and touch timeouts
/// are testable without sleeping.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time since an arbitrary, fixed origin.
    fn now(&self) -> Duration;
}

/// Wall-clock time since creation.
#[derive(Debug)]
pub struct SystemClock(Instant);

impl Default for SystemClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(Mutex<Duration>);

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Who presses the key's touch sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TouchMode {
    /// Every user-presence check passes at once.
    Auto,
    /// Only a rig's touch (`SimControl::touch`) while the key waits (KEEPALIVE UPNEEDED meanwhile).
    Rig,
    /// Nobody touches: user-presence checks time out.
    Never,
}

/// How to make a simulated key.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub profile: FirmwareProfile,
    pub product_id: u32,
    pub serial: u32,
    /// Seeds the key's randomness (credential keys, tokens, channel ids).
    pub seed: u64,
    /// Seeds the attestation CA (the same for every key of one `sim serve`).
    pub ca_seed: u64,
    pub touch: TouchMode,
    /// How long a command waits for a touch (YubiKey: 30 s).
    pub touch_timeout: Duration,
    /// AAGUID override; default the product's first AAGUID in the profile.
    pub aaguid: Option<[u8; 16]>,
}

impl SimConfig {
    /// A key of the built-in profile `profile_name`, product `product_id`.
    pub fn builtin(profile_name: &str, product_id: u32) -> Result<Self, SimError> {
        Self::new(profile::builtin_profile(profile_name)?, product_id)
    }

    /// A key of `profile`, product `product_id`; serial 10000001, seed 0, auto touch.
    pub fn new(profile: FirmwareProfile, product_id: u32) -> Result<Self, SimError> {
        if profile.product(product_id).is_none() {
            return Err(SimError::UnknownProduct {
                profile: profile.name.clone(),
                product: product_id,
            });
        }
        Ok(Self {
            profile,
            product_id,
            serial: 10_000_001,
            seed: 0,
            ca_seed: 0,
            touch: TouchMode::Auto,
            touch_timeout: Duration::from_secs(30),
            aaguid: None,
        })
    }

    /// The first product the profile lists.
    pub fn default_product(profile: &FirmwareProfile) -> u32 {
        profile.products.first().map(|p| p.product_id).unwrap_or(1)
    }

    pub fn serial(mut self, serial: u32) -> Self {
        self.serial = serial;
        self
    }
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    pub fn ca_seed(mut self, seed: u64) -> Self {
        self.ca_seed = seed;
        self
    }
    pub fn touch(mut self, mode: TouchMode) -> Self {
        self.touch = mode;
        self
    }
    pub fn touch_timeout(mut self, t: Duration) -> Self {
        self.touch_timeout = t;
        self
    }

    fn aaguid_bytes(&self) -> [u8; 16] {
        self.aaguid.unwrap_or_else(|| {
            self.profile
                .product(self.product_id)
                .and_then(|p| p.aaguids.first())
                .and_then(|a| profile::parse_uuid(a))
                .unwrap_or_default()
        })
    }

    /// The READ_CONFIG device info this key reports (research §3.2).
    pub fn device_info(&self) -> DeviceInfo {
        let product = profile::product(self.product_id);
        let nfc = product.is_some_and(|p| p.nfc);
        let fips = product.is_some_and(|p| p.fips);
        let sky = product.is_some_and(|p| p.sky);
        let caps = if sky {
            Capabilities(Capabilities::U2F | Capabilities::FIDO2)
        } else {
            Capabilities(
                Capabilities::OTP
                    | Capabilities::U2F
                    | Capabilities::OPENPGP
                    | Capabilities::PIV
                    | Capabilities::OATH
                    | Capabilities::FIDO2,
            )
        };
        let complexity_known = self.profile.firmware >= crate::yubikey::Version::new(5, 7, 0);
        DeviceInfo {
            serial: Some(self.serial),
            form_factor: product.map(|p| p.form_factor).unwrap_or_default(),
            is_fips_series: fips,
            is_sky: sky,
            firmware: Some(self.profile.firmware),
            usb_supported: Some(caps),
            usb_enabled: Some(caps),
            nfc_supported: nfc.then_some(caps),
            nfc_enabled: nfc.then_some(caps),
            config_locked: Some(false),
            fips_capable: fips.then_some(Capabilities(Capabilities::FIDO2)),
            fips_approved: fips.then_some(Capabilities(0)),
            pin_complexity: complexity_known
                .then(|| self.profile.pin_complexity_for(self.product_id)),
            ..DeviceInfo::default()
        }
    }
}

#[derive(Debug)]
struct Inner {
    device: Mutex<HidDevice>,
    clock: Arc<dyn Clock>,
    serial: u32,
    profile: String,
    product_id: u32,
    /// The rig switched the slot's power off: the key is still in the slot
    /// (not taken out by the operator) and comes back on power-up.
    powered_off: std::sync::atomic::AtomicBool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HidDevice> {
        // A panic while holding the lock would be a simulator bug; keep serving.
        self.device.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An in-process simulated key: the [`Transport`] the host stack talks to.
#[derive(Debug)]
pub struct SimKey {
    inner: Arc<Inner>,
}

/// The rig's and the test's handle on a simulated key.
#[derive(Debug, Clone)]
pub struct SimControl {
    inner: Arc<Inner>,
}

impl SimKey {
    /// A blank key with the wall clock.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        Self::with_clock(config, Arc::new(SystemClock::default()))
    }

    /// A blank key with the given clock, powered up at `clock.now()`.
    pub fn with_clock(config: SimConfig, clock: Arc<dyn Clock>) -> Result<Self, SimError> {
        let now = clock.now();
        let info = config.device_info();
        let auth = Authenticator::new(
            AuthenticatorConfig {
                profile: config.profile.clone(),
                product_id: config.product_id,
                aaguid: config.aaguid_bytes(),
                seed: config.seed,
                ca_seed: config.ca_seed,
            },
            now,
        )?;
        // Channel ids start at a seed-derived value, like a real key's random ones.
        let first_cid =
            (config.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33) as u32 | 0x0100_0000;
        let device = HidDevice::new(auth, info, first_cid, config.touch, config.touch_timeout);
        Ok(Self {
            inner: Arc::new(Inner {
                device: Mutex::new(device),
                clock,
                serial: config.serial,
                profile: config.profile.name.clone(),
                product_id: config.product_id,
                powered_off: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The control handle of this key.
    pub fn control(&self) -> SimControl {
        SimControl {
            inner: self.inner.clone(),
        }
    }
}

impl Transport for SimKey {
    fn send(&mut self, report: &Report) -> Result<(), TransportError> {
        let now = self.inner.clock.now();
        let mut dev = self.inner.lock();
        if !dev.present {
            return Err(TransportError::Disconnected);
        }
        dev.input(report, now);
        Ok(())
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<Report>, TransportError> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let now = self.inner.clock.now();
                let mut dev = self.inner.lock();
                if !dev.present {
                    return Err(TransportError::Disconnected);
                }
                dev.poll(now);
                if let Some(r) = dev.pop() {
                    return Ok(Some(r));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            std::thread::sleep(left.min(Duration::from_millis(2)));
        }
    }

    fn describe(&self) -> String {
        format!(
            "sim:{} serial {} product {}",
            self.inner.profile, self.inner.serial, self.inner.product_id
        )
    }
}

impl SimControl {
    /// Presses the touch sensor: satisfies the user-presence check a command
    /// is waiting for (touch mode `rig`). A touch with nothing waiting is lost.
    pub fn touch(&self) {
        let mut dev = self.inner.lock();
        if dev.waiting_for_touch() {
            dev.touch_pressed = true;
        }
    }

    /// Whether a command is waiting for a touch (the rig's cue).
    pub fn waiting_for_touch(&self) -> bool {
        self.inner.lock().waiting_for_touch()
    }

    /// Port power off and on: volatile state is lost, the reset window restarts.
    pub fn power_cycle(&self) {
        let now = self.inner.clock.now();
        let mut dev = self.inner.lock();
        dev.present = true;
        self.inner.powered_off.store(false, Ordering::SeqCst);
        // A hung firmware (stuck keepalive) restarts at power-up, as a real key's does.
        dev.faults.endless_keepalive = false;
        dev.power_cycle(now);
    }

    /// Pulls the key out of the slot: I/O fails with `Disconnected` until
    /// [`Self::plug`]. A slot source takes this as "removed".
    pub fn unplug(&self) {
        let mut dev = self.inner.lock();
        self.inner.powered_off.store(false, Ordering::SeqCst);
        dev.unplug();
    }

    /// The rig switched the slot's port off (SPEC §9 `POWER OFF`): I/O fails
    /// like an unplugged key, but the key stays in the slot with its
    /// credentials and PIN; [`Self::plug`] powers it up again (volatile state
    /// lost, reset window restarts).
    pub fn power_off(&self) {
        let mut dev = self.inner.lock();
        self.inner.powered_off.store(true, Ordering::SeqCst);
        dev.unplug();
    }

    /// Whether the key sits unpowered in its slot (after [`Self::power_off`]).
    pub fn is_powered_off(&self) -> bool {
        self.inner.powered_off.load(Ordering::SeqCst)
    }

    /// Inserts the key again (a power-up).
    pub fn plug(&self) {
        self.power_cycle();
    }

    pub fn is_present(&self) -> bool {
        self.inner.lock().present
    }

    pub fn serial(&self) -> u32 {
        self.inner.serial
    }
    pub fn profile_name(&self) -> &str {
        &self.inner.profile
    }
    pub fn product_id(&self) -> u32 {
        self.inner.product_id
    }
    pub fn aaguid(&self) -> [u8; 16] {
        self.inner.lock().auth.aaguid()
    }
    pub fn device_info(&self) -> DeviceInfo {
        self.inner.lock().info.clone()
    }

    /// PIN set?, retries, consecutive failures, forcePINChange, minPINLength.
    pub fn pin_status(&self) -> PinStatus {
        self.inner.lock().auth.pin_status()
    }

    /// Metadata of the resident credentials (never their keys).
    pub fn credentials(&self) -> Vec<CredentialMeta> {
        self.inner.lock().auth.credentials()
    }

    /// WINKs received.
    pub fn winks(&self) -> u64 {
        self.inner.lock().winks
    }

    pub fn set_touch_mode(&self, mode: TouchMode) {
        self.inner.lock().touch_mode = mode;
    }

    /// Replaces the fault plan (indices keep counting from the key's creation).
    pub fn set_faults(&self, plan: FaultPlan) {
        self.inner.lock().faults = plan;
    }

    pub fn faults(&self) -> FaultPlan {
        self.inner.lock().faults.clone()
    }

    /// A second transport handle onto the same key (e.g. for a UDP bridge).
    pub fn transport(&self) -> SimKey {
        SimKey {
            inner: self.inner.clone(),
        }
    }
}

/// The attestation root (PEM) that keys made with `ca_seed` chain to.
pub fn ca_root_pem(ca_seed: u64) -> Result<String, SimError> {
    attestation::root_pem(ca_seed).map_err(|e| SimError::Attestation(e.to_string()))
}

/// Feeds arbitrary bytes to a fresh simulated key (fuzz target `sim_input`
/// and the no-panic test): the first byte picks the path, the rest is either
/// one CTAP2 request straight to the authenticator, or 64-byte reports over
/// CTAPHID on a channel opened first (continuation packets and, with bit 1 of
/// the first byte, init packets get the allocated channel id). Every reply
/// is drained; nothing may panic or hang.
#[doc(hidden)]
pub fn exercise(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let profile = if mode & 0x10 != 0 {
        "yubikey-5.4"
    } else {
        "yubikey-5.7"
    };
    let Ok(cfg) = SimConfig::builtin(profile, 1) else {
        return;
    };
    if mode & 1 == 0 {
        let Ok(mut auth) = Authenticator::new(
            AuthenticatorConfig {
                aaguid: cfg.aaguid_bytes(),
                profile: cfg.profile,
                product_id: cfg.product_id,
                seed: 1,
                ca_seed: 1,
            },
            Duration::ZERO,
        ) else {
            return;
        };
        let _ = auth.process(rest, Duration::ZERO, mode & 2 != 0);
        let _ = auth.process(rest, Duration::from_secs(1), true);
        return;
    }
    let clock = Arc::new(ManualClock::default());
    let Ok(mut key) = SimKey::with_clock(cfg, clock.clone()) else {
        return;
    };
    let mut init = [0u8; 64];
    init[..4].copy_from_slice(&[0xff; 4]);
    init[4..7].copy_from_slice(&[0x86, 0, 8]);
    let _ = key.send(&init);
    let cid = match key.recv(Duration::ZERO) {
        Ok(Some(r)) => [r[15], r[16], r[17], r[18]],
        _ => return,
    };
    for chunk in rest.chunks(64) {
        let mut report = [0u8; 64];
        report[..chunk.len()].copy_from_slice(chunk);
        if report[4] & 0x80 == 0 || mode & 2 != 0 {
            report[..4].copy_from_slice(&cid);
        }
        let _ = key.send(&report);
        clock.advance(Duration::from_millis(u64::from(report[63] & 0x7f) * 10));
        for _ in 0..200 {
            match key.recv(Duration::ZERO) {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
}

//! Simulated slots (`sim:PROFILE`, SPEC §10): a slot that always holds a blank
//! simulated key. When the worker is done with a key the "operator" takes it
//! out and puts in a new blank one (next serial). Without a rig, touch is
//! pressed by the slot's own simulated actuator when the key asks (KEEPALIVE
//! UPNEEDED). With the station's simulated rig (`[rig] simulated = true`) the
//! keys sit in the rig's [`SimKeySlots`] and the slot never presses itself:
//! `TOUCH` and `POWER` come over the rig's serial line, or from the operator
//! when the rig is down (SPEC §9).

use super::source::{KeyLink, KeySource, SourceError};
use crate::profile::{self, FirmwareProfile};
use crate::rig::sim::SimKeySlots;
use crate::sim::{SimConfig, SimControl, SimKey, TouchMode};
use std::sync::{Arc, Mutex};

/// The attestation CA seed of in-process simulated keys: the `sim ca` default,
/// so `prereg-station sim ca --out F` gives the root these keys chain to.
pub const SIM_CA_SEED: u64 = 0;

/// Called with every new simulated key (tests inject faults and keep handles).
pub type SimHook = Arc<dyn Fn(usize, &SimControl) + Send + Sync>;

/// A slot of simulated keys.
pub struct SimSource {
    profile: FirmwareProfile,
    product_id: u32,
    slot: usize,
    seed: u64,
    made: u32,
    current: Option<SimControl>,
    hook: Option<SimHook>,
    /// The simulated rig's slots, when the station runs one.
    rig_slots: Option<SimKeySlots>,
    /// Every key this slot made, in order.
    pub keys: Arc<Mutex<Vec<SimControl>>>,
}

impl std::fmt::Debug for SimSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSource")
            .field("profile", &self.profile.name)
            .field("slot", &self.slot)
            .field("made", &self.made)
            .finish_non_exhaustive()
    }
}

impl SimSource {
    /// Keys of built-in profile `profile` (its first product), serials unique per
    /// slot; `seed` is the station's simulator seed (the same for every slot).
    pub fn new(profile: &str, slot: usize, seed: u64) -> Result<Self, SourceError> {
        let profile = profile::builtin_profile(profile)
            .map_err(|e| SourceError(format!("sim:{profile}: {e}")))?;
        let product_id = SimConfig::default_product(&profile);
        Ok(Self {
            profile,
            product_id,
            slot,
            seed,
            made: 0,
            current: None,
            hook: None,
            rig_slots: None,
            keys: Arc::default(),
        })
    }

    /// Runs `hook` on every new key.
    pub fn with_hook(mut self, hook: Option<SimHook>) -> Self {
        self.hook = hook;
        self
    }

    /// Puts this slot's keys into the simulated rig's slot of the same index.
    pub fn with_rig_slots(mut self, slots: Option<SimKeySlots>) -> Self {
        self.rig_slots = slots;
        self
    }

    fn insert_blank_key(&mut self) -> Option<SimControl> {
        // 8-digit serials, unique within a run and (for different seeds) across
        // restarts: 2SSS SS KKK = seed bucket, slot, keys made in this slot.
        let bucket = (self.seed % 700) as u32;
        let serial =
            20_000_000 + bucket * 100_000 + (self.slot as u32 % 100) * 1_000 + self.made % 1_000;
        let config = SimConfig::new(self.profile.clone(), self.product_id)
            .ok()?
            .serial(serial)
            .seed(self.seed ^ ((self.slot as u64) << 32) ^ u64::from(self.made))
            .ca_seed(SIM_CA_SEED)
            .touch(TouchMode::Rig);
        let key = SimKey::new(config).ok()?;
        self.made += 1;
        let control = key.control();
        if let Some(hook) = &self.hook {
            hook(self.slot, &control);
        }
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(control.clone());
        if let Some(slots) = &self.rig_slots {
            slots.insert(self.slot, control.clone());
        }
        Some(control)
    }
}

impl SimSource {
    fn remove_current(&mut self) {
        self.current = None;
        if let Some(slots) = &self.rig_slots {
            slots.remove(self.slot);
        }
    }
}

impl KeySource for SimSource {
    fn connect(&mut self) -> Option<KeyLink> {
        if let Some(k) = &self.current {
            if k.is_powered_off() {
                // The rig cut the port's power: the key is still in the slot.
                return None;
            }
            if !k.is_present() {
                // An unplugged key is taken out; the next look finds a new blank one.
                self.remove_current();
                return None;
            }
        }
        if self.current.is_none() {
            self.current = self.insert_blank_key();
        }
        let key = self.current.as_ref()?;
        // The latency model (benches, `PREREG_SIM_LATENCY`) is off unless asked for.
        key.is_present()
            .then(|| KeyLink::Hid(crate::sim::latency::wrap(Box::new(key.transport()))))
    }

    fn key_done(&mut self) {
        self.remove_current();
    }

    fn touch(&mut self) -> bool {
        if self.rig_slots.is_some() {
            // The rig's actuator presses (or the operator, if the rig is down).
            return false;
        }
        match &self.current {
            Some(k) => {
                k.touch();
                true
            }
            None => false,
        }
    }
}

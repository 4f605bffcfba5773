//! The station's [`KeyPolicy`]: firmware profiles (SPEC §8) as the allow-list,
//! the configured customizations for firmware minimums.

use crate::config::Customization;
use crate::job::recipe::{Identity, KeyPolicy};
use crate::profile::{self, ProfileSet};
use crate::shipment::Job;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Key lines (AAGUID, firmware) remembered in memory.
type LineSet = HashSet<([u8; 16], String)>;

/// Matches keys to products and jobs using the loaded firmware profiles.
#[derive(Debug, Clone)]
pub struct ProfilePolicy {
    profiles: ProfileSet,
    /// (AAGUID, firmware) of keys that refused a combined `cm|acfg` token
    /// (issue #16). In memory: a restarted station asks once more.
    separate_tokens: Arc<Mutex<LineSet>>,
}

impl ProfilePolicy {
    pub fn new(profiles: ProfileSet) -> Self {
        Self {
            profiles,
            separate_tokens: Arc::default(),
        }
    }

    /// The profiles of this key's line: they list its AAGUID and cover its
    /// firmware (all of those listing the AAGUID when the firmware is unknown).
    fn profiles_of<'a>(
        &'a self,
        key: &'a Identity,
    ) -> impl Iterator<Item = &'a profile::FirmwareProfile> + 'a {
        let fw = key
            .device_info
            .firmware
            .map(|v| (v.major, v.minor, v.patch))
            .or_else(|| key.info.firmware_version_triple());
        self.profiles
            .iter()
            .filter(move |p| p.lists_aaguid(&key.info.aaguid))
            .filter(move |p| fw.is_none_or(|fw| p.covers_firmware(fw)))
    }

    fn token_memory(&self) -> std::sync::MutexGuard<'_, LineSet> {
        // The set holds no invariant a panic could break.
        self.separate_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn profiles(&self) -> &ProfileSet {
        &self.profiles
    }

    /// Whether the key's device info fits product `id` (form factor, NFC, FIPS).
    fn hardware_fits(key: &Identity, id: u32) -> bool {
        let Some(p) = profile::product(id) else {
            return false;
        };
        let d = &key.device_info;
        // Keys without vendor device info (non-YubiKey peers) are matched on AAGUID only.
        if d.firmware.is_none() && d.serial.is_none() {
            return true;
        }
        d.form_factor == p.form_factor && d.has_nfc() == p.nfc && d.is_fips_series == p.fips
    }
}

impl KeyPolicy for ProfilePolicy {
    fn products_for(&self, key: &Identity) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .profiles
            .iter()
            .flat_map(|p| p.products_for_aaguid(&key.info.aaguid))
            .filter(|&id| Self::hardware_fits(key, id))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    fn mismatch(
        &self,
        key: &Identity,
        job: &Job,
        customization: Option<&Customization>,
    ) -> Option<String> {
        if !self.products_for(key).contains(&job.product_id) {
            let name = profile::product(job.product_id).map_or("unknown product", |p| p.name);
            return Some(format!(
                "wrong product: the job wants {name} (product {}), this key is not one",
                job.product_id
            ));
        }
        if let Some(min) = customization.and_then(|c| c.min_firmware) {
            let fw = key
                .device_info
                .firmware
                .map(|v| (v.major, v.minor, v.patch))
                .or_else(|| key.info.firmware_version_triple());
            match fw {
                Some((a, b, c)) if (a, b, c) >= (min.0, min.1, min.2) => {}
                Some((a, b, c)) => {
                    return Some(format!(
                        "firmware {a}.{b}.{c} is below the customization's minimum {min}"
                    ))
                }
                None => return Some(format!("firmware unknown; the customization needs {min}")),
            }
        }
        None
    }

    fn pin_blocklist(&self, key: &Identity) -> Vec<String> {
        let mut list: Vec<String> = self
            .profiles
            .iter()
            .filter(|p| p.lists_aaguid(&key.info.aaguid))
            .flat_map(|p| p.pin_blocklist.iter().cloned())
            .collect();
        list.sort();
        list.dedup();
        list
    }

    /// Only when every profile of the key's line says so, and at least one
    /// does (an unknown key gets a getKeyAgreement per PIN operation).
    fn keeps_key_agreement(&self, key: &Identity) -> bool {
        let mut any = false;
        for p in self.profiles_of(key) {
            if !p.pin_session.keeps_key_agreement {
                return false;
            }
            any = true;
        }
        any
    }

    fn separate_tokens(&self, key: &Identity) -> bool {
        let refused_before = self
            .token_memory()
            .contains(&(key.info.aaguid, key.firmware.clone()));
        refused_before
            || self
                .profiles_of(key)
                .any(|p| !p.pin_session.combined_token_permissions)
    }

    fn remember_separate_tokens(&self, key: &Identity) {
        self.token_memory()
            .insert((key.info.aaguid, key.firmware.clone()));
    }
}

/// Intake rules that depend on the station: products known to the profiles,
/// customizations in the configuration.
#[derive(Debug)]
pub struct Intake<'a> {
    pub profiles: &'a ProfileSet,
    pub customizations: &'a [Customization],
}

impl crate::shipment::IntakePolicy for Intake<'_> {
    fn product_known(&self, product_id: u32) -> bool {
        self.profiles.for_product(product_id).next().is_some()
    }

    fn customization_products(&self, customization_id: &str) -> Option<Vec<u32>> {
        self.customizations
            .iter()
            .find(|c| c.id == customization_id)
            .map(|c| c.products.clone())
    }
}

//! The simulated YubiKey ([`crate::sim`]) as a contactless card.
//!
//! A real YubiKey 5 NFC runs one FIDO authenticator behind both its USB HID
//! and its NFC interface. [`SimCard`] does the same: the card's CTAP messages
//! go to the very same [`SimKey`] the HID tests use, through an in-process
//! CTAPHID channel, so PIN state, credentials, touch (KEEPALIVE UPNEEDED →
//! SW 9100), faults and the rig's [`SimControl`] behave identically over
//! PC/SC. The management application answers from the key's device info.

use super::vcard::CardBackend;
use crate::ctaphid::{HidChannel, HidError, KeepaliveStatus, Timeouts};
use crate::sim::{SimControl, SimKey};

/// CTAP2_ERR_OTHER (CTAP 2.1 §8.2): what the card answers when the simulated
/// key's HID side fails, so the host sees an authenticator error, not a hang.
const CTAP2_ERR_OTHER: u8 = 0x7F;

/// A simulated key behind the card interface.
pub struct SimCard {
    channel: Option<HidChannel<SimKey>>,
    control: SimControl,
    timeouts: Timeouts,
}

impl std::fmt::Debug for SimCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCard")
            .field("serial", &self.control.serial())
            .finish()
    }
}

impl SimCard {
    /// Wraps `key`; the channel to it is opened now (CTAPHID INIT).
    pub fn new(key: SimKey) -> Result<Self, HidError> {
        let control = key.control();
        // Default timeouts: a touch may take up to the key's 30 s.
        let timeouts = Timeouts::default();
        let channel = HidChannel::open(key, timeouts)?;
        Ok(Self {
            channel: Some(channel),
            control,
            timeouts,
        })
    }

    /// The rig's handle: touch, power cycle, faults, PIN state.
    pub fn control(&self) -> SimControl {
        self.control.clone()
    }

    fn channel(&mut self) -> Result<&mut HidChannel<SimKey>, HidError> {
        if self.channel.is_none() {
            self.channel = Some(HidChannel::open(self.control.transport(), self.timeouts)?);
        }
        self.channel
            .as_mut()
            .ok_or(HidError::Unsupported("channel"))
    }
}

impl CardBackend for SimCard {
    fn ctap(&mut self, request: &[u8], keepalive: &mut dyn FnMut(KeepaliveStatus)) -> Vec<u8> {
        let result = self.channel().and_then(|ch| ch.cbor(request, keepalive));
        match result {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(serial = self.control.serial(), error = %e, "simulated key failed under the card");
                // Re-INIT next time: the key may have been power cycled.
                self.channel = None;
                vec![CTAP2_ERR_OTHER]
            }
        }
    }

    fn management_version(&mut self) -> Option<String> {
        let info = self.control.device_info();
        Some(
            info.effective_firmware()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "0.0.0".into()),
        )
    }

    fn read_config(&mut self, page: u8) -> Option<Vec<u8>> {
        self.control
            .device_info()
            .encode_pages(255)
            .into_iter()
            .nth(usize::from(page))
    }

    fn power_cycle(&mut self) {
        // Leaving the field powers the key down: PIN tokens and the
        // key-agreement key are gone (CTAP 2.1 §6.5.2.1). The CTAPHID channel
        // does not survive either.
        self.control.power_cycle();
        self.channel = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctap2::Client;
    use crate::pcsc::transport::{CardChannel, NfcCtap};
    use crate::pcsc::vcard::VirtualCard;
    use crate::pcsc::{LengthMode, PcscError};
    use crate::sim::SimConfig;

    struct Direct(VirtualCard<SimCard>);
    impl CardChannel for Direct {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, PcscError> {
            Ok(self.0.process(apdu))
        }
        fn describe(&self) -> String {
            "direct".into()
        }
    }

    #[test]
    fn get_info_and_device_info_of_the_simulated_key_over_apdus() {
        let cfg = SimConfig::builtin(
            "yubikey-5.7",
            SimConfig::default_product(&crate::profile::builtin_profile("yubikey-5.7").unwrap()),
        )
        .unwrap()
        .serial(24_681_357);
        let card = SimCard::new(SimKey::new(cfg).unwrap()).unwrap();
        let mut client = Client::new(NfcCtap::new(
            Direct(VirtualCard::new(card)),
            LengthMode::Short,
        ));
        let info = client.get_info().unwrap();
        assert!(
            info.versions.iter().any(|v| v == "FIDO_2_1"),
            "{:?}",
            info.versions
        );
    }
}

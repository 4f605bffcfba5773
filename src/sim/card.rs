//! The simulated key as a contactless card: CTAP messages without CTAPHID
//! framing (CTAP 2.1 §11.3 NFC), for [`crate::pcsc::vcard`]. The same key
//! state serves both links, as on a YubiKey 5 NFC; touch works as over HID
//! ([`SimControl::touch`] while [`SimControl::waiting_for_touch`]), and the
//! card hears UPNEEDED while the key waits.

use super::authenticator::{Authenticator, Outcome};
use super::{SimControl, TouchMode};
use crate::ctap2::StatusCode;
use crate::ctaphid::KeepaliveStatus;
use crate::pcsc::vcard::SimulatedKey;
use std::time::Duration;

/// How often the card path looks for a touch; UPNEEDED goes out every 10th look.
const TOUCH_POLL: Duration = Duration::from_millis(10);

impl SimControl {
    /// One CTAP message (command byte ‖ CBOR) → status ‖ CBOR, blocking while
    /// the key waits for a touch (touch mode `rig`) up to the touch timeout.
    /// Authenticator faults apply; packet faults are CTAPHID-only. An
    /// unplugged key answers CTAP1_ERR_OTHER.
    pub fn ctap(&self, request: &[u8], keepalive: &mut dyn FnMut(KeepaliveStatus)) -> Vec<u8> {
        let started = self.inner.clock.now();
        let timeout = {
            let mut dev = self.inner.lock();
            if !dev.present {
                return vec![StatusCode::OTHER.0];
            }
            dev.touch_pressed = false; // a touch before the request does not count
            let auto = dev.touch_mode == TouchMode::Auto && !dev.faults.refuse_touch;
            dev.auth.faults.store_full = dev.faults.store_full;
            dev.auth.faults.flash_write_failure = dev.faults.flash_write_failure;
            dev.auth.faults.forget_key_agreement = dev.faults.forget_key_agreement;
            match dev.auth.process(request, started, auto) {
                Outcome::Reply(r) => return r,
                Outcome::NeedsTouch => {
                    dev.direct_waiting = true;
                    dev.touch_timeout
                }
            }
        };
        let timed_out = || {
            let command = request.first().copied().unwrap_or_default();
            vec![Authenticator::timeout_status(command).0]
        };
        let mut looks = 0u64;
        loop {
            if looks % 10 == 0 {
                keepalive(KeepaliveStatus::UPNEEDED);
            }
            looks += 1;
            std::thread::sleep(TOUCH_POLL);
            let now = self.inner.clock.now();
            let mut dev = self.inner.lock();
            if !dev.present {
                dev.direct_waiting = false;
                return vec![StatusCode::OTHER.0];
            }
            let touched = std::mem::take(&mut dev.touch_pressed)
                && dev.touch_mode != TouchMode::Never
                && !dev.faults.refuse_touch;
            if touched {
                dev.direct_waiting = false;
                // Re-run at the request's time, as the HID path does (reset window).
                return match dev.auth.process(request, started, true) {
                    Outcome::Reply(r) => r,
                    Outcome::NeedsTouch => timed_out(),
                };
            }
            if now.saturating_sub(started) >= timeout {
                dev.direct_waiting = false;
                return timed_out();
            }
        }
    }

    /// This key as a virtual card backend (`VirtualCard::new(control.virtual_card())`):
    /// CTAP through [`Self::ctap`], management version and READ CONFIG from the key's device info.
    pub fn virtual_card(&self) -> SimulatedKey<CardCore> {
        let control = self.clone();
        let info = self.device_info();
        SimulatedKey::new(Box::new(move |req, ka| control.ctap(req, ka)), info)
    }
}

/// The CTAP core a [`SimulatedKey`] calls: [`SimControl::ctap`] of one key.
pub type CardCore = Box<dyn FnMut(&[u8], &mut dyn FnMut(KeepaliveStatus)) -> Vec<u8> + Send>;

#[cfg(test)]
mod tests {
    use crate::ctap2::{Client, CtapError, Permissions, StatusCode};
    use crate::pcsc::apdu::LengthMode;
    use crate::pcsc::vcard::{CardBackend, VirtualCard};
    use crate::pcsc::{CardChannel, NfcCtap, PcscError};
    use crate::pin::PinProtocol;
    use crate::secret::SecretString;
    use crate::sim::{FaultPlan, ManualClock, SimConfig, SimControl, SimKey, TouchMode};
    use std::sync::Arc;
    use std::time::Duration;

    struct Direct<B: CardBackend>(VirtualCard<B>);
    impl<B: CardBackend> CardChannel for Direct<B> {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, PcscError> {
            Ok(self.0.process(apdu))
        }
        fn describe(&self) -> String {
            "sim card".into()
        }
    }

    fn control(touch: TouchMode, clock: Arc<ManualClock>) -> SimControl {
        let cfg = SimConfig::builtin("yubikey-5.7", 1)
            .unwrap()
            .serial(31_415_926)
            .touch(touch);
        SimKey::with_clock(cfg, clock).unwrap().control()
    }

    #[test]
    fn host_client_over_nfc_programs_the_simulator() {
        let clock = Arc::new(ManualClock::default());
        let ctl = control(TouchMode::Auto, clock);
        let card = VirtualCard::new(ctl.virtual_card());
        let mut c = Client::new(NfcCtap::new(Direct(card), LengthMode::Short));
        let info = c.get_info().unwrap();
        assert_eq!(info.option("clientPin"), Some(false));
        let pin = SecretString::new("482913".to_string());
        c.set_pin(PinProtocol::Two, &pin).unwrap();
        c.get_pin_uv_auth_token_using_pin_with_permissions(
            PinProtocol::Two,
            &pin,
            Permissions::MC,
            Some("example.com"),
        )
        .unwrap();
        // The same key state is seen by the rig's handle.
        assert!(ctl.pin_status().pin_set);
        // Authenticator faults apply on the card path too.
        ctl.set_faults(FaultPlan {
            flash_write_failure: true,
            ..FaultPlan::default()
        });
        let e = c
            .change_pin(PinProtocol::Two, &pin, &SecretString::new("5729104".into()))
            .unwrap_err();
        assert!(matches!(e, CtapError::Status { status, .. } if status == StatusCode::OTHER));
        ctl.unplug();
        assert_eq!(ctl.ctap(&[0x04], &mut |_| {}), vec![StatusCode::OTHER.0]);
    }

    #[test]
    fn card_path_waits_for_the_rig_touch_and_times_out() {
        let clock = Arc::new(ManualClock::default());
        let ctl = control(TouchMode::Rig, clock.clone());
        let mut card = ctl.virtual_card();
        assert_eq!(card.management_version().as_deref(), Some("5.7.1"));
        let page = card.read_config(0).unwrap();
        let info = crate::yubikey::DeviceInfo::parse_pages(&[&page]).unwrap();
        assert_eq!(info.serial, Some(31_415_926));
        // Reset (within 10 s of power-up) needs a touch: the rig touches once asked.
        let rig = ctl.clone();
        let toucher = std::thread::spawn(move || {
            while !rig.waiting_for_touch() {
                std::thread::sleep(Duration::from_millis(2));
            }
            rig.touch();
        });
        let mut keepalives = 0;
        let reply = card.ctap(&[0x07], &mut |s| {
            assert_eq!(s, crate::ctaphid::KeepaliveStatus::UPNEEDED);
            keepalives += 1;
        });
        toucher.join().unwrap();
        assert_eq!(reply, vec![0]);
        assert!(keepalives >= 1);
        assert!(!ctl.waiting_for_touch());
        // Nobody touches: the (manual) clock passes the touch timeout.
        let reply = card.ctap(&[0x0b], &mut |_| clock.advance(Duration::from_secs(31)));
        assert_eq!(reply, vec![StatusCode::USER_ACTION_TIMEOUT.0]);
    }
}

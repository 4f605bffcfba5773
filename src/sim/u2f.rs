//! CTAP1 / FIDO U2F over CTAPHID_MSG (CTAP 2.1 §11.2.9.1.1; FIDO U2F Raw
//! Message Formats 1.2, U2F APDU framing ISO 7816-4): every profile lists
//! `U2F_V2`, and a YubiKey 5 answers all three instructions.
//!
//! - REGISTER (0x01): challenge(32) ‖ application(32) → 0x05 ‖ user public
//!   key (65, uncompressed P-256) ‖ L ‖ key handle(L) ‖ attestation
//!   certificate (DER) ‖ ECDSA signature over 0x00 ‖ application ‖
//!   challenge ‖ key handle ‖ public key, made with the attestation key.
//! - AUTHENTICATE (0x02): challenge ‖ application ‖ L ‖ key handle, P1 0x07
//!   check-only (6985 for a handle of this application, 6A80 otherwise),
//!   0x03 enforce-user-presence, 0x08 don't-enforce → user presence byte ‖
//!   counter (4, BE) ‖ signature over application ‖ presence ‖ counter ‖
//!   challenge, made with the credential key.
//! - VERSION (0x03) → "U2F_V2".
//!
//! Errors: 6700 wrong length, 6E00 CLA not 0, 6D00 unknown INS, 6A80 bad key
//! handle / wrong application, 6985 user presence needed. U2F has no
//! keepalive: a request that needs a touch answers 6985 at once and the key
//! blinks ([`super::SimControl::waiting_for_touch`]); the client polls, and a
//! touch given meanwhile is kept for its next request.
//!
//! Key handles are the simulator's CTAP2 credential ids (AES-GCM-wrapped
//! key, rpIdHash as AAD) with the application parameter as rpIdHash, so a
//! U2F registration works in CTAP2 getAssertion (rpIdHash = appParam) and a
//! non-resident CTAP2 ES256 credential works here (CTAP 2.1 §10.2). Not
//! usable over U2F: EdDSA credentials (U2F is P-256 only) and credProtect 3
//! (userVerificationRequired: U2F cannot verify the user, CTAP 2.1 §12.1).
//! The attestation certificate is the simulator's leaf for the profile's
//! AAGUID ([`super::attestation`]); a real YubiKey uses a separate
//! "Yubico U2F EE" batch certificate.

use super::authenticator::Authenticator;
use super::cred_key::CredAlg;
use super::hid::HidDevice;
use super::TouchMode;
use p256::elliptic_curve::sec1::ToEncodedPoint;

/// ISO 7816 / U2F status words (U2F Raw Message Formats §3.3).
pub mod sw {
    pub const NO_ERROR: u16 = 0x9000;
    pub const CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
    pub const COMMAND_NOT_ALLOWED: u16 = 0x6986;
    pub const WRONG_DATA: u16 = 0x6a80;
    pub const WRONG_LENGTH: u16 = 0x6700;
    pub const CLA_NOT_SUPPORTED: u16 = 0x6e00;
    pub const INS_NOT_SUPPORTED: u16 = 0x6d00;
}

/// U2F instructions.
pub mod ins {
    pub const REGISTER: u8 = 0x01;
    pub const AUTHENTICATE: u8 = 0x02;
    pub const VERSION: u8 = 0x03;
}

/// AUTHENTICATE control byte (P1).
pub mod p1 {
    pub const ENFORCE_USER_PRESENCE: u8 = 0x03;
    pub const CHECK_ONLY: u8 = 0x07;
    pub const DONT_ENFORCE_USER_PRESENCE: u8 = 0x08;
}

/// One U2F answer and what it did with the user's touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct U2fReply {
    /// Response data ‖ status word.
    pub response: Vec<u8>,
    /// The touch was used up (a signature with the presence bit set).
    pub touch_used: bool,
    /// User presence was needed and not there (6985): the key blinks.
    pub touch_needed: bool,
}

impl U2fReply {
    fn status(sw: u16) -> Self {
        Self {
            response: sw.to_be_bytes().to_vec(),
            touch_used: false,
            touch_needed: false,
        }
    }
    fn data(mut data: Vec<u8>, touch_used: bool) -> Self {
        data.extend(sw::NO_ERROR.to_be_bytes());
        Self {
            response: data,
            touch_used,
            touch_needed: false,
        }
    }
    fn needs_touch() -> Self {
        Self {
            touch_needed: true,
            ..Self::status(sw::CONDITIONS_NOT_SATISFIED)
        }
    }
}

/// The data field of a command APDU: short (Lc 1 byte, optional Le 1 byte)
/// or extended (0x00 ‖ Lc 2 bytes, optional Le 2 bytes) encoding; no data
/// with or without Le (ISO 7816-4 §5.1 cases 1–4). U2F clients send the
/// extended form (U2F Raw Message Formats §3.1).
fn data_field(body: &[u8]) -> Result<&[u8], u16> {
    match body {
        [] | [_] => Ok(&[]),  // case 1, case 2 short
        [0, _, _] => Ok(&[]), // case 2 extended
        // python-fido2 sends Lc = 0000 then Le = 0000 for VERSION; keys take it.
        [0, 0, 0, 0, 0] => Ok(&[]),
        [0, hi, lo, rest @ ..] => {
            let lc = usize::from(u16::from_be_bytes([*hi, *lo]));
            if lc != 0 && (rest.len() == lc || rest.len() == lc + 2) {
                Ok(&rest[..lc])
            } else {
                Err(sw::WRONG_LENGTH)
            }
        }
        [lc, rest @ ..] => {
            let lc = usize::from(*lc);
            if rest.len() == lc || rest.len() == lc + 1 {
                Ok(&rest[..lc])
            } else {
                Err(sw::WRONG_LENGTH)
            }
        }
    }
}

/// Runs one U2F command APDU; `touched` = the user's presence is there.
pub fn process(auth: &mut Authenticator, apdu: &[u8], touched: bool) -> U2fReply {
    let [cla, ins, p1, _p2, body @ ..] = apdu else {
        return U2fReply::status(sw::WRONG_LENGTH);
    };
    if *cla != 0 {
        return U2fReply::status(sw::CLA_NOT_SUPPORTED);
    }
    if !matches!(*ins, ins::REGISTER | ins::AUTHENTICATE | ins::VERSION) {
        return U2fReply::status(sw::INS_NOT_SUPPORTED);
    }
    let data = match data_field(body) {
        Ok(d) => d,
        Err(sw) => return U2fReply::status(sw),
    };
    if *ins == ins::VERSION {
        if !data.is_empty() {
            return U2fReply::status(sw::WRONG_LENGTH);
        }
        return U2fReply::data(b"U2F_V2".to_vec(), false);
    }
    // With alwaysUv on, U2F (no user verification) is switched off
    // (CTAP 2.1 §7.2); OpenSK answers SW_COMMAND_NOT_ALLOWED too.
    if auth.always_uv() {
        return U2fReply::status(sw::COMMAND_NOT_ALLOWED);
    }
    if *ins == ins::REGISTER {
        register(auth, data, touched)
    } else {
        authenticate(auth, *p1, data, touched)
    }
}

fn register(auth: &mut Authenticator, data: &[u8], touched: bool) -> U2fReply {
    let Ok::<&[u8; 64], _>(data) = data.try_into() else {
        return U2fReply::status(sw::WRONG_LENGTH);
    };
    if !touched {
        return U2fReply::needs_touch();
    }
    let (challenge, app) = data.split_at(32);
    let app: [u8; 32] = app.try_into().unwrap_or_default();
    let (handle, key) = auth.u2f_new_credential(&app);
    let Ok(sk) = p256::SecretKey::from_slice(key.expose()) else {
        return U2fReply::status(sw::WRONG_DATA);
    };
    let public = sk.public_key().to_encoded_point(false);
    let public = public.as_bytes();
    // Key handles are 61 bytes (nonce ‖ wrapped key ‖ tag), well under 255.
    let handle_len = handle.len() as u8;
    let signed = [&[0u8][..], &app, challenge, &handle, public].concat();
    let signature = auth.attestation().sign(&signed);
    let out = [
        &[0x05u8][..],
        public,
        &[handle_len],
        &handle,
        &auth.attestation().cert_der,
        &signature,
    ]
    .concat();
    U2fReply::data(out, true)
}

fn authenticate(auth: &mut Authenticator, control: u8, data: &[u8], touched: bool) -> U2fReply {
    if data.len() < 65 || data.len() != 65 + usize::from(data[64]) {
        return U2fReply::status(sw::WRONG_LENGTH);
    }
    let (challenge, rest) = data.split_at(32);
    let (app, rest) = rest.split_at(32);
    let app: [u8; 32] = app.try_into().unwrap_or_default();
    let handle = &rest[1..];
    // A handle of this application, ES256, not credProtect 3.
    let cred = auth
        .unwrap_id(handle, &app)
        .filter(|c| c.alg == CredAlg::Es256 && c.cred_protect < 3);
    let Some(cred) = cred else {
        return U2fReply::status(sw::WRONG_DATA);
    };
    let presence = match control {
        p1::CHECK_ONLY => return U2fReply::status(sw::CONDITIONS_NOT_SATISFIED),
        p1::ENFORCE_USER_PRESENCE if !touched => return U2fReply::needs_touch(),
        p1::ENFORCE_USER_PRESENCE => 0x01u8,
        p1::DONT_ENFORCE_USER_PRESENCE => 0x00,
        _ => return U2fReply::status(sw::WRONG_DATA),
    };
    let counter = auth.next_sign_count().to_be_bytes();
    let signed = [&app[..], &[presence], &counter, challenge].concat();
    let Some(signature) = CredAlg::Es256.sign(&cred.key, &signed) else {
        return U2fReply::status(sw::WRONG_DATA);
    };
    let out = [&[presence][..], &counter, &signature].concat();
    U2fReply::data(out, presence == 0x01)
}

/// CTAPHID_MSG on the simulated key: the touch model around [`process`].
/// Auto touch passes at once; in rig mode a touch given while the key blinks
/// (after a 6985) is kept for the client's next poll.
pub(crate) fn msg(dev: &mut HidDevice, apdu: &[u8]) -> Vec<u8> {
    let can_touch = dev.touch_mode != TouchMode::Never && !dev.faults.refuse_touch;
    let auto = dev.touch_mode == TouchMode::Auto && can_touch;
    let touched = auto || (can_touch && dev.touch_pressed);
    let reply = process(&mut dev.auth, apdu, touched);
    if reply.touch_used {
        dev.touch_pressed = false;
        dev.direct_waiting = false;
    }
    if reply.touch_needed {
        // Blink until touched: the rig's cue, as for a CTAP2 UPNEEDED.
        dev.direct_waiting = true;
    }
    reply.response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::authenticator::AuthenticatorConfig;
    use crate::sim::SimConfig;
    use std::time::Duration;

    fn authenticator() -> Authenticator {
        let cfg = SimConfig::builtin("yubikey-5.7", 1).unwrap();
        Authenticator::new(
            AuthenticatorConfig {
                aaguid: [1; 16],
                profile: cfg.profile,
                product_id: 1,
                seed: 1,
                ca_seed: 1,
            },
            Duration::ZERO,
        )
        .unwrap()
    }

    fn sw_of(r: &U2fReply) -> u16 {
        let n = r.response.len();
        u16::from_be_bytes([r.response[n - 2], r.response[n - 1]])
    }

    #[test]
    fn authenticate_lengths_and_control_bytes() {
        let mut a = authenticator();
        let short = |data: &[u8], p1: u8| [&[0, 0x02, p1, 0, data.len() as u8][..], data].concat();
        // Key-handle length byte disagreeing with the data: wrong length.
        let mut data = vec![0u8; 64];
        data.extend([5, 1, 2]);
        assert_eq!(
            sw_of(&process(&mut a, &short(&data, 3), true)),
            sw::WRONG_LENGTH
        );
        assert_eq!(
            sw_of(&process(&mut a, &short(&[0; 64], 3), true)),
            sw::WRONG_LENGTH
        );
        // An empty key handle is no handle of ours.
        let mut data = vec![0u8; 64];
        data.push(0);
        assert_eq!(
            sw_of(&process(&mut a, &short(&data, 7), true)),
            sw::WRONG_DATA
        );
        // A registered handle with an unknown control byte: wrong data;
        // with don't-enforce: signed, presence 0, the touch not used.
        let register = [&[0, ins::REGISTER, 0, 0, 64][..], &[9; 64]].concat();
        let reg = process(&mut a, &register, true);
        assert_eq!(sw_of(&reg), sw::NO_ERROR);
        assert!(reg.touch_used);
        let l = reg.response[66] as usize;
        let handle = &reg.response[67..67 + l];
        let data = [&[9u8; 64][..], &[l as u8], handle].concat();
        assert_eq!(
            sw_of(&process(&mut a, &short(&data, 0x05), true)),
            sw::WRONG_DATA
        );
        let r = process(&mut a, &short(&data, p1::DONT_ENFORCE_USER_PRESENCE), false);
        assert_eq!(
            (sw_of(&r), r.response[0], r.touch_used),
            (sw::NO_ERROR, 0, false)
        );
        let r = process(&mut a, &short(&data, p1::ENFORCE_USER_PRESENCE), false);
        assert!(r.touch_needed);
        assert_eq!(sw_of(&r), sw::CONDITIONS_NOT_SATISFIED);
    }

    #[test]
    fn apdu_data_field_encodings() {
        assert_eq!(data_field(&[]), Ok(&[][..]));
        assert_eq!(data_field(&[0]), Ok(&[][..]));
        assert_eq!(data_field(&[0, 0, 0]), Ok(&[][..]));
        assert_eq!(data_field(&[0, 0, 0, 0, 0]), Ok(&[][..]));
        assert_eq!(data_field(&[0, 0, 2, 7, 8]), Ok(&[7, 8][..]));
        assert_eq!(data_field(&[0, 0, 2, 7, 8, 0, 0]), Ok(&[7, 8][..]));
        assert_eq!(data_field(&[2, 7, 8]), Ok(&[7, 8][..]));
        assert_eq!(data_field(&[2, 7, 8, 0]), Ok(&[7, 8][..]));
        assert_eq!(data_field(&[0, 0, 3, 7, 8]), Err(sw::WRONG_LENGTH));
        assert_eq!(data_field(&[3, 7]), Err(sw::WRONG_LENGTH));
        assert_eq!(data_field(&[0, 0, 0, 1]), Err(sw::WRONG_LENGTH));
    }
}

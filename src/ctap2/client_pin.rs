//! authenticatorClientPIN (0x06, CTAP 2.1 §6.5): retries, key agreement,
//! setPIN, changePIN, and PIN/UV auth tokens. The crypto is `crate::pin`.

use super::types::*;
use super::{no_keepalive, Client, CtapCommand, CtapDevice, CtapError};
use crate::cbor::Value;
use crate::pin::{self, encapsulate, CoseKey, PinProtocol, SharedSecret};
use crate::secret::{SecretBytes, SecretString};
use std::fmt;
use std::ops::BitOr;

const WHAT: &str = "clientPIN";

/// Request and response map keys (§6.5.5.1, research §2.2), public so the
/// simulator decodes with the same names.
pub mod client_pin_keys {
    pub const PIN_UV_AUTH_PROTOCOL: u64 = 0x01;
    pub const SUB_COMMAND: u64 = 0x02;
    pub const KEY_AGREEMENT: u64 = 0x03;
    pub const PIN_UV_AUTH_PARAM: u64 = 0x04;
    pub const NEW_PIN_ENC: u64 = 0x05;
    pub const PIN_HASH_ENC: u64 = 0x06;
    pub const PERMISSIONS: u64 = 0x09;
    pub const RP_ID: u64 = 0x0a;
    /// Response keys.
    pub const RESP_KEY_AGREEMENT: u64 = 0x01;
    pub const RESP_PIN_UV_AUTH_TOKEN: u64 = 0x02;
    pub const RESP_PIN_RETRIES: u64 = 0x03;
    pub const RESP_POWER_CYCLE_STATE: u64 = 0x04;
    pub const RESP_UV_RETRIES: u64 = 0x05;
}
use client_pin_keys as k;

/// clientPIN subCommand (§6.5.5.1). Open newtype.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ClientPinSubCommand(pub u8);

impl ClientPinSubCommand {
    pub const GET_PIN_RETRIES: Self = Self(0x01);
    pub const GET_KEY_AGREEMENT: Self = Self(0x02);
    pub const SET_PIN: Self = Self(0x03);
    pub const CHANGE_PIN: Self = Self(0x04);
    /// Legacy getPinToken (superseded by 0x09 on `pinUvAuthToken` devices).
    pub const GET_PIN_TOKEN: Self = Self(0x05);
    pub const GET_PIN_UV_AUTH_TOKEN_USING_UV_WITH_PERMISSIONS: Self = Self(0x06);
    pub const GET_UV_RETRIES: Self = Self(0x07);
    pub const GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS: Self = Self(0x09);
}

/// pinUvAuthToken permissions (§6.5.5.7). Open bit set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(pub u8);

impl Permissions {
    /// makeCredential
    pub const MC: Self = Self(0x01);
    /// getAssertion
    pub const GA: Self = Self(0x02);
    /// credential management
    pub const CM: Self = Self(0x04);
    /// bio enrollment
    pub const BE: Self = Self(0x08);
    /// large blob write
    pub const LBW: Self = Self(0x10);
    /// authenticator configuration
    pub const ACFG: Self = Self(0x20);
    /// persistent credential-management read-only (CTAP 2.2)
    pub const PCMR: Self = Self(0x40);

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Permissions {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (0x01, "mc"),
            (0x02, "ga"),
            (0x04, "cm"),
            (0x08, "be"),
            (0x10, "lbw"),
            (0x20, "acfg"),
            (0x40, "pcmr"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(b, _)| self.0 & b != 0)
            .map(|(_, n)| *n)
            .collect();
        write!(f, "Permissions({})", set.join("|"))
    }
}

/// getPINRetries result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinRetries {
    pub retries: u64,
    /// True when the authenticator needs a power cycle before the next PIN attempt.
    pub power_cycle_state: Option<bool>,
}

/// A decrypted pinUvAuthToken with the protocol it belongs to.
#[derive(Debug)]
pub struct PinUvAuthToken {
    protocol: PinProtocol,
    token: SecretBytes,
}

impl PinUvAuthToken {
    /// Wraps a token; length 16 or 32 for One, 32 for Two (§6.5.6, §6.5.7).
    pub fn new(protocol: PinProtocol, token: SecretBytes) -> Result<Self, CtapError> {
        let ok = match protocol {
            PinProtocol::One => matches!(token.expose().len(), 16 | 32),
            PinProtocol::Two => token.expose().len() == 32,
        };
        if !ok {
            return Err(malformed(
                WHAT,
                format!("pinUvAuthToken of {} bytes", token.expose().len()),
            ));
        }
        Ok(Self { protocol, token })
    }

    pub fn protocol(&self) -> PinProtocol {
        self.protocol
    }

    /// authenticate(token, message): the pinUvAuthParam over `message`.
    pub fn authenticate(&self, message: &[u8]) -> Vec<u8> {
        pin::authenticate(self.protocol, self.token.expose(), message)
    }

    pub fn expose(&self) -> &[u8] {
        self.token.expose()
    }
}

/// A shared secret kept between PIN operations of one power session, with the
/// platform key the authenticator derived it from (issue #16).
#[derive(Debug)]
pub(crate) struct KeptSecret {
    platform_key: CoseKey,
    shared: SharedSecret,
}

/// Statuses a stale shared secret produces: a MAC that does not verify
/// (setPIN, changePIN) or a PIN hash that decrypts to garbage (token requests).
fn stale_secret_status(e: &CtapError) -> bool {
    matches!(
        e.status(),
        Some(super::StatusCode::PIN_AUTH_INVALID) | Some(super::StatusCode::PIN_INVALID)
    )
}

impl<D: CtapDevice> Client<D> {
    /// Reuse the shared secret of one getKeyAgreement for the following PIN
    /// operations (issue #16), instead of a getKeyAgreement before each as
    /// python-fido2 and libfido2 do. Only for authenticators known to keep
    /// their key-agreement key until power-up or a failed PIN check (CTAP 2.1
    /// §6.5.4; firmware profile `pin_session.keeps_key_agreement`). After a
    /// PIN_AUTH_INVALID or PIN_INVALID on a reused secret the operation is
    /// repeated once with a fresh getKeyAgreement. Switching it off drops the
    /// kept secret.
    pub fn set_key_agreement_reuse(&mut self, on: bool) {
        self.reuse_key_agreement = on;
        if !on {
            self.kept_secret = None;
        }
    }

    /// Whether a shared secret is kept for reuse (tests; never the secret itself).
    pub fn keeps_shared_secret(&self) -> bool {
        self.kept_secret.is_some()
    }

    /// Runs one PIN operation with a shared secret: the kept one when reuse is
    /// on (once more with a fresh one if the authenticator no longer knows it),
    /// else a fresh one. The secret is kept again only after a success.
    fn with_shared_secret<T>(
        &mut self,
        protocol: PinProtocol,
        mut op: impl FnMut(&mut Self, &CoseKey, &SharedSecret) -> Result<T, CtapError>,
    ) -> Result<T, CtapError> {
        let kept = self
            .kept_secret
            .take()
            .filter(|k| self.reuse_key_agreement && k.shared.protocol() == protocol);
        let (platform_key, shared, reused) = match kept {
            Some(k) => (k.platform_key, k.shared, true),
            None => {
                let (pk, ss) = self.shared_secret(protocol)?;
                (pk, ss, false)
            }
        };
        let (platform_key, shared, result) = match op(self, &platform_key, &shared) {
            Err(e) if reused && stale_secret_status(&e) => {
                // The authenticator regenerated its key (power-up, a failed PIN
                // check, or firmware that does not keep it): one fresh try.
                drop(shared);
                let (pk, ss) = self.shared_secret(protocol)?;
                let r = op(self, &pk, &ss);
                (pk, ss, r)
            }
            r => (platform_key, shared, r),
        };
        if result.is_ok() && self.reuse_key_agreement {
            self.kept_secret = Some(KeptSecret {
                platform_key,
                shared,
            });
        }
        result
    }

    fn client_pin(&mut self, params: Vec<(u64, Value)>) -> Result<Option<Value>, CtapError> {
        let map = Value::Map(
            params
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        );
        match self.call(CtapCommand::CLIENT_PIN, Some(&map), &mut no_keepalive)? {
            Some(v) => Ok(Some(reply_map(&v, WHAT)?.clone())),
            None => Ok(None),
        }
    }

    fn base(protocol: PinProtocol, sub: ClientPinSubCommand) -> Vec<(u64, Value)> {
        vec![
            (k::PIN_UV_AUTH_PROTOCOL, Value::from(protocol.number())),
            (k::SUB_COMMAND, Value::from(sub.0)),
        ]
    }

    /// getPINRetries (0x01). YubiKeys answer PIN_NOT_SET when no PIN is set.
    pub fn get_pin_retries(&mut self, protocol: PinProtocol) -> Result<PinRetries, CtapError> {
        let r = self
            .client_pin(Self::base(protocol, ClientPinSubCommand::GET_PIN_RETRIES))?
            .ok_or_else(|| malformed(WHAT, "empty getPINRetries reply"))?;
        Ok(PinRetries {
            retries: opt_u64(&r, k::RESP_PIN_RETRIES, WHAT, "pinRetries")?
                .ok_or_else(|| malformed(WHAT, "pinRetries missing"))?,
            power_cycle_state: opt_bool(&r, k::RESP_POWER_CYCLE_STATE, WHAT, "powerCycleState")?,
        })
    }

    /// getUVRetries (0x07).
    pub fn get_uv_retries(&mut self, protocol: PinProtocol) -> Result<u64, CtapError> {
        let r = self
            .client_pin(Self::base(protocol, ClientPinSubCommand::GET_UV_RETRIES))?
            .ok_or_else(|| malformed(WHAT, "empty getUVRetries reply"))?;
        opt_u64(&r, k::RESP_UV_RETRIES, WHAT, "uvRetries")?
            .ok_or_else(|| malformed(WHAT, "uvRetries missing"))
    }

    /// getKeyAgreement (0x02): the authenticator's current P-256 key.
    pub fn get_key_agreement(&mut self, protocol: PinProtocol) -> Result<CoseKey, CtapError> {
        let r = self
            .client_pin(Self::base(protocol, ClientPinSubCommand::GET_KEY_AGREEMENT))?
            .ok_or_else(|| malformed(WHAT, "empty getKeyAgreement reply"))?;
        let key = r
            .get(k::RESP_KEY_AGREEMENT)
            .ok_or_else(|| malformed(WHAT, "keyAgreement missing"))?;
        Ok(CoseKey::from_cbor(key)?)
    }

    /// A fresh key agreement: getKeyAgreement then encapsulate. Done before
    /// every PIN operation unless reuse is on (see `set_key_agreement_reuse`),
    /// since a wrong PIN makes the authenticator regenerate its key (research §2.2).
    fn shared_secret(
        &mut self,
        protocol: PinProtocol,
    ) -> Result<(CoseKey, SharedSecret), CtapError> {
        let theirs = self.get_key_agreement(protocol)?;
        Ok(encapsulate(protocol, &theirs))
    }

    /// setPIN (0x03): newPinEnc = encrypt(shared, PIN padded to 64 bytes),
    /// pinUvAuthParam = authenticate(shared, newPinEnc).
    pub fn set_pin(
        &mut self,
        protocol: PinProtocol,
        new_pin: &SecretString,
    ) -> Result<(), CtapError> {
        let padded = pin::pad_pin(new_pin)?;
        self.with_shared_secret(protocol, |c, platform_key, shared| {
            let new_pin_enc = shared.encrypt(padded.expose())?;
            let mut p = Self::base(protocol, ClientPinSubCommand::SET_PIN);
            p.push((k::KEY_AGREEMENT, platform_key.to_cbor()));
            p.push((
                k::PIN_UV_AUTH_PARAM,
                Value::from(shared.authenticate(&new_pin_enc)),
            ));
            p.push((k::NEW_PIN_ENC, Value::from(new_pin_enc)));
            c.client_pin(p).map(drop)
        })
    }

    /// changePIN (0x04): pinUvAuthParam = authenticate(shared, newPinEnc ‖ pinHashEnc).
    pub fn change_pin(
        &mut self,
        protocol: PinProtocol,
        current: &SecretString,
        new_pin: &SecretString,
    ) -> Result<(), CtapError> {
        let padded = pin::pad_pin(new_pin)?;
        self.with_shared_secret(protocol, |c, platform_key, shared| {
            let pin_hash_enc = shared.encrypt(pin::pin_hash(current).expose())?;
            let new_pin_enc = shared.encrypt(padded.expose())?;
            let auth = shared.authenticate(&[new_pin_enc.as_slice(), &pin_hash_enc].concat());
            let mut p = Self::base(protocol, ClientPinSubCommand::CHANGE_PIN);
            p.push((k::KEY_AGREEMENT, platform_key.to_cbor()));
            p.push((k::PIN_UV_AUTH_PARAM, Value::from(auth)));
            p.push((k::NEW_PIN_ENC, Value::from(new_pin_enc)));
            p.push((k::PIN_HASH_ENC, Value::from(pin_hash_enc)));
            c.client_pin(p).map(drop)
        })
    }

    /// Legacy getPinToken (0x05), for FIDO_2_1_PRE keys without `pinUvAuthToken`.
    /// Must not carry permissions or rpId (INVALID_PARAMETER otherwise).
    pub fn get_pin_token(
        &mut self,
        protocol: PinProtocol,
        pin: &SecretString,
    ) -> Result<PinUvAuthToken, CtapError> {
        self.pin_token(
            protocol,
            pin,
            ClientPinSubCommand::GET_PIN_TOKEN,
            None,
            None,
        )
    }

    /// getPinUvAuthTokenUsingPinWithPermissions (0x09). `rp_id` binds the token
    /// to one RP (needed for mc/ga; must be absent for cm metadata/enumerateRPs).
    pub fn get_pin_uv_auth_token_using_pin_with_permissions(
        &mut self,
        protocol: PinProtocol,
        pin: &SecretString,
        permissions: Permissions,
        rp_id: Option<&str>,
    ) -> Result<PinUvAuthToken, CtapError> {
        if permissions.0 == 0 {
            return Err(CtapError::InvalidRequest(
                "a token needs at least one permission".into(),
            ));
        }
        self.pin_token(
            protocol,
            pin,
            ClientPinSubCommand::GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS,
            Some(permissions),
            rp_id,
        )
    }

    fn pin_token(
        &mut self,
        protocol: PinProtocol,
        pin: &SecretString,
        sub: ClientPinSubCommand,
        permissions: Option<Permissions>,
        rp_id: Option<&str>,
    ) -> Result<PinUvAuthToken, CtapError> {
        self.with_shared_secret(protocol, |c, platform_key, shared| {
            let pin_hash_enc = shared.encrypt(pin::pin_hash(pin).expose())?;
            let mut p = Self::base(protocol, sub);
            p.push((k::KEY_AGREEMENT, platform_key.to_cbor()));
            p.push((k::PIN_HASH_ENC, Value::from(pin_hash_enc)));
            if let Some(perm) = permissions {
                p.push((k::PERMISSIONS, Value::from(perm.0)));
            }
            if let Some(rp) = rp_id {
                p.push((k::RP_ID, Value::from(rp)));
            }
            let r = c
                .client_pin(p)?
                .ok_or_else(|| malformed(WHAT, "empty token reply"))?;
            let enc = req_bytes(&r, k::RESP_PIN_UV_AUTH_TOKEN, WHAT, "pinUvAuthToken")?;
            let token = shared.decrypt(enc).map_err(|_| {
                malformed(
                    WHAT,
                    format!("pinUvAuthToken ciphertext of {} bytes", enc.len()),
                )
            })?;
            PinUvAuthToken::new(protocol, token)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_device::ScriptedDevice;
    use super::*;
    use crate::pin::KeyAgreement;

    fn ka_reply(auth: &KeyAgreement) -> Option<Value> {
        Some(Value::map([(Value::from(1), auth.public_key().to_cbor())]))
    }

    /// A minimal authenticator-side clientPIN, built from `crate::pin` the way
    /// the simulator is: checks the platform's MACs and PIN hash, returns a token.
    fn authenticator(protocol: PinProtocol, token: [u8; 32]) -> impl FnMut(&[u8]) -> Vec<u8> {
        let auth = KeyAgreement::generate();
        let mut stored_hash: Option<Vec<u8>> = None;
        move |req| {
            let p = crate::cbor::decode(&req[1..]).unwrap();
            let sub = p.get(2u64).unwrap().as_u64().unwrap();
            let reply = |v: Option<Value>| {
                let mut r = vec![0];
                if let Some(v) = v {
                    r.extend(crate::cbor::encode(&v));
                }
                r
            };
            if sub == 2 {
                return reply(ka_reply(&auth));
            }
            let platform = CoseKey::from_cbor(p.get(3u64).unwrap()).unwrap();
            let ss = auth.shared_secret(protocol, &platform);
            match sub {
                3 => {
                    let enc = p.get(5u64).unwrap().as_bytes().unwrap();
                    if !ss.verify(enc, p.get(4u64).unwrap().as_bytes().unwrap()) {
                        return vec![0x33];
                    }
                    let padded = ss.decrypt(enc).unwrap();
                    let pin = pin::unpad_pin(padded.expose()).unwrap();
                    stored_hash = Some(pin::pin_hash(&pin).expose().clone());
                    reply(None)
                }
                9 => {
                    let hash = ss
                        .decrypt(p.get(6u64).unwrap().as_bytes().unwrap())
                        .unwrap();
                    if Some(hash.expose()) != stored_hash.as_ref() {
                        return vec![0x31];
                    }
                    assert_eq!(p.get(9u64).unwrap().as_u64(), Some(0x21));
                    reply(Some(Value::map([(2, ss.encrypt(&token).unwrap())])))
                }
                _ => vec![0x3e],
            }
        }
    }

    #[test]
    fn set_pin_then_token_against_an_authenticator_side_implementation() {
        for protocol in [PinProtocol::One, PinProtocol::Two] {
            let token = [0x5a; 32];
            let mut c =
                Client::new(ScriptedDevice::new().responder(authenticator(protocol, token)));
            let pin = SecretString::new("583920".into());
            c.set_pin(protocol, &pin).unwrap();
            let set = c.device().params(1);
            assert_eq!(
                set.get(4u64).unwrap().as_bytes().unwrap().len(),
                protocol.mac_len()
            );
            assert_eq!(
                set.get(5u64).unwrap().as_bytes().unwrap().len(),
                if protocol == PinProtocol::One { 64 } else { 80 }
            );
            let t = c
                .get_pin_uv_auth_token_using_pin_with_permissions(
                    protocol,
                    &pin,
                    Permissions::MC | Permissions::ACFG,
                    None,
                )
                .unwrap();
            assert_eq!(t.expose(), &token);
            assert_eq!(
                t.authenticate(b"x"),
                pin::authenticate(protocol, &token, b"x")
            );
            let wrong = SecretString::new("000000".into());
            let e = c
                .get_pin_uv_auth_token_using_pin_with_permissions(
                    protocol,
                    &wrong,
                    Permissions::MC | Permissions::ACFG,
                    None,
                )
                .unwrap_err();
            assert_eq!(e.status(), Some(super::super::StatusCode::PIN_INVALID));
        }
    }

    /// An authenticator-side clientPIN that regenerates its key-agreement key
    /// after every PIN check when `forget` is set; counts getKeyAgreement calls.
    fn counting_authenticator(
        forget: bool,
        ka_calls: std::rc::Rc<std::cell::Cell<u32>>,
        retries: std::rc::Rc<std::cell::Cell<u32>>,
    ) -> impl FnMut(&[u8]) -> Vec<u8> {
        let mut auth = KeyAgreement::generate();
        let mut stored_hash: Option<Vec<u8>> = None;
        move |req| {
            let p = crate::cbor::decode(&req[1..]).unwrap();
            let sub = p.get(2u64).unwrap().as_u64().unwrap();
            let reply = |v: Option<Value>| {
                let mut r = vec![0];
                if let Some(v) = v {
                    r.extend(crate::cbor::encode(&v));
                }
                r
            };
            if sub == 2 {
                ka_calls.set(ka_calls.get() + 1);
                return reply(ka_reply(&auth));
            }
            let platform = CoseKey::from_cbor(p.get(3u64).unwrap()).unwrap();
            let ss = auth.shared_secret(PinProtocol::Two, &platform);
            let out = match sub {
                3 => {
                    let enc = p.get(5u64).unwrap().as_bytes().unwrap();
                    if !ss.verify(enc, p.get(4u64).unwrap().as_bytes().unwrap()) {
                        return vec![0x33];
                    }
                    let pin = pin::unpad_pin(ss.decrypt(enc).unwrap().expose()).unwrap();
                    stored_hash = Some(pin::pin_hash(&pin).expose().clone());
                    reply(None)
                }
                9 => {
                    let hash = ss.decrypt(p.get(6u64).unwrap().as_bytes().unwrap());
                    if hash.ok().map(|h| h.expose().clone()) != stored_hash {
                        // §6.5.5.7: a wrong PIN hash costs a retry and a new key.
                        retries.set(retries.get() - 1);
                        auth = KeyAgreement::generate();
                        return vec![0x31];
                    }
                    retries.set(8);
                    reply(Some(Value::map([(2, ss.encrypt(&[7u8; 32]).unwrap())])))
                }
                _ => vec![0x3e],
            };
            if forget {
                auth = KeyAgreement::generate();
            }
            out
        }
    }

    #[test]
    fn reused_shared_secret_saves_key_agreements_and_recovers_from_a_new_key() {
        use std::{cell::Cell, rc::Rc};
        let pin = SecretString::new("583920".into());
        for (forget, reuse, want_ka) in [
            (false, false, 3),
            (false, true, 1),
            // A key that forgets: each reused token request fails once (one
            // retry spent), is repeated with a fresh getKeyAgreement and succeeds.
            (true, true, 3),
        ] {
            let (ka, retries) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(8)));
            let dev = ScriptedDevice::new().responder(counting_authenticator(
                forget,
                ka.clone(),
                retries.clone(),
            ));
            let mut c = Client::new(dev);
            c.set_key_agreement_reuse(reuse);
            c.set_pin(PinProtocol::Two, &pin).unwrap();
            for _ in 0..2 {
                let t = c
                    .get_pin_uv_auth_token_using_pin_with_permissions(
                        PinProtocol::Two,
                        &pin,
                        Permissions::CM | Permissions::ACFG,
                        None,
                    )
                    .unwrap();
                assert_eq!(t.expose(), &[7u8; 32]);
            }
            assert_eq!(ka.get(), want_ka, "forget {forget} reuse {reuse}");
            assert_eq!(retries.get(), 8, "full retries at the end");
            assert_eq!(c.keeps_shared_secret(), reuse);
            c.set_key_agreement_reuse(false);
            assert!(!c.keeps_shared_secret());
        }
        // A wrong PIN on a reused secret is tried once more, fresh, and no more.
        let (ka, retries) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(8)));
        let dev = ScriptedDevice::new().responder(counting_authenticator(
            false,
            ka.clone(),
            retries.clone(),
        ));
        let mut c = Client::new(dev);
        c.set_key_agreement_reuse(true);
        c.set_pin(PinProtocol::Two, &pin).unwrap();
        let wrong = SecretString::new("000000".into());
        let e = c
            .get_pin_uv_auth_token_using_pin_with_permissions(
                PinProtocol::Two,
                &wrong,
                Permissions::CM,
                None,
            )
            .unwrap_err();
        assert_eq!(e.status(), Some(super::super::StatusCode::PIN_INVALID));
        assert_eq!((ka.get(), retries.get()), (2, 6));
        assert!(
            !c.keeps_shared_secret(),
            "a failed operation keeps no secret"
        );
    }

    #[test]
    fn token_request_shape_and_permission_rules() {
        let auth = KeyAgreement::generate();
        let dev = ScriptedDevice::new()
            .ok(ka_reply(&auth))
            .ok(Some(Value::map([(2, Value::from(vec![0u8; 48]))])));
        let mut c = Client::new(dev);
        let pin = SecretString::new("583920".into());
        // The scripted token is not encrypted for our key: decrypts to garbage
        // of the right length, which is accepted as a token (we cannot tell).
        let t = c
            .get_pin_uv_auth_token_using_pin_with_permissions(
                PinProtocol::Two,
                &pin,
                Permissions::MC,
                Some("example.com"),
            )
            .unwrap();
        assert_eq!(t.expose().len(), 32);
        let req = c.device().params(1);
        assert_eq!(req.get(2u64).unwrap().as_u64(), Some(9));
        assert_eq!(req.get(9u64).unwrap().as_u64(), Some(1));
        assert_eq!(req.get(10u64).unwrap().as_text(), Some("example.com"));
        assert_eq!(req.get(6u64).unwrap().as_bytes().unwrap().len(), 32);
        assert!(req.get(5u64).is_none());
        assert!(matches!(
            c.get_pin_uv_auth_token_using_pin_with_permissions(
                PinProtocol::Two,
                &pin,
                Permissions(0),
                None
            ),
            Err(CtapError::InvalidRequest(_))
        ));
        assert_eq!(
            format!("{:?}", Permissions::MC | Permissions::ACFG),
            "Permissions(mc|acfg)"
        );
    }

    #[test]
    fn bad_token_replies_are_malformed_not_panics() {
        let auth = KeyAgreement::generate();
        let pin = SecretString::new("583920".into());
        for bad in [vec![0u8; 15], vec![0u8; 16], vec![0u8; 40]] {
            let dev = ScriptedDevice::new()
                .ok(ka_reply(&auth))
                .ok(Some(Value::map([(2, Value::from(bad))])));
            let mut c = Client::new(dev);
            assert!(matches!(
                c.get_pin_token(PinProtocol::Two, &pin),
                Err(CtapError::Malformed { .. })
            ));
        }
        let dev = ScriptedDevice::new().ok(Some(Value::map([(1, 5)])));
        assert!(matches!(
            Client::new(dev).get_key_agreement(PinProtocol::One),
            Err(CtapError::Pin(_))
        ));
        let dev = ScriptedDevice::new().ok(Some(Value::map([(3, 8), (4, 0)])));
        assert!(matches!(
            Client::new(dev).get_pin_retries(PinProtocol::One),
            Err(CtapError::Malformed { .. })
        ));
        let dev = ScriptedDevice::new().ok(Some(Value::map([
            (Value::from(3), Value::from(7)),
            (Value::from(4), Value::from(true)),
        ])));
        assert_eq!(
            Client::new(dev).get_pin_retries(PinProtocol::Two).unwrap(),
            PinRetries {
                retries: 7,
                power_cycle_state: Some(true)
            }
        );
    }
}

//! authenticatorConfig (0x0D, CTAP 2.1 §6.11): setMinPINLength with
//! forceChangePin (§7.4), enterprise attestation (§7.1), alwaysUv (§7.2).

use super::{no_keepalive, Client, CtapCommand, CtapDevice, CtapError, PinUvAuthToken};
use crate::cbor::{self, Value};

/// authenticatorConfig subCommand (§6.11). Open newtype.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ConfigSubCommand(pub u8);

impl ConfigSubCommand {
    pub const ENABLE_ENTERPRISE_ATTESTATION: Self = Self(0x01);
    pub const TOGGLE_ALWAYS_UV: Self = Self(0x02);
    pub const SET_MIN_PIN_LENGTH: Self = Self(0x03);
    pub const VENDOR_PROTOTYPE: Self = Self(0xff);
}

/// setMinPINLength parameters (§6.11.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetMinPinLength {
    /// 0x01: can only go up until a reset (lower → PIN_POLICY_VIOLATION).
    pub new_min_pin_length: Option<u64>,
    /// 0x02: replaces the list of RP IDs that may see minPinLength.
    pub min_pin_length_rpids: Option<Vec<String>>,
    /// 0x03: the PIN must be changed before any further token.
    pub force_change_pin: bool,
}

impl SetMinPinLength {
    /// The subCommandParams map; `None` when every field is at its default.
    pub fn to_cbor(&self) -> Option<Value> {
        let mut m: Vec<(Value, Value)> = Vec::new();
        if let Some(n) = self.new_min_pin_length {
            m.push((1.into(), n.into()));
        }
        if let Some(rps) = &self.min_pin_length_rpids {
            m.push((
                2.into(),
                Value::Array(rps.iter().map(|r| Value::from(r.as_str())).collect()),
            ));
        }
        if self.force_change_pin {
            m.push((3.into(), true.into()));
        }
        (!m.is_empty()).then_some(Value::Map(m))
    }
}

/// The message authenticated for authenticatorConfig (§6.11 step 4.2):
/// 32×0xFF ‖ 0x0D ‖ subCommand ‖ canonical CBOR(subCommandParams).
pub fn config_auth_message(sub: ConfigSubCommand, params_cbor: Option<&[u8]>) -> Vec<u8> {
    let mut msg = vec![0xff; 32];
    msg.push(CtapCommand::CONFIG.0);
    msg.push(sub.0);
    if let Some(p) = params_cbor {
        msg.extend_from_slice(p);
    }
    msg
}

impl<D: CtapDevice> Client<D> {
    /// authenticatorConfig with any subcommand. The MAC covers exactly the
    /// canonical bytes embedded in the request: our encoder is canonical and
    /// deterministic, so encoding `params` once for the MAC gives the same bytes
    /// the request carries.
    pub fn config(
        &mut self,
        sub: ConfigSubCommand,
        params: Option<&Value>,
        token: Option<&PinUvAuthToken>,
    ) -> Result<(), CtapError> {
        let mut m: Vec<(Value, Value)> = vec![(1.into(), Value::from(sub.0))];
        let params_cbor = params.map(cbor::encode);
        if let Some(p) = params {
            m.push((2.into(), p.clone()));
        }
        if let Some(t) = token {
            m.push((3.into(), Value::from(t.protocol().number())));
            m.push((
                4.into(),
                Value::from(t.authenticate(&config_auth_message(sub, params_cbor.as_deref()))),
            ));
        }
        self.call(CtapCommand::CONFIG, Some(&Value::Map(m)), &mut no_keepalive)
            .map(drop)
    }

    /// setMinPINLength (needs an `acfg` token when a PIN is set). The last step
    /// of programming: with forceChangePin no further token can be obtained.
    pub fn set_min_pin_length(
        &mut self,
        params: &SetMinPinLength,
        token: Option<&PinUvAuthToken>,
    ) -> Result<(), CtapError> {
        self.config(
            ConfigSubCommand::SET_MIN_PIN_LENGTH,
            params.to_cbor().as_ref(),
            token,
        )
    }

    /// enableEnterpriseAttestation.
    pub fn enable_enterprise_attestation(
        &mut self,
        token: Option<&PinUvAuthToken>,
    ) -> Result<(), CtapError> {
        self.config(ConfigSubCommand::ENABLE_ENTERPRISE_ATTESTATION, None, token)
    }

    /// toggleAlwaysUv.
    pub fn toggle_always_uv(&mut self, token: Option<&PinUvAuthToken>) -> Result<(), CtapError> {
        self.config(ConfigSubCommand::TOGGLE_ALWAYS_UV, None, token)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_device::ScriptedDevice;
    use super::*;
    use crate::pin::PinProtocol;
    use crate::secret::SecretBytes;

    #[test]
    fn force_change_pin_request_matches_python_fido2() {
        // Research §5b / tests/vectors/pin-protocols.json: token 32×0x11, {3: true}.
        let token =
            PinUvAuthToken::new(PinProtocol::Two, SecretBytes::new(vec![0x11; 32])).unwrap();
        let mut c = Client::new(ScriptedDevice::new().ok(None));
        let p = SetMinPinLength {
            force_change_pin: true,
            ..Default::default()
        };
        assert_eq!(hex::encode(cbor::encode(&p.to_cbor().unwrap())), "a103f5");
        c.set_min_pin_length(&p, Some(&token)).unwrap();
        assert_eq!(
            hex::encode(&c.device().requests[0]),
            "0da4010302a103f50302045820c14ba94f9ad92262658fd73e16b592e877c090a1de18a9ab3f929abe5e00a66a"
        );
    }

    #[test]
    fn all_params_and_no_params() {
        let p = SetMinPinLength {
            new_min_pin_length: Some(6),
            min_pin_length_rpids: Some(vec!["example.com".into()]),
            force_change_pin: true,
        };
        let v = p.to_cbor().unwrap();
        assert_eq!(v.get(1u64).unwrap().as_u64(), Some(6));
        assert!(SetMinPinLength::default().to_cbor().is_none());
        let msg = config_auth_message(ConfigSubCommand::TOGGLE_ALWAYS_UV, None);
        assert_eq!(msg.len(), 34);
        let mut c = Client::new(ScriptedDevice::new().raw(vec![0x36]));
        let e = c.toggle_always_uv(None).unwrap_err();
        assert_eq!(e.status(), Some(super::super::StatusCode::PUAT_REQUIRED));
        assert_eq!(c.device().requests[0], vec![0x0d, 0xa1, 0x01, 0x02]);
    }
}

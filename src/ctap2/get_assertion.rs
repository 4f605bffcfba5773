//! authenticatorGetAssertion (0x02, CTAP 2.1 §6.2) and GetNextAssertion
//! (0x08, §6.3): used to prove a freshly made credential works.

use super::types::*;
use super::{
    no_keepalive, AuthenticatorData, Client, CtapCommand, CtapDevice, CtapError, PinUvAuthToken,
};
use crate::cbor::Value;
use crate::ctaphid::KeepaliveStatus;

const WHAT: &str = "getAssertion";

/// A getAssertion request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetAssertion {
    pub rp_id: String,
    pub client_data_hash: [u8; 32],
    pub allow_list: Vec<CredentialDescriptor>,
    /// The `up` option; `None` leaves the default (true).
    pub up: Option<bool>,
}

impl GetAssertion {
    pub fn to_cbor(&self, token: Option<&PinUvAuthToken>) -> Value {
        let mut m: Vec<(Value, Value)> = vec![
            (1.into(), Value::from(self.rp_id.as_str())),
            (2.into(), Value::from(self.client_data_hash.to_vec())),
        ];
        if !self.allow_list.is_empty() {
            m.push((
                3.into(),
                Value::Array(
                    self.allow_list
                        .iter()
                        .map(CredentialDescriptor::to_cbor)
                        .collect(),
                ),
            ));
        }
        if let Some(up) = self.up {
            m.push((5.into(), Value::map([("up", up)])));
        }
        if let Some(t) = token {
            m.push((
                6.into(),
                Value::from(t.authenticate(&self.client_data_hash)),
            ));
            m.push((7.into(), Value::from(t.protocol().number())));
        }
        Value::Map(m)
    }
}

/// The getAssertion / getNextAssertion response (§6.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetAssertionResponse {
    /// 0x01 (may be omitted when the allow list had exactly one entry)
    pub credential: Option<CredentialDescriptor>,
    /// 0x02
    pub auth_data: Vec<u8>,
    /// 0x03
    pub signature: Vec<u8>,
    /// 0x04 (discoverable credentials)
    pub user: Option<UserEntity>,
    /// 0x05 (first reply only, when several credentials match)
    pub number_of_credentials: Option<u64>,
}

impl GetAssertionResponse {
    pub fn parse(v: &Value) -> Result<Self, CtapError> {
        let m = reply_map(v, WHAT)?;
        let auth_data = req_bytes(m, 2, WHAT, "authData")?.to_vec();
        AuthenticatorData::parse(&auth_data)?;
        Ok(Self {
            credential: m
                .get(1u64)
                .map(|c| CredentialDescriptor::from_cbor(c, WHAT))
                .transpose()?,
            auth_data,
            signature: req_bytes(m, 3, WHAT, "signature")?.to_vec(),
            user: m
                .get(4u64)
                .map(|u| UserEntity::from_cbor(u, WHAT))
                .transpose()?,
            number_of_credentials: opt_u64(m, 5, WHAT, "numberOfCredentials")?,
        })
    }

    pub fn to_cbor(&self) -> Value {
        let mut m: Vec<(Value, Value)> = Vec::new();
        if let Some(c) = &self.credential {
            m.push((1.into(), c.to_cbor()));
        }
        m.push((2.into(), Value::from(self.auth_data.clone())));
        m.push((3.into(), Value::from(self.signature.clone())));
        if let Some(u) = &self.user {
            m.push((4.into(), u.to_cbor()));
        }
        if let Some(n) = self.number_of_credentials {
            m.push((5.into(), n.into()));
        }
        Value::Map(m)
    }
}

impl<D: CtapDevice> Client<D> {
    /// authenticatorGetAssertion (needs a touch unless `up` is false).
    pub fn get_assertion(
        &mut self,
        request: &GetAssertion,
        token: Option<&PinUvAuthToken>,
        keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<GetAssertionResponse, CtapError> {
        let reply = self
            .call(
                CtapCommand::GET_ASSERTION,
                Some(&request.to_cbor(token)),
                keepalive,
            )?
            .ok_or_else(|| malformed(WHAT, "empty reply"))?;
        GetAssertionResponse::parse(&reply)
    }

    /// authenticatorGetNextAssertion.
    pub fn get_next_assertion(&mut self) -> Result<GetAssertionResponse, CtapError> {
        let reply = self
            .call(CtapCommand::GET_NEXT_ASSERTION, None, &mut no_keepalive)?
            .ok_or_else(|| malformed(WHAT, "empty reply"))?;
        GetAssertionResponse::parse(&reply)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_device::ScriptedDevice;
    use super::*;

    #[test]
    fn round_trip() {
        let mut ad = vec![0u8; 37];
        ad[32] = 0x05;
        let resp = GetAssertionResponse {
            credential: Some(CredentialDescriptor::public_key(vec![1, 2, 3])),
            auth_data: ad,
            signature: vec![9; 71],
            user: Some(UserEntity {
                id: vec![4],
                ..Default::default()
            }),
            number_of_credentials: Some(2),
        };
        let mut c = Client::new(
            ScriptedDevice::new()
                .ok(Some(resp.to_cbor()))
                .ok(Some(resp.to_cbor())),
        );
        let req = GetAssertion {
            rp_id: "example.com".into(),
            client_data_hash: [3; 32],
            allow_list: vec![],
            up: Some(true),
        };
        assert_eq!(c.get_assertion(&req, None, &mut |_| {}).unwrap(), resp);
        assert_eq!(c.get_next_assertion().unwrap(), resp);
        assert_eq!(c.device().requests[1], vec![0x08]);
        let missing_sig = Value::map([(Value::from(2), Value::from(vec![0u8; 37]))]);
        assert!(GetAssertionResponse::parse(&missing_sig).is_err());
    }
}

//! authenticatorMakeCredential (0x01, CTAP 2.1 §6.1) and the authenticator
//! data it returns (WebAuthn §6.1).

use super::types::*;
use super::{Client, CtapCommand, CtapDevice, CtapError, PinUvAuthToken};
use crate::cbor::{self, Value};
use crate::ctaphid::KeepaliveStatus;

const WHAT: &str = "makeCredential";

/// makeCredential extension inputs this station uses (§12).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MakeCredentialExtensions {
    /// credProtect policy 1..=3.
    pub cred_protect: Option<u8>,
    /// Ask for the minPinLength output (only returned for listed RP IDs).
    pub min_pin_length: bool,
    pub hmac_secret: bool,
}

impl MakeCredentialExtensions {
    fn is_empty(&self) -> bool {
        self.cred_protect.is_none() && !self.min_pin_length && !self.hmac_secret
    }

    fn to_cbor(&self) -> Value {
        let mut m = Vec::new();
        if let Some(p) = self.cred_protect {
            m.push((Value::from("credProtect"), Value::from(p)));
        }
        if self.hmac_secret {
            m.push((Value::from("hmac-secret"), Value::from(true)));
        }
        if self.min_pin_length {
            m.push((Value::from("minPinLength"), Value::from(true)));
        }
        Value::Map(m)
    }
}

/// A makeCredential request. The station always makes discoverable
/// credentials (`rk`), and never sends the `uv` option with a token (§6.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MakeCredential {
    /// SHA-256 of clientDataJSON.
    pub client_data_hash: [u8; 32],
    pub rp: RpEntity,
    pub user: UserEntity,
    pub pub_key_cred_params: Vec<PubKeyCredParam>,
    pub exclude_list: Vec<CredentialDescriptor>,
    pub extensions: MakeCredentialExtensions,
    /// The `rk` option.
    pub rk: bool,
    /// 1 vendor-facilitated, 2 platform-managed; only if getInfo `ep` is true.
    pub enterprise_attestation: Option<u8>,
}

impl MakeCredential {
    /// The request parameter map; `token` adds pinUvAuthParam =
    /// authenticate(token, clientDataHash) and pinUvAuthProtocol.
    pub fn to_cbor(&self, token: Option<&PinUvAuthToken>) -> Result<Value, CtapError> {
        if self.user.id.is_empty() || self.user.id.len() > MAX_USER_ID_LEN {
            return Err(CtapError::InvalidRequest(format!(
                "user.id must be 1 to 64 bytes, got {}",
                self.user.id.len()
            )));
        }
        if self.pub_key_cred_params.is_empty() {
            return Err(CtapError::InvalidRequest(
                "pubKeyCredParams is empty".into(),
            ));
        }
        if matches!(self.extensions.cred_protect, Some(p) if !(1..=3).contains(&p)) {
            return Err(CtapError::InvalidRequest(
                "credProtect must be 1, 2 or 3".into(),
            ));
        }
        if matches!(self.enterprise_attestation, Some(ea) if !(1..=2).contains(&ea)) {
            return Err(CtapError::InvalidRequest(
                "enterpriseAttestation must be 1 or 2".into(),
            ));
        }
        let mut m: Vec<(Value, Value)> = vec![
            (1.into(), Value::from(self.client_data_hash.to_vec())),
            (2.into(), self.rp.to_cbor()),
            (3.into(), self.user.to_cbor()),
            (
                4.into(),
                Value::Array(
                    self.pub_key_cred_params
                        .iter()
                        .map(PubKeyCredParam::to_cbor)
                        .collect(),
                ),
            ),
        ];
        if !self.exclude_list.is_empty() {
            m.push((
                5.into(),
                Value::Array(
                    self.exclude_list
                        .iter()
                        .map(CredentialDescriptor::to_cbor)
                        .collect(),
                ),
            ));
        }
        if !self.extensions.is_empty() {
            m.push((6.into(), self.extensions.to_cbor()));
        }
        if self.rk {
            m.push((7.into(), Value::map([("rk", true)])));
        }
        if let Some(t) = token {
            m.push((
                8.into(),
                Value::from(t.authenticate(&self.client_data_hash)),
            ));
            m.push((9.into(), Value::from(t.protocol().number())));
        }
        if let Some(ea) = self.enterprise_attestation {
            m.push((0x0a.into(), Value::from(ea)));
        }
        Ok(Value::Map(m))
    }
}

/// The makeCredential response (§6.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MakeCredentialResponse {
    /// 0x01 attestation format ("packed" on YubiKeys).
    pub fmt: String,
    /// 0x02 raw authenticator data (what the attestation signature covers).
    pub auth_data: Vec<u8>,
    /// 0x03 attestation statement, as received.
    pub att_stmt: Value,
    /// 0x04 whether enterprise attestation was returned.
    pub ep_att: Option<bool>,
    /// 0x05
    pub large_blob_key: Option<Vec<u8>>,
}

impl MakeCredentialResponse {
    pub fn parse(v: &Value) -> Result<Self, CtapError> {
        let m = reply_map(v, WHAT)?;
        let fmt = m
            .get(1u64)
            .and_then(Value::as_text)
            .ok_or_else(|| malformed(WHAT, "fmt missing"))?
            .to_owned();
        let auth_data = req_bytes(m, 2, WHAT, "authData")?.to_vec();
        let att_stmt = m
            .get(3u64)
            .filter(|s| s.as_map().is_some())
            .ok_or_else(|| malformed(WHAT, "attStmt missing"))?
            .clone();
        // authData must at least parse; callers use it right away.
        AuthenticatorData::parse(&auth_data)?;
        Ok(Self {
            fmt,
            auth_data,
            att_stmt,
            ep_att: opt_bool(m, 4, WHAT, "epAtt")?,
            large_blob_key: opt_bytes(m, 5, WHAT, "largeBlobKey")?.map(<[u8]>::to_vec),
        })
    }

    /// The reply map (authenticator side).
    pub fn to_cbor(&self) -> Value {
        let mut m: Vec<(Value, Value)> = vec![
            (1.into(), Value::from(self.fmt.as_str())),
            (2.into(), Value::from(self.auth_data.clone())),
            (3.into(), self.att_stmt.clone()),
        ];
        if let Some(ep) = self.ep_att {
            m.push((4.into(), ep.into()));
        }
        if let Some(k) = &self.large_blob_key {
            m.push((5.into(), Value::from(k.clone())));
        }
        Value::Map(m)
    }

    /// The decoded authenticator data.
    pub fn authenticator_data(&self) -> Result<AuthenticatorData, CtapError> {
        AuthenticatorData::parse(&self.auth_data)
    }

    /// The WebAuthn attestationObject: `{"fmt", "attStmt", "authData"}` with
    /// text keys (WebAuthn §6.5), canonical CBOR.
    pub fn attestation_object(&self) -> Vec<u8> {
        cbor::encode(&Value::map([
            (Value::from("fmt"), Value::from(self.fmt.as_str())),
            (Value::from("attStmt"), self.att_stmt.clone()),
            (Value::from("authData"), Value::from(self.auth_data.clone())),
        ]))
    }
}

/// attestedCredentialData (WebAuthn §6.5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedCredential {
    pub aaguid: [u8; 16],
    pub credential_id: Vec<u8>,
    /// COSE_Key of the new credential.
    pub public_key: Value,
}

/// Authenticator data (WebAuthn §6.1): rpIdHash(32) flags(1) signCount(4)
/// [attestedCredentialData] [extensions].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatorData {
    pub rp_id_hash: [u8; 32],
    pub flags: u8,
    pub sign_count: u32,
    pub attested: Option<AttestedCredential>,
    pub extensions: Option<Value>,
}

impl AuthenticatorData {
    pub const FLAG_UP: u8 = 0x01;
    pub const FLAG_UV: u8 = 0x04;
    pub const FLAG_BE: u8 = 0x08;
    pub const FLAG_BS: u8 = 0x10;
    pub const FLAG_AT: u8 = 0x40;
    pub const FLAG_ED: u8 = 0x80;

    /// Parses and checks that flags AT/ED match what follows and nothing trails.
    pub fn parse(bytes: &[u8]) -> Result<Self, CtapError> {
        const W: &str = "authenticatorData";
        if bytes.len() < 37 {
            return Err(malformed(
                W,
                format!("{} bytes, need at least 37", bytes.len()),
            ));
        }
        let rp_id_hash: [u8; 32] = bytes[..32].try_into().expect("32 bytes");
        let flags = bytes[32];
        let sign_count = u32::from_be_bytes(bytes[33..37].try_into().expect("4 bytes"));
        let mut rest = &bytes[37..];
        let attested = if flags & Self::FLAG_AT != 0 {
            if rest.len() < 18 {
                return Err(malformed(W, "attested credential data truncated"));
            }
            let aaguid: [u8; 16] = rest[..16].try_into().expect("16 bytes");
            let len = u16::from_be_bytes([rest[16], rest[17]]) as usize;
            rest = &rest[18..];
            if rest.len() < len {
                return Err(malformed(W, "credential id truncated"));
            }
            let credential_id = rest[..len].to_vec();
            let (public_key, after) = cbor::decode_prefix(&rest[len..])
                .map_err(|e| malformed(W, format!("credential public key: {e}")))?;
            if public_key.as_map().is_none() {
                return Err(malformed(W, "credential public key is not a map"));
            }
            rest = after;
            Some(AttestedCredential {
                aaguid,
                credential_id,
                public_key,
            })
        } else {
            None
        };
        let extensions = if flags & Self::FLAG_ED != 0 {
            let (ext, after) =
                cbor::decode_prefix(rest).map_err(|e| malformed(W, format!("extensions: {e}")))?;
            if ext.as_map().is_none() {
                return Err(malformed(W, "extensions are not a map"));
            }
            rest = after;
            Some(ext)
        } else {
            None
        };
        if !rest.is_empty() {
            return Err(malformed(W, format!("{} trailing bytes", rest.len())));
        }
        Ok(Self {
            rp_id_hash,
            flags,
            sign_count,
            attested,
            extensions,
        })
    }

    /// Encodes (authenticator side).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.rp_id_hash.to_vec();
        let mut flags = self.flags & !(Self::FLAG_AT | Self::FLAG_ED);
        if self.attested.is_some() {
            flags |= Self::FLAG_AT;
        }
        if self.extensions.is_some() {
            flags |= Self::FLAG_ED;
        }
        out.push(flags);
        out.extend_from_slice(&self.sign_count.to_be_bytes());
        if let Some(a) = &self.attested {
            out.extend_from_slice(&a.aaguid);
            out.extend_from_slice(&(a.credential_id.len() as u16).to_be_bytes());
            out.extend_from_slice(&a.credential_id);
            cbor::encode_into(&a.public_key, &mut out);
        }
        if let Some(e) = &self.extensions {
            cbor::encode_into(e, &mut out);
        }
        out
    }

    pub fn user_present(&self) -> bool {
        self.flags & Self::FLAG_UP != 0
    }

    pub fn user_verified(&self) -> bool {
        self.flags & Self::FLAG_UV != 0
    }
}

impl<D: CtapDevice> Client<D> {
    /// authenticatorMakeCredential. Expect KEEPALIVE UPNEEDED: the key waits
    /// for a touch. Use a fresh `mc` token per call (tokens lose their
    /// permissions after a user-present makeCredential).
    pub fn make_credential(
        &mut self,
        request: &MakeCredential,
        token: Option<&PinUvAuthToken>,
        keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<MakeCredentialResponse, CtapError> {
        let params = request.to_cbor(token)?;
        let reply = self
            .call(CtapCommand::MAKE_CREDENTIAL, Some(&params), keepalive)?
            .ok_or_else(|| malformed(WHAT, "empty reply"))?;
        MakeCredentialResponse::parse(&reply)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_device::ScriptedDevice;
    use super::*;
    use crate::pin::PinProtocol;
    use crate::secret::SecretBytes;
    use sha2::{Digest, Sha256};

    fn request() -> MakeCredential {
        MakeCredential {
            client_data_hash: Sha256::digest(br#"{"type":"webauthn.create"}"#).into(),
            rp: RpEntity {
                id: "example.com".into(),
                name: Some("Example".into()),
            },
            user: UserEntity {
                id: vec![1, 2],
                name: Some("u".into()),
                display_name: Some("U".into()),
            },
            pub_key_cred_params: vec![PubKeyCredParam::es256()],
            exclude_list: vec![],
            extensions: Default::default(),
            rk: true,
            enterprise_attestation: None,
        }
    }

    #[test]
    fn request_bytes_match_python_fido2() {
        // Research §5b: the makeCredential request python-fido2 builds for
        // these inputs with protocol 2 and a token of 32×0x11.
        let token =
            PinUvAuthToken::new(PinProtocol::Two, SecretBytes::new(vec![0x11; 32])).unwrap();
        let bytes = cbor::encode(&request().to_cbor(Some(&token)).unwrap());
        let want = "a7015820d5d16f5b6496d8f4dcebe7cd74a91361ebd613f32d0f83370beff944065ea35c02a26269646b6578616d706c652e636f6d646e616d65674578616d706c6503a3626964420102646e616d6561756b646973706c61794e616d6561550481a263616c672664747970656a7075626c69632d6b657907a162726bf5085820038fac8344a1b9b5e5b64f3170069685f4fe8ca26a637682f3945f655c73ea000902";
        assert_eq!(hex::encode(bytes), want);
    }

    #[test]
    fn invalid_requests_never_reach_the_device() {
        let mut r = request();
        r.user.id = vec![0; 65];
        assert!(matches!(r.to_cbor(None), Err(CtapError::InvalidRequest(_))));
        let mut r = request();
        r.extensions.cred_protect = Some(4);
        assert!(matches!(r.to_cbor(None), Err(CtapError::InvalidRequest(_))));
        let r = MakeCredential {
            pub_key_cred_params: vec![],
            ..request()
        };
        assert!(r.to_cbor(None).is_err());
    }

    fn auth_data() -> AuthenticatorData {
        AuthenticatorData {
            rp_id_hash: Sha256::digest(b"example.com").into(),
            flags: AuthenticatorData::FLAG_UP,
            sign_count: 28,
            attested: Some(AttestedCredential {
                aaguid: [0xaa; 16],
                credential_id: vec![7; 64],
                public_key: Value::map([(1, 2), (3, -7), (-1, 1)]),
            }),
            extensions: Some(Value::map([("credProtect", 3)])),
        }
    }

    #[test]
    fn response_round_trip_with_keepalives() {
        let resp = MakeCredentialResponse {
            fmt: "packed".into(),
            auth_data: auth_data().to_bytes(),
            att_stmt: Value::map([
                (Value::from("alg"), Value::from(-7)),
                (Value::from("sig"), Value::from(vec![1u8; 70])),
            ]),
            ep_att: None,
            large_blob_key: None,
        };
        let mut dev = ScriptedDevice::new().ok(Some(resp.to_cbor()));
        dev.keepalives = vec![KeepaliveStatus::UPNEEDED];
        let mut c = Client::new(dev);
        let mut seen = vec![];
        let got = c
            .make_credential(&request(), None, &mut |s| seen.push(s))
            .unwrap();
        assert_eq!(got, resp);
        assert_eq!(seen, vec![KeepaliveStatus::UPNEEDED]);
        let ad = got.authenticator_data().unwrap();
        assert_eq!(
            ad,
            AuthenticatorData {
                flags: 0xc1,
                ..auth_data()
            }
        );
        assert!(ad.user_present() && !ad.user_verified());
        // Without a token: no pinUvAuthParam, never "uv".
        let sent = c.device().params(0);
        assert!(sent.get(8u64).is_none());
        assert_eq!(sent.get(7u64).unwrap().as_map().unwrap().len(), 1);
        let obj = cbor::decode(&got.attestation_object()).unwrap();
        let keys: Vec<_> = obj
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_text().unwrap().to_owned())
            .collect();
        assert_eq!(keys, ["fmt", "attStmt", "authData"]);
    }

    #[test]
    fn bad_authenticator_data_is_malformed() {
        let good = auth_data().to_bytes();
        for cut in [0, 36, 40, 60, good.len() - 1] {
            assert!(AuthenticatorData::parse(&good[..cut]).is_err(), "cut {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(AuthenticatorData::parse(&trailing).is_err());
        let mut huge_len = good.clone();
        huge_len[53..55].copy_from_slice(&[0xff, 0xff]);
        assert!(AuthenticatorData::parse(&huge_len).is_err());
    }
}

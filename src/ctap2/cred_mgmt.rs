//! authenticatorCredentialManagement (0x0A, CTAP 2.1 §6.8) and its
//! FIDO_2_1_PRE prototype (0x41), used to verify what was programmed.
//! Which command byte to use comes from getInfo
//! ([`super::GetInfo::credential_management_command`]).

use super::types::*;
use super::{no_keepalive, Client, CtapCommand, CtapDevice, CtapError, PinUvAuthToken, StatusCode};
use crate::cbor::{self, Value};

const WHAT: &str = "credentialManagement";

/// Upper bound on enumeration round trips: far above any key's capacity
/// (YubiKey 5.7: 100), so a device that claims billions cannot keep us looping.
pub const MAX_ENUMERATION: u64 = 1000;

/// credentialManagement subCommand (§6.8). Open newtype.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CredMgmtSubCommand(pub u8);

impl CredMgmtSubCommand {
    pub const GET_CREDS_METADATA: Self = Self(0x01);
    pub const ENUMERATE_RPS_BEGIN: Self = Self(0x02);
    pub const ENUMERATE_RPS_GET_NEXT_RP: Self = Self(0x03);
    pub const ENUMERATE_CREDENTIALS_BEGIN: Self = Self(0x04);
    pub const ENUMERATE_CREDENTIALS_GET_NEXT_CREDENTIAL: Self = Self(0x05);
    pub const DELETE_CREDENTIAL: Self = Self(0x06);
    /// Not in the 0x41 prototype.
    pub const UPDATE_USER_INFORMATION: Self = Self(0x07);
}

/// getCredsMetadata result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredsMetadata {
    pub existing_resident_credentials_count: u64,
    pub max_possible_remaining_resident_credentials_count: u64,
}

/// One RP with discoverable credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpInfo {
    pub rp: RpEntity,
    pub rp_id_hash: [u8; 32],
}

/// One discoverable credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialInfo {
    pub user: UserEntity,
    pub credential_id: CredentialDescriptor,
    /// COSE_Key
    pub public_key: Value,
    pub cred_protect: Option<u64>,
    pub large_blob_key: Option<Vec<u8>>,
}

fn check_command(command: CtapCommand) -> Result<(), CtapError> {
    if command == CtapCommand::CREDENTIAL_MANAGEMENT
        || command == CtapCommand::CREDENTIAL_MANAGEMENT_PREVIEW
    {
        Ok(())
    } else {
        Err(CtapError::InvalidRequest(format!(
            "{command} is not a credential management command"
        )))
    }
}

impl<D: CtapDevice> Client<D> {
    /// One credentialManagement request; pinUvAuthParam =
    /// authenticate(token, subCommand ‖ CBOR(subCommandParams)) (§6.8 step 2).
    pub fn credential_management(
        &mut self,
        command: CtapCommand,
        sub: CredMgmtSubCommand,
        params: Option<&Value>,
        token: Option<&PinUvAuthToken>,
    ) -> Result<Option<Value>, CtapError> {
        check_command(command)?;
        let mut m: Vec<(Value, Value)> = vec![(1.into(), Value::from(sub.0))];
        let mut message = vec![sub.0];
        if let Some(p) = params {
            m.push((2.into(), p.clone()));
            cbor::encode_into(p, &mut message);
        }
        if let Some(t) = token {
            m.push((3.into(), Value::from(t.protocol().number())));
            m.push((4.into(), Value::from(t.authenticate(&message))));
        }
        match self.call(command, Some(&Value::Map(m)), &mut no_keepalive)? {
            Some(v) => Ok(Some(reply_map(&v, WHAT)?.clone())),
            None => Ok(None),
        }
    }

    /// getCredsMetadata (cm token without rpId).
    pub fn get_creds_metadata(
        &mut self,
        command: CtapCommand,
        token: &PinUvAuthToken,
    ) -> Result<CredsMetadata, CtapError> {
        let r = self
            .credential_management(
                command,
                CredMgmtSubCommand::GET_CREDS_METADATA,
                None,
                Some(token),
            )?
            .ok_or_else(|| malformed(WHAT, "empty getCredsMetadata reply"))?;
        let need = |key, f| {
            opt_u64(&r, key, WHAT, f)?.ok_or_else(|| malformed(WHAT, format!("{f} missing")))
        };
        Ok(CredsMetadata {
            existing_resident_credentials_count: need(1, "existingResidentCredentialsCount")?,
            max_possible_remaining_resident_credentials_count: need(
                2,
                "maxPossibleRemainingResidentCredentialsCount",
            )?,
        })
    }

    /// enumerateRPsBegin + GetNextRP; no credentials gives an empty list.
    pub fn enumerate_rps(
        &mut self,
        command: CtapCommand,
        token: &PinUvAuthToken,
    ) -> Result<Vec<RpInfo>, CtapError> {
        let first = match self.credential_management(
            command,
            CredMgmtSubCommand::ENUMERATE_RPS_BEGIN,
            None,
            Some(token),
        ) {
            Err(e) if e.status() == Some(StatusCode::NO_CREDENTIALS) => return Ok(Vec::new()),
            other => other?.ok_or_else(|| malformed(WHAT, "empty enumerateRPsBegin reply"))?,
        };
        let total = opt_u64(&first, 5, WHAT, "totalRPs")?
            .ok_or_else(|| malformed(WHAT, "totalRPs missing"))?;
        if total == 0 || total > MAX_ENUMERATION {
            return Err(malformed(WHAT, format!("totalRPs {total}")));
        }
        let mut out = vec![rp_info(&first)?];
        for _ in 1..total {
            let r = self
                .credential_management(
                    command,
                    CredMgmtSubCommand::ENUMERATE_RPS_GET_NEXT_RP,
                    None,
                    None,
                )?
                .ok_or_else(|| malformed(WHAT, "empty enumerateRPsGetNextRP reply"))?;
            out.push(rp_info(&r)?);
        }
        Ok(out)
    }

    /// enumerateCredentialsBegin + GetNextCredential for one RP.
    pub fn enumerate_credentials(
        &mut self,
        command: CtapCommand,
        rp_id_hash: &[u8; 32],
        token: &PinUvAuthToken,
    ) -> Result<Vec<CredentialInfo>, CtapError> {
        let params = Value::map([(1, rp_id_hash.to_vec())]);
        let first = match self.credential_management(
            command,
            CredMgmtSubCommand::ENUMERATE_CREDENTIALS_BEGIN,
            Some(&params),
            Some(token),
        ) {
            Err(e) if e.status() == Some(StatusCode::NO_CREDENTIALS) => return Ok(Vec::new()),
            other => {
                other?.ok_or_else(|| malformed(WHAT, "empty enumerateCredentialsBegin reply"))?
            }
        };
        let total = opt_u64(&first, 9, WHAT, "totalCredentials")?
            .ok_or_else(|| malformed(WHAT, "totalCredentials missing"))?;
        if total == 0 || total > MAX_ENUMERATION {
            return Err(malformed(WHAT, format!("totalCredentials {total}")));
        }
        let mut out = vec![credential_info(&first)?];
        for _ in 1..total {
            let r = self
                .credential_management(
                    command,
                    CredMgmtSubCommand::ENUMERATE_CREDENTIALS_GET_NEXT_CREDENTIAL,
                    None,
                    None,
                )?
                .ok_or_else(|| {
                    malformed(WHAT, "empty enumerateCredentialsGetNextCredential reply")
                })?;
            out.push(credential_info(&r)?);
        }
        Ok(out)
    }

    /// deleteCredential.
    pub fn delete_credential(
        &mut self,
        command: CtapCommand,
        credential_id: &CredentialDescriptor,
        token: &PinUvAuthToken,
    ) -> Result<(), CtapError> {
        let params = Value::map([(Value::from(2), credential_id.to_cbor())]);
        self.credential_management(
            command,
            CredMgmtSubCommand::DELETE_CREDENTIAL,
            Some(&params),
            Some(token),
        )
        .map(drop)
    }
}

fn rp_info(r: &Value) -> Result<RpInfo, CtapError> {
    Ok(RpInfo {
        rp: RpEntity::from_cbor(
            r.get(3u64).ok_or_else(|| malformed(WHAT, "rp missing"))?,
            WHAT,
        )?,
        rp_id_hash: req_bytes(r, 4, WHAT, "rpIDHash")?
            .try_into()
            .map_err(|_| malformed(WHAT, "rpIDHash is not 32 bytes"))?,
    })
}

fn credential_info(r: &Value) -> Result<CredentialInfo, CtapError> {
    Ok(CredentialInfo {
        user: UserEntity::from_cbor(
            r.get(6u64).ok_or_else(|| malformed(WHAT, "user missing"))?,
            WHAT,
        )?,
        credential_id: CredentialDescriptor::from_cbor(
            r.get(7u64)
                .ok_or_else(|| malformed(WHAT, "credentialID missing"))?,
            WHAT,
        )?,
        public_key: r
            .get(8u64)
            .filter(|k| k.as_map().is_some())
            .ok_or_else(|| malformed(WHAT, "publicKey missing"))?
            .clone(),
        cred_protect: opt_u64(r, 0x0a, WHAT, "credProtect")?,
        large_blob_key: opt_bytes(r, 0x0b, WHAT, "largeBlobKey")?.map(<[u8]>::to_vec),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_device::ScriptedDevice;
    use super::*;
    use crate::pin::{self, PinProtocol};
    use crate::secret::SecretBytes;

    fn token() -> PinUvAuthToken {
        PinUvAuthToken::new(PinProtocol::Two, SecretBytes::new(vec![0x11; 32])).unwrap()
    }

    fn cred(n: u8) -> Value {
        Value::map([
            (
                Value::from(6),
                UserEntity {
                    id: vec![n],
                    name: Some("u".into()),
                    display_name: None,
                }
                .to_cbor(),
            ),
            (
                Value::from(7),
                CredentialDescriptor::public_key(vec![n; 16]).to_cbor(),
            ),
            (Value::from(8), Value::map([(1, 2), (3, -7)])),
            (Value::from(0x0a), Value::from(3)),
        ])
    }

    #[test]
    fn enumeration_walks_begin_then_next_and_macs_only_the_begin() {
        let mut first = cred(1);
        if let Value::Map(m) = &mut first {
            m.push((Value::from(9), Value::from(2)));
        }
        let rp = Value::map([
            (Value::from(3), Value::map([("id", "example.com")])),
            (Value::from(4), Value::from(vec![7u8; 32])),
            (Value::from(5), Value::from(1)),
        ]);
        let dev = ScriptedDevice::new()
            .ok(Some(Value::map([(1, 2), (2, 98)])))
            .ok(Some(rp))
            .ok(Some(first))
            .ok(Some(cred(2)))
            .ok(None);
        let mut c = Client::new(dev);
        let cmd = CtapCommand::CREDENTIAL_MANAGEMENT;
        let t = token();
        assert_eq!(
            c.get_creds_metadata(cmd, &t).unwrap(),
            CredsMetadata {
                existing_resident_credentials_count: 2,
                max_possible_remaining_resident_credentials_count: 98
            }
        );
        let rps = c.enumerate_rps(cmd, &t).unwrap();
        assert_eq!(rps.len(), 1);
        assert_eq!(rps[0].rp.id, "example.com");
        let creds = c
            .enumerate_credentials(cmd, &rps[0].rp_id_hash, &t)
            .unwrap();
        assert_eq!(creds.len(), 2);
        assert_eq!(creds[1].credential_id.id, vec![2; 16]);
        assert_eq!(creds[0].cred_protect, Some(3));
        c.delete_credential(
            CtapCommand::CREDENTIAL_MANAGEMENT_PREVIEW,
            &creds[0].credential_id,
            &t,
        )
        .unwrap();
        let d = c.device();
        // MAC over subCommand ‖ CBOR(params), full 32 bytes for protocol 2.
        let begin = d.params(2);
        let msg = [vec![4u8], cbor::encode(&Value::map([(1, vec![7u8; 32])]))].concat();
        assert_eq!(
            begin.get(4u64).unwrap().as_bytes().unwrap(),
            pin::authenticate(PinProtocol::Two, &[0x11; 32], &msg)
        );
        assert_eq!(d.requests[3], vec![0x0a, 0xa1, 0x01, 0x05]);
        assert_eq!(d.requests[4][0], 0x41);
        assert_eq!(
            d.params(0).get(4u64).unwrap().as_bytes().unwrap(),
            pin::authenticate(PinProtocol::Two, &[0x11; 32], &[1])
        );
    }

    #[test]
    fn no_credentials_and_absurd_totals() {
        let mut c = Client::new(ScriptedDevice::new().raw(vec![0x2e]).ok(Some(Value::map([
            (Value::from(3), Value::map([("id", "x")])),
            (Value::from(4), Value::from(vec![0u8; 32])),
            (Value::from(5), Value::from(u64::MAX)),
        ]))));
        let cmd = CtapCommand::CREDENTIAL_MANAGEMENT;
        assert!(c.enumerate_rps(cmd, &token()).unwrap().is_empty());
        assert!(matches!(
            c.enumerate_rps(cmd, &token()),
            Err(CtapError::Malformed { .. })
        ));
        assert!(matches!(
            c.get_creds_metadata(CtapCommand::GET_INFO, &token()),
            Err(CtapError::InvalidRequest(_))
        ));
    }
}

//! authenticatorGetInfo (0x04, CTAP 2.1 §6.4): what the authenticator is and offers.

use super::types::*;
use super::{no_keepalive, Client, CtapCommand, CtapDevice, CtapError, DEFAULT_MAX_MSG_SIZE};
use crate::cbor::Value;
use crate::pin::PinProtocol;
use std::collections::BTreeMap;

const WHAT: &str = "getInfo";

/// The getInfo response (§6.4 keys 0x01..0x14 plus what 2.2 adds that we use).
/// `Default` + public fields let the simulator build one and [`GetInfo::to_cbor`] it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetInfo {
    /// 0x01, e.g. "FIDO_2_0", "FIDO_2_1_PRE", "FIDO_2_1".
    pub versions: Vec<String>,
    /// 0x02
    pub extensions: Vec<String>,
    /// 0x03
    pub aaguid: [u8; 16],
    /// 0x04: option id → value; absent means "not supported" for most.
    pub options: BTreeMap<String, bool>,
    /// 0x05 (absent: 1024)
    pub max_msg_size: Option<u64>,
    /// 0x06, in the authenticator's order of preference; unknown numbers kept.
    pub pin_uv_auth_protocols: Vec<u64>,
    /// 0x07
    pub max_credential_count_in_list: Option<u64>,
    /// 0x08
    pub max_credential_id_length: Option<u64>,
    /// 0x09
    pub transports: Vec<String>,
    /// 0x0A
    pub algorithms: Vec<PubKeyCredParam>,
    /// 0x0B
    pub max_serialized_large_blob_array: Option<u64>,
    /// 0x0C (absent: false)
    pub force_pin_change: bool,
    /// 0x0D (absent: 4)
    pub min_pin_length: u64,
    /// 0x0E; YubiKey: major<<16 | minor<<8 | patch
    pub firmware_version: Option<u64>,
    /// 0x0F
    pub max_cred_blob_length: Option<u64>,
    /// 0x10
    pub max_rpids_for_set_min_pin_length: Option<u64>,
    /// 0x11
    pub preferred_platform_uv_attempts: Option<u64>,
    /// 0x12
    pub uv_modality: Option<u64>,
    /// 0x14
    pub remaining_discoverable_credentials: Option<u64>,
    /// 0x15
    pub vendor_prototype_config_commands: Vec<u64>,
    /// 0x1D (CTAP 2.2; absent: 63)
    pub max_pin_length: Option<u64>,
    /// Every other key, as received (certifications, 2.2/2.3 fields, …).
    pub other: Vec<(u64, Value)>,
}

/// Keys this module decodes into fields; the rest go to `other`.
const KNOWN: &[u64] = &[
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
    0x11, 0x12, 0x14, 0x15, 0x1d,
];

/// Default minPINLength when absent (§6.4).
pub const DEFAULT_MIN_PIN_LENGTH: u64 = 4;

impl GetInfo {
    /// Decodes and shape-checks a getInfo reply map.
    pub fn parse(v: &Value) -> Result<Self, CtapError> {
        let m = reply_map(v, WHAT)?;
        let versions = opt_text_array(m, 0x01, WHAT, "versions")?;
        if versions.is_empty() {
            return Err(malformed(WHAT, "versions missing"));
        }
        let aaguid: [u8; 16] = req_bytes(m, 0x03, WHAT, "aaguid")?
            .try_into()
            .map_err(|_| malformed(WHAT, "aaguid is not 16 bytes"))?;
        let algorithms = match m.get(0x0a) {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|p| PubKeyCredParam::from_cbor(p, WHAT))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(malformed(WHAT, "algorithms is not an array")),
        };
        let other = m
            .as_map()
            .unwrap_or_default()
            .iter()
            .filter_map(|(k, v)| {
                k.as_u64()
                    .filter(|k| !KNOWN.contains(k))
                    .map(|k| (k, v.clone()))
            })
            .collect();
        Ok(Self {
            versions,
            extensions: opt_text_array(m, 0x02, WHAT, "extensions")?,
            aaguid,
            options: opt_bool_map(m, 0x04, WHAT, "options")?,
            max_msg_size: opt_u64(m, 0x05, WHAT, "maxMsgSize")?,
            pin_uv_auth_protocols: opt_u64_array(m, 0x06, WHAT, "pinUvAuthProtocols")?,
            max_credential_count_in_list: opt_u64(m, 0x07, WHAT, "maxCredentialCountInList")?,
            max_credential_id_length: opt_u64(m, 0x08, WHAT, "maxCredentialIdLength")?,
            transports: opt_text_array(m, 0x09, WHAT, "transports")?,
            algorithms,
            max_serialized_large_blob_array: opt_u64(m, 0x0b, WHAT, "maxSerializedLargeBlobArray")?,
            force_pin_change: opt_bool(m, 0x0c, WHAT, "forcePINChange")?.unwrap_or(false),
            min_pin_length: opt_u64(m, 0x0d, WHAT, "minPINLength")?
                .unwrap_or(DEFAULT_MIN_PIN_LENGTH),
            firmware_version: opt_u64(m, 0x0e, WHAT, "firmwareVersion")?,
            max_cred_blob_length: opt_u64(m, 0x0f, WHAT, "maxCredBlobLength")?,
            max_rpids_for_set_min_pin_length: opt_u64(m, 0x10, WHAT, "maxRPIDsForSetMinPINLength")?,
            preferred_platform_uv_attempts: opt_u64(m, 0x11, WHAT, "preferredPlatformUvAttempts")?,
            uv_modality: opt_u64(m, 0x12, WHAT, "uvModality")?,
            remaining_discoverable_credentials: opt_u64(
                m,
                0x14,
                WHAT,
                "remainingDiscoverableCredentials",
            )?,
            vendor_prototype_config_commands: opt_u64_array(
                m,
                0x15,
                WHAT,
                "vendorPrototypeConfigCommands",
            )?,
            max_pin_length: opt_u64(m, 0x1d, WHAT, "maxPINLength")?,
            other,
        })
    }

    /// The reply map (authenticator side). Absent-by-default fields are left
    /// out: forcePINChange when false; minPINLength is always sent.
    pub fn to_cbor(&self) -> Value {
        let texts =
            |v: &[String]| Value::Array(v.iter().map(|s| Value::from(s.as_str())).collect());
        let ints = |v: &[u64]| Value::Array(v.iter().map(|&n| Value::from(n)).collect());
        let mut m: Vec<(Value, Value)> = vec![(1.into(), texts(&self.versions))];
        if !self.extensions.is_empty() {
            m.push((2.into(), texts(&self.extensions)));
        }
        m.push((3.into(), Value::from(self.aaguid.to_vec())));
        if !self.options.is_empty() {
            m.push((
                4.into(),
                Value::Map(
                    self.options
                        .iter()
                        .map(|(k, v)| (Value::from(k.as_str()), Value::from(*v)))
                        .collect(),
                ),
            ));
        }
        let opt = |k: u64, v: Option<u64>, m: &mut Vec<(Value, Value)>| {
            if let Some(v) = v {
                m.push((k.into(), v.into()));
            }
        };
        opt(5, self.max_msg_size, &mut m);
        if !self.pin_uv_auth_protocols.is_empty() {
            m.push((6.into(), ints(&self.pin_uv_auth_protocols)));
        }
        opt(7, self.max_credential_count_in_list, &mut m);
        opt(8, self.max_credential_id_length, &mut m);
        if !self.transports.is_empty() {
            m.push((9.into(), texts(&self.transports)));
        }
        if !self.algorithms.is_empty() {
            m.push((
                0x0a.into(),
                Value::Array(
                    self.algorithms
                        .iter()
                        .map(PubKeyCredParam::to_cbor)
                        .collect(),
                ),
            ));
        }
        opt(0x0b, self.max_serialized_large_blob_array, &mut m);
        if self.force_pin_change {
            m.push((0x0c.into(), true.into()));
        }
        m.push((0x0d.into(), self.min_pin_length.into()));
        opt(0x0e, self.firmware_version, &mut m);
        opt(0x0f, self.max_cred_blob_length, &mut m);
        opt(0x10, self.max_rpids_for_set_min_pin_length, &mut m);
        opt(0x11, self.preferred_platform_uv_attempts, &mut m);
        opt(0x12, self.uv_modality, &mut m);
        opt(0x14, self.remaining_discoverable_credentials, &mut m);
        if !self.vendor_prototype_config_commands.is_empty() {
            m.push((0x15.into(), ints(&self.vendor_prototype_config_commands)));
        }
        opt(0x1d, self.max_pin_length, &mut m);
        m.extend(self.other.iter().map(|(k, v)| (Value::from(*k), v.clone())));
        Value::Map(m)
    }

    /// An option's value; `None` if the authenticator does not list it.
    pub fn option(&self, id: &str) -> Option<bool> {
        self.options.get(id).copied()
    }

    pub fn has_version(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    pub fn has_extension(&self, extension: &str) -> bool {
        self.extensions.iter().any(|v| v == extension)
    }

    /// maxMsgSize, or 1024 when absent.
    pub fn max_msg_size_or_default(&self) -> usize {
        self.max_msg_size.map_or(DEFAULT_MAX_MSG_SIZE, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        })
    }

    /// Protocol Two if offered, else One (SPEC §7 step 6); `None` if neither.
    pub fn preferred_pin_protocol(&self) -> Option<PinProtocol> {
        [PinProtocol::Two, PinProtocol::One]
            .into_iter()
            .find(|p| self.pin_uv_auth_protocols.contains(&(p.number() as u64)))
    }

    /// Whether a PIN is set (`clientPin` true); `None` if PINs are unsupported.
    pub fn pin_set(&self) -> Option<bool> {
        self.option("clientPin")
    }

    /// Whether tokens with permissions (clientPIN 0x09) are supported.
    pub fn supports_permissions(&self) -> bool {
        self.option("pinUvAuthToken") == Some(true)
    }

    /// 0x0A if `credMgmt`, else 0x41 if `credentialMgmtPreview` (python-fido2's rule).
    pub fn credential_management_command(&self) -> Option<CtapCommand> {
        if self.option("credMgmt") == Some(true) {
            Some(CtapCommand::CREDENTIAL_MANAGEMENT)
        } else if self.option("credentialMgmtPreview") == Some(true) {
            Some(CtapCommand::CREDENTIAL_MANAGEMENT_PREVIEW)
        } else {
            None
        }
    }

    /// The AAGUID as a UUID string.
    pub fn aaguid_string(&self) -> String {
        format_uuid(&self.aaguid)
    }

    /// firmwareVersion as (major, minor, patch), YubiKey encoding.
    pub fn firmware_version_triple(&self) -> Option<(u8, u8, u8)> {
        let v = self.firmware_version?;
        (v <= 0xff_ffff).then_some(((v >> 16) as u8, (v >> 8) as u8, v as u8))
    }
}

impl<D: CtapDevice> Client<D> {
    /// authenticatorGetInfo; also adopts the device's maxMsgSize for later requests.
    pub fn get_info(&mut self) -> Result<GetInfo, CtapError> {
        let reply = self
            .call(CtapCommand::GET_INFO, None, &mut no_keepalive)?
            .ok_or_else(|| malformed(WHAT, "empty reply"))?;
        let info = GetInfo::parse(&reply)?;
        self.set_max_msg_size(info.max_msg_size_or_default());
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_device::ScriptedDevice;
    use super::*;

    /// YubiKey Bio 5.5.6 getInfo, as captured in ctap-hid-fido2
    /// `src/fidokey/get_info/mod.rs` (research §2.1), rebuilt field by field.
    fn bio_556() -> GetInfo {
        let mut options = BTreeMap::new();
        for (k, v) in [
            ("rk", true),
            ("up", true),
            ("uv", true),
            ("plat", false),
            ("uvToken", true),
            ("alwaysUv", true),
            ("credMgmt", true),
            ("authnrCfg", true),
            ("bioEnroll", true),
            ("clientPin", true),
            ("largeBlobs", true),
            ("pinUvAuthToken", true),
            ("setMinPINLength", true),
            ("makeCredUvNotRqd", false),
            ("credentialMgmtPreview", true),
            ("userVerificationMgmtPreview", true),
        ] {
            options.insert(k.to_owned(), v);
        }
        GetInfo {
            versions: vec![
                "U2F_V2".into(),
                "FIDO_2_0".into(),
                "FIDO_2_1_PRE".into(),
                "FIDO_2_1".into(),
            ],
            extensions: vec![
                "credProtect".into(),
                "hmac-secret".into(),
                "largeBlobKey".into(),
                "credBlob".into(),
                "minPinLength".into(),
            ],
            aaguid: hex::decode("d8522d9f575b486688a9ba99fa02f35b")
                .unwrap()
                .try_into()
                .unwrap(),
            options,
            max_msg_size: Some(1200),
            pin_uv_auth_protocols: vec![2, 1],
            max_credential_count_in_list: Some(8),
            max_credential_id_length: Some(128),
            transports: vec!["usb".into()],
            algorithms: vec![PubKeyCredParam::es256(), PubKeyCredParam::eddsa()],
            max_serialized_large_blob_array: Some(1024),
            force_pin_change: false,
            min_pin_length: 4,
            firmware_version: Some(0x050506),
            max_cred_blob_length: Some(32),
            max_rpids_for_set_min_pin_length: Some(1),
            preferred_platform_uv_attempts: Some(3),
            uv_modality: Some(2),
            remaining_discoverable_credentials: Some(21),
            ..Default::default()
        }
    }

    #[test]
    fn round_trips_and_derived_views() {
        let info = bio_556();
        let mut dev = Client::new(ScriptedDevice::new().ok(Some(info.to_cbor())));
        let got = dev.get_info().unwrap();
        assert_eq!(got, info);
        assert_eq!(dev.max_msg_size(), 1200);
        assert_eq!(dev.device().requests[0], vec![0x04]);
        assert_eq!(got.aaguid_string(), "d8522d9f-575b-4866-88a9-ba99fa02f35b");
        assert_eq!(got.preferred_pin_protocol(), Some(PinProtocol::Two));
        assert_eq!(got.firmware_version_triple(), Some((5, 5, 6)));
        assert_eq!(
            got.credential_management_command(),
            Some(CtapCommand::CREDENTIAL_MANAGEMENT)
        );
        assert_eq!(got.pin_set(), Some(true));
        assert!(got.supports_permissions());
    }

    #[test]
    fn defaults_unknown_keys_and_bad_shapes() {
        let minimal = Value::map([
            (Value::from(1), Value::Array(vec!["FIDO_2_0".into()])),
            (Value::from(3), Value::from(vec![0u8; 16])),
            (Value::from(0x13), Value::map([("FIDO", 1)])),
        ]);
        let info = GetInfo::parse(&minimal).unwrap();
        assert_eq!(info.min_pin_length, 4);
        assert!(!info.force_pin_change);
        assert_eq!(info.max_msg_size_or_default(), 1024);
        assert_eq!(info.preferred_pin_protocol(), None);
        assert_eq!(info.credential_management_command(), None);
        assert_eq!(info.other.len(), 1);
        assert_eq!(GetInfo::parse(&info.to_cbor()).unwrap(), info);
        for bad in [
            Value::map([(1, 1)]),
            Value::map([
                (Value::from(1), Value::Array(vec!["F".into()])),
                (Value::from(3), Value::from(vec![0u8; 15])),
            ]),
            Value::map([(Value::from("a"), Value::from(1))]),
            Value::Array(vec![]),
        ] {
            assert!(
                matches!(GetInfo::parse(&bad), Err(CtapError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn non_canonical_status_and_empty_replies_are_typed() {
        let mut c = Client::new(
            ScriptedDevice::new()
                .raw(vec![0x00, 0xa2, 0x03, 0x00, 0x01, 0x00])
                .raw(vec![0x2e])
                .raw(vec![])
                .raw(vec![0x00]),
        );
        assert!(matches!(c.get_info(), Err(CtapError::Cbor { .. })));
        let e = c.get_info().unwrap_err();
        assert_eq!(e.status(), Some(super::super::StatusCode::NO_CREDENTIALS));
        assert_eq!(e.to_string(), "getInfo failed: NO_CREDENTIALS (0x2e)");
        assert!(matches!(c.get_info(), Err(CtapError::Malformed { .. })));
        assert!(matches!(c.get_info(), Err(CtapError::Malformed { .. })));
    }
}

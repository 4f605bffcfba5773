//! Firmware profiles (SPEC §8): the station's allow-list and the simulator's script.
//!
//! One TOML file per key family and firmware line (`firmware-profiles/*.toml`).
//! The four shipped profiles are embedded at build time ([`builtin`]) so the demo
//! and the simulator need no files; [`load_dir`] reads an operator's directory.
//! The product table of SPEC §3 ([`product`]) maps a shipment's `product_id` to
//! the form factor, NFC and FIPS bits the inserted key must show.

use crate::yubikey::{FormFactor, Version};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a profile could not be loaded.
#[derive(Debug, Error)]
pub enum ProfileError {
    #[error("cannot read firmware profile {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("firmware profile {name}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("two firmware profiles are named {0}")]
    Duplicate(String),
    #[error("no firmware profile named {0:?}")]
    Unknown(String),
}

/// A product of SPEC §3 (public YubiEnterprise product ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Product {
    pub id: u32,
    pub name: &'static str,
    /// Device-info tag 0x04, low nibble.
    pub form_factor: FormFactor,
    pub nfc: bool,
    pub fips: bool,
    /// Security Key series (tag 0x04 bit 0x40, FIDO only, may have no serial).
    pub sky: bool,
}

impl Product {
    /// The device-info tag 0x04 byte this product reports (FIPS 0x80, SKY 0x40).
    pub fn form_factor_byte(&self) -> u8 {
        self.form_factor.0 | if self.fips { 0x80 } else { 0 } | if self.sky { 0x40 } else { 0 }
    }
}

const fn p(id: u32, name: &'static str, ff: u8, nfc: bool, fips: bool, sky: bool) -> Product {
    Product {
        id,
        name,
        form_factor: FormFactor(ff),
        nfc,
        fips,
        sky,
    }
}

/// SPEC §3 product table.
pub const PRODUCTS: &[Product] = &[
    p(1, "YubiKey 5 NFC", 1, true, false, false),
    p(2, "YubiKey 5 Nano", 2, false, false, false),
    p(3, "YubiKey 5C", 3, false, false, false),
    p(4, "YubiKey 5C Nano", 4, false, false, false),
    p(5, "YubiKey 5Ci", 5, false, false, false),
    p(7, "Security Key NFC", 1, true, false, true),
    p(29, "YubiKey 5C NFC", 3, true, false, false),
    p(54, "YubiKey 5 NFC FIPS", 1, true, true, false),
    p(55, "YubiKey 5C NFC FIPS", 3, true, true, false),
];

/// The SPEC §3 product with this id.
pub fn product(id: u32) -> Option<&'static Product> {
    PRODUCTS.iter().find(|p| p.id == id)
}

/// A product as one firmware line ships it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileProduct {
    pub product_id: u32,
    /// AAGUIDs in canonical UUID text; the first is what the simulator reports.
    pub aaguids: Vec<String>,
    /// USB product ids (vendor 0x1050) this product enumerates with.
    pub usb_pids: Vec<u16>,
    /// Overrides the profile's factory PIN complexity.
    #[serde(default)]
    pub pin_complexity: Option<bool>,
    /// Overrides the profile's factory minPINLength.
    #[serde(default)]
    pub min_pin_length: Option<u8>,
}

/// Behaviour differences that getInfo does not name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quirks {
    /// Pre-5.7.4 firmware checked only 16 bytes of a v2 pinUvAuthParam (YSA-2025-02).
    #[serde(default)]
    pub accepts_truncated_v2_pin_auth: bool,
}

/// How the authenticator treats PIN/UV auth tokens and its key-agreement key
/// (issue #16). Read by the station (which savings it may use) and by the
/// simulator (how it answers).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinSession {
    /// getPinUvAuthTokenUsingPinWithPermissions accepts several permissions in
    /// one token (CTAP 2.1 §6.5.5.7: `permissions` is a bit set), so credential
    /// management and authenticatorConfig can share one `cm|acfg` token. When
    /// false the simulator answers CTAP2_ERR_UNAUTHORIZED_PERMISSION (0x40) to a
    /// token request with more than one of cm, acfg, and the station falls back
    /// to one token per permission (and remembers that for the key's line).
    #[serde(default = "yes")]
    pub combined_token_permissions: bool,
    /// The authenticator keeps its key-agreement key until power-up or a failed
    /// PIN check (CTAP 2.1 §6.5.4 / §6.5.5.7), so the station may reuse one
    /// shared secret for the PIN operations of one power session instead of a
    /// getKeyAgreement per operation. Off until the hardware-in-the-loop check
    /// (`tests/it/hil.rs`, docs/operations.md) has confirmed it on a real key.
    #[serde(default)]
    pub keeps_key_agreement: bool,
}

fn yes() -> bool {
    true
}

impl Default for PinSession {
    fn default() -> Self {
        Self {
            combined_token_permissions: true,
            keeps_key_agreement: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinBlocklist {
    pub pins: Vec<String>,
}

/// The TOML form, validated into [`FirmwareProfile`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    description: String,
    firmware: String,
    min_firmware: String,
    versions: Vec<String>,
    extensions: Vec<String>,
    pin_uv_auth_protocols: Vec<u8>,
    max_msg_size: usize,
    max_cred_count_in_list: u32,
    max_cred_id_length: u32,
    algorithms: Vec<i64>,
    max_rpids_for_set_min_pin_length: u32,
    #[serde(default)]
    max_cred_blob_length: Option<u32>,
    #[serde(default)]
    max_serialized_large_blob_array: Option<u32>,
    resident_capacity: usize,
    min_pin_length: u8,
    reset_window_ms: u64,
    pin_complexity: bool,
    options: BTreeMap<String, bool>,
    #[serde(default)]
    quirks: Quirks,
    #[serde(default)]
    pin_session: PinSession,
    #[serde(default)]
    pin_blocklist: PinBlocklist,
    products: Vec<ProfileProduct>,
}

/// One firmware line of one key family (SPEC §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareProfile {
    pub name: String,
    pub description: String,
    /// The firmware the simulator reports.
    pub firmware: Version,
    /// The oldest firmware the station accepts under this profile.
    pub min_firmware: Version,
    /// getInfo 0x01.
    pub versions: Vec<String>,
    /// getInfo 0x02.
    pub extensions: Vec<String>,
    /// getInfo 0x06, preference order.
    pub pin_uv_auth_protocols: Vec<u8>,
    pub max_msg_size: usize,
    pub max_cred_count_in_list: u32,
    pub max_cred_id_length: u32,
    pub algorithms: Vec<i64>,
    pub max_rpids_for_set_min_pin_length: u32,
    /// getInfo 0x0F; present exactly when `extensions` lists credBlob (CTAP 2.1 §12.2: at least 32).
    pub max_cred_blob_length: Option<u32>,
    /// getInfo 0x0B; present exactly when option largeBlobs is true (CTAP 2.1 §6.10: at least 1024).
    pub max_serialized_large_blob_array: Option<u32>,
    /// Discoverable credential slots.
    pub resident_capacity: usize,
    /// Factory minPINLength.
    pub min_pin_length: u8,
    /// authenticatorReset is allowed this long after power-up.
    pub reset_window_ms: u64,
    /// Factory PIN complexity (tag 0x16).
    pub pin_complexity: bool,
    /// getInfo 0x04 at the factory; absent = unsupported.
    pub options: BTreeMap<String, bool>,
    pub quirks: Quirks,
    /// Token permissions and key-agreement lifetime (issue #16).
    pub pin_session: PinSession,
    pub pin_blocklist: Vec<String>,
    pub products: Vec<ProfileProduct>,
}

impl FirmwareProfile {
    /// Parses and validates one profile's TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ProfileError> {
        let raw: RawProfile = toml::from_str(text).map_err(|e| ProfileError::Invalid {
            name: "(unparsed)".into(),
            reason: e.message().to_string(),
        })?;
        let name = raw.name.clone();
        let bad = |reason: String| ProfileError::Invalid {
            name: name.clone(),
            reason,
        };
        let version = |s: &str| {
            s.parse::<Version>()
                .map_err(|_| bad(format!("{s:?} is not a firmware version")))
        };
        let firmware = version(&raw.firmware)?;
        let min_firmware = version(&raw.min_firmware)?;
        if raw.pin_uv_auth_protocols.is_empty()
            || raw
                .pin_uv_auth_protocols
                .iter()
                .any(|p| !(1..=2).contains(p))
        {
            return Err(bad("pin_uv_auth_protocols must list 1 and/or 2".into()));
        }
        if !(64..=7609).contains(&raw.max_msg_size) {
            return Err(bad("max_msg_size must be within 64..=7609".into()));
        }
        if !(4..=63).contains(&raw.min_pin_length) {
            return Err(bad("min_pin_length must be within 4..=63".into()));
        }
        if raw.resident_capacity == 0 || raw.resident_capacity > 10_000 {
            return Err(bad("resident_capacity must be within 1..=10000".into()));
        }
        let cred_blob = raw.extensions.iter().any(|e| e == "credBlob");
        match raw.max_cred_blob_length {
            Some(n) if !cred_blob => {
                return Err(bad(format!(
                    "max_cred_blob_length {n} without the credBlob extension"
                )))
            }
            Some(n) if n < 32 => {
                return Err(bad("max_cred_blob_length must be at least 32".into()))
            }
            None if cred_blob => return Err(bad("credBlob needs max_cred_blob_length".into())),
            _ => {}
        }
        let large_blobs = raw.options.get("largeBlobs") == Some(&true);
        match raw.max_serialized_large_blob_array {
            Some(n) if !large_blobs => {
                return Err(bad(format!(
                    "max_serialized_large_blob_array {n} without option largeBlobs"
                )))
            }
            Some(n) if n < 1024 => {
                return Err(bad(
                    "max_serialized_large_blob_array must be at least 1024".into()
                ))
            }
            None if large_blobs => {
                return Err(bad(
                    "option largeBlobs needs max_serialized_large_blob_array".into(),
                ))
            }
            _ => {}
        }
        if raw.products.is_empty() {
            return Err(bad("lists no products".into()));
        }
        for pr in &raw.products {
            if product(pr.product_id).is_none() {
                return Err(bad(format!("unknown product_id {}", pr.product_id)));
            }
            if pr.aaguids.is_empty() {
                return Err(bad(format!("product {} has no AAGUID", pr.product_id)));
            }
            for a in &pr.aaguids {
                parse_uuid(a).ok_or_else(|| bad(format!("{a:?} is not a UUID")))?;
            }
        }
        Ok(Self {
            name: raw.name,
            description: raw.description,
            firmware,
            min_firmware,
            versions: raw.versions,
            extensions: raw.extensions,
            pin_uv_auth_protocols: raw.pin_uv_auth_protocols,
            max_msg_size: raw.max_msg_size,
            max_cred_count_in_list: raw.max_cred_count_in_list,
            max_cred_id_length: raw.max_cred_id_length,
            algorithms: raw.algorithms,
            max_rpids_for_set_min_pin_length: raw.max_rpids_for_set_min_pin_length,
            max_cred_blob_length: raw.max_cred_blob_length,
            max_serialized_large_blob_array: raw.max_serialized_large_blob_array,
            resident_capacity: raw.resident_capacity,
            min_pin_length: raw.min_pin_length,
            reset_window_ms: raw.reset_window_ms,
            pin_complexity: raw.pin_complexity,
            options: raw.options,
            quirks: raw.quirks,
            pin_session: raw.pin_session,
            pin_blocklist: raw.pin_blocklist.pins,
            products: raw.products,
        })
    }

    /// Whether getInfo lists option `name` (with any value).
    pub fn has_option(&self, name: &str) -> bool {
        self.options.contains_key(name)
    }

    /// Whether getInfo lists `version` (e.g. "FIDO_2_1").
    pub fn has_version(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    /// Whether firmware `fw` belongs to this profile's line: at least
    /// `min_firmware` and the same major.minor as `firmware`.
    pub fn covers_firmware(&self, fw: (u8, u8, u8)) -> bool {
        let (min, line) = (&self.min_firmware, &self.firmware);
        fw >= (min.major, min.minor, min.patch) && (fw.0, fw.1) == (line.major, line.minor)
    }

    /// authenticatorConfig (0x0D) exists on this line.
    pub fn has_authenticator_config(&self) -> bool {
        self.options.get("authnrCfg") == Some(&true)
    }

    /// setMinPINLength / forceChangePin exist on this line.
    pub fn has_set_min_pin_length(&self) -> bool {
        self.options.get("setMinPINLength") == Some(&true)
    }

    /// Tokens with permissions (clientPIN 0x09); else only legacy getPinToken.
    pub fn has_pin_uv_auth_token(&self) -> bool {
        self.options.get("pinUvAuthToken") == Some(&true)
    }

    /// The credential-management command byte: 0x0A, or the preview 0x41.
    pub fn cred_mgmt_command(&self) -> Option<u8> {
        if self.options.get("credMgmt") == Some(&true) {
            Some(0x0a)
        } else if self.options.get("credentialMgmtPreview") == Some(&true) {
            Some(0x41)
        } else {
            None
        }
    }

    /// This line's entry for a SPEC §3 product.
    pub fn product(&self, product_id: u32) -> Option<&ProfileProduct> {
        self.products.iter().find(|p| p.product_id == product_id)
    }

    /// Whether `aaguid` (16 bytes) is listed for any product of this line.
    pub fn lists_aaguid(&self, aaguid: &[u8]) -> bool {
        self.products
            .iter()
            .flat_map(|p| &p.aaguids)
            .any(|a| parse_uuid(a).is_some_and(|u| u == aaguid))
    }

    /// The products (of this line) that report `aaguid`.
    pub fn products_for_aaguid(&self, aaguid: &[u8]) -> Vec<u32> {
        self.products
            .iter()
            .filter(|p| {
                p.aaguids
                    .iter()
                    .any(|a| parse_uuid(a).is_some_and(|u| u == aaguid))
            })
            .map(|p| p.product_id)
            .collect()
    }

    /// PIN complexity for a product (its override, else the line's default).
    pub fn pin_complexity_for(&self, product_id: u32) -> bool {
        self.product(product_id)
            .and_then(|p| p.pin_complexity)
            .unwrap_or(self.pin_complexity)
    }

    /// Factory minPINLength for a product.
    pub fn min_pin_length_for(&self, product_id: u32) -> u8 {
        self.product(product_id)
            .and_then(|p| p.min_pin_length)
            .unwrap_or(self.min_pin_length)
    }

    /// Whether `pin` is trivial for this line: in the blocklist, all one
    /// character, or a run of consecutive ascending/descending digits.
    pub fn is_trivial_pin(&self, pin: &str) -> bool {
        is_trivial_pin(pin, &self.pin_blocklist)
    }
}

/// A PIN that PIN complexity refuses (research §3.4; SPEC §7 step 5).
pub fn is_trivial_pin(pin: &str, blocklist: &[String]) -> bool {
    if blocklist.iter().any(|b| b == pin) {
        return true;
    }
    let b = pin.as_bytes();
    if b.len() < 2 {
        return false;
    }
    if b.iter().all(|&c| c == b[0]) {
        return true;
    }
    let digits = b.iter().all(u8::is_ascii_digit);
    let run = |step: i16| b.windows(2).all(|w| w[1] as i16 - w[0] as i16 == step);
    digits && (run(1) || run(-1))
}

/// Parses a UUID in its 8-4-4-4-12 text form.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let groups: Vec<&str> = s.split('-').collect();
    if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
        return None;
    }
    let bytes = hex::decode(groups.concat()).ok()?;
    bytes.try_into().ok()
}

/// Formats 16 bytes as a UUID (one implementation, in the CTAP types).
pub use crate::ctap2::format_uuid;

/// The profiles shipped in `firmware-profiles/`, embedded at build time.
pub const BUILTIN_SOURCES: &[(&str, &str)] = &[
    (
        "yubikey-5.2.toml",
        include_str!("../firmware-profiles/yubikey-5.2.toml"),
    ),
    (
        "yubikey-5.4.toml",
        include_str!("../firmware-profiles/yubikey-5.4.toml"),
    ),
    (
        "yubikey-5.7.toml",
        include_str!("../firmware-profiles/yubikey-5.7.toml"),
    ),
    (
        "security-key-5.7.toml",
        include_str!("../firmware-profiles/security-key-5.7.toml"),
    ),
];

/// A set of profiles, looked up by name.
#[derive(Debug, Clone, Default)]
pub struct ProfileSet {
    profiles: Vec<FirmwareProfile>,
}

impl ProfileSet {
    fn from_sources<'a>(
        sources: impl IntoIterator<Item = (PathBuf, &'a str)>,
    ) -> Result<Self, ProfileError> {
        let mut profiles: Vec<FirmwareProfile> = Vec::new();
        for (path, text) in sources {
            let prof = FirmwareProfile::from_toml(text).map_err(|e| match e {
                ProfileError::Invalid { name, reason } if name == "(unparsed)" => {
                    ProfileError::Read {
                        path: path.clone(),
                        reason,
                    }
                }
                other => other,
            })?;
            if profiles.iter().any(|p| p.name == prof.name) {
                return Err(ProfileError::Duplicate(prof.name));
            }
            profiles.push(prof);
        }
        profiles.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self { profiles })
    }

    /// A set of already parsed profiles (tests, benchmarks: a profile with a
    /// setting changed). Names must be unique.
    pub fn from_profiles(profiles: Vec<FirmwareProfile>) -> Result<Self, ProfileError> {
        let mut out: Vec<FirmwareProfile> = Vec::new();
        for p in profiles {
            if out.iter().any(|q| q.name == p.name) {
                return Err(ProfileError::Duplicate(p.name));
            }
            out.push(p);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self { profiles: out })
    }

    /// Profiles by name.
    pub fn get(&self, name: &str) -> Result<&FirmwareProfile, ProfileError> {
        self.profiles
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ProfileError::Unknown(name.to_string()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &FirmwareProfile> {
        self.profiles.iter()
    }

    pub fn names(&self) -> Vec<&str> {
        self.profiles.iter().map(|p| p.name.as_str()).collect()
    }

    /// Every profile that lists `product_id`.
    pub fn for_product(&self, product_id: u32) -> impl Iterator<Item = &FirmwareProfile> {
        self.profiles
            .iter()
            .filter(move |p| p.product(product_id).is_some())
    }
}

/// The embedded profiles. Validated by the unit tests, so this cannot fail in a build that passed them.
pub fn builtin() -> ProfileSet {
    ProfileSet::from_sources(BUILTIN_SOURCES.iter().map(|(n, t)| (PathBuf::from(n), *t)))
        .unwrap_or_default()
}

/// One built-in profile by name.
pub fn builtin_profile(name: &str) -> Result<FirmwareProfile, ProfileError> {
    builtin().get(name).cloned()
}

/// Every `*.toml` in `dir`.
pub fn load_dir(dir: &Path) -> Result<ProfileSet, ProfileError> {
    let read_err = |path: &Path, e: std::io::Error| ProfileError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
        let path = entry.map_err(|e| read_err(dir, e))?.path();
        if path.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
            files.push((path, text));
        }
    }
    files.sort();
    ProfileSet::from_sources(files.iter().map(|(p, t)| (p.clone(), t.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_are_distinct() {
        let set =
            ProfileSet::from_sources(BUILTIN_SOURCES.iter().map(|(n, t)| (PathBuf::from(n), *t)))
                .unwrap();
        assert_eq!(
            set.names(),
            [
                "security-key-5.7",
                "yubikey-5.2",
                "yubikey-5.4",
                "yubikey-5.7"
            ]
        );
        assert_eq!(builtin().names().len(), 4);
    }

    #[test]
    fn key_agreement_reuse_is_off_until_hardware_confirms_it() {
        // issue #16: no shipped profile may enable reuse before the HIL check
        // (docs/operations.md) has passed on a real key of its line.
        for p in builtin().iter() {
            assert!(!p.pin_session.keeps_key_agreement, "{}", p.name);
            assert!(p.pin_session.combined_token_permissions, "{}", p.name);
        }
        let y57 = builtin_profile("yubikey-5.7").unwrap();
        assert!(y57.covers_firmware((5, 7, 4)) && y57.covers_firmware((5, 7, 0)));
        assert!(!y57.covers_firmware((5, 4, 3)) && !y57.covers_firmware((5, 8, 0)));
        // An unknown key in [pin_session] is refused like anywhere else.
        let text = BUILTIN_SOURCES[2].1.replace(
            "keeps_key_agreement = false",
            "keeps_key_agreement = false\nreuse_everything = true",
        );
        assert!(FirmwareProfile::from_toml(&text).is_err());
    }

    #[test]
    fn quirks_per_line() {
        let set = builtin();
        let y57 = set.get("yubikey-5.7").unwrap();
        assert!(y57.has_authenticator_config() && y57.has_set_min_pin_length());
        assert!(y57.has_pin_uv_auth_token());
        assert_eq!(y57.cred_mgmt_command(), Some(0x0a));
        assert_eq!(y57.resident_capacity, 100);
        for name in ["yubikey-5.2", "yubikey-5.4"] {
            let p = set.get(name).unwrap();
            assert!(p.has_version("FIDO_2_1_PRE") && !p.has_version("FIDO_2_1"));
            assert!(!p.has_authenticator_config() && !p.has_set_min_pin_length());
            assert!(!p.has_pin_uv_auth_token());
            assert_eq!(p.cred_mgmt_command(), Some(0x41));
            assert_eq!(p.resident_capacity, 25);
        }
        assert_eq!(set.get("yubikey-5.2").unwrap().pin_uv_auth_protocols, [1]);
    }

    #[test]
    fn aaguid_lookup() {
        let set = builtin();
        let y57 = set.get("yubikey-5.7").unwrap();
        let a = parse_uuid("a25342c0-3cdc-4414-8e46-f4807fca511c").unwrap();
        assert!(y57.lists_aaguid(&a));
        assert_eq!(y57.products_for_aaguid(&a), [1, 29]);
        assert!(!set.get("yubikey-5.4").unwrap().lists_aaguid(&a));
        assert_eq!(format_uuid(&a), "a25342c0-3cdc-4414-8e46-f4807fca511c");
        assert_eq!(set.for_product(7).count(), 1);
        assert!(y57.pin_complexity_for(54) && !y57.pin_complexity_for(1));
        assert_eq!(y57.min_pin_length_for(55), 6);
    }

    #[test]
    fn product_table() {
        let fips = product(55).unwrap();
        assert_eq!(fips.form_factor_byte(), 0x83);
        assert_eq!(product(7).unwrap().form_factor_byte(), 0x41);
        assert!(product(6).is_none());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = BUILTIN_SOURCES[2].1.replace(
            "pin_complexity = false",
            "pin_complexity = false\nbogus = 1",
        );
        assert!(FirmwareProfile::from_toml(&text).is_err());
        let text = BUILTIN_SOURCES[2]
            .1
            .replace("product_id = 1\n", "product_id = 6\n");
        assert!(matches!(
            FirmwareProfile::from_toml(&text),
            Err(ProfileError::Invalid { .. })
        ));
    }

    #[test]
    fn trivial_pins() {
        let bl = vec!["520520".to_string()];
        for pin in ["111111", "123456", "987654", "520520", "0123"] {
            assert!(is_trivial_pin(pin, &bl), "{pin}");
        }
        for pin in ["482913", "135790", "112358"] {
            assert!(!is_trivial_pin(pin, &bl), "{pin}");
        }
    }

    #[test]
    fn load_dir_reads_the_shipped_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles");
        let set = load_dir(&dir).unwrap();
        assert_eq!(set.names(), builtin().names());
        assert!(matches!(set.get("nope"), Err(ProfileError::Unknown(_))));
    }
}

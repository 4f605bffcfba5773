//! Station configuration (SPEC §11): TOML parsed raw (unknown keys are an
//! error), then validated once into typed values with one-line errors that
//! name the key and what to do (exit code 2).

use crate::jose::pkcs11::HsmConfig;
use crate::jose::request::DEFAULT_MAX_REQUEST_LIFETIME_DAYS;
use crate::jose::{IdpSigners, RequestPolicy};
use crate::transport::DeviceSpec;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// A configuration problem: the file, and what is wrong with it.
#[derive(Debug, Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    station: RawStation,
    #[serde(default)]
    customization: Vec<RawCustomization>,
    #[serde(default)]
    slot: Vec<RawSlot>,
    rig: Option<RawRig>,
    web: Option<RawWeb>,
    sink: Option<RawSink>,
    upstream: Option<crate::upstream::RawUpstream>,
    keys: Option<RawKeys>,
    store: Option<RawStore>,
}

/// `[keys]` (SPEC §14): PKCS#11 custody of the station keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    pkcs11_module: PathBuf,
    token_label: String,
    pin_file: PathBuf,
    sessions: Option<usize>,
}

/// Validates `[keys]`: the PIN file is a bare name inside the key custody
/// directory (never a path elsewhere, never the PIN itself).
fn parse_keys(raw: RawKeys) -> Result<HsmConfig, String> {
    if raw.token_label.is_empty() || raw.token_label.len() > 32 {
        return Err(
            "[keys] token_label must be 1-32 characters (PKCS#11 token labels are 32 bytes)".into(),
        );
    }
    if !raw.pkcs11_module.is_absolute() {
        return Err("[keys] pkcs11_module must be an absolute path to the module (.so)".into());
    }
    let mut parts = raw.pin_file.components();
    let bare = matches!(
        (parts.next(), parts.next()),
        (Some(std::path::Component::Normal(_)), None)
    );
    if !bare {
        return Err(
            "[keys] pin_file must be a file name in keys_dir / $CREDENTIALS_DIRECTORY".into(),
        );
    }
    let sessions = raw
        .sessions
        .unwrap_or(crate::jose::pkcs11::DEFAULT_SESSIONS);
    if !(1..=64).contains(&sessions) {
        return Err("[keys] sessions must be 1..=64".into());
    }
    Ok(HsmConfig {
        module: raw.pkcs11_module,
        token_label: raw.token_label,
        pin_file: raw.pin_file,
        sessions,
    })
}

/// `[store]` (SPEC §13): the fleet's PostgreSQL database instead of SQLite.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: String,
    password_file: Option<String>,
}

/// The validated `[store]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// libpq-style URL without a password.
    pub url: String,
    /// A file name in the key custody directory (keys_dir or
    /// `$CREDENTIALS_DIRECTORY`), never a path elsewhere.
    pub password_file: Option<String>,
}

/// Checks `[store]`: a postgres URL without a password, and a password file
/// that is a bare name in the key custody directory.
fn parse_store(raw: Option<RawStore>) -> Result<Option<StoreConfig>, String> {
    let Some(raw) = raw else { return Ok(None) };
    if !(raw.url.starts_with("postgresql://") || raw.url.starts_with("postgres://")) {
        return Err("[store] url must be a postgresql:// URL".into());
    }
    let authority = raw
        .url
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or_default();
    let userinfo = authority.split(['/', '?']).next().unwrap_or_default();
    if userinfo.contains('@') && userinfo.split('@').next().unwrap_or_default().contains(':') {
        return Err("[store] url must not hold a password: put it in password_file".into());
    }
    if let Some(f) = &raw.password_file {
        if f.is_empty() || f.contains('/') || f == "." || f == ".." {
            return Err(
                "[store] password_file is a file name in keys_dir ($CREDENTIALS_DIRECTORY), not a path"
                    .into(),
            );
        }
    }
    Ok(Some(StoreConfig {
        url: raw.url,
        password_file: raw.password_file,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStation {
    id: String,
    state_dir: PathBuf,
    keys_dir: Option<PathBuf>,
    outbox_dir: Option<PathBuf>,
    spool_dir: Option<PathBuf>,
    #[serde(default)]
    attestation_roots: Vec<PathBuf>,
    lease_secs: Option<u64>,
    touch_timeout_secs: Option<u64>,
    max_attempts: Option<u32>,
    sim_seed: Option<u64>,
    #[serde(default)]
    reset_non_blank: bool,
    max_request_lifetime_days: Option<u32>,
    once_give_up_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomization {
    id: String,
    min_firmware: Option<String>,
    #[serde(default)]
    products: Vec<u32>,
    idp_signing_jwks: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlot {
    device: String,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRig {
    port: Option<PathBuf>,
    baud: Option<u32>,
    /// A simulated rig on a pty inside the station (SPEC §10), for `sim:` slots.
    #[serde(default)]
    simulated: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    listen: String,
    token: Option<String>,
    /// A file holding the token (first line), e.g. `$CREDENTIALS_DIRECTORY/web-token`.
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    http_url: String,
    /// TLS of an `https://` sink (SPEC §6), as for `[upstream]` (SPEC §12).
    ca: Option<PathBuf>,
    client_cert: Option<String>,
    client_key: Option<String>,
}

/// A firmware version `major.minor.patch`, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u8, pub u8, pub u8);

impl std::str::FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.trim().split('.').collect();
        let num = |p: &str| {
            p.parse::<u8>()
                .map_err(|_| format!("{s:?} is not a version like 5.7.0"))
        };
        match parts.as_slice() {
            [a, b, c] => Ok(Version(num(a)?, num(b)?, num(c)?)),
            [a, b] => Ok(Version(num(a)?, num(b)?, 0)),
            _ => Err(format!("{s:?} is not a version like 5.7.0")),
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// A customization this station may program (SPEC §3 `customization_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customization {
    pub id: String,
    pub min_firmware: Option<Version>,
    /// Allowed product ids; empty = any product known to the profiles.
    pub products: Vec<u32>,
    /// `idp_signing_jwks = "FILE"` (SPEC §4): every request of this
    /// customization must be IdP-signed by a key of this JWKS.
    pub idp_signing_jwks: Option<PathBuf>,
    /// That file's keys, read and checked when the configuration is loaded
    /// (a bad file stops the station before it touches a key).
    pub idp_signers: Option<IdpSigners>,
    /// `[station] max_request_lifetime_days`, copied here so that everything
    /// the recipe applies to one job's requests comes from its customization.
    pub max_request_lifetime_days: u32,
}

impl Customization {
    /// What this customization asks of its requests (SPEC §4).
    pub fn request_policy(&self) -> RequestPolicy<'_> {
        RequestPolicy {
            idp_signers: self.idp_signers.as_ref(),
            max_lifetime_secs: i64::from(self.max_request_lifetime_days) * 86_400,
        }
    }
}

/// One rig position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotConfig {
    pub name: String,
    pub device: DeviceSpec,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub station_id: String,
    pub state_dir: PathBuf,
    /// `None`: `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
    pub keys_dir: Option<PathBuf>,
    pub outbox_dir: PathBuf,
    pub spool_dir: Option<PathBuf>,
    pub attestation_roots: Vec<PathBuf>,
    pub lease: Duration,
    pub touch_timeout: Duration,
    /// Attempts (keys tried) before a job is marked failed.
    pub max_attempts: u32,
    /// Seed of `sim:` slots (serials, key material); random when unset.
    pub sim_seed: Option<u64>,
    pub customizations: Vec<Customization>,
    pub slots: Vec<SlotConfig>,
    pub rig_port: Option<(PathBuf, u32)>,
    /// `[rig] simulated = true`: the station runs a simulated rig on a pty
    /// and drives it through the serial driver (SPEC §9, §10).
    pub rig_simulated: bool,
    /// `[station] reset_non_blank`: power-cycle and `authenticatorReset` a
    /// non-blank key within the 10-s window (SPEC §7 step 2) instead of
    /// rejecting it. Needs a rig with power; off by default.
    pub reset_non_blank: bool,
    pub web: Option<(SocketAddr, Option<String>)>,
    pub http_sink: Option<String>,
    /// `[store]`: the fleet database; `None` = SQLite in `state_dir`.
    pub store: Option<StoreConfig>,
    /// `[sink] ca`, `client_cert`, `client_key` for an `https://` sink.
    pub http_sink_tls: crate::upstream::TlsFiles,
    /// `[upstream]` (SPEC §12): pull locked shipments, return results there.
    pub upstream: Option<crate::upstream::UpstreamConfig>,
    /// `[station] max_request_lifetime_days` (SPEC §4, default 30): the
    /// longest `exp - iat` a request may carry.
    pub max_request_lifetime_days: u32,
    /// `[station] once_give_up_secs` (default 60): how long `run --once`
    /// waits with jobs queued, none in progress and nothing changing (no key
    /// in any slot fits them) before it gives up and says why.
    pub once_give_up: Duration,
    /// `[keys]`: keys in a PKCS#11 token; `None` = key files (SPEC §14).
    pub keys: Option<HsmConfig>,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            message: format!("cannot read configuration ({e})"),
        })?;
        Self::parse(&text).map_err(|message| ConfigError {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // One line: toml's message may span several ("…\nexpected `.`").
            let msg = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            match e.span() {
                Some(span) => {
                    let line = text[..span.start].matches('\n').count() + 1;
                    format!("line {line}: {msg}")
                }
                None => msg,
            }
        })?;
        let s = raw.station;
        if s.id.trim().is_empty() {
            return Err("[station] id must not be empty".into());
        }
        let max_request_lifetime_days = s
            .max_request_lifetime_days
            .unwrap_or(DEFAULT_MAX_REQUEST_LIFETIME_DAYS);
        // A request lives days, not years; 10 years bounds the arithmetic too.
        if !(1..=3650).contains(&max_request_lifetime_days) {
            return Err("[station] max_request_lifetime_days must be 1..=3650".into());
        }
        if s.once_give_up_secs == Some(0) {
            return Err("[station] once_give_up_secs must be at least 1 (seconds)".into());
        }
        let mut customizations = Vec::new();
        for c in raw.customization {
            if customizations.iter().any(|x: &Customization| x.id == c.id) {
                return Err(format!("[[customization]] id {:?} appears twice", c.id));
            }
            let min_firmware = c
                .min_firmware
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| format!("[[customization]] {}: min_firmware {e}", c.id))?;
            let idp_signers = match &c.idp_signing_jwks {
                None => None,
                Some(path) => Some(load_idp_signers(path).map_err(|e| {
                    format!(
                        "[[customization]] {}: idp_signing_jwks {}: {e}",
                        c.id,
                        path.display()
                    )
                })?),
            };
            customizations.push(Customization {
                id: c.id,
                min_firmware,
                products: c.products,
                idp_signing_jwks: c.idp_signing_jwks,
                idp_signers,
                max_request_lifetime_days,
            });
        }
        let mut slots = Vec::new();
        for (i, slot) in raw.slot.into_iter().enumerate() {
            let device = slot
                .device
                .parse::<DeviceSpec>()
                .map_err(|e| format!("[[slot]] {i} (slot{i}, counting from 0): {e}"))?;
            // Slots are numbered from 0 in file order: the number on the rig,
            // on the wire (SPEC §9), the page and /metrics (docs/operator.md).
            slots.push(SlotConfig {
                name: slot.name.unwrap_or_else(|| format!("slot{i}")),
                device,
            });
        }
        check_slot_count(slots.len()).map_err(|e| format!("[[slot]]: {e}"))?;
        let web = match raw.web {
            None => None,
            Some(w) => {
                let addr: SocketAddr = w
                    .listen
                    .parse()
                    .map_err(|_| format!("[web] listen {:?} is not HOST:PORT", w.listen))?;
                let token = match (w.token, &w.token_file) {
                    (Some(_), Some(_)) => {
                        return Err("[web] has both token and token_file: keep one".into())
                    }
                    (token, None) => token,
                    (None, Some(path)) => Some(
                        crate::web::read_token_file(path)
                            .map_err(|e| format!("[web] token_file: {e}"))?
                            .expose()
                            .clone(),
                    ),
                };
                if !addr.ip().is_loopback() && token.as_deref().unwrap_or("").len() < 16 {
                    return Err(format!(
                        "[web] listen {addr} is not loopback: set token_file = \"FILE\" (or token) to a token of at least 16 characters"
                    ));
                }
                Some((addr, token))
            }
        };
        let (rig_port, rig_simulated) = match raw.rig {
            None => (None, false),
            Some(RawRig {
                port: Some(_),
                simulated: true,
                ..
            }) => {
                return Err(
                    "[rig] has both port and simulated = true: keep one (a real rig's port, or the simulated rig)"
                        .into(),
                )
            }
            Some(RawRig {
                port: Some(port),
                baud,
                ..
            }) => (Some((port, baud.unwrap_or(115_200))), false),
            Some(RawRig {
                port: None,
                simulated: true,
                baud: None,
            }) => (None, true),
            Some(RawRig {
                port: None,
                simulated: true,
                baud: Some(_),
            }) => return Err("[rig] baud is for a real port; the simulated rig has none".into()),
            Some(RawRig { port: None, .. }) => {
                return Err(
                    "[rig] needs port = \"/dev/…\" (a real rig) or simulated = true".into(),
                )
            }
        };
        if rig_simulated
            && slots
                .iter()
                .any(|s| !matches!(s.device, DeviceSpec::Sim(_)))
        {
            return Err(
                "[rig] simulated = true drives simulated keys only: every [[slot]] device must be sim:PROFILE"
                    .into(),
            );
        }
        let (http_sink, http_sink_tls, upstream) = upstream_and_sink(raw.sink, raw.upstream)?;
        let keys = raw.keys.map(parse_keys).transpose()?;
        let state_dir = s.state_dir;
        let store = parse_store(raw.store)?;
        Ok(Config {
            station_id: s.id,
            outbox_dir: s.outbox_dir.unwrap_or_else(|| state_dir.join("outbox")),
            state_dir,
            keys_dir: s.keys_dir,
            spool_dir: s.spool_dir,
            attestation_roots: s.attestation_roots,
            lease: Duration::from_secs(s.lease_secs.unwrap_or(600)),
            touch_timeout: Duration::from_secs(s.touch_timeout_secs.unwrap_or(30)),
            max_attempts: s.max_attempts.unwrap_or(3).max(1),
            sim_seed: s.sim_seed,
            customizations,
            slots,
            rig_port,
            rig_simulated,
            reset_non_blank: s.reset_non_blank,
            web,
            http_sink,
            http_sink_tls,
            upstream,
            max_request_lifetime_days,
            once_give_up: Duration::from_secs(s.once_give_up_secs.unwrap_or(60)),
            keys,
            store,
        })
    }

    pub fn customization(&self, id: &str) -> Option<&Customization> {
        self.customizations.iter().find(|c| c.id == id)
    }

    /// Path of the job database.
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("station.db")
    }
}

type SinkParts = (
    Option<String>,
    crate::upstream::TlsFiles,
    Option<crate::upstream::UpstreamConfig>,
);

/// `[sink]` and `[upstream]` (SPEC §6, §12): URL rules of
/// [`crate::upstream::http::check_url`]; results go to one of them, not both.
fn upstream_and_sink(
    sink: Option<RawSink>,
    upstream: Option<crate::upstream::RawUpstream>,
) -> Result<SinkParts, String> {
    let upstream = upstream
        .map(crate::upstream::UpstreamConfig::from_raw)
        .transpose()?;
    let Some(sink) = sink else {
        return Ok((None, Default::default(), upstream));
    };
    if upstream.is_some() {
        return Err(
            "[sink] and [upstream] both set: results go to the upstream back end (SPEC §12) or to the sink, keep one"
                .into(),
        );
    }
    let tls = crate::upstream::TlsFiles {
        ca: sink.ca,
        client_cert: sink.client_cert,
        client_key: sink.client_key,
    };
    crate::upstream::http::check_url(&sink.http_url, &tls)
        .map_err(|e| format!("[sink] http_url: {e}"))?;
    Ok((Some(sink.http_url), tls, upstream))
}

/// Reads an `idp_signing_jwks` file (a public JWKS: size-capped, parsed and
/// checked key by key).
fn load_idp_signers(path: &Path) -> Result<IdpSigners, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read ({e})"))?;
    let mut text = String::new();
    file.take(1024 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read ({e})"))?;
    IdpSigners::from_json(&text)
}

/// Every `[[slot]]` is a rig position (SPEC §11), and the rig protocol
/// addresses at most [`crate::rig::codec::MAX_SLOTS`] (SPEC §9: `PRESENT?` is
/// a 64-bit mask): more is a configuration error, not a run whose extra slots
/// fail and quarantine keys.
pub fn check_slot_count(slots: usize) -> Result<(), String> {
    let max = usize::from(crate::rig::codec::MAX_SLOTS);
    if slots > max {
        return Err(format!(
            "{slots} slots; the rig protocol (SPEC §9) addresses at most {max}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[station]
id = "line1-rig3"
state_dir = "/var/lib/prereg-station"
keys_dir = "/etc/prereg-station/keys"
outbox_dir = "/var/lib/prereg-station/outbox"
attestation_roots = ["/etc/prereg-station/roots/yubico-fido-ca.pem"]

[[customization]]
id = "C19881"
min_firmware = "5.7.0"
products = [1, 29]

[[slot]]
device = "udp:127.0.0.1:8111"

[[slot]]
device = "sim:yubikey-5.7"

[rig]
port = "/dev/prereg-rig"

[web]
listen = "127.0.0.1:8080"
"#;

    #[test]
    fn the_spec_example_parses() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.station_id, "line1-rig3");
        assert_eq!(c.slots.len(), 2);
        assert_eq!(c.slots[1].device, DeviceSpec::Sim("yubikey-5.7".into()));
        assert_eq!(c.customizations[0].min_firmware, Some(Version(5, 7, 0)));
        assert_eq!(c.rig_port.as_ref().unwrap().1, 115_200);
    }

    #[test]
    fn more_slots_than_the_rig_protocol_addresses_is_a_configuration_error() {
        let with = |n: usize| {
            let mut text = GOOD.to_string();
            for _ in 2..n {
                text.push_str("\n[[slot]]\ndevice = \"sim:yubikey-5.7\"\n");
            }
            Config::parse(&text)
        };
        assert_eq!(with(64).unwrap().slots.len(), 64);
        let err = with(65).unwrap_err();
        assert_eq!(
            err,
            "[[slot]]: 65 slots; the rig protocol (SPEC §9) addresses at most 64"
        );
        assert!(!err.contains('\n'));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                GOOD.replace("[web]", "[web]\nbogus = 1"),
                "unknown field `bogus`",
            ),
            (GOOD.replace("5.7.0", "five"), "min_firmware"),
            (GOOD.replace("udp:127.0.0.1:8111", "udp:nope"), "[[slot]] 0"),
            (GOOD.replace("127.0.0.1:8080", "0.0.0.0:8080"), "token"),
            (
                GOOD.replace("[rig]\n", "[rig]\nsimulated = true\n"),
                "both port and simulated",
            ),
            (
                GOOD.replace("port = \"/dev/prereg-rig\"", "simulated = true"),
                "every [[slot]] device must be sim:",
            ),
            (
                GOOD.replace("port = \"/dev/prereg-rig\"", "baud = 9600"),
                "simulated = true",
            ),
        ];
        for (text, want) in cases {
            let err = Config::parse(&text).unwrap_err();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }

    #[test]
    fn simulated_rig_and_reset_switch() {
        let text = GOOD
            .replace("port = \"/dev/prereg-rig\"", "simulated = true")
            .replace(
                "device = \"udp:127.0.0.1:8111\"",
                "device = \"sim:yubikey-5.4\"",
            );
        let c = Config::parse(&text).unwrap();
        assert!(c.rig_simulated && c.rig_port.is_none());
        assert!(
            !c.reset_non_blank,
            "reset_non_blank is off unless asked for"
        );
        let c = Config::parse(&text.replace(
            "[[customization]]",
            "reset_non_blank = true\n\n[[customization]]",
        ))
        .unwrap();
        assert!(c.reset_non_blank);
        assert!(!Config::parse(GOOD).unwrap().rig_simulated);
    }

    #[test]
    fn request_lifetime_defaults_to_30_days_and_is_bounded() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.max_request_lifetime_days, 30);
        assert_eq!(
            c.customizations[0].request_policy().max_lifetime_secs,
            30 * 86_400
        );
        let seven = GOOD.replace(
            "[[customization]]",
            "max_request_lifetime_days = 7\n\n[[customization]]",
        );
        let c = Config::parse(&seven).unwrap();
        assert_eq!(
            c.customizations[0].request_policy().max_lifetime_secs,
            7 * 86_400
        );
        for bad in ["0", "100000"] {
            let text = GOOD.replace(
                "[[customization]]",
                &format!("max_request_lifetime_days = {bad}\n\n[[customization]]"),
            );
            let e = Config::parse(&text).unwrap_err();
            assert!(e.contains("max_request_lifetime_days"), "{e}");
        }
    }

    #[test]
    fn idp_signing_jwks_is_loaded_and_a_bad_file_names_the_key() {
        use crate::jose::jwk::{EcJwk, KeyUse};
        let dir = tempfile::tempdir().unwrap();
        let sk = p384::SecretKey::random(&mut rand_core::OsRng);
        let jwks = crate::jose::Jwks {
            keys: vec![EcJwk::from_public(&sk.public_key(), "idp-1", KeyUse::Sig)],
        };
        let path = dir.path().join("idp.jwks");
        std::fs::write(&path, jwks.to_json_pretty()).unwrap();
        let line = |p: &Path| {
            GOOD.replace(
                "products = [1, 29]",
                &format!(
                    "products = [1, 29]\nidp_signing_jwks = {:?}",
                    p.display().to_string()
                ),
            )
        };
        let c = Config::parse(&line(&path)).unwrap();
        let policy = c.customizations[0].request_policy();
        assert!(policy.idp_signers.unwrap().find("idp-1").is_some());
        assert!(Config::parse(GOOD).unwrap().customizations[0]
            .request_policy()
            .idp_signers
            .is_none());
        let missing = Config::parse(&line(&dir.path().join("nope.jwks"))).unwrap_err();
        assert!(
            missing.contains("idp_signing_jwks") && missing.contains("C19881"),
            "{missing}"
        );
        std::fs::write(&path, "{\"keys\": 1}").unwrap();
        let bad = Config::parse(&line(&path)).unwrap_err();
        assert!(bad.contains("not a JWK set"), "{bad}");
    }

    #[test]
    fn sink_and_upstream_are_exclusive_and_the_sink_follows_the_url_rules() {
        let sink = |url: &str, extra: &str| {
            Config::parse(&format!("{GOOD}\n[sink]\nhttp_url = \"{url}\"\n{extra}"))
        };
        assert!(sink("http://127.0.0.1:9000/in", "").is_ok());
        let https = sink("https://sink.example/in", "ca = \"/etc/ca.pem\"").unwrap();
        assert_eq!(
            https.http_sink_tls.ca.as_deref(),
            Some(Path::new("/etc/ca.pem"))
        );
        for (url, extra, want) in [
            ("http://sink.example/in", "", "loopback"),
            ("https://sink.example/in", "", "ca"),
            (
                "https://sink.example/in",
                "ca = \"/c\"\nclient_cert = \"c.pem\"",
                "client_key",
            ),
        ] {
            let err = sink(url, extra).unwrap_err();
            assert!(
                err.contains("[sink] http_url") && err.contains(want),
                "{err}"
            );
        }
        let up = "[upstream]\nurl = \"https://b.example/api\"\nca = \"/c\"\nclient_cert = \"c.pem\"\nclient_key = \"c.key\"\n";
        let c = Config::parse(&format!("{GOOD}\n{up}")).unwrap();
        assert_eq!(c.upstream.unwrap().url, "https://b.example/api");
        let err = sink("http://127.0.0.1:9/in", up).unwrap_err();
        assert!(err.contains("both set"), "{err}");
    }

    #[test]
    fn versions_order() {
        assert!("5.7.1".parse::<Version>().unwrap() > "5.7.0".parse().unwrap());
        assert!("5.4.3".parse::<Version>().unwrap() < "5.7".parse().unwrap());
    }

    #[test]
    fn store_section_names_a_url_and_a_password_file_in_key_custody() {
        let with = |store: &str| Config::parse(&format!("{GOOD}\n[store]\n{store}\n"));
        let c = with("url = \"postgresql://prereg@db.line1/prereg?sslmode=verify-full\"\npassword_file = \"pg-password\"").unwrap();
        assert_eq!(
            c.store,
            Some(StoreConfig {
                url: "postgresql://prereg@db.line1/prereg?sslmode=verify-full".into(),
                password_file: Some("pg-password".into()),
            })
        );
        assert!(Config::parse(GOOD).unwrap().store.is_none());
        let err = with("url = \"postgresql://prereg:hunter2@db/prereg\"").unwrap_err();
        assert!(
            err.contains("password_file") && !err.contains("hunter2"),
            "{err}"
        );
        let err = with("url = \"postgresql://db/p\"\npassword_file = \"/etc/shadow\"").unwrap_err();
        assert!(err.contains("not a path"), "{err}");
        assert!(with("url = \"mysql://db/p\"").is_err());
        assert!(with("url = \"postgresql://db/p\"\npassword = \"x\"").is_err());
    }
}

//! Station configuration (SPEC §11): TOML parsed raw (unknown keys are an
//! error), then validated once into typed values with one-line errors that
//! name the key and what to do (exit code 2).

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
    store: Option<RawStore>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomization {
    id: String,
    min_firmware: Option<String>,
    #[serde(default)]
    products: Vec<u32>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    http_url: String,
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
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            message: format!("cannot read configuration ({e}); pass --config FILE"),
        })?;
        Self::parse(&text).map_err(|message| ConfigError {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
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
            customizations.push(Customization {
                id: c.id,
                min_firmware,
                products: c.products,
            });
        }
        let mut slots = Vec::new();
        for (i, slot) in raw.slot.into_iter().enumerate() {
            let device = slot
                .device
                .parse::<DeviceSpec>()
                .map_err(|e| format!("[[slot]] {}: {e}", i + 1))?;
            slots.push(SlotConfig {
                name: slot.name.unwrap_or_else(|| format!("slot{}", i + 1)),
                device,
            });
        }
        let web = match raw.web {
            None => None,
            Some(w) => {
                let addr: SocketAddr = w
                    .listen
                    .parse()
                    .map_err(|_| format!("[web] listen {:?} is not HOST:PORT", w.listen))?;
                if !addr.ip().is_loopback() && w.token.as_deref().unwrap_or("").len() < 16 {
                    return Err(format!(
                        "[web] listen {addr} is not loopback: set a token of at least 16 characters"
                    ));
                }
                Some((addr, w.token))
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
            http_sink: raw.sink.map(|s| s.http_url),
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
    fn errors_name_the_key() {
        let cases = [
            (
                GOOD.replace("[web]", "[web]\nbogus = 1"),
                "unknown field `bogus`",
            ),
            (GOOD.replace("5.7.0", "five"), "min_firmware"),
            (GOOD.replace("udp:127.0.0.1:8111", "udp:nope"), "[[slot]] 1"),
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

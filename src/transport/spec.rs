//! Where a key is: the `DEV` of `devices info --device DEV` and of `[[slot]] device`
//! (SPEC §11).

use super::{hid::HidTransport, udp::UdpTransport, Transport, TransportError};
use std::fmt;
use std::str::FromStr;

/// A device address, parsed once from its string form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    /// A HID device path (`/dev/hidraw3`, or any hidapi path). Strings without a
    /// known `scheme:` prefix are paths.
    Hid(String),
    /// `udp:HOST:PORT`: a device behind the UDP HID bridge (SPEC §10).
    Udp { host: String, port: u16 },
    /// `pcsc:READER`: a key through a PC/SC reader (CCID / NFC).
    Pcsc(String),
    /// `sim:PROFILE`: an in-process simulated key of a firmware profile.
    Sim(String),
}

/// Why a device string is not a [`DeviceSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid device {input:?}: {reason}")]
pub struct DeviceSpecError {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for DeviceSpec {
    type Err = DeviceSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| DeviceSpecError {
            input: s.to_owned(),
            reason,
        };
        if s.trim().is_empty() {
            return Err(err("empty"));
        }
        if let Some(rest) = s.strip_prefix("udp:") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| err("expected udp:HOST:PORT"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(err("expected udp:HOST:PORT (host is empty)"));
            }
            let port: u16 = port
                .parse()
                .map_err(|_| err("port must be a number 1-65535"))?;
            if port == 0 {
                return Err(err("port must be a number 1-65535"));
            }
            return Ok(DeviceSpec::Udp {
                host: host.to_owned(),
                port,
            });
        }
        if let Some(reader) = s.strip_prefix("pcsc:") {
            if reader.is_empty() {
                return Err(err("expected pcsc:READER"));
            }
            return Ok(DeviceSpec::Pcsc(reader.to_owned()));
        }
        if let Some(profile) = s.strip_prefix("sim:") {
            if profile.is_empty() {
                return Err(err("expected sim:PROFILE"));
            }
            return Ok(DeviceSpec::Sim(profile.to_owned()));
        }
        let path = s.strip_prefix("hid:").unwrap_or(s);
        if path.is_empty() {
            return Err(err("expected a HID device path"));
        }
        Ok(DeviceSpec::Hid(path.to_owned()))
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Hid(p) => f.write_str(p),
            DeviceSpec::Udp { host, port } if host.contains(':') => {
                write!(f, "udp:[{host}]:{port}")
            }
            DeviceSpec::Udp { host, port } => write!(f, "udp:{host}:{port}"),
            DeviceSpec::Pcsc(r) => write!(f, "pcsc:{r}"),
            DeviceSpec::Sim(p) => write!(f, "sim:{p}"),
        }
    }
}

/// What `--device` names on the command line (`devices info`, `devices
/// reset`): a device address, or a key's serial number as `ykman --device
/// SERIAL` takes it, which the CLI looks up among the attached keys. A string
/// of digits only is a serial (no HID path is all digits; `hid:123` forces a
/// path). Kept apart from [`DeviceSpec`]: a `[[slot]]` names a place on the
/// rig, never a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceSelector {
    Spec(DeviceSpec),
    /// A YubiKey serial number (device info tag 0x02, a u32).
    Serial(u32),
}

impl FromStr for DeviceSelector {
    type Err = DeviceSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(DeviceSelector::Serial)
                .map_err(|_| DeviceSpecError {
                    input: s.to_owned(),
                    reason: "a serial number is at most 4294967295",
                });
        }
        s.parse().map(DeviceSelector::Spec)
    }
}

impl fmt::Display for DeviceSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSelector::Spec(s) => s.fmt(f),
            DeviceSelector::Serial(n) => write!(f, "serial {n}"),
        }
    }
}

impl DeviceSpec {
    /// Opens a HID or UDP device as a report [`Transport`]. PC/SC keys do not
    /// speak CTAPHID reports and simulated keys are made by the `sim` module,
    /// so those give [`TransportError::Unsupported`] here.
    pub fn open_transport(&self) -> Result<Box<dyn Transport>, TransportError> {
        match self {
            DeviceSpec::Hid(path) => Ok(Box::new(HidTransport::open(path)?)),
            DeviceSpec::Udp { host, port } => {
                let addr = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                Ok(Box::new(UdpTransport::connect(&addr, None)?))
            }
            DeviceSpec::Pcsc(_) => Err(TransportError::Unsupported(format!(
                "{self} is a PC/SC reader, not a HID report transport"
            ))),
            DeviceSpec::Sim(_) => Err(TransportError::Unsupported(format!(
                "{self} is a simulated key; open it through the sim module"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_four_forms() {
        let p = |s: &str| s.parse::<DeviceSpec>();
        assert_eq!(
            p("/dev/hidraw3").unwrap(),
            DeviceSpec::Hid("/dev/hidraw3".into())
        );
        assert_eq!(
            p("hid:/dev/hidraw0").unwrap(),
            DeviceSpec::Hid("/dev/hidraw0".into())
        );
        assert_eq!(p("1-2:1.0").unwrap(), DeviceSpec::Hid("1-2:1.0".into()));
        assert_eq!(
            p("udp:127.0.0.1:8111").unwrap(),
            DeviceSpec::Udp {
                host: "127.0.0.1".into(),
                port: 8111
            }
        );
        assert_eq!(
            p("udp:[::1]:7").unwrap(),
            DeviceSpec::Udp {
                host: "::1".into(),
                port: 7
            }
        );
        assert_eq!(p("udp:localhost:9").unwrap().to_string(), "udp:localhost:9");
        assert_eq!(p("udp:[::1]:7").unwrap().to_string(), "udp:[::1]:7");
        assert_eq!(
            p("pcsc:Yubico YubiKey OTP+FIDO+CCID 00 00").unwrap(),
            DeviceSpec::Pcsc("Yubico YubiKey OTP+FIDO+CCID 00 00".into())
        );
        assert_eq!(
            p("sim:yubikey-5.7").unwrap(),
            DeviceSpec::Sim("yubikey-5.7".into())
        );
        for bad in [
            "",
            " ",
            "udp:",
            "udp:host",
            "udp::80",
            "udp:h:0",
            "udp:h:99999",
            "udp:h:x",
            "pcsc:",
            "sim:",
            "hid:",
        ] {
            assert!(p(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn selectors_are_serials_when_all_digits_and_specs_otherwise() {
        let p = |s: &str| s.parse::<DeviceSelector>();
        assert_eq!(p("12345678").unwrap(), DeviceSelector::Serial(12345678));
        assert_eq!(p("0").unwrap(), DeviceSelector::Serial(0));
        assert_eq!(
            p("hid:123").unwrap(),
            DeviceSelector::Spec(DeviceSpec::Hid("123".into()))
        );
        assert_eq!(
            p("/dev/hidraw1").unwrap(),
            DeviceSelector::Spec(DeviceSpec::Hid("/dev/hidraw1".into()))
        );
        assert_eq!(
            p("udp:127.0.0.1:8111").unwrap(),
            DeviceSelector::Spec(DeviceSpec::Udp {
                host: "127.0.0.1".into(),
                port: 8111
            })
        );
        assert!(p("4294967296").is_err(), "beyond u32");
        assert!(p("").is_err());
        assert!(p("udp:h:0").is_err());
    }

    #[test]
    fn sim_and_pcsc_are_not_report_transports() {
        for s in ["sim:yubikey-5.7", "pcsc:Reader"] {
            let spec: DeviceSpec = s.parse().unwrap();
            assert!(matches!(
                spec.open_transport(),
                Err(TransportError::Unsupported(_))
            ));
        }
    }
}

//! `prereg-station devices list` and `devices info --device DEV` (SPEC §11):
//! what is attached, and what one key is (in the spirit of `ykman info` and
//! `fido2-token -I`). Read-only, except `devices reset`, which wipes a key
//! (bench use: keys must be blank to be programmed again).
//!
//! `info` and `reset` take the same `--device`: a hidraw path, `udp:HOST:PORT`,
//! `pcsc:READER`, `sim:PROFILE`, or a serial number looked up among the
//! attached keys (as `ykman --device SERIAL` does). Without `--device` they use
//! the only attached key, and say which; with none or several they stop and
//! list what they found. "Attached" means FIDO HID devices, PC/SC readers with
//! a card, and the `[[slot]]` devices of `--config` (how a UDP bridge is found:
//! it cannot be enumerated).

use crate::ctap2::{Client, CtapDevice, CtapError, GetInfo, PinRetries};
use crate::ctaphid::{HidChannel, InitInfo, KeepaliveStatus, Timeouts};
use crate::error::{CliError, CliResult};
use crate::pin::PinProtocol;
use crate::transport::spec::DeviceSelector;
use crate::transport::{hid, DeviceSpec, TransportError};
use crate::yubikey::{self, DeviceInfo};
use serde_json::{json, Value as Json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// FIDO HID devices attached to this machine (usage page 0xF1D0), PC/SC
    /// readers, and every key that answers with its serial (for --device).
    List {
        /// One JSON line (docs/cli.md) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Identify one key: serial, firmware, form factor, AAGUID, CTAP options, PIN retries.
    Info {
        /// A serial number, hidraw path, udp:HOST:PORT, pcsc:READER or
        /// sim:PROFILE; default: the only attached key.
        #[arg(long, value_name = "DEV")]
        device: Option<String>,
        /// One JSON line (docs/cli.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Wipe one key (authenticatorReset): PIN and every credential are lost.
    /// A YubiKey accepts it only within 10 s of being plugged in, with a touch.
    Reset {
        /// A serial number, hidraw path, udp:HOST:PORT, pcsc:READER or
        /// sim:PROFILE; default: the only attached key.
        #[arg(long, value_name = "DEV")]
        device: Option<String>,
        /// Confirms that the key may be wiped; without it nothing happens.
        #[arg(long)]
        yes: bool,
        /// How long to wait for the key to be removed and inserted again.
        #[arg(long, value_name = "SECS", default_value_t = 120)]
        wait_secs: u64,
    },
}

pub fn run(config: &Option<PathBuf>, cmd: Command) -> CliResult {
    match cmd {
        Command::List { json } => list(config, json),
        Command::Info { device, json } => info(&select(config, device.as_deref())?.0, json),
        Command::Reset {
            device,
            yes,
            wait_secs,
        } => {
            let (spec, serial) = select(config, device.as_deref())?;
            // A key found by its serial is found the same way after the
            // re-insert: its /dev/hidrawN (or reader) may have changed.
            let again = match serial {
                Some(serial) => Again::BySerial { serial, config },
                None => Again::AtSameDevice,
            };
            reset(&spec, yes, Duration::from_secs(wait_secs), again)
        }
    }
}

/// The device `--device` names (an address, or a serial number looked up
/// among the attached keys), or the only attached key when it is absent;
/// with the key's serial when it was looked up by one.
fn select(
    config: &Option<PathBuf>,
    device: Option<&str>,
) -> Result<(DeviceSpec, Option<u32>), CliError> {
    let wanted = device
        .map(str::parse::<DeviceSelector>)
        .transpose()
        .map_err(CliError::usage)?;
    if let Some(DeviceSelector::Spec(spec)) = wanted {
        return Ok((spec, None));
    }
    let found = attached(config)?;
    let listing = || {
        if found.is_empty() {
            "none found (FIDO HID devices, PC/SC readers with a card, [[slot]] devices of --config)"
                .to_string()
        } else {
            found
                .iter()
                .map(|k| format!("{} ({})", k.spec, k.serial_text()))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    match wanted {
        Some(DeviceSelector::Serial(n)) => found
            .iter()
            .find(|k| k.serial == Some(n))
            .map(|k| (k.spec.clone(), k.serial))
            .ok_or_else(|| {
                CliError::usage(format!(
                    "no attached key has serial {n}; attached: {}",
                    listing()
                ))
            }),
        _ => {
            let mut keys = found.iter().collect::<Vec<_>>();
            // One YubiKey over USB is both a FIDO HID device and a CCID
            // reader: the same serial twice is one key (HID listed first).
            keys.dedup_by(|b, a| a.serial.is_some() && a.serial == b.serial);
            match keys.as_slice() {
                [only] => {
                    errln!(
                        "Using the only attached key: {} ({}).",
                        only.spec,
                        only.serial_text()
                    );
                    Ok((only.spec.clone(), only.serial))
                }
                [] => Err(CliError::usage(format!(
                    "no key attached: {}; insert one or pass --device DEV",
                    listing()
                ))),
                _ => Err(CliError::usage(format!(
                    "{} keys attached: {}; pick one with --device SERIAL (or a path)",
                    keys.len(),
                    listing()
                ))),
            }
        }
    }
}

/// A key found attached, and its serial when it reports one.
#[derive(Debug)]
struct Attached {
    spec: DeviceSpec,
    serial: Option<u32>,
}

impl Attached {
    fn serial_text(&self) -> String {
        self.serial
            .map_or_else(|| "no serial".into(), |s| format!("serial {s}"))
    }
}

/// Every key that answers: FIDO HID devices, then the `[[slot]]` devices of
/// the configuration (UDP bridges cannot be enumerated), then PC/SC readers
/// with a card. Sorted so that one key seen twice keeps its HID path first.
fn attached(config: &Option<PathBuf>) -> Result<Vec<Attached>, CliError> {
    let mut specs: Vec<DeviceSpec> = hid::list_fido_devices()
        .map_err(|e| CliError::failed(format!("cannot enumerate HID devices: {e}")))?
        .into_iter()
        .map(|d| DeviceSpec::Hid(d.path))
        .collect();
    if config.is_some() {
        let cfg = crate::cli::jobs::load_config(config)?;
        specs.extend(
            cfg.slots
                .into_iter()
                .map(|s| s.device)
                // A sim: slot makes a fresh key each time: nothing attached.
                .filter(|d| !matches!(d, DeviceSpec::Sim(_))),
        );
    }
    // No pcscd on this machine is not an error: there are just no readers.
    if let Ok(readers) = crate::pcsc::list_readers() {
        specs.extend(
            readers
                .into_iter()
                .filter(|r| r.card_present)
                .map(|r| DeviceSpec::Pcsc(r.name)),
        );
    }
    let mut seen = std::collections::HashSet::new();
    specs.retain(|s| seen.insert(s.clone()));
    let mut found: Vec<Attached> = specs
        .into_iter()
        .filter_map(|spec| {
            let serial = match &spec {
                DeviceSpec::Pcsc(reader) => crate::pcsc::device_info(reader).ok()?.serial,
                _ => {
                    let mut channel = probe(&spec)?;
                    yubikey::read_device_info(&mut channel)
                        .ok()
                        .and_then(|i| i.serial)
                }
            };
            Some(Attached { spec, serial })
        })
        .collect();
    found.sort_by_key(|k| (k.serial, matches!(k.spec, DeviceSpec::Pcsc(_))));
    Ok(found)
}

/// A report transport to `spec`: HID, UDP, or a fresh blank simulated key
/// of a profile, in-process.
fn open_reports(spec: &DeviceSpec) -> Result<Box<dyn crate::transport::Transport>, CliError> {
    match spec {
        DeviceSpec::Sim(name) => {
            let prof = crate::profile::builtin_profile(name).map_err(CliError::usage)?;
            let product = crate::sim::SimConfig::default_product(&prof);
            let config = crate::sim::SimConfig::new(prof, product).map_err(CliError::failed)?;
            Ok(Box::new(
                crate::sim::SimKey::new(config).map_err(CliError::failed)?,
            ))
        }
        _ => spec.open_transport().map_err(|e| open_failed(spec, e)),
    }
}

/// A CTAPHID channel to `spec`, or `None` when nothing answers INIT.
fn probe(spec: &DeviceSpec) -> Option<HidChannel<Box<dyn crate::transport::Transport>>> {
    let transport = open_reports(spec).ok()?;
    HidChannel::open(transport, Timeouts::short()).ok()
}

/// Whether a key answers at `spec` (for the re-insert wait of `reset`).
fn present(spec: &DeviceSpec) -> bool {
    match spec {
        DeviceSpec::Pcsc(reader) => {
            crate::pcsc::transport::NfcCtap::open(reader, crate::pcsc::LengthMode::Short).is_ok()
        }
        _ => probe(spec).is_some(),
    }
}

/// A key's CTAP2 link for `devices reset`: CTAPHID reports or CTAP over PC/SC.
enum Link {
    Hid(HidChannel<Box<dyn crate::transport::Transport>>),
    Nfc(NfcDevice),
}

impl CtapDevice for Link {
    fn cbor(
        &mut self,
        request: &[u8],
        keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<Vec<u8>, CtapError> {
        match self {
            Link::Hid(c) => CtapDevice::cbor(c, request, keepalive),
            Link::Nfc(n) => n.cbor(request, keepalive),
        }
    }
}

/// Polls until `probe(spec)` is `want` (present or gone), or `until` passes.
fn wait_for(spec: &DeviceSpec, want: bool, until: Instant) -> bool {
    while Instant::now() < until {
        if present(spec) == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Where `devices reset` looks for the key after the operator re-inserts it.
enum Again<'a> {
    /// The path or address it was given.
    AtSameDevice,
    /// Wherever a key with this serial answers now.
    BySerial {
        serial: u32,
        config: &'a Option<PathBuf>,
    },
}

impl Again<'_> {
    /// Polls until the key is back, or `until` passes: where it is now.
    fn wait(&self, spec: &DeviceSpec, until: Instant) -> Option<DeviceSpec> {
        match self {
            Again::AtSameDevice => wait_for(spec, true, until).then(|| spec.clone()),
            Again::BySerial { serial, config } => loop {
                let found = attached(config).ok().and_then(|keys| {
                    keys.into_iter()
                        .find(|k| k.serial == Some(*serial))
                        .map(|k| k.spec)
                });
                if found.is_some() {
                    return found;
                }
                if Instant::now() >= until {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(200));
            },
        }
    }
}

/// authenticatorReset (CTAP 2.1 §6.6). Tried at once (a key plugged in just
/// now is inside its reset window); NOT_ALLOWED means the window is over, so
/// the operator re-inserts the key and we try once more right after.
fn reset(spec: &DeviceSpec, yes: bool, wait: Duration, again: Again<'_>) -> CliResult {
    let mut spec = spec.clone();
    if !yes {
        return Err(CliError::usage(format!(
            "devices reset wipes the PIN and every credential on {spec}; \
             add --yes to confirm (nothing was changed)"
        )));
    }
    let (channel, serial) = open_for_reset(&spec)?;
    // Keepalives repeat every ~100 ms while the key waits: say it once.
    let mut asked = false;
    let mut touch_cue = |k: KeepaliveStatus| {
        if k == KeepaliveStatus::UPNEEDED && !asked {
            asked = true;
            errln!("Touch the key now to confirm the reset.");
        }
    };
    let first = Client::new(channel).reset(&mut touch_cue);
    let outcome = match first {
        Err(e) if e.status() == Some(crate::ctap2::StatusCode::NOT_ALLOWED) => {
            errln!(
                "Key {serial} at {spec}: remove it and insert it again \
                 (reset is only accepted within 10 s of power-up)."
            );
            let until = Instant::now() + wait;
            if !wait_for(&spec, false, until) {
                return Err(CliError::failed(format!(
                    "{spec}: the key was not removed within {} s; nothing was changed",
                    wait.as_secs()
                )));
            }
            errln!("Removed. Insert it again.");
            spec = match again.wait(&spec, until) {
                Some(now_at) => now_at,
                None => {
                    return Err(CliError::failed(format!(
                        "{spec}: no key came back within {} s; nothing was changed \
                         (a re-inserted key may get a new /dev/hidrawN: pass --device SERIAL, \
                         or use a per-port udev symlink)",
                        wait.as_secs()
                    )))
                }
            };
            let (channel, back) = open_for_reset(&spec)?;
            if back != serial {
                return Err(CliError::failed(format!(
                    "{spec}: key {back} came back, not key {serial}; nothing was changed"
                )));
            }
            Client::new(channel).reset(&mut touch_cue)
        }
        other => other,
    };
    match outcome {
        Ok(()) => {
            outln!("Key at {spec} reset: no PIN, no credentials.");
            Ok(())
        }
        Err(e) => Err(CliError::failed(format!(
            "{spec}: reset failed: {e}; the key may be unchanged — re-insert it and \
             run devices reset again, touching it when asked"
        ))),
    }
}

/// Opens the key for `devices reset` (CTAPHID INIT, or the FIDO applet over
/// PC/SC) and reads its serial (for the prompts and the same-key check after
/// a re-insert).
fn open_for_reset(spec: &DeviceSpec) -> Result<(Link, String), CliError> {
    let (link, serial) = match spec {
        DeviceSpec::Pcsc(reader) => {
            use crate::pcsc::{transport::NfcCtap, LengthMode};
            // Serial first: the management applet and the FIDO applet
            // each take the card for their own session.
            let serial = crate::pcsc::device_info(reader).ok().and_then(|i| i.serial);
            let nfc = NfcCtap::open(reader, LengthMode::Short).map_err(|e| {
                CliError::failed(format!(
                    "cannot open {spec}: {e}; is the key on the reader? nothing was changed"
                ))
            })?;
            (Link::Nfc(NfcDevice(nfc)), serial)
        }
        _ => {
            let mut channel =
                HidChannel::open(open_reports(spec)?, Timeouts::default()).map_err(|e| {
                    CliError::failed(format!(
                        "{spec}: CTAPHID INIT failed: {e}; is the key inserted (or the bridge running)? nothing was changed"
                    ))
                })?;
            let serial = yubikey::read_device_info(&mut channel)
                .ok()
                .and_then(|i| i.serial);
            (Link::Hid(channel), serial)
        }
    };
    let serial = serial.map_or_else(|| "without a serial".to_string(), |s| s.to_string());
    Ok((link, serial))
}

fn list(config: &Option<PathBuf>, as_json: bool) -> CliResult {
    let devices = hid::list_fido_devices()
        .map_err(|e| CliError::failed(format!("cannot enumerate HID devices: {e}")))?;
    // The keys `--device` can name: the same lookup `info` and `reset` use.
    let keys = attached(config)?;
    // PC/SC is optional on a rig: no pcscd means no readers, said once, not a failure.
    let readers = crate::pcsc::list_readers().map_err(|e| e.to_string());
    if as_json {
        let readers_json = match &readers {
            Ok(r) => json!(r
                .iter()
                .map(|r| json!({
                    "device": format!("pcsc:{}", r.name),
                    "card_present": r.card_present,
                    "exclusive": r.exclusive,
                    "atr": r.atr.as_ref().map(hex::encode),
                }))
                .collect::<Vec<_>>()),
            Err(e) => json!({ "error": e }),
        };
        let keys_json: Vec<Json> = keys
            .iter()
            .map(|k| json!({ "device": k.spec.to_string(), "serial": k.serial }))
            .collect();
        let out = serde_json::to_string(
            &json!({ "hid": devices, "pcsc": readers_json, "keys": keys_json }),
        )
        .map_err(|e| CliError::failed(format!("cannot encode JSON: {e}")))?;
        outln!("{out}");
        return Ok(());
    }
    if devices.is_empty() {
        outln!("No FIDO HID devices found (check the udev rule or run as a user with access to /dev/hidraw*).");
    }
    // USB strings and reader names come from the device or the driver: escaped.
    use crate::escape::Untrusted;
    for d in devices {
        outln!(
            "{}  {:04x}:{:04x}  {}{}",
            Untrusted(&d.path),
            d.vendor_id,
            d.product_id,
            Untrusted(d.product.as_deref().unwrap_or("(unnamed)")),
            d.serial_number
                .map(|s| format!("  usb-serial {}", Untrusted(&s)))
                .unwrap_or_default()
        );
    }
    match readers {
        Ok(readers) => {
            for r in readers {
                let card = match (r.card_present, &r.atr) {
                    (true, Some(atr)) => format!("card, ATR {}", hex::encode(atr)),
                    (true, None) => "card".to_string(),
                    (false, _) => "no card".to_string(),
                };
                outln!("pcsc:{}  {card}", Untrusted(&r.name));
            }
        }
        Err(e) => outln!("PC/SC readers: unavailable ({})", Untrusted(&e)),
    }
    if !keys.is_empty() {
        outln!("Keys (--device takes the serial or the device):");
        for k in &keys {
            outln!(
                "  {:<16} {}",
                k.serial_text(),
                Untrusted(&k.spec.to_string())
            );
        }
    }
    Ok(())
}

/// What `devices info` found out.
struct Report {
    device: String,
    link: &'static str,
    init: Option<InitInfo>,
    device_info: Result<DeviceInfo, String>,
    get_info: GetInfo,
    pin_retries: Result<Option<PinRetries>, String>,
}

fn info(spec: &DeviceSpec, as_json: bool) -> CliResult {
    let spec = spec.clone();
    let report = match &spec {
        DeviceSpec::Hid(_) | DeviceSpec::Udp { .. } | DeviceSpec::Sim(_) => {
            let transport = open_reports(&spec)?;
            let mut channel = HidChannel::open(transport, Timeouts::default()).map_err(|e| {
                CliError::failed(format!(
                    "{spec}: CTAPHID INIT failed: {e}; is this a FIDO device (and is the bridge running)?"
                ))
            })?;
            let init = *channel.info();
            let device_info = yubikey::read_device_info(&mut channel).map_err(|e| e.to_string());
            let (get_info, pin_retries) = ctap_summary(&spec, channel)?;
            Report {
                device: spec.to_string(),
                link: "CTAPHID",
                init: Some(init),
                device_info,
                get_info,
                pin_retries,
            }
        }
        DeviceSpec::Pcsc(reader) => pcsc_report(&spec, reader)?,
    };
    if as_json {
        let out = serde_json::to_string(&to_json(&report))
            .map_err(|e| CliError::failed(format!("cannot encode JSON: {e}")))?;
        outln!("{out}");
    } else {
        print_text(&report);
    }
    Ok(())
}

fn open_failed(spec: &DeviceSpec, e: TransportError) -> CliError {
    CliError::failed(format!(
        "cannot open {spec}: {e}; check the path or address, and access rights to /dev/hidraw* (udev rule)"
    ))
}

/// getInfo, then PIN retries when a PIN is set.
fn ctap_summary<D: CtapDevice>(
    spec: &DeviceSpec,
    device: D,
) -> Result<(GetInfo, Result<Option<PinRetries>, String>), CliError> {
    let mut client = Client::new(device);
    let info = client
        .get_info()
        .map_err(|e| CliError::failed(format!("{spec}: getInfo failed: {e}")))?;
    let retries = match info.pin_set() {
        Some(true) => client
            .get_pin_retries(info.preferred_pin_protocol().unwrap_or(PinProtocol::One))
            .map(Some)
            .map_err(|e| e.to_string()),
        _ => Ok(None),
    };
    Ok((info, retries))
}

/// PC/SC keys speak CTAP2 over NFCCTAP_MSG; adapt them to [`CtapDevice`].
struct NfcDevice(crate::pcsc::transport::NfcCtap<crate::pcsc::transport::PcscCard>);

impl CtapDevice for NfcDevice {
    fn cbor(
        &mut self,
        request: &[u8],
        keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<Vec<u8>, CtapError> {
        self.0
            .cbor(request, keepalive)
            .map_err(|e| CtapError::Transport(TransportError::Io(e.to_string())))
    }
}

fn pcsc_report(spec: &DeviceSpec, reader: &str) -> Result<Report, CliError> {
    use crate::pcsc::{management, transport::NfcCtap, LengthMode};
    let device_info = management::device_info(reader)
        .map_err(|e| e.to_string())
        .and_then(|m| DeviceInfo::parse_tlv_bytes(&m.tlvs).map_err(|e| e.to_string()));
    let nfc = NfcCtap::open(reader, LengthMode::Short)
        .map_err(|e| CliError::failed(format!("cannot open {spec}: {e}")))?;
    let (get_info, pin_retries) = ctap_summary(spec, NfcDevice(nfc))?;
    Ok(Report {
        device: spec.to_string(),
        link: "PC/SC (CTAP over ISO 7816)",
        init: None,
        device_info,
        get_info,
        pin_retries,
    })
}

fn to_json(r: &Report) -> Json {
    let i = &r.get_info;
    json!({
        "device": r.device,
        "link": r.link,
        "ctaphid": r.init.map(|init| json!({
            "cid": format!("{:08x}", init.cid),
            "protocol_version": init.protocol_version,
            "device_version": format!("{}.{}.{}", init.device_version.0, init.device_version.1, init.device_version.2),
            "capabilities": init.capabilities.0,
            "wink": init.capabilities.wink(),
            "cbor": init.capabilities.cbor(),
            "msg": init.capabilities.msg(),
        })),
        "device_info": match &r.device_info {
            Ok(d) => json!({
                "serial": d.serial,
                "firmware": d.effective_firmware().map(|v| v.to_string()),
                "form_factor": d.form_factor.0,
                "form_factor_name": d.form_factor.to_string(),
                "fips_series": d.is_fips_series,
                "sky": d.is_sky,
                "nfc": d.has_nfc(),
                "pin_complexity": d.pin_complexity,
                "part_number": d.part_number,
                "usb_enabled": d.usb_enabled.map(|c| c.names()),
                "nfc_enabled": d.nfc_enabled.map(|c| c.names()),
            }),
            Err(e) => json!({ "error": e }),
        },
        "ctap": {
            "versions": i.versions,
            "extensions": i.extensions,
            "aaguid": i.aaguid_string(),
            "options": i.options,
            "max_msg_size": i.max_msg_size,
            "pin_uv_auth_protocols": i.pin_uv_auth_protocols,
            "max_credential_count_in_list": i.max_credential_count_in_list,
            "max_credential_id_length": i.max_credential_id_length,
            "transports": i.transports,
            "algorithms": i.algorithms.iter().map(|a| a.alg).collect::<Vec<_>>(),
            "force_pin_change": i.force_pin_change,
            "min_pin_length": i.min_pin_length,
            "firmware_version": i.firmware_version_triple().map(|(a, b, c)| format!("{a}.{b}.{c}")),
            "max_rpids_for_set_min_pin_length": i.max_rpids_for_set_min_pin_length,
            "remaining_discoverable_credentials": i.remaining_discoverable_credentials,
        },
        "pin": match &r.pin_retries {
            Ok(Some(p)) => json!({ "set": true, "retries": p.retries, "power_cycle_required": p.power_cycle_state }),
            Ok(None) => json!({ "set": i.pin_set() }),
            Err(e) => json!({ "set": i.pin_set(), "error": e }),
        },
    })
}

fn print_text(r: &Report) {
    // Values are read from the key (versions, extensions, strings): escaped.
    let line =
        |k: &str, v: String| outln!("{:<36}{}", format!("{k}:"), crate::escape::Untrusted(&v));
    let i = &r.get_info;
    line("Device", format!("{} ({})", r.device, r.link));
    match &r.device_info {
        Ok(d) => {
            line(
                "Serial number",
                d.serial.map_or("not reported".into(), |s| s.to_string()),
            );
            line(
                "Firmware version",
                d.effective_firmware()
                    .map_or("not reported".into(), |v| v.to_string()),
            );
            let mut ff = d.form_factor.to_string();
            if d.is_fips_series {
                ff.push_str(", FIPS series");
            }
            if d.is_sky {
                ff.push_str(", Security Key series");
            }
            line("Form factor", ff);
            line(
                "NFC",
                match d.nfc_enabled {
                    _ if !d.has_nfc() => "not available".into(),
                    Some(c) => format!("supported, enabled: {}", c.names().join(", ")),
                    None => "supported".into(),
                },
            );
            if let Some(p) = d.pin_complexity {
                line(
                    "PIN complexity",
                    if p { "enabled" } else { "disabled" }.into(),
                );
            }
            if let Some(c) = d.usb_enabled {
                line("USB applications", c.names().join(", "));
            }
        }
        Err(e) => line("Device info (0xC2)", format!("unavailable: {e}")),
    }
    if let Some(init) = r.init {
        let (a, b, c) = init.device_version;
        line(
            "CTAPHID",
            format!(
                "protocol {}, device version {a}.{b}.{c}, {:?}",
                init.protocol_version, init.capabilities
            ),
        );
    }
    line("AAGUID", i.aaguid_string());
    line("Versions", i.versions.join(", "));
    line("Extensions", i.extensions.join(", "));
    let opts: Vec<String> = i.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
    line("Options", opts.join(", "));
    line("Max message size", i.max_msg_size_or_default().to_string());
    let protos: Vec<String> = i.pin_uv_auth_protocols.iter().map(u64::to_string).collect();
    line("PIN/UV auth protocols", protos.join(", "));
    if let Some((a, b, c)) = i.firmware_version_triple() {
        line("Firmware (getInfo)", format!("{a}.{b}.{c}"));
    }
    line("Min PIN length", i.min_pin_length.to_string());
    line(
        "Force PIN change",
        if i.force_pin_change { "yes" } else { "no" }.into(),
    );
    if let Some(n) = i.remaining_discoverable_credentials {
        line("Remaining discoverable credentials", n.to_string());
    }
    line(
        "PIN",
        match (&r.pin_retries, i.pin_set()) {
            (Ok(Some(p)), _) => format!(
                "set, {} retries left{}",
                p.retries,
                if p.power_cycle_state == Some(true) {
                    " (reinsert the key before the next attempt)"
                } else {
                    ""
                }
            ),
            (Ok(None), Some(false)) => "not set".into(),
            (Ok(None), _) => "not supported".into(),
            (Err(e), _) => format!("set, retries unavailable: {e}"),
        },
    );
}

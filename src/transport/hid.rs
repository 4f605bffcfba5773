//! Real keys through hidapi (hidraw backend on Linux).
//!
//! FIDO interfaces are found by their HID usage (usage page 0xF1D0, usage 1;
//! CTAP 2.1 §11.2.8.1), never by vendor id: a YubiKey is a composite device
//! and only one of its interfaces speaks CTAPHID. The device list is a
//! snapshot, so every enumeration refreshes it (keys come and go on a rig).

use super::{Report, Transport, TransportError, REPORT_LEN};
use hidapi::{HidApi, HidDevice};
use serde::Serialize;
use std::ffi::CString;
use std::time::Duration;

/// FIDO Alliance HID usage page (CTAP 2.1 §11.2.8.1).
pub const FIDO_USAGE_PAGE: u16 = 0xf1d0;
/// CTAPHID usage within it.
pub const FIDO_USAGE: u16 = 0x01;

/// One FIDO HID interface found by enumeration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HidDeviceInfo {
    /// The OS path to open (`/dev/hidrawN` on Linux).
    pub path: String,
    pub vendor_id: u16,
    pub product_id: u16,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    /// The USB iSerial string; often absent on YubiKeys (read device info instead).
    pub serial_number: Option<String>,
    pub interface_number: i32,
}

fn hid_err(device: &str) -> impl Fn(hidapi::HidError) -> TransportError + '_ {
    move |e| TransportError::Open {
        device: device.to_owned(),
        reason: e.to_string(),
    }
}

/// Enumerates FIDO HID interfaces; keeps one hidapi context between calls.
pub struct HidEnumerator {
    api: HidApi,
}

impl std::fmt::Debug for HidEnumerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HidEnumerator")
    }
}

impl HidEnumerator {
    pub fn new() -> Result<Self, TransportError> {
        let api = HidApi::new().map_err(hid_err("hidapi"))?;
        Ok(Self { api })
    }

    /// The FIDO interfaces present now (refreshes the snapshot first).
    pub fn fido_devices(&mut self) -> Result<Vec<HidDeviceInfo>, TransportError> {
        self.api.refresh_devices().map_err(hid_err("hidapi"))?;
        let mut out: Vec<HidDeviceInfo> = self
            .api
            .device_list()
            .filter(|d| d.usage_page() == FIDO_USAGE_PAGE && d.usage() == FIDO_USAGE)
            .map(|d| HidDeviceInfo {
                path: d.path().to_string_lossy().into_owned(),
                vendor_id: d.vendor_id(),
                product_id: d.product_id(),
                manufacturer: d.manufacturer_string().map(str::to_owned),
                product: d.product_string().map(str::to_owned),
                serial_number: d
                    .serial_number()
                    .map(str::to_owned)
                    .filter(|s| !s.is_empty()),
                interface_number: d.interface_number(),
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out.dedup_by(|a, b| a.path == b.path);
        Ok(out)
    }

    /// Opens the interface at `path`.
    pub fn open(&self, path: &str) -> Result<HidTransport, TransportError> {
        let c_path = CString::new(path).map_err(|_| TransportError::Open {
            device: path.to_owned(),
            reason: "path contains a NUL byte".into(),
        })?;
        let device = self.api.open_path(&c_path).map_err(hid_err(path))?;
        Ok(HidTransport {
            device,
            path: path.to_owned(),
        })
    }
}

/// The FIDO HID interfaces present now.
pub fn list_fido_devices() -> Result<Vec<HidDeviceInfo>, TransportError> {
    HidEnumerator::new()?.fido_devices()
}

/// An open FIDO HID interface.
pub struct HidTransport {
    device: HidDevice,
    path: String,
}

impl std::fmt::Debug for HidTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HidTransport({})", self.path)
    }
}

impl HidTransport {
    /// Opens the interface at `path` (e.g. `/dev/hidraw3`).
    pub fn open(path: &str) -> Result<Self, TransportError> {
        HidEnumerator::new()?.open(path)
    }
}

/// hidapi reports an unplugged device only through its message text.
fn io(e: hidapi::HidError) -> TransportError {
    let msg = e.to_string();
    if msg.contains("No such device") || msg.contains("device disconnected") {
        TransportError::Disconnected
    } else {
        TransportError::Io(msg)
    }
}

impl Transport for HidTransport {
    fn send(&mut self, report: &Report) -> Result<(), TransportError> {
        // hidapi wants the report id first: 0x00 for FIDO's unnumbered reports.
        let mut buf = [0u8; REPORT_LEN + 1];
        buf[1..].copy_from_slice(report);
        let n = self.device.write(&buf).map_err(io)?;
        if n < REPORT_LEN {
            return Err(TransportError::Io(format!(
                "wrote {n} of {} bytes",
                REPORT_LEN + 1
            )));
        }
        Ok(())
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<Report>, TransportError> {
        // 0 ms polls; never -1 (block forever). Round sub-millisecond waits up.
        let ms = if timeout.is_zero() {
            0
        } else {
            timeout.as_millis().clamp(1, i32::MAX as u128) as i32
        };
        let mut buf = [0u8; REPORT_LEN + 1];
        let n = self.device.read_timeout(&mut buf, ms).map_err(io)?;
        let data = match n {
            0 => return Ok(None),
            // Some backends hand back the report-id byte too.
            n if n == REPORT_LEN + 1 && buf[0] == 0 => &buf[1..],
            n => &buf[..n.min(REPORT_LEN)],
        };
        let mut report = [0u8; REPORT_LEN];
        report[..data.len()].copy_from_slice(data);
        Ok(Some(report))
    }

    fn describe(&self) -> String {
        self.path.clone()
    }
}

//! PC/SC path figures: APDU codec, CTAP over NFC against the in-process
//! virtual card, and (with `PREREG_PCSC=1`, e.g. under
//! `tests/pcsc/run-pcscd.sh -- cargo bench --bench pcsc`) through real pcscd.

use prereg_station::ctaphid::KeepaliveStatus;
use prereg_station::pcsc::apdu::{Command, LengthMode};
use prereg_station::pcsc::vcard::{self, CardBackend, VirtualCard};
use prereg_station::pcsc::{self, CardChannel, NfcCtap, PcscError};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Answers status 0x00 followed by the request: measures transport only.
struct Echo;
impl CardBackend for Echo {
    fn ctap(&mut self, request: &[u8], _: &mut dyn FnMut(KeepaliveStatus)) -> Vec<u8> {
        std::iter::once(0).chain(request.iter().copied()).collect()
    }
    fn management_version(&mut self) -> Option<String> {
        Some("5.7.1".into())
    }
    fn read_config(&mut self, _: u8) -> Option<Vec<u8>> {
        Some(vec![3, 0x05, 0x01, 0x05])
    }
}

struct Direct(VirtualCard<Echo>);
impl CardChannel for Direct {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, PcscError> {
        Ok(self.0.process(apdu))
    }
    fn describe(&self) -> String {
        "direct".into()
    }
}

fn per_op(label: &str, n: u32, mut f: impl FnMut()) {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("{label:<58} {us:>10.1} µs/op");
}

fn main() {
    let cmd = Command::new(0x80, 0x10, 0x80, 0)
        .with_data(vec![0xA5; 1024])
        .with_le(65_536);
    per_op("apdu: encode+decode 1 KiB extended", 20_000, || {
        let b = cmd.encode(LengthMode::Extended).unwrap();
        black_box(Command::decode(&b).unwrap());
    });
    let request = vec![0x5A; 1024];
    for mode in [LengthMode::Short, LengthMode::Extended] {
        let mut dev = NfcCtap::new(Direct(VirtualCard::new(Echo)), mode);
        dev.select().unwrap();
        per_op(
            &format!("nfc ctap: 1 KiB message, in-process card, {mode:?}"),
            500,
            || {
                black_box(dev.cbor(&request, &mut |_| {}).unwrap());
            },
        );
    }
    if std::env::var("PREREG_PCSC").as_deref() != Ok("1") {
        println!("(through pcscd: skipped, run under tests/pcsc/run-pcscd.sh)");
        return;
    }
    let addr = ([127, 0, 0, 1], vcard::VPCD_DEFAULT_PORT).into();
    let reader = "Virtual PCD 00 00";
    let card = vcard::serve(addr, VirtualCard::new(Echo));
    card.wait_connected(Duration::from_secs(5));
    pcsc::wait_for_card(reader, Duration::from_secs(5)).unwrap();
    for mode in [LengthMode::Short, LengthMode::Extended] {
        let mut dev = NfcCtap::open(reader, mode).unwrap();
        per_op(
            &format!("nfc ctap: 1 KiB message through pcscd+vpcd, {mode:?}"),
            200,
            || {
                black_box(dev.cbor(&request, &mut |_| {}).unwrap());
            },
        );
    }
    per_op("management: device info through pcscd+vpcd", 100, || {
        black_box(pcsc::device_info(reader).unwrap());
    });
    card.stop();
}

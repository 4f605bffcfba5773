//! Arbitrary bytes as a stream of 64-byte reports into the CTAPHID Assembler
//! (device side: many channels). Must never panic; every completed message
//! must respect the length limit and re-fragment to the same payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prereg_station::ctaphid::{fragment, Assembler, MAX_MESSAGE_LEN};

fuzz_target!(|data: &[u8]| {
    let mut asm = Assembler::with_channels(MAX_MESSAGE_LEN, 4);
    for chunk in data.chunks(64) {
        let mut report = [0u8; 64];
        report[..chunk.len()].copy_from_slice(chunk);
        if let Ok(Some(m)) = asm.push(&report) {
            assert!(m.payload.len() <= MAX_MESSAGE_LEN);
            let again = fragment(m.cid, m.cmd, &m.payload, MAX_MESSAGE_LEN).unwrap();
            let mut other = Assembler::default();
            let mut out = None;
            for r in &again {
                out = other.push(r).unwrap();
            }
            assert_eq!(out.unwrap(), m);
        }
    }
});

//! The PC/SC APDU codec (ISO 7816-4) on arbitrary bytes, as the vpcd card and
//! the host see them: decoding never panics, a decoded command re-encodes (in
//! the length mode that fits it) to bytes that decode to the same command, and
//! the chaining assembler never grows past its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prereg_station::pcsc::apdu::{ChainAssembler, Chained, Command, LengthMode, Response};

fuzz_target!(|data: &[u8]| {
    let _ = Response::parse(data);
    let mut chain = ChainAssembler::new(2048);
    // Several commands in one input: a length byte, then that many bytes.
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        let (one, tail) = tail.split_at(n);
        rest = tail;
        let Ok(cmd) = Command::decode(one) else { continue };
        for mode in [LengthMode::Short, LengthMode::Extended] {
            if let Ok(bytes) = cmd.encode(mode) {
                assert_eq!(Command::decode(&bytes).as_ref(), Ok(&cmd));
            }
        }
        if let Ok(Chained::Complete(whole)) = chain.push(cmd) {
            assert!(whole.data.len() <= 2048);
        }
    }
});

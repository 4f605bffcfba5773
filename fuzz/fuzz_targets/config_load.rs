//! The configuration loader (SPEC §11) on arbitrary text: a TOML file is
//! either a typed `Config` or a one-line error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prereg_station::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(message) = Config::parse(text) {
        assert!(!message.is_empty());
    }
});

//! The simulated YubiKey must answer any host input with a CTAPHID/CTAP error,
//! never a panic or a hang (SPEC §10; COMMON rule 5).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    prereg_station::sim::exercise(data);
});

//! The strict canonical CBOR decoder on arbitrary input: no panic, and
//! whatever it accepts must re-encode to exactly the same bytes (canonical
//! means one encoding per value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prereg_station::cbor;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = cbor::decode(data) {
        assert_eq!(cbor::encode(&v), data);
    }
    if let Ok((v, rest)) = cbor::decode_prefix(data) {
        assert_eq!(cbor::encode(&v).len() + rest.len(), data.len());
    }
});

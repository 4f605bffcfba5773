//! Every typed CTAP2 reply parser on arbitrary (canonical) CBOR: typed errors
//! only, never a panic. Also the authenticator-data and device-info parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prereg_station::cbor;
use prereg_station::ctap2::{AuthenticatorData, GetAssertionResponse, GetInfo, MakeCredentialResponse};
use prereg_station::pin::CoseKey;
use prereg_station::yubikey::DeviceInfo;

fuzz_target!(|data: &[u8]| {
    let _ = AuthenticatorData::parse(data);
    let _ = DeviceInfo::parse_pages(&[data]);
    let _ = DeviceInfo::parse_tlv_bytes(data);
    if let Ok(v) = cbor::decode(data) {
        if let Ok(info) = GetInfo::parse(&v) {
            // What we parse, we can encode and parse back to the same thing.
            assert_eq!(GetInfo::parse(&info.to_cbor()).unwrap(), info);
        }
        let _ = MakeCredentialResponse::parse(&v);
        let _ = GetAssertionResponse::parse(&v);
        let _ = CoseKey::from_cbor(&v);
    }
});

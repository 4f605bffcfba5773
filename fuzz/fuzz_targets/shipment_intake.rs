//! Job intake (SPEC §3) on arbitrary bytes: a file is parsed as one shipment or
//! a JSON-lines stream, each shipment becomes a `Job` or a named refusal, and a
//! `Job` only ever holds a shipment id in the grammar (1–64 of [A-Za-z0-9_-]).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prereg_station::shipment::{parse_stream, IntakePolicy, Shipment};

struct Policy;

impl IntakePolicy for Policy {
    fn product_known(&self, p: u32) -> bool {
        [1, 2, 3, 4, 5, 7, 29, 54, 55].contains(&p)
    }
    fn customization_products(&self, c: &str) -> Option<Vec<u32>> {
        (c == "C19881").then(|| vec![1, 29])
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(shipments) = parse_stream::<Shipment>(text) else { return };
    for s in shipments {
        match s.validate(&Policy) {
            Ok(job) => {
                let id = job.shipment_id.as_str();
                assert!((1..=64).contains(&id.len()));
                assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
            }
            Err(refusal) => {
                let line = refusal.to_string();
                assert!(line.starts_with(refusal.code()));
                assert!(!line.chars().any(char::is_control), "{line:?}");
            }
        }
    }
});

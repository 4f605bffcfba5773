//! The rig line codec (SPEC §9) on arbitrary serial bytes: the splitter never
//! keeps more than a line, parsing never panics, and every accepted request or
//! reply re-encodes to a line that parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prereg_station::rig::codec::{Frame, LineSplitter, Reply, Request, MAX_LINE};

fuzz_target!(|data: &[u8]| {
    let mut split = LineSplitter::new();
    for frame in split.push(data) {
        let Frame::Line(line) = frame else { continue };
        assert!(line.len() <= MAX_LINE + 1, "a line longer than the codec allows");
        if let Ok(req) = Request::parse(&line) {
            let again = req.encode();
            let again = again.strip_suffix('\n').expect("requests end in a newline");
            assert_eq!(Request::parse(again.as_bytes()).as_ref(), Ok(&req));
        }
        if let Ok(reply) = Reply::parse(&line) {
            let again = reply.encode();
            let again = again.strip_suffix('\n').expect("replies end in a newline");
            assert_eq!(Reply::parse(again.as_bytes()).as_ref(), Ok(&reply));
        }
    }
});

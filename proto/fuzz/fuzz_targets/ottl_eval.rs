//! OTTL conditions evaluated over arbitrary span bytes: every path and
//! converter of the supported subset, on whatever a request holds, never
//! panics. The input is an optional extra condition (UTF-8, up to the
//! first newline in the first 256 bytes) followed by an encoded
//! `ExportTraceServiceRequest`. The conditions that reach every path and
//! converter live in `policy::ottl`, where a test checks they compile.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().take(256).position(|b| *b == b'\n');
    let (extra, request) = match split {
        Some(at) => (std::str::from_utf8(&data[..at]).ok(), &data[at + 1..]),
        None => (None, data),
    };
    let _ = std::hint::black_box(policy::ottl::evaluate_request(extra, request));
});

//! The policy parser on arbitrary text: `PolicyFile::parse` never panics. A
//! policy file comes from an operator, but a sampler reloads it live, so a
//! file that crashes the parser would take every sampler down at once.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The loader reads the file as UTF-8 and refuses anything else before
    // parsing, so only text reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = std::hint::black_box(policy::PolicyFile::parse(text, "fuzz.yaml"));
});

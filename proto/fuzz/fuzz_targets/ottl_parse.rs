//! OTTL conditions on arbitrary text: lexing, parsing and compiling never
//! panic and never recurse without bound (nesting and operator chains are
//! limited). A condition comes from the policy file, which a sampler
//! reloads live.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = std::hint::black_box(policy::ottl::check_condition(text));
});

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bauta_fuzz::entry::qpack_section(data));

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bauta_fuzz::entry::hpack_blocks(data));

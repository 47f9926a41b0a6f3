//! libFuzzer entry point for [`exchange_fuzz::key_file`]; run with `cargo fuzz run key_file` (fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exchange_fuzz::key_file(data));

//! libFuzzer entry point for [`exchange_fuzz::directory_segment`]; run with `cargo fuzz run directory_segment` (fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exchange_fuzz::directory_segment(data));

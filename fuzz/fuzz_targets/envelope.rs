//! libFuzzer entry point for [`exchange_fuzz::envelope`]; run with `cargo fuzz run envelope` (fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exchange_fuzz::envelope(data));

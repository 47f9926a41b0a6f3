//! libFuzzer entry point for [`exchange_fuzz::attachment_metadata`]; run with `cargo fuzz run attachment_metadata` (fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exchange_fuzz::attachment_metadata(data));

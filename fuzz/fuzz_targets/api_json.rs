//! libFuzzer entry point for [`exchange_fuzz::api_json`]; run with `cargo fuzz run api_json` (fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exchange_fuzz::api_json(data));

//! libFuzzer entry point for [`exchange_fuzz::signed_message`]; run with `cargo fuzz run signed_message` (fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exchange_fuzz::signed_message(data));

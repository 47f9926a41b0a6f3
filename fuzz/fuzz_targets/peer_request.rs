//! libFuzzer entry point for [`exchange_fuzz::peer_request`]; run with `cargo fuzz run peer_request` (fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exchange_fuzz::peer_request(data));

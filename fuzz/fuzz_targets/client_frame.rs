//! `cargo +nightly fuzz run client_frame`: see `holdfast_server::fuzz::client_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| holdfast_server::fuzz::client_frame(data));

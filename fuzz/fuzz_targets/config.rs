//! `cargo +nightly fuzz run config`: see `holdfast_server::fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| holdfast_server::fuzz::config(data));

//! `cargo +nightly fuzz run ws_stream`: see `holdfast_server::fuzz::ws_stream`
//! (the driver's framing and the WebSocket codec over a client's bytes).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| holdfast_server::fuzz::ws_stream(data));

//! The fuzz corpus (`fuzz/corpus/<target>`), replayed on stable in `cargo
//! test` through the same entry points the `cargo fuzz` targets call
//! (`holdfast_server::fuzz`), then a bounded, seeded mutation run over it
//! (bit flips, truncations, splices, repeated bytes): whatever the bytes,
//! nothing panics. The coverage-guided campaigns run with `cargo +nightly
//! fuzz run <target>` (README, "Fuzzing").

mod common;

use std::path::PathBuf;

use holdfast_server::fuzz;

use common::netfuzz::Rng;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 5, "{} holds too few inputs", dir.display());
    inputs
}

/// One mutation of `input`, now and then spliced with `other`.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => out.truncate(rng.below(out.len())),
            2 => {
                let i = rng.below(out.len() + 1);
                out.insert(i, rng.next() as u8);
            }
            3 if !out.is_empty() => {
                let i = rng.below(out.len());
                let byte = out[i];
                let n = rng.below(64);
                out.splice(i..i, std::iter::repeat_n(byte, n));
            }
            4 => {
                let cut = rng.below(out.len() + 1);
                let from = rng.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            _ if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = [b'{', b'}', b'[', b'"', b'\\', 0x80, 0xff, 0][rng.below(8)];
            }
            _ => {}
        }
    }
    out
}

fn replay_and_mutate(target: &str, run: fn(&[u8]), mutations: usize) {
    let inputs = corpus(target);
    for input in &inputs {
        run(input);
    }
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
    for _ in 0..mutations {
        let input = &inputs[rng.below(inputs.len())];
        let other = &inputs[rng.below(inputs.len())];
        run(&mutate(&mut rng, input, other));
    }
}

#[test]
fn client_frames_never_panic() {
    replay_and_mutate("client_frame", fuzz::client_frame, 50_000);
}

#[test]
fn websocket_streams_never_panic() {
    replay_and_mutate("ws_stream", fuzz::ws_stream, 50_000);
}

#[test]
fn configuration_files_never_panic() {
    replay_and_mutate("config", fuzz::config, 3_000);
}

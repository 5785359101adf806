//! Start to ready on the embedded defaults: from spawning the release binary
//! to the first 200 from `/health/ready`. Goal: under 200 ms.
//!
//! `cargo bench --bench startup` builds `target/release/holdfast` first if it
//! is missing (STARTUP_RUNS to change the count). Runs in a fresh temporary
//! directory each time, so nothing is left from a previous run.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn binary() -> PathBuf {
    // target/release/deps/startup-<hash> -> target/release/holdfast
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let bin = dir.join("holdfast");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "-p",
                "holdfast-server",
                "--bin",
                "holdfast",
            ])
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build --release -p holdfast-server failed"
        );
    }
    bin
}

fn ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && &buf[9..12] == b"200"
}

fn main() {
    let runs: usize = std::env::var("STARTUP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let bin = binary();
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("holdfast-startup-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let t0 = Instant::now();
        let mut child = Command::new(&bin)
            .current_dir(&dir)
            .env("HOLDFAST__SERVER__PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while !ready(port) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "not ready within 10 s"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        samples.push(t0.elapsed());
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let code = child.wait().unwrap().code();
        assert_eq!(code, Some(0), "exit code after SIGTERM");
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "start to ready: spawn {} -> first 200 from /health/ready",
        bin.display()
    );
    common::Samples::new(samples).print("start to ready (embedded defaults)");
}

//! Round trips on one connection, one request at a time: the `ping` of
//! `benches/rtt.rs`, and the `rpc` of `benches/handlers.rs`.

use super::{field_u64, is_type, metric, now_ns, us, Better, Metric, RawWs};
use crate::load;

/// What each round trip sends, and the reply it waits for.
#[derive(Clone, Copy, Debug)]
pub enum Request {
    /// `{"type":"ping","id":N}`, answered by `pong`.
    Ping,
    /// `{"type":"rpc","method":M,"data":{"n":N},"id":N}`, answered by `reply`.
    Rpc(&'static str),
}

/// `count` sequential round trips (ids from `first_id`), each sent once the
/// previous reply arrived; their durations in ns when `keep`.
pub async fn round_trips(
    ws: &mut RawWs,
    request: Request,
    first_id: u64,
    count: u64,
    keep: bool,
) -> Result<Vec<u64>, String> {
    let mut samples = Vec::with_capacity(if keep { count as usize } else { 0 });
    let mut frame = String::with_capacity(96);
    let reply: &[u8] = match request {
        Request::Ping => b"pong",
        Request::Rpc(_) => b"reply",
    };
    for id in first_id..first_id + count {
        use std::fmt::Write;
        frame.clear();
        let _ = match request {
            Request::Ping => write!(frame, r#"{{"type":"ping","id":{id}}}"#),
            Request::Rpc(method) => write!(
                frame,
                r#"{{"type":"rpc","method":"{method}","data":{{"n":{id}}},"id":{id}}}"#
            ),
        };
        let t0 = now_ns();
        ws.send_text(&frame).await?;
        loop {
            let b = ws.next_text().await?.ok_or("closed")?;
            if is_type(b, reply) && field_u64(b, b"\"id\":") == Some(id) {
                break;
            }
            if is_type(b, b"error") {
                return Err(format!("{request:?} {id}: {}", String::from_utf8_lossy(b)));
            }
        }
        if keep {
            samples.push(now_ns() - t0);
        }
    }
    Ok(samples)
}

/// p50, p99, p99.9 and max of `samples`, in µs, named by `prefix`.
pub fn percentiles(prefix: &'static [&'static str; 4], samples: &mut [u64]) -> Vec<Metric> {
    samples.sort_unstable();
    [50.0, 99.0, 99.9, 100.0]
        .iter()
        .zip(prefix)
        .map(|(&p, name)| metric(name, "us", Better::Lower, us(load::pct(samples, p))))
        .collect()
}

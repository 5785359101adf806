//! The outbound queue between a session actor and its socket, and the
//! driver task that keeps the actor running while the socket does not drain.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Notify;

use super::metrics::WsMetrics;

/// How long a slow consumer's close frame may wait for the client to read
/// before the connection is cut.
pub(super) const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What waits between a session and its socket.
#[derive(Default)]
pub(super) struct Outbound {
    /// Encoded bytes in the channel.
    pub(super) bytes: AtomicUsize,
    /// Frames the session has written.
    pub(super) written: AtomicUsize,
    /// Frames the response body has taken.
    pub(super) flushed: AtomicUsize,
    /// Cuts the response body short (a slow consumer that never read its close).
    pub(super) abort: Notify,
}

impl Outbound {
    pub(super) fn messages(&self) -> usize {
        self.written
            .load(Ordering::Relaxed)
            .saturating_sub(self.flushed.load(Ordering::Relaxed))
    }
}

/// Polls the session actor on its own task, so that it keeps running (and
/// can see its queue grow) while the socket does not drain; the returned
/// stream is the response body. Each chunk travels with the number of frames
/// it holds, so that the queue gauges are exact however the connection ends.
pub(super) fn drive(
    actor: impl futures::Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
    outbound: Arc<Outbound>,
    metrics: WsMetrics,
) -> impl futures::Stream<Item = Result<Bytes, actix_web::Error>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(Bytes, usize)>();
    let out = outbound.clone();
    let m = metrics.clone();
    actix_rt::spawn(async move {
        let mut actor = Box::pin(actor);
        let mut counted = 0;
        while let Some(Ok(chunk)) = actor.next().await {
            let written = out.written.load(Ordering::Relaxed);
            let frames = written - counted;
            counted = written;
            let len = chunk.len();
            out.bytes.fetch_add(len, Ordering::Relaxed);
            m.queued_bytes.add(len as i64);
            m.queued_messages.add(frames as i64);
            if tx.send((chunk, frames)).is_err() {
                out.bytes.fetch_sub(len, Ordering::Relaxed);
                m.queued_bytes.sub(len as i64);
                m.queued_messages.sub(frames as i64);
                break; // the client is gone
            }
        }
        // The session is done: dropping it releases its rooms and registration now.
        drop(actor);
        drop(tx);
        // Whatever is still queued now waits for a client that may never read.
        tokio::time::sleep(SLOW_CLOSE_GRACE).await;
        out.abort.notify_one();
    });
    let body = Body {
        rx,
        out: outbound,
        metrics,
    };
    futures::stream::unfold(body, |mut body| async move {
        let next = {
            let abort = body.out.abort.notified();
            tokio::select! {
                biased;
                chunk = body.rx.recv() => chunk,
                () = abort => None,
            }
        };
        let (chunk, frames) = next?;
        body.taken(chunk.len(), frames);
        Some((Ok(chunk), body))
    })
}

/// The response body's end of the outbound queue.
pub(super) struct Body {
    pub(super) rx: tokio::sync::mpsc::UnboundedReceiver<(Bytes, usize)>,
    pub(super) out: Arc<Outbound>,
    pub(super) metrics: WsMetrics,
}

impl Body {
    pub(super) fn taken(&self, len: usize, frames: usize) {
        self.out.bytes.fetch_sub(len, Ordering::Relaxed);
        self.out.flushed.fetch_add(frames, Ordering::Relaxed);
        self.metrics.queued_bytes.sub(len as i64);
        self.metrics.queued_messages.sub(frames as i64);
    }
}

impl Drop for Body {
    /// An aborted or dropped body releases what it never sent.
    fn drop(&mut self) {
        self.rx.close();
        while let Ok((chunk, frames)) = self.rx.try_recv() {
            self.taken(chunk.len(), frames);
        }
    }
}

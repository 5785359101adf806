//! [`Body`]: the response body that drains a connection's queue as the
//! socket takes it, and [`body`], the driver of the session actor.

use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::conn::{unshare, Conn, Queued};

/// How long a closing connection's last frames may wait for the client to
/// read before the connection is cut.
const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(5);
/// The response body: the connection's queue, taken as the socket drains.
pub(crate) struct Body {
    conn: Rc<Conn>,
    /// Dropped with the body: tells the driver that the grace is over.
    _gone: futures::channel::oneshot::Sender<()>,
}

impl Stream for Body {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let conn = &self.conn;
        if conn.aborted.replace(false) {
            // Past the grace: what the client did not take is dropped, but
            // for the close frame, which is always the last one queued.
            let close = conn
                .closing
                .get()
                .then(|| conn.queue.borrow_mut().pop_back());
            conn.clear();
            if let Some(Some(close)) = close {
                return Poll::Ready(Some(Ok(unshare(close.frame))));
            }
        }
        if let Some(chunk) = conn.take() {
            return Poll::Ready(Some(Ok(chunk)));
        }
        if conn.finished.get() {
            return Poll::Ready(None);
        }
        let mut waker = conn.waker.borrow_mut();
        if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Body {
    /// A body dropped early (the client went away) releases what it never
    /// sent; nothing more is queued after it.
    fn drop(&mut self) {
        self.conn.closing.set(true);
        self.conn.clear();
    }
}

/// The response body for `conn`, and the driver task that polls the session
/// actor (`actor`, the WebSocket context) on its own, so that the actor
/// keeps running while the socket does not drain. Once the actor has stopped,
/// the body ends when its queue is empty, or after [`SLOW_CLOSE_GRACE`] if
/// the client does not read it; the driver ends with the body, so a closed
/// connection holds nothing for the grace it did not need.
pub(crate) fn body(
    conn: Rc<Conn>,
    actor: impl Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
) -> Body {
    let c = conn.clone();
    let (gone, body_gone) = futures::channel::oneshot::channel();
    actix_rt::spawn(async move {
        let mut actor = Box::pin(actor);
        while let Some(Ok(chunk)) = actor.next().await {
            c.enqueue(Queued::kept(chunk)); // a frame the context wrote itself
        }
        // The session is done: dropping it releases its rooms and registration now.
        drop(actor);
        c.finished.set(true);
        c.wake();
        if tokio::time::timeout(SLOW_CLOSE_GRACE, body_gone)
            .await
            .is_err()
        {
            c.aborted.set(true);
            c.wake();
        }
    });
    Body { conn, _gone: gone }
}

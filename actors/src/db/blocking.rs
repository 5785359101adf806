//! [`Blocking`]: where the SQLite connection's blocking calls run.
//!
//! diesel-async's `SyncConnectionWrapper` runs each call of the synchronous
//! SQLite connection as a task on tokio's blocking pool. When the future of
//! a call is dropped before the task finished (a timeout, an actor that
//! stops, a handler past its deadline), the connection must not be used
//! again while that task runs: the wrapper's transaction state would be
//! shared with it (diesel-async panics on that), and the next call would
//! block on the connection's lock. diesel-async's own runtime waits for the
//! task with `block_in_place`, which panics on a current-thread runtime,
//! and every actix arbiter is one; waiting any other way stalls the thread
//! that dropped the call, and every connection it serves, for as long as
//! the call runs (up to SQLite's `busy_timeout`, 5 s, for a call stuck on
//! the write lock). So nothing waits: the task is left to finish on the
//! blocking pool, and the connection is marked [`abandoned`](Blocking::abandoned),
//! which makes the pool discard it (`SqliteManager::has_broken`) instead of
//! handing it out again.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use diesel_async::sync_connection_wrapper::SpawnBlocking;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// See the module docs. One per connection.
pub struct Blocking {
    handle: Handle,
    abandoned: Arc<AtomicBool>,
}

impl Blocking {
    /// Calls run on the current runtime's blocking pool (or, outside one, on
    /// a runtime of its own).
    pub fn new() -> Self {
        static FALLBACK: OnceLock<Runtime> = OnceLock::new();
        let handle = Handle::try_current().unwrap_or_else(|_| {
            FALLBACK
                .get_or_init(|| {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(1)
                        .thread_name("holdfast-sqlite")
                        .build()
                        .expect("a runtime for SQLite calls made outside one")
                })
                .handle()
                .clone()
        });
        Self {
            handle,
            abandoned: Arc::default(),
        }
    }

    /// Set once a call was dropped before its task finished: the connection
    /// may still be in use by it and is not to be used again.
    pub fn abandoned(&self) -> Arc<AtomicBool> {
        self.abandoned.clone()
    }
}

impl Default for Blocking {
    fn default() -> Self {
        Self::new()
    }
}

impl SpawnBlocking for Blocking {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, Result<R, Box<dyn Error + Send + Sync + 'static>>>
    where
        R: Send + 'static,
    {
        let call = Call {
            handle: self.handle.spawn_blocking(task),
            abandoned: self.abandoned.clone(),
        };
        call.map(|r| r.map_err(|e| Box::new(e) as Box<dyn Error + Send + Sync>))
            .boxed()
    }

    fn get_runtime() -> Self {
        Self::new()
    }
}

/// A call in flight; dropped before its task finished, it marks the
/// connection abandoned.
struct Call<R> {
    handle: JoinHandle<R>,
    abandoned: Arc<AtomicBool>,
}

impl<R> Future for Call<R> {
    type Output = Result<R, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.handle).poll(cx)
    }
}

impl<R> Drop for Call<R> {
    fn drop(&mut self) {
        if !self.handle.is_finished() {
            self.abandoned.store(true, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A call dropped mid-flight marks the connection abandoned at once; one
    /// awaited to its end does not.
    #[tokio::test]
    async fn a_call_dropped_mid_flight_abandons_its_connection() {
        let mut blocking = Blocking::new();
        let abandoned = blocking.abandoned();
        blocking.spawn_blocking(|| 1).await.unwrap();
        assert!(!abandoned.load(Ordering::SeqCst));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let call = blocking.spawn_blocking(move || released.recv_timeout(Duration::from_secs(10)));
        drop(call);
        assert!(
            abandoned.load(Ordering::SeqCst),
            "marked while the task still runs"
        );
        release.send(()).unwrap();
    }
}

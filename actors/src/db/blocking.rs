//! [`Blocking`]: where the SQLite connection's blocking calls run.
//!
//! diesel-async's `SyncConnectionWrapper` runs each call of the synchronous
//! SQLite connection as a task on tokio's blocking pool. When the future of
//! a call is dropped before the task finished (a timeout, an actor that
//! stops, a handler past its deadline), the connection must not be used
//! again until that task is over. diesel-async's own runtime waits for it
//! with `block_in_place`, which panics on a current-thread runtime, and
//! every actix arbiter is one. This one waits on a condition variable the
//! task signals once it is done: the task runs on a blocking-pool thread,
//! so the wait needs nothing from the thread that waits, and it lasts no
//! longer than the call (bounded by SQLite's `busy_timeout`, 5 s: a thread
//! that drops a call stuck on the write lock stalls that long, which is
//! the price of never reusing a connection under a running call). The
//! signal comes from a guard the task owns, so a task that panics, or that
//! the pool drops unrun at shutdown, still releases the waiter.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll};

use diesel_async::sync_connection_wrapper::SpawnBlocking;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// See the module docs.
pub struct Blocking(Handle);

impl SpawnBlocking for Blocking {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, Result<R, Box<dyn Error + Send + Sync + 'static>>>
    where
        R: Send + 'static,
    {
        let done = Arc::new(Done::default());
        // Signals when dropped: after the task ran (and dropped what it
        // held), when it panicked, or when the pool dropped it unrun.
        let signal = SetOnDrop(done.clone());
        let handle = self.0.spawn_blocking(move || {
            let _signal = signal;
            task()
        });
        Finishing { handle, done }
            .map(|r| r.map_err(|e| Box::new(e) as Box<dyn Error + Send + Sync>))
            .boxed()
    }

    fn get_runtime() -> Self {
        static FALLBACK: OnceLock<Runtime> = OnceLock::new();
        Self(Handle::try_current().unwrap_or_else(|_| {
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
        }))
    }
}

/// Whether a task finished, for a thread to wait on.
#[derive(Default)]
struct Done {
    finished: Mutex<bool>,
    changed: Condvar,
}

impl Done {
    fn set(&self) {
        *self.finished.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_all();
    }

    fn wait(&self) {
        let mut finished = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        while !*finished {
            finished = self
                .changed
                .wait(finished)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Sets its [`Done`] when dropped, however the task ended.
struct SetOnDrop(Arc<Done>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// A call in flight; dropped early, it waits for the task to finish.
struct Finishing<R> {
    handle: JoinHandle<R>,
    done: Arc<Done>,
}

impl<R> Future for Finishing<R> {
    type Output = Result<R, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.handle).poll(cx)
    }
}

impl<R> Drop for Finishing<R> {
    fn drop(&mut self) {
        if !self.handle.is_finished() {
            self.done.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A call dropped mid-flight whose task then panics: the waiter is
    /// released (the guard signals while the task unwinds), not parked for
    /// ever.
    #[tokio::test]
    async fn a_dropped_call_whose_task_panics_releases_the_waiter() {
        let mut blocking = Blocking(Handle::current());
        let call = blocking.spawn_blocking(|| -> () {
            std::thread::sleep(Duration::from_millis(50));
            panic!("the task failed");
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(call);
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(5)).is_ok(),
            "the waiter was never released"
        );
    }
}

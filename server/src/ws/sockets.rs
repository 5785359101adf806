//! The sockets the transport owns: each is counted from its 101 until its
//! connection's driver ends, so that a stop can wait for the last frames
//! of every connection (the HTTP server counts only the requests it still
//! serves, and a taken-over socket is not one of them).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// The count of sockets the transport owns; cheap to clone.
#[derive(Clone, Default)]
pub struct Sockets(Arc<Count>);

#[derive(Default)]
struct Count {
    open: AtomicUsize,
    none_open: Notify,
}

/// One socket counted in [`Sockets`] until this is dropped.
pub(crate) struct Held(Sockets);

impl Sockets {
    /// Counts one more socket, until the returned [`Held`] is dropped.
    pub(crate) fn hold(&self) -> Held {
        self.0.open.fetch_add(1, Ordering::SeqCst);
        Held(self.clone())
    }

    /// Sockets owned now.
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::SeqCst)
    }

    /// Waits until no socket is owned.
    pub async fn closed(&self) {
        loop {
            let notified = self.0.none_open.notified();
            tokio::pin!(notified);
            // Registered before the count is read: a last drop between the
            // two still wakes this.
            notified.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.0 .0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0 .0.none_open.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Sockets;

    #[tokio::test]
    async fn closed_waits_for_the_last_socket() {
        let sockets = Sockets::default();
        sockets.closed().await; // none open: at once
        let (one, two) = (sockets.hold(), sockets.hold());
        let waiting = tokio::spawn({
            let sockets = sockets.clone();
            async move { sockets.closed().await }
        });
        drop(one);
        assert_eq!(sockets.open(), 1);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one socket is still open");
        drop(two);
        waiting.await.expect("closed() returns once none is open");
        assert_eq!(sockets.open(), 0);
    }
}

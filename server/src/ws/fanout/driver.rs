//! The connection driver: after the upgrade, one future per connection, run
//! as a task of its own, owns the socket. It runs the session actor (the
//! actix-web-actors context, fed by [`Reader`]), writes the connection's
//! queue when the socket has room (the worker writes through itself; see
//! [`Conn::flush`]), and closes: once the actor has stopped, the queue is
//! written within [`SLOW_CLOSE_GRACE`], the write side shut, and the
//! client's last bytes read and dropped for at most [`LINGER`], so that its
//! close frame gets to it before the socket goes.
//!
//! Reads go through one buffer per worker thread, [`READ_BYTES`] long: a
//! connection holds received bytes of its own only while they are not yet a
//! whole frame, and none when idle. The actor is handed one frame at a time
//! (where each ends: `framing`), and the socket is read again only once no
//! whole frame waits, so a client that sends faster than its frames are
//! handled is held back by TCP, and what it sent costs at most a frame and
//! a buffer here.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use actix_http::error::PayloadError;
use actix_http::ws::Codec;
use actix_rt::net::TcpStream;
use actix_web_actors::ws::WebsocketContext;
use bytes::{Bytes, BytesMut};
use futures::stream::LocalBoxStream;
use futures::Stream;
use tokio::time::Sleep;

use super::conn::{Conn, Queued};
use super::framing::{self, Taken};
use crate::ws::session::WsSession;
use crate::ws::sockets::Held;

/// How long a closing connection's last frames may wait for the client to
/// read before the connection is cut.
const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long, once everything is written and the write side shut, the
/// client's last bytes are read (and dropped) before the socket is closed:
/// closing with unread bytes resets the connection, and the client could
/// lose what was written last. The one linger of the server's connections:
/// the driver's, the upgrade service's for an answer that takes nothing
/// over, and actix-http's (`client_disconnect_timeout`, `app::front`).
pub(crate) const LINGER: Duration = Duration::from_secs(1);
/// The size of each worker thread's read buffer.
const READ_BYTES: usize = 16 * 1024;

thread_local! {
    /// Every read of this thread's connections lands here first.
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BYTES].into_boxed_slice());
}

/// A connection admitted and its session built, waiting for its socket: the
/// WebSocket handler hands it to the upgrade service with the 101.
pub(crate) struct Takeover {
    conn: Rc<Conn>,
    session: WsSession,
    max_frame_bytes: usize,
    held: Held,
}

impl Takeover {
    /// `held` counts the socket from here until the driver ends.
    pub(crate) fn new(
        conn: Rc<Conn>,
        session: WsSession,
        max_frame_bytes: usize,
        held: Held,
    ) -> Self {
        Self {
            conn,
            session,
            max_frame_bytes,
            held,
        }
    }

    /// Starts the connection's driver over `socket`, as a task of its own
    /// on this thread, which runs until the connection is closed (the HTTP
    /// layer's task, and everything it holds, can end now). `handshake` is
    /// the 101, written first, with the session's first frames; `received`
    /// is what the client sent after its handshake, read with it (kept in
    /// a buffer of its own size, not the HTTP layer's).
    pub(crate) fn start(self, socket: TcpStream, received: BytesMut, handshake: Bytes) {
        self.conn.enqueue(Queued::kept(handshake));
        let socket = Rc::new(socket);
        *self.conn.socket.borrow_mut() = Some(socket.clone());
        let reader = Reader {
            socket: socket.clone(),
            pending: BytesMut::from(&received[..]),
            paused: false,
            refused: false,
            max_frame_bytes: self.max_frame_bytes,
        };
        let codec = Codec::new().max_size(self.max_frame_bytes);
        let actor = WebsocketContext::with_codec(self.session, reader, codec);
        drop(received);
        actix_rt::spawn(Driver {
            conn: self.conn,
            socket,
            actor: Some(Box::pin(actor)),
            phase: Phase::Open,
            _held: self.held,
        });
    }
}

/// Where a connection is in its life.
enum Phase {
    /// The session actor runs.
    Open,
    /// The actor has stopped; its last frames are written until the grace ends.
    Closing(Pin<Box<Sleep>>),
    /// Everything is written and the write side shut; the client's last
    /// bytes are read until it closes or the linger ends.
    Lingering(Pin<Box<Sleep>>),
}

struct Driver {
    conn: Rc<Conn>,
    socket: Rc<TcpStream>,
    actor: Option<LocalBoxStream<'static, Result<Bytes, actix_web::Error>>>,
    phase: Phase,
    /// Counts the socket as owned until the driver ends.
    _held: Held,
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // What is queued while the driver runs is written below: no wake.
        this.conn.waker.borrow_mut().take();
        if this.run_and_write(cx).is_ready() {
            return Poll::Ready(());
        }
        loop {
            match &mut this.phase {
                Phase::Open => break,
                Phase::Closing(grace) => {
                    if this.conn.queue.borrow().is_empty() {
                        // Orderly: the client reads to our end of stream.
                        let _ = socket2::SockRef::from(&*this.socket)
                            .shutdown(std::net::Shutdown::Write);
                        this.phase = Phase::Lingering(Box::pin(tokio::time::sleep(LINGER)));
                        continue;
                    }
                    if grace.as_mut().poll(cx).is_ready() {
                        // The client does not read: it gets the close frame
                        // if the socket takes it, and the connection ends.
                        this.conn.abandon();
                        let _ = this.conn.write();
                        return Poll::Ready(());
                    }
                    break;
                }
                Phase::Lingering(until) => {
                    if until.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                    return poll_drain(&this.socket, cx);
                }
            }
        }
        *this.conn.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Driver {
    /// Runs the actor, then writes the queue while the socket takes it.
    /// Ready when the connection is done (its socket failed).
    fn run_and_write(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while let Some(actor) = self.actor.as_mut() {
            match actor.as_mut().poll_next(cx) {
                // A frame the context wrote itself.
                Poll::Ready(Some(Ok(frame))) => self.conn.enqueue(Queued::kept(frame)),
                Poll::Ready(_) => {
                    // The session is done: dropping it releases its rooms
                    // and its registration now.
                    self.actor = None;
                    self.conn.finished.set(true);
                    let grace = Box::pin(tokio::time::sleep(SLOW_CLOSE_GRACE));
                    self.phase = Phase::Closing(grace);
                }
                Poll::Pending => break,
            }
        }
        loop {
            match self.conn.write() {
                Ok(true) => return Poll::Pending,
                Ok(false) => match self.socket.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                },
                // The client is gone: so is the session, with the driver.
                Err(_) => return Poll::Ready(()),
            }
        }
    }
}

/// Reads what the socket has into this thread's buffer and hands it to
/// `take`. `None` at the end of the stream.
pub(crate) fn poll_read<T>(
    socket: &TcpStream,
    cx: &mut Context<'_>,
    mut take: impl FnMut(&[u8]) -> T,
) -> Poll<Option<io::Result<T>>> {
    loop {
        if let Err(e) = ready!(socket.poll_read_ready(cx)) {
            return Poll::Ready(Some(Err(e)));
        }
        let read = READ_BUFFER.with_borrow_mut(|buffer| match socket.try_read(buffer) {
            Ok(0) => Some(None),
            Ok(n) => Some(Some(Ok(take(&buffer[..n])))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => Some(Some(Err(e))),
        });
        if let Some(read) = read {
            return Poll::Ready(read);
        }
    }
}

/// Reads and drops what the client sends; ready at the end of its stream
/// or on an error.
pub(crate) fn poll_drain(socket: &TcpStream, cx: &mut Context<'_>) -> Poll<()> {
    loop {
        match ready!(poll_read(socket, cx, |_| ())) {
            Some(Ok(())) => {}
            None | Some(Err(_)) => return Poll::Ready(()),
        }
    }
}

/// The client's bytes for the WebSocket context, one frame at a time (see
/// the module docs).
struct Reader {
    socket: Rc<TcpStream>,
    /// Received, not yet handed over: part of a frame, or more than one.
    pending: BytesMut,
    /// A frame was handed over: the context decodes it before the next.
    paused: bool,
    /// An oversize frame was refused: nothing more is read.
    refused: bool,
    max_frame_bytes: usize,
}

impl Stream for Reader {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.refused {
            return Poll::Pending; // the session is closing
        }
        if std::mem::take(&mut this.paused) {
            // The context reads until it is told to wait, then decodes what
            // it got; it is polled again for the next frame, and the wake
            // makes sure of it.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            match framing::take(&mut this.pending, this.max_frame_bytes) {
                Taken::Frame(frame) => {
                    this.paused = true;
                    return Poll::Ready(Some(Ok(frame)));
                }
                Taken::Oversize(header) => {
                    // The session closes with 1009; nothing more is read.
                    this.refused = true;
                    return Poll::Ready(Some(Ok(header)));
                }
                Taken::Partial => {}
            }
            let pending = &mut this.pending;
            match ready!(poll_read(&this.socket, cx, |bytes| pending.extend_from_slice(bytes))) {
                Some(Ok(())) => {}
                Some(Err(e)) => return Poll::Ready(Some(Err(PayloadError::Io(e)))),
                // The client's side ended: a partial frame is handed over
                // for the context to find incomplete, then the end.
                None if this.pending.is_empty() => return Poll::Ready(None),
                None => return Poll::Ready(Some(Ok(std::mem::take(&mut this.pending).freeze()))),
            }
        }
    }
}

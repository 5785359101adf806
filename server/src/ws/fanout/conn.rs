//! [`Conn`]: one connection's state on its worker thread, its outbound
//! queue with the bounds and the slow-consumer policies (see the module docs
//! of `fanout`), and the one place the queue is written to the socket.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;

use actix::Addr;
use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser};
use actix_rt::net::TcpStream;
use bytes::{Bytes, BytesMut};

use holdfast_actors::rooms::Inbox;

use super::super::protocol::{Id, ServerFrame};
use super::super::session::{Overflowed, WsSession};
use super::{encode, Frame, Seen, Worker};
use crate::config::SlowConsumer;

/// Most queued frames handed to the socket in one vectored write.
const WRITE_SLICES: usize = 64;

/// A frame in one connection's queue.
pub(super) struct Queued {
    pub(super) frame: Frame,
    pub(super) kind: Kind,
}

/// What a queued frame is, for what may replace or drop it.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Kind {
    /// Kept until written: replies, pings, close, messages of `close` rooms.
    Kept,
    /// A message of a room whose policy (`drop_oldest`, `latest`) may drop it.
    Lossy(Arc<str>, SlowConsumer),
    /// A pong: the next one replaces it (a pong may answer only the latest
    /// ping, RFC 6455 §5.5.3), so pings cannot grow the queue.
    Pong,
}

impl Queued {
    pub(crate) fn kept(frame: impl Into<Frame>) -> Self {
        Self {
            frame: frame.into(),
            kind: Kind::Kept,
        }
    }
}

/// One connection's state on its worker thread. See the module docs.
pub(crate) struct Conn {
    /// Its number at its worker's outlet.
    pub(super) slot: u64,
    /// The worker it belongs to (its bounds, its gauges).
    pub(super) worker: Rc<Worker>,
    /// Encoded frames waiting for the socket, oldest first.
    pub(super) queue: RefCell<VecDeque<Queued>>,
    /// Bytes in `queue`.
    pub(super) bytes: Cell<usize>,
    /// Joined rooms with the last offset delivered.
    pub(super) rooms: RefCell<HashMap<Arc<str>, Seen>>,
    /// The connection's driver, waiting for frames or for the socket.
    pub(super) waker: RefCell<Option<Waker>>,
    /// The socket, once the driver took it over; the queue is written to it.
    pub(super) socket: RefCell<Option<Rc<TcpStream>>>,
    /// The oldest queued frame is the rest of one partly written: it is
    /// kept whatever the policies, and nothing may be written before it.
    pub(super) partial: Cell<bool>,
    /// Frames were queued during the worker's batch: written at its end.
    pub(super) unflushed: Cell<bool>,
    /// A close frame is queued; nothing more is written.
    pub(super) closing: Cell<bool>,
    /// The session actor is gone; the driver ends once the queue is written.
    pub(super) finished: Cell<bool>,
    /// The session actor, told when the queue overflows or a resume replayed.
    pub(super) actor: RefCell<Option<Addr<WsSession>>>,
}

impl Conn {
    pub(crate) fn attach(&self, actor: Addr<WsSession>) {
        *self.actor.borrow_mut() = Some(actor);
    }

    /// Bytes and messages waiting for the socket.
    pub(crate) fn depth(&self) -> (usize, usize) {
        (self.bytes.get(), self.queue.borrow().len())
    }

    /// A room's message for this connection alone (a replay): queued when
    /// the connection is in the room.
    pub(super) fn deliver(
        &self,
        room: &Arc<str>,
        offset: u64,
        encoded: Bytes,
        policy: SlowConsumer,
    ) -> bool {
        let Some(seen) = self.rooms.borrow().get(room).cloned() else {
            return false; // left meanwhile
        };
        let sent = self.push_message(encoded.into(), room, policy);
        if sent {
            seen.set(seen.get().max(offset));
        }
        sent
    }

    /// The connection is in `room`, having seen up to `offset`.
    pub(crate) fn join(&self, room: &Arc<str>, offset: u64) {
        self.rooms
            .borrow_mut()
            .insert(room.clone(), Rc::new(Cell::new(offset)));
    }

    /// Whether the connection is in `room`.
    pub(crate) fn in_room(&self, room: &str) -> bool {
        self.rooms.borrow().contains_key(room)
    }

    /// Leaves `room`, here and in its worker's index; answers whether the
    /// connection was in it.
    pub(crate) fn leave(&self, room: &str) -> bool {
        let was_in = self.rooms.borrow_mut().remove(room).is_some();
        self.worker.unindex(room, self);
        was_in
    }

    /// The rooms joined.
    pub(crate) fn joined(&self) -> Vec<Arc<str>> {
        self.rooms.borrow().keys().cloned().collect()
    }

    /// Where the hubs send this connection's events.
    pub(crate) fn inbox(&self) -> Inbox {
        self.worker.inbox(self)
    }

    /// The connection is gone: nothing reaches it any more.
    pub(crate) fn disconnect(&self) {
        self.worker.disconnect(self);
    }

    /// The rooms, with the last offset delivered in each.
    pub(crate) fn offsets(&self) -> BTreeMap<String, u64> {
        self.rooms
            .borrow()
            .iter()
            .map(|(room, seen)| (room.to_string(), seen.get()))
            .collect()
    }

    /// Queues one data frame that is kept until written. Over a bound,
    /// messages of `drop_oldest` rooms make room for it, or else the
    /// connection closes with 1013. Answers whether it was queued.
    pub(crate) fn push(&self, frame: impl Into<Frame>) -> bool {
        self.push_bounded(Queued::kept(frame))
    }

    /// Queues a message of `room` under the room's slow-consumer `policy`
    /// (see the module docs). Answers whether it was queued.
    pub(super) fn push_message(&self, frame: Frame, room: &Arc<str>, policy: SlowConsumer) -> bool {
        if policy == SlowConsumer::Latest && !self.closing.get() && self.replace(room, &frame) {
            self.worker.dropped(policy, 1);
            return true;
        }
        self.push_bounded(Queued {
            frame,
            kind: match policy {
                SlowConsumer::Close => Kind::Kept,
                policy => Kind::Lossy(room.clone(), policy),
            },
        })
    }

    fn push_bounded(&self, queued: Queued) -> bool {
        if self.closing.get() {
            return false;
        }
        if self.full() {
            self.make_room();
        }
        if self.full() {
            self.overflow(); // nothing is left that may be dropped
            return false;
        }
        self.enqueue(queued);
        true
    }

    /// Whether the queue is at a bound.
    fn full(&self) -> bool {
        let w = &self.worker;
        self.bytes.get() >= w.max_bytes || self.queue.borrow().len() >= w.max_messages
    }

    /// Replaces the queued message of `room`, if one waits, by `frame`.
    fn replace(&self, room: &Arc<str>, frame: &Frame) -> bool {
        self.replace_where(|kind| matches!(kind, Kind::Lossy(r, _) if r == room), frame)
    }

    /// Replaces the last queued frame of a `kind` that `which` picks, if
    /// one waits, by `frame`; answers whether one did.
    fn replace_where(&self, which: impl Fn(&Kind) -> bool, frame: &Frame) -> bool {
        let mut queue = self.queue.borrow_mut();
        let Some(waiting) = queue.iter_mut().rev().find(|q| which(&q.kind)) else {
            return false;
        };
        let delta = frame.len() as i64 - waiting.frame.len() as i64;
        waiting.frame = frame.clone();
        self.bytes.set((self.bytes.get() as i64 + delta) as usize);
        self.worker.queued(delta, 0);
        true
    }

    /// Drops the oldest messages of `drop_oldest` rooms until the queue is
    /// under its bounds, or none is left.
    fn make_room(&self) {
        let mut dropped = 0;
        while self.full() {
            let mut queue = self.queue.borrow_mut();
            let oldest = queue
                .iter()
                .position(|q| matches!(q.kind, Kind::Lossy(_, SlowConsumer::DropOldest)));
            let Some(q) = oldest.and_then(|i| queue.remove(i)) else {
                break;
            };
            self.bytes.set(self.bytes.get() - q.frame.len());
            self.worker.queued(-(q.frame.len() as i64), -1);
            dropped += 1;
        }
        if dropped > 0 {
            self.worker.dropped(SlowConsumer::DropOldest, dropped);
        }
    }

    /// The queue is over a bound: the connection closes with 1013.
    fn overflow(&self) {
        self.closing.set(true);
        self.enqueue(Queued::kept(close_frame(
            super::super::close::TRY_AGAIN_LATER,
            "slow consumer: outbound queue full; reconnect and resume",
        )));
        if let Some(actor) = self.actor.borrow().as_ref() {
            actor.do_send(Overflowed);
        }
    }

    /// Queues a server frame (a reply, an error, `joined`), with `id` when
    /// the request had one, and counts it as sent.
    pub(crate) fn push_reply(&self, frame: &ServerFrame<'_>, id: Option<&Id>) {
        let text = frame.encode(id);
        let sent = self.push(encode(OpCode::Text, text.as_bytes()));
        self.worker.count_out(u64::from(sent), text.len(), None);
    }

    /// Queues a control frame within the bounds (1013 past them), a pong
    /// in place of one still waiting.
    pub(crate) fn control(&self, op: OpCode, payload: &[u8]) {
        if self.closing.get() {
            return;
        }
        let frame = Frame::new(encode(op, payload));
        if op == OpCode::Pong && self.replace_where(|kind| *kind == Kind::Pong, &frame) {
            return;
        }
        let kind = match op {
            OpCode::Pong => Kind::Pong,
            _ => Kind::Kept,
        };
        self.push_bounded(Queued { frame, kind });
    }

    /// Queues the close frame; nothing is written after it.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        if !self.closing.replace(true) {
            self.enqueue(Queued::kept(close_frame(code, reason)));
        }
    }

    /// Answers the client's close with the same code (an empty close when it gave none).
    pub(crate) fn echo_close(&self, reason: Option<CloseReason>) {
        if !self.closing.replace(true) {
            let mut dst = BytesMut::new();
            Parser::write_close(&mut dst, reason, false);
            self.enqueue(Queued::kept(dst.freeze()));
        }
    }

    pub(super) fn enqueue(&self, queued: Queued) {
        let len = queued.frame.len();
        self.bytes.set(self.bytes.get() + len);
        self.queue.borrow_mut().push_back(queued);
        self.worker.queued(len as i64, 1);
        self.wake();
    }

    /// Something was queued: during the worker's batch, written at its end
    /// (several frames in one write); else the driver is woken to write it.
    pub(super) fn wake(&self) {
        if self.worker.defer_flush(self) {
            return;
        }
        self.wake_driver();
    }

    pub(super) fn wake_driver(&self) {
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Writes what the socket takes now, and wakes the driver when it must
    /// wait for the socket (something is left) or end (the session is done).
    pub(super) fn flush(&self) {
        let written = self.write();
        if !matches!(written, Ok(true)) || self.finished.get() {
            self.wake_driver();
        }
    }

    /// Writes queued frames, oldest first, while the socket takes them, in
    /// vectored writes. Answers whether the queue is empty. A socket that
    /// fails is done: the queue is dropped and nothing more is queued.
    ///
    /// # Errors
    /// The socket's error (the client went away).
    pub(super) fn write(&self) -> io::Result<bool> {
        let Some(socket) = self.socket.borrow().clone() else {
            return Ok(self.queue.borrow().is_empty());
        };
        loop {
            let result = {
                let queue = self.queue.borrow();
                if queue.is_empty() {
                    return Ok(true);
                }
                let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
                let n = queue.len().min(WRITE_SLICES);
                for (slice, queued) in slices.iter_mut().zip(queue.iter()) {
                    *slice = IoSlice::new(&queued.frame);
                }
                socket.try_write_vectored(&slices[..n])
            };
            match result {
                Ok(0) => return self.failed(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.failed(e),
            }
        }
    }

    /// `n` bytes from the front of the queue are on the socket.
    fn written(&self, mut n: usize) {
        let mut queue = self.queue.borrow_mut();
        let mut frames = 0;
        let bytes = n;
        while let Some(front) = queue.front_mut() {
            if front.frame.len() > n {
                // The rest of a frame: kept, as nothing else may go first.
                let rest = Bytes::clone(&front.frame).slice(n..);
                *front = Queued::kept(rest);
                self.partial.set(true);
                break;
            }
            n -= front.frame.len();
            queue.pop_front();
            frames += 1;
            self.partial.set(false);
            if n == 0 {
                break;
            }
        }
        self.bytes.set(self.bytes.get() - bytes);
        self.worker.queued(-(bytes as i64), -frames);
    }

    fn failed(&self, e: io::Error) -> io::Result<bool> {
        self.closing.set(true);
        self.clear();
        Err(e)
    }

    /// The client did not take its last frames in time: they are dropped,
    /// but for the close frame (always the last queued), unless a frame was
    /// partly written, after which a close frame would be garbage.
    pub(super) fn abandon(&self) {
        let close = (self.closing.get() && !self.partial.get())
            .then(|| self.queue.borrow_mut().pop_back())
            .flatten();
        self.clear();
        if let Some(close) = close {
            self.enqueue(close);
        }
    }

    /// Drops everything queued.
    pub(super) fn clear(&self) {
        let frames = std::mem::take(&mut *self.queue.borrow_mut()).len();
        let bytes = self.bytes.replace(0);
        self.partial.set(false);
        self.worker.queued(-(bytes as i64), -(frames as i64));
    }
}

pub(crate) fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut dst = BytesMut::new();
    Parser::write_close(
        &mut dst,
        Some(CloseReason {
            code: CloseCode::from(code),
            description: Some(reason.to_owned()),
        }),
        false,
    );
    dst.freeze()
}

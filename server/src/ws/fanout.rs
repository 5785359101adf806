//! Worker-local fan-out, and each connection's outbound queue.
//!
//! Every HTTP worker thread has one [`Worker`], which the room hubs know as
//! an [`Outlet`]: a hub hands a room's message to each worker once, and the
//! worker encodes the WebSocket frame once and pushes that one buffer into
//! the outbound queue of each of its connections in the room. What crosses
//! threads is one event per worker and message, not one per member; a member
//! costs a queue push and a wake on its own thread.
//!
//! [`Conn`] is one connection's state, shared on its worker thread by the
//! session actor, the worker and the response body: the outbound queue of
//! encoded frames, bounded in bytes and in messages; the rooms joined, with
//! the last offset delivered; and whether the connection is closing.
//!
//! Back-pressure: the session actor and the worker only ever push into the
//! queue, control frames included (a pong replaces a pong still queued, so
//! a ping flood holds one). A `latest` room's message replaces the one of that room still
//! queued, if any, so that such a room never holds more than one place.
//! Past either bound, the oldest queued messages of `drop_oldest` rooms are
//! dropped to make room; when there are none, the connection is closed with
//! 1013 (what `close`, the default, always does). Nobody else waits.
//! The response body takes from the queue as the socket drains.
//! A driver task polls the session actor, so that it keeps running
//! (heartbeats, timers, close) while the socket does not drain.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use actix::Addr;
use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures::{Stream, StreamExt};
use indexmap::IndexMap;
use prometheus::local::LocalHistogram;
use tokio::sync::mpsc;

use holdfast_actors::rooms::{Inbox, Outlet, RoomEvent};

use super::metrics::WsMetrics;
use super::protocol::{Id, ServerFrame};
use super::session::{Overflowed, WsSession};
use super::WsShared;
use crate::config::SlowConsumer;
use crate::handlers::Namespaces;

/// How long a closing connection's last frames may wait for the client to
/// read before the connection is cut.
const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Most hub events handled per wake of a worker.
const BATCH: usize = 256;
/// How often a worker publishes its queue gauges when it has no events.
const GAUGE_INTERVAL: Duration = Duration::from_millis(100);
/// Most bytes the response body hands to the HTTP layer at once: queued
/// frames up to this size are copied into one chunk.
const CHUNK_BYTES: usize = 16 * 1024;

/// An encoded frame in outbound queues. A room's message is one buffer that
/// every member's queue shares; `Rc` counts the sharing on the worker's
/// thread without the atomic operations a `Bytes` clone costs.
type Frame = Rc<Bytes>;

/// A frame in one connection's queue.
struct Queued {
    frame: Frame,
    kind: Kind,
}

/// What a queued frame is, for what may replace or drop it.
#[derive(Clone, PartialEq, Eq)]
enum Kind {
    /// Kept until written: replies, pings, close, messages of `close` rooms.
    Kept,
    /// A message of a room whose policy (`drop_oldest`, `latest`) may drop it.
    Lossy(Arc<str>, SlowConsumer),
    /// A pong: the next one replaces it (a pong may answer only the latest
    /// ping, RFC 6455 §5.5.3), so pings cannot grow the queue.
    Pong,
}

impl Queued {
    fn kept(frame: impl Into<Frame>) -> Self {
        Self {
            frame: frame.into(),
            kind: Kind::Kept,
        }
    }
}

/// Numbers connections across the process, so that a slot never repeats.
static NEXT_SLOT: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's worker, once a connection was accepted on it.
    static WORKER: RefCell<Option<Rc<Worker>>> = const { RefCell::new(None) };
}

/// What a hub hands to a worker.
enum Event {
    /// A room's message for every member on the worker.
    Broadcast {
        room: Arc<str>,
        offset: u64,
        frame: ByteString,
        at: Option<Instant>,
    },
    /// An event for one connection.
    Direct { slot: u64, event: RoomEvent },
}

/// The hubs' side of a worker: thread-safe, never blocks.
pub(super) struct Remote {
    /// To the worker's event loop; unbounded because a hub must never wait
    /// for a worker (each connection's own queue is what is bounded).
    tx: mpsc::UnboundedSender<Event>,
    /// The slots of the worker's open connections.
    live: Mutex<HashSet<u64>>,
}

impl Remote {
    fn live(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Outlet for Remote {
    fn broadcast(
        &self,
        room: &Arc<str>,
        offset: u64,
        frame: &ByteString,
        published_at: Option<Instant>,
    ) {
        // A closed channel means the worker thread is gone, and its connections with it.
        let _ = self.tx.send(Event::Broadcast {
            room: room.clone(),
            offset,
            frame: frame.clone(),
            at: published_at,
        });
    }

    fn direct(&self, slot: u64, event: RoomEvent) {
        let _ = self.tx.send(Event::Direct { slot, event });
    }

    fn connected(&self, slot: u64) -> bool {
        !self.tx.is_closed() && self.live().contains(&slot)
    }
}

/// A room's connections on one worker, by slot, each with its last offset
/// delivered in that room (shared with [`Conn::rooms`]).
type Members = IndexMap<u64, (Rc<Conn>, Seen)>;

/// The last offset delivered to one connection in one room.
type Seen = Rc<Cell<u64>>;

/// One HTTP worker thread's connections and their rooms.
pub(super) struct Worker {
    /// What the hubs hold for this worker's connections.
    remote: Arc<Remote>,
    /// Open connections by slot.
    conns: RefCell<HashMap<u64, Weak<Conn>>>,
    /// For each room, the connections on this worker that receive its messages.
    rooms: RefCell<HashMap<Arc<str>, Members>>,
    /// Frames and bytes out, queue gauges.
    metrics: WsMetrics,
    /// Publish-to-deliver latency, observed here and flushed once per batch.
    latency: LocalHistogram,
    /// Each connection's outbound bound in bytes (`ws.outbound_max_bytes`).
    max_bytes: usize,
    /// ... and in messages (`ws.outbound_max_messages`).
    max_messages: usize,
    /// Each room's options (its slow-consumer policy).
    namespaces: Namespaces,
    /// Changes to the queue gauges not yet published.
    queued_bytes: Cell<i64>,
    queued_messages: Cell<i64>,
}

impl Worker {
    /// This thread's worker, started on first use.
    pub(super) fn current(shared: &WsShared) -> Rc<Self> {
        WORKER.with(|w| {
            w.borrow_mut()
                .get_or_insert_with(|| Self::start(shared))
                .clone()
        })
    }

    fn start(shared: &WsShared) -> Rc<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let worker = Rc::new(Self {
            remote: Arc::new(Remote {
                tx,
                live: Mutex::new(HashSet::new()),
            }),
            conns: RefCell::new(HashMap::new()),
            rooms: RefCell::new(HashMap::new()),
            metrics: shared.metrics.clone(),
            latency: shared.metrics.latency.local(),
            max_bytes: shared.settings.outbound_max_bytes,
            max_messages: shared.settings.outbound_max_messages,
            namespaces: shared.application.namespaces.clone(),
            queued_bytes: Cell::new(0),
            queued_messages: Cell::new(0),
        });
        let w = worker.clone();
        actix_rt::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            let mut tick = tokio::time::interval(GAUGE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    n = rx.recv_many(&mut batch, BATCH) => {
                        if n == 0 {
                            break;
                        }
                        for event in batch.drain(..) {
                            w.handle(event);
                        }
                        w.latency.flush();
                    }
                    _ = tick.tick() => {}
                }
                w.publish_gauges();
            }
        });
        worker
    }

    /// A new connection on this worker.
    pub(super) fn connect(self: &Rc<Self>) -> Rc<Conn> {
        let slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
        let conn = Rc::new(Conn {
            slot,
            worker: self.clone(),
            queue: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            rooms: RefCell::new(HashMap::new()),
            waker: RefCell::new(None),
            closing: Cell::new(false),
            finished: Cell::new(false),
            aborted: Cell::new(false),
            actor: RefCell::new(None),
        });
        self.conns.borrow_mut().insert(slot, Rc::downgrade(&conn));
        self.remote.live().insert(slot);
        conn
    }

    /// Where the hubs send `conn`'s events.
    fn inbox(&self, conn: &Conn) -> Inbox {
        Inbox::Outlet {
            outlet: self.remote.clone(),
            slot: conn.slot,
        }
    }

    /// `conn` receives `room`'s messages from now on, if it is in the room.
    fn index(&self, room: &Arc<str>, conn: &Rc<Conn>) {
        let Some(seen) = conn.rooms.borrow().get(room).cloned() else {
            return; // left meanwhile
        };
        self.rooms
            .borrow_mut()
            .entry(room.clone())
            .or_default()
            .insert(conn.slot, (conn.clone(), seen));
    }

    /// `conn` no longer receives `room`'s messages.
    fn unindex(&self, room: &str, conn: &Conn) {
        let mut rooms = self.rooms.borrow_mut();
        if let Some(members) = rooms.get_mut(room) {
            members.swap_remove(&conn.slot);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
    }

    /// The connection is gone: nothing reaches it any more.
    fn disconnect(&self, conn: &Conn) {
        for room in &conn.joined() {
            self.unindex(room, conn);
        }
        self.conns.borrow_mut().remove(&conn.slot);
        self.remote.live().remove(&conn.slot);
        conn.actor.borrow_mut().take();
    }

    fn handle(&self, event: Event) {
        match event {
            Event::Broadcast {
                room,
                offset,
                frame,
                at,
            } => {
                let rooms = self.rooms.borrow();
                let Some(members) = rooms.get(&room) else {
                    return; // every member here left meanwhile
                };
                let encoded = Frame::new(encode(OpCode::Text, frame.as_bytes()));
                let policy = self.namespaces.of(&room).settings.slow_consumer;
                let mut sent = 0u64;
                for (conn, seen) in members.values() {
                    if conn.push_message(encoded.clone(), &room, policy) {
                        seen.set(seen.get().max(offset));
                        sent += 1;
                    }
                }
                self.count_out(sent, frame.len(), at);
            }
            Event::Direct { slot, event } => {
                let Some(conn) = self.conns.borrow().get(&slot).and_then(Weak::upgrade) else {
                    return; // closed meanwhile
                };
                self.direct(&conn, event);
            }
        }
    }

    fn direct(&self, conn: &Rc<Conn>, event: RoomEvent) {
        match event {
            RoomEvent::Message {
                room,
                offset,
                frame,
                published_at,
            } => {
                let encoded = encode(OpCode::Text, frame.as_bytes());
                let policy = self.namespaces.of(&room).settings.slow_consumer;
                let sent = conn.deliver(&room, offset, encoded, policy);
                self.count_out(u64::from(sent), frame.len(), published_at);
            }
            RoomEvent::Joined {
                room,
                offset,
                epoch,
                answer,
            } => {
                conn.join(&room, offset);
                self.index(&room, conn);
                let joined = ServerFrame::Joined {
                    room: &room,
                    offset,
                    epoch: &epoch,
                    data: answer.data.as_deref(),
                };
                conn.push_reply(&joined, answer.id.as_ref());
            }
            RoomEvent::Epoch {
                room,
                epoch,
                offset,
            } => {
                // Offsets restart: what this connection saw is `offset` now.
                if let Some(seen) = conn.rooms.borrow().get(&room) {
                    seen.set(offset);
                } else {
                    return; // left meanwhile
                }
                let frame = ServerFrame::Epoch {
                    room: &room,
                    epoch: &epoch,
                    offset,
                };
                conn.push_reply(&frame, None);
            }
            RoomEvent::Presence { room, frame } => {
                if conn.in_room(&room) {
                    let sent = conn.push(encode(OpCode::Text, frame.as_bytes()));
                    self.count_out(u64::from(sent), frame.len(), None);
                }
            }
            RoomEvent::Left { room, id } => {
                // A `joined` handled after the session's own leave indexed
                // the connection again; the hub's answer comes after it.
                conn.leave(&room);
                conn.push_reply(&ServerFrame::Left { room: &room }, id.as_ref());
            }
            RoomEvent::Replayed {
                ref room,
                complete,
                offset,
                ..
            } => {
                // Every replayed message is queued; from here on the room's
                // messages come by broadcast, unless the client left meanwhile.
                if complete {
                    if let Some(seen) = conn.rooms.borrow().get(room) {
                        seen.set(seen.get().max(offset));
                    }
                }
                self.index(room, conn);
                // The session answers `resumed` once every room is replayed.
                if let Some(actor) = conn.actor.borrow().as_ref() {
                    actor.do_send(event);
                }
            }
        }
    }

    fn count_out(&self, frames: u64, len: usize, published_at: Option<Instant>) {
        if frames == 0 {
            return;
        }
        self.metrics.frames_out.inc_by(frames);
        self.metrics.bytes_out.inc_by(frames * len as u64);
        if let Some(at) = published_at {
            let seconds = at.elapsed().as_secs_f64();
            for _ in 0..frames {
                self.latency.observe(seconds);
            }
        }
    }

    /// `n` messages dropped under `policy`.
    fn dropped(&self, policy: SlowConsumer, n: u64) {
        self.metrics
            .slow_consumer_drops
            .with_label_values(&[policy.as_str()])
            .inc_by(n);
    }

    fn queued(&self, bytes: i64, messages: i64) {
        self.queued_bytes.set(self.queued_bytes.get() + bytes);
        self.queued_messages
            .set(self.queued_messages.get() + messages);
    }

    fn publish_gauges(&self) {
        self.metrics.queued_bytes.add(self.queued_bytes.replace(0));
        self.metrics
            .queued_messages
            .add(self.queued_messages.replace(0));
    }
}

/// A server frame (unmasked, final).
fn encode(op: OpCode, payload: &[u8]) -> Bytes {
    let mut dst = BytesMut::with_capacity(payload.len() + 10);
    Parser::write_message(&mut dst, payload, op, true, false);
    dst.freeze()
}

/// One connection's state on its worker thread. See the module docs.
pub(super) struct Conn {
    /// Its number at its worker's outlet.
    slot: u64,
    /// The worker it belongs to (its bounds, its gauges).
    worker: Rc<Worker>,
    /// Encoded frames waiting for the socket, oldest first.
    queue: RefCell<VecDeque<Queued>>,
    /// Bytes in `queue`.
    bytes: Cell<usize>,
    /// Joined rooms with the last offset delivered.
    rooms: RefCell<HashMap<Arc<str>, Seen>>,
    /// The response body, waiting for frames.
    waker: RefCell<Option<Waker>>,
    /// A close frame is queued; nothing more is written.
    closing: Cell<bool>,
    /// The session actor is gone; the body ends once the queue is empty.
    finished: Cell<bool>,
    /// The client did not take its last frames in time: the body sends the
    /// close frame alone and ends.
    aborted: Cell<bool>,
    /// The session actor, told when the queue overflows or a resume replayed.
    actor: RefCell<Option<Addr<WsSession>>>,
}

impl Conn {
    pub(super) fn attach(&self, actor: Addr<WsSession>) {
        *self.actor.borrow_mut() = Some(actor);
    }

    /// Bytes and messages waiting for the socket.
    pub(super) fn depth(&self) -> (usize, usize) {
        (self.bytes.get(), self.queue.borrow().len())
    }

    /// A room's message for this connection alone (a replay): queued when
    /// the connection is in the room.
    fn deliver(&self, room: &Arc<str>, offset: u64, encoded: Bytes, policy: SlowConsumer) -> bool {
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
    pub(super) fn join(&self, room: &Arc<str>, offset: u64) {
        self.rooms
            .borrow_mut()
            .insert(room.clone(), Rc::new(Cell::new(offset)));
    }

    /// Whether the connection is in `room`.
    pub(super) fn in_room(&self, room: &str) -> bool {
        self.rooms.borrow().contains_key(room)
    }

    /// Leaves `room`, here and in its worker's index; answers whether the
    /// connection was in it.
    pub(super) fn leave(&self, room: &str) -> bool {
        let was_in = self.rooms.borrow_mut().remove(room).is_some();
        self.worker.unindex(room, self);
        was_in
    }

    /// The rooms joined.
    pub(super) fn joined(&self) -> Vec<Arc<str>> {
        self.rooms.borrow().keys().cloned().collect()
    }

    /// Where the hubs send this connection's events.
    pub(super) fn inbox(&self) -> Inbox {
        self.worker.inbox(self)
    }

    /// The connection is gone: nothing reaches it any more.
    pub(super) fn disconnect(&self) {
        self.worker.disconnect(self);
    }

    /// The rooms, with the last offset delivered in each.
    pub(super) fn offsets(&self) -> BTreeMap<String, u64> {
        self.rooms
            .borrow()
            .iter()
            .map(|(room, seen)| (room.to_string(), seen.get()))
            .collect()
    }

    /// Queues one data frame that is kept until written. Over a bound,
    /// messages of `drop_oldest` rooms make room for it, or else the
    /// connection closes with 1013. Answers whether it was queued.
    pub(super) fn push(&self, frame: impl Into<Frame>) -> bool {
        self.push_bounded(Queued::kept(frame))
    }

    /// Queues a message of `room` under the room's slow-consumer `policy`
    /// (see the module docs). Answers whether it was queued.
    fn push_message(&self, frame: Frame, room: &Arc<str>, policy: SlowConsumer) -> bool {
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
            super::close::TRY_AGAIN_LATER,
            "slow consumer: outbound queue full; reconnect and resume",
        )));
        if let Some(actor) = self.actor.borrow().as_ref() {
            actor.do_send(Overflowed);
        }
    }

    /// Queues a server frame (a reply, an error, `joined`), with `id` when
    /// the request had one, and counts it as sent.
    pub(super) fn push_reply(&self, frame: &ServerFrame<'_>, id: Option<&Id>) {
        let text = frame.encode(id);
        let sent = self.push(encode(OpCode::Text, text.as_bytes()));
        self.worker.count_out(u64::from(sent), text.len(), None);
    }

    /// Queues a control frame within the bounds (1013 past them), a pong
    /// in place of one still waiting.
    pub(super) fn control(&self, op: OpCode, payload: &[u8]) {
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
    pub(super) fn close(&self, code: u16, reason: &str) {
        if !self.closing.replace(true) {
            self.enqueue(Queued::kept(close_frame(code, reason)));
        }
    }

    /// Answers the client's close with the same code (an empty close when it gave none).
    pub(super) fn echo_close(&self, reason: Option<CloseReason>) {
        if !self.closing.replace(true) {
            let mut dst = BytesMut::new();
            Parser::write_close(&mut dst, reason, false);
            self.enqueue(Queued::kept(dst.freeze()));
        }
    }

    fn enqueue(&self, queued: Queued) {
        let len = queued.frame.len();
        self.bytes.set(self.bytes.get() + len);
        self.queue.borrow_mut().push_back(queued);
        self.worker.queued(len as i64, 1);
        self.wake();
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Drops everything queued.
    fn clear(&self) {
        let frames = std::mem::take(&mut *self.queue.borrow_mut()).len();
        let bytes = self.bytes.replace(0);
        self.worker.queued(-(bytes as i64), -(frames as i64));
    }

    /// The oldest queued frames, as one chunk of at most [`CHUNK_BYTES`]
    /// (or the one frame, if larger). A frame alone is handed over without a
    /// copy; several are copied into one buffer, which the HTTP layer then
    /// takes in one step instead of one per frame.
    fn take(&self) -> Option<Bytes> {
        let mut queue = self.queue.borrow_mut();
        let first = queue.pop_front()?.frame;
        let (chunk, frames) = if queue
            .front()
            .is_none_or(|next| first.len() + next.frame.len() > CHUNK_BYTES)
        {
            (unshare(first), 1)
        } else {
            let mut chunk = BytesMut::with_capacity(self.bytes.get().min(CHUNK_BYTES));
            chunk.extend_from_slice(&first);
            let mut frames = 1;
            while let Some(next) = queue.front() {
                if chunk.len() + next.frame.len() > CHUNK_BYTES {
                    break;
                }
                chunk.extend_from_slice(&next.frame);
                queue.pop_front();
                frames += 1;
            }
            (chunk.freeze(), frames)
        };
        self.bytes.set(self.bytes.get() - chunk.len());
        self.worker.queued(-(chunk.len() as i64), -frames);
        Some(chunk)
    }
}

/// The bytes of a queued frame, without a copy.
fn unshare(frame: Frame) -> Bytes {
    Rc::try_unwrap(frame).unwrap_or_else(|shared| Bytes::clone(&shared))
}

/// The response body: the connection's queue, taken as the socket drains.
pub(super) struct Body {
    conn: Rc<Conn>,
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
/// the client does not read it.
pub(super) fn body(
    conn: Rc<Conn>,
    actor: impl Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
) -> Body {
    let c = conn.clone();
    actix_rt::spawn(async move {
        let mut actor = Box::pin(actor);
        while let Some(Ok(chunk)) = actor.next().await {
            c.enqueue(Queued::kept(chunk)); // a frame the context wrote itself
        }
        // The session is done: dropping it releases its rooms and registration now.
        drop(actor);
        c.finished.set(true);
        c.wake();
        tokio::time::sleep(SLOW_CLOSE_GRACE).await;
        c.aborted.set(true);
        c.wake();
    });
    Body { conn }
}

fn close_frame(code: u16, reason: &str) -> Bytes {
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

//! Worker-local fan-out, and each connection's outbound queue.
//!
//! A folder: this file (the worker and its outlet), `conn` ([`Conn`], the
//! queue, its policies and its writes), `driver` (the future that owns
//! a connection's socket after the upgrade) and `framing` (where each of
//! a client's frames ends, for the driver's reader).
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
//! The queue is written as the socket takes it, in vectored writes: by the
//! worker itself at the end of each batch of hub events (several frames in
//! one write, and no task woken while the socket has room), else by the
//! connection's driver, which also runs the session actor, so that it keeps
//! running (heartbeats, timers, close) while the socket does not drain.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_http::ws::{OpCode, Parser};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use indexmap::IndexMap;
use prometheus::local::LocalHistogram;
use tokio::sync::mpsc;

use holdfast_actors::rooms::{Inbox, Outlet, RoomEvent};

use super::metrics::WsMetrics;
use super::protocol::ServerFrame;
use super::WsShared;
use crate::config::SlowConsumer;
use crate::handlers::Namespaces;

mod conn;
mod driver;
pub(crate) mod framing;

pub(super) use conn::Conn;
pub(crate) use driver::{poll_drain, poll_read, Takeover, LINGER};

/// Most hub events handled per wake of a worker.
const BATCH: usize = 256;
/// How often a worker publishes its queue gauges when it has no events.
const GAUGE_INTERVAL: Duration = Duration::from_millis(100);

/// An encoded frame in outbound queues. A room's message is one buffer that
/// every member's queue shares; `Rc` counts the sharing on the worker's
/// thread without the atomic operations a `Bytes` clone costs.
type Frame = Rc<Bytes>;

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
        /// The hub's `room.deliver` span, when the publish is traced.
        trace: tracing::Span,
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
            trace: tracing::Span::current(),
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
    /// While a batch of hub events is handled: the connections given frames,
    /// written once the batch is done (see [`Conn::wake`]).
    unflushed: RefCell<Option<Vec<Rc<Conn>>>>,
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
            unflushed: RefCell::new(None),
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
                        w.unflushed.replace(Some(Vec::new()));
                        for event in batch.drain(..) {
                            w.handle(event);
                        }
                        w.flush();
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
            socket: RefCell::new(None),
            partial: Cell::new(false),
            unflushed: Cell::new(false),
            closing: Cell::new(false),
            finished: Cell::new(false),
            actor: RefCell::new(None),
        });
        self.conns.borrow_mut().insert(slot, Rc::downgrade(&conn));
        self.remote.live().insert(slot);
        conn
    }

    /// During a batch, notes that `conn` has frames to write at its end;
    /// answers whether it did (else the caller wakes the driver).
    fn defer_flush(&self, conn: &Conn) -> bool {
        let mut unflushed = self.unflushed.borrow_mut();
        let Some(unflushed) = unflushed.as_mut() else {
            return false;
        };
        if conn.unflushed.get() {
            return true;
        }
        let Some(open) = self.conns.borrow().get(&conn.slot).and_then(Weak::upgrade) else {
            return false; // its session is gone: its driver writes the rest
        };
        conn.unflushed.set(true);
        unflushed.push(open);
        true
    }

    /// The batch is done: each connection given frames writes them, as
    /// much as its socket takes, without waking its driver unless it must
    /// wait for the socket.
    fn flush(&self) {
        for conn in self.unflushed.take().unwrap_or_default() {
            conn.unflushed.set(false);
            conn.flush();
        }
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
                trace,
            } => {
                let rooms = self.rooms.borrow();
                let Some(members) = rooms.get(&room) else {
                    return; // every member here left meanwhile
                };
                let traced = holdfast_actors::trace::child_of(&trace, || {
                    tracing::info_span!(
                        target: crate::telemetry::TARGET,
                        parent: &trace,
                        "ws.fanout",
                        room = %room,
                        offset,
                        connections = tracing::field::Empty,
                    )
                });
                let encoded = Frame::new(encode(OpCode::Text, frame.as_bytes()));
                let policy = self.namespaces.of(&room).settings.slow_consumer;
                let mut sent = 0u64;
                for (conn, seen) in members.values() {
                    if conn.push_message(encoded.clone(), &room, policy) {
                        seen.set(seen.get().max(offset));
                        sent += 1;
                    }
                }
                traced.record("connections", sent);
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

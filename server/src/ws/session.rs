//! The session actor: one per connection.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use actix_http::ws::OpCode;
use actix_web_actors::ws::{self, ProtocolError};
use serde_json::{json, Value};

use holdfast_actors::connections::Drain;
use holdfast_actors::rooms::{Member, RoomError, RoomEvent};
use holdfast_actors::sessions::SessionRecord;

use super::fanout::Conn;
use super::protocol::{
    close, code, valid_id, valid_room, IdOnly, Request, MAX_RESUME_ROOMS, RESTARTING,
};
use super::WsShared;
use crate::auth::{self, Identity};

/// A per-connection token bucket.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A `resume` waiting for the hubs' `Replayed`.
struct PendingResume {
    id: Option<Value>,
    waiting: usize,
    rooms: serde_json::Map<String, Value>,
}

/// One connection. See the module docs.
pub struct WsSession {
    shared: Arc<WsShared>,
    /// The session id (replaced by the resumed one after a `resume`).
    id: Arc<str>,
    /// The user id.
    user: Arc<str>,
    identity: Identity,
    /// When the client last sent anything (frame, ping, pong).
    last_heard: Instant,
    bucket: Bucket,
    /// Rate-limited frames inside the abuse window.
    abuse: VecDeque<Instant>,
    /// The outbound queue and the joined rooms, shared with this thread's
    /// fan-out worker.
    conn: Rc<Conn>,
    resume: Option<PendingResume>,
    /// The close code this connection ends with, for the metrics.
    close_code: u16,
    /// Set once a close frame was queued; nothing more is written.
    closing: bool,
}

impl WsSession {
    pub(super) fn new(shared: Arc<WsShared>, identity: Identity, conn: Rc<Conn>) -> Self {
        let s = &shared.settings;
        let bucket = Bucket {
            tokens: s.rate_burst,
            rate: s.rate_per_sec,
            burst: s.rate_burst,
            last: Instant::now(),
        };
        Self {
            id: format!("{:032x}", rand::random::<u128>()).into(),
            user: identity.user.clone().into(),
            identity,
            last_heard: Instant::now(),
            bucket,
            abuse: VecDeque::new(),
            conn,
            resume: None,
            close_code: close::ABNORMAL,
            closing: false,
            shared,
        }
    }

    fn member(&self) -> Member {
        Member {
            session: self.id.clone(),
            user: self.user.clone(),
            inbox: self.conn.inbox(),
        }
    }

    /// Queues a JSON frame, with `id` when the request had one, unless the
    /// connection is closing; past the outbound queue's bounds the
    /// connection closes with 1013 (see [`Overflowed`]).
    fn send_json(
        &mut self,
        _ctx: &mut ws::WebsocketContext<Self>,
        frame: Value,
        id: Option<Value>,
    ) {
        if !self.closing {
            self.conn.push_json(frame, id);
        }
    }

    /// The one place an `error` frame is built.
    fn error(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<Value>,
        code: &str,
        message: impl Into<String>,
    ) {
        self.send_json(
            ctx,
            json!({"type": "error", "code": code, "message": message.into()}),
            id,
        );
    }

    fn close(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: u16, reason: &str) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.close_code = code;
        self.conn.close(code, reason);
        ctx.stop();
    }

    /// Awaits a room request: success goes to `then`; a failure (the hub is
    /// restarting) becomes the `unavailable` error frame, here and nowhere else.
    fn on_room<T: 'static>(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        request: impl std::future::Future<Output = Result<T, RoomError>> + 'static,
        id: Option<Value>,
        unavailable: &'static str,
        then: impl FnOnce(&mut Self, &mut ws::WebsocketContext<Self>, T, Option<Value>) + 'static,
    ) {
        ctx.spawn(actix::fut::wrap_future(request).map(
            move |res, act: &mut Self, ctx| match res {
                Ok(value) => then(act, ctx, value, id),
                Err(_) => act.error(ctx, id, code::UNAVAILABLE, unavailable),
            },
        ));
    }

    /// Rate limit; repeated abuse closes with 1008. Answers whether the frame may proceed.
    fn admit(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: &str) -> bool {
        let now = Instant::now();
        if self.bucket.take(now) {
            return true;
        }
        self.shared.metrics.rate_limited.inc();
        let window = Duration::from_millis(self.shared.settings.abuse_window_ms);
        while self
            .abuse
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.abuse.pop_front();
        }
        self.abuse.push_back(now);
        if self.abuse.len() >= self.shared.settings.abuse_limit as usize {
            self.close(ctx, close::POLICY, "rate limit exceeded repeatedly");
        } else {
            let id = serde_json::from_str::<IdOnly>(text)
                .ok()
                .and_then(|r| valid_id(r.id));
            self.error(
                ctx,
                id,
                code::RATE_LIMITED,
                "over the per-connection message rate; the frame was dropped",
            );
        }
        false
    }

    fn handle_text(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: &str) {
        let req: Request<'_> = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(e) if e.is_data() => {
                return self.error(
                    ctx,
                    None,
                    code::BAD_REQUEST,
                    "a frame must be a JSON object",
                );
            }
            Err(e) => return self.error(ctx, None, code::BAD_REQUEST, format!("not JSON: {e}")),
        };
        let id = match &req.id {
            None | Some(Value::Null) => None,
            Some(v) => match valid_id(Some(v.clone())) {
                Some(id) => Some(id),
                None => {
                    return self.error(
                        ctx,
                        None,
                        code::BAD_REQUEST,
                        "`id` must be an integer or a string",
                    )
                }
            },
        };
        let Some(kind) = req.kind.as_ref().and_then(Value::as_str) else {
            return self.error(ctx, id, code::BAD_REQUEST, "missing string field `type`");
        };
        match kind {
            "ping" => self.send_json(ctx, json!({"type": "pong"}), id),
            "join" => {
                let Some(room) = self.room_arg(ctx, &req.room, &id) else {
                    return;
                };
                if !auth::room_allowed(self.identity.rooms.as_deref(), &room) {
                    return self.error(
                        ctx,
                        id,
                        code::FORBIDDEN,
                        format!("your token does not allow room '{room}'"),
                    );
                }
                // `joined` itself comes through the room's event channel.
                let fut = self.shared.rooms.join(&room, self.member(), id.clone());
                self.on_room(ctx, fut, id, RESTARTING, |_, _, (), _| {});
            }
            "leave" => {
                let Some(room) = self.room_arg(ctx, &req.room, &id) else {
                    return;
                };
                if self.conn.leave(&room) {
                    self.shared.rooms.leave(&room, &self.id);
                }
                self.send_json(ctx, json!({"type": "left", "room": room}), id);
            }
            "publish" => self.publish(ctx, &req, id),
            "presence" => {
                let Some(room) = self.room_arg(ctx, &req.room, &id) else {
                    return;
                };
                let fut = self.shared.rooms.presence(&room);
                self.on_room(ctx, fut, id, RESTARTING, move |act, ctx, members, id| {
                    let frame = json!({"type": "presence", "room": room, "members": members});
                    act.send_json(ctx, frame, id);
                });
            }
            "resume" => self.resume(ctx, &req, id),
            other => {
                let other = other.chars().take(64).collect::<String>();
                self.error(
                    ctx,
                    id,
                    code::BAD_REQUEST,
                    format!("unknown type '{other}'"),
                )
            }
        }
    }

    /// The `room` field, validated; answers the error itself when it is not.
    fn room_arg(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        room: &Option<Value>,
        id: &Option<Value>,
    ) -> Option<String> {
        let Some(room) = room.as_ref().and_then(Value::as_str) else {
            self.error(
                ctx,
                id.clone(),
                code::BAD_REQUEST,
                "missing string field `room`",
            );
            return None;
        };
        if !valid_room(room) {
            self.error(
                ctx,
                id.clone(),
                code::INVALID_ROOM,
                "a room name is 1 to 128 bytes of [A-Za-z0-9_.:-], optionally after a leading '$'",
            );
            return None;
        }
        Some(room.to_owned())
    }

    fn publish(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        req: &Request<'_>,
        id: Option<Value>,
    ) {
        let Some(room) = self.room_arg(ctx, &req.room, &id) else {
            return;
        };
        let Some(data) = req.data else {
            return self.error(ctx, id, code::BAD_REQUEST, "missing field `data`");
        };
        let s = &self.shared.settings;
        if data.get().len() > s.max_data_bytes {
            let limit = s.max_data_bytes;
            return self.error(
                ctx,
                id,
                code::TOO_LARGE,
                format!("`data` is over {limit} bytes"),
            );
        }
        if room.starts_with('$') {
            return self.error(
                ctx,
                id,
                code::FORBIDDEN,
                format!("'{room}' is a read-only system room"),
            );
        }
        if !auth::room_allowed(self.identity.rooms.as_deref(), &room) {
            return self.error(
                ctx,
                id,
                code::FORBIDDEN,
                format!("your token does not allow room '{room}'"),
            );
        }
        let open = s
            .publish_without_join
            .iter()
            .any(|p| room.starts_with(p.as_str()));
        if !open && !self.conn.in_room(&room) {
            return self.error(
                ctx,
                id,
                code::NOT_MEMBER,
                format!("join room '{room}' before publishing to it"),
            );
        }
        let fut = self
            .shared
            .rooms
            .publish(&room, self.user.clone(), data.to_owned());
        let unpublished = "the room service is restarting; the message was not published; retry";
        self.on_room(ctx, fut, id, unpublished, move |act, ctx, offset, id| {
            act.send_json(
                ctx,
                json!({"type": "ack", "room": room, "offset": offset}),
                id,
            );
        });
    }

    fn resume(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        req: &Request<'_>,
        id: Option<Value>,
    ) {
        if self.resume.is_some() {
            return self.error(
                ctx,
                id,
                code::BAD_REQUEST,
                "a resume is already in progress",
            );
        }
        let Some(session) = req
            .session
            .as_ref()
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return self.error(ctx, id, code::BAD_REQUEST, "missing string field `session`");
        };
        let Some(rooms) = req.rooms.as_ref().and_then(Value::as_object) else {
            return self.error(
                ctx,
                id,
                code::BAD_REQUEST,
                "missing object field `rooms` ({room: last_offset_seen})",
            );
        };
        if rooms.len() > MAX_RESUME_ROOMS {
            return self.error(
                ctx,
                id,
                code::BAD_REQUEST,
                format!("at most {MAX_RESUME_ROOMS} rooms per resume"),
            );
        }
        let epochs = match req.epochs.as_ref() {
            None | Some(Value::Null) => None,
            Some(Value::Object(e)) => Some(e),
            Some(_) => {
                return self.error(
                    ctx,
                    id,
                    code::BAD_REQUEST,
                    "`epochs` must be an object {room: epoch}",
                )
            }
        };
        let mut wanted = Vec::with_capacity(rooms.len());
        for (room, offset) in rooms {
            let Some(after) = offset.as_u64() else {
                return self.error(
                    ctx,
                    id,
                    code::BAD_REQUEST,
                    format!("rooms.{room} must be a non-negative integer offset"),
                );
            };
            if !valid_room(room) {
                return self.error(
                    ctx,
                    id,
                    code::INVALID_ROOM,
                    format!("'{room}' is not a valid room name"),
                );
            }
            if !auth::room_allowed(self.identity.rooms.as_deref(), room) {
                return self.error(
                    ctx,
                    id,
                    code::FORBIDDEN,
                    format!("your token does not allow room '{room}'"),
                );
            }
            let epoch = match epochs.and_then(|e| e.get(room)) {
                None | Some(Value::Null) => None,
                Some(Value::String(e)) => Some(e.clone()),
                Some(_) => {
                    return self.error(
                        ctx,
                        id,
                        code::BAD_REQUEST,
                        format!("epochs.{room} must be a string"),
                    )
                }
            };
            wanted.push((room.clone(), after, epoch));
        }
        match self.shared.sessions.get(&session) {
            Some(old) => self.resume_as(ctx, Some(old), wanted, id),
            None => {
                // Not in this node's memory: perhaps created on another node
                // sharing the database. Meanwhile a second resume is refused.
                self.resume = Some(PendingResume {
                    id: id.clone(),
                    waiting: wanted.len(),
                    rooms: serde_json::Map::new(),
                });
                let fetch = self.shared.sessions.clone().fetch(session);
                ctx.spawn(
                    actix::fut::wrap_future(fetch).map(move |old, act: &mut Self, ctx| {
                        act.resume = None;
                        act.resume_as(ctx, old, wanted, id);
                    }),
                );
            }
        }
    }

    /// The rest of a `resume`: adopts `old` when this client may have it,
    /// then re-joins the `wanted` rooms, each replaying what followed its offset.
    fn resume_as(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        old: Option<SessionRecord>,
        wanted: Vec<(String, u64, Option<String>)>,
        id: Option<Value>,
    ) {
        if let Some(old) = old {
            if self.identity.authenticated && old.user != *self.user {
                return self.error(
                    ctx,
                    id,
                    code::FORBIDDEN,
                    "that session belongs to another user",
                );
            }
            if *self.id != *old.id {
                self.shared.connections.deregister(&self.id);
                self.shared.sessions.remove(&self.id);
                for room in self.conn.joined() {
                    self.conn.leave(&room);
                    self.shared.rooms.leave(&room, &self.id);
                }
                self.id = old.id.clone().into();
                self.user = old.user.clone().into();
                self.shared.sessions.attach(&self.id);
                self.shared
                    .connections
                    .register(self.id.clone(), ctx.address().recipient());
            }
        }
        if wanted.is_empty() {
            return self.send_json(
                ctx,
                json!({"type": "resumed", "session": &*self.id, "rooms": {}}),
                id,
            );
        }
        self.resume = Some(PendingResume {
            id: id.clone(),
            waiting: wanted.len(),
            rooms: serde_json::Map::new(),
        });
        for (room, after, epoch) in wanted {
            self.conn.join(&room.as_str().into(), after);
            let fut = self.shared.rooms.resume(&room, self.member(), after, epoch);
            let id = id.clone();
            ctx.spawn(
                actix::fut::wrap_future(fut).map(move |res, act: &mut Self, ctx| {
                    if res.is_err() && act.resume.take().is_some() {
                        act.error(
                            ctx,
                            id,
                            code::UNAVAILABLE,
                            format!(
                                "the room service is restarting (room '{room}'); retry the resume"
                            ),
                        );
                    }
                }),
            );
        }
    }

    /// The hubs' events reach the connection through its worker (see
    /// `fanout`); the worker hands over only `Replayed`, which ends a resume.
    fn on_room_event(&mut self, ctx: &mut ws::WebsocketContext<Self>, event: RoomEvent) {
        let RoomEvent::Replayed {
            room,
            replayed,
            complete,
            epoch,
            ..
        } = event
        else {
            return;
        };
        let Some(pending) = self.resume.as_mut() else {
            return;
        };
        pending.rooms.insert(
            room.to_string(),
            json!({"replayed": replayed, "complete": complete, "epoch": &*epoch}),
        );
        pending.waiting -= 1;
        if pending.waiting == 0 {
            if let Some(done) = self.resume.take() {
                let frame = json!({"type": "resumed", "session": &*self.id, "rooms": done.rooms});
                self.send_json(ctx, frame, done.id);
            }
        }
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    /// Registers the connection, sends `welcome`, starts the heartbeat and
    /// the token-expiry timer. Cannot fail.
    fn started(&mut self, ctx: &mut Self::Context) {
        self.conn.attach(ctx.address());
        let shared = self.shared.clone();
        shared
            .connections
            .register(self.id.clone(), ctx.address().recipient());
        shared.sessions.create(&self.id, &self.user);
        shared.metrics.connections.inc();
        shared.metrics.connects.inc();
        let s = &shared.settings;
        self.send_json(
            ctx,
            json!({"type": "welcome", "session": &*self.id, "user": &*self.user,
                   "heartbeat_ms": s.heartbeat_ms, "max_frame_bytes": s.max_frame_bytes}),
            None,
        );
        let beat = Duration::from_millis(s.heartbeat_ms);
        ctx.run_interval(beat, move |act, ctx| {
            if act.last_heard.elapsed() > beat * 2 {
                tracing::info!(session = %act.id, "no frame or pong for 2 heartbeats; dropping the client");
                act.close_code = close::ABNORMAL;
                ctx.stop();
            } else {
                act.conn.control(OpCode::Ping, b"");
            }
        });
        if let Some(exp) = self.identity.expires_at {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            ctx.run_later(Duration::from_secs(exp.saturating_sub(now)), |act, ctx| {
                act.close(ctx, close::POLICY, "token expired");
            });
        }
    }
}

impl Drop for WsSession {
    /// Runs however the connection ended (close, lost client, panic):
    /// releases its rooms and registration and detaches its session.
    fn drop(&mut self) {
        let shared = &self.shared;
        self.conn.disconnect();
        let rooms: BTreeMap<String, u64> = self.conn.offsets();
        for room in rooms.keys() {
            shared.rooms.leave(room, &self.id);
        }
        shared.sessions.detach(&self.id, rooms);
        shared.connections.deregister(&self.id);
        shared.metrics.connections.dec();
        shared
            .metrics
            .disconnects
            .with_label_values(&[&self.close_code.to_string()])
            .inc();
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for WsSession {
    fn handle(&mut self, item: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        let msg = match item {
            Ok(msg) => msg,
            Err(ProtocolError::Overflow) => {
                return self.close(ctx, close::TOO_BIG, "frame over max_frame_bytes");
            }
            Err(e) => {
                tracing::debug!(session = %self.id, error = %e, "WebSocket protocol error");
                return self.close(ctx, close::PROTOCOL_ERROR, "protocol error");
            }
        };
        let metrics = &self.shared.metrics;
        match msg {
            ws::Message::Text(text) => {
                metrics.frames_in.inc();
                metrics.bytes_in.inc_by(text.len() as u64);
                if self.admit(ctx, &text) {
                    self.handle_text(ctx, &text);
                }
            }
            ws::Message::Binary(bin) => {
                metrics.frames_in.inc();
                metrics.bytes_in.inc_by(bin.len() as u64);
                self.error(
                    ctx,
                    None,
                    code::UNSUPPORTED,
                    "binary frames are not supported; send JSON text frames",
                );
            }
            ws::Message::Continuation(_) => {
                self.error(
                    ctx,
                    None,
                    code::UNSUPPORTED,
                    "fragmented frames are not supported",
                );
            }
            ws::Message::Ping(p) => self.conn.control(OpCode::Pong, &p),
            ws::Message::Pong(_) | ws::Message::Nop => {}
            ws::Message::Close(reason) => {
                self.close_code = reason
                    .as_ref()
                    .map(|r| u16::from(r.code))
                    .unwrap_or(close::NORMAL);
                self.closing = true;
                self.conn.echo_close(reason);
                ctx.stop();
            }
        }
    }

    /// The client's side of the socket ended.
    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<RoomEvent> for WsSession {
    type Result = ();

    fn handle(&mut self, event: RoomEvent, ctx: &mut Self::Context) {
        self.on_room_event(ctx, event);
    }
}

impl Handler<Drain> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Drain, ctx: &mut Self::Context) {
        self.send_json(
            ctx,
            json!({"type": "draining", "reconnect_after_ms": msg.reconnect_after_ms}),
            None,
        );
        self.close(
            ctx,
            close::GOING_AWAY,
            "server shutting down; reconnect and resume",
        );
    }
}

/// The outbound queue overflowed: its close frame (1013) is queued already.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Overflowed;

impl Handler<Overflowed> for WsSession {
    type Result = ();

    fn handle(&mut self, _: Overflowed, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        let (bytes, messages) = self.conn.depth();
        self.shared.metrics.slow_consumers.inc();
        tracing::warn!(session = %self.id, user = %self.user, queued_bytes = bytes,
            queued_messages = messages, "slow consumer; closing with 1013");
        self.closing = true;
        self.close_code = close::TRY_AGAIN_LATER;
        ctx.stop();
    }
}

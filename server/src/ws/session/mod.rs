//! The session actor: one per connection.
//!
//! Files: here the actor, its state, its lifecycle (start, heartbeat, drop)
//! and the dispatch of client frames; `requests` (join, publish, history),
//! `resume`, and `application` (room and RPC handlers).

mod application;
pub(crate) mod fragments;
mod requests;
mod resume;

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::OpCode;
use actix_web_actors::ws::{self, ProtocolError};
use serde_json::value::RawValue;
use serde_json::Value;
use tracing::field::Empty;
use tracing::Span;

use holdfast_actors::connections::{Disconnect, Drain, Link, Registration, Slot};
use holdfast_actors::rooms::{JoinAnswer, LeaveAnswer, Member, RoomError, RoomEvent};
use holdfast_actors::sessions::SessionRecord;

use fragments::{Assembled, Fragments};
use resume::PendingResume;

use super::admission::{Admission, Verdict};
use super::fanout::Conn;
use super::protocol::{
    close, code, nesting_within, ClientFrame, Id, Replay, ResumeRoom, ServerFrame, MAX_DATA_DEPTH,
    RESTARTING,
};
use super::WsShared;
use crate::auth::{self, Identity};
use crate::handlers::{
    Accept, Caller, Failure, JoinRequest, LeaveNotice, Namespace, PublishRequest, Rejection, Rpc,
};

/// When a request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Already: a reply or an error is queued.
    Now,
    /// Once a room hub (or the session store) has answered.
    Later,
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
    /// Flood control: which frames are handled.
    admission: Admission,
    /// Requests of this connection waiting on a room hub (or the session
    /// store); a hub request that arrives while this is 0 is free of the
    /// rate limit (see `admission`). `leave` is not counted: its answer
    /// comes from the hub through the worker.
    in_flight: u32,
    /// The outbound queue and the joined rooms, shared with this thread's
    /// fan-out worker.
    conn: Rc<Conn>,
    resume: Option<PendingResume>,
    /// The close code this connection ends with, for the metrics.
    close_code: u16,
    /// Set once a close frame was queued; nothing more is written.
    closing: bool,
    /// This connection's entry in the live-connections registry.
    registration: Option<Registration>,
    /// The session was ended (a `forget` disconnect): not kept for `resume`.
    forget: bool,
    /// A message arriving in fragments.
    fragments: Fragments,
    /// The connection's `ws.session` span, the parent of its requests'
    /// (see [`crate::telemetry`]); it ends with the connection.
    trace: Span,
    /// Its place under `max_connections`, given back when it ends.
    _slot: Slot,
}

impl WsSession {
    pub(super) fn new(
        shared: Arc<WsShared>,
        identity: Identity,
        conn: Rc<Conn>,
        slot: Slot,
    ) -> Self {
        let id: Arc<str> = format!("{:032x}", rand::random::<u128>()).into();
        // The child of the upgrade request's span, current here.
        let trace = tracing::info_span!(
            target: crate::telemetry::TARGET,
            "ws.session",
            otel.kind = "server",
            session = %id,
            session.resumed = Empty,
            ws.close_code = Empty,
        );
        Self {
            id,
            user: identity.user.clone().into(),
            identity,
            last_heard: Instant::now(),
            admission: Admission::new(&shared.settings, Instant::now()),
            in_flight: 0,
            conn,
            resume: None,
            close_code: close::ABNORMAL,
            closing: false,
            registration: None,
            forget: false,
            fragments: Fragments::default(),
            trace,
            _slot: slot,
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

    /// Queues a server frame, with `id` when the request had one, unless the
    /// connection is closing; past the outbound queue's bounds the
    /// connection closes with 1013 (see [`Overflowed`]).
    fn reply(&mut self, frame: &ServerFrame<'_>, id: Option<&Id>) {
        if !self.closing {
            self.conn.push_reply(frame, id);
        }
    }

    /// The one place an `error` frame is built.
    fn error(&mut self, id: Option<Id>, code: &str, message: impl AsRef<str>) {
        let frame = ServerFrame::Error {
            code,
            message: message.as_ref(),
        };
        self.reply(&frame, id.as_ref());
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
        id: Option<Id>,
        unavailable: &'static str,
        then: impl FnOnce(&mut Self, T, Option<Id>) + 'static,
    ) {
        self.in_flight += 1;
        ctx.spawn(
            actix::fut::wrap_future(request).map(move |res, act: &mut Self, _| {
                act.in_flight -= 1;
                match res {
                    Ok(value) => then(act, value, id),
                    Err(_) => act.error(id, code::UNAVAILABLE, unavailable),
                }
            }),
        );
    }

    /// Registers this connection as the one holding its session.
    fn register(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let link = Link {
            user: self.user.clone(),
            drain: ctx.address().recipient(),
            disconnect: ctx.address().recipient(),
        };
        self.registration = Some(self.shared.connections.register(self.id.clone(), link));
    }

    /// Removes this connection's registration; a newer connection that
    /// resumed the session keeps its own. Answers whether this connection
    /// still held the session.
    fn deregister(&mut self) -> bool {
        match self.registration.take() {
            Some(registration) => self.shared.connections.deregister(&self.id, registration),
            None => false,
        }
    }

    /// One text frame: parsed, admitted by flood control, then handled.
    fn on_text(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: &str) {
        let parsed = ClientFrame::parse(text);
        let free = self.in_flight == 0 && matches!(&parsed, Ok((_, f)) if f.waits_on_hub());
        match self.admission.admit(Instant::now(), free) {
            Verdict::Admit => {}
            Verdict::Limited => {
                self.shared.metrics.rate_limited.inc();
                let id = match parsed {
                    Ok((id, _)) => id,
                    Err(refused) => refused.id,
                };
                return self.error(
                    id,
                    code::RATE_LIMITED,
                    "over the per-connection message rate; the frame was dropped",
                );
            }
            Verdict::Abuse => {
                self.shared.metrics.rate_limited.inc();
                return self.close(ctx, close::POLICY, "rate limit exceeded repeatedly");
            }
        }
        let (id, frame) = match parsed {
            Ok(parsed) => parsed,
            Err(refused) => return self.error(refused.id, refused.code, refused.message),
        };
        if self.handle_frame(ctx, id, frame) == Answer::Now && free {
            // Refused at once (not a member, too large, ...): it pays after all.
            self.admission.charge(Instant::now());
        }
    }

    /// A binary message: `unsupported`, within the rate limit that every
    /// frame pays (past it dropped, and repeated abuse closes with 1008).
    fn refuse_binary(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        match self.admission.admit(Instant::now(), false) {
            Verdict::Admit => self.error(
                None,
                code::UNSUPPORTED,
                "binary frames are not supported; send JSON text frames",
            ),
            Verdict::Limited => self.shared.metrics.rate_limited.inc(),
            Verdict::Abuse => {
                self.shared.metrics.rate_limited.inc();
                self.close(ctx, close::POLICY, "rate limit exceeded repeatedly");
            }
        }
    }

    fn handle_frame(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<Id>,
        frame: ClientFrame<'_>,
    ) -> Answer {
        match frame {
            ClientFrame::Ping => {
                self.reply(&ServerFrame::Pong, id.as_ref());
                Answer::Now
            }
            ClientFrame::Join { room } => {
                if !auth::allowed(self.identity.rooms.as_deref(), &room) {
                    return self.forbidden_room(id, &room);
                }
                self.if_may_join(ctx, room, id, |act, ctx, room, data, id| {
                    act.join(ctx, room, JoinAnswer { id, data });
                })
            }
            ClientFrame::Leave { room } => {
                // Nothing of the room reaches the client from here on; the
                // hub removes the membership after any `join` sent before,
                // and `left` comes through the room's event channel.
                let was_member = self.conn.in_room(&room);
                self.conn.leave(&room);
                let answer = Some(LeaveAnswer { id: id.clone() });
                match self.shared.rooms.leave(&room, self.member(), answer) {
                    Ok(()) => {
                        if was_member {
                            self.tell_left(&room, false);
                        }
                        Answer::Later
                    }
                    Err(_) => self.refuse(id, code::UNAVAILABLE, RESTARTING),
                }
            }
            ClientFrame::Publish { room, data } => self.publish(ctx, room, data, id),
            ClientFrame::Presence { room } => {
                if !auth::allowed(self.identity.rooms.as_deref(), &room) {
                    return self.forbidden_room(id, &room);
                }
                if !self.namespace(&room).settings.presence {
                    return self.refuse(
                        id,
                        code::FORBIDDEN,
                        format!("presence is off for room '{room}'"),
                    );
                }
                let fut = self.shared.rooms.presence(&room);
                self.on_room(ctx, fut, id, RESTARTING, move |act, members, id| {
                    let frame = ServerFrame::Presence {
                        room: &room,
                        members: &members,
                    };
                    act.reply(&frame, id.as_ref());
                });
                Answer::Later
            }
            ClientFrame::Resume { session, rooms } => self.resume(ctx, session, rooms, id),
            ClientFrame::Rpc { method, data } => self.rpc(ctx, method, data, id),
            ClientFrame::History { room, since, limit } => {
                if !auth::allowed(self.identity.rooms.as_deref(), &room) {
                    return self.forbidden_room(id, &room);
                }
                // Readable by whoever may join: the room's handler decides.
                self.if_may_join(ctx, room, id, move |act, ctx, room, _, id| {
                    act.history(ctx, room, since, limit, id);
                })
            }
        }
    }

    /// Answers an `error` at once.
    fn refuse(&mut self, id: Option<Id>, code: &str, message: impl AsRef<str>) -> Answer {
        self.error(id, code, message);
        Answer::Now
    }

    fn forbidden_room(&mut self, id: Option<Id>, room: &str) -> Answer {
        self.refuse(
            id,
            code::FORBIDDEN,
            format!("your token does not allow room '{room}'"),
        )
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    /// Registers the connection, sends `welcome`, starts the heartbeat and
    /// the token-expiry timer. Cannot fail.
    fn started(&mut self, ctx: &mut Self::Context) {
        self.conn.attach(ctx.address());
        let shared = self.shared.clone();
        self.register(ctx);
        shared.sessions.create(&self.id, &self.user);
        if self.identity.authenticated {
            shared.online.attach(&self.user, &self.id);
        }
        shared.metrics.connections.inc();
        shared.metrics.connects.inc();
        let s = &shared.settings;
        let welcome = ServerFrame::Welcome {
            session: &self.id,
            user: &self.user,
            heartbeat_ms: s.heartbeat_ms,
            max_frame_bytes: s.max_frame_bytes,
        };
        self.conn.push_reply(&welcome, None);
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
            let now = holdfast_actors::clock::now_unix_secs();
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
        // Another connection that resumed the session holds it now: the
        // session stays attached to that one.
        let held = self.deregister();
        let shared = &self.shared;
        self.conn.disconnect();
        let rooms: BTreeMap<String, u64> = self.conn.offsets();
        for room in rooms.keys() {
            // A hub that is restarting drops the membership in its next
            // prune: this connection is gone.
            let _ = shared.rooms.leave(room, self.member(), None);
            self.tell_left(room, true);
        }
        if held && !self.forget {
            shared.sessions.detach(&self.id, rooms);
        }
        if held && self.identity.authenticated {
            match self.forget {
                true => shared.online.end(&self.user, &self.id),
                false => shared.online.detach(&self.user, &self.id),
            }
        }
        shared.metrics.connections.dec();
        self.trace.record("ws.close_code", self.close_code);
        shared
            .metrics
            .disconnects
            .with_label_values(&[&close_label(self.close_code)])
            .inc();
    }
}

/// The `code` label of a close: the protocol's codes as they are, the
/// ranges a client or an application may choose from as one label each, so
/// that no client can add series at will.
fn close_label(code: u16) -> String {
    match code {
        1000..=1015 => code.to_string(),
        3000..=3999 => "3xxx".into(),
        4000..=4999 => "4xxx".into(),
        _ => "other".into(),
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
            Err(e) if fragments::not_utf8(&e) => {
                return self.close(ctx, close::INVALID_PAYLOAD, "text is not UTF-8");
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
                self.on_text(ctx, &text);
            }
            ws::Message::Binary(bin) => {
                metrics.frames_in.inc();
                metrics.bytes_in.inc_by(bin.len() as u64);
                self.refuse_binary(ctx);
            }
            ws::Message::Continuation(item) => {
                let max = self.shared.settings.max_frame_bytes;
                match self.fragments.push(item, max) {
                    Assembled::Pending => {}
                    Assembled::Text(text) => {
                        metrics.frames_in.inc();
                        metrics.bytes_in.inc_by(text.len() as u64);
                        self.on_text(ctx, &text);
                    }
                    Assembled::Binary => self.refuse_binary(ctx),
                    Assembled::TooBig => {
                        self.close(ctx, close::TOO_BIG, "message over max_frame_bytes")
                    }
                    Assembled::NotUtf8 => {
                        self.close(ctx, close::INVALID_PAYLOAD, "text is not UTF-8")
                    }
                }
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

    fn handle(&mut self, event: RoomEvent, _ctx: &mut Self::Context) {
        self.on_room_event(event);
    }
}

impl Handler<Drain> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Drain, ctx: &mut Self::Context) {
        let frame = ServerFrame::Draining {
            reconnect_after_ms: msg.reconnect_after_ms,
        };
        self.reply(&frame, None);
        self.close(
            ctx,
            close::GOING_AWAY,
            "server shutting down; reconnect and resume",
        );
    }
}

impl Handler<Disconnect> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, ctx: &mut Self::Context) {
        tracing::info!(session = %self.id, user = %self.user, code = msg.code, "disconnected by the application");
        if msg.forget {
            // Before the close reaches the client, so that no resume of it
            // can succeed any more.
            self.forget = true;
            self.shared.sessions.remove(&self.id);
        }
        self.close(ctx, msg.code, &msg.reason);
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

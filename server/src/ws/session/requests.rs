//! The room requests: `join`, `publish` and `history` (through the room's
//! handler when its namespace has one), and the checks of `data`.

use super::application::raw;
use super::*;

impl WsSession {
    pub(super) fn history(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        room: String,
        since: u64,
        limit: usize,
        id: Option<Id>,
    ) -> Answer {
        let fut = self.shared.rooms.history(&room, since, limit);
        self.on_room(ctx, fut, id, RESTARTING, move |act, page, id| {
            let frame = ServerFrame::History {
                room: &room,
                epoch: &page.epoch,
                messages: &page.messages,
                complete: page.complete,
            };
            act.reply(&frame, id.as_ref());
        });
        Answer::Later
    }

    /// Joins `room` through its hub; `joined` comes through the room's
    /// event channel.
    pub(super) fn join(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        room: String,
        answer: JoinAnswer,
    ) -> Answer {
        let id = answer.id.clone();
        let fut = self.shared.rooms.join(&room, self.member(), answer);
        self.on_room(ctx, fut, id, RESTARTING, |_, (), _| {});
        Answer::Later
    }

    /// Checks a request's `data`: size, then nesting.
    pub(super) fn check_data(&mut self, id: &Option<Id>, data: &RawValue) -> Result<(), Answer> {
        let limit = self.shared.settings.max_data_bytes;
        if data.get().len() > limit {
            let message = format!("`data` is over {limit} bytes");
            return Err(self.refuse(id.clone(), code::TOO_LARGE, message));
        }
        if !nesting_within(data.get(), MAX_DATA_DEPTH) {
            let message = format!("`data` nests deeper than {MAX_DATA_DEPTH} arrays or objects");
            return Err(self.refuse(id.clone(), code::BAD_REQUEST, message));
        }
        Ok(())
    }

    pub(super) fn publish(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        room: String,
        data: &RawValue,
        id: Option<Id>,
    ) -> Answer {
        if let Err(answer) = self.check_data(&id, data) {
            return answer;
        }
        if !auth::allowed(self.identity.rooms.as_deref(), &room) {
            return self.forbidden_room(id, &room);
        }
        let namespace = self.namespace(&room);
        if !namespace.settings.client_publish {
            let message = if room.starts_with('$') {
                format!("'{room}' is a read-only system room")
            } else {
                format!("clients may not publish to room '{room}'")
            };
            return self.refuse(id, code::FORBIDDEN, message);
        }
        let handler = namespace.handler.clone();
        let open = self
            .shared
            .settings
            .publish_without_join
            .iter()
            .any(|p| room.starts_with(p.as_str()));
        if !open && !self.conn.in_room(&room) {
            return self.refuse(
                id,
                code::NOT_MEMBER,
                format!("join room '{room}' before publishing to it"),
            );
        }
        let Some(handler) = handler else {
            return self.publish_now(ctx, room, data.to_owned(), id);
        };
        let request = PublishRequest {
            room: room.clone(),
            data: data.to_owned(),
            caller: self.caller(),
        };
        let deadline = self.shared.application.deadline;
        let call = async move {
            let request_data = request.data.clone();
            handler
                .publish
                .call(request, deadline)
                .await
                .map(|answer| answer.map(|accept| raw(accept).unwrap_or(request_data)))
        };
        self.on_handler(ctx, call, id, move |act, ctx, data, id| {
            act.publish_now(ctx, room, data, id);
        });
        Answer::Later
    }

    /// Publishes through the room's hub; answers `ack` with the offset.
    pub(super) fn publish_now(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        room: String,
        data: Box<RawValue>,
        id: Option<Id>,
    ) -> Answer {
        if self.shared.connections.is_draining() {
            return self.refuse(
                id,
                code::UNAVAILABLE,
                "the server is shutting down; the message was not published: publish it again once reconnected",
            );
        }
        let trace = tracing::info_span!(
            target: crate::telemetry::TARGET,
            parent: &self.trace,
            "ws.publish",
            room = %room,
            offset = tracing::field::Empty,
        );
        // The hub's spans are children of this one, which ends with the ack.
        let fut = trace.in_scope(|| self.shared.rooms.publish(&room, self.user.clone(), data));
        let unpublished = "the room service is restarting; the message was not published; retry";
        self.on_room(ctx, fut, id, unpublished, move |act, position, id| {
            trace.record("offset", position.offset);
            act.reply(
                &ServerFrame::Ack {
                    room: &room,
                    offset: position.offset,
                },
                id.as_ref(),
            );
        });
        Answer::Later
    }
}

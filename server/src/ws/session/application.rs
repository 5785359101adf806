//! The session's side of the application layer: who it is to a handler,
//! its rooms' namespace, calls to room and RPC handlers with their
//! deadline, and how a handler's refusal or failure reaches the client.

use super::*;

impl WsSession {
    /// Who this session is, for a handler.
    pub(super) fn caller(&self) -> Caller {
        Caller {
            session: self.id.clone(),
            user: self.user.clone(),
            claims: self.identity.claims.clone(),
        }
    }

    /// The namespace of `room`.
    pub(super) fn namespace(&self, room: &str) -> &Namespace {
        self.shared.application.namespaces.of(room)
    }

    /// Awaits a handler's answer: an acceptance goes to `then`; a
    /// rejection, a timeout or a handler that is down becomes the `error`
    /// frame, here and nowhere else.
    pub(super) fn on_handler<T: 'static>(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        call: impl std::future::Future<Output = Result<Result<T, Rejection>, Failure>> + 'static,
        id: Option<Id>,
        then: impl FnOnce(&mut Self, &mut ws::WebsocketContext<Self>, T, Option<Id>) + 'static,
    ) {
        self.in_flight += 1;
        ctx.spawn(
            actix::fut::wrap_future(call).map(move |res, act: &mut Self, ctx| {
                act.in_flight -= 1;
                match res {
                    Ok(Ok(value)) => then(act, ctx, value, id),
                    Ok(Err(rejection)) => act.rejected(id, &rejection),
                    Err(failure) => act.failed(id, failure),
                }
            }),
        );
    }

    /// Runs `then` once this session may join `room`: at once in a room
    /// without a handler, else after the handler accepted (with the `data`
    /// it answered, if any); its refusal or failure is the answer.
    pub(super) fn if_may_join(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        room: String,
        id: Option<Id>,
        then: impl FnOnce(
                &mut Self,
                &mut ws::WebsocketContext<Self>,
                String,
                Option<Box<RawValue>>,
                Option<Id>,
            ) + 'static,
    ) -> Answer {
        let Some(handler) = self.namespace(&room).handler.clone() else {
            then(self, ctx, room, None, id);
            return Answer::Later;
        };
        let request = JoinRequest {
            room: room.clone(),
            caller: self.caller(),
        };
        let deadline = self.shared.application.deadline;
        let call = async move { handler.join.call(request, deadline).await };
        self.on_handler(ctx, call, id, move |act, ctx, accept, id| {
            then(act, ctx, room, raw(accept), id);
        });
        Answer::Later
    }

    /// A handler that did not answer, as the client sees it.
    pub(super) fn failed(&mut self, id: Option<Id>, failure: Failure) {
        match failure {
            Failure::Timeout => self.error(
                id,
                code::TIMEOUT,
                "the handler did not answer in time; the request may or may not have taken effect",
            ),
            Failure::Unavailable => {
                self.error(id, code::UNAVAILABLE, "the handler is restarting; retry")
            }
        }
    }

    /// A handler's rejection, as the client sees it.
    pub(super) fn rejected(&mut self, id: Option<Id>, rejection: &Rejection) {
        let code = rejection.wire_code();
        if code != rejection.code() {
            tracing::warn!(session = %self.id, code = rejection.code(),
                "a handler rejected with a code the protocol does not allow; the client gets {code}");
        }
        self.error(id, code, rejection.message());
    }

    /// Tells the room's handler, if it has one, that this session left it.
    pub(super) fn tell_left(&self, room: &str, disconnected: bool) {
        if let Some(handler) = &self.namespace(room).handler {
            handler.leave.tell(LeaveNotice {
                room: room.to_owned(),
                caller: self.caller(),
                disconnected,
            });
        }
    }

    pub(super) fn rpc(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        method: String,
        data: Option<&RawValue>,
        id: Option<Id>,
    ) -> Answer {
        if !auth::allowed(self.identity.rpc.as_deref(), &method) {
            return self.refuse(
                id,
                code::FORBIDDEN,
                format!("your token does not allow method '{method}'"),
            );
        }
        let Some(handler) = self.shared.application.rpc.route(&method).cloned() else {
            return self.refuse(
                id,
                code::UNKNOWN_METHOD,
                format!("no handler serves method '{method}'"),
            );
        };
        let data = match data {
            None => Value::Null,
            Some(raw) => {
                if let Err(answer) = self.check_data(&id, raw) {
                    return answer;
                }
                match serde_json::from_str(raw.get()) {
                    Ok(value) => value,
                    Err(e) => return self.refuse(id, code::BAD_REQUEST, format!("`data`: {e}")),
                }
            }
        };
        let request = Rpc {
            method,
            data,
            caller: self.caller(),
        };
        let deadline = self.shared.application.deadline;
        let call = async move { handler.call(request, deadline).await };
        self.on_handler(ctx, call, id, |act, _, data, id| {
            act.reply(&ServerFrame::Reply { data: &data }, id.as_ref());
        });
        Answer::Later
    }
}

/// What an acceptance puts in place of the client's `data`, if anything.
pub(super) fn raw(accept: Accept) -> Option<Box<RawValue>> {
    match accept {
        Accept::AsSent => None,
        // A `Value` always serializes (its map keys are strings).
        Accept::With(value) => serde_json::value::to_raw_value(&value).ok(),
    }
}

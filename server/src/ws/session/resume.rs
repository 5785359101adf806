//! `resume`: the handler checks of the rooms, finding the session (in
//! memory, else in the database), adopting it and re-joining its rooms with
//! their replay; the end of each room's replay.

use super::*;

/// A `resume` waiting for the hubs' `Replayed`.
pub(super) struct PendingResume {
    id: Option<Id>,
    waiting: usize,
    rooms: BTreeMap<String, Replay>,
}

impl WsSession {
    pub(super) fn resume(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        session: String,
        wanted: Vec<ResumeRoom>,
        id: Option<Id>,
    ) -> Answer {
        if self.resume.is_some() {
            return self.refuse(id, code::BAD_REQUEST, "a resume is already in progress");
        }
        if let Some(r) = wanted
            .iter()
            .find(|r| !auth::allowed(self.identity.rooms.as_deref(), &r.room))
        {
            let room = r.room.clone();
            return self.forbidden_room(id, &room);
        }
        // Rooms under a handler are joined again only if it still agrees.
        let caller = self.caller();
        let deadline = self.shared.application.deadline;
        let checks: Vec<_> = wanted
            .iter()
            .filter_map(|r| {
                let handler = self.namespace(&r.room).handler.clone()?;
                let request = JoinRequest {
                    room: r.room.clone(),
                    caller: caller.clone(),
                };
                Some(async move { handler.join.call(request, deadline).await })
            })
            .collect();
        if checks.is_empty() {
            return self.resume_checked(ctx, session, wanted, id);
        }
        // Meanwhile a second resume is refused.
        self.resume = Some(PendingResume {
            id: id.clone(),
            waiting: wanted.len(),
            rooms: BTreeMap::new(),
        });
        let all = async move {
            for answer in futures::future::join_all(checks).await {
                match answer {
                    Ok(Ok(_)) => {}
                    Ok(Err(rejection)) => return Err(Ok(rejection)),
                    Err(failure) => return Err(Err(failure)),
                }
            }
            Ok::<(), Result<Rejection, Failure>>(())
        };
        self.in_flight += 1;
        ctx.spawn(
            actix::fut::wrap_future(all).map(move |res, act: &mut Self, ctx| {
                act.in_flight -= 1;
                act.resume = None;
                match res {
                    Ok(()) => {
                        act.resume_checked(ctx, session, wanted, id);
                    }
                    Err(Ok(rejection)) => act.rejected(id, &rejection),
                    Err(Err(failure)) => act.failed(id, failure),
                }
            }),
        );
        Answer::Later
    }

    /// A `resume` whose rooms the token and the handlers allow: finds the
    /// session (in memory, else in the database), then adopts it.
    pub(super) fn resume_checked(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        session: String,
        wanted: Vec<ResumeRoom>,
        id: Option<Id>,
    ) -> Answer {
        match self.shared.sessions.get(&session) {
            Some(old) => self.resume_as(ctx, Some(old), wanted, id),
            None => {
                // Not in this node's memory: perhaps created on another node
                // sharing the database. Meanwhile a second resume is refused.
                self.resume = Some(PendingResume {
                    id: id.clone(),
                    waiting: wanted.len(),
                    rooms: BTreeMap::new(),
                });
                let fetch = self.shared.sessions.clone().fetch(session);
                self.in_flight += 1;
                ctx.spawn(
                    actix::fut::wrap_future(fetch).map(move |old, act: &mut Self, ctx| {
                        act.in_flight -= 1;
                        act.resume = None;
                        act.resume_as(ctx, old, wanted, id);
                    }),
                );
                Answer::Later
            }
        }
    }

    /// The rest of a `resume`: adopts `old` when this client may have it,
    /// then re-joins the `wanted` rooms, each replaying what followed its offset.
    pub(super) fn resume_as(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        old: Option<SessionRecord>,
        wanted: Vec<ResumeRoom>,
        id: Option<Id>,
    ) -> Answer {
        if let Some(old) = old {
            if self.identity.authenticated && old.user != *self.user {
                return self.refuse(id, code::FORBIDDEN, "that session belongs to another user");
            }
            // Attached before anything else changes: a session forgotten
            // since it was looked up (evicted past session.max_detached, or
            // ended by the application) is not resumed; the client keeps
            // the session it has.
            if *self.id != *old.id && self.shared.sessions.attach(&old.id).is_some() {
                self.deregister();
                if self.identity.authenticated {
                    // The same user: the old session first, so that they
                    // never look offline in between.
                    let old_id: Arc<str> = old.id.as_str().into();
                    self.shared.online.attach(&self.user, &old_id);
                    self.shared.online.end(&self.user, &self.id);
                }
                self.shared.sessions.remove(&self.id);
                for room in self.conn.joined() {
                    self.conn.leave(&room);
                    self.tell_left(&room, false);
                    // A hub that is restarting drops the membership once it
                    // sees this connection gone.
                    let _ = self.shared.rooms.leave(&room, self.member(), None);
                }
                self.id = old.id.clone().into();
                self.trace.record("session.resumed", &*self.id);
                self.user = old.user.clone().into();
                self.register(ctx);
            }
        }
        if wanted.is_empty() {
            let session = self.id.clone();
            let frame = ServerFrame::Resumed {
                session: &session,
                rooms: &BTreeMap::new(),
            };
            self.reply(&frame, id.as_ref());
            return Answer::Now;
        }
        self.resume = Some(PendingResume {
            id: id.clone(),
            waiting: wanted.len(),
            rooms: BTreeMap::new(),
        });
        for ResumeRoom { room, after, epoch } in wanted {
            self.conn.join(&room.as_str().into(), after);
            let fut = self.shared.rooms.resume(&room, self.member(), after, epoch);
            let id = id.clone();
            self.in_flight += 1;
            ctx.spawn(
                actix::fut::wrap_future(fut).map(move |res, act: &mut Self, _| {
                    act.in_flight -= 1;
                    if res.is_err() && act.resume.take().is_some() {
                        act.error(
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
        Answer::Later
    }

    /// The hubs' events reach the connection through its worker (see
    /// `fanout`); the worker hands over only `Replayed`, which ends a resume.
    pub(super) fn on_room_event(&mut self, event: RoomEvent) {
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
            Replay {
                replayed,
                complete,
                epoch: epoch.to_string(),
            },
        );
        pending.waiting -= 1;
        if pending.waiting == 0 {
            if let Some(done) = self.resume.take() {
                let session = self.id.clone();
                let frame = ServerFrame::Resumed {
                    session: &session,
                    rooms: &done.rooms,
                };
                self.reply(&frame, done.id.as_ref());
            }
        }
    }
}

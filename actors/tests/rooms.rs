//! How room hubs reach their members, through the public `Rooms` handle and
//! real hubs: an actor member gets every event in its mailbox; an outlet
//! (what the WebSocket transport is, one per HTTP worker thread) gets each
//! of a room's messages once however many members it serves, and each of
//! its members' own events (joined, replay, replayed) in order with them.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use holdfast_actors::connections::Connections;
use holdfast_actors::rooms::{
    HistoryLimits, Inbox, JoinAnswer, Member, Outlet, RoomConfig, RoomEvent, Rooms,
};
use holdfast_actors::supervision::{Intensity, SupervisorSpec};
use holdfast_actors::Tree;
use parking_lot::Mutex;
use serde_json::value::RawValue;

use common::{kernel, wait_until, wait_until_async, DEADLINE};

/// What an outlet was handed, in order: `B <offset>` for a broadcast,
/// `<slot> joined <offset>`, `<slot> message <offset>`, `<slot> replayed <n> <complete>`.
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<String>>,
}

impl Recorder {
    fn log(&self) -> Vec<String> {
        self.log.lock().clone()
    }
}

fn describe(event: &RoomEvent) -> String {
    match event {
        RoomEvent::Message { offset, .. } => format!("message {offset}"),
        RoomEvent::Joined { offset, .. } => format!("joined {offset}"),
        RoomEvent::Left { room, .. } => format!("left {room}"),
        RoomEvent::Presence { room, .. } => format!("presence {room}"),
        RoomEvent::Epoch { room, offset, .. } => format!("epoch {room} {offset}"),
        RoomEvent::Replayed {
            replayed, complete, ..
        } => format!("replayed {replayed} {complete}"),
    }
}

impl Outlet for Recorder {
    fn broadcast(&self, room: &Arc<str>, offset: u64, frame: &ByteString, _: Option<Instant>) {
        assert!(frame.contains(&format!("\"offset\":{offset}")), "{frame}");
        self.log.lock().push(format!("B {room} {offset}"));
    }

    fn direct(&self, slot: u64, event: RoomEvent) {
        self.log.lock().push(format!("{slot} {}", describe(&event)));
    }

    fn connected(&self, _slot: u64) -> bool {
        true
    }
}

/// An actor member: records its events.
struct Listener(Arc<Mutex<Vec<String>>>);

impl Actor for Listener {
    type Context = Context<Self>;
}

impl Handler<RoomEvent> for Listener {
    type Result = ();

    fn handle(&mut self, event: RoomEvent, _: &mut Context<Self>) {
        self.0.lock().push(describe(&event));
    }
}

fn member(session: &str, user: &str, inbox: Inbox) -> Member {
    Member {
        session: session.into(),
        user: user.into(),
        inbox,
    }
}

/// Two hub shards under a `rooms` supervisor; answers once they take requests.
async fn start_rooms() -> (Tree, Rooms) {
    let (kernel, _control) = kernel();
    let config = RoomConfig::uniform(HistoryLimits {
        size: 100,
        max_age: Duration::from_secs(60),
    });
    let rooms = Rooms::new(2, config, &prometheus::Registry::new(), None).unwrap();
    let spec = rooms.spec(
        &[],
        Intensity::default(),
        Default::default(),
        &Connections::new(),
    );
    let tree = Tree::start(&kernel, SupervisorSpec::new("root").child(spec)).unwrap();
    let r = rooms.clone();
    wait_until_async(DEADLINE, "the hubs answer", || {
        let r = r.clone();
        async move { r.presence("lobby").await.is_ok() }
    })
    .await;
    (tree, rooms)
}

async fn publish(rooms: &Rooms, room: &str, n: u64) -> u64 {
    let data = RawValue::from_string(n.to_string()).unwrap();
    rooms.publish(room, "u".into(), data).await.unwrap().offset
}

#[actix_rt::test]
async fn an_outlet_gets_each_message_once_however_many_members_it_serves() {
    let (_tree, rooms) = start_rooms().await;
    let outlet = Arc::new(Recorder::default());
    let on_outlet = |slot: u64| Inbox::Outlet {
        outlet: outlet.clone(),
        slot,
    };
    for slot in 1..=3 {
        let who = format!("s{slot}");
        rooms
            .join(
                "lobby",
                member(&who, "u", on_outlet(slot)),
                JoinAnswer::default(),
            )
            .await
            .unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = Listener(seen.clone()).start();
    rooms
        .join(
            "lobby",
            member("a", "v", Inbox::Actor(listener.recipient())),
            JoinAnswer::default(),
        )
        .await
        .unwrap();
    for n in 1..=3 {
        assert_eq!(publish(&rooms, "lobby", n).await, n);
    }
    // Publish answers once the hub handed the message on.
    assert_eq!(
        outlet.log(),
        [
            "1 joined 0",
            "2 joined 0",
            "3 joined 0",
            "B lobby 1",
            "B lobby 2",
            "B lobby 3"
        ]
    );
    wait_until(DEADLINE, "the actor member got every event", || {
        seen.lock().len() == 4
    })
    .await;
    assert_eq!(
        *seen.lock(),
        ["joined 0", "message 1", "message 2", "message 3"]
    );
    let presence = rooms.presence("lobby").await.unwrap();
    let users: Vec<(String, usize)> = presence.into_iter().map(|p| (p.user, p.sessions)).collect();
    assert_eq!(users, [("u".to_owned(), 3), ("v".to_owned(), 1)]);

    // While one of its members stays, the outlet still gets each message once.
    rooms
        .leave("lobby", member("s1", "u", on_outlet(1)), None)
        .unwrap();
    rooms
        .leave("lobby", member("s2", "u", on_outlet(2)), None)
        .unwrap();
    publish(&rooms, "lobby", 4).await;
    assert_eq!(outlet.log().last().unwrap(), "B lobby 4");
    // Without members it gets nothing; the actor member still does.
    rooms
        .leave("lobby", member("s3", "u", on_outlet(3)), None)
        .unwrap();
    let before = outlet.log().len();
    publish(&rooms, "lobby", 5).await;
    assert_eq!(outlet.log().len(), before, "{:?}", outlet.log());
    wait_until(DEADLINE, "the actor member got message 5", || {
        seen.lock().last().is_some_and(|e| e == "message 5")
    })
    .await;
}

#[actix_rt::test]
async fn a_resume_through_an_outlet_replays_to_that_member_alone_then_broadcasts() {
    let (_tree, rooms) = start_rooms().await;
    let outlet = Arc::new(Recorder::default());
    rooms
        .join(
            "news",
            member(
                "s1",
                "u",
                Inbox::Outlet {
                    outlet: outlet.clone(),
                    slot: 1,
                },
            ),
            JoinAnswer::default(),
        )
        .await
        .unwrap();
    for n in 1..=4 {
        publish(&rooms, "news", n).await;
    }
    let resumed = member(
        "s2",
        "u",
        Inbox::Outlet {
            outlet: outlet.clone(),
            slot: 2,
        },
    );
    rooms.resume("news", resumed, 2, None).await.unwrap();
    publish(&rooms, "news", 5).await;
    assert_eq!(
        outlet.log(),
        [
            "1 joined 0",
            "B news 1",
            "B news 2",
            "B news 3",
            "B news 4",
            "2 message 3",
            "2 message 4",
            "2 replayed 2 true",
            "B news 5",
        ]
    );
}

/// A room restored from a shutdown checkpoint has neither members nor
/// history, yet it must keep its epoch while sessions may still resume into
/// it: a hub that prunes (here: restarted, as every hub prunes when it
/// starts) keeps it, and its next message continues the offsets.
#[actix_rt::test]
async fn a_restored_room_survives_pruning_while_sessions_may_resume() {
    let (_tree, rooms) = start_rooms().await;
    assert_eq!(
        rooms.restore(
            [("orders".to_owned(), "e-restored".to_owned(), 41)],
            Duration::from_secs(60)
        ),
        1
    );
    rooms.crash(0);
    rooms.crash(1);
    let r = rooms.clone();
    wait_until_async(DEADLINE, "the hubs answer again", || {
        let r = r.clone();
        async move { r.presence("lobby").await.is_ok() }
    })
    .await;
    let data = RawValue::from_string("1".into()).unwrap();
    let position = rooms.publish("orders", "u".into(), data).await.unwrap();
    assert_eq!(
        (&*position.epoch, position.offset),
        ("e-restored", 42),
        "the restored epoch continues"
    );
}

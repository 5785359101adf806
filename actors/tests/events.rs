//! Event bus guarantees: supervision events reach subscribers and the ring
//! of recent events, and nothing published while the bus actor is down is
//! lost.

mod common;

use std::sync::Arc;

use common::*;
use holdfast_actors::events::{Envelope, Event};
use holdfast_actors::supervision::{Strategy, SupervisorSpec};
use holdfast_actors::{KernelSettings, Tree};
use tokio::sync::mpsc::Receiver;

/// The next event the subscriber receives, within the deadline.
async fn next(rx: &mut Receiver<Arc<Envelope>>) -> Arc<Envelope> {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("an event arrives in time")
        .expect("the bus keeps the subscriber")
}

/// Receives until an event that is not an `ActorStarted` arrives: the
/// start-up events are not what these scenarios are about.
async fn next_after_startup(rx: &mut Receiver<Arc<Envelope>>) -> Arc<Envelope> {
    loop {
        let envelope = next(rx).await;
        if !matches!(envelope.event, Event::ActorStarted { .. }) {
            return envelope;
        }
    }
}

fn custom(topic: &str) -> Event {
    Event::Custom {
        topic: topic.into(),
        data: serde_json::Value::Null,
    }
}

/// A child's panic reaches subscribers as `ActorFailed` then
/// `ActorRestarted`, and `recent` returns the same envelopes.
#[actix_rt::test]
async fn a_child_panic_is_published_as_actor_failed_then_actor_restarted() {
    let (kernel, _control) = kernel();
    let mut rx = kernel.events.subscribe(64);
    let probe = Probe::new();
    let w = worker("w", &probe);
    let child = w.child_ref();
    let bus = kernel.events.spec();
    let bus_ref = bus.child_ref();
    let _tree = Tree::start(&kernel, SupervisorSpec::new("root").child(bus).child(w)).unwrap();
    running(&bus_ref).await;
    let addr = running(&child).await;

    addr.do_send(Boom);

    let failed = next_after_startup(&mut rx).await;
    let Event::ActorFailed {
        actor,
        supervisor,
        reason,
    } = &failed.event
    else {
        panic!("expected ActorFailed, got {failed:?}");
    };
    assert_eq!((actor.as_str(), supervisor.as_str()), ("w", "root"));
    assert!(reason.contains("boom in w"), "reason: {reason}");
    let restarted = next(&mut rx).await;
    assert_eq!(
        restarted.event,
        Event::ActorRestarted {
            actor: "w".into(),
            supervisor: "root".into(),
            restarts: 1
        }
    );
    assert!(restarted.seq > failed.seq);

    let recent = kernel.events.recent(2);
    assert_eq!(recent, [failed, restarted]);
    let all = kernel.events.recent(1000);
    assert!(
        all.windows(2).all(|w| w[0].seq < w[1].seq),
        "oldest first, in publish order"
    );
    assert!(all.iter().any(|e| e.event
        == Event::ActorStarted {
            actor: "w".into(),
            supervisor: "root".into()
        }));
}

/// When the bus actor itself is restarted (one-for-all with a crashing
/// sibling), what is published while it is down is delivered, in order, by
/// its next incarnation.
#[actix_rt::test]
async fn events_published_while_the_bus_restarts_are_delivered_by_its_next_incarnation() {
    let (kernel, _control) = kernel();
    let mut rx = kernel.events.subscribe(64);
    let probe = Probe::new();
    let w = worker("w", &probe);
    let child = w.child_ref();
    let bus = kernel.events.spec();
    let bus_ref = bus.child_ref();
    // `w` first: the group restarts it, and publishes that, before the bus
    // is started again.
    let spec = SupervisorSpec::new("root")
        .strategy(Strategy::OneForAll)
        .child(w)
        .child(bus);
    let _tree = Tree::start(&kernel, spec).unwrap();
    let bus_before = running(&bus_ref).await;
    running(&child).await.do_send(Boom);

    let failed = next_after_startup(&mut rx).await;
    assert!(
        matches!(&failed.event, Event::ActorFailed { actor, .. } if actor == "w"),
        "{failed:?}"
    );
    // Published after the old bus stopped and before the new one started: it
    // arrives only if the bus kept it meanwhile.
    let w_back = next(&mut rx).await;
    assert_eq!(
        w_back.event,
        Event::ActorRestarted {
            actor: "w".into(),
            supervisor: "root".into(),
            restarts: 1
        }
    );
    let bus_back = next(&mut rx).await;
    assert_eq!(
        bus_back.event,
        Event::ActorRestarted {
            actor: "events".into(),
            supervisor: "root".into(),
            restarts: 1
        }
    );
    assert!(
        bus_ref.addr().is_some_and(|a| a != bus_before),
        "a new bus incarnation delivered them"
    );
    assert_eq!(kernel.events.recent(3), [failed, w_back, bus_back]);
}

/// Events published while the bus actor is out of the tree wait, and are
/// delivered once it is back.
#[actix_rt::test]
async fn events_published_while_the_bus_is_down_are_delivered_when_it_is_back() {
    let (kernel, _control) = kernel();
    let mut rx = kernel.events.subscribe(64);
    let bus = kernel.events.spec();
    let bus_ref = bus.child_ref();
    let tree = Tree::start(&kernel, SupervisorSpec::new("root").child(bus)).unwrap();
    running(&bus_ref).await;

    tree.remove_child(tree.root(), "events").await.unwrap();
    assert!(bus_ref.addr().is_none(), "the bus actor is down");
    kernel.events.publish(custom("while-down-1"));
    kernel.events.publish(custom("while-down-2"));
    assert!(
        !kernel
            .events
            .recent(1000)
            .iter()
            .any(|e| matches!(&e.event, Event::Custom { .. })),
        "nothing delivers while the bus is down"
    );
    tree.add_child(tree.root(), kernel.events.spec())
        .await
        .unwrap();

    assert_eq!(
        next_after_startup(&mut rx).await.event,
        custom("while-down-1")
    );
    assert_eq!(next(&mut rx).await.event, custom("while-down-2"));
    kernel.events.publish(custom("after"));
    assert_eq!(
        next_after_startup(&mut rx).await.event,
        custom("after"),
        "the bus works normally again"
    );
}

/// The ring keeps only the newest `event_capacity` events, oldest first.
#[actix_rt::test]
async fn recent_returns_at_most_the_newest_events_oldest_first() {
    let settings = KernelSettings {
        event_capacity: 4,
        ..KernelSettings::default()
    };
    let (kernel, _control) = kernel_with(settings);
    let bus = kernel.events.spec();
    let bus_ref = bus.child_ref();
    let _tree = Tree::start(&kernel, SupervisorSpec::new("root").child(bus)).unwrap();
    running(&bus_ref).await;

    for i in 0..10 {
        kernel.events.publish(custom(&format!("e{i}")));
    }
    wait_until(DEADLINE, "the last event is delivered", || {
        kernel
            .events
            .recent(1)
            .first()
            .is_some_and(|e| e.event == custom("e9"))
    })
    .await;

    let topics: Vec<Event> = kernel
        .events
        .recent(100)
        .iter()
        .map(|e| e.event.clone())
        .collect();
    assert_eq!(topics, ["e6", "e7", "e8", "e9"].map(custom));
    assert_eq!(kernel.events.recent(2).len(), 2);
}

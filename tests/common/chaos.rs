//! Chaos under load, shared by `tests/chaos.rs` (bounded) and
//! `benches/chaos.rs` (longer): subscribers and acknowledged publishers
//! across several rooms on one or more nodes, while a crasher makes every
//! actor of every node panic in turn through the admin API's chaos route;
//! then what each client really received, checked against what was
//! acknowledged.
//!
//! The rules it checks, per room and member (PROTOCOL.md):
//! - every message acknowledged to a publisher on the member's node reaches
//!   it once; one acknowledged on another node too, unless it was
//!   acknowledged while the nodes could not share (a Redis outage, when
//!   rooms are node-local), or on its way to this node when Redis died (see
//!   [`Owed`]);
//! - within one epoch offsets rise by exactly one (a join or an `epoch`
//!   frame starts a run), and one publisher's messages arrive in the order
//!   of their acknowledgements;
//! - no client is disconnected.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::ws::{connect, Client};

/// How much load, for how long.
#[derive(Clone, Debug)]
pub struct Plan {
    pub rooms: usize,
    /// Members that only listen, per room and node.
    pub subscribers: usize,
    /// Publishers per room and node (each also a member).
    pub publishers: usize,
    /// Pause between one publisher's acknowledged publishes.
    pub publish_every: Duration,
    pub duration: Duration,
    /// Pause after a crashed actor is healthy again, before the next crash.
    pub crash_pause: Duration,
    /// Which actors to crash; empty: every one but the root.
    pub actors: Vec<String>,
}

/// One node under test: where its clients connect and its admin token.
#[derive(Clone)]
pub struct Node {
    pub addr: SocketAddr,
    pub admin_token: String,
}

/// What the run measured; `failures()` lists what broke a rule.
#[derive(Debug, Default)]
pub struct Figures {
    pub crashes: u64,
    pub publishes: u64,
    pub acked: u64,
    /// Publishes answered with an error (`unavailable` while a hub
    /// restarts): not accepted, so not owed to anyone.
    pub refused: u64,
    pub refused_codes: HashMap<String, u64>,
    /// Publishes never answered within 10 s.
    pub unanswered: u64,
    /// Messages received by members, in all.
    pub delivered: u64,
    /// Acknowledged messages some member owed them never received.
    pub lost: u64,
    pub duplicated: u64,
    /// One publisher's messages received out of acknowledgement order.
    pub reordered: u64,
    /// Offsets that did not follow the previous one within an epoch.
    pub gaps: u64,
    /// Gaps in an epoch that was then lost, before its `epoch` frame (not owed).
    pub gaps_in_lost_epochs: u64,
    pub epoch_frames: u64,
    pub disconnected: u64,
    /// Cross-node deliveries on their way when Redis died (not owed).
    pub in_flight_at_outage: u64,
    pub members: u64,
    pub elapsed: Duration,
    pub examples: Vec<String>,
}

impl Figures {
    /// What broke a rule, one line each (empty: the run held).
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (what, n) in [
            ("acknowledged messages lost", self.lost),
            ("messages duplicated", self.duplicated),
            ("messages reordered", self.reordered),
            ("offset gaps within an epoch", self.gaps),
            ("clients disconnected", self.disconnected),
            ("publishes never answered", self.unanswered),
        ] {
            if n > 0 {
                out.push(format!("{n} {what}"));
            }
        }
        if self.acked == 0 {
            out.push("nothing was acknowledged".into());
        }
        out
    }

    pub fn print(&self, label: &str) {
        println!(
            "{label}: {:.1} s, {} crashes, {} members, {} publishes: {} acked, {} refused {:?}, {} unanswered; \
             {} delivered; lost {}, duplicated {}, reordered {}, gaps {} (+{} in lost epochs), epoch frames {}, disconnected {}, \
             in flight to another node when Redis died {}",
            self.elapsed.as_secs_f64(),
            self.crashes,
            self.members,
            self.publishes,
            self.acked,
            self.refused,
            self.refused_codes,
            self.unanswered,
            self.delivered,
            self.lost,
            self.duplicated,
            self.reordered,
            self.gaps,
            self.gaps_in_lost_epochs,
            self.epoch_frames,
            self.disconnected,
            self.in_flight_at_outage,
        );
        for e in self.examples.iter().take(10) {
            println!("  {e}");
        }
    }
}

/// A message as acknowledged: who, which one, where, when.
#[derive(Clone, Debug)]
struct Acked {
    node: usize,
    at: Instant,
}

/// What a member saw, in order.
#[derive(Debug)]
enum Seen {
    /// A run of offsets starts after this one (join or `epoch` frame).
    Run(u64),
    Message {
        offset: u64,
        key: String,
    },
}

struct Member {
    node: usize,
    room: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    closed: Arc<AtomicBool>,
}

/// The shared record of a run.
#[derive(Default)]
struct Ledger {
    /// (room, key) → acknowledgement.
    acked: Mutex<HashMap<(String, String), Acked>>,
    publishes: AtomicU64,
    refused: Mutex<HashMap<String, u64>>,
    unanswered: AtomicU64,
    /// (when, node, actor) of each crash.
    crash_log: Mutex<Vec<(Instant, usize, String)>>,
}

fn room_name(i: usize) -> String {
    format!("chaos-{i}")
}

/// Runs `plan` against `nodes`; `during` runs beside the load (a Redis
/// outage, say) and answers the window during which cross-node delivery is
/// not owed, if any.
pub async fn run<F, Fut>(nodes: &[Node], plan: &Plan, during: F) -> Figures
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Option<(Instant, Instant)>>,
{
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    // Members first, so that each sees every message published after.
    let mut members = Vec::new();
    let mut tasks = Vec::new();
    for room in (0..plan.rooms).map(room_name) {
        for (node, n) in nodes.iter().enumerate() {
            for _ in 0..plan.subscribers + plan.publishers {
                let mut client = connect(n.addr).await;
                let joined = client.join(&room).await;
                let seen = Arc::new(Mutex::new(vec![Seen::Run(
                    joined["offset"].as_u64().unwrap_or(0),
                )]));
                let closed = Arc::new(AtomicBool::new(false));
                members.push(Member {
                    node,
                    room: room.clone(),
                    seen: seen.clone(),
                    closed: closed.clone(),
                });
                tasks.push((node, room.clone(), client, seen, closed));
            }
        }
    }
    let mut handles = Vec::new();
    let mut per_room_node: HashMap<(String, usize), usize> = HashMap::new();
    for (index, (node, room, client, seen, closed)) in tasks.into_iter().enumerate() {
        let k = per_room_node.entry((room.clone(), node)).or_default();
        *k += 1;
        let publishes = *k > plan.subscribers;
        let (ledger, stop) = (ledger.clone(), stop.clone());
        let name = format!("p{index}");
        let every = plan.publish_every;
        handles.push(tokio::spawn(async move {
            member(
                client,
                node,
                room,
                seen,
                closed,
                publishes.then_some((name, every)),
                ledger,
                stop,
            )
            .await
        }));
    }

    let crasher = {
        let (nodes, ledger, stop) = (nodes.to_vec(), ledger.clone(), stop.clone());
        let (pause, only) = (plan.crash_pause, plan.actors.clone());
        tokio::spawn(async move { crash_in_turn(&nodes, &only, pause, &ledger, &stop).await })
    };
    let during = during();
    // The load runs for the plan's duration: the drill's length, not a wait.
    let (outage, ()) = futures::join!(during, tokio::time::sleep(plan.duration));
    stop.store(true, Ordering::SeqCst);
    crasher.await.unwrap();

    // Publishers stop; members read what is still owed them (bounded).
    let owed = |m: &Member| owed(m, &ledger, outage);
    let (everyone, owed_to) = (&members, &owed);
    super::eventually(Duration::from_secs(15), move || async move {
        everyone.iter().all(|m| owed_to(m).lost.is_empty())
    })
    .await; // what is still owed then is counted lost below
    let elapsed = started.elapsed();
    for h in handles {
        h.abort();
    }

    let mut f = Figures {
        crashes: ledger.crash_log.lock().unwrap().len() as u64,
        publishes: ledger.publishes.load(Ordering::SeqCst),
        acked: ledger.acked.lock().unwrap().len() as u64,
        refused_codes: ledger.refused.lock().unwrap().clone(),
        unanswered: ledger.unanswered.load(Ordering::SeqCst),
        members: members.len() as u64,
        elapsed,
        ..Figures::default()
    };
    f.refused = f.refused_codes.values().sum();
    for m in &members {
        let Owed { lost, in_flight } = owed(m);
        f.in_flight_at_outage += in_flight as u64;
        if !lost.is_empty() {
            f.examples.push(describe_loss(m, &lost, &ledger, started));
        }
        f.lost += lost.len() as u64;
        if m.closed.load(Ordering::SeqCst) {
            f.disconnected += 1;
            f.examples
                .push(format!("node {} member of {} disconnected", m.node, m.room));
        }
        check_order(m, &mut f);
    }
    f
}

/// What a member is owed and never received.
struct Owed {
    /// Acknowledged messages it should have received, oldest first.
    lost: Vec<String>,
    /// Another node's messages of the epoch Redis lost that had not reached
    /// this member when Redis died: newer than all it had received from
    /// their publisher when it was told of the epoch change. PROTOCOL.md
    /// promises these to no one (Pub/Sub is at most once, and the history
    /// that would fill the gap died with Redis): counted, not owed.
    in_flight: usize,
}

/// Every acknowledged message of `m`'s room is owed to it, except one from
/// another node acknowledged while Redis was down (`outage`, and a second
/// after) or on its way when Redis died.
fn owed(m: &Member, ledger: &Ledger, outage: Option<(Instant, Instant)>) -> Owed {
    let seen = m.seen.lock().unwrap();
    let got: HashSet<&str> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Message { key, .. } => Some(key.as_str()),
            Seen::Run(_) => None,
        })
        .collect();
    // Per publisher, the last message received before the first epoch frame.
    let mut before_epoch: HashMap<&str, u64> = HashMap::new();
    for s in seen.iter().skip(1) {
        match s {
            Seen::Run(_) => break,
            Seen::Message { key, .. } => {
                let (publisher, seq) = split(key);
                let last = before_epoch.entry(publisher).or_default();
                *last = (*last).max(seq);
            }
        }
    }
    let told = seen.iter().skip(1).any(|s| matches!(s, Seen::Run(_)));
    let acked = ledger.acked.lock().unwrap();
    let mut lost: Vec<(&String, Instant)> = Vec::new();
    let mut in_flight = 0;
    for ((room, key), a) in acked.iter() {
        if room != &m.room || got.contains(key.as_str()) {
            continue;
        }
        if let (Some((down, up)), true) = (outage, a.node != m.node) {
            if a.at >= down && a.at <= up + Duration::from_secs(1) {
                continue;
            }
            let (publisher, seq) = split(key);
            if told && a.at < down && before_epoch.get(publisher).is_none_or(|last| seq > *last) {
                in_flight += 1;
                continue;
            }
        }
        lost.push((key, a.at));
    }
    lost.sort_by_key(|(_, at)| *at);
    Owed {
        lost: lost.into_iter().map(|(k, _)| k.clone()).collect(),
        in_flight,
    }
}

/// A publisher's name and sequence number from a message key.
fn split(key: &str) -> (&str, u64) {
    let (publisher, seq) = key.split_once(':').unwrap_or((key, "0"));
    (publisher, seq.parse().unwrap_or(0))
}

/// One line for the report: what `m` missed and the crashes near it.
fn describe_loss(m: &Member, lost: &[String], ledger: &Ledger, started: Instant) -> String {
    let acked = ledger.acked.lock().unwrap();
    let at = |key: &String| acked[&(m.room.clone(), key.clone())].at;
    let first = at(&lost[0]);
    let near: Vec<String> = ledger
        .crash_log
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _, _)| t.max(&first).duration_since(*t.min(&first)) < Duration::from_secs(2))
        .map(|(t, n, a)| format!("{a}@{n} {:.2} s", (*t - started).as_secs_f64()))
        .collect();
    let examples: Vec<String> = lost
        .iter()
        .take(3)
        .map(|k| {
            let a = &acked[&(m.room.clone(), k.clone())];
            format!(
                "{k} (node {}, {:.2} s)",
                a.node,
                (a.at - started).as_secs_f64()
            )
        })
        .collect();
    format!(
        "node {} member of {} missed {} acked, e.g. {examples:?}; crashes near: {near:?}",
        m.node,
        m.room,
        lost.len()
    )
}

/// Counts duplicates, reorderings and gaps in what `m` saw. A gap in a
/// run that an `epoch` frame ended is the protocol's "messages may be
/// missing" (its epoch was lost with Redis): counted apart.
fn check_order(m: &Member, f: &mut Figures) {
    let seen = m.seen.lock().unwrap();
    let last_run = seen.iter().rposition(|s| matches!(s, Seen::Run(_)));
    let mut keys = HashSet::new();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut last_offset = 0;
    for (i, s) in seen.iter().enumerate() {
        match s {
            Seen::Run(offset) => {
                f.epoch_frames += u64::from(i > 0);
                last_offset = *offset;
            }
            Seen::Message { offset, key } => {
                f.delivered += 1;
                if !keys.insert(key.clone()) {
                    f.duplicated += 1;
                    f.examples.push(format!("{} got {key} twice", m.room));
                }
                if *offset != last_offset + 1 {
                    if last_run.is_some_and(|r| i < r) {
                        f.gaps_in_lost_epochs += 1;
                    } else {
                        f.gaps += 1;
                        f.examples.push(format!(
                            "node {} member of {}: offset {offset} after {last_offset}",
                            m.node, m.room
                        ));
                    }
                }
                last_offset = *offset;
                let (publisher, seq) = key.split_once(':').unwrap();
                let seq: u64 = seq.parse().unwrap();
                if let Some(prev) = last_seq.insert(publisher.to_owned(), seq) {
                    if seq < prev {
                        f.reordered += 1;
                        f.examples
                            .push(format!("{} got {publisher}:{seq} after :{prev}", m.room));
                    }
                }
            }
        }
    }
}

/// One member: records what it receives; a publisher also publishes every
/// `every`, one at a time, and records each acknowledgement.
#[allow(clippy::too_many_arguments)]
async fn member(
    client: Client,
    node: usize,
    room: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    closed: Arc<AtomicBool>,
    publisher: Option<(String, Duration)>,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
) {
    let mut ws = client.ws;
    let mut seq = 0u64;
    // The publish awaiting its answer: (id, key, sent at).
    let mut waiting: Option<(u64, String, Instant)> = None;
    let mut next_publish = Instant::now();
    loop {
        if let Some((name, every)) = &publisher {
            if waiting.is_none() && !stop.load(Ordering::SeqCst) && Instant::now() >= next_publish {
                seq += 1;
                let key = format!("{name}:{seq}");
                let frame = json!({"type": "publish", "room": room, "data": key, "id": seq});
                if ws
                    .send(Message::Text(frame.to_string().into()))
                    .await
                    .is_err()
                {
                    closed.store(true, Ordering::SeqCst);
                    return;
                }
                ledger.publishes.fetch_add(1, Ordering::SeqCst);
                waiting = Some((seq, key, Instant::now()));
                next_publish = Instant::now() + *every;
            }
        }
        if let Some((_, _, sent)) = &waiting {
            if sent.elapsed() > Duration::from_secs(10) {
                ledger.unanswered.fetch_add(1, Ordering::SeqCst);
                waiting = None;
            }
        }
        let frame = match tokio::time::timeout(Duration::from_millis(5), ws.next()).await {
            Err(_) => continue,
            Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<Value>(&t).unwrap(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(_) => {
                closed.store(true, Ordering::SeqCst);
                return;
            }
        };
        match frame["type"].as_str() {
            Some("message") if frame["room"] == room.as_str() => {
                seen.lock().unwrap().push(Seen::Message {
                    offset: frame["offset"].as_u64().unwrap(),
                    key: frame["data"].as_str().unwrap_or_default().to_owned(),
                });
            }
            Some("epoch") => {
                seen.lock()
                    .unwrap()
                    .push(Seen::Run(frame["offset"].as_u64().unwrap()));
            }
            Some("ack") => {
                if let Some((_, key, _)) = waiting.take_if(|(id, _, _)| frame["id"] == *id) {
                    ledger.acked.lock().unwrap().insert(
                        (room.clone(), key),
                        Acked {
                            node,
                            at: Instant::now(),
                        },
                    );
                }
            }
            Some("error")
                if waiting
                    .as_ref()
                    .is_some_and(|(id, _, _)| frame["id"] == *id) =>
            {
                waiting = None;
                let code = frame["code"].as_str().unwrap_or("?").to_owned();
                *ledger.refused.lock().unwrap().entry(code).or_default() += 1;
                next_publish = Instant::now() + Duration::from_millis(50);
            }
            _ => {}
        }
    }
}

/// Crashes every actor of every node but the root, in turn, waiting until
/// each is healthy again (and then `pause`) before the next, until `stop`.
async fn crash_in_turn(
    nodes: &[Node],
    only: &[String],
    pause: Duration,
    ledger: &Ledger,
    stop: &AtomicBool,
) {
    let http = reqwest::Client::new();
    let actors = |node: &Node| {
        let req = http
            .get(format!("http://{}/admin/actors", node.addr))
            .bearer_auth(&node.admin_token);
        async move {
            let body: Value = req.send().await.ok()?.json().await.ok()?;
            Some(body["actors"].as_array()?.clone())
        }
    };
    let mut names: Vec<(usize, String)> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for a in actors(node).await.expect("the admin API answers") {
            let name = a["name"].as_str().unwrap().to_owned();
            if a["supervisor"].is_string() && (only.is_empty() || only.contains(&name)) {
                names.push((i, name));
            }
        }
    }
    assert!(!names.is_empty(), "no actor to crash");
    let mut turn = 0;
    while !stop.load(Ordering::SeqCst) {
        let (i, name) = &names[turn % names.len()];
        turn += 1;
        let node = &nodes[*i];
        let before = restarts(&actors(node).await.unwrap_or_default(), name);
        let status = http
            .post(format!("http://{}/admin/actors/{name}/crash", node.addr))
            .bearer_auth(&node.admin_token)
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        if status != 202 {
            continue; // between incarnations (its supervisor restarting): next one
        }
        ledger
            .crash_log
            .lock()
            .unwrap()
            .push((Instant::now(), *i, name.clone()));
        let actors = &actors;
        // Restarted and the tree healthy again (or 20 s: the next crash then
        // lands on a tree still recovering, which the run must survive too).
        super::eventually(Duration::from_secs(20), move || async move {
            let now = actors(node).await.unwrap_or_default();
            restarts(&now, name) > before
                && now
                    .iter()
                    .all(|a| a["status"] == "healthy" || a["status"] == "degraded")
        })
        .await;
        // The pacing of the drill, not a wait for anything.
        tokio::time::sleep(pause).await;
    }
}

fn restarts(actors: &[Value], name: &str) -> u64 {
    actors
        .iter()
        .find(|a| a["name"] == name)
        .and_then(|a| a["restarts"].as_u64())
        .unwrap_or(0)
}

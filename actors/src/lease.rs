//! The `lease` actor and the [`Lease`] handle: which node runs the services
//! that must run on one node at a time (trending, printers, files), so that
//! a feed is polled once and `$trending` gets each change once, however
//! many nodes serve the system rooms.
//!
//! Owns: the claim on one Redis key, `<prefix>:lease:services`, holding the
//! leader's node id with a TTL (`redis.lease_ttl_ms`). Every third of the
//! TTL the actor renews it when this node holds it, or takes it when nobody
//! does (`SET NX PX`); another node therefore takes over within one TTL of
//! the holder's death. Without Redis there is one node, and it holds the
//! lease from the start ([`Lease::single`]).
//!
//! While Redis cannot be reached, a node keeps what it had: the holder
//! keeps running the services (its clients still get updates, on a
//! node-local epoch) and the others stay standby. If Redis is unreachable
//! only from the holder, the others take over after the TTL and two nodes
//! run the services until the holder reaches Redis again and finds the
//! lease taken; they never share a room meanwhile, since the holder's rooms
//! are node-local while it cannot reach Redis.
//!
//! A graceful stop releases the lease, so that another node takes over at
//! its next claim (a third of the TTL) instead of after the TTL.
//!
//! Services ask [`Lease::held`] before each round of work and report
//! [`Lease::describe`] in their health (`role`, `leader`, `node`).
//! Restart policy: permanent, non-critical, stage `storage`. Lost on a
//! crash: nothing; the state is in the handle, and the next incarnation
//! renews on its first tick.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use parking_lot::Mutex;
use tracing::{info, warn};

use crate::health::{Health, HealthReply};
use crate::redis::Redis;
use crate::shutdown::Stage;
use crate::supervision::{Child, ChildSpec};

/// Renews the lease when `ARGV[1]` holds it, takes it when nobody does;
/// answers the holder.
const CLAIM_LUA: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return holder
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return holder
"#;

/// Gives the lease up if `ARGV[1]` holds it (a graceful stop), so that
/// another node takes over at its next claim instead of after the TTL.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Who runs the single-node services. Cheap to clone. See the module docs.
#[derive(Clone)]
pub struct Lease {
    inner: Arc<Inner>,
}

struct Inner {
    /// This node's id.
    node: String,
    /// The shared Redis; `None`: this node alone, always the holder.
    cluster: Option<Redis>,
    /// How long a claim lasts without renewal.
    ttl: Duration,
    claim: redis::Script,
    release: redis::Script,
    /// Whether this node holds the lease.
    held: AtomicBool,
    /// The holder, as last seen in Redis.
    holder: Mutex<Option<String>>,
}

impl Lease {
    /// One node, no Redis: this node holds the lease for good.
    pub fn single() -> Self {
        Self::build("local".to_owned(), None, Duration::ZERO, true)
    }

    /// A lease shared through `cluster`, lasting `ttl` without renewal.
    pub fn shared(cluster: Redis, ttl: Duration) -> Self {
        let node = cluster.node().to_owned();
        Self::build(node, Some(cluster), ttl, false)
    }

    fn build(node: String, cluster: Option<Redis>, ttl: Duration, held: bool) -> Self {
        let holder = held.then(|| node.clone());
        Self {
            inner: Arc::new(Inner {
                node,
                cluster,
                ttl,
                claim: redis::Script::new(CLAIM_LUA),
                release: redis::Script::new(RELEASE_LUA),
                held: AtomicBool::new(held),
                holder: Mutex::new(holder),
            }),
        }
    }

    /// Whether this node runs the single-node services now.
    pub fn held(&self) -> bool {
        self.inner.held.load(Ordering::SeqCst)
    }

    /// The holder's node id, as last seen (`None` before the first claim).
    pub fn holder(&self) -> Option<String> {
        self.inner.holder.lock().clone()
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// `health` with who leads: `role` (`leader` or `standby`), `leader`
    /// (the holder's node id) and `node` (this node's).
    pub fn describe(&self, health: Health) -> Health {
        let role = if self.held() { "leader" } else { "standby" };
        health
            .with("role", role)
            .with("leader", self.holder())
            .with("node", self.node())
    }

    /// The `lease` actor's spec, when the lease is shared: permanent,
    /// non-critical, stage `storage`.
    pub fn spec(&self) -> Option<ChildSpec<LeaseActor>> {
        self.inner.cluster.as_ref()?;
        let lease = self.clone();
        Some(
            ChildSpec::new("lease", move |_| LeaseActor {
                lease: lease.clone(),
            })
            .critical(false)
            .stage(Stage::Storage),
        )
    }

    /// The lease's key in Redis.
    fn key(cluster: &Redis) -> String {
        format!("{}:lease:services", cluster.prefix())
    }

    /// Gives the lease up, if this node holds it (a graceful stop: the
    /// services stage has stopped already).
    async fn release(self) {
        let Some(cluster) = self.inner.cluster.as_ref() else {
            return;
        };
        if !self.inner.held.swap(false, Ordering::SeqCst) {
            return;
        }
        let mut inv = self.inner.release.prepare_invoke();
        inv.key(Self::key(cluster)).arg(&self.inner.node);
        match cluster.run::<i64>(None, inv).await {
            Ok(_) => info!(node = %self.inner.node, "services lease released"),
            Err(e) => {
                warn!(error = %e, "services lease not released; another node takes over once it expires")
            }
        }
    }

    /// One claim: renew or take the lease; answers the holder.
    async fn claim(self) {
        let Some(cluster) = self.inner.cluster.as_ref() else {
            return;
        };
        let key = Self::key(cluster);
        let mut inv = self.inner.claim.prepare_invoke();
        inv.key(&key)
            .arg(&self.inner.node)
            .arg(self.inner.ttl.as_millis() as u64);
        match cluster.run::<String>(None, inv).await {
            Ok(holder) => {
                let mine = holder == self.inner.node;
                if self.inner.held.swap(mine, Ordering::SeqCst) != mine {
                    if mine {
                        info!(node = %self.inner.node, "services lease taken: this node runs trending, printers and files");
                    } else {
                        warn!(node = %self.inner.node, leader = %holder, "services lease lost: another node runs them now");
                    }
                }
                *self.inner.holder.lock() = Some(holder);
            }
            // Unreachable: keep what we had (see the module docs).
            Err(e) => tracing::debug!(error = %e, "services lease not renewed"),
        }
    }
}

/// See the module docs.
pub struct LeaseActor {
    lease: Lease,
}

impl Actor for LeaseActor {
    type Context = Context<Self>;

    /// Claims now and every third of the TTL. Cannot fail.
    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = (self.lease.inner.ttl / 3).max(Duration::from_millis(10));
        ctx.spawn(self.lease.clone().claim().into_actor(self));
        ctx.run_interval(every, |act, ctx| {
            ctx.spawn(act.lease.clone().claim().into_actor(act));
        });
    }
}

impl Child for LeaseActor {
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        self.lease.describe(Health::healthy()).into()
    }

    /// Releases the lease (one bounded Redis round trip), then stops. A
    /// release that fails leaves the lease to expire.
    fn shutdown(&mut self, ctx: &mut Context<Self>) {
        ctx.wait(
            self.lease
                .clone()
                .release()
                .into_actor(self)
                .map(|_, _, ctx| ctx.stop()),
        );
    }
}

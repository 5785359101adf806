//! [`Disconnects`]: closing a user's connections on every node, for the
//! server API and the application. This node's connections are closed at
//! once; with Redis, the other nodes are told on the channel
//! `<prefix>:control` (`disconnect \n node \n user \n code \n forget \n
//! reason`) and close theirs. A node that does not hear it (its Pub/Sub link
//! is down at that moment) keeps the user's connections there.

use std::sync::Arc;

use tracing::warn;

use crate::connections::Connections;
use crate::redis::{Redis, Subscriber};

/// How a control message starts.
const DISCONNECT: &str = "disconnect";

/// The handle; cheap to clone.
#[derive(Clone)]
pub struct Disconnects {
    connections: Connections,
    /// With Redis: the link and the control channel.
    cluster: Option<(Redis, String)>,
}

impl Disconnects {
    /// Over this node's `connections`, and with `redis` the other nodes'.
    pub fn new(connections: Connections, redis: Option<Redis>) -> Self {
        let cluster = redis.map(|r| {
            let channel = format!("{}:control", r.prefix());
            (r, channel)
        });
        Self {
            connections,
            cluster,
        }
    }

    /// Closes every connection of `user` with `code` and `reason` (and
    /// ends its sessions with `forget`): this node's now, answering how
    /// many; the other nodes' once they hear of it.
    pub fn disconnect_user(&self, user: &str, code: u16, reason: &str, forget: bool) -> usize {
        let here = self.connections.disconnect_user(user, code, reason, forget);
        if let Some((redis, channel)) = &self.cluster {
            let payload = format!(
                "{DISCONNECT}\n{}\n{user}\n{code}\n{}\n{reason}",
                redis.node(),
                u8::from(forget)
            );
            let (redis, channel) = (redis.clone(), channel.clone());
            actix_rt::spawn(async move {
                if let Err(e) = redis.publish(&channel, &payload).await {
                    warn!(error = %e, "the other nodes were not told of a disconnect");
                }
            });
        }
        here
    }

    /// Whether other nodes are told too.
    pub fn cluster_wide(&self) -> bool {
        self.cluster.is_some()
    }

    /// What the `redis` actor feeds with the control channel, with Redis.
    pub fn subscriber(&self) -> Option<Arc<dyn Subscriber>> {
        self.cluster
            .as_ref()
            .map(|_| Arc::new(self.clone()) as Arc<dyn Subscriber>)
    }
}

impl Subscriber for Disconnects {
    fn channel(&self) -> String {
        self.cluster
            .as_ref()
            .map(|(_, channel)| channel.clone())
            .unwrap_or_default()
    }

    /// Another node's disconnect: closes this node's connections of the user.
    fn message(&self, payload: &[u8]) {
        let Some((redis, _)) = &self.cluster else {
            return;
        };
        let text = String::from_utf8_lossy(payload);
        let mut parts = text.splitn(6, '\n');
        let (Some(DISCONNECT), Some(node), Some(user), Some(code), Some(forget), Some(reason)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next().and_then(|c| c.parse::<u16>().ok()),
            parts.next(),
            parts.next(),
        ) else {
            return warn!("a control message that is not a disconnect; ignored");
        };
        if node != redis.node() {
            self.connections
                .disconnect_user(user, code, reason, forget == "1");
        }
    }

    fn subscribed(&self) {}
}

//! A publish on the Redis broker: the script that assigns the offset,
//! stores the message and announces it, and what is done when its answer
//! does not come.
//!
//! A publish that failed before it was sent did not happen, and the hub
//! serves it on a node-local epoch. One that was sent and not answered
//! (Redis slower than the command timeout, the connection cut after the
//! write) may have run: served locally as well, it would reach this node's
//! members twice, now and again when the room reads the shared history
//! back. So every publish carries an id of its own, stored with the message
//! (the stream entry's field `p`), and one left unanswered is sent again,
//! marked as a retry, until Redis answers or [`SETTLE_FOR`] has passed. A
//! retry looks for its id among the room's stored messages first: found,
//! it answers the position the earlier attempt got; not found, it
//! publishes. Every retry rides behind the attempts before it, so that
//! whichever runs first stores the message and the rest find it.
//!
//! What is left: a publish still unanswered after [`SETTLE_FOR`] (Redis
//! unreachable since) is served locally, as before, and if it did run, this
//! node's members get it again once the room is back on Redis; and an
//! attempt held in the network until after a later retry ran would store it
//! twice. Both need Redis to have run a command whose connection then
//! stayed silent for seconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{failed, new_epoch, BrokerError, Inner, Position};

/// Publishes one message: assigns the offset, appends to the stream, trims
/// it, announces it (`node \n room \n epoch \n offset \n user \n data`).
/// A retry (`ARGV[9]` is `1`) first looks for its id (`ARGV[8]`) among
/// the kept messages and answers that message's offset if it is there.
/// Returns `{epoch, offset}`.
pub(super) const PUBLISH_LUA: &str = r#"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
  redis.call('DEL', KEYS[1], KEYS[3])
elseif ARGV[9] == '1' then
  for _, e in ipairs(redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', ARGV[5])) do
    for i = 1, #e[2], 2 do
      if e[2][i] == 'p' and e[2][i + 1] == ARGV[8] then
        return {epoch, tonumber(string.match(e[1], '^(%d+)'))}
      end
    end
  end
end
local n = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], n .. '-0', 'u', ARGV[3], 'd', ARGV[4], 'p', ARGV[8])
redis.call('PUBLISH', ARGV[6], ARGV[7] .. '\n' .. ARGV[2] .. '\n' .. epoch .. '\n' .. n .. '\n' .. ARGV[3] .. '\n' .. ARGV[4])
return {epoch, n}
"#;

/// How long a publish left unanswered is sent again before the hub is
/// told it failed.
const SETTLE_FOR: Duration = Duration::from_secs(3);
/// The pause before the first retry; doubled before each next one.
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// One message to publish, as the script takes it.
pub(super) struct Message {
    /// The room's counter, epoch and stream keys.
    pub(super) keys: [String; 3],
    pub(super) room_json: String,
    pub(super) user_json: String,
    pub(super) data: String,
    /// The history the room keeps, in messages.
    pub(super) history: usize,
}

/// Why one attempt failed.
enum Failure {
    /// Nothing was sent: no connection.
    NotSent(BrokerError),
    /// Sent, and not answered: it may have run.
    Unanswered(BrokerError),
}

impl Inner {
    /// Publishes `m` under an id of its own, sending it again while its
    /// outcome is unknown (see the module docs).
    pub(super) async fn publish(&self, m: Message) -> Result<Position, BrokerError> {
        static PUBLISHES: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "{}:{}",
            self.node,
            PUBLISHES.fetch_add(1, Ordering::Relaxed)
        );
        let settle_by = Instant::now() + SETTLE_FOR;
        let (mut sent, mut pause) = (false, FIRST_PAUSE);
        loop {
            let e = match self.attempt(&m, &id, sent).await {
                Ok(position) => return Ok(position),
                Err(Failure::NotSent(e)) if !sent => return Err(e),
                Err(Failure::NotSent(e)) => e,
                Err(Failure::Unanswered(e)) => {
                    sent = true;
                    e
                }
            };
            if Instant::now() + pause >= settle_by {
                return Err(e);
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }

    /// Sends `m` once, over the publish connection; `retry` when an earlier
    /// attempt may have run.
    async fn attempt(&self, m: &Message, id: &str, retry: bool) -> Result<Position, Failure> {
        let mut conn = self
            .connection()
            .await
            .map_err(|e| Failure::NotSent(failed(e)))?;
        let mut inv = self.publish.prepare_invoke();
        inv.key(&m.keys[0]).key(&m.keys[1]).key(&m.keys[2]);
        inv.arg(new_epoch())
            .arg(&m.room_json)
            .arg(&m.user_json)
            .arg(&m.data)
            .arg(m.history)
            .arg(&self.channel)
            .arg(&self.node)
            .arg(id)
            .arg(u8::from(retry));
        match self.redis.run::<(String, u64)>(Some(&mut conn), inv).await {
            Ok((epoch, offset)) => {
                // The connection `run` used (a fresh one if it replaced it).
                *self.conn.lock().await = Some(conn);
                Ok(Position {
                    epoch: epoch.into(),
                    offset,
                })
            }
            Err(e) => {
                *self.conn.lock().await = None; // obtained again on the next attempt
                Err(Failure::Unanswered(failed(e)))
            }
        }
    }
}

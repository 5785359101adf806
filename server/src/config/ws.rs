//! The sections of the client-facing real-time layer: `[ws]` (the WebSocket
//! transport, its limits and rates), `[auth]`, `[rooms]` (room hubs and
//! their namespaces), `[handlers]` (the application's handlers) and
//! `[session]` (client sessions and their resumption).

use serde::{Deserialize, Serialize};

use super::{positive, ConfigError, Secret};

/// `[ws]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WsSettings {
    /// Protocol ping interval; silence for twice this drops the client.
    pub heartbeat_ms: u64,
    /// Largest frame; larger closes with 1009.
    pub max_frame_bytes: usize,
    /// Largest `data` of a publish; larger gets `too_large`.
    pub max_data_bytes: usize,
    /// Connections beyond this get 503 before the upgrade.
    pub max_connections: usize,
    /// Token bucket refill, frames per second. A hub request arriving with
    /// none of the connection's others in flight does not pay (see
    /// `ws::admission` and `config/default.toml` for the reasoning).
    pub rate_per_sec: f64,
    /// Token bucket size.
    pub rate_burst: f64,
    /// Rate-limited frames within the abuse window that close with 1008.
    pub abuse_limit: u32,
    /// The abuse window.
    pub abuse_window_ms: u64,
    /// Outbound queue bound, in messages.
    pub outbound_max_messages: usize,
    /// Outbound queue bound, in bytes.
    pub outbound_max_bytes: usize,
    /// Allowed `Origin`s; empty allows any.
    pub allowed_origins: Vec<String>,
    /// Room name prefixes a client may publish to without joining.
    pub publish_without_join: Vec<String>,
    /// Spread of `reconnect_after_ms` in the `draining` frame.
    pub drain_spread_ms: u64,
    /// Bound on the `connections` shutdown stage.
    pub drain_timeout_ms: u64,
}

/// `[auth]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 secret; with `public_key_file` empty too, anonymous clients
    /// are accepted.
    pub jwt_secret: Secret,
    /// A PEM file with an RSA (RS256) or EC P-256 (ES256) public key.
    #[serde(default)]
    pub public_key_file: String,
    /// When set, `aud` must contain it.
    #[serde(default)]
    pub audience: String,
    /// When set, `iss` must be it.
    #[serde(default)]
    pub issuer: String,
    /// Clock skew allowed on `exp`, `nbf` and `iat`; whole seconds.
    #[serde(default)]
    pub leeway_ms: u64,
    /// An identity provider's JWK Set URL: its signing keys, picked by `kid`.
    #[serde(default)]
    pub jwks_url: String,
    /// How long fetched keys are used before they are fetched again.
    #[serde(default = "default_jwks_refresh_ms")]
    pub jwks_refresh_ms: u64,
    /// How long fetched keys stay trusted while every refresh fails.
    #[serde(default = "default_jwks_max_age_ms")]
    pub jwks_max_age_ms: u64,
}

fn default_jwks_refresh_ms() -> u64 {
    300_000
}

fn default_jwks_max_age_ms() -> u64 {
    86_400_000
}

impl AuthSettings {
    /// # Errors
    /// More than one of a secret, a key file and a key set URL; a key file
    /// that is not an RSA or EC public key; a key set URL that is not
    /// http(s); a leeway that is not whole seconds.
    pub fn validate(&self, tls: &super::TlsSettings) -> Result<(), ConfigError> {
        crate::auth::Verifier::from_settings(self, tls).map(|_| ())
    }
}

/// `[rooms]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoomSettings {
    /// Hub shards; 0 means one per core.
    pub shards: usize,
    /// Messages of history per room.
    pub history_size: usize,
    /// Oldest history kept.
    pub history_max_age_ms: u64,
    /// At most one `presence_diff` per room per this interval.
    #[serde(default = "default_presence_batch_ms")]
    pub presence_batch_ms: u64,
    /// `[[rooms.namespaces]]`: room-name prefixes with their own options;
    /// the longest matching prefix wins.
    #[serde(default)]
    pub namespaces: Vec<NamespaceSettings>,
}

fn default_presence_batch_ms() -> u64 {
    100
}

/// One `[[rooms.namespaces]]` table (PROTOCOL.md, "Namespaces").
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSettings {
    /// The room-name prefix, e.g. `chat:`.
    pub prefix: String,
    /// Messages of history per room, in place of `rooms.history_size` (0
    /// keeps none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_size: Option<usize>,
    /// Oldest history kept, in place of `rooms.history_max_age_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_max_age_ms: Option<u64>,
    /// Whether `presence` answers for these rooms.
    #[serde(default = "yes")]
    pub presence: bool,
    /// Whether members receive `presence_diff` (a user's first session
    /// joined, last session left), batched every `rooms.presence_batch_ms`.
    #[serde(default)]
    pub presence_events: bool,
    /// Whether clients may publish (false: `forbidden`; the server API and
    /// handlers still publish).
    #[serde(default = "yes")]
    pub client_publish: bool,
    /// The registered room handler for these rooms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// What a member whose outbound queue is full loses.
    #[serde(default)]
    pub slow_consumer: SlowConsumer,
}

/// What happens to a member that does not read as fast as its rooms
/// publish, once its outbound queue (`ws.outbound_max_messages`,
/// `ws.outbound_max_bytes`) is full. Whatever is dropped, the client sees
/// it: offsets jump, and `resume` or `history` fills in what history has.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumer {
    /// The connection closes with 1013 (the client reconnects and resumes).
    #[default]
    Close,
    /// The oldest queued messages of such rooms are dropped to make room
    /// (for any message or reply).
    DropOldest,
    /// A room's queued message is replaced by its next one: a member that
    /// lags holds at most one message of the room, the newest (feeds where
    /// only the latest state matters). Never dropped otherwise; a queue
    /// full with nothing of `drop_oldest` rooms to drop still closes.
    Latest,
}

impl SlowConsumer {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            SlowConsumer::Close => "close",
            SlowConsumer::DropOldest => "drop_oldest",
            SlowConsumer::Latest => "latest",
        }
    }
}

fn yes() -> bool {
    true
}

impl NamespaceSettings {
    /// A namespace for `prefix` with the protocol's defaults.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            history_size: None,
            history_max_age_ms: None,
            presence: true,
            presence_events: false,
            client_publish: true,
            handler: None,
            slow_consumer: SlowConsumer::Close,
        }
    }

    /// Keeps `size` messages of history per room, none older than `max_age_ms`.
    pub fn history(mut self, size: usize, max_age_ms: u64) -> Self {
        self.history_size = Some(size);
        self.history_max_age_ms = Some(max_age_ms);
        self
    }

    /// Turns on `presence_diff` for these rooms.
    pub fn presence_events(mut self) -> Self {
        self.presence_events = true;
        self
    }

    /// Sets the slow-consumer policy of these rooms.
    pub fn slow_consumer(mut self, policy: SlowConsumer) -> Self {
        self.slow_consumer = policy;
        self
    }

    /// Names the room handler of these rooms.
    pub fn handler(mut self, name: impl Into<String>) -> Self {
        self.handler = Some(name.into());
        self
    }
}

/// `[handlers]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerSettings {
    /// How long a room or RPC handler may take to answer; past it the
    /// client gets `timeout`.
    pub timeout_ms: u64,
}

impl HandlerSettings {
    /// # Errors
    /// `handlers.timeout_ms` is 0.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Ok(positive("handlers.timeout_ms", self.timeout_ms as f64)?)
    }
}

/// `[session]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// How long a closed session may be resumed.
    pub ttl_ms: u64,
    /// Interval of the write-behind flush.
    pub flush_interval_ms: u64,
    /// Changes kept while the database is down: session writes, and as many
    /// deletes.
    pub max_pending: usize,
    /// Detached sessions held at most; past it the one that would expire
    /// first is forgotten.
    pub max_detached: usize,
}

impl WsSettings {
    /// # Errors
    /// The first invalid `ws.*` key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("ws.heartbeat_ms", self.heartbeat_ms as f64),
            ("ws.max_frame_bytes", self.max_frame_bytes as f64),
            ("ws.max_data_bytes", self.max_data_bytes as f64),
            ("ws.max_connections", self.max_connections as f64),
            ("ws.rate_per_sec", self.rate_per_sec),
            ("ws.rate_burst", self.rate_burst),
            ("ws.abuse_limit", f64::from(self.abuse_limit)),
            (
                "ws.outbound_max_messages",
                self.outbound_max_messages as f64,
            ),
            ("ws.outbound_max_bytes", self.outbound_max_bytes as f64),
        ] {
            positive(key, value)?;
        }
        if self.max_data_bytes > self.max_frame_bytes {
            return Err(ConfigError::key(
                "ws.max_data_bytes",
                "must not exceed ws.max_frame_bytes",
            ));
        }
        Ok(())
    }
}

impl RoomSettings {
    /// # Errors
    /// `rooms.history_size` is 0, or a namespace's prefix is not a room-name
    /// prefix or repeats another's.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("rooms.history_size", self.history_size as f64)?;
        positive("rooms.presence_batch_ms", self.presence_batch_ms as f64)?;
        for (i, ns) in self.namespaces.iter().enumerate() {
            let key = format!("rooms.namespaces[{i}].prefix");
            // A `$` prefix picks system rooms (`$printers`; `$` alone: all
            // of them), whose clients never publish.
            let name = ns.prefix.strip_prefix('$').unwrap_or(&ns.prefix);
            let valid = !ns.prefix.is_empty()
                && ns.prefix.len() <= crate::ws::protocol::MAX_ROOM_BYTES
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
            if !valid {
                return Err(ConfigError::key(
                    &key,
                    "a namespace prefix is 1 to 128 bytes of [A-Za-z0-9_.:-], after a '$' for system rooms",
                ));
            }
            if self.namespaces[..i].iter().any(|o| o.prefix == ns.prefix) {
                return Err(ConfigError::key(
                    &key,
                    format!("'{}' is given twice", ns.prefix),
                ));
            }
        }
        Ok(())
    }
}

impl SessionSettings {
    /// # Errors
    /// `session.ttl_ms` or `session.max_detached` is 0.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("session.ttl_ms", self.ttl_ms as f64)?;
        Ok(positive("session.max_detached", self.max_detached as f64)?)
    }
}

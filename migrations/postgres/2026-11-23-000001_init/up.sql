-- Sessions behind `resume`; times are Unix milliseconds.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    -- {room: last offset delivered}, JSON
    rooms TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    -- NULL while a socket is attached
    expires_at BIGINT
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- Room offsets and epochs, checkpointed at a graceful shutdown.
CREATE TABLE rooms (
    name TEXT PRIMARY KEY NOT NULL,
    epoch TEXT NOT NULL,
    last_offset BIGINT NOT NULL,
    -- TRUE only when written by a graceful shutdown; a crash leaves FALSE
    clean BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at BIGINT NOT NULL
);

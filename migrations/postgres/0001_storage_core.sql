-- Users, sessions, signup tokens, entries and the event log. Times are microseconds since the Unix epoch
-- (UTC), the unit of Pubky timestamps. Paths use the "C" collation: listings are in byte order.

CREATE TABLE users (
    id           BIGSERIAL PRIMARY KEY,
    public_key   TEXT    NOT NULL UNIQUE,
    disabled     BOOLEAN NOT NULL DEFAULT FALSE,
    -- Sum over the user's files of (length + 256).
    used_bytes   BIGINT  NOT NULL DEFAULT 0,
    -- NULL: the server default; -1: unlimited; otherwise bytes.
    quota_bytes  BIGINT,
    created_at   BIGINT  NOT NULL
);

CREATE TABLE signup_tokens (
    token       TEXT   PRIMARY KEY,
    created_at  BIGINT NOT NULL,
    -- z32 of the user who redeemed it; NULL while unused.
    used_by     TEXT,
    used_at     BIGINT
);

CREATE TABLE sessions (
    -- SHA-256 of the session secret: a leaked table does not leak sessions.
    secret_hash   BYTEA  PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    capabilities  TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);

-- AuthToken ids already used, kept until the token would be outside the time window anyway.
CREATE TABLE used_auth_tokens (
    token_id    BYTEA  PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE entries (
    user_id         BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    path            TEXT COLLATE "C" NOT NULL,
    content_hash    BYTEA  NOT NULL,
    content_length  BIGINT NOT NULL,
    content_type    TEXT   NOT NULL,
    -- The blob holding the bytes; a fresh key per write.
    blob_key        TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    modified_at     BIGINT NOT NULL,
    PRIMARY KEY (user_id, path)
);
CREATE INDEX entries_blob_key ON entries (blob_key);

CREATE TABLE events (
    id            BIGSERIAL PRIMARY KEY,
    -- 'PUT' or 'DEL'.
    op            TEXT   NOT NULL,
    user_id       BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    path          TEXT COLLATE "C" NOT NULL,
    -- BLAKE3 of the new content for PUT, NULL for DEL.
    content_hash  BYTEA,
    created_at    BIGINT NOT NULL
);
CREATE INDEX events_user_id ON events (user_id, id);
CREATE INDEX events_created_at ON events (created_at);

-- WebDAV write locks (PROTOCOL-0.17 §17): at most one lock per file path of a user, whether a file is
-- stored there or not. `expires_at` is in MILLISECONDS since the Unix epoch on the DATABASE's clock (every
-- statement computes it in SQL), so that all instances sharing the database agree on when a lock ends; a
-- lock is live while the database's clock is before it. Expired rows stay until a new lock sweeps them.

CREATE TABLE entry_locks (
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The normalized file path the lock covers.
    path        TEXT COLLATE "C" NOT NULL,
    -- The UUID of `opaquelocktoken:<uuid>`.
    token       TEXT COLLATE "C" NOT NULL UNIQUE,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, path)
);
CREATE INDEX entry_locks_expires_at ON entry_locks (expires_at);

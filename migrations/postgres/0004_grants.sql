-- Grant authentication (PROTOCOL-0.17 §7, §8): the grants stored on their first exchange, their bearer
-- sessions and the PoP nonces already used. Times in these tables are Unix SECONDS, the unit of the grant
-- and PoP claims (unlike the microseconds elsewhere). Grant ids are case-sensitive base64url: the "C"
-- collation keeps them in byte order.

CREATE TABLE grants (
    -- The grant's `jti`.
    id            TEXT COLLATE "C" PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id     TEXT   NOT NULL,
    -- z32 of the client key the grant is bound to (`cnf`).
    cnf           TEXT   NOT NULL,
    -- The capabilities in display form, comma-joined, in grant order.
    capabilities  TEXT   NOT NULL,
    issued_at     BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    -- NULL while the grant is not revoked.
    revoked_at    BIGINT,
    -- When the grant was first stored (its first exchange).
    created_at    BIGINT NOT NULL
);
CREATE INDEX grants_user_id ON grants (user_id, created_at, id);

-- Bearer sessions: at most one row per grant (an exchange replaces the previous bearer).
CREATE TABLE grant_sessions (
    -- SHA-256 of the 43 characters of the bearer token: a leaked table does not leak bearers.
    token_hash  BYTEA  PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    grant_id    TEXT COLLATE "C" NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX grant_sessions_grant_id ON grant_sessions (grant_id);

-- PoP nonces already accepted, one set for the whole server, kept for the replay window.
CREATE TABLE pop_nonces (
    nonce       TEXT   PRIMARY KEY,
    created_at  BIGINT NOT NULL
);
CREATE INDEX pop_nonces_created_at ON pop_nonces (created_at);

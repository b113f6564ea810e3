-- Dashboard sessions: a browser signed in with an API token. Only hashes are
-- kept; a session dies with its token (revoked) or at expires_ms.
CREATE TABLE sessions (
    hash TEXT PRIMARY KEY,
    token_id BIGINT NOT NULL,
    csrf TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX sessions_token ON sessions (token_id);

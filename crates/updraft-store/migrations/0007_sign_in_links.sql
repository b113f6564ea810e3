-- One-time dashboard sign-in links (`updraft dashboard`, `updraft demo --keep`):
-- only the hash is kept; a link is deleted when used, and dies with its token.
CREATE TABLE sign_in_links (
    hash TEXT PRIMARY KEY,
    token_id BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);

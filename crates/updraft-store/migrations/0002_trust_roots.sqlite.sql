CREATE TABLE trust_roots (
    version BIGINT PRIMARY KEY,
    body TEXT NOT NULL,
    added_ms BIGINT NOT NULL,
    added_by TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE enrollment_tokens (
    hash TEXT PRIMARY KEY,
    uses_left BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    family TEXT NOT NULL,
    hardware TEXT NOT NULL,
    region TEXT NOT NULL,
    tags TEXT NOT NULL,
    channel TEXT,
    release TEXT,
    last_known_good TEXT,
    components TEXT NOT NULL,
    utc_offset_min BIGINT NOT NULL,
    enrolled_ms BIGINT NOT NULL,
    last_seen_ms BIGINT
);
CREATE TABLE blobs (
    sha256 TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE releases (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    family TEXT NOT NULL,
    hardware TEXT NOT NULL,
    security_version BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    signers TEXT NOT NULL,
    builder_id TEXT NOT NULL,
    requires TEXT NOT NULL,
    published_ms BIGINT NOT NULL,
    published_by TEXT NOT NULL
);
CREATE TABLE release_meta (
    release TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (release, kind)
);
CREATE TABLE channels (
    channel TEXT NOT NULL,
    release TEXT NOT NULL,
    promoted_ms BIGINT NOT NULL,
    promoted_by TEXT NOT NULL,
    PRIMARY KEY (channel, release)
);
CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    release TEXT NOT NULL,
    plan TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms BIGINT NOT NULL,
    entry TEXT NOT NULL
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    remote TEXT NOT NULL
);
CREATE INDEX audit_action ON audit (action);

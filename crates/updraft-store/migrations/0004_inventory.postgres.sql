-- A device's life after enrollment: accepted or pending, decommissioned
-- (its token revoked, its history kept), operator attributes, the latest
-- inventory it reported, and a bounded history of what happened to it.
ALTER TABLE devices ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
ALTER TABLE devices ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
ALTER TABLE devices ADD COLUMN inventory TEXT NOT NULL DEFAULT '{}';
ALTER TABLE devices ADD COLUMN check_ins BIGINT NOT NULL DEFAULT 0;
ALTER TABLE enrollment_tokens ADD COLUMN require_accept BIGINT NOT NULL DEFAULT 0;
CREATE TABLE device_history (
    id BIGSERIAL PRIMARY KEY,
    device TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    release TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX device_history_device ON device_history (device, id);

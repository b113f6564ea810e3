-- hawkBit DDI: which protocol a device speaks ('updraft' or 'ddi'), and the
-- DDI actions (an assignment as a DDI client sees it: an id of 32 bits, its
-- state, whether its download began).
ALTER TABLE devices ADD COLUMN protocol TEXT NOT NULL DEFAULT 'updraft';
CREATE TABLE ddi_actions (
    id SERIAL PRIMARY KEY,
    device TEXT NOT NULL,
    release TEXT NOT NULL,
    rollout TEXT NOT NULL,
    state TEXT NOT NULL,
    downloaded INTEGER NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX ddi_actions_device ON ddi_actions (device, id);

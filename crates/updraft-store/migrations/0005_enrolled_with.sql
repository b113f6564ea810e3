-- The enrollment token (its hash) a device enrolled with: a retry of an
-- enrollment whose answer was lost is recognised by it.
ALTER TABLE devices ADD COLUMN enrolled_with TEXT;

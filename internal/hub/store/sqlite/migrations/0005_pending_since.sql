-- 0005: when each pending action was first reported (Unix nanoseconds),
-- kept across reports that still carry it, so the pending.waiting clock
-- survives a hub restart and is the same on every replica. Actions
-- pending at the upgrade start their clock then.
ALTER TABLE pending ADD COLUMN since INTEGER NOT NULL DEFAULT 0;
UPDATE pending SET since = unixepoch() * 1000000000;

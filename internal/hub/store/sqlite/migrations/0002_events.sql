-- 0002: operator tokens remember when they were last used; the fleet's
-- event log (pruned by the hub to a bounded size).
ALTER TABLE operators ADD COLUMN last_used INTEGER NOT NULL DEFAULT 0;

CREATE TABLE events (
	id     INTEGER PRIMARY KEY AUTOINCREMENT,
	time   INTEGER NOT NULL,
	type   TEXT NOT NULL,
	host   TEXT NOT NULL,
	actor  TEXT NOT NULL,
	detail TEXT NOT NULL
) STRICT;
CREATE INDEX events_by_time ON events (time);

-- 0004: the outbox of notifications (see store.Notification). Times are
-- Unix nanoseconds (0: unset).
CREATE TABLE outbox (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	sink        TEXT NOT NULL,
	key         TEXT NOT NULL,
	body        BLOB NOT NULL,
	created_at  INTEGER NOT NULL,
	state       TEXT NOT NULL,
	attempts    INTEGER NOT NULL DEFAULT 0,
	next_at     INTEGER NOT NULL,
	lease_owner TEXT NOT NULL DEFAULT '',
	lease_until INTEGER NOT NULL DEFAULT 0,
	last_error  TEXT NOT NULL DEFAULT '',
	done_at     INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX outbox_due ON outbox (state, next_at);
CREATE INDEX outbox_by_key ON outbox (sink, key, created_at);

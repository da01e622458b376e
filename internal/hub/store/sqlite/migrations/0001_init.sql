-- 0001: the hub's first schema. Times are Unix nanoseconds (0: unset).
CREATE TABLE hosts (
	id                 TEXT PRIMARY KEY,
	created_at         INTEGER NOT NULL,
	enrolled_at        INTEGER NOT NULL DEFAULT 0,
	revoked_at         INTEGER NOT NULL DEFAULT 0,
	token_hash         TEXT UNIQUE,
	blocked            INTEGER NOT NULL DEFAULT 0,
	blocked_reason     TEXT NOT NULL DEFAULT '',
	last_seen          INTEGER NOT NULL DEFAULT 0,
	desired_generation INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE join_tokens (
	token_hash TEXT PRIMARY KEY,
	host       TEXT NOT NULL REFERENCES hosts(id),
	expires_at INTEGER NOT NULL,
	used_at    INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE operators (
	name       TEXT PRIMARY KEY,
	token_hash TEXT NOT NULL UNIQUE,
	created_at INTEGER NOT NULL,
	revoked_at INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE desired (
	host       TEXT NOT NULL REFERENCES hosts(id),
	generation INTEGER NOT NULL,
	document   BLOB NOT NULL,
	author     TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (host, generation)
) STRICT;

CREATE TABLE reports (
	host        TEXT PRIMARY KEY REFERENCES hosts(id),
	body        BLOB NOT NULL,
	hash        TEXT NOT NULL,
	received_at INTEGER NOT NULL
) STRICT;

CREATE TABLE jobs (
	host        TEXT NOT NULL REFERENCES hosts(id),
	id          TEXT NOT NULL,
	seq         INTEGER NOT NULL,
	payload     BLOB NOT NULL,
	signatures  BLOB NOT NULL, -- JSON array of base64 strings
	uploader    TEXT NOT NULL,
	uploaded_at INTEGER NOT NULL,
	state       TEXT NOT NULL,
	result      BLOB,
	updated_at  INTEGER NOT NULL,
	PRIMARY KEY (host, id)
) STRICT;
CREATE INDEX jobs_by_host_seq ON jobs (host, seq);

CREATE TABLE pending (
	host    TEXT NOT NULL REFERENCES hosts(id),
	ord     INTEGER NOT NULL,
	pending BLOB NOT NULL,
	PRIMARY KEY (host, ord)
) STRICT;

CREATE TABLE receipts (
	host    TEXT NOT NULL REFERENCES hosts(id),
	seq     INTEGER NOT NULL,
	hash    TEXT NOT NULL,
	receipt BLOB NOT NULL,
	PRIMARY KEY (host, seq)
) STRICT;

CREATE TABLE audit (
	id     INTEGER PRIMARY KEY AUTOINCREMENT,
	time   INTEGER NOT NULL,
	actor  TEXT NOT NULL,
	action TEXT NOT NULL,
	host   TEXT NOT NULL,
	detail TEXT NOT NULL
) STRICT;

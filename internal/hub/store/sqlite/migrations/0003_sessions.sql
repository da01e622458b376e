-- 0003: dashboard sessions (an operator token exchanged for a cookie;
-- the cookie's hash only).
CREATE TABLE sessions (
	token_hash TEXT PRIMARY KEY,
	operator   TEXT NOT NULL REFERENCES operators (name),
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

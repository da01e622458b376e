-- 0007: an index for the audit page's host filter (FindAudit).
CREATE INDEX audit_by_host ON audit (host, id);

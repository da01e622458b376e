-- 0006: what every agent request reads of its host (HostByToken) and the
-- hub's sweep reads of every host, in indexes of their own. In the tables
-- the report's hash follows its body and a job's state its payload,
-- kilobytes on overflow pages that SQLite reads to reach them; the
-- indexes answer without them.
CREATE INDEX reports_host_hash ON reports (host, hash);
CREATE INDEX jobs_waiting ON jobs (host) WHERE state = 'waiting';

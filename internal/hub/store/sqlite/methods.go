package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/wire"
)

// CreateJoinToken implements store.Store.
func (s *Store) CreateJoinToken(ctx context.Context, host, tokenHash string, expires time.Time) error {
	if err := store.CheckHostID(host); err != nil {
		return err
	}
	if err := store.CheckHash("join token hash", tokenHash); err != nil {
		return err
	}
	now := s.now()
	return s.write(ctx, "creating a join token", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO hosts (id, created_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING", host, nanos(now)); err != nil {
			return fmt.Errorf("sqlite: creating host %q: %w", host, err)
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO join_tokens (token_hash, host, expires_at) VALUES (?, ?, ?)", tokenHash, host, nanos(expires))
		if isUnique(err) {
			return fmt.Errorf("%w: join token", store.ErrExists)
		}
		if err != nil {
			return fmt.Errorf("sqlite: creating a join token for %q: %w", host, err)
		}
		return nil
	})
}

// Enroll implements store.Store.
func (s *Store) Enroll(ctx context.Context, joinTokenHash, hostTokenHash string) (string, error) {
	if err := store.CheckHash("join token hash", joinTokenHash); err != nil {
		return "", err
	}
	if err := store.CheckHash("host token hash", hostTokenHash); err != nil {
		return "", err
	}
	now := s.now()
	var host string
	err := s.write(ctx, "enrolling", func(tx *sql.Tx) error {
		var expires, used int64
		err := tx.QueryRowContext(ctx, "SELECT host, expires_at, used_at FROM join_tokens WHERE token_hash = ?", joinTokenHash).Scan(&host, &expires, &used)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: join token unknown, used or expired", store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("sqlite: enrolling: %w", err)
		}
		if used != 0 || expires <= nanos(now) {
			return fmt.Errorf("%w: join token unknown, used or expired", store.ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE join_tokens SET used_at = ? WHERE token_hash = ?", nanos(now), joinTokenHash); err != nil {
			return fmt.Errorf("sqlite: enrolling %q: %w", host, err)
		}
		_, err = tx.ExecContext(ctx, "UPDATE hosts SET token_hash = ?, enrolled_at = ?, revoked_at = 0 WHERE id = ?", hostTokenHash, nanos(now), host)
		if isUnique(err) {
			return fmt.Errorf("%w: host token", store.ErrExists)
		}
		if err != nil {
			return fmt.Errorf("sqlite: enrolling %q: %w", host, err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return host, nil
}

// hostCols reads a host for scanHost. The report's hash and whether jobs
// wait come from indexes (migration 0006), named so that the planner
// never reads the report bodies or job payloads instead.
const hostCols = `h.id, h.created_at, h.enrolled_at, h.revoked_at, h.blocked, h.blocked_reason, h.last_seen,
	COALESCE(r.hash, ''), h.desired_generation,
	EXISTS (SELECT 1 FROM jobs j INDEXED BY jobs_waiting WHERE j.host = h.id AND j.state = 'waiting')
	FROM hosts h LEFT JOIN reports r INDEXED BY reports_host_hash ON r.host = h.id`

type scanner interface{ Scan(dest ...any) error }

func scanHost(sc scanner) (store.Host, error) {
	var h store.Host
	var created, enrolled, revoked, seen int64
	var blocked, waiting int
	if err := sc.Scan(&h.ID, &created, &enrolled, &revoked, &blocked, &h.BlockedReason, &seen, &h.ReportHash, &h.DesiredGeneration, &waiting); err != nil {
		return h, err
	}
	h.JobsWaiting = waiting != 0
	h.CreatedAt, h.EnrolledAt, h.RevokedAt, h.LastSeen = fromNanos(created), fromNanos(enrolled), fromNanos(revoked), fromNanos(seen)
	h.Blocked = blocked != 0
	return h, nil
}

// HostByToken implements store.Store.
func (s *Store) HostByToken(ctx context.Context, tokenHash string) (store.Host, error) {
	h, err := scanHost(s.hostByToken.QueryRowContext(ctx, tokenHash))
	if errors.Is(err, sql.ErrNoRows) {
		return h, fmt.Errorf("%w: host token unknown or revoked", store.ErrNotFound)
	}
	if err != nil {
		return h, fmt.Errorf("sqlite: looking up a host token: %w", err)
	}
	return h, nil
}

// Host implements store.Store.
func (s *Store) Host(ctx context.Context, id string) (store.Host, error) {
	h, err := scanHost(s.r.QueryRowContext(ctx, "SELECT "+hostCols+" WHERE h.id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return h, fmt.Errorf("%w: host %q", store.ErrNotFound, id)
	}
	if err != nil {
		return h, fmt.Errorf("sqlite: reading host %q: %w", id, err)
	}
	return h, nil
}

// Hosts implements store.Store.
func (s *Store) Hosts(ctx context.Context) ([]store.Host, error) {
	return queryAll(ctx, s.r, "listing hosts", func(r *sql.Rows) (store.Host, error) { return scanHost(r) }, "SELECT "+hostCols+" ORDER BY h.id")
}

// updateHost runs one UPDATE on the hosts row of id, ErrNotFound if none.
func (s *Store) updateHost(ctx context.Context, what, id, query string, args ...any) error {
	return s.write(ctx, what, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return fmt.Errorf("sqlite: %s %q: %w", what, id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: host %q", store.ErrNotFound, id)
		}
		return nil
	})
}

// RevokeHost implements store.Store.
func (s *Store) RevokeHost(ctx context.Context, id string) error {
	now := nanos(s.now())
	return s.write(ctx, "revoking", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE hosts SET revoked_at = ?, token_hash = NULL WHERE id = ?", now, id)
		if err != nil {
			return fmt.Errorf("sqlite: revoking host %q: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: host %q", store.ErrNotFound, id)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE join_tokens SET used_at = ? WHERE host = ? AND used_at = 0", now, id); err != nil {
			return fmt.Errorf("sqlite: revoking the join tokens of %q: %w", id, err)
		}
		return nil
	})
}

// SetBlocked implements store.Store.
func (s *Store) SetBlocked(ctx context.Context, id string, blocked bool, reason string) error {
	b := 0
	if blocked {
		b = 1
	} else {
		reason = ""
	}
	return s.updateHost(ctx, "blocking", id, "UPDATE hosts SET blocked = ?, blocked_reason = ? WHERE id = ?", b, reason, id)
}

// CreateOperator implements store.Store.
func (s *Store) CreateOperator(ctx context.Context, name, tokenHash string) error {
	if name == "" || len(name) > store.MaxHostIDLen {
		return fmt.Errorf("%w: operator name must be 1..%d characters", store.ErrInvalid, store.MaxHostIDLen)
	}
	if err := store.CheckHash("operator token hash", tokenHash); err != nil {
		return err
	}
	now := nanos(s.now())
	return s.write(ctx, "creating an operator", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO operators (name, token_hash, created_at) VALUES (?, ?, ?)", name, tokenHash, now)
		if isUnique(err) {
			return fmt.Errorf("%w: operator %q (or its token)", store.ErrExists, name)
		}
		if err != nil {
			return fmt.Errorf("sqlite: creating operator %q: %w", name, err)
		}
		return nil
	})
}

// OperatorByToken implements store.Store.
func (s *Store) OperatorByToken(ctx context.Context, tokenHash string) (store.Operator, error) {
	var o store.Operator
	var created int64
	var used int64
	err := s.r.QueryRowContext(ctx, "SELECT name, created_at, last_used FROM operators WHERE token_hash = ? AND revoked_at = 0", tokenHash).Scan(&o.Name, &created, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return o, fmt.Errorf("%w: operator token unknown or revoked", store.ErrNotFound)
	}
	if err != nil {
		return o, fmt.Errorf("sqlite: looking up an operator token: %w", err)
	}
	o.CreatedAt, o.LastUsed = fromNanos(created), fromNanos(used)
	return o, nil
}

// Operators implements store.Store.
func (s *Store) Operators(ctx context.Context) ([]store.Operator, error) {
	return queryAll(ctx, s.r, "listing operators", func(r *sql.Rows) (store.Operator, error) {
		var o store.Operator
		var c, rv, lu int64
		err := r.Scan(&o.Name, &c, &rv, &lu)
		o.CreatedAt, o.RevokedAt, o.LastUsed = fromNanos(c), fromNanos(rv), fromNanos(lu)
		return o, err
	}, "SELECT name, created_at, revoked_at, last_used FROM operators ORDER BY name")
}

// RevokeOperator implements store.Store.
func (s *Store) RevokeOperator(ctx context.Context, name string) error {
	now := nanos(s.now())
	return s.write(ctx, "revoking an operator", func(tx *sql.Tx) error {
		var revoked int64
		err := tx.QueryRowContext(ctx, "SELECT revoked_at FROM operators WHERE name = ?", name).Scan(&revoked)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: operator %q", store.ErrNotFound, name)
		}
		if err != nil {
			return fmt.Errorf("sqlite: revoking operator %q: %w", name, err)
		}
		if revoked != 0 {
			return nil
		}
		var others int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM operators WHERE revoked_at = 0 AND name <> ?", name).Scan(&others); err != nil {
			return fmt.Errorf("sqlite: revoking operator %q: %w", name, err)
		}
		if others == 0 {
			return fmt.Errorf("%w: %q is the only one left", store.ErrLastOperator, name)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE operators SET revoked_at = ? WHERE name = ?", now, name); err != nil {
			return fmt.Errorf("sqlite: revoking operator %q: %w", name, err)
		}
		return nil
	})
}

// TouchOperator implements store.Store.
func (s *Store) TouchOperator(ctx context.Context, name string, at time.Time) error {
	return s.write(ctx, "recording an operator token's use", func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, "SELECT 1 FROM operators WHERE name = ?", name).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: operator %q", store.ErrNotFound, name)
		}
		if err != nil {
			return fmt.Errorf("sqlite: recording the use of operator %q: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE operators SET last_used = ? WHERE name = ? AND last_used < ?", nanos(at), name, nanos(at)); err != nil {
			return fmt.Errorf("sqlite: recording the use of operator %q: %w", name, err)
		}
		return nil
	})
}

// PutDesired implements store.Store.
func (s *Store) PutDesired(ctx context.Context, host string, doc []byte, ifMatch int64, author string) (int64, error) {
	if ifMatch < store.AnyGeneration {
		return 0, fmt.Errorf("%w: If-Match generation %d", store.ErrInvalid, ifMatch)
	}
	now := nanos(s.now())
	var gen int64
	err := s.write(ctx, "storing desired state", func(tx *sql.Tx) error {
		var cur int64
		err := tx.QueryRowContext(ctx, "SELECT desired_generation FROM hosts WHERE id = ?", host).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: host %q", store.ErrNotFound, host)
		}
		if err != nil {
			return fmt.Errorf("sqlite: storing desired state of %q: %w", host, err)
		}
		if err := store.CheckIfMatch(host, ifMatch, cur); err != nil {
			return err
		}
		gen = cur + 1
		if _, err := tx.ExecContext(ctx, "INSERT INTO desired (host, generation, document, author, created_at) VALUES (?, ?, ?, ?, ?)",
			host, gen, doc, author, now); err != nil {
			return fmt.Errorf("sqlite: storing desired state of %q: %w", host, err)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE hosts SET desired_generation = ? WHERE id = ?", gen, host); err != nil {
			return fmt.Errorf("sqlite: storing desired state of %q: %w", host, err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return gen, nil
}

// Desired implements store.Store.
func (s *Store) Desired(ctx context.Context, host string) (store.Desired, error) {
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return store.Desired{}, fmt.Errorf("sqlite: reading desired state of %q: %w", host, err)
	}
	defer tx.Rollback()
	var gen int64
	err = tx.QueryRowContext(ctx, "SELECT desired_generation FROM hosts WHERE id = ?", host).Scan(&gen)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Desired{}, fmt.Errorf("%w: host %q", store.ErrNotFound, host)
	}
	if err != nil {
		return store.Desired{}, fmt.Errorf("sqlite: reading desired state of %q: %w", host, err)
	}
	if gen == 0 {
		return store.Desired{Host: host}, nil
	}
	d := store.Desired{Host: host, Generation: gen}
	var created int64
	if err := tx.QueryRowContext(ctx, "SELECT document, author, created_at FROM desired WHERE host = ? AND generation = ?", host, gen).
		Scan(&d.Document, &d.Author, &created); err != nil {
		return store.Desired{}, fmt.Errorf("sqlite: reading desired state of %q at generation %d: %w", host, gen, err)
	}
	d.CreatedAt = fromNanos(created)
	return d, nil
}

// DesiredHistory implements store.Store.
func (s *Store) DesiredHistory(ctx context.Context, host string, limit int) ([]store.Desired, error) {
	if err := hostExists(ctx, s.r, host); err != nil {
		return nil, err
	}
	return queryAll(ctx, s.r, "reading the desired history of "+host, func(r *sql.Rows) (store.Desired, error) {
		d := store.Desired{Host: host}
		var created int64
		err := r.Scan(&d.Generation, &d.Document, &d.Author, &created)
		d.CreatedAt = fromNanos(created)
		return d, err
	}, "SELECT generation, document, author, created_at FROM desired WHERE host = ? ORDER BY generation DESC LIMIT ?", host, limit)
}

// PutReport implements store.Store.
func (s *Store) PutReport(ctx context.Context, host string, body []byte, hash string) error {
	now := nanos(s.now())
	return s.write(ctx, "storing a report", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE hosts SET last_seen = ? WHERE id = ?", now, host)
		if err != nil {
			return fmt.Errorf("sqlite: storing the report of %q: %w", host, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: host %q", store.ErrNotFound, host)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO reports (host, body, hash, received_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (host) DO UPDATE SET body = excluded.body, hash = excluded.hash, received_at = excluded.received_at`,
			host, body, hash, now); err != nil {
			return fmt.Errorf("sqlite: storing the report of %q: %w", host, err)
		}
		return nil
	})
}

// Heartbeat implements store.Store.
func (s *Store) Heartbeat(ctx context.Context, host, hash string) (bool, error) {
	now := nanos(s.now())
	var match bool
	err := s.write(ctx, "recording a heartbeat", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE hosts SET last_seen = ? WHERE id = ?", now, host)
		if err != nil {
			return fmt.Errorf("sqlite: recording a heartbeat of %q: %w", host, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: host %q", store.ErrNotFound, host)
		}
		var have string
		err = tx.QueryRowContext(ctx, "SELECT hash FROM reports WHERE host = ?", host).Scan(&have)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("sqlite: recording a heartbeat of %q: %w", host, err)
		}
		match = err == nil && have == hash
		return nil
	})
	return match, err
}

// TouchHosts implements store.Store.
func (s *Store) TouchHosts(ctx context.Context, seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	return s.write(ctx, "recording heartbeats", func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, "UPDATE hosts SET last_seen = ? WHERE id = ? AND last_seen < ?")
		if err != nil {
			return fmt.Errorf("sqlite: recording heartbeats: %w", err)
		}
		defer st.Close()
		for host, at := range seen {
			if _, err := st.ExecContext(ctx, nanos(at), host, nanos(at)); err != nil {
				return fmt.Errorf("sqlite: recording the heartbeat of %q: %w", host, err)
			}
		}
		return nil
	})
}

// LastReport implements store.Store.
func (s *Store) LastReport(ctx context.Context, host string) (store.Report, error) {
	r := store.Report{Host: host}
	var at int64
	err := s.r.QueryRowContext(ctx, "SELECT body, hash, received_at FROM reports WHERE host = ?", host).Scan(&r.Body, &r.Hash, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Report{}, fmt.Errorf("%w: no report from host %q", store.ErrNotFound, host)
	}
	if err != nil {
		return store.Report{}, fmt.Errorf("sqlite: reading the report of %q: %w", host, err)
	}
	r.ReceivedAt = fromNanos(at)
	return r, nil
}

const jobCols = "host, id, payload, signatures, uploader, uploaded_at, state, result, updated_at FROM jobs"

func scanJob(sc scanner) (store.Job, error) {
	var j store.Job
	var up, upd int64
	var result, sigs []byte
	if err := sc.Scan(&j.Host, &j.ID, &j.Payload, &sigs, &j.Uploader, &up, &j.State, &result, &upd); err != nil {
		return j, err
	}
	j.UploadedAt, j.UpdatedAt = fromNanos(up), fromNanos(upd)
	if err := json.Unmarshal(sigs, &j.Signatures); err != nil {
		return j, fmt.Errorf("job %s: stored signatures: %w", j.ID, err)
	}
	if result != nil {
		var r wire.JobResult
		if err := json.Unmarshal(result, &r); err != nil {
			return j, fmt.Errorf("job %s: stored result: %w", j.ID, err)
		}
		j.Result = &r
	}
	if j.Payload == nil {
		j.Payload = []byte{}
	}
	return j, nil
}

// PutJob implements store.Store.
func (s *Store) PutJob(ctx context.Context, host string, payload []byte, signatures [][]byte, uploader string) (store.Job, error) {
	if len(payload) == 0 {
		return store.Job{}, fmt.Errorf("%w: empty job payload", store.ErrInvalid)
	}
	sigs := make([][]byte, len(signatures))
	for i, sig := range signatures {
		sigs[i] = append([]byte{}, sig...)
	}
	sigJSON, err := json.Marshal(sigs)
	if err != nil {
		return store.Job{}, fmt.Errorf("sqlite: encoding signatures: %w", err)
	}
	now := s.now()
	j := store.Job{Host: host, ID: wire.JobID(payload), Payload: append([]byte(nil), payload...), Signatures: sigs, Uploader: uploader,
		UploadedAt: fromNanos(nanos(now)), State: store.JobWaiting, UpdatedAt: fromNanos(nanos(now))}
	err = s.write(ctx, "storing a job", func(tx *sql.Tx) error {
		if err := hostExists(ctx, tx, host); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO jobs (host, id, seq, payload, signatures, uploader, uploaded_at, state, updated_at)
			VALUES (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs WHERE host = ?), ?, ?, ?, ?, ?, ?)`,
			host, j.ID, host, j.Payload, sigJSON, uploader, nanos(now), store.JobWaiting, nanos(now))
		if isUnique(err) {
			return fmt.Errorf("%w: job %s for host %q", store.ErrExists, j.ID, host)
		}
		if err != nil {
			return fmt.Errorf("sqlite: storing job %s for %q: %w", j.ID, host, err)
		}
		return nil
	})
	if err != nil {
		return store.Job{}, err
	}
	return j, nil
}

// AddJobSignatures implements store.Store.
func (s *Store) AddJobSignatures(ctx context.Context, host string, payload []byte, signatures [][]byte) (store.Job, int, error) {
	if err := store.CheckAddSignatures(payload, signatures); err != nil {
		return store.Job{}, 0, err
	}
	id := wire.JobID(payload)
	var out store.Job
	var added int
	err := s.write(ctx, "adding signatures to a job", func(tx *sql.Tx) error {
		j, err := scanJob(tx.QueryRowContext(ctx, "SELECT "+jobCols+" WHERE host = ? AND id = ?", host, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: job %s for host %q", store.ErrNotFound, id, host)
		}
		if err != nil {
			return fmt.Errorf("sqlite: reading job %s of %q: %w", id, host, err)
		}
		if !bytes.Equal(j.Payload, payload) {
			return fmt.Errorf("%w: job %s holds other payload bytes", store.ErrConflict, id)
		}
		if j.State != store.JobWaiting {
			return fmt.Errorf("%w: job %s is already %s; signatures can no longer change it", store.ErrConflict, id, j.State)
		}
		sigs, n := store.MergeSignatures(j.Signatures, signatures)
		if len(sigs) > store.MaxJobSignatures {
			return fmt.Errorf("%w: job %s would hold %d signatures; at most %d", store.ErrInvalid, id, len(sigs), store.MaxJobSignatures)
		}
		if n > 0 {
			sigJSON, err := json.Marshal(sigs)
			if err != nil {
				return fmt.Errorf("sqlite: encoding signatures: %w", err)
			}
			now := nanos(s.now())
			if _, err := tx.ExecContext(ctx, "UPDATE jobs SET signatures = ?, result = NULL, updated_at = ? WHERE host = ? AND id = ?",
				sigJSON, now, host, id); err != nil {
				return fmt.Errorf("sqlite: adding signatures to job %s: %w", id, err)
			}
			j.Signatures, j.Result, j.UpdatedAt = sigs, nil, fromNanos(now)
		}
		out, added = j, n
		return nil
	})
	if err != nil {
		return store.Job{}, 0, err
	}
	return out, added, nil
}

// Job implements store.Store.
func (s *Store) Job(ctx context.Context, host, id string) (store.Job, error) {
	j, err := scanJob(s.r.QueryRowContext(ctx, "SELECT "+jobCols+" WHERE host = ? AND id = ?", host, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Job{}, fmt.Errorf("%w: job %s for host %q", store.ErrNotFound, id, host)
	}
	if err != nil {
		return store.Job{}, fmt.Errorf("sqlite: reading job %s of %q: %w", id, host, err)
	}
	return j, nil
}

// Jobs implements store.Store.
func (s *Store) Jobs(ctx context.Context, host, state string) ([]store.Job, error) {
	if err := hostExists(ctx, s.r, host); err != nil {
		return nil, err
	}
	return queryAll(ctx, s.r, "listing the jobs of "+host, func(r *sql.Rows) (store.Job, error) { return scanJob(r) },
		"SELECT "+jobCols+" WHERE host = ? AND (? = '' OR state = ?) ORDER BY seq", host, state, state)
}

// SetJobResult implements store.Store.
func (s *Store) SetJobResult(ctx context.Context, host string, r wire.JobResult) error {
	state, err := store.JobResultState(r)
	if err != nil {
		return err
	}
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("sqlite: encoding a job result: %w", err)
	}
	now := nanos(s.now())
	return s.write(ctx, "storing a job result", func(tx *sql.Tx) error {
		var cur string
		err := tx.QueryRowContext(ctx, "SELECT state FROM jobs WHERE host = ? AND id = ?", host, r.Job).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: job %s for host %q", store.ErrNotFound, r.Job, host)
		}
		if err != nil {
			return fmt.Errorf("sqlite: storing the result of job %s: %w", r.Job, err)
		}
		if apply, err := store.JobResultApplies(cur, r); !apply {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE jobs SET state = ?, result = ?, updated_at = ? WHERE host = ? AND id = ?",
			state, body, now, host, r.Job); err != nil {
			return fmt.Errorf("sqlite: storing the result of job %s: %w", r.Job, err)
		}
		return nil
	})
}

// SetPending implements store.Store.
func (s *Store) SetPending(ctx context.Context, host string, pending []wire.Pending) error {
	bodies := make([][]byte, len(pending))
	for i, p := range pending {
		b, err := json.Marshal(p)
		if err != nil {
			return fmt.Errorf("sqlite: encoding pending[%d]: %w", i, err)
		}
		bodies[i] = b
	}
	now := nanos(s.now())
	return s.write(ctx, "storing pending signatures", func(tx *sql.Tx) error {
		if err := hostExists(ctx, tx, host); err != nil {
			return err
		}
		type row struct {
			p     wire.Pending
			since int64
		}
		old, err := queryAll(ctx, tx, "storing pending signatures of "+host, func(r *sql.Rows) (row, error) {
			var x row
			var b []byte
			if err := r.Scan(&b, &x.since); err != nil {
				return x, err
			}
			return x, json.Unmarshal(b, &x.p)
		}, "SELECT pending, since FROM pending WHERE host = ?", host)
		if err != nil {
			return err
		}
		since := make(map[string]int64, len(old))
		for _, x := range old {
			since[store.PendingKey(x.p)] = x.since
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM pending WHERE host = ?", host); err != nil {
			return fmt.Errorf("sqlite: storing pending signatures of %q: %w", host, err)
		}
		for i, b := range bodies {
			t, ok := since[store.PendingKey(pending[i])]
			if !ok || t == 0 {
				t = now
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO pending (host, ord, pending, since) VALUES (?, ?, ?, ?)", host, i, b, t); err != nil {
				return fmt.Errorf("sqlite: storing pending signatures of %q: %w", host, err)
			}
		}
		return nil
	})
}

// WaitingPending implements store.Store.
func (s *Store) WaitingPending(ctx context.Context, before time.Time) ([]store.PendingWait, error) {
	return queryAll(ctx, s.r, "reading the pending signatures waiting", func(r *sql.Rows) (store.PendingWait, error) {
		var w store.PendingWait
		var b []byte
		var since int64
		if err := r.Scan(&w.Host, &since, &b); err != nil {
			return w, err
		}
		w.Since = fromNanos(since)
		return w, json.Unmarshal(b, &w.Pending)
	}, `SELECT p.host, p.since, p.pending FROM pending p JOIN hosts h ON h.id = p.host
		WHERE p.since <= ? AND h.enrolled_at <> 0 AND h.revoked_at = 0 ORDER BY p.host, p.ord`, nanos(before))
}

// Pending implements store.Store.
func (s *Store) Pending(ctx context.Context, host string) ([]wire.Pending, error) {
	if err := hostExists(ctx, s.r, host); err != nil {
		return nil, err
	}
	return queryAll(ctx, s.r, "reading the pending signatures of "+host, scanJSON[wire.Pending], "SELECT pending FROM pending WHERE host = ? ORDER BY ord", host)
}

// PendingCount implements store.Store.
func (s *Store) PendingCount(ctx context.Context) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, "SELECT COUNT(*) FROM pending").Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: counting pending signatures: %w", err)
	}
	return n, nil
}

// head reads the host's chain head through q.
func head(ctx context.Context, q queryer, host string) (store.ReceiptHead, error) {
	h := store.ReceiptHead{Hash: wire.ZeroHash}
	err := q.QueryRowContext(ctx, "SELECT seq, hash FROM receipts WHERE host = ? ORDER BY seq DESC LIMIT 1", host).Scan(&h.Seq, &h.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return store.ReceiptHead{Hash: wire.ZeroHash}, nil
	}
	if err != nil {
		return h, fmt.Errorf("sqlite: reading the receipt chain of %q: %w", host, err)
	}
	return h, nil
}

// AppendReceipts implements store.Store.
func (s *Store) AppendReceipts(ctx context.Context, host string, rs []wire.Receipt) (store.ReceiptHead, error) {
	var out store.ReceiptHead
	err := s.write(ctx, "storing receipts", func(tx *sql.Tx) error {
		if err := hostExists(ctx, tx, host); err != nil {
			return err
		}
		h, err := head(ctx, tx, host)
		if err != nil {
			return err
		}
		// Skip a prefix the hub already holds with the same hashes (a
		// retried batch); a differing one is a broken chain.
		i := 0
		for ; i < len(rs) && rs[i].Seq <= h.Seq; i++ {
			var have string
			err := tx.QueryRowContext(ctx, "SELECT hash FROM receipts WHERE host = ? AND seq = ?", host, rs[i].Seq).Scan(&have)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("sqlite: reading receipt %d of %q: %w", rs[i].Seq, host, err)
			}
			if have != rs[i].Hash {
				if rs[i].Type == wire.ReceiptBreak {
					// A new segment numbered from what the agent thought
					// the hub held: it numbers it on from the hub's head.
					return fmt.Errorf("%w: receipts[%d] (seq %d) starts a new segment, but host %q's chain goes on to seq %d", wire.ErrChainGap, i, rs[i].Seq, host, h.Seq)
				}
				return fmt.Errorf("%w: receipts[%d] (seq %d) differs from the one the hub holds for host %q", wire.ErrChainBroken, i, rs[i].Seq, host)
			}
		}
		rest := rs[i:]
		seq, hash, err := wire.VerifyChain(h.Seq, h.Hash, rest)
		if err != nil {
			return fmt.Errorf("host %q: %w", host, err)
		}
		for _, r := range rest {
			b, err := json.Marshal(r)
			if err != nil {
				return fmt.Errorf("sqlite: encoding receipt %d: %w", r.Seq, err)
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO receipts (host, seq, hash, receipt) VALUES (?, ?, ?, ?)", host, r.Seq, r.Hash, b); err != nil {
				return fmt.Errorf("sqlite: storing receipt %d of %q: %w", r.Seq, host, err)
			}
		}
		out = store.ReceiptHead{Seq: seq, Hash: hash}
		return nil
	})
	if err != nil {
		return store.ReceiptHead{}, err
	}
	return out, nil
}

// ReceiptHead implements store.Store.
func (s *Store) ReceiptHead(ctx context.Context, host string) (store.ReceiptHead, error) {
	if err := hostExists(ctx, s.r, host); err != nil {
		return store.ReceiptHead{}, err
	}
	return head(ctx, s.r, host)
}

// Receipts implements store.Store.
func (s *Store) Receipts(ctx context.Context, host string, after uint64, limit int) ([]wire.Receipt, error) {
	if err := hostExists(ctx, s.r, host); err != nil {
		return nil, err
	}
	return queryAll(ctx, s.r, "reading the receipts of "+host, scanJSON[wire.Receipt], "SELECT receipt FROM receipts WHERE host = ? AND seq > ? ORDER BY seq LIMIT ?", host, after, limit)
}

// AppendAudit implements store.Store.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEntry) (int64, error) {
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	var id int64
	err := s.write(ctx, "appending to the audit log", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "INSERT INTO audit (time, actor, action, host, detail) VALUES (?, ?, ?, ?, ?)",
			nanos(e.Time), e.Actor, e.Action, e.Host, e.Detail)
		if err != nil {
			return fmt.Errorf("sqlite: appending to the audit log: %w", err)
		}
		id, err = res.LastInsertId()
		if err != nil {
			return fmt.Errorf("sqlite: appending to the audit log: %w", err)
		}
		return nil
	})
	return id, err
}

// Audit implements store.Store.
func (s *Store) Audit(ctx context.Context, after int64, limit int) ([]store.AuditEntry, error) {
	return queryAll(ctx, s.r, "reading the audit log", func(r *sql.Rows) (store.AuditEntry, error) {
		var e store.AuditEntry
		var t int64
		err := r.Scan(&e.ID, &t, &e.Actor, &e.Action, &e.Host, &e.Detail)
		e.Time = fromNanos(t)
		return e, err
	}, "SELECT id, time, actor, action, host, detail FROM audit WHERE id > ? ORDER BY id LIMIT ?", after, limit)
}

// FindAudit implements store.Store.
func (s *Store) FindAudit(ctx context.Context, q store.AuditQuery) ([]store.AuditEntry, error) {
	where, args := []string{"1 = 1"}, []any{}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, "?"))
	}
	if q.Host != "" {
		add("host = %s", q.Host)
	}
	if q.Actor != "" {
		add("instr(actor, %s) > 0", q.Actor)
	}
	if q.Action != "" {
		add("instr(action, %s) > 0", q.Action)
	}
	if !q.From.IsZero() {
		add("time >= %s", nanos(q.From))
	}
	if !q.To.IsZero() {
		add("time <= %s", nanos(q.To))
	}
	if q.Before > 0 {
		add("id < %s", q.Before)
	}
	args = append(args, max(q.Limit, 1))
	return queryAll(ctx, s.r, "searching the audit log", func(r *sql.Rows) (store.AuditEntry, error) {
		var e store.AuditEntry
		var t int64
		err := r.Scan(&e.ID, &t, &e.Actor, &e.Action, &e.Host, &e.Detail)
		e.Time = fromNanos(t)
		return e, err
	}, "SELECT id, time, actor, action, host, detail FROM audit WHERE "+strings.Join(where, " AND ")+" ORDER BY id DESC LIMIT ?", args...)
}

// AppendEvent implements store.Store.
func (s *Store) AppendEvent(ctx context.Context, e store.Event) (int64, error) {
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	if e.Type == "" {
		return 0, fmt.Errorf("%w: an event needs a type", store.ErrInvalid)
	}
	var id int64
	err := s.write(ctx, "appending to the event log", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "INSERT INTO events (time, type, host, actor, detail) VALUES (?, ?, ?, ?, ?)",
			nanos(e.Time), e.Type, e.Host, e.Actor, e.Detail)
		if err != nil {
			return fmt.Errorf("sqlite: appending to the event log: %w", err)
		}
		id, err = res.LastInsertId()
		if err != nil {
			return fmt.Errorf("sqlite: appending to the event log: %w", err)
		}
		return nil
	})
	return id, err
}

// Events implements store.Store.
func (s *Store) Events(ctx context.Context, after int64, limit int) ([]store.Event, error) {
	return queryAll(ctx, s.r, "reading the event log", func(r *sql.Rows) (store.Event, error) {
		var e store.Event
		var t int64
		err := r.Scan(&e.ID, &t, &e.Type, &e.Host, &e.Actor, &e.Detail)
		e.Time = fromNanos(t)
		return e, err
	}, "SELECT id, time, type, host, actor, detail FROM events WHERE id > ? ORDER BY id LIMIT ?", after, limit)
}

// LastEventID implements store.Store.
func (s *Store) LastEventID(ctx context.Context) (int64, error) {
	var id int64
	if err := s.r.QueryRowContext(ctx, "SELECT COALESCE(MAX(id), 0) FROM events").Scan(&id); err != nil {
		return 0, fmt.Errorf("sqlite: reading the event log: %w", err)
	}
	return id, nil
}

// PruneEvents implements store.Store.
func (s *Store) PruneEvents(ctx context.Context, before time.Time, keep int) (int64, error) {
	if keep < 0 {
		return 0, fmt.Errorf("%w: keep %d events", store.ErrInvalid, keep)
	}
	var n int64
	err := s.write(ctx, "pruning the event log", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE time < ?
			OR id <= COALESCE((SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?), 0)`, nanos(before), keep)
		if err != nil {
			return fmt.Errorf("sqlite: pruning the event log: %w", err)
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return n, err
}

// queryAll runs a read query and scans every row with scan.
func queryAll[T any](ctx context.Context, db interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, what string, scan func(*sql.Rows) (T, error), query string, args ...any) ([]T, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %s: %w", what, err)
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: %s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: %s: %w", what, err)
	}
	return out, nil
}

// scanJSON scans one JSON column into a T.
func scanJSON[T any](r *sql.Rows) (T, error) {
	var v T
	var b []byte
	if err := r.Scan(&b); err != nil {
		return v, err
	}
	err := json.Unmarshal(b, &v)
	return v, err
}

// CreateSession implements store.Store.
func (s *Store) CreateSession(ctx context.Context, tokenHash, operator string, expires time.Time) error {
	if err := store.CheckHash("session hash", tokenHash); err != nil {
		return err
	}
	now := nanos(s.now())
	return s.write(ctx, "creating a session", func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, "SELECT 1 FROM operators WHERE name = ? AND revoked_at = 0", operator).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: operator %q unknown or revoked", store.ErrNotFound, operator)
		}
		if err != nil {
			return fmt.Errorf("sqlite: creating a session: %w", err)
		}
		_, err = tx.ExecContext(ctx, "INSERT INTO sessions (token_hash, operator, created_at, expires_at) VALUES (?, ?, ?, ?)",
			tokenHash, operator, now, nanos(expires))
		if isUnique(err) {
			return fmt.Errorf("%w: session", store.ErrExists)
		}
		if err != nil {
			return fmt.Errorf("sqlite: creating a session: %w", err)
		}
		return nil
	})
}

// SessionByToken implements store.Store.
func (s *Store) SessionByToken(ctx context.Context, tokenHash string, now time.Time) (store.Session, error) {
	var x store.Session
	var c, e int64
	err := s.r.QueryRowContext(ctx, `SELECT s.operator, s.created_at, s.expires_at FROM sessions s
		JOIN operators o ON o.name = s.operator
		WHERE s.token_hash = ? AND s.expires_at > ? AND o.revoked_at = 0`, tokenHash, nanos(now)).Scan(&x.Operator, &c, &e)
	if errors.Is(err, sql.ErrNoRows) {
		return x, fmt.Errorf("%w: session unknown, ended or expired", store.ErrNotFound)
	}
	if err != nil {
		return x, fmt.Errorf("sqlite: looking up a session: %w", err)
	}
	x.CreatedAt, x.ExpiresAt = fromNanos(c), fromNanos(e)
	return x, nil
}

// DeleteSession implements store.Store.
func (s *Store) DeleteSession(ctx context.Context, tokenHash string) error {
	return s.write(ctx, "ending a session", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "DELETE FROM sessions WHERE token_hash = ?", tokenHash); err != nil {
			return fmt.Errorf("sqlite: ending a session: %w", err)
		}
		return nil
	})
}

// PruneSessions implements store.Store.
func (s *Store) PruneSessions(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, "pruning sessions", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM sessions WHERE expires_at < ?", nanos(before))
		if err != nil {
			return fmt.Errorf("sqlite: pruning sessions: %w", err)
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return n, err
}

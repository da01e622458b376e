package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

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
	return s.write(ctx, "creating a join token", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO hosts (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING", host, nanos(now)); err != nil {
			return fmt.Errorf("postgres: creating host %q: %w", host, err)
		}
		_, err := tx.Exec(ctx, "INSERT INTO join_tokens (token_hash, host, expires_at) VALUES ($1, $2, $3)", tokenHash, host, nanos(expires))
		if isUnique(err) {
			return fmt.Errorf("%w: join token", store.ErrExists)
		}
		if err != nil {
			return fmt.Errorf("postgres: creating a join token for %q: %w", host, err)
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
	err := s.write(ctx, "enrolling", func(tx pgx.Tx) error {
		var expires, used int64
		// FOR UPDATE: a concurrent Enroll with the same token waits here
		// and then sees it used.
		err := tx.QueryRow(ctx, "SELECT host, expires_at, used_at FROM join_tokens WHERE token_hash = $1 FOR UPDATE", joinTokenHash).Scan(&host, &expires, &used)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: join token unknown, used or expired", store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("postgres: enrolling: %w", err)
		}
		if used != 0 || expires <= nanos(now) {
			return fmt.Errorf("%w: join token unknown, used or expired", store.ErrNotFound)
		}
		if _, err := tx.Exec(ctx, "UPDATE join_tokens SET used_at = $1 WHERE token_hash = $2", nanos(now), joinTokenHash); err != nil {
			return fmt.Errorf("postgres: enrolling %q: %w", host, err)
		}
		_, err = tx.Exec(ctx, "UPDATE hosts SET token_hash = $1, enrolled_at = $2, revoked_at = 0 WHERE id = $3", hostTokenHash, nanos(now), host)
		if isUnique(err) {
			return fmt.Errorf("%w: host token", store.ErrExists)
		}
		if err != nil {
			return fmt.Errorf("postgres: enrolling %q: %w", host, err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return host, nil
}

const hostCols = `h.id, h.created_at, h.enrolled_at, h.revoked_at, h.blocked, h.blocked_reason, h.last_seen,
	COALESCE(r.hash, ''), h.desired_generation,
	EXISTS (SELECT 1 FROM jobs j WHERE j.host = h.id AND j.state = 'waiting')
	FROM hosts h LEFT JOIN reports r ON r.host = h.id`

func scanHost(sc pgx.Row) (store.Host, error) {
	var h store.Host
	var created, enrolled, revoked, seen int64
	if err := sc.Scan(&h.ID, &created, &enrolled, &revoked, &h.Blocked, &h.BlockedReason, &seen, &h.ReportHash, &h.DesiredGeneration, &h.JobsWaiting); err != nil {
		return h, err
	}
	h.CreatedAt, h.EnrolledAt, h.RevokedAt, h.LastSeen = fromNanos(created), fromNanos(enrolled), fromNanos(revoked), fromNanos(seen)
	return h, nil
}

// HostByToken implements store.Store.
func (s *Store) HostByToken(ctx context.Context, tokenHash string) (store.Host, error) {
	h, err := scanHost(s.pool.QueryRow(ctx, "SELECT "+hostCols+" WHERE h.token_hash = $1 AND h.revoked_at = 0", tokenHash))
	if errors.Is(err, pgx.ErrNoRows) {
		return h, fmt.Errorf("%w: host token unknown or revoked", store.ErrNotFound)
	}
	if err != nil {
		return h, fmt.Errorf("postgres: looking up a host token: %w", err)
	}
	return h, nil
}

// Host implements store.Store.
func (s *Store) Host(ctx context.Context, id string) (store.Host, error) {
	h, err := scanHost(s.pool.QueryRow(ctx, "SELECT "+hostCols+" WHERE h.id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return h, fmt.Errorf("%w: host %q", store.ErrNotFound, id)
	}
	if err != nil {
		return h, fmt.Errorf("postgres: reading host %q: %w", id, err)
	}
	return h, nil
}

// Hosts implements store.Store.
func (s *Store) Hosts(ctx context.Context) ([]store.Host, error) {
	return queryAll(ctx, s.pool, "listing hosts", func(r pgx.Rows) (store.Host, error) { return scanHost(r) }, "SELECT "+hostCols+" ORDER BY h.id")
}

// execOne runs one statement that must change a row; ErrNotFound (as
// notFound) when it changes none.
func execOne(ctx context.Context, tx pgx.Tx, what string, notFound error, query string, args ...any) error {
	tag, err := tx.Exec(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("postgres: %s: %w", what, err)
	}
	if tag.RowsAffected() == 0 {
		return notFound
	}
	return nil
}

// RevokeHost implements store.Store.
func (s *Store) RevokeHost(ctx context.Context, id string) error {
	now := nanos(s.now())
	return s.write(ctx, "revoking", func(tx pgx.Tx) error {
		if err := execOne(ctx, tx, "revoking host "+id, fmt.Errorf("%w: host %q", store.ErrNotFound, id),
			"UPDATE hosts SET revoked_at = $1, token_hash = NULL WHERE id = $2", now, id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE join_tokens SET used_at = $1 WHERE host = $2 AND used_at = 0", now, id); err != nil {
			return fmt.Errorf("postgres: revoking the join tokens of %q: %w", id, err)
		}
		return nil
	})
}

// SetBlocked implements store.Store.
func (s *Store) SetBlocked(ctx context.Context, id string, blocked bool, reason string) error {
	if !blocked {
		reason = ""
	}
	return s.write(ctx, "blocking", func(tx pgx.Tx) error {
		return execOne(ctx, tx, "blocking host "+id, fmt.Errorf("%w: host %q", store.ErrNotFound, id),
			"UPDATE hosts SET blocked = $1, blocked_reason = $2 WHERE id = $3", blocked, reason, id)
	})
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
	return s.write(ctx, "creating an operator", func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO operators (name, token_hash, created_at) VALUES ($1, $2, $3)", name, tokenHash, now)
		if isUnique(err) {
			return fmt.Errorf("%w: operator %q (or its token)", store.ErrExists, name)
		}
		if err != nil {
			return fmt.Errorf("postgres: creating operator %q: %w", name, err)
		}
		return nil
	})
}

// OperatorByToken implements store.Store.
func (s *Store) OperatorByToken(ctx context.Context, tokenHash string) (store.Operator, error) {
	var o store.Operator
	var created, used int64
	err := s.pool.QueryRow(ctx, "SELECT name, created_at, last_used FROM operators WHERE token_hash = $1 AND revoked_at = 0", tokenHash).Scan(&o.Name, &created, &used)
	if errors.Is(err, pgx.ErrNoRows) {
		return o, fmt.Errorf("%w: operator token unknown or revoked", store.ErrNotFound)
	}
	if err != nil {
		return o, fmt.Errorf("postgres: looking up an operator token: %w", err)
	}
	o.CreatedAt, o.LastUsed = fromNanos(created), fromNanos(used)
	return o, nil
}

// Operators implements store.Store.
func (s *Store) Operators(ctx context.Context) ([]store.Operator, error) {
	return queryAll(ctx, s.pool, "listing operators", func(r pgx.Rows) (store.Operator, error) {
		var o store.Operator
		var c, rv, lu int64
		err := r.Scan(&o.Name, &c, &rv, &lu)
		o.CreatedAt, o.RevokedAt, o.LastUsed = fromNanos(c), fromNanos(rv), fromNanos(lu)
		return o, err
	}, "SELECT name, created_at, revoked_at, last_used FROM operators ORDER BY name")
}

// RevokeOperator implements store.Store. Revocations hold operatorLock,
// so two replicas revoking the last two tokens cannot both succeed.
func (s *Store) RevokeOperator(ctx context.Context, name string) error {
	now := nanos(s.now())
	return s.write(ctx, "revoking an operator", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", operatorLock); err != nil {
			return fmt.Errorf("postgres: revoking operator %q: %w", name, err)
		}
		var revoked int64
		err := tx.QueryRow(ctx, "SELECT revoked_at FROM operators WHERE name = $1", name).Scan(&revoked)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: operator %q", store.ErrNotFound, name)
		}
		if err != nil {
			return fmt.Errorf("postgres: revoking operator %q: %w", name, err)
		}
		if revoked != 0 {
			return nil
		}
		var others int
		if err := tx.QueryRow(ctx, "SELECT COUNT(*) FROM operators WHERE revoked_at = 0 AND name <> $1", name).Scan(&others); err != nil {
			return fmt.Errorf("postgres: revoking operator %q: %w", name, err)
		}
		if others == 0 {
			return fmt.Errorf("%w: %q is the only one left", store.ErrLastOperator, name)
		}
		if _, err := tx.Exec(ctx, "UPDATE operators SET revoked_at = $1 WHERE name = $2", now, name); err != nil {
			return fmt.Errorf("postgres: revoking operator %q: %w", name, err)
		}
		return nil
	})
}

// TouchOperator implements store.Store.
func (s *Store) TouchOperator(ctx context.Context, name string, at time.Time) error {
	return s.write(ctx, "recording an operator token's use", func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, "SELECT 1 FROM operators WHERE name = $1", name).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: operator %q", store.ErrNotFound, name)
		}
		if err != nil {
			return fmt.Errorf("postgres: recording the use of operator %q: %w", name, err)
		}
		if _, err := tx.Exec(ctx, "UPDATE operators SET last_used = $1 WHERE name = $2 AND last_used < $1", nanos(at), name); err != nil {
			return fmt.Errorf("postgres: recording the use of operator %q: %w", name, err)
		}
		return nil
	})
}

// PutDesired implements store.Store. The host row is locked first, so
// concurrent PUTs from any number of replicas get consecutive
// generations, and of several with one If-Match exactly one wins.
func (s *Store) PutDesired(ctx context.Context, host string, doc []byte, ifMatch int64, author string) (int64, error) {
	if ifMatch < store.AnyGeneration {
		return 0, fmt.Errorf("%w: If-Match generation %d", store.ErrInvalid, ifMatch)
	}
	if doc == nil {
		doc = []byte{}
	}
	now := nanos(s.now())
	var gen int64
	err := s.write(ctx, "storing desired state", func(tx pgx.Tx) error {
		cur, err := lockHost(ctx, tx, host)
		if err != nil {
			return err
		}
		if err := store.CheckIfMatch(host, ifMatch, cur); err != nil {
			return err
		}
		gen = cur + 1
		if _, err := tx.Exec(ctx, "INSERT INTO desired (host, generation, document, author, created_at) VALUES ($1, $2, $3, $4, $5)",
			host, gen, doc, author, now); err != nil {
			return fmt.Errorf("postgres: storing desired state of %q: %w", host, err)
		}
		if _, err := tx.Exec(ctx, "UPDATE hosts SET desired_generation = $1 WHERE id = $2", gen, host); err != nil {
			return fmt.Errorf("postgres: storing desired state of %q: %w", host, err)
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
	d := store.Desired{Host: host}
	var doc []byte
	var author *string
	var created *int64
	// One statement: one snapshot, so the generation and its document agree.
	err := s.pool.QueryRow(ctx, `SELECT h.desired_generation, d.document, d.author, d.created_at
		FROM hosts h LEFT JOIN desired d ON d.host = h.id AND d.generation = h.desired_generation WHERE h.id = $1`, host).
		Scan(&d.Generation, &doc, &author, &created)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Desired{}, fmt.Errorf("%w: host %q", store.ErrNotFound, host)
	}
	if err != nil {
		return store.Desired{}, fmt.Errorf("postgres: reading desired state of %q: %w", host, err)
	}
	if d.Generation == 0 {
		return d, nil
	}
	if author == nil || created == nil {
		return store.Desired{}, fmt.Errorf("postgres: reading desired state of %q: generation %d has no document", host, d.Generation)
	}
	if doc == nil {
		doc = []byte{}
	}
	d.Document, d.Author, d.CreatedAt = doc, *author, fromNanos(*created)
	return d, nil
}

// DesiredHistory implements store.Store.
func (s *Store) DesiredHistory(ctx context.Context, host string, limit int) ([]store.Desired, error) {
	if err := hostExists(ctx, s.pool, host); err != nil {
		return nil, err
	}
	return queryAll(ctx, s.pool, "reading the desired history of "+host, func(r pgx.Rows) (store.Desired, error) {
		d := store.Desired{Host: host}
		var created int64
		err := r.Scan(&d.Generation, &d.Document, &d.Author, &created)
		d.CreatedAt = fromNanos(created)
		if d.Document == nil {
			d.Document = []byte{}
		}
		return d, err
	}, "SELECT generation, document, author, created_at FROM desired WHERE host = $1 ORDER BY generation DESC LIMIT $2", host, max(limit, 0))
}

// PutReport implements store.Store.
func (s *Store) PutReport(ctx context.Context, host string, body []byte, hash string) error {
	now := nanos(s.now())
	if body == nil {
		body = []byte{}
	}
	return s.write(ctx, "storing a report", func(tx pgx.Tx) error {
		if err := execOne(ctx, tx, "storing the report of "+host, fmt.Errorf("%w: host %q", store.ErrNotFound, host),
			"UPDATE hosts SET last_seen = $1 WHERE id = $2", now, host); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO reports (host, body, hash, received_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (host) DO UPDATE SET body = excluded.body, hash = excluded.hash, received_at = excluded.received_at`,
			host, body, hash, now); err != nil {
			return fmt.Errorf("postgres: storing the report of %q: %w", host, err)
		}
		return nil
	})
}

// Heartbeat implements store.Store.
func (s *Store) Heartbeat(ctx context.Context, host, hash string) (bool, error) {
	now := nanos(s.now())
	var match bool
	err := s.write(ctx, "recording a heartbeat", func(tx pgx.Tx) error {
		var have *string
		err := tx.QueryRow(ctx, `UPDATE hosts SET last_seen = $1 WHERE id = $2
			RETURNING (SELECT hash FROM reports WHERE host = $2)`, now, host).Scan(&have)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: host %q", store.ErrNotFound, host)
		}
		if err != nil {
			return fmt.Errorf("postgres: recording a heartbeat of %q: %w", host, err)
		}
		match = have != nil && *have == hash
		return nil
	})
	return match, err
}

// TouchHosts implements store.Store: one UPDATE over the batch, each
// host's last_seen raised to its time, never lowered.
func (s *Store) TouchHosts(ctx context.Context, seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	ids := make([]string, 0, len(seen))
	ats := make([]int64, 0, len(seen))
	for h, t := range seen {
		ids = append(ids, h)
		ats = append(ats, nanos(t))
	}
	return s.write(ctx, "recording heartbeats", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE hosts SET last_seen = v.at FROM unnest($1::text[], $2::bigint[]) AS v(id, at)
			WHERE hosts.id = v.id AND hosts.last_seen < v.at`, ids, ats); err != nil {
			return fmt.Errorf("postgres: recording heartbeats: %w", err)
		}
		return nil
	})
}

// LastReport implements store.Store.
func (s *Store) LastReport(ctx context.Context, host string) (store.Report, error) {
	r := store.Report{Host: host}
	var at int64
	err := s.pool.QueryRow(ctx, "SELECT body, hash, received_at FROM reports WHERE host = $1", host).Scan(&r.Body, &r.Hash, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Report{}, fmt.Errorf("%w: no report from host %q", store.ErrNotFound, host)
	}
	if err != nil {
		return store.Report{}, fmt.Errorf("postgres: reading the report of %q: %w", host, err)
	}
	if r.Body == nil {
		r.Body = []byte{}
	}
	r.ReceivedAt = fromNanos(at)
	return r, nil
}

const jobCols = "host, id, payload, signatures, uploader, uploaded_at, state, result, updated_at FROM jobs"

func scanJob(sc pgx.Row) (store.Job, error) {
	var j store.Job
	var up, upd int64
	var result []byte
	if err := sc.Scan(&j.Host, &j.ID, &j.Payload, &j.Signatures, &j.Uploader, &up, &j.State, &result, &upd); err != nil {
		return j, err
	}
	j.UploadedAt, j.UpdatedAt = fromNanos(up), fromNanos(upd)
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
	if j.Signatures == nil {
		j.Signatures = [][]byte{}
	}
	for i, sig := range j.Signatures {
		if sig == nil {
			j.Signatures[i] = []byte{}
		}
	}
	return j, nil
}

// PutJob implements store.Store. Two replicas accepting the same signed
// job store it once: the second gets ErrExists.
func (s *Store) PutJob(ctx context.Context, host string, payload []byte, signatures [][]byte, uploader string) (store.Job, error) {
	if len(payload) == 0 {
		return store.Job{}, fmt.Errorf("%w: empty job payload", store.ErrInvalid)
	}
	sigs := make([][]byte, len(signatures))
	for i, sig := range signatures {
		sigs[i] = append([]byte{}, sig...)
	}
	now := s.now()
	j := store.Job{Host: host, ID: wire.JobID(payload), Payload: append([]byte(nil), payload...), Signatures: sigs, Uploader: uploader,
		UploadedAt: fromNanos(nanos(now)), State: store.JobWaiting, UpdatedAt: fromNanos(nanos(now))}
	err := s.write(ctx, "storing a job", func(tx pgx.Tx) error {
		if _, err := lockHost(ctx, tx, host); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO jobs (host, id, seq, payload, signatures, uploader, uploaded_at, state, updated_at)
			VALUES ($1, $2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs WHERE host = $1), $3, $4, $5, $6, $7, $8)`,
			host, j.ID, j.Payload, sigs, uploader, nanos(now), store.JobWaiting, nanos(now))
		if isUnique(err) {
			return fmt.Errorf("%w: job %s for host %q", store.ErrExists, j.ID, host)
		}
		if err != nil {
			return fmt.Errorf("postgres: storing job %s for %q: %w", j.ID, host, err)
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
	err := s.write(ctx, "adding signatures to a job", func(tx pgx.Tx) error {
		j, err := scanJob(tx.QueryRow(ctx, "SELECT "+jobCols+" WHERE host = $1 AND id = $2 FOR UPDATE", host, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: job %s for host %q", store.ErrNotFound, id, host)
		}
		if err != nil {
			return fmt.Errorf("postgres: reading job %s of %q: %w", id, host, err)
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
			now := nanos(s.now())
			if _, err := tx.Exec(ctx, "UPDATE jobs SET signatures = $1, result = NULL, updated_at = $2 WHERE host = $3 AND id = $4",
				sigs, now, host, id); err != nil {
				return fmt.Errorf("postgres: adding signatures to job %s: %w", id, err)
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
	j, err := scanJob(s.pool.QueryRow(ctx, "SELECT "+jobCols+" WHERE host = $1 AND id = $2", host, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Job{}, fmt.Errorf("%w: job %s for host %q", store.ErrNotFound, id, host)
	}
	if err != nil {
		return store.Job{}, fmt.Errorf("postgres: reading job %s of %q: %w", id, host, err)
	}
	return j, nil
}

// Jobs implements store.Store.
func (s *Store) Jobs(ctx context.Context, host, state string) ([]store.Job, error) {
	if err := hostExists(ctx, s.pool, host); err != nil {
		return nil, err
	}
	return queryAll(ctx, s.pool, "listing the jobs of "+host, func(r pgx.Rows) (store.Job, error) { return scanJob(r) },
		"SELECT "+jobCols+" WHERE host = $1 AND ($2 = '' OR state = $2) ORDER BY seq", host, state)
}

// SetJobResult implements store.Store.
func (s *Store) SetJobResult(ctx context.Context, host string, r wire.JobResult) error {
	state, err := store.JobResultState(r)
	if err != nil {
		return err
	}
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("postgres: encoding a job result: %w", err)
	}
	now := nanos(s.now())
	return s.write(ctx, "storing a job result", func(tx pgx.Tx) error {
		var cur string
		err := tx.QueryRow(ctx, "SELECT state FROM jobs WHERE host = $1 AND id = $2 FOR UPDATE", host, r.Job).Scan(&cur)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: job %s for host %q", store.ErrNotFound, r.Job, host)
		}
		if err != nil {
			return fmt.Errorf("postgres: storing the result of job %s: %w", r.Job, err)
		}
		if apply, err := store.JobResultApplies(cur, r); !apply {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE jobs SET state = $1, result = $2, updated_at = $3 WHERE host = $4 AND id = $5",
			state, body, now, host, r.Job); err != nil {
			return fmt.Errorf("postgres: storing the result of job %s: %w", r.Job, err)
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
			return fmt.Errorf("postgres: encoding pending[%d]: %w", i, err)
		}
		bodies[i] = b
	}
	now := nanos(s.now())
	return s.write(ctx, "storing pending signatures", func(tx pgx.Tx) error {
		if _, err := lockHost(ctx, tx, host); err != nil {
			return err
		}
		type row struct {
			p     wire.Pending
			since int64
		}
		old, err := queryAll(ctx, tx, "storing pending signatures of "+host, func(r pgx.Rows) (row, error) {
			var x row
			var b []byte
			if err := r.Scan(&b, &x.since); err != nil {
				return x, err
			}
			return x, json.Unmarshal(b, &x.p)
		}, "SELECT pending, since FROM pending WHERE host = $1", host)
		if err != nil {
			return err
		}
		since := make(map[string]int64, len(old))
		for _, x := range old {
			since[store.PendingKey(x.p)] = x.since
		}
		if _, err := tx.Exec(ctx, "DELETE FROM pending WHERE host = $1", host); err != nil {
			return fmt.Errorf("postgres: storing pending signatures of %q: %w", host, err)
		}
		for i, b := range bodies {
			t, ok := since[store.PendingKey(pending[i])]
			if !ok || t == 0 {
				t = now
			}
			if _, err := tx.Exec(ctx, "INSERT INTO pending (host, ord, pending, since) VALUES ($1, $2, $3, $4)", host, i, b, t); err != nil {
				return fmt.Errorf("postgres: storing pending signatures of %q: %w", host, err)
			}
		}
		return nil
	})
}

// WaitingPending implements store.Store.
func (s *Store) WaitingPending(ctx context.Context, before time.Time) ([]store.PendingWait, error) {
	return queryAll(ctx, s.pool, "reading the pending signatures waiting", func(r pgx.Rows) (store.PendingWait, error) {
		var w store.PendingWait
		var b []byte
		var since int64
		if err := r.Scan(&w.Host, &since, &b); err != nil {
			return w, err
		}
		w.Since = fromNanos(since)
		return w, json.Unmarshal(b, &w.Pending)
	}, `SELECT p.host, p.since, p.pending FROM pending p JOIN hosts h ON h.id = p.host
		WHERE p.since <= $1 AND h.enrolled_at <> 0 AND h.revoked_at = 0 ORDER BY p.host COLLATE "C", p.ord`, nanos(before))
}

// Pending implements store.Store.
func (s *Store) Pending(ctx context.Context, host string) ([]wire.Pending, error) {
	if err := hostExists(ctx, s.pool, host); err != nil {
		return nil, err
	}
	return queryAll(ctx, s.pool, "reading the pending signatures of "+host, scanJSON[wire.Pending], "SELECT pending FROM pending WHERE host = $1 ORDER BY ord", host)
}

// PendingCount implements store.Store.
func (s *Store) PendingCount(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, "SELECT COUNT(*) FROM pending").Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: counting pending signatures: %w", err)
	}
	return n, nil
}

// head reads the host's chain head through q.
func head(ctx context.Context, q queryer, host string) (store.ReceiptHead, error) {
	h := store.ReceiptHead{Hash: wire.ZeroHash}
	var seq int64
	err := q.QueryRow(ctx, "SELECT seq, hash FROM receipts WHERE host = $1 ORDER BY seq DESC LIMIT 1", host).Scan(&seq, &h.Hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ReceiptHead{Hash: wire.ZeroHash}, nil
	}
	if err != nil {
		return h, fmt.Errorf("postgres: reading the receipt chain of %q: %w", host, err)
	}
	h.Seq = uint64(seq)
	return h, nil
}

// AppendReceipts implements store.Store.
func (s *Store) AppendReceipts(ctx context.Context, host string, rs []wire.Receipt) (store.ReceiptHead, error) {
	var out store.ReceiptHead
	err := s.write(ctx, "storing receipts", func(tx pgx.Tx) error {
		if _, err := lockHost(ctx, tx, host); err != nil {
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
			err := tx.QueryRow(ctx, "SELECT hash FROM receipts WHERE host = $1 AND seq = $2", host, int64(rs[i].Seq)).Scan(&have)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("postgres: reading receipt %d of %q: %w", rs[i].Seq, host, err)
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
				return fmt.Errorf("postgres: encoding receipt %d: %w", r.Seq, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO receipts (host, seq, hash, receipt) VALUES ($1, $2, $3, $4)", host, int64(r.Seq), r.Hash, b); err != nil {
				return fmt.Errorf("postgres: storing receipt %d of %q: %w", r.Seq, host, err)
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
	if err := hostExists(ctx, s.pool, host); err != nil {
		return store.ReceiptHead{}, err
	}
	return head(ctx, s.pool, host)
}

// Receipts implements store.Store.
func (s *Store) Receipts(ctx context.Context, host string, after uint64, limit int) ([]wire.Receipt, error) {
	if err := hostExists(ctx, s.pool, host); err != nil {
		return nil, err
	}
	return queryAll(ctx, s.pool, "reading the receipts of "+host, scanJSON[wire.Receipt],
		"SELECT receipt FROM receipts WHERE host = $1 AND seq > $2 ORDER BY seq LIMIT $3", host, int64(min(after, 1<<63-1)), max(limit, 0))
}

// AppendAudit implements store.Store. Appends are serialized by an
// advisory lock, so ids commit in increasing order and a reader paging
// with Audit(after) never skips an entry another replica committed late.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEntry) (int64, error) {
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	var id int64
	err := s.write(ctx, "appending to the audit log", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", auditLock); err != nil {
			return fmt.Errorf("postgres: appending to the audit log: %w", err)
		}
		err := tx.QueryRow(ctx, "INSERT INTO audit (time, actor, action, host, detail) VALUES ($1, $2, $3, $4, $5) RETURNING id",
			nanos(e.Time), e.Actor, e.Action, e.Host, e.Detail).Scan(&id)
		if err != nil {
			return fmt.Errorf("postgres: appending to the audit log: %w", err)
		}
		return nil
	})
	return id, err
}

// Audit implements store.Store.
func (s *Store) Audit(ctx context.Context, after int64, limit int) ([]store.AuditEntry, error) {
	return queryAll(ctx, s.pool, "reading the audit log", func(r pgx.Rows) (store.AuditEntry, error) {
		var e store.AuditEntry
		var t int64
		err := r.Scan(&e.ID, &t, &e.Actor, &e.Action, &e.Host, &e.Detail)
		e.Time = fromNanos(t)
		return e, err
	}, "SELECT id, time, actor, action, host, detail FROM audit WHERE id > $1 ORDER BY id LIMIT $2", after, max(limit, 0))
}

// FindAudit implements store.Store.
func (s *Store) FindAudit(ctx context.Context, q store.AuditQuery) ([]store.AuditEntry, error) {
	where, args := []string{"1 = 1"}, []any{}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, fmt.Sprintf("$%d", len(args))))
	}
	if q.Host != "" {
		add("host = %s", q.Host)
	}
	if q.Actor != "" {
		add("strpos(actor, %s) > 0", q.Actor)
	}
	if q.Action != "" {
		add("strpos(action, %s) > 0", q.Action)
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
	return queryAll(ctx, s.pool, "searching the audit log", func(r pgx.Rows) (store.AuditEntry, error) {
		var e store.AuditEntry
		var t int64
		err := r.Scan(&e.ID, &t, &e.Actor, &e.Action, &e.Host, &e.Detail)
		e.Time = fromNanos(t)
		return e, err
	}, "SELECT id, time, actor, action, host, detail FROM audit WHERE "+strings.Join(where, " AND ")+" ORDER BY id DESC LIMIT "+fmt.Sprintf("$%d", len(args)), args...)
}

// AppendEvent implements store.Store. Appends hold eventLock, so ids
// become visible in order (a follower never skips one).
func (s *Store) AppendEvent(ctx context.Context, e store.Event) (int64, error) {
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	if e.Type == "" {
		return 0, fmt.Errorf("%w: an event needs a type", store.ErrInvalid)
	}
	var id int64
	err := s.write(ctx, "appending to the event log", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", eventLock); err != nil {
			return fmt.Errorf("postgres: appending to the event log: %w", err)
		}
		err := tx.QueryRow(ctx, "INSERT INTO events (time, type, host, actor, detail) VALUES ($1, $2, $3, $4, $5) RETURNING id",
			nanos(e.Time), e.Type, e.Host, e.Actor, e.Detail).Scan(&id)
		if err != nil {
			return fmt.Errorf("postgres: appending to the event log: %w", err)
		}
		return nil
	})
	return id, err
}

// Events implements store.Store.
func (s *Store) Events(ctx context.Context, after int64, limit int) ([]store.Event, error) {
	return queryAll(ctx, s.pool, "reading the event log", func(r pgx.Rows) (store.Event, error) {
		var e store.Event
		var t int64
		err := r.Scan(&e.ID, &t, &e.Type, &e.Host, &e.Actor, &e.Detail)
		e.Time = fromNanos(t)
		return e, err
	}, "SELECT id, time, type, host, actor, detail FROM events WHERE id > $1 ORDER BY id LIMIT $2", after, max(limit, 0))
}

// LastEventID implements store.Store.
func (s *Store) LastEventID(ctx context.Context) (int64, error) {
	var id int64
	if err := s.pool.QueryRow(ctx, "SELECT COALESCE(MAX(id), 0) FROM events").Scan(&id); err != nil {
		return 0, fmt.Errorf("postgres: reading the event log: %w", err)
	}
	return id, nil
}

// PruneEvents implements store.Store.
func (s *Store) PruneEvents(ctx context.Context, before time.Time, keep int) (int64, error) {
	if keep < 0 {
		return 0, fmt.Errorf("%w: keep %d events", store.ErrInvalid, keep)
	}
	var n int64
	err := s.write(ctx, "pruning the event log", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM events WHERE time < $1
			OR id <= COALESCE((SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET $2), 0)`, nanos(before), keep)
		if err != nil {
			return fmt.Errorf("postgres: pruning the event log: %w", err)
		}
		n = tag.RowsAffected()
		return nil
	})
	return n, err
}

// queryAll runs a read query and scans every row with scan.
func queryAll[T any](ctx context.Context, q queryer, what string, scan func(pgx.Rows) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", what, err)
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: %s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", what, err)
	}
	return out, nil
}

// scanJSON scans one JSON column into a T.
func scanJSON[T any](r pgx.Rows) (T, error) {
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
	return s.write(ctx, "creating a session", func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, "SELECT 1 FROM operators WHERE name = $1 AND revoked_at = 0", operator).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: operator %q unknown or revoked", store.ErrNotFound, operator)
		}
		if err != nil {
			return fmt.Errorf("postgres: creating a session: %w", err)
		}
		_, err = tx.Exec(ctx, "INSERT INTO sessions (token_hash, operator, created_at, expires_at) VALUES ($1, $2, $3, $4)",
			tokenHash, operator, now, nanos(expires))
		if isUnique(err) {
			return fmt.Errorf("%w: session", store.ErrExists)
		}
		if err != nil {
			return fmt.Errorf("postgres: creating a session: %w", err)
		}
		return nil
	})
}

// SessionByToken implements store.Store.
func (s *Store) SessionByToken(ctx context.Context, tokenHash string, now time.Time) (store.Session, error) {
	var x store.Session
	var c, e int64
	err := s.pool.QueryRow(ctx, `SELECT s.operator, s.created_at, s.expires_at FROM sessions s
		JOIN operators o ON o.name = s.operator
		WHERE s.token_hash = $1 AND s.expires_at > $2 AND o.revoked_at = 0`, tokenHash, nanos(now)).Scan(&x.Operator, &c, &e)
	if errors.Is(err, pgx.ErrNoRows) {
		return x, fmt.Errorf("%w: session unknown, ended or expired", store.ErrNotFound)
	}
	if err != nil {
		return x, fmt.Errorf("postgres: looking up a session: %w", err)
	}
	x.CreatedAt, x.ExpiresAt = fromNanos(c), fromNanos(e)
	return x, nil
}

// DeleteSession implements store.Store.
func (s *Store) DeleteSession(ctx context.Context, tokenHash string) error {
	return s.write(ctx, "ending a session", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "DELETE FROM sessions WHERE token_hash = $1", tokenHash); err != nil {
			return fmt.Errorf("postgres: ending a session: %w", err)
		}
		return nil
	})
}

// PruneSessions implements store.Store.
func (s *Store) PruneSessions(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, "pruning sessions", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "DELETE FROM sessions WHERE expires_at < $1", nanos(before))
		if err != nil {
			return fmt.Errorf("postgres: pruning sessions: %w", err)
		}
		n = tag.RowsAffected()
		return nil
	})
	return n, err
}

package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/steward-pve/steward/internal/hub/store"
)

var (
	_ store.Exporter = (*Store)(nil)
	_ store.Importer = (*Store)(nil)
)

// Export implements store.Exporter: every table read in one REPEATABLE
// READ, READ ONLY transaction (one snapshot).
func (s *Store) Export(ctx context.Context) (*store.Dump, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("postgres: exporting: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	d := &store.Dump{}
	each := func(what, query string, scan func(pgx.Rows) error) error {
		rows, err := tx.Query(ctx, query)
		if err != nil {
			return fmt.Errorf("postgres: exporting %s: %w", what, err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := scan(rows); err != nil {
				return fmt.Errorf("postgres: exporting %s: %w", what, err)
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("postgres: exporting %s: %w", what, err)
		}
		return nil
	}
	steps := []func() error{
		func() error {
			return each("hosts", `SELECT id, created_at, enrolled_at, revoked_at, COALESCE(token_hash, ''), blocked, blocked_reason, last_seen, desired_generation
				FROM hosts ORDER BY id COLLATE "C"`, func(r pgx.Rows) error {
				var h store.DumpHost
				var c, e, rv, seen int64
				if err := r.Scan(&h.ID, &c, &e, &rv, &h.TokenHash, &h.Blocked, &h.BlockedReason, &seen, &h.DesiredGeneration); err != nil {
					return err
				}
				h.CreatedAt, h.EnrolledAt, h.RevokedAt, h.LastSeen = fromNanos(c), fromNanos(e), fromNanos(rv), fromNanos(seen)
				d.Hosts = append(d.Hosts, h)
				return nil
			})
		},
		func() error {
			return each("join tokens", `SELECT token_hash, host, expires_at, used_at FROM join_tokens ORDER BY token_hash COLLATE "C"`, func(r pgx.Rows) error {
				var j store.DumpJoinToken
				if err := r.Scan(&j.TokenHash, &j.Host, &j.ExpiresAt, &j.UsedAt); err != nil {
					return err
				}
				d.JoinTokens = append(d.JoinTokens, j)
				return nil
			})
		},
		func() error {
			return each("operators", `SELECT name, token_hash, created_at, revoked_at, last_used FROM operators ORDER BY name COLLATE "C"`, func(r pgx.Rows) error {
				var o store.DumpOperator
				var c, rv, lu int64
				if err := r.Scan(&o.Name, &o.TokenHash, &c, &rv, &lu); err != nil {
					return err
				}
				o.CreatedAt, o.RevokedAt, o.LastUsed = fromNanos(c), fromNanos(rv), fromNanos(lu)
				d.Operators = append(d.Operators, o)
				return nil
			})
		},
		func() error {
			return each("desired", `SELECT host, generation, document, author, created_at FROM desired ORDER BY host COLLATE "C", generation`, func(r pgx.Rows) error {
				var x store.Desired
				var c int64
				if err := r.Scan(&x.Host, &x.Generation, &x.Document, &x.Author, &c); err != nil {
					return err
				}
				x.CreatedAt = fromNanos(c)
				if x.Document == nil {
					x.Document = []byte{}
				}
				d.Desired = append(d.Desired, x)
				return nil
			})
		},
		func() error {
			return each("reports", `SELECT host, body, hash, received_at FROM reports ORDER BY host COLLATE "C"`, func(r pgx.Rows) error {
				var x store.Report
				var at int64
				if err := r.Scan(&x.Host, &x.Body, &x.Hash, &at); err != nil {
					return err
				}
				x.ReceivedAt = fromNanos(at)
				if x.Body == nil {
					x.Body = []byte{}
				}
				d.Reports = append(d.Reports, x)
				return nil
			})
		},
		func() error {
			return each("jobs", `SELECT seq, `+jobCols+` ORDER BY host COLLATE "C", seq`, func(r pgx.Rows) error {
				var seq int64
				j, err := scanJob(seqRow{r, &seq})
				if err != nil {
					return err
				}
				d.Jobs = append(d.Jobs, store.DumpJob{Job: j, Seq: seq})
				return nil
			})
		},
		func() error {
			return each("pending", `SELECT host, ord, since, pending FROM pending ORDER BY host COLLATE "C", ord`, func(r pgx.Rows) error {
				var p store.DumpPending
				var b []byte
				var since int64
				if err := r.Scan(&p.Host, &p.Ord, &since, &b); err != nil {
					return err
				}
				p.Since = fromNanos(since)
				if err := json.Unmarshal(b, &p.Pending); err != nil {
					return err
				}
				d.Pending = append(d.Pending, p)
				return nil
			})
		},
		func() error {
			return each("receipts", `SELECT host, receipt FROM receipts ORDER BY host COLLATE "C", seq`, func(r pgx.Rows) error {
				var x store.DumpReceipt
				var b []byte
				if err := r.Scan(&x.Host, &b); err != nil {
					return err
				}
				if err := json.Unmarshal(b, &x.Receipt); err != nil {
					return err
				}
				d.Receipts = append(d.Receipts, x)
				return nil
			})
		},
		func() error {
			return each("audit", "SELECT id, time, actor, action, host, detail FROM audit ORDER BY id", func(r pgx.Rows) error {
				var e store.AuditEntry
				var t int64
				if err := r.Scan(&e.ID, &t, &e.Actor, &e.Action, &e.Host, &e.Detail); err != nil {
					return err
				}
				e.Time = fromNanos(t)
				d.Audit = append(d.Audit, e)
				return nil
			})
		},
		func() error {
			return each("events", "SELECT id, time, type, host, actor, detail FROM events ORDER BY id", func(r pgx.Rows) error {
				var e store.Event
				var t int64
				if err := r.Scan(&e.ID, &t, &e.Type, &e.Host, &e.Actor, &e.Detail); err != nil {
					return err
				}
				e.Time = fromNanos(t)
				d.Events = append(d.Events, e)
				return nil
			})
		},
		func() error {
			return each("sessions", "SELECT token_hash, operator, created_at, expires_at FROM sessions ORDER BY token_hash", func(r pgx.Rows) error {
				var x store.DumpSession
				var c, e int64
				if err := r.Scan(&x.TokenHash, &x.Operator, &c, &e); err != nil {
					return err
				}
				x.CreatedAt, x.ExpiresAt = fromNanos(c), fromNanos(e)
				d.Sessions = append(d.Sessions, x)
				return nil
			})
		},
		func() error {
			return each("outbox", "SELECT "+outboxCols+" FROM outbox ORDER BY id", func(r pgx.Rows) error {
				n, err := scanNotification(r)
				if err != nil {
					return err
				}
				d.Outbox = append(d.Outbox, n)
				return nil
			})
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// seqRow scans a leading seq column, then hands the rest to scanJob.
type seqRow struct {
	r   pgx.Row
	seq *int64
}

func (s seqRow) Scan(dest ...any) error { return s.r.Scan(append([]any{s.seq}, dest...)...) }

// Import implements store.Importer: one transaction, refused unless the
// database holds no host, operator, audit entry or event.
func (s *Store) Import(ctx context.Context, d *store.Dump) error {
	return s.write(ctx, "importing", func(tx pgx.Tx) error {
		var used bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM hosts) OR EXISTS (SELECT 1 FROM operators) OR EXISTS (SELECT 1 FROM audit) OR EXISTS (SELECT 1 FROM events) OR EXISTS (SELECT 1 FROM outbox)").Scan(&used); err != nil {
			return fmt.Errorf("postgres: importing: %w", err)
		}
		if used {
			return fmt.Errorf("postgres: importing into %s: the database already holds hosts, operators, audit entries, events or notifications; import only into an empty one", s.where)
		}
		b := &pgx.Batch{}
		for _, h := range d.Hosts {
			var tok *string
			if h.TokenHash != "" {
				tok = &h.TokenHash
			}
			b.Queue(`INSERT INTO hosts (id, created_at, enrolled_at, revoked_at, token_hash, blocked, blocked_reason, last_seen, desired_generation)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
				h.ID, nanos(h.CreatedAt), nanos(h.EnrolledAt), nanos(h.RevokedAt), tok, h.Blocked, h.BlockedReason, nanos(h.LastSeen), h.DesiredGeneration)
		}
		for _, j := range d.JoinTokens {
			b.Queue("INSERT INTO join_tokens (token_hash, host, expires_at, used_at) VALUES ($1, $2, $3, $4)", j.TokenHash, j.Host, j.ExpiresAt, j.UsedAt)
		}
		for _, o := range d.Operators {
			b.Queue("INSERT INTO operators (name, token_hash, created_at, revoked_at, last_used) VALUES ($1, $2, $3, $4, $5)",
				o.Name, o.TokenHash, nanos(o.CreatedAt), nanos(o.RevokedAt), nanos(o.LastUsed))
		}
		for _, x := range d.Desired {
			b.Queue("INSERT INTO desired (host, generation, document, author, created_at) VALUES ($1, $2, $3, $4, $5)",
				x.Host, x.Generation, nonNil(x.Document), x.Author, nanos(x.CreatedAt))
		}
		for _, r := range d.Reports {
			b.Queue("INSERT INTO reports (host, body, hash, received_at) VALUES ($1, $2, $3, $4)", r.Host, nonNil(r.Body), r.Hash, nanos(r.ReceivedAt))
		}
		for _, j := range d.Jobs {
			var result []byte
			if j.Result != nil {
				var err error
				if result, err = json.Marshal(j.Result); err != nil {
					return fmt.Errorf("postgres: importing job %s: %w", j.ID, err)
				}
			}
			sigs := j.Signatures
			if sigs == nil {
				sigs = [][]byte{}
			}
			b.Queue(`INSERT INTO jobs (host, id, seq, payload, signatures, uploader, uploaded_at, state, result, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
				j.Host, j.ID, j.Seq, nonNil(j.Payload), sigs, j.Uploader, nanos(j.UploadedAt), j.State, result, nanos(j.UpdatedAt))
		}
		for _, p := range d.Pending {
			body, err := json.Marshal(p.Pending)
			if err != nil {
				return fmt.Errorf("postgres: importing pending of %q: %w", p.Host, err)
			}
			b.Queue("INSERT INTO pending (host, ord, pending, since) VALUES ($1, $2, $3, $4)", p.Host, p.Ord, body, nanos(p.Since))
		}
		for _, r := range d.Receipts {
			body, err := json.Marshal(r.Receipt)
			if err != nil {
				return fmt.Errorf("postgres: importing receipt %d of %q: %w", r.Receipt.Seq, r.Host, err)
			}
			b.Queue("INSERT INTO receipts (host, seq, hash, receipt) VALUES ($1, $2, $3, $4)", r.Host, int64(r.Receipt.Seq), r.Receipt.Hash, body)
		}
		for _, e := range d.Audit {
			b.Queue("INSERT INTO audit (id, time, actor, action, host, detail) VALUES ($1, $2, $3, $4, $5, $6)", e.ID, nanos(e.Time), e.Actor, e.Action, e.Host, e.Detail)
		}
		for _, e := range d.Events {
			b.Queue("INSERT INTO events (id, time, type, host, actor, detail) VALUES ($1, $2, $3, $4, $5, $6)", e.ID, nanos(e.Time), e.Type, e.Host, e.Actor, e.Detail)
		}
		for _, x := range d.Sessions {
			b.Queue("INSERT INTO sessions (token_hash, operator, created_at, expires_at) VALUES ($1, $2, $3, $4)", x.TokenHash, x.Operator, nanos(x.CreatedAt), nanos(x.ExpiresAt))
		}
		for _, n := range d.Outbox {
			b.Queue(`INSERT INTO outbox (id, sink, key, body, created_at, state, attempts, next_at, lease_owner, lease_until, last_error, done_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
				n.ID, n.Sink, n.Key, nonNil(n.Body), nanos(n.CreatedAt), n.State, n.Attempts, nanos(n.NextAt), n.LeaseOwner, nanos(n.LeaseUntil), n.LastError, nanos(n.DoneAt))
		}
		// New entries continue after the imported ids.
		if len(d.Audit) > 0 {
			b.Queue("SELECT setval(pg_get_serial_sequence('audit', 'id'), (SELECT max(id) FROM audit))")
		}
		if len(d.Events) > 0 {
			b.Queue("SELECT setval(pg_get_serial_sequence('events', 'id'), (SELECT max(id) FROM events))")
		}
		if len(d.Outbox) > 0 {
			b.Queue("SELECT setval(pg_get_serial_sequence('outbox', 'id'), (SELECT max(id) FROM outbox))")
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("postgres: importing into %s: %w", s.where, err)
		}
		return nil
	})
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

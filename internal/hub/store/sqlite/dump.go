package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/wire"
)

var _ store.Exporter = (*Store)(nil)

// Export implements store.Exporter: every table read in one read
// transaction (one WAL snapshot), so writes the hub makes meanwhile are
// wholly in the Dump or wholly not.
func (s *Store) Export(ctx context.Context) (*store.Dump, error) {
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("sqlite: exporting: %w", err)
	}
	defer tx.Rollback()
	d := &store.Dump{}
	each := func(what, query string, scan func(*sql.Rows) error) error {
		rows, err := tx.QueryContext(ctx, query)
		if err != nil {
			return fmt.Errorf("sqlite: exporting %s: %w", what, err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := scan(rows); err != nil {
				return fmt.Errorf("sqlite: exporting %s: %w", what, err)
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("sqlite: exporting %s: %w", what, err)
		}
		return nil
	}
	steps := []func() error{
		func() error {
			return each("hosts", `SELECT id, created_at, enrolled_at, revoked_at, COALESCE(token_hash, ''), blocked, blocked_reason, last_seen, desired_generation
				FROM hosts ORDER BY id`, func(r *sql.Rows) error {
				var h store.DumpHost
				var c, e, rv, seen int64
				var blocked int
				if err := r.Scan(&h.ID, &c, &e, &rv, &h.TokenHash, &blocked, &h.BlockedReason, &seen, &h.DesiredGeneration); err != nil {
					return err
				}
				h.CreatedAt, h.EnrolledAt, h.RevokedAt, h.LastSeen = fromNanos(c), fromNanos(e), fromNanos(rv), fromNanos(seen)
				h.Blocked = blocked != 0
				d.Hosts = append(d.Hosts, h)
				return nil
			})
		},
		func() error {
			return each("join tokens", "SELECT token_hash, host, expires_at, used_at FROM join_tokens ORDER BY token_hash", func(r *sql.Rows) error {
				var j store.DumpJoinToken
				if err := r.Scan(&j.TokenHash, &j.Host, &j.ExpiresAt, &j.UsedAt); err != nil {
					return err
				}
				d.JoinTokens = append(d.JoinTokens, j)
				return nil
			})
		},
		func() error {
			return each("operators", "SELECT name, token_hash, created_at, revoked_at, last_used FROM operators ORDER BY name", func(r *sql.Rows) error {
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
			return each("desired", "SELECT host, generation, document, author, created_at FROM desired ORDER BY host, generation", func(r *sql.Rows) error {
				var x store.Desired
				var c int64
				if err := r.Scan(&x.Host, &x.Generation, &x.Document, &x.Author, &c); err != nil {
					return err
				}
				x.CreatedAt = fromNanos(c)
				x.Document = nonNil(x.Document)
				d.Desired = append(d.Desired, x)
				return nil
			})
		},
		func() error {
			return each("reports", "SELECT host, body, hash, received_at FROM reports ORDER BY host", func(r *sql.Rows) error {
				var x store.Report
				var at int64
				if err := r.Scan(&x.Host, &x.Body, &x.Hash, &at); err != nil {
					return err
				}
				x.ReceivedAt = fromNanos(at)
				x.Body = nonNil(x.Body)
				d.Reports = append(d.Reports, x)
				return nil
			})
		},
		func() error {
			return each("jobs", "SELECT seq, "+jobCols+" ORDER BY host, seq", func(r *sql.Rows) error {
				var seq int64
				j, err := scanJob(seqScanner{r, &seq})
				if err != nil {
					return err
				}
				d.Jobs = append(d.Jobs, store.DumpJob{Job: j, Seq: seq})
				return nil
			})
		},
		func() error {
			return each("pending", "SELECT host, ord, since, pending FROM pending ORDER BY host, ord", func(r *sql.Rows) error {
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
			return each("receipts", "SELECT host, receipt FROM receipts ORDER BY host, seq", func(r *sql.Rows) error {
				var x store.DumpReceipt
				var b []byte
				if err := r.Scan(&x.Host, &b); err != nil {
					return err
				}
				var rc wire.Receipt
				if err := json.Unmarshal(b, &rc); err != nil {
					return err
				}
				x.Receipt = rc
				d.Receipts = append(d.Receipts, x)
				return nil
			})
		},
		func() error {
			return each("audit", "SELECT id, time, actor, action, host, detail FROM audit ORDER BY id", func(r *sql.Rows) error {
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
			return each("events", "SELECT id, time, type, host, actor, detail FROM events ORDER BY id", func(r *sql.Rows) error {
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
			return each("sessions", "SELECT token_hash, operator, created_at, expires_at FROM sessions ORDER BY token_hash", func(r *sql.Rows) error {
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
			return each("outbox", "SELECT "+outboxCols+" FROM outbox ORDER BY id", func(r *sql.Rows) error {
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

// seqScanner scans a leading seq column, then hands the rest to scanJob.
type seqScanner struct {
	r   *sql.Rows
	seq *int64
}

func (s seqScanner) Scan(dest ...any) error { return s.r.Scan(append([]any{s.seq}, dest...)...) }

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

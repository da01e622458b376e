package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/steward-pve/steward/internal/hub/store"
)

const outboxCols = "id, sink, key, body, created_at, state, attempts, next_at, lease_owner, lease_until, last_error, done_at"

// scanNotification scans the outboxCols of one row.
func scanNotification(r interface{ Scan(...any) error }) (store.Notification, error) {
	var n store.Notification
	var c, next, lease, done int64
	err := r.Scan(&n.ID, &n.Sink, &n.Key, &n.Body, &c, &n.State, &n.Attempts, &next, &n.LeaseOwner, &lease, &n.LastError, &done)
	n.CreatedAt, n.NextAt, n.LeaseUntil, n.DoneAt = fromNanos(c), fromNanos(next), fromNanos(lease), fromNanos(done)
	n.Body = nonNil(n.Body)
	return n, err
}

// EnqueueNotification implements store.Store. The single writer
// connection makes the dedup check and the insert atomic.
func (s *Store) EnqueueNotification(ctx context.Context, n store.Notification, dedup time.Duration) (int64, error) {
	n, err := store.PrepareNotification(n)
	if err != nil {
		return 0, err
	}
	var id int64
	err = s.write(ctx, "enqueueing a notification", func(tx *sql.Tx) error {
		if dedup > 0 {
			var one int
			err := tx.QueryRowContext(ctx, "SELECT 1 FROM outbox WHERE sink = ? AND key = ? AND created_at > ? LIMIT 1",
				n.Sink, n.Key, nanos(n.CreatedAt.Add(-dedup))).Scan(&one)
			if err == nil {
				return store.DuplicateNotification(n, dedup)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("sqlite: enqueueing a notification: %w", err)
			}
		}
		res, err := tx.ExecContext(ctx, "INSERT INTO outbox (sink, key, body, created_at, state, next_at) VALUES (?, ?, ?, ?, ?, ?)",
			n.Sink, n.Key, n.Body, nanos(n.CreatedAt), store.OutboxPending, nanos(n.NextAt))
		if err != nil {
			return fmt.Errorf("sqlite: enqueueing a notification: %w", err)
		}
		id, err = res.LastInsertId()
		return err
	})
	return id, err
}

// ClaimNotifications implements store.Store.
func (s *Store) ClaimNotifications(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]store.Notification, error) {
	if err := store.CheckClaim(owner, lease, limit); err != nil {
		return nil, err
	}
	var out []store.Notification
	err := s.write(ctx, "claiming notifications", func(tx *sql.Tx) error {
		out = nil
		rows, err := tx.QueryContext(ctx, `UPDATE outbox SET lease_owner = ?, lease_until = ?, attempts = attempts + 1
			WHERE id IN (SELECT id FROM outbox WHERE state = ? AND next_at <= ? AND lease_until <= ? ORDER BY id LIMIT ?)
			RETURNING `+outboxCols,
			owner, nanos(now.Add(lease)), store.OutboxPending, nanos(now), nanos(now), limit)
		if err != nil {
			return fmt.Errorf("sqlite: claiming notifications: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			n, err := scanNotification(rows)
			if err != nil {
				return fmt.Errorf("sqlite: claiming notifications: %w", err)
			}
			out = append(out, n)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("sqlite: claiming notifications: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b store.Notification) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// AckNotification implements store.Store.
func (s *Store) AckNotification(ctx context.Context, id int64, at time.Time) error {
	return s.write(ctx, "acknowledging a notification", func(tx *sql.Tx) error {
		var state string
		err := tx.QueryRowContext(ctx, "SELECT state FROM outbox WHERE id = ?", id).Scan(&state)
		if errors.Is(err, sql.ErrNoRows) {
			return store.NotificationNotFound(id)
		}
		if err != nil {
			return fmt.Errorf("sqlite: acknowledging notification %d: %w", id, err)
		}
		if state != store.OutboxPending {
			return nil
		}
		if _, err := tx.ExecContext(ctx, "UPDATE outbox SET state = ?, done_at = ?, lease_owner = '', lease_until = 0, last_error = '' WHERE id = ?",
			store.OutboxDelivered, nanos(at), id); err != nil {
			return fmt.Errorf("sqlite: acknowledging notification %d: %w", id, err)
		}
		return nil
	})
}

// RetryNotification implements store.Store.
func (s *Store) RetryNotification(ctx context.Context, id int64, owner string, next time.Time, lastErr string, dead bool) error {
	return s.write(ctx, "rescheduling a notification", func(tx *sql.Tx) error {
		var state, holder string
		err := tx.QueryRowContext(ctx, "SELECT state, lease_owner FROM outbox WHERE id = ?", id).Scan(&state, &holder)
		if errors.Is(err, sql.ErrNoRows) {
			return store.NotificationNotFound(id)
		}
		if err != nil {
			return fmt.Errorf("sqlite: rescheduling notification %d: %w", id, err)
		}
		newState, done, err := store.RetryOutcome(id, state, holder, owner, next, dead)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE outbox SET state = ?, next_at = ?, lease_owner = '', lease_until = 0, last_error = ?, done_at = ? WHERE id = ?",
			newState, nanos(next), lastErr, nanos(done), id); err != nil {
			return fmt.Errorf("sqlite: rescheduling notification %d: %w", id, err)
		}
		return nil
	})
}

// Notifications implements store.Store.
func (s *Store) Notifications(ctx context.Context, after int64, limit int) ([]store.Notification, error) {
	return queryAll(ctx, s.r, "reading the outbox", func(r *sql.Rows) (store.Notification, error) { return scanNotification(r) },
		"SELECT "+outboxCols+" FROM outbox WHERE id > ? ORDER BY id LIMIT ?", after, max(limit, 0))
}

// OutboxDepth implements store.Store.
func (s *Store) OutboxDepth(ctx context.Context) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, "SELECT COUNT(*) FROM outbox WHERE state = ?", store.OutboxPending).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: counting the outbox: %w", err)
	}
	return n, nil
}

// PruneNotifications implements store.Store.
func (s *Store) PruneNotifications(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, "pruning the outbox", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM outbox WHERE state <> ? AND created_at < ?", store.OutboxPending, nanos(before))
		if err != nil {
			return fmt.Errorf("sqlite: pruning the outbox: %w", err)
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return n, err
}

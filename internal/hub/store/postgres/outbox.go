package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/steward-pve/steward/internal/hub/store"
)

// outboxLock serializes enqueues, so two replicas enqueueing one key
// within its dedup window store one message.
const outboxLock int64 = 0x73747764_00000005

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

// EnqueueNotification implements store.Store.
func (s *Store) EnqueueNotification(ctx context.Context, n store.Notification, dedup time.Duration) (int64, error) {
	n, err := store.PrepareNotification(n)
	if err != nil {
		return 0, err
	}
	var id int64
	err = s.write(ctx, "enqueueing a notification", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", outboxLock); err != nil {
			return fmt.Errorf("postgres: enqueueing a notification: %w", err)
		}
		if dedup > 0 {
			var dup bool
			err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM outbox WHERE sink = $1 AND key = $2 AND created_at > $3)",
				n.Sink, n.Key, nanos(n.CreatedAt.Add(-dedup))).Scan(&dup)
			if err != nil {
				return fmt.Errorf("postgres: enqueueing a notification: %w", err)
			}
			if dup {
				return store.DuplicateNotification(n, dedup)
			}
		}
		err := tx.QueryRow(ctx, "INSERT INTO outbox (sink, key, body, created_at, state, next_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
			n.Sink, n.Key, n.Body, nanos(n.CreatedAt), store.OutboxPending, nanos(n.NextAt)).Scan(&id)
		if err != nil {
			return fmt.Errorf("postgres: enqueueing a notification: %w", err)
		}
		return nil
	})
	return id, err
}

// ClaimNotifications implements store.Store. FOR UPDATE SKIP LOCKED
// hands concurrent claimers (other replicas) disjoint rows.
func (s *Store) ClaimNotifications(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]store.Notification, error) {
	if err := store.CheckClaim(owner, lease, limit); err != nil {
		return nil, err
	}
	var out []store.Notification
	err := s.write(ctx, "claiming notifications", func(tx pgx.Tx) error {
		var err error
		out, err = queryAll(ctx, tx, "claiming notifications", func(r pgx.Rows) (store.Notification, error) { return scanNotification(r) },
			`UPDATE outbox SET lease_owner = $1, lease_until = $2, attempts = attempts + 1
			WHERE id IN (SELECT id FROM outbox WHERE state = $3 AND next_at <= $4 AND lease_until <= $4 ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED)
			RETURNING `+outboxCols, owner, nanos(now.Add(lease)), store.OutboxPending, nanos(now), limit)
		return err
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b store.Notification) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// AckNotification implements store.Store.
func (s *Store) AckNotification(ctx context.Context, id int64, at time.Time) error {
	return s.write(ctx, "acknowledging a notification", func(tx pgx.Tx) error {
		var state string
		err := tx.QueryRow(ctx, "SELECT state FROM outbox WHERE id = $1 FOR UPDATE", id).Scan(&state)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.NotificationNotFound(id)
		}
		if err != nil {
			return fmt.Errorf("postgres: acknowledging notification %d: %w", id, err)
		}
		if state != store.OutboxPending {
			return nil
		}
		if _, err := tx.Exec(ctx, "UPDATE outbox SET state = $1, done_at = $2, lease_owner = '', lease_until = 0, last_error = '' WHERE id = $3",
			store.OutboxDelivered, nanos(at), id); err != nil {
			return fmt.Errorf("postgres: acknowledging notification %d: %w", id, err)
		}
		return nil
	})
}

// RetryNotification implements store.Store.
func (s *Store) RetryNotification(ctx context.Context, id int64, owner string, next time.Time, lastErr string, dead bool) error {
	return s.write(ctx, "rescheduling a notification", func(tx pgx.Tx) error {
		var state, holder string
		err := tx.QueryRow(ctx, "SELECT state, lease_owner FROM outbox WHERE id = $1 FOR UPDATE", id).Scan(&state, &holder)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.NotificationNotFound(id)
		}
		if err != nil {
			return fmt.Errorf("postgres: rescheduling notification %d: %w", id, err)
		}
		newState, done, err := store.RetryOutcome(id, state, holder, owner, next, dead)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE outbox SET state = $1, next_at = $2, lease_owner = '', lease_until = 0, last_error = $3, done_at = $4 WHERE id = $5",
			newState, nanos(next), lastErr, nanos(done), id); err != nil {
			return fmt.Errorf("postgres: rescheduling notification %d: %w", id, err)
		}
		return nil
	})
}

// Notifications implements store.Store.
func (s *Store) Notifications(ctx context.Context, after int64, limit int) ([]store.Notification, error) {
	return queryAll(ctx, s.pool, "reading the outbox", func(r pgx.Rows) (store.Notification, error) { return scanNotification(r) },
		"SELECT "+outboxCols+" FROM outbox WHERE id > $1 ORDER BY id LIMIT $2", after, max(limit, 0))
}

// OutboxDepth implements store.Store.
func (s *Store) OutboxDepth(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, "SELECT COUNT(*) FROM outbox WHERE state = $1", store.OutboxPending).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: counting the outbox: %w", err)
	}
	return n, nil
}

// PruneNotifications implements store.Store.
func (s *Store) PruneNotifications(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, "pruning the outbox", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "DELETE FROM outbox WHERE state <> $1 AND created_at < $2", store.OutboxPending, nanos(before))
		if err != nil {
			return fmt.Errorf("postgres: pruning the outbox: %w", err)
		}
		n = tag.RowsAffected()
		return nil
	})
	return n, err
}

package store

import (
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/wire"
)

// The rules below are the parts of the Store contract that need no
// database: every implementation applies them around its own SQL, so the
// stores cannot drift apart on what they accept, refuse or write.

// PrepareNotification checks n (CheckNotification) and returns it as
// EnqueueNotification stores it: NextAt defaults to CreatedAt.
func PrepareNotification(n Notification) (Notification, error) {
	if err := CheckNotification(n); err != nil {
		return Notification{}, err
	}
	if n.NextAt.IsZero() {
		n.NextAt = n.CreatedAt
	}
	return n, nil
}

// DuplicateNotification is the error EnqueueNotification returns when it
// drops n because its Sink and Key were enqueued within dedup.
func DuplicateNotification(n Notification, dedup time.Duration) error {
	return fmt.Errorf("%w: a notification for %s %q within %v", ErrExists, n.Sink, n.Key, dedup)
}

// CheckClaim reports whether ClaimNotifications' arguments make a claim.
func CheckClaim(owner string, lease time.Duration, limit int) error {
	if owner == "" || lease <= 0 || limit <= 0 {
		return fmt.Errorf("%w: a claim needs an owner, a positive lease and a positive limit", ErrInvalid)
	}
	return nil
}

// NotificationNotFound is the error for an outbox id that does not exist.
func NotificationNotFound(id int64) error {
	return fmt.Errorf("%w: notification %d", ErrNotFound, id)
}

// RetryOutcome decides RetryNotification for notification id, found in
// state leased to holder: the state and DoneAt to write (DoneAt is zero
// while the message stays pending), or ErrConflict when owner no longer
// holds its lease.
func RetryOutcome(id int64, state, holder, owner string, next time.Time, dead bool) (newState string, doneAt time.Time, err error) {
	if state != OutboxPending || holder != owner {
		return "", time.Time{}, fmt.Errorf("%w: notification %d is no longer leased to %q", ErrConflict, id, owner)
	}
	if dead {
		return OutboxDead, next, nil
	}
	return OutboxPending, time.Time{}, nil
}

// CheckIfMatch reports whether PutDesired may store a new generation on
// host, now at generation cur, under the caller's If-Match (ifMatch).
func CheckIfMatch(host string, ifMatch, cur int64) error {
	if ifMatch != AnyGeneration && ifMatch != cur {
		return fmt.Errorf("%w: host %q is at generation %d, not %d", ErrConflict, host, cur, ifMatch)
	}
	return nil
}

// JobResultState is the job state SetJobResult stores for r: a held job
// is waiting again; done, failed and rejected are final. Any other state
// is ErrInvalid.
func JobResultState(r wire.JobResult) (string, error) {
	switch r.State {
	case wire.JobHeld:
		return JobWaiting, nil
	case wire.JobDone, wire.JobFailed, wire.JobRejected:
		return r.State, nil
	default:
		return "", fmt.Errorf("%w: job result state %q", ErrInvalid, r.State)
	}
}

// JobResultApplies decides SetJobResult for a job now in state cur: true
// to write r, false when r repeats the job's final state (a retried
// report: nothing to do), ErrConflict when r contradicts it.
func JobResultApplies(cur string, r wire.JobResult) (bool, error) {
	if cur == JobWaiting {
		return true, nil
	}
	if cur == r.State {
		return false, nil
	}
	return false, fmt.Errorf("%w: job %s is already %s; result %s refused", ErrConflict, r.Job, cur, r.State)
}

// Migrations returns the schema migrations in fsys (files
// migrations/NNNN_*.sql, numbered from 0001 without gaps), in order. who
// names the store in errors.
func Migrations(fsys fs.FS, who string) ([]string, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	out := make([]string, 0, len(names))
	for i, n := range names {
		want := fmt.Sprintf("migrations/%04d_", i+1)
		if !strings.HasPrefix(n, want) {
			return nil, fmt.Errorf("%s: migration %s out of sequence (want %s*)", who, n, want)
		}
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, err
		}
		out = append(out, string(b))
	}
	return out, nil
}

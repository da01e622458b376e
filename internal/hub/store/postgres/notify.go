package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// NotifyChannel is the PostgreSQL channel desired changes travel on.
const NotifyChannel = "steward_desired"

// Notifier carries desired changes between hub replicas on one database
// with LISTEN/NOTIFY; it implements the hub's Notifier. A notification's
// payload is "HOST GENERATION" (host ids hold no space). PostgreSQL
// delivers a notification to every session listening when it commits, and
// to none that is not: a replica whose listening connection drops misses
// what was sent meanwhile, which the hub's periodic re-check covers.
type Notifier struct {
	s *Store
}

// Notifier returns a Notifier on the store's database.
func (s *Store) Notifier() *Notifier { return &Notifier{s: s} }

// Publish sends NOTIFY on NotifyChannel.
func (n *Notifier) Publish(ctx context.Context, host string, gen int64) error {
	if _, err := n.s.pool.Exec(ctx, "SELECT pg_notify($1, $2)", NotifyChannel, host+" "+strconv.FormatInt(gen, 10)); err != nil {
		return fmt.Errorf("postgres: notifying desired generation %d of %q: %w", gen, host, err)
	}
	return nil
}

// Subscribe LISTENs on NotifyChannel on a connection of its own (taken
// out of the pool for as long as it listens) and calls fn for every
// well-formed notification until ctx ends (nil) or the connection fails
// (the error).
func (n *Notifier) Subscribe(ctx context.Context, fn func(host string, gen int64)) error {
	pc, err := n.s.pool.Acquire(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("postgres: connecting to listen for desired changes: %w", err)
	}
	conn := pc.Hijack() // a listening session is not returned to the pool
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("postgres: LISTEN %s: %w", NotifyChannel, err)
	}
	for {
		nt, err := conn.WaitForNotification(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("postgres: waiting for desired changes: %w", err)
		}
		host, gen, ok := parsePayload(nt.Payload)
		if !ok {
			continue // not ours: ignore it
		}
		fn(host, gen)
	}
}

// parsePayload reads "HOST GENERATION".
func parsePayload(p string) (string, int64, bool) {
	i := strings.LastIndexByte(p, ' ')
	if i <= 0 {
		return "", 0, false
	}
	gen, err := strconv.ParseInt(p[i+1:], 10, 64)
	if err != nil || gen < 0 {
		return "", 0, false
	}
	return p[:i], gen, true
}

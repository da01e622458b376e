package alert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/steward-pve/steward/internal/backoff"
	"github.com/steward-pve/steward/internal/hub/store"
)

// Outbox is the part of store.Store the Dispatcher uses.
type Outbox interface {
	EnqueueNotification(ctx context.Context, n store.Notification, dedup time.Duration) (int64, error)
	ClaimNotifications(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]store.Notification, error)
	AckNotification(ctx context.Context, id int64, at time.Time) error
	RetryNotification(ctx context.Context, id int64, owner string, next time.Time, lastErr string, dead bool) error
	OutboxDepth(ctx context.Context) (int, error)
	PruneNotifications(ctx context.Context, before time.Time) (int64, error)
}

// Defaults of a Dispatcher.
const (
	DefaultLease       = 2 * time.Minute
	DefaultPoll        = 2 * time.Second
	DefaultSendTimeout = 30 * time.Second
	// GiveUpAfter: a message still failing this long after it was
	// enqueued is given up.
	GiveUpAfter = 24 * time.Hour
	// Retention: delivered and given-up messages are kept this long (it
	// must exceed every dedup window).
	Retention = 7 * 24 * time.Hour
)

// Retry is the backoff between attempts of one message: 5s doubling to
// 15 minutes, the lower half of each delay randomized.
var Retry = backoff.Policy{Initial: 5 * time.Second, Max: 15 * time.Minute, Multiplier: 2, Jitter: 0.5}

// Dispatcher routes alerts into the outbox and delivers the outbox to the
// sinks. Emit is safe for concurrent use; Run is called once.
type Dispatcher struct {
	cfg   *Config
	sinks map[string]Sink
	out   Outbox
	owner string
	log   *slog.Logger
	now   func() time.Time
	poll  time.Duration
	lease time.Duration
	retry backoff.Policy

	wake chan struct{} // a buffered nudge: something was enqueued

	deliveries *prometheus.CounterVec // by outcome
	enqueued   *prometheus.CounterVec // by outcome: queued, deduplicated, failed
	mu         sync.Mutex
	depth      int // last OutboxDepth read
}

// DispatcherOptions configure NewDispatcher; zero values take defaults.
type DispatcherOptions struct {
	// Owner names this hub in leases (default: a random id per process).
	Owner  string
	Logger *slog.Logger
	Now    func() time.Time
	Poll   time.Duration // how often the outbox is checked for due messages
	// Lease is how long a claim holds: another hub sends a message whose
	// claimer died once its lease ran out. A send is cut off at half the
	// lease (at most DefaultSendTimeout), so it ends before the lease.
	Lease time.Duration
	// Retry is the backoff between attempts (zero: the package's Retry).
	Retry backoff.Policy
}

// NewDispatcher returns a Dispatcher for cfg's rules over sinks (Build).
func NewDispatcher(cfg *Config, sinks map[string]Sink, out Outbox, o DispatcherOptions) *Dispatcher {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.Retry == (backoff.Policy{}) {
		o.Retry = Retry
	}
	if o.Owner == "" {
		o.Owner = fmt.Sprintf("hub-%d-%d", time.Now().UnixNano(), rand.Uint32())
	}
	return &Dispatcher{cfg: cfg, sinks: sinks, out: out, owner: o.Owner, log: o.Logger, now: o.Now, poll: o.Poll, lease: o.Lease, retry: o.Retry,
		wake: make(chan struct{}, 1),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "steward_hub_notifications_delivered_total", Help: "Notification delivery attempts by outcome: delivered, retry (failed, tried again later), dead (given up).",
		}, []string{"outcome"}),
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "steward_hub_notifications_enqueued_total", Help: "Notifications routed to a sink by outcome: queued, deduplicated (dropped within the dedup window), failed (not stored).",
		}, []string{"outcome"}),
	}
}

// Config returns the dispatcher's config (read only).
func (d *Dispatcher) Config() *Config { return d.cfg }

// Collectors returns the dispatcher's metrics, for the hub's registry.
func (d *Dispatcher) Collectors() []prometheus.Collector {
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "steward_hub_outbox_depth", Help: "Notifications waiting for delivery (read at each outbox check).",
	}, func() float64 {
		d.mu.Lock()
		defer d.mu.Unlock()
		return float64(d.depth)
	})
	return []prometheus.Collector{d.deliveries, d.enqueued, depth}
}

// Emit stores a for every sink its rules route it to (durable when Emit
// returns), dropping the sinks whose dedup window holds its key. It
// returns how many messages it stored; an error is the first store
// failure (the others are still tried).
func (d *Dispatcher) Emit(ctx context.Context, a Alert) (int, error) {
	if a.Time.IsZero() {
		a.Time = d.now().UTC()
	}
	return d.enqueue(ctx, a, d.cfg.Route(a))
}

// EmitOnce is Emit for an alert whose key names one occurrence of a
// condition (a silence since a given time, one pending action): it is
// sent once however often and by however many hubs it is emitted,
// until the outbox forgets it (Retention), whatever the rules' dedup
// windows.
func (d *Dispatcher) EmitOnce(ctx context.Context, a Alert) (int, error) {
	if a.Time.IsZero() {
		a.Time = d.now().UTC()
	}
	targets := d.cfg.Route(a)
	for i := range targets {
		targets[i].Dedup = max(targets[i].Dedup, Retention)
	}
	return d.enqueue(ctx, a, targets)
}

func (d *Dispatcher) enqueue(ctx context.Context, a Alert, targets []Target) (int, error) {
	if len(targets) == 0 {
		return 0, nil
	}
	body, err := json.Marshal(a)
	if err != nil {
		return 0, fmt.Errorf("alert: encoding: %w", err)
	}
	n := 0
	var first error
	for _, t := range targets {
		_, err := d.out.EnqueueNotification(ctx, store.Notification{Sink: t.Sink, Key: a.Key(), Body: body, CreatedAt: a.Time}, t.Dedup)
		switch {
		case err == nil:
			n++
			d.enqueued.WithLabelValues("queued").Inc()
		case errors.Is(err, store.ErrExists):
			d.enqueued.WithLabelValues("deduplicated").Inc()
		default:
			d.enqueued.WithLabelValues("failed").Inc()
			d.log.Error("notification not stored", "sink", t.Sink, "key", a.Key(), "err", err)
			if first == nil {
				first = err
			}
		}
	}
	if n > 0 {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
	return n, first
}

// ErrNoSink: a test names a sink the config does not have.
var ErrNoSink = errors.New("alert: no such sink")

// Test enqueues a test message for the named sink, bypassing rules and
// dedup, and returns its outbox id.
func (d *Dispatcher) Test(ctx context.Context, sink, by string) (int64, error) {
	if _, ok := d.sinks[sink]; !ok {
		return 0, fmt.Errorf("%w: %q", ErrNoSink, sink)
	}
	a := Alert{Event: Test, Time: d.now().UTC(), Subject: by, Summary: fmt.Sprintf("A test message from steward, sent by %s to sink %s.", by, sink)}
	body, err := json.Marshal(a)
	if err != nil {
		return 0, err
	}
	id, err := d.out.EnqueueNotification(ctx, store.Notification{Sink: sink, Key: a.Key(), Body: body, CreatedAt: a.Time}, 0)
	if err == nil {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
	return id, err
}

// Run delivers the outbox until ctx ends: claims due messages, sends each
// (one at a time, bounded by DefaultSendTimeout or half the lease), acknowledges or
// reschedules it, and prunes old delivered ones hourly.
func (d *Dispatcher) Run(ctx context.Context) {
	t := time.NewTicker(d.poll)
	defer t.Stop()
	var pruned time.Time
	for {
		for ctx.Err() == nil && d.once(ctx) {
		}
		if now := d.now(); now.Sub(pruned) > time.Hour {
			pruned = now
			if _, err := d.out.PruneNotifications(ctx, now.Add(-Retention)); err != nil && ctx.Err() == nil {
				d.log.Error("pruning the outbox", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.wake:
		}
	}
}

// once claims and handles one batch; it reports whether the batch was
// full (more may be due).
func (d *Dispatcher) once(ctx context.Context) bool {
	const batch = 16
	if n, err := d.out.OutboxDepth(ctx); err == nil {
		d.mu.Lock()
		d.depth = n
		d.mu.Unlock()
	}
	ns, err := d.out.ClaimNotifications(ctx, d.owner, d.now(), d.lease, batch)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("claiming notifications", "err", err)
		}
		return false
	}
	for _, n := range ns {
		if ctx.Err() != nil {
			return false // the lease runs out; another claim sends it
		}
		d.deliver(ctx, n)
	}
	return len(ns) == batch
}

func (d *Dispatcher) deliver(ctx context.Context, n store.Notification) {
	var a Alert
	err := json.Unmarshal(n.Body, &a)
	if err != nil {
		err = fmt.Errorf("%w: the stored message does not decode: %v", ErrPermanent, err)
	}
	sink, ok := d.sinks[n.Sink]
	if err == nil && !ok {
		err = fmt.Errorf("%w: no sink %q in the notification config (removed since the message was queued)", ErrPermanent, n.Sink)
	}
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, min(DefaultSendTimeout, d.lease/2))
		err = sink.Send(sctx, Message{ID: n.ID, Alert: a})
		cancel()
	}
	now := d.now()
	if err == nil {
		if aerr := d.out.AckNotification(context.WithoutCancel(ctx), n.ID, now); aerr != nil {
			d.log.Error("acknowledging a sent notification (it may be sent again)", "id", n.ID, "err", aerr)
		}
		d.deliveries.WithLabelValues("delivered").Inc()
		return
	}
	if ctx.Err() != nil {
		return // shutting down: the lease runs out and the message is sent later
	}
	dead := errors.Is(err, ErrPermanent) || now.Sub(n.CreatedAt) > GiveUpAfter
	next := now.Add(d.retry.Delay(n.Attempts, nil))
	if dead {
		next = now
		d.deliveries.WithLabelValues("dead").Inc()
		d.log.Error("notification given up", "id", n.ID, "sink", n.Sink, "key", n.Key, "attempts", n.Attempts, "err", err)
	} else {
		d.deliveries.WithLabelValues("retry").Inc()
		d.log.Warn("notification failed; retrying", "id", n.ID, "sink", n.Sink, "attempt", n.Attempts, "next", next, "err", err)
	}
	if rerr := d.out.RetryNotification(context.WithoutCancel(ctx), n.ID, d.owner, next, truncate(err.Error(), 1000), dead); rerr != nil {
		d.log.Error("rescheduling a notification", "id", n.ID, "err", rerr)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

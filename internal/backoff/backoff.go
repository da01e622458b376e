// Package backoff computes retry delays and tracks per-guest failures so the
// agent backs off a failing guest (exponentially, jittered, capped) instead of
// hammering PVE, while every other guest keeps converging.
//
// The package is pure: time and randomness are injected (a now function and a
// random source), so callers and tests control both. It imports no I/O
// package.
package backoff

import (
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// Default values used for zero fields of a Policy.
const (
	DefaultInitial    = time.Second
	DefaultMax        = 5 * time.Minute
	DefaultMultiplier = 2.0
)

// Default is the policy the agent uses unless configured otherwise: 1s,
// doubling, capped at 5m, with the lower 20% of each delay randomized away.
var Default = Policy{
	Initial:    DefaultInitial,
	Max:        DefaultMax,
	Multiplier: DefaultMultiplier,
	Jitter:     0.2,
}

// Policy describes an exponential backoff.
//
// The zero value is usable: Initial ≤ 0 means DefaultInitial, Max ≤ 0 means
// DefaultMax, Multiplier 0 (or NaN) means DefaultMultiplier, and a Multiplier
// in (0, 1) is treated as 1 (a constant delay; a backoff never shrinks).
// Jitter is clamped to [0, 1]; 0 (the zero value) means no jitter. A Max below
// Initial caps every delay at Max.
type Policy struct {
	// Initial is the delay after the first failure.
	Initial time.Duration
	// Max caps every delay, jitter included.
	Max time.Duration
	// Multiplier is the growth factor between consecutive attempts.
	Multiplier float64
	// Jitter is the fraction of each delay that is randomized: a delay d
	// becomes a value in [d·(1−Jitter), d]. Randomizing downwards keeps Max a
	// hard cap and spreads out guests that failed together.
	Jitter float64
}

// normalized returns p with defaults and clamps applied.
func (p Policy) normalized() Policy {
	if p.Initial <= 0 {
		p.Initial = DefaultInitial
	}
	if p.Max <= 0 {
		p.Max = DefaultMax
	}
	switch {
	case p.Multiplier == 0 || math.IsNaN(p.Multiplier):
		p.Multiplier = DefaultMultiplier
	case p.Multiplier < 1:
		p.Multiplier = 1
	}
	switch {
	case math.IsNaN(p.Jitter) || p.Jitter < 0:
		p.Jitter = 0
	case p.Jitter > 1:
		p.Jitter = 1
	}
	return p
}

// Delay returns how long to wait after the attempt-th consecutive failure:
// attempt 1 waits Initial, each further attempt multiplies by Multiplier, and
// the result never exceeds Max. attempt ≤ 0 (no failure yet) returns 0.
//
// rnd must return values in [0, 1); values outside are clamped. A nil rnd uses
// math/rand/v2. rnd is called at most once, and only when Jitter > 0. The
// result is never negative and does not overflow for any attempt.
func (p Policy) Delay(attempt int, rnd func() float64) time.Duration {
	if attempt <= 0 {
		return 0
	}
	p = p.normalized()
	// Computed in float64: math.Pow saturates at +Inf instead of wrapping,
	// and any value at or above Max (Inf and NaN included) is replaced by Max
	// itself, so no float is ever converted back beyond Duration's range.
	base := p.Max
	if f := float64(p.Initial) * math.Pow(p.Multiplier, float64(attempt-1)); f < float64(p.Max) {
		base = time.Duration(f)
	}
	if p.Jitter == 0 {
		return base
	}
	if rnd == nil {
		rnd = rand.Float64
	}
	r := rnd()
	if !(r >= 0) { // negative or NaN
		r = 0
	} else if r > 1 {
		r = 1
	}
	sub := float64(base) * p.Jitter * r
	if sub >= float64(base) {
		return 0
	}
	return base - time.Duration(sub)
}

// Tracker tracks consecutive failures per key (a guest's vmid) and when each
// key may be retried. A key with no recorded failure is always ready.
//
// A Tracker is safe for concurrent use. The now and rnd functions it was
// built with are called with the Tracker's lock held, so they need not be
// safe for concurrent use themselves, and must not call back into it.
type Tracker struct {
	policy Policy
	now    func() time.Time
	rnd    func() float64

	mu   sync.Mutex
	keys map[int]keyState // guarded by mu; only keys with ≥1 failure
}

type keyState struct {
	attempts int
	next     time.Time
}

// NewTracker returns a Tracker applying p. A nil now uses time.Now; a nil
// rnd uses math/rand/v2.
func NewTracker(p Policy, now func() time.Time, rnd func() float64) *Tracker {
	if now == nil {
		now = time.Now
	}
	if rnd == nil {
		rnd = rand.Float64
	}
	return &Tracker{policy: p, now: now, rnd: rnd, keys: make(map[int]keyState)}
}

// Failure records one more consecutive failure of key and returns the time
// from which it may be retried (now plus the policy's delay for the new
// attempt count).
func (t *Tracker) Failure(key int) (next time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.keys[key]
	if s.attempts < math.MaxInt {
		s.attempts++
	}
	s.next = t.now().Add(t.policy.Delay(s.attempts, t.rnd))
	t.keys[key] = s
	return s.next
}

// Success forgets key's failures: it is ready at once and its next failure
// starts again at the policy's Initial delay. Call it also for a key that no
// longer exists, so the Tracker stays bounded.
func (t *Tracker) Success(key int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.keys, key)
}

// Ready reports whether key may be tried now. next is the time it becomes (or
// became) ready; it is the zero time for a key without failures.
func (t *Tracker) Ready(key int) (ok bool, next time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, found := t.keys[key]
	if !found {
		return true, time.Time{}
	}
	return !t.now().Before(s.next), s.next
}

// Attempts returns the number of consecutive failures recorded for key since
// its last Success; 0 for an unknown key.
func (t *Tracker) Attempts(key int) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.keys[key].attempts
}

package backoff

import (
	"fmt"
	"go/build"
	"math"
	"sync"
	"testing"
	"time"
)

func fixed(v float64) func() float64 { return func() float64 { return v } }

func TestDelay(t *testing.T) {
	noJitter := Policy{Initial: time.Second, Max: time.Minute, Multiplier: 2}
	jit := Policy{Initial: time.Second, Max: time.Minute, Multiplier: 2, Jitter: 0.5}
	tests := []struct {
		name    string
		p       Policy
		attempt int
		rnd     func() float64
		want    time.Duration
	}{
		{"attempt 0 no delay", noJitter, 0, nil, 0},
		{"negative attempt no delay", noJitter, -5, nil, 0},
		{"attempt 1 is Initial", noJitter, 1, nil, time.Second},
		{"attempt 2 doubles", noJitter, 2, nil, 2 * time.Second},
		{"attempt 3", noJitter, 3, nil, 4 * time.Second},
		{"attempt 6", noJitter, 6, nil, 32 * time.Second},
		{"attempt 7 capped", noJitter, 7, nil, time.Minute},
		{"attempt 100 capped", noJitter, 100, nil, time.Minute},
		{"huge attempt no overflow", noJitter, math.MaxInt, nil, time.Minute},
		{"huge multiplier no overflow", Policy{Initial: time.Second, Max: time.Hour, Multiplier: 1e300}, 3, nil, time.Hour},
		{"max duration cap", Policy{Initial: time.Second, Max: math.MaxInt64, Multiplier: 2}, math.MaxInt, nil, math.MaxInt64},
		{"multiplier 1.5", Policy{Initial: time.Second, Max: time.Minute, Multiplier: 1.5}, 3, nil, 2250 * time.Millisecond},
		{"multiplier below 1 is constant", Policy{Initial: time.Second, Max: time.Minute, Multiplier: 0.5}, 5, nil, time.Second},
		{"zero policy uses defaults attempt 1", Policy{}, 1, nil, DefaultInitial},
		{"zero policy uses defaults attempt 4", Policy{}, 4, nil, 8 * DefaultInitial},
		{"zero policy cap", Policy{}, 50, nil, DefaultMax},
		{"negative durations use defaults", Policy{Initial: -time.Second, Max: -time.Second}, 2, nil, 2 * DefaultInitial},
		{"NaN multiplier uses default", Policy{Initial: time.Second, Max: time.Minute, Multiplier: math.NaN()}, 3, nil, 4 * time.Second},
		{"max below initial caps", Policy{Initial: time.Minute, Max: time.Second, Multiplier: 2}, 1, nil, time.Second},
		{"jitter rnd 0 keeps full delay", jit, 3, fixed(0), 4 * time.Second},
		{"jitter rnd 0.5 removes a quarter", jit, 3, fixed(0.5), 3 * time.Second},
		{"jitter rnd near 1 approaches half", jit, 3, fixed(0.999), 2*time.Second + 2*time.Millisecond},
		{"jitter at cap stays below cap", jit, 40, fixed(0.5), 45 * time.Second},
		{"jitter rnd above 1 clamped", jit, 1, fixed(7), 500 * time.Millisecond},
		{"jitter rnd negative clamped", jit, 1, fixed(-3), time.Second},
		{"jitter rnd NaN clamped", jit, 1, fixed(math.NaN()), time.Second},
		{"jitter above 1 clamped", Policy{Initial: time.Second, Max: time.Minute, Multiplier: 2, Jitter: 5}, 1, fixed(0.5), 500 * time.Millisecond},
		{"negative jitter is none", Policy{Initial: time.Second, Max: time.Minute, Multiplier: 2, Jitter: -1}, 1, fixed(0.5), time.Second},
		{"Default policy attempt 2 rnd 1", Default, 2, fixed(1), 1600 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Delay(tt.attempt, tt.rnd); got != tt.want {
				t.Errorf("Delay(%d) = %v; want %v", tt.attempt, got, tt.want)
			}
		})
	}
}

func TestDelayRndNotCalledWithoutJitter(t *testing.T) {
	called := 0
	rnd := func() float64 { called++; return 0.5 }
	Policy{Initial: time.Second, Max: time.Minute, Multiplier: 2}.Delay(3, rnd)
	if called != 0 {
		t.Errorf("rnd called %d times with Jitter 0; want 0", called)
	}
	Default.Delay(3, rnd)
	if called != 1 {
		t.Errorf("rnd called %d times with Jitter > 0; want 1", called)
	}
}

func TestDelayNilRndWithinBounds(t *testing.T) {
	p := Policy{Initial: time.Second, Max: time.Minute, Multiplier: 2, Jitter: 0.2}
	for attempt := 1; attempt <= 12; attempt++ {
		full := p.Delay(attempt, fixed(0))
		low := p.Delay(attempt, fixed(1))
		for range 50 {
			got := p.Delay(attempt, nil)
			if got < low || got > full {
				t.Fatalf("Delay(%d, nil) = %v; want within [%v, %v]", attempt, got, low, full)
			}
		}
	}
}

// fakeClock is a manually advanced clock for Tracker tests.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestTracker(t *testing.T) {
	clk := &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	start := clk.t
	tr := NewTracker(Policy{Initial: time.Second, Max: 10 * time.Second, Multiplier: 2}, clk.now, fixed(0))

	if ok, next := tr.Ready(101); !ok || !next.IsZero() {
		t.Fatalf("Ready(101) on fresh tracker = %v, %v; want true, zero time", ok, next)
	}
	if got := tr.Attempts(101); got != 0 {
		t.Fatalf("Attempts(101) = %d; want 0", got)
	}

	// Consecutive failures grow the delay, each measured from the time of the failure.
	steps := []struct {
		advance time.Duration
		want    time.Duration // next - failure time
	}{
		{0, time.Second},
		{time.Second, 2 * time.Second},
		{2 * time.Second, 4 * time.Second},
		{4 * time.Second, 8 * time.Second},
		{8 * time.Second, 10 * time.Second},
		{10 * time.Second, 10 * time.Second},
	}
	for i, s := range steps {
		clk.advance(s.advance)
		next := tr.Failure(101)
		if got := next.Sub(clk.t); got != s.want {
			t.Fatalf("failure %d: next-now = %v; want %v", i+1, got, s.want)
		}
		if got := tr.Attempts(101); got != i+1 {
			t.Fatalf("failure %d: Attempts = %d; want %d", i+1, got, i+1)
		}
		if ok, n := tr.Ready(101); ok || !n.Equal(next) {
			t.Fatalf("failure %d: Ready right after = %v, %v; want false, %v", i+1, ok, n, next)
		}
		clk.advance(s.want - time.Nanosecond)
		if ok, _ := tr.Ready(101); ok {
			t.Fatalf("failure %d: Ready 1ns before next = true; want false", i+1)
		}
		clk.advance(time.Nanosecond)
		if ok, n := tr.Ready(101); !ok || !n.Equal(next) {
			t.Fatalf("failure %d: Ready at next = %v, %v; want true, %v", i+1, ok, n, next)
		}
		clk.t = clk.t.Add(-s.want) // back to failure time; the next step advances from there
	}
	if clk.t.Before(start) {
		t.Fatalf("test clock went backwards")
	}

	// Another key is independent.
	if ok, _ := tr.Ready(102); !ok {
		t.Errorf("Ready(102) = false while only 101 failed; want true")
	}
	next := tr.Failure(102)
	if got := next.Sub(clk.t); got != time.Second {
		t.Errorf("first failure of 102: delay %v; want %v", got, time.Second)
	}

	// Success resets.
	tr.Success(101)
	if got := tr.Attempts(101); got != 0 {
		t.Errorf("Attempts(101) after Success = %d; want 0", got)
	}
	if ok, n := tr.Ready(101); !ok || !n.IsZero() {
		t.Errorf("Ready(101) after Success = %v, %v; want true, zero time", ok, n)
	}
	if got := tr.Failure(101).Sub(clk.t); got != time.Second {
		t.Errorf("failure after Success: delay %v; want Initial %v", got, time.Second)
	}
	if got := tr.Attempts(102); got != 1 {
		t.Errorf("Attempts(102) after Success(101) = %d; want 1", got)
	}
	tr.Success(999) // unknown key: no effect, no panic
}

func TestTrackerJitterUsesRnd(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	tr := NewTracker(Policy{Initial: 10 * time.Second, Max: time.Minute, Multiplier: 2, Jitter: 0.5}, clk.now, fixed(0.5))
	if got := tr.Failure(7).Sub(clk.t); got != 7500*time.Millisecond {
		t.Errorf("jittered first delay = %v; want %v", got, 7500*time.Millisecond)
	}
}

func TestTrackerNilFuncs(t *testing.T) {
	tr := NewTracker(Policy{Initial: time.Hour, Max: 2 * time.Hour, Multiplier: 2, Jitter: 0.1}, nil, nil)
	before := time.Now()
	next := tr.Failure(1)
	if d := next.Sub(before); d < 54*time.Minute || d > time.Hour+time.Minute {
		t.Errorf("Failure with real clock: next-now = %v; want about [54m, 60m]", d)
	}
	if ok, _ := tr.Ready(1); ok {
		t.Errorf("Ready right after a 1h backoff = true; want false")
	}
}

func TestTrackerConcurrent(t *testing.T) {
	var mu sync.Mutex
	clk := &fakeClock{t: time.Unix(0, 0)}
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clk.now() }
	tr := NewTracker(Policy{}, now, fixed(0))
	const workers, rounds = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				key := w*1000 + i%5
				tr.Failure(key)
				tr.Ready(key)
				tr.Attempts(key)
				if i%50 == 49 {
					tr.Success(key)
				}
			}
		})
	}
	wg.Wait()
	// Each worker's key w*1000+k saw 40 failures with a Success after every
	// 10th failure of that key (i%50==49 hits k = 4 only): check that key.
	for w := range workers {
		if got := tr.Attempts(w*1000 + 4); got != 0 {
			t.Errorf("Attempts(%d) = %d; want 0 (last op was Success)", w*1000+4, got)
		}
		if got := tr.Attempts(w*1000 + 0); got != rounds/5 {
			t.Errorf("Attempts(%d) = %d; want %d", w*1000, got, rounds/5)
		}
	}
}

// FuzzDelay checks Delay's bounds for any policy, attempt and random value:
// never negative, never above the (normalized) Max, never above the
// jitter-free delay, and jitter-free delays never shrink as attempts grow.
func FuzzDelay(f *testing.F) {
	f.Add(int64(time.Second), int64(time.Minute), 2.0, 0.2, 3, 0.5)
	f.Add(int64(0), int64(0), 0.0, 0.0, 0, 0.0)
	f.Add(int64(-1), int64(math.MaxInt64), 1e308, 1.0, math.MaxInt, 0.999)
	f.Add(int64(1), int64(1), math.Inf(1), math.NaN(), 64, -1.0)
	f.Add(int64(math.MaxInt64), int64(time.Second), 0.3, 2.0, -7, math.NaN())
	f.Fuzz(func(t *testing.T, initial, maxD int64, mult, jitter float64, attempt int, r float64) {
		p := Policy{Initial: time.Duration(initial), Max: time.Duration(maxD), Multiplier: mult, Jitter: jitter}
		capD := p.normalized().Max
		got := p.Delay(attempt, fixed(r))
		full := p.Delay(attempt, fixed(0))
		if got < 0 || got > capD || got > full {
			t.Fatalf("Delay(%d) of %+v with rnd %v = %v; want within [0, min(%v, %v)]", attempt, p, r, got, capD, full)
		}
		if attempt <= 0 && got != 0 {
			t.Fatalf("Delay(%d) = %v; want 0", attempt, got)
		}
		if attempt > 0 && attempt < math.MaxInt {
			pj := p
			pj.Jitter = 0
			a, b := pj.Delay(attempt, nil), pj.Delay(attempt+1, nil)
			if b < a {
				t.Fatalf("jitter-free Delay(%d) = %v > Delay(%d) = %v; want non-decreasing", attempt, a, attempt+1, b)
			}
		}
	})
}

// TestPureImports keeps the package free of I/O: it may import only these.
func TestPureImports(t *testing.T) {
	allowed := map[string]bool{"math": true, "math/rand/v2": true, "sync": true, "time": true}
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatalf("reading package imports: %v", err)
	}
	for _, imp := range pkg.Imports {
		if !allowed[imp] {
			t.Errorf("backoff imports %q; want only %v (the package is pure)", imp, fmt.Sprint(keys(allowed)))
		}
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

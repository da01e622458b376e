package journal

import (
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// OnSync sees every fsync that made a record durable, and none that
// failed.
func TestOnSync(t *testing.T) {
	var n atomic.Int64
	j := open(t, t.TempDir(), Options{OnSync: func(d time.Duration) {
		if d < 0 {
			t.Errorf("OnSync got a negative duration %v", d)
		}
		n.Add(1)
	}})
	defer j.Close()
	must(t, j.Begin(configOp("a", 101, "k1")))
	must(t, j.End("a", Result{OK: true}))
	if got := n.Load(); got != 2 {
		t.Errorf("OnSync called %d times for two records appended one after the other; want 2", got)
	}
	j.fault = func(op string) error {
		if op == "sync" {
			return syscall.EIO
		}
		return nil
	}
	if err := j.Begin(configOp("b", 102, "k2")); err == nil {
		t.Fatal("Begin with a failing fsync succeeded")
	}
	if got := n.Load(); got != 2 {
		t.Errorf("OnSync called for a failed fsync (%d calls); want still 2", got)
	}
}

package journal

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func signedOp(id, nonce string, exp time.Time) Op {
	op := configOp(id, 101, "signed:"+nonce)
	op.Source, op.Nonce, op.NonceExpires = "signed", nonce, exp
	return op
}

// A begin that carries a nonce commits it: a second op with the nonce is
// refused while the first is in flight and after it ended, across reopen
// and compaction, until the nonce expires.
func TestBeginCommitsNonce(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	exp := clk.Now().Add(time.Hour)
	j := open(t, dir, Options{Now: clk.Now})
	must(t, j.Begin(signedOp("a", "n1", exp)))
	if err := j.Begin(signedOp("b", "n1", exp)); !errors.Is(err, ErrNonceSpent) {
		t.Fatalf("second begin with an in-flight nonce: got %v; want ErrNonceSpent", err)
	}
	must(t, j.End("a", Result{OK: false, Error: "task failed"}))
	must(t, j.Compact())
	j.Close()
	j = open(t, dir, Options{Now: clk.Now, Retention: time.Minute})
	clk.Advance(30 * time.Minute) // past retention, nonce still valid
	must(t, j.Compact())
	if id, ok := j.NonceSpent("n1"); !ok || id != "a" {
		t.Fatalf("NonceSpent after compaction past retention = %q, %v; want a, true", id, ok)
	}
	if err := j.Begin(signedOp("c", "n1", exp)); !errors.Is(err, ErrNonceSpent) {
		t.Fatalf("begin after a final failure: got %v; want ErrNonceSpent", err)
	}
	clk.Advance(time.Hour)
	must(t, j.Compact())
	if _, ok := j.NonceSpent("n1"); ok {
		t.Fatal("nonce still held after it expired")
	}
}

// An op that ended with Retry (PVE proves it did not run) spends neither
// its nonce nor its idempotency key: the same job may begin again.
func TestRetryReleasesNonceAndKey(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	exp := clk.Now().Add(time.Hour)
	j := open(t, dir, Options{Now: clk.Now})
	must(t, j.Begin(signedOp("a", "n1", exp)))
	must(t, j.End("a", Result{Error: "pve: 503", Retry: true}))
	j.Close()
	j = open(t, dir, Options{Now: clk.Now})
	if _, ok := j.NonceSpent("n1"); ok {
		t.Fatal("a nonce whose op ended with Retry counts as spent")
	}
	must(t, j.Begin(signedOp("b", "n1", exp)))
	must(t, j.End("b", Result{OK: true}))
	if err := j.Begin(signedOp("c", "n1", exp)); !errors.Is(err, ErrNonceSpent) {
		t.Fatalf("begin after success: got %v; want ErrNonceSpent", err)
	}
}

// A task recorded for one op is owned by it, also after compaction.
func TestTaskOwner(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	must(t, j.Begin(configOp("a", 101, "k1")))
	must(t, j.Task("a", "UPID:x"))
	must(t, j.End("a", Result{OK: true}))
	must(t, j.Compact())
	j.Close()
	j = open(t, dir, Options{})
	if id, ok := j.TaskOwner("UPID:x"); !ok || id != "a" {
		t.Fatalf("TaskOwner = %q, %v; want a, true", id, ok)
	}
}

// After a full disk frees up the journal works again by itself, with the
// failure logged once, not on every call, and everything acknowledged
// before and after the failure survives a reopen.
func TestRecoversAfterDiskFull(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	var logs bytes.Buffer
	j := open(t, dir, Options{Now: clk.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	must(t, j.Begin(configOp("a", 101, "k1")))
	var full atomic.Bool
	full.Store(true)
	j.fault = func(string) error {
		if full.Load() {
			return syscall.ENOSPC
		}
		return nil
	}
	for i := range 100 {
		if err := j.End("a", Result{OK: true}); err == nil || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("End %d on a full disk: got %v; want ENOSPC", i, err)
		}
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n > 2 {
		t.Errorf("a full disk logged %d errors in 100 calls within a minute; want at most 2:\n%s", n, logs.String())
	}
	full.Store(false)
	must(t, j.End("a", Result{OK: true}))
	must(t, j.Begin(configOp("b", 102, "k2")))
	j.Close()
	j = open(t, dir, Options{Now: clk.Now})
	if _, ok := j.Completed("k1"); !ok {
		t.Error("op a's end, acknowledged after the disk freed up, lost on reopen")
	}
	if got := j.InFlight(); len(got) != 1 || got[0].ID != "b" {
		t.Errorf("in flight after reopen = %v; want [b]", got)
	}
}

// A journal closed while failed stays closed: no call repairs it.
func TestClosedAfterFailureStaysClosed(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	j.fault = func(string) error { return syscall.ENOSPC }
	if err := j.Begin(configOp("a", 101, "k1")); err == nil {
		t.Fatal("Begin on a full disk succeeded")
	}
	j.fault = nil
	j.Close()
	if err := j.Begin(configOp("b", 101, "k2")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Begin after Close: got %v; want ErrClosed", err)
	}
}

package nonce

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func open(t *testing.T, dir string, max int, c *clock) *Store {
	t.Helper()
	s, err := Open(dir, Options{Max: max, Now: c.Now})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestUseAndReplay(t *testing.T) {
	c := newClock()
	s := open(t, t.TempDir(), 0, c)
	exp := c.Now().Add(time.Hour)
	if err := s.Use("aaaa", exp); err != nil {
		t.Fatalf("first Use: got %v; want nil", err)
	}
	if err := s.Use("aaaa", exp); !errors.Is(err, ErrReplayed) {
		t.Fatalf("second Use: got %v; want ErrReplayed", err)
	}
	if err := s.Use("bbbb", exp); err != nil {
		t.Fatalf("other nonce: got %v; want nil", err)
	}
	if got := s.Len(); got != 2 {
		t.Fatalf("Len: got %d; want 2", got)
	}
}

func TestReplayAfterRestart(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	s := open(t, dir, 0, c)
	exp := c.Now().Add(time.Hour)
	for _, n := range []string{"n1", "n2", "n3"} {
		if err := s.Use(n, exp); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s2 := open(t, dir, 0, c)
	for _, n := range []string{"n1", "n2", "n3"} {
		if err := s2.Use(n, exp); !errors.Is(err, ErrReplayed) {
			t.Errorf("Use(%s) after restart: got %v; want ErrReplayed", n, err)
		}
	}
	if err := s2.Use("n4", exp); err != nil {
		t.Errorf("new nonce after restart: got %v; want nil", err)
	}
}

func TestFullRefusesThenFreesOnExpiry(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	s := open(t, dir, 3, c)
	for i, n := range []string{"a", "b", "c"} {
		if err := s.Use(n, c.Now().Add(time.Duration(i+1)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Use("d", c.Now().Add(time.Hour)); !errors.Is(err, ErrFull) {
		t.Fatalf("Use when full: got %v; want ErrFull", err)
	}
	// Full also after restart: capacity is not regained by forgetting.
	s.Close()
	s = open(t, dir, 3, c)
	if err := s.Use("d", c.Now().Add(time.Hour)); !errors.Is(err, ErrFull) {
		t.Fatalf("Use when full after restart: got %v; want ErrFull", err)
	}
	c.Add(61 * time.Second) // "a" expires
	if err := s.Use("d", c.Now().Add(time.Hour)); err != nil {
		t.Fatalf("Use after one expiry: got %v; want nil", err)
	}
	// Back at capacity: b, c and d are live.
	if err := s.Use("e", c.Now().Add(time.Hour)); !errors.Is(err, ErrFull) {
		t.Fatalf("Use when full again: got %v; want ErrFull", err)
	}
}

func TestExpiredNotReloaded(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	s := open(t, dir, 0, c)
	if err := s.Use("short", c.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.Use("long", c.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	c.Add(2 * time.Minute)
	s = open(t, dir, 0, c)
	if got := s.Len(); got != 1 {
		t.Fatalf("Len after restart past one expiry: got %d; want 1", got)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(headerLen + 16 + len("long")); fi.Size() != want {
		t.Fatalf("compacted file size: got %d; want %d", fi.Size(), want)
	}
}

func TestTornTailTolerated(t *testing.T) {
	c := newClock()
	exp := c.Now().Add(time.Hour)
	good := append([]byte(magic), encodeRecord("keep1", exp.Unix())...)
	good = append(good, encodeRecord("keep2", exp.Unix())...)
	last := encodeRecord("torn", exp.Unix())
	corrupt := append([]byte(nil), last...)
	corrupt[len(corrupt)-1] ^= 0xff
	tests := []struct {
		name string
		tail []byte
	}{
		{"short length", last[:3]},
		{"short payload", last[:len(last)-2]},
		{"crc mismatch", corrupt},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}},
		{"zeros", make([]byte, 32)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, FileName), append(append([]byte(nil), good...), tt.tail...), 0o600); err != nil {
				t.Fatal(err)
			}
			s := open(t, dir, 0, c)
			for _, n := range []string{"keep1", "keep2"} {
				if err := s.Use(n, exp); !errors.Is(err, ErrReplayed) {
					t.Errorf("Use(%s): got %v; want ErrReplayed", n, err)
				}
			}
			if err := s.Use("torn", exp); err != nil {
				t.Errorf("Use(torn): got %v; want nil (torn record was never acknowledged)", err)
			}
			s.Close()
			s = open(t, dir, 0, c)
			if err := s.Use("torn", exp); !errors.Is(err, ErrReplayed) {
				t.Errorf("Use(torn) after restart: got %v; want ErrReplayed", err)
			}
		})
	}
}

func TestBadHeaderIsError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte("something else entirely"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); err == nil {
		t.Fatal("Open with foreign file: got nil error; want error")
	}
}

func TestCompactionKeepsFileBounded(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	s := open(t, dir, 10, c)
	for i := range 1000 {
		n := "n" + string(rune('a'+i%26)) + string(rune('a'+(i/26)%26)) + string(rune('a'+i/676))
		if err := s.Use(n, c.Now().Add(time.Second)); err != nil {
			t.Fatalf("Use #%d: %v", i, err)
		}
		c.Add(time.Second)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	// At most 2*live+64 records (+1 just appended) of ≤ 20 bytes each.
	if max := int64(headerLen + (2*10+65)*20); fi.Size() > max {
		t.Fatalf("file size after 1000 expired uses: got %d; want ≤ %d", fi.Size(), max)
	}
}

func TestUseValidation(t *testing.T) {
	c := newClock()
	s := open(t, t.TempDir(), 0, c)
	long := make([]byte, MaxNonceLen+1)
	for i := range long {
		long[i] = 'a'
	}
	tests := []struct {
		name  string
		nonce string
		exp   time.Time
	}{
		{"empty", "", c.Now().Add(time.Hour)},
		{"too long", string(long), c.Now().Add(time.Hour)},
		{"space", "a b", c.Now().Add(time.Hour)},
		{"non-ascii", "é", c.Now().Add(time.Hour)},
		{"expired", "ok", c.Now().Add(-time.Second)},
		{"expires now", "ok", c.Now()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Use(tt.nonce, tt.exp)
			if err == nil || errors.Is(err, ErrReplayed) || errors.Is(err, ErrFull) {
				t.Fatalf("got %v; want a validation error", err)
			}
		})
	}
}

func TestConcurrentUseOnce(t *testing.T) {
	c := newClock()
	s := open(t, t.TempDir(), 0, c)
	exp := c.Now().Add(time.Hour)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 8 {
		wg.Go(func() {
			if s.Use("same", exp) == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("successful concurrent uses of one nonce: got %d; want 1", ok)
	}
}

// A flipped byte in an early record is corruption, not a torn tail: Open
// refuses the store, names the offset, and leaves the file as it was,
// instead of forgetting every nonce after the damage.
func TestEarlyCorruptionRefused(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1_700_000_000, 0)
	s, err := Open(dir, Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"first", "second", "third"} {
		if err := s.Use(n, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	path := filepath.Join(dir, FileName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[headerLen+10] ^= 0x01 // inside the first record's payload
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, Options{Now: func() time.Time { return now }})
	var ce *CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) || ce.Offset != headerLen {
		t.Fatalf("Open of a store damaged in its first record: got %v; want *CorruptError at offset %d", err, headerLen)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(after, data) {
		t.Error("Open rewrote a corrupt store; it must leave it for the operator")
	}
}

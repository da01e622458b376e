package desiredfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const doc1 = "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve-a:\n    guests:\n      101: {state: running}\n"
const doc2 = "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve-a:\n    guests:\n      101: {state: stopped}\n"

// counted returns a File on path whose parses are counted. Its clock is an
// hour ahead, so no write in the test is "too recent to trust".
func counted(path string) (*File, *int) {
	n := new(int)
	later := time.Now().Add(time.Hour)
	return &File{Path: path, OnParse: func() { *n++ }, Now: func() time.Time { return later }}, n
}

// Issue 7 defect 8: an unchanged file is not re-read and re-parsed every
// tick; a changed one is.
func TestFileParsesOnlyWhenChanged(t *testing.T) {
	p := write(t, "fleet.yaml", doc1)
	f, parses := counted(p)
	first, err := f.Desired(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		doc, err := f.Desired(t.Context())
		if err != nil || doc != first {
			t.Fatalf("unchanged file: got %p, %v; want the same document %p", doc, err, first)
		}
	}
	if *parses != 1 {
		t.Fatalf("unchanged file parsed %d times in 6 calls; want 1", *parses)
	}

	// Rewritten with the same bytes (new mtime and ctime): read and
	// hashed, not parsed.
	if err := os.WriteFile(p, []byte(doc1), 0o600); err != nil {
		t.Fatal(err)
	}
	if doc, err := f.Desired(t.Context()); err != nil || doc != first || *parses != 1 {
		t.Fatalf("same content rewritten: got %p, %v, %d parses; want the same document and 1 parse", doc, err, *parses)
	}

	// Changed, with the same size and the old mtime put back.
	st, _ := os.Stat(p)
	if err := os.WriteFile(p, []byte(doc2), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	doc, err := f.Desired(t.Context())
	if err != nil || *parses != 2 {
		t.Fatalf("changed file: got %v, %d parses; want a second parse", err, *parses)
	}
	if g := doc.ForHost("pve-a").Guests[101]; g.State != "stopped" {
		t.Errorf("changed file: got state %q; want stopped", g.State)
	}
}

// A file changed moments ago may change again without its stat changing:
// it is read and hashed on every call until it settles (but parsed only
// when its content differs).
func TestFileRecentlyChangedIsHashed(t *testing.T) {
	p := write(t, "fleet.yaml", doc1)
	parses := 0
	now := time.Now()
	f := &File{Path: p, OnParse: func() { parses++ }, Now: func() time.Time { return now }}
	if _, err := f.Desired(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !f.last.racy {
		t.Fatal("a file written just now is not treated as too recent to trust")
	}
	// Same size, same mtime, different content: only the hash sees it.
	st, _ := os.Stat(p)
	os.WriteFile(p, []byte(doc2), 0o600)
	os.Chtimes(p, st.ModTime(), st.ModTime())
	f.last.id = idOf(mustStat(t, p)) // as if the stat had not changed at all
	doc, err := f.Desired(t.Context())
	if err != nil || parses != 2 || doc.ForHost("pve-a").Guests[101].State != "stopped" {
		t.Fatalf("got %v, %d parses; want the new content parsed", err, parses)
	}
	// Once settled, the stat alone answers.
	now = now.Add(time.Minute)
	f.Desired(t.Context())
	if f.last.racy {
		t.Error("a settled file is still treated as too recent")
	}
	for range 3 {
		f.Desired(t.Context())
	}
	if parses != 2 {
		t.Errorf("settled file: %d parses; want still 2", parses)
	}
}

func mustStat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// A document that fails to parse fails every call with the same error,
// without being parsed again; fixing the file is picked up.
func TestFileParseErrorCached(t *testing.T) {
	p := write(t, "bad.yaml", "apiVersion: steward/v1\nkind: Fleet\nhostz: {}\n")
	f, parses := counted(p)
	for range 3 {
		if doc, err := f.Desired(t.Context()); err == nil || doc != nil || !strings.Contains(err.Error(), "hostz") {
			t.Fatalf("got %v, %v; want the parse error", doc, err)
		}
	}
	if *parses != 1 {
		t.Errorf("bad file parsed %d times; want 1", *parses)
	}
	os.WriteFile(p, []byte(doc1), 0o600)
	if _, err := f.Desired(t.Context()); err != nil || *parses != 2 {
		t.Errorf("fixed file: got %v, %d parses; want it parsed", err, *parses)
	}
}

// An oversized file is refused before it is read, naming the file, its
// size, the limit and the flag that raises it.
func TestFileTooLarge(t *testing.T) {
	p := write(t, "big.yaml", doc1+"#"+strings.Repeat("x", 200)+"\n")
	size := mustStat(t, p).Size()
	f, parses := counted(p)
	f.MaxBytes = 100
	_, err := f.Desired(t.Context())
	if err == nil {
		t.Fatal("got no error for a file over the limit")
	}
	for _, want := range []string{p, fmt.Sprintf("%d bytes", size), "at most 100", "--desired-max-bytes", "STEWARD_DESIRED_MAX_BYTES"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q; want it to contain %q", err, want)
		}
	}
	if *parses != 0 {
		t.Errorf("oversized file parsed %d times; want 0", *parses)
	}
	f.MaxBytes = size
	if _, err := f.Desired(t.Context()); err != nil {
		t.Errorf("at the limit: %v", err)
	}
}

func TestDefaultMaxBytes(t *testing.T) {
	p := write(t, "big.yaml", "")
	if err := os.Truncate(p, DefaultMaxBytes+1); err != nil {
		t.Fatal(err)
	}
	_, err := (&File{Path: p}).Desired(t.Context())
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("at most %d", DefaultMaxBytes)) {
		t.Errorf("got %v; want the default limit of %d bytes", err, DefaultMaxBytes)
	}
}

// BenchmarkDesiredUnchanged is the per-tick cost of a large unchanged
// desired file (issue 7: a 60 MB file cost 17 s and 3.3 GB every tick).
func BenchmarkDesiredUnchanged(b *testing.B) {
	var s strings.Builder
	s.WriteString("apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve-a:\n    guests:\n")
	for i := 100; s.Len() < 3<<20; i++ {
		fmt.Fprintf(&s, "      %d: {state: running, config: {cores: 2, memory: 2048}, tags: [prod, web]}\n", i)
	}
	p := filepath.Join(b.TempDir(), "fleet.yaml")
	if err := os.WriteFile(p, []byte(s.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	f := &File{Path: p, Now: func() time.Time { return later }}
	if _, err := f.Desired(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Desired(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}

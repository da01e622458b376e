package inbox

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/signedop"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// scanBounded fails instead of hanging if Scan blocks (a FIFO opened
// without O_NONBLOCK never returns).
func scanBounded(t *testing.T, dir string) ([]Job, []Problem) {
	t.Helper()
	type res struct {
		jobs     []Job
		problems []Problem
	}
	ch := make(chan res, 1)
	go func() {
		j, p := Scan(dir)
		ch <- res{j, p}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	select {
	case r := <-ch:
		return r.jobs, r.problems
	case <-ctx.Done():
		t.Fatal("Scan blocked")
		return nil, nil
	}
}

func TestScanHostileEntries(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.json"), "payload-a")
	write(t, filepath.Join(dir, "a.json.sig"), "sig-a1")
	write(t, filepath.Join(dir, "a.json.sig.2"), "sig-a2")
	// A directory named like a job.
	if err := os.Mkdir(filepath.Join(dir, "b.json"), 0o700); err != nil {
		t.Fatal(err)
	}
	// A FIFO as a job and as a signature.
	if err := syscall.Mkfifo(filepath.Join(dir, "c.json"), 0o600); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "d.json"), "payload-d")
	if err := syscall.Mkfifo(filepath.Join(dir, "d.json.sig"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A symlink to /dev/zero: read without a bound it exhausts memory.
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "e.json")); err != nil {
		t.Fatal(err)
	}
	// An oversized payload.
	write(t, filepath.Join(dir, "f.json"), strings.Repeat("x", signedop.MaxPayloadSize+1))
	// A symlink to a regular file: refused in the inbox.
	if err := os.Symlink(filepath.Join(dir, "a.json"), filepath.Join(dir, "g.json")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "z.json"), "payload-z")
	write(t, filepath.Join(dir, "README"), "not a job")

	jobs, problems := scanBounded(t, dir)
	var got []string
	for _, j := range jobs {
		got = append(got, filepath.Base(j.File)+":"+string(j.Payload)+":"+string(bytes.Join(j.Signatures, []byte(","))))
	}
	want := []string{"a.json:payload-a:sig-a1,sig-a2", "z.json:payload-z:"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("jobs: got %q; want %q", got, want)
	}
	wantProblems := map[string]string{
		"b.json":     "a directory",
		"c.json":     "named pipe",
		"d.json.sig": "named pipe",
		"e.json":     "symbolic link",
		"f.json":     "at most 65536",
		"g.json":     "symbolic link",
	}
	if len(problems) != len(wantProblems) {
		t.Errorf("got %d problems %v; want %d", len(problems), problems, len(wantProblems))
	}
	for _, p := range problems {
		w, ok := wantProblems[filepath.Base(p.File)]
		if !ok {
			t.Errorf("unexpected problem %s: %v", p.File, p.Err)
			continue
		}
		if msg := p.Err.Error(); !strings.Contains(msg, p.File) || !strings.Contains(msg, w) || !strings.Contains(msg, "skipped") {
			t.Errorf("problem %s: got %q; want it to name the file, say %q and that the job is skipped", p.File, msg, w)
		}
	}
}

func TestScanMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	jobs, problems := Scan(dir)
	if len(jobs) != 0 || len(problems) != 1 || problems[0].File != dir {
		t.Fatalf("got %v, %v; want one problem naming %s", jobs, problems, dir)
	}
}

// TestInboxLogsOncePerVerdict: a bad entry is logged when it appears and
// when its verdict changes, not on every read.
func TestInboxLogsOncePerVerdict(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	in := &Inbox{Dir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	bad := filepath.Join(dir, "x.json")
	if err := os.Mkdir(bad, 0o700); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "ok.json"), "p")
	count := func() int { return strings.Count(logs.String(), "entry skipped") }
	for range 3 {
		if jobs := in.Read(); len(jobs) != 1 {
			t.Fatalf("got %d jobs; want the one good job", len(jobs))
		}
	}
	if n := count(); n != 1 {
		t.Fatalf("after 3 reads: got %d warnings; want 1\n%s", n, logs.String())
	}
	// The verdict changes: now a FIFO instead of a directory.
	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(bad, 0o600); err != nil {
		t.Fatal(err)
	}
	in.Read()
	in.Read()
	if n := count(); n != 2 {
		t.Fatalf("after the verdict changed: got %d warnings; want 2\n%s", n, logs.String())
	}
	// Fixed, then broken again: reported again.
	os.Remove(bad)
	in.Read()
	if !strings.Contains(logs.String(), "no longer a problem") {
		t.Errorf("a fixed entry is not reported as fixed:\n%s", logs.String())
	}
	if err := os.Mkdir(bad, 0o700); err != nil {
		t.Fatal(err)
	}
	in.Read()
	if n := count(); n != 3 {
		t.Errorf("after it came back: got %d warnings; want 3", n)
	}
}

func TestInboxNoDir(t *testing.T) {
	if jobs := (&Inbox{}).Read(); jobs != nil {
		t.Errorf("got %v; want no jobs without a directory", jobs)
	}
}

package safefile

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readBounded runs ReadFile in a goroutine and fails the test instead of
// hanging when it blocks: the regression being guarded is an open that
// never returns.
func readBounded(t *testing.T, fn func(string, int64) ([]byte, error), path string, limit int64) ([]byte, error) {
	t.Helper()
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		b, err := fn(path, limit)
		ch <- res{b, err}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-ctx.Done():
		t.Fatalf("reading %s did not return: it blocked", path)
		return nil, nil
	}
}

func TestReadFileRegular(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, fn := range []func(string, int64) ([]byte, error){ReadFile, ReadFileNoFollow} {
		b, err := readBounded(t, fn, p, 6)
		if err != nil || string(b) != "hello\n" {
			t.Errorf("got %q, %v; want %q", b, err, "hello\n")
		}
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFile(empty, 1); err != nil || len(b) != 0 {
		t.Errorf("empty file: got %q, %v; want no bytes, no error", b, err)
	}
}

func TestReadFileSymlinkToRegular(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFile(link, 10); err != nil || string(b) != "x" {
		t.Errorf("ReadFile through a symlink: got %q, %v; want %q", b, err, "x")
	}
	_, err := ReadFileNoFollow(link, 10)
	var nr *NotRegularError
	if !errors.As(err, &nr) || nr.Mode != fs.ModeSymlink || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("ReadFileNoFollow through a symlink: got %v; want a NotRegularError naming a symbolic link", err)
	}
}

func TestReadFileRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	subdir := filepath.Join(dir, "x.json")
	if err := os.Mkdir(subdir, 0o700); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	fifoLink := filepath.Join(dir, "fifolink")
	if err := os.Symlink(fifo, fifoLink); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
	}{
		{"fifo", fifo, "named pipe (FIFO)"},
		{"symlink to fifo", fifoLink, "named pipe (FIFO)"},
		{"directory", subdir, "a directory"},
		{"symlink to /dev/zero", zero, "character device"},
		{"/dev/zero", "/dev/zero", "character device"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := readBounded(t, ReadFile, tt.path, 1<<20)
			var nr *NotRegularError
			if !errors.As(err, &nr) {
				t.Fatalf("got %d bytes, %v; want a NotRegularError", len(b), err)
			}
			if !strings.Contains(err.Error(), tt.path) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q; want it to name %s and say %q", err, tt.path, tt.want)
			}
		})
	}
}

func TestReadFileTooLarge(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(p, bytes.Repeat([]byte("a"), 1001), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := ReadFile(p, 1000)
	var tl *TooLargeError
	if !errors.As(err, &tl) || b != nil {
		t.Fatalf("got %d bytes, %v; want a TooLargeError", len(b), err)
	}
	if tl.Size != 1001 || tl.Limit != 1000 {
		t.Errorf("got size %d limit %d; want 1001 and 1000", tl.Size, tl.Limit)
	}
	for _, want := range []string{p, "1001 bytes", "at most 1000"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q; want it to contain %q", err, want)
		}
	}
	if b, err := ReadFile(p, 1001); err != nil || len(b) != 1001 {
		t.Errorf("at the limit: got %d bytes, %v; want 1001 bytes", len(b), err)
	}
}

// TestReadAllBounded checks the read itself stops at limit+1 bytes, for a
// file that grows after the size check: the reader is endless.
func TestReadAllBounded(t *testing.T) {
	b, err := readAll(endless{}, nil, 11)
	if err != nil || len(b) != 11 {
		t.Errorf("got %d bytes, %v; want 11", len(b), err)
	}
}

type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }

func TestReadFileMissing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nope")
	_, err := ReadFile(p, 10)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), p) {
		t.Errorf("got %v; want fs.ErrNotExist naming %s", err, p)
	}
}

func TestStat(t *testing.T) {
	dir := t.TempDir()
	if _, err := Stat(dir); err == nil {
		t.Error("Stat of a directory: got no error; want NotRegularError")
	}
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("abc"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, err := Stat(p); err != nil || st.Size() != 3 {
		t.Errorf("got %v, %v; want size 3", st, err)
	}
}

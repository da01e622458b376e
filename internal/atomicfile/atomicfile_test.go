package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// entries returns the names in dir, sorted.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestWriteCreatesAndReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	for i, content := range []string{"first", "second, longer content", ""} {
		if err := Write(path, []byte(content), 0o640); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != content {
			t.Errorf("write %d: got %q; want %q", i, got, content)
		}
		if got, want := entries(t, dir), []string{"state.json"}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("write %d: directory holds %v; want %v (temporary file left behind)", i, got, want)
		}
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := fi.Mode().Perm(), os.FileMode(0o640); got != want {
			t.Errorf("got mode %v; want %v", got, want)
		}
	}
}

func TestWriteFailuresLeaveTargetIntact(t *testing.T) {
	steps := []string{"create", "write", "chmod", "sync", "close", "rename"}
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f")
			if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
				t.Fatal(err)
			}
			injected := errors.New("injected failure")
			err := write(path, []byte("new content"), 0o600, func(s string) error {
				if s == step {
					return injected
				}
				return nil
			})
			if !errors.Is(err, injected) {
				t.Fatalf("got error %v; want one wrapping the injected failure", err)
			}
			if !strings.HasPrefix(err.Error(), "atomicfile: ") {
				t.Errorf("got error %q; want the atomicfile: prefix", err)
			}
			got, rerr := os.ReadFile(path)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if string(got) != "old" {
				t.Errorf("target holds %q after failed %s; want %q", got, step, "old")
			}
			if got, want := entries(t, dir), []string{"f"}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("directory holds %v; want %v (temporary file not removed)", got, want)
			}
		})
	}
}

func TestWriteDirSyncFailureReportsButReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	injected := errors.New("injected failure")
	err := write(path, []byte("new"), 0o600, func(s string) error {
		if s == "syncdir" {
			return injected
		}
		return nil
	})
	if !errors.Is(err, injected) {
		t.Fatalf("got error %v; want the injected directory sync failure", err)
	}
	got, rerr := os.ReadFile(path)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if string(got) != "new" {
		t.Errorf("got %q; want %q (the rename had happened)", got, "new")
	}
	if got, want := entries(t, dir), []string{"f"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("directory holds %v; want %v", got, want)
	}
}

func TestWriteRefusesNonRegularTarget(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	err := Write(sub, []byte("x"), 0o600)
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("got error %v; want a refusal naming a non-regular file", err)
	}
	if fi, err := os.Stat(sub); err != nil || !fi.IsDir() {
		t.Errorf("directory was replaced or removed: %v", err)
	}
	if got, want := entries(t, dir), []string{"sub"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("directory holds %v; want %v", got, want)
	}
}

func TestWriteMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "f")
	err := Write(path, []byte("x"), 0o600)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got error %v; want one wrapping os.ErrNotExist", err)
	}
}

func TestWriteConcurrent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	const n = 8
	contents := make([][]byte, n)
	for i := range contents {
		contents[i] = bytes.Repeat([]byte{byte('a' + i)}, 4096)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = Write(path, contents[i], 0o600) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range contents {
		if bytes.Equal(got, c) {
			found = true
		}
	}
	if !found {
		t.Errorf("final content (%d bytes) is none of the written contents", len(got))
	}
	if got, want := entries(t, dir), []string{"f"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("directory holds %v; want %v", got, want)
	}
}

func TestMove(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "a"), filepath.Join(dir, "sub", "b")
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, []byte("job"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := Move(src, dst); err != nil {
		t.Fatalf("Move: %v", err)
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != "job" {
		t.Errorf("dst = %q, %v; want %q", b, err, "job")
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Errorf("src still exists (stat: %v)", err)
	}
	// An existing target is never replaced; a directory is not moved.
	if err := os.WriteFile(src, []byte("other"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Move(src, dst); err == nil {
		t.Errorf("Move over an existing file succeeded")
	}
	if b, _ := os.ReadFile(dst); string(b) != "job" {
		t.Errorf("dst overwritten: %q", b)
	}
	if err := Move(filepath.Join(dir, "sub"), filepath.Join(dir, "sub2")); err == nil {
		t.Errorf("Move of a directory succeeded")
	}
}

// Across file systems (EXDEV) Move copies durably, keeps the permission
// bits and removes the source.
func TestMoveAcrossDevices(t *testing.T) {
	rename = func(old, new string) error {
		return &os.LinkError{Op: "rename", Old: old, New: new, Err: syscall.EXDEV}
	}
	t.Cleanup(func() { rename = os.Rename })
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := os.WriteFile(src, []byte("job"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := Move(src, dst); err != nil {
		t.Fatalf("Move: %v", err)
	}
	st, err := os.Stat(dst)
	if b, _ := os.ReadFile(dst); err != nil || string(b) != "job" || st.Mode().Perm() != 0o640 {
		t.Errorf("dst = %q (stat %v); want %q with mode 0640", b, err, "job")
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Errorf("src still exists (stat: %v)", err)
	}
}

package nonce

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestGoldenV2 pins the store's bytes: a store this steward writes is
// read by every later one.
func TestGoldenV2(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	s := open(t, dir, 0, c)
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, n := range []string{"0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"} {
		if err := s.Use(n, exp); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	got, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "nonces-v2.golden")
	if os.Getenv("STEWARD_UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with STEWARD_UPDATE_GOLDEN=1 to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("store file:\n got %x\nwant %x (the golden file; a change breaks existing state directories)", got, want)
	}
	// The golden bytes load.
	dir2 := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir2, FileName), want, 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, dir2, 0, c)
	defer s2.Close()
	if !s2.Used("0123456789abcdef0123456789abcdef") || s2.Len() != 2 {
		t.Errorf("golden store loads %d nonces; want both", s2.Len())
	}
}

// TestUpgradeV1: a store written by an earlier steward (testdata, version
// 1, big-endian) keeps every unexpired nonce and is rewritten as version 2.
func TestUpgradeV1(t *testing.T) {
	v1, err := os.ReadFile(filepath.Join("testdata", "nonces-v1.log"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	if err := os.WriteFile(path, v1, 0o600); err != nil {
		t.Fatal(err)
	}
	c := newClock()
	s := open(t, dir, 0, c)
	for _, n := range []string{"0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"} {
		if !s.Used(n) {
			t.Errorf("nonce %s from the version-1 store forgotten", n)
		}
		if err := s.Use(n, c.Now().Add(time.Hour)); !errors.Is(err, ErrReplayed) {
			t.Errorf("replaying %s after the upgrade: %v; want ErrReplayed", n, err)
		}
	}
	if s.Used("expired-nonce") || s.Len() != 2 {
		t.Errorf("%d nonces held; want the 2 unexpired ones", s.Len())
	}
	s.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte(magic)) {
		t.Fatalf("store after the upgrade starts %q; want %q", b[:8], magic)
	}
	s = open(t, dir, 0, c)
	defer s.Close()
	if s.Len() != 2 {
		t.Errorf("reopened upgraded store holds %d nonces; want 2", s.Len())
	}
}

// TestV1CorruptionRefused: damage before the end of a version-1 store is
// refused like damage in a version-2 one, and the file is left as it was.
func TestV1CorruptionRefused(t *testing.T) {
	v1, err := os.ReadFile(filepath.Join("testdata", "nonces-v1.log"))
	if err != nil {
		t.Fatal(err)
	}
	v1[headerLen+8+10] ^= 0xff // inside the first record's payload
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	if err := os.WriteFile(path, v1, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{Now: newClock().Now}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of a damaged version-1 store: %v; want ErrCorrupt", err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, v1) {
		t.Error("a refused store was changed")
	}
}

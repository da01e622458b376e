package desiredfile

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFile(t *testing.T) {
	valid := write(t, "fleet.yaml", "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve-a:\n    guests:\n      101: {state: running}\n")
	doc, err := (&File{Path: valid}).Desired(t.Context())
	if err != nil {
		t.Fatalf("valid file: %v", err)
	}
	if g := doc.ForHost("pve-a").Guests[101]; g == nil || g.State != "running" {
		t.Fatalf("got guest %#v; want state running", g)
	}

	empty := write(t, "empty.yaml", "")
	doc, err = (&File{Path: empty}).Desired(t.Context())
	if err != nil || doc == nil || !doc.IsEmpty() {
		t.Fatalf("empty file: got %#v, %v; want empty document", doc, err)
	}
}

func TestFileErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	bad := write(t, "bad.yaml", "apiVersion: steward/v1\nkind: Fleet\nhostz: {}\n")
	dir := t.TempDir()
	tests := []struct {
		name string
		path string
		want string
	}{
		{"missing", missing, "nope.yaml"},
		{"invalid", bad, "bad.yaml: desired: line 3: hostz: unknown field"},
		{"directory", dir, "not a regular file"},
		{"no path", "", "no path configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := (&File{Path: tt.path}).Desired(t.Context())
			if err == nil || doc != nil {
				t.Fatalf("got %#v, %v; want nil document and an error", doc, err)
			}
			if !strings.HasPrefix(err.Error(), "desiredfile: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q; want desiredfile: ... %q", err, tt.want)
			}
		})
	}
	_, err := (&File{Path: missing}).Desired(t.Context())
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: got %v; want an fs.ErrNotExist error", err)
	}
}

func TestFileCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := (&File{Path: "x"}).Desired(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("got %v; want context.Canceled", err)
	}
}

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
	schema := write(t, "schema.yaml", "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve-a:\n    guests:\n      101: {kind: qemu,\n        config: {cores: two}}\n")
	dir := t.TempDir()
	tests := []struct {
		name string
		path string
		want string
	}{
		{"missing", missing, "nope.yaml"},
		{"invalid", bad, "bad.yaml:3: hostz: unknown field"},
		{"schema", schema, "schema.yaml:7: hosts.pve-a.guests.101.config.cores: invalid value for a qemu guest: type check ('integer') failed - got 'two'; PVE's schema: cores <integer> (1 - N)"},
		{"directory", dir, "not a regular file"},
		{"no path", "", "no path configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := (&File{Path: tt.path}).Desired(t.Context())
			if err == nil || doc != nil {
				t.Fatalf("got %#v, %v; want nil document and an error", doc, err)
			}
			if !strings.HasPrefix(err.Error(), "desired") || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "desiredfile: desired") {
				t.Errorf("got %q; want one prefix and %q", err, tt.want)
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

package cli

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/steward-pve/steward/internal/hub/store/pgtest"
	"github.com/steward-pve/steward/internal/hub/store/postgres"
)

// TestHubReplicasOnPostgres: two hubs started together on one database
// with one certificate: exactly one writes the admin token to its data
// directory (the other removes the file it wrote first), both print the
// same fingerprint, and the token works on both.
func TestHubReplicasOnPostgres(t *testing.T) {
	url := pgtest.NewDatabase(t)
	tlsDir := t.TempDir()
	cert, key := filepath.Join(tlsDir, "tls.crt"), filepath.Join(tlsDir, "tls.key")
	if err := ensureSelfSigned(cert, key); err != nil {
		t.Fatal(err)
	}
	outs := make([]string, 2)
	var wg sync.WaitGroup
	for i := range outs {
		wg.Go(func() {
			out, stop := startHub(t, "--store", url, "--data-dir", filepath.Join(tlsDir, fmt.Sprint("replica", i)), "--tls-cert", cert, "--tls-key", key, "--listen", "127.0.0.1:0")
			t.Cleanup(func() { stop() })
			outs[i] = out
		})
	}
	wg.Wait()
	var tok string
	for i, out := range outs {
		if m := hubTokenFile(t, out); m != "" {
			if tok != "" {
				t.Fatalf("both replicas wrote an admin token:\n%s\n---\n%s", outs[0], outs[1])
			}
			tok = m
		}
		if !strings.Contains(out, "Store:       PostgreSQL postgres://") {
			t.Errorf("replica %d printed no store line:\n%s", i, out)
		}
	}
	if tok == "" {
		t.Fatalf("no replica wrote the admin token:\n%s\n---\n%s", outs[0], outs[1])
	}
	if files, _ := filepath.Glob(filepath.Join(tlsDir, "replica*", hubAdminTokenFile)); len(files) != 1 {
		t.Fatalf("token files %v; want exactly one (the replica that lost the race removes its own)", files)
	}
	fp0, fp1 := hubFPRe.FindStringSubmatch(outs[0]), hubFPRe.FindStringSubmatch(outs[1])
	if fp0 == nil || fp1 == nil || fp0[1] != fp1[1] {
		t.Fatalf("fingerprints: %v and %v; want one certificate on both replicas", fp0, fp1)
	}
	c := pinnedClient(t, fp0[1])
	for i, out := range outs {
		if code := get(t, c, hubURLRe.FindStringSubmatch(out)[1]+"/v1/hosts", tok); code != 200 {
			t.Fatalf("the admin token on replica %d: got %d; want 200", i, code)
		}
	}
}

// TestFirstOperatorOnceAcrossReplicas: replicas making the first operator
// at the same moment make one token, and only one of them shows it.
func TestFirstOperatorOnceAcrossReplicas(t *testing.T) {
	url := pgtest.NewDatabase(t)
	const n = 5
	toks := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		st, err := postgres.Open(t.Context(), url, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		wg.Go(func() { toks[i], errs[i] = firstOperator(t.Context(), st) })
	}
	wg.Wait()
	made := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if toks[i] != "" {
			made++
		}
	}
	if made != 1 {
		t.Fatalf("%d replicas made an admin token; want exactly 1", made)
	}
}

func TestHubStoreUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"hub", "--store", "mysql://x/y", "--data-dir", t.TempDir()}, "--store must be"},
		{[]string{"hub", "--store", "postgres://u@127.0.0.1:1/db"}, "same certificate"},
	} {
		err := Run(t.Context(), tc.args, &hubOut{}, &hubOut{})
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v; want a usage error saying %q", tc.args, err, tc.want)
		}
	}
	// An unreachable database: an error naming it, without its password.
	err := Run(t.Context(), []string{"hub", "--store", "postgres://u:hunter2@127.0.0.1:1/db?connect_timeout=1", "--insecure-http", "--listen", "127.0.0.1:0"}, &hubOut{}, &hubOut{})
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("unreachable database: got %v; want an error naming it without the password", err)
	}
}

package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/hub"
)

// TestTokensCreateListRevoke: an operator creates a token for bob, who
// can use it at once; list never shows a secret; revoked, bob's token is
// refused; the hub's last valid token cannot be revoked.
func TestTokensCreateListRevoke(t *testing.T) {
	h := newTestHub(t)
	e := newOpEnv(t)
	e.login(h, "lab")

	out, stderr, err := e.run("", "tokens", "create", "bob", "-o", "json")
	if err != nil {
		t.Fatalf("tokens create: %v\n%s", err, stderr)
	}
	var nt hub.NewTokenJSON
	if err := json.Unmarshal([]byte(out), &nt); err != nil || nt.Name != "bob" || !strings.HasPrefix(nt.Token, "stwo_") {
		t.Fatalf("tokens create -o json: got %s (%v); want bob's new token", out, err)
	}
	if _, _, err := e.run("", "tokens", "create", "bob"); ExitCode(err) != ExitFailure || !strings.Contains(err.Error(), "exists") {
		t.Errorf("a second bob: got %v; want exit 1, exists", err)
	}

	// bob, with only the environment.
	t.Setenv(tokenEnv, nt.Token)
	bob := []string{"--hub", h.URL, "--hub-fingerprint", h.Fingerprint}
	out, stderr, err = e.run("", append([]string{"tokens", "list", "-o", "json"}, bob...)...)
	if err != nil {
		t.Fatalf("tokens list as bob: %v\n%s", err, stderr)
	}
	if strings.Contains(out, "stwo_") || strings.Contains(out, h.Token) {
		t.Fatalf("tokens list shows a secret:\n%s", out)
	}
	var list struct {
		Tokens []hub.TokenJSON `json:"tokens"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Tokens) != 2 || list.Tokens[0].Name != "admin" || list.Tokens[1].Name != "bob" {
		t.Fatalf("tokens list: got %s (%v); want admin and bob", out, err)
	}
	t.Setenv(tokenEnv, "")

	if out, _, err := e.run("", "tokens", "revoke", "bob"); err != nil || !strings.Contains(out, `"bob" revoked`) {
		t.Fatalf("tokens revoke bob: %v\n%s", err, out)
	}
	t.Setenv(tokenEnv, nt.Token)
	if _, _, err := e.run("", append([]string{"tokens", "list"}, bob...)...); ExitCode(err) != ExitFailure || !strings.Contains(err.Error(), "unauthenticated") {
		t.Errorf("bob after revocation: got %v; want exit 1, unauthenticated", err)
	}
	t.Setenv(tokenEnv, "")
	out, _, err = e.run("", "tokens", "list")
	if err != nil || !strings.Contains(out, "revoked ") {
		t.Errorf("tokens list after the revocation: %v\n%s; want bob shown revoked", err, out)
	}
	if _, _, err := e.run("", "tokens", "revoke", "admin"); ExitCode(err) != ExitFailure || !strings.Contains(err.Error(), "last_token") {
		t.Errorf("revoking the last valid token: got %v; want exit 1, last_token", err)
	}
	if _, _, err := e.run("", "tokens", "revoke", "nobody"); ExitCode(err) != ExitFailure || !strings.Contains(err.Error(), "no_such_token") {
		t.Errorf("revoking an unknown token: got %v; want exit 1, no_such_token", err)
	}
}

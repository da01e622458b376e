package hub

import (
	"strings"
	"testing"
)

func TestOperatorTokens(t *testing.T) {
	e := newEnv(t)
	var nt NewTokenJSON
	e.must(200, "POST", "/v1/tokens", e.opTok, []byte(`{"name":"ci-deploy"}`), &nt)
	if nt.Name != "ci-deploy" || !strings.HasPrefix(nt.Token, "stwo_") {
		t.Fatalf("create: got %+v; want ci-deploy with an operator token", nt)
	}
	// The new token works, and its use is recorded.
	e.must(200, "GET", "/v1/hosts", nt.Token, nil, nil)
	var list struct{ Tokens []TokenJSON }
	code, b := e.do("GET", "/v1/tokens", e.opTok, nil)
	if code != 200 || strings.Contains(string(b), nt.Token) || strings.Contains(string(b), "hash") {
		t.Fatalf("list: got %d %s; want 200 and no secret nor hash", code, b)
	}
	e.must(200, "GET", "/v1/tokens", e.opTok, nil, &list)
	if len(list.Tokens) != 2 || list.Tokens[0].Name != "alice" || list.Tokens[1].Name != "ci-deploy" || list.Tokens[1].LastUsed == nil || list.Tokens[1].RevokedAt != nil {
		t.Fatalf("list: got %+v; want alice and ci-deploy (used, valid)", list.Tokens)
	}

	for _, c := range []struct{ body, code string }{
		{`{"name":"ci-deploy"}`, "exists"},
		{`{"name":"a b"}`, "bad_name"},
		{`{"name":""}`, "bad_name"},
		{`{"name":"x","token":"mine"}`, "bad_body"},
	} {
		code, b := e.do("POST", "/v1/tokens", e.opTok, []byte(c.body))
		if code < 400 || errCode(t, b) != c.code {
			t.Errorf("create %s: got %d %s; want %s", c.body, code, b, c.code)
		}
	}

	// Revoking takes effect at once, also on the revoker's own token.
	e.must(200, "POST", "/v1/tokens/ci-deploy/revoke", e.opTok, nil, nil)
	if code, _ := e.do("GET", "/v1/hosts", nt.Token, nil); code != 401 {
		t.Fatalf("revoked token: got %d; want 401", code)
	}
	if code, b := e.do("POST", "/v1/tokens/nobody/revoke", e.opTok, nil); code != 404 || errCode(t, b) != "no_such_token" {
		t.Fatalf("revoke unknown: got %d %s; want 404 no_such_token", code, b)
	}
	// alice is the last valid token: refused, and still valid.
	if code, b := e.do("POST", "/v1/tokens/alice/revoke", e.opTok, nil); code != 409 || errCode(t, b) != "last_token" {
		t.Fatalf("revoke the last token: got %d %s; want 409 last_token", code, b)
	}
	e.must(200, "GET", "/v1/hosts", e.opTok, nil, nil)
	// A host token cannot manage operator tokens.
	host := e.enroll("pve-a")
	if code, _ := e.do("POST", "/v1/tokens", host, []byte(`{"name":"evil"}`)); code != 401 {
		t.Fatalf("create with a host token: got %d; want 401", code)
	}

	var a struct {
		Entries []struct{ Action, Detail string }
	}
	e.must(200, "GET", "/v1/audit", e.opTok, nil, &a)
	var acts []string
	for _, en := range a.Entries {
		if strings.HasPrefix(en.Action, "token.") {
			acts = append(acts, en.Action+" "+en.Detail)
		}
	}
	if got := strings.Join(acts, ", "); got != "token.create ci-deploy, token.revoke ci-deploy" {
		t.Fatalf("audit: got %q; want the create and the revoke", got)
	}
	if strings.Contains(e.log.String(), nt.Token) {
		t.Fatal("the log holds the new token")
	}
}

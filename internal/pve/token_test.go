package pve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testSecret = "0f3b5c1e-8d2a-4c6b-9e7f-112233445566"

func TestParseToken(t *testing.T) {
	tests := []struct {
		in      string
		wantID  string
		wantSec string
		wantErr string
	}{
		{in: "root@pam!steward=" + testSecret, wantID: "root@pam!steward", wantSec: testSecret},
		{in: "  root@pam!steward=" + testSecret + "\n", wantID: "root@pam!steward", wantSec: testSecret},
		{in: "PVEAPIToken=root@pam!steward=" + testSecret, wantID: "root@pam!steward", wantSec: testSecret},
		// Split at the LAST '=' as PVE does (greedy ^(.*)=(.*)$).
		{in: "a=b@pve!t=" + testSecret, wantID: "a=b@pve!t", wantSec: testSecret},
		{in: "svc@pve!ci-01=abc", wantID: "svc@pve!ci-01", wantSec: "abc"},
		{in: testSecret, wantErr: "no '='"},
		{in: "root@pam!steward=", wantErr: "secret after the last '=' is empty"},
		{in: "root@pam=" + testSecret, wantErr: "no !TOKENID"},
		{in: "rootpam!tok=" + testSecret, wantErr: "no USER@"},
		{in: "root@!tok=" + testSecret, wantErr: "empty realm"},
		{in: "root@pam!=" + testSecret, wantErr: "empty TOKENID"},
		{in: "root@pam!tok=abc def", wantErr: "spaces or control"},
		{in: "root@pam!tok=abc\r\nX-Evil: 1", wantErr: "spaces or control"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			tok, err := ParseToken(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseToken error = %v; want one containing %q", err, tt.wantErr)
				}
				for _, part := range []string{testSecret, "abc def", "abc\r\n"} {
					if strings.Contains(tt.in, part) && strings.Contains(err.Error(), part) {
						t.Errorf("error %q reveals the secret", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseToken: %v", err)
			}
			if tok.ID != tt.wantID || tok.Secret != tt.wantSec {
				t.Errorf("got ID %q secret %q; want %q %q", tok.ID, tok.Secret, tt.wantID, tt.wantSec)
			}
		})
	}
}

func TestTokenNeverPrintsSecret(t *testing.T) {
	tok := Token{ID: "root@pam!steward", Secret: testSecret}
	opts := Options{URL: "https://pve:8006", Token: tok}
	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("x", "token", tok, "opts", opts)
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("x", "token", tok)
	js, err := json.Marshal(opts)
	if err != nil {
		t.Fatal(err)
	}
	outs := map[string]string{
		"String": tok.String(), "%v": fmt.Sprintf("%v", tok), "%+v": fmt.Sprintf("%+v", tok),
		"%#v": fmt.Sprintf("%#v", tok), "%s": fmt.Sprintf("%s", tok), "%q": fmt.Sprintf("%q", tok),
		"%x": fmt.Sprintf("%x", tok), "%d": fmt.Sprintf("%d", tok),
		"opts %+v": fmt.Sprintf("%+v", opts), "opts %#v": fmt.Sprintf("%#v", opts), "&opts %v": fmt.Sprintf("%v", &opts),
		"slog": logBuf.String(), "json": string(js),
	}
	for name, out := range outs {
		if strings.Contains(out, testSecret) {
			t.Errorf("%s = %q; reveals the secret", name, out)
		}
		if !strings.Contains(out, "root@pam!steward") {
			t.Errorf("%s = %q; want the token id shown", name, out)
		}
	}
}

func TestLoadToken(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "token")
	if err := os.WriteFile(good, []byte("root@pam!steward="+testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("file", func(t *testing.T) {
		t.Setenv(TokenEnv, "other@pve!x=y")
		tok, err := LoadToken(good)
		if err != nil || tok.ID != "root@pam!steward" || tok.Secret != testSecret {
			t.Fatalf("LoadToken(file) = %v, %v; want root@pam!steward", tok, err)
		}
	})
	t.Run("env", func(t *testing.T) {
		t.Setenv(TokenEnv, "svc@pve!ci="+testSecret)
		tok, err := LoadToken("")
		if err != nil || tok.ID != "svc@pve!ci" || tok.Secret != testSecret {
			t.Fatalf("LoadToken(env) = %v, %v; want svc@pve!ci", tok, err)
		}
	})
	t.Run("neither", func(t *testing.T) {
		t.Setenv(TokenEnv, "")
		_, err := LoadToken("")
		if err == nil || !strings.Contains(err.Error(), TokenEnv) {
			t.Fatalf("LoadToken() error = %v; want one naming %s", err, TokenEnv)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := LoadToken(filepath.Join(dir, "nope"))
		if err == nil || !strings.Contains(err.Error(), "nope") {
			t.Fatalf("error = %v; want one naming the file", err)
		}
	})
	t.Run("malformed file", func(t *testing.T) {
		_, err := LoadToken(bad)
		if err == nil || !strings.Contains(err.Error(), bad) || strings.Contains(err.Error(), testSecret) {
			t.Fatalf("error = %v; want one naming the file and not the secret", err)
		}
	})
	t.Run("malformed env", func(t *testing.T) {
		t.Setenv(TokenEnv, testSecret)
		_, err := LoadToken("")
		if err == nil || !strings.Contains(err.Error(), TokenEnv) || strings.Contains(err.Error(), testSecret) {
			t.Fatalf("error = %v; want one naming %s and not the secret", err, TokenEnv)
		}
	})
}

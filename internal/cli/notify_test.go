package cli

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/alert"
)

// webhookReceiver is a webhook endpoint on loopback that verifies every
// delivery's HMAC and timestamp, as a real receiver should.
type webhookReceiver struct {
	key  []byte
	mu   sync.Mutex
	got  []alert.WebhookBody
	raw  [][]byte
	hdrs []http.Header
	bad  []string
}

func (h *webhookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := alert.VerifyWebhook(h.key, r.Header, body, time.Now(), 5*time.Minute); err != nil {
		h.bad = append(h.bad, err.Error())
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var b alert.WebhookBody
	if err := json.Unmarshal(body, &b); err != nil {
		h.bad = append(h.bad, "body: "+err.Error())
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	h.got = append(h.got, b)
	h.hdrs = append(h.hdrs, r.Header.Clone())
	h.raw = append(h.raw, body)
}

// TestNotifyTestCommand runs `steward notify test SINK` against a hub
// started with --notify-config: a working webhook sink delivers a test
// message whose HMAC and timestamp the receiver verifies and the command
// exits 0; a sink the receiver refuses for good, a sink that keeps
// failing past --wait and an unknown sink each exit non-zero saying why.
func TestNotifyTestCommand(t *testing.T) {
	good := &webhookReceiver{key: []byte("s3cret-hmac-key")}
	goodSrv := httptest.NewServer(good)
	defer goodSrv.Close()
	refused := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no such hook", http.StatusNotFound)
	}))
	defer refused.Close()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	}))
	defer down.Close()

	dir := t.TempDir()
	cfg := filepath.Join(dir, "notify.yaml")
	if err := os.WriteFile(cfg, []byte(`sinks:
  ops: {type: webhook, url: "`+goodSrv.URL+`", secret: {value: s3cret-hmac-key}}
  gone: {type: webhook, url: "`+refused.URL+`", secret: {value: other}}
  flaky: {type: webhook, url: "`+down.URL+`", secret: {value: other}}
rules:
  - events: [host.silent]
    sinks: [ops]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stop := startHub(t, "--data-dir", filepath.Join(dir, "hub"), "--insecure-http", "--listen", "127.0.0.1:0", "--notify-config", cfg)
	defer stop()
	hubURL := hubURLRe.FindStringSubmatch(out)[1]
	tok := hubTokenFile(t, out)
	t.Setenv(tokenEnv, tok)
	notify := func(args ...string) (string, error) {
		var stdout, stderr hubOut
		err := Run(t.Context(), append([]string{"notify", "test", "--hub", hubURL, "--login-file", filepath.Join(dir, "login.yaml")}, args...), &stdout, &stderr)
		return stdout.String() + stderr.String(), err
	}

	text, err := notify("ops")
	if err != nil || !strings.Contains(text, `delivered through sink "ops"`) {
		t.Fatalf("notify test ops: %v\n%s", err, text)
	}
	good.mu.Lock()
	got, hdrs, bad := good.got, good.hdrs, good.bad
	good.mu.Unlock()
	if len(bad) > 0 || len(got) != 1 {
		t.Fatalf("receiver: %d verified deliveries, failures %q; want one verified", len(got), bad)
	}
	if b := got[0]; b.Event != alert.Test || b.Subject != hubAdminOperator || !strings.Contains(b.Summary, "sink ops") {
		t.Fatalf("the test message: %+v", b)
	}
	// VerifyWebhook checked the timestamp is within its tolerance; a
	// replay of the same request outside it is refused.
	ts, err := strconv.ParseInt(hdrs[0].Get(alert.HeaderTimestamp), 10, 64)
	if err != nil {
		t.Fatalf("%s: %q; want Unix seconds", alert.HeaderTimestamp, hdrs[0].Get(alert.HeaderTimestamp))
	}
	if hdrs[0].Get(alert.HeaderDelivery) != strconv.FormatInt(got[0].ID, 10) {
		t.Fatalf("%s %q; want the outbox id %d", alert.HeaderDelivery, hdrs[0].Get(alert.HeaderDelivery), got[0].ID)
	}
	// The same body replayed with another key's signature is refused by
	// the receiver's check: the signature is over timestamp and body.
	good.mu.Lock()
	raw := good.raw[0]
	good.mu.Unlock()
	if err := alert.VerifyWebhook(good.key, hdrs[0], raw, time.Unix(ts, 0).Add(10*time.Minute), 5*time.Minute); err == nil {
		t.Fatal("the delivery replayed 10 minutes later verified; want it refused by its timestamp")
	}
	if alert.VerifyWebhook([]byte("wrong"), hdrs[0], raw, time.Unix(ts, 0), 5*time.Minute) == nil {
		t.Fatal("a wrong key verified the delivery")
	}

	// JSON output is the outbox entry.
	text, err = notify("ops", "-o", "json")
	if err != nil {
		t.Fatalf("notify test ops -o json: %v\n%s", err, text)
	}
	var entry struct {
		State string `json:"state"`
		Sink  string `json:"sink"`
	}
	if err := json.Unmarshal([]byte(text), &entry); err != nil || entry.State != "delivered" || entry.Sink != "ops" {
		t.Fatalf("notify test -o json: %v\n%s", err, text)
	}

	// A sink that refuses the message for good: given up at once.
	text, err = notify("gone")
	if err == nil || !strings.Contains(text, `to sink "gone" was refused`) || !strings.Contains(text, "404") ||
		!strings.Contains(err.Error(), `not delivered`) {
		t.Fatalf("notify test gone: %v\n%s; want a non-zero exit naming the refusal", err, text)
	}
	// A sink that keeps failing: still queued when --wait ends.
	text, err = notify("flaky", "--wait", "1s")
	if err == nil || !strings.Contains(text, "not delivered yet") || !strings.Contains(text, "503") {
		t.Fatalf("notify test flaky: %v\n%s; want a non-zero exit naming the failure", err, text)
	}
	// A sink the config does not have.
	text, err = notify("pager")
	if err == nil || !strings.Contains(err.Error(), `no sink "pager"`) {
		t.Fatalf("notify test pager: %v\n%s; want an error naming the missing sink", err, text)
	}
	for _, s := range []string{"s3cret-hmac-key", tok} {
		if strings.Contains(text, s) {
			t.Fatalf("a secret in the output:\n%s", text)
		}
	}
}

// TestHubSessionTTL: steward hub --session-ttl (and STEWARD_SESSION_TTL)
// sets how long a dashboard login lasts; a value out of range is a usage
// error.
func TestHubSessionTTL(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  string
		args []string
		want time.Duration
	}{
		{"default", "", nil, 12 * time.Hour},
		{"flag", "", []string{"--session-ttl", "90m"}, 90 * time.Minute},
		{"env", "45m", nil, 45 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("STEWARD_SESSION_TTL", tc.env)
			if tc.env == "" {
				os.Unsetenv("STEWARD_SESSION_TTL")
			}
			out, stop := startHub(t, append([]string{"--data-dir", t.TempDir(), "--insecure-http", "--listen", "127.0.0.1:0"}, tc.args...)...)
			defer stop()
			hubURL := hubURLRe.FindStringSubmatch(out)[1]
			form := url.Values{"token": {hubTokenFile(t, out)}, "next": {"/ui/"}}
			req, _ := http.NewRequestWithContext(t.Context(), "POST", hubURL+"/ui/login", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", hubURL)
			c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			var maxAge int
			for _, ck := range resp.Cookies() {
				if ck.Name == "steward_session" {
					maxAge = ck.MaxAge
				}
			}
			// The expiry is truncated to the second: within a few seconds
			// of the TTL, never above it.
			if got := time.Duration(maxAge) * time.Second; resp.StatusCode != http.StatusSeeOther || got > tc.want || got < tc.want-time.Minute {
				t.Fatalf("login: %d, session cookie Max-Age %v; want 303 and %v", resp.StatusCode, got, tc.want)
			}
		})
	}
	for _, v := range []string{"10s", "1000h"} {
		err := Run(t.Context(), []string{"hub", "--data-dir", t.TempDir(), "--insecure-http", "--listen", "127.0.0.1:0", "--session-ttl", v}, &hubOut{}, &hubOut{})
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--session-ttl") {
			t.Errorf("--session-ttl %s: got %v; want a usage error naming the flag", v, err)
		}
	}
}

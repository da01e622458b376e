package hub

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/wire"
)

// browser is a minimal dashboard client: no redirects followed, the
// session cookie sent by hand (Go's jar withholds Secure cookies from
// plain http), Origin set as a browser on the hub's page would.
type browser struct {
	e      *env
	cookie string
	origin string
}

func newBrowser(e *env) *browser {
	u, _ := url.Parse(e.url)
	return &browser{e: e, origin: "http://" + u.Host}
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// req sends a request; form (when not nil) is posted urlencoded.
func (b *browser) req(method, path string, form url.Values, hdr ...string) (*http.Response, string) {
	b.e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.e.url+path, body)
	if err != nil {
		b.e.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if method == "POST" && b.origin != "" {
		req.Header.Set("Origin", b.origin)
	}
	if b.cookie != "" {
		req.AddCookie(&http.Cookie{Name: SessionCookie, Value: b.cookie})
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, string(out)
}

// login logs in with tok and keeps the session cookie.
func (b *browser) login(tok string) *http.Cookie {
	b.e.t.Helper()
	resp, body := b.req("POST", "/ui/login", url.Values{"token": {tok}, "next": {"/ui/"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		b.e.t.Fatalf("login: got %d %s (Location %q); want 303 to /ui/", resp.StatusCode, body, resp.Header.Get("Location"))
	}
	for _, c := range resp.Cookies() {
		if c.Name == SessionCookie {
			b.cookie = c.Value
			return c
		}
	}
	b.e.t.Fatalf("login: no %s cookie in %v", SessionCookie, resp.Header["Set-Cookie"])
	return nil
}

// csrf returns the CSRF token in the page at path.
func (b *browser) csrf(path string) string {
	b.e.t.Helper()
	resp, body := b.req("GET", path, nil)
	if resp.StatusCode != 200 {
		b.e.t.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
	const marker = `name="csrf" value="`
	i := strings.Index(body, marker)
	if i < 0 {
		b.e.t.Fatalf("GET %s: no CSRF field in the page", path)
	}
	rest := body[i+len(marker):]
	return rest[:strings.IndexByte(rest, '"')]
}

func TestDashboardLoginAndCookie(t *testing.T) {
	e := newEnv(t)
	b := newBrowser(e)

	resp, _ := b.req("GET", "/ui/", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login?next=%2Fui%2F" {
		t.Fatalf("GET /ui/ without a session: got %d to %q; want 303 to the login page", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := b.req("GET", "/ui/login", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `<label for="token">Operator token</label>`) {
		t.Fatalf("login page: %d %s", resp.StatusCode, body)
	}
	for h, want := range map[string]string{
		"Content-Security-Policy": dashCSP,
		"X-Frame-Options":         "DENY",
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "same-origin",
		"Cache-Control":           "no-store",
	} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("login page %s: got %q; want %q", h, got, want)
		}
	}
	if !strings.Contains(dashCSP, "frame-ancestors 'none'") || strings.Contains(dashCSP, "unsafe") {
		t.Errorf("CSP %q: want frame-ancestors 'none' and nothing unsafe", dashCSP)
	}

	wrong := NewToken("stwo_")
	resp, body = b.req("POST", "/ui/login", url.Values{"token": {wrong}})
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 || !strings.Contains(body, "unknown or revoked") || strings.Contains(body, wrong) {
		t.Fatalf("login with an unknown token: got %d, cookies %v; want 401, no cookie, the token not echoed", resp.StatusCode, resp.Cookies())
	}
	// Login CSRF: a form posted from another site, or with no Origin at all.
	for _, origin := range []string{"https://evil.example", "null"} {
		resp, _ = b.req("POST", "/ui/login", url.Values{"token": {e.opTok}}, "Origin", origin)
		if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
			t.Fatalf("login with Origin %s: got %d; want 403 and no session", origin, resp.StatusCode)
		}
	}
	resp, _ = b.req("POST", "/ui/login", url.Values{"token": {e.opTok}}, "Origin", "")
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("login without Origin nor Sec-Fetch-Site: got %d; want 403", resp.StatusCode)
	}

	c := b.login(e.opTok)
	if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/ui/" || c.MaxAge <= 0 {
		t.Fatalf("session cookie %+v: want HttpOnly, Secure, SameSite=Strict, Path=/ui/, a max age", c)
	}
	if !strings.HasPrefix(c.Value, "stws_") || c.Value == e.opTok {
		t.Fatalf("session cookie value must be a fresh session token, not the operator token")
	}
	resp, body = b.req("GET", "/ui/", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "Logged in as <strong>alice</strong>") {
		t.Fatalf("fleet page after login: %d %s", resp.StatusCode, body)
	}
	// The store holds the session's hash, never the cookie.
	if _, err := e.st.SessionByToken(t.Context(), store.HashToken(c.Value), time.Now()); err != nil {
		t.Fatalf("the session by its cookie's hash: %v", err)
	}
	// The next parameter never leads off the dashboard.
	for _, next := range []string{"https://evil.example/", "//evil.example/", "/v1/hosts", "/ui/\\evil"} {
		if got := safeNext(next); got != "/ui/" {
			t.Errorf("safeNext(%q) = %q; want /ui/", next, got)
		}
	}
	if got := safeNext("/ui/hosts/pve-a"); got != "/ui/hosts/pve-a" {
		t.Errorf("safeNext of a dashboard page: %q", got)
	}

	logs := e.log.String()
	if strings.Contains(logs, e.opTok) || strings.Contains(logs, c.Value) || strings.Contains(logs, wrong) || strings.Contains(logs, csrfToken(c.Value)) {
		t.Fatalf("the hub's log holds a token, the session cookie or a CSRF token:\n%s", logs)
	}
	var audit struct{ Entries []store.AuditEntry }
	e.must(200, "GET", "/v1/audit", e.opTok, nil, &audit)
	if n := len(audit.Entries); n == 0 || audit.Entries[n-1].Action != "dashboard.login" || audit.Entries[n-1].Actor != "alice" {
		t.Fatalf("audit log: %+v; want alice's dashboard.login last", audit.Entries)
	}
}

func TestDashboardCSRF(t *testing.T) {
	e := newEnv(t)
	e.enroll("pve-a")
	b := newBrowser(e)
	b.login(e.opTok)
	tok := b.csrf("/ui/hosts/pve-a")
	blocked := func() bool {
		h, err := e.st.Host(t.Context(), "pve-a")
		if err != nil {
			t.Fatal(err)
		}
		return h.Blocked
	}
	for _, tc := range []struct {
		name string
		form url.Values
		hdr  []string
	}{
		{"no CSRF token", url.Values{"reason": {"x"}}, nil},
		{"a wrong CSRF token", url.Values{"reason": {"x"}, "csrf": {strings.Repeat("0", len(tok))}}, nil},
		{"the CSRF token in a header only", url.Values{"reason": {"x"}}, []string{"X-CSRF-Token", tok}},
		{"another site's Origin", url.Values{"reason": {"x"}, "csrf": {tok}}, []string{"Origin", "https://evil.example"}},
		{"no Origin", url.Values{"reason": {"x"}, "csrf": {tok}}, []string{"Origin", ""}},
		{"a cross-site fetch without Origin", url.Values{"reason": {"x"}, "csrf": {tok}}, []string{"Origin", "", "Sec-Fetch-Site", "cross-site"}},
	} {
		resp, _ := b.req("POST", "/ui/hosts/pve-a/block", tc.form, tc.hdr...)
		if resp.StatusCode != http.StatusForbidden || blocked() {
			t.Fatalf("block with %s: got %d, blocked %v; want 403 and the host unchanged", tc.name, resp.StatusCode, blocked())
		}
	}
	// Another session's token is no good either.
	other := newBrowser(e)
	other.login(e.opTok)
	resp, _ := b.req("POST", "/ui/hosts/pve-a/block", url.Values{"reason": {"x"}, "csrf": {other.csrf("/ui/")}})
	if resp.StatusCode != http.StatusForbidden || blocked() {
		t.Fatalf("block with another session's CSRF token: got %d; want 403", resp.StatusCode)
	}
	// No session at all: 401, not a redirect that a form would follow.
	anon := newBrowser(e)
	resp, _ = anon.req("POST", "/ui/hosts/pve-a/block", url.Values{"reason": {"x"}, "csrf": {tok}})
	if resp.StatusCode != http.StatusUnauthorized || blocked() {
		t.Fatalf("block without a session: got %d; want 401", resp.StatusCode)
	}

	resp, body := b.req("POST", "/ui/hosts/pve-a/block", url.Values{"reason": {""}, "csrf": {tok}})
	if resp.StatusCode != http.StatusBadRequest || blocked() {
		t.Fatalf("block without a reason: got %d %s; want 400", resp.StatusCode, body)
	}
	resp, _ = b.req("POST", "/ui/hosts/pve-a/block", url.Values{"reason": {"disk swap"}, "csrf": {tok}})
	if resp.StatusCode != http.StatusSeeOther || !blocked() {
		t.Fatalf("block with the CSRF token: got %d, blocked %v; want 303 and blocked", resp.StatusCode, blocked())
	}
	if h, _ := e.st.Host(t.Context(), "pve-a"); h.BlockedReason != "disk swap" {
		t.Fatalf("blocked reason %q; want disk swap", h.BlockedReason)
	}
	// Same-origin fetch without Origin (Sec-Fetch-Site) is a page of the hub.
	resp, _ = b.req("POST", "/ui/hosts/pve-a/unblock", url.Values{"csrf": {tok}}, "Origin", "", "Sec-Fetch-Site", "same-origin")
	if resp.StatusCode != http.StatusSeeOther || blocked() {
		t.Fatalf("unblock: got %d, blocked %v; want 303 and unblocked", resp.StatusCode, blocked())
	}
	var audit struct{ Entries []store.AuditEntry }
	e.must(200, "GET", "/v1/audit", e.opTok, nil, &audit)
	var acts []string
	for _, a := range audit.Entries {
		if a.Host == "pve-a" {
			acts = append(acts, a.Actor+":"+a.Action)
		}
	}
	if strings.Join(acts, " ") != "alice:host.join_token alice:host.block alice:host.unblock" {
		t.Fatalf("pve-a's audit entries: %v; want the join token, then alice's block and unblock", acts)
	}
	// A GET never changes state.
	resp, _ = b.req("GET", "/ui/hosts/pve-a/block", nil)
	if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed || blocked() {
		t.Fatalf("GET …/block: got %d; want 404 or 405 and nothing changed", resp.StatusCode)
	}
}

func TestDashboardSessionEnds(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newEnvOpt(t, Options{PollInterval: 30 * time.Second, SessionTTL: time.Hour, Now: clock})
	refused := func(b *browser, what string) {
		t.Helper()
		resp, _ := b.req("GET", "/ui/", nil)
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/ui/login") {
			t.Fatalf("%s: GET /ui/ got %d; want 303 to the login page", what, resp.StatusCode)
		}
		cleared := false
		for _, c := range resp.Cookies() {
			cleared = cleared || c.Name == SessionCookie && c.MaxAge < 0
		}
		if !cleared {
			t.Errorf("%s: the stale cookie was not cleared", what)
		}
		resp, _ = b.req("GET", "/ui/events", nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: GET /ui/events got %d; want 401", what, resp.StatusCode)
		}
	}

	// Expiry.
	b := newBrowser(e)
	b.login(e.opTok)
	mu.Lock()
	now = now.Add(time.Hour + time.Second)
	mu.Unlock()
	refused(b, "an expired session")

	// Logout ends the session on the hub, not just in the browser.
	b = newBrowser(e)
	b.login(e.opTok)
	tok := b.csrf("/ui/")
	resp, _ := b.req("POST", "/ui/logout", url.Values{})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("logout without the CSRF token: got %d; want 403", resp.StatusCode)
	}
	resp, _ = b.req("POST", "/ui/logout", url.Values{"csrf": {tok}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
		t.Fatalf("logout: got %d; want 303 to the login page", resp.StatusCode)
	}
	refused(b, "a logged-out session")

	// Revoking the operator token ends its sessions at once.
	var nt NewTokenJSON
	e.must(200, "POST", "/v1/tokens", e.opTok, []byte(`{"name":"bob"}`), &nt)
	bob := newBrowser(e)
	bob.login(nt.Token)
	if resp, body := bob.req("GET", "/ui/", nil); resp.StatusCode != 200 || !strings.Contains(body, "<strong>bob</strong>") {
		t.Fatalf("bob's fleet page: %d", resp.StatusCode)
	}
	e.must(200, "POST", "/v1/tokens/bob/revoke", e.opTok, nil, nil)
	refused(bob, "a session of a revoked token")
	resp, _ = bob.req("POST", "/ui/login", url.Values{"token": {nt.Token}})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("login with a revoked token: got %d; want 401", resp.StatusCode)
	}
	// A made-up cookie is no session.
	fake := newBrowser(e)
	fake.cookie = NewToken("stws_")
	refused(fake, "a made-up cookie")
}

// dashReport is a report of pve-a: guest 101 drifted (observe mode),
// 102 failing with a retry time, one destructive action pending.
func dashReport(payload string) wire.Report {
	return wire.Report{Host: "pve-a", Time: time.Now().UTC(), DesiredGeneration: 2,
		Facts: wire.Facts{Node: "pve-a", AgentVersion: "v1.2.3"},
		Guests: []wire.Guest{
			{VMID: 101, Kind: "lxc", Name: "web", Status: "running", Digest: "d101", Config: map[string]string{"cores": "4"}},
			{VMID: 102, Kind: "qemu", Name: "db", Status: "stopped", Digest: "d102", Config: map[string]string{"scsi0": "local:1"}},
		},
		Sync: []wire.Sync{
			{VMID: 101, Phase: wire.PhaseDriftObserved, Drift: []wire.Change{{Key: "cores", From: "4", To: "2"}}},
			{VMID: 102, Phase: wire.PhaseError, Reason: "can't lock file", NextRetry: time.Now().Add(time.Minute)},
		},
		Pending: []wire.Pending{{Action: wire.Action{Op: "config", VMID: 102, Kind: "qemu", Params: map[string]string{"delete": "scsi0"}, Digest: "d102"},
			Reason: "deletes a disk", Destroys: []string{"scsi0"}, Payload: []byte(payload)}},
	}
}

func TestDashboardPages(t *testing.T) {
	e := newEnv(t)
	tok := e.enroll("pve-a")
	e.enroll("pve-b")
	e.must(200, "PUT", "/v1/hosts/pve-a/desired", e.opTok, []byte(docA), nil)
	e.must(200, "PUT", "/v1/hosts/pve-a/desired", e.opTok, []byte(strings.Replace(docA, "cores: 2", "cores: 2\n          memory: 512", 1)+
		"      102:\n        kind: qemu\n        mode: observe\n"), nil)
	payload := "{\"v\":1,\"op\":\"config\",\"note\":\"<script>alert(1)</script>\"}\n"
	body, err := wire.EncodeReport(dashReport(payload))
	if err != nil {
		t.Fatal(err)
	}
	e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, body, nil)

	b := newBrowser(e)
	b.login(e.opTok)
	page := func(path string, want ...string) string {
		t.Helper()
		resp, body := b.req("GET", path, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s: no %q in\n%s", path, w, body)
			}
		}
		if strings.Contains(body, "<script>alert") || strings.Contains(body, " style=") || strings.Contains(body, "<style") {
			t.Errorf("GET %s: unescaped markup or inline style", path)
		}
		if n := strings.Count(body, "<script"); n != 1 || !strings.Contains(body, `<script src="/ui/static/app.js" defer></script>`) {
			t.Errorf("GET %s: want exactly the one external script, got %d script tags", path, n)
		}
		return body
	}
	page("/ui/", `<a href="/ui/hosts/pve-a">pve-a</a>`, "v1.2.3", `<a class="badge bad" href="/ui/pending?host=pve-a">0 (1 action)</a>`,
		`<span class="badge warn">1</span>`, "no report yet")
	page("/ui/hosts/pve-a", `<tr id="guest-101">`, `<del>- cores: 4</del>`, `<ins>+ cores: 2</ins>`, "can&#39;t lock file", "next retry",
		`<code>memory</code> = <code>512</code>`, "observe", "Block pve-a",
		"steward sign --host pve-a --key ~/.ssh/id_ed25519", "&lt;script&gt;alert(1)&lt;/script&gt;")
	job := wire.JobID([]byte(payload))
	p := page("/ui/pending", "<code>scsi0</code> (and the data on them)", `config digest <code class="digest">d102</code> (the guest's current config)`,
		"ssh-keygen -Y sign -n steward-op@steward -f ~/.ssh/id_ed25519 pve-a-102-config-"+job[:12]+".payload",
		"/ui/hosts/pve-a/pending/"+job+"/payload")
	_ = p
	// A payload bound to a digest the guest no longer has, or past its
	// expiry, says so.
	stale := dashReport(payload)
	stale.Guests[1].Digest = "d102-changed"
	if body, err = wire.EncodeReport(stale); err != nil {
		t.Fatal(err)
	}
	e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, body, nil)
	page("/ui/pending", "the guest changed since (now <code class=\"digest\">d102-changed</code>)")
	body, _ = wire.EncodeReport(dashReport(payload))
	e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, body, nil)
	resp, raw := b.req("GET", "/ui/hosts/pve-a/pending/"+job+"/payload", nil)
	if resp.StatusCode != 200 || raw != payload || !strings.Contains(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("payload download: %d %q (%s); want the exact bytes as an attachment", resp.StatusCode, raw, resp.Header.Get("Content-Disposition"))
	}
	if resp, _ := b.req("GET", "/ui/hosts/pve-a/pending/"+strings.Repeat("0", 64)+"/payload", nil); resp.StatusCode != 404 {
		t.Fatalf("an unknown payload: %d; want 404", resp.StatusCode)
	}
	gen := page("/ui/hosts/pve-a/generations", "Changes from generation 1 to 2", "<ins>+           memory: &#34;512&#34;</ins>", "<ins>+       &#34;102&#34;:</ins>",
		"<span>            cores: &#34;2&#34;</span>")
	_ = gen
	page("/ui/hosts/pve-a/generations?a=0&b=1", "<ins>+ apiVersion: steward/v1</ins>")
	if resp, body := b.req("GET", "/ui/hosts/pve-a/generations?a=9&b=1", nil); resp.StatusCode != 200 || !strings.Contains(body, "generation 9 or 1 is not among") {
		t.Fatalf("an unknown generation: %d", resp.StatusCode)
	}
	page("/ui/audit", "desired.put", "dashboard.login")
	// A break in the agent's receipt chain shows with its reason.
	var hist HistoryJSON
	e.must(200, "GET", "/v1/hosts/pve-a/history", e.opTok, nil, &hist)
	brk := []wire.Receipt{{Time: time.Now().UTC().Round(0), Type: wire.ReceiptBreak, Reason: "the receipt log was damaged; set aside as receipts.damaged-x"}}
	wire.Chain(hist.Head, wire.ZeroHash, brk)
	e.must(200, "POST", "/v1/agent/hosts/pve-a/receipts", tok, mustJSON(t, wire.Receipts{Host: "pve-a", Receipts: brk}), nil)
	page("/ui/audit?host=pve-a", "chain break", "set aside as receipts.damaged-x")
	a := page("/ui/audit?host=pve-b&op=join")
	if !strings.Contains(a, "host.join_token") || strings.Contains(a, "desired.put") {
		t.Errorf("audit filtered by host pve-b and op join: want its join token only")
	}
	if resp, body := b.req("GET", "/ui/audit?guest=abc", nil); resp.StatusCode != 400 || !strings.Contains(body, "want a guest id") {
		t.Fatalf("audit with a bad guest: %d", resp.StatusCode)
	}
	if resp, _ := b.req("GET", "/ui/hosts/nope", nil); resp.StatusCode != 404 {
		t.Fatalf("an unknown host's page: %d; want 404", resp.StatusCode)
	}
	for _, f := range []string{"app.js", "app.css", "favicon.svg"} {
		if resp, _ := b.req("GET", "/ui/static/"+f, nil); resp.StatusCode != 200 {
			t.Errorf("static %s: %d", f, resp.StatusCode)
		}
	}
}

// TestDashboardEvents: the event stream sends a report event when a
// host's report changes and the fleet's events as they are recorded.
func TestDashboardEvents(t *testing.T) {
	e := newEnv(t)
	tok := e.enroll("pve-a")
	b := newBrowser(e)
	b.login(e.opTok)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/ui/events", nil)
	req.AddCookie(&http.Cookie{Name: SessionCookie, Value: b.cookie})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("GET /ui/events: %d %s", resp.StatusCode, ct)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expect := func(what string) {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the stream ended before %q", what)
				}
				if strings.Contains(l, what) {
					return
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no %q on the event stream", what)
			}
		}
	}
	expect("retry: 3000")
	body, _ := wire.EncodeReport(dashReport("p\n"))
	e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, body, nil)
	expect("event: report")
	expect(`data: {"host":"pve-a"}`)
	e.must(200, "POST", "/v1/hosts/pve-a/block", e.opTok, []byte(`{"reason":"maintenance"}`), nil)
	expect(`"type":"host.blocked"`)

	// Logging out in another tab ends the stream: it shows the fleet to
	// no one without a session.
	b.req("POST", "/ui/logout", url.Values{"csrf": {b.csrf("/ui/")}})
	expect("event: ended")
	expect("data: {}")
	for closed := false; !closed; { // until the hub closes the stream
		select {
		case l, ok := <-lines:
			if l != "" {
				t.Errorf("the stream went on after it ended: %q", l)
			}
			closed = !ok
		case <-time.After(30 * time.Second):
			t.Fatal("the hub did not close the event stream of a logged-out session")
		}
	}
}

func TestLineDiff(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want string
	}{
		{"", "", ""},
		{"a\nb\n", "a\nb\n", " a| b"},
		{"", "x\n", "+x"},
		{"x\n", "", "-x"},
		{"a\nb\nc\n", "a\nc\n", " a|-b| c"},
		{"a\nc\n", "a\nb\nc\n", " a|+b| c"},
		{"a\nb\nc\nd\n", "a\nx\nc\ny\n", " a|-b|+x| c|-d|+y"},
	} {
		var parts []string
		for _, l := range lineDiff(tc.a, tc.b) {
			parts = append(parts, l.Op+l.Text)
		}
		if got := strings.Join(parts, "|"); got != tc.want {
			t.Errorf("lineDiff(%q, %q) = %q; want %q", tc.a, tc.b, got, tc.want)
		}
	}
	// Past the table's bound it still answers, as removal then addition.
	var big1, big2 strings.Builder
	for i := range 2100 {
		fmt.Fprintf(&big1, "a%d\n", i)
		fmt.Fprintf(&big2, "b%d\n", i)
	}
	if n := len(lineDiff(big1.String(), big2.String())); n != 4200 {
		t.Fatalf("a large diff: %d lines; want 4200", n)
	}
}

// TestDashboardLoginRateLimit: token logins from one address are limited
// to LoginBurst attempts, one more every LoginRefill; past that the hub
// answers 429 with Retry-After without looking at the token (a right one
// included), logs the refusal with the address and never the token, and
// a successful login costs nothing.
func TestDashboardLoginRateLimit(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	e := newEnvOpt(t, Options{PollInterval: 30 * time.Second, Now: clock})
	b := newBrowser(e)

	// Successful logins do not use the allowance up.
	for range 2 * LoginBurst {
		b.login(e.opTok)
	}
	wrong := "stwo_" + strings.Repeat("ab", 32)
	try := func(tok string) *http.Response {
		t.Helper()
		resp, body := b.req("POST", "/ui/login", url.Values{"token": {tok}, "next": {"/ui/"}})
		if strings.Contains(body, tok) {
			t.Fatalf("the login page echoed the token")
		}
		return resp
	}
	for i := range LoginBurst {
		if resp := try(wrong); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong token, attempt %d: got %d; want 401", i+1, resp.StatusCode)
		}
	}
	for _, tok := range []string{wrong, e.opTok} {
		resp := try(tok)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "12" || len(resp.Cookies()) != 0 {
			t.Fatalf("attempt past the limit: got %d, Retry-After %q, cookies %v; want 429, 12 and none",
				resp.StatusCode, resp.Header.Get("Retry-After"), resp.Cookies())
		}
	}
	// Another address is not limited by this one's failures.
	if ok, _ := e.hub.dash.logins.take(clientKey("192.0.2.7:4000"), clock()); !ok {
		t.Fatal("another address was limited by 127.0.0.1's failures")
	}
	if k := clientKey("[2001:db8:1:2:3::4]:5555"); k != "2001:db8:1:2::/64" || clientKey("[2001:db8:1:2:ffff::1]:1") != k {
		t.Fatalf("an IPv6 client's key: %q; want its /64", k)
	}
	if k := clientKey("[::ffff:10.0.0.1]:80"); k != "10.0.0.1" {
		t.Fatalf("an IPv4-mapped client's key: %q", k)
	}

	// One attempt comes back every LoginRefill.
	advance(LoginRefill / 2)
	if resp := try(e.opTok); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "6" {
		t.Fatalf("half a refill later: got %d, Retry-After %q; want 429 and 6", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	advance(LoginRefill / 2)
	b.login(e.opTok) // the one attempt back, and refunded: it succeeded
	if resp := try(wrong); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after a refill: got %d; want 401", resp.StatusCode)
	}
	if resp := try(wrong); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("the refill used: got %d; want 429", resp.StatusCode)
	}

	log := e.log.String()
	if !strings.Contains(log, "too many attempts") || !strings.Contains(log, "client=127.0.0.1") {
		t.Fatalf("the hub's log does not record the refusal with the address:\n%s", log)
	}
	if strings.Contains(log, wrong) || strings.Contains(log, e.opTok) {
		t.Fatalf("a token in the hub's log:\n%s", log)
	}
}

// TestDashboardAuditFiltersInStore: the audit page asks the store for
// the operator entries matching its filters (newest first, one page): an
// old entry under hundreds of newer ones is found by its filter, and an
// unfiltered page is cut at maxAuditRows and says so.
func TestDashboardAuditFiltersInStore(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	// Half a minute past a minute: "to" (whole minutes) can fall between
	// the needle and the first hay a minute later.
	t0 := time.Now().Add(-48 * time.Hour).UTC().Truncate(time.Minute).Add(30 * time.Second)
	if _, err := e.st.AppendAudit(ctx, store.AuditEntry{Time: t0, Actor: "carol", Action: "host.block", Host: "pve-old", Detail: "needle"}); err != nil {
		t.Fatal(err)
	}
	for i := range maxAuditRows + 20 {
		if _, err := e.st.AppendAudit(ctx, store.AuditEntry{Time: t0.Add(time.Duration(i+1) * time.Minute), Actor: "bob", Action: "desired.put", Host: "pve-new", Detail: "hay"}); err != nil {
			t.Fatal(err)
		}
	}
	b := newBrowser(e)
	b.login(e.opTok)
	get := func(path string) string {
		t.Helper()
		resp, body := b.req("GET", path, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		return body
	}
	// Unfiltered: the newest maxAuditRows (this session's login and the
	// newest hay), cut and saying so.
	if body := get("/ui/audit"); strings.Contains(body, "needle") || strings.Count(body, "hay") != maxAuditRows-1 ||
		!strings.Contains(body, fmt.Sprintf("the newest %d;", maxAuditRows)) {
		t.Fatalf("unfiltered: %d rows of hay, needle %v; want the newest %d rows only, cut", strings.Count(body, "hay"), strings.Contains(body, "needle"), maxAuditRows)
	}
	for _, q := range []string{"signer=carol", "op=block", "host=pve-old", "to=" + t0.Add(time.Minute).Format(dateInput)} {
		body := get("/ui/audit?" + q)
		if !strings.Contains(body, "needle") || strings.Contains(body, "hay") {
			t.Fatalf("/ui/audit?%s: needle %v, hay %d; want the one old entry", q, strings.Contains(body, "needle"), strings.Count(body, "hay"))
		}
	}
}

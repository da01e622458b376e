package uitest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/steward-pve/steward/internal/agent"
	"github.com/steward-pve/steward/internal/backoff"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/sim/simtest"
	"github.com/steward-pve/steward/internal/tlspin"
)

// chromiumPath is Debian's Chromium; STEWARD_CHROMIUM names another.
func chromiumPath() string {
	if p := os.Getenv("STEWARD_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// One browser for the package's tests; each test gets its own browser
// context (cookies and storage of its own).
var browser struct {
	once   sync.Once
	ctx    context.Context
	err    error
	dir    string
	cancel func()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if browser.cancel != nil {
		browser.cancel()
	}
	os.Exit(code)
}

// startBrowser starts Chromium once, headless, with a fresh profile and
// nothing that reaches beyond loopback.
func startBrowser() {
	path := chromiumPath()
	if st, err := os.Stat(path); err != nil || st.IsDir() {
		browser.err = fmt.Errorf("the dashboard's browser tests need headless Chromium at %s (on Debian: apt-get install -y chromium; or set STEWARD_CHROMIUM to its path): %v", path, err)
		return
	}
	dir, err := os.MkdirTemp("", "steward-chromium-")
	if err != nil {
		browser.err = err
		return
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelB := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil {
		cancelB()
		cancelA()
		os.RemoveAll(dir)
		browser.err = fmt.Errorf("starting %s: %w", path, err)
		return
	}
	browser.ctx, browser.dir = bctx, dir
	browser.cancel = func() {
		cancelB()
		cancelA()
		// Chromium's children may still write for a moment after it stops.
		for range 50 {
			if os.RemoveAll(dir) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// tab returns a chromedp context of a fresh browser context (no cookie
// of another test), ended with the test; every action in it is bounded.
func tab(t *testing.T) context.Context {
	t.Helper()
	browser.once.Do(startBrowser)
	if browser.err != nil {
		t.Fatal(browser.err)
	}
	ctx, cancel := chromedp.NewContext(browser.ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	return ctx
}

// step runs actions with a bound, failing the test with what was being
// done.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Text(sel))
	if err != nil {
		t.Fatalf("reading %s: %v", sel, err)
	}
	return v
}

// screenshot writes a PNG of the whole page to the test's artifact
// directory.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if len(png) < 8 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot %s: not a PNG", name)
	}
	p := filepath.Join(t.ArtifactDir(), name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", p)
}

// colorScheme emulates prefers-color-scheme.
func colorScheme(scheme string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}})
		return err
	})
}

// fleet is a hub (SQLite; TLS for the agent, plain HTTP on loopback for
// the browser, as `steward hub --insecure-http` serves it), a simulator
// and an agent enrolled with the hub.
type fleet struct {
	st    store.Store
	hub   *hub.Server
	ui    string // the browser's base URL
	opTok string
	op    *hubclient.Client
	sim   *simtest.Server
	pve   *pve.Client
}

const host = "pve"

const desiredDoc = `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101:
        kind: qemu
        mode: observe
        config:
          cores: 1
      102:
        kind: qemu
        config:
          scsi0: local-lvm:vm-102-disk-9,size=32G
      103:
        kind: lxc
        state: running
`

func startFleet(t *testing.T) *fleet {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "hub.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{st: st, opTok: hub.NewToken("stwo_")}
	if err := st.CreateOperator(ctx, "alice", store.HashToken(f.opTok)); err != nil {
		t.Fatal(err)
	}
	f.hub = hub.New(st, hub.Options{PollInterval: time.Second})
	agentSrv := httptest.NewTLSServer(f.hub.Handler())
	uiSrv := httptest.NewServer(f.hub.Handler())
	f.ui = uiSrv.URL
	t.Cleanup(func() {
		f.hub.Shutdown()
		agentSrv.CloseClientConnections()
		uiSrv.CloseClientConnections()
		agentSrv.Close()
		uiSrv.Close()
		f.hub.Close()
		st.Close()
	})
	fp := tlspin.Of(agentSrv.Certificate().Raw)
	if f.op, err = hubclient.New(hubclient.Options{URL: agentSrv.URL, Fingerprint: fp, Token: f.opTok}); err != nil {
		t.Fatal(err)
	}

	f.sim = simtest.Start(t, sim.Options{TaskDuration: 2 * time.Millisecond})
	for _, g := range []sim.GuestSpec{
		{VMID: 101, Kind: guest.QEMU, Name: "web", Config: map[string]string{"cores": "1"}},
		{VMID: 102, Kind: guest.QEMU, Name: "db", Config: map[string]string{"cores": "2", "scsi0": "local-lvm:vm-102-disk-0,size=32G"}},
		{VMID: 103, Kind: guest.LXC, Name: "cache", Config: map[string]string{"cores": "1"}},
	} {
		if err := f.sim.Sim.AddGuest(g); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := pve.ParseToken(f.sim.Token)
	if err != nil {
		t.Fatal(err)
	}
	if f.pve, err = pve.New(pve.Options{URL: f.sim.URL, Token: tok, HTTPClient: f.sim.Client}); err != nil {
		t.Fatal(err)
	}

	var jt struct {
		JoinToken string `json:"join_token"`
	}
	if err := f.op.JSON(ctx, http.MethodPost, "/v1/hosts/"+host+"/join-token", nil, nil, &jt); err != nil {
		t.Fatal(err)
	}
	resp, err := f.op.Do(ctx, hubclient.Request{Method: http.MethodPut, Path: "/v1/hosts/" + host + "/desired",
		Body: []byte(desiredDoc), Header: http.Header{"Content-Type": {"application/yaml"}}})
	if err == nil {
		err = resp.Err(http.MethodPut, "desired")
	}
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	client, e, err := agent.Connect(ctx, agent.ConnectOptions{StateDir: dir, URL: agentSrv.URL, Fingerprint: fp, JoinToken: jt.JoinToken})
	if err != nil {
		t.Fatal(err)
	}
	hb, err := agent.NewHub(agent.HubOptions{Client: client, Host: e.Host, Wait: 2 * time.Second, RequestTimeout: 5 * time.Second,
		Backoff:     backoff.Policy{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond, Multiplier: 2, Jitter: 0.5},
		MinInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{Node: f.sim.Sim.Node(), PVE: f.pve, TaskUser: tok.ID, StateDir: dir, Hub: hb,
		Interval: 200 * time.Millisecond, TaskWait: pve.WaitOptions{Initial: time.Millisecond, Max: 5 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("agent.Run: %v", err)
		}
	})
	return f
}

// cspErrors collects what the browser logs about refused content
// (Content-Security-Policy violations) and page errors.
type cspErrors struct {
	mu   sync.Mutex
	msgs []string
}

func (c *cspErrors) watch(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*cdplog.EventEntryAdded); ok && e.Entry != nil && e.Entry.Level == cdplog.EntryLevelError {
			c.mu.Lock()
			c.msgs = append(c.msgs, string(e.Entry.Source)+": "+e.Entry.Text)
			c.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, cdplog.Enable, struct{}{}); err != nil {
		t.Fatal(err)
	}
}

func (c *cspErrors) check(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.msgs {
		// The hub answers the favicon request of no page; everything
		// else is an error of the dashboard.
		if strings.Contains(m, "Content Security Policy") || strings.Contains(m, "javascript") || strings.Contains(m, "Uncaught") {
			t.Errorf("the browser logged: %s", m)
		}
	}
}

// TestDashboardInBrowser: log in, see the fleet, follow the host, see a
// drift made on the simulator appear without a reload, see the pending
// signature with its payload and command, block the host; a screenshot
// of each page in light and dark, and on a phone.
func TestDashboardInBrowser(t *testing.T) {
	f := startFleet(t)
	ctx := tab(t)
	var logs cspErrors
	logs.watch(t, ctx)

	// Wait until the agent has reported guest 102's pending signature.
	deadline := time.Now().Add(60 * time.Second)
	for {
		ps, err := f.st.Pending(t.Context(), host)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent reported no pending signature for guest 102's disk replacement")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Log in.
	step(t, ctx, "opening the dashboard", chromedp.Navigate(f.ui+"/ui/"), chromedp.WaitVisible("#token"))
	if loc := eval[string](t, ctx, "location.pathname"); loc != "/ui/login" {
		t.Fatalf("without a session the dashboard shows %s; want the login page", loc)
	}
	screenshot(t, ctx, "login")
	step(t, ctx, "logging in", chromedp.SendKeys("#token", f.opTok), chromedp.Submit("#token"), chromedp.WaitVisible("#host-pve"))
	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{f.ui + "/ui/"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(cookies.Cookies) != 1 {
		t.Fatalf("cookies after login: %d; want the one session cookie", len(cookies.Cookies))
	}
	if c := cookies.Cookies[0]; c.Name != hub.SessionCookie || !c.HTTPOnly || !c.Secure || c.SameSite != network.CookieSameSiteStrict {
		t.Fatalf("session cookie %s: httpOnly %v, secure %v, sameSite %s; want all three (Secure works on http://127.0.0.1)", c.Name, c.HTTPOnly, c.Secure, c.SameSite)
	}
	if js := eval[string](t, ctx, "document.cookie"); js != "" {
		t.Fatalf("document.cookie = %q; the session cookie must be invisible to scripts", js)
	}

	// The fleet.
	step(t, ctx, "waiting for the live stream", chromedp.WaitVisible(`html[data-stream="on"] #host-pve`))
	if row := text(t, ctx, "#host-pve"); !strings.Contains(row, "reporting") {
		t.Fatalf("the fleet's row of pve: %q; want it reporting", row)
	}
	// The keyboard: the first Tab reaches the skip link, which moves
	// focus past the navigation to the page's content.
	step(t, ctx, "tabbing to the skip link", chromedp.KeyEvent("\t"))
	if a := eval[string](t, ctx, "document.activeElement.className + ' ' + document.activeElement.getAttribute('href')"); a != "skip #main" {
		t.Fatalf("the first Tab focuses %q; want the skip link", a)
	}
	step(t, ctx, "following the skip link", chromedp.KeyEvent("\r"))
	if id := eval[string](t, ctx, "document.activeElement.id"); id != "main" {
		t.Fatalf("after the skip link the focus is on %q; want main", id)
	}
	screenshot(t, ctx, "fleet-light")
	step(t, ctx, "dark scheme", colorScheme("dark"))
	screenshot(t, ctx, "fleet-dark")
	step(t, ctx, "light scheme", colorScheme("light"))

	// Follow the host.
	step(t, ctx, "following the host", chromedp.Click(`#host-pve a[href="/ui/hosts/pve"]`), chromedp.WaitVisible("#guest-101"))
	step(t, ctx, "waiting for the live stream", chromedp.WaitVisible(`html[data-stream="on"] #guest-101`))
	if g := text(t, ctx, "#guest-101"); !strings.Contains(g, "in sync") {
		t.Fatalf("guest 101 before the change: %q; want in sync", g)
	}
	if g := text(t, ctx, "#guest-102"); !strings.Contains(g, "pending signature") {
		t.Fatalf("guest 102: %q; want pending signature", g)
	}

	// A change on the simulator shows as drift, live: the page is not
	// reloaded (a value set on the window survives).
	eval[bool](t, ctx, "window.stewardNoReload = true")
	if _, err := f.pve.SetConfig(t.Context(), f.sim.Sim.Node(), guest.QEMU, 101, pve.ConfigChange{Set: map[string]string{"cores": "3"}}); err != nil {
		t.Fatal(err)
	}
	step(t, ctx, "waiting for the drift to appear", chromedp.WaitVisible("#guest-101 pre.diff"))
	if d := text(t, ctx, "#guest-101 pre.diff"); !strings.Contains(d, "- cores: 3") || !strings.Contains(d, "+ cores: 1") {
		t.Fatalf("guest 101's drift: %q; want cores 3 -> 1", d)
	}
	if !eval[bool](t, ctx, "window.stewardNoReload === true") {
		t.Fatal("the page reloaded to show the drift; want it updated in place")
	}
	if g := text(t, ctx, "#guest-101"); !strings.Contains(g, "drifted") {
		t.Fatalf("guest 101 after the change: %q; want drifted", g)
	}
	screenshot(t, ctx, "host-light")
	step(t, ctx, "dark scheme", colorScheme("dark"))
	screenshot(t, ctx, "host-dark")
	step(t, ctx, "light scheme", colorScheme("light"))

	// The pending signature with its command.
	step(t, ctx, "opening pending signatures", chromedp.Click(`nav a[href="/ui/pending"]`), chromedp.WaitVisible(".pending-item"))
	item := text(t, ctx, ".pending-item")
	for _, want := range []string{"102", "scsi0", "steward sign --host pve --key ~/.ssh/id_ed25519", "ssh-keygen -Y sign -n steward-op@steward", "Bound to"} {
		if !strings.Contains(item, want) {
			t.Errorf("the pending signature does not show %q:\n%s", want, item)
		}
	}
	ps, err := f.st.Pending(t.Context(), host)
	if err != nil || len(ps) == 0 {
		t.Fatalf("pending on the hub: %v, %v", ps, err)
	}
	shown := text(t, ctx, ".pending-item pre.payload")
	if strings.TrimSpace(shown) != strings.TrimSpace(string(ps[0].Payload)) {
		t.Errorf("the payload shown differs from the agent's:\n%s\nwant\n%s", shown, ps[0].Payload)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll('.pending-item button.copy:not([hidden])').length`); n < 2 {
		t.Errorf("copy buttons shown: %d; want them revealed by the script", n)
	}
	screenshot(t, ctx, "pending-light")
	step(t, ctx, "dark scheme", colorScheme("dark"))
	screenshot(t, ctx, "pending-dark")
	step(t, ctx, "light scheme", colorScheme("light"))

	// Block the host.
	step(t, ctx, "blocking the host", chromedp.Navigate(f.ui+"/ui/hosts/pve"), chromedp.WaitVisible("#reason"),
		chromedp.SendKeys("#reason", "disk swap"), chromedp.Click("#block"), chromedp.WaitVisible("#unblock"))
	h, err := f.st.Host(t.Context(), host)
	if err != nil || !h.Blocked || h.BlockedReason != "disk swap" {
		t.Fatalf("the host on the hub after Block: %+v, %v; want blocked: disk swap", h, err)
	}
	if s := text(t, ctx, "#host-summary"); !strings.Contains(s, "blocked: disk swap") {
		t.Fatalf("the host's summary after Block: %q", s)
	}
	screenshot(t, ctx, "host-blocked")

	// The audit history and the generations.
	step(t, ctx, "opening the audit history", chromedp.Click(`nav a[href="/ui/audit"]`), chromedp.WaitVisible("table.audit"))
	if a := text(t, ctx, "table.audit"); !strings.Contains(a, "host.block") || !strings.Contains(a, "dashboard.login") {
		t.Fatalf("the audit history does not show the block and the login:\n%s", a)
	}
	if n := eval[int](t, ctx, `Array.from(document.querySelectorAll('input:not([type=hidden]), select')).filter(e => !e.labels || e.labels.length === 0).length`); n != 0 {
		t.Errorf("the audit page has %d form controls without a label", n)
	}
	screenshot(t, ctx, "audit-light")
	step(t, ctx, "dark scheme", colorScheme("dark"))
	screenshot(t, ctx, "audit-dark")
	step(t, ctx, "light scheme", colorScheme("light"))
	step(t, ctx, "opening the generations", chromedp.Navigate(f.ui+"/ui/hosts/pve/generations?a=0&b=1"), chromedp.WaitVisible("pre.diff"))
	if d := text(t, ctx, "pre.diff"); !strings.Contains(d, "+ apiVersion: steward/v1") {
		t.Fatalf("the diff from nothing to generation 1: %q", d)
	}
	screenshot(t, ctx, "generations-light")
	step(t, ctx, "dark scheme", colorScheme("dark"))
	screenshot(t, ctx, "generations-dark")
	step(t, ctx, "light scheme", colorScheme("light"))

	// On a phone.
	step(t, ctx, "a phone's viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Navigate(f.ui+"/ui/hosts/pve"), chromedp.WaitVisible("#guest-101"))
	if w := eval[int](t, ctx, "document.documentElement.scrollWidth"); w > 400 {
		t.Errorf("the host page on a phone is %dpx wide; want it to fit 390px (tables scroll inside their box)", w)
	}
	screenshot(t, ctx, "host-phone")
	step(t, ctx, "desktop viewport", chromedp.EmulateReset())

	// Log out: the session ends on the hub.
	step(t, ctx, "logging out", chromedp.Click(".logout button"), chromedp.WaitVisible("#token"))
	step(t, ctx, "the fleet after logout", chromedp.Navigate(f.ui+"/ui/"), chromedp.WaitVisible("#token"))
	logs.check(t)
}

// TestDashboardWithoutScript: with JavaScript off, log in and block the
// host through plain forms; the pages are whole without the script.
func TestDashboardWithoutScript(t *testing.T) {
	f := startFleet(t)
	ctx := tab(t)
	step(t, ctx, "disabling scripts", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		return err
	}))
	step(t, ctx, "logging in", chromedp.Navigate(f.ui+"/ui/login"), chromedp.WaitVisible("#token"),
		chromedp.SendKeys("#token", f.opTok), chromedp.Submit("#token"), chromedp.WaitVisible("#host-pve"))
	step(t, ctx, "blocking the host", chromedp.Navigate(f.ui+"/ui/hosts/pve"), chromedp.WaitVisible("#reason"),
		chromedp.SendKeys("#reason", "no script"), chromedp.Click("#block"), chromedp.WaitVisible("#unblock"))
	if h, err := f.st.Host(t.Context(), host); err != nil || !h.Blocked {
		t.Fatalf("the host after Block without script: %+v, %v", h, err)
	}
	step(t, ctx, "unblocking the host", chromedp.Click("#unblock"), chromedp.WaitVisible("#block"))
	if h, err := f.st.Host(t.Context(), host); err != nil || h.Blocked {
		t.Fatalf("the host after Unblock without script: %+v, %v", h, err)
	}
}

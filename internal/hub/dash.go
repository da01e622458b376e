package hub

// The dashboard: server-rendered HTML pages under /ui/, for people.
//
// # Sessions
//
// An operator logs in with an operator token (the same token the CLI
// uses); the hub checks it and gives the browser a session cookie
// (steward_session: 32 random bytes, HttpOnly, Secure, SameSite=Strict,
// Path=/ui/). The store keeps only the cookie's HashToken, with the
// operator's name and an expiry (Options.SessionTTL, default 12h);
// revoking the operator token ends its sessions at once, logout ends one.
// The cookie is always Secure: browsers treat http://127.0.0.1 and
// http://localhost as secure contexts, so the plain-HTTP loopback mode of
// development works too, and anywhere else the hub serves TLS.
//
// # Requests that change state
//
// Every POST (login, logout, block, unblock) must come from a page of
// the hub itself: its Origin header must name the hub's own host (or,
// without an Origin, Sec-Fetch-Site must say same-origin). Every POST
// but login also carries the session's CSRF token, a keyed hash of the
// session cookie (the page holds it in a hidden field; a page of another
// site can read neither). Nothing else changes state: the browser never
// holds a signing key, and signing happens with the operator's own key
// outside the browser.
//
// # Login attempts
//
// Token logins are rate limited per client address (see LoginBurst):
// past the limit the hub answers 429 with Retry-After and does not look
// at the token; each refusal is logged with the address, never the
// token.
//
// # Headers
//
// Pages are served with a Content-Security-Policy that allows scripts,
// styles and images from the hub only (no inline script or style, no
// frames, forms posting to the hub only), X-Frame-Options DENY,
// nosniff, a referrer for the hub's own pages only (with no-referrer a
// browser sends "Origin: null" on a form post, which the Origin check
// refuses) and no caching. Every asset is embedded in the
// binary: the dashboard works offline.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/hub/store"
)

// DefaultSessionTTL is how long a dashboard login lasts; MaxSessionTTL
// bounds what steward hub --session-ttl accepts.
const (
	DefaultSessionTTL = 12 * time.Hour
	MaxSessionTTL     = 30 * 24 * time.Hour
)

// SessionCookie is the name of the dashboard's session cookie.
const SessionCookie = "steward_session"

// dashCSP is the Content-Security-Policy of every dashboard response.
const dashCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// maxFormBody bounds the body of a dashboard form.
const maxFormBody = 16 << 10

//go:embed dashboard
var dashFS embed.FS

// dashboard serves the /ui/ pages of a Server.
type dashboard struct {
	s      *Server
	ttl    time.Duration
	pages  map[string]*template.Template
	logins *loginLimiter
}

func newDashboard(s *Server, ttl time.Duration) *dashboard {
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	d := &dashboard{s: s, ttl: ttl, pages: map[string]*template.Template{}, logins: newLoginLimiter(LoginBurst, LoginRefill)}
	funcs := template.FuncMap{
		"ago":        d.ago,
		"ts":         func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
		"iso":        func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"phaseLabel": phaseLabel,
		"join":       strings.Join,
	}
	names, err := fs.Glob(dashFS, "dashboard/*.html")
	if err != nil {
		panic(err)
	}
	for _, n := range names {
		if strings.HasSuffix(n, "/layout.html") {
			continue
		}
		// The templates are part of the binary: a parse error is a bug
		// that every dashboard test finds.
		t := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(dashFS, "dashboard/layout.html", n))
		d.pages[strings.TrimSuffix(strings.TrimPrefix(n, "dashboard/"), ".html")] = t
	}
	return d
}

// routes registers the dashboard's handlers on mux.
func (d *dashboard) routes(mux *http.ServeMux) {
	static, err := fs.Sub(dashFS, "dashboard/static")
	if err != nil {
		panic(err)
	}
	files := http.StripPrefix("/ui/static/", http.FileServerFS(static))
	mux.Handle("GET /ui/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.headers(w)
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /ui/login", d.loginPage)
	mux.HandleFunc("POST /ui/login", d.login)
	mux.HandleFunc("POST /ui/logout", d.session(d.logout))
	mux.HandleFunc("GET /ui/{$}", d.session(d.fleetPage))
	mux.HandleFunc("GET /ui/hosts/{host}", d.session(d.hostPage))
	mux.HandleFunc("POST /ui/hosts/{host}/block", d.session(d.block))
	mux.HandleFunc("POST /ui/hosts/{host}/unblock", d.session(d.unblock))
	mux.HandleFunc("GET /ui/hosts/{host}/generations", d.session(d.generationsPage))
	mux.HandleFunc("GET /ui/hosts/{host}/pending/{job}/payload", d.session(d.payload))
	mux.HandleFunc("GET /ui/pending", d.session(d.pendingPage))
	mux.HandleFunc("GET /ui/audit", d.session(d.auditPage))
	mux.HandleFunc("GET /ui/events", d.session(d.events))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		d.headers(w)
		http.Error(w, "no such page: "+r.URL.Path, http.StatusNotFound)
	})
}

// headers sets the security headers of every dashboard response.
func (d *dashboard) headers(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", dashCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// session is what a logged-in request knows about its session.
type session struct {
	Operator string
	CSRF     string
	Expires  time.Time
}

// csrfToken derives the CSRF token of a session from its cookie: only a
// holder of the cookie (the hub, or the page the hub served it to)
// computes it, and the store, holding only the cookie's hash, cannot.
func csrfToken(cookie string) string {
	m := hmac.New(sha256.New, []byte(cookie))
	m.Write([]byte("steward dashboard csrf v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// sameOrigin reports whether a state-changing request came from a page
// of this hub: Origin names the request's own host (and https when the
// request came over TLS), or, when a browser sent no Origin,
// Sec-Fetch-Site is same-origin. A request with neither is refused.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return r.Header.Get("Sec-Fetch-Site") == "same-origin"
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
		return false
	}
	if r.TLS != nil {
		return u.Scheme == "https"
	}
	return u.Scheme == "http" || u.Scheme == "https"
}

// sessionCookie sets (value != "") or clears the session cookie.
func (d *dashboard) setCookie(w http.ResponseWriter, value string, expires time.Time) {
	c := &http.Cookie{Name: SessionCookie, Value: value, Path: "/ui/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode}
	if value == "" {
		c.MaxAge = -1
	} else {
		c.Expires = expires
		c.MaxAge = max(int(expires.Sub(d.s.now()).Seconds()), 1)
	}
	http.SetCookie(w, c)
}

// lookup returns the request's session, ok false when it has none that
// is valid (a store failure is an error).
func (d *dashboard) lookup(r *http.Request) (session, string, bool, error) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" || len(c.Value) > 128 {
		return session{}, "", false, nil
	}
	x, err := d.s.st.SessionByToken(r.Context(), store.HashToken(c.Value), d.s.now())
	if errors.Is(err, store.ErrNotFound) {
		return session{}, c.Value, false, nil
	}
	if err != nil {
		return session{}, "", false, err
	}
	return session{Operator: x.Operator, CSRF: csrfToken(c.Value), Expires: x.ExpiresAt}, c.Value, true, nil
}

type sessionHandler func(w http.ResponseWriter, r *http.Request, sess session)

// session authenticates a dashboard request by its session cookie;
// without a valid one a page redirects to the login page and anything
// else is 401. A POST must also pass sameOrigin and carry the session's
// CSRF token in its form. The operator is in the request's context as
// for the API (audit entries and events name them).
func (d *dashboard) session(h sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		d.headers(w)
		sess, cookie, ok, err := d.lookup(r)
		if err != nil {
			d.s.log.Error("dashboard: looking up a session", "err", err)
			http.Error(w, "the hub's store failed; see the hub's log", http.StatusInternalServerError)
			return
		}
		if !ok {
			if cookie != "" {
				d.setCookie(w, "", time.Time{})
			}
			if r.Method == http.MethodGet && r.URL.Path != "/ui/events" {
				http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, "not logged in, or the session ended: log in again at /ui/login", http.StatusUnauthorized)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if !sameOrigin(r) {
				http.Error(w, "refused: this request did not come from a page of this hub (Origin)", http.StatusForbidden)
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
			if err := r.ParseForm(); err != nil {
				http.Error(w, "reading the form: "+err.Error(), http.StatusBadRequest)
				return
			}
			if !hmac.Equal([]byte(r.PostForm.Get("csrf")), []byte(sess.CSRF)) {
				http.Error(w, "refused: the form's CSRF token is missing or wrong; reload the page and try again", http.StatusForbidden)
				return
			}
		}
		op := store.Operator{Name: sess.Operator}
		h(w, r.WithContext(context.WithValue(r.Context(), keyOperator, op)), sess)
	}
}

// safeNext returns where to go after login: a dashboard path, never
// another site.
func safeNext(v string) string {
	if !strings.HasPrefix(v, "/ui/") || strings.HasPrefix(v, "/ui/login") || strings.ContainsRune(v, '\\') || len(v) > 2048 {
		return "/ui/"
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] == 0x7f {
			return "/ui/"
		}
	}
	if u, err := url.Parse(v); err != nil || u.Scheme != "" || u.Host != "" || u.Opaque != "" {
		return "/ui/"
	}
	return v
}

type loginView struct {
	Next  string
	Error string
}

func (d *dashboard) loginPage(w http.ResponseWriter, r *http.Request) {
	d.headers(w)
	if _, _, ok, _ := d.lookup(r); ok {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	d.render(w, r, http.StatusOK, "login", session{}, "Log in", loginView{Next: safeNext(r.URL.Query().Get("next"))})
}

// login exchanges an operator token for a session. The token is never
// logged, echoed or kept (only its hash is looked up).
func (d *dashboard) login(w http.ResponseWriter, r *http.Request) {
	d.headers(w)
	if !sameOrigin(r) {
		http.Error(w, "refused: this request did not come from a page of this hub (Origin)", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "reading the form: "+err.Error(), http.StatusBadRequest)
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	tok := strings.TrimSpace(r.PostForm.Get("token"))
	if tok == "" {
		d.render(w, r, http.StatusBadRequest, "login", session{}, "Log in", loginView{Next: next, Error: "Enter an operator token."})
		return
	}
	client := clientKey(r.RemoteAddr)
	if ok, retry := d.logins.take(client, d.s.now()); !ok {
		secs := int((retry + time.Second - 1) / time.Second)
		d.s.log.Warn("dashboard: login refused: too many attempts from this address", "client", client, "retry_after", secs)
		w.Header().Set("Retry-After", fmt.Sprint(secs))
		d.render(w, r, http.StatusTooManyRequests, "login", session{}, "Log in",
			loginView{Next: next, Error: fmt.Sprintf("Too many login attempts from your address: try again in %d seconds.", secs)})
		return
	}
	op, err := d.s.st.OperatorByToken(r.Context(), store.HashToken(tok))
	if errors.Is(err, store.ErrNotFound) {
		d.s.log.Warn("dashboard: login refused: unknown or revoked operator token", "client", client)
		d.render(w, r, http.StatusUnauthorized, "login", session{}, "Log in",
			loginView{Next: next, Error: "That token is unknown or revoked. Use an operator token (steward tokens create NAME, or the admin one steward hub wrote to DATA-DIR/admin-token at its first start)."})
		return
	}
	if err != nil {
		d.s.log.Error("dashboard: login", "err", err)
		http.Error(w, "the hub's store failed; see the hub's log", http.StatusInternalServerError)
		return
	}
	cookie := NewToken("stws_")
	expires := d.s.now().Add(d.ttl).UTC().Truncate(time.Second)
	if err := d.s.st.CreateSession(r.Context(), store.HashToken(cookie), op.Name, expires); err != nil {
		d.s.log.Error("dashboard: creating a session", "err", err)
		http.Error(w, "the hub's store failed; see the hub's log", http.StatusInternalServerError)
		return
	}
	d.logins.refund(client, d.s.now())
	d.s.touchOperator(r, op)
	r = r.WithContext(context.WithValue(r.Context(), keyOperator, op))
	d.s.auditLog(r, "dashboard.login", "", "session until "+expires.Format(time.RFC3339))
	d.setCookie(w, cookie, expires)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (d *dashboard) logout(w http.ResponseWriter, r *http.Request, _ session) {
	c, _ := r.Cookie(SessionCookie)
	if err := d.s.st.DeleteSession(r.Context(), store.HashToken(c.Value)); err != nil {
		d.s.log.Error("dashboard: ending a session", "err", err)
		http.Error(w, "the hub's store failed; see the hub's log", http.StatusInternalServerError)
		return
	}
	d.s.auditLog(r, "dashboard.logout", "", "")
	d.setCookie(w, "", time.Time{})
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// pageData is what the layout template reads.
type pageData struct {
	Title   string
	Nav     string
	Session session
	Now     time.Time
	View    any
}

// render executes page with view into w (buffered: a template error is
// a 500, never half a page).
func (d *dashboard) render(w http.ResponseWriter, r *http.Request, status int, page string, sess session, title string, view any) {
	t, ok := d.pages[page]
	if !ok {
		panic("dashboard: no template " + page)
	}
	var b strings.Builder
	if err := t.Execute(&b, pageData{Title: title, Nav: page, Session: sess, Now: d.s.now(), View: view}); err != nil {
		d.s.log.Error("dashboard: rendering", "page", page, "err", err)
		http.Error(w, "rendering the page failed; see the hub's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprint(w, b.String())
}

// ago says how long before now t was, roughly.
func (d *dashboard) ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	s := d.s.now().Sub(t)
	switch {
	case s < 0:
		return "just now"
	case s < time.Minute:
		return fmt.Sprintf("%ds ago", int(s.Seconds()))
	case s < time.Hour:
		return fmt.Sprintf("%dm ago", int(s.Minutes()))
	case s < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(s.Hours()))
	default:
		return fmt.Sprintf("%dd ago", int(s.Hours()/24))
	}
}

// phaseLabel is how the dashboard names a sync phase.
func phaseLabel(p string) string {
	switch p {
	case "in_sync":
		return "in sync"
	case "drift_observed":
		return "drifted"
	case "":
		return "unmanaged"
	}
	return strings.ReplaceAll(p, "_", " ")
}

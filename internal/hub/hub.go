// Package hub is steward's hub server: the HTTP API agents and operators
// use, over a store.Store.
//
// # API
//
// Agents (Authorization: Bearer HOST-TOKEN, scoped to the host the token
// was issued to; any other host in the path is 403):
//
//	POST /v1/enroll                              {"join_token": T} -> {"host": H, "token": HOST-TOKEN} (no bearer)
//	POST /v1/agent/hosts/{host}/report           wire.Report -> wire.Control
//	POST /v1/agent/hosts/{host}/heartbeat        {"hash": H} -> wire.Control, or 409 report_required
//	GET  /v1/agent/hosts/{host}/desired?after=G&wait=D  -> wire.Desired (blocking query)
//	GET  /v1/agent/hosts/{host}/jobs             -> {"jobs": [{"id", "payload", "signatures"}]} (waiting jobs)
//	POST /v1/agent/hosts/{host}/job-results      wire.JobResults
//	POST /v1/agent/hosts/{host}/receipts         wire.Receipts -> {"seq", "hash"}; 409 chain_gap / chain_broken
//
// Operators (Authorization: Bearer OPERATOR-TOKEN):
//
//	GET  /v1/hosts                               hosts with last seen and generation
//	GET  /v1/hosts/{host}                        one host, with its last report
//	POST /v1/hosts/{host}/join-token             -> {"join_token", "expires"} (creates the host)
//	POST /v1/hosts/{host}/revoke
//	POST /v1/hosts/{host}/block                  {"reason": R}
//	POST /v1/hosts/{host}/unblock
//	PUT  /v1/hosts/{host}/desired                YAML or JSON document; If-Match: G -> {"generation"}
//	GET  /v1/hosts/{host}/desired                wire.Desired, ETag: "G"
//	GET  /v1/hosts/{host}/desired/history?limit=N
//	GET  /v1/hosts/{host}/pending                pending signatures with their payloads
//	GET  /v1/hosts/{host}/plan                   the shared planner on the last report and the desired document
//	POST /v1/hosts/{host}/jobs                   {"payload", "signatures"} (base64) -> UploadJSON; the signatures join the job
//	                                             already waiting for the same payload bytes (a key counts once); 409 job_final
//	                                             when that job ended, nonce_conflict for other bytes with a waiting job's nonce
//	GET  /v1/hosts/{host}/jobs                   every job with its state
//	GET  /v1/hosts/{host}/history?vmid=N&after=SEQ&limit=N  the audit trail from the agent's journal receipts (HistoryJSON)
//	GET  /v1/audit?after=ID&limit=N              operator actions
//	GET  /v1/events?after=ID&wait=D&limit=N      fleet events (blocking query, as desired)
//	GET  /v1/notifications?after=ID&limit=N      the notification outbox (NotificationJSON)
//	POST /v1/notifications/test                  {"sink": S} -> {"id"}: a test message to that sink
//	POST /v1/tokens                              {"name": N} -> {"name", "token", "created_at"} (token shown once)
//	GET  /v1/tokens                              operator tokens: name, created, last used, revoked (never a secret)
//	POST /v1/tokens/{name}/revoke                at once; the last valid token cannot be revoked (409 last_token)
//
// The dashboard, for people in a browser, is under /ui/ (see dash.go):
// a session cookie from an operator token, server-rendered pages, and
// server-sent events at /ui/events.
//
// Health: GET /healthz (the process runs), GET /readyz (the store answers
// and the server is not shutting down).
//
// # Fleet state in memory
//
// A heartbeat changes nothing but the host's last-seen time, so the hub
// keeps last-seen in memory and writes every host's in one transaction
// each FlushInterval (default 5s) and at Close, instead of one write per
// heartbeat. A crash loses at most FlushInterval of last-seen progress
// (the operator API overlays the in-memory times, so a running hub shows
// them at once); full reports, desired state, jobs and everything else
// are written before the request is answered. The same memory counts
// connected agents (seen within 2 poll intervals), sizes the fleet for
// PollInterval, and records host.silent when a host has been quiet for 2
// poll intervals (checked every SweepInterval; with several replicas,
// each may record it).
//
// Every body is bounded and strictly decoded (unknown fields refused);
// every error is JSON {"error": reason, "code": code}. Tokens are never
// logged: the request log names method, path, status and latency only.
package hub

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/steward-pve/steward/internal/alert"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/wire"
)

// Defaults of Options.
const (
	DefaultPollInterval = 60 * time.Second
	DefaultJoinTokenTTL = time.Hour
	DefaultWait         = 5 * time.Minute
	// DefaultRecheck bounds how long a lost cross-hub notification can
	// delay a long-poll.
	DefaultRecheck = 10 * time.Second
	MaxWait        = 10 * time.Minute
	// DefaultReportBudget is the fleet's total report rate (reports and
	// heartbeats per second) the poll interval is stretched to stay under.
	DefaultReportBudget  = 200.0
	DefaultFlushInterval = 5 * time.Second
	DefaultSweepInterval = 15 * time.Second
	// MaxOperatorBody bounds small operator JSON bodies.
	MaxOperatorBody = 64 << 10
)

// Options configure a Server. The zero value is usable.
type Options struct {
	Logger *slog.Logger // nil: discard
	// PollInterval is the base report interval (see PollInterval, the
	// function, for how it stretches with ReportBudget).
	PollInterval time.Duration
	ReportBudget float64 // reports/s; default DefaultReportBudget; < 0: never stretch
	JoinTokenTTL time.Duration
	// Notifier carries desired changes between the hubs sharing the
	// store (nil: a LocalNotifier of this hub's own). Replicas on
	// PostgreSQL pass a postgres.Notifier.
	Notifier Notifier
	// Recheck is how often the hub re-reads the generations of hosts
	// with held long-polls, in case a notification was lost (default
	// DefaultRecheck). A LocalNotifier loses none (its Publish calls
	// every subscriber before it returns), so with one (or none given)
	// the hub never re-checks: at 10,000 hosts each re-check read every
	// host, the hub's largest cost after the requests themselves.
	Recheck time.Duration
	// EventRetention and EventKeep bound the event log: events older
	// than EventRetention go, and all but the newest EventKeep.
	EventRetention time.Duration
	EventKeep      int
	// FlushInterval is how often heartbeats held in memory are written;
	// SweepInterval how often silence is checked and the log pruned.
	FlushInterval time.Duration
	SweepInterval time.Duration
	// SessionTTL is how long a dashboard login lasts (default
	// DefaultSessionTTL).
	SessionTTL time.Duration
	// ReadHeaderTimeout, BodyTimeout and IdleTimeout are the limits of
	// HTTPServer and Handler (defaults DefaultReadHeaderTimeout,
	// DefaultBodyTimeout, DefaultIdleTimeout).
	ReadHeaderTimeout time.Duration
	BodyTimeout       time.Duration
	IdleTimeout       time.Duration
	Now               func() time.Time
	// Alerts sends notifications (nil: none). The caller runs its Run
	// loop; the hub raises alerts into it and serves its metrics.
	Alerts *alert.Dispatcher
}

// Server serves the hub API. Create it with New; it is safe for concurrent
// use. Shutdown answers every blocked long-poll.
type Server struct {
	st     store.Store
	log    *slog.Logger
	poll   time.Duration
	budget float64
	ttl    time.Duration
	now    func() time.Time

	eventAge   time.Duration
	eventKeep  int
	flushEvery time.Duration
	sweepEvery time.Duration

	readHeaderTimeout time.Duration
	bodyTimeout       time.Duration
	idleTimeout       time.Duration

	closing    chan struct{}
	closeOnce  sync.Once
	loopStop   chan struct{} // closed by Close: the housekeeping loop ends
	stopOnce   sync.Once
	loopDone   chan struct{}
	held       atomic.Int64 // desired long-polls held now
	eventPolls atomic.Int64 // event long-polls held now

	m *metrics

	alerts         *alert.Dispatcher // nil: no notifications
	pendingAlerted map[string]bool   // pending.waiting raised by this hub, by host/PendingKey; guarded by mu

	notifier     Notifier
	recheckEvery time.Duration
	stop         context.CancelFunc // ends the subscription and re-check goroutines
	bg           sync.WaitGroup     // those goroutines

	fleetMu sync.Mutex
	fleet   map[string]*hostState // enrolled hosts
	dirty   map[string]time.Time  // heartbeats not yet written

	sumMu        sync.Mutex
	summaryCache map[string]summaryEntry // host → summary of its last report (summary.go)

	mu        sync.Mutex
	eventWake chan struct{}         // closed at the next event
	waiters   map[string]*waitEntry // host -> its held long-polls' wake-up
	// putAt is when this hub stored each host's current generation, for
	// the propagation histogram.
	putAt map[string]genTime
	// reportWake is closed when a host's report changes (the dashboard's
	// event streams wait on it); lastReportHost names the last such host.
	reportWake     chan struct{}
	lastReportHost string

	dash *dashboard
}

type genTime struct {
	gen int64
	at  time.Time
}

// New returns a Server over st. It starts the notification subscription
// and the periodic re-check, which Shutdown stops, and the housekeeping
// (heartbeat writes, silence checks, event pruning), which Close stops.
func New(st store.Store, opt Options) *Server {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.PollInterval <= 0 {
		opt.PollInterval = DefaultPollInterval
	}
	if opt.ReportBudget == 0 {
		opt.ReportBudget = DefaultReportBudget
	}
	if opt.EventRetention <= 0 {
		opt.EventRetention = DefaultEventRetention
	}
	if opt.EventKeep <= 0 {
		opt.EventKeep = DefaultEventKeep
	}
	if opt.FlushInterval <= 0 {
		opt.FlushInterval = DefaultFlushInterval
	}
	if opt.SweepInterval <= 0 {
		opt.SweepInterval = DefaultSweepInterval
	}
	if opt.JoinTokenTTL <= 0 {
		opt.JoinTokenTTL = DefaultJoinTokenTTL
	}
	if opt.ReadHeaderTimeout <= 0 {
		opt.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if opt.BodyTimeout <= 0 {
		opt.BodyTimeout = DefaultBodyTimeout
	}
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = DefaultIdleTimeout
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Notifier == nil {
		opt.Notifier = &LocalNotifier{}
	}
	if opt.Recheck <= 0 {
		opt.Recheck = DefaultRecheck
	}
	s := &Server{log: opt.Logger, poll: opt.PollInterval, budget: opt.ReportBudget, ttl: opt.JoinTokenTTL, now: opt.Now,
		notifier: opt.Notifier, recheckEvery: opt.Recheck,
		eventAge: opt.EventRetention, eventKeep: opt.EventKeep, flushEvery: opt.FlushInterval, sweepEvery: opt.SweepInterval,
		readHeaderTimeout: opt.ReadHeaderTimeout, bodyTimeout: opt.BodyTimeout, idleTimeout: opt.IdleTimeout,
		closing: make(chan struct{}), loopStop: make(chan struct{}), loopDone: make(chan struct{}),
		fleet: map[string]*hostState{}, dirty: map[string]time.Time{},
		eventWake: make(chan struct{}), waiters: map[string]*waitEntry{}, putAt: map[string]genTime{}, reportWake: make(chan struct{}),
		alerts: opt.Alerts, pendingAlerted: map[string]bool{}}
	s.dash = newDashboard(s, opt.SessionTTL)
	s.m = newMetrics(s)
	s.st = timedStore{st: st, h: s.m.store}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.bg.Go(func() { s.subscribe(ctx) })
	if _, lossless := opt.Notifier.(*LocalNotifier); !lossless {
		s.bg.Go(func() { s.recheckLoop(ctx) })
	}
	go s.loop()
	return s
}

// Close stops the housekeeping and writes the heartbeats held in memory;
// call it after http.Server.Shutdown and before closing the store. Safe
// to call more than once.
func (s *Server) Close() {
	s.Shutdown()
	s.stopOnce.Do(func() { close(s.loopStop) })
	<-s.loopDone
}

// Shutdown makes every held long-poll answer at once (with the current
// generation) and /readyz fail, and stops the Server's goroutines; call it
// before http.Server.Shutdown so that drains promptly. Safe to call more
// than once.
func (s *Server) Shutdown() {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.stop()
		s.bg.Wait()
	})
}

// HeldPolls returns how many desired long-polls are being held.
func (s *Server) HeldPolls() int64 { return s.held.Load() }

// HeldEventPolls returns how many event long-polls are being held.
func (s *Server) HeldEventPolls() int64 { return s.eventPolls.Load() }

// NewToken returns a fresh bearer token: 32 random bytes, hex, with a
// prefix naming its kind ("stwh_" host, "stwj_" join, "stwo_" operator).
func NewToken(prefix string) string {
	b := make([]byte, 32)
	crand.Read(b) // never fails (crypto/rand)
	return prefix + hex.EncodeToString(b)
}

// Handler returns the hub's HTTP handler, with request logging and the
// body read deadline (Options.BodyTimeout). Serve it with HTTPServer,
// which adds the connection limits.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.ready)
	mux.Handle("GET /metrics", s.m.handler())

	mux.HandleFunc("POST /v1/enroll", s.enroll)
	mux.HandleFunc("POST /v1/agent/hosts/{host}/report", s.agent(s.report))
	mux.HandleFunc("POST /v1/agent/hosts/{host}/heartbeat", s.agent(s.heartbeat))
	mux.HandleFunc("GET /v1/agent/hosts/{host}/desired", s.agent(s.agentDesired))
	mux.HandleFunc("GET /v1/agent/hosts/{host}/jobs", s.agent(s.agentJobs))
	mux.HandleFunc("POST /v1/agent/hosts/{host}/job-results", s.agent(s.jobResults))
	mux.HandleFunc("POST /v1/agent/hosts/{host}/receipts", s.agent(s.receipts))

	mux.HandleFunc("GET /v1/hosts", s.operator(s.listHosts))
	mux.HandleFunc("GET /v1/hosts/{host}", s.operator(s.showHost))
	mux.HandleFunc("POST /v1/hosts/{host}/join-token", s.operator(s.joinToken))
	mux.HandleFunc("POST /v1/hosts/{host}/revoke", s.operator(s.revoke))
	mux.HandleFunc("POST /v1/hosts/{host}/block", s.operator(s.block))
	mux.HandleFunc("POST /v1/hosts/{host}/unblock", s.operator(s.unblock))
	mux.HandleFunc("PUT /v1/hosts/{host}/desired", s.operator(s.putDesired))
	mux.HandleFunc("GET /v1/hosts/{host}/desired", s.operator(s.getDesired))
	mux.HandleFunc("GET /v1/hosts/{host}/desired/history", s.operator(s.desiredHistory))
	mux.HandleFunc("GET /v1/hosts/{host}/pending", s.operator(s.pending))
	mux.HandleFunc("GET /v1/hosts/{host}/plan", s.operator(s.plan))
	mux.HandleFunc("POST /v1/hosts/{host}/jobs", s.operator(s.uploadJob))
	mux.HandleFunc("GET /v1/hosts/{host}/jobs", s.operator(s.listJobs))
	mux.HandleFunc("GET /v1/hosts/{host}/history", s.operator(s.history))
	mux.HandleFunc("GET /v1/audit", s.operator(s.audit))
	mux.HandleFunc("GET /v1/events", s.operator(s.events))
	mux.HandleFunc("GET /v1/notifications", s.operator(s.notifications))
	mux.HandleFunc("POST /v1/notifications/test", s.operator(s.notifyTest))
	mux.HandleFunc("POST /v1/tokens", s.operator(s.createToken))
	mux.HandleFunc("GET /v1/tokens", s.operator(s.listTokens))
	mux.HandleFunc("POST /v1/tokens/{name}/revoke", s.operator(s.revokeToken))
	s.dash.routes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return s.bodyDeadline(s.logged(mux))
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.closing:
		writeError(w, http.StatusServiceUnavailable, "shutting_down", "the hub is shutting down")
		return
	default:
	}
	if _, err := s.st.Audit(r.Context(), 1<<62, 1); err != nil {
		s.log.Error("readiness: store", "err", err)
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", "the hub's store does not answer")
		return
	}
	if ws, ok := s.st.(writableStore); ok {
		if err := ws.Writable(r.Context()); errors.Is(err, store.ErrNewerSchema) {
			writeError(w, http.StatusServiceUnavailable, "schema_newer", err.Error())
			return
		} else if err != nil {
			s.log.Error("readiness: store", "err", err)
			writeError(w, http.StatusServiceUnavailable, "store_unavailable", "the hub's store does not answer")
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// writableStore is a store that can refuse writes while it still reads
// (postgres: a replica older than the database's schema); /readyz fails
// then, so a load balancer sends its traffic to the replicas that can
// write.
type writableStore interface {
	Writable(ctx context.Context) error
}

// statusWriter records the status code for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (the
// dashboard's event stream flushes through it).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// logged logs every request: method, path, status and latency; never a
// header or a query value (tokens travel in headers; the query of the
// API carries none, but it is left out all the same).
func (s *Server) logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		s.m.observeRequest(r.Pattern, sw.status, time.Since(start))
		s.log.Info("request", "method", r.Method, "path", r.URL.Path, "status", sw.status, "latency", time.Since(start))
	})
}

type ctxKey int

const (
	keyHost ctxKey = iota
	keyOperator
)

// bearer returns the request's bearer token ("" if none).
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	if len(h) > len(p) && strings.EqualFold(h[:len(p)], p) {
		return strings.TrimSpace(h[len(p):])
	}
	return ""
}

// agent authenticates a host token and scopes the request to its host.
func (s *Server) agent(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := bearer(r)
		if tok == "" {
			writeError(w, http.StatusUnauthorized, "unauthenticated", "a host bearer token is required (enroll with a join token first)")
			return
		}
		host, err := s.st.HostByToken(r.Context(), store.HashToken(tok))
		if err != nil {
			s.storeError(w, r, err, http.StatusUnauthorized, "unauthenticated", "the host token is unknown or revoked; enroll again with a new join token")
			return
		}
		if host.ID != r.PathValue("host") {
			writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("this token belongs to host %q; it cannot act for host %q", host.ID, r.PathValue("host")))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), keyHost, host)))
	}
}

// operator authenticates an operator token.
func (s *Server) operator(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := bearer(r)
		if tok == "" {
			writeError(w, http.StatusUnauthorized, "unauthenticated", "an operator bearer token is required")
			return
		}
		op, err := s.st.OperatorByToken(r.Context(), store.HashToken(tok))
		if err != nil {
			s.storeError(w, r, err, http.StatusUnauthorized, "unauthenticated", "the operator token is unknown or revoked")
			return
		}
		s.touchOperator(r, op)
		h(w, r.WithContext(context.WithValue(r.Context(), keyOperator, op)))
	}
}

func hostOf(r *http.Request) store.Host { return r.Context().Value(keyHost).(store.Host) }
func operatorOf(r *http.Request) store.Operator {
	return r.Context().Value(keyOperator).(store.Operator)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding the response failed","code":"internal"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, wire.Error{Error: msg, Code: code})
}

// storeError answers a store error: ErrNotFound as (nfStatus, nfCode,
// nfMsg), the other sentinels as their status, anything else as 500
// (logged, not shown).
func (s *Server) storeError(w http.ResponseWriter, r *http.Request, err error, nfStatus int, nfCode, nfMsg string) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		if nfMsg == "" {
			nfMsg = err.Error()
		}
		writeError(w, nfStatus, nfCode, nfMsg)
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusPreconditionFailed, "conflict", err.Error())
	case errors.Is(err, store.ErrExists):
		writeError(w, http.StatusConflict, "exists", err.Error())
	case errors.Is(err, store.ErrInvalid):
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
	case errors.Is(err, store.ErrNewerSchema):
		writeError(w, http.StatusServiceUnavailable, "schema_newer", err.Error())
	case errors.Is(err, context.Canceled):
		writeError(w, http.StatusServiceUnavailable, "canceled", "the request was canceled")
	default:
		s.log.Error("store", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "the hub's store failed; see the hub's log")
	}
}

// readBody reads the whole body, at most max bytes; on failure it has
// answered and returns ok false.
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the body is larger than %d bytes", max))
		return nil, false
	case errors.Is(err, os.ErrDeadlineExceeded):
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestTimeout, "body_timeout", "the body did not arrive in time; send it at once after the headers")
		return nil, false
	case err != nil:
		writeError(w, http.StatusBadRequest, "bad_body", "reading the body: "+err.Error())
		return nil, false
	}
	return b, true
}

// decodeStrict decodes one JSON value of T with no unknown field and
// nothing after it; on failure it has answered.
func decodeStrict[T any](w http.ResponseWriter, r *http.Request, max int64, what string) (T, bool) {
	var v T
	b, ok := readBody(w, r, max)
	if !ok {
		return v, false
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		writeError(w, http.StatusBadRequest, "bad_body", fmt.Sprintf("decoding %s: %v", what, err))
		return v, false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "bad_body", fmt.Sprintf("decoding %s: data after the JSON value", what))
		return v, false
	}
	return v, true
}

// jitter returns a random duration in [0, d/16].
func jitter(d time.Duration) time.Duration {
	if d < 16 {
		return 0
	}
	return rand.N(d/16 + 1)
}

package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/steward-pve/steward/internal/atomicfile"
	"github.com/steward-pve/steward/internal/backoff"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/safefile"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/wire"
)

// HubStateFile is the file under the state directory holding the last
// desired document the hub served (with its generation) and whether the
// hub blocked the host, so that a restarted agent keeps converging to it
// and stays blocked while the hub is away.
const HubStateFile = "hub-state.json"

// Defaults of HubOptions.
const (
	DefaultHubWait           = 5 * time.Minute
	DefaultHubRequestTimeout = 30 * time.Second
	// MinHubInterval and MaxHubInterval bound the poll interval a hub
	// may set: a hub cannot make the agent spin, nor silence it for long.
	MinHubInterval = 5 * time.Second
	MaxHubInterval = 30 * time.Minute
	// minPollGap separates two long polls even when the hub answers at
	// once, so a misbehaving hub cannot make the agent spin.
	minPollGap = time.Second
)

// DefaultHubBackoff is the reconnect policy toward an unreachable hub:
// from 1s, doubling, capped at 3 minutes, half of each delay jittered.
var DefaultHubBackoff = backoff.Policy{Initial: time.Second, Max: 3 * time.Minute, Multiplier: 2, Jitter: 0.5}

// HubOptions configure a Hub.
type HubOptions struct {
	Client *hubclient.Client // required: the hub, with this host's token
	Host   string            // required: the host id the hub enrolled the agent as
	// Wait is how long each desired long poll may be held; default
	// DefaultHubWait.
	Wait time.Duration
	// RequestTimeout bounds every other call; default
	// DefaultHubRequestTimeout.
	RequestTimeout time.Duration
	Backoff        backoff.Policy // zero: DefaultHubBackoff
	// MinInterval is the shortest poll interval the hub may set; default
	// MinHubInterval (tests lower it).
	MinInterval  time.Duration
	AgentVersion string       // reported in the host's facts
	Logger       *slog.Logger // nil: no logging
	// OnError, when set, is called for every failed call to the hub
	// ("desired" for the long poll, "report" for reports and heartbeats),
	// for metrics. It must be quick and safe for concurrent use.
	OnError func(call string)
}

// Hub is the agent's link to a hub: a DesiredSource fed by a long poll,
// a JobSource of the hub's signed jobs, and the reporter of each tick.
// Give it to Config.Hub; the Agent runs its long poll in a goroutine it
// owns. Everything the hub sends is checked before it is used: a desired
// document for another host, one at an older generation, or another
// document at the generation held is refused (and logged); signed jobs
// go through the same verification as local ones, under the id of their
// own payload bytes.
type Hub struct {
	client  *hubclient.Client
	host    string
	wait    time.Duration
	timeout time.Duration
	backoff backoff.Policy
	minIntv time.Duration
	version string
	log     *slog.Logger
	onError func(call string)

	wakeC chan struct{} // a new desired document was accepted
	now   func() time.Time

	// path is the state file ("" until the agent opened its state
	// directory, or for a read-only Plan: nothing is written).
	path string

	mu      sync.Mutex
	state   hubState          // what the state file holds
	doc     *desired.Document // state.Desired parsed
	served  int64             // the generation Desired last returned
	loaded  bool
	refused string // the last refusal logged, to log each once

	// Touched only by the tick loop (Jobs, Settle, report).
	posted       map[string]string // job id -> last verdict posted
	lastContent  string            // content hash of the last report the hub took
	hubVersion   int               // wire version the hub last named (0: none yet; fields of later versions are not sent to it)
	lastHash     string            // ReportHash of its bytes
	reportFails  int
	reportAfter  time.Time // no report attempt before
	lastHubJobs  int       // hub jobs offered by the last Jobs call
	jobsFetchErr string
}

// hubState is the content of HubStateFile.
type hubState struct {
	Desired       wire.Desired `json:"desired"`
	Blocked       bool         `json:"blocked,omitempty"`
	BlockedReason string       `json:"blocked_reason,omitempty"`
}

// NewHub checks o and returns a Hub. It does no I/O.
func NewHub(o HubOptions) (*Hub, error) {
	if o.Client == nil || o.Host == "" {
		return nil, fmt.Errorf("%w: a Hub needs a client and the enrolled host id", ErrConfig)
	}
	h := &Hub{client: o.Client, host: o.Host, wait: o.Wait, timeout: o.RequestTimeout, backoff: o.Backoff,
		version: o.AgentVersion, log: o.Logger, onError: o.OnError, wakeC: make(chan struct{}, 1), posted: map[string]string{}, now: time.Now}
	if h.wait <= 0 {
		h.wait = DefaultHubWait
	}
	if h.timeout <= 0 {
		h.timeout = DefaultHubRequestTimeout
	}
	if h.minIntv = o.MinInterval; h.minIntv <= 0 {
		h.minIntv = MinHubInterval
	}
	if h.backoff == (backoff.Policy{}) {
		h.backoff = DefaultHubBackoff
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.state.Desired.Host = o.Host
	h.doc = &desired.Document{}
	return h, nil
}

// load reads the state file of stateDir (once). With write false the
// Hub keeps what it fetches in memory only. A state file that does not
// pass the checks a fetched document passes is an error: the agent would
// otherwise forget the generation it holds.
func (h *Hub) load(stateDir string, write bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	path := filepath.Join(stateDir, HubStateFile)
	if write {
		h.path = path
	}
	if h.loaded {
		return nil
	}
	b, err := safefile.ReadFileNoFollow(path, wire.MaxDesiredSize+64<<10)
	if errors.Is(err, os.ErrNotExist) {
		h.loaded = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("agent: reading the hub state: %w", err)
	}
	var st hubState
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return fmt.Errorf("agent: %s is unreadable (%v); remove it to start again from the hub's current document", path, err)
	}
	doc, err := h.check(st.Desired)
	if err != nil {
		return fmt.Errorf("agent: %s: %w; remove it to start again from the hub's current document", path, err)
	}
	h.state, h.doc, h.loaded = st, doc, true
	h.log.Info("desired state from the hub, as last fetched", "generation", st.Desired.Generation, "blocked", st.Blocked)
	return nil
}

// check validates a desired envelope for this host and parses its
// document.
func (h *Hub) check(d wire.Desired) (*desired.Document, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if d.Host != h.host {
		return nil, fmt.Errorf("the hub served the desired document of host %q; this agent is host %q", d.Host, h.host)
	}
	if len(d.Document) == 0 {
		return &desired.Document{}, nil
	}
	doc, err := desired.Parse(d.Document)
	if err != nil {
		return nil, fmt.Errorf("generation %d: %w", d.Generation, err)
	}
	for id := range doc.Hosts {
		if id != h.host {
			return nil, fmt.Errorf("generation %d names host %q; a document for host %q may name only it", d.Generation, id, h.host)
		}
	}
	return doc, nil
}

// accept takes a desired envelope from the hub: it is refused (error)
// when it is not for this host, does not validate, goes back in
// generation, or changes the document without a new generation. A new
// generation is persisted, then used, and the tick loop woken. It
// returns whether the document changed.
func (h *Hub) accept(d wire.Desired) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cur := h.state.Desired
	switch {
	case d.Generation < cur.Generation:
		return false, fmt.Errorf("the hub served generation %d, older than the generation %d this agent holds: refused (a hub cannot roll desired state back; if the hub's database was replaced on purpose, remove %s)",
			d.Generation, cur.Generation, HubStateFile)
	case d.Generation == cur.Generation:
		if d.Host == cur.Host && bytes.Equal(d.Document, cur.Document) {
			return false, nil
		}
		if d.Host != h.host {
			break // refused below, naming the host
		}
		return false, fmt.Errorf("the hub served another document at generation %d, which this agent holds: refused (a new document needs a new generation)", d.Generation)
	}
	doc, err := h.check(d)
	if err != nil {
		return false, err
	}
	next := h.state
	next.Desired = wire.Desired{Host: d.Host, Generation: d.Generation, Document: bytes.Clone(d.Document)}
	if err := h.saveLocked(next); err != nil {
		return false, err
	}
	h.state, h.doc = next, doc
	h.log.Info("new desired state from the hub", "generation", d.Generation)
	select {
	case h.wakeC <- struct{}{}:
	default:
	}
	return true, nil
}

// saveLocked writes st to the state file (when there is one).
func (h *Hub) saveLocked(st hubState) error {
	if h.path == "" {
		return nil
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(h.path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("agent: saving the hub state: %w", err)
	}
	return nil
}

// Desired returns the last document accepted from the hub (an empty one
// before the first). It never blocks and fails only when ctx ended.
func (h *Hub) Desired(ctx context.Context) (*desired.Document, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.served = h.state.Desired.Generation
	return h.doc, nil
}

// Generation returns the generation of the desired document held.
func (h *Hub) Generation() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state.Desired.Generation
}

// Blocked returns whether the hub blocked the host (as last heard, kept
// across restarts) and why.
func (h *Hub) Blocked() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state.Blocked, h.state.BlockedReason
}

// wake is signalled when a new desired document was accepted.
func (h *Hub) wake() <-chan struct{} { return h.wakeC }

// fetch asks the hub once for the desired document (held up to wait) and
// accepts it.
func (h *Hub) fetch(ctx context.Context, wait time.Duration) (bool, error) {
	pctx, cancel := context.WithTimeout(ctx, wait+wait/16+h.timeout)
	defer cancel()
	d, err := h.client.Desired(pctx, h.host, h.Generation(), wait)
	if err != nil {
		return false, err
	}
	return h.accept(d)
}

// poll is the long-poll loop: it holds a blocking query for the next
// generation, accepts what comes, and backs off (jittered, capped) while
// the hub is unreachable or serves what it must refuse. It returns when
// ctx ends.
func (h *Hub) poll(ctx context.Context) {
	fails, refusals := 0, 0
	for ctx.Err() == nil {
		delay := minPollGap
		_, err := h.fetch(ctx, h.wait)
		switch {
		case ctx.Err() != nil:
			return
		case isRefusal(err):
			refusals++
			delay = h.backoff.Delay(refusals, nil)
			h.logRefusal(err)
		case err != nil:
			fails++
			delay = h.backoff.Delay(fails, nil)
			h.logHubError("desired", "fetching desired state from the hub failed; converging to the last document held", err, fails, delay)
		default:
			if fails > 0 {
				h.log.Info("hub reachable again", "generation", h.Generation())
			}
			fails, refusals = 0, 0
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// isRefusal reports whether err is the agent refusing what the hub sent
// (rather than not reaching it).
func isRefusal(err error) bool {
	if err == nil {
		return false
	}
	var te *hubclient.TransportError
	var he *hubclient.Error
	return !errors.As(err, &te) && !errors.As(err, &he) && !errors.Is(err, context.DeadlineExceeded)
}

func (h *Hub) logRefusal(err error) {
	h.mu.Lock()
	same := h.refused == err.Error()
	h.refused = err.Error()
	h.mu.Unlock()
	if !same {
		h.log.Error("refused what the hub served; converging to the last document held", "err", err, "generation", h.Generation())
	}
}

// logHubError logs a failed hub call with what to do about it.
func (h *Hub) logHubError(call, msg string, err error, attempt int, retry time.Duration) {
	if h.onError != nil {
		h.onError(call)
	}
	attrs := []any{"err", err, "attempt", attempt}
	if retry > 0 {
		attrs = append(attrs, "retry_in", retry.Round(time.Millisecond))
	}
	if s := hubclient.StatusOf(err); s == http.StatusUnauthorized || s == http.StatusForbidden {
		attrs = append(attrs, "hint", "the hub refused this host's token (revoked?): remove "+EnrollmentFile+" from the state directory and enroll again with a new --join-token")
	}
	if attempt <= 1 || attempt%10 == 0 {
		h.log.Warn(msg, attrs...)
	} else {
		h.log.Debug(msg, attrs...)
	}
}

// HubJobPrefix starts the Name of every job from the hub: "hub:" and the
// job's id (wire.JobID of its payload).
const HubJobPrefix = "hub:"

// Jobs returns the hub's waiting jobs, each named HubJobPrefix + the id
// of its payload bytes (the hub's own id is not trusted). It does not
// fail when the hub cannot be reached: the local jobs and desired state
// go on; the failure is logged.
func (h *Hub) Jobs(ctx context.Context) ([]signedop.Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if h.away() {
		h.lastHubJobs = 0
		return nil, nil
	}
	cctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	js, err := h.client.Jobs(cctx, h.host)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if h.jobsFetchErr != err.Error() {
			h.log.Warn("fetching signed jobs from the hub failed; the next tick asks again", "err", err)
		}
		h.jobsFetchErr = err.Error()
		h.lastHubJobs = 0
		return nil, nil
	}
	h.jobsFetchErr = ""
	seen := map[string]bool{}
	out := make([]signedop.Job, 0, len(js))
	for _, j := range js {
		id := wire.JobID(j.Payload)
		if j.ID != "" && j.ID != id {
			h.log.Warn("the hub named a job by an id its payload does not hash to; judged by its payload", "hub_id", j.ID, "job", id)
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, signedop.Job{Payload: j.Payload, Signatures: j.Signatures, Name: HubJobPrefix + id})
	}
	h.lastHubJobs = len(out)
	return out, nil
}

// jobResult is the hub's view of a job's fate this tick.
func jobResult(j engine.JobReport) wire.JobResult {
	r := wire.JobResult{Job: strings.TrimPrefix(j.Name, HubJobPrefix), Reason: j.Reason}
	switch j.Status {
	case engine.JobRan:
		r.State = wire.JobDone
	case engine.JobFailed:
		r.State = wire.JobFailed
	case engine.JobCompleted:
		// The journal says how it ended before: "ran before ..." or
		// "failed before ..." (engine's completion).
		r.State = wire.JobDone
		if strings.HasPrefix(j.Reason, "failed") {
			r.State = wire.JobFailed
		}
	case engine.JobRejected:
		r.State = wire.JobRejected
	default:
		r.State = wire.JobHeld
		if sf := j.Shortfall; sf != nil {
			r.Code = signedop.CodeInsufficientSigners
			r.Quorum = &wire.Quorum{Role: sf.Role, Need: sf.Need, Signed: slices.Clone(sf.Signed)}
		}
	}
	if len(r.Reason) > wire.MaxTextLen {
		r.Reason = r.Reason[:wire.MaxTextLen]
	}
	return r
}

// Settle posts the fate of the hub's jobs (those named HubJobPrefix…)
// when it changed since last posted, so the hub clears finished ones. A
// result the hub refuses (a job it no longer holds, a conflicting final
// state) is logged and not sent again; an unreachable hub is an error and
// the next tick posts again.
func (h *Hub) Settle(ctx context.Context, jobs []engine.JobReport) error {
	var batch []wire.JobResult
	seen := map[string]bool{}
	for _, j := range jobs {
		if !strings.HasPrefix(j.Name, HubJobPrefix) {
			continue
		}
		r := jobResult(j)
		seen[r.Job] = true
		v := r.State + "\x00" + r.Reason
		if h.posted[r.Job] == v {
			continue
		}
		batch = append(batch, r)
	}
	for id := range h.posted {
		if !seen[id] {
			delete(h.posted, id) // no longer offered: the hub cleared it
		}
	}
	if len(batch) == 0 || h.away() {
		return nil // an unreachable hub gets the results once it is back
	}
	cctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	hubVersion := h.hubVersion
	if hubVersion == 0 {
		hubVersion = wire.Version
	}
	strip := func(rs []wire.JobResult) wire.JobResults {
		return wire.StripNewerResults(wire.JobResults{Host: h.host, Results: rs}, hubVersion)
	}
	err := h.client.JobResults(cctx, strip(batch))
	if err == nil {
		for _, r := range batch {
			h.posted[r.Job] = r.State + "\x00" + r.Reason
		}
		return nil
	}
	if hubclient.StatusOf(err) == 0 {
		return err
	}
	// The hub refused the batch: post one by one so one bad result does
	// not hold back the others.
	var first error
	for _, r := range batch {
		err := h.client.JobResults(cctx, strip([]wire.JobResult{r}))
		switch s := hubclient.StatusOf(err); {
		case err == nil:
		case s == http.StatusNotFound || s == http.StatusConflict || s == http.StatusBadRequest:
			h.log.Warn("the hub refused a job result; not sent again", "job", r.Job, "state", r.State, "err", err)
		default:
			if first == nil {
				first = err
			}
			continue
		}
		h.posted[r.Job] = r.State + "\x00" + r.Reason
	}
	return first
}

// away reports whether the last report failed and its backoff has not
// passed: the tick does not wait on other calls to a hub known to be
// unreachable.
func (h *Hub) away() bool {
	return h.reportFails > 0 && h.now().Before(h.reportAfter)
}

// contentHash is the hash of what a report says, its time left out: a
// report whose content hash did not change goes as a heartbeat.
func contentHash(w wire.Report) (string, error) {
	w.Time = time.Time{}
	b, err := wire.EncodeReport(w)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// report sends what a tick saw and did: the full report when its content
// changed since the hub last took one (or the hub asks for it), otherwise
// a heartbeat naming it. It applies the control envelope the hub answers
// (blocked, kept across restarts) and returns it. While the hub is
// unreachable, attempts back off; ok is false when no answer came.
func (h *Hub) report(ctx context.Context, rep engine.Report, frozen bool) (ctl wire.Control, ok bool) {
	now := h.now()
	if now.Before(h.reportAfter) {
		return ctl, false
	}
	// A hub that has not yet named its wire version is sent the newest;
	// one that refuses it (an older hub: unknown field) is sent version 1
	// at once, and from then on until it names a later one.
	hubVersion := h.hubVersion
	if hubVersion == 0 {
		hubVersion = wire.Version
	}
	full := rep.Wire()
	w := wire.StripNewer(full, hubVersion)
	h.mu.Lock()
	w.DesiredGeneration = h.served
	h.mu.Unlock()
	w.Facts.AgentVersion, w.Facts.Frozen = h.version, frozen
	content, err := contentHash(w)
	if err != nil {
		h.log.Error("encoding the report", "err", err)
		return ctl, false
	}
	cctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	sent := false
	if content == h.lastContent && h.lastHash != "" {
		ctl, err = h.client.Heartbeat(cctx, h.host, h.lastHash)
		sent = err == nil
		if hubclient.IsCode(err, hubclient.CodeReportRequired) {
			err = nil
		}
	}
	if !sent && err == nil {
		var body []byte
		if body, err = wire.EncodeReport(w); err == nil {
			ctl, err = h.client.Report(cctx, h.host, body)
			if err != nil && h.hubVersion == 0 && hubclient.IsCode(err, "bad_report") {
				w1 := wire.StripNewer(w, 1)
				if c1, err1 := contentHash(w1); err1 == nil && c1 != content {
					h.log.Info("the hub refused a wire version 2 report; sending version 1 (no unmanaged guest configs: steward import cannot adopt them until the hub is upgraded)")
					h.hubVersion, w, content = 1, w1, c1
					if body, err = wire.EncodeReport(w); err == nil {
						ctl, err = h.client.Report(cctx, h.host, body)
					}
				}
			}
			if err == nil {
				sum := sha256.Sum256(body)
				h.lastContent, h.lastHash = content, hex.EncodeToString(sum[:])
			}
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctl, false
		}
		h.reportFails++
		delay := h.backoff.Delay(h.reportFails, nil)
		h.reportAfter = now.Add(delay)
		h.lastHash = "" // the next report that gets through is a full one
		h.logHubError("report", "reporting to the hub failed", err, h.reportFails, delay)
		return ctl, false
	}
	if h.reportFails > 0 {
		h.log.Info("reporting to the hub again")
	}
	h.reportFails, h.reportAfter = 0, time.Time{}
	if ctl.HubVersion > 0 {
		h.hubVersion = ctl.HubVersion
	}
	h.setBlocked(ctl.Blocked, ctl.BlockedReason)
	return ctl, true
}

// setBlocked records the hub's block, persisted so a restarted agent
// stays blocked while the hub is away.
func (h *Hub) setBlocked(blocked bool, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state.Blocked == blocked && h.state.BlockedReason == reason {
		return
	}
	next := h.state
	next.Blocked, next.BlockedReason = blocked, reason
	if err := h.saveLocked(next); err != nil {
		h.log.Error("saving the hub's block state", "err", err)
	}
	h.state = next
	if blocked {
		h.log.Warn("the hub blocked this host: nothing will be changed until it is unblocked", "reason", reason)
	} else {
		h.log.Info("the hub unblocked this host")
	}
}

// pollInterval is the hub's poll interval within sane bounds.
func (h *Hub) pollInterval(d time.Duration) time.Duration {
	return min(max(d, h.minIntv), MaxHubInterval)
}

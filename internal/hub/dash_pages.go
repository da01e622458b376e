package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/wire"
)

// fleetRow is one host of the fleet overview.
type fleetRow struct {
	ID            string
	Enrolled      bool
	Revoked       bool
	Blocked       bool
	BlockedReason string
	Frozen        bool
	Silent        bool
	LastSeen      time.Time
	Node          string
	AgentVersion  string
	Reported      bool
	Counts        map[string]int // by phase
	Pending       int            // actions waiting for signatures
	Rejected      int
	Generation    int64 // desired
	Applied       int64 // the generation the last report converged toward
	ReportError   string
}

// fleetView is the fleet overview.
type fleetView struct {
	Hosts  []fleetRow
	Phases []string
	Totals map[string]int
}

// lastReport returns host's last report decoded (ok false when it has
// none).
func (d *dashboard) lastReport(r *http.Request, host string) (wire.Report, bool, error) {
	rep, err := d.s.st.LastReport(r.Context(), host)
	if errors.Is(err, store.ErrNotFound) {
		return wire.Report{}, false, nil
	}
	if err != nil {
		return wire.Report{}, false, err
	}
	wr, err := wire.DecodeReport(rep.Body)
	if err != nil {
		return wire.Report{}, false, fmt.Errorf("the stored report of %q: %w", host, err)
	}
	return wr, true, nil
}

func (d *dashboard) fail(w http.ResponseWriter, err error) {
	if errors.Is(err, store.ErrNotFound) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	d.s.log.Error("dashboard", "err", err)
	http.Error(w, "the hub's store failed; see the hub's log", http.StatusInternalServerError)
}

// fleetRow is h as the fleet overview shows it; sum is its last report
// at a glance (nil: none).
func (d *dashboard) fleetRow(h store.Host, sum *ReportSummaryJSON) fleetRow {
	hj := d.s.hostJSON(h)
	row := fleetRow{ID: h.ID, Enrolled: !h.EnrolledAt.IsZero(), Revoked: !h.RevokedAt.IsZero(), Blocked: h.Blocked,
		BlockedReason: h.BlockedReason, Generation: h.DesiredGeneration, Counts: map[string]int{}}
	if hj.LastSeen != nil {
		row.LastSeen = *hj.LastSeen
		row.Silent = d.s.now().Sub(row.LastSeen) > 2*d.s.pollInterval()
	}
	if sum != nil {
		row.Reported = true
		row.Node, row.AgentVersion, row.Frozen = sum.Node, sum.AgentVersion, sum.Frozen
		row.Applied, row.Counts = sum.DesiredGeneration, sum.Sync
		row.Pending, row.Rejected = sum.Pending, sum.Rejected
	}
	return row
}

// fleetPage shows every host from the summaries the hub keeps of their
// last reports (a report is decoded once, not at every page view).
func (d *dashboard) fleetPage(w http.ResponseWriter, r *http.Request, sess session) {
	hosts, err := d.s.st.Hosts(r.Context())
	if err != nil {
		d.fail(w, err)
		return
	}
	hjs := make([]HostJSON, len(hosts))
	for i, h := range hosts {
		hjs[i] = d.s.hostJSON(h)
	}
	if err := d.s.summarize(r.Context(), hosts, hjs); err != nil {
		d.fail(w, err)
		return
	}
	v := fleetView{Phases: wire.Phases, Totals: map[string]int{}}
	for i, h := range hosts {
		row := d.fleetRow(h, hjs[i].Summary)
		for p, n := range row.Counts {
			v.Totals[p] += n
		}
		v.Totals["pending"] += row.Pending
		v.Hosts = append(v.Hosts, row)
	}
	d.render(w, r, http.StatusOK, "fleet", sess, "Fleet", v)
}

// field is one managed field of a guest: what the desired state wants
// and what the agent last saw.
type field struct {
	Key  string
	Want string
	Have string
	Same bool
}

// guestView is one guest on the host page.
type guestView struct {
	VMID      int
	Name      string
	Kind      string
	Status    string
	Lock      string
	Managed   bool
	Mode      string
	Phase     string
	Reason    string
	NextRetry time.Time
	Drift     []wire.Change
	Restart   []string // keys waiting for a restart
	Fields    []field
	Ignored   []string
}

// hostView is the host page.
type hostView struct {
	Row      fleetRow
	Report   wire.Report
	Guests   []guestView
	Pending  []pendingView
	Actions  []wire.ActionResult
	Rejected []wire.Rejection
	Desired  store.Desired
}

func (d *dashboard) hostPage(w http.ResponseWriter, r *http.Request, sess session) {
	h, err := d.s.st.Host(r.Context(), r.PathValue("host"))
	if err != nil {
		d.fail(w, err)
		return
	}
	rep, reported, err := d.lastReport(r, h.ID)
	if err != nil {
		d.fail(w, err)
		return
	}
	var sum *ReportSummaryJSON
	if reported {
		x := Summarize(rep)
		sum = &x
	}
	v := hostView{Row: d.fleetRow(h, sum)}
	v.Report, v.Actions, v.Rejected = rep, rep.Actions, rep.Rejected
	if v.Desired, err = d.s.st.Desired(r.Context(), h.ID); err != nil {
		d.fail(w, err)
		return
	}
	var want *desired.Host
	if v.Desired.Generation > 0 {
		if doc, err := desired.Parse(v.Desired.Document); err == nil {
			want = doc.ForHost(h.ID)
		}
	}
	v.Guests = guestViews(rep, want)
	if v.Pending, err = d.pendingOf(r, h.ID, rep); err != nil {
		d.fail(w, err)
		return
	}
	d.render(w, r, http.StatusOK, "host", sess, "Host "+h.ID, v)
}

// guestViews joins a report's guests, their sync status and the desired
// guests (a desired guest the report lacks shows too).
func guestViews(rep wire.Report, want *desired.Host) []guestView {
	syncs := map[int]wire.Sync{}
	for _, s := range rep.Sync {
		syncs[s.VMID] = s
	}
	seen := map[int]bool{}
	var out []guestView
	add := func(vmid int, g *wire.Guest) {
		v := guestView{VMID: vmid}
		var have map[string]string
		if g != nil {
			v.Name, v.Kind, v.Status, v.Lock, have = g.Name, g.Kind, g.Status, g.Lock, g.Config
		} else {
			v.Status = "absent"
		}
		if s, ok := syncs[vmid]; ok {
			v.Phase, v.Reason, v.NextRetry, v.Drift, v.Restart = s.Phase, s.Reason, s.NextRetry, s.Drift, s.Pending
			if s.Lock != "" {
				v.Lock = s.Lock
			}
		}
		if want != nil {
			if dg, ok := want.Guests[vmid]; ok && dg != nil {
				v.Managed, v.Mode, v.Ignored = true, string(dg.EffectiveMode()), dg.Ignore
				if v.Kind == "" {
					v.Kind = string(dg.Kind)
				}
				if dg.State != "" {
					v.Fields = append(v.Fields, field{Key: "state", Want: string(dg.State), Have: v.Status})
				}
				if dg.Description != nil {
					v.Fields = append(v.Fields, field{Key: "description", Want: *dg.Description, Have: have["description"]})
				}
				if dg.Tags != nil {
					v.Fields = append(v.Fields, field{Key: "tags", Want: strings.Join(dg.Tags, ";"), Have: have["tags"]})
				}
				keys := make([]string, 0, len(dg.Config))
				for k := range dg.Config {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				for _, k := range keys {
					v.Fields = append(v.Fields, field{Key: k, Want: dg.Config[k], Have: have[k]})
				}
				for i := range v.Fields {
					v.Fields[i].Same = v.Fields[i].Want == v.Fields[i].Have
				}
			}
		}
		out = append(out, v)
	}
	for i := range rep.Guests {
		g := &rep.Guests[i]
		seen[g.VMID] = true
		add(g.VMID, g)
	}
	if want != nil {
		var missing []int
		for vmid := range want.Guests {
			if !seen[vmid] {
				missing = append(missing, vmid)
			}
		}
		slices.Sort(missing)
		for _, vmid := range missing {
			add(vmid, nil)
		}
	}
	slices.SortFunc(out, func(a, b guestView) int { return a.VMID - b.VMID })
	return out
}

func (d *dashboard) hostAction(w http.ResponseWriter, r *http.Request, block bool) {
	host := r.PathValue("host")
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	if block && (reason == "" || len(reason) > wire.MaxTextLen) {
		http.Error(w, fmt.Sprintf("say why the host is blocked (a reason of 1..%d bytes)", wire.MaxTextLen), http.StatusBadRequest)
		return
	}
	if err := d.s.st.SetBlocked(r.Context(), host, block, reason); err != nil {
		d.fail(w, err)
		return
	}
	if block {
		d.s.auditLog(r, "host.block", host, reason)
		d.s.operatorEvent(r, store.EventHostBlocked, host, reason)
	} else {
		d.s.auditLog(r, "host.unblock", host, "")
		d.s.operatorEvent(r, store.EventHostUnblocked, host, "")
	}
	http.Redirect(w, r, "/ui/hosts/"+host, http.StatusSeeOther)
}

func (d *dashboard) block(w http.ResponseWriter, r *http.Request, _ session) {
	d.hostAction(w, r, true)
}
func (d *dashboard) unblock(w http.ResponseWriter, r *http.Request, _ session) {
	d.hostAction(w, r, false)
}

// pendingView is one action waiting for signatures.
type pendingView struct {
	Host    string
	Job     string // wire.JobID of the payload: its name in URLs
	Pending wire.Pending
	Payload string
	Parsed  bool
	Nonce   string
	Digest  string
	Expires time.Time
	Expired bool // past Expires already: the agent refuses it
	// Current is the guest's config digest in the host's last report;
	// Stale when it differs from the one the payload is bound to.
	Current   string
	Stale     bool
	File      string
	SignCmd   string
	KeygenCmd string
	// Signed is how many signatures the job for this payload holds on the
	// hub (0: no job yet), Signers who they are (as the agent credited
	// them when it said, else the keys' fingerprints); Quorum what the
	// agent's policy asks (nil: the agent did not say).
	Signed  int
	Signers []string
	Quorum  *wire.Quorum
}

// pendingOf returns host's pending actions, rep being its last report.
func (d *dashboard) pendingOf(r *http.Request, host string, rep wire.Report) ([]pendingView, error) {
	ps, err := d.s.st.Pending(r.Context(), host)
	if err != nil {
		return nil, err
	}
	digests := map[int]string{}
	for _, g := range rep.Guests {
		digests[g.VMID] = g.Digest
	}
	var jobs map[string]store.Job
	if len(ps) > 0 {
		js, err := d.s.st.Jobs(r.Context(), host, store.JobWaiting)
		if err != nil {
			return nil, err
		}
		jobs = make(map[string]store.Job, len(js))
		for _, j := range js {
			jobs[j.ID] = j
		}
	}
	var out []pendingView
	for _, p := range ps {
		v := pendingView{Host: host, Job: wire.JobID(p.Payload), Pending: p, Payload: string(p.Payload), Digest: p.Action.Digest, Quorum: p.Quorum}
		if j, ok := jobs[v.Job]; ok {
			v.Signed = len(j.Signatures)
			if r := j.Result; r != nil && r.Quorum != nil {
				v.Signers = r.Quorum.Signed
				v.Quorum = &wire.Quorum{Role: r.Quorum.Role, Need: r.Quorum.Need}
			} else {
				for _, sig := range j.Signatures {
					v.Signers = append(v.Signers, store.SignerKey(sig))
				}
			}
		}
		if pl, err := signedop.ParsePayload(p.Payload); err == nil {
			v.Parsed, v.Nonce, v.Digest, v.Expires = true, pl.Nonce, pl.Digest, pl.Expires
			v.Expired = !pl.Expires.IsZero() && d.s.now().After(pl.Expires)
		}
		v.Current = digests[p.Action.VMID]
		v.Stale = v.Digest != "" && v.Current != "" && v.Digest != v.Current
		v.File = payloadFile(host, p.Action, v.Job)
		v.SignCmd = "steward sign --host " + host + " --key ~/.ssh/id_ed25519"
		v.KeygenCmd = "ssh-keygen -Y sign -n " + signedop.Namespace + " -f ~/.ssh/id_ed25519 " + v.File
		out = append(out, v)
	}
	return out, nil
}

// payloadFile names a downloaded payload: host, vmid, op and the start
// of its job id (every part a host id or safe in a file name).
func payloadFile(host string, a wire.Action, job string) string {
	op := strings.Map(func(c rune) rune {
		if 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' {
			return c
		}
		return '_'
	}, a.Op)
	return fmt.Sprintf("%s-%d-%s-%.12s.payload", host, a.VMID, op, job)
}

type pendingPageView struct {
	Host    string
	Hosts   []string
	Pending []pendingView
}

func (d *dashboard) pendingPage(w http.ResponseWriter, r *http.Request, sess session) {
	hosts, err := d.s.st.Hosts(r.Context())
	if err != nil {
		d.fail(w, err)
		return
	}
	// The summaries of the last reports say which hosts hold pending
	// actions (SetPending stores them from the same report): only those
	// are read in full.
	hjs := make([]HostJSON, len(hosts))
	if err := d.s.summarize(r.Context(), hosts, hjs); err != nil {
		d.fail(w, err)
		return
	}
	v := pendingPageView{Host: r.URL.Query().Get("host")}
	for i, h := range hosts {
		v.Hosts = append(v.Hosts, h.ID)
		if v.Host != "" && h.ID != v.Host || hjs[i].Summary == nil || hjs[i].Summary.Pending == 0 {
			continue
		}
		rep, _, err := d.lastReport(r, h.ID)
		if err != nil {
			d.fail(w, err)
			return
		}
		ps, err := d.pendingOf(r, h.ID, rep)
		if err != nil {
			d.fail(w, err)
			return
		}
		v.Pending = append(v.Pending, ps...)
	}
	d.render(w, r, http.StatusOK, "pending", sess, "Pending signatures", v)
}

// payload serves the exact bytes of one pending payload, as a download.
func (d *dashboard) payload(w http.ResponseWriter, r *http.Request, _ session) {
	host, job := r.PathValue("host"), r.PathValue("job")
	ps, err := d.s.st.Pending(r.Context(), host)
	if err != nil {
		d.fail(w, err)
		return
	}
	for _, p := range ps {
		if wire.JobID(p.Payload) == job {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", payloadFile(host, p.Action, job)))
			w.Header().Set("Content-Length", strconv.Itoa(len(p.Payload)))
			w.Write(p.Payload)
			return
		}
	}
	http.Error(w, fmt.Sprintf("host %q holds no pending action with payload %s (it ran, was withdrawn, or its guest changed): see /ui/pending", host, job), http.StatusNotFound)
}

// auditFilter is the audit page's query.
type auditFilter struct {
	Host   string
	Guest  string
	Signer string
	Op     string
	From   string
	To     string
	vmid   int
	from   time.Time
	to     time.Time
}

// auditRow is one line of the audit page: an operation or decision from
// a host's journal, or an operator action.
type auditRow struct {
	Time    time.Time
	Host    string
	Kind    string // operation, decision, break, operator
	VMID    int
	Op      string
	Source  string
	Signers []string
	AskedBy string
	Outcome string
	Detail  string
}

type auditView struct {
	Filter    auditFilter
	Hosts     []string
	Rows      []auditRow
	Truncated bool
	Error     string
}

// maxAuditRows bounds the rows the audit page shows (newest first).
const maxAuditRows = 500

const dateInput = "2006-01-02T15:04"

func parseAuditFilter(r *http.Request) (auditFilter, error) {
	q := r.URL.Query()
	f := auditFilter{Host: q.Get("host"), Guest: strings.TrimSpace(q.Get("guest")), Signer: strings.TrimSpace(q.Get("signer")),
		Op: strings.TrimSpace(q.Get("op")), From: q.Get("from"), To: q.Get("to")}
	var err error
	if f.Guest != "" {
		if f.vmid, err = strconv.Atoi(f.Guest); err != nil || f.vmid < 1 {
			return f, fmt.Errorf("guest %q: want a guest id (a whole number, such as 101)", f.Guest)
		}
	}
	for _, x := range []struct {
		v    string
		t    *time.Time
		what string
	}{{f.From, &f.from, "from"}, {f.To, &f.to, "to"}} {
		if x.v == "" {
			continue
		}
		if *x.t, err = time.Parse(dateInput, x.v); err != nil {
			if *x.t, err = time.Parse(time.RFC3339, x.v); err != nil {
				return f, fmt.Errorf("%s %q: want a time as YYYY-MM-DDTHH:MM (UTC)", x.what, x.v)
			}
		}
	}
	return f, nil
}

func (f auditFilter) match(row auditRow) bool {
	if f.Host != "" && row.Host != f.Host {
		return false
	}
	if f.vmid != 0 && row.VMID != f.vmid {
		return false
	}
	if f.Op != "" && !strings.Contains(row.Op, f.Op) {
		return false
	}
	if f.Signer != "" {
		hit := strings.Contains(row.AskedBy, f.Signer)
		for _, s := range row.Signers {
			hit = hit || strings.Contains(s, f.Signer)
		}
		if !hit {
			return false
		}
	}
	if !f.from.IsZero() && row.Time.Before(f.from) {
		return false
	}
	if !f.to.IsZero() && row.Time.After(f.to) {
		return false
	}
	return true
}

func (d *dashboard) auditPage(w http.ResponseWriter, r *http.Request, sess session) {
	hosts, err := d.s.st.Hosts(r.Context())
	if err != nil {
		d.fail(w, err)
		return
	}
	v := auditView{}
	for _, h := range hosts {
		v.Hosts = append(v.Hosts, h.ID)
	}
	v.Filter, err = parseAuditFilter(r)
	if err != nil {
		v.Error = err.Error()
		d.render(w, r, http.StatusBadRequest, "audit", sess, "Audit history", v)
		return
	}
	var rows []auditRow
	for _, h := range hosts {
		if v.Filter.Host != "" && h.ID != v.Filter.Host {
			continue
		}
		entries, _, err := d.s.hostHistory(r.Context(), h.ID, 0)
		if err != nil {
			d.fail(w, err)
			return
		}
		for _, e := range entries {
			row := auditRow{Time: e.Time, Host: h.ID, Kind: e.Type, VMID: e.VMID, Source: e.Source, Signers: e.Signers, AskedBy: e.AskedBy}
			if e.Action != nil {
				row.Op = e.Action.Op
			}
			switch {
			case e.Type == "decision":
				row.Outcome, row.Detail = e.Verdict, e.Reason
			case e.Type == "break":
				row.Outcome, row.Detail = "chain break", e.Reason
			case e.Result == nil:
				row.Outcome = "unfinished"
			case e.Result.OK:
				row.Outcome = "ok"
				row.Detail = e.Result.ExitStatus
			default:
				row.Outcome = "failed"
				row.Detail = strings.TrimSpace(e.Result.Error + " " + e.Result.Resolution)
			}
			if e.UPID != "" {
				row.Detail = strings.TrimSpace(row.Detail + " " + e.UPID)
			}
			if v.Filter.match(row) {
				rows = append(rows, row)
			}
		}
	}
	// Operator actions: who did what through the API or the dashboard.
	// The store filters them and returns the newest page only.
	if v.Filter.vmid == 0 {
		es, err := d.s.st.FindAudit(r.Context(), store.AuditQuery{Host: v.Filter.Host, Actor: v.Filter.Signer, Action: v.Filter.Op,
			From: v.Filter.from, To: v.Filter.to, Limit: maxAuditRows + 1})
		if err != nil {
			d.fail(w, err)
			return
		}
		if len(es) > maxAuditRows {
			es, v.Truncated = es[:maxAuditRows], true
		}
		for _, e := range es {
			rows = append(rows, auditRow{Time: e.Time, Host: e.Host, Kind: "operator", Op: e.Action, AskedBy: e.Actor, Detail: e.Detail})
		}
	}
	slices.SortStableFunc(rows, func(a, b auditRow) int { return b.Time.Compare(a.Time) })
	if len(rows) > maxAuditRows {
		rows, v.Truncated = rows[:maxAuditRows], true
	}
	v.Rows = rows
	d.render(w, r, http.StatusOK, "audit", sess, "Audit history", v)
}

// generationsView is a host's desired-state generations with the diff
// between two of them.
type generationsView struct {
	Host        string
	Generations []store.Desired
	Rows        []genRow
	A, B        int64
	Diff        []diffLine
	Error       string
}

// genRow is one generation in the page's table.
type genRow struct {
	store.Desired
	Prev int64
}

// maxGenerations bounds the generations the page lists.
const maxGenerations = 200

// docYAML renders a stored desired document (JSON) as YAML for reading.
func docYAML(doc []byte) string {
	if len(doc) == 0 {
		return ""
	}
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		return string(doc)
	}
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return string(doc)
	}
	enc.Close()
	return b.String()
}

func (d *dashboard) generationsPage(w http.ResponseWriter, r *http.Request, sess session) {
	host := r.PathValue("host")
	gens, err := d.s.st.DesiredHistory(r.Context(), host, maxGenerations)
	if err != nil {
		d.fail(w, err)
		return
	}
	v := generationsView{Host: host, Generations: gens}
	for _, g := range gens {
		v.Rows = append(v.Rows, genRow{Desired: g, Prev: g.Generation - 1})
	}
	if len(gens) > 0 {
		v.B = gens[0].Generation
		v.A = v.B - 1
	}
	q := r.URL.Query()
	for _, x := range []struct {
		name string
		p    *int64
	}{{"a", &v.A}, {"b", &v.B}} {
		if s := q.Get(x.name); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 0 {
				v.Error = fmt.Sprintf("%s=%q: want a generation number", x.name, s)
				d.render(w, r, http.StatusBadRequest, "generations", sess, "Generations of "+host, v)
				return
			}
			*x.p = n
		}
	}
	docOf := func(g int64) ([]byte, bool) {
		if g == 0 {
			return nil, true // before the first generation: nothing
		}
		for _, x := range gens {
			if x.Generation == g {
				return x.Document, true
			}
		}
		return nil, false
	}
	if len(gens) > 0 {
		a, okA := docOf(v.A)
		b, okB := docOf(v.B)
		if !okA || !okB {
			v.Error = fmt.Sprintf("generation %d or %d is not among the %d newest of %s", v.A, v.B, len(gens), host)
		} else {
			v.Diff = lineDiff(docYAML(a), docYAML(b))
		}
	}
	d.render(w, r, http.StatusOK, "generations", sess, "Generations of "+host, v)
}

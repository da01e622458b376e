package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/safefile"
	"github.com/steward-pve/steward/internal/wire"
)

func init() { register(newApplyCmd) }

// ApplyJSON is `steward apply -o json`.
type ApplyJSON struct {
	DryRun bool `json:"dry_run"`
	// Changed is true when a document changed (stored, or would be with
	// --dry-run) or an agent has work to do for it: exit status 2.
	Changed bool            `json:"changed"`
	Hosts   []ApplyHostJSON `json:"hosts"`
}

// ApplyHostJSON is one host of an apply.
type ApplyHostJSON struct {
	Host string `json:"host"`
	// DocumentChanged: the host's desired document differs from the hub's.
	DocumentChanged bool `json:"document_changed"`
	// Stored: the new document was stored (never with --dry-run).
	Stored bool `json:"stored"`
	// PreviousGeneration is the hub's generation read before the change;
	// Generation the one stored (equal when nothing was stored).
	PreviousGeneration int64 `json:"previous_generation"`
	Generation         int64 `json:"generation"`
	// Changes are the differences of the desired document, per guest.
	Changes []GuestSpecChangeJSON `json:"changes"`
	// Plan is what the host's agent would do from its last report
	// toward the new document; null when the host has not reported.
	Plan *hub.PlanJSON `json:"plan"`
	// Guests is the final status of the named guests with --wait.
	Guests []GuestStatusJSON `json:"guests,omitempty"`
}

// GuestSpecChangeJSON is one guest whose desired state changes.
type GuestSpecChangeJSON struct {
	VMID   int    `json:"vmid"`
	Change string `json:"change"` // added | removed (no longer managed) | changed
	// Fields are the changed desired fields ("state", "config.memory",
	// "tags", ...), with the old and new values ("" = not set).
	Fields []wire.Change `json:"fields,omitempty"`
}

type applyFlags struct {
	files   []string
	dryRun  bool
	wait    bool
	timeout time.Duration
}

func newApplyCmd(stdout, stderr io.Writer) *cobra.Command {
	var f applyFlags
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR [--dry-run] [--wait]",
		Short: "Validate desired state, show what changes, and store it on the hub",
		Long: `apply reads desired-state documents (a file, or every *.yaml, *.yml and *.json
directly in a directory; -f may repeat), validates them locally with the
same package the hub and agents use (every error names its file, line and
path, and nothing is stored), and shows per host what changes: the desired
document's differences, and the plan its agent would run from its last
report, benign steps apart from those that need a signature.

Then it stores each changed host's document with If-Match on the
generation it read, so a change made meanwhile by someone else is refused
(exit 1; nothing of that host is overwritten) rather than lost. A host the
documents do not name is not touched; a guest a host's document no longer
names becomes unmanaged (never destroyed).

--dry-run stores nothing. --wait then follows convergence until every named
guest is in sync or holds something for a person (a signature, a restart,
observed drift), or is in error, or --timeout passes.

Exit status (as terraform's -detailed-exitcode):
  0  nothing to change: every document equals the hub's and no agent has work
  2  changes: documents stored (or, with --dry-run, would be), or an agent
     has steps to run toward them
  1  an error: an invalid document, an unknown host, a concurrent change
     refused, a hub error; with --wait, a guest in error or the timeout
 64  usage error

-o json prints {"dry_run", "changed", "hosts": [{"host", "document_changed",
"stored", "previous_generation", "generation", "changes": [{"vmid",
"change" (added | removed | changed), "fields": [{"key", "from", "to"}]}],
"plan" (as GET /v1/hosts/{host}/plan, null before the first report),
"guests" (with --wait, as hosts show)}]}.`,
		Example: `  steward apply -f fleet.yaml --dry-run
  steward apply -f fleet/ --wait`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runApply(cmd.Context(), cmd, f, stdout, stderr)
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVarP(&f.files, "filename", "f", nil, "desired-state file or directory (repeatable; required)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "show what would change; store nothing")
	fl.BoolVar(&f.wait, "wait", false, "after storing, follow convergence until the named guests settle")
	fl.DurationVar(&f.timeout, "timeout", 10*time.Minute, "with --wait, how long to wait")
	addOperatorFlags(cmd)
	addOutputFlag(cmd)
	return cmd
}

// loadDocuments reads and validates every file named by paths (a
// directory contributes its *.yaml, *.yml and *.json files, sorted) and
// merges them into one document. Every problem of every file is reported
// together; a guest named by two files is an error naming both.
func loadDocuments(paths []string) (*desired.Document, error) {
	var files []string
	var errs []error
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("-f %s: %w", p, err))
			continue
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("-f %s: %w", p, err))
			continue
		}
		n := 0
		for _, e := range ents {
			ext := filepath.Ext(e.Name())
			if e.IsDir() || strings.HasPrefix(e.Name(), ".") || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
				continue
			}
			files = append(files, filepath.Join(p, e.Name()))
			n++
		}
		if n == 0 {
			errs = append(errs, fmt.Errorf("-f %s: the directory holds no *.yaml, *.yml or *.json file", p))
		}
	}
	merged := &desired.Document{APIVersion: desired.APIVersion, Kind: desired.DocumentKind, Hosts: map[string]*desired.Host{}}
	from := map[string]string{} // "host/vmid" -> file
	for _, name := range files {
		b, err := safefile.ReadFile(name, wire.MaxDesiredSize)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		doc, err := desired.ParseFile(name, b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, host := range sortedKeysOf(doc.Hosts) {
			h := doc.Hosts[host]
			m := merged.Hosts[host]
			if m == nil {
				m = &desired.Host{}
				merged.Hosts[host] = m
			}
			if h == nil {
				continue
			}
			for vmid, g := range h.Guests {
				key := host + "/" + strconv.Itoa(vmid)
				if other, dup := from[key]; dup {
					errs = append(errs, fmt.Errorf("%s: host %s guest %d is also named in %s; name each guest in one file", name, host, vmid, other))
					continue
				}
				from[key] = name
				if m.Guests == nil {
					m.Guests = map[int]*desired.Guest{}
				}
				m.Guests[vmid] = g
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(merged.Hosts) == 0 {
		return nil, fmt.Errorf("%s names no host: nothing to apply", strings.Join(paths, ", "))
	}
	return merged, nil
}

func sortedKeysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// hostDoc is the one-host document stored for host.
func hostDoc(host string, h *desired.Host) *desired.Document {
	return &desired.Document{APIVersion: desired.APIVersion, Kind: desired.DocumentKind, Hosts: map[string]*desired.Host{host: h}}
}

// applyHost is what apply learnt about one host before storing anything.
type applyHost struct {
	out     ApplyHostJSON
	body    []byte // the document to PUT
	named   []int  // vmids the new document names
	hasPlan bool
}

func runApply(ctx context.Context, cmd *cobra.Command, f applyFlags, stdout, stderr io.Writer) error {
	format, err := outputFormat(cmd)
	if err != nil {
		return err
	}
	if len(f.files) == 0 {
		return &UsageError{Err: errors.New("apply: -f FILE|DIR is required")}
	}
	if f.wait && f.dryRun {
		return &UsageError{Err: errors.New("apply: --wait and --dry-run exclude each other (a dry run stores nothing to wait for)")}
	}
	doc, err := loadDocuments(f.files)
	if err != nil {
		return fmt.Errorf("apply: nothing stored:\n%w", err)
	}
	c, err := operatorClient(cmd)
	if err != nil {
		return err
	}

	// Read everything first: an unknown host stops the apply before any
	// host is changed.
	var hosts []*applyHost
	for _, host := range sortedKeysOf(doc.Hosts) {
		ah, err := prepareHost(ctx, c, host, doc.Hosts[host])
		if err != nil {
			return fmt.Errorf("apply: nothing stored: %w", err)
		}
		hosts = append(hosts, ah)
	}

	res := ApplyJSON{DryRun: f.dryRun, Hosts: []ApplyHostJSON{}}
	pt := painter{on: format == outputText && useColour(stdout)}
	// With -o json/yaml, stdout carries only the result: progress and
	// the diff for people go to stderr.
	human := stdout
	if format != outputText {
		human = io.Discard
	}
	for _, ah := range hosts {
		if ah.out.DocumentChanged || (ah.out.Plan != nil && len(ah.out.Plan.Steps) > 0) {
			res.Changed = true
		}
		writeApplyHost(human, ah.out, f.dryRun, pt)
	}

	// Store, host by host, each with If-Match on what was read.
	var stored []string
	if !f.dryRun {
		for _, ah := range hosts {
			if !ah.out.DocumentChanged {
				continue
			}
			gen, err := putDesired(ctx, c, ah.out.Host, ah.body, ah.out.PreviousGeneration)
			if err != nil {
				msg := "nothing stored"
				if len(stored) > 0 {
					msg = "stored only for " + strings.Join(stored, ", ")
				}
				return fmt.Errorf("apply: %w (%s)", err, msg)
			}
			ah.out.Stored, ah.out.Generation = true, gen
			stored = append(stored, ah.out.Host)
			fmt.Fprintf(human, "%s: stored generation %d.\n", ah.out.Host, gen)
		}
	}

	var waitErr error
	if f.wait {
		progress := stderr
		if format == outputText {
			progress = stdout
		}
		waitErr = waitConverged(ctx, c, hosts, f.timeout, progress)
	}
	for _, ah := range hosts {
		res.Hosts = append(res.Hosts, ah.out)
	}
	if err := writeOutput(stdout, format, res, func(w io.Writer) error {
		if !res.Changed {
			_, err := fmt.Fprintln(w, "No changes: the hub's desired state already matches, and no agent has work to do.")
			return err
		}
		if f.dryRun {
			_, err := fmt.Fprintln(w, "Dry run: nothing stored.")
			return err
		}
		return nil
	}); err != nil {
		return err
	}
	if waitErr != nil {
		return waitErr
	}
	if res.Changed {
		reason := "changes applied"
		if f.dryRun {
			reason = "changes pending (dry run)"
		}
		return &ExitStatus{Code: ExitChanged, Reason: reason}
	}
	return nil
}

// prepareHost reads host's current desired document and last report and
// works out what the new document h changes.
func prepareHost(ctx context.Context, c *hubclient.Client, host string, h *desired.Host) (*applyHost, error) {
	var cur wire.Desired
	if err := c.JSON(ctx, http.MethodGet, hostPath(host, "desired"), nil, nil, &cur); err != nil {
		return nil, noHost(err, host)
	}
	var curHost *desired.Host
	if cur.Generation > 0 && len(cur.Document) > 0 {
		d, err := desired.Parse(cur.Document)
		if err != nil {
			return nil, fmt.Errorf("the hub's desired document of %s (generation %d) does not parse: %w", host, cur.Generation, err)
		}
		curHost = d.ForHost(host)
	}
	if h == nil {
		h = &desired.Host{}
	}
	body, err := json.Marshal(hostDoc(host, h))
	if err != nil {
		return nil, fmt.Errorf("encoding the document of %s: %w", host, err)
	}
	ah := &applyHost{body: body, out: ApplyHostJSON{Host: host, PreviousGeneration: cur.Generation, Generation: cur.Generation}}
	ah.out.Changes = specChanges(curHost, h)
	ah.out.DocumentChanged = len(ah.out.Changes) > 0
	for vmid := range h.Guests {
		ah.named = append(ah.named, vmid)
	}
	slices.Sort(ah.named)

	v, err := getHost(ctx, c, host)
	if err != nil {
		return nil, err
	}
	if v.Report != nil {
		p := hub.PlanReport(host, cur.Generation+1, h, *v.Report)
		if !ah.out.DocumentChanged {
			p.DesiredGeneration = cur.Generation
		}
		ah.out.Plan = &p
	}
	return ah, nil
}

// putDesired stores body as host's document if the hub's generation is
// still ifMatch.
func putDesired(ctx context.Context, c *hubclient.Client, host string, body []byte, ifMatch int64) (int64, error) {
	path := hostPath(host, "desired")
	resp, err := c.Do(ctx, hubclient.Request{Method: http.MethodPut, Path: path, Body: body,
		Header: http.Header{"If-Match": {strconv.Quote(strconv.FormatInt(ifMatch, 10))}}})
	if err != nil {
		return 0, err
	}
	if err := resp.Err(http.MethodPut, path); err != nil {
		if resp.Status == http.StatusPreconditionFailed {
			return 0, fmt.Errorf("%s: its desired state changed on the hub after this apply read it (generation %d); nothing of it was overwritten: review the change (steward plan %s) and apply again", host, ifMatch, host)
		}
		return 0, fmt.Errorf("%s: %w", host, noHost(err, host))
	}
	var out struct {
		Generation int64 `json:"generation"`
	}
	if err := json.Unmarshal(resp.Body, &out); err != nil {
		return 0, fmt.Errorf("%s: the hub's answer to the PUT does not decode: %w", host, err)
	}
	return out.Generation, nil
}

// specChanges lists the guests whose desired state differs between old
// and new, field by field.
func specChanges(old, new *desired.Host) []GuestSpecChangeJSON {
	og, ng := map[int]*desired.Guest{}, map[int]*desired.Guest{}
	if old != nil && old.Guests != nil {
		og = old.Guests
	}
	if new != nil && new.Guests != nil {
		ng = new.Guests
	}
	var ids []int
	for id := range og {
		ids = append(ids, id)
	}
	for id := range ng {
		if _, ok := og[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	out := []GuestSpecChangeJSON{}
	for _, id := range ids {
		o, n := og[id], ng[id]
		fo, fn := flattenGuest(o), flattenGuest(n)
		var fields []wire.Change
		for _, k := range sortedKeysOf(mergeKeys(fo, fn)) {
			if fo[k] != fn[k] {
				fields = append(fields, wire.Change{Key: k, From: fo[k], To: fn[k]})
			}
		}
		switch {
		case o == nil:
			out = append(out, GuestSpecChangeJSON{VMID: id, Change: "added", Fields: fields})
		case n == nil:
			out = append(out, GuestSpecChangeJSON{VMID: id, Change: "removed"})
		case len(fields) > 0:
			out = append(out, GuestSpecChangeJSON{VMID: id, Change: "changed", Fields: fields})
		}
	}
	return out
}

func mergeKeys(a, b map[string]string) map[string]bool {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return m
}

// flattenGuest maps each desired field of g to its value as text:
// "config.KEY" per config key, lists sorted and joined with ",".
func flattenGuest(g *desired.Guest) map[string]string {
	out := map[string]string{}
	if g == nil {
		return out
	}
	set := func(k, v string) {
		if v != "" {
			out[k] = v
		}
	}
	set("kind", string(g.Kind))
	set("mode", string(g.Mode))
	set("state", string(g.State))
	set("restart", string(g.Restart))
	if g.Description != nil {
		// The raw text: planValue quotes it for display when it needs to
		// (quoting here too showed it quoted twice). An empty description
		// is managed (PVE removes it), so it must differ from unset.
		out["description"] = *g.Description
		if *g.Description == "" {
			out["description"] = "(empty)"
		}
	}
	if g.Tags != nil {
		t := slices.Clone(g.Tags)
		slices.Sort(t)
		out["tags"] = "[" + strings.Join(slices.Compact(t), ",") + "]"
	}
	for k, v := range g.Config {
		out["config."+k] = v
	}
	if len(g.Ignore) > 0 {
		t := slices.Clone(g.Ignore)
		slices.Sort(t)
		out["ignore"] = "[" + strings.Join(t, ",") + "]"
	}
	return out
}

// writeApplyHost shows one host's changes and plan to people.
func writeApplyHost(w io.Writer, h ApplyHostJSON, dryRun bool, pt painter) {
	switch {
	case h.DocumentChanged:
		fmt.Fprintf(w, "%s: desired state changes (generation %d → %d):\n", pt.paint(ansiCyan, h.Host), h.PreviousGeneration, h.PreviousGeneration+1)
	default:
		fmt.Fprintf(w, "%s: desired state unchanged (generation %d).\n", pt.paint(ansiCyan, h.Host), h.PreviousGeneration)
	}
	for _, c := range h.Changes {
		switch c.Change {
		case "added":
			fmt.Fprintf(w, "  %s\n", pt.paint(ansiGreen, fmt.Sprintf("+ guest %d (now managed)", c.VMID)))
		case "removed":
			fmt.Fprintf(w, "  %s\n", pt.paint(ansiRed, fmt.Sprintf("- guest %d (no longer managed; left as it is)", c.VMID)))
		default:
			fmt.Fprintf(w, "  %s\n", pt.paint(ansiYellow, fmt.Sprintf("~ guest %d", c.VMID)))
		}
		for _, fc := range c.Fields {
			fmt.Fprintf(w, "      %s: %s → %s\n", fc.Key, planValue(fc.From), planValue(fc.To))
		}
	}
	switch {
	case h.Plan == nil:
		fmt.Fprintln(w, "  The host has not reported yet: its agent plans when it does.")
	case len(h.Plan.Steps) == 0 && len(h.Plan.Guests) > 0:
		if !writePlan(w, *h.Plan, "  ", pt) {
			fmt.Fprintln(w, "  Its agent has nothing to do: the named guests are in sync.")
		}
	default:
		fmt.Fprintf(w, "  From the host's report of %s, its agent would:\n", h.Plan.ReportTime.Local().Format(time.RFC3339))
		writePlan(w, *h.Plan, "  ", pt)
	}
}

// settled reports whether a guest in phase needs nothing more from its
// agent for now: in sync, or holding something for a person (a
// signature, a restart it may not do, drift it only observes).
func settled(phase string) bool {
	switch phase {
	case wire.PhaseInSync, wire.PhasePendingSignature, wire.PhasePendingRestart, wire.PhaseDriftObserved, wire.PhaseMoved:
		return true
	}
	return false
}

// waitPoll is the longest --wait goes without asking the hub for the
// hosts' reports: it asks again at once when the hub records an event
// (a host's status changed), and at least this often, since a report of
// a new generation with the same phases records none.
const waitPoll = 2 * time.Second

// eventFollower wakes --wait when the hub records a fleet event (GET
// /v1/events, a blocking query). On a hub without the event log, or once
// it fails, it just sleeps.
type eventFollower struct {
	c     *hubclient.Client
	after int64
	ok    bool
}

func newEventFollower(ctx context.Context, c *hubclient.Client) *eventFollower {
	f := &eventFollower{c: c}
	var ev hub.EventsJSON
	if err := c.JSON(ctx, http.MethodGet, "/v1/events", url.Values{"limit": {"1"}}, nil, &ev); err == nil {
		f.after, f.ok = ev.LastID, true
	}
	return f
}

// wait returns when an event newer than the last seen is recorded, d
// passed, or ctx is done.
func (f *eventFollower) wait(ctx context.Context, d time.Duration) {
	if f.ok {
		var ev hub.EventsJSON
		q := url.Values{"after": {strconv.FormatInt(f.after, 10)}, "wait": {d.String()}, "limit": {"100"}}
		if err := f.c.JSON(ctx, http.MethodGet, "/v1/events", q, nil, &ev); err == nil {
			f.after = ev.LastID
			return
		}
		f.ok = false
		if ctx.Err() != nil {
			return
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// waitConverged polls the hosts until every guest each one names has
// settled in a report of the stored generation (or later), printing each
// phase change to progress. A guest in error, a blocked or frozen host,
// and the timeout end the wait with an error naming them.
func waitConverged(ctx context.Context, c *hubclient.Client, hosts []*applyHost, timeout time.Duration, progress io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	seen := map[string]string{} // "host/vmid" -> phase shown
	events := newEventFollower(ctx, c)
	for {
		var waiting, failed []string
		for _, ah := range hosts {
			if len(ah.named) == 0 {
				continue
			}
			v, err := getHost(ctx, c, ah.out.Host)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				return fmt.Errorf("apply --wait: %w", err)
			}
			sum := v.summary()
			switch {
			case sum.Blocked:
				failed = append(failed, fmt.Sprintf("%s is blocked (%s): its agent changes nothing; steward unblock %s", ah.out.Host, sum.BlockedReason, ah.out.Host))
				continue
			case sum.Frozen:
				failed = append(failed, fmt.Sprintf("%s is frozen by its local freeze file: its agent changes nothing", ah.out.Host))
				continue
			case v.Report == nil || v.Report.DesiredGeneration < ah.out.Generation:
				key := ah.out.Host
				if seen[key] != "waiting" {
					fmt.Fprintf(progress, "%s: waiting for its agent to report generation %d\n", ah.out.Host, ah.out.Generation)
					seen[key] = "waiting"
				}
				waiting = append(waiting, fmt.Sprintf("%s (no report of generation %d yet)", ah.out.Host, ah.out.Generation))
				continue
			}
			byID := map[int]GuestStatusJSON{}
			for _, g := range v.guests() {
				byID[g.VMID] = g
			}
			ah.out.Guests = ah.out.Guests[:0]
			for _, id := range ah.named {
				g, ok := byID[id]
				if !ok {
					g = GuestStatusJSON{VMID: id, Managed: true, Phase: wire.PhaseConverging}
				}
				ah.out.Guests = append(ah.out.Guests, g)
				key := ah.out.Host + "/" + strconv.Itoa(id)
				if seen[key] != g.Phase {
					line := fmt.Sprintf("%s %d: %s", ah.out.Host, id, strings.ReplaceAll(g.Phase, "_", " "))
					if d := guestDetail(g, time.Now()); d != "" && g.Phase != wire.PhaseInSync {
						line += " (" + d + ")"
					}
					fmt.Fprintln(progress, line)
					seen[key] = g.Phase
				}
				switch {
				case g.Phase == wire.PhaseError:
					failed = append(failed, fmt.Sprintf("%s %d: %s", ah.out.Host, id, g.Reason))
				case !settled(g.Phase):
					waiting = append(waiting, fmt.Sprintf("%s %d (%s)", ah.out.Host, id, g.Phase))
				}
			}
		}
		if ctx.Err() == nil && len(waiting) == 0 {
			if len(failed) > 0 {
				return fmt.Errorf("apply --wait: stored, but not every guest converged:\n  %s", strings.Join(failed, "\n  "))
			}
			fmt.Fprintln(progress, "Every named guest has settled.")
			return nil
		}
		if ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("apply --wait: stored, but still waiting after %v for:\n  %s", timeout, strings.Join(append(waiting, failed...), "\n  "))
			}
			return ctx.Err()
		}
		events.wait(ctx, waitPoll)
	}
}

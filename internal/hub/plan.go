package hub

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/plan"
	"github.com/steward-pve/steward/internal/wire"
)

// PlanJSON is the operator's view of what the host's agent would do: the
// shared planner run on the host's last report and its current desired
// document. The report carries the config keys the agent managed at that
// time and, for guests it did not manage, the keys an operator would
// adopt them with (wire.Guest.Observed), so only a key outside both shows
// as a change until the agent reports again. Classes are the
// classifier's with the provenance the agent reported of each guest (its
// journal's word: a clone it made and has not started takes its
// cloud-init keys benignly; the remains of its own failed create are
// destroyed benignly), so the plan shows what the agent will do; the hub
// decides nothing by it.
type PlanJSON struct {
	Host              string          `json:"host"`
	DesiredGeneration int64           `json:"desired_generation"`
	ReportTime        time.Time       `json:"report_time"`
	Steps             []PlanStepJSON  `json:"steps"`
	Guests            []PlanGuestJSON `json:"guests"`
	Text              string          `json:"text"` // as `steward agent --dry-run` prints it
}

// PlanStepJSON is one planned action.
type PlanStepJSON struct {
	Action  wire.Action   `json:"action"`
	Class   string        `json:"class"`
	Reason  string        `json:"reason,omitempty"`
	Changes []wire.Change `json:"changes,omitempty"`
	// Destroys names what a destructive step would destroy or overwrite
	// (disk and mount point keys); empty when the whole action is (a
	// destroy, a rollback) or the step is benign.
	Destroys []string `json:"destroys,omitempty"`
}

// PlanGuestJSON is one desired guest's planned status.
type PlanGuestJSON struct {
	VMID  int           `json:"vmid"`
	Phase string        `json:"phase"`
	Drift []wire.Change `json:"drift,omitempty"`
	Error string        `json:"error,omitempty"`
	Lock  string        `json:"lock,omitempty"`
	// Node is the node a moved guest is on (phase moved).
	Node string `json:"node,omitempty"`
}

func changes(cs []plan.Change) []wire.Change {
	var out []wire.Change
	for _, c := range cs {
		out = append(out, wire.Change{Key: c.Key, From: c.From, To: c.To})
	}
	return out
}

func (s *Server) plan(w http.ResponseWriter, r *http.Request) {
	host := r.PathValue("host")
	d, err := s.st.Desired(r.Context(), host)
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "no_such_host", "")
		return
	}
	rep, err := s.st.LastReport(r.Context(), host)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no_report", fmt.Sprintf("host %q has not reported yet; a plan needs what its agent saw", host))
		return
	}
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
		return
	}
	wr, err := wire.DecodeReport(rep.Body)
	if err != nil {
		s.storeError(w, r, fmt.Errorf("the stored report of %q: %w", host, err), http.StatusNotFound, "not_found", "")
		return
	}
	var want *desired.Host
	if d.Generation > 0 {
		doc, err := desired.Parse(d.Document)
		if err != nil {
			s.storeError(w, r, fmt.Errorf("the stored desired document of %q: %w", host, err), http.StatusNotFound, "not_found", "")
			return
		}
		want = doc.ForHost(host)
	}
	out := PlanReport(host, d.Generation, want, wr)
	writeJSON(w, http.StatusOK, out)
}

// PlanReport runs the shared planner on the guests of report wr toward
// want (nil: no desired state) of generation gen: what GET …/plan serves,
// and what `steward apply` shows for a document before storing it.
// Classes are the classifier's without provenance.
func PlanReport(host string, gen int64, want *desired.Host, wr wire.Report) PlanJSON {
	actual := make([]guest.Observed, len(wr.Guests))
	configs := map[int]guest.Config{}
	for i, g := range wr.Guests {
		cfg := g.Config
		if cfg == nil {
			// A guest the report's desired state did not name: what the
			// agent observed of it (wire version 2), so a document that
			// starts managing it plans against its real values.
			cfg = g.Observed
		}
		actual[i] = guest.Observed{VMID: g.VMID, Kind: guest.Kind(g.Kind), Name: g.Name, Status: g.Status, Lock: g.Lock,
			Template: g.Template, Config: guest.Config(cfg), Digest: g.Digest, ConfigErr: g.ConfigError}
		configs[g.VMID] = actual[i].Config
	}
	// The agent's journal's word on each guest (wire version 3): classes
	// are judged as the agent will judge them.
	prov := map[int]classify.Provenance{}
	for _, s := range wr.Sync {
		if p := s.Provenance; p != nil {
			prov[s.VMID] = classify.Provenance{CreatedByAgent: p.CreatedByAgent, CreateFailed: p.CreateFailed, Fresh: p.Fresh}
		}
	}
	// A guest the agent reported moved to another node of its cluster is
	// planned as moved here too, not as missing (the hub cannot read the
	// cluster itself).
	// The node the agent runs on: a guest whose entry names another node
	// is planned as its migration there, as the agent plans it.
	opts := plan.Options{Node: wr.Facts.Node}
	for _, s := range wr.Sync {
		if s.Phase == wire.PhaseMoved && s.Node != "" {
			if opts.Elsewhere == nil {
				opts.Elsewhere = map[int]string{}
			}
			opts.Elsewhere[s.VMID] = s.Node
		}
	}
	p := plan.Diff(want, actual, opts)
	out := PlanJSON{Host: host, DesiredGeneration: gen, ReportTime: wr.Time, Steps: []PlanStepJSON{}, Guests: []PlanGuestJSON{}, Text: p.Render()}
	for _, st := range p.Steps {
		v := classify.Classify(st.Action, configs[st.Action.VMID], prov[st.Action.VMID])
		a := wire.Action{Op: string(st.Action.Op), VMID: st.Action.VMID, Kind: string(st.Action.Kind), Params: st.Action.Params, Digest: st.Action.Digest}
		step := PlanStepJSON{Action: a, Class: string(v.Class), Reason: v.Reason, Changes: changes(st.Changes)}
		if v.Class == classify.Destructive {
			step.Destroys = v.Keys
		}
		out.Steps = append(out.Steps, step)
	}
	for _, g := range p.Guests {
		out.Guests = append(out.Guests, PlanGuestJSON{VMID: g.VMID, Phase: string(g.Phase), Drift: changes(g.Drift), Error: g.Err, Lock: g.Lock, Node: g.Node})
	}
	return out
}

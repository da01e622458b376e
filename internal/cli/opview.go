package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/wire"
)

// The operator's views of hosts and guests, shared by `hosts`, `status`
// and `apply --wait`. Their JSON is part of the -o json contract.

// Host states of HostSummaryJSON.State.
const (
	hostAwaitingEnrollment = "awaiting_enrollment" // a join token was made; no agent enrolled yet
	hostEnrolled           = "enrolled"
	hostRevoked            = "revoked"
)

// HostSummaryJSON is one host at a glance.
type HostSummaryJSON struct {
	Host          string     `json:"host"`
	State         string     `json:"state"` // awaiting_enrollment | enrolled | revoked
	Blocked       bool       `json:"blocked"`
	BlockedReason string     `json:"blocked_reason,omitempty"`
	LastSeen      *time.Time `json:"last_seen"` // null: never reported
	// ReportTime is when the agent observed what its last report says.
	ReportTime   *time.Time `json:"report_time,omitempty"`
	Node         string     `json:"node,omitempty"`
	AgentVersion string     `json:"agent_version,omitempty"`
	Frozen       bool       `json:"frozen"` // the host's local freeze file stops every mutation
	// DesiredGeneration is the hub's; ReportedGeneration the one the
	// agent converged toward in its last report (behind: it has not yet
	// acted on the latest document).
	DesiredGeneration  int64 `json:"desired_generation"`
	ReportedGeneration int64 `json:"reported_generation"`
	Guests             int   `json:"guests"`  // guests PVE lists on the host
	Managed            int   `json:"managed"` // guests the desired state names
	// Sync counts managed guests by phase; every phase is present.
	Sync map[string]int `json:"sync"`
	// PendingSignatures counts the actions held for signatures.
	PendingSignatures int `json:"pending_signatures"`
}

// GuestStatusJSON is one guest of a host: what PVE shows and, for a
// managed guest, its sync status.
type GuestStatusJSON struct {
	VMID    int    `json:"vmid"`
	Kind    string `json:"kind,omitempty"`
	Name    string `json:"name,omitempty"`
	Status  string `json:"status,omitempty"` // run state; "" when the guest is not on the host
	Lock    string `json:"lock,omitempty"`
	Managed bool   `json:"managed"`
	Phase   string `json:"phase,omitempty"` // managed guests: in_sync, converging, ...
	Reason  string `json:"reason,omitempty"`
	// Node is the node of the cluster a moved guest is on (phase moved).
	Node string `json:"node,omitempty"`
	// Drift are the managed fields that differ (actual from, desired to).
	Drift []wire.Change `json:"drift,omitempty"`
	// PendingRestart are config keys written but applied by PVE only at
	// the next restart.
	PendingRestart []string   `json:"pending_restart,omitempty"`
	NextRetry      *time.Time `json:"next_retry,omitempty"`
	// PendingSignature are the destructive actions held for this guest.
	PendingSignature []PendingActionJSON `json:"pending_signature,omitempty"`
	ConfigError      string              `json:"config_error,omitempty"`
	// Snapshots is the guest's snapshot schedule as the agent last
	// reported it; absent without one.
	Snapshots *wire.SnapshotSchedule `json:"snapshots,omitempty"`
}

// PendingActionJSON is a destructive action held for signatures.
type PendingActionJSON struct {
	Op       string            `json:"op"`
	Params   map[string]string `json:"params,omitempty"`
	Reason   string            `json:"reason,omitempty"`
	Destroys []string          `json:"destroys,omitempty"`
}

// hostView is one host as the hub shows it, with its decoded report.
type hostView struct {
	JSON   hub.HostJSON
	Report *wire.Report // nil: never reported, or only Summary fetched
	// Summary is the last report at a glance (the fleet views fetch only
	// this); nil when Report is set or the host never reported.
	Summary *hub.ReportSummaryJSON
}

func hostPath(host string, rest ...string) string {
	p := "/v1/hosts/" + url.PathEscape(host)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

// noHost rewrites the hub's 404 for host into advice.
func noHost(err error, host string) error {
	if hubclient.IsCode(err, "no_such_host") || hubclient.StatusOf(err) == http.StatusNotFound && hubclient.IsCode(err, "not_found") {
		return fmt.Errorf("the hub has no host %q: `steward hosts list` shows them, `steward hosts add %s` creates it", host, host)
	}
	return err
}

// getHost fetches one host with its last report.
func getHost(ctx context.Context, c *hubclient.Client, host string) (hostView, error) {
	var v hostView
	if err := c.JSON(ctx, http.MethodGet, hostPath(host), nil, nil, &v.JSON); err != nil {
		return v, noHost(err, host)
	}
	if len(v.JSON.Report) > 0 {
		r, err := wire.DecodeReport(v.JSON.Report)
		if err != nil {
			return v, fmt.Errorf("the hub's last report of host %q does not decode: %w; is the hub the same version?", host, err)
		}
		v.Report = &r
	}
	return v, nil
}

// hostSummaries is what the fleet listings (hosts list, status) show:
// one summary per host, from its last report, sorted by host id.
func hostSummaries(ctx context.Context, c *hubclient.Client) ([]HostSummaryJSON, error) {
	views, err := listHosts(ctx, c, true)
	if err != nil {
		return nil, err
	}
	out := make([]HostSummaryJSON, len(views))
	for i, v := range views {
		out[i] = v.summary()
	}
	return out, nil
}

// listHosts fetches every host; with reports, each one's last report at
// a glance (hostView.Summary) in the same request. A hub that does not
// summarize (an older one) costs one request per reporting host instead.
func listHosts(ctx context.Context, c *hubclient.Client, reports bool) ([]hostView, error) {
	var out struct {
		Hosts []hub.HostJSON `json:"hosts"`
	}
	var q url.Values
	if reports {
		q = url.Values{"summary": {"1"}}
	}
	if err := c.JSON(ctx, http.MethodGet, "/v1/hosts", q, nil, &out); err != nil {
		return nil, err
	}
	sort.Slice(out.Hosts, func(i, j int) bool { return out.Hosts[i].ID < out.Hosts[j].ID })
	views := make([]hostView, len(out.Hosts))
	for i, h := range out.Hosts {
		views[i].JSON, views[i].Summary = h, h.Summary
	}
	if !reports {
		return views, nil
	}
	var wg sync.WaitGroup
	errs := make([]error, len(views))
	sem := make(chan struct{}, 8)
	for i := range views {
		if views[i].JSON.ReportHash == "" || views[i].Summary != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			views[i], errs[i] = getHost(ctx, c, views[i].JSON.ID)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return views, nil
}

// summary is v at a glance.
func (v hostView) summary() HostSummaryJSON {
	h := v.JSON
	s := HostSummaryJSON{Host: h.ID, State: hostEnrolled, Blocked: h.Blocked, BlockedReason: h.BlockedReason,
		LastSeen: h.LastSeen, DesiredGeneration: h.DesiredGeneration, Sync: map[string]int{}}
	switch {
	case h.RevokedAt != nil:
		s.State = hostRevoked
	case h.EnrolledAt == nil:
		s.State = hostAwaitingEnrollment
	}
	for _, p := range wire.Phases {
		s.Sync[p] = 0
	}
	rs := v.Summary
	if v.Report != nil {
		sum := hub.Summarize(*v.Report)
		rs = &sum
	}
	if rs != nil {
		t := rs.Time
		s.ReportTime = &t
		s.Node, s.AgentVersion, s.Frozen = rs.Node, rs.AgentVersion, rs.Frozen
		s.ReportedGeneration = rs.DesiredGeneration
		s.Guests, s.Managed = rs.Guests, rs.Managed
		for p, n := range rs.Sync {
			s.Sync[p] = n
		}
		s.PendingSignatures = rs.Pending
	}
	return s
}

// guests is every guest of v's last report: those on the host and the
// managed ones missing from it, by vmid.
func (v hostView) guests() []GuestStatusJSON {
	if v.Report == nil {
		return []GuestStatusJSON{}
	}
	r := v.Report
	by := map[int]*GuestStatusJSON{}
	for _, g := range r.Guests {
		by[g.VMID] = &GuestStatusJSON{VMID: g.VMID, Kind: g.Kind, Name: g.Name, Status: g.Status, Lock: g.Lock, ConfigError: g.ConfigError}
	}
	for _, sy := range r.Sync {
		g := by[sy.VMID]
		if g == nil {
			g = &GuestStatusJSON{VMID: sy.VMID}
			by[sy.VMID] = g
		}
		g.Managed, g.Phase, g.Reason, g.Drift, g.PendingRestart = true, sy.Phase, sy.Reason, sy.Drift, sy.Pending
		g.Snapshots = sy.Snapshots
		g.Node = sy.Node
		if sy.Lock != "" {
			g.Lock = sy.Lock
		}
		if !sy.NextRetry.IsZero() {
			t := sy.NextRetry
			g.NextRetry = &t
		}
	}
	for _, p := range r.Pending {
		g := by[p.Action.VMID]
		if g == nil {
			g = &GuestStatusJSON{VMID: p.Action.VMID, Kind: p.Action.Kind}
			by[p.Action.VMID] = g
		}
		g.PendingSignature = append(g.PendingSignature, PendingActionJSON{Op: p.Action.Op, Params: p.Action.Params, Reason: p.Reason, Destroys: p.Destroys})
	}
	out := make([]GuestStatusJSON, 0, len(by))
	for _, g := range by {
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VMID < out[j].VMID })
	return out
}

// ago renders t relative to now for people: "12s ago", "never".
func ago(t *time.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return "never"
	}
	d := now.Sub(*t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}

// syncLine is a host's sync summary for people: "3/4 in sync, 1 error".
func (s HostSummaryJSON) syncLine() string {
	if s.LastSeen == nil && s.ReportTime == nil {
		return "-"
	}
	parts := []string{fmt.Sprintf("%d/%d in sync", s.Sync[wire.PhaseInSync], s.Managed)}
	for _, p := range wire.Phases {
		if p != wire.PhaseInSync && s.Sync[p] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", s.Sync[p], strings.ReplaceAll(p, "_", " ")))
		}
	}
	if s.ReportedGeneration < s.DesiredGeneration {
		parts = append(parts, fmt.Sprintf("generation %d not yet reported", s.DesiredGeneration))
	}
	return strings.Join(parts, ", ")
}

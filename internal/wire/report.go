package wire

import (
	"fmt"
	"time"
)

// Report is what an agent saw, decided and did on its host in one tick.
// The hub keeps the latest per host; an agent sends it in full only when
// its content changed (see Hash).
type Report struct {
	Host string    `json:"host"` // the host id desired state names
	Time time.Time `json:"time"` // when the tick observed the host
	// DesiredGeneration is the generation of the desired document the
	// tick converged toward (0: none from the hub).
	DesiredGeneration int64 `json:"desired_generation,omitempty"`
	Facts             Facts `json:"facts"`
	// Guests are every guest PVE listed on the node, by vmid.
	Guests []Guest `json:"guests"`
	// Sync is the status of every guest desired state names (present on
	// the host or not), by vmid.
	Sync []Sync `json:"sync,omitempty"`
	// Actions are the actions the tick submitted or skipped.
	Actions []ActionResult `json:"actions,omitempty"`
	// Pending are the destructive actions waiting for signatures.
	Pending []Pending `json:"pending,omitempty"`
	// Rejected are the signed jobs presented and refused.
	Rejected []Rejection `json:"rejected,omitempty"`
}

// Facts describe the host an agent runs on.
type Facts struct {
	Node         string `json:"node"` // the PVE node name
	AgentVersion string `json:"agent_version,omitempty"`
	// Frozen is true while the local freeze file stops every mutation.
	Frozen bool `json:"frozen,omitempty"`
}

// Guest is one guest as the agent observed it.
type Guest struct {
	VMID     int    `json:"vmid"`
	Kind     string `json:"kind"`             // qemu | lxc
	Name     string `json:"name,omitempty"`   // PVE's name (hostname for a container)
	Status   string `json:"status,omitempty"` // run state: running, stopped, paused, ...
	Lock     string `json:"lock,omitempty"`   // PVE's lock; empty when unlocked
	Template bool   `json:"template,omitempty"`
	// Digest is the config digest read this tick (for an unmanaged guest,
	// the digest of the read Observed comes from); empty when the config
	// was not read or could not be (ConfigError).
	Digest string `json:"digest,omitempty"`
	// Config holds the keys desired state manages, normalized (PVE's
	// round-trip forms folded, so equal values read equal); unmanaged keys
	// are never reported.
	Config      map[string]string `json:"config,omitempty"`
	ConfigError string            `json:"config_error,omitempty"`
	// Observed is, for a guest desired state does not name (wire version
	// 2 and later), the config keys an operator would adopt it with
	// (CPU, memory, name, description, tags, boot, network devices,
	// disks and mount points...; never a secret such as cipassword),
	// normalized, each value at most MaxObservedValue bytes and at most
	// MaxObservedKeys keys; `steward import` writes desired state from
	// it, and the hub's plan of a guest a new document names compares
	// against it. It may be some minutes old (an agent refreshes
	// unmanaged configs less often than it ticks). Absent for a managed
	// guest, a template, or a guest not yet read; except that a container
	// template a desired clone names carries its unprivileged (the clone
	// inherits it; the hub's plan judges the clone by it).
	Observed map[string]string `json:"observed,omitempty"`
}

// Bounds of Guest.Observed.
const (
	MaxObservedKeys  = 128
	MaxObservedValue = 8 << 10 // a description may be long; a key or disk never is
)

// Phases of a managed guest's Sync.
const (
	PhaseInSync           = "in_sync"
	PhaseConverging       = "converging"
	PhaseDriftObserved    = "drift_observed"
	PhasePendingSignature = "pending_signature"
	PhasePendingRestart   = "pending_restart"
	PhaseError            = "error"
	// PhaseMoved: the guest is on another node of its cluster (Sync.Node),
	// migrated or moved by HA; the agent does nothing for it.
	PhaseMoved = "moved"
)

// Phases lists every phase a Sync may carry.
var Phases = []string{PhaseInSync, PhaseConverging, PhaseDriftObserved, PhasePendingSignature, PhasePendingRestart, PhaseError, PhaseMoved}

// Sync is one managed guest's sync status after a tick.
type Sync struct {
	VMID   int      `json:"vmid"`
	Phase  string   `json:"phase"`            // one of Phases
	Reason string   `json:"reason,omitempty"` // why it is not in sync (error text, skip reason)
	Lock   string   `json:"lock,omitempty"`
	Drift  []Change `json:"drift,omitempty"`
	// Pending lists the managed config keys that are written but that PVE
	// applies only at the guest's next restart (phase pending_restart, or
	// converging while the agent reboots it).
	Pending []string `json:"pending,omitempty"`
	// NextRetry is when a failing guest is tried again; zero when not
	// backing off.
	NextRetry time.Time `json:"next_retry,omitzero"`
	// Snapshots is the guest's snapshot schedule state; absent without a
	// schedule.
	Snapshots *SnapshotSchedule `json:"snapshots,omitempty"`
	// Provenance is what the agent's own journal says of the guest, as
	// far as classifying its next steps needs it (wire version 3); nil
	// when the agent did not create it. The hub's plan classifies with
	// it, as the agent will; the agent never takes it from the hub.
	Provenance *Provenance `json:"provenance,omitempty"`
	// Node is the node of the cluster a moved guest is on (phase moved).
	Node string `json:"node,omitempty"`
}

// Provenance is the agent's journal's word on a guest (see
// classify.Provenance).
type Provenance struct {
	// CreatedByAgent: the agent created (or cloned) the guest.
	CreatedByAgent bool `json:"created_by_agent,omitempty"`
	// CreateFailed: that create failed and the guest is its remains
	// (within the agent's cleanup window): destroying it is benign.
	CreateFailed bool `json:"create_failed,omitempty"`
	// Fresh: created successfully and not run since, so its create-time
	// keys (cloud-init, boot, ...) are benign to write.
	Fresh bool `json:"fresh,omitempty"`
}

// SnapshotSchedule is a guest's snapshot schedule as the agent found it.
type SnapshotSchedule struct {
	Every string `json:"every"` // the interval, as a Go duration ("24h0m0s")
	Keep  int    `json:"keep"`
	// Snapshots are the agent's own snapshots PVE lists unchanged, oldest
	// first; a snapshot's age is the report's time minus its taken.
	Snapshots []ScheduledSnapshot `json:"snapshots,omitempty"`
	// LastTaken is when the newest was taken; NextDue when the next is
	// due (at or before the report's time: due now).
	LastTaken time.Time `json:"last_taken,omitzero"`
	NextDue   time.Time `json:"next_due,omitzero"`
	// Held are the prunes waiting for a signature, each with why.
	Held []string `json:"held,omitempty"`
	// Note says why the schedule did nothing this tick.
	Note string `json:"note,omitempty"`
}

// ScheduledSnapshot is one snapshot the agent took under a schedule.
type ScheduledSnapshot struct {
	Name  string    `json:"name"`
	Taken time.Time `json:"taken"`
}

// Change is one managed field that differs: Key is the PVE config key (or
// "state"), From the actual value ("" = absent), To the desired one ("" =
// remove).
type Change struct {
	Key  string `json:"key"`
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
}

// Action is one operation on one guest with its exact PVE parameters (see
// package action).
type Action struct {
	Op     string            `json:"op"`
	VMID   int               `json:"vmid"`
	Kind   string            `json:"kind"`
	Params map[string]string `json:"params,omitempty"`
	Digest string            `json:"digest,omitempty"`
}

// ActionResult is the fate of one action a tick submitted or skipped.
type ActionResult struct {
	Action Action `json:"action"`
	Source string `json:"source"` // reconcile | signed | recovery
	Class  string `json:"class"`  // benign | destructive
	// Job is the id of the signed job the action came from (JobID of its
	// payload); empty for reconcile actions.
	Job        string `json:"job,omitempty"`
	UPID       string `json:"upid,omitempty"`
	ExitStatus string `json:"exit_status,omitempty"`
	Warnings   int    `json:"warnings,omitempty"`
	Error      string `json:"error,omitempty"`   // set when it failed
	Skipped    string `json:"skipped,omitempty"` // set when it was not run, and why
}

// Pending is a destructive action held for operator signatures.
type Pending struct {
	Action Action `json:"action"`
	Reason string `json:"reason"`
	// Destroys names what the action would destroy or overwrite: the
	// config keys (disks, mount points) the classifier found destructive;
	// empty when the action as a whole is (destroy, rollback).
	Destroys []string `json:"destroys,omitempty"`
	// Payload is the canonical payload to sign, byte for byte.
	Payload []byte `json:"payload,omitempty"`
	// Quorum is how many distinct signers of which role the agent's
	// policy asks for this action (Signed empty); nil when the agent has
	// no signers configured. Wire version 4.
	Quorum *Quorum `json:"quorum,omitempty"`
}

// Quorum is what a signed action needs: Need distinct signers holding
// Role. In a held job's result, Signed are the principals the agent
// credited so far (fewer than Need). Wire version 4.
type Quorum struct {
	Role   string   `json:"role"`
	Need   int      `json:"need"`
	Signed []string `json:"signed,omitempty"`
}

// MaxQuorum bounds Quorum.Need and the principals in Quorum.Signed.
const MaxQuorum = 64

func (c *checker) quorum(path string, q *Quorum) {
	if q == nil {
		return
	}
	c.text(path+".role", q.Role, true)
	if q.Need < 1 || q.Need > MaxQuorum {
		c.fail(path+".need", "%d; want 1..%d", q.Need, MaxQuorum)
	}
	c.count(path+".signed", len(q.Signed), MaxQuorum)
	for i, s := range q.Signed {
		c.text(fmt.Sprintf("%s.signed[%d]", path, i), s, true)
	}
}

// Rejection is a signed job the agent refused.
type Rejection struct {
	Job    string  `json:"job,omitempty"`    // the job's id, when its payload was read
	Action *Action `json:"action,omitempty"` // what it asked for, when its payload parsed
	Code   string  `json:"code,omitempty"`   // signedop rejection code, when one applies
	Reason string  `json:"reason"`
}

// EncodeReport returns r's JSON encoding.
func EncodeReport(r Report) ([]byte, error) { return encode("report", r) }

// DecodeReport strictly decodes and validates a report.
func DecodeReport(b []byte) (Report, error) {
	r, err := decode[Report]("report", b, MaxReportSize)
	if err != nil {
		return Report{}, err
	}
	if err := r.Validate(); err != nil {
		return Report{}, err
	}
	return r, nil
}

// Validate checks r's values; the error names the first bad field.
func (r Report) Validate() error {
	c := &checker{msg: "report"}
	c.text("host", r.Host, true)
	if r.DesiredGeneration < 0 {
		c.fail("desired_generation", "negative (%d)", r.DesiredGeneration)
	}
	c.text("facts.node", r.Facts.Node, true)
	c.text("facts.agent_version", r.Facts.AgentVersion, false)
	c.count("guests", len(r.Guests), MaxGuests)
	for i, g := range r.Guests {
		p := fmt.Sprintf("guests[%d]", i)
		c.vmid(p+".vmid", g.VMID)
		c.kind(p+".kind", g.Kind, true)
		c.text(p+".name", g.Name, false)
		c.text(p+".status", g.Status, false)
		c.text(p+".lock", g.Lock, false)
		c.text(p+".digest", g.Digest, false)
		c.params(p+".config", g.Config)
		c.text(p+".config_error", g.ConfigError, false)
		c.count(p+".observed", len(g.Observed), MaxObservedKeys)
		for k, v := range g.Observed {
			c.text(p+".observed["+k+"]", k, true)
			if len(v) > MaxObservedValue {
				c.fail(p+".observed["+k+"]", "%d bytes; at most %d", len(v), MaxObservedValue)
			}
		}
	}
	c.count("sync", len(r.Sync), MaxGuests)
	for i, s := range r.Sync {
		p := fmt.Sprintf("sync[%d]", i)
		c.vmid(p+".vmid", s.VMID)
		c.oneOf(p+".phase", s.Phase, Phases...)
		c.text(p+".reason", s.Reason, false)
		c.text(p+".lock", s.Lock, false)
		c.text(p+".node", s.Node, s.Phase == PhaseMoved)
		c.count(p+".drift", len(s.Drift), MaxParams)
		for j, d := range s.Drift {
			q := fmt.Sprintf("%s.drift[%d]", p, j)
			c.text(q+".key", d.Key, true)
			c.text(q+".from", d.From, false)
			c.text(q+".to", d.To, false)
		}
		if sc := s.Snapshots; sc != nil {
			q := p + ".snapshots"
			c.text(q+".every", sc.Every, true)
			if sc.Keep < 0 {
				c.fail(q+".keep", "negative (%d)", sc.Keep)
			}
			c.count(q+".snapshots", len(sc.Snapshots), MaxParams)
			for j, sn := range sc.Snapshots {
				c.text(fmt.Sprintf("%s.snapshots[%d].name", q, j), sn.Name, true)
			}
			c.count(q+".held", len(sc.Held), MaxParams)
			for j, h := range sc.Held {
				c.text(fmt.Sprintf("%s.held[%d]", q, j), h, true)
			}
			c.text(q+".note", sc.Note, false)
		}
	}
	c.count("actions", len(r.Actions), MaxItems)
	for i, a := range r.Actions {
		p := fmt.Sprintf("actions[%d]", i)
		c.action(p+".action", a.Action)
		c.oneOf(p+".source", a.Source, "reconcile", "signed", "recovery")
		c.oneOf(p+".class", a.Class, "benign", "destructive")
		c.text(p+".job", a.Job, false)
		c.text(p+".upid", a.UPID, false)
		c.text(p+".exit_status", a.ExitStatus, false)
		c.text(p+".error", a.Error, false)
		c.text(p+".skipped", a.Skipped, false)
		if a.Warnings < 0 {
			c.fail(p+".warnings", "negative (%d)", a.Warnings)
		}
	}
	c.count("pending", len(r.Pending), MaxItems)
	for i, pd := range r.Pending {
		p := fmt.Sprintf("pending[%d]", i)
		c.action(p+".action", pd.Action)
		c.text(p+".reason", pd.Reason, true)
		c.count(p+".destroys", len(pd.Destroys), MaxParams)
		for j, k := range pd.Destroys {
			c.text(fmt.Sprintf("%s.destroys[%d]", p, j), k, true)
		}
		if len(pd.Payload) > MaxPayloadLen {
			c.fail(p+".payload", "%d bytes; at most %d", len(pd.Payload), MaxPayloadLen)
		}
		c.quorum(p+".quorum", pd.Quorum)
	}
	c.count("rejected", len(r.Rejected), MaxItems)
	for i, rj := range r.Rejected {
		p := fmt.Sprintf("rejected[%d]", i)
		c.text(p+".job", rj.Job, false)
		if rj.Action != nil {
			c.action(p+".action", *rj.Action)
		}
		c.text(p+".code", rj.Code, false)
		c.text(p+".reason", rj.Reason, true)
	}
	return c.err
}

func (c *checker) action(path string, a Action) {
	c.text(path+".op", a.Op, true)
	c.vmid(path+".vmid", a.VMID)
	c.kind(path+".kind", a.Kind, false)
	c.params(path+".params", a.Params)
	c.text(path+".digest", a.Digest, false)
}

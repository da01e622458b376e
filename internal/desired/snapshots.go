package desired

import (
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/steward-pve/steward/internal/guest"
)

// Snapshots is a guest's snapshot schedule: the agent takes a snapshot
// every Every and keeps the newest Keep of the ones it took, pruning the
// oldest. It never prunes a snapshot it did not take (see package
// engine's snapshot schedule and classify.Provenance.Snapshot).
//
//	snapshots: {every: 24h, keep: 7, vmstate: false}
type Snapshots struct {
	// Every is the interval between snapshots, as a Go duration with an
	// optional whole-day form ("24h", "90m", "7d"), normalized by Parse
	// ("1440m" becomes "24h"); at least MinSnapshotEvery.
	Every string `json:"every"`
	// Keep is how many of the agent's own snapshots are kept, 1 to
	// MaxSnapshotKeep.
	Keep int `json:"keep"`
	// VMState also saves a running QEMU guest's RAM (PVE's vmstate). It is
	// refused for containers, which PVE cannot snapshot with their
	// memory, and ignored while the guest is stopped (PVE then has no
	// memory to save).
	VMState bool `json:"vmstate,omitempty"`
}

// Bounds of a snapshot schedule.
const (
	MinSnapshotEvery = time.Hour
	MaxSnapshotKeep  = 100
)

// Interval returns Every as a duration; 0 when it does not parse (a
// validated document always does).
func (s *Snapshots) Interval() time.Duration {
	d, err := parseEvery(s.Every)
	if err != nil {
		return 0
	}
	return d
}

// parseEvery reads a schedule interval: a Go duration ("24h", "1h30m") or
// a whole number of days ("7d").
func parseEvery(v string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(v, "d"); ok && n != "" && strings.Trim(n, "0123456789") == "" {
		days, err := strconv.Atoi(n)
		if err != nil || days > 365*100 {
			return 0, strconv.ErrRange
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(v)
}

// formatEvery is d in its shortest Go form ("24h", not "24h0m0s").
func formatEvery(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// snapshots decodes a guest's snapshots block.
func (p *decoder) snapshots(sp string, n *yaml.Node) *Snapshots {
	s := &Snapshots{}
	p.block(sp, n, "a snapshot schedule", "null is not a snapshot schedule; omit snapshots: for none, or give every: and keep:", func(fp, key string, k, v *yaml.Node) {
		switch key {
		case "every":
			s.Every, _ = p.str(fp, v)
		case "keep":
			str, ok := p.str(fp, v)
			if !ok {
				return
			}
			n, err := strconv.Atoi(str)
			if err != nil || v.ShortTag() != "!!int" {
				p.fail(fp, v, "want a whole number of snapshots to keep, got %q", str)
				return
			}
			s.Keep = n
		case "vmstate":
			s.VMState, _ = p.boolean(fp, v)
		default:
			p.fail(fp, k, "unknown field (want every, keep, vmstate)")
		}
	})
	return s
}

// validateSnapshots checks a guest's snapshot schedule and normalizes
// Every.
func (g *Guest) validateSnapshots(errs *errList, gp string, at func(string) int) {
	s := g.Snapshots
	if s == nil {
		return
	}
	sp := gp + ".snapshots"
	p := func(f string) string { return sp + "." + f }
	if s.Every == "" {
		errs.add(p("every"), at(sp), "missing: how often to take a snapshot, e.g. every: 24h")
	} else if d, err := parseEvery(s.Every); err != nil {
		errs.add(p("every"), at(p("every")), "invalid interval %q; want a duration such as 24h, 90m or 7d", s.Every)
	} else if d < MinSnapshotEvery {
		errs.add(p("every"), at(p("every")), "interval %s is shorter than the minimum %s", s.Every, formatEvery(MinSnapshotEvery))
	} else {
		s.Every = formatEvery(d)
	}
	switch {
	case s.Keep == 0 && at(p("keep")) == 0:
		errs.add(p("keep"), at(sp), "missing: how many of the agent's snapshots to keep, e.g. keep: 7")
	case s.Keep < 1 || s.Keep > MaxSnapshotKeep:
		errs.add(p("keep"), at(p("keep")), "keep %d out of range; want 1..%d", s.Keep, MaxSnapshotKeep)
	}
	if s.VMState {
		switch g.Kind {
		case guest.LXC:
			errs.add(p("vmstate"), at(p("vmstate")), "containers have no vmstate: PVE snapshots an LXC container's disks only; drop vmstate")
		case "":
			errs.add(p("vmstate"), at(p("vmstate")), "vmstate is for qemu guests only: set kind: qemu")
		}
	}
}

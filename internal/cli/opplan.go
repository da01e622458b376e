package cli

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/wire"
)

// How the operator commands show a plan (hub.PlanJSON) to people: benign
// steps (the agent runs them) apart from destructive ones (held until
// signed), each destructive step with what it would destroy.

// ANSI colours, used only when useColour says so.
const (
	ansiReset  = "\x1b[0m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiCyan   = "\x1b[36m"
)

// painter colours text when on is true.
type painter struct{ on bool }

func (p painter) paint(colour, s string) string {
	if !p.on {
		return s
	}
	return colour + s + ansiReset
}

// splitSteps returns the benign and the destructive steps of p.
func splitSteps(p hub.PlanJSON) (benign, destructive []hub.PlanStepJSON) {
	for _, s := range p.Steps {
		if s.Class == "benign" {
			benign = append(benign, s)
		} else {
			destructive = append(destructive, s)
		}
	}
	return benign, destructive
}

// stepText describes one step on one line: "101 config: memory 2048 → 4096".
func stepText(s hub.PlanStepJSON) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s", s.Action.VMID, s.Action.Op)
	if len(s.Changes) > 0 {
		parts := make([]string, len(s.Changes))
		for i, c := range s.Changes {
			parts[i] = c.Key + " " + planValue(c.From) + " → " + planValue(c.To)
		}
		b.WriteString(": " + strings.Join(parts, ", "))
	} else if len(s.Action.Params) > 0 {
		keys := make([]string, 0, len(s.Action.Params))
		for k := range s.Action.Params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + planValue(s.Action.Params[k])
		}
		b.WriteString(" " + strings.Join(parts, " "))
	}
	return b.String()
}

func planValue(v string) string {
	switch {
	case v == "":
		return "(unset)"
	case strings.ContainsAny(v, " \t\n\"") || strings.Contains(v, "→"):
		return strconv.Quote(v)
	}
	return v
}

// stepMarker is the first column of a step line: + start, - shutdown or
// stop, ! destructive, ~ anything else.
func stepMarker(s hub.PlanStepJSON) (string, string) {
	switch {
	case s.Class != "benign":
		return "!", ansiRed
	case s.Action.Op == "start" || s.Action.Op == "create":
		return "+", ansiGreen
	case s.Action.Op == "shutdown" || s.Action.Op == "stop":
		return "-", ansiRed
	}
	return "~", ansiYellow
}

// writePlan writes p's steps, benign first, then those that need a
// signature with what they destroy, then guest notes (errors, observed
// drift, locks); indent prefixes every line. It returns whether anything
// was written.
func writePlan(w io.Writer, p hub.PlanJSON, indent string, pt painter) bool {
	benign, destructive := splitSteps(p)
	wrote := false
	if len(benign) > 0 {
		fmt.Fprintf(w, "%sWill run (benign):\n", indent)
		for _, s := range benign {
			m, c := stepMarker(s)
			fmt.Fprintf(w, "%s  %s\n", indent, pt.paint(c, m+" "+stepText(s)))
		}
		wrote = true
	}
	if len(destructive) > 0 {
		fmt.Fprintf(w, "%sNeeds a signature (destructive; held until signed with steward sign):\n", indent)
		for _, s := range destructive {
			line := "! " + stepText(s)
			if len(s.Destroys) > 0 {
				line += "  [destroys " + strings.Join(s.Destroys, ", ") + "]"
			} else if s.Reason != "" {
				line += "  [" + s.Reason + "]"
			}
			fmt.Fprintf(w, "%s  %s\n", indent, pt.paint(ansiRed, line))
		}
		wrote = true
	}
	var notes []string
	for _, g := range p.Guests {
		switch {
		case g.Error != "":
			notes = append(notes, pt.paint(ansiRed, fmt.Sprintf("! %d %s", g.VMID, g.Error)))
		case g.Phase == wire.PhaseDriftObserved:
			for _, c := range g.Drift {
				notes = append(notes, pt.paint(ansiCyan, fmt.Sprintf("? %d %s %s → %s (observe: reported, not corrected)", g.VMID, c.Key, planValue(c.From), planValue(c.To))))
			}
		}
		if g.Lock != "" {
			notes = append(notes, fmt.Sprintf("* %d locked: %s", g.VMID, g.Lock))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "%sNotes:\n", indent)
		for _, n := range notes {
			fmt.Fprintf(w, "%s  %s\n", indent, n)
		}
		wrote = true
	}
	return wrote
}

package plan

import (
	"strconv"
	"strings"
	"unicode"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/normalize"
)

// Render writes the plan as a human-readable diff, one line per change,
// grouped by guest in vmid order. The format is stable; each line starts
// with a marker, then the vmid:
//
//	~ 101 memory: 2048 → 4096          a config key set (config step)
//	~ 101 tags: prod;web → (unset)     a config key removed
//	~ 101 scsi0: A,iothread=1 → A (drops iothread=1)   options the new value omits
//	~ 101 scsi0: size 32G → 100G (resize)   a disk grown (or shrunk) by resize
//	+ 102 start                         run state: start
//	+ 110 create clone of 9000 (full onto local-lvm)   a guest created
//	- 103 shutdown (timeout 180s)       run state: graceful shutdown, then stop
//	? 104 cores: 2 → 4 (observe)        drift reported, not corrected
//	! 105 kind mismatch: desired lxc, actual qemu   an error; nothing done for it
//	* 106 locked: backup                a note
//	* 108 pending restart: cores        written, PVE applies it at the next restart
//	~ 109 reboot to apply pending cores (timeout 180s)
//	= 107 in sync
//	* 111 moved to node pve-b (nothing done here)
//	~ 112 migrate to node pve-b (online)   a migration node: asks for
//
// Values are written bare, or Go-quoted when empty-looking, multi-line,
// containing spaces or the arrow; an absent value is "(unset)". An empty
// plan renders as "". Every line ends with a newline.
func (p Plan) Render() string {
	var b strings.Builder
	si := 0
	for _, g := range p.Guests {
		id := strconv.Itoa(g.VMID)
		if g.Phase == Error {
			line(&b, "!", id, g.Err)
		}
		if g.Lock != "" {
			line(&b, "*", id, "locked: "+g.Lock)
		}
		// Steps are in vmid order, as Guests are.
		for si < len(p.Steps) && p.Steps[si].Action.VMID < g.VMID {
			si++
		}
		n := 0
		for ; si < len(p.Steps) && p.Steps[si].Action.VMID == g.VMID; si++ {
			n++
			s := p.Steps[si]
			switch s.Action.Op {
			case action.SetConfig:
				for _, c := range s.Changes {
					text := c.Key + ": " + value(c.From) + " → " + value(c.To)
					if drops := normalize.Dropped(s.Action.Kind, c.Key, c.To, c.From); len(drops) > 0 {
						text += " (drops " + strings.Join(drops, ", ") + ")"
					}
					line(&b, "~", id, text)
				}
			case action.Resize:
				for _, c := range s.Changes {
					line(&b, "~", id, c.Key+": size "+value(c.From)+" → "+value(c.To)+" (resize)")
				}
			case action.Create, action.Clone:
				line(&b, "+", id, "create "+s.Changes[0].To)
			case action.Start:
				line(&b, "+", id, "start")
			case action.Shutdown:
				line(&b, "-", id, "shutdown (timeout "+s.Action.Params["timeout"]+"s)")
			case action.Migrate:
				text := "migrate to node " + s.Action.Params["target"]
				switch {
				case s.Action.Params["online"] == "1":
					text += " (online)"
				case s.Action.Params["restart"] == "1":
					text += " (restart mode, timeout " + s.Action.Params["timeout"] + "s)"
				}
				line(&b, "~", id, text)
			case action.Reboot:
				keys := make([]string, len(s.Changes))
				for i, c := range s.Changes {
					keys[i] = c.Key
				}
				line(&b, "~", id, "reboot to apply pending "+strings.Join(keys, ", ")+" (timeout "+s.Action.Params["timeout"]+"s)")
			default:
				line(&b, "~", id, s.Action.String())
			}
		}
		switch g.Phase {
		case DriftObserved:
			for _, c := range g.Drift {
				line(&b, "?", id, c.Key+": "+value(c.From)+" → "+value(c.To)+" (observe)")
			}
		case InSync:
			if n == 0 {
				line(&b, "=", id, "in sync")
			}
		case PendingRestart:
			line(&b, "*", id, "pending restart: "+strings.Join(g.Pending, ", "))
		case Moved:
			line(&b, "*", id, "moved to node "+g.Node+" (nothing done here)")
		}
	}
	return b.String()
}

func line(b *strings.Builder, marker, id, text string) {
	b.WriteString(marker)
	b.WriteByte(' ')
	b.WriteString(id)
	b.WriteByte(' ')
	b.WriteString(text)
	b.WriteByte('\n')
}

func value(v string) string {
	if v == "" {
		return "(unset)"
	}
	if v == "(unset)" || strings.Contains(v, "→") || strings.IndexFunc(v, func(r rune) bool {
		return unicode.IsSpace(r) || !unicode.IsPrint(r)
	}) >= 0 {
		return strconv.Quote(v)
	}
	return v
}

package agent

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/steward-pve/steward/internal/atomicfile"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/safefile"
	"github.com/steward-pve/steward/internal/signedop"
)

// PendingFile is the file name under the pending directory of a payload
// waiting for signatures: VMID-OP-NONCE8.json (the nonce's first 8 hex
// digits), so operators see what it is before they open it.
func PendingFile(p signedop.Payload) string {
	n := p.Nonce
	if len(n) > 8 {
		n = n[:8]
	}
	return fmt.Sprintf("%d-%s-%s.json", p.VMID, p.Op, n)
}

// outbox is the pending-signature outbox: a directory holding exactly the
// payloads waiting for signatures, written after each tick and read back
// at start, so a restart does not change what operators are asked to
// sign. It is the one place payloads are written and reloaded.
type outbox struct {
	dir string // "" (no state directory): nothing is written
	log *slog.Logger
}

// save makes the directory hold exactly rep's pending payloads, one file
// each (mode 0600: a payload carries the action's parameters), ready for
// `steward op sign`. A file already there is left as is. Payloads are
// logged by file, never by content.
func (o outbox) save(rep engine.Report) error {
	if o.dir == "" {
		return nil
	}
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, d := range rep.Pending {
		if len(d.Payload) == 0 {
			continue // no payload could be built; the decision says why
		}
		name := PendingFile(d.Offer)
		keep[name] = true
		path := filepath.Join(o.dir, name)
		if _, err := os.Stat(path); err == nil {
			continue
		}
		if err := atomicfile.Write(path, d.Payload, 0o600); err != nil {
			return err
		}
		o.log.Info("destructive action waiting for a signature", "vmid", d.Offer.VMID, "op", d.Offer.Op, "reason", d.Reason, "payload_file", path)
	}
	entries, err := os.ReadDir(o.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !keep[e.Name()] && strings.HasSuffix(e.Name(), ".json") {
			os.Remove(filepath.Join(o.dir, e.Name()))
		}
	}
	return nil
}

// load gives g the payloads offered before this start. Unreadable files
// are ignored: the next tick rewrites the directory.
func (o outbox) load(g *gate.Gate) {
	if o.dir == "" {
		return
	}
	files, _ := filepath.Glob(filepath.Join(o.dir, "*.json"))
	for _, name := range files {
		b, err := safefile.ReadFileNoFollow(name, signedop.MaxPayloadSize)
		if err != nil {
			continue
		}
		if p, err := signedop.ParsePayload(b); err == nil {
			g.Remember(p)
		}
	}
}

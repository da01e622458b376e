// Package action defines the unit of work steward performs on a guest. An
// Action names one PVE operation with its exact API parameters, so the same
// value is planned, classified, signed, journaled and executed without
// translation. The package is pure: no I/O.
package action

import (
	"fmt"
	"sort"
	"strings"

	"github.com/steward-pve/steward/internal/guest"
)

// Op is the operation an Action performs.
type Op string

// The operations steward knows. Anything else is unknown and therefore
// destructive to the classifier.
const (
	Start            Op = "start"             // POST status/start
	Shutdown         Op = "shutdown"          // graceful shutdown with timeout, then stop
	Stop             Op = "stop"              // POST status/stop (hard)
	Reboot           Op = "reboot"            // POST status/reboot: graceful shutdown within Params "timeout", then start (applies pending changes)
	SetConfig        Op = "config"            // PUT/POST config: Params are the keys to set plus "delete"
	Resize           Op = "resize"            // PUT resize: Params "disk", "size"
	Create           Op = "create"            // POST /nodes/{node}/{kind}: Params are the create parameters
	Clone            Op = "clone"             // POST /nodes/{node}/qemu/{source}/clone: VMID is the new guest (PVE's newid), Params "source" plus the clone parameters
	Destroy          Op = "destroy"           // DELETE /nodes/{node}/{kind}/{vmid}: Params "purge", "destroy-unreferenced-disks"
	SnapshotCreate   Op = "snapshot"          // POST snapshot: Params "snapname", ...
	SnapshotRollback Op = "snapshot_rollback" // POST snapshot/{snapname}/rollback: Params "snapname"
	SnapshotDelete   Op = "snapshot_delete"   // DELETE snapshot/{snapname}: Params "snapname"
	Migrate          Op = "migrate"           // POST /nodes/{node}/{kind}/{vmid}/migrate on the guest's node: Params "target", QEMU "online" and "with-local-disks", LXC "restart" and "timeout"
)

// Action is one operation on one guest.
//
// Params holds the PVE API parameters of the call exactly as they will be
// sent (form values). For SetConfig that is every key to write plus an
// optional "delete" with PVE's comma-separated key list. Digest is the
// config digest the action was planned or signed against; writes pass it to
// PVE so a concurrent change fails the write instead of being clobbered.
type Action struct {
	Op     Op                `json:"op"`
	VMID   int               `json:"vmid"`
	Kind   guest.Kind        `json:"kind"`
	Params map[string]string `json:"params,omitempty"`
	Digest string            `json:"digest,omitempty"`
}

// Key returns a stable string identifying the action's intent (op, guest
// and parameters, not the digest). Two actions with the same Key would make
// the same change; the queue coalesces them and the journal uses it as the
// base of idempotency keys.
func (a Action) Key() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%d/%s", a.Kind, a.VMID, a.Op)
	keys := make([]string, 0, len(a.Params))
	for k := range a.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "&%q=%q", k, a.Params[k])
	}
	return b.String()
}

// DeleteKeys returns the keys listed in Params["delete"], split exactly as
// PVE splits the list (SplitList), so every consumer judges the keys PVE
// will act on.
func (a Action) DeleteKeys() []string { return SplitList(a.Params["delete"]) }

// SplitList splits a PVE list parameter the way PVE::Tools::split_list
// does: on NUL bytes when the value contains any, otherwise on commas,
// semicolons and white space. Empty entries are dropped.
func SplitList(s string) []string {
	if strings.IndexByte(s, 0) >= 0 {
		var out []string
		for p := range strings.SplitSeq(s, "\x00") {
			if p != "" {
				out = append(out, p)
			}
		}
		return out
	}
	return strings.FieldsFunc(s, func(r rune) bool {
		return r == ',' || r == ';' || r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\f' || r == '\v'
	})
}

// String renders the action for humans and logs, e.g. "config 101 cores=4".
func (a Action) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %d", a.Op, a.VMID)
	keys := make([]string, 0, len(a.Params))
	for k := range a.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%s", k, a.Params[k])
	}
	return b.String()
}

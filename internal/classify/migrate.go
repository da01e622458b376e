package classify

import (
	"fmt"
	"regexp"
	"strconv"

	"github.com/steward-pve/steward/internal/guest"
)

// Migration within the cluster (issue 12 §4). It is benign: it moves the
// guest to another node of its cluster and destroys nothing.
//
//   - QEMU, stopped: PVE copies the guest's volumes on local storage to
//     the target node (storage_migrate, same storage id) and frees the
//     source copies only after the config moved; a failed migration frees
//     what it copied on the target and leaves the guest where it was.
//   - QEMU, running: an online migration (online=1) mirrors the disks on
//     local storage to the target while the guest runs
//     (with-local-disks=1) and moves its memory; the source volumes are
//     freed only after the guest runs on the target (phase 3). The guest
//     keeps running. with-local-disks is harmless for shared disks, which
//     are not copied.
//   - LXC: PVE cannot migrate a running container live; restart=1 shuts
//     it down (gracefully, within timeout seconds), moves it and starts it
//     on the target. That is a restart of the guest, so the planner plans
//     it only where desired state allows restarts (restart: allowed); the
//     classifier judges the data, and restart mode destroys none.
//
// So a migrate action is benign with only these parameters. When its
// volumes would fill a storage of the target node past its headroom
// threshold, the engine's finding (Provenance.Headroom) holds it for a
// signature like any benign allocation (Allocations counts the disks
// the migration copies). Parameters that change where data lands
// (targetstorage, target-storage: a storage the planner did not choose)
// or that override PVE's refusals (force: local devices) or its transfer
// (bwlimit, migration_type, migration_network, with-conntrack-state) are
// not judged: unknown, so destructive.

// nodeRE is PVE's pve-node format.
var nodeRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$`)

// migrateParams are the parameters a migrate action may carry, by kind,
// besides target.
var migrateParams = map[guest.Kind]map[string]bool{
	guest.QEMU: setOf("online", "with-local-disks"),
	guest.LXC:  setOf("restart", "timeout"),
}

func (j *judge) migrate() {
	kind, id := j.a.Kind, j.a.VMID
	allowed, ok := migrateParams[kind]
	if !ok {
		j.bad(fmt.Sprintf("migrate: unknown guest kind %q", kind))
		return
	}
	target, has := j.a.Params["target"]
	if !has || !nodeRE.MatchString(target) {
		j.bad(fmt.Sprintf("migrate %d: target %q is not a node name", id, target))
	}
	for _, k := range j.sortedParams() {
		v := j.a.Params[k]
		switch {
		case k == "target":
		case !allowed[k]:
			j.bad(fmt.Sprintf("migrate %d: parameter %q is not on the %s migrate allow-list", id, k, kind))
		case k == "timeout":
			if n, err := strconv.Atoi(v); err != nil || n < 0 || strconv.Itoa(n) != v {
				j.bad(fmt.Sprintf("migrate %d: timeout %q is not a number of seconds", id, v))
			}
		case v != "0" && v != "1":
			j.bad(fmt.Sprintf("migrate %d: %s=%q is not 0 or 1", id, k, v))
		}
	}
	if j.actual == nil {
		j.bad(fmt.Sprintf("migrate %d: the guest's config is unknown, so what the migration moves cannot be judged", id))
		return
	}
	j.addKeys(dataKeys(kind, j.actual)...)
	switch {
	case kind == guest.LXC && j.a.Params["restart"] == "1":
		j.ok(fmt.Sprintf("migrate %d to node %s: moves the container within its cluster and destroys nothing (restart mode: a running container is shut down and started again there; local volumes are copied, and the source copies freed only once the container is there)", id, target))
	case kind == guest.QEMU && j.a.Params["online"] == "1":
		j.ok(fmt.Sprintf("migrate %d to node %s: moves the VM within its cluster while it runs and destroys nothing (local disks are mirrored there, and the source copies freed only once the VM runs there)", id, target))
	default:
		j.ok(fmt.Sprintf("migrate %d to node %s: moves the guest within its cluster and destroys nothing (local volumes are copied there, and the source copies freed only once the guest is there)", id, target))
	}
}

package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pve"
)

// Migrations desired state asks for (node:, issue 12 §4). The planner
// plans one where the guest is on this node and its entry names another
// (plan/migrate.go); the gate judges it benign (classify/migrate.go); it
// runs through the guest's queue and the journal like any action: begin
// before the POST on this node, the task's UPID as soon as PVE answers,
// end when the task stopped. Before the POST, precheckMigrate asks PVE
// what stands in the way (GET …/migrate) and refuses, with PVE's reason
// and what to do, what PVE would refuse: a node that is not another node
// of the cluster or that lacks a storage the guest uses, local devices
// (PCI, USB, serial passthrough), a cdrom holding the host's drive or an
// image on storage only this node has, a disk that is a host device or
// file, a container's bind mount point. A refusal backs the guest off and
// is reported; the POST is never sent while PVE's answer refuses it.
//
// Never twice: a migration's idempotency key is its action (target and
// mode) with the config digest it was planned against (migrateKey). Once
// one ended with PVE's task OK, the same migration of the same state is
// not sent again while the guest is under HA and still here (PVE's
// hamigrate task only hands the request to HA, whose own migration
// follows); a guest not under HA that is here again came back, and may
// go again. Once one failed (PVE's task aborted it), it is not tried
// again while the guest's config is unchanged: the refusal says why,
// with the reason PVE logged. While any migration runs, PVE's migrate
// lock keeps the planner off the guest. After a crash, recovery finds the
// op's task (qmigrate, vzmigrate or hamigrate, by the agent's own token,
// on this node) and waits for it, or else judges by where the guest is:
// on the target, the migration happened; here under the migrate lock, its
// fate is unknown and it is not run again; here unlocked, it never ran.

// migrateKey is the idempotency key of a migration (Engine.execute skips
// an action whose key completed): its intent (target and mode) and the
// config digest it was planned against, without reconcileKey's epoch, so
// that a migration that ended OK while the guest is still here (HA moves
// it after PVE's hamigrate task ended) is not taken for a guest that needs
// another one. precheckMigrate sets another key for a guest that came
// back after its migration.
func (t *tick) migrateKey(a action.Action) string {
	if k, ok := t.migrateKeys[a.VMID]; ok {
		return k
	}
	return "reconcile:" + a.Key() + "@" + a.Digest
}

// precheckMigrate says why migrate action a must not be sent now, or "".
func (t *tick) precheckMigrate(ctx context.Context, a action.Action) string {
	e := t.e
	target := a.Params["target"]
	key := t.migrateKey(a)
	if res, done := e.Journal.Completed(key); done && !res.Retry {
		if !res.OK {
			return fmt.Sprintf("not migrated to %s: the last migration of this guest as it is now failed (%s); not tried again while its config is unchanged: fix the cause, change the guest, or migrate it by hand",
				target, res.Error)
		}
		// It ended OK and the guest is still on this node. Under HA,
		// PVE handed the request to HA, which moves it in its own time:
		// the action is skipped as done. Otherwise it left and came back
		// (moved by hand): a new migration, with a key of its own.
		if t.underHA(ctx, a.VMID) {
			return ""
		}
		if t.migrateKeys == nil {
			t.migrateKeys = map[int]string{}
		}
		t.migrateKeys[a.VMID] = key + "/again@" + e.now().UTC().Format(time.RFC3339Nano)
	}
	chk, err := e.PVE.MigrateCheck(ctx, e.Node, a.Kind, a.VMID, target)
	if err != nil {
		return fmt.Sprintf("not migrated to %s: cannot read PVE's migration preconditions (GET /nodes/%s/%s/%d/migrate: %v; the agent's token needs VM.Migrate on the guest); tried again after backoff",
			target, e.Node, a.Kind, a.VMID, err)
	}
	if !chk.KnowsNode(target) {
		nodes := append(slices.Clone(chk.AllowedNodes), keys(chk.NotAllowed)...)
		slices.Sort(nodes)
		return fmt.Sprintf("not migrated: %s is not another node of this cluster (PVE offers %s); fix node: in desired state", target, orNone(nodes))
	}
	if na, blocked := chk.NotAllowed[target]; blocked {
		var why []string
		if len(na.UnavailableStorages) > 0 {
			why = append(why, "it lacks the storage "+strings.Join(na.UnavailableStorages, ", ")+" the guest uses")
		}
		if len(na.UnavailableResources) > 0 {
			why = append(why, "it lacks the device mapping "+strings.Join(na.UnavailableResources, ", "))
		}
		if len(na.BlockingHA) > 0 {
			why = append(why, "HA affinity rules of "+strings.Join(na.BlockingHA, ", ")+" keep the guest off it")
		}
		return fmt.Sprintf("not migrated: PVE does not allow node %s for this guest (%s)", target, orNone(why))
	}
	if len(chk.LocalResources) > 0 {
		return fmt.Sprintf("not migrated to %s: the VM uses devices of this node (%s), which PVE refuses to migrate; remove them from its config, or migrate it by hand",
			target, strings.Join(chk.LocalResources, ", "))
	}
	for _, d := range chk.LocalDisks {
		switch {
		case strings.HasPrefix(d.VolID, "/"):
			return fmt.Sprintf("not migrated to %s: disk %s is a device or file of this host, which PVE cannot migrate", target, d.VolID)
		case d.CDROM && d.VolID == "cdrom":
			return fmt.Sprintf("not migrated to %s: a cdrom drive uses this host's physical drive, which PVE cannot migrate; set it to none", target)
		case d.CDROM && !strings.Contains(d.VolID, "cloudinit"):
			return fmt.Sprintf("not migrated to %s: cdrom %s is an image on storage only this node has, which PVE cannot migrate; eject it (none,media=cdrom) or put the image on shared storage", target, d.VolID)
		}
	}
	if a.Kind == guest.LXC {
		if mp := bindMount(t.byID[a.VMID].Config); mp != "" {
			return fmt.Sprintf("not migrated to %s: mount point %s is a directory of this host (a bind mount not marked shared=1), which PVE cannot migrate", target, mp)
		}
	}
	return ""
}

// underHA reports whether /cluster/resources shows guest vmid under HA
// (an hastate), or cannot be read (then it is taken as under HA: nothing
// is asked twice on a guess).
func (t *tick) underHA(ctx context.Context, vmid int) bool {
	if t.resources == nil {
		rs, err := t.e.PVE.ClusterResources(ctx, "vm")
		if err != nil {
			return true
		}
		t.resources = rs
	}
	for _, r := range t.resources {
		if r.VMID == vmid {
			return r.HAState != ""
		}
	}
	return false
}

// bindMountRE matches a container's mount point keys.
var bindMountRE = regexp.MustCompile(`^mp\d+$`)

// bindMount is the first mount point of a container's config that is a
// host directory or device not marked shared, or "".
func bindMount(cfg guest.Config) string {
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		if !bindMountRE.MatchString(k) {
			continue
		}
		v := cfg[k]
		first, _, _ := strings.Cut(v, ",")
		first = strings.TrimPrefix(first, "volume=")
		if strings.HasPrefix(first, "/") && !strings.Contains(","+v+",", ",shared=1,") {
			return k
		}
	}
	return ""
}

// migrateFailure enriches the error of a migration whose task failed with
// the reason PVE logged: its exit status says only "migration aborted".
func (e *Engine) migrateFailure(ctx context.Context, a action.Action, err error) error {
	var te *pve.TaskError
	if a.Op != action.Migrate || !errors.As(err, &te) {
		return err
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	lines, lerr := e.PVE.TaskLog(rctx, te.UPID.Node, te.UPID, 0, 500)
	if lerr != nil {
		return err
	}
	for _, l := range lines {
		if _, reason, ok := strings.Cut(l.T, "ERROR: migration aborted ("); ok {
			if _, r, ok := strings.Cut(reason, "): "); ok && strings.TrimSpace(r) != "" {
				return fmt.Errorf("%w: %s", err, strings.TrimSpace(r))
			}
		}
	}
	return err
}

// migrateMet is intentMet for a migration: where the guest is now.
func (e *Engine) migrateMet(ctx context.Context, a action.Action, lock string, here bool) (bool, string, error) {
	target := a.Params["target"]
	if here {
		if lock == "migrate" {
			return false, lockedRemains + lock, nil
		}
		return false, "guest still on node " + e.Node, nil
	}
	rs, err := e.PVE.ClusterResources(ctx, "vm")
	if err != nil {
		return false, "", fmt.Errorf("locating guest %d in the cluster: %w", a.VMID, err)
	}
	for _, r := range rs {
		if r.VMID == a.VMID && (r.Type == "qemu" || r.Type == "lxc") {
			if r.Node == target {
				return true, "guest is on node " + target, nil
			}
			// It left this node, not for the target: not this op's
			// doing to repeat; desired state decides what comes next.
			return true, "guest left this node for node " + r.Node + ", not " + target, nil
		}
	}
	return false, "guest does not exist in the cluster", nil
}

func keys[V any](m map[string]V) []string { return slices.Collect(maps.Keys(m)) }

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

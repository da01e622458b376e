package sim

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/guest"
)

// Migration, as qemu-server's and pve-container's migrate_vm API and
// their QemuMigrate / LXC::Migrate tasks do it.
//
// Before the task (answered at once): target is the local node (400
// {"target":"target is local node."}), not a cluster node (500 "no such
// cluster node"), force for anyone but root@pam (400), the guest not on
// this node (500 "Configuration file ... does not exist"), a set lock
// field (500 "VM is locked (…)", QEMU), a running VM without online=1
// (500 "can't migrate running VM without --online"), a running container
// without online or restart (500 "can't migrate running container without
// --online or --restart"), a target storage that does not exist. A guest
// under HA is handed to HA: the answer is an hamigrate task that asks HA
// to move it, and HA's own migration task follows (cluster.go).
//
// The task (qmigrate, vzmigrate) prepares on the guest's node (the lock
// field; QEMU: local devices — hostpciN, usbN other than spice, serial or
// parallel devices of the host — refuse unless forced on a stopped VM;
// the volume scan refuses a host device or file as a disk, the host's
// cdrom drive and an image on local storage in a cdrom; a running VM with
// disks on local storage needs with-local-disks; LXC: online is not
// implemented, a running container needs restart, a bind or device mount
// point not marked shared refuses). A refusal there is logged as
// AbstractMigrate logs it ("ERROR: migration aborted (duration
// 00:00:00): REASON") and the task exits "migration aborted". Otherwise
// it sets the lock "migrate", and at its end the guest's config is on
// target without the lock: a VM keeps running (online) or stays stopped,
// a running container is shut down and started again there. A failed
// task removes the lock.
//
// GET …/migrate is migrate_vm_precondition (getMigrate).
//
// Simplification: no storage is shared, so every disk is local; offline
// migration copies local disks (as PVE's storage_migrate does) and volume
// names are kept, targetstorage included (it is checked, not applied).

func (t *routeTable) addMigrateRoutes() {
	for _, k := range []guest.Kind{guest.QEMU, guest.LXC} {
		k := k
		t.add("POST", "/nodes/{node}/"+string(k)+"/{vmid}/migrate", func(s *Sim, q *request) response { return s.postMigrate(k, q) })
		t.add("GET", "/nodes/{node}/"+string(k)+"/{vmid}/migrate", func(s *Sim, q *request) response { return s.getMigrate(k, q) })
	}
}

// getMigrate is migrate_vm_precondition (GET …/migrate), as qemu-server
// and pve-container answer it: the guest must be on this node and carry
// no lock ("VM is locked (backup)", "CT is locked (backup)"); every other
// node of the cluster is allowed (the simulator's storages exist on every
// node and HA has no affinity rules). A VM also lists its local disks
// (every volume: no storage is shared; cdroms with an image or the host's
// drive too, with cdrom set, host devices and files, and unused volumes
// with is_unused) with the sizes known, and its
// local resources (localResources), which refuse a migration.
func (s *Sim) getMigrate(k guest.Kind, q *request) response {
	return s.withGuest(k, q, func(g *guestState) response {
		if l := g.config["lock"]; l != "" {
			return fail(500, "%s is locked (%s)", kindWord(k), l)
		}
		var allowed []any
		for _, n := range s.nodes {
			if n != g.node {
				allowed = append(allowed, n)
			}
		}
		if allowed == nil {
			allowed = []any{}
		}
		if k == guest.LXC {
			return reply(map[string]any{"running": boolInt(g.running), "allowed-nodes": allowed, "not-allowed-nodes": map[string]any{}})
		}
		disks := []any{}
		for _, key := range sortedKeys(g.config) {
			if !qemuDiskRE.MatchString(key) {
				continue
			}
			v := g.config[key]
			first, _, _ := strings.Cut(v, ",")
			first = strings.TrimPrefix(first, "file=")
			cdrom := strings.Contains(v, "media=cdrom")
			// check_vm_disks_local: every volume but a shared one and an
			// empty cdrom; the host's drive ("cdrom") and a host device
			// or file are local too.
			if first == "" || first == "none" && cdrom {
				continue
			}
			d := map[string]any{"volid": first}
			if n, ok := g.realVolumeSize(first); ok {
				d["size"] = n
			}
			if cdrom || first == "cdrom" {
				d["cdrom"] = 1
			}
			if strings.HasPrefix(key, "unused") {
				d["is_unused"] = 1
			}
			disks = append(disks, d)
		}
		res := []any{}
		for _, r := range localResources(g.config) {
			res = append(res, r)
		}
		return reply(map[string]any{"running": boolInt(g.running), "allowed_nodes": allowed, "not_allowed_nodes": map[string]any{},
			"local_disks": disks, "local_resources": res, "mapped-resources": []any{}, "mapped-resource-info": map[string]any{},
			"has-dbus-vmstate": 1})
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// migration is one migration's options.
type migration struct {
	target         string
	online         bool // QEMU: live; LXC: refused in the task
	restart        bool // LXC restart mode
	withLocalDisks bool
	force          bool
	ha             string // "migrate" or "relocate" when HA moves the guest
}

func (s *Sim) postMigrate(k guest.Kind, q *request) response {
	node, target := q.vars["node"], q.params["target"]
	if target == node {
		return paramFail(map[string]string{"target": "target is local node."})
	}
	if !s.isNode(target) {
		return fail(500, "no such cluster node '%s'", target)
	}
	if q.bool("force") && q.tok.id != "root@pam" {
		return paramFail(map[string]string{"force": "Only root may use this option."})
	}
	tsKey := "targetstorage"
	if k == guest.LXC {
		tsKey = "target-storage"
	}
	if ts, ok := q.params[tsKey]; ok {
		for _, pair := range strings.Split(ts, ",") {
			_, dst, found := strings.Cut(pair, ":")
			if !found {
				dst = pair
			}
			if dst == "1" {
				continue
			}
			if _, ok := storageByID(dst); !ok {
				return paramFail(map[string]string{tsKey: fmt.Sprintf("storage '%s' does not exist", dst)})
			}
		}
	}
	m := migration{target: target, online: q.bool("online"), restart: q.bool("restart"),
		withLocalDisks: q.bool("with-local-disks"), force: q.bool("force")}
	s.mu.Lock()
	g, resp, found := s.getGuestLocked(k, q)
	if !found {
		s.mu.Unlock()
		return resp
	}
	if k == guest.QEMU {
		if l := g.config["lock"]; l != "" {
			s.mu.Unlock()
			return fail(500, "VM is locked (%s)", l)
		}
	}
	if g.running {
		if k == guest.QEMU && !m.online {
			s.mu.Unlock()
			return fail(500, "can't migrate running VM without --online")
		}
		if k == guest.LXC && !m.online && !m.restart {
			s.mu.Unlock()
			return fail(500, "can't migrate running container without --online or --restart")
		}
	}
	underHA := g.ha != "" && g.ha != "ignored"
	s.mu.Unlock()
	if underHA {
		return s.taskResponse(taskSpec{typ: "hamigrate", op: "hamigrate", kind: k, vmid: g.vmid, q: q,
			apply: func(r *taskRun) error {
				r.logf("Requesting HA migration for %s %d to node %s", kindWord(k), g.vmid, target)
				return nil
			},
			after: func() {
				if _, err := s.haMigrateTask(g, target, "migrate"); err != nil {
					s.log.Warn("sim: HA migration did not start", "vmid", g.vmid, "err", err)
				}
			}})
	}
	return s.taskResponse(s.migrateSpec(g, q, m))
}

// haMigrateTask starts HA's migration (how "migrate") or relocation of g
// to target, as root@pam.
func (s *Sim) haMigrateTask(g *guestState, target, how string) (string, error) {
	s.mu.Lock()
	if s.guests[g.vmid] != g {
		s.mu.Unlock()
		return "", fmt.Errorf("sim: guest %d is gone", g.vmid)
	}
	m := migration{target: target, ha: how, withLocalDisks: true}
	params := map[string]string{"target": target}
	if how == "migrate" && g.running {
		if g.kind == guest.QEMU {
			m.online = true
			params["online"] = "1"
			params["with-local-disks"] = "1"
		} else {
			m.restart = true
			params["restart"] = "1"
		}
	}
	g.haMoving = how
	q := s.haRequest(g, params)
	s.mu.Unlock()
	upid, ok := s.startTask(s.migrateSpec(g, q, m))
	if !ok {
		return "", fmt.Errorf("sim: shutting down")
	}
	return upid, nil
}

// migrateSpec is the qmigrate / vzmigrate task moving g to m.target.
func (s *Sim) migrateSpec(g *guestState, q *request, m migration) taskSpec {
	k := g.kind
	wasRunning := false
	typ := "qmigrate" // PVE's task types: qmigrate, vzmigrate
	if k == guest.LXC {
		typ = "vzmigrate"
	}
	sp := taskSpec{typ: typ, op: "migrate", g: g, kind: k, vmid: g.vmid, q: q}
	sp.begin = func(r *taskRun) error {
		if err := s.goneLocked(g); err != nil {
			return err
		}
		if err := s.prepareMigration(r, g, m, &wasRunning); err != nil {
			// AbstractMigrate: the reason is logged, the task's exit
			// status says only that the migration was aborted.
			r.logf("ERROR: migration aborted (duration 00:00:00): %s", err)
			return taskErrf("migration aborted")
		}
		r.logf("starting migration of %s %d to node '%s' (%s)", kindWord(k), g.vmid, m.target, s.nodeIP(m.target))
		for _, d := range localDisks(k, g.config) {
			r.logf("found local disk '%s' (attached)", d)
		}
		g.config["lock"] = "migrate"
		return nil
	}
	sp.apply = func(r *taskRun) error {
		if err := s.goneLocked(g); err != nil {
			return err
		}
		ng := g.movedTo(m.target)
		delete(ng.config, "lock")
		ng.haMoving = ""
		if wasRunning {
			if k == guest.LXC || m.ha == "relocate" {
				r.logf("restarting %s %d on node '%s'", kindWord(k), g.vmid, m.target)
				ng.startedAt = s.now()
			}
			ng.running = true
		}
		s.guests[g.vmid] = ng
		g.running = false
		r.logf("migration finished successfully")
		return nil
	}
	sp.abort = func(r *taskRun) {
		if g.config["lock"] == "migrate" {
			delete(g.config, "lock")
		}
		g.haMoving = ""
	}
	return sp
}

// prepareMigration is QemuMigrate's / LXC::Migrate's prepare and volume
// scan: why g cannot migrate as m asks, or nil. It sets *wasRunning.
func (s *Sim) prepareMigration(r *taskRun, g *guestState, m migration, wasRunning *bool) error {
	k := g.kind
	if l := g.config["lock"]; l != "" {
		return fmt.Errorf("%s is locked (%s)", kindWord(k), l)
	}
	*wasRunning = g.running
	live := g.running && m.ha != "relocate"
	if k == guest.LXC {
		switch {
		case live && m.online:
			return fmt.Errorf("lxc live migration is currently not implemented")
		case live && !m.restart:
			return fmt.Errorf("running container can only be migrated in restart mode")
		}
		if mp := localMounts(g.config); mp != "" {
			return fmt.Errorf("cannot migrate local bind mount point '%s'", mp)
		}
		return nil
	}
	if live && !m.online {
		return fmt.Errorf("can't migrate running VM without --online")
	}
	if res := localResources(g.config); len(res) > 0 && (live || !m.force) {
		return fmt.Errorf("can't migrate VM which uses local devices: %s", strings.Join(res, ", "))
	}
	// scan_local_volumes: a host device or file, the host's cdrom drive,
	// an image on (the simulator's local) storage in a cdrom.
	for _, key := range sortedKeys(g.config) {
		if !qemuDiskRE.MatchString(key) {
			continue
		}
		v := g.config[key]
		first, _, _ := strings.Cut(v, ",")
		first = strings.TrimPrefix(first, "file=")
		cdrom := strings.Contains(v, "media=cdrom")
		switch {
		case strings.HasPrefix(first, "/"):
			return fmt.Errorf("Problem found while scanning volumes - can't migrate local disk '%s': local file/device", first)
		case cdrom && first == "cdrom":
			return fmt.Errorf("Problem found while scanning volumes - can't migrate local cdrom drive")
		case cdrom && strings.Contains(first, ":") && !strings.HasSuffix(first, "cloudinit"):
			return fmt.Errorf("Problem found while scanning volumes - can't migrate local cdrom '%s'", first)
		}
	}
	if live && !m.withLocalDisks && len(localDisks(k, g.config)) > 0 {
		return fmt.Errorf("can't live migrate attached local disks without with-local-disks option")
	}
	return nil
}

// movedTo is a copy of g whose config is in target's directory. The old
// state stays behind as a stale handle: anything holding it finds the
// guest gone from its node (goneLocked), as PVE finds no config there.
func (g *guestState) movedTo(target string) *guestState {
	ng := newGuestState(g.vmid, g.kind)
	ng.node = target
	ng.running, ng.startedAt, ng.ignoreShutdown = g.running, g.startedAt, g.ignoreShutdown
	ng.config = cloneMap(g.config)
	ng.snapshots = g.snapshots
	ng.unusedSize = g.unusedSize
	ng.realSize = g.realSize
	ng.pending = cloneMap(g.pending)
	ng.pendingDel = g.pendingDel
	ng.ciGen = g.ciGen
	ng.ha, ng.haMoving = g.ha, g.haMoving
	return ng
}

func (s *Sim) nodeIP(node string) string {
	for i, n := range s.nodes {
		if n == node {
			return "127.0.1." + strconv.Itoa(i+1)
		}
	}
	return "127.0.0.1"
}

var (
	localDevRE  = regexp.MustCompile(`^(hostpci\d+|usb\d+|serial\d+|parallel\d+)$`)
	qemuDiskRE  = regexp.MustCompile(`^(scsi|virtio|sata|ide)\d+$|^(efidisk0|tpmstate0)$|^unused\d+$`)
	lxcMountRE  = regexp.MustCompile(`^(rootfs|mp\d+|unused\d+)$`)
	lxcBindMPRE = regexp.MustCompile(`^mp\d+$`)
)

// localResources are the keys of a VM's config that bind it to its node,
// as check_local_resources finds them: PCI passthrough, USB devices other
// than spice, serial and parallel ports of host devices.
func localResources(cfg map[string]string) []string {
	var out []string
	for _, k := range sortedKeys(cfg) {
		if !localDevRE.MatchString(k) {
			continue
		}
		v := cfg[k]
		switch {
		case strings.HasPrefix(k, "usb") && (strings.Contains(v, "spice") || strings.HasPrefix(v, "mapping=")):
			continue
		case strings.HasPrefix(k, "hostpci") && strings.HasPrefix(v, "mapping="):
			continue
		case strings.HasPrefix(k, "serial") && v == "socket":
			continue
		}
		out = append(out, k)
	}
	return out
}

// localDisks are the volumes of the guest's disks: every storage of the
// simulator is local.
func localDisks(k guest.Kind, cfg map[string]string) []string {
	re := qemuDiskRE
	if k == guest.LXC {
		re = lxcMountRE
	}
	var out []string
	for key, v := range cfg {
		if re.MatchString(key) {
			if vol := volumeOf(v); vol != "" {
				out = append(out, vol)
			}
		}
	}
	sort.Strings(out)
	return out
}

// localMounts is the first bind or device mount point of a container not
// marked shared=1, or "".
func localMounts(cfg map[string]string) string {
	for _, key := range sortedKeys(cfg) {
		if !lxcBindMPRE.MatchString(key) {
			continue
		}
		v := cfg[key]
		first, _, _ := strings.Cut(v, ",")
		first = strings.TrimPrefix(first, "volume=")
		if strings.HasPrefix(first, "/") && !strings.Contains(","+v+",", ",shared=1,") {
			return key
		}
	}
	return ""
}

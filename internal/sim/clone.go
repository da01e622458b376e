package sim

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/guest"
)

func (t *routeTable) addCloneRoutes() {
	t.add("POST", "/nodes/{node}/qemu/{vmid}/clone", (*Sim).postClone)
	t.add("POST", "/nodes/{node}/lxc/{vmid}/clone", (*Sim).postCloneCT)
}

// postClone is qemu-server's clone_vm (task qmclone, its id the source
// vmid). As PVE, before the task starts: the source must exist and carry
// no lock, the snapshot must exist, storage and format are refused for a
// linked clone (full defaults to 1 except from a template), a linked clone
// needs base volumes (a template's), the target storage must hold images,
// target must be this node, and newid must be free ("config file already
// exists"; the simulator refuses a container's id the same way, where PVE
// fails in the task at the cluster file system). The new guest exists at
// once with lock "clone", as PVE's temporary config does, and is removed
// if the task fails.
//
// The new config copies the source's current values (a snapshot's with
// snapname) except snapshot fields, unusedN and template; netN get new
// MACs, smbios1 a new uuid, vmgenid (if set) a new one; name defaults to
// "Copy-of-VM-<name>". Disks are allocated as vm-<newid>-disk-N in sorted
// key order (on storage for a full clone, else where the source is); a
// linked clone of an LVM-thin base volume is a thin snapshot with the same
// naming. The cloud-init drive is always copied as vm-<newid>-cloudinit
// (size 4M); cdroms are copied as they are. Pending values of the source
// are discarded with a warning.
//
// The task holds the source's config file lock from its start to its end:
// shared, so clones of one template run in parallel as on PVE while a
// config write to the template waits; exclusive while the source runs,
// so a second clone of a running VM waits and fails after the lock
// timeout. Simplification: disk copies take the task's duration
// (CloneDuration) whatever their size.
func (s *Sim) postClone(q *request) response {
	newid, _ := strconv.Atoi(q.params["newid"])
	storage, format, snap := q.params["storage"], q.params["format"], q.params["snapname"]
	pool := q.params["pool"]
	if pool != "" && !s.poolExists(pool) {
		return fail(403, "Permission check failed (pool '%s' does not exist)", pool)
	}
	if storage != "" && !q.tok.has("/storage/"+storage, "Datastore.AllocateSpace") {
		return fail(403, "Permission check failed (/storage/%s, Datastore.AllocateSpace)", storage)
	}
	if t := q.params["target"]; t != "" && t != q.vars["node"] {
		return fail(500, "no such cluster node '%s'", t)
	}
	s.mu.Lock()
	src, resp, found := s.getGuestLocked(guest.QEMU, q)
	if !found {
		s.mu.Unlock()
		return resp
	}
	plan, err := s.clonePlanLocked(src, q, storage, format, snap)
	if err != nil {
		s.mu.Unlock()
		return syncError(err)
	}
	if _, taken := s.guests[newid]; taken {
		s.mu.Unlock()
		return fail(500, "unable to create VM %d: config file already exists", newid)
	}
	ng := newGuestState(newid, guest.QEMU)
	ng.node = q.vars["node"]
	ng.config["lock"] = "clone"
	s.guests[newid] = ng
	s.mu.Unlock()

	// qemu-server's worker locks the source's config file for the whole
	// clone, shared (exclusive while the source runs), waiting one second
	// (here a tenth of LockTimeout, which stands for PVE's usual 10s).
	sp := taskSpec{typ: "qmclone", op: "clone", g: ng, kind: guest.QEMU, vmid: src.vmid, q: q, dur: s.opts.CloneDuration,
		source: src, sourceExclusive: src.running, sourceWait: s.opts.LockTimeout / 10}
	sp.apply = func(r *taskRun) error {
		if s.guests[newid] != ng {
			return taskErrf("clone failed: unable to create VM %d: config file already exists", newid)
		}
		cfg := plan.base
		for _, key := range plan.drives {
			d := plan.src[key]
			vol, opts := splitVolume(guest.QEMU, d)
			sid, _, _ := strings.Cut(vol, ":")
			dst := sid
			if plan.full && storage != "" {
				dst = storage
			}
			if isCloudinitVolume(vol) {
				nv := fmt.Sprintf("%s:vm-%d-cloudinit", dst, newid)
				cfg[key] = setVolSize(strings.Join(append([]string{nv}, dropOpt(opts, "size")...), ","), cloudinitSize)
				continue
			}
			n := diskNumIn(cfg)
			st, _ := storageByID(dst)
			nv := fmt.Sprintf("%s:vm-%d-disk-%d", dst, newid, n)
			if st.typ == "dir" {
				f := format
				if f == "" {
					f = "qcow2"
				}
				nv = fmt.Sprintf("%s:%d/vm-%d-disk-%d.%s", dst, newid, newid, n, f)
			}
			if plan.full {
				r.logf("create full clone of drive %s (%s)", key, vol)
			} else {
				r.logf("create linked clone of drive %s (%s)", key, vol)
			}
			r.logf("  Logical volume \"%s\" created.", strings.TrimPrefix(nv, dst+":"))
			cfg[key] = strings.Join(append([]string{nv}, opts...), ",")
		}
		if len(plan.pending) > 0 {
			r.warnf("found pending changes for '%s', discarding for clone", strings.Join(plan.pending, ","))
		}
		ng.config = cfg
		ng.ciGen = cloneMap(src.ciGen) // clone_vm copies the [special:cloudinit] record as any other key
		if pool != "" {
			s.addToPoolLocked(pool, newid)
		}
		return nil
	}
	sp.abort = func(r *taskRun) {
		if s.guests[newid] == ng {
			delete(s.guests, newid)
		}
	}
	resp = s.taskResponse(sp)
	if resp.status != 200 {
		s.mu.Lock()
		if s.guests[newid] == ng {
			delete(s.guests, newid)
		}
		s.mu.Unlock()
	}
	return resp
}

// clonePlan is what clone_vm's load_and_check decides before the task.
type clonePlan struct {
	full    bool
	src     map[string]string // the config cloned from
	base    map[string]string // the new config without its disks
	drives  []string          // disk keys to clone, sorted
	pending []string          // source keys with pending values, discarded
}

// clonePlanLocked is clone_vm's load_and_check, with PVE's messages.
func (s *Sim) clonePlanLocked(src *guestState, q *request, storage, format, snap string) (clonePlan, error) {
	if err := checkLockField(src, false); err != nil {
		return clonePlan{}, err
	}
	conf := src.config
	if snap != "" {
		sn, ok := src.snapshots[snap]
		if !ok {
			return clonePlan{}, taskErrf("snapshot '%s' does not exist", snap)
		}
		conf = sn.config
	}
	p := clonePlan{full: conf["template"] != "1", src: conf, base: map[string]string{}}
	if q.has("full") {
		p.full = q.bool("full")
	}
	if storage != "" && !p.full {
		return clonePlan{}, taskErrf("parameter 'storage' not allowed for linked clones")
	}
	if format != "" && !p.full {
		return clonePlan{}, taskErrf("parameter 'format' not allowed for linked clones")
	}
	if storage != "" {
		st, ok := storageByID(storage)
		if !ok {
			return clonePlan{}, taskErrf("storage '%s' does not exist", storage)
		}
		if !containsStr(strings.Split(st.content, ","), "images") {
			return clonePlan{}, taskErrf("storage '%s' does not support vm images", storage)
		}
	}
	for _, key := range sortedKeys(conf) {
		v := conf[key]
		switch {
		case key == "parent" || key == "snaptime" || key == "vmstate" || key == "snapstate" || key == "template" || key == "lock":
		case unusedKeyRE.MatchString(key):
		case strings.HasPrefix(key, "net") && qemuNetRE.MatchString(v):
			model, rest, _ := strings.Cut(v, ",")
			model, _, _ = strings.Cut(model, "=")
			nv := model + "=" + s.randMACLocked()
			if rest != "" {
				nv += "," + rest
			}
			p.base[key] = nv
		case diskKeyRE.MatchString(key):
			vol, _ := splitVolume(guest.QEMU, v)
			ci := isCloudinitVolume(vol)
			if !ci && (strings.Contains(v, "media=cdrom") || vol == "none" || volumeOf(v) == "") {
				p.base[key] = v
				continue
			}
			if !p.full && !ci && !isBaseVolume(vol) {
				return clonePlan{}, taskErrf("Linked clone feature is not supported for drive '%s'", key)
			}
			p.drives = append(p.drives, key)
		default:
			p.base[key] = v
		}
	}
	p.base["smbios1"] = replaceUUID(p.base["smbios1"], s.uuidLocked())
	if p.base["vmgenid"] != "" {
		p.base["vmgenid"] = s.uuidLocked()
	}
	if n := q.params["name"]; n != "" {
		p.base["name"] = n
	} else if n := conf["name"]; n != "" {
		p.base["name"] = "Copy-of-VM-" + n
	} else {
		p.base["name"] = fmt.Sprintf("Copy-of-VM-%d", src.vmid)
	}
	if d := q.params["description"]; d != "" {
		p.base["description"] = d
	}
	if snap == "" {
		p.pending = sortedKeys(src.pending)
		for k := range src.pendingDel {
			if !containsStr(p.pending, k) {
				p.pending = append(p.pending, k)
			}
		}
		sort.Strings(p.pending)
	}
	return p, nil
}

// isBaseVolume reports whether vol is a template's base volume (LVM-thin
// base-<vmid>-..., directory <vmid>/base-<vmid>-...), the only kind
// storages can clone linked.
func isBaseVolume(vol string) bool {
	_, name, _ := strings.Cut(vol, ":")
	if _, rest, ok := strings.Cut(name, "/"); ok {
		name = rest
	}
	return strings.HasPrefix(name, "base-")
}

// diskNumIn is the lowest N for which no value of cfg names vm-*-disk-N.
func diskNumIn(cfg map[string]string) int {
	used := map[int]bool{}
	for _, v := range cfg {
		for _, m := range diskNumRE.FindAllStringSubmatch(v, -1) {
			n, _ := strconv.Atoi(m[1])
			used[n] = true
		}
	}
	n := 0
	for used[n] {
		n++
	}
	return n
}

func dropOpt(opts []string, name string) []string {
	var out []string
	for _, o := range opts {
		if !strings.HasPrefix(o, name+"=") {
			out = append(out, o)
		}
	}
	return out
}

// replaceUUID sets the uuid item of an smbios1 property string.
func replaceUUID(sm, uuid string) string {
	var items []string
	for _, it := range strings.Split(sm, ",") {
		if it != "" && !strings.HasPrefix(it, "uuid=") {
			items = append(items, it)
		}
	}
	return strings.Join(append([]string{"uuid=" + uuid}, items...), ",")
}

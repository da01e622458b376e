package sim

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/guest"
)

// postCloneCT is pve-container's clone_vm (task vzclone, its id the source
// vmid). As PVE, before the task starts: the pool must exist; a target
// other than this node must be a cluster node and needs shared storage; a
// storage must exist. Then the source is locked (set_lock 'disk': a
// source with any lock is refused, "CT is locked (…)") and the new id
// taken ("CT N already exists on node …", the source unlocked again); the
// source's mount points are checked: a full clone (the default except from
// a template) of a running container needs a snapshot, a linked clone
// needs each volume to be a template's base volume on a storage that can
// clone it (LVM-thin, ZFS), storage is refused for a linked clone, a bind
// or device mount point cannot be cloned, and the token needs
// Datastore.AllocateSpace where each volume goes. Any refusal unlocks the
// source and frees the id. The new container exists at once with lock
// "create" and the source's config but its mount points, netN with new
// MACs, no template, snapshot fields or unusedN, hostname and
// description from the parameters if given (else the source's).
//
// The task allocates each mount point (rootfs first, then mpN by number)
// as vm-<newid>-disk-N on the target storage (full, of the source
// volume's real size; the source's storage without storage) or on the
// base volume's storage (linked), adds the
// container to the pool, and drops both locks. The source stays locked
// (lock: disk) for the whole task, so clones of one template run one at a
// time; a failed task frees the new container and unlocks the source.
func (s *Sim) postCloneCT(q *request) response {
	newid, _ := strconv.Atoi(q.params["newid"])
	node := q.vars["node"]
	storage, pool := q.params["storage"], q.params["pool"]
	if pool != "" && !s.poolExists(pool) {
		return fail(403, "Permission check failed (pool '%s' does not exist)", pool)
	}
	target := q.params["target"]
	if target == node || target == "localhost" {
		target = ""
	}
	if target != "" && !s.isNode(target) {
		return fail(500, "no such cluster node '%s'", target)
	}
	var st storageDef
	if storage != "" {
		var ok bool
		if st, ok = storageByID(storage); !ok {
			return fail(500, "storage '%s' does not exist", storage)
		}
		if target != "" && st.shared == 0 {
			return fail(500, "can't clone to non-shared storage '%s'", storage)
		}
	}

	s.mu.Lock()
	src, resp, found := s.getGuestLocked(guest.LXC, q)
	if !found {
		s.mu.Unlock()
		return resp
	}
	if err := checkLockField(src, false); err != nil {
		s.mu.Unlock()
		return syncError(err)
	}
	if other, taken := s.guests[newid]; taken {
		s.mu.Unlock()
		return fail(500, "%s %d already exists on node '%s'", kindWord(other.kind), newid, other.node)
	}
	plan, err := s.cloneCTPlanLocked(src, q, target)
	if err != nil {
		s.mu.Unlock()
		if e, ok := err.(permError); ok {
			return fail(403, "%s", string(e))
		}
		return syncError(err)
	}
	src.config["lock"] = "disk"
	ng := newGuestState(newid, guest.LXC)
	ng.node = node
	ng.config = plan.base
	ng.config["lock"] = "create"
	s.guests[newid] = ng
	s.mu.Unlock()

	unlockSource := func() {
		if s.guests[src.vmid] == src && src.config["lock"] == "disk" {
			delete(src.config, "lock")
		}
	}
	sp := taskSpec{typ: "vzclone", op: "clone", g: ng, kind: guest.LXC, vmid: src.vmid, q: q, dur: s.opts.CloneDuration}
	sp.apply = func(r *taskRun) error {
		if s.guests[newid] != ng {
			return taskErrf("clone failed: CT %d already exists", newid)
		}
		for _, key := range plan.mounts {
			vol, opts := splitVolume(guest.LXC, plan.src[key])
			sid, _, _ := strings.Cut(vol, ":")
			dst := sid
			if plan.full && storage != "" {
				dst = storage
			}
			n := diskNumIn(ng.config)
			nv := fmt.Sprintf("%s:vm-%d-disk-%d", dst, newid, n)
			if d, _ := storageByID(dst); d.typ == "dir" {
				nv = fmt.Sprintf("%s:%d/vm-%d-disk-%d.raw", dst, newid, newid, n)
			}
			if plan.full {
				r.logf("create full clone of mountpoint %s (%s)", key, vol)
			} else {
				r.logf("create linked clone of mount point %s (%s)", key, vol)
			}
			v := strings.Join(append([]string{nv}, opts...), ",")
			if n, ok := s.volumeSizeLocked(vol); ok && n > 0 && plan.full {
				// copy_volume allocates the source volume's real size and
				// writes it as the new mount point's size.
				v = setVolSize(v, n)
			}
			ng.config[key] = v
		}
		if pool != "" {
			s.addToPoolLocked(pool, newid)
		}
		delete(ng.config, "lock")
		unlockSource()
		return nil
	}
	sp.abort = func(r *taskRun) {
		unlockSource()
		if s.guests[newid] == ng {
			delete(s.guests, newid)
		}
	}
	resp = s.taskResponse(sp)
	if resp.status != 200 {
		s.mu.Lock()
		unlockSource()
		if s.guests[newid] == ng {
			delete(s.guests, newid)
		}
		s.mu.Unlock()
	}
	return resp
}

// permError is a refusal PVE answers with 403.
type permError string

func (e permError) Error() string { return string(e) }

// cloneCTPlan is what pve-container's clone_vm decides before its task.
type cloneCTPlan struct {
	full   bool
	src    map[string]string // the config cloned from
	base   map[string]string // the new config without its mount points
	mounts []string          // rootfs, then mpN by number
}

// linkedCloneTypes are the storage types the simulator models that can
// clone a template's base volume linked for a container (the LVM-thin and
// ZFS plugins' clone feature; a directory's linked clone would be qcow2,
// which a container cannot use).
var linkedCloneTypes = []string{"lvmthin", "zfspool"}

// cloneCTPlanLocked is the part of clone_vm between set_lock and the
// task, with PVE's messages.
func (s *Sim) cloneCTPlanLocked(src *guestState, q *request, target string) (cloneCTPlan, error) {
	storage, snap := q.params["storage"], q.params["snapname"]
	p := cloneCTPlan{full: src.config["template"] != "1", base: map[string]string{}}
	if q.has("full") {
		p.full = q.bool("full")
	}
	if storage != "" && !p.full {
		return p, taskErrf("parameter 'storage' not allowed for linked clones")
	}
	conf := src.config
	if snap != "" {
		sn, ok := src.snapshots[snap]
		if !ok {
			return p, taskErrf("snapshot '%s' does not exist", snap)
		}
		conf = sn.config
	}
	p.src = conf
	shared := true
	for _, key := range sortedKeys(conf) {
		v := conf[key]
		switch {
		case unusedKeyRE.MatchString(key):
		case lxcVolKeyRE.MatchString(key):
			vol, _ := splitVolume(guest.LXC, v)
			sid, _, isVol := strings.Cut(vol, ":")
			if strings.HasPrefix(vol, "/") || !isVol {
				typ := "bind"
				if strings.HasPrefix(vol, "/dev/") {
					typ = "device"
				}
				return p, taskErrf("unable to clone mountpoint '%s' (type %s)", key, typ)
			}
			if storage != "" {
				sid = storage
			}
			if d, _ := storageByID(sid); d.shared == 0 {
				shared = false
			}
			if !q.tok.has("/storage/"+sid, "Datastore.AllocateSpace") {
				return p, permError(fmt.Sprintf("Permission check failed (/storage/%s, Datastore.AllocateSpace)", sid))
			}
			if p.full {
				if src.running && snap == "" {
					return p, taskErrf("Cannot do full clones on a running container without snapshots")
				}
			} else {
				d, _ := storageByID(sid)
				if !isBaseVolume(vol) || !slices.Contains(linkedCloneTypes, d.typ) {
					return p, taskErrf("Linked clone feature for '%s' is not available", vol)
				}
			}
			p.mounts = append(p.mounts, key)
		case lxcNetKeyRE.MatchString(key):
			p.base[key] = replaceHwaddr(v, s.randMACLocked())
		case key == "parent" || key == "snaptime" || key == "snapstate" || key == "template" || key == "lock":
		default:
			p.base[key] = v
		}
	}
	if target != "" && !shared {
		return p, taskErrf("can't clone CT to node '%s' (CT uses local storage)", target)
	}
	slices.SortFunc(p.mounts, func(a, b string) int {
		return mountOrder(a) - mountOrder(b)
	})
	if h := q.params["hostname"]; h != "" {
		p.base["hostname"] = h
	}
	if d := q.params["description"]; d != "" {
		p.base["description"] = d
	}
	return p, nil
}

// mountOrder sorts rootfs before mp0, mp1, … mp255.
func mountOrder(key string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(key, "mp"))
	if key == "rootfs" || err != nil {
		return -1
	}
	return n
}

// replaceHwaddr sets the hwaddr item of an LXC netN value (clone_vm always
// gives the clone a new MAC).
func replaceHwaddr(v, mac string) string {
	items := strings.Split(v, ",")
	for i, it := range items {
		if strings.HasPrefix(it, "hwaddr=") {
			items[i] = "hwaddr=" + mac
			return strings.Join(items, ",")
		}
	}
	return v + ",hwaddr=" + mac
}

var lxcNetKeyRE = regexp.MustCompile(`^net\d+$`)

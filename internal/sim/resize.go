package sim

// Disk sizes, config writes of drives and PUT …/resize, as PVE 9 does them
// (qemu-server src/PVE/API2/Qemu.pm create_disks and resize_vm;
// pve-container src/PVE/LXC/Config.pm update_pct_config and
// apply_pending_mountpoint, src/PVE/API2/LXC.pm resize_vm).
//
// A drive's size= in a config is informational (SCHEMA): the volume on
// the storage has its own, real size. A config write never resizes a
// volume:
//
//   - QEMU: create_disks reads the real size of every existing volume a
//     drive names (volume_size_info) and stores that, whatever size= the
//     write said.
//   - LXC mpN: apply_pending_mountpoint rescans the volume's size the same
//     way.
//   - LXC rootfs: the written string is stored as is, size= included, so
//     the config can then claim a size the volume does not have.
//
// Only resize grows a volume and rewrites the drive's size=. The simulator
// keeps the real size of a volume in guestState.realSize once the config
// may disagree with it; otherwise the config's size= is the real size.

import (
	"errors"
	"regexp"
	"sort"
	"strings"

	"github.com/steward-pve/steward/internal/guest"
)

// VolumeSize returns the real size in bytes of storage volume volid (as
// "local-lvm:vm-101-disk-0"), which can differ from the size= a config
// claims: a config write does not resize a volume, only PUT …/resize
// does. ok is false when no guest of the node has the volume (size is 0
// when one has it without a known size).
func (s *Sim) VolumeSize(volid string) (size int64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.volumeSizeLocked(volid)
}

// realVolumeSize is the real size of g's volume volid: recorded in
// realSize, else the size= of the first config value (current config,
// then snapshots by name) that names it, else the size it had when it was
// detached to unusedN.
func (g *guestState) realVolumeSize(volid string) (int64, bool) {
	if n, ok := g.realSize[volid]; ok {
		return n, true
	}
	if n, ok := sizeIn(g.config, volid); ok {
		return n, true
	}
	names := make([]string, 0, len(g.snapshots))
	for name := range g.snapshots {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if n, ok := sizeIn(g.snapshots[name].config, volid); ok {
			return n, true
		}
	}
	if n, ok := g.unusedSize[volid]; ok {
		return n, true
	}
	return 0, false
}

// sizeIn is the size= of the value in cfg (in key order) that names volid.
func sizeIn(cfg map[string]string, volid string) (int64, bool) {
	for _, k := range sortedKeys(cfg) {
		v := cfg[k]
		if driveVolid(v) == volid && sizeOptRE.MatchString(v) {
			return volSize(v), true
		}
	}
	return 0, false
}

func (g *guestState) setRealSize(volid string, n int64) {
	if g.realSize == nil {
		g.realSize = map[string]int64{}
	}
	g.realSize[volid] = n
}

// driveVolid is the first element of a drive or mount-point value (the
// volume, "none", "cdrom" or a host path), without a file= or volume= key.
func driveVolid(v string) string {
	first, _, _ := strings.Cut(v, ",")
	first = strings.TrimPrefix(first, "file=")
	return strings.TrimPrefix(first, "volume=")
}

// storedDriveValue is what a config write that sets volume key of g to
// written stores, allocated being written after allocVolume (the new
// volume's id and size for "STORAGE:SIZE"). It is called before g.config
// is changed. See the file comment for PVE's rules.
func (g *guestState) storedDriveValue(key, written, allocated string) string {
	vol := volumeOf(allocated)
	if vol == "" {
		return allocated // cdrom, none, bind mount: no volume to measure
	}
	if vol != volumeOf(written) {
		// A new allocation: the config's size= is the new volume's size,
		// whatever an earlier volume of the same name measured.
		delete(g.realSize, vol)
		return allocated
	}
	n, known := g.realVolumeSize(vol)
	if !known {
		return allocated
	}
	if g.kind == guest.LXC && key == "rootfs" {
		g.setRealSize(vol, n) // the stored size= may now disagree
		return allocated
	}
	return setVolSize(allocated, n)
}

var (
	resizeRE   = regexp.MustCompile(`^(\+?)(\d+(?:\.\d+)?)([KMGT]?)$`)
	storeVolRE = regexp.MustCompile(`^(?i:[a-z][a-z0-9\-_.]*[a-z0-9]):.+$`) // PVE::Storage::parse_volume_id
)

// resizeFormatError is pve-container's answer for a mount point key that
// is not in the config: parse_property_string of an empty value.
type resizeFormatError struct{ errs map[string]string }

func (e resizeFormatError) Error() string { return "format error" }

// putResize is PUT …/resize (task type "resize" for both kinds). QEMU
// checks everything in the worker: a refused resize is a failed task, and
// a resize to the current size is a task that changes nothing. LXC checks
// before it forks as well: a refused resize is the HTTP answer (500), and
// so is a resize to the current size ("disk is already at specified
// size").
func (s *Sim) putResize(k guest.Kind, q *request) response {
	if r, okS := checkSkiplock(q); !okS {
		return r
	}
	sp, resp, found := s.guestTask(k, q, "resize", "resize")
	if !found {
		return resp
	}
	g := sp.g
	if k == guest.LXC {
		s.mu.Lock()
		_, err := s.resizeTargetLocked(g, q)
		s.mu.Unlock()
		if err != nil {
			var fe resizeFormatError
			if strings.HasPrefix(err.Error(), "Permission check failed") {
				return fail(403, "%s", err.Error()) // pve-container checks before forking its worker
			}
			if errors.As(err, &fe) {
				r := fail(500, "%s", fe.Error())
				r.errors = fe.errs
				return r
			}
			return syncError(err)
		}
	}
	sp.apply = func(r *taskRun) error {
		if err := s.goneLocked(g); err != nil {
			return err
		}
		t, err := s.resizeTargetLocked(g, q)
		if err != nil || t.newSize == t.oldSize {
			return err
		}
		disk := q.params["disk"]
		r.logf("Size of logical volume %s changed from %s to %s.", t.vol, formatSize(t.oldSize), formatSize(t.newSize))
		g.setRealSize(t.vol, t.newSize)
		g.config[disk] = setVolSize(g.config[disk], t.newSize)
		return nil
	}
	return s.taskResponse(sp)
}

type resizeTarget struct {
	vol              string
	oldSize, newSize int64
}

// resizeTargetLocked makes PVE's checks of a resize of g (Sim.mu held) in
// each kind's order and returns the volume with its real and new size.
func (s *Sim) resizeTargetLocked(g *guestState, q *request) (resizeTarget, error) {
	disk, size := q.params["disk"], q.params["size"]
	digest := q.params["digest"]
	if g.kind == guest.QEMU {
		if digest != "" && digest != g.digest() {
			return resizeTarget{}, taskErrf("checksum mismatch (file change by other user?)")
		}
		if err := checkLockField(g, q.bool("skiplock")); err != nil {
			return resizeTarget{}, err
		}
	} else {
		if err := checkLockField(g, false); err != nil {
			return resizeTarget{}, err
		}
		if digest != "" && digest != g.digest() {
			return resizeTarget{}, taskErrf("detected modified configuration - file changed by other user? Try again.")
		}
	}
	val, present := g.config[disk]
	if !present {
		if g.kind == guest.LXC {
			errs := map[string]string{"volume": "property is missing and it is not optional"}
			if disk != "rootfs" {
				errs["mp"] = "property is missing and it is not optional"
			}
			return resizeTarget{}, resizeFormatError{errs}
		}
		return resizeTarget{}, taskErrf("disk '%s' does not exist", disk)
	}
	volid := driveVolid(val)
	if !storeVolRE.MatchString(volid) {
		return resizeTarget{}, taskErrf("unable to parse volume ID '%s'", volid)
	}
	if g.kind == guest.QEMU && strings.Contains(val, "media=cdrom") {
		return resizeTarget{}, taskErrf("you can't resize a cdrom")
	}
	// Both resize_vm handlers check the volume's storage before sizing it.
	if st, _, _ := strings.Cut(volid, ":"); !q.tok.has("/storage/"+st, "Datastore.AllocateSpace") {
		return resizeTarget{}, permDenied("/storage/"+st, "Datastore.AllocateSpace")
	}
	cur, known := g.realVolumeSize(volid)
	if !known {
		return resizeTarget{}, taskErrf("Could not determine current size of volume '%s'", volid)
	}
	m := resizeRE.FindStringSubmatch(size)
	if m == nil { // the schema's pattern refuses it before the handler runs
		return resizeTarget{}, taskErrf("invalid size string")
	}
	n, _ := parseSize(m[2] + m[3])
	if m[1] == "+" {
		n += cur
	}
	switch {
	case n < cur && g.kind == guest.LXC:
		return resizeTarget{}, taskErrf("unable to shrink disk size")
	case n < cur:
		return resizeTarget{}, taskErrf("shrinking disks is not supported")
	case n == cur && g.kind == guest.LXC:
		return resizeTarget{}, taskErrf("disk is already at specified size")
	}
	return resizeTarget{vol: volid, oldSize: cur, newSize: n}, nil
}

// newDiskRE is qemu-server's NEW_DISK_RE: a drive value that allocates a
// new volume, "STORAGE:SIZE" (STORAGE optional: the default storage).
var newDiskRE = regexp.MustCompile(`^(([^:\s]+):)?(\d+(\.\d+)?)$`)

// checkNewDiskSpace is check_storage_access (qemu-server) and
// check_ct_modify_config_perm's volume check (pve-container) for the
// volumes a create or config write allocates: Datastore.AllocateSpace on
// /storage/<id> for every "STORAGE:SIZE" value, in key order, answered
// with PVE's 403 before anything runs. def is the storage a value
// without one allocates on.
func checkNewDiskSpace(k guest.Kind, tok *token, set map[string]string, def string) (response, bool) {
	for _, key := range sortedKeys(set) {
		if !isVolumeKey(k, key) {
			continue
		}
		m := newDiskRE.FindStringSubmatch(driveVolid(set[key]))
		if m == nil {
			continue
		}
		st := m[2]
		if st == "" {
			st = def
		}
		if st != "" && !tok.has("/storage/"+st, "Datastore.AllocateSpace") {
			return fail(403, "Permission check failed (/storage/%s, Datastore.AllocateSpace)", st), false
		}
	}
	return response{}, true
}

// permDenied is the text of raise_perm_exc for priv on path: a 403 in a
// synchronous handler, a task's exit status inside a worker.
func permDenied(path, priv string) error {
	return taskErrf("Permission check failed (%s, %s)", path, priv)
}

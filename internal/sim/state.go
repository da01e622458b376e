package sim

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/steward-pve/steward/internal/guest"
)

type snapshot struct {
	name        string
	parent      string
	description string
	snaptime    int64
	vmstate     bool
	running     bool
	config      map[string]string
}

type guestState struct {
	vmid int
	node string // the cluster node whose directory holds the config
	// ha is the state HA is asked to keep the guest in ("started", ...;
	// "" = not under HA) and haMoving "migrate" or "relocate" while HA
	// moves it (cluster.go).
	ha, haMoving   string
	kind           guest.Kind
	running        bool
	startedAt      time.Time
	ignoreShutdown bool
	config         map[string]string // raw, current; "lock" and "parent" live here as in the file
	snapshots      map[string]*snapshot
	// unusedSize remembers the size of a volume detached to unusedN (whose
	// config line carries no size), for the storage content endpoint.
	unusedSize map[string]int64
	// realSize holds the real size of a volume of this guest where it may
	// differ from the size= its config records (see resize.go).
	realSize map[string]int64
	// pending is the [PENDING] section: values waiting for a restart, and
	// keys whose delete waits (1, or 2 when forced). See pending.go.
	pending    map[string]string
	pendingDel map[string]int
	// ciGen is the [special:cloudinit] section: the cloud-init state the
	// drive was last generated from; nil if never (cloudinit.go).
	ciGen map[string]string

	// flock is the config file lock (flock on /var/lock/qemu-server/lock-<vmid>.conf);
	// a token in the channel means it is held, exclusively or by the
	// shared holders counted in shared. Never guarded by Sim.mu.
	flock chan struct{}
	// sharedMu guards shared, the holders of flock in shared mode
	// (qemu-server's lock_config_shared); the first takes the token, the
	// last gives it back.
	sharedMu sync.Mutex
	shared   int
}

func newGuestState(vmid int, k guest.Kind) *guestState {
	return &guestState{vmid: vmid, kind: k, config: map[string]string{}, snapshots: map[string]*snapshot{},
		unusedSize: map[string]int64{}, pending: map[string]string{}, pendingDel: map[string]int{}, flock: make(chan struct{}, 1)}
}

func nameKey(k guest.Kind) string {
	if k == guest.LXC {
		return "hostname"
	}
	return "name"
}

// lockFile is the flock path PVE reports in "can't lock file" errors.
func lockFile(k guest.Kind, vmid int) string {
	if k == guest.LXC {
		return fmt.Sprintf("/run/lock/lxc/pve-config-%d.lock", vmid)
	}
	return fmt.Sprintf("/var/lock/qemu-server/lock-%d.conf", vmid)
}

func confPath(node string, k guest.Kind, vmid int) string {
	if k == guest.LXC {
		return fmt.Sprintf("nodes/%s/lxc/%d.conf", node, vmid)
	}
	return fmt.Sprintf("nodes/%s/qemu-server/%d.conf", node, vmid)
}

// lockTimeoutError is PVE's lock_file_full message.
func lockTimeoutError(k guest.Kind, vmid int) string {
	return fmt.Sprintf("can't lock file '%s' - got timeout", lockFile(k, vmid))
}

// acquire takes the config file lock, waiting up to d. It reports false on
// timeout or when ctx ends.
func (g *guestState) acquire(ctx context.Context, d time.Duration) bool {
	select {
	case g.flock <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case g.flock <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (g *guestState) release() { <-g.flock }

// acquireShared takes the config file lock in shared mode (flock LOCK_SH),
// waiting up to d: other shared holders may hold it too, an exclusive
// holder may not. As flock, a waiting exclusive request does not hold
// back new shared ones. It reports false on timeout or when ctx ends.
func (g *guestState) acquireShared(ctx context.Context, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		g.sharedMu.Lock()
		if g.shared > 0 {
			g.shared++
			g.sharedMu.Unlock()
			return true
		}
		select {
		case g.flock <- struct{}{}:
			g.shared = 1
			g.sharedMu.Unlock()
			return true
		default:
		}
		g.sharedMu.Unlock()
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		t := time.NewTimer(min(left, 2*time.Millisecond))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
	}
}

// releaseShared gives back a shared hold of the config file lock.
func (g *guestState) releaseShared() {
	g.sharedMu.Lock()
	defer g.sharedMu.Unlock()
	if g.shared--; g.shared == 0 {
		<-g.flock
	}
}

// encodeText is PVE's ParseUtils::encode_text for a description line.
func encodeText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '%' || c == ':' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func descLines(d string) []string {
	d = strings.TrimRight(d, "\n")
	if d == "" {
		return nil
	}
	return strings.Split(d, "\n")
}

func renderSection(b *strings.Builder, cfg map[string]string) {
	for _, l := range descLines(cfg["description"]) {
		b.WriteString("#" + encodeText(l) + "\n")
	}
	for _, k := range sortedKeys(cfg) {
		if k == "description" {
			continue
		}
		b.WriteString(k + ": " + cfg[k] + "\n")
	}
}

// render is the config file text; digest is its SHA-1, as PVE computes it
// over the raw file including the pending and snapshot sections.
func (g *guestState) render() string {
	var b strings.Builder
	renderSection(&b, g.config)
	g.renderPending(&b)
	g.renderCloudinit(&b)
	for _, name := range sortedKeys(g.snapshots) {
		sn := g.snapshots[name]
		b.WriteString("\n[" + name + "]\n")
		c := cloneMap(sn.config)
		delete(c, "description")
		if sn.description != "" {
			c["description"] = sn.description
		}
		if sn.parent != "" {
			c["parent"] = sn.parent
		}
		c["snaptime"] = strconv.FormatInt(sn.snaptime, 10)
		if g.kind == guest.QEMU && sn.vmstate {
			c["vmstate"] = "1"
		}
		renderSection(&b, c)
	}
	return b.String()
}

func (g *guestState) digest() string {
	h := sha1.Sum([]byte(g.render()))
	return hex.EncodeToString(h[:])
}

// readDescription is the description as each kind's parser returns it:
// QEMU strips trailing whitespace, LXC keeps one "\n" per comment line.
func readDescription(k guest.Kind, d string) string {
	lines := descLines(d)
	if len(lines) == 0 {
		return ""
	}
	if k == guest.LXC {
		return strings.Join(lines, "\n") + "\n"
	}
	return strings.TrimRight(strings.Join(lines, "\n"), " \t\r\n")
}

// Config keys whose GET …/config return type is integer, number or boolean
// (everything else is a string, including QEMU's property-string memory).
// TestConfigKeyTypesMatchSchema holds these to apidata.json.
var (
	qemuNumericKeys = map[string]string{
		"acpi": "boolean", "allow-ksm": "boolean", "autostart": "boolean", "balloon": "integer",
		"ciupgrade": "boolean", "cores": "integer", "cpulimit": "number", "cpuunits": "integer",
		"freeze": "boolean", "keephugepages": "boolean", "kvm": "boolean", "localtime": "boolean",
		"migrate_downtime": "number", "migrate_speed": "integer", "numa": "boolean", "onboot": "boolean",
		"protection": "boolean", "reboot": "boolean", "shares": "integer", "smp": "integer",
		"snaptime": "integer", "sockets": "integer", "tablet": "boolean", "tdf": "boolean",
		"template": "boolean", "vcpus": "integer",
	}
	lxcNumericKeys = map[string]string{
		"console": "boolean", "cores": "integer", "cpulimit": "number", "cpuunits": "integer",
		"debug": "boolean", "memory": "integer", "onboot": "boolean", "protection": "boolean",
		"swap": "integer", "template": "boolean", "tty": "integer", "unprivileged": "boolean",
	}
)

// jsonValue gives a raw config value its wire JSON type.
func jsonValue(k guest.Kind, key, v string) any {
	tbl := qemuNumericKeys
	if k == guest.LXC {
		tbl = lxcNumericKeys
	}
	if _, ok := tbl[key]; ok {
		if _, err := strconv.ParseFloat(v, 64); err == nil {
			return json.Number(v)
		}
	}
	return v
}

// configJSON is the GET …/config data object.
func configJSON(k guest.Kind, cfg map[string]string, digest string) map[string]any {
	out := make(map[string]any, len(cfg)+1)
	for key, v := range cfg {
		if key == "description" {
			out[key] = readDescription(k, v)
			continue
		}
		out[key] = jsonValue(k, key, v)
	}
	if digest != "" {
		out["digest"] = digest
	}
	return out
}

var (
	diskKeyRE    = regexp.MustCompile(`^(scsi|virtio|sata|ide)\d+$|^(efidisk0|tpmstate0)$`)
	lxcVolKeyRE  = regexp.MustCompile(`^(rootfs|mp\d+)$`)
	unusedKeyRE  = regexp.MustCompile(`^unused\d+$`)
	sizeOptRE    = regexp.MustCompile(`(^|,)size=([0-9]+(?:\.[0-9]+)?[KMGT]?)(,|$)`)
	newVolRE     = regexp.MustCompile(`^([a-zA-Z][a-zA-Z0-9\-_.]*):(\d+(?:\.\d+)?)$`)
	diskNumRE    = regexp.MustCompile(`vm-\d+-disk-(\d+)`)
	qemuNetRE    = regexp.MustCompile(`^(virtio|e1000|e1000e|rtl8139|vmxnet3)(=[0-9A-Fa-f:]{17})?(,.*)?$`)
	macKeyPrefix = "BC:24:11"
)

// isVolumeKey reports whether key holds a guest volume.
func isVolumeKey(k guest.Kind, key string) bool {
	if k == guest.LXC {
		return lxcVolKeyRE.MatchString(key)
	}
	return diskKeyRE.MatchString(key)
}

// volumeOf returns the storage volume id of a drive/mount-point value, or
// "" for cdroms, "none" and bind mounts.
func volumeOf(v string) string {
	first, _, _ := strings.Cut(v, ",")
	first = strings.TrimPrefix(first, "file=")
	first = strings.TrimPrefix(first, "volume=")
	if strings.Contains(v, "media=cdrom") || first == "none" || first == "cdrom" || strings.HasPrefix(first, "/") || !strings.Contains(first, ":") {
		return ""
	}
	return first
}

// parseSize parses "32G", "2252M", "380K", "1024" into bytes.
func parseSize(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	mult := float64(1)
	switch s[len(s)-1] {
	case 'K':
		mult = 1 << 10
	case 'M':
		mult = 1 << 20
	case 'G':
		mult = 1 << 30
	case 'T':
		mult = 1 << 40
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0, false
	}
	return int64(f * mult), true
}

// formatSize prints bytes in the largest unit that divides exactly, as
// PVE's JSONSchema::format_size.
func formatSize(b int64) string {
	for _, u := range []struct {
		s string
		n int64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if b != 0 && b%u.n == 0 {
			return strconv.FormatInt(b/u.n, 10) + u.s
		}
	}
	return strconv.FormatInt(b, 10)
}

func volSize(v string) int64 {
	m := sizeOptRE.FindStringSubmatch(v)
	if m == nil {
		return 0
	}
	n, _ := parseSize(m[2])
	return n
}

func setVolSize(v string, b int64) string {
	if sizeOptRE.MatchString(v) {
		return sizeOptRE.ReplaceAllString(v, "${1}size="+formatSize(b)+"${3}")
	}
	return v + ",size=" + formatSize(b)
}

// nextDiskNum is one more than the highest vm-<vmid>-disk-N in the config
// or its snapshots.
func (g *guestState) nextDiskNum() int {
	n := 0
	scan := func(c map[string]string) {
		for _, v := range c {
			for _, m := range diskNumRE.FindAllStringSubmatch(v, -1) {
				if i, _ := strconv.Atoi(m[1]); i+1 > n {
					n = i + 1
				}
			}
		}
	}
	scan(g.config)
	scan(g.pending)
	for _, sn := range g.snapshots {
		scan(sn.config)
	}
	return n
}

// propKeyRE is a "key=" item of a PVE property string (JSONSchema
// parse_property_string); an item without it is the default key's value.
var propKeyRE = regexp.MustCompile(`^[a-z][a-z_\-]*\d*=`)

// splitVolume splits a drive (QEMU) or mount point (LXC) property string
// into the value of its default key and its other items, in order. The
// default key is "file" for drives and "volume" for rootfs/mpN; as PVE's
// parser, it may be given bare or by name, anywhere in the list.
func splitVolume(k guest.Kind, v string) (vol string, opts []string) {
	named := "file="
	if k == guest.LXC {
		named = "volume="
	}
	for _, item := range strings.Split(v, ",") {
		switch {
		case vol == "" && strings.HasPrefix(item, named):
			vol = item[len(named):]
		case vol == "" && !propKeyRE.MatchString(item):
			vol = item
		default:
			opts = append(opts, item)
		}
	}
	return vol, opts
}

// allocVolume turns "STORAGE:SIZE_GiB[,opts]" (the volume given bare or
// as file=/volume=) into an allocated volume string, as PVE does on
// create/update. Like PVE's print_drive, the stored string names the
// volume first and bare; its other options keep their order.
func (g *guestState) allocVolume(key, v string) string {
	first, opts := splitVolume(g.kind, v)
	if first == "" {
		return v
	}
	rest := strings.Join(opts, ",")
	if sid, ok := strings.CutSuffix(first, ":cloudinit"); ok && g.kind == guest.QEMU && newVolRE.MatchString(sid+":1") {
		// create_disks: STORAGE:cloudinit allocates vm-<vmid>-cloudinit as a cdrom.
		out := fmt.Sprintf("%s:vm-%d-cloudinit", sid, g.vmid)
		if !strings.Contains(","+rest+",", ",media=cdrom,") {
			opts = append(opts, "media=cdrom")
		}
		return strings.Join(append([]string{out}, opts...), ",")
	}
	m := newVolRE.FindStringSubmatch(first)
	if m == nil {
		if rest == "" {
			return first
		}
		return first + "," + rest
	}
	gib, _ := strconv.ParseFloat(m[2], 64)
	size := int64(gib * (1 << 30))
	n := g.nextDiskNum()
	var vol string
	if st, ok := storageByID(m[1]); ok && st.typ == "dir" {
		ext := ".raw"
		if g.kind == guest.QEMU {
			ext = ".qcow2"
		}
		vol = fmt.Sprintf("%s:%d/vm-%d-disk-%d%s", m[1], g.vmid, g.vmid, n, ext)
	} else {
		vol = fmt.Sprintf("%s:vm-%d-disk-%d", m[1], g.vmid, n)
		if g.kind == guest.LXC && strings.HasPrefix(m[1], "local-zfs") {
			vol = fmt.Sprintf("%s:subvol-%d-disk-%d", m[1], g.vmid, n)
		}
	}
	out := vol
	if rest != "" {
		out += "," + rest
	}
	return setVolSize(out, size)
}

// addUnused records volid as the lowest free unusedN; size (bytes, 0 if
// unknown) is the size it had while attached.
func (g *guestState) addUnused(volid string, size int64) {
	if size > 0 {
		g.unusedSize[volid] = size
	}
	for _, v := range g.config {
		if v == volid {
			return
		}
	}
	for i := 0; ; i++ {
		k := "unused" + strconv.Itoa(i)
		if _, ok := g.config[k]; !ok {
			g.config[k] = volid
			return
		}
	}
}

// memBytes is the configured memory in bytes (QEMU MiB, LXC MB; default 512).
func (g *guestState) memBytes() int64 {
	v := g.config["memory"]
	v = strings.TrimPrefix(v, "current=")
	v, _, _ = strings.Cut(v, ",")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		n = 512
	}
	return n << 20
}

func (g *guestState) swapBytes() int64 {
	n, err := strconv.ParseInt(g.config["swap"], 10, 64)
	if err != nil {
		n = 512
	}
	return n << 20
}

func (g *guestState) cpus() int {
	c, err := strconv.Atoi(g.config["cores"])
	if err != nil || c <= 0 {
		c = 1
	}
	if g.kind == guest.QEMU {
		s, err := strconv.Atoi(g.config["sockets"])
		if err != nil || s <= 0 {
			s = 1
		}
		c *= s
	}
	return c
}

// maxDisk is the boot disk size (QEMU) or rootfs size (LXC) in bytes.
func (g *guestState) maxDisk() int64 {
	if g.kind == guest.LXC {
		return volSize(g.config["rootfs"])
	}
	for _, p := range []string{"scsi", "virtio", "sata", "ide"} {
		for i := 0; i < 31; i++ {
			v, ok := g.config[p+strconv.Itoa(i)]
			if ok && volumeOf(v) != "" {
				return volSize(v)
			}
		}
	}
	return 0
}

func (g *guestState) name() string {
	if n := g.config[nameKey(g.kind)]; n != "" {
		return n
	}
	if g.kind == guest.LXC {
		return fmt.Sprintf("CT%d", g.vmid)
	}
	return fmt.Sprintf("VM %d", g.vmid)
}

func (s *Sim) randMACLocked() string {
	return fmt.Sprintf("%s:%02X:%02X:%02X", macKeyPrefix, s.rng.IntN(256), s.rng.IntN(256), s.rng.IntN(256))
}

package normalize

import (
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/propstr"
)

// Row constructors. Defaults follow the PVE API schema (apidata.json,
// PUT .../config parameters) where it states one.

func boolRow(key, def string) Row {
	return Row{Key: key, Canon: canonBool, Default: def, WriteCanon: true}
}

func intRow(key, def string) Row {
	return Row{Key: key, Canon: canonInt, Default: def}
}

func numRow(key, def string) Row {
	return Row{Key: key, Canon: canonNumber, Default: def}
}

func descriptionRow() Row { return Row{Key: "description", Canon: canonDescription} }

func tagsRow() Row { return Row{Key: "tags", Canon: canonTags, WriteCanon: true} }

func propRow(key string, f *propFormat, def string) Row {
	f.compile()
	return Row{Key: key, Canon: f.canon, Match: f.match, Carry: f.carry, Default: def, format: f}
}

// canonBool maps PVE's and YAML's boolean spellings to "1"/"0".
func canonBool(v string) string {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		return "1"
	case "0", "false", "no", "off":
		return "0"
	}
	return strings.TrimSpace(v)
}

// canonInt writes an integral number in plain decimal ("02", "2.0", "+2"
// are "2"); anything else is returned trimmed.
func canonInt(v string) string {
	s := strings.TrimSpace(v)
	if isPlainInt(s) {
		return s
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return strconv.FormatInt(n, 10)
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return strconv.FormatInt(int64(f), 10)
	}
	return s
}

// isPlainInt reports whether s is already canonical decimal: no sign, no
// leading zero (except "0").
func isPlainInt(s string) bool {
	if s == "" || len(s) > 18 || (s[0] == '0' && len(s) > 1) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// canonNumber writes a number in shortest decimal ("0.50" is "0.5", "1.0"
// is "1"); anything else is returned trimmed.
func canonNumber(v string) string {
	s := strings.TrimSpace(v)
	if isPlainInt(s) {
		return s
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return s
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// canonDescription folds CRLF and CR to LF and drops trailing whitespace at
// the end of each line and of the text: QEMU strips trailing whitespace
// when it parses a config, LXC keeps a trailing newline, and editors add
// CRLF or trailing blanks that carry no meaning.
func canonDescription(v string) string {
	// Fast path (no allocation): no CR and no interior line with trailing
	// blanks, so trimming the end is all there is to do.
	simple := true
	for i := 0; i < len(v) && simple; i++ {
		switch v[i] {
		case '\r':
			simple = false
		case '\n':
			if i > 0 && isBlank(v[i-1]) && trimEnd(v[i:]) != "" {
				simple = false
			}
		}
	}
	if simple {
		return trimEnd(v)
	}
	v = strings.ReplaceAll(v, "\r\n", "\n")
	v = strings.ReplaceAll(v, "\r", "\n")
	lines := strings.Split(v, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t\v\f")
	}
	return strings.TrimRight(strings.Join(lines, "\n"), "\n")
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\v' || c == '\f' }

// trimEnd is strings.TrimRight(v, " \t\n\v\f") without building a
// cutset per call.
func trimEnd(v string) string {
	i := len(v)
	for i > 0 && (isBlank(v[i-1]) || v[i-1] == '\n') {
		i--
	}
	return v[:i]
}

// canonTags is the tag set sorted and de-duplicated, joined with ';' as PVE
// stores it. PVE accepts ';', ',' and whitespace as separators.
func canonTags(v string) string {
	if tagsCanonical(v) {
		return v
	}
	tags := strings.FieldsFunc(v, isTagSep)
	slices.Sort(tags)
	return strings.Join(slices.Compact(tags), ";")
}

func isTagSep(r rune) bool {
	return r == ';' || r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
}

// tagsCanonical reports whether v is already sorted, de-duplicated and
// joined with single ';' (as PVE returns tags), without allocating.
func tagsCanonical(v string) bool {
	prev := ""
	for i, rest := 0, v; rest != ""; i++ {
		t, r, more := strings.Cut(rest, ";")
		if t == "" || strings.IndexFunc(t, isTagSep) >= 0 || (i > 0 && t <= prev) || (more && r == "") {
			return false
		}
		prev, rest = t, r
	}
	return true
}

// Formats, from the PVE API schema's property-string formats.

var qemuNICModels = []string{"e1000", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "e1000e",
	"i82551", "i82557b", "i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "virtio", "vmxnet3"}

var qemuNet = &propFormat{
	defaultKey: "model",
	bools:      set("firewall", "link_down"),
	ints:       set("mtu", "queues", "tag"),
	upper:      set("macaddr"),
	defaults:   map[string]string{"firewall": "0", "link_down": "0"},
	optional:   set("macaddr"),
	modelKeys:  set(qemuNICModels...),
	modelValue: "macaddr",
}

var lxcNet = &propFormat{
	bools:    set("firewall", "link_down", "host-managed"),
	ints:     set("mtu", "tag"),
	upper:    set("hwaddr"),
	defaults: map[string]string{"firewall": "0", "link_down": "0", "host-managed": "0", "type": "veth"},
	optional: set("hwaddr"),
}

var qemuDrive = &propFormat{
	defaultKey: "file",
	aliases: map[string]string{"volume": "file", "bps_rd_length": "bps_rd_max_length",
		"bps_wr_length": "bps_wr_max_length", "iops_rd_length": "iops_rd_max_length",
		"iops_wr_length": "iops_wr_max_length"},
	bools: set("backup", "detect_zeroes", "iothread", "replicate", "ro", "scsiblock", "shared",
		"snapshot", "ssd", "pre-enrolled-keys", "ms-cert"),
	sizes:    set("size"),
	defaults: map[string]string{"media": "disk", "replicate": "1", "scsiblock": "0", "shared": "0"},
	optional: set("size"),
}

var lxcMount = &propFormat{
	defaultKey: "volume",
	bools:      set("acl", "backup", "quota", "replicate", "ro", "shared", "keepattrs"),
	sizes:      set("size"),
	defaults:   map[string]string{"replicate": "1", "shared": "0", "keepattrs": "0"},
	optional:   set("size"),
}

var qemuMemory = compiled(&propFormat{defaultKey: "current", ints: set("current")})

// canonQemuMemory writes memory as its plain MiB integer when only
// "current" is set ("current=4096" is "4096"), as PVE 7 returned it.
func canonQemuMemory(v string) string {
	if isPlainInt(v) {
		return v
	}
	var buf [4]propstr.Prop
	ps, ok := qemuMemory.parse(v, buf[:0])
	if ok && len(ps) == 1 && ps[0].Key == "current" {
		return canonInt(ps[0].Value)
	}
	return qemuMemory.canon(v)
}

var qemuAgent = &propFormat{
	defaultKey: "enabled",
	aliases:    map[string]string{"freeze-fs-on-backup": "freeze-fs", "guest-fsfreeze": "freeze-fs"},
	bools:      set("enabled", "freeze-fs", "fstrim_cloned_disks"),
	defaults:   map[string]string{"freeze-fs": "1", "fstrim_cloned_disks": "0", "type": "virtio"},
}

var startupOrder = &propFormat{defaultKey: "order", ints: set("order", "up", "down")}

var lxcFeatures = &propFormat{
	bools: set("force_rw_sys", "fuse", "keyctl", "mknod", "nesting"),
	defaults: map[string]string{"force_rw_sys": "0", "fuse": "0", "keyctl": "0", "mknod": "0",
		"nesting": "0"},
}

// plainProps is a property string whose option order carries no meaning.
func plainProps(defaultKey string, bools ...string) *propFormat {
	return &propFormat{defaultKey: defaultKey, bools: set(bools...)}
}

var qemuTable = NewTable(
	descriptionRow(),
	tagsRow(),
	boolRow("acpi", "1"),
	boolRow("allow-ksm", "1"),
	boolRow("autostart", "0"),
	boolRow("ciupgrade", "1"),
	boolRow("freeze", ""),
	boolRow("keephugepages", "0"),
	boolRow("kvm", "1"),
	boolRow("localtime", ""),
	boolRow("numa", "0"),
	boolRow("onboot", "0"),
	boolRow("protection", "0"),
	boolRow("reboot", "1"),
	boolRow("tablet", "1"),
	boolRow("tdf", "0"),
	boolRow("template", "0"),
	intRow("balloon", ""),
	intRow("cores", "1"),
	intRow("cpuunits", ""), // default depends on the cgroup version
	intRow("migrate_speed", "0"),
	intRow("shares", "1000"),
	intRow("smp", "1"),
	intRow("sockets", "1"),
	intRow("vcpus", ""),
	numRow("cpulimit", "0"),
	numRow("migrate_downtime", "0.1"),
	Row{Key: "memory", Canon: canonQemuMemory, Default: "512"},
	propRow("net[n]", qemuNet, ""),
	propRow("ide[n]", qemuDrive, ""),
	propRow("sata[n]", qemuDrive, ""),
	propRow("scsi[n]", qemuDrive, ""),
	propRow("virtio[n]", qemuDrive, ""),
	propRow("efidisk0", qemuDrive, ""),
	propRow("tpmstate0", qemuDrive, ""),
	propRow("unused[n]", qemuDrive, ""),
	propRow("agent", qemuAgent, "0"),
	propRow("startup", startupOrder, ""),
	propRow("cpu", plainProps("cputype", "hidden"), ""),
	propRow("vga", plainProps("type"), ""),
	propRow("machine", plainProps("type", "enable-s3", "enable-s4"), ""),
	propRow("boot", plainProps("legacy"), ""),
	propRow("smbios1", plainProps("", "base64"), ""),
	propRow("ipconfig[n]", plainProps(""), ""),
	propRow("rng0", plainProps("source"), ""),
	propRow("watchdog", plainProps("model"), ""),
	propRow("hostpci[n]", plainProps("host", "pcie", "rombar", "x-vga"), ""),
	propRow("usb[n]", plainProps("host", "usb3"), ""),
	propRow("numa[n]", plainProps(""), ""),
	propRow("audio0", plainProps(""), ""),
	propRow("spice_enhancements", plainProps("", "foldersharing"), ""),
	propRow("cicustom", plainProps(""), ""),
	sshkeysRow(),
	listRow("nameserver"),
	listRow("searchdomain"),
	propRow("ivshmem", plainProps(""), ""),
	propRow("virtiofs[n]", plainProps("dirid", "direct-io", "expose-acl", "expose-xattr"), ""),
	propRow("amd-sev", plainProps("type", "allow-smt", "kernel-hashes", "no-debug", "no-key-sharing"), ""),
)

var lxcTable = NewTable(
	descriptionRow(),
	tagsRow(),
	boolRow("console", "1"),
	boolRow("debug", "0"),
	boolRow("onboot", "0"),
	boolRow("protection", "0"),
	boolRow("template", "0"),
	boolRow("unprivileged", "0"),
	intRow("cores", ""),
	intRow("cpuunits", ""), // default depends on the cgroup version
	intRow("memory", "512"),
	intRow("swap", "512"),
	intRow("tty", "2"),
	numRow("cpulimit", "0"),
	propRow("net[n]", lxcNet, ""),
	propRow("rootfs", lxcMount, ""),
	propRow("mp[n]", lxcMount, ""),
	propRow("unused[n]", lxcMount, ""),
	propRow("features", lxcFeatures, ""),
	propRow("startup", startupOrder, ""),
	propRow("dev[n]", plainProps("path", "deny-write"), ""),
)

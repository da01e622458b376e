package normalize

import (
	"testing"

	"github.com/steward-pve/steward/internal/guest"
)

const (
	Q = guest.QEMU
	L = guest.LXC
)

// equalCases are values that differ as strings but mean the same to PVE:
// desired as an operator writes it (or as PVE accepts it), actual as PVE
// returns it. Every row of both tables must have at least one.
var equalCases = []struct {
	kind            guest.Kind
	key             string
	desired, actual string
}{
	// description: LXC keeps the trailing newline; CRLF; trailing blanks.
	{L, "description", "web frontend", "web frontend\n"},
	{L, "description", "web frontend\n", "web frontend\n\n"},
	{Q, "description", "line one\r\nline two\r\n", "line one\nline two"},
	{Q, "description", "a  \nb\t", "a\nb"},
	{L, "description", "", "\n"},
	{Q, "description", "old mac\rline", "old mac\nline"},
	// tags: PVE sorts and uses ';'; operators use ',' or spaces; dupes.
	{Q, "tags", "web;prod", "prod;web"},
	{L, "tags", "prod,web", "prod;web"},
	{L, "tags", "web prod web", "prod;web"},
	{Q, "tags", "prod; web", "prod;web"},
	{Q, "tags", "", ""},
	// booleans.
	{Q, "onboot", "true", "1"},
	{Q, "onboot", "yes", "1"},
	{Q, "onboot", "on", "1"},
	{Q, "onboot", "false", "0"},
	{Q, "onboot", "off", "0"},
	{Q, "onboot", "0", ""}, // absent = default 0
	{Q, "acpi", "1", ""},
	{Q, "allow-ksm", "True", "1"},
	{Q, "autostart", "no", "0"},
	{Q, "ciupgrade", "1", ""},
	{Q, "freeze", "yes", "1"},
	{Q, "keephugepages", "0", ""},
	{Q, "kvm", "true", "1"},
	{Q, "localtime", "false", "0"},
	{Q, "numa", "false", "0"},
	{Q, "protection", "off", ""},
	{Q, "reboot", "1", ""},
	{Q, "tablet", "yes", "1"},
	{Q, "tdf", "0", ""},
	{Q, "template", "false", "0"},
	{L, "console", "yes", ""},
	{L, "debug", "no", ""},
	{L, "onboot", "true", "1"},
	{L, "protection", "0", ""},
	{L, "template", "false", "0"},
	{L, "unprivileged", "true", "1"},
	// integers, also as strings and in float spelling.
	{Q, "cores", "2.0", "2"},
	{Q, "cores", "1", ""},
	{Q, "cores", "02", "2"},
	{Q, "sockets", "1", ""},
	{Q, "balloon", "1024.0", "1024"},
	{Q, "cpuunits", " 100", "100"},
	{Q, "migrate_speed", "0", ""},
	{Q, "shares", "1000", ""},
	{Q, "smp", "1", ""},
	{Q, "vcpus", "+4", "4"},
	{L, "cores", "2.0", "2"},
	{L, "cpuunits", "1024.0", "1024"},
	{L, "memory", "512", ""},
	{L, "memory", "4096.0", "4096"},
	{L, "swap", "512", ""},
	{L, "tty", "2", ""},
	// numbers.
	{Q, "cpulimit", "0.50", "0.5"},
	{Q, "cpulimit", "2", "2.0"},
	{Q, "cpulimit", "0", ""},
	{Q, "migrate_downtime", "0.1", ""},
	{L, "cpulimit", "1.50", "1.5"},
	// QEMU memory: integer before PVE 8.1, property string after.
	{Q, "memory", "4096", "current=4096"},
	{Q, "memory", "current=8192", "8192"},
	{Q, "memory", "512", ""},
	// QEMU net: model alias with MAC, MAC case, option order, defaults.
	{Q, "net0", "virtio=bc:24:11:20:4e:3f,bridge=vmbr0", "virtio=BC:24:11:20:4E:3F,bridge=vmbr0"},
	{Q, "net0", "bridge=vmbr0,virtio=BC:24:11:20:4E:3F", "virtio=BC:24:11:20:4E:3F,bridge=vmbr0"},
	{Q, "net0", "virtio=BC:24:11:20:4E:3F,bridge=vmbr0,firewall=0,link_down=0", "virtio=BC:24:11:20:4E:3F,bridge=vmbr0"},
	{Q, "net0", "model=virtio,macaddr=A2:7B:45:48:9C:E5,bridge=vmbr0,tag=103", "virtio=A2:7B:45:48:9C:E5,bridge=vmbr0,tag=103"},
	{Q, "net0", "virtio,bridge=vmbr0", "virtio=BC:24:11:9F:E0:D5,bridge=vmbr0"}, // no MAC: any MAC
	{Q, "net1", "virtio,bridge=vmbr1,firewall=false", "virtio=BC:24:11:9F:E0:D6,bridge=vmbr1"},
	{Q, "net2", "e1000,bridge=vmbr0,firewall=true", "e1000=AA:BB:CC:DD:EE:FF,bridge=vmbr0,firewall=1"},
	// LXC net: hwaddr case, order, type=veth default, firewall=0.
	{L, "net0", "name=eth0,bridge=vmbr0,firewall=1,ip=dhcp", "name=eth0,bridge=vmbr0,firewall=1,hwaddr=5D:CF:BD:B2:C5:39,ip=dhcp,type=veth"},
	{L, "net0", "name=eth0,hwaddr=5d:cf:bd:b2:c5:39,bridge=vmbr0,ip=dhcp,firewall=0", "bridge=vmbr0,hwaddr=5D:CF:BD:B2:C5:39,ip=dhcp,name=eth0,type=veth"},
	// disks: sizes in any exact unit, option order, default options, alias.
	{Q, "scsi0", "local-lvm:vm-107-disk-0,size=32768M", "local-lvm:vm-107-disk-0,size=32G"},
	{Q, "scsi0", "ceph-pool-nvme-01:vm-555-disk-0,ssd=1,size=50G,discard=on", "ceph-pool-nvme-01:vm-555-disk-0,discard=on,size=50G,ssd=1"},
	{Q, "scsi0", "file=local-lvm:vm-107-disk-0,size=32G,media=disk,replicate=1", "local-lvm:vm-107-disk-0,size=32G"},
	{Q, "scsi0", "local-lvm:vm-107-disk-0", "local-lvm:vm-107-disk-0,size=32G"}, // size informational
	{Q, "scsi1", "volume=vmdata-1:vm-111-disk-0,size=2361393152", "vmdata-1:vm-111-disk-0,size=2252M"},
	{Q, "virtio0", "local:vm-1-disk-0,iothread=true", "local:vm-1-disk-0,iothread=1"},
	{Q, "sata0", "local:vm-1-disk-1,size=1024K", "local:vm-1-disk-1,size=1M"},
	{Q, "ide2", "local:iso/seed-111.iso,media=cdrom,size=389120", "local:iso/seed-111.iso,media=cdrom,size=380K"},
	{Q, "efidisk0", "local-lvm:vm-1-disk-2,size=4M,efitype=4m,pre-enrolled-keys=true", "local-lvm:vm-1-disk-2,efitype=4m,pre-enrolled-keys=1,size=4M"},
	{Q, "tpmstate0", "local-lvm:vm-1-disk-3,version=v2.0,size=4096K", "local-lvm:vm-1-disk-3,size=4M,version=v2.0"},
	{Q, "unused0", "file=local-lvm:vm-1-disk-4", "local-lvm:vm-1-disk-4"},
	{L, "rootfs", "vmstore:subvol-101-disk-0,size=30720M", "vmstore:subvol-101-disk-0,size=30G"},
	{L, "rootfs", "vmstore:subvol-101-disk-0", "vmstore:subvol-101-disk-0,size=30G"},
	{L, "mp0", "mp=/storage,volume=/mnt/foo/bar", "/mnt/foo/bar,mp=/storage"},
	{L, "mp1", "local:subvol-1-disk-1,mp=/data,backup=true,replicate=1,size=8G", "local:subvol-1-disk-1,backup=1,mp=/data,size=8192M"},
	{L, "unused0", "volume=local:subvol-1-disk-2", "local:subvol-1-disk-2"},
	// agent.
	{Q, "agent", "1", "enabled=1"},
	{Q, "agent", "enabled=1,freeze-fs=1,type=virtio", "1"},
	{Q, "agent", "0", ""},
	{Q, "agent", "enabled=true,guest-fsfreeze=0", "enabled=1,freeze-fs=0"},
	// startup.
	{Q, "startup", "up=30,order=1", "order=1,up=30"},
	{L, "startup", "1,down=60", "order=1,down=60"},
	// lxc features.
	{L, "features", "nesting=1,fuse=1,mknod=1", "fuse=1,mknod=1,nesting=1"},
	{L, "features", "nesting=true,keyctl=0", "nesting=1"},
	{L, "dev[n]", "", ""}, // placeholder, replaced below
	// other property strings: option order only.
	{Q, "cpu", "host,flags=+aes", "cputype=host,flags=+aes"},
	{Q, "vga", "serial0", "type=serial0"},
	{Q, "machine", "q35", "type=q35"},
	{Q, "boot", "legacy=c", "c"},
	{Q, "boot", "order=scsi0;net0", "order=scsi0;net0"},
	{Q, "smbios1", "uuid=3ae878b3-a77e-4a4a-adc6-14ee88350d36,base64=true,family=MTIz", "base64=1,family=MTIz,uuid=3ae878b3-a77e-4a4a-adc6-14ee88350d36"},
	{Q, "ipconfig0", "gw=10.2.16.1,ip=10.2.16.80/21", "ip=10.2.16.80/21,gw=10.2.16.1"},
	{Q, "rng0", "/dev/urandom,max_bytes=1024", "source=/dev/urandom,max_bytes=1024"},
	{Q, "watchdog", "i6300esb,action=reset", "model=i6300esb,action=reset"},
	{Q, "hostpci0", "0000:01:00.0,pcie=true", "0000:01:00.0,pcie=1"},
	{Q, "usb0", "host=1234:5678,usb3=yes", "host=1234:5678,usb3=1"},
	{Q, "numa0", "hostnodes=0,cpus=0-3,memory=1024", "cpus=0-3,hostnodes=0,memory=1024"},
	{Q, "audio0", "driver=spice,device=ich9-intel-hda", "device=ich9-intel-hda,driver=spice"},
	{Q, "spice_enhancements", "videostreaming=all,foldersharing=true", "foldersharing=1,videostreaming=all"},
	{Q, "cicustom", "user=nfs-snippets:snippets/u.yaml,meta=local:snippets/m.yaml", "meta=local:snippets/m.yaml,user=nfs-snippets:snippets/u.yaml"},
	{Q, "ivshmem", "name=ivs,size=32", "size=32,name=ivs"},
	{Q, "virtiofs0", "share1,cache=always,direct-io=true", "dirid=share1,cache=always,direct-io=1"},
	{Q, "amd-sev", "std,no-debug=true", "type=std,no-debug=1"},
}

func init() {
	for i, c := range equalCases {
		if c.key == "dev[n]" {
			equalCases[i].key = "dev0"
			equalCases[i].desired = "/dev/dri/renderD128,deny-write=true,gid=44"
			equalCases[i].actual = "/dev/dri/renderD128,gid=44,deny-write=1"
		}
	}
}

func TestEqualRoundTripForms(t *testing.T) {
	for _, c := range equalCases {
		t.Run(string(c.kind)+"/"+c.key+"/"+c.desired, func(t *testing.T) {
			if !Equal(c.kind, c.key, c.desired, c.actual) {
				t.Errorf("Equal(%s, %s, %q, %q) = false; want true (Value: %q vs %q)", c.kind, c.key, c.desired, c.actual,
					Value(c.kind, c.key, c.desired), Value(c.kind, c.key, c.actual))
			}
			if r := lookup(c.kind, c.key); r != nil && r.Match == nil {
				if d, a := Value(c.kind, c.key, c.desired), Value(c.kind, c.key, c.actual); d != a {
					t.Errorf("Value: got %q and %q; want the same canonical form", d, a)
				}
			}
		})
	}
}

// TestEveryRowTested fails when a row is added without a round-trip case.
func TestEveryRowTested(t *testing.T) {
	for kind, table := range map[guest.Kind]*Table{Q: qemuTable, L: lxcTable} {
		covered := map[*Row]bool{}
		for _, c := range equalCases {
			if c.kind == kind && c.desired != c.actual {
				if r := table.Lookup(c.key); r != nil {
					covered[r] = true
				}
			}
		}
		check := func(r *Row) {
			if !covered[r] {
				t.Errorf("%s row %q has no case in equalCases with PVE's round-trip forms", kind, r.Key)
			}
		}
		for _, r := range table.exact {
			check(r)
		}
		for _, r := range table.indexed {
			check(r)
		}
	}
}

func TestDrift(t *testing.T) {
	tests := []struct {
		kind            guest.Kind
		key             string
		desired, actual string
	}{
		{L, "description", "web", "web frontend\n"},
		{Q, "description", "a\n\nb", "a\nb"},
		{Q, "tags", "prod", "prod;web"},
		{Q, "tags", "", "prod"},
		{Q, "onboot", "1", "0"},
		{Q, "onboot", "1", ""},
		{Q, "acpi", "0", ""},
		{Q, "cores", "4", "2"},
		{Q, "cores", "2", ""}, // default 1
		{L, "cores", "2", ""}, // LXC has no default: all host cores
		{Q, "cpulimit", "0.5", "0.25"},
		{Q, "memory", "4096", "current=2048"},
		{Q, "memory", "4096", "8192"},
		{L, "memory", "1024", "512"},
		{Q, "net0", "virtio=BC:24:11:20:4E:3F,bridge=vmbr0", "virtio=BC:24:11:20:4E:40,bridge=vmbr0"},
		{Q, "net0", "virtio,bridge=vmbr1", "virtio=BC:24:11:20:4E:3F,bridge=vmbr0"},
		{Q, "net0", "e1000,bridge=vmbr0", "virtio=BC:24:11:20:4E:3F,bridge=vmbr0"},
		{Q, "net0", "virtio,bridge=vmbr0,firewall=1", "virtio=BC:24:11:20:4E:3F,bridge=vmbr0"},
		{Q, "net0", "virtio,bridge=vmbr0", "virtio=BC:24:11:20:4E:3F,bridge=vmbr0,tag=5"},
		{L, "net0", "name=eth0,bridge=vmbr0,ip=dhcp", "name=eth0,bridge=vmbr0,firewall=1,hwaddr=5D:CF:BD:B2:C5:39,ip=dhcp,type=veth"},
		{Q, "scsi0", "local-lvm:vm-107-disk-0,size=64G", "local-lvm:vm-107-disk-0,size=32G"},
		{Q, "scsi0", "local-lvm:vm-107-disk-1,size=32G", "local-lvm:vm-107-disk-0,size=32G"},
		{Q, "scsi0", "local-lvm:vm-107-disk-0,ssd=1", "local-lvm:vm-107-disk-0,size=32G"},
		{L, "rootfs", "vmstore:subvol-101-disk-0,size=40G", "vmstore:subvol-101-disk-0,size=30G"},
		{Q, "agent", "1", ""},
		{Q, "agent", "1", "enabled=1,fstrim_cloned_disks=1"},
		{L, "features", "nesting=1", "fuse=1,nesting=1"},
		{Q, "name", "web", "Web"},
		{Q, "unknown-key", "1", "true"}, // no row: verbatim
	}
	for _, tt := range tests {
		t.Run(string(tt.kind)+"/"+tt.key+"/"+tt.desired, func(t *testing.T) {
			if Equal(tt.kind, tt.key, tt.desired, tt.actual) {
				t.Errorf("Equal(%s, %s, %q, %q) = true; want false (a real difference)", tt.kind, tt.key, tt.desired, tt.actual)
			}
		})
	}
}

func TestValue(t *testing.T) {
	tests := []struct {
		kind    guest.Kind
		key, in string
		want    string
	}{
		{Q, "memory", "current=4096", "4096"},
		{Q, "tags", "web,prod,web", "prod;web"},
		{L, "description", "x\r\n", "x"},
		{Q, "onboot", "yes", "1"},
		{Q, "onboot", "", "0"},
		{Q, "net0", "virtio=bc:24:11:20:4e:3f,firewall=0,bridge=vmbr0", "model=virtio,bridge=vmbr0,macaddr=BC:24:11:20:4E:3F"},
		{Q, "scsi0", "local-lvm:vm-1-disk-0,size=32768M", "file=local-lvm:vm-1-disk-0,size=32G"},
		{Q, "scsi0", "not,a,,valid=", "not,a,,valid="}, // invalid: verbatim
		{Q, "cores", "abc", "abc"},
		{Q, "cpulimit", "NaN", "NaN"},
		{"", "cores", "2.0", "2.0"}, // unknown kind: verbatim
	}
	for _, tt := range tests {
		t.Run(tt.key+"/"+tt.in, func(t *testing.T) {
			if got := Value(tt.kind, tt.key, tt.in); got != tt.want {
				t.Errorf("Value(%s, %s, %q): got %q; want %q", tt.kind, tt.key, tt.in, got, tt.want)
			}
		})
	}
}

func TestParam(t *testing.T) {
	tests := []struct {
		kind    guest.Kind
		key, in string
		want    string
	}{
		{Q, "onboot", "true", "1"},
		{L, "unprivileged", "no", "0"},
		{Q, "tags", "web, prod", "prod;web"},
		{Q, "net0", "virtio,bridge=vmbr0", "virtio,bridge=vmbr0"}, // verbatim
		{L, "description", "hello\n", "hello\n"},                  // verbatim
		{Q, "memory", "current=4096", "current=4096"},             // verbatim
		{Q, "name", "web", "web"},
	}
	for _, tt := range tests {
		if got := Param(tt.kind, tt.key, tt.in); got != tt.want {
			t.Errorf("Param(%s, %s, %q): got %q; want %q", tt.kind, tt.key, tt.in, got, tt.want)
		}
	}
}

func TestLookup(t *testing.T) {
	tests := []struct {
		key  string
		want string // row key, "" = none
	}{
		{"net0", "net[n]"},
		{"net31", "net[n]"},
		{"net", ""},
		{"netx", ""},
		{"0", ""},
		{"memory", "memory"},
		{"scsi30", "scsi[n]"},
		{"efidisk0", "efidisk0"},
		{"efidisk1", ""},
		{"whatever", ""},
	}
	for _, tt := range tests {
		r := qemuTable.Lookup(tt.key)
		got := ""
		if r != nil {
			got = r.Key
		}
		if got != tt.want {
			t.Errorf("Lookup(%q): got row %q; want %q", tt.key, got, tt.want)
		}
	}
}

func TestNewTablePanicsOnDuplicate(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("NewTable with a duplicate row did not panic")
		}
	}()
	NewTable(Row{Key: "a1"}, Row{Key: "a1"})
}

// FuzzValue checks that normalization never panics, is idempotent, and that
// Equal agrees with itself on identical input.
func FuzzValue(f *testing.F) {
	for _, c := range equalCases {
		f.Add(string(c.kind), c.key, c.desired, c.actual)
	}
	f.Fuzz(func(t *testing.T, kind, key, a, b string) {
		k := guest.Kind(kind)
		va := Value(k, key, a)
		if again := Value(k, key, va); again != va {
			t.Fatalf("Value not idempotent for %s %s %q: %q then %q", k, key, a, va, again)
		}
		if !Equal(k, key, a, a) {
			t.Fatalf("Equal(%q, %q) = false for identical values", a, a)
		}
		_ = Equal(k, key, a, b)
		_ = Param(k, key, a)
	})
}

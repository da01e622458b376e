package pve

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/steward-pve/steward/internal/guest"
)

// fixtureCheck decodes one captured response through the client: the
// fixture is served by a loopback TLS server and the matching client method
// reads it. wantPath is the request path the method must use.
type fixtureCheck struct {
	dataOnly bool   // the file lacks the {"data": …} envelope
	status   int    // 0: 200
	reason   string // reason phrase for non-200
	wantPath string
	check    func(t *testing.T, c *Client)
}

var ctxb = context.Background()

func fixtureChecks() map[string]fixtureCheck {
	return map[string]fixtureCheck{
		"ansible-cluster-resources-vm.data-only.json": {dataOnly: true, wantPath: "/api2/json/cluster/resources", check: func(t *testing.T, c *Client) {
			rs, err := c.ClusterResources(ctxb, "vm")
			must(t, err)
			eq(t, "len", len(rs), 6)
			eq(t, "rs[0]", sp(rs[0].ID, rs[0].VMID, rs[0].Name, rs[0].MaxMem, rs[0].Template), "qemu/100 100 pxe.home.arpa 4294967296 false")
			eq(t, "rs[1].Pool", rs[1].Pool, "pool1")
			eq(t, "rs[2]", sp(rs[2].Type, rs[2].VMID, rs[2].Disk, rs[2].MaxCPU), "lxc 102 352190464 2")
		}},
		"ansible-lxc-list.vmid-as-string.data-only.json": {dataOnly: true, wantPath: "/api2/json/nodes/pve/lxc", check: func(t *testing.T, c *Client) {
			gs, err := c.Guests(ctxb, "pve", guest.LXC)
			must(t, err)
			var ids []int
			for _, g := range gs {
				ids = append(ids, g.VMID)
				eq(t, "kind", g.Kind, guest.LXC)
			}
			eq(t, "vmids", sp(ids), "[103 102 104 105]")
			eq(t, "gs[1]", sp(gs[1].Status, gs[1].PID, gs[1].MaxSwap, gs[1].CPUs), "running 4076752 536870912 2")
			eq(t, "gs[3].Name", gs[3].Name, "")
		}},
		"ansible-pve6.4-node-tasks-list.data-only.json": {dataOnly: true, wantPath: "/api2/json/nodes/iaclab-01-01/tasks", check: func(t *testing.T, c *Client) {
			ts, err := c.Tasks(ctxb, "iaclab-01-01", TaskQuery{})
			must(t, err)
			eq(t, "len", len(ts), 3)
			eq(t, "ts[1].Status", ts[1].Status, "command 'ifreload -a' failed: exit code 1")
			eq(t, "ts[1].EndTime", ts[1].EndTime, int64(1627975785))
			for _, s := range ts {
				if s.UPID.IsZero() || int64(s.UPID.PID) != s.PID || int64(s.UPID.PStart) != s.PStart || s.UPID.StartTime != s.StartTime {
					t.Errorf("UPID %q parsed as %+v; want its fields to match pid %d pstart %d starttime %d", s.RawUPID, s.UPID, s.PID, s.PStart, s.StartTime)
				}
				if s.UPID.String() != s.RawUPID {
					t.Errorf("UPID round trip %q; want %q", s.UPID, s.RawUPID)
				}
			}
			_, err = ParseExitStatus(ts[1].UPID, ts[1].Status)
			var te *TaskError
			if !errors.As(err, &te) || te.ExitStatus != "command 'ifreload -a' failed: exit code 1" {
				t.Errorf("ParseExitStatus = %v; want TaskError with PVE's text", err)
			}
		}},
		"ansible-qemu-list.data-only.json": {dataOnly: true, wantPath: "/api2/json/nodes/pve/qemu", check: func(t *testing.T, c *Client) {
			gs, err := c.Guests(ctxb, "pve", guest.QEMU)
			must(t, err)
			eq(t, "len", len(gs), 2)
			eq(t, "gs[1]", sp(gs[1].VMID, gs[1].Kind, gs[1].Name, gs[1].PID, gs[1].MaxDisk), "100 qemu pxe.home.arpa 4076688 34359738368")
		}},
		"gp-mock-nextid-400-vm-exists.json": {status: 400, reason: "Parameter verification failed.", wantPath: "/api2/json/nodes/pve/qemu", check: func(t *testing.T, c *Client) {
			_, err := c.Create(ctxb, "pve", guest.QEMU, 200, nil)
			ae := apiErr(t, err)
			eq(t, "Errors", sp(ae.Errors), "map[vmid:VM 200 already exists]")
			eq(t, "Message", ae.Message, "Parameter verification failed.")
			eq(t, "retryable", IsRetryable(err), false)
		}},
		"gp-pve7-cluster-resources.json": {wantPath: "/api2/json/cluster/resources", check: func(t *testing.T, c *Client) {
			rs, err := c.ClusterResources(ctxb, "")
			must(t, err)
			byID := map[string]Resource{}
			for _, r := range rs {
				byID[r.ID] = r
			}
			eq(t, "qemu/101.Template", byID["qemu/101"].Template, true)
			eq(t, "qemu/100.Template", byID["qemu/100"].Template, false)
			eq(t, "qemu/102.Tags", byID["qemu/102"].Tags, "go-proxmox+cloud-init")
			st := byID["storage/node1/local"]
			eq(t, "storage", sp(st.Type, st.Storage, st.Shared, st.PluginType, st.MaxDisk), "storage local false dir 951055941632")
		}},
		"gp-pve7-cluster-status.json": {wantPath: "/api2/json/cluster/status", check: func(t *testing.T, c *Client) {
			items, err := c.ClusterStatus(ctxb)
			must(t, err)
			eq(t, "len", len(items), 5)
			eq(t, "cluster", sp(items[0].Type, items[0].Name, items[0].Nodes, items[0].Quorate), "cluster clustername 4 true")
			n, err := c.LocalNode(ctxb)
			must(t, err)
			eq(t, "LocalNode", n, "node1")
		}},
		"gp-pve7-lxc-config.json": {wantPath: "/api2/json/nodes/pve/lxc/101/config", check: func(t *testing.T, c *Client) {
			gc, err := c.GuestConfig(ctxb, "pve", guest.LXC, 101)
			must(t, err)
			eq(t, "Digest", gc.Digest, "5911baea29f4c0073fb063fd9ab29e75892832bf")
			want := guest.Config{
				"arch": "amd64", "cores": "2", "features": "fuse=1,mknod=1,nesting=1", "hostname": "test-container",
				"lxc":    `[["lxc.cgroup2.devices.allow","c 226:0 rwm"],["lxc.cgroup2.devices.allow","c 226:128 rwm"],["lxc.cgroup2.devices.allow","c 29:0 rwm"],["lxc.mount.entry","/dev/dri dev/dri none bind,optional,create=dir"],["lxc.mount.entry","/dev/fb0 dev/fb0 none bind,optional,create=file"]]`,
				"memory": "4096", "mp0": "/mnt/foo/bar,mp=/storage",
				"net0":   "name=eth0,bridge=vmbr0,firewall=1,hwaddr=5D:CF:BD:B2:C5:39,ip=dhcp,type=veth",
				"onboot": "1", "ostype": "debian", "rootfs": "vmstore:subvol-101-disk-0,size=30G", "swap": "512", "tags": "tag1;tag2",
			}
			eqConfig(t, gc.Values, want)
		}},
		"gp-pve7-lxc-list.vmid-as-string.json": {wantPath: "/api2/json/nodes/pve/lxc", check: func(t *testing.T, c *Client) {
			gs, err := c.Guests(ctxb, "pve", guest.LXC)
			must(t, err)
			eq(t, "len", len(gs), 3)
			eq(t, "gs[0]", sp(gs[0].VMID, gs[0].Name, gs[0].Status, gs[0].MaxMem, gs[0].Uptime), "106 test running 536870912 919760")
			eq(t, "gs[2]", sp(gs[2].VMID, gs[2].Template), "101 true")
		}},
		"gp-pve7-node-status.json": {wantPath: "/api2/json/nodes/node1/status", check: func(t *testing.T, c *Client) {
			s, err := c.NodeStatus(ctxb, "node1")
			must(t, err)
			eq(t, "PVEVersion", s.PVEVersion, "pve-manager/7.4-16/0f39f621")
			eq(t, "LoadAvg", sp(s.LoadAvg), "[0 0 0]")
			eq(t, "CPUInfo", sp(s.CPUInfo.MHz, s.CPUInfo.HVM, s.CPUInfo.CPUs, s.CPUInfo.Cores, s.CPUInfo.Sockets), "3400 true 8 4 1")
			eq(t, "Memory", sp(s.Memory), "{65919459328 8095399936 57824059392 0}")
			eq(t, "RootFS.Avail", s.RootFS.Avail, int64(937851224064))
			eq(t, "Uptime", s.Uptime, int64(2501631))
		}},
		"gp-pve7-nodes.json": {wantPath: "/api2/json/nodes", check: func(t *testing.T, c *Client) {
			ns, err := c.Nodes(ctxb)
			must(t, err)
			eq(t, "len", len(ns), 4)
			eq(t, "ns[0]", sp(ns[0].Node, ns[0].Status, ns[0].MaxCPU, ns[0].MaxMem, ns[0].Uptime), "node1 online 12 33568288768 2236708")
			eq(t, "SSLFingerprint", ns[0].SSLFingerprint, "80:D4:F2:DF:64:95:CD:8D:A0:82:82:AC:48:BA:C0:7A:1B:6B:87:8B:FE:B9:83:1C:95:4E:79:58:77:99:69:F5")
			for _, n := range ns {
				fp, err := ParseFingerprint(n.SSLFingerprint)
				if err != nil || FormatFingerprint(fp[:]) != n.SSLFingerprint {
					t.Errorf("fingerprint %q: round trip %q, %v", n.SSLFingerprint, FormatFingerprint(fp[:]), err)
				}
			}
		}},
		"gp-pve8-qemu-status-current.full.json": {wantPath: "/api2/json/nodes/pve/qemu/101/status/current", check: func(t *testing.T, c *Client) {
			s, err := c.GuestStatus(ctxb, "pve", guest.QEMU, 101)
			must(t, err)
			eq(t, "status", sp(s.VMID, s.Name, s.Status, s.QMPStatus, s.Agent, s.HA.Managed, s.CPUs), "101 matt running running true false 8")
			eq(t, "mem", sp(s.Mem, s.MaxMem, s.MaxDisk, s.Uptime, s.PID), "1127792640 2097152000 18467520512 170815 1563102")
			eq(t, "running", sp(s.RunningQEMU, s.RunningMachine), "8.0.2 pc-i440fx-8.0+pve0")
		}},
		"gp-task-log.imgcopy-upload.data-only.json": {dataOnly: true, wantPath: "/api2/json/nodes/i7/tasks/UPID:i7:00001234:00ABCDEF:65C0FA88:imgcopy::root@pam:/log", check: func(t *testing.T, c *Client) {
			u, _ := ParseUPID("UPID:i7:00001234:00ABCDEF:65C0FA88:imgcopy::root@pam:")
			ls, err := c.TaskLog(ctxb, "", u, 0, 0)
			must(t, err)
			eq(t, "len", len(ls), 7)
			eq(t, "last", sp(ls[6].N, ls[6].T), "7 TASK OK")
			eq(t, "first.N", ls[0].N, 1)
		}},
		"proxmoxer-task-status.running.json": {wantPath: "/api2/json/nodes/node1/tasks/UPID:node1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:/status", check: func(t *testing.T, c *Client) {
			s := proxmoxerStatus(t, c)
			eq(t, "Running", s.Running(), true)
			eq(t, "ExitStatus", s.ExitStatus, "")
		}},
		"proxmoxer-task-status.stopped-ok.json": {wantPath: "/api2/json/nodes/node1/tasks/UPID:node1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:/status", check: func(t *testing.T, c *Client) {
			s := proxmoxerStatus(t, c)
			eq(t, "Running", s.Running(), false)
			r, err := ParseExitStatus(s.UPID, s.ExitStatus)
			must(t, err)
			eq(t, "result", sp(r), "{OK 0}")
		}},
		"proxmoxer-task-status.stopped-interrupted.json": {wantPath: "/api2/json/nodes/node1/tasks/UPID:node1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:/status", check: func(t *testing.T, c *Client) {
			s := proxmoxerStatus(t, c)
			_, err := ParseExitStatus(s.UPID, s.ExitStatus)
			var te *TaskError
			if !errors.As(err, &te) || te.ExitStatus != "interrupted by signal" || te.UPID != s.UPID {
				t.Errorf("ParseExitStatus = %v; want TaskError \"interrupted by signal\"", err)
			}
		}},
		"from-issues/bpg-client_test-500-with-message.body.json": {status: 500, reason: "create sdn zone object failed: 400 Parameter verification failed.", wantPath: "/api2/json/version", check: func(t *testing.T, c *Client) {
			_, err := c.Version(ctxb)
			ae := apiErr(t, err)
			eq(t, "Message", ae.Message, "create sdn zone object failed: 400 Parameter verification failed.")
			eq(t, "BodyMessage", ae.BodyMessage, "create sdn zone object failed: 400 Parameter verification failed.\nipam: ipam-simple not existing\n")
			eq(t, "retryable", ae.Retryable(), false)
		}},
		"from-issues/whmcs54-501-not-implemented.body.json": {status: 501, reason: "Method 'GET /nodes/pve2//12/config' not implemented", wantPath: "/api2/json/version", check: func(t *testing.T, c *Client) {
			_, err := c.Version(ctxb)
			ae := apiErr(t, err)
			eq(t, "status", ae.StatusCode, 501)
			eq(t, "Message", ae.Message, "Method 'GET /nodes/pve2//12/config' not implemented")
			eq(t, "Errors", len(ae.Errors), 0)
			eq(t, "retryable", IsRetryable(err), false)
		}},
		"from-issues/whmcs92-400-param-verification.body.json": {status: 400, reason: "Parameter verification failed.", wantPath: "/api2/json/nodes/pve/qemu/101/config", check: func(t *testing.T, c *Client) {
			_, err := c.SetConfig(ctxb, "pve", guest.QEMU, 101, ConfigChange{Set: map[string]string{"ipconfig0": "gw=x"}})
			ae := apiErr(t, err)
			eq(t, "ipconfig0", ae.Errors["ipconfig0"], "invalid format - format error\nipconfig0.gw: invalid format - value does not look like a valid IPv4 address\n\n")
			eq(t, "vmid", ae.Errors["vmid"], "invalid format - value does not look like a valid VM ID\n")
			eq(t, "retryable", IsRetryable(err), false)
			if !strings.Contains(err.Error(), "ipconfig0: invalid format") {
				t.Errorf("Error() = %q; want the errors object in it", err)
			}
		}},
		"unattributed/qemu-config.pve7.creation-qemu-6.2.0.json": {wantPath: "/api2/json/nodes/pve/qemu/107/config", check: func(t *testing.T, c *Client) {
			gc, err := c.GuestConfig(ctxb, "pve", guest.QEMU, 107)
			must(t, err)
			eq(t, "Digest", gc.Digest, "a2019681a11059dc5602d474c3443b907db213b7")
			eq(t, "len", len(gc.Values), 21)
			eq(t, "memory (JSON number)", gc.Values["memory"], "8192")
			eq(t, "agent", gc.Values["agent"], "0")
			eq(t, "scsi0", gc.Values["scsi0"], "local-lvm:vm-107-disk-0,size=32G")
			eq(t, "boot", gc.Values["boot"], "order=net0;ide2;scsi0")
			eq(t, "numa/onboot/kvm", sp(gc.Values["numa"], gc.Values["onboot"], gc.Values["kvm"]), "1 0 1")
		}},
		"unattributed/qemu-config.pve8.4-or-9.creation-qemu-9.2.0.json": {wantPath: "/api2/json/nodes/pve/qemu/555/config", check: func(t *testing.T, c *Client) {
			gc, err := c.GuestConfig(ctxb, "pve", guest.QEMU, 555)
			must(t, err)
			eq(t, "memory (JSON string)", gc.Values["memory"], "1024")
			eq(t, "cores", gc.Values["cores"], "1")
			eq(t, "agent", gc.Values["agent"], "enabled=1")
			eq(t, "scsi0", gc.Values["scsi0"], "ceph-pool-nvme-01:vm-555-disk-0,discard=on,size=50G,ssd=1")
			eq(t, "ipconfig0", gc.Values["ipconfig0"], "ip=10.2.16.80/21,gw=10.2.16.1")
			if _, ok := gc.Values["digest"]; ok {
				t.Errorf("digest kept in Values; want it only in Digest")
			}
			eq(t, "len", len(gc.Values), 22)
		}},
		"unattributed/qemu-config.pve9.creation-qemu-10.0.2.json": {wantPath: "/api2/json/nodes/pve/qemu/111/config", check: func(t *testing.T, c *Client) {
			gc, err := c.GuestConfig(ctxb, "pve", guest.QEMU, 111)
			must(t, err)
			eq(t, "memory", gc.Values["memory"], "4096")
			eq(t, "scsi0", gc.Values["scsi0"], "vmdata-1:vm-111-disk-0,size=2252M")
			eq(t, "ide2", gc.Values["ide2"], "local:iso/seed-111.iso,media=cdrom,size=380K")
			eq(t, "Digest", gc.Digest, "c752912ca294814e0b7c18e223b7b0e73971d0dd")
			eq(t, "len", len(gc.Values), 17)
		}},
	}
}

func proxmoxerStatus(t *testing.T, c *Client) TaskStatus {
	t.Helper()
	u, err := ParseUPID("UPID:node1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:")
	must(t, err)
	s, err := c.TaskStatus(ctxb, "node1", u)
	must(t, err)
	eq(t, "UPID", s.UPID, u)
	eq(t, "fields", sp(s.Node, s.Type, s.ID, s.User, s.PID, s.PStart, s.StartTime), "node1 vzdump 110 root@pam 1044989 284768076 1661825068")
	if int64(u.PID) != s.PID || int64(u.PStart) != s.PStart || u.StartTime != s.StartTime {
		t.Errorf("UPID hex fields %+v disagree with status %+v", u, s)
	}
	return s
}

// Every file in testdata/fixtures is decoded through the client; a new
// fixture without a check fails this test.
func TestFixturesThroughClient(t *testing.T) {
	checks := fixtureChecks()
	special := map[string]bool{ // covered by their own tests below
		"README.md": true,
		"from-issues/telmate1405-lxc-stop-400-param-verification.http": true,
		"from-issues/status-lines.txt":                                 true,
		"from-issues/task-exitstatus-examples.txt":                     true,
	}
	root := filepath.Join("testdata", "fixtures")
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		seen[rel] = true
		if special[rel] {
			return nil
		}
		fc, ok := checks[rel]
		if !ok {
			t.Errorf("fixture %s has no decoding check", rel)
			return nil
		}
		t.Run(rel, func(t *testing.T) {
			body := fixture(t, rel)
			if fc.dataOnly {
				body = append(append([]byte(`{"data":`), body...), '}')
			}
			var mu sync.Mutex
			var paths []string
			_, c := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				paths = append(paths, r.URL.Path)
				mu.Unlock()
				code := fc.status
				if code == 0 {
					code = 200
				}
				// PVE's reason phrase is not Go's; write the status line
				// ourselves.
				conn, buf, err := w.(http.Hijacker).Hijack()
				if err != nil {
					t.Error(err)
					return
				}
				defer conn.Close()
				reason := fc.reason
				if reason == "" {
					reason = "OK"
				}
				fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: %d\r\nConnection: close\r\nServer: pve-api-daemon/3.0\r\n\r\n", code, reason, len(body))
				buf.Write(body)
				buf.Flush()
			}))
			fc.check(t, c)
			mu.Lock()
			defer mu.Unlock()
			for _, p := range paths {
				if p != fc.wantPath {
					t.Errorf("request path %q; want %q", p, fc.wantPath)
				}
			}
			if len(paths) == 0 {
				t.Errorf("no request reached the server")
			}
		})
		return nil
	})
	must(t, err)
	for name := range checks {
		if !seen[name] {
			t.Errorf("check for %s, but no such fixture", name)
		}
	}
	for name := range special {
		if !seen[name] {
			t.Errorf("special fixture %s missing", name)
		}
	}
}

// The one complete raw PVE response, served byte for byte.
func TestFixtureRawHTTP400(t *testing.T) {
	raw := fixture(t, "from-issues/telmate1405-lxc-stop-400-param-verification.http")
	_, c := newServer(t, rawHandler(t, raw))
	_, err := c.Stop(ctxb, "pve", guest.LXC, 102)
	ae := apiErr(t, err)
	eq(t, "StatusCode", ae.StatusCode, 400)
	eq(t, "Message", ae.Message, "Parameter verification failed.")
	eq(t, "BodyMessage", ae.BodyMessage, "")
	eq(t, "Errors", sp(ae.Errors), "map[overrule-shutdown:property is not defined in schema and the schema does not allow additional properties]")
	eq(t, "Retryable", IsRetryable(err), false)
	var ou *OutcomeUnknownError
	if errors.As(err, &ou) {
		t.Errorf("a 400 answer is a known outcome; got %v", err)
	}
}

var statusLineRE = regexp.MustCompile(`^(?:HTTP/1\.1 )?(\d{3}) (.+?) \| (.*?) \|`)

// Every real status line quoted in status-lines.txt, served with PVE's
// error body, classifies as PVE means it.
func TestFixtureStatusLines(t *testing.T) {
	sc := bufio.NewScanner(bytes.NewReader(fixture(t, "from-issues/status-lines.txt")))
	n := 0
	for sc.Scan() {
		m := statusLineRE.FindStringSubmatch(sc.Text())
		if m == nil || strings.HasPrefix(m[2], "(body)") {
			continue
		}
		code, _ := strconv.Atoi(m[1])
		reason := m[2]
		n++
		t.Run(m[1]+" "+reason, func(t *testing.T) {
			body := `{"data":null}`
			if code == 401 {
				body = "" // PVE sends 401s with an empty body
			}
			raw := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", code, reason, len(body), body)
			_, c := newServer(t, rawHandler(t, []byte(raw)))
			_, err := c.Start(ctxb, "pve", guest.QEMU, 101)
			ae := apiErr(t, err)
			eq(t, "StatusCode", ae.StatusCode, code)
			eq(t, "Message", ae.Message, reason)
			wantRetry := false
			switch {
			case strings.Contains(reason, "can't lock file"):
				wantRetry = true
				eq(t, "IsLockTimeout", IsLockTimeout(err), true)
			case strings.Contains(reason, "does not exist"):
				eq(t, "IsNotFound", IsNotFound(err), true)
			case code >= 500 && !strings.Contains(reason, "Parameter verification") && code != 501:
				wantRetry = true
			}
			eq(t, "IsRetryable", IsRetryable(err), wantRetry)
			if code != 500 || !strings.Contains(reason, "can't lock") {
				eq(t, "IsLockTimeout", IsLockTimeout(err), false)
			}
		})
	}
	if n < 10 {
		t.Errorf("parsed %d status lines; want at least 10", n)
	}
}

var upidInTextRE = regexp.MustCompile(`UPID:[^ "]+:`)

func TestFixtureTaskExitStatuses(t *testing.T) {
	u, _ := ParseUPID("UPID:pve:00001234:00ABCDEF:65C0FA88:qmstart:101:root@pam:")
	sc := bufio.NewScanner(bytes.NewReader(fixture(t, "from-issues/task-exitstatus-examples.txt")))
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || !strings.Contains(line, "|") {
			continue
		}
		exit := strings.TrimSpace(line[:strings.LastIndex(line, " | ")])
		n++
		t.Run(exit, func(t *testing.T) {
			for _, s := range upidInTextRE.FindAllString(line, -1) {
				if _, err := ParseUPID(s); err != nil && !strings.Contains(s, "...") {
					t.Errorf("real UPID %q does not parse: %v", s, err)
				}
			}
			r, err := ParseExitStatus(u, exit)
			switch {
			case exit == "OK":
				must(t, err)
				eq(t, "Warnings", r.Warnings, 0)
			case strings.HasPrefix(exit, "WARNINGS: "):
				must(t, err)
				w, _ := strconv.Atoi(strings.TrimPrefix(exit, "WARNINGS: "))
				eq(t, "Warnings", r.Warnings, w)
				eq(t, "ExitStatus", r.ExitStatus, exit)
			default:
				var te *TaskError
				if !errors.As(err, &te) || te.ExitStatus != exit {
					t.Fatalf("ParseExitStatus(%q) = %v, %v; want TaskError with the exact text", exit, r, err)
				}
				eq(t, "IsLockTimeout", IsLockTimeout(err), strings.HasPrefix(exit, "can't lock file"))
				eq(t, "IsRetryable", IsRetryable(err), strings.HasPrefix(exit, "can't lock file"))
				if !strings.Contains(err.Error(), exit) {
					t.Errorf("Error() = %q; want PVE's text in it", err)
				}
			}
		})
	}
	if n < 6 {
		t.Errorf("parsed %d exit statuses; want at least 6", n)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func eq[T comparable](t testing.TB, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s: got %v; want %v", what, got, want)
	}
}

func eqConfig(t testing.TB, got, want guest.Config) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("config[%q]: got %q (present %v); want %q", k, g, ok, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("config has unexpected key %q", k)
		}
	}
}

func apiErr(t testing.TB, err error) *APIError {
	t.Helper()
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T); want *APIError", err, err)
	}
	return ae
}

// sp joins values with spaces.
func sp(a ...any) string { return strings.TrimSuffix(fmt.Sprintln(a...), "\n") }

package sim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestTemplatesSeeded: Options.Templates adds the QEMU template and the
// container template without changing the seeded guests, and the storage
// content, nextid and cluster resources agree with them.
func TestTemplatesSeeded(t *testing.T) {
	plain := startSim(t, Options{Guests: 8, Seed: 1})
	ts := startSim(t, Options{Guests: 8, Seed: 1, Templates: true})
	for vmid := 100; vmid < 108; vmid++ {
		a, _ := plain.s.Guest(vmid)
		b, _ := ts.s.Guest(vmid)
		if !reflect.DeepEqual(a.Config, b.Config) {
			t.Errorf("guest %d: with templates %v; without %v", vmid, b.Config, a.Config)
		}
	}
	g, ok := ts.s.Guest(TemplateVMID)
	if !ok || g.Config["template"] != "1" || g.Config["scsi0"] != "local-lvm:base-9000-disk-0,iothread=1,size=3G" || g.Config["ide2"] != "local-lvm:vm-9000-cloudinit,media=cdrom" {
		t.Fatalf("template 9000: got %v (found %v)", g.Config, ok)
	}
	ct, ok := ts.s.Guest(TemplateCTVMID)
	if !ok || ct.Kind != "lxc" || ct.Config["template"] != "1" || ct.Config["rootfs"] != "local-lvm:base-9001-disk-0,size=8G" || ct.Config["unprivileged"] != "1" {
		t.Fatalf("container template 9001: got %+v (found %v)", ct, ok)
	}
	list := ts.mustOK(ts.do("GET", "/nodes/pve/storage/local/content", url.Values{"content": {"vztmpl"}})).dataList(t)
	if len(list) != 1 || list[0].(map[string]any)["volid"] != TemplateVztmpl || list[0].(map[string]any)["format"] != "tzst" || list[0].(map[string]any)["content"] != "vztmpl" {
		t.Errorf("vztmpl content: got %v; want %s (tzst)", list, TemplateVztmpl)
	}
	if got := ts.mustOK(ts.do("GET", "/nodes/pve/storage/local-lvm/content", url.Values{"content": {"vztmpl"}})).dataList(t); len(got) != 0 {
		t.Errorf("vztmpl on local-lvm (images,rootdir): got %v; want none", got)
	}
	imgs := ts.mustOK(ts.do("GET", "/nodes/pve/storage/local-lvm/content", url.Values{"vmid": {"9000"}})).dataList(t)
	var vols []string
	for _, e := range imgs {
		vols = append(vols, e.(map[string]any)["volid"].(string))
	}
	if strings.Join(vols, " ") != "local-lvm:vm-9000-cloudinit local-lvm:base-9000-disk-0" {
		t.Errorf("images of 9000: got %v; want the cloud-init drive and the base disk", vols)
	}
	if id := ts.mustOK(ts.do("GET", "/cluster/nextid", nil)).data(); id != "108" {
		t.Errorf("nextid: got %v; want 108", id)
	}
	found := false
	for _, e := range ts.mustOK(ts.do("GET", "/cluster/resources", url.Values{"type": {"vm"}})).dataList(t) {
		m := e.(map[string]any)
		if m["id"] == "qemu/9000" {
			found = m["template"] == json.Number("1")
		}
	}
	if !found {
		t.Errorf("cluster/resources: no qemu/9000 row with template 1")
	}
	control := func(ts *testServer) int {
		req, _ := http.NewRequest("POST", ts.url+"/_sim/templates", strings.NewReader("{}"))
		req.Header.Set("Authorization", "PVEAPIToken="+ts.s.Token())
		resp, err := ts.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := control(ts); c != 400 {
		t.Errorf("second POST /_sim/templates: got %d; want 400 (9000 exists)", c)
	}
	empty := startSim(t, Options{})
	if got := empty.mustOK(empty.do("GET", "/nodes/pve/storage/local/content", nil)).dataList(t); len(got) != 0 {
		t.Errorf("content without templates: %v", got)
	}
	if c := control(empty); c != 200 {
		t.Fatalf("POST /_sim/templates: got %d; want 200", c)
	}
	if _, ok := empty.s.Guest(TemplateVMID); !ok {
		t.Errorf("POST /_sim/templates did not add 9000")
	}
}

func TestCloneLinkedFromTemplate(t *testing.T) {
	ts := startSim(t, Options{Templates: true})
	src, _ := ts.s.Guest(TemplateVMID)
	upid, st := ts.runTask("POST", "/nodes/pve/qemu/9000/clone", url.Values{"newid": {"120"}, "name": {"web"}, "description": {"from template"}})
	if st["exitstatus"] != "OK" || !strings.Contains(upid, ":qmclone:9000:") {
		t.Fatalf("clone: upid %s exit %v; want a qmclone task of 9000 ending OK", upid, st["exitstatus"])
	}
	g, ok := ts.s.Guest(120)
	if !ok {
		t.Fatal("clone 120 missing")
	}
	c := g.Config
	for key, want := range map[string]string{
		"scsi0": "local-lvm:vm-120-disk-0,iothread=1,size=3G",
		"ide2":  "local-lvm:vm-120-cloudinit,media=cdrom,size=4M",
		"name":  "web", "description": "from template", "template": "", "lock": "",
		"ipconfig0": "ip=dhcp", "memory": "2048",
	} {
		if c[key] != want {
			t.Errorf("clone %s: got %q; want %q", key, c[key], want)
		}
	}
	if c["net0"] == src.Config["net0"] || !strings.HasSuffix(c["net0"], ",bridge=vmbr0") || !strings.HasPrefix(c["net0"], "virtio=BC:24:11:") {
		t.Errorf("clone net0 %q: want a new MAC, same bridge (template %q)", c["net0"], src.Config["net0"])
	}
	if c["smbios1"] == src.Config["smbios1"] || c["vmgenid"] == src.Config["vmgenid"] {
		t.Errorf("clone keeps the template's smbios1/vmgenid: %q %q", c["smbios1"], c["vmgenid"])
	}
	if tg, _ := ts.s.Guest(TemplateVMID); !reflect.DeepEqual(tg.Config, src.Config) {
		t.Errorf("template changed by clone: %v", tg.Config)
	}
	muts := ts.s.Mutations()
	if len(muts) != 1 || muts[0].Op != "clone" || muts[0].VMID != 9000 || muts[0].Params["newid"] != "120" {
		t.Errorf("mutations: %+v; want one clone of 9000 to 120", muts)
	}
	// The volume exists for the storage (volume info) and nextid moves on.
	ts.mustOK(ts.do("GET", "/nodes/pve/storage/local-lvm/content/local-lvm:vm-120-disk-0", nil))
	_, st = ts.runTask("POST", "/nodes/pve/qemu/9000/clone", url.Values{"newid": {"121"}})
	if g, _ := ts.s.Guest(121); st["exitstatus"] != "OK" || g.Config["name"] != "Copy-of-VM-debian-12-cloud" {
		t.Errorf("clone without name: exit %v name %q; want Copy-of-VM-debian-12-cloud", st["exitstatus"], g.Config["name"])
	}
}

func TestCloneFull(t *testing.T) {
	ts := startSim(t, Options{Templates: true})
	ts.addGuest(GuestSpec{VMID: 101, Kind: "qemu", Name: "db", Config: map[string]string{
		"scsi0": "local-lvm:vm-101-disk-0,size=32G", "scsi1": "local-lvm:vm-101-disk-1,size=8G", "unused0": "local-lvm:vm-101-disk-2",
		"ide2": "none,media=cdrom", "memory": "4096"}})
	_, st := ts.runTask("POST", "/nodes/pve/qemu/9000/clone", url.Values{"newid": {"130"}, "full": {"1"}, "storage": {"local-lvm"}})
	if g, _ := ts.s.Guest(130); st["exitstatus"] != "OK" || g.Config["scsi0"] != "local-lvm:vm-130-disk-0,iothread=1,size=3G" {
		t.Errorf("full clone of template: exit %v scsi0 %q", st["exitstatus"], g.Config["scsi0"])
	}
	// A normal VM is cloned full by default; unusedN are not copied.
	_, st = ts.runTask("POST", "/nodes/pve/qemu/101/clone", url.Values{"newid": {"131"}})
	g, _ := ts.s.Guest(131)
	if st["exitstatus"] != "OK" || g.Config["scsi0"] != "local-lvm:vm-131-disk-0,size=32G" || g.Config["scsi1"] != "local-lvm:vm-131-disk-1,size=8G" ||
		g.Config["ide2"] != "none,media=cdrom" || g.Config["unused0"] != "" || g.Config["memory"] != "4096" {
		t.Errorf("full clone of 101: exit %v config %v", st["exitstatus"], g.Config)
	}
}

func TestCloneRefusals(t *testing.T) {
	ts := startSim(t, Options{Templates: true})
	ts.addGuest(GuestSpec{VMID: 101, Kind: "qemu", Config: map[string]string{"scsi0": "local-lvm:vm-101-disk-0,size=32G"}})
	ts.addGuest(GuestSpec{VMID: 102, Kind: "qemu", Lock: "backup", Config: map[string]string{"scsi0": "local-lvm:vm-102-disk-0,size=32G"}})
	for _, tc := range []struct {
		name, vmid string
		params     url.Values
		want       string
	}{
		{"newid taken", "9000", url.Values{"newid": {"101"}}, "unable to create VM 101: config file already exists"},
		{"linked from a normal VM", "101", url.Values{"newid": {"140"}, "full": {"0"}}, "Linked clone feature is not supported for drive 'scsi0'"},
		{"storage on linked", "9000", url.Values{"newid": {"140"}, "storage": {"local-lvm"}}, "parameter 'storage' not allowed for linked clones"},
		{"format on linked", "9000", url.Values{"newid": {"140"}, "format": {"raw"}}, "parameter 'format' not allowed for linked clones"},
		{"storage without images", "9000", url.Values{"newid": {"140"}, "full": {"1"}, "storage": {"local"}}, "storage 'local' does not support vm images"},
		{"locked source", "102", url.Values{"newid": {"140"}}, "VM is locked (backup)"},
		{"unknown snapshot", "101", url.Values{"newid": {"140"}, "snapname": {"nope"}}, "snapshot 'nope' does not exist"},
		{"other node", "9000", url.Values{"newid": {"140"}, "target": {"pve-b"}}, "no such cluster node 'pve-b'"},
		{"missing source", "555", url.Values{"newid": {"140"}}, "Configuration file 'nodes/pve/qemu-server/555.conf' does not exist"},
	} {
		r := ts.do("POST", "/nodes/pve/qemu/"+tc.vmid+"/clone", tc.params)
		if r.status != 500 || r.reason != tc.want {
			t.Errorf("%s: got %d %q; want 500 %q", tc.name, r.status, r.reason, tc.want)
		}
	}
	if _, ok := ts.s.Guest(140); ok {
		t.Error("a refused clone left guest 140")
	}
	if n := len(ts.s.Mutations()); n != 0 {
		t.Errorf("refused clones executed %d mutations", n)
	}
}

// TestCloneHoldsCloneLock: while the task runs, the new guest exists with
// lock "clone" (it is taken for creation and nextid skips it); when the
// task fails, it is gone.
func TestCloneHoldsCloneLock(t *testing.T) {
	ts := startSim(t, Options{Templates: true, TaskDuration: time.Hour})
	upid := ts.mustOK(ts.do("POST", "/nodes/pve/qemu/9000/clone", url.Values{"newid": {"100"}})).data().(string)
	if g, ok := ts.s.Guest(100); !ok || g.Lock != "clone" {
		t.Fatalf("during clone: guest 100 %+v (found %v); want lock clone", g, ok)
	}
	if id := ts.mustOK(ts.do("GET", "/cluster/nextid", nil)).data(); id != "101" {
		t.Errorf("nextid during clone: got %v; want 101", id)
	}
	if r := ts.do("POST", "/nodes/pve/lxc", url.Values{"vmid": {"100"}, "ostemplate": {TemplateVztmpl}}); r.status != 500 {
		t.Errorf("create on the id being cloned: got %d %q; want 500", r.status, r.reason)
	}
	ts.mustOK(ts.do("DELETE", "/nodes/pve/tasks/"+upid, nil))
	st := ts.waitTask(upid)
	if _, ok := ts.s.Guest(100); st["exitstatus"] == "OK" || ok {
		t.Errorf("stopped clone: exit %v, guest 100 still there %v", st["exitstatus"], ok)
	}
}

func TestCreateFromScratch(t *testing.T) {
	ts := startSim(t, Options{Templates: true})
	r := ts.do("POST", "/nodes/pve/lxc", url.Values{"vmid": {"200"}, "ostemplate": {"local:vztmpl/nope-1.tar.zst"}, "rootfs": {"local-lvm:8"}})
	if r.status != 500 || r.reason != "can't find file 'local:vztmpl/nope-1.tar.zst'" {
		t.Errorf("lxc create from a missing template: got %d %q", r.status, r.reason)
	}
	upid, st := ts.runTask("POST", "/nodes/pve/lxc", url.Values{"vmid": {"200"}, "ostemplate": {TemplateVztmpl}, "rootfs": {"local-lvm:8"}, "unprivileged": {"1"}})
	c, _ := ts.s.Guest(200)
	if st["exitstatus"] != "OK" || !strings.Contains(upid, ":vzcreate:200:") || c.Config["rootfs"] != "local-lvm:vm-200-disk-0,size=8G" || c.Config["unprivileged"] != "1" {
		t.Errorf("lxc create: upid %s exit %v config %v", upid, st["exitstatus"], c.Config)
	}
	upid, st = ts.runTask("POST", "/nodes/pve/qemu", url.Values{"vmid": {"201"}, "scsi0": {"local-lvm:32"}, "scsi1": {"local-lvm:4,iothread=1"}, "ide2": {"local-lvm:cloudinit"}})
	q, _ := ts.s.Guest(201)
	if st["exitstatus"] != "OK" || !strings.Contains(upid, ":qmcreate:201:") || q.Config["scsi0"] != "local-lvm:vm-201-disk-0,size=32G" || q.Config["scsi1"] != "local-lvm:vm-201-disk-1,iothread=1,size=4G" {
		t.Errorf("qemu create: upid %s exit %v config %v", upid, st["exitstatus"], q.Config)
	}
	r = ts.do("POST", "/nodes/pve/qemu", url.Values{"vmid": {"9000"}, "scsi0": {"local-lvm:32"}})
	if r.status != 500 || r.reason != "unable to create VM 9000 - VM 9000 already exists on node 'pve'" {
		t.Errorf("qemu create on the template's id: got %d %q", r.status, r.reason)
	}
}

// TestCreationResponsesMatchSchema holds the storage content list and the
// cloud-init list to the items of their schema's returns.
func TestCreationResponsesMatchSchema(t *testing.T) {
	ts := startSim(t, Options{Templates: true})
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/9000/config", url.Values{"ciuser": {"ops"}, "nameserver": {"10.0.0.53"}}))
	for _, tc := range []struct {
		schemaPath, path string
		extra            bool // pve-storage's list adds "content", which the schema omits
	}{
		{"/nodes/{node}/storage/{storage}/content", "/nodes/pve/storage/local/content", true},
		{"/nodes/{node}/storage/{storage}/content", "/nodes/pve/storage/local-lvm/content", true},
		{"/nodes/{node}/qemu/{vmid}/cloudinit", "/nodes/pve/qemu/9000/cloudinit", false},
	} {
		items, _ := returnsSchema(t, tc.schemaPath, "GET")["items"].(map[string]any)
		list := ts.mustOK(ts.do("GET", tc.path, nil)).dataList(t)
		if len(list) == 0 {
			t.Errorf("%s: empty list", tc.path)
		}
		for i, e := range list {
			checkObjectAgainst(t, tc.path+"["+itoa(i)+"]", items, e.(map[string]any), tc.extra)
		}
	}
}

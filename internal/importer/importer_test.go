package importer

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/deptest"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/wire"
)

func TestPure(t *testing.T) { deptest.CheckPure(t) }

func sampleReport() wire.Report {
	return wire.Report{
		Host: "pve-a", Time: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), DesiredGeneration: 3,
		Facts: wire.Facts{Node: "pve-a"},
		Guests: []wire.Guest{
			{VMID: 101, Kind: "lxc", Name: "web", Status: "running", Digest: "d1", Config: map[string]string{
				"cores": "2", "memory": "512", "onboot": "1", "description": "web frontend\n", "tags": "web;prod",
				"net0": "name=eth0,bridge=vmbr0,ip=dhcp", "rootfs": "local-lvm:vm-101-disk-0,size=8G", "cpulimit": "", "startup": "", "cores2": "x", "balloon": "lots",
			}},
			{VMID: 102, Kind: "qemu", Name: "db", Status: "stopped"},
			{VMID: 103, Kind: "qemu", Name: "tmpl", Status: "stopped", Template: true},
			{VMID: 104, Kind: "qemu", Name: "paused", Status: "paused", Lock: "backup"},
			// Unmanaged, as an agent of wire version 2 reports it.
			{VMID: 105, Kind: "qemu", Name: "app", Status: "running", Observed: map[string]string{
				"cores": "4", "sockets": "1", "memory": "8192", "name": "app", "onboot": "1", "cpu": "host",
				"description": "app server\nsecond line", "tags": "app", "ostype": "l26",
				"net0": "model=virtio,bridge=vmbr0,macaddr=BC:24:11:00:00:69", "scsi0": "file=local-lvm:vm-105-disk-0,size=32G",
			}},
		},
	}
}

// update rewrites the golden files: STEWARD_UPDATE_GOLDEN=1 go test ./internal/importer/
var update = os.Getenv("STEWARD_UPDATE_GOLDEN") != ""

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (STEWARD_UPDATE_GOLDEN=1 writes it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("output differs from %s:\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestGenerate(t *testing.T) {
	out, err := Generate("pve-a", sampleReport(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "all.yaml", out)
	doc, err := desired.Parse(out)
	if err != nil {
		t.Fatalf("the output does not parse: %v\n%s", err, out)
	}
	gs := doc.ForHost("pve-a").Guests
	if len(gs) != 4 || gs[103] != nil {
		t.Fatalf("guests: got %d (%v); want 101, 102, 104, 105 (the template left out)", len(gs), gs)
	}
	g := gs[101]
	wantCfg := map[string]string{"cpulimit": "0", "cores": "2", "memory": "512", "onboot": "1", "net0": "bridge=vmbr0,ip=dhcp,name=eth0"}
	if g.Kind != "lxc" || g.State != desired.Running || g.Description == nil || *g.Description != "web frontend" ||
		len(g.Tags) != 2 || len(g.Config) != len(wantCfg) {
		t.Errorf("101: got %+v config %v; want lxc running, description, tags and config %v", g, g.Config, wantCfg)
	}
	for k, v := range wantCfg {
		if g.Config[k] != v {
			t.Errorf("101 config %s: got %q; want %q", k, g.Config[k], v)
		}
	}
	if _, ok := g.Config["rootfs"]; ok {
		t.Errorf("101: rootfs is managed; want it only as a comment")
	}
	if g := gs[102]; g.Kind != "qemu" || g.State != desired.Stopped || g.Config != nil {
		t.Errorf("102: got %+v; want qemu stopped, no config", g)
	}
	if g := gs[104]; g.State != "" {
		t.Errorf("104 (paused): got state %q; want none", g.State)
	}
	// 105 is unmanaged: its observed config gives the picked keys; the
	// rest (cpu, ostype, the disk) are comments only.
	g = gs[105]
	wantCfg = map[string]string{"cores": "4", "sockets": "1", "memory": "8192", "name": "app", "onboot": "1",
		"net0": "model=virtio,bridge=vmbr0,macaddr=BC:24:11:00:00:69"}
	if g.State != desired.Running || g.Description == nil || *g.Description != "app server\nsecond line" || len(g.Tags) != 1 ||
		len(g.Config) != len(wantCfg) {
		t.Errorf("105: got %+v config %v; want running, description, tags and config %v", g, g.Config, wantCfg)
	}
	for k, v := range wantCfg {
		if g.Config[k] != v {
			t.Errorf("105 config %s: got %q; want %q", k, g.Config[k], v)
		}
	}
}

func TestGenerateSelectedKeepsCurrent(t *testing.T) {
	cur, err := desired.Parse([]byte(`apiVersion: steward/v1
kind: Fleet
hosts:
  pve-a:
    guests:
      101:
        mode: observe
        restart: allowed
        ignore: [net0]
        config: {cores: 4}
      200:
        kind: qemu
        state: running
        config: {memory: 2048}
`))
	if err != nil {
		t.Fatal(err)
	}
	out, err := Generate("pve-a", sampleReport(), Options{VMIDs: []int{101, 103}, Current: cur.ForHost("pve-a")})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "selected.yaml", out)
	doc, err := desired.Parse(out)
	if err != nil {
		t.Fatalf("the output does not parse: %v\n%s", err, out)
	}
	gs := doc.ForHost("pve-a").Guests
	if len(gs) != 3 || gs[102] != nil {
		t.Fatalf("guests: got %v; want 101, 103 and the kept 200", gs)
	}
	if g := gs[101]; g.Mode != desired.Observe || g.Restart != desired.RestartAllowed || len(g.Ignore) != 1 || g.Config["cores"] != "2" {
		t.Errorf("101: got %+v %v; want observe, restart allowed, ignore [net0] kept and cores 2 from the report", g, g.Config)
	}
	if g := gs[103]; g.Kind != "qemu" || g.State != "" || g.Config != nil {
		t.Errorf("103 (template, named): got %+v; want its kind only", g)
	}
	if g := gs[200]; g.Kind != "qemu" || g.State != desired.Running || g.Config["memory"] != "2048" {
		t.Errorf("200 (not imported): got %+v; want it kept as it was", g)
	}
}

func TestGenerateErrors(t *testing.T) {
	if _, err := Generate("pve-a", sampleReport(), Options{VMIDs: []int{999}}); !errors.Is(err, ErrNotReported) {
		t.Errorf("a vmid the report lacks: got %v; want ErrNotReported", err)
	}
	out, err := Generate("pve-a", wire.Report{Host: "pve-a"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if doc, err := desired.Parse(out); err != nil || !doc.IsEmpty() {
		t.Errorf("a report without guests: got %v %v; want an empty document that parses\n%s", doc, err, out)
	}
}

func TestPicked(t *testing.T) {
	for k, want := range map[string]bool{"cores": true, "net0": true, "net12": true, "net": false, "netx": false,
		"scsi0": false, "rootfs": false, "mp0": false, "memory": true, "hostname": true, "unused0": false} {
		if got := Picked(k); got != want {
			t.Errorf("Picked(%q): got %v; want %v", k, got, want)
		}
	}
}

func FuzzGenerate(f *testing.F) {
	f.Add(101, "lxc", "web", "running", "cores", "2")
	f.Add(102, "qemu", "a\"b", "stopped", "description", "x\n: y")
	f.Add(103, "lxc", "c", "running", "tags", "a b;c,d;é;-x")
	f.Fuzz(func(t *testing.T, vmid int, kind, name, status, key, val string) {
		rep := wire.Report{Host: "h", Guests: []wire.Guest{{VMID: vmid, Kind: kind, Name: name, Status: status, Config: map[string]string{key: val}}}}
		if rep.Validate() != nil {
			return
		}
		out, err := Generate("h", rep, Options{})
		if err != nil {
			t.Fatalf("Generate of a valid report: %v", err)
		}
		if _, err := desired.Parse(out); err != nil {
			t.Fatalf("Generate wrote a document that does not parse: %v\n%s", err, out)
		}
	})
}

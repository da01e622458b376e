package plan

import (
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
)

// pick returns a random element of xs.
func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.IntN(len(xs))] }

// randomHost builds n desired guests and their observed counterparts in
// every combination the planner distinguishes: kinds (also unknown and
// mismatched), modes, run states, templates, locks, unreadable or unread
// configs, missing digests, missing and duplicate guests, ignore lists,
// description and tags (also in config), deletions, and values in PVE's
// and operators' forms, equal or drifted.
func randomHost(r *rand.Rand, n int) (*desired.Host, []guest.Observed) {
	h := &desired.Host{Guests: map[int]*desired.Guest{}}
	var actual []guest.Observed
	for i := range n {
		id := 100 + i*pick(r, 1, 1, 7)
		if r.IntN(50) == 0 {
			id = pick(r, -5, 0, 1<<40)
		}
		kind := pick(r, guest.QEMU, guest.QEMU, guest.LXC, guest.Kind("other"))
		mac := pick(r, "BC:24:11:20:4E:3F", "bc:24:11:20:4e:3f", "BC:24:11:00:00:01")
		have := map[string]string{
			"cores": pick(r, "1", "2", "4"), "memory": pick(r, "4096", "current=4096", "8192"),
			"onboot": pick(r, "1", "0"), "name": "g" + strconv.Itoa(id),
			"net0":  pick(r, "virtio="+mac+",bridge=vmbr0,firewall=1", "virtio="+mac+",bridge=vmbr1", "name=eth0,hwaddr="+mac+",bridge=vmbr0,type=veth"),
			"scsi0": pick(r, "local-lvm:vm-1-disk-0,discard=on,size=32G,ssd=1", "local-lvm:vm-1-disk-0,size=64G"),
			"tags":  pick(r, "prod;web", "db", ""), "description": pick(r, "managed\n", "managed", "other", ""),
		}
		for k, v := range have {
			if v == "" || r.IntN(8) == 0 {
				delete(have, k)
			}
		}
		o := guest.Observed{VMID: id, Kind: kind, Status: pick(r, "running", "stopped", "stopped", "paused"),
			Config: have, Digest: "d" + strconv.Itoa(i), Lock: pick(r, "", "", "", "backup"), Template: r.IntN(10) == 0}
		switch r.IntN(20) {
		case 0:
			o.Config, o.ConfigErr = nil, "500 can't lock file"
		case 1:
			o.Config = nil
		case 2:
			o.Digest = ""
		}
		switch r.IntN(25) {
		case 0: // missing
		case 1:
			actual = append(actual, o, o)
		default:
			actual = append(actual, o)
		}

		g := &desired.Guest{
			Kind:  pick(r, guest.Kind(""), kind, kind, guest.LXC),
			Mode:  pick(r, desired.Mode(""), desired.Enforce, desired.Observe),
			State: pick(r, desired.State(""), desired.Running, desired.Stopped),
		}
		if r.IntN(3) > 0 {
			g.Config = map[string]string{}
			for _, k := range []string{"cores", "memory", "onboot", "net0", "scsi0", "balloon", "protection", "description", "tags"} {
				if r.IntN(2) == 0 {
					continue
				}
				g.Config[k] = pick(r, map[string][]string{
					"cores": {"1", "2", "02", "4"}, "memory": {"4096", "current=4096", "8192", "4096.0"},
					"onboot": {"true", "1", "no", ""}, "net0": {"virtio,bridge=vmbr0,firewall=1", "virtio=" + mac + ",bridge=vmbr0", "virtio,bridge=vmbr1", "bad,,=x"},
					"scsi0":   {"local-lvm:vm-1-disk-0,size=32768M,ssd=1,discard=on", "local-lvm:vm-1-disk-0,ssd=0"},
					"balloon": {"0", "512", ""}, "protection": {"0", "yes", ""}, "description": {"cfg", ""}, "tags": {"web;prod", "a"},
				}[k]...)
			}
		}
		if r.IntN(2) == 0 {
			g.Description = ptr(pick(r, "managed", "managed\r\n", "", "new"))
		}
		switch r.IntN(4) {
		case 0:
			g.Tags = []string{}
		case 1:
			g.Tags = pick(r, []string{"web", "prod"}, []string{"prod", "web", "web"}, []string{"db"}, []string{"a b", "c"})
		}
		if r.IntN(5) == 0 {
			g.Ignore = []string{pick(r, "cores", "state", "tags", "description", "net0")}
		}
		if r.IntN(30) == 0 {
			g = nil
		}
		h.Guests[id] = g
	}
	r.Shuffle(len(actual), func(i, j int) { actual[i], actual[j] = actual[j], actual[i] })
	return h, actual
}

// TestDiffMatchesReference checks that the optimized Diff gives exactly the
// plan of the plain reference planner on randomized hosts.
func TestDiffMatchesReference(t *testing.T) {
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 1))
		h, actual := randomHost(r, 200)
		got := Diff(h, actual, Options{})
		want := refDiff(h, actual, Options{})
		if !reflect.DeepEqual(got.Guests, want.Guests) {
			for i := range got.Guests {
				if i < len(want.Guests) && !reflect.DeepEqual(got.Guests[i], want.Guests[i]) {
					t.Fatalf("seed %d: guest %d: got %+v; want %+v", seed, i, got.Guests[i], want.Guests[i])
				}
			}
			t.Fatalf("seed %d: got %d statuses; want %d", seed, len(got.Guests), len(want.Guests))
		}
		if !reflect.DeepEqual(got.Steps, want.Steps) {
			for i := range got.Steps {
				if i < len(want.Steps) && !reflect.DeepEqual(got.Steps[i], want.Steps[i]) {
					t.Fatalf("seed %d: step %d: got %+v; want %+v", seed, i, got.Steps[i], want.Steps[i])
				}
			}
			t.Fatalf("seed %d: got %d steps; want %d", seed, len(got.Steps), len(want.Steps))
		}
	}
}

package sim

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pve"
)

// routeTable is the simulator's API surface: each route a method, a path
// template and its handler, matched in order.
type routeTable []route

func (t *routeTable) add(method, tmpl string, h handlerFunc) {
	*t = append(*t, route{method: method, segs: routeSegments(tmpl), tmpl: tmpl, h: h})
}

// newRoutes builds the route table every Sim serves: the node, cluster,
// task and guest routes here, the storage content, pool, content listing
// and clone routes in content.go, pools.go, templates.go and clone.go.
func newRoutes() routeTable {
	var t routeTable
	t.add("GET", "/version", (*Sim).getVersion)
	t.add("GET", "/nodes", (*Sim).getNodes)
	t.add("GET", "/nodes/{node}/status", (*Sim).getNodeStatus)
	t.add("GET", "/cluster/resources", (*Sim).getResources)
	t.add("GET", "/cluster/status", (*Sim).getClusterStatus)
	t.add("GET", "/cluster/nextid", (*Sim).getNextID)
	t.add("GET", "/nodes/{node}/storage", (*Sim).getStorage)
	t.add("GET", "/access/permissions", (*Sim).getPermissions)
	t.add("GET", "/nodes/{node}/tasks", (*Sim).getTasks)
	t.add("GET", "/nodes/{node}/tasks/{upid}/status", (*Sim).getTaskStatus)
	t.add("GET", "/nodes/{node}/tasks/{upid}/log", (*Sim).getTaskLog)
	t.add("DELETE", "/nodes/{node}/tasks/{upid}", (*Sim).deleteTask)
	for _, k := range []guest.Kind{guest.QEMU, guest.LXC} {
		k := k
		base := "/nodes/{node}/" + string(k)
		bind := func(h func(*Sim, guest.Kind, *request) response) handlerFunc {
			return func(s *Sim, q *request) response { return h(s, k, q) }
		}
		t.add("GET", base, bind((*Sim).getGuestList))
		t.add("POST", base, bind((*Sim).postCreate))
		t.add("GET", base+"/{vmid}/config", bind((*Sim).getConfig))
		t.add("PUT", base+"/{vmid}/config", bind((*Sim).putConfig))
		if k == guest.QEMU {
			t.add("POST", base+"/{vmid}/config", bind((*Sim).postConfig))
		}
		t.add("GET", base+"/{vmid}/pending", bind((*Sim).getPending))
		t.add("GET", base+"/{vmid}/status/current", bind((*Sim).getStatusCurrent))
		t.add("POST", base+"/{vmid}/status/start", bind((*Sim).postStart))
		t.add("POST", base+"/{vmid}/status/stop", bind((*Sim).postStop))
		t.add("POST", base+"/{vmid}/status/shutdown", bind((*Sim).postShutdown))
		t.add("POST", base+"/{vmid}/status/reboot", bind((*Sim).postReboot))
		t.add("PUT", base+"/{vmid}/resize", bind((*Sim).putResize))
		t.add("DELETE", base+"/{vmid}", bind((*Sim).deleteGuest))
		t.add("GET", base+"/{vmid}/snapshot", bind((*Sim).getSnapshots))
		t.add("POST", base+"/{vmid}/snapshot", bind((*Sim).postSnapshot))
		t.add("POST", base+"/{vmid}/snapshot/{snapname}/rollback", bind((*Sim).postRollback))
		t.add("DELETE", base+"/{vmid}/snapshot/{snapname}", bind((*Sim).deleteSnapshot))
	}
	t.addContentRoutes()
	t.addStorageRoutes()
	t.addPoolRoutes()
	t.addTemplateRoutes()
	t.addCloneRoutes()
	t.addCloudinitRoutes()
	t.addMigrateRoutes()
	return t
}

// Versions the simulator reports: PVE 9.1 (the schema's version).
const (
	pveVersion  = "9.1.1"
	pveRelease  = "9.1"
	pveRepoID   = "42db4a6cf33dac83"
	pveManager  = "pve-manager/9.1.1/42db4a6cf33dac83"
	kernelVer   = "Linux 6.17.2-1-pve #1 SMP PREEMPT_DYNAMIC PMX 6.17.2-1 (2025-10-21T11:55Z)"
	nodeCPUs    = 16
	nodeMemory  = int64(68719476736)
	nodeRootfs  = int64(100861726720)
	guestDiskRW = int64(1 << 20)
)

func (s *Sim) getVersion(q *request) response {
	return reply(map[string]any{"version": pveVersion, "release": pveRelease, "repoid": pveRepoID, "console": "xtermjs"})
}

func (s *Sim) nodeUptime() int64 { return int64(s.now().Sub(s.bootTime).Seconds()) }

// usedMemLocked is node's memory in use: a base plus half of each running
// guest's memory there.
func (s *Sim) usedMemLocked(node string) int64 {
	used := int64(2 << 30)
	for _, g := range s.guests {
		if g.running && g.node == node {
			used += g.memBytes() / 2
		}
	}
	return min(used, nodeMemory-(1<<30))
}

func (s *Sim) getNodes(q *request) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []any{}
	// GET /nodes is user=all and lists every cluster member. Every node
	// of the simulated cluster serves the one certificate.
	for _, n := range s.nodes {
		out = append(out, map[string]any{
			"node": n, "status": "online", "type": "node", "id": "node/" + n,
			"cpu": 0.0123, "maxcpu": nodeCPUs, "mem": s.usedMemLocked(n), "maxmem": nodeMemory,
			"disk": int64(9992273920), "maxdisk": nodeRootfs, "uptime": s.nodeUptime(),
			"level": "", "ssl_fingerprint": s.fp,
		})
	}
	return reply(out)
}

func (s *Sim) getNodeStatus(q *request) response {
	s.mu.Lock()
	mem := s.usedMemLocked(q.vars["node"])
	s.mu.Unlock()
	return reply(map[string]any{
		"uptime": s.nodeUptime(), "cpu": 0.0123, "wait": 0.0001, "idle": 0,
		"loadavg":    []string{"0.31", "0.28", "0.25"},
		"pveversion": pveManager, "kversion": kernelVer,
		"current-kernel": map[string]any{"sysname": "Linux", "release": "6.17.2-1-pve", "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.17.2-1 (2025-10-21T11:55Z)", "machine": "x86_64"},
		"boot-info":      map[string]any{"mode": "efi", "secureboot": 0},
		"cpuinfo": map[string]any{"model": "AMD EPYC 7302P 16-Core Processor", "mhz": "3000.000", "hvm": "1",
			"sockets": 1, "cores": nodeCPUs, "cpus": nodeCPUs, "user_hz": 100, "flags": "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov svm"},
		"memory": map[string]any{"total": nodeMemory, "used": mem, "free": nodeMemory - mem, "available": nodeMemory - mem},
		"swap":   map[string]any{"total": 0, "used": 0, "free": 0},
		"ksm":    map[string]any{"shared": 0},
		"rootfs": map[string]any{"total": nodeRootfs, "used": int64(9992273920), "free": nodeRootfs - 9992273920, "avail": nodeRootfs - 9992273920},
	})
}

// statusFields are the runtime fields common to lists, status/current and
// cluster/resources rows.
func (s *Sim) statusFields(g *guestState) map[string]any {
	st := "stopped"
	var uptime, mem, disk, netin, netout, dr, dw int64
	cpu := 0.0
	if g.running {
		st = "running"
		uptime = max(0, int64(s.now().Sub(g.startedAt).Seconds()))
		mem = g.memBytes() / 3
		netin, netout = 1000*uptime+int64(g.vmid), 300*uptime
		dr, dw = guestDiskRW*int64(g.vmid%97+1), guestDiskRW*int64(g.vmid%13+1)
		cpu = float64(g.vmid%7) / 100
		if g.kind == guest.LXC {
			disk = g.maxDisk() / 5
		}
	}
	m := map[string]any{
		"status": st, "name": g.name(), "uptime": uptime, "cpu": cpu, "cpus": g.cpus(),
		"maxmem": g.memBytes(), "mem": mem, "maxdisk": g.maxDisk(), "disk": disk,
		"netin": netin, "netout": netout, "diskread": dr, "diskwrite": dw,
	}
	if l := g.config["lock"]; l != "" {
		m["lock"] = l
	}
	if t := g.config["tags"]; t != "" {
		m["tags"] = t
	}
	if g.config["template"] == "1" {
		m["template"] = 1
	}
	if g.running {
		m["pid"] = 100000 + g.vmid
	}
	if g.kind == guest.LXC {
		m["type"] = "lxc"
		m["maxswap"] = g.swapBytes()
		m["swap"] = 0
	}
	return m
}

func (s *Sim) sortedGuestsLocked() []*guestState {
	out := make([]*guestState, 0, len(s.guests))
	for _, g := range s.guests {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].vmid < out[j].vmid })
	return out
}

func canAudit(t *token, vmid int) bool {
	return t.has("/vms/"+strconv.Itoa(vmid), "VM.Audit")
}

func (s *Sim) getGuestList(k guest.Kind, q *request) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []any{}
	for _, g := range s.sortedGuestsLocked() {
		if g.kind != k || g.node != q.vars["node"] || !canAudit(q.tok, g.vmid) {
			continue
		}
		m := s.statusFields(g)
		m["vmid"] = g.vmid
		if k == guest.QEMU {
			delete(m, "disk")
			m["disk"] = 0
		}
		out = append(out, m)
	}
	return reply(out)
}

func (s *Sim) getResources(q *request) response {
	typ := q.params["type"]
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []any{}
	if typ == "" {
		out = append(out, s.poolResourcesLocked(q.tok)...)
	}
	if typ == "" || typ == "vm" {
		for _, g := range s.sortedGuestsLocked() {
			if !canAudit(q.tok, g.vmid) {
				continue
			}
			m := s.vmResourceLocked(g)
			if pool := s.poolOfLocked(g.vmid); pool != "" && q.tok.has("/pool/"+pool, "Pool.Audit") {
				m["pool"] = pool
			}
			out = append(out, m)
		}
	}
	for _, n := range s.nodes {
		if (typ == "" || typ == "node") && q.tok.has("/nodes/"+n, "Sys.Audit") {
			out = append(out, map[string]any{
				"id": "node/" + n, "type": "node", "node": n, "status": "online",
				"cpu": 0.0123, "maxcpu": nodeCPUs, "mem": s.usedMemLocked(n), "maxmem": nodeMemory,
				"disk": int64(9992273920), "maxdisk": nodeRootfs, "uptime": s.nodeUptime(),
				"level": "", "cgroup-mode": 2,
			})
		}
	}
	if typ == "" || typ == "storage" {
		// One row per storage and node, shared storages included, as
		// PVE lists them.
		for _, n := range s.nodes {
			for _, st := range storages {
				if !canSeeStorage(q.tok, st.id) {
					continue
				}
				out = append(out, s.storageResource(n, st))
			}
		}
	}
	return reply(out)
}

// vmResourceLocked is a guest's /cluster/resources row as PVE's
// API2Tools extract_vm_stats builds it, plus lock and tags.
func (s *Sim) vmResourceLocked(g *guestState) map[string]any {
	m := s.statusFields(g)
	delete(m, "cpus")
	delete(m, "pid")
	delete(m, "maxswap")
	delete(m, "swap")
	m["maxcpu"] = g.cpus()
	m["vmid"] = g.vmid
	m["id"] = fmt.Sprintf("%s/%d", g.kind, g.vmid)
	m["type"] = string(g.kind)
	m["node"] = g.node
	if hs := g.hastate(); hs != "" {
		m["hastate"] = hs
	}
	if _, ok := m["template"]; !ok {
		m["template"] = 0
	}
	return m
}

// storageResource is a storage's /cluster/resources row (API2Tools
// extract_storage_stats). s.mu must be held.
func (s *Sim) storageResource(node string, st storageDef) map[string]any {
	return map[string]any{
		"id": "storage/" + node + "/" + st.id, "type": "storage", "storage": st.id, "node": node,
		"status": "available", "plugintype": st.typ, "content": st.content, "shared": st.shared,
		"disk": s.storageUsedLocked(st), "maxdisk": st.total,
	}
}

func canSeeStorage(t *token, id string) bool {
	p := "/storage/" + id
	return t.has(p, "Datastore.Audit") || t.has(p, "Datastore.AllocateSpace")
}

func (s *Sim) getNextID(q *request) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := q.params["vmid"]; ok {
		id, _ := strconv.Atoi(v)
		if _, taken := s.guests[id]; taken {
			return paramFail(map[string]string{"vmid": fmt.Sprintf("VM %d already exists", id)})
		}
		return reply(strconv.Itoa(id))
	}
	for id := 100; ; id++ {
		if _, taken := s.guests[id]; !taken {
			return reply(strconv.Itoa(id))
		}
	}
}

func (s *Sim) getStorage(q *request) response {
	out := []any{}
	s.mu.Lock()
	defer s.mu.Unlock()
	content := q.params["content"]
	for _, st := range storages {
		if !canSeeStorage(q.tok, st.id) {
			continue
		}
		if sid := q.params["storage"]; sid != "" && sid != st.id {
			continue
		}
		if content != "" && !strings.Contains(","+st.content+",", ","+content+",") {
			continue
		}
		used := s.storageUsedLocked(st)
		e := map[string]any{
			"storage": st.id, "type": st.typ, "content": st.content, "active": 1, "enabled": 1, "shared": st.shared,
			"total": st.total, "used": used, "avail": max(st.total-used, 0),
			"used_fraction": float64(used) / float64(st.total),
		}
		out = append(out, e)
	}
	return reply(out)
}

// allPrivs are the privileges an admin token holds (PVE's Administrator role, abridged to what steward meets).
var allPrivs = []string{"Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate", "Datastore.Audit",
	"Pool.Allocate", "Pool.Audit", "Sys.Audit", "Sys.Console", "Sys.Modify", "Sys.PowerMgmt", "Sys.Syslog",
	"VM.Allocate", "VM.Audit", "VM.Backup", "VM.Clone", "VM.Config.CDROM", "VM.Config.CPU", "VM.Config.Cloudinit",
	"VM.Config.Disk", "VM.Config.HWType", "VM.Config.Memory", "VM.Config.Network", "VM.Config.Options",
	"VM.Console", "VM.Migrate", "VM.PowerMgmt", "VM.Snapshot", "VM.Snapshot.Rollback"}

// getPermissions is GET /access/permissions (pve-access-control's
// API2::AccessControl permissions): the effective privileges of the
// caller, or of the token userid names (another's need Sys.Audit on
// /access), on the one path asked for (the answer's key is the path as
// given, an empty map when nothing is held), or on every path
// RPCEnvironment's get_effective_permissions walks: the top-level paths,
// every path with a grant (any token's: the ACL tree is shared) and every
// pool member's path, leaving out paths where nothing is held. Each
// privilege maps to its propagate flag: 1 for a grant on the path or an
// ancestor, 0 where only a resource pool passes it on (pool-derived roles
// never propagate).
func (s *Sim) getPermissions(q *request) response {
	t := q.tok
	if uid, ok := q.params["userid"]; ok && uid != t.id {
		if !t.has("/access", "Sys.Audit") {
			return fail(403, "Permission check failed (/access, Sys.Audit)")
		}
		s.mu.Lock()
		t = s.tokens[uid]
		s.mu.Unlock()
	}
	if p := q.params["path"]; p != "" && p != "0" { // Perl truth
		return reply(map[string]map[string]int{p: effectivePrivs(t, normACLPath(p))})
	}
	paths := map[string]bool{"/": true, "/access": true, "/access/groups": true, "/nodes": true,
		"/pool": true, "/sdn": true, "/storage": true, "/vms": true}
	s.mu.Lock()
	for _, tok := range s.tokens {
		for p := range tok.privs {
			paths[p] = true
		}
	}
	for _, pl := range s.pools {
		for vmid := range pl.vms {
			paths["/vms/"+strconv.Itoa(vmid)] = true
		}
		for st := range pl.storage {
			paths["/storage/"+st] = true
		}
	}
	s.mu.Unlock()
	out := map[string]map[string]int{}
	for p := range paths {
		if m := effectivePrivs(t, p); len(m) > 0 {
			out[p] = m
		}
	}
	return reply(out)
}

// effectivePrivs is what RPCEnvironment::permissions answers for t on the
// normalized ACL path p: privilege -> propagate flag. A nil t (an
// unknown token) holds nothing.
func effectivePrivs(t *token, p string) map[string]int {
	m := map[string]int{}
	if t == nil {
		return m
	}
	for _, pr := range allPrivs {
		switch {
		case t.admin || t.hasOnPath(p, pr):
			m[pr] = 1
		case t.has(p, pr):
			m[pr] = 0 // from a pool
		}
	}
	return m
}

// getGuest finds a guest of kind k by the request's vmid.
// withGuest runs fn on the guest the request names, under the
// simulator's lock; an unknown or other-kind guest gets PVE's answer.
func (s *Sim) withGuest(k guest.Kind, q *request, fn func(g *guestState) response) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, resp, found := s.getGuestLocked(k, q)
	if !found {
		return resp
	}
	return fn(g)
}

func (s *Sim) getGuestLocked(k guest.Kind, q *request) (*guestState, response, bool) {
	vmid, _ := strconv.Atoi(q.params["vmid"])
	g, found := s.guests[vmid]
	node := q.vars["node"]
	if !found || g.kind != k || g.node != node {
		// PVE loads the config from the node's own directory: a guest
		// on another node of the cluster is not found there.
		return nil, noConfig(node, k, vmid), false
	}
	return g, response{}, true
}

func (s *Sim) getConfig(k guest.Kind, q *request) response {
	return s.withGuest(k, q, func(g *guestState) response {
		if name, okS := q.params["snapshot"]; okS {
			sn := g.snapshots[name]
			if sn == nil {
				return fail(500, "snapshot '%s' does not exist", name)
			}
			c := cloneMap(sn.config)
			delete(c, "description")
			if sn.description != "" {
				c["description"] = sn.description
			}
			c["snaptime"] = strconv.FormatInt(sn.snaptime, 10)
			if sn.parent != "" {
				c["parent"] = sn.parent
			}
			return reply(configJSON(k, c, g.digest()))
		}
		if q.bool("current") {
			return reply(configJSON(k, g.config, g.digest()))
		}
		return reply(configJSON(k, g.view(), g.digest()))
	})
}

func (s *Sim) getPending(k guest.Kind, q *request) response {
	return s.withGuest(k, q, func(g *guestState) response {
		return reply(g.pendingJSON())
	})
}

func (s *Sim) getStatusCurrent(k guest.Kind, q *request) response {
	return s.withGuest(k, q, func(g *guestState) response {
		m := s.statusFields(g)
		m["vmid"] = g.vmid
		m["ha"] = map[string]any{"managed": 0}
		if hs := g.hastate(); hs != "" {
			m["ha"] = map[string]any{"managed": 1, "state": hs}
		}
		if k == guest.QEMU {
			m["qmpstatus"] = m["status"]
			if a := g.config["agent"]; a == "1" || strings.Contains(a, "enabled=1") {
				m["agent"] = 1
			}
			if g.running {
				m["running-qemu"] = "10.0.2"
				m["running-machine"] = "pc-i440fx-10.0+pve0"
				m["balloon"] = g.memBytes()
				m["freemem"] = g.memBytes() / 2
				m["shares"] = 1000
			}
		}
		return reply(m)
	})
}

func (s *Sim) getSnapshots(k guest.Kind, q *request) response {
	return s.withGuest(k, q, func(g *guestState) response {
		out := []any{}
		for _, name := range sortedKeys(g.snapshots) {
			sn := g.snapshots[name]
			// Snapshot sections are parsed like the main section: LXC keeps
			// the description's trailing newline, QEMU strips it.
			e := map[string]any{"name": sn.name, "description": readDescription(k, sn.description), "snaptime": sn.snaptime}
			if k == guest.QEMU {
				e["vmstate"] = b2i(sn.vmstate)
			}
			if sn.parent != "" {
				e["parent"] = sn.parent
			}
			out = append(out, e)
		}
		cur := map[string]any{"name": "current", "description": "You are here!", "digest": g.digest(), "running": b2i(g.running)}
		if p := g.config["parent"]; p != "" {
			cur["parent"] = p
		}
		out = append(out, cur)
		return reply(out)
	})
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// taskJSON is a task as GET …/tasks/{upid}/status shows it.
func taskJSON(t *task) map[string]any {
	m := taskRow(t)
	m["status"] = t.status
	if t.status == "stopped" {
		m["exitstatus"] = t.exit
	}
	return m
}

func (s *Sim) findTask(q *request) (*task, response, bool) {
	id := q.params["upid"]
	if _, err := pve.ParseUPID(id); err != nil {
		return nil, paramFail(map[string]string{"upid": "unable to parse worker upid"}), false
	}
	t := s.tasks[id]
	// A task's log lives on the node that ran it; another node has no
	// such task.
	if t == nil || t.upid.Node != q.vars["node"] {
		return nil, paramFail(map[string]string{"upid": "no such task"}), false
	}
	if t.tokenID != q.tok.id && !q.tok.has("/nodes/"+t.upid.Node, "Sys.Audit") {
		return nil, fail(403, "Permission check failed (/nodes/%s, Sys.Audit)", t.upid.Node), false
	}
	return t, response{}, true
}

// deleteTask stops a running task; it ends "interrupted by signal". Others'
// tasks need Sys.Modify on the node.
func (s *Sim) deleteTask(q *request) response {
	s.mu.Lock()
	t, resp, found := s.findTask(q)
	if found && t.tokenID != q.tok.id && !q.tok.has("/nodes/"+t.upid.Node, "Sys.Modify") {
		resp, found = fail(403, "Permission check failed (/nodes/%s, Sys.Modify)", t.upid.Node), false
	}
	s.mu.Unlock()
	if !found {
		return resp
	}
	t.cancel()
	<-t.done
	return reply(nil)
}

func (s *Sim) getTaskStatus(q *request) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, resp, found := s.findTask(q)
	if !found {
		return resp
	}
	return reply(taskJSON(t))
}

func (s *Sim) getTaskLog(q *request) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	// read_task_log does not check that the task exists: it checks the
	// UPID parses, the caller owns it (by the UPID's user) or has
	// Sys.Audit, then dump_logfile answers a missing file with one bare
	// object (not an array) and total 1.
	u, err := pve.ParseUPID(q.params["upid"])
	if err != nil {
		return paramFail(map[string]string{"upid": "unable to parse worker upid"})
	}
	node := q.vars["node"]
	if u.User != q.tok.id && !q.tok.has("/nodes/"+node, "Sys.Audit") {
		return fail(403, "Permission check failed (/nodes/%s, Sys.Audit)", node)
	}
	t := s.tasks[q.params["upid"]]
	if t == nil || t.upid.Node != node {
		one := 1
		return response{status: 200, data: map[string]any{"n": 1, "t": "unable to open file - No such file or directory"}, total: &one}
	}
	lines := t.log
	start, limit := q.int("start", 0), q.int("limit", 50)
	if len(lines) == 0 {
		// PVE's dump_logfile: an empty file yields one line, whatever start is.
		lines, start, limit = []string{"no content"}, 0, 0
	}
	out := []any{}
	for i := start; i < len(lines) && (limit == 0 || i < start+limit); i++ {
		out = append(out, map[string]any{"n": i + 1, "t": lines[i]})
	}
	total := len(lines)
	return response{status: 200, data: out, total: &total}
}

func (s *Sim) getTasks(q *request) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	source := q.params["source"]
	if source == "" {
		source = "archive"
	}
	// Status classes to list (pve-manager node_tasks): errors=1 drops only
	// "ok" and overrides statusfilter; running tasks are "unknown".
	classes := map[string]bool{"ok": true, "warning": true, "error": true, "unknown": true}
	if sf, has := q.params["statusfilter"]; has && !q.bool("errors") {
		classes = map[string]bool{}
		for _, f := range splitList(sf) {
			classes[strings.ToLower(f)] = true
		}
	} else if q.bool("errors") {
		classes["ok"] = false
	}
	node := q.vars["node"]
	audit := q.tok.has("/nodes/"+node, "Sys.Audit")
	keep := func(t *task) bool {
		if t.upid.Node != node {
			return false
		}
		user, _, _ := strings.Cut(t.upid.User, "!")
		if uf := q.params["userfilter"]; uf != "" && !strings.Contains(strings.ToLower(user), strings.ToLower(uf)) {
			return false
		}
		if !audit && t.tokenID != q.tok.id {
			return false
		}
		if tf := q.params["typefilter"]; tf != "" && t.upid.Type != tf {
			return false
		}
		if v := q.params["vmid"]; v != "" && v != "0" && t.upid.ID != v {
			return false
		}
		if v, has := q.params["since"]; has {
			if n, _ := strconv.ParseInt(v, 10, 64); t.upid.StartTime < n {
				return false
			}
		}
		if v, has := q.params["until"]; has {
			if n, _ := strconv.ParseInt(v, 10, 64); t.upid.StartTime > n {
				return false
			}
		}
		return classes[taskClass(t)]
	}
	// Active (running) tasks come first, then the archive, newest first.
	var rows []map[string]any
	for _, wantRunning := range []bool{true, false} {
		if (wantRunning && source == "archive") || (!wantRunning && source == "active") {
			continue
		}
		for i := len(s.taskOrder) - 1; i >= 0; i-- {
			t := s.taskOrder[i]
			if (t.status == "running") != wantRunning || !keep(t) {
				continue
			}
			m := taskRow(t)
			if wantRunning {
				m["status"] = "RUNNING"
			} else {
				m["status"] = t.exit
				m["endtime"] = t.endtime
			}
			rows = append(rows, m)
		}
	}
	total := len(rows)
	start, limit := q.int("start", 0), q.int("limit", 50)
	out := []any{}
	for i := start; i < len(rows) && i < start+limit; i++ {
		out = append(out, rows[i])
	}
	return response{status: 200, data: out, total: &total}
}

// taskRow is the part of a task list row or task status every task has;
// a token's task shows user and tokenid separately, as pve-manager's
// convert_token_task does.
func taskRow(t *task) map[string]any {
	m := map[string]any{
		"upid": t.id, "node": t.upid.Node, "pid": t.upid.PID, "pstart": t.upid.PStart,
		"starttime": t.upid.StartTime, "type": t.upid.Type, "id": t.upid.ID, "user": t.upid.User,
	}
	if u, tokID, isTok := strings.Cut(t.upid.User, "!"); isTok {
		m["user"] = u
		m["tokenid"] = tokID
	}
	return m
}

// taskClass is PVE's upid_normalize_status_type: ok, warning, error, or
// unknown for a task without an exit status (running).
func taskClass(t *task) string {
	switch {
	case t.status == "running":
		return "unknown"
	case t.exit == "OK":
		return "ok"
	case warningsRE.MatchString(t.exit):
		return "warning"
	}
	return "error"
}

var warningsRE = regexp.MustCompile(`^WARNINGS: \d+$`)

package sim

// Resource pools, as a client reading them meets them on PVE 9
// (pve-manager PVE/API2/Pool.pm, the pool parts of PVE/API2/Cluster.pm
// resources, pve-access-control's pool membership in user.cfg):
//
//   - GET /pools lists the pools the caller has Pool.Audit on, sorted by
//     id, each {poolid, comment?}; with poolid= it answers that one pool
//     with its members ([] without Pool.Audit, 500 "pool 'x' does not
//     exist" for a missing one), type= filters the members.
//   - GET /pools/{poolid} (deprecated) answers {members, comment?}.
//   - Members are rows like /cluster/resources ones (API2Tools
//     extract_vm_stats / extract_storage_stats); a member guest that does
//     not exist is skipped.
//   - GET /cluster/resources starts with one "pool" row per auditable pool
//     (id "/pool/<id>", with the summed uptime/mem/cpu of its running
//     guests) and names a member guest's pool in its row's "pool" when the
//     caller may audit that pool.
//   - Creating a guest with pool= needs the pool to exist (403
//     "Permission check failed (pool 'x' does not exist)") and adds the
//     guest when the create task succeeds; destroying a guest removes it
//     from its pool (AccessControl remove_vm_access).
//
// A privilege granted on /pool/<id> holds on the pool's guests
// (/vms/<vmid>) and storages (/storage/<id>), as PVE's pools pass their
// permissions on to their members.
//
// Pools are made with AddPool or POST /_sim/pools; the API's own pool
// writes (POST/PUT/DELETE /pools) are not simulated.

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

func (t *routeTable) addPoolRoutes() {
	t.add("GET", "/pools", (*Sim).getPools)
	t.add("GET", "/pools/{poolid}", (*Sim).getPoolDeprecated)
}

// membership is an immutable snapshot of which pools hold which guests and
// storages, published (Sim.members) whenever pools change, so permission
// checks read it without the simulator's lock.
type membership struct {
	vm      map[int]string      // vmid -> pool
	storage map[string][]string // storage id -> pools
}

// poolsOf is the pools whose permissions reach ACL path p (a guest or a
// storage); nil for any other path. m may be nil.
func (m *membership) poolsOf(p string) []string {
	if m == nil {
		return nil
	}
	if rest, ok := strings.CutPrefix(p, "/vms/"); ok {
		if vmid, err := strconv.Atoi(rest); err == nil {
			if pool := m.vm[vmid]; pool != "" {
				return []string{pool}
			}
		}
		return nil
	}
	if rest, ok := strings.CutPrefix(p, "/storage/"); ok {
		return m.storage[rest]
	}
	return nil
}

// publishMembershipLocked snapshots the pools for permission checks;
// s.mu must be held.
func (s *Sim) publishMembershipLocked() {
	m := &membership{vm: map[int]string{}, storage: map[string][]string{}}
	for _, id := range sortedKeys(s.pools) {
		p := s.pools[id]
		for vmid := range p.vms {
			m.vm[vmid] = id
		}
		for st := range p.storage {
			m.storage[st] = append(m.storage[st], id)
		}
	}
	s.members.Store(m)
}

// pool is one resource pool of user.cfg.
type pool struct {
	comment string
	vms     map[int]bool
	storage map[string]bool
}

// PoolSpec describes a resource pool to add with AddPool or
// POST /_sim/pools.
type PoolSpec struct {
	PoolID  string   `json:"poolid"`  // "prod", nested "prod/web" (up to 3 levels; the parent must exist)
	Comment string   `json:"comment"` // optional
	VMIDs   []int    `json:"vms"`     // member guests; they need not exist (yet), as in PVE
	Storage []string `json:"storage"` // member storages: "local", "local-lvm"
}

// poolIDRE is pve-access-control's verify_poolname.
var poolIDRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._\-]*(?:/[A-Za-z0-9_][A-Za-z0-9._\-]*){0,2}$`)

// AddPool adds a resource pool with its members. It fails, changing
// nothing, on a malformed or taken pool id, a nested pool whose parent
// does not exist, a guest that already belongs to another pool, or an
// unknown storage.
func (s *Sim) AddPool(p PoolSpec) error {
	if !poolIDRE.MatchString(p.PoolID) {
		return fmt.Errorf("sim: pool name %q is not valid (letters, digits, '.', '_', '-', up to 3 levels joined by '/')", p.PoolID)
	}
	for _, id := range p.Storage {
		if _, ok := storageByID(id); !ok {
			return fmt.Errorf("sim: pool %s: storage %q does not exist (the simulator has local and local-lvm)", p.PoolID, id)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.pools[p.PoolID]; taken {
		return fmt.Errorf("sim: pool %q already exists", p.PoolID)
	}
	if i := strings.LastIndexByte(p.PoolID, '/'); i > 0 {
		if _, ok := s.pools[p.PoolID[:i]]; !ok {
			return fmt.Errorf("sim: pool %s: parent pool %q does not exist", p.PoolID, p.PoolID[:i])
		}
	}
	for _, vmid := range p.VMIDs {
		if vmid < 100 || vmid > 999999999 {
			return fmt.Errorf("sim: pool %s: vmid %d out of range 100-999999999", p.PoolID, vmid)
		}
		if other := s.poolOfLocked(vmid); other != "" {
			return fmt.Errorf("sim: pool %s: VM %d belongs already to pool '%s'", p.PoolID, vmid, other)
		}
	}
	np := &pool{comment: p.Comment, vms: map[int]bool{}, storage: map[string]bool{}}
	for _, vmid := range p.VMIDs {
		np.vms[vmid] = true
	}
	for _, id := range p.Storage {
		np.storage[id] = true
	}
	if s.pools == nil {
		s.pools = map[string]*pool{}
	}
	s.pools[p.PoolID] = np
	s.publishMembershipLocked()
	return nil
}

// poolOfLocked is the pool guest vmid belongs to, "" if none.
func (s *Sim) poolOfLocked(vmid int) string {
	for id, p := range s.pools {
		if p.vms[vmid] {
			return id
		}
	}
	return ""
}

// poolExists reports whether pool id exists.
func (s *Sim) poolExists(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.pools[id]
	return ok
}

// removeFromPoolLocked drops vmid from its pool, as a guest's destroy does.
func (s *Sim) removeFromPoolLocked(vmid int) {
	for _, p := range s.pools {
		delete(p.vms, vmid)
	}
	s.publishMembershipLocked()
}

// addToPoolLocked adds vmid to pool id; like AccessControl
// add_vm_to_pool it does nothing when the pool is gone.
func (s *Sim) addToPoolLocked(id string, vmid int) {
	if p := s.pools[id]; p != nil {
		s.removeFromPoolLocked(vmid)
		p.vms[vmid] = true
		s.publishMembershipLocked()
	}
}

// sortedPoolIDsLocked is the pool ids in Perl's `sort keys` order.
func (s *Sim) sortedPoolIDsLocked() []string {
	return sortedKeys(s.pools)
}

// poolMembersLocked is a pool's member list; typ "" lists all, "qemu" or
// "lxc" only those guests, "storage" only storages. Guests come first in
// Perl's string order of their vmids, as `sort keys` gives them.
func (s *Sim) poolMembersLocked(p *pool, typ string) []any {
	ids := make([]string, 0, len(p.vms))
	for vmid := range p.vms {
		ids = append(ids, strconv.Itoa(vmid))
	}
	sort.Strings(ids)
	out := []any{}
	for _, id := range ids {
		vmid, _ := strconv.Atoi(id)
		g := s.guests[vmid]
		if g == nil || typ != "" && typ != string(g.kind) {
			continue
		}
		m := s.vmResourceLocked(g)
		delete(m, "lock") // extract_vm_stats has neither
		delete(m, "tags")
		delete(m, "hastate") // /cluster/resources adds it, not extract_vm_stats
		out = append(out, m)
	}
	if typ == "" || typ == "storage" {
		for _, id := range sortedKeys(p.storage) {
			if st, ok := storageByID(id); ok {
				out = append(out, s.storageResource(s.node, st))
			}
		}
	}
	return out
}

func (s *Sim) getPools(q *request) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []any{}
	if id, one := q.params["poolid"]; one {
		if !q.tok.has("/pool/"+id, "Pool.Audit") {
			return reply(out)
		}
		p := s.pools[id]
		if p == nil {
			return fail(500, "pool '%s' does not exist", id)
		}
		e := map[string]any{"poolid": id, "members": s.poolMembersLocked(p, q.params["type"])}
		if p.comment != "" {
			e["comment"] = p.comment
		}
		return reply(append(out, e))
	}
	for _, id := range s.sortedPoolIDsLocked() {
		if !q.tok.has("/pool/"+id, "Pool.Audit") {
			continue
		}
		e := map[string]any{"poolid": id}
		if c := s.pools[id].comment; c != "" {
			e["comment"] = c
		}
		out = append(out, e)
	}
	return reply(out)
}

// getPoolDeprecated is GET /pools/{poolid}; its Pool.Audit check is the
// schema's, made before the handler runs.
func (s *Sim) getPoolDeprecated(q *request) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := q.params["poolid"]
	p := s.pools[id]
	if p == nil {
		return fail(500, "pool '%s' does not exist", id)
	}
	e := map[string]any{"members": s.poolMembersLocked(p, q.params["type"])}
	if p.comment != "" {
		e["comment"] = p.comment
	}
	return reply(e)
}

// poolResourcesLocked is the "pool" rows of /cluster/resources: one per
// pool the token may audit, carrying the summed usage of its running
// guests (uptime the longest, cpu weighted by maxcpu), as pve-manager
// computes it.
func (s *Sim) poolResourcesLocked(tok *token) []any {
	var out []any
	for _, id := range s.sortedPoolIDsLocked() {
		if !tok.has("/pool/"+id, "Pool.Audit") {
			continue
		}
		e := map[string]any{"id": "/pool/" + id, "pool": id, "type": "pool"}
		var uptime, mem, maxmem int64
		var cpu float64
		maxcpu := 0
		for _, g := range s.sortedGuestsLocked() {
			if !s.pools[id].vms[g.vmid] {
				continue
			}
			r := s.vmResourceLocked(g)
			up := r["uptime"].(int64)
			if up == 0 {
				continue
			}
			uptime = max(uptime, up)
			mem += r["mem"].(int64)
			maxmem += r["maxmem"].(int64)
			gc, gmax := r["cpu"].(float64), r["maxcpu"].(int)
			cpu = (cpu*float64(maxcpu) + gc*float64(gmax)) / float64(maxcpu+gmax)
			maxcpu += gmax
		}
		if maxcpu > 0 {
			e["uptime"], e["mem"], e["maxmem"], e["cpu"], e["maxcpu"] = uptime, mem, maxmem, cpu, maxcpu
		}
		out = append(out, e)
	}
	return out
}

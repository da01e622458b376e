package sim

import (
	"sort"
	"strings"
)

// Storage usage. PVE's storage status (pve-storage API2::Storage::Status
// read_status, Plugin::status) reports a storage's total, used and avail
// bytes; for LVM-thin, used is the thin pool's data usage (lvs data_percent
// of the pool size), which grows as guests write, not when volumes are
// allocated. The simulator's guests write nothing, so it counts every
// volume a guest holds as fully written: used is the storage's seeded base
// usage plus the sizes of the volumes on it (current config, pending,
// snapshots, unused), and it grows with every allocation, clone and resize
// and shrinks when a volume is freed. That is the worst case a headroom
// check must plan for.

func (t *routeTable) addStorageRoutes() {
	t.add("GET", "/nodes/{node}/storage/{storage}/status", (*Sim).getStorageStatus)
}

// getStorageStatus is GET /nodes/{node}/storage/{storage}/status: 403
// without Datastore.Audit or Datastore.AllocateSpace on the storage (PVE
// checks the permission before it looks the storage up), 500 for a
// storage that does not exist.
func (s *Sim) getStorageStatus(q *request) response {
	sid := q.params["storage"]
	if !canSeeStorage(q.tok, sid) {
		return fail(403, "Permission check failed (/storage/%s, Datastore.Audit|Datastore.AllocateSpace)", sid)
	}
	st, ok := storageByID(sid)
	if !ok {
		return fail(500, "storage '%s' does not exist", sid)
	}
	s.mu.Lock()
	used := s.storageUsedLocked(st)
	s.mu.Unlock()
	return reply(map[string]any{"type": st.typ, "content": st.content, "active": 1, "enabled": 1, "shared": st.shared,
		"total": st.total, "used": used, "avail": max(st.total-used, 0)})
}

// StorageUsed is the bytes storage id reports used now (see
// storageUsedLocked); ok is false for a storage the node does not have.
func (s *Sim) StorageUsed(id string) (used int64, ok bool) {
	st, ok := storageByID(id)
	if !ok {
		return 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.storageUsedLocked(st), true
}

// storageUsedLocked is st's seeded base usage plus the size of every
// distinct volume on st that a guest holds. s.mu must be held.
func (s *Sim) storageUsedLocked(st storageDef) int64 {
	vols := map[string]bool{}
	note := func(v string) {
		if id := volumeOf(v); strings.HasPrefix(id, st.id+":") {
			vols[id] = true
		}
	}
	for _, g := range s.guests {
		for _, v := range g.config {
			note(v)
		}
		for _, v := range g.pending {
			note(v)
		}
		for _, sn := range g.snapshots {
			for _, v := range sn.config {
				note(v)
			}
		}
	}
	ids := make([]string, 0, len(vols))
	for id := range vols {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	used := st.used
	for _, id := range ids {
		n, _ := s.volumeSizeLocked(id)
		used += n
	}
	return used
}

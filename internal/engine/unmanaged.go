package engine

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/normalize"
	"github.com/steward-pve/steward/internal/wire"
)

// The configs of guests desired state does not name are read for the
// report only, so that `steward import` can write complete desired state
// for them and the hub can plan a guest a new document names: never
// planned on, never acted on. They are read at most every
// Engine.UnmanagedEvery per guest and at most maxUnmanagedReads a tick
// (a new guest first), so a host of a thousand idle guests costs PVE a
// few reads a second at most, and reports change (and are sent in full)
// only when a config does.

// DefaultUnmanagedEvery is the UnmanagedEvery an agent reporting to a
// hub uses.
const DefaultUnmanagedEvery = 10 * time.Minute

// maxUnmanagedReads bounds the unmanaged config reads of one tick.
const maxUnmanagedReads = 32

// unmanagedEntry is the last config read of an unmanaged guest.
type unmanagedEntry struct {
	kind   guest.Kind
	cfg    guest.Config
	digest string
	read   time.Time
}

// readUnmanaged refreshes the cached configs of the guests of actual that
// names does not hold (templates left out), the oldest first, and returns
// the cache's configs and digests of those guests. A read that fails
// keeps the last config (none for a new guest) and is tried again next
// tick.
func (e *Engine) readUnmanaged(ctx context.Context, actual []guest.Observed, names map[int]bool) (map[int]guest.Config, map[int]string) {
	if e.UnmanagedEvery <= 0 {
		return nil, nil
	}
	now := e.now()
	e.mu.Lock()
	cache := e.unmanaged
	e.mu.Unlock()
	next := make(map[int]unmanagedEntry, len(actual))
	type due struct {
		vmid int
		kind guest.Kind
		read time.Time // zero: never read
	}
	var todo []due
	for _, g := range actual {
		if names[g.VMID] || g.Template {
			continue
		}
		c, ok := cache[g.VMID]
		if ok && c.kind == g.Kind {
			next[g.VMID] = c
			if now.Sub(c.read) < e.UnmanagedEvery {
				continue
			}
		}
		todo = append(todo, due{vmid: g.VMID, kind: g.Kind, read: next[g.VMID].read})
	}
	slices.SortStableFunc(todo, func(a, b due) int { return a.read.Compare(b.read) })
	if len(todo) > maxUnmanagedReads {
		todo = todo[:maxUnmanagedReads]
	}
	limit := e.ReadConcurrency
	if limit <= 0 {
		limit = 4
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, limit)
	for _, d := range todo {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			pc, err := e.PVE.ConfigWithPending(ctx, e.Node, d.kind, d.vmid)
			if err != nil {
				return
			}
			mu.Lock()
			next[d.vmid] = unmanagedEntry{kind: d.kind, cfg: pc.Config.Values, digest: pc.Config.Digest, read: now}
			mu.Unlock()
		}()
	}
	wg.Wait()
	e.mu.Lock()
	e.unmanaged = next
	e.mu.Unlock()
	out, digests := make(map[int]guest.Config, len(next)), make(map[int]string, len(next))
	for id, c := range next {
		if c.cfg != nil {
			out[id], digests[id] = c.cfg, c.digest
		}
	}
	return out, digests
}

// adoptable lists the config keys reported of unmanaged guests: exact
// keys, and prefixes followed by digits ("net" matches net0, net1...).
// Cloud-init keys (cipassword, sshkeys, ...) and anything else not
// listed are never reported: a secret must not reach the hub.
var (
	adoptableExact = map[guest.Kind][]string{
		guest.QEMU: {"name", "description", "tags", "onboot", "startup", "protection", "ostype",
			"cores", "sockets", "vcpus", "cpu", "cpulimit", "cpuunits", "numa", "memory", "balloon", "shares",
			"machine", "bios", "scsihw", "boot", "agent", "hotplug", "tablet", "vga", "efidisk0", "tpmstate0"},
		guest.LXC: {"hostname", "description", "tags", "onboot", "startup", "protection", "ostype", "arch",
			"cores", "cpulimit", "cpuunits", "memory", "swap", "unprivileged", "features", "nameserver", "searchdomain", "rootfs"},
	}
	adoptableIndexed = map[guest.Kind][]string{
		guest.QEMU: {"net", "scsi", "virtio", "sata", "ide", "unused"},
		guest.LXC:  {"net", "mp", "unused"},
	}
)

// Adoptable reports whether config key k of a guest of kind is reported
// while the guest is unmanaged (see wire.Guest.Observed).
func Adoptable(kind guest.Kind, k string) bool {
	if slices.Contains(adoptableExact[kind], k) {
		return true
	}
	for _, p := range adoptableIndexed[kind] {
		if rest, ok := strings.CutPrefix(k, p); ok && rest != "" && len(rest) <= 3 && strings.Trim(rest, "0123456789") == "" {
			return true
		}
	}
	return false
}

// observedConfig is the part of an unmanaged guest's config the report
// carries: the adoptable keys, normalized, values over
// wire.MaxObservedValue left out, at most wire.MaxObservedKeys keys (the
// first by name). Nil when nothing is left.
func observedConfig(kind guest.Kind, cfg guest.Config) map[string]string {
	out := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		if len(out) == wire.MaxObservedKeys {
			break
		}
		if !Adoptable(kind, k) {
			continue
		}
		v := normalize.Value(kind, k, cfg[k])
		if v == "" || len(v) > wire.MaxObservedValue {
			continue
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

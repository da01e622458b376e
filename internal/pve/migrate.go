package pve

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/steward-pve/steward/internal/guest"
)

// MigrateCheck is PVE's answer to GET …/{vmid}/migrate (qemu-server's and
// pve-container's migrate_vm_precondition): what stands in the way of
// migrating the guest, node by node. The two kinds spell the fields
// differently (allowed_nodes / allowed-nodes); both are read.
type MigrateCheck struct {
	Running bool
	// AllowedNodes are the other nodes of the cluster the guest may go to.
	AllowedNodes []string
	// NotAllowed are the other nodes it may not go to, with why.
	NotAllowed map[string]NotAllowedNode
	// LocalDisks are the QEMU guest's volumes on storage only this node
	// has (cdroms and unused volumes included); none for a container.
	LocalDisks []LocalDisk
	// LocalResources are the QEMU guest's devices that bind it to this
	// node (PCI passthrough, USB and serial devices of the host), which
	// refuse a migration.
	LocalResources []string
	// MappedResources are devices mapped cluster-wide (QEMU).
	MappedResources []string
}

// NotAllowedNode says why a node cannot take the guest.
type NotAllowedNode struct {
	UnavailableStorages  []string // storages the guest uses that the node lacks
	UnavailableResources []string // device mappings the node lacks
	BlockingHA           []string // HA resources whose affinity rules block it
}

// LocalDisk is one of a guest's volumes on non-shared storage.
type LocalDisk struct {
	VolID  string
	Size   int64
	CDROM  bool
	Unused bool
}

// Allowed reports whether target is one of the nodes the guest may go to.
func (m MigrateCheck) Allowed(target string) bool { return slices.Contains(m.AllowedNodes, target) }

// KnowsNode reports whether target is another node of the cluster, allowed
// or not.
func (m MigrateCheck) KnowsNode(target string) bool {
	_, not := m.NotAllowed[target]
	return not || m.Allowed(target)
}

type wireMigrateCheck struct {
	Running           flexBool                  `json:"running"`
	AllowedNodes      []flexString              `json:"allowed_nodes"`
	AllowedNodesCT    []flexString              `json:"allowed-nodes"`
	NotAllowedNodes   map[string]wireNotAllowed `json:"not_allowed_nodes"`
	NotAllowedNodesCT map[string]wireNotAllowed `json:"not-allowed-nodes"`
	LocalDisks        []wireLocalDisk           `json:"local_disks"`
	LocalResources    []flexString              `json:"local_resources"`
	MappedResources   []flexString              `json:"mapped-resources"`
}

type wireNotAllowed struct {
	UnavailableStorages  []flexString `json:"unavailable_storages"`
	UnavailableResources []flexString `json:"unavailable-resources"`
	BlockingHA           []struct {
		SID   flexString `json:"sid"`
		Cause flexString `json:"cause"`
	} `json:"blocking-ha-resources"`
}

type wireLocalDisk struct {
	VolID    flexString `json:"volid"`
	Size     flexInt    `json:"size"`
	CDROM    flexBool   `json:"cdrom"`
	IsUnused flexBool   `json:"is_unused"`
}

func strs(in []flexString) []string {
	if len(in) == 0 {
		return nil
	}
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = string(s)
	}
	return out
}

func (w wireMigrateCheck) check() MigrateCheck {
	m := MigrateCheck{Running: bool(w.Running), AllowedNodes: strs(append(w.AllowedNodes, w.AllowedNodesCT...)),
		LocalResources: strs(w.LocalResources), MappedResources: strs(w.MappedResources)}
	for _, src := range []map[string]wireNotAllowed{w.NotAllowedNodes, w.NotAllowedNodesCT} {
		for node, n := range src {
			if m.NotAllowed == nil {
				m.NotAllowed = map[string]NotAllowedNode{}
			}
			na := NotAllowedNode{UnavailableStorages: strs(n.UnavailableStorages), UnavailableResources: strs(n.UnavailableResources)}
			for _, b := range n.BlockingHA {
				na.BlockingHA = append(na.BlockingHA, string(b.SID))
			}
			m.NotAllowed[node] = na
		}
	}
	for _, d := range w.LocalDisks {
		m.LocalDisks = append(m.LocalDisks, LocalDisk{VolID: string(d.VolID), Size: int64(d.Size), CDROM: bool(d.CDROM), Unused: bool(d.IsUnused)})
	}
	slices.SortFunc(m.LocalDisks, func(a, b LocalDisk) int {
		switch {
		case a.VolID < b.VolID:
			return -1
		case a.VolID > b.VolID:
			return 1
		}
		return 0
	})
	return m
}

// MigrateCheck returns GET /nodes/{node}/{kind}/{vmid}/migrate, PVE's
// preconditions for migrating the guest (to target, when not ""). It needs
// VM.Migrate on the guest. A guest not on node answers as a guest that
// does not exist there.
func (c *Client) MigrateCheck(ctx context.Context, node string, kind guest.Kind, vmid int, target string) (MigrateCheck, error) {
	if err := checkGuest(node, kind, vmid); err != nil {
		return MigrateCheck{}, err
	}
	var q url.Values
	if target != "" {
		if err := checkNode(target); err != nil {
			return MigrateCheck{}, err
		}
		q = url.Values{"target": {target}}
	}
	w, err := get[wireMigrateCheck](ctx, c, guestPath(node, kind, vmid, "migrate"), q)
	if err != nil {
		return MigrateCheck{}, err
	}
	return w.check(), nil
}

// migrateParams are the parameters Migrate passes on, by kind (PVE's
// migrate_vm schema, less what only root may use: migration_type and
// migration_network).
var migrateParams = map[guest.Kind]map[string]bool{
	guest.QEMU: {"online": true, "with-local-disks": true, "targetstorage": true, "force": true, "bwlimit": true, "with-conntrack-state": true},
	guest.LXC:  {"online": true, "restart": true, "timeout": true, "target-storage": true, "bwlimit": true},
}

// Migrate migrates the guest from node, where it is, to params["target"]
// (POST /nodes/{node}/{kind}/{vmid}/migrate): a qmigrate or vzmigrate
// task under the guest's migrate lock, or an hamigrate task that hands
// the request to HA for a guest HA manages. Any parameter the kind's
// migrate call does not take is an error before anything is sent, and so
// is a target that is node itself.
func (c *Client) Migrate(ctx context.Context, node string, kind guest.Kind, vmid int, params map[string]string) (Result, error) {
	if err := checkGuest(node, kind, vmid); err != nil {
		return Result{}, err
	}
	target := params["target"]
	if err := checkNode(target); err != nil {
		return Result{}, fmt.Errorf("pve: migrate target: %w", err)
	}
	if target == node {
		return Result{}, fmt.Errorf("pve: migrate of guest %d to node %s, where it is", vmid, node)
	}
	p := url.Values{}
	for k, v := range params {
		if k != "target" && !migrateParams[kind][k] {
			return Result{}, fmt.Errorf("pve: %q is not a %s migrate parameter", truncate(k, 40), kind)
		}
		p.Set(k, v)
	}
	return c.mutate(ctx, http.MethodPost, guestPath(node, kind, vmid, "migrate"), p)
}

package desired

import (
	"fmt"
	"regexp"
	"strconv"
)

// A guest's node (issue 12 §4): node: names the PVE node of its cluster
// the guest should run on. It is how desired state asks for a migration.
//
//	guests:
//	  101:
//	    node: pve-b     # migrate it to pve-b (an online migration when it runs)
//
// Desired state is scoped by host id, and each agent sees its own node, so
// node: works like this (package plan and engine carry it out):
//
//   - Only the agent of the node that holds the guest migrates it (PVE
//     migrates from the source node: POST on that node). An agent whose
//     document names the guest with node: naming another node, and whose
//     node holds the guest, plans one migrate step. Every other agent does
//     nothing for it: the guest is not on its node.
//   - An agent whose document names the guest with node: naming its own
//     node, while the guest is on another node, reports it moved (with the
//     node it is on) and waits: it never creates it, never counts it
//     missing, and manages it from the tick it arrives.
//   - So to move a guest, name it with node: TARGET under the host it is
//     on now; name it under the target's host too (node: TARGET or no
//     node:) to have that host manage it from the moment it arrives, then
//     drop the old entry.
//   - node: unset leaves the guest's node unmanaged (as today: a guest
//     found on another node is reported moved).
//
// Within one document, a vmid named under several hosts must name the
// same node, or none: two entries asking for different nodes would move
// the guest back and forth.

// nodeNameRE is PVE's pve-node format (pve-common JSONSchema
// pve_verify_node_name).
var nodeNameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$`)

// maxNodeName bounds a node name: it is the node's host name.
const maxNodeName = 253

// checkNodeName returns a problem with a node: value, or "".
func checkNodeName(n string) string {
	switch {
	case n == "":
		return "empty node name; omit node: to leave the guest's node unmanaged"
	case len(n) > maxNodeName:
		return fmt.Sprintf("node name longer than %d characters", maxNodeName)
	case !nodeNameRE.MatchString(n):
		return fmt.Sprintf("invalid node name %q; PVE node names are letters, digits and inner '-' (pve-node format)", n)
	}
	return ""
}

// validateNodes reports each vmid named under several hosts with
// different nodes, at the later host's node: path.
func (d *Document) validateNodes(errs *errList, at func(string) int) {
	type first struct{ host, node string }
	seen := map[int]first{}
	for _, hid := range sortedKeys(d.Hosts) {
		h := d.Hosts[hid]
		if h == nil {
			continue
		}
		for _, vmid := range sortedKeys(h.Guests) {
			g := h.Guests[vmid]
			if g == nil || g.Node == "" {
				continue
			}
			f, ok := seen[vmid]
			if !ok {
				seen[vmid] = first{hid, g.Node}
				continue
			}
			if f.node != g.Node {
				p := "hosts." + hid + ".guests." + strconv.Itoa(vmid) + ".node"
				errs.add(p, at(p), "guest %d is named with node %s here and node %s under host %s; name one node (or none) for a guest named under several hosts, or it would be migrated back and forth",
					vmid, g.Node, f.node, f.host)
			}
		}
	}
}

package sim

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// A cluster of nodes (Options.Nodes). One Sim serves every node of the
// cluster through one endpoint, as any PVE node proxies a request for
// another node (proxyto => 'node'):
//
//   - one vmid space: a vmid is taken cluster-wide (create, clone, nextid);
//   - GET /nodes lists every node, GET /cluster/resources every guest with
//     the node it is on (and hastate for a guest under HA), one node row
//     and one row per storage and node; GET /cluster/status has the
//     "cluster" row (name, version, nodes, quorate) then one "node" row
//     per member, local=1 for Options.Node, as a clustered node answers;
//   - per-node guest endpoints find only the guests on that node: any
//     other answers 500 "Configuration file 'nodes/NODE/qemu-server/N.conf'
//     does not exist", as PVE loads a config from the node's own
//     directory; tasks live on the node that ran them (another node's
//     task status is "no such task");
//   - POST …/qemu/{vmid}/migrate and …/lxc/{vmid}/migrate (migrate.go)
//     move a guest between nodes as a qmigrate / vzmigrate task holding
//     the lock "migrate";
//   - HA (SetHA, HAMigrate, HARelocate): a guest under HA shows hastate;
//     a migrate request for it is handed to HA (task hamigrate), and HA
//     moves it with its own task as root@pam.
//
// A single-node Sim (no Options.Nodes, or one) answers as a standalone
// node: /cluster/status has no cluster row and one node row with nodeid 0.
//
// Simplifications: every node has the same storages (local, local-lvm,
// none shared), their usage and content counted over the whole cluster;
// a migration keeps volume names, so the volumes of a guest move with it.

// clusterNodes checks Options.Node and Options.Nodes and returns the
// default node and the member list.
func clusterNodes(node string, nodes []string) (string, []string, error) {
	if len(nodes) == 0 {
		if node == "" {
			node = "pve"
		}
		if !nodeRE.MatchString(node) {
			return "", nil, fmt.Errorf("sim: node name %q is not a valid PVE node name", node)
		}
		return node, []string{node}, nil
	}
	seen := map[string]bool{}
	for _, n := range nodes {
		if !nodeRE.MatchString(n) {
			return "", nil, fmt.Errorf("sim: node name %q is not a valid PVE node name", n)
		}
		if seen[n] {
			return "", nil, fmt.Errorf("sim: node %q is named twice", n)
		}
		seen[n] = true
	}
	if node == "" {
		node = nodes[0]
	}
	if !seen[node] {
		return "", nil, fmt.Errorf("sim: node %q is not one of the cluster's nodes (%s)", node, strings.Join(nodes, ", "))
	}
	return node, slices.Clone(nodes), nil
}

// Nodes returns the cluster's node names (one for a single node).
func (s *Sim) Nodes() []string { return slices.Clone(s.nodes) }

func (s *Sim) isNode(n string) bool { return slices.Contains(s.nodes, n) }

// clustered reports whether the Sim is a cluster of several nodes.
func (s *Sim) clustered() bool { return len(s.opts.Nodes) > 1 }

// getClusterStatus is GET /cluster/status. A standalone node answers
// with one "node" row for itself, local=1 and nodeid 0; a cluster member
// with the "cluster" row first and one "node" row per member (as in the
// captured gp-pve7-cluster-status fixture), every node online, so the
// cluster is quorate.
func (s *Sim) getClusterStatus(q *request) response {
	if !s.clustered() {
		return reply([]any{map[string]any{
			"type": "node", "id": "node/" + s.node, "name": s.node, "ip": "127.0.0.1",
			"level": "", "local": 1, "nodeid": 0, "online": 1,
		}})
	}
	name := s.opts.ClusterName
	if name == "" {
		name = "sim-cluster"
	}
	out := []any{map[string]any{
		"type": "cluster", "id": "cluster", "name": name, "nodes": len(s.nodes), "quorate": 1, "version": len(s.nodes),
	}}
	for i, n := range s.nodes {
		out = append(out, map[string]any{
			"type": "node", "id": "node/" + n, "name": n, "ip": "127.0.1." + strconv.Itoa(i+1),
			"level": "", "local": b2i(n == s.node), "nodeid": i + 1, "online": 1,
		})
	}
	return reply(out)
}

// HA service states /cluster/resources shows in hastate (pve-ha-manager's
// manager status); SetHA takes the requested ones.
var haStateRE = regexp.MustCompile(`^(started|stopped|disabled|ignored)$`)

// SetHA puts a guest under HA with a requested state ("started",
// "stopped", "disabled", "ignored"), or takes it out of HA with "". Its
// /cluster/resources row then shows hastate, and a migrate request for it
// is handed to HA (migrate.go).
func (s *Sim) SetHA(vmid int, state string) error {
	if state != "" && !haStateRE.MatchString(state) {
		return fmt.Errorf("sim: HA state %q is not one of started, stopped, disabled, ignored", state)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.guests[vmid]
	if !ok {
		return fmt.Errorf("sim: guest %d does not exist", vmid)
	}
	g.ha = state
	return nil
}

// HAMigrate is the HA stack moving a guest to target as PVE's LRM does for
// `ha-manager migrate` (or for a node's maintenance mode): hastate shows
// "migrate" while a qmigrate (online when the VM runs, its local disks
// along) or vzmigrate (restart mode when the container runs) task of
// root@pam runs on the guest's node; the guest is then on target with
// hastate back to its requested state. It returns the task's UPID; the
// guest must be under HA (SetHA).
func (s *Sim) HAMigrate(vmid int, target string) (string, error) {
	return s.haMove(vmid, target, "migrate")
}

// HARelocate is HAMigrate with `ha-manager relocate`: the guest is
// stopped, moved and started again on target (hastate "relocate").
func (s *Sim) HARelocate(vmid int, target string) (string, error) {
	return s.haMove(vmid, target, "relocate")
}

func (s *Sim) haMove(vmid int, target, how string) (string, error) {
	s.mu.Lock()
	g, ok := s.guests[vmid]
	switch {
	case !ok:
		s.mu.Unlock()
		return "", fmt.Errorf("sim: guest %d does not exist", vmid)
	case g.ha == "" || g.ha == "ignored":
		s.mu.Unlock()
		return "", fmt.Errorf("sim: guest %d is not managed by HA (SetHA first)", vmid)
	case !s.isNode(target):
		s.mu.Unlock()
		return "", fmt.Errorf("sim: no such cluster node '%s'", target)
	case target == g.node:
		s.mu.Unlock()
		return "", fmt.Errorf("sim: guest %d is already on node %s", vmid, target)
	}
	s.mu.Unlock()
	return s.haMigrateTask(g, target, how)
}

// haRequest is the request HA's LRM makes for a guest: root@pam, on the
// guest's node.
func (s *Sim) haRequest(g *guestState, params map[string]string) *request {
	path := fmt.Sprintf("/nodes/%s/%s/%d/migrate", g.node, g.kind, g.vmid)
	p := map[string]string{"node": g.node, "vmid": strconv.Itoa(g.vmid)}
	for k, v := range params {
		p[k] = v
	}
	return &request{method: "POST", path: path, vars: map[string]string{"node": g.node, "vmid": strconv.Itoa(g.vmid)},
		params: p, tok: &token{id: "root@pam"}}
}

// hastate is the HA service state /cluster/resources shows: what HA is
// doing (migrate, relocate) or keeps the guest in; "" outside HA.
func (g *guestState) hastate() string {
	if g.ha == "" {
		return ""
	}
	if g.haMoving != "" {
		return g.haMoving
	}
	return g.ha
}

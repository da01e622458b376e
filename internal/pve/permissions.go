package pve

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
)

// Privileges are the effective privileges of the token on ACL paths, as
// GET /access/permissions returns them: path → privilege → whether the
// privilege propagates to the path's children (PVE's "propagate" flag;
// informational, the privilege holds on the path either way).
type Privileges map[string]map[string]bool

// Has reports whether priv is held on path exactly as PVE answered for
// that path (ask for the path itself: PVE computes inheritance and pool
// membership for the path asked, not for absent children).
func (p Privileges) Has(path, priv string) bool {
	_, ok := p[path][priv]
	return ok
}

// Names returns the privileges held on path, sorted.
func (p Privileges) Names(path string) []string {
	var out []string
	for k := range p[path] {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Permissions returns GET /access/permissions for the token the client
// authenticates with. With path set, PVE answers for that one ACL path
// (including privileges inherited from parents and from resource pools);
// with path "", for every path in PVE's ACL tree and pool definitions
// plus the top-level ones (/, /access, /nodes, /pool, /sdn, /storage,
// /vms), leaving out paths where the token holds nothing. Any user or
// token may ask for its own privileges: the call itself needs none.
func (c *Client) Permissions(ctx context.Context, path string) (Privileges, error) {
	var q url.Values
	if path != "" {
		q = url.Values{"path": {path}}
	}
	data, err := c.getRaw(ctx, "/access/permissions", q)
	if err != nil {
		return nil, err
	}
	var w map[string]map[string]flexBool
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("pve: GET /access/permissions: decode response: %w", err)
	}
	out := make(Privileges, len(w))
	for p, privs := range w {
		m := make(map[string]bool, len(privs))
		for k, v := range privs {
			m[k] = bool(v)
		}
		out[p] = m
	}
	return out, nil
}

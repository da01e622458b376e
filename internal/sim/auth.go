package sim

import (
	"crypto/subtle"
	"strings"
	"sync/atomic"
)

// token is an API token. admin tokens hold every privilege on every path.
type token struct {
	id     string // USER@REALM!TOKENID
	secret string
	admin  bool
	privs  map[string]map[string]bool // ACL path -> privileges
	// members is the simulator's current pool membership, through which
	// a grant on /pool/<id> reaches the pool's guests and storages.
	members *atomic.Pointer[membership]
}

func (t *token) user() string {
	u, _, _ := strings.Cut(t.id, "!")
	return u
}

func normACLPath(p string) string {
	p = "/" + strings.Trim(p, "/")
	return p
}

// has reports whether t holds priv on path, granted there or on an
// ancestor (grants propagate), or, for a guest (/vms/<vmid>) or storage
// (/storage/<id>) in a resource pool, granted on the pool's path, as
// PVE's pools pass their permissions on to their members.
func (t *token) has(path, priv string) bool {
	if t.admin {
		return true
	}
	if t.hasOnPath(path, priv) {
		return true
	}
	if t.members != nil {
		for _, pool := range t.members.Load().poolsOf(normACLPath(path)) {
			if t.hasOnPath("/pool/"+pool, priv) {
				return true
			}
		}
	}
	return false
}

func (t *token) hasOnPath(path, priv string) bool {
	p := normACLPath(path)
	for {
		if t.privs[p][priv] {
			return true
		}
		if p == "/" {
			return false
		}
		i := strings.LastIndexByte(p, '/')
		if i <= 0 {
			p = "/"
		} else {
			p = p[:i]
		}
	}
}

// authenticate checks an Authorization header value.
func (s *Sim) authenticate(h string) (*token, bool) {
	v, ok := strings.CutPrefix(h, "PVEAPIToken=")
	if !ok {
		return nil, false
	}
	id, secret, ok := splitToken(strings.TrimSpace(v))
	if !ok {
		return nil, false
	}
	s.mu.Lock()
	t := s.tokens[id]
	s.mu.Unlock()
	if t == nil || subtle.ConstantTimeCompare([]byte(t.secret), []byte(secret)) != 1 {
		return nil, false
	}
	return t, true
}

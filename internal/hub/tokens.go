package hub

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/steward-pve/steward/internal/hub/store"
)

// TokenJSON is an operator token as GET /v1/tokens lists it: never its
// secret (the hub keeps only a hash).
type TokenJSON struct {
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"created_at"`
	LastUsed  *time.Time `json:"last_used,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// NewTokenJSON answers POST /v1/tokens: the token's secret, shown this
// once.
type NewTokenJSON struct {
	Name      string    `json:"name"`
	Token     string    `json:"token"`
	CreatedAt time.Time `json:"created_at"`
}

type createTokenRequest struct {
	Name string `json:"name"`
}

// touchEvery is how stale an operator token's last use may be before a
// request records it again (a write per request would be wasted).
const touchEvery = time.Minute

// touchOperator records the use of the request's operator token, at
// most once per touchEvery. A failure is logged: the request goes on.
func (s *Server) touchOperator(r *http.Request, op store.Operator) {
	now := s.now()
	if now.Sub(op.LastUsed) < touchEvery {
		return
	}
	if err := s.st.TouchOperator(r.Context(), op.Name, now); err != nil {
		s.log.Error("recording an operator token's use", "operator", op.Name, "err", err)
	}
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	req, ok := decodeStrict[createTokenRequest](w, r, 4<<10, "the token request")
	if !ok {
		return
	}
	if err := store.CheckHostID(req.Name); err != nil {
		writeError(w, http.StatusBadRequest, "bad_name", fmt.Sprintf("name %q: 1..%d letters, digits, '-', '_' or '.' (say whose or what the token is: alice, ci-deploy)", req.Name, store.MaxHostIDLen))
		return
	}
	tok := NewToken("stwo_")
	if err := s.st.CreateOperator(r.Context(), req.Name, store.HashToken(tok)); err != nil {
		if errors.Is(err, store.ErrExists) {
			writeError(w, http.StatusConflict, "exists", fmt.Sprintf("an operator token named %q exists (or existed: revoked names stay taken); choose another name", req.Name))
			return
		}
		s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
		return
	}
	s.auditLog(r, "token.create", "", req.Name)
	writeJSON(w, http.StatusOK, NewTokenJSON{Name: req.Name, Token: tok, CreatedAt: s.now().UTC()})
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	ops, err := s.st.Operators(r.Context())
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
		return
	}
	out := make([]TokenJSON, len(ops))
	for i, o := range ops {
		out[i] = TokenJSON{Name: o.Name, CreatedAt: o.CreatedAt, LastUsed: timePtr(o.LastUsed), RevokedAt: timePtr(o.RevokedAt)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	err := s.st.RevokeOperator(r.Context(), name)
	switch {
	case errors.Is(err, store.ErrLastOperator):
		writeError(w, http.StatusConflict, "last_token", fmt.Sprintf("%q is the hub's last valid operator token; create another (POST /v1/tokens) before revoking it", name))
		return
	case err != nil:
		s.storeError(w, r, err, http.StatusNotFound, "no_such_token", fmt.Sprintf("no operator token named %q", name))
		return
	}
	s.auditLog(r, "token.revoke", "", name)
	writeJSON(w, http.StatusOK, map[string]string{"name": name, "status": "revoked"})
}

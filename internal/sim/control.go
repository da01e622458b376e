package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// serveControl is the test control API, authenticated with the admin token:
//
//	GET  /_sim/mutations            -> {"data":[Mutation...]}
//	PUT  /_sim/faults               <- Faults as JSON
//	POST /_sim/guests               <- GuestSpec as JSON
//	POST /_sim/pools                <- PoolSpec as JSON
//	POST /_sim/templates            <- {} (AddTemplates)
//	POST /_sim/snippets             <- {"volid":"local:snippets/user.yaml","content":"..."} (AddSnippet)
//	PUT  /_sim/guests/{vmid}/lock   <- {"lock":"backup"} ("" clears)
//	PUT  /_sim/guests/{vmid}/ha     <- {"state":"started"} ("" takes it out of HA; SetHA)
//	POST /_sim/guests/{vmid}/ha/migrate  <- {"node":"pve-b"} -> {"data":"UPID..."} (HAMigrate)
//	POST /_sim/guests/{vmid}/ha/relocate <- {"node":"pve-b"} -> {"data":"UPID..."} (HARelocate)
//	POST /_sim/tokens               <- {"id":"USER@REALM!TOKENID","secret":"...","privs":{"/vms":["VM.Audit"]}} (AddToken)
//
// Errors are {"error":"..."} with a 4xx status.
func (s *Sim) serveControl(w http.ResponseWriter, r *http.Request) {
	t, authed := s.authenticate(r.Header.Get("Authorization"))
	if !authed || !t.admin {
		controlJSON(w, http.StatusUnauthorized, map[string]any{"error": "sim: control API needs the admin token in Authorization: PVEAPIToken=..."})
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/_sim")
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPostBody))
	if err != nil {
		controlJSON(w, http.StatusBadRequest, map[string]any{"error": "sim: reading body: " + err.Error()})
		return
	}
	bad := func(format string, args ...any) {
		controlJSON(w, http.StatusBadRequest, map[string]any{"error": fmt.Sprintf(format, args...)})
	}
	switch {
	case r.Method == http.MethodGet && path == "/mutations":
		controlJSON(w, 200, map[string]any{"data": s.Mutations()})
	case r.Method == http.MethodPut && path == "/faults":
		var f Faults
		if err := json.Unmarshal(body, &f); err != nil {
			bad("sim: PUT /_sim/faults: body is not a Faults object: %v", err)
			return
		}
		s.SetFaults(f)
		controlJSON(w, 200, map[string]any{"data": nil})
	case r.Method == http.MethodPost && path == "/guests":
		var g GuestSpec
		if err := json.Unmarshal(body, &g); err != nil {
			bad("sim: POST /_sim/guests: body is not a GuestSpec object: %v", err)
			return
		}
		if err := s.AddGuest(g); err != nil {
			bad("%v", err)
			return
		}
		controlJSON(w, 200, map[string]any{"data": nil})
	case r.Method == http.MethodPost && path == "/pools":
		var p PoolSpec
		if err := json.Unmarshal(body, &p); err != nil {
			bad("sim: POST /_sim/pools: body is not a PoolSpec object: %v", err)
			return
		}
		if err := s.AddPool(p); err != nil {
			bad("%v", err)
			return
		}
		controlJSON(w, 200, map[string]any{"data": nil})
	case r.Method == http.MethodPost && path == "/templates":
		if err := s.AddTemplates(); err != nil {
			bad("%v", err)
			return
		}
		controlJSON(w, 200, map[string]any{"data": nil})
	case r.Method == http.MethodPost && path == "/snippets":
		var sn struct {
			VolID   string `json:"volid"`
			Content string `json:"content"`
		}
		if err := json.Unmarshal(body, &sn); err != nil {
			bad("sim: POST /_sim/snippets: body must be {\"volid\":\"local:snippets/NAME\",\"content\":\"...\"}: %v", err)
			return
		}
		if err := s.AddSnippet(sn.VolID, sn.Content); err != nil {
			bad("%v", err)
			return
		}
		controlJSON(w, 200, map[string]any{"data": nil})
	case r.Method == http.MethodPost && path == "/tokens":
		var tk struct {
			ID     string              `json:"id"`
			Secret string              `json:"secret"`
			Privs  map[string][]string `json:"privs"`
		}
		if err := json.Unmarshal(body, &tk); err != nil {
			bad("sim: POST /_sim/tokens: body must be {\"id\":\"USER@REALM!TOKENID\",\"secret\":\"...\",\"privs\":{\"/vms\":[\"VM.Audit\"]}}: %v", err)
			return
		}
		if !tokenRE.MatchString(tk.ID) || tk.Secret == "" || strings.ContainsAny(tk.Secret, " \t\r\n=") {
			bad("sim: POST /_sim/tokens: id must be USER@REALM!TOKENID (as pveum user token add names it) and secret non-empty without spaces or '='")
			return
		}
		s.mu.Lock()
		admin := s.tokens[tk.ID] != nil && s.tokens[tk.ID].admin
		s.mu.Unlock()
		if admin {
			bad("sim: POST /_sim/tokens: %s is the admin token; choose another id", tk.ID)
			return
		}
		s.AddToken(tk.ID, tk.Secret, tk.Privs)
		controlJSON(w, 200, map[string]any{"data": nil})
	case r.Method == http.MethodPut && strings.HasPrefix(path, "/guests/") && strings.HasSuffix(path, "/lock"):
		vmid, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(path, "/guests/"), "/lock"))
		if err != nil {
			bad("sim: %s: vmid is not a number", r.URL.Path)
			return
		}
		var l struct {
			Lock string `json:"lock"`
		}
		if err := json.Unmarshal(body, &l); err != nil {
			bad("sim: PUT %s: body must be {\"lock\":\"...\"}: %v", r.URL.Path, err)
			return
		}
		if err := s.SetLock(vmid, l.Lock); err != nil {
			bad("%v", err)
			return
		}
		controlJSON(w, 200, map[string]any{"data": nil})
	case strings.HasPrefix(path, "/guests/") && strings.Contains(path, "/ha"):
		s.serveHAControl(w, r, path, body, bad)
	default:
		controlJSON(w, http.StatusNotFound, map[string]any{"error": fmt.Sprintf("sim: no control endpoint %s %s", r.Method, r.URL.Path)})
	}
}

func controlJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// serveHAControl serves the HA control endpoints below /_sim/guests/{vmid}/ha.
func (s *Sim) serveHAControl(w http.ResponseWriter, r *http.Request, path string, body []byte, bad func(string, ...any)) {
	rest := strings.TrimPrefix(path, "/guests/")
	id, what, _ := strings.Cut(rest, "/")
	vmid, err := strconv.Atoi(id)
	if err != nil {
		bad("sim: %s: vmid is not a number", r.URL.Path)
		return
	}
	switch {
	case r.Method == http.MethodPut && what == "ha":
		var b struct {
			State string `json:"state"`
		}
		if err := json.Unmarshal(body, &b); err != nil {
			bad("sim: PUT %s: body must be {\"state\":\"started\"}: %v", r.URL.Path, err)
			return
		}
		if err := s.SetHA(vmid, b.State); err != nil {
			bad("%v", err)
			return
		}
		controlJSON(w, 200, map[string]any{"data": nil})
	case r.Method == http.MethodPost && (what == "ha/migrate" || what == "ha/relocate"):
		var b struct {
			Node string `json:"node"`
		}
		if err := json.Unmarshal(body, &b); err != nil {
			bad("sim: POST %s: body must be {\"node\":\"NODE\"}: %v", r.URL.Path, err)
			return
		}
		move := s.HAMigrate
		if what == "ha/relocate" {
			move = s.HARelocate
		}
		upid, err := move(vmid, b.Node)
		if err != nil {
			bad("%v", err)
			return
		}
		controlJSON(w, 200, map[string]any{"data": upid})
	default:
		controlJSON(w, http.StatusNotFound, map[string]any{"error": fmt.Sprintf("sim: no control endpoint %s %s", r.Method, r.URL.Path)})
	}
}

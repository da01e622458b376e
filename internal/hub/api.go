package hub

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/alert"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/wire"
)

// ---- agent API ----

func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	req, ok := decodeStrict[wire.EnrollRequest](w, r, 4<<10, "the enroll request")
	if !ok {
		return
	}
	if req.JoinToken == "" {
		writeError(w, http.StatusBadRequest, "bad_body", "join_token is required")
		return
	}
	tok := NewToken("stwh_")
	host, err := s.st.Enroll(r.Context(), store.HashToken(req.JoinToken), store.HashToken(tok))
	if err != nil {
		s.storeError(w, r, err, http.StatusUnauthorized, "bad_join_token",
			"the join token is unknown, used or expired; ask an operator for a new one (POST /v1/hosts/{host}/join-token)")
		return
	}
	s.log.Info("host enrolled", "host", host)
	s.fleetMu.Lock()
	s.fleet[host] = &hostState{}
	s.fleetMu.Unlock()
	s.event(r.Context(), store.Event{Type: store.EventHostEnrolled, Host: host})
	writeJSON(w, http.StatusOK, wire.EnrollResponse{Host: host, Token: tok})
}

// control builds the control envelope of host h, as the store held it
// when the request was authenticated.
func (s *Server) control(w http.ResponseWriter, r *http.Request, h store.Host) {
	w.Header().Set(wire.VersionHeader, strconv.Itoa(wire.Version))
	writeJSON(w, http.StatusOK, wire.Control{PollInterval: s.pollInterval(), DesiredGeneration: h.DesiredGeneration,
		JobsWaiting: h.JobsWaiting, Blocked: h.Blocked, BlockedReason: h.BlockedReason})
}

// ReportHash is the hash of a report body the hub keeps and a heartbeat
// names: the hex SHA-256 of the exact bytes posted.
func ReportHash(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	h := hostOf(r)
	body, ok := readBody(w, r, wire.MaxReportSize)
	if !ok {
		return
	}
	rep, err := wire.DecodeReport(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_report", err.Error())
		return
	}
	if rep.Host != h.ID {
		writeError(w, http.StatusBadRequest, "bad_report", fmt.Sprintf("the report names host %q; this is host %q", rep.Host, h.ID))
		return
	}
	hash := ReportHash(body)
	// The status before this report, for host.status: only when the
	// content changed (an identical report changes no status).
	before, changed := "", hash != h.ReportHash
	if changed && h.ReportHash != "" {
		if old, err := s.st.LastReport(r.Context(), h.ID); err == nil {
			if o, err := wire.DecodeReport(old.Body); err == nil {
				before = statusSummary(o)
			}
		}
	}
	if err := s.st.PutReport(r.Context(), h.ID, body, hash); err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
		return
	}
	if err := s.st.SetPending(r.Context(), h.ID, rep.Pending); err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
		return
	}
	s.m.reports.WithLabelValues("report").Inc()
	s.seen(r.Context(), h.ID, false)
	s.reportAlerts(r.Context(), rep)
	if changed {
		s.reportChanged(h.ID)
	}
	if after := statusSummary(rep); changed && after != before {
		detail := after
		if before != "" {
			detail += " (was: " + before + ")"
		}
		s.event(r.Context(), store.Event{Type: store.EventHostStatus, Host: h.ID, Detail: detail})
	}
	s.control(w, r, h)
}

type heartbeatRequest struct {
	Hash string `json:"hash"`
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	h := hostOf(r)
	req, ok := decodeStrict[heartbeatRequest](w, r, 1<<10, "the heartbeat")
	if !ok {
		return
	}
	// h is as the store holds it, read by the authentication: its report
	// hash is current. Last-seen goes to memory, written in batches (see
	// the package doc).
	s.m.reports.WithLabelValues("heartbeat").Inc()
	s.seen(r.Context(), h.ID, true)
	if req.Hash == "" || req.Hash != h.ReportHash {
		writeError(w, http.StatusConflict, "report_required", "the hub holds no report with that hash; send the full report")
		return
	}
	s.control(w, r, h)
}

// parseWait reads the wait parameter: a Go duration ("90s", "5m") or
// whole seconds; default DefaultWait, capped at MaxWait.
func parseWait(v string) (time.Duration, error) {
	if v == "" {
		return DefaultWait, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, err2 := strconv.ParseInt(v, 10, 64)
		if err2 != nil {
			return 0, fmt.Errorf("wait=%q is neither a duration (90s, 5m) nor whole seconds", v)
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 {
		return 0, fmt.Errorf("wait=%q is negative", v)
	}
	return min(d, MaxWait), nil
}

func (s *Server) agentDesired(w http.ResponseWriter, r *http.Request) {
	h := hostOf(r)
	q := r.URL.Query()
	var after int64 = -1
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "bad_query", fmt.Sprintf("after=%q is not a generation (a whole number >= 0)", v))
			return
		}
		after = n
	}
	wait, err := parseWait(q.Get("wait"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_query", err.Error())
		return
	}
	// Take the wake-up channel before reading, so a PUT between the read
	// and the wait is not missed. A wake-up that brings no generation
	// beyond after (a duplicate notification, another poller's) waits on
	// until the deadline.
	wake := s.waiter(h.ID)
	d, err := s.st.Desired(r.Context(), h.ID)
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
		return
	}
	if after >= 0 && d.Generation <= after && wait > 0 {
		s.held.Add(1)
		t := time.NewTimer(wait + jitter(wait))
		for over := false; err == nil && d.Generation <= after && !over; {
			s.holding(h.ID, wake, d.Generation)
			select {
			case <-wake:
			case <-t.C:
				over = true
			case <-s.closing:
				over = true
			case <-r.Context().Done():
			}
			if r.Context().Err() != nil {
				break
			}
			if !over {
				wake = s.waiter(h.ID) // before the read, as above
			}
			d, err = s.st.Desired(r.Context(), h.ID)
		}
		t.Stop()
		s.held.Add(-1)
		if r.Context().Err() != nil {
			return // the agent went away
		}
		if err != nil {
			s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
			return
		}
	}
	// The first fetch of a generation this hub stored measures its
	// propagation.
	s.mu.Lock()
	pt, ok := s.putAt[h.ID]
	if ok && pt.gen == d.Generation {
		delete(s.putAt, h.ID)
	}
	s.mu.Unlock()
	if ok && pt.gen == d.Generation {
		s.m.propagation.Observe(time.Since(pt.at).Seconds())
	}
	writeDesired(w, d)
}

func writeDesired(w http.ResponseWriter, d store.Desired) {
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(d.Generation, 10)))
	writeJSON(w, http.StatusOK, wire.Desired{Host: d.Host, Generation: d.Generation, Document: d.Document})
}

// JobJSON is a signed job as the API carries it (bytes as base64).
type JobJSON struct {
	ID         string          `json:"id,omitempty"`
	Payload    []byte          `json:"payload"`
	Signatures [][]byte        `json:"signatures"`
	State      string          `json:"state,omitempty"`
	Uploader   string          `json:"uploader,omitempty"`
	UploadedAt *time.Time      `json:"uploaded_at,omitempty"`
	Result     *wire.JobResult `json:"result,omitempty"`
}

func jobJSON(j store.Job, full bool) JobJSON {
	out := JobJSON{ID: j.ID, Payload: j.Payload, Signatures: j.Signatures}
	if out.Signatures == nil {
		out.Signatures = [][]byte{}
	}
	if full {
		t := j.UploadedAt
		out.State, out.Uploader, out.UploadedAt, out.Result = j.State, j.Uploader, &t, j.Result
	}
	return out
}

func (s *Server) agentJobs(w http.ResponseWriter, r *http.Request) {
	jobs, err := s.st.Jobs(r.Context(), hostOf(r).ID, store.JobWaiting)
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
		return
	}
	out := make([]JobJSON, len(jobs))
	for i, j := range jobs {
		out[i] = jobJSON(j, false)
	}
	writeJSON(w, http.StatusOK, map[string]any{"jobs": out})
}

func (s *Server) jobResults(w http.ResponseWriter, r *http.Request) {
	h := hostOf(r)
	body, ok := readBody(w, r, wire.MaxJobResultsSize)
	if !ok {
		return
	}
	jr, err := wire.DecodeJobResults(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_job_results", err.Error())
		return
	}
	if jr.Host != h.ID {
		writeError(w, http.StatusBadRequest, "bad_job_results", fmt.Sprintf("the results name host %q; this is host %q", jr.Host, h.ID))
		return
	}
	// Each result is applied on its own; the first failure is answered
	// and names its index (the ones before it are stored; a retry of the
	// whole batch is safe, SetJobResult being idempotent).
	for i, res := range jr.Results {
		final := res.State == wire.JobDone || res.State == wire.JobFailed || res.State == wire.JobRejected
		wasWaiting := false
		if final {
			j, err := s.st.Job(r.Context(), h.ID, res.Job)
			wasWaiting = err == nil && j.State == store.JobWaiting
		}
		err := s.st.SetJobResult(r.Context(), h.ID, res)
		if err == nil && wasWaiting {
			detail := "job " + res.Job
			if res.Reason != "" {
				detail += ": " + res.Reason
			}
			s.event(r.Context(), store.Event{Type: "job." + res.State, Host: h.ID, Detail: detail})
			switch res.State {
			case wire.JobFailed:
				s.alert(r.Context(), alert.Alert{Event: alert.OpFailed, Host: h.ID, Subject: res.Job,
					Summary: fmt.Sprintf("Signed job %s on %s failed.", res.Job, h.ID), Detail: res.Reason})
			case wire.JobRejected:
				s.alert(r.Context(), alert.Alert{Event: alert.JobRejected, Host: h.ID, Subject: res.Job,
					Summary: fmt.Sprintf("Host %s rejected signed job %s.", h.ID, res.Job), Detail: res.Reason})
			}
		}
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				writeError(w, http.StatusNotFound, "no_such_job", fmt.Sprintf("results[%d]: the hub holds no job %s for host %q", i, res.Job, h.ID))
				return
			}
			s.storeError(w, r, fmt.Errorf("results[%d]: %w", i, err), http.StatusNotFound, "not_found", "")
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]int{"stored": len(jr.Results)})
}

func (s *Server) receipts(w http.ResponseWriter, r *http.Request) {
	h := hostOf(r)
	body, ok := readBody(w, r, wire.MaxReceiptsSize)
	if !ok {
		return
	}
	rs, err := wire.DecodeReceipts(body)
	if err != nil {
		code := "bad_receipts"
		if errors.Is(err, wire.ErrChainBroken) || errors.Is(err, wire.ErrChainGap) {
			code = "chain_broken"
			s.event(r.Context(), store.Event{Type: store.EventReceiptsBroken, Host: h.ID, Detail: err.Error()})
			s.receiptsAlert(r.Context(), h.ID, err.Error())
		}
		writeError(w, http.StatusBadRequest, code, err.Error())
		return
	}
	if rs.Host != h.ID {
		writeError(w, http.StatusBadRequest, "bad_receipts", fmt.Sprintf("the receipts name host %q; this is host %q", rs.Host, h.ID))
		return
	}
	// A break (a new segment of the chain) is reported once, when it is
	// stored: the head before says which breaks in the batch are new.
	breaks := wire.Breaks(rs.Receipts)
	var before store.ReceiptHead
	if len(breaks) > 0 {
		if before, err = s.st.ReceiptHead(r.Context(), h.ID); err != nil {
			s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
			return
		}
	}
	head, err := s.st.AppendReceipts(r.Context(), h.ID, rs.Receipts)
	switch {
	case errors.Is(err, wire.ErrChainGap) && len(breaks) > 0:
		// The agent numbered a new segment from a point other than the
		// hub's head; it numbers it on from the head it is told. The
		// break is reported when it is stored.
		cur, _ := s.st.ReceiptHead(r.Context(), h.ID)
		s.log.Info("receipt chain segment to renumber", "host", h.ID, "have_seq", cur.Seq, "err", err)
		have := cur.Seq
		writeJSON(w, http.StatusConflict, wire.Error{Code: "chain_gap", HaveSeq: &have,
			Error: fmt.Sprintf("%v (the hub holds up to seq %d; send from %d)", err, cur.Seq, cur.Seq+1)})
		return
	case errors.Is(err, wire.ErrChainGap):
		cur, _ := s.st.ReceiptHead(r.Context(), h.ID)
		s.log.Warn("receipt chain gap", "host", h.ID, "have_seq", cur.Seq)
		s.event(r.Context(), store.Event{Type: store.EventReceiptsBroken, Host: h.ID, Detail: fmt.Sprintf("gap: %v (the hub holds up to seq %d)", err, cur.Seq)})
		s.receiptsAlert(r.Context(), h.ID, fmt.Sprintf("gap: %v (the hub holds up to seq %d)", err, cur.Seq))
		have := cur.Seq
		writeJSON(w, http.StatusConflict, wire.Error{Code: "chain_gap", HaveSeq: &have,
			Error: fmt.Sprintf("%v (the hub holds up to seq %d; send from %d)", err, cur.Seq, cur.Seq+1)})
		return
	case errors.Is(err, wire.ErrChainBroken):
		s.log.Warn("receipt chain broken", "host", h.ID, "err", err)
		s.event(r.Context(), store.Event{Type: store.EventReceiptsBroken, Host: h.ID, Detail: err.Error()})
		s.receiptsAlert(r.Context(), h.ID, err.Error())
		writeError(w, http.StatusConflict, "chain_broken", err.Error())
		return
	case err != nil:
		s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
		return
	}
	for _, b := range breaks {
		if b.Seq <= before.Seq {
			continue // held already: a retried batch
		}
		detail := fmt.Sprintf("break at seq %d: the agent started a new segment of its receipt chain: %s", b.Seq, b.Reason)
		s.log.Warn("receipt chain break", "host", h.ID, "seq", b.Seq, "reason", b.Reason)
		s.event(r.Context(), store.Event{Type: store.EventReceiptsBroken, Host: h.ID, Detail: detail})
		s.receiptsAlert(r.Context(), h.ID, detail)
	}
	writeJSON(w, http.StatusOK, map[string]any{"seq": head.Seq, "hash": head.Hash})
}

// ---- operator API ----

func (s *Server) auditLog(r *http.Request, action, host, detail string) {
	if _, err := s.st.AppendAudit(r.Context(), store.AuditEntry{Actor: operatorOf(r).Name, Action: action, Host: host, Detail: detail}); err != nil {
		s.log.Error("audit log", "action", action, "host", host, "err", err)
	}
}

// HostJSON is a host as the operator API shows it.
type HostJSON struct {
	ID                string          `json:"id"`
	CreatedAt         time.Time       `json:"created_at"`
	EnrolledAt        *time.Time      `json:"enrolled_at,omitempty"`
	RevokedAt         *time.Time      `json:"revoked_at,omitempty"`
	Blocked           bool            `json:"blocked,omitempty"`
	BlockedReason     string          `json:"blocked_reason,omitempty"`
	LastSeen          *time.Time      `json:"last_seen,omitempty"`
	ReportHash        string          `json:"report_hash,omitempty"`
	DesiredGeneration int64           `json:"desired_generation"`
	Report            json.RawMessage `json:"report,omitempty"`
	// Summary is the last report at a glance, in GET /v1/hosts?summary=1
	// only (nil there for a host that never reported).
	Summary *ReportSummaryJSON `json:"summary,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// hostJSON shows h; its last-seen is the newer of the store's and this
// hub's memory (heartbeats are written in batches).
func (s *Server) hostJSON(h store.Host) HostJSON {
	if t := s.lastSeen(h.ID); t.After(h.LastSeen) {
		h.LastSeen = t.UTC()
	}
	return HostJSON{ID: h.ID, CreatedAt: h.CreatedAt, EnrolledAt: timePtr(h.EnrolledAt), RevokedAt: timePtr(h.RevokedAt),
		Blocked: h.Blocked, BlockedReason: h.BlockedReason, LastSeen: timePtr(h.LastSeen), ReportHash: h.ReportHash,
		DesiredGeneration: h.DesiredGeneration}
}

func (s *Server) listHosts(w http.ResponseWriter, r *http.Request) {
	hosts, err := s.st.Hosts(r.Context())
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
		return
	}
	out := make([]HostJSON, len(hosts))
	for i, h := range hosts {
		out[i] = s.hostJSON(h)
	}
	if v := r.URL.Query().Get("summary"); v == "1" || v == "true" {
		if err := s.summarize(r.Context(), hosts, out); err != nil {
			s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"hosts": out})
}

func (s *Server) showHost(w http.ResponseWriter, r *http.Request) {
	h, err := s.st.Host(r.Context(), r.PathValue("host"))
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "no_such_host", "")
		return
	}
	out := s.hostJSON(h)
	if rep, err := s.st.LastReport(r.Context(), h.ID); err == nil {
		out.Report = rep.Body
	} else if !errors.Is(err, store.ErrNotFound) {
		s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) joinToken(w http.ResponseWriter, r *http.Request) {
	host := r.PathValue("host")
	if err := store.CheckHostID(host); err != nil {
		writeError(w, http.StatusBadRequest, "bad_host", err.Error())
		return
	}
	tok := NewToken("stwj_")
	expires := s.now().Add(s.ttl).UTC().Truncate(time.Second)
	if err := s.st.CreateJoinToken(r.Context(), host, store.HashToken(tok), expires); err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
		return
	}
	s.auditLog(r, "host.join_token", host, "expires "+expires.Format(time.RFC3339))
	writeJSON(w, http.StatusOK, map[string]any{"host": host, "join_token": tok, "expires": expires})
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	host := r.PathValue("host")
	if err := s.st.RevokeHost(r.Context(), host); err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "no_such_host", "")
		return
	}
	s.auditLog(r, "host.revoke", host, "")
	s.forget(host)
	s.operatorEvent(r, store.EventHostRevoked, host, "")
	writeJSON(w, http.StatusOK, map[string]string{"host": host, "status": "revoked"})
}

type blockRequest struct {
	Reason string `json:"reason"`
}

func (s *Server) block(w http.ResponseWriter, r *http.Request) {
	host := r.PathValue("host")
	req, ok := decodeStrict[blockRequest](w, r, MaxOperatorBody, "the block request")
	if !ok {
		return
	}
	if req.Reason == "" || len(req.Reason) > wire.MaxTextLen {
		writeError(w, http.StatusBadRequest, "bad_body", fmt.Sprintf("reason is required (at most %d bytes): say why the host is blocked", wire.MaxTextLen))
		return
	}
	if err := s.st.SetBlocked(r.Context(), host, true, req.Reason); err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "no_such_host", "")
		return
	}
	s.auditLog(r, "host.block", host, req.Reason)
	s.operatorEvent(r, store.EventHostBlocked, host, req.Reason)
	s.alert(r.Context(), alert.Alert{Event: alert.HostBlocked, Host: host, Subject: operatorOf(r).Name,
		Summary: fmt.Sprintf("Host %s was blocked by %s.", host, operatorOf(r).Name), Detail: req.Reason})
	writeJSON(w, http.StatusOK, map[string]any{"host": host, "blocked": true})
}

func (s *Server) unblock(w http.ResponseWriter, r *http.Request) {
	host := r.PathValue("host")
	if err := s.st.SetBlocked(r.Context(), host, false, ""); err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "no_such_host", "")
		return
	}
	s.auditLog(r, "host.unblock", host, "")
	s.operatorEvent(r, store.EventHostUnblocked, host, "")
	writeJSON(w, http.StatusOK, map[string]any{"host": host, "blocked": false})
}

// validDesired parses a desired document (YAML or JSON) for host and
// returns it as the JSON the hub stores and serves. The document may name
// only host.
func validDesired(host string, body []byte) ([]byte, error) {
	doc, err := desired.Parse(body)
	if err != nil {
		return nil, err
	}
	for id := range doc.Hosts {
		if id != host {
			return nil, fmt.Errorf("the document names host %q; a document PUT for host %q may name only it", id, host)
		}
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encoding the document: %w", err)
	}
	if _, err := desired.Parse(out); err != nil { // what agents will parse
		return nil, fmt.Errorf("the document does not survive its JSON encoding: %w", err)
	}
	return out, nil
}

// parseIfMatch reads If-Match: a generation, quoted or not; absent means
// store.AnyGeneration.
func parseIfMatch(v string) (int64, error) {
	if v == "" {
		return store.AnyGeneration, nil
	}
	if v == "*" {
		return store.AnyGeneration, nil
	}
	n, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(v, "W/"), `"`), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("If-Match %q is not a generation (a whole number >= 0, as the ETag of GET …/desired)", v)
	}
	return n, nil
}

func (s *Server) putDesired(w http.ResponseWriter, r *http.Request) {
	host := r.PathValue("host")
	ifMatch, err := parseIfMatch(r.Header.Get("If-Match"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_if_match", err.Error())
		return
	}
	body, ok := readBody(w, r, wire.MaxDesiredSize)
	if !ok {
		return
	}
	doc, err := validDesired(host, body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_document", err.Error())
		return
	}
	gen, err := s.st.PutDesired(r.Context(), host, doc, ifMatch, operatorOf(r).Name)
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "no_such_host", fmt.Sprintf("no host %q: create it with POST /v1/hosts/%s/join-token", host, host))
		return
	}
	s.notify(r.Context(), host, gen)
	s.auditLog(r, "desired.put", host, fmt.Sprintf("generation %d", gen))
	s.operatorEvent(r, store.EventDesiredChanged, host, fmt.Sprintf("generation %d", gen))
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(gen, 10)))
	writeJSON(w, http.StatusOK, map[string]any{"host": host, "generation": gen})
}

func (s *Server) getDesired(w http.ResponseWriter, r *http.Request) {
	d, err := s.st.Desired(r.Context(), r.PathValue("host"))
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "no_such_host", "")
		return
	}
	writeDesired(w, d)
}

// limitParam reads limit (default def, 1..max).
func limitParam(r *http.Request, def, max int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		return 0, fmt.Errorf("limit=%q: want a whole number 1..%d", v, max)
	}
	return n, nil
}

// afterParam reads the optional after=ID cursor of a listing (0 when
// absent); what names the id in the error, e.g. "an audit entry id".
func afterParam(r *http.Request, what string) (int64, error) {
	v := r.URL.Query().Get("after")
	if v == "" {
		return 0, nil
	}
	after, err := strconv.ParseInt(v, 10, 64)
	if err != nil || after < 0 {
		return 0, fmt.Errorf("after=%q: want %s", v, what)
	}
	return after, nil
}

// pageParams reads a listing's after=ID cursor and limit=N (default 100,
// at most 1000); on bad input it answers 400 bad_query and returns false.
// what names the id in the error, as for afterParam.
func pageParams(w http.ResponseWriter, r *http.Request, what string) (after int64, limit int, ok bool) {
	limit, err := limitParam(r, 100, 1000)
	if err == nil {
		after, err = afterParam(r, what)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_query", err.Error())
		return 0, 0, false
	}
	return after, limit, true
}

func (s *Server) desiredHistory(w http.ResponseWriter, r *http.Request) {
	limit, err := limitParam(r, 20, 1000)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_query", err.Error())
		return
	}
	hist, err := s.st.DesiredHistory(r.Context(), r.PathValue("host"), limit)
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "no_such_host", "")
		return
	}
	type entry struct {
		Generation int64           `json:"generation"`
		Author     string          `json:"author"`
		CreatedAt  time.Time       `json:"created_at"`
		Document   json.RawMessage `json:"document"`
	}
	out := make([]entry, len(hist))
	for i, d := range hist {
		out[i] = entry{Generation: d.Generation, Author: d.Author, CreatedAt: d.CreatedAt, Document: d.Document}
	}
	writeJSON(w, http.StatusOK, map[string]any{"history": out})
}

func (s *Server) pending(w http.ResponseWriter, r *http.Request) {
	p, err := s.st.Pending(r.Context(), r.PathValue("host"))
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "no_such_host", "")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"pending": p})
}

// MaxSignatures bounds the signatures of one job.
const MaxSignatures = store.MaxJobSignatures

// UploadJSON is the answer to a job upload.
type UploadJSON struct {
	ID string `json:"id"`
	// Created is true when the upload stored a new job, false when it
	// added to (or repeated) a job already waiting for the same payload.
	Created bool `json:"created"`
	// Added is how many of the uploaded signatures are new to the job (a
	// key that signed it already counts once).
	Added int `json:"added"`
	// Signatures is how many the job holds now.
	Signatures int `json:"signatures"`
}

// uploadJob stores a signed job, or merges its signatures into the job
// already waiting for the same payload bytes: the four-eyes flow, where
// operators sign one payload one after the other. The hub alters no
// payload byte and verifies no trust (the agent does, against its
// allowed_signers and policy); it pre-checks only that each signature is
// a well-formed SSHSIG and, when adding to a job others signed, that it
// is over this payload in steward's namespace, so a wrong file cannot
// turn a co-signed job into one the agent rejects. A different payload
// with the nonce of a job still waiting is a conflict (409
// nonce_conflict): one operation, one payload.
func (s *Server) uploadJob(w http.ResponseWriter, r *http.Request) {
	host := r.PathValue("host")
	req, ok := decodeStrict[JobJSON](w, r, 1<<20, "the job")
	if !ok {
		return
	}
	if req.ID != "" || req.State != "" || req.Uploader != "" || req.UploadedAt != nil || req.Result != nil {
		writeError(w, http.StatusBadRequest, "bad_body", "a job upload carries only payload and signatures")
		return
	}
	p, err := signedop.ParsePayload(req.Payload)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_payload", err.Error())
		return
	}
	if p.Host != host {
		writeError(w, http.StatusBadRequest, "wrong_host", fmt.Sprintf("the payload is for host %q, not %q", p.Host, host))
		return
	}
	if len(req.Signatures) == 0 || len(req.Signatures) > MaxSignatures {
		writeError(w, http.StatusBadRequest, "bad_signatures", fmt.Sprintf("a job needs 1..%d signatures (ssh-keygen -Y sign -n %s)", MaxSignatures, signedop.Namespace))
		return
	}
	sigs := make([]*signedop.Signature, len(req.Signatures))
	for i, sig := range req.Signatures {
		if sigs[i], err = signedop.ParseSignature(sig); err != nil {
			writeError(w, http.StatusBadRequest, "bad_signatures", fmt.Sprintf("signatures[%d]: %v", i, err))
			return
		}
	}
	id := wire.JobID(req.Payload)
	waiting, err := s.st.Jobs(r.Context(), host, store.JobWaiting)
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "no_such_host", fmt.Sprintf("no host %q", host))
		return
	}
	for _, j := range waiting {
		if j.ID == id {
			continue
		}
		if wp, err := signedop.ParsePayload(j.Payload); err == nil && wp.Nonce == p.Nonce {
			writeError(w, http.StatusConflict, "nonce_conflict", fmt.Sprintf(
				"job %s, with other payload bytes, already waits with nonce %s: sign that payload byte for byte (steward sign), or a new payload", j.ID, p.Nonce))
			return
		}
	}
	j, err := s.st.PutJob(r.Context(), host, req.Payload, req.Signatures, operatorOf(r).Name)
	if err == nil {
		s.auditLog(r, "job.upload", host, fmt.Sprintf("job %s: %s vmid %d, %d signature(s)", j.ID, p.Op, p.VMID, len(j.Signatures)))
		s.operatorEvent(r, store.EventJobUploaded, host, fmt.Sprintf("job %s: %s vmid %d", j.ID, p.Op, p.VMID))
		writeJSON(w, http.StatusOK, UploadJSON{ID: j.ID, Created: true, Added: len(j.Signatures), Signatures: len(j.Signatures)})
		return
	}
	if !errors.Is(err, store.ErrExists) {
		s.storeError(w, r, err, http.StatusNotFound, "no_such_host", "")
		return
	}
	// The job exists: merge. A signature that does not verify over the
	// payload would make the agent reject the whole job for good.
	for i, sig := range sigs {
		if err := signedop.VerifySignature(sig, req.Payload); err != nil {
			writeError(w, http.StatusBadRequest, "bad_signatures", fmt.Sprintf(
				"signatures[%d]: %v; not added to job %s, which others signed (the agent would reject the job for it)", i, strings.TrimPrefix(err.Error(), "signedop: "), id))
			return
		}
	}
	j, added, err := s.st.AddJobSignatures(r.Context(), host, req.Payload, req.Signatures)
	switch {
	case errors.Is(err, store.ErrConflict):
		state := "final"
		if cur, err := s.st.Job(r.Context(), host, id); err == nil {
			state = cur.State
		}
		writeError(w, http.StatusConflict, "job_final", fmt.Sprintf(
			"job %s is already %s: its agent reported its fate, and more signatures cannot change it (see GET /v1/hosts/%s/jobs); sign the agent's next payload instead", id, state, host))
		return
	case errors.Is(err, store.ErrInvalid):
		writeError(w, http.StatusBadRequest, "too_many_signatures", err.Error())
		return
	case err != nil:
		s.storeError(w, r, err, http.StatusNotFound, "no_such_host", "")
		return
	}
	if added > 0 {
		fps := make([]string, len(sigs))
		for i, sig := range sigs {
			fps[i] = sig.Fingerprint()
		}
		detail := fmt.Sprintf("job %s: %s vmid %d, %d signature(s) added by %s, %d now", j.ID, p.Op, p.VMID, added, strings.Join(fps, ", "), len(j.Signatures))
		s.auditLog(r, "job.sign", host, detail)
		s.operatorEvent(r, store.EventJobUploaded, host, detail)
	}
	writeJSON(w, http.StatusOK, UploadJSON{ID: j.ID, Added: added, Signatures: len(j.Signatures)})
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	state := r.URL.Query().Get("state")
	switch state {
	case "", store.JobWaiting, store.JobDone, store.JobFailed, store.JobRejected:
	default:
		writeError(w, http.StatusBadRequest, "bad_query", fmt.Sprintf("state=%q: want waiting, done, failed or rejected", state))
		return
	}
	jobs, err := s.st.Jobs(r.Context(), r.PathValue("host"), state)
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "no_such_host", "")
		return
	}
	out := make([]JobJSON, len(jobs))
	for i, j := range jobs {
		out[i] = jobJSON(j, true)
	}
	writeJSON(w, http.StatusOK, map[string]any{"jobs": out})
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request) {
	after, limit, ok := pageParams(w, r, "an audit entry id")
	if !ok {
		return
	}
	es, err := s.st.Audit(r.Context(), after, limit)
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": es})
}

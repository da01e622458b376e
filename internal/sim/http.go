package sim

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pveschema"
)

const (
	apiPrefix   = "/api2/json"
	maxPostBody = 512 << 10 // libpve-http-server-perl >= 5.2.1
)

// request is one parsed API call.
type request struct {
	hr     *http.Request
	tok    *token
	method string
	path   string            // below /api2/json
	vars   map[string]string // path variables
	params map[string]string // merged parameters as strings (JSON true -> "1")
	m      *pveschema.Method
}

func (q *request) has(k string) bool { _, ok := q.params[k]; return ok }

func (q *request) bool(k string) bool { return q.params[k] == "1" }

func (q *request) int(k string, def int) int {
	v, ok := q.params[k]
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return def
	}
	return n
}

// opParams is the request's parameters without the path's node and vmid,
// for the mutation record.
func (q *request) opParams() map[string]string {
	out := make(map[string]string, len(q.params))
	for k, v := range q.params {
		if k == "node" || k == "vmid" {
			continue
		}
		out[k] = v
	}
	return out
}

// response is what a handler produced.
type response struct {
	status   int
	msg      string // error message; its first line is the reason phrase
	data     any
	errors   map[string]string
	total    *int
	executed bool // a mutation ran (or its task started): eligible for drop-after-exec
}

func reply(data any) response { return response{status: 200, data: data} }

func fail(status int, format string, args ...any) response {
	return response{status: status, msg: fmt.Sprintf(format, args...)}
}

func paramFail(errs map[string]string) response {
	return response{status: 400, msg: "Parameter verification failed.", errors: errs}
}

func noConfig(node string, k guest.Kind, vmid int) response {
	return fail(500, "Configuration file '%s' does not exist", confPath(node, k, vmid))
}

type handlerFunc func(s *Sim, q *request) response

type route struct {
	method string
	segs   []string // "{x}" matches one non-empty segment
	tmpl   string
	h      handlerFunc
}

func match(segs, path []string, vars map[string]string) bool {
	if len(segs) != len(path) {
		return false
	}
	for i, s := range segs {
		if strings.HasPrefix(s, "{") {
			vars[s[1:len(s)-1]] = path[i]
		} else if s != path[i] {
			return false
		}
	}
	return true
}

// routeSegments splits a path below /api2/json as pve-common's
// RESTHandler find_handler does: on runs of '/', empty fragments
// skipped, so "/nodes//pve/qemu/" reaches the handler of
// "/nodes/pve/qemu". Below /nodes/{node}/storage/{storage}/content the
// rest of the path is one fragment, the volume id (Storage::Status mounts
// Content with an empty fragmentDelimiter: volume ids may contain '/').
func routeSegments(path string) []string {
	var segs []string
	for _, f := range strings.Split(path, "/") {
		if f != "" {
			segs = append(segs, f)
		}
	}
	if len(segs) > 6 && segs[0] == "nodes" && segs[2] == "storage" && segs[4] == "content" {
		segs = append(segs[:5], strings.Join(segs[5:], "/"))
	}
	return segs
}

// Handler serves the PVE API under /api2/json and the control API under
// /_sim/. It is safe for concurrent use.
// Paths are never redirected or cleaned; empty segments are skipped when
// routing, as PVE's handler lookup skips them (routeSegments).
func (s *Sim) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case apiRelPath(r.URL.Path) != "":
			s.serveAPI(w, r)
		case strings.HasPrefix(r.URL.Path, "/_sim/"):
			s.serveControl(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

func (s *Sim) serveAPI(w http.ResponseWriter, hr *http.Request) {
	f := s.currentFaults()
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-hr.Context().Done():
			t.Stop()
			return
		}
	}
	resp := s.handle(hr)
	if resp.executed && hr.Method != http.MethodGet && s.chance(s.currentFaults().DropAfterExecRate) {
		s.log.Info("sim: fault: dropping connection after execution", "path", hr.URL.Path)
		dropConn(w)
		return
	}
	s.write(w, hr, resp)
}

// apiRelPath is the path below /api2/json, "/" for the API root, or ""
// when p is not an API path. As pve-http-server's split_abs_uri, any run
// of slashes may separate "/api2" and "json".
func apiRelPath(p string) string {
	rest, ok := strings.CutPrefix(p, "/api2/")
	if !ok {
		return ""
	}
	rest = strings.TrimLeft(rest, "/")
	rel, ok := strings.CutPrefix(rest, "json")
	if !ok || rel != "" && rel[0] != '/' {
		return ""
	}
	if rel == "" {
		return "/"
	}
	return rel
}

func (s *Sim) handle(hr *http.Request) response {
	path := apiRelPath(hr.URL.Path)
	// pve-http-server process_header, before authentication.
	if hr.Method != http.MethodGet && hr.Method != http.MethodPost && hr.Method != http.MethodPut && hr.Method != http.MethodDelete {
		return fail(501, "method '%s' not available", hr.Method)
	}
	if len(hr.TransferEncoding) > 0 {
		if strings.EqualFold(hr.TransferEncoding[0], "chunked") {
			return fail(501, "chunked transfer encoding not supported")
		}
		return fail(501, "Unknown transfer encoding '%s'", hr.TransferEncoding[0])
	}
	tok, authed := s.authenticate(hr.Header.Get("Authorization"))
	if !authed {
		if d := s.opts.AuthFailureDelay; d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-hr.Context().Done():
				t.Stop()
			}
		}
		return response{status: 401, msg: "Authentication failed!"}
	}
	f := s.currentFaults()
	if s.chance(f.ErrorRate) {
		return fail(500, "error with cfs lock 'file-user_cfg': got lock request timeout")
	}
	if s.chance(f.Status596Rate) {
		return fail(596, "Broken pipe")
	}

	raw, resp, okBody := readParams(hr)
	if !okBody {
		return resp
	}
	segs := routeSegments(path)
	vars := map[string]string{}
	var rt *route
	for i := range s.routes {
		clear(vars)
		if s.routes[i].method == hr.Method && match(s.routes[i].segs, segs, vars) {
			rt = &s.routes[i]
			break
		}
	}
	if rt == nil {
		return fail(501, "Method '%s %s' not implemented", hr.Method, path)
	}
	m, found := s.schema.Method(rt.method, rt.tmpl)
	if !found {
		return fail(501, "Method '%s %s' not implemented", hr.Method, path)
	}
	for k, v := range vars {
		if old, dup := raw[k]; dup && stringify(old) != v {
			return fail(400, "duplicate parameter (already defined in URI) with conflicting values!")
		}
		raw[k] = v
	}
	if !m.AllowToken() {
		return fail(403, "URI '%s' not available with API token, need proper ticket.", apiPrefix+path)
	}
	// pve-manager rest_handler order: permission check on the raw
	// parameters, then proxyto (unknown node), then the handler, which
	// validates the parameters.
	params := make(map[string]string, len(raw))
	for k, v := range raw {
		params[k] = stringify(v)
	}
	if allowed, denial := m.Permission().Eval(params, true, tok.has); !allowed {
		return fail(403, "%s", denial)
	}
	if node, ok := vars["node"]; ok && !s.isNode(node) {
		return fail(500, "hostname lookup '%s' failed - failed to get address info for: %s: Name or service not known", node, node)
	}
	if errs := m.Validate(raw); len(errs) > 0 {
		return paramFail(errs)
	}
	q := &request{hr: hr, tok: tok, method: hr.Method, path: path, vars: vars, params: params, m: m}
	return rt.h(s, q)
}

// readParams merges the body (POST/PUT: form or JSON) and the query string
// (which wins), as pve-http-server's extract_params.
func readParams(hr *http.Request) (map[string]any, response, bool) {
	raw := map[string]any{}
	// authenticate_and_handle_request: with a Content-Length, the method
	// must take a body, the body must fit, and be form or JSON.
	if hr.ContentLength > 0 {
		if hr.Method != http.MethodPost && hr.Method != http.MethodPut {
			return nil, fail(501, "Unexpected content for method '%s'", hr.Method), false
		}
		if hr.ContentLength > maxPostBody {
			return nil, fail(501, "for data too large"), false
		}
		ctype := hr.Header.Get("Content-Type")
		if ct := contentType(ctype); ct != "" && ct != "application/x-www-form-urlencoded" && ct != "application/json" {
			return nil, fail(506, "upload 'Content-Type '%s' not implemented", ctype), false
		}
	}
	body, err := io.ReadAll(io.LimitReader(hr.Body, maxPostBody+1))
	if err != nil {
		return nil, fail(400, "error reading request body: %v", err), false
	}
	if len(body) > maxPostBody {
		return nil, fail(501, "for data too large"), false
	}
	if len(body) > 0 {
		if hr.Method != http.MethodPost && hr.Method != http.MethodPut {
			return nil, fail(501, "Unexpected content for method '%s'", hr.Method), false
		}
		if contentType(hr.Header.Get("Content-Type")) == "application/json" {
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.UseNumber()
			var obj map[string]any
			if err := dec.Decode(&obj); err != nil {
				return nil, fail(400, "malformed JSON string, %v", err), false
			}
			for k, v := range obj {
				if v != nil {
					raw[k] = v
				}
			}
		} else {
			vals, err := url.ParseQuery(string(body))
			if err != nil {
				return nil, fail(400, "unable to parse form data: %v", err), false
			}
			for k, v := range vals {
				raw[k] = v[0]
			}
		}
	}
	vals, err := url.ParseQuery(hr.URL.RawQuery)
	if err != nil {
		return nil, fail(400, "unable to parse query string: %v", err), false
	}
	for k, v := range vals {
		raw[k] = v[0]
	}
	return raw, response{}, true
}

// contentType is the media type as pve-http-server's parse_content_type
// takes it: the text before the first ';' or ',', trimmed, case kept.
func contentType(v string) string {
	if i := strings.IndexAny(v, ";,"); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}

func stringify(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		if x {
			return "1"
		}
		return "0"
	case nil:
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// setHeaders sets the headers pve-http-server sends on every API response.
func setHeaders(h http.Header, now time.Time) {
	d := now.UTC().Format(http.TimeFormat)
	h.Set("Server", "pve-api-daemon/3.0")
	h.Set("Date", d)
	h.Set("Expires", d)
	h.Set("Cache-Control", "max-age=0")
	h.Set("Pragma", "no-cache")
}

func (s *Sim) body(resp response) []byte {
	env := map[string]any{"data": resp.data}
	if resp.status >= 400 {
		env["data"] = nil
		if len(resp.errors) > 0 {
			env["errors"] = resp.errors
		}
		if !s.opts.LegacyErrors && resp.msg != "" {
			m := resp.msg
			if !strings.HasSuffix(m, "\n") {
				m += "\n"
			}
			env["message"] = m
		}
	}
	if resp.total != nil {
		env["total"] = *resp.total
	}
	b, err := json.Marshal(env)
	if err != nil {
		b = []byte(`{"data":null}`)
	}
	return b
}

// write sends resp. Successes go through net/http; errors need their
// message as the reason phrase, which net/http cannot send, so they are
// written on the hijacked connection and the connection is closed, as PVE
// closes it for every status >= 400.
//
// As pve-http-server's response(), a body longer than 1024 bytes is
// gzip-compressed when the request's Accept-Encoding mentions gzip (any
// status), and a response on a connection that stays open says
// "Connection: Keep-Alive".
func (s *Sim) write(w http.ResponseWriter, hr *http.Request, resp response) {
	var body []byte
	ctype := "application/json;charset=UTF-8"
	if resp.status == 401 {
		body = nil
		ctype = ""
	} else {
		body = s.body(resp)
	}
	gz := false
	if len(body) > gzipMinBody && strings.Contains(strings.ToLower(hr.Header.Get("Accept-Encoding")), "gzip") {
		if c, err := gzipBytes(body); err == nil {
			body, gz = c, true
		}
	}
	if resp.status == 200 {
		h := w.Header()
		setHeaders(h, time.Now())
		h.Set("Content-Type", ctype)
		if gz {
			h.Set("Content-Encoding", "gzip")
		}
		h.Set("Content-Length", strconv.Itoa(len(body)))
		if !hr.Close {
			h.Set("Connection", "Keep-Alive")
		}
		w.WriteHeader(200)
		_, _ = w.Write(body)
		return
	}
	reason, _, _ := strings.Cut(resp.msg, "\n")
	if reason == "" {
		reason = http.StatusText(resp.status)
	}
	writeRaw(w, resp.status, reason, ctype, body, gz)
}

// gzipMinBody is pve-http-server's compression threshold: bodies longer
// than this many bytes are compressed.
const gzipMinBody = 1024

func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeRaw writes a complete HTTP/1.1 response with a custom reason phrase
// on the hijacked connection, then closes it. gz says body is gzip-encoded.
func writeRaw(w http.ResponseWriter, status int, reason, ctype string, body []byte, gz bool) {
	h := http.Header{}
	setHeaders(h, time.Now())
	h.Set("Connection", "close")
	if ctype != "" {
		h.Set("Content-Type", ctype)
	}
	if gz {
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	hj, okHJ := w.(http.Hijacker)
	if !okHJ {
		for k, v := range h {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		_, _ = w.Write(body)
		return
	}
	conn, bw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	writeRawTo(bw.Writer, status, reason, h, body)
	_ = bw.Flush()
}

func writeRawTo(bw *bufio.Writer, status int, reason string, h http.Header, body []byte) {
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", status, reason)
	_ = h.Write(bw)
	bw.WriteString("\r\n")
	bw.Write(body)
}

// dropConn closes the client connection without a response.
func dropConn(w http.ResponseWriter) {
	hj, okHJ := w.(http.Hijacker)
	if !okHJ {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

func timeSeconds(n int) time.Duration { return time.Duration(n) * time.Second }

package sim

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/guest"
)

// testServer runs a Sim over TLS on loopback (the same path as production:
// hijacked error responses need a real connection).
type testServer struct {
	t      *testing.T
	s      *Sim
	url    string
	client *http.Client
}

func startSim(t *testing.T, opts Options) *testServer {
	t.Helper()
	if opts.TaskDuration == 0 {
		opts.TaskDuration = 5 * time.Millisecond
	}
	if opts.LockTimeout == 0 {
		opts.LockTimeout = 20 * time.Millisecond
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, s, ln) }()
	cert, _ := x509.ParseCertificate(s.Certificate())
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		s.Close()
	})
	return &testServer{t: t, s: s, url: "https://" + ln.Addr().String(), client: &http.Client{Transport: tr}}
}

type result struct {
	status int
	reason string // text after the code in the status line
	header http.Header
	raw    []byte
	body   map[string]any // decoded envelope (nil if body empty)
	err    error          // transport error
	close  bool           // the server closes the connection
}

func (r result) data() any { return r.body["data"] }

func (r result) dataMap(t *testing.T) map[string]any {
	t.Helper()
	m, ok := r.data().(map[string]any)
	if !ok {
		t.Fatalf("data is %T (%s); want object", r.data(), r.raw)
	}
	return m
}

func (r result) dataList(t *testing.T) []any {
	t.Helper()
	m, ok := r.data().([]any)
	if !ok {
		t.Fatalf("data is %T (%s); want array", r.data(), r.raw)
	}
	return m
}

// do sends a form-encoded request (query string for GET/DELETE) with tok.
func (ts *testServer) doTok(tok, method, path string, params url.Values) result {
	var body io.Reader
	u := ts.url + "/api2/json" + path
	if method == "GET" || method == "DELETE" {
		if len(params) > 0 {
			u += "?" + params.Encode()
		}
	} else if params != nil {
		body = strings.NewReader(params.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		ts.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return ts.send(req, tok)
}

func (ts *testServer) do(method, path string, params url.Values) result {
	return ts.doTok(ts.s.Token(), method, path, params)
}

func (ts *testServer) doJSON(method, path string, v any) result {
	b, _ := json.Marshal(v)
	req, _ := http.NewRequest(method, ts.url+"/api2/json"+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	return ts.send(req, ts.s.Token())
}

func (ts *testServer) send(req *http.Request, tok string) result {
	if tok != "" {
		req.Header.Set("Authorization", "PVEAPIToken="+tok)
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, header: resp.Header, raw: raw, close: resp.Close}
	_, r.reason, _ = strings.Cut(resp.Status, " ")
	if len(raw) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&r.body); err != nil {
			ts.t.Fatalf("%s %s: body is not JSON: %v: %q", req.Method, req.URL.Path, err, raw)
		}
	}
	return r
}

func (ts *testServer) mustOK(r result) result {
	ts.t.Helper()
	if r.err != nil || r.status != 200 {
		ts.t.Fatalf("got %d %s %v (%s); want 200", r.status, r.reason, r.err, r.raw)
	}
	return r
}

// waitTask polls a task until it stops and returns its status object.
func (ts *testServer) waitTask(upid string) map[string]any {
	ts.t.Helper()
	for i := 0; i < 2000; i++ {
		r := ts.mustOK(ts.do("GET", "/nodes/pve/tasks/"+upid+"/status", nil))
		st := r.dataMap(ts.t)
		if st["status"] == "stopped" {
			return st
		}
		time.Sleep(2 * time.Millisecond)
	}
	ts.t.Fatalf("task %s did not stop", upid)
	return nil
}

// runTask sends a request that must return a UPID and waits for the task.
func (ts *testServer) runTask(method, path string, params url.Values) (string, map[string]any) {
	ts.t.Helper()
	return ts.runTaskTok(ts.s.Token(), method, path, params)
}

// runTaskTok is runTask with token tok.
func (ts *testServer) runTaskTok(tok, method, path string, params url.Values) (string, map[string]any) {
	ts.t.Helper()
	r := ts.mustOK(ts.doTok(tok, method, path, params))
	upid, ok := r.data().(string)
	if !ok {
		ts.t.Fatalf("%s %s: data %v; want a UPID string", method, path, r.data())
	}
	return upid, ts.waitTask(upid)
}

func (ts *testServer) addGuest(g GuestSpec) {
	ts.t.Helper()
	if err := ts.s.AddGuest(g); err != nil {
		ts.t.Fatal(err)
	}
}

func qemuSpec(vmid int, running bool) GuestSpec {
	return GuestSpec{VMID: vmid, Kind: guest.QEMU, Name: "vm" + itoa(vmid), Running: running, Config: map[string]string{
		"cores": "2", "sockets": "1", "memory": "2048", "scsi0": "local-lvm:vm-" + itoa(vmid) + "-disk-0,size=32G",
		"scsi1": "local-lvm:vm-" + itoa(vmid) + "-disk-1,size=10G",
		"net0":  "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1", "ostype": "l26", "onboot": "1", "tags": "a;b", "agent": "1",
	}}
}

func lxcSpec(vmid int, running bool) GuestSpec {
	return GuestSpec{VMID: vmid, Kind: guest.LXC, Name: "ct" + itoa(vmid), Running: running, Config: map[string]string{
		"cores": "1", "memory": "512", "swap": "512", "rootfs": "local-lvm:vm-" + itoa(vmid) + "-disk-0,size=8G",
		"mp0":  "local-lvm:vm-" + itoa(vmid) + "-disk-1,mp=/data,size=4G",
		"net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:02,ip=dhcp,type=veth", "unprivileged": "1", "ostype": "debian", "arch": "amd64",
	}}
}

func itoa(i int) string { return strconv.Itoa(i) }

package sim

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzHandle feeds arbitrary requests (untrusted input: path, query, body,
// content type, Authorization) through the API pipeline. It must never
// panic and must answer with a status PVE uses.
func FuzzHandle(f *testing.F) {
	s, err := New(Options{Guests: 4, Seed: 7, TaskDuration: time.Millisecond, LockTimeout: time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	admin := "PVEAPIToken=" + s.Token()
	seeds := []struct{ method, target, ctype, body, auth string }{
		{"GET", "/api2/json/nodes/pve/qemu/100/config", "", "", admin},
		{"PUT", "/api2/json/nodes/pve/qemu/100/config", "application/x-www-form-urlencoded", "cores=2&delete=scsi1,net0", admin},
		{"PUT", "/api2/json/nodes/pve/lxc/101/config", "application/json", `{"memory":1024,"onboot":true}`, admin},
		{"POST", "/api2/json/nodes/pve/qemu", "application/json", `{"vmid":"300","scsi0":"local-lvm:1"}`, admin},
		{"PUT", "/api2/json/nodes/pve/qemu/100/resize", "", "disk=scsi0&size=+1G", admin},
		{"GET", "/api2/json/nodes/pve/tasks/UPID:pve:1:2:3:x:y:z:/log?start=-1&limit=99999", "", "", admin},
		{"GET", "/api2/json/cluster/nextid?vmid=99999999999999999999", "", "", admin},
		{"DELETE", "/api2/json/nodes/pve/qemu/100/snapshot/%00", "", "", admin},
		{"GET", "/api2/json/version", "", "", "PVEAPIToken=a@b!c=d=e"},
		{"POST", "/api2/json//", "application/json", `[1,2]`, admin},
	}
	for _, sd := range seeds {
		f.Add(sd.method, sd.target, sd.ctype, sd.body, sd.auth)
	}
	allowed := map[int]bool{200: true, 400: true, 401: true, 403: true, 500: true, 501: true, 506: true}
	f.Fuzz(func(t *testing.T, method, target, ctype, body, auth string) {
		switch method {
		case "GET", "POST", "PUT", "DELETE":
		default:
			method = "GET"
		}
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n\t#") {
			target = "/api2/json/" + strings.NewReplacer(" ", "", "\r", "", "\n", "", "\t", "", "#", "").Replace(target)
		}
		if _, err := url.ParseRequestURI(target); err != nil {
			return // not a request line a client could send
		}
		req := httptest.NewRequest(method, "http://pve"+target, strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		req.Header.Set("Authorization", auth)
		resp := s.handle(req)
		if !allowed[resp.status] {
			t.Fatalf("%s %s: status %d %q; want one PVE uses", method, target, resp.status, resp.msg)
		}
		if resp.status != 200 && resp.msg == "" {
			t.Fatalf("%s %s: error %d without a message", method, target, resp.status)
		}
		if resp.status == 400 && strings.Contains(resp.msg, "\n") {
			t.Fatalf("400 reason has a newline: %q", resp.msg)
		}
	})
}

package pve

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/guest"
)

const testUPID = "UPID:pve:0000ABCD:00ABCDEF:65C0FA88:qmstart:101:root@pam!steward:"

func writeJSON(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(code)
	io.WriteString(w, body)
}

func TestTokenHeader(t *testing.T) {
	var got atomic.Value
	_, c := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Get("Authorization"))
		writeJSON(w, 200, `{"data":{"version":"8.4.1","release":"8.4","repoid":"2a5fa54a8503f96d"}}`)
	}))
	v, err := c.Version(t.Context())
	must(t, err)
	eq(t, "version", sp(v.Version, v.Release, v.RepoID), "8.4.1 8.4 2a5fa54a8503f96d")
	eq(t, "Authorization", got.Load().(string), "PVEAPIToken=root@pam!steward="+testSecret)
}

func TestTLSPinning(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, `{"data":{"version":"9.1.2"}}`)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point here
	srv.StartTLS()
	t.Cleanup(srv.Close)
	right := CertFingerprint(srv.Certificate().Raw)
	wrong := strings.Repeat("AB:", 31) + "AB"

	t.Run("accept, PVE form", func(t *testing.T) {
		c, err := New(Options{URL: srv.URL, Token: testToken, Fingerprint: right})
		must(t, err)
		_, err = c.Version(t.Context())
		must(t, err)
	})
	t.Run("accept, lower case without colons", func(t *testing.T) {
		c, err := New(Options{URL: srv.URL, Token: testToken, Fingerprint: strings.ToLower(strings.ReplaceAll(right, ":", ""))})
		must(t, err)
		_, err = c.Version(t.Context())
		must(t, err)
	})
	t.Run("reject mismatch", func(t *testing.T) {
		c, err := New(Options{URL: srv.URL, Token: testToken, Fingerprint: wrong})
		must(t, err)
		_, err = c.Version(t.Context())
		var fm *FingerprintMismatchError
		if !errors.As(err, &fm) {
			t.Fatalf("error %v; want FingerprintMismatchError", err)
		}
		eq(t, "Want", fm.Want, wrong)
		eq(t, "Got", fm.Got, right)
		if !strings.Contains(err.Error(), wrong) || !strings.Contains(err.Error(), right) {
			t.Errorf("error %q; want both fingerprints in it", err)
		}
		eq(t, "IsRetryable", IsRetryable(err), false)
	})
	t.Run("system roots reject the test CA", func(t *testing.T) {
		c, err := New(Options{URL: srv.URL, Token: testToken})
		must(t, err)
		_, err = c.Version(t.Context())
		var te *TransportError
		if !errors.As(err, &te) || te.Sent {
			t.Fatalf("error %v; want an unsent TransportError", err)
		}
		eq(t, "IsRetryable", IsRetryable(err), false)
	})
	t.Run("CA file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "pve-root-ca.pem")
		must(t, os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644))
		c, err := New(Options{URL: srv.URL, Token: testToken, CAFile: file})
		must(t, err)
		_, err = c.Version(t.Context())
		must(t, err)
	})
	t.Run("CA file, wrong host name", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "ca.pem")
		must(t, os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644))
		// The httptest certificate is valid for 127.0.0.1 and example.com,
		// not for "localhost".
		u, _ := url.Parse(srv.URL)
		c, err := New(Options{URL: "https://localhost:" + u.Port(), Token: testToken, CAFile: file})
		must(t, err)
		_, err = c.Version(t.Context())
		var he x509.HostnameError
		if !errors.As(err, &he) {
			t.Fatalf("error %v; want a host name verification failure", err)
		}
		eq(t, "IsRetryable", IsRetryable(err), false)
	})
	t.Run("insecure", func(t *testing.T) {
		var logs strings.Builder
		c, err := New(Options{URL: srv.URL, Token: testToken, InsecureSkipVerify: true, Logger: slogTo(&logs)})
		must(t, err)
		_, err = c.Version(t.Context())
		must(t, err)
		if !strings.Contains(logs.String(), "VERIFICATION IS DISABLED") {
			t.Errorf("log %q; want a loud warning", logs.String())
		}
	})
}

func TestNewValidation(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "x.pem")
	must(t, os.WriteFile(notPEM, []byte("hello"), 0o644))
	fp := strings.Repeat("AB:", 31) + "AB"
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"http", Options{URL: "http://pve:8006", Token: testToken}, "not https"},
		{"no host", Options{URL: "pve:8006", Token: testToken}, ""},
		{"user info", Options{URL: "https://root:pw@pve:8006", Token: testToken}, "user info"},
		{"no token", Options{URL: "https://pve:8006"}, "no API token"},
		{"bad token id", Options{URL: "https://pve:8006", Token: Token{ID: "root", Secret: "x"}}, "bad API token"},
		{"bad secret", Options{URL: "https://pve:8006", Token: Token{ID: "root@pam!t", Secret: "a\nb"}}, "bad API token"},
		{"short fingerprint", Options{URL: "https://pve:8006", Token: testToken, Fingerprint: "AB:CD"}, "SHA-256"},
		{"non-hex fingerprint", Options{URL: "https://pve:8006", Token: testToken, Fingerprint: strings.Repeat("ZZ", 32)}, "not hex"},
		{"pin and CA", Options{URL: "https://pve:8006", Token: testToken, Fingerprint: fp, CAFile: notPEM}, "at most one"},
		{"pin and insecure", Options{URL: "https://pve:8006", Token: testToken, Fingerprint: fp, InsecureSkipVerify: true}, "at most one"},
		{"CA not PEM", Options{URL: "https://pve:8006", Token: testToken, CAFile: notPEM}, "no PEM"},
		{"CA missing", Options{URL: "https://pve:8006", Token: testToken, CAFile: filepath.Join(dir, "nope")}, "read CA file"},
		{"HTTPClient and pin", Options{URL: "https://pve:8006", Token: testToken, Fingerprint: fp, HTTPClient: http.DefaultClient}, "HTTPClient"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error = %v; want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Errorf("error %q reveals the secret", err)
			}
		})
	}
	c, err := New(Options{URL: "https://pve:8006/api2/json/", Token: testToken})
	must(t, err)
	eq(t, "base", c.base, "https://pve:8006/api2/json")
}

// recorded is one request as the server saw it.
type recorded struct {
	Method, Path, Query, ContentType string
	Form                             url.Values
}

type recorder struct {
	mu   sync.Mutex
	reqs []recorded
}

func (r *recorder) add(req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	form, _ := url.ParseQuery(string(body))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, recorded{req.Method, req.URL.Path, req.URL.RawQuery, req.Header.Get("Content-Type"), form})
}

func (r *recorder) last() recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reqs[len(r.reqs)-1]
}

func TestMutationsWireFormAndResult(t *testing.T) {
	rec := &recorder{}
	_, c := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.add(r)
		switch {
		case r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/config"):
			writeJSON(w, 200, `{"data":null}`) // synchronous
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/config") && r.URL.Path == "/api2/json/nodes/pve/qemu/102/config":
			writeJSON(w, 200, `{"data":null}`) // POST finished within background_delay
		default:
			writeJSON(w, 200, `{"data":"`+testUPID+`"}`)
		}
	}))
	upid, _ := ParseUPID(testUPID)
	ctx := t.Context()
	tests := []struct {
		name     string
		call     func() (Result, error)
		method   string
		path     string
		form     string // sorted form body
		query    string
		wantTask bool
	}{
		{"start qemu", func() (Result, error) { return c.Start(ctx, "pve", guest.QEMU, 101) }, "POST", "/nodes/pve/qemu/101/status/start", "", "", true},
		{"stop lxc", func() (Result, error) { return c.Stop(ctx, "pve", guest.LXC, 200) }, "POST", "/nodes/pve/lxc/200/status/stop", "", "", true},
		{"shutdown with timeout and forceStop", func() (Result, error) {
			return c.Shutdown(ctx, "pve", guest.QEMU, 101, ShutdownOptions{Timeout: 90*time.Second + time.Millisecond, ForceStop: true})
		}, "POST", "/nodes/pve/qemu/101/status/shutdown", "forceStop=1&timeout=91", "", true},
		{"shutdown defaults", func() (Result, error) { return c.Shutdown(ctx, "pve", guest.LXC, 101, ShutdownOptions{}) }, "POST", "/nodes/pve/lxc/101/status/shutdown", "", "", true},
		{"reboot", func() (Result, error) { return c.Reboot(ctx, "pve", guest.QEMU, 101, 90500*time.Millisecond) }, "POST", "/nodes/pve/qemu/101/status/reboot", "timeout=91", "", true},
		{"reboot defaults", func() (Result, error) { return c.Reboot(ctx, "pve", guest.LXC, 101, 0) }, "POST", "/nodes/pve/lxc/101/status/reboot", "", "", true},
		{"config qemu sync", func() (Result, error) {
			return c.SetConfig(ctx, "pve", guest.QEMU, 101, ConfigChange{Set: map[string]string{"cores": "4", "description": "web\nfront"}, Delete: []string{"net1", "balloon", "net1"}, Digest: "abc"})
		}, "PUT", "/nodes/pve/qemu/101/config", "cores=4&delete=balloon%2Cnet1&description=web%0Afront&digest=abc", "", false},
		{"config qemu async gives task", func() (Result, error) {
			return c.SetConfig(ctx, "pve", guest.QEMU, 101, ConfigChange{Set: map[string]string{"memory": "4096"}, Async: true})
		}, "POST", "/nodes/pve/qemu/101/config", "memory=4096", "", true},
		{"config qemu async finished at once", func() (Result, error) {
			return c.SetConfig(ctx, "pve", guest.QEMU, 102, ConfigChange{Set: map[string]string{"onboot": "1"}, Async: true})
		}, "POST", "/nodes/pve/qemu/102/config", "onboot=1", "", false},
		{"config lxc", func() (Result, error) {
			return c.SetConfig(ctx, "pve", guest.LXC, 200, ConfigChange{Delete: []string{"mp0"}})
		}, "PUT", "/nodes/pve/lxc/200/config", "delete=mp0", "", false},
		{"resize", func() (Result, error) { return c.Resize(ctx, "pve", guest.QEMU, 101, "scsi0", "+10G", "d1") }, "PUT", "/nodes/pve/qemu/101/resize", "digest=d1&disk=scsi0&size=%2B10G", "", true},
		{"create", func() (Result, error) {
			return c.Create(ctx, "pve", guest.LXC, 300, map[string]string{"ostemplate": "local:vztmpl/debian-12.tar.zst", "unprivileged": "1"})
		}, "POST", "/nodes/pve/lxc", "ostemplate=local%3Avztmpl%2Fdebian-12.tar.zst&unprivileged=1&vmid=300", "", true},
		{"destroy with purge", func() (Result, error) {
			return c.Destroy(ctx, "pve", guest.QEMU, 101, DestroyOptions{Purge: true, DestroyUnreferencedDisks: true})
		}, "DELETE", "/nodes/pve/qemu/101", "", "destroy-unreferenced-disks=1&purge=1", true},
		{"destroy plain", func() (Result, error) { return c.Destroy(ctx, "pve", guest.LXC, 200, DestroyOptions{}) }, "DELETE", "/nodes/pve/lxc/200", "", "", true},
		{"snapshot", func() (Result, error) {
			return c.SnapshotCreate(ctx, "pve", guest.QEMU, 101, "pre-upgrade", "before apt")
		}, "POST", "/nodes/pve/qemu/101/snapshot", "description=before+apt&snapname=pre-upgrade", "", true},
		{"rollback", func() (Result, error) { return c.SnapshotRollback(ctx, "pve", guest.LXC, 200, "pre_upgrade") }, "POST", "/nodes/pve/lxc/200/snapshot/pre_upgrade/rollback", "", "", true},
		{"snapshot delete", func() (Result, error) { return c.SnapshotDelete(ctx, "pve", guest.QEMU, 101, "pre-upgrade") }, "DELETE", "/nodes/pve/qemu/101/snapshot/pre-upgrade", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := tt.call()
			must(t, err)
			u, isTask := res.Task()
			eq(t, "is task", isTask, tt.wantTask)
			if tt.wantTask {
				eq(t, "UPID", u, upid)
			} else {
				eq(t, "UPID", u, UPID{})
			}
			r := rec.last()
			eq(t, "method", r.Method, tt.method)
			eq(t, "path", r.Path, "/api2/json"+tt.path)
			eq(t, "form", r.Form.Encode(), tt.form)
			eq(t, "query", r.Query, tt.query)
			if tt.method == "POST" || tt.method == "PUT" {
				eq(t, "content type", r.ContentType, "application/x-www-form-urlencoded")
			}
		})
	}
}

func TestMutationValidation(t *testing.T) {
	var hits atomic.Int64
	_, c := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		writeJSON(w, 200, `{"data":null}`)
	}))
	ctx := t.Context()
	tests := []struct {
		name string
		call func() (Result, error)
		want string
	}{
		{"async lxc", func() (Result, error) {
			return c.SetConfig(ctx, "pve", guest.LXC, 200, ConfigChange{Set: map[string]string{"cores": "2"}, Async: true})
		}, "only for QEMU"},
		{"empty change", func() (Result, error) { return c.SetConfig(ctx, "pve", guest.QEMU, 101, ConfigChange{}) }, "nothing"},
		{"set and delete", func() (Result, error) {
			return c.SetConfig(ctx, "pve", guest.QEMU, 101, ConfigChange{Set: map[string]string{"net0": "x"}, Delete: []string{"net0"}})
		}, "both set and deleted"},
		{"digest via Set", func() (Result, error) {
			return c.SetConfig(ctx, "pve", guest.QEMU, 101, ConfigChange{Set: map[string]string{"digest": "x"}})
		}, "cannot be set"},
		{"bad key", func() (Result, error) {
			return c.SetConfig(ctx, "pve", guest.QEMU, 101, ConfigChange{Set: map[string]string{"a&b": "x"}})
		}, "bad parameter name"},
		{"bad kind", func() (Result, error) { return c.Start(ctx, "pve", guest.Kind("vm"), 101) }, "unknown kind"},
		{"bad vmid", func() (Result, error) { return c.Start(ctx, "pve", guest.QEMU, 99) }, "bad VMID"},
		{"bad node", func() (Result, error) { return c.Start(ctx, "../x", guest.QEMU, 101) }, "bad node"},
		{"vmid conflict", func() (Result, error) { return c.Create(ctx, "pve", guest.QEMU, 101, map[string]string{"vmid": "102"}) }, "vmid"},
		{"snapshot current", func() (Result, error) { return c.SnapshotCreate(ctx, "pve", guest.QEMU, 101, "current", "") }, "bad snapshot name"},
		{"snapshot slash", func() (Result, error) { return c.SnapshotDelete(ctx, "pve", guest.QEMU, 101, "a/../b") }, "bad snapshot name"},
		{"resize no size", func() (Result, error) { return c.Resize(ctx, "pve", guest.QEMU, 101, "scsi0", "", "") }, "size"},
		{"negative shutdown", func() (Result, error) {
			return c.Shutdown(ctx, "pve", guest.QEMU, 101, ShutdownOptions{Timeout: -time.Second})
		}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.call()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v; want one containing %q", err, tt.want)
			}
		})
	}
	eq(t, "requests sent", hits.Load(), int64(0))
}

// A mutation whose answer is not a UPID or null happened, but cannot be
// followed: outcome unknown.
func TestMutationBadUPIDIsOutcomeUnknown(t *testing.T) {
	_, c := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, `{"data":"UPID:pve:0000ABCD:00ABCDEF:65C0FA88:vzstart:101:root"}`)
	}))
	_, err := c.Start(t.Context(), "pve", guest.LXC, 101)
	var ou *OutcomeUnknownError
	if !errors.As(err, &ou) {
		t.Fatalf("error %v; want OutcomeUnknownError", err)
	}
	eq(t, "IsRetryable", IsRetryable(err), false)
}

// taskServer answers task status polls from a script.
func taskServer(t *testing.T, script []func(w http.ResponseWriter)) (*Client, *atomic.Int64) {
	var n atomic.Int64
	_, c := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		if want := "/api2/json/nodes/pve/tasks/" + testUPID + "/status"; r.URL.Path != want {
			t.Errorf("path %q; want %q", r.URL.Path, want)
		}
		if i >= len(script) {
			i = len(script) - 1
		}
		script[i](w)
	}))
	return c, &n
}

func running(w http.ResponseWriter) {
	writeJSON(w, 200, `{"data":{"status":"running","upid":"`+testUPID+`","node":"pve","pid":43981,"type":"qmstart","id":"101","user":"root@pam","tokenid":"steward","starttime":1707145864,"pstart":11259375}}`)
}

func stopped(exit string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		writeJSON(w, 200, fmt.Sprintf(`{"data":{"status":"stopped","exitstatus":%q,"upid":%q,"node":"pve","pid":"43981","type":"qmstart","id":"101","user":"root@pam","starttime":"1707145864"}}`, exit, testUPID))
	}
}

func status(code int, reason string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		conn, buf, _ := w.(http.Hijacker).Hijack()
		defer conn.Close()
		fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{\"data\":null}", code, reason)
		buf.Flush()
	}
}

func TestWaitTask(t *testing.T) {
	upid, _ := ParseUPID(testUPID)
	tests := []struct {
		name     string
		script   []func(w http.ResponseWriter)
		want     TaskResult
		wantExit string // TaskError text
		wantErr  string // other error
		polls    int64
	}{
		{"ok at once", []func(http.ResponseWriter){stopped("OK")}, TaskResult{ExitStatus: "OK"}, "", "", 1},
		{"running then ok", []func(http.ResponseWriter){running, running, running, stopped("OK")}, TaskResult{ExitStatus: "OK"}, "", "", 4},
		{"warnings", []func(http.ResponseWriter){running, stopped("WARNINGS: 2")}, TaskResult{ExitStatus: "WARNINGS: 2", Warnings: 2}, "", "", 2},
		{"error text kept exactly", []func(http.ResponseWriter){running, stopped("VM 101 already running")}, TaskResult{}, "VM 101 already running", "", 2},
		{"lock timeout in task", []func(http.ResponseWriter){stopped("can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout")}, TaskResult{}, "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout", "", 1},
		{"ERROR prefix is just text", []func(http.ResponseWriter){stopped("unexpected status")}, TaskResult{}, "unexpected status", "", 1},
		{"transient 596 and 500 polled through", []func(http.ResponseWriter){running, status(596, "Connection timed out"), status(500, "proxy error"), stopped("OK")}, TaskResult{ExitStatus: "OK"}, "", "", 4},
		{"403 stops", []func(http.ResponseWriter){status(403, "Permission check failed (/nodes/pve, Sys.Audit)")}, TaskResult{}, "", "Permission check failed", 1},
		{"no such task stops", []func(http.ResponseWriter){func(w http.ResponseWriter) {
			writeJSON(w, 400, `{"data":null,"errors":{"upid":"no such task"}}`)
		}}, TaskResult{}, "", "no such task", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, n := taskServer(t, tt.script)
			var sleeps []time.Duration
			c.sleep = func(ctx context.Context, d time.Duration) error { sleeps = append(sleeps, d); return ctx.Err() }
			c.jitter = func() float64 { return 0 }
			got, err := c.WaitTask(t.Context(), upid, WaitOptions{})
			switch {
			case tt.wantExit != "":
				var te *TaskError
				if !errors.As(err, &te) || te.ExitStatus != tt.wantExit || te.UPID != upid {
					t.Fatalf("WaitTask = %v, %v; want TaskError %q", got, err, tt.wantExit)
				}
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("WaitTask error = %v; want one containing %q", err, tt.wantErr)
				}
			default:
				must(t, err)
				eq(t, "result", got, tt.want)
			}
			eq(t, "polls", n.Load(), tt.polls)
			eq(t, "sleeps", len(sleeps), int(tt.polls)-1)
		})
	}
}

func TestWaitTaskBackoffCappedWithJitter(t *testing.T) {
	upid, _ := ParseUPID(testUPID)
	script := []func(http.ResponseWriter){}
	for range 8 {
		script = append(script, running)
	}
	script = append(script, stopped("OK"))
	for _, jit := range []float64{0, 0.999} {
		t.Run(fmt.Sprint("jitter ", jit), func(t *testing.T) {
			c, _ := taskServer(t, script)
			var sleeps []time.Duration
			c.sleep = func(ctx context.Context, d time.Duration) error { sleeps = append(sleeps, d); return nil }
			c.jitter = func() float64 { return jit }
			_, err := c.WaitTask(t.Context(), upid, WaitOptions{Initial: 100 * time.Millisecond, Max: time.Second})
			must(t, err)
			want := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000, 1000}
			if len(sleeps) != len(want) {
				t.Fatalf("sleeps %v; want %d of them", sleeps, len(want))
			}
			for i, w := range want {
				hi := w * time.Millisecond
				lo := hi - hi/10
				if sleeps[i] > hi || sleeps[i] < lo {
					t.Errorf("sleep %d: got %v; want within [%v, %v]", i, sleeps[i], lo, hi)
				}
			}
		})
	}
}

func TestWaitTaskContextEnds(t *testing.T) {
	upid, _ := ParseUPID(testUPID)
	c, n := taskServer(t, []func(http.ResponseWriter){running})
	ctx, cancel := context.WithCancel(t.Context())
	c.sleep = func(ctx context.Context, d time.Duration) error {
		if n.Load() == 3 {
			cancel()
		}
		<-ctx.Done()
		return ctx.Err()
	}
	c.sleep = func(sctx context.Context, d time.Duration) error {
		if n.Load() >= 3 {
			cancel()
			<-sctx.Done()
			return sctx.Err()
		}
		return nil
	}
	_, err := c.WaitTask(ctx, upid, WaitOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v; want context.Canceled", err)
	}
	eq(t, "IsRetryable", IsRetryable(err), false)
	eq(t, "polls", n.Load(), int64(3))
}

// The server reads the whole request, then drops the connection without
// answering: for a mutation the outcome is unknown and it is not re-sent;
// for a read it is a retryable transport error.
func TestConnectionLostAfterRequest(t *testing.T) {
	var hits atomic.Int64
	_, c := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.ReadAll(r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		conn.Close()
	}))
	mutations := map[string]func() (Result, error){
		"start": func() (Result, error) { return c.Start(t.Context(), "pve", guest.QEMU, 101) },
		"config put": func() (Result, error) {
			return c.SetConfig(t.Context(), "pve", guest.QEMU, 101, ConfigChange{Set: map[string]string{"cores": "2"}})
		},
		"destroy": func() (Result, error) { return c.Destroy(t.Context(), "pve", guest.QEMU, 101, DestroyOptions{}) },
	}
	for name, call := range mutations {
		t.Run(name, func(t *testing.T) {
			before := hits.Load()
			_, err := call()
			var ou *OutcomeUnknownError
			if !errors.As(err, &ou) {
				t.Fatalf("error %v (%T); want OutcomeUnknownError", err, err)
			}
			eq(t, "IsRetryable", IsRetryable(err), false)
			eq(t, "requests received", hits.Load()-before, int64(1))
		})
	}
	t.Run("read", func(t *testing.T) {
		_, err := c.Version(t.Context())
		var te *TransportError
		if !errors.As(err, &te) || !te.Sent {
			t.Fatalf("error %v (%T); want a sent TransportError", err, err)
		}
		eq(t, "IsRetryable", IsRetryable(err), true)
	})
}

// A mutation that cannot even connect was never sent: safe to retry.
func TestDialFailureIsRetryable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	ln.Close()
	c, err := New(Options{URL: "https://" + addr, Token: testToken, Fingerprint: strings.Repeat("AB", 32)})
	must(t, err)
	_, err = c.Start(t.Context(), "pve", guest.QEMU, 101)
	var te *TransportError
	if !errors.As(err, &te) || te.Sent {
		t.Fatalf("error %v (%T); want an unsent TransportError", err, err)
	}
	eq(t, "IsRetryable", IsRetryable(err), true)
	var ou *OutcomeUnknownError
	eq(t, "outcome unknown", errors.As(err, &ou), false)
}

// A mutation whose caller gives up after the request reached PVE is
// outcome-unknown: PVE may be executing it.
//
// The server must really never answer. A handler that merely returns when
// its request context ends makes net/http write an empty "200 OK": the
// client's cancel sends TLS close_notify before it closes the socket, the
// server's context ends on the close_notify, and the transport may still
// read that 200 and prefer it to the closed connection (about 1 run in 20
// under -race). So the handler hijacks the connection and only drains it
// until the client hangs up.
func TestMutationCancelledAfterSendIsOutcomeUnknown(t *testing.T) {
	received := make(chan struct{}, 1)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		received <- struct{}{}
		io.Copy(io.Discard, conn) // never answers; returns when the client closes
	}))
	t.Cleanup(srv.Close)
	c, err := New(Options{URL: srv.URL, Token: testToken, Fingerprint: CertFingerprint(srv.Certificate().Raw)})
	must(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-received
		cancel()
	}()
	_, err = c.Stop(ctx, "pve", guest.QEMU, 101)
	var ou *OutcomeUnknownError
	if !errors.As(err, &ou) || !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v (%T); want OutcomeUnknownError wrapping context.Canceled", err, err)
	}
	eq(t, "IsRetryable", IsRetryable(err), false)
}

// A cancelled caller context is never retryable.
func TestCallerCancelNotRetryable(t *testing.T) {
	_, c := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, `{"data":{}}`) }))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := c.Version(ctx)
	if !errors.Is(err, context.Canceled) || IsRetryable(err) {
		t.Fatalf("error %v, retryable %v; want context.Canceled, not retryable", err, IsRetryable(err))
	}
}

// The secret never appears in an error, even when a hostile or buggy
// server echoes it back.
func TestSecretNeverInErrors(t *testing.T) {
	_, c := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		conn, buf, _ := w.(http.Hijacker).Hijack()
		defer conn.Close()
		body := fmt.Sprintf(`{"data":null,"message":"bad token %s\n","errors":{"token":"%s"}}`, auth, auth)
		fmt.Fprintf(buf, "HTTP/1.1 401 invalid token value %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", auth, len(body), body)
		buf.Flush()
	}))
	_, err := c.Version(t.Context())
	ae := apiErr(t, err)
	for name, s := range map[string]string{"Error": err.Error(), "Message": ae.Message, "BodyMessage": ae.BodyMessage, "Errors": fmt.Sprint(ae.Errors), "%+v": fmt.Sprintf("%+v", err)} {
		if strings.Contains(s, testSecret) {
			t.Errorf("%s = %q; reveals the secret", name, s)
		}
		if name != "Errors" && !strings.Contains(s, "root@pam!steward") {
			t.Errorf("%s = %q; want the rest of the text kept", name, s)
		}
	}
	eq(t, "IsRetryable 401", IsRetryable(err), false)
}

func TestAPIErrorClassification(t *testing.T) {
	tests := []struct {
		code       int
		reason     string
		errs       map[string]string
		body       string
		retry      bool
		notFound   bool
		lock       bool
		digest     bool
		path, priv string
	}{
		{code: 400, reason: "Parameter verification failed.", errs: map[string]string{"vmid": "invalid format"}},
		{code: 401, reason: "No ticket"},
		{code: 401, reason: "Authentication failed!"},
		{code: 403, reason: "Permission check failed (/vms/101, VM.PowerMgmt)", path: "/vms/101", priv: "VM.PowerMgmt"},
		{code: 403, reason: "Permission check failed", body: "Permission check failed (/vms/2000, VM.Snapshot|VM.Snapshot.Rollback)\n", path: "/vms/2000", priv: "VM.Snapshot|VM.Snapshot.Rollback"},
		{code: 403, reason: "Permission check failed (user != root@pam)"},
		{code: 500, reason: "Configuration file 'nodes/pve/qemu-server/101.conf' does not exist", notFound: true},
		{code: 500, reason: "snapshot 'x' does not exist", notFound: true},
		{code: 400, reason: "Parameter verification failed.", errs: map[string]string{"storage": "storage 'nope' does not exist"}},
		{code: 400, reason: "Parameter verification failed.", errs: map[string]string{"upid": "no such task"}, notFound: true},
		{code: 500, reason: "can't lock file '/var/lock/qemu-server/lock-104.conf' - got timeout", retry: true, lock: true},
		{code: 500, reason: "VM is locked (backup)", retry: true},
		{code: 500, reason: "checksum mismatch (file change by other user?)", digest: true},
		{code: 500, reason: "detected modified configuration - file changed by other user? Try again.", digest: true},
		{code: 500, reason: "unable to create VM 101 - VM 101 already exists on node 'pve'"},
		{code: 500, reason: "Internal Server Error", retry: true},
		{code: 501, reason: "Method 'GET /nodes/pve2//12/config' not implemented"},
		{code: 502, reason: "Bad Gateway", retry: true},
		{code: 595, reason: "Connection refused", retry: true},
		{code: 596, reason: "Connection timed out", retry: true},
		{code: 596, reason: "Broken pipe", retry: true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code, " ", tt.reason), func(t *testing.T) {
			err := error(&APIError{Method: "POST", Path: "/x", StatusCode: tt.code, Message: tt.reason, Errors: tt.errs, BodyMessage: tt.body})
			err = fmt.Errorf("wrapped: %w", err)
			eq(t, "IsRetryable", IsRetryable(err), tt.retry)
			eq(t, "IsNotFound", IsNotFound(err), tt.notFound)
			eq(t, "IsLockTimeout", IsLockTimeout(err), tt.lock)
			eq(t, "IsDigestMismatch", IsDigestMismatch(err), tt.digest)
			path, priv, ok := apiErr(t, err).MissingPrivilege()
			eq(t, "MissingPrivilege", sp(path, priv, ok), sp(tt.path, tt.priv, tt.path != ""))
		})
	}
	for _, err := range []error{nil, errors.New("x"), context.Canceled, &OutcomeUnknownError{Err: io.EOF}} {
		eq(t, fmt.Sprint("IsRetryable ", err), IsRetryable(err), false)
	}
	eq(t, "unsent transport", IsRetryable(&TransportError{Err: io.EOF}), true)
	eq(t, "cert transport", IsRetryable(&TransportError{Err: &FingerprintMismatchError{}}), false)
	eq(t, "caller done transport", IsRetryable(&TransportError{Err: io.EOF, callerDone: true}), false)
}

func TestReadPathsAndQueries(t *testing.T) {
	rec := &recorder{}
	_, c := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.add(r)
		writeJSON(w, 200, `{"data":[]}`)
	}))
	ctx := t.Context()
	upid, _ := ParseUPID(testUPID)
	since := time.Unix(1700000000, 0)
	tests := []struct {
		name  string
		call  func() error
		path  string
		query string
	}{
		{"resources", func() error { _, err := c.ClusterResources(ctx, "vm"); return err }, "/cluster/resources", "type=vm"},
		{"pending", func() error { _, err := c.Pending(ctx, "pve", guest.QEMU, 101); return err }, "/nodes/pve/qemu/101/pending", ""},
		{"storage", func() error { _, err := c.Storage(ctx, "pve"); return err }, "/nodes/pve/storage", ""},
		{"snapshots", func() error { _, err := c.Snapshots(ctx, "pve", guest.LXC, 200); return err }, "/nodes/pve/lxc/200/snapshot", ""},
		{"task log", func() error { _, err := c.TaskLog(ctx, "pve", upid, 10, 100); return err }, "/nodes/pve/tasks/" + testUPID + "/log", "limit=100&start=10"},
		{"tasks", func() error {
			_, err := c.Tasks(ctx, "pve", TaskQuery{Limit: 5, Source: "all", VMID: 101, Errors: true, Since: since, TypeFilter: "qmstart"})
			return err
		}, "/nodes/pve/tasks", "errors=1&limit=5&since=1700000000&source=all&typefilter=qmstart&vmid=101"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			must(t, tt.call())
			r := rec.last()
			eq(t, "method", r.Method, "GET")
			eq(t, "path", r.Path, "/api2/json"+tt.path)
			q, _ := url.ParseQuery(r.Query)
			eq(t, "query", q.Encode(), tt.query)
		})
	}
}

func TestReadDecodesPVEShapes(t *testing.T) {
	bodies := map[string]string{
		"/api2/json/nodes/pve/qemu/101/pending":  `{"data":[{"key":"cores","value":2,"pending":4},{"key":"net1","value":"virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr0","delete":1},{"key":"name","value":"web"},{"key":"tags","pending":""}]}`,
		"/api2/json/nodes/pve/storage":           `{"data":[{"storage":"local-lvm","type":"lvmthin","content":"rootdir,images","active":1,"enabled":1,"shared":0,"total":"100","used":40,"avail":60,"used_fraction":0.4}]}`,
		"/api2/json/nodes/pve/qemu/101/snapshot": `{"data":[{"name":"pre","description":"","snaptime":1700000000,"vmstate":0},{"name":"current","description":"You are here!","parent":"pre","running":1,"digest":"abc"}]}`,
	}
	_, c := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, bodies[r.URL.Path])
	}))
	ctx := t.Context()
	ps, err := c.Pending(ctx, "pve", guest.QEMU, 101)
	must(t, err)
	eq(t, "pending", fmt.Sprint(ps), "[{cores 2 true 4 true 0} {net1 virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr0 true  false 1} {name web true  false 0} {tags  false  true 0}]")
	if _, err := PendingConfigOf(ps); err == nil {
		t.Errorf("PendingConfigOf without a digest row: nil error; want one")
	}
	pc, err := PendingConfigOf(append(ps, PendingItem{Key: "digest", Value: "d1", HasValue: true}))
	must(t, err)
	eq(t, "pending view", fmt.Sprint(pc.Config.Values, " ", pc.Config.Digest), "map[cores:4 name:web tags:] d1")
	eq(t, "current view", fmt.Sprint(pc.Current), "map[cores:2 name:web net1:virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr0]")
	eq(t, "pending keys", fmt.Sprint(pc.Pending), "[cores net1 tags]")
	st, err := c.Storage(ctx, "pve")
	must(t, err)
	eq(t, "storage", fmt.Sprint(st), "[{local-lvm lvmthin rootdir,images true true false 100 40 60 0.4}]")
	ss, err := c.Snapshots(ctx, "pve", guest.QEMU, 101)
	must(t, err)
	eq(t, "snapshots", len(ss), 2)
	eq(t, "current", sp(ss[1].IsCurrent(), ss[1].Parent, ss[1].Running, ss[1].Digest, ss[0].IsCurrent(), ss[0].SnapTime), "true pre true abc false 1700000000")
}

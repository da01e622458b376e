package pvetest_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/pve/pvetest"
	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/sim/simtest"
)

// TestConformance runs the client conformance suite against the simulator
// always, and also against a real PVE host when STEWARD_PVE_URL,
// STEWARD_PVE_TOKEN and STEWARD_PVE_FINGERPRINT name one (read-only there:
// nothing on a real host is changed by tests).
func TestConformance(t *testing.T) {
	t.Run("simulator", func(t *testing.T) {
		srv := simtest.Start(t, sim.Options{Guests: 12, Seed: 1, TaskDuration: 5 * time.Millisecond})
		tok, err := pve.ParseToken(srv.Token)
		if err != nil {
			t.Fatal(err)
		}
		newClient := func(tok pve.Token) (*pve.Client, error) {
			return pve.New(pve.Options{URL: srv.URL, Token: tok, Fingerprint: srv.Fingerprint})
		}
		c, err := newClient(tok)
		if err != nil {
			t.Fatal(err)
		}
		pvetest.RunConformance(t, c, pvetest.Config{Node: "pve", NewClient: newClient, Mutate: true, ScratchVMID: 9001,
			Wait: pve.WaitOptions{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond}})
	})
	if c, node, ok := pvetest.FromEnv(t); ok {
		t.Run("real-pve", func(t *testing.T) {
			pvetest.RunConformance(t, c, pvetest.Config{Node: node})
		})
	}
}

// The client's error classification against the simulator's PVE-shaped
// failures: a response lost after execution is outcome-unknown and was
// executed exactly once; 596 is retryable; a missing privilege is named;
// a "backup" lock refuses writes without being retryable as a lock timeout.
func TestSimulatorFailureClassification(t *testing.T) {
	srv := simtest.Start(t, sim.Options{Seed: 7, TaskDuration: 5 * time.Millisecond})
	must(t, srv.Sim.AddGuest(sim.GuestSpec{VMID: 101, Kind: guest.QEMU, Name: "web", Config: map[string]string{"memory": "2048", "cores": "2"}}))
	tok, err := pve.ParseToken(srv.Token)
	must(t, err)
	c, err := pve.New(pve.Options{URL: srv.URL, Token: tok, Fingerprint: srv.Fingerprint})
	must(t, err)
	ctx := t.Context()

	t.Run("dropped after execution", func(t *testing.T) {
		srv.Sim.SetFaults(sim.Faults{DropAfterExecRate: 1})
		defer srv.Sim.SetFaults(sim.Faults{})
		before := len(srv.Sim.Mutations())
		_, err := c.SetConfig(ctx, "pve", guest.QEMU, 101, pve.ConfigChange{Set: map[string]string{"cores": "4"}})
		var ou *pve.OutcomeUnknownError
		if !errors.As(err, &ou) || pve.IsRetryable(err) {
			t.Fatalf("error %v (%T); want OutcomeUnknownError, not retryable", err, err)
		}
		if got := len(srv.Sim.Mutations()) - before; got != 1 {
			t.Errorf("mutations executed: got %d; want exactly 1", got)
		}
	})
	t.Run("596 retryable", func(t *testing.T) {
		srv.Sim.SetFaults(sim.Faults{Status596Rate: 1})
		defer srv.Sim.SetFaults(sim.Faults{})
		_, err := c.Start(ctx, "pve", guest.QEMU, 101)
		var ae *pve.APIError
		if !errors.As(err, &ae) || ae.StatusCode != 596 || !pve.IsRetryable(err) {
			t.Fatalf("error %v; want a retryable 596", err)
		}
	})
	t.Run("missing privilege", func(t *testing.T) {
		srv.Sim.AddToken("audit@pve!ro", "secret-ro", map[string][]string{"/": {"VM.Audit", "Sys.Audit"}})
		ro, err := pve.New(pve.Options{URL: srv.URL, Token: pve.Token{ID: "audit@pve!ro", Secret: "secret-ro"}, Fingerprint: srv.Fingerprint})
		must(t, err)
		_, err = ro.Start(ctx, "pve", guest.QEMU, 101)
		var ae *pve.APIError
		if !errors.As(err, &ae) {
			t.Fatalf("error %v; want APIError", err)
		}
		path, priv, ok := ae.MissingPrivilege()
		if !ok || path != "/vms/101" || priv != "VM.PowerMgmt" || pve.IsRetryable(err) {
			t.Errorf("MissingPrivilege = %q %q %v, retryable %v; want /vms/101 VM.PowerMgmt, not retryable", path, priv, ok, pve.IsRetryable(err))
		}
	})
	t.Run("backup lock", func(t *testing.T) {
		must(t, srv.Sim.SetLock(101, "backup"))
		defer srv.Sim.SetLock(101, "")
		_, err := c.SetConfig(ctx, "pve", guest.QEMU, 101, pve.ConfigChange{Set: map[string]string{"cores": "3"}})
		if err == nil || !strings.Contains(err.Error(), "VM is locked (backup)") || pve.IsLockTimeout(err) {
			t.Errorf("error %v; want \"VM is locked (backup)\", not a lock timeout", err)
		}
	})
	t.Run("task failure text", func(t *testing.T) {
		srv.Sim.SetFaults(sim.Faults{TaskFailRate: 1})
		defer srv.Sim.SetFaults(sim.Faults{})
		r, err := c.Start(ctx, "pve", guest.QEMU, 101)
		must(t, err)
		u, ok := r.Task()
		if !ok {
			t.Fatal("start returned no task")
		}
		_, err = c.WaitTask(ctx, u, pve.WaitOptions{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond})
		var te *pve.TaskError
		if !errors.As(err, &te) || te.ExitStatus == "" || te.UPID != u {
			t.Errorf("WaitTask error %v; want a TaskError with PVE's text", err)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

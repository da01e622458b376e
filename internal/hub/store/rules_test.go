package store

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/steward-pve/steward/internal/wire"
)

func TestRetryOutcome(t *testing.T) {
	next := time.Unix(100, 0)
	tests := []struct {
		name          string
		state, holder string
		dead          bool
		wantState     string
		wantDone      time.Time
		wantErr       error
	}{
		{"retry", OutboxPending, "me", false, OutboxPending, time.Time{}, nil},
		{"give up", OutboxPending, "me", true, OutboxDead, next, nil},
		{"lease taken", OutboxPending, "other", false, "", time.Time{}, ErrConflict},
		{"delivered meanwhile", OutboxDelivered, "", false, "", time.Time{}, ErrConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, done, err := RetryOutcome(7, tt.state, tt.holder, "me", next, tt.dead)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("err = %v; want %v", err, tt.wantErr)
			}
			if st != tt.wantState || !done.Equal(tt.wantDone) {
				t.Errorf("got (%q, %v); want (%q, %v)", st, done, tt.wantState, tt.wantDone)
			}
		})
	}
}

func TestJobResultRules(t *testing.T) {
	for _, tt := range []struct {
		state, want string
	}{{wire.JobHeld, JobWaiting}, {wire.JobDone, wire.JobDone}, {wire.JobFailed, wire.JobFailed}, {wire.JobRejected, wire.JobRejected}} {
		got, err := JobResultState(wire.JobResult{State: tt.state})
		if err != nil || got != tt.want {
			t.Errorf("JobResultState(%q) = %q, %v; want %q", tt.state, got, err, tt.want)
		}
	}
	if _, err := JobResultState(wire.JobResult{State: "bogus"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("JobResultState(bogus) err = %v; want ErrInvalid", err)
	}
	for _, tt := range []struct {
		cur, result string
		apply       bool
		err         error
	}{
		{JobWaiting, wire.JobDone, true, nil},
		{wire.JobDone, wire.JobDone, false, nil},
		{wire.JobDone, wire.JobFailed, false, ErrConflict},
	} {
		apply, err := JobResultApplies(tt.cur, wire.JobResult{Job: "j", State: tt.result})
		if apply != tt.apply || !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
			t.Errorf("JobResultApplies(%q, %q) = %v, %v; want %v, %v", tt.cur, tt.result, apply, err, tt.apply, tt.err)
		}
	}
}

func TestMigrations(t *testing.T) {
	good := fstest.MapFS{
		"migrations/0002_b.sql": {Data: []byte("B")},
		"migrations/0001_a.sql": {Data: []byte("A")},
	}
	got, err := Migrations(good, "x")
	if err != nil || strings.Join(got, ",") != "A,B" {
		t.Fatalf("Migrations = %q, %v; want [A B]", got, err)
	}
	gap := fstest.MapFS{
		"migrations/0001_a.sql": {Data: []byte("A")},
		"migrations/0003_c.sql": {Data: []byte("C")},
	}
	if _, err := Migrations(gap, "x"); err == nil || !strings.Contains(err.Error(), "x: migration migrations/0003_c.sql out of sequence") {
		t.Fatalf("Migrations(gap) err = %v; want out of sequence naming the file", err)
	}
}

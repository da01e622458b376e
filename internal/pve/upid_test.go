package pve

import (
	"errors"
	"testing"
)

func TestParseUPIDRealExamples(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want UPID
	}{
		{"proxmoxer vzdump", "UPID:node1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:",
			UPID{Node: "node1", PID: 1044989, PStart: 284768076, StartTime: 1661825068, Type: "vzdump", ID: "110", User: "root@pam"}},
		{"bpg qmstart", "UPID:prox-srv2:003EB904:2E8895E0:65C0FA88:qmstart:129:root@pam:",
			UPID{Node: "prox-srv2", PID: 0x3EB904, PStart: 0x2E8895E0, StartTime: 0x65C0FA88, Type: "qmstart", ID: "129", User: "root@pam"}},
		{"ansible srvreload", "UPID:iaclab-01-01:00000DD3:1C419D88:6119FB65:srvreload:networking:root@pam:",
			UPID{Node: "iaclab-01-01", PID: 3539, PStart: 474062216, StartTime: 0x6119FB65, Type: "srvreload", ID: "networking", User: "root@pam"}},
		{"9-digit pstart (uptime over 497 days)", "UPID:pve:0000ABCD:1A2B3C4D5:65C0FA88:qmstart:101:root@pam:",
			UPID{Node: "pve", PID: 0xABCD, PStart: 0x1A2B3C4D5, StartTime: 0x65C0FA88, Type: "qmstart", ID: "101", User: "root@pam"}},
		{"empty id (vzdump of several guests)", "UPID:pve:00001234:00ABCDEF:65C0FA88:vzdump::root@pam:",
			UPID{Node: "pve", PID: 0x1234, PStart: 0xABCDEF, StartTime: 0x65C0FA88, Type: "vzdump", ID: "", User: "root@pam"}},
		{"token user", "UPID:asusnode0:00001234:00ABCDEF:65C0FA88:qmstop:853887097:root@pam!convoy_panel:",
			UPID{Node: "asusnode0", PID: 0x1234, PStart: 0xABCDEF, StartTime: 0x65C0FA88, Type: "qmstop", ID: "853887097", User: "root@pam!convoy_panel"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseUPID(tt.in)
			if err != nil {
				t.Fatalf("ParseUPID(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseUPID(%q) = %+v; want %+v", tt.in, got, tt.want)
			}
			if s := got.String(); s != tt.in {
				t.Errorf("String() = %q; want %q (exact bytes)", s, tt.in)
			}
			b, _ := got.MarshalText()
			var back UPID
			if err := back.UnmarshalText(b); err != nil || back != got {
				t.Errorf("text round trip = %+v, %v; want %+v", back, err, got)
			}
		})
	}
}

func TestParseUPIDLowerCaseHexPrintsUpper(t *testing.T) {
	u, err := ParseUPID("UPID:pve:0000abcd:00abcdef:65c0fa88:qmstart:101:root@pam:")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u.String(), "UPID:pve:0000ABCD:00ABCDEF:65C0FA88:qmstart:101:root@pam:"; got != want {
		t.Errorf("String() = %q; want %q", got, want)
	}
}

func TestParseUPIDRejects(t *testing.T) {
	for _, in := range []string{
		"",
		"UPID:",
		"UPID:pve:0000ABCD:00ABCDEF:65C0FA88:qmstart:101:root@pam",               // no trailing colon
		"UPID:pve:0000ABCD:00ABCDEF:65C0FA88:vzstart:101:root",                   // go-proxmox mock shape
		"UPID:node1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:keep-running", // proxmoxer marker
		"UPID:pve_1:0000ABCD:00ABCDEF:65C0FA88:qmstart:101:root@pam:",            // '_' in node
		"UPID:-pve:0000ABCD:00ABCDEF:65C0FA88:qmstart:101:root@pam:",             // leading '-'
		"UPID:pve:ABCD:00ABCDEF:65C0FA88:qmstart:101:root@pam:",                  // short pid
		"UPID:pve:0000ABCD:00ABCDEF:65C0FA8:qmstart:101:root@pam:",               // short starttime
		"UPID:pve:0000ABCG:00ABCDEF:65C0FA88:qmstart:101:root@pam:",              // not hex
		"UPID:pve:0000ABCD:00ABCDEF:65C0FA88::101:root@pam:",                     // empty type
		"UPID:pve:0000ABCD:00ABCDEF:65C0FA88:qm start:101:root@pam:",             // space in type
		"UPID:pve:0000ABCD:00ABCDEF:65C0FA88:qmstart:1/1:root@pam:",              // slash in id
		"upid:pve:0000ABCD:00ABCDEF:65C0FA88:qmstart:101:root@pam:",              // prefix case
		" UPID:pve:0000ABCD:00ABCDEF:65C0FA88:qmstart:101:root@pam:",             // leading space
	} {
		t.Run(in, func(t *testing.T) {
			u, err := ParseUPID(in)
			if !errors.Is(err, ErrBadUPID) {
				t.Errorf("ParseUPID(%q) = %+v, %v; want ErrBadUPID", in, u, err)
			}
		})
	}
}

func FuzzParseUPID(f *testing.F) {
	for _, s := range []string{
		"UPID:node1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:",
		"UPID:prox-srv2:003EB904:2E8895E0:65C0FA88:qmstart:129:root@pam:",
		"UPID:pve:0000ABCD:1A2B3C4D5:65C0FA88:qmstart:101:root@pam:",
		"UPID:pve:00001234:00ABCDEF:65C0FA88:vzdump::root@pam:",
		"UPID:pve:00001234:00ABCDEF:65C0FA88:qmstop:101:root@pam!tok:",
		"UPID:pve:0000abcd:00abcdef:65c0fa88:qmstart:101:root@pam:",
		"UPID:node1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:keep-running",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUPID(s)
		if err != nil {
			return
		}
		str := u.String()
		v, err := ParseUPID(str)
		if err != nil {
			t.Fatalf("ParseUPID(%q) ok, but its String %q does not parse: %v", s, str, err)
		}
		if v != u {
			t.Fatalf("parse→String→parse changed %+v into %+v", u, v)
		}
		if v.String() != str {
			t.Fatalf("String not stable: %q then %q", str, v.String())
		}
	})
}

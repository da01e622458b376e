package frame

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/steward-pve/steward/internal/deptest"
)

func TestPure(t *testing.T) { deptest.CheckPure(t) }

var testFormat = Format{Min: 1, Max: 64, Plausible: func(p []byte) bool { return p[0] == '{' }}

func frames(payloads ...string) []byte {
	var b []byte
	for _, p := range payloads {
		b = Append(b, []byte(p))
	}
	return b
}

// TestGolden pins the frame bytes: journal and nonce files depend on them.
func TestGolden(t *testing.T) {
	got := frames(`{"a":1}`, `{}`)
	path := filepath.Join("testdata", "frames.golden")
	if os.Getenv("STEWARD_UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with STEWARD_UPDATE_GOLDEN=1 to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("frames: got %x; want %x (the golden file); a change here breaks every existing log", got, want)
	}
}

func TestScan(t *testing.T) {
	good := frames(`{"a":1}`, `{"b":2}`, `{"c":3}`)
	second := HeaderSize + len(`{"a":1}`)
	third := second + HeaderSize + len(`{"b":2}`)
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 0xff; return b }
	tests := []struct {
		name    string
		data    []byte
		read    int
		end     int
		damaged int // offset of the damage; -1 for none
	}{
		{"whole log", good, 3, len(good), -1},
		{"torn last frame", good[:len(good)-2], 2, third, -1},
		{"torn header", good[:third+3], 2, third, -1},
		{"bad checksum of the last frame", flip(third + HeaderSize + 1), 2, third, -1},
		{"bad checksum in the middle", flip(second + HeaderSize + 1), 1, second, second},
		{"bad length in the middle", flip(second), 1, second, second},
		{"empty", nil, 0, 0, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			read := 0
			end, err := testFormat.Scan(tt.data, 0, func(off int, p []byte) error { read++; return nil }, nil)
			var de *DamageError
			switch {
			case tt.damaged < 0 && err != nil:
				t.Fatalf("Scan: %v; want a torn tail tolerated", err)
			case tt.damaged >= 0 && (!errors.As(err, &de) || de.Offset != tt.damaged):
				t.Fatalf("Scan: %v; want damage at offset %d", err, tt.damaged)
			}
			if read != tt.read || end != tt.end {
				t.Errorf("read %d frames, end %d; want %d, %d", read, end, tt.read, tt.end)
			}
		})
	}
}

func TestScanStopsOnRecordError(t *testing.T) {
	stop := errors.New("stop")
	_, err := testFormat.Scan(frames(`{"a":1}`, `{"b":2}`), 0, func(int, []byte) error { return stop }, nil)
	if !errors.Is(err, stop) {
		t.Errorf("Scan: %v; want the record callback's error", err)
	}
}

func FuzzScan(f *testing.F) {
	f.Add(frames(`{"a":1}`, `{"b":2}`))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, '{'})
	f.Fuzz(func(t *testing.T, data []byte) {
		var payloads [][]byte
		end, err := testFormat.Scan(data, 0, func(off int, p []byte) error {
			payloads = append(payloads, bytes.Clone(p))
			return nil
		}, nil)
		if end > len(data) {
			t.Fatalf("end %d past the data (%d bytes)", end, len(data))
		}
		if err == nil {
			// What was read re-frames to exactly the bytes before end.
			var re []byte
			for _, p := range payloads {
				re = Append(re, p)
			}
			if !bytes.Equal(re, data[:end]) {
				t.Fatalf("re-framed %x; want %x", re, data[:end])
			}
		}
	})
}

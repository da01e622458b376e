package pve

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The token file and the CA file are read defensively (issue 7 defect 4):
// a FIFO there is an error naming it, not a hang.
func TestTokenAndCAFileFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadToken(fifo); err == nil || !strings.Contains(err.Error(), fifo) || !strings.Contains(err.Error(), "named pipe") {
		t.Errorf("LoadToken(FIFO): got %v; want an error naming the FIFO", err)
	}
	_, err := New(Options{URL: "https://127.0.0.1:8006", Token: Token{ID: "a@pve!t", Secret: "s"}, CAFile: fifo})
	if err == nil || !strings.Contains(err.Error(), fifo) || !strings.Contains(err.Error(), "named pipe") {
		t.Errorf("New with a FIFO CA file: got %v; want an error naming the FIFO", err)
	}
}

package pve

import (
	"os"
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

// Issue 8 §6: a token file others can read draws a warning naming the
// file and its mode, never the secret.
func TestTokenFileWarning(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "token")
	if err := os.WriteFile(p, []byte("a@pve!t="+testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if w := TokenFileWarning(p); w != "" {
		t.Errorf("mode 0600: got warning %q; want none", w)
	}
	must(t, os.Chmod(p, 0o640)) // group is the test's own, as root:steward is the agent's
	if w := TokenFileWarning(p); w != "" {
		t.Errorf("mode 0640, own group: got warning %q; want none", w)
	}
	must(t, os.Chmod(p, 0o644))
	w := TokenFileWarning(p)
	if !strings.Contains(w, p) || !strings.Contains(w, "0644") || !strings.Contains(w, "every user") || strings.Contains(w, testSecret) {
		t.Errorf("mode 0644: got %q; want a warning naming the file and mode, without the secret", w)
	}
	if w := tokenModeWarning(p, 0o640, 1234, 4321); !strings.Contains(w, "group 1234") {
		t.Errorf("mode 0640, another group: got %q; want a warning naming the group", w)
	}
}

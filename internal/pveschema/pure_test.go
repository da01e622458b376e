package pveschema

import (
	"testing"

	"github.com/steward-pve/steward/internal/deptest"
)

// TestPure keeps the package free of I/O: it reads only its embedded schema.
func TestPure(t *testing.T) { deptest.CheckPure(t) }

package wire

import (
	"testing"

	"github.com/steward-pve/steward/internal/deptest"
)

// TestPure keeps the wire types free of I/O.
func TestPure(t *testing.T) { deptest.CheckPure(t) }

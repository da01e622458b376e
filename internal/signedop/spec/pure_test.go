package spec

import (
	"testing"

	"github.com/steward-pve/steward/internal/deptest"
)

// TestPure keeps the payload, policy and rejection codes free of I/O.
func TestPure(t *testing.T) { deptest.CheckPure(t) }

package cli

import (
	"testing"

	"github.com/steward-pve/steward/internal/hub/store/pgtest"
)

// TestMain starts one throwaway PostgreSQL cluster for the hub's
// --store postgres tests (pgtest).
func TestMain(m *testing.M) { pgtest.Main(m) }

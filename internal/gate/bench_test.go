package gate_test

import (
	"testing"

	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/signedop/signedoptest"
)

// BenchmarkGate measures the gate's overhead per action against the bare
// classifier (the baseline, in the same run): "benign" is a cores+memory
// write (classify + permit), "pending" a replaced disk (classify + a fresh
// signable payload), "signed" a destroy verified against an ed25519
// signature (the verifier's Check path, which does not spend the nonce, so
// the loop can repeat it).
func BenchmarkGate(b *testing.B) {
	g := newGate(nil)
	benign := cfg(map[string]string{"cores": "2", "memory": "2048"})
	destructive := cfg(map[string]string{"scsi0": "local-lvm:vm-101-disk-9,size=32G"})
	b.Run("baseline-classify", func(b *testing.B) {
		for range b.N {
			classify.Classify(benign, actual(), classify.Provenance{})
		}
	})
	b.Run("benign", func(b *testing.B) {
		for range b.N {
			if d := g.Decide(benign, actual(), classify.Provenance{}); !d.Permit.Valid() {
				b.Fatal("not allowed")
			}
		}
	})
	b.Run("pending", func(b *testing.B) {
		for range b.N {
			if d := g.Decide(destructive, actual(), classify.Provenance{}); len(d.Payload) == 0 {
				b.Fatal("no payload")
			}
		}
	})
	b.Run("signed-check", func(b *testing.B) {
		env := signedoptest.NewEnv(b)
		v := env.Verifier()
		job := env.Job(nil, env.Alice.Signer)
		b.ResetTimer()
		for range b.N {
			if _, err := v.Check(job, env.Host, env.Action, env.Current); err != nil {
				b.Fatal(err)
			}
		}
	})
}

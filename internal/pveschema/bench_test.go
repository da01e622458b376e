package pveschema

import "testing"

// BenchmarkValidateQemuConfigPut validates a typical steward config write.
func BenchmarkValidateQemuConfigPut(b *testing.B) {
	s, err := Load()
	if err != nil {
		b.Fatal(err)
	}
	m, ok := s.Method("PUT", "/nodes/{node}/qemu/{vmid}/config")
	if !ok {
		b.Fatal("no PUT config")
	}
	params := map[string]any{
		"node": "pve", "vmid": "101",
		"digest":      "3b1c5d2e9f0a4b6c8d7e1f2a3b4c5d6e7f8a9b0c",
		"cores":       "4",
		"memory":      "current=8192",
		"net0":        "virtio=BC:24:11:2E:5A:01,bridge=vmbr0,firewall=1",
		"scsi1":       "local-lvm:32,iothread=1,discard=on",
		"description": "web frontend",
		"tags":        "prod;web",
		"delete":      "net1,unused0",
	}
	if errs := m.Validate(params); len(errs) != 0 {
		b.Fatalf("benchmark request invalid: %v", errs)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		m.Validate(params)
	}
}

// BenchmarkLookup resolves a concrete config path.
func BenchmarkLookup(b *testing.B) {
	s, err := Load()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		s.Lookup("PUT", "/nodes/pve/qemu/101/config")
	}
}

// BenchmarkParse measures what Load does once: parsing the embedded schema.
func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parse(apidata); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAgentStart measures what a starting agent pays for the schema:
// the parse plus the two guest-config schemas desired state is checked
// against. Against BenchmarkParseAll it shows what lazy method building
// saves.
func BenchmarkAgentStart(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		s, err := parse(apidata)
		if err != nil {
			b.Fatal(err)
		}
		for _, k := range []string{"qemu", "lxc"} {
			if _, err := s.GuestConfig(k); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkParseAll is parse plus building every method (what the
// simulator ends up doing).
func BenchmarkParseAll(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		s, err := parse(apidata)
		if err != nil {
			b.Fatal(err)
		}
		s.Methods()
	}
}

package guestq

import (
	"context"
	"sync"
	"testing"
)

const benchVMIDs = 256

// BenchmarkDispatch measures the queue's per-job overhead: Submit, run and
// Wait of a trivial job, with jobs spread over many vmids. Compare with
// BenchmarkGoroutinePerJob, which runs the same jobs with no serialization.
func BenchmarkDispatch(b *testing.B) {
	q := New(Options{})
	defer q.Close(context.Background())
	ctx := context.Background()
	run := func(context.Context) error { return nil }
	const batch = 1024
	tickets := make([]*Ticket, 0, batch)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tk, err := q.Submit(Job{VMID: i % benchVMIDs, Run: run})
		if err != nil {
			b.Fatal(err)
		}
		tickets = append(tickets, tk)
		if len(tickets) == batch {
			for _, tk := range tickets {
				tk.Wait(ctx)
			}
			tickets = tickets[:0]
		}
	}
	for _, tk := range tickets {
		tk.Wait(ctx)
	}
}

// BenchmarkGoroutinePerJob is the baseline: one goroutine per job, a done
// channel per job, waited on in the same batches.
func BenchmarkGoroutinePerJob(b *testing.B) {
	ctx := context.Background()
	run := func(context.Context) error { return nil }
	const batch = 1024
	var wg sync.WaitGroup
	dones := make([]chan error, 0, batch)
	b.ReportAllocs()
	for b.Loop() {
		done := make(chan error, 1)
		wg.Go(func() { done <- run(ctx) })
		dones = append(dones, done)
		if len(dones) == batch {
			for _, d := range dones {
				<-d
			}
			dones = dones[:0]
		}
	}
	wg.Wait()
}

package journal

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// benchOp returns the op appended by the benchmarks.
func benchOp(id string) Op {
	op := configOp(id, 101, "key-"+id)
	op.Time = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)
	return op
}

// BenchmarkAppendDurable is one writer doing Begin+End (two durable
// appends) per op. Compare with BenchmarkRawWriteFsync.
func BenchmarkAppendDurable(b *testing.B) {
	j, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("op-%d", i)
		if err := j.Begin(benchOp(id)); err != nil {
			b.Fatal(err)
		}
		if err := j.End(id, Result{OK: true, ExitStatus: "OK"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkRawWriteFsync writes the same framed bytes as
// BenchmarkAppendDurable with a bare write+fsync per record, in the same
// kind of directory: the baseline the journal is measured against.
func BenchmarkRawWriteFsync(b *testing.B) {
	begin, err := encodeFrame(record{Type: typeBegin, Begin: new(benchOp("op-0"))})
	if err != nil {
		b.Fatal(err)
	}
	end, err := encodeFrame(record{Type: typeEnd, End: &endRecord{ID: "op-0", Time: time.Now().UTC(), Result: Result{OK: true, ExitStatus: "OK"}}})
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "raw"), os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.ResetTimer()
	for b.Loop() {
		for _, rec := range [][]byte{begin, end} {
			if _, err := f.Write(rec); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkAppendDurableParallel is many concurrent writers doing
// Begin+End; group commit lets one fsync cover many records.
func BenchmarkAppendDurableParallel(b *testing.B) {
	j, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	var next atomic.Int64
	b.SetParallelism(8) // 8 × GOMAXPROCS writers
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("op-%d", next.Add(1))
			if err := j.Begin(benchOp(id)); err != nil {
				b.Error(err)
				return
			}
			if err := j.End(id, Result{OK: true, ExitStatus: "OK"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkAppendDurableVsRaw interleaves one Begin+End on a journal with
// the same two records written by a bare write+fsync loop to a file in the
// same directory, timing each side, so disk noise hits both equally. The
// "throughput-ratio" metric is raw time / journal time: the journal's
// single-writer throughput relative to the raw loop (goal ≥ 0.9).
func BenchmarkAppendDurableVsRaw(b *testing.B) {
	dir := b.TempDir()
	j, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	begin, err := encodeFrame(record{Type: typeBegin, Begin: new(benchOp("op-0"))})
	if err != nil {
		b.Fatal(err)
	}
	end, err := encodeFrame(record{Type: typeEnd, End: &endRecord{ID: "op-0", Time: time.Now().UTC(), Result: Result{OK: true, ExitStatus: "OK"}}})
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "raw"), os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var journalTime, rawTime time.Duration
	appendJournal := func(id string) {
		t0 := time.Now()
		if err := j.Begin(benchOp(id)); err != nil {
			b.Fatal(err)
		}
		if err := j.End(id, Result{OK: true, ExitStatus: "OK"}); err != nil {
			b.Fatal(err)
		}
		journalTime += time.Since(t0)
	}
	appendRaw := func() {
		t0 := time.Now()
		for _, rec := range [][]byte{begin, end} {
			if _, err := f.Write(rec); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
		}
		rawTime += time.Since(t0)
	}
	for i := 0; b.Loop(); i++ {
		// Alternate which side goes first so neither inherits the
		// other's writeback.
		id := fmt.Sprintf("op-%d", i)
		if i%2 == 0 {
			appendJournal(id)
			appendRaw()
		} else {
			appendRaw()
			appendJournal(id)
		}
	}
	b.ReportMetric(float64(journalTime.Nanoseconds())/float64(b.N), "journal-ns/op")
	b.ReportMetric(float64(rawTime.Nanoseconds())/float64(b.N), "raw-ns/op")
	b.ReportMetric(rawTime.Seconds()/journalTime.Seconds(), "throughput-ratio")
}

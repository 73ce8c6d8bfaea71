package cache

import (
	"bytes"
	"testing"
	"time"

	"github.com/holdfast/holdfast/internal/fleet"
)

// BenchmarkRestore10kServices decodes and validates a state file of 10,000 services and
// 100,000 endpoints (goal: restore and serve in under 1 s).
func BenchmarkRestore10kServices(b *testing.B) {
	data, err := encodeState(fleet.New(10000, 10), time.Now())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportMetric(float64(len(data))/(1<<20), "MiB/file")
	for b.Loop() {
		if _, _, err := decodeState(bytes.NewReader(data), 1<<30); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteState10kServices encodes the same state (the write path, before fsync).
func BenchmarkWriteState10kServices(b *testing.B) {
	f := fleet.New(10000, 10)
	for b.Loop() {
		if _, err := encodeState(f, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

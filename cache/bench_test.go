package cache

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/holdfast/holdfast/resolver"
)

// fleet builds n services with per endpoints each, spread over three zones.
func fleet(n, per int) map[resolver.Key]*resolver.Service {
	out := make(map[resolver.Key]*resolver.Service, n)
	for i := range n {
		k := resolver.Key{Namespace: fmt.Sprintf("ns-%d", i%50), Name: fmt.Sprintf("svc-%d", i)}
		eps := make([]resolver.Endpoint, per)
		for j := range eps {
			eps[j] = resolver.Endpoint{Address: fmt.Sprintf("10.%d.%d.%d", i/250%250, i%250, j+1), Port: 8080,
				Ready: true, Serving: true, Zone: fmt.Sprintf("zone-%d", j%3), NodeName: fmt.Sprintf("node-%d", j)}
		}
		out[k] = &resolver.Service{Key: k, Ports: []resolver.Port{{Name: "http", Port: 80, Endpoints: eps}},
			Origin: resolver.Origin{ServiceVersion: fmt.Sprint(1000000 + i), ObservedAt: time.Now(),
				Slices: []resolver.ObjectVersion{{Name: k.Name + "-x7k2p", ResourceVersion: fmt.Sprint(2000000 + i)}}}}
	}
	return out
}

// BenchmarkRestore10kServices decodes and validates a state file of 10,000 services and
// 100,000 endpoints (goal: restore and serve in under 1 s).
func BenchmarkRestore10kServices(b *testing.B) {
	data, err := encodeState(fleet(10000, 10), time.Now())
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
	f := fleet(10000, 10)
	for b.Loop() {
		if _, err := encodeState(f, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

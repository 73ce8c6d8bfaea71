package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/internal/fleet"
	"github.com/holdfast/holdfast/xds"
)

// captured keeps the snapshots handed to it.
type captured struct {
	mu    sync.Mutex
	snaps xds.Snapshots
	n     int
}

func (c *captured) SetSnapshots(s xds.Snapshots) { c.mu.Lock(); c.snaps, c.n = s, c.n+1; c.mu.Unlock() }
func (c *captured) Clients() []xds.ClientStatus  { return nil }
func (c *captured) last() xds.Snapshots          { c.mu.Lock(); defer c.mu.Unlock(); return c.snaps }

// fleetResources translates a synthetic fleet with Holdfast's own publisher.
func fleetResources(t testing.TB, services, per int) resources {
	t.Helper()
	out := &captured{}
	pub, err := xds.NewPublisher(xds.PublisherOptions{Translator: xds.Translator{Naming: xds.Naming{Domain: "cluster.local"}, EnvoyListenAddress: "127.0.0.1"}}, out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = pub.Run(ctx) }()
	pub.OnView(cache.View{Services: fleet.New(services, per), Synced: true, Generation: 1})
	deadline := time.Now().Add(30 * time.Second)
	for out.last() == nil {
		if time.Now().After(deadline) {
			t.Fatal("nothing published")
		}
		time.Sleep(time.Millisecond)
	}
	res := resources{}
	for kind, snap := range out.last() {
		res[kind] = map[resourcev3.Type]map[string]*xds.Resource{}
		for _, typ := range typeOrder {
			res[kind][typ] = map[string]*xds.Resource{}
			for _, r := range snap.List(typ) {
				res[kind][typ][r.Name] = r
			}
		}
	}
	return res
}

func TestCacheRoundTripAndDefects(t *testing.T) {
	res := fleetResources(t, 20, 3)
	now := time.Now().Truncate(time.Second)
	good, err := encodeCache(res, now)
	if err != nil {
		t.Fatal(err)
	}
	back, at, err := decodeCache(bytes.NewReader(good), 1<<30)
	if err != nil || !at.Equal(now) {
		t.Fatalf("round trip: %v, written at %v", err, at)
	}
	for kind, types := range res {
		for typ, rs := range types {
			for n, r := range rs {
				if b := back[kind][typ][n]; b == nil || b.Version != r.Version || !bytes.Equal(b.Any.GetValue(), r.Any.GetValue()) {
					t.Fatalf("%s %s %s did not survive", kind, typ, n)
				}
			}
		}
	}
	nl := bytes.IndexByte(good, '\n')
	header, payload := string(good[:nl]), good[nl+1:]
	tests := []struct {
		name   string
		data   []byte
		reason string
	}{
		{"empty", nil, "format"},
		{"truncated", good[:len(good)-10], "truncated"},
		{"a flipped byte", append([]byte(header+"\n"), append(append([]byte{}, payload[:20]...), append([]byte{payload[20] ^ 1}, payload[21:]...)...)...), "checksum"},
		{"a newer format", []byte(strings.Replace(header, "holdfast-agent-cache 1 ", "holdfast-agent-cache 2 ", 1) + "\n" + string(payload)), "version"},
		{"not a cache", []byte("hello\n{}"), "format"},
		{"oversized", good, "oversized"},
	}
	for _, tt := range tests {
		limit := int64(1 << 30)
		if tt.reason == "oversized" {
			limit = 100
		}
		_, _, err := decodeCache(bytes.NewReader(tt.data), limit)
		var ce *CacheError
		if !errors.As(err, &ce) || ce.Reason != tt.reason {
			t.Errorf("%s: %v, want reason %s", tt.name, err, tt.reason)
		}
	}
}

func FuzzDecodeCache(f *testing.F) {
	res := fleetResources(f, 3, 2)
	good, err := encodeCache(res, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("holdfast-agent-cache 1 2 00\n{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, _, err := decodeCache(bytes.NewReader(data), 1<<20)
		if err == nil && got == nil {
			t.Fatal("no error and no resources")
		}
	})
}

// A cache older than --max-cache-age is served all the same, and says so.
func TestLoadCacheTooOld(t *testing.T) {
	dir := t.TempDir()
	res := fleetResources(t, 5, 2)
	data, err := encodeCache(res, time.Now().Add(-48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, cacheFileName), data, 0o600); err != nil {
		t.Fatal(err)
	}
	down := &captured{}
	a, err := New(Options{Upstream: "127.0.0.1:1", NodeID: "n", CacheDir: dir, MaxCacheAge: 24 * time.Hour, Downstream: down})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.LoadCache(); err != nil {
		t.Fatal(err)
	}
	st := a.Status()
	if !st.Ready || !st.Cache.ServingRestored || !st.Cache.TooOld || st.Cache.AgeSeconds < 47*3600 {
		t.Errorf("status = %+v", st)
	}
	snap := down.last()[xds.KindGRPC]
	if len(snap.List(resourcev3.ClusterType)) != 5 || len(snap.List(resourcev3.EndpointType)) != 5 {
		t.Errorf("served from the old cache: %d clusters, %d assignments", len(snap.List(resourcev3.ClusterType)), len(snap.List(resourcev3.EndpointType)))
	}
}

// BenchmarkAgentStartFromDisk: 1,000 services × 10 endpoints, both client kinds: the time from
// reading the cache file to serving it, and the heap it takes.
func BenchmarkAgentStartFromDisk(b *testing.B) {
	dir := b.TempDir()
	data, err := encodeCache(fleetResources(b, 1000, 10), time.Now())
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, cacheFileName), data, 0o600); err != nil {
		b.Fatal(err)
	}
	var heap float64
	for i := 0; b.Loop(); i++ {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		down := &captured{}
		a, err := New(Options{Upstream: "127.0.0.1:1", NodeID: fmt.Sprint("n", i), CacheDir: dir, Downstream: down})
		if err != nil {
			b.Fatal(err)
		}
		if err := a.LoadCache(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		heap = float64(after.HeapInuse-min(before.HeapInuse, after.HeapInuse)) / (1 << 20)
		runtime.KeepAlive(a)
		b.StartTimer()
	}
	b.ReportMetric(heap, "heap-MiB")
	b.ReportMetric(float64(len(data))/(1<<20), "cache-MiB")
}

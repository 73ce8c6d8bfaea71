package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast/holdfast/e2e/faultproxy"
	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/e2e/internal/leakcheck"
)

// soakConfig is the soak's size: `make soak DURATION=30m` runs 1,000 services and 200 clients;
// `make test` runs a short one.
type soakConfig struct {
	duration           time.Duration
	services, clients  int
	sample, faultEvery time.Duration // faultEvery: the quiet time between two faults
	faultFor           time.Duration // how long each fault lasts
	every              time.Duration // between one client's RPCs
}

func soakFromEnv(t *testing.T) soakConfig {
	// Fifteen faults or so in a minute: enough for the goroutine leak check (twelve or more).
	c := soakConfig{duration: 60 * time.Second, services: 200, clients: 20, sample: 5 * time.Second, faultEvery: time.Second, faultFor: 1500 * time.Millisecond, every: 10 * time.Millisecond}
	if v := os.Getenv("HOLDFAST_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("HOLDFAST_SOAK_DURATION: %v", err)
		}
		c = soakConfig{duration: d, services: 1000, clients: 200, sample: 30 * time.Second, faultEvery: time.Minute, faultFor: 6 * time.Second, every: 100 * time.Millisecond}
	}
	return c
}

// soakSample is one line of the soak's time series.
type soakSample struct {
	at                 time.Duration
	sent, failed       int64
	heapMiB            float64
	goroutines         float64
	propagationP99     time.Duration
	fault              string
	propagationSamples int
}

// TestSoak churns endpoints across many services while clients send steady load and faults
// from the matrix come and go; RPCs to live backends never fail, and Holdfast's heap and
// goroutines end where they were after warm-up.
func TestSoak(t *testing.T) {
	t.Parallel()
	cfg := soakFromEnv(t)
	k := ownCluster(t)
	ns := newNamespaceOn(t, k)
	b := startBackends(t, grpcPort.target, "b0", "b1", "b2", "b3")
	ids := []string{"b0", "b1", "b2", "b3"}
	p, err := faultproxy.Start(k.Server, k.CAFile, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := k.WriteKubeconfig(kubeconfig, p.URL, p.CAFile); err != nil {
		t.Fatal(err)
	}
	pair := func(i int) []string { return []string{ids[i%4], ids[(i+1)%4]} }
	write := func(svc string, i int) {
		pr := pair(i)
		writeSliceOn(t, k, ns, svc+"-a", svc, grpcPort, endpoint{b[pr[0]], true}, endpoint{b[pr[1]], true})
	}
	for i := range cfg.services {
		svc := fmt.Sprintf("s%d", i)
		createServiceOn(t, k, ns, svc, grpcPort)
		write(svc, i)
	}
	createServiceOn(t, k, ns, "probe", grpcPort)
	write("probe", 0)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.duration+5*time.Minute)
	defer cancel()
	h, err := harness.StartHoldfast(ctx, env.bins.Holdfast, env.dir, kubeconfig, "--namespaces", ns, "--guard-disabled", "--debug-pprof")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Terminate(15 * time.Second); err != nil {
			t.Errorf("holdfast did not exit cleanly: %v", err)
		}
	})
	var clients []*harness.GRPCClient
	for i := range cfg.clients {
		c := dial(t, h, target(ns, fmt.Sprintf("s%d", i*cfg.services/cfg.clients), grpcPort.port))
		clients = append(clients, c)
	}
	probe := dial(t, h, target(ns, "probe", grpcPort.port))
	if err := probe.WaitForBackends(ctx, pair(0)...); err != nil {
		t.Fatal(err)
	}
	l := startLoad(cfg.every, clients...)
	defer l.finish() //nolint:errcheck // counted below

	// Churn: a random service moves to another pair of backends every 200 ms. Every backend
	// stays alive, so no RPC has a reason to fail, whatever configuration a client holds.
	churnCtx, stopChurn := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(1, 2)) //nolint:gosec // test data
		for churnCtx.Err() == nil {
			i := rng.IntN(cfg.services)
			write(fmt.Sprintf("s%d", i), rng.IntN(4))
			time.Sleep(200 * time.Millisecond)
		}
	})
	// Faults from the matrix, one at a time, each for a few seconds.
	type fault struct {
		name        string
		inject, end func() error
	}
	faults := []fault{
		{"API responses stall", func() error { p.SetMode(faultproxy.Stall); return nil }, func() error { p.SetMode(faultproxy.Pass); return nil }},
		{"API connections reset", func() error { p.SetMode(faultproxy.Reset); return nil }, func() error { p.SetMode(faultproxy.Pass); return nil }},
		{"API server 500s", func() error { p.SetMode(faultproxy.Fail500); return nil }, func() error { p.SetMode(faultproxy.Pass); return nil }},
		{"API server SIGSTOP", k.APIServer.Pause, k.APIServer.Resume},
	}
	var mu sync.Mutex
	current := ""
	var afterFaults []leakcheck.Sample // Holdfast's goroutines once each fault has ended
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(3, 4)) //nolint:gosec // test data
		for churnCtx.Err() == nil {
			select {
			case <-churnCtx.Done():
				return
			case <-time.After(cfg.faultEvery):
			}
			f := faults[rng.IntN(len(faults))]
			mu.Lock()
			current = f.name
			mu.Unlock()
			if err := f.inject(); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(cfg.faultFor)
			if err := f.end(); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			current = ""
			mu.Unlock()
			if g, ok := quietGoroutines(churnCtx, h, ns); ok {
				mu.Lock()
				afterFaults = append(afterFaults, leakcheck.Sample{At: float64(len(afterFaults)), Value: g})
				mu.Unlock()
			}
		}
	})
	// Propagation: the probe service moves; how long until its client follows (measured only
	// with no fault on: a change cannot reach anyone while the API server is stopped).
	var props []time.Duration
	var samples []soakSample
	start := time.Now()
	next := start.Add(cfg.sample)
	moves := 0
	for time.Since(start) < cfg.duration {
		mu.Lock()
		f := current
		mu.Unlock()
		if f == "" {
			moves++
			want := pair(moves)
			write("probe", moves)
			written := time.Now()
			if err := probe.WaitForBackends(ctx, want...); err != nil {
				t.Fatalf("the probe service never converged: %v", err)
			}
			mu.Lock()
			if current == "" { // no fault began meanwhile
				props = append(props, time.Since(written))
			}
			mu.Unlock()
		}
		time.Sleep(500 * time.Millisecond)
		if time.Now().After(next) {
			next = next.Add(cfg.sample)
			if len(samples) == int(cfg.duration/cfg.sample)/3 {
				heapProfile(ctx, t, h, "warm")
			}
			sent, failed := l.counts()
			heap, _ := h.Metric(ctx, "go_gc_heap_live_bytes")
			g, _ := h.Metric(ctx, "go_goroutines")
			samples = append(samples, soakSample{at: time.Since(start), sent: sent, failed: failed, heapMiB: heap / (1 << 20), goroutines: g,
				propagationP99: p99(props), propagationSamples: len(props), fault: f})
		}
	}
	stopChurn()
	wg.Wait()
	// Let the last fault's aftermath settle before the final sample.
	if err := harness.Eventually(ctx, func() bool {
		v, err := h.Metric(ctx, `holdfast_source_stale{source="`+ns+`"}`)
		return err == nil && v == 0
	}); err != nil {
		t.Fatalf("source still stale after the soak: %v", err)
	}
	time.Sleep(2 * time.Second)
	sent, failed := l.counts()
	heap, _ := h.Metric(ctx, "go_gc_heap_live_bytes")
	g, _ := h.Metric(ctx, "go_goroutines")
	samples = append(samples, soakSample{at: time.Since(start), sent: sent, failed: failed, heapMiB: heap / (1 << 20), goroutines: g,
		propagationP99: p99(props), propagationSamples: len(props), fault: "end"})

	heapProfile(ctx, t, h, "end")
	report := soakReport(cfg, samples)
	t.Logf("soak:\n%s", report)
	if path := os.Getenv("HOLDFAST_SOAK_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(report), 0o600); err != nil {
			t.Error(err)
		}
	}
	if failed > 0 {
		l.mu.Lock()
		t.Errorf("%d of %d RPCs to live backends failed (last: %v)", failed, sent, l.lastErr)
		l.mu.Unlock()
	}
	// No goroutine left behind per fault: the series after each fault does not climb.
	t.Logf("goroutines after each fault: %s", leakcheck.Format(afterFaults))
	if err := leakcheck.GoroutinesPerFault.Check(afterFaults); err != nil {
		t.Errorf("a goroutine leak per fault: %v", err)
	}
	// Flat: the end is no higher than the peaks of the first half (goroutines move with watch
	// restarts and reconnects; a leak keeps climbing past them).
	if len(samples) >= 4 {
		var heapPeak, gPeak float64
		for _, s := range samples[1 : len(samples)/2] {
			heapPeak, gPeak = max(heapPeak, s.heapMiB), max(gPeak, s.goroutines)
		}
		end := samples[len(samples)-1]
		if end.heapMiB > heapPeak*1.25+8 || end.goroutines > gPeak+25 {
			t.Errorf("growth over the soak: heap peak %.1f MiB in the first half, %.1f at the end; goroutines %.0f, %.0f", heapPeak, end.heapMiB, gPeak, end.goroutines)
		}
	}
	if len(props) == 0 {
		t.Error("no propagation measured")
	}
}

func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return -1
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)*99)/100]
}

func soakReport(cfg soakConfig, samples []soakSample) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v, %d services, %d grpc-go clients (one RPC every %v each), a service moved every 200 ms, a 6 s fault every %v. "+
		"Propagation: a probe service moved, until its client's RPCs reach the new backends (granularity ~100 ms), measured only with no fault on, "+
		"so it includes the re-list right after a fault. Cumulative counts; heap and goroutines are Holdfast's.\n\n", cfg.duration, cfg.services, cfg.clients, cfg.every, cfg.faultEvery)
	b.WriteString("| time | RPCs sent | RPCs failed | error rate | propagation p99 (n) | heap | goroutines | fault on |\n|---|---|---|---|---|---|---|---|\n")
	for _, s := range samples {
		rate := 0.0
		if s.sent > 0 {
			rate = float64(s.failed) / float64(s.sent)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %s (%d) | %.1f MiB | %.0f | %s |\n", s.at.Round(time.Second), s.sent, s.failed,
			strconv.FormatFloat(rate*100, 'f', 3, 64)+" %", dur(s.propagationP99), s.propagationSamples, s.heapMiB, s.goroutines, s.fault)
	}
	return b.String()
}

// quietGoroutines is Holdfast's goroutine count at a quiet moment after a fault: once its
// source is live again (while it reconnects it has fewer goroutines, not more), the median of
// five readings 200 ms apart (a request in flight adds a goroutine or two for a moment; a leak
// stays).
func quietGoroutines(ctx context.Context, h *harness.Holdfast, ns string) (float64, bool) {
	if harness.Eventually(ctx, func() bool {
		v, err := h.Metric(ctx, `holdfast_source_stale{source="`+ns+`"}`)
		return err == nil && v == 0
	}) != nil {
		return 0, false
	}
	var readings []float64
	for i := range 5 {
		if i > 0 {
			select {
			case <-ctx.Done():
				return 0, false
			case <-time.After(200 * time.Millisecond):
			}
		}
		if g, err := h.Metric(ctx, "go_goroutines"); err == nil {
			readings = append(readings, g)
		}
	}
	if len(readings) == 0 {
		return 0, false
	}
	slices.Sort(readings)
	return readings[len(readings)/2], true
}

// heapProfile saves Holdfast's heap profile (after a GC) as <name>.pprof in
// $HOLDFAST_SOAK_PROFILES, if set: `go tool pprof -base warm.pprof end.pprof` shows what grew.
func heapProfile(ctx context.Context, t *testing.T, h *harness.Holdfast, name string) {
	dir := os.Getenv("HOLDFAST_SOAK_PROFILES")
	if dir == "" {
		return
	}
	code, body, err := h.Get(ctx, "/debug/pprof/heap?gc=1")
	if err != nil || code != 200 {
		t.Errorf("heap profile: %d %v", code, err)
		return
	}
	if err := os.WriteFile(filepath.Join(dir, name+".pprof"), []byte(body), 0o600); err != nil {
		t.Error(err)
	}
}

package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast/holdfast/e2e/adsclient"
	"github.com/holdfast/holdfast/e2e/faultproxy"
	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/e2e/internal/leakcheck"
	"github.com/holdfast/holdfast/e2e/internal/testproc"
	"github.com/holdfast/holdfast/e2e/kube"
	"github.com/holdfast/holdfast/xds/translate"
)

// The fault matrix of docs/reliability.md. `make chaos` runs it with the durations the table
// promises (HOLDFAST_CHAOS=full); `make test` runs the same rows with shorter faults, so that
// every row is exercised on every change.

// chaosFull says whether the matrix runs with its full durations.
func chaosFull() bool { return os.Getenv("HOLDFAST_CHAOS") == "full" }

// faultFor is d in a full run, short otherwise.
func faultFor(d, short time.Duration) time.Duration {
	if chaosFull() {
		return d
	}
	return short
}

// chaosRow is one line of the table.
type chaosRow struct {
	Fault         string
	Duration      time.Duration
	Sent, Failed  int64
	FailBound     int64         // failed RPCs allowed: 0 unless the fault kills backends
	Detected      time.Duration // how long until Holdfast noticed; -1: not applicable
	DetectBound   time.Duration
	Converged     time.Duration // a change made during (or right after) the fault, after the fault ended; -1: n/a
	StateLost     bool
	Note          string
	detectedLabel string
}

// ok says whether the row met the targets (the table's last column).
func (r chaosRow) ok() bool {
	return r.correct() && (r.Detected < 0 || r.Detected <= r.DetectBound) && (r.Converged < 0 || r.Converged <= 10*time.Second)
}

// correct is what the test insists on: no failed RPC beyond the bound, nothing lost, and
// detection and convergence within five times their targets (timing targets are figures for
// the table, not test verdicts; a test only catches what never happens).
func (r chaosRow) correct() bool {
	return r.Failed <= r.FailBound && !r.StateLost && (r.Detected < 0 || r.Detected <= 5*r.DetectBound) &&
		(r.Converged < 0 || r.Converged <= 50*time.Second)
}

func dur(d time.Duration) string {
	if d < 0 {
		return "–"
	}
	return d.Round(10 * time.Millisecond).String()
}

// chaosTable renders the rows as Markdown.
func chaosTable(rows []chaosRow) string {
	var b strings.Builder
	b.WriteString("| # | fault | duration | RPCs sent | RPCs failed | detected after | converged after | state lost | target met |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for i, r := range rows {
		lost, met := "no", "yes"
		if r.StateLost {
			lost = "yes"
		}
		if !r.ok() {
			met = "**no**"
		}
		failed := strconv.FormatInt(r.Failed, 10)
		if r.FailBound > 0 {
			failed += fmt.Sprintf(" (≤ %d: its backends died)", r.FailBound)
		}
		det := dur(r.Detected)
		if r.detectedLabel != "" && r.Detected >= 0 {
			det += " (" + r.detectedLabel + ")"
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %d | %s | %s | %s | %s | %s |\n", i+1, r.Fault, dur(r.Duration), r.Sent, failed, det, dur(r.Converged), lost, met)
	}
	return b.String()
}

// chaos is the scene every row runs against: its own API server (rows break it), Holdfast
// reaching it through a fault proxy, with a state dir, on a fixed xDS address, 10 services on 4
// live backends with a client each sending steady load, and a service "move" whose backends
// each row changes.
type chaos struct {
	t          *testing.T
	k          *kube.Cluster
	ns         string
	proxy      *faultproxy.Proxy
	kubeconfig string
	stateDir   string
	xdsAddr    string
	h          *harness.Holdfast
	b          map[string]*harness.Backend
	load       *load
	move       *harness.GRPCClient
	moved      bool
}

const chaosServices = 10

func newChaos(t *testing.T) *chaos {
	t.Helper()
	sc := &chaos{t: t, k: ownCluster(t), stateDir: t.TempDir()}
	sc.ns = newNamespaceOn(t, sc.k)
	sc.b = startBackends(t, grpcPort.target, "b0", "b1", "b2", "b3")
	var err error
	if sc.proxy, err = faultproxy.Start(sc.k.Server, sc.k.CAFile, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.proxy.Close() })
	sc.kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	if err := sc.k.WriteKubeconfig(sc.kubeconfig, sc.proxy.URL, sc.proxy.CAFile); err != nil {
		t.Fatal(err)
	}
	ports, err := testproc.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	sc.xdsAddr = "127.0.0.1:" + strconv.Itoa(ports[0])
	for i := range chaosServices {
		svc := fmt.Sprintf("svc-%d", i)
		createServiceOn(t, sc.k, sc.ns, svc, grpcPort)
		writeSliceOn(t, sc.k, sc.ns, svc+"-a", svc, grpcPort, endpoint{sc.b[fmt.Sprintf("b%d", i%4)], true}, endpoint{sc.b[fmt.Sprintf("b%d", (i+1)%4)], true})
	}
	createServiceOn(t, sc.k, sc.ns, "move", grpcPort)
	writeSliceOn(t, sc.k, sc.ns, "move-a", "move", grpcPort, endpoint{sc.b["b0"], true}, endpoint{sc.b["b1"], true})
	sc.startHoldfast()
	ctx := testContext(t)
	var clients []*harness.GRPCClient
	for i := range chaosServices {
		c := sc.dial(t, fmt.Sprintf("svc-%d", i))
		if err := c.WaitForBackends(ctx, fmt.Sprintf("b%d", i%4), fmt.Sprintf("b%d", (i+1)%4)); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	sc.move = sc.dial(t, "move")
	if err := sc.move.WaitForBackends(ctx, "b0", "b1"); err != nil {
		t.Fatal(err)
	}
	sc.load = startLoad(10*time.Millisecond, clients...)
	t.Cleanup(func() { _, _, _ = sc.load.finish() })
	return sc
}

// startHoldfast (re)starts Holdfast on the scene's address and state dir.
func (sc *chaos) startHoldfast() {
	sc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	h, err := harness.StartHoldfast(ctx, env.bins.Holdfast, env.dir, sc.kubeconfig, "--namespaces", sc.ns, "--xds-listen", sc.xdsAddr,
		"--state-dir", sc.stateDir, "--guard-min-fleet-endpoints", "10", "--guard-min-withdrawn-endpoints", "5",
		"--xds-ack-timeout", "2s", "--max-services", strconv.Itoa(chaosServices+5),
		// Gathers the deletions of row 7 into one change (each would otherwise be applied alone,
		// below the guard's thresholds, before the rest arrive).
		"--debounce", "300ms", "--debounce-max", "1s")
	if err != nil {
		sc.t.Fatal(err)
	}
	sc.h = h
	sc.t.Cleanup(func() {
		if sc.t.Failed() && h == sc.h {
			sc.t.Logf("holdfast log: %s", h.LogTail(60))
		}
		h.Kill()
	})
}

func (sc *chaos) dial(t *testing.T, svc string) *harness.GRPCClient {
	t.Helper()
	c, err := harness.DialXDS(sc.xdsAddr, "chaos-"+svc, target(sc.ns, svc, grpcPort.port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// current is the pair of backends service "move" has now.
func (sc *chaos) current() []string {
	if sc.moved {
		return []string{"b2", "b3"}
	}
	return []string{"b0", "b1"}
}

// change moves service "move" to its other pair of backends, through the API server.
func (sc *chaos) change() []string {
	sc.moved = !sc.moved
	want := []string{"b0", "b1"}
	if sc.moved {
		want = []string{"b2", "b3"}
	}
	writeSliceOn(sc.t, sc.k, sc.ns, "move-a", "move", grpcPort, endpoint{sc.b[want[0]], true}, endpoint{sc.b[want[1]], true})
	return want
}

// converged waits for the client of "move" to reach want, and returns how long after from.
func (sc *chaos) converged(ctx context.Context, c *harness.GRPCClient, want []string, from time.Time) time.Duration {
	if err := c.WaitForBackends(ctx, want...); err != nil {
		sc.t.Errorf("the change never converged: %v", err)
		return time.Hour
	}
	return time.Since(from)
}

// stateIntact checks that every service still routes to its backends through a fresh client
// (nothing lost from Holdfast's state), and that Holdfast is ready.
func (sc *chaos) stateIntact(ctx context.Context) bool {
	for i := range chaosServices {
		c := sc.dial(sc.t, fmt.Sprintf("svc-%d", i))
		if err := c.WaitForBackends(ctx, fmt.Sprintf("b%d", i%4), fmt.Sprintf("b%d", (i+1)%4)); err != nil {
			sc.t.Errorf("svc-%d after the fault: %v", i, err)
			return false
		}
		_ = c.Close()
	}
	code, _, err := sc.h.Get(ctx, "/readyz")
	return err == nil && code == 200 && sc.h.Running()
}

// waitFor returns how long until cond held, or an hour if it did not within bound×5.
func waitFor(ctx context.Context, bound time.Duration, cond func() bool) time.Duration {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 5*bound)
	defer cancel()
	if harness.Eventually(ctx, cond) != nil {
		return time.Hour
	}
	return time.Since(start)
}

func (sc *chaos) metricAtLeast(ctx context.Context, h *harness.Holdfast, series string, v float64) func() bool {
	return func() bool { got, err := h.Metric(ctx, series); return err == nil && got >= v }
}

// run measures one row: RPCs around fault, which returns the row's other figures.
func (sc *chaos) run(rows *[]chaosRow, fault func(ctx context.Context, r *chaosRow)) {
	sc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	sent0, failed0 := sc.load.counts()
	r := chaosRow{Detected: -1, Converged: -1}
	start := time.Now()
	fault(ctx, &r)
	if r.Duration == 0 {
		r.Duration = time.Since(start)
	}
	r.StateLost = r.StateLost || !sc.stateIntact(ctx)
	sent1, failed1 := sc.load.counts()
	r.Sent += sent1 - sent0
	r.Failed += failed1 - failed0
	*rows = append(*rows, r)
	sc.t.Logf("%s: %d RPCs, %d failed, detected %s, converged %s, state lost %v %s", r.Fault, r.Sent, r.Failed, dur(r.Detected), dur(r.Converged), r.StateLost, r.Note)
	if !r.correct() {
		sc.load.mu.Lock()
		sc.t.Errorf("%s: RPCs failed, state lost, or never detected or converged (last RPC error: %v)", r.Fault, sc.load.lastErr)
		sc.load.mu.Unlock()
	}
}

// staleRow is an API-server-side fault: detected as a stale source, the change is written
// once the API server answers again.
func (sc *chaos) staleRow(name string, hold, detectBound time.Duration, inject func() error, recoverFrom func(context.Context) error, writeDuring bool) func(context.Context, *chaosRow) {
	return func(ctx context.Context, r *chaosRow) {
		r.Fault, r.Duration, r.DetectBound, r.detectedLabel = name, hold, detectBound, "source stale"
		faultAt := time.Now()
		if err := inject(); err != nil {
			sc.t.Fatal(err)
		}
		r.Detected = waitFor(ctx, detectBound, sc.metricAtLeast(ctx, sc.h, `holdfast_source_stale{source="`+sc.ns+`"}`, 1))
		// Stale, and still ready: it is the best source of routes its clients have.
		readyWhileStale(ctx, sc.t, sc.h, sc.ns)
		var want []string
		if writeDuring {
			had := sc.current()
			want = sc.change()
			// A change the API server took during the fault does not reach clients yet, and they
			// keep exactly the routes they had.
			if hits, failures, err := sc.move.Spread(ctx, 20); failures != 0 || !slices.Equal(slices.Sorted(maps.Keys(hits)), had) {
				sc.t.Errorf("%s: during the fault RPCs reached %s with %d failures (%v); want %v", name, harness.HitsString(hits), failures, err, had)
			}
		}
		time.Sleep(time.Until(faultAt.Add(hold)))
		if err := recoverFrom(ctx); err != nil {
			sc.t.Fatal(err)
		}
		ended := time.Now()
		if !writeDuring {
			want = sc.change()
		}
		r.Converged = sc.converged(ctx, sc.move, want, ended)
		waitFor(ctx, timeout, func() bool {
			v, err := sc.h.Metric(ctx, `holdfast_source_stale{source="`+sc.ns+`"}`)
			return err == nil && v == 0
		})
	}
}

func TestChaosMatrix(t *testing.T) {
	t.Parallel()
	sc := newChaos(t)
	var rows []chaosRow
	probeBound := 9 * time.Second // --probe-interval 5s + --probe-timeout 3s, and slack

	// 1, 2: the API server stopped, etcd killed.
	apiStop := faultFor(60*time.Second, 12*time.Second)
	sc.run(&rows, sc.staleRow(fmt.Sprintf("API server SIGSTOP %v", apiStop), apiStop, probeBound,
		sc.k.APIServer.Pause, func(context.Context) error { return sc.k.APIServer.Resume() }, false))
	etcdKill := faultFor(30*time.Second, 10*time.Second)
	sc.run(&rows, sc.staleRow(fmt.Sprintf("etcd killed %v", etcdKill), etcdKill, probeBound,
		func() error { sc.k.Etcd.Kill(); return nil },
		func(ctx context.Context) error {
			if err := sc.k.Etcd.Start(); err != nil {
				return err
			}
			return sc.k.WaitReady(ctx)
		}, false))

	// 3: the fault proxy between Holdfast and the API server; the change is written during
	// the fault (the API server itself is fine).
	proxyFault := faultFor(20*time.Second, 8*time.Second)
	for _, m := range []faultproxy.Mode{faultproxy.Stall, faultproxy.Corrupt, faultproxy.Fail500, faultproxy.Fail429, faultproxy.Reset} {
		sc.run(&rows, sc.staleRow(fmt.Sprintf("API responses: %s", m), proxyFault, probeBound,
			func() error { sc.proxy.SetMode(m); return nil },
			func(context.Context) error { sc.proxy.SetMode(faultproxy.Pass); return nil }, true))
	}

	// 4: Holdfast killed and restarted while the API server is down: it serves its state from
	// disk; clients reconnect to it and lose nothing.
	sc.run(&rows, func(ctx context.Context, r *chaosRow) {
		r.Fault = "Holdfast SIGKILL + restart, API server stopped"
		// What it restores is what the API server had: its state file records the versions.
		checkStateProvenance(ctx, t, sc.k, filepath.Join(sc.stateDir, "state"), sc.ns, "move", "move-a")
		if err := sc.k.APIServer.Pause(); err != nil {
			t.Fatal(err)
		}
		sc.h.Kill() // SIGKILL: no chance to flush anything more
		restart := time.Now()
		sc.startHoldfast() // ready once restored from --state-dir
		r.Detected, r.DetectBound, r.detectedLabel = time.Since(restart), 10*time.Second, "ready from disk"
		// Ready and saying it serves restored state; a client that never saw Holdfast before
		// routes with it.
		if code, body, err := sc.h.Get(ctx, "/readyz"); err != nil || code != 200 || !strings.Contains(body, `"restored":true`) {
			t.Errorf("/readyz after the restart = %d %s %v; want ready and restored", code, body, err)
		}
		waitMetric(ctx, t, sc.h, "holdfast_state_restored", func(v float64) bool { return v == 1 })
		fresh := sc.dial(t, "move")
		if err := fresh.WaitForBackends(ctx, sc.current()...); err != nil {
			t.Errorf("a new client with the restored state: %v", err)
		}
		_ = fresh.Close()
		if err := sc.k.APIServer.Resume(); err != nil {
			t.Fatal(err)
		}
		ended := time.Now()
		r.Converged = sc.converged(ctx, sc.move, sc.change(), ended)
		waitMetric(ctx, t, sc.h, "holdfast_state_restored", func(v float64) bool { return v == 0 })
	})

	// 5, 6: applications behind agents, each agent on its own Holdfast replica; both replicas
	// killed; a new application starts; then an agent restarts with Holdfast still down.
	cacheDir := t.TempDir()
	second := t.TempDir()
	ctx := testContext(t)
	h2, err := harness.StartHoldfast(ctx, env.bins.Holdfast, env.dir, sc.kubeconfig, "--namespaces", sc.ns, "--state-dir", second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h2.Kill)
	agentA := startAgent(t, sc.xdsAddr, "--node-id", "app-a", "--kinds", "grpc", "--cache-dir", cacheDir)
	agentB := startAgent(t, h2.XDSAddr, "--node-id", "app-b", "--kinds", "grpc")
	var viaAgents []*harness.GRPCClient
	for _, a := range []*harness.Agent{agentA, agentB} {
		if _, err := a.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		c, err := harness.DialXDS(a.ListenAddr, "app-via-agent", target(sc.ns, "svc-0", grpcPort.port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if err := c.WaitForBackends(ctx, "b0", "b1"); err != nil {
			t.Fatal(err)
		}
		viaAgents = append(viaAgents, c)
	}
	agentLoad := startLoad(10*time.Millisecond, viaAgents...)
	defer agentLoad.finish() //nolint:errcheck // counted per row
	sc.run(&rows, func(ctx context.Context, r *chaosRow) {
		r.Fault = "both Holdfast replicas killed, apps via agents"
		s0, f0 := agentLoad.counts()
		sc.h.Kill()
		h2.Kill()
		time.Sleep(faultFor(20*time.Second, 5*time.Second))
		// A new application process starts with no Holdfast anywhere: the agent serves it.
		if ids := appRun(ctx, t, agentA.ListenAddr, target(sc.ns, "svc-0", grpcPort.port)); len(ids) != 10 {
			r.StateLost, r.Note = true, fmt.Sprintf("a new app behind the agent got %v", ids)
		}
		sc.startHoldfast()
		ended := time.Now()
		r.Converged = sc.converged(ctx, sc.move, sc.change(), ended)
		s1, f1 := agentLoad.counts()
		r.Sent, r.Failed = s1-s0, f1-f0
	})
	sc.run(&rows, func(ctx context.Context, r *chaosRow) {
		r.Fault = "agent restarted, Holdfast down"
		s0, f0 := agentLoad.counts()
		sc.h.Kill()
		agentA.Kill()
		a, err := harness.RunAgent(env.bins.Agent, env.dir, sc.xdsAddr, "--node-id", "app-a", "--kinds", "grpc", "--cache-dir", cacheDir, "--listen", agentA.ListenAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.Kill)
		restart := time.Now()
		if _, err := a.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		r.Detected, r.DetectBound, r.detectedLabel = time.Since(restart), 5*time.Second, "agent ready from disk"
		// (a listens where the old agent did: its own ListenAddr was overridden by --listen.)
		if ids := appRun(ctx, t, agentA.ListenAddr, target(sc.ns, "svc-0", grpcPort.port)); len(ids) != 10 {
			r.StateLost, r.Note = true, fmt.Sprintf("a new app behind the restarted agent got %v", ids)
		}
		sc.startHoldfast()
		ended := time.Now()
		r.Converged = sc.converged(ctx, sc.move, sc.change(), ended)
		s1, f1 := agentLoad.counts()
		r.Sent, r.Failed = s1-s0, f1-f0
	})

	// From here Holdfast runs to the end: its goroutines and live heap must not grow.
	mustMetric := func(series string) float64 {
		mctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		v, err := sc.h.Metric(mctx, series)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// The baseline waits for every load client to be back on the restarted Holdfast (grpc-go
	// reconnects with backoff), and for the count to hold still.
	// (the load clients, the client of "move", agent A's upstream stream)
	if waitFor(context.Background(), timeout, func() bool { return connectedClients(sc.h) >= chaosServices+2 }) > 5*timeout {
		t.Fatalf("only %d xDS clients reconnected", connectedClients(sc.h))
	}
	time.Sleep(3 * time.Second)
	baseClients := connectedClients(sc.h)
	baseRows := len(rows)
	baseGoroutines, ok := quietGoroutines(context.Background(), sc.h, sc.ns)
	if !ok {
		t.Fatal("no goroutine count from Holdfast for the baseline")
	}
	baseHeap := mustMetric("go_gc_heap_live_bytes")

	// 7: 90 % of the EndpointSlices deleted at once: the guard holds it.
	sc.run(&rows, func(ctx context.Context, r *chaosRow) {
		r.Fault, r.DetectBound, r.detectedLabel = "90 % of EndpointSlices deleted", 5*time.Second, "guard hold"
		api := sc.k.Client.DiscoveryV1().EndpointSlices(sc.ns)
		saved := map[string]*discoveryv1.EndpointSlice{}
		for i := range chaosServices { // 10 of the 11 slices: 20 of 22 endpoints
			name := fmt.Sprintf("svc-%d-a", i)
			s, err := api.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			saved[name] = s
		}
		start := time.Now()
		for name := range saved {
			if err := api.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		r.Detected = waitFor(ctx, r.DetectBound, sc.metricAtLeast(ctx, sc.h, "holdfast_guard_held", 1))
		time.Sleep(faultFor(10*time.Second, 3*time.Second))
		// The slices come back (a bad rollout reverted): the held change is moot, and the next
		// change flows.
		for _, s := range saved {
			s.ResourceVersion, s.UID = "", ""
			if _, err := api.Create(ctx, s, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		ended := time.Now()
		r.Duration = ended.Sub(start)
		waitFor(ctx, timeout, func() bool { v, err := sc.h.Metric(ctx, "holdfast_guard_held"); return err == nil && v == 0 })
		r.Converged = sc.converged(ctx, sc.move, sc.change(), ended)
	})

	// 8: 1,000 malformed EndpointSlices written during steady churn.
	sc.run(&rows, func(ctx context.Context, r *chaosRow) {
		r.Fault, r.DetectBound, r.detectedLabel = "1,000 malformed EndpointSlices during churn", 30*time.Second, "all rejected, from the first write"
		api := sc.k.Client.DiscoveryV1().EndpointSlices(sc.ns)
		before, _ := sc.h.Metric(ctx, `holdfast_objects_rejected_total{reason="missing_service_label"}`)
		start := time.Now()
		var wg sync.WaitGroup
		for w := range 10 {
			wg.Go(func() {
				for i := w; i < 1000; i += 10 {
					bad := &discoveryv1.EndpointSlice{
						// No service label: the API server accepts it, it belongs to nothing.
						ObjectMeta:  metav1.ObjectMeta{Name: fmt.Sprintf("junk-%d", i), Labels: map[string]string{"holdfast.io/chaos": "junk"}},
						AddressType: discoveryv1.AddressTypeIPv4,
						Ports:       []discoveryv1.EndpointPort{{Port: ptr(int32(80)), Protocol: ptr(corev1.ProtocolTCP)}},
						Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{fmt.Sprintf("10.247.%d.%d", i/250, i%250+1)}}},
					}
					if _, err := api.Create(ctx, bad, metav1.CreateOptions{}); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		var last []string
		for range 5 { // churn meanwhile
			last = sc.change()
			time.Sleep(300 * time.Millisecond)
		}
		wg.Wait()
		r.Converged = sc.converged(ctx, sc.move, last, time.Now())
		waitFor(ctx, r.DetectBound, sc.metricAtLeast(ctx, sc.h, `holdfast_objects_rejected_total{reason="missing_service_label"}`, before+1000))
		r.Detected = time.Since(start) // from the first write until the last was rejected
		r.Duration = r.Detected
		if err := api.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "holdfast.io/chaos=junk"}); err != nil {
			t.Fatal(err)
		}
	})

	// 9: a client rejects a resource: it is recorded, never re-sent in a loop, others unharmed.
	sc.run(&rows, func(ctx context.Context, r *chaosRow) {
		r.Fault, r.DetectBound, r.detectedLabel = "a client NACKs a resource", 5*time.Second, "NACK recorded"
		name := target(sc.ns, "move", grpcPort.port)
		before, _ := sc.h.Metric(ctx, `holdfast_xds_nacks_total{type="type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"}`)
		picky, err := adsclient.Dial(sc.xdsAddr, adsclient.Options{NodeID: "picky", Delta: true, Reject: func(typeURL string, res adsclient.Resource) error {
			if typeURL == resourcev3.EndpointType && translate.ServiceOf(res.Name) == name {
				return fmt.Errorf("this Envoy does not support %s", res.Name)
			}
			return nil
		}})
		if err != nil {
			t.Fatal(err)
		}
		defer picky.Close()
		start := time.Now()
		r.Detected = waitFor(ctx, r.DetectBound, sc.metricAtLeast(ctx, sc.h,
			`holdfast_xds_nacks_total{type="type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"}`, before+1))
		want := sc.change()
		r.Converged = sc.converged(ctx, sc.move, want, time.Now())
		time.Sleep(quietWindow) // a resend loop would deliver the rejected version again within it
		for res, n := range picky.Stats().Deliveries {
			if strings.Contains(res, name) && n > 1 {
				r.StateLost, r.Note = true, fmt.Sprintf("%s delivered %d times", res, n)
			}
		}
		r.Duration = time.Since(start)
	})

	// 10: a zone's backends die: its clients fail over to the other zone (their own failures
	// are bounded; this row runs on the locality scene).
	sc.run(&rows, func(ctx context.Context, r *chaosRow) {
		r.Fault, r.FailBound = "zone a's backends killed", failoverBound
		z := newZoneScene(t)
		a := z.client(t, "zone-a")
		if err := a.WaitForBackends(ctx, "a1", "a2"); err != nil {
			t.Fatal(err)
		}
		log := logCalls(a)
		mark := log.mark()
		start := time.Now()
		z.backends["a1"].Kill()
		z.backends["a2"].Kill()
		failures := log.waitSettled(ctx, t, z, mark, "zone-b")
		r.Detected, r.DetectBound, r.detectedLabel = time.Since(start), 5*time.Second, "traffic on zone b"
		_, _, _ = log.finish()
		calls := log.since(mark)
		r.Sent, r.Failed = int64(len(calls)), int64(failures)
		r.Duration = time.Since(start)
	})

	// 11: a client that never reads, beside fast ones.
	sc.run(&rows, func(ctx context.Context, r *chaosRow) {
		r.Fault, r.DetectBound, r.detectedLabel = "a stuck client beside 10 fast ones", 10*time.Second, "stuck client cut"
		before, _ := sc.h.Metric(ctx, "holdfast_xds_slow_clients_disconnected_total")
		slow, err := adsclient.Dial(sc.xdsAddr, adsclient.Options{NodeID: "stuck", NeverRead: true})
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Close()
		var fast []*adsclient.Client
		for i := range 10 {
			c, err := adsclient.Dial(sc.xdsAddr, adsclient.Options{NodeID: fmt.Sprintf("fast-%d", i), Delta: i%2 == 1})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fast = append(fast, c)
		}
		start := time.Now()
		want := sc.change()
		written := time.Now()
		r.Converged = sc.converged(ctx, sc.move, want, written)
		for _, c := range fast {
			if err := c.WaitFor(ctx, func(s adsclient.State) bool {
				return slices.Equal(addresses(s, target(sc.ns, "move", grpcPort.port)), []string{sc.b[want[0]].HostPort(), sc.b[want[1]].HostPort()})
			}); err != nil {
				r.StateLost, r.Note = true, "a fast client never got the change"
			}
		}
		if c := time.Since(written); c > r.Converged {
			r.Converged = c // until the last fast client has it
		}
		r.Detected = waitFor(ctx, r.DetectBound, sc.metricAtLeast(ctx, sc.h, "holdfast_xds_slow_clients_disconnected_total", before+1))
		r.Duration = time.Since(start)
	})

	// 12: the service limit is reached: new services are refused, served ones untouched.
	sc.run(&rows, func(ctx context.Context, r *chaosRow) {
		r.Fault, r.DetectBound, r.detectedLabel = "service limit reached (+10 over 15)", 10*time.Second, "refusal counted"
		before, _ := sc.h.Metric(ctx, `holdfast_capacity_refused_total{kind="services"}`)
		start := time.Now()
		for i := range 10 {
			createServiceOn(t, sc.k, sc.ns, fmt.Sprintf("extra-%d", i), grpcPort)
			writeSliceOn(t, sc.k, sc.ns, fmt.Sprintf("extra-%d-a", i), fmt.Sprintf("extra-%d", i), grpcPort, endpoint{sc.b["b3"], true})
		}
		r.Detected = waitFor(ctx, r.DetectBound, sc.metricAtLeast(ctx, sc.h, `holdfast_capacity_refused_total{kind="services"}`, before+1))
		r.Converged = sc.converged(ctx, sc.move, sc.change(), time.Now())
		for i := range 10 {
			_ = sc.k.Client.CoreV1().Services(sc.ns).Delete(ctx, fmt.Sprintf("extra-%d", i), metav1.DeleteOptions{})
			_ = sc.k.Client.DiscoveryV1().EndpointSlices(sc.ns).Delete(ctx, fmt.Sprintf("extra-%d-a", i), metav1.DeleteOptions{})
		}
		r.Duration = time.Since(start)
	})

	// No growth: once the clients of rows 7–12 are gone (the checks' own grpc-go clients close
	// their streams lazily), goroutines and live heap are back.
	if waitFor(context.Background(), timeout, func() bool { return connectedClients(sc.h) <= baseClients }) > 5*timeout {
		t.Errorf("xDS clients %d, not back to %d", connectedClients(sc.h), baseClients)
	}
	time.Sleep(time.Second)
	goroutines, ok := quietGoroutines(context.Background(), sc.h, sc.ns)
	if !ok {
		t.Fatal("no goroutine count from Holdfast at the end")
	}
	heap := mustMetric("go_gc_heap_live_bytes")
	growth := fmt.Sprintf("Holdfast goroutines %.0f → %.0f, live heap %.1f → %.1f MiB over the rows after the last restart (xDS clients %d → %d)",
		baseGoroutines, goroutines, baseHeap/(1<<20), heap/(1<<20), baseClients, connectedClients(sc.h))
	t.Log(growth)
	// A goroutine left behind by each fault after the baseline fails this (the count was the
	// same to the goroutine at both ends in every run measured); the heap moves with GC timing.
	faults := float64(len(rows) - baseRows)
	if err := leakcheck.ChaosGoroutinesPerFault.Check([]leakcheck.Sample{{At: 0, Value: baseGoroutines}, {At: faults, Value: goroutines}}); err != nil {
		t.Errorf("growth: %s: %v", growth, err)
	}
	if heap > baseHeap+32<<20 {
		t.Errorf("growth: %s", growth)
	}
	if !sc.h.Running() || !agentB.Running() {
		t.Error("a process crashed")
	}

	table := chaosTable(rows)
	t.Logf("fault matrix (full durations: %v):\n%s\n%s", chaosFull(), table, growth)
	if path := os.Getenv("HOLDFAST_CHAOS_TABLE"); path != "" {
		if err := os.WriteFile(path, []byte(table+"\n"+growth+"\n"), 0o600); err != nil {
			t.Error(err)
		}
	}
}

// connectedClients sums holdfast_xds_connected_clients over kinds and flavours (-1: no answer).
func connectedClients(h *harness.Holdfast) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, body, err := h.Get(ctx, "/metrics")
	if err != nil {
		return -1
	}
	n := 0.0
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, "holdfast_xds_connected_clients{"); ok {
			if i := strings.LastIndexByte(rest, ' '); i >= 0 {
				v, err := strconv.ParseFloat(rest[i+1:], 64)
				if err == nil {
					n += v
				}
			}
		}
	}
	return int(n)
}

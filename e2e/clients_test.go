package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/e2e/netns"
	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/admin"
	"github.com/holdfast/holdfast/xds/bootstrap"
	"github.com/holdfast/holdfast/xds/translate"
)

// The client conformance scenarios: each runs one Holdfast against the shared API server and
// drives every proxyless xDS client implementation at once (grpc-go, gRPC for Node, gRPC C-core,
// each as an application in its own process reading its bootstrap from GRPC_XDS_BOOTSTRAP),
// plus, where a scenario means something for Envoy, the Envoy-like ADS client. What each
// implementation did is recorded for docs/clients.md (make clients-matrix).

var clientTools struct {
	once  sync.Once
	tools harness.ClientTools
	err   error
}

// tools installs (normally: finds, `make clients` ran before) gRPC for Node and gRPC C-core.
func tools(t testing.TB) harness.ClientTools {
	t.Helper()
	clientTools.once.Do(func() { clientTools.tools, clientTools.err = harness.InstallClients(env.bins.XDSApp) })
	if clientTools.err != nil {
		t.Fatal(clientTools.err)
	}
	return clientTools.tools
}

// matrix records, per scenario and implementation, what happened, for docs/clients.md.
var matrix struct {
	mu       sync.Mutex
	rows     map[string]map[string]string // scenario → implementation → cell
	versions map[string]string            // implementation → version it reported
	stuck    map[string][2]int            // implementation → RPCs its library never completed, of all
}

func record(scenario, impl, cell string) {
	matrix.mu.Lock()
	defer matrix.mu.Unlock()
	if matrix.rows == nil {
		matrix.rows, matrix.versions = map[string]map[string]string{}, map[string]string{}
	}
	if matrix.rows[scenario] == nil {
		matrix.rows[scenario] = map[string]string{}
	}
	matrix.rows[scenario][impl] = cell
}

// recordStuck adds to what an implementation's library never completed (harness.CodeStuck),
// over every scenario, for the matrix.
func recordStuck(impl string, stuck, rpcs int) {
	matrix.mu.Lock()
	defer matrix.mu.Unlock()
	if matrix.stuck == nil {
		matrix.stuck = map[string][2]int{}
	}
	c := matrix.stuck[impl]
	matrix.stuck[impl] = [2]int{c[0] + stuck, c[1] + rpcs}
}

func recordVersion(impl, version string) {
	matrix.mu.Lock()
	defer matrix.mu.Unlock()
	if matrix.versions == nil {
		matrix.rows, matrix.versions = map[string]map[string]string{}, map[string]string{}
	}
	matrix.versions[impl] = version
}

// envoyColumn is the column of what a real Envoy did where no scenario drove it as an
// application (a statement of how it is configured, checked elsewhere).
const envoyColumn = string(harness.ImplEnvoy)

// writeMatrix writes the recorded matrix to $HOLDFAST_CLIENTS_MATRIX, if set (make clients-matrix).
func writeMatrix() error {
	path := os.Getenv("HOLDFAST_CLIENTS_MATRIX")
	matrix.mu.Lock()
	defer matrix.mu.Unlock()
	if path == "" || len(matrix.rows) == 0 {
		return nil
	}
	cols := make([]string, 0, len(harness.Columns))
	for _, c := range harness.Columns {
		cols = append(cols, string(c))
	}
	var b strings.Builder
	b.WriteString("| scenario |")
	for _, c := range cols {
		v := matrix.versions[c]
		if v == "" {
			v = c
		}
		fmt.Fprintf(&b, " %s |", v)
	}
	b.WriteString("\n|---|")
	for range cols {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	const stuckRow = "RPCs its own library never completed, a second past their deadline (all scenarios)"
	for impl, c := range matrix.stuck {
		if matrix.rows[stuckRow] == nil {
			matrix.rows[stuckRow] = map[string]string{}
		}
		matrix.rows[stuckRow][impl] = fmt.Sprintf("%d of %d", c[0], c[1])
	}
	scenarios := make([]string, 0, len(matrix.rows))
	for s := range matrix.rows {
		scenarios = append(scenarios, s)
	}
	sort.Strings(scenarios)
	for _, s := range scenarios {
		fmt.Fprintf(&b, "| %s |", s)
		for _, c := range cols {
			cell := matrix.rows[s][c]
			if cell == "" {
				cell = "—"
			}
			fmt.Fprintf(&b, " %s |", cell)
		}
		b.WriteString("\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644) //nolint:gosec // a documentation table
}

// startApps starts one application per implementation, all calling targets through the xDS
// server at server, each with the bootstrap bootstrapOf(impl) gives (nil: the plain one). With
// o.Sidecar set (withEnvoy), a real Envoy joins them: a sidecar in o.Sidecar's network, its
// application sending through it.
func startApps(t *testing.T, server string, o harness.AppOptions, bootstrapOf func(harness.Impl) []byte) map[harness.Impl]*harness.App {
	t.Helper()
	ctx := testContext(t)
	impls := harness.Impls
	if o.Sidecar != nil {
		impls = harness.Columns
	}
	apps := map[harness.Impl]*harness.App{}
	for _, impl := range impls {
		oo := o
		oo.Dir = env.dir
		if bootstrapOf != nil {
			oo.Bootstrap = bootstrapOf(impl)
		}
		if oo.Bootstrap == nil {
			oo.Bootstrap = plainBootstrap(ctx, t, impl, fmt.Sprintf("%s-%s", impl, t.Name()), server)
		}
		a, err := harness.StartApp(ctx, tools(t), impl, oo)
		if err != nil {
			t.Fatal(err)
		}
		recordVersion(string(impl), a.Version)
		t.Cleanup(func() {
			if n := a.Stuck(0, ""); n > 0 {
				recordStuck(string(impl), n, len(a.Since(0, "")))
				t.Logf("%s: %d RPCs its own library never completed, a second past their deadline (not counted as failures)", impl, n)
			}
			if t.Failed() {
				if dump := a.ThreadDump(context.Background()); dump != "" {
					t.Logf("%s application's threads:\n%s", impl, dump)
				}
			}
			a.Stop()
			if t.Failed() {
				t.Logf("%s application stderr: %s", impl, a.Stderr(30))
			}
		})
		apps[impl] = a
	}
	return apps
}

// plainBootstrap is the plaintext bootstrap of impl for the xDS server at server: Envoy's from
// `holdfast bootstrap --envoy --delta`, the gRPC implementations' the one they share.
func plainBootstrap(ctx context.Context, t *testing.T, impl harness.Impl, nodeID, server string) []byte {
	t.Helper()
	if impl == harness.ImplEnvoy {
		out, err := exec.CommandContext(ctx, env.bins.Holdfast, "bootstrap", "--envoy", "--delta", "--node-id", nodeID, "--server", server).Output()
		if err != nil {
			t.Fatalf("holdfast bootstrap --envoy: %v", err)
		}
		return out
	}
	b, err := bootstrap.GRPC(bootstrap.Options{NodeID: nodeID, Server: server})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withEnvoy readies a scene for a real Envoy sidecar: an address for it in the pod network the
// backends share, and the Holdfast flags that let it reach Holdfast from there (the xDS port on
// the network's host address, where the other applications reach it too) and bind its
// outbound_<port> listeners to its own address (one Holdfast, one Envoy: parallel scenes share
// the network, so not 0.0.0.0).
func withEnvoy(t *testing.T) (*harness.Sidecar, []string) {
	t.Helper()
	sc := newSidecar(t)
	return sc, []string{"--xds-listen", hostAddr(t), "--envoy-listen-address", sc.Addr.String()}
}

// sidecarEnvoy starts a real Envoy at sc, Delta, from `holdfast bootstrap --envoy` for the
// Holdfast h (started with withEnvoy's flags), and returns a plain gRPC channel to target
// through it: the application in the pod, calling through its sidecar.
func sidecarEnvoy(ctx context.Context, t *testing.T, h *harness.Holdfast, sc *harness.Sidecar, target string, port int32) (*harness.GRPCClient, *harness.Envoy) {
	t.Helper()
	return envoyVia(ctx, t, sc.Network, sc.Addr, plainBootstrap(ctx, t, harness.ImplEnvoy, "envoy-"+t.Name(), h.XDSAddr), target, port)
}

// envoyVia starts a real Envoy from bootstrap at addr (in n; nil: this host's namespace) and
// returns a plain gRPC channel to target through its outbound_<port> listener there.
func envoyVia(ctx context.Context, t *testing.T, n *netns.Network, addr netip.Addr, bootstrap []byte, target string, port int32) (*harness.GRPCClient, *harness.Envoy) {
	t.Helper()
	e, err := harness.StartEnvoyAt(ctx, tools(t).Envoy, t.TempDir(), n, addr, bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("envoy log: %s", e.LogTail(30))
		}
		e.Kill()
	})
	c, err := harness.DialVia(net.JoinHostPort(addr.String(), strconv.Itoa(int(port))), target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, e
}

// newSidecar is a new address for a sidecar Envoy in the pod network the backends share.
func newSidecar(t *testing.T) *harness.Sidecar {
	t.Helper()
	addr, err := env.net.NewAddress(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	return &harness.Sidecar{Network: env.net, Addr: addr}
}

// hostAddr is a free address on the pod network's host side: one that a sidecar Envoy in the
// network reaches, and processes on this host too.
func hostAddr(t *testing.T) string { return freeAddrOn(t, env.net.Host.String()) }

// envoyAccepted checks that a real Envoy rejected nothing Holdfast sent it and left nothing
// warming.
func envoyAccepted(ctx context.Context, t *testing.T, a *harness.App) {
	t.Helper()
	s, err := a.Envoy().Stats(ctx, "update_rejected|warming")
	if err != nil {
		t.Fatal(err)
	}
	if msg := rejectedOrWarming(s); msg != "" {
		t.Errorf("Envoy: %s", msg)
	}
}

// envoyHostHealth reads a real Envoy's /clusters: the health flags of each upstream host
// ("healthy", or flags such as "/eds_status_draining"), by address, in the clusters whose name
// contains cluster ("" for every cluster).
func envoyHostHealth(ctx context.Context, e *harness.Envoy, cluster string) map[string]string {
	out := map[string]string{}
	body, err := e.Admin(ctx, "/clusters")
	if err != nil {
		return out
	}
	for line := range strings.SplitSeq(body, "\n") {
		name, rest, ok := strings.Cut(line, "::")
		if !ok || !strings.Contains(name, cluster) {
			continue
		}
		hostport, flags, ok := strings.Cut(rest, "::health_flags::")
		if !ok {
			continue
		}
		if host, _, err := net.SplitHostPort(hostport); err == nil {
			out[host] = flags
		}
	}
	return out
}

// eachApp runs check for every implementation as a subtest named step/implementation, in a
// stable order.
func eachApp(t *testing.T, step string, apps map[harness.Impl]*harness.App, check func(t *testing.T, a *harness.App)) {
	t.Helper()
	for _, impl := range harness.Columns {
		if a, ok := apps[impl]; ok {
			t.Run(step+"/"+string(impl), func(t *testing.T) { check(t, a) })
		}
	}
}

// sliceEndpoint is one endpoint of a hand-written EndpointSlice, with its conditions.
type sliceEndpoint struct {
	b                           *harness.Backend
	ready, serving, terminating bool
}

func readyEP(b *harness.Backend) sliceEndpoint {
	return sliceEndpoint{b: b, ready: true, serving: true}
}
func notReadyEP(b *harness.Backend) sliceEndpoint { return sliceEndpoint{b: b} }
func terminatingEP(b *harness.Backend) sliceEndpoint {
	return sliceEndpoint{b: b, serving: true, terminating: true}
}

// writeSliceConditions is writeSlice with every condition of every endpoint spelled out.
func writeSliceConditions(t *testing.T, ns, name, svc string, port servicePort, eps ...sliceEndpoint) {
	t.Helper()
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr(port.name), Port: ptr(port.target), Protocol: ptr(corev1.ProtocolTCP)}},
		Endpoints:   []discoveryv1.Endpoint{},
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.b.Addr.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(e.ready), Serving: ptr(e.serving), Terminating: ptr(e.terminating)},
			Zone:       ptr("zone-a"),
		})
	}
	putSlice(t, env.cluster, s)
}

var (
	echoPort  = servicePort{"grpc", 80, 8080}
	multiA    = servicePort{"a", 80, 8081}
	multiB    = servicePort{"b", 90, 8082}
	appPeriod = 25 * time.Millisecond
)

// TestClientsFollowChanges: two services, one with two named ports; endpoints removed,
// swapped, made not ready, made terminating while serving; every implementation follows, with
// no failed RPC, since every backend stays alive throughout.
func TestClientsFollowChanges(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	b := startBackends(t, echoPort.target, "b1", "b2", "b3")
	m := startBackends(t, multiA.target, "m1", "m2")
	mb := startBackends(t, multiB.target, "n1")
	createService(t, ns, "echo", echoPort)
	createService(t, ns, "multi", multiA, multiB)
	writeSliceConditions(t, ns, "echo-a", "echo", echoPort, readyEP(b["b1"]), readyEP(b["b2"]))
	writeSliceConditions(t, ns, "multi-a", "multi", multiA, readyEP(m["m1"]))
	writeSliceConditions(t, ns, "multi-b", "multi", multiB, readyEP(mb["n1"]))
	sidecar, args := withEnvoy(t)
	h := startHoldfastOn(t, env.cluster, ns, args...)
	echo, ma, mB := target(ns, "echo", echoPort.port), target(ns, "multi", multiA.port), target(ns, "multi", multiB.port)
	apps := startApps(t, h.XDSAddr, harness.AppOptions{Targets: []string{echo, ma, mB}, Interval: appPeriod, Sidecar: sidecar}, nil)

	steps := []struct {
		name  string
		write func()
		echo  []string
		multi string // multi:80's backend
	}{
		{"start", func() {}, []string{"b1", "b2"}, "m1"},
		{"an endpoint removed", func() { writeSliceConditions(t, ns, "echo-a", "echo", echoPort, readyEP(b["b1"])) },
			[]string{"b1"}, "m1"},
		{"endpoints swapped", func() { writeSliceConditions(t, ns, "echo-a", "echo", echoPort, readyEP(b["b2"]), readyEP(b["b3"])) },
			[]string{"b2", "b3"}, "m1"},
		{"one not ready", func() {
			writeSliceConditions(t, ns, "echo-a", "echo", echoPort, notReadyEP(b["b2"]), readyEP(b["b3"]))
		}, []string{"b3"}, "m1"},
		{"one terminating while serving, another ready", func() {
			writeSliceConditions(t, ns, "echo-a", "echo", echoPort, readyEP(b["b1"]), terminatingEP(b["b3"]))
		}, []string{"b1"}, "m1"},
		{"the other named port's endpoint swapped", func() {
			writeSliceConditions(t, ns, "multi-a", "multi", multiA, readyEP(m["m2"]))
		}, []string{"b1"}, "m2"},
	}
	marks := map[harness.Impl]int{}
	for i, st := range steps {
		st.write()
		eachApp(t, st.name, apps, func(t *testing.T, a *harness.App) {
			for _, c := range []struct {
				target string
				want   []string
			}{{echo, st.echo}, {ma, []string{st.multi}}, {mB, []string{"n1"}}} {
				if err := a.Routing(ctx, c.target, c.want...); err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
			}
			if i == 0 {
				marks[a.Impl] = a.Mark() // failures count from the moment all three route
			}
		})
		if t.Failed() {
			return
		}
	}
	eachApp(t, "no failures", apps, func(t *testing.T, a *harness.App) {
		n, last := a.Failures(marks[a.Impl], "")
		total := len(a.Since(marks[a.Impl], ""))
		record("follows endpoint changes (removed, swapped, not ready, terminating, 2 named ports)", string(a.Impl),
			fmt.Sprintf("follows; %d/%d RPCs failed", n, total))
		if n != 0 {
			t.Errorf("%d of %d RPCs failed while every backend was alive (last: %s)", n, total, last)
		}
	})
	envoyAccepted(ctx, t, apps[harness.ImplEnvoy])
	csdsAgreesWithEnvoy(ctx, t, h, fmt.Sprintf("%s-%s", harness.ImplEnvoy, t.Name()), apps[harness.ImplEnvoy].Envoy())
	noNacks(ctx, t, h)
}

// TestClientsAllTerminating: every endpoint of a service terminating but still serving. Sent as
// DRAINING, gRPC clients would route nowhere; like kube-proxy (KEP-1669), Holdfast then sends
// them as HEALTHY, and RPCs keep succeeding.
func TestClientsAllTerminating(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	b := startBackends(t, echoPort.target, "b1", "b2")
	createService(t, ns, "echo", echoPort)
	writeSliceConditions(t, ns, "echo-a", "echo", echoPort, readyEP(b["b1"]), readyEP(b["b2"]))
	sidecar, args := withEnvoy(t)
	h := startHoldfastOn(t, env.cluster, ns, args...)
	echo := target(ns, "echo", echoPort.port)
	apps := startApps(t, h.XDSAddr, harness.AppOptions{Targets: []string{echo}, Interval: appPeriod, Sidecar: sidecar}, nil)
	marks := map[harness.Impl]int{}
	eachApp(t, "routing", apps, func(t *testing.T, a *harness.App) {
		if err := a.Routing(ctx, echo, "b1", "b2"); err != nil {
			t.Fatal(err)
		}
		marks[a.Impl] = a.Mark()
	})
	writeSliceConditions(t, ns, "echo-a", "echo", echoPort, terminatingEP(b["b1"]), terminatingEP(b["b2"]))
	// Envoy was sent them as HEALTHY: as DRAINING it would route to neither.
	if err := harness.Eventually(ctx, func() bool {
		h := envoyHostHealth(ctx, apps[harness.ImplEnvoy].Envoy(), "")
		return h[b["b1"].Addr.String()] == "healthy" && h[b["b2"].Addr.String()] == "healthy"
	}); err != nil {
		t.Fatalf("Envoy never held both serving-terminating endpoints as healthy: %v", envoyHostHealth(ctx, apps[harness.ImplEnvoy].Envoy(), ""))
	}
	// Two more seconds of RPCs after every client has the change.
	deadline := time.Now().Add(2 * time.Second)
	eachApp(t, "all terminating", apps, func(t *testing.T, a *harness.App) {
		if err := a.Routing(ctx, echo, "b1", "b2"); err != nil {
			t.Fatal(err)
		}
	})
	time.Sleep(time.Until(deadline))
	eachApp(t, "no failures", apps, func(t *testing.T, a *harness.App) {
		n, last := a.Failures(marks[a.Impl], echo)
		record("every endpoint terminating but serving", string(a.Impl), fmt.Sprintf("keeps routing to them; %d failed", n))
		if n != 0 {
			t.Errorf("%d RPCs failed when every endpoint turned terminating-but-serving (last: %s)", n, last)
		}
	})
	envoyAccepted(ctx, t, apps[harness.ImplEnvoy])
	noNacks(ctx, t, h)
}

// TestClientsReopenAfterIdle: a channel that goes idle, and one closed and opened again, in
// processes that share nothing. grpc-js-xds ends its ADS stream when its channels go idle and
// opens a new one whose first requests carry the old stream's version_info: it expects its
// resources to be sent again, and Holdfast must not skip them.
func TestClientsReopenAfterIdle(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	b := startBackends(t, echoPort.target, "b1")
	createService(t, ns, "echo", echoPort)
	writeSliceConditions(t, ns, "echo-a", "echo", echoPort, readyEP(b["b1"]))
	sidecar, args := withEnvoy(t)
	h := startHoldfastOn(t, env.cluster, ns, args...)
	echo := target(ns, "echo", echoPort.port)
	const idle = 1500 * time.Millisecond // grpc-js' and grpc-go's minimum is 1 s
	// Envoy's application idles its channel to Envoy; Envoy's own ADS stream is not the
	// application's to end.
	apps := startApps(t, h.XDSAddr, harness.AppOptions{Targets: []string{echo}, Interval: appPeriod, IdleTimeout: idle, Sidecar: sidecar}, nil)
	eachApp(t, "routing", apps, func(t *testing.T, a *harness.App) {
		if err := a.Routing(ctx, echo, "b1"); err != nil {
			t.Fatal(err)
		}
	})
	streams := func() map[string]int { // open ADS streams per implementation, as Holdfast sees them
		out := map[string]int{}
		for _, c := range clientsOf(ctx, t, h) {
			for _, impl := range harness.Columns {
				if strings.HasPrefix(c, string(impl)+"-Test") { // not grpc-core for grpc-core-1.85's

					out[string(impl)]++
				}
			}
		}
		return out
	}
	before := streams()

	// Idle: no RPC for well over the idle timeout.
	for _, a := range apps {
		if err := a.Command(ctx, "pause"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * idle)
	during := streams()
	for _, a := range apps {
		if err := a.Command(ctx, "resume"); err != nil {
			t.Fatal(err)
		}
	}
	eachApp(t, "after idle", apps, func(t *testing.T, a *harness.App) {
		err := a.Routing(ctx, echo, "b1")
		what := "routes again"
		if err != nil {
			what = "never routes again"
		}
		endedStream := "kept its ADS stream"
		if during[string(a.Impl)] < before[string(a.Impl)] {
			endedStream = "ended its ADS stream while idle"
		}
		record("channel idle, then used again", string(a.Impl), fmt.Sprintf("%s; %s", endedStream, what))
		if err != nil {
			t.Fatalf("after idling: %v", err)
		}
	})

	// Closed and opened again in the same process.
	for _, a := range apps {
		if err := a.Command(ctx, "close"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(idle)
	for _, a := range apps {
		if err := a.Command(ctx, "open"); err != nil {
			t.Fatal(err)
		}
	}
	eachApp(t, "after close and open", apps, func(t *testing.T, a *harness.App) {
		err := a.Routing(ctx, echo, "b1")
		cell := "routes again"
		if err != nil {
			cell = "never routes again"
		}
		record("channel closed, a new one opened in the same process", string(a.Impl), cell)
		if err != nil {
			t.Fatalf("after close and open: %v", err)
		}
	})
	envoyAccepted(ctx, t, apps[harness.ImplEnvoy])
	noNacks(ctx, t, h)
}

// noNacks checks that no client rejected anything Holdfast served during the scenario.
func noNacks(ctx context.Context, t testing.TB, h *harness.Holdfast) {
	t.Helper()
	for _, typ := range []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType} {
		if n, err := h.Metric(ctx, fmt.Sprintf("holdfast_xds_nacks_total{type=%q}", typ)); err == nil && n != 0 {
			t.Errorf("clients rejected %v %s responses", n, typ)
		}
	}
}

// adminOf connects to Holdfast's admin API.
func adminOf(t *testing.T, h *harness.Holdfast) admin.AdminClient {
	t.Helper()
	conn, err := grpc.NewClient(h.AdminAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return admin.NewAdminClient(conn)
}

// clientsOf lists the node IDs of the ADS streams Holdfast has open.
func clientsOf(ctx context.Context, t *testing.T, h *harness.Holdfast) []string {
	t.Helper()
	return nodeIDs(ctx, t, adminOf(t, h))
}

func deleteService(t *testing.T, ns, name string) {
	t.Helper()
	if err := env.cluster.Client.CoreV1().Services(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete service %s/%s: %v", ns, name, err)
	}
}

// TestClientsServiceRecreated: a service deleted and created again. Within the tombstone's
// grace no RPC fails: the deleted service is served as it was, and the new incarnation, which
// has no endpoints until its EndpointSlice arrives, is lent the old ones. Past the grace
// (clients were told it no longer exists) every implementation routes to it again once it is
// back: its resources carry its new UID, so that gRPC C-core and grpc-js-xds, which ignore a
// resource identical to one they were told was deleted, take them.
func TestClientsServiceRecreated(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	b := startBackends(t, echoPort.target, "b1")
	createService(t, ns, "echo", echoPort)
	writeSliceConditions(t, ns, "echo-a", "echo", echoPort, readyEP(b["b1"]))
	const grace = 3 * time.Second
	sidecar, args := withEnvoy(t)
	h := startHoldfastOn(t, env.cluster, ns, append(args, "--tombstone-grace", grace.String())...)
	echo := target(ns, "echo", echoPort.port)
	apps := startApps(t, h.XDSAddr, harness.AppOptions{Targets: []string{echo}, Interval: appPeriod, Sidecar: sidecar}, nil)
	envoy := apps[harness.ImplEnvoy].Envoy()
	marks := map[harness.Impl]int{}
	eachApp(t, "routing", apps, func(t *testing.T, a *harness.App) {
		if err := a.Routing(ctx, echo, "b1"); err != nil {
			t.Fatal(err)
		}
		marks[a.Impl] = a.Mark()
	})
	if t.Failed() {
		return
	}
	recreate := func() string {
		createService(t, ns, "echo", echoPort)
		writeSliceConditions(t, ns, "echo-a", "echo", echoPort, readyEP(b["b1"]))
		svc, err := env.cluster.Client.CoreV1().Services(ns).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return string(svc.UID)
	}
	// servedAs waits until Envoy holds the incarnation uid's cluster, with b1 healthy in it.
	servedAs := func(uid string) error {
		name := translate.Naming{Domain: "cluster.local"}.Upstream(resolver.Key{Namespace: ns, Name: "echo"}, uid, echoPort.port)
		err := harness.Eventually(ctx, func() bool { return envoyHostHealth(ctx, envoy, name)[b["b1"].Addr.String()] == "healthy" })
		if err != nil {
			return fmt.Errorf("Envoy never held %s with b1 healthy: %w\n%s", name, err, envoy.LogTail(20))
		}
		return nil
	}

	// Within the grace: deleted, created again 300 ms later. The Service goes first and its
	// slice after it, the order of Kubernetes' garbage collector (the slice is owned by the
	// Service). The other order is a scale to zero first — served as one, unless the two
	// deletions happen to fall in one debounce — and made this test flaky.
	deleted := time.Now()
	deleteService(t, ns, "echo")
	deleteSlice(t, ns, "echo-a")
	time.Sleep(300 * time.Millisecond)
	uid := recreate()
	if err := servedAs(uid); err != nil {
		t.Fatal(err)
	}
	settled := time.Now().Add(2 * time.Second) // RPCs on the new incarnation's resources too
	eachApp(t, "recreated within the grace", apps, func(t *testing.T, a *harness.App) {
		if err := a.Routing(ctx, echo, "b1"); err != nil {
			t.Fatal(err)
		}
	})
	time.Sleep(time.Until(settled))
	eachApp(t, "no failures within the grace", apps, func(t *testing.T, a *harness.App) {
		n, last := a.Failures(marks[a.Impl], echo)
		total := len(a.Since(marks[a.Impl], echo))
		// grpc-go 1.85 has a race of its own when a route's cluster is renamed: an RPC that
		// took the channel's old config selector just before the swap selects the old cluster
		// after the swap dropped it from the cluster manager's picker ("unknown cluster
		// selected for RPC"; grpc-java fixed the same race in grpc-java#11947). Seen in about
		// one run in six, one RPC; any other failure, or more, fails the test.
		race := 0
		if a.Impl == harness.ImplGo {
			for _, r := range a.Since(marks[a.Impl], echo) {
				if !r.OK && strings.Contains(r.Error, "unknown cluster selected for RPC") {
					race++
				}
			}
		}
		cell := fmt.Sprintf("%d/%d RPCs failed", n, total)
		if race > 0 {
			cell += fmt.Sprintf(" (%d: grpc-go's own config-selector race on a renamed cluster)", race)
		}
		record("service deleted and created again within the tombstone grace (300 ms gap)", string(a.Impl), cell)
		if n-min(race, 1) != 0 {
			t.Errorf("%d of %d RPCs failed across a delete and re-create within the grace (last: %s): %s; deleted at %s",
				n, total, last, a.FailureSummary(marks[a.Impl], echo), deleted.Format("15:04:05.000"))
		}
	})

	// Past the grace: every client is told the service no longer exists.
	deleteService(t, ns, "echo")
	deleteSlice(t, ns, "echo-a")
	eachApp(t, "deleted", apps, func(t *testing.T, a *harness.App) {
		if _, err := a.Failing(ctx, echo); err != nil {
			t.Fatal(err)
		}
	})
	time.Sleep(quietWindow) // every client has had time to act on the deletion (each does within ms)
	uid = recreate()
	eachApp(t, "recreated after the grace", apps, func(t *testing.T, a *harness.App) {
		start := time.Now()
		err := a.Routing(ctx, echo, "b1")
		cell := fmt.Sprintf("routes again after %v", time.Since(start).Round(100*time.Millisecond))
		if err != nil {
			cell = "never routes again"
		}
		record("service deleted past the grace, then created again", string(a.Impl), cell)
		if err != nil {
			t.Fatal(err)
		}
	})
	if err := servedAs(uid); err != nil {
		t.Fatal(err)
	}
	envoyAccepted(ctx, t, apps[harness.ImplEnvoy])
	noNacks(ctx, t, h)
}

// TestClientsUnknownName: a client dialling a name Holdfast does not serve. Holdfast answers at
// once (an empty LDS response: the listener does not exist) and shows DOES_NOT_EXIST; what
// each implementation does then is its own — recorded, and bounded by its does-not-exist timer.
func TestClientsUnknownName(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	b := startBackends(t, echoPort.target, "b1")
	createService(t, ns, "echo", echoPort)
	writeSliceConditions(t, ns, "echo-a", "echo", echoPort, readyEP(b["b1"]))
	sidecar, args := withEnvoy(t)
	h := startHoldfastOn(t, env.cluster, ns, args...)
	missing := target(ns, "nothere", echoPort.port)
	start := time.Now()
	apps := startApps(t, h.XDSAddr, harness.AppOptions{Targets: []string{missing}, Interval: 100 * time.Millisecond, Sidecar: sidecar}, nil)
	adm := adminOf(t, h)
	eachApp(t, "holdfast says it does not exist", apps, func(t *testing.T, a *harness.App) {
		if a.Impl == harness.ImplEnvoy {
			return // Envoy asks for every listener (wildcard), never for the name: its route has no such host
		}
		node := fmt.Sprintf("%s-%s", a.Impl, t.Name()[:strings.Index(t.Name(), "/")])
		err := harness.Eventually(ctx, func() bool {
			d, err := adm.GetClient(ctx, &admin.GetClientRequest{NodeId: node})
			if err != nil {
				return false
			}
			for _, ts := range d.GetSummary().GetTypes() {
				for _, r := range ts.GetResources() {
					if ts.GetType() == resourcev3.ListenerType && r.GetName() == missing && r.GetStatus() == "DOES_NOT_EXIST" {
						return true
					}
				}
			}
			return false
		})
		if err != nil {
			t.Fatalf("Holdfast never showed %s as DOES_NOT_EXIST for %s", missing, node)
		}
	})
	// What each client concludes, and when: its RPCs stop waiting for resolution (deadline
	// exceeded) and fail at once with the reason. The bound is the client's 15 s does-not-exist
	// timer plus slack, from its first RPC (when it subscribed: the applications start one
	// after another, so each has its own start).
	const timer, slack = 15 * time.Second, 10 * time.Second
	const rpcTimeout = time.Second // harness.AppOptions' default: the first result's lag
	eachApp(t, "client concludes", apps, func(t *testing.T, a *harness.App) {
		var concluded harness.Result
		from := start
		if rs := a.Since(0, missing); len(rs) > 0 && rs[0].At.Add(-rpcTimeout).After(start) {
			from = rs[0].At.Add(-rpcTimeout)
		}
		cctx, cancel := context.WithTimeout(ctx, time.Until(from.Add(timer+slack)))
		defer cancel()
		err := harness.Eventually(cctx, func() bool {
			for _, r := range a.Since(0, missing) {
				if r.OK {
					return false
				}
				if r.Code != 4 && r.Code != harness.CodeStuck { // not DEADLINE_EXCEEDED: the client has an answer
					concluded = r
					return true
				}
			}
			return false
		})
		rs := a.Since(0, missing)
		if slices.ContainsFunc(rs, func(r harness.Result) bool { return r.OK }) {
			t.Fatalf("an RPC to a name nobody serves succeeded")
		}
		if err != nil {
			last := ""
			if len(rs) > 0 {
				last = rs[len(rs)-1].Error
			}
			record("a name Holdfast does not serve", string(a.Impl), fmt.Sprintf("no conclusion within %v: RPCs keep failing with %q", timer+slack, last))
			// grpc-js keeps waiting for resolution; C-core 1.85 did so in some runs and concluded
			// in others: recorded, as the issue asks, not failed.
			if a.Impl == harness.ImplNode || a.Impl == harness.ImplCoreNew {
				return
			}
			t.Fatalf("no conclusion within its timer plus slack; last error %q", last)
		}
		record("a name Holdfast does not serve", string(a.Impl), fmt.Sprintf("fails at once after %v: code %d %q",
			concluded.At.Sub(from).Round(100*time.Millisecond), concluded.Code, clip(strings.ReplaceAll(concluded.Error, ns, "NS"), 80)))
	})
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// TestClientsSecureBootstrap: each implementation over its documented secure path to a
// Holdfast that requires client certificates. grpc-go and C-core 1.85 speak mTLS themselves
// ("tls" channel credentials, gRFC A65, written by `holdfast bootstrap --client grpc-go
// --ca-file ...`), and Envoy from its bootstrap's TLS transport socket. gRPC for Node and
// gRPC C-core 1.51 have no TLS channel credentials for their xDS server, and grpc-java 1.85's
// ignore their files (system roots, no client certificate): they reach Holdfast through
// holdfast-agent on a Unix socket, the agent speaking mTLS upstream (`holdfast bootstrap
// --client grpc-java|grpc-node|grpc-core --server unix:///...`, and `--ca-file` refused for
// them). Plaintext straight to Holdfast is refused for every one.
func TestClientsSecureBootstrap(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	f := newTLSFiles(t)
	b := startBackends(t, echoPort.target, "b1")
	createService(t, ns, "echo", echoPort)
	writeSliceConditions(t, ns, "echo-a", "echo", echoPort, readyEP(b["b1"]))
	sidecar, args := withEnvoy(t)
	h := startHoldfastOn(t, env.cluster, ns, append(args, "--tls-cert", f.cert, "--tls-key", f.key, "--client-ca", f.caFile)...)
	echo := target(ns, "echo", echoPort.port)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	agent := startAgent(t, h.XDSAddr, "--listen", "unix://"+sock, "--node-id", "node-agent-"+t.Name(), "--kinds", "grpc",
		"--upstream-ca", f.caFile, "--upstream-cert", f.clientCert, "--upstream-key", f.clientK)
	if _, err := agent.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	bootstrap := func(args ...string) []byte {
		t.Helper()
		out, err := exec.CommandContext(ctx, env.bins.Holdfast, append([]string{"bootstrap"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("holdfast bootstrap %v: %v\n%s", args, err, out)
		}
		return out
	}
	secure := map[harness.Impl][]byte{
		harness.ImplGo: bootstrap("--client", "grpc-go", "--node-id", "secure-grpc-go", "--server", h.XDSAddr,
			"--ca-file", f.caFile, "--cert-file", f.clientCert, "--key-file", f.clientK),
		harness.ImplNode: bootstrap("--client", "grpc-node", "--node-id", "secure-grpc-node", "--server", "unix://"+sock),
		harness.ImplCore: bootstrap("--client", "grpc-core", "--node-id", "secure-grpc-core", "--server", "unix://"+sock),
		// Today's C-core has gRFC A65's tls channel credentials: the grpc-go bootstrap works.
		harness.ImplCoreNew: bootstrap("--client", "grpc-go", "--node-id", "secure-grpc-core-new", "--server", h.XDSAddr,
			"--ca-file", f.caFile, "--cert-file", f.clientCert, "--key-file", f.clientK),
		// grpc-java 1.85 ignores the files of its "tls" channel credentials: the agent.
		harness.ImplJava: bootstrap("--client", "grpc-java", "--node-id", "secure-grpc-java", "--server", "unix://"+sock),
		// Envoy: a TLS transport socket on its xDS cluster, Holdfast's name checked against
		// the address it dials.
		harness.ImplEnvoy: bootstrap("--envoy", "--delta", "--node-id", "secure-envoy", "--server", h.XDSAddr,
			"--ca-file", f.caFile, "--cert-file", f.clientCert, "--key-file", f.clientK),
	}
	// The bootstrap command refuses TLS for the clients that cannot speak it, and says what to do.
	for _, client := range []string{"grpc-java", "grpc-node", "grpc-core"} {
		out, err := exec.CommandContext(ctx, env.bins.Holdfast, "bootstrap", "--client", client, "--node-id", "x", "--server", h.XDSAddr, "--ca-file", f.caFile).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "holdfast-agent") {
			t.Errorf("bootstrap --client %s --ca-file: %v %s; want a refusal pointing at holdfast-agent", client, err, out)
		}
	}
	apps := startApps(t, "", harness.AppOptions{Targets: []string{echo}, Interval: appPeriod, Sidecar: sidecar}, func(impl harness.Impl) []byte { return secure[impl] })
	// The plaintext Envoy is a second sidecar, on an address of its own: Holdfast binds the
	// listeners it serves to the first one's, so its application could not tell; what says
	// that it was refused is its own control_plane.connected_state.
	plain := startApps(t, h.XDSAddr, harness.AppOptions{Targets: []string{echo}, Interval: appPeriod, Sidecar: newSidecar(t)}, nil)
	path := map[harness.Impl]string{harness.ImplGo: "mTLS to Holdfast (tls channel creds)", harness.ImplNode: "holdfast-agent on a Unix socket, mTLS upstream",
		harness.ImplJava: "holdfast-agent on a Unix socket, mTLS upstream (its tls channel creds ignore their files)",
		harness.ImplCore: "holdfast-agent on a Unix socket, mTLS upstream", harness.ImplCoreNew: "mTLS to Holdfast (tls channel creds)",
		harness.ImplEnvoy: "mTLS to Holdfast (TLS transport socket in its bootstrap)"}
	eachApp(t, "secure path", apps, func(t *testing.T, a *harness.App) {
		err := a.Routing(ctx, echo, "b1")
		cell := path[a.Impl] + ": routes"
		if err != nil {
			cell = path[a.Impl] + ": does not route"
		}
		record("secure path to Holdfast with mTLS required", string(a.Impl), cell)
		if err != nil {
			t.Fatal(err)
		}
	})
	// Plaintext straight to Holdfast: refused. By now every plain application has tried for as
	// long as the secure ones took to route, and twice quietWindow more: a plaintext stream
	// Holdfast accepted would route within milliseconds.
	time.Sleep(2 * quietWindow)
	eachApp(t, "plaintext refused", plain, func(t *testing.T, a *harness.App) {
		rs := a.Since(0, echo)
		if slices.ContainsFunc(rs, func(r harness.Result) bool { return r.OK }) {
			t.Fatalf("an RPC succeeded over a plaintext bootstrap to a Holdfast requiring mTLS")
		}
		if len(rs) == 0 {
			t.Fatal("the plaintext application made no RPC")
		}
		if a.Impl == harness.ImplEnvoy {
			if v, err := a.Envoy().Stat(ctx, "control_plane.connected_state"); err != nil || v != 0 {
				t.Errorf("the plaintext Envoy's control_plane.connected_state = %v (%v), want 0", v, err)
			}
		}
	})
	// The ADS streams of gRPC clients: grpc-go's and C-core 1.85's own (SotW) and the agent's;
	// none plaintext.
	if n, err := h.Metric(ctx, `holdfast_xds_connected_clients{flavour="sotw",kind="grpc"}`); err != nil || n != 2 {
		t.Errorf("SotW gRPC streams: %v (%v), want 2: grpc-go's and C-core 1.85's own", n, err)
	}
	if n, err := h.Metric(ctx, `holdfast_xds_connected_clients{flavour="delta",kind="grpc"}`); err != nil || n != 1 {
		t.Errorf("Delta gRPC streams: %v (%v), want 1: the agent's", n, err)
	}
	if n, err := h.Metric(ctx, `holdfast_xds_connected_clients{flavour="delta",kind="envoy"}`); err != nil || n != 1 {
		t.Errorf("Delta Envoy streams: %v (%v), want 1: the secure Envoy's", n, err)
	}
	envoyAccepted(ctx, t, apps[harness.ImplEnvoy])
	noNacks(ctx, t, h)
}

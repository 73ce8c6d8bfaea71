package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/e2e/internal/testproc"
	"github.com/holdfast/holdfast/xds/admin"
	"github.com/holdfast/holdfast/xds/bootstrap"
)

// TestXDSFallback (gRFC A71): every implementation is given `holdfast bootstrap
// --fallback-server`'s bootstrap: a primary Holdfast that is not running yet, then a fallback
// Holdfast that is. grpc-go, grpc-java and C-core 1.85 fall back at once, route through the
// fallback, and return to the primary when it starts, closing their streams to the fallback,
// without a failed RPC once they routed. gRPC for Node 1.14 and C-core 1.51 predate A71: they accept the bootstrap, use its
// first server only (no stream to the fallback, no RPC through it), and route once the primary
// runs. docs/clients.md records each.
func TestXDSFallback(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	b := startBackends(t, echoPort.target, "b1")
	createService(t, ns, "echo", echoPort)
	writeSliceConditions(t, ns, "echo-a", "echo", echoPort, readyEP(b["b1"]))
	fallback := startHoldfast(t, ns)
	ports, err := testproc.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	primaryAddr := "127.0.0.1:" + strconv.Itoa(ports[0]) // nothing listens there yet
	echo := target(ns, "echo", echoPort.port)
	nodeID := func(impl harness.Impl) string { return fmt.Sprintf("%s-%s", impl, t.Name()) }
	started := time.Now()
	apps := startApps(t, primaryAddr, harness.AppOptions{Targets: []string{echo}, Interval: appPeriod}, func(impl harness.Impl) []byte {
		out, err := bootstrap.GRPC(bootstrap.Options{NodeID: nodeID(impl), Server: primaryAddr, Fallbacks: []string{fallback.XDSAddr}})
		if err != nil {
			t.Fatal(err)
		}
		return out
	})

	// gRFC A71: grpc-go 1.70+, grpc-java 1.71+ and C-core 1.67+ implement it; gRPC for Node
	// 1.14 and C-core 1.51 do not.
	withA71 := []harness.Impl{harness.ImplGo, harness.ImplJava, harness.ImplCoreNew}
	without := []harness.Impl{harness.ImplNode, harness.ImplCore}
	routedAt := map[harness.Impl]int{}
	for _, impl := range withA71 {
		if err := apps[impl].Routing(ctx, echo, "b1"); err != nil {
			t.Fatalf("%s does not route through the fallback while the primary is down: %v", impl, err)
		}
		routedAt[impl] = apps[impl].Mark()
		t.Logf("%s routes through the fallback %v after the apps started", impl, time.Since(started).Round(10*time.Millisecond))
	}
	onFallback := clientsOf(ctx, t, fallback)
	for _, impl := range withA71 {
		if !slices.Contains(onFallback, nodeID(impl)) {
			t.Errorf("%s routes but has no stream on the fallback: %v", impl, onFallback)
		}
	}
	for _, impl := range without {
		if slices.Contains(onFallback, nodeID(impl)) {
			t.Errorf("%s opened a stream to the fallback server: it predates A71 and should use the first server only", impl)
		}
		if ok := okCount(apps[impl], echo); ok != 0 {
			t.Errorf("%s had %d successful RPCs with only the fallback up: it used the fallback", impl, ok)
		}
	}

	primary := startHoldfastAt(t, ns, primaryAddr)
	primaryUp := time.Now()
	primaryAdmin, fallbackAdmin := adminOf(t, primary), adminOf(t, fallback)
	for _, impl := range withA71 {
		err := harness.Eventually(ctx, func() bool {
			return slices.Contains(nodeIDs(ctx, t, primaryAdmin), nodeID(impl)) &&
				!slices.Contains(nodeIDs(ctx, t, fallbackAdmin), nodeID(impl))
		})
		t.Logf("%s back on the primary, its fallback stream closed, %v after the primary was ready", impl, time.Since(primaryUp).Round(10*time.Millisecond))
		if err != nil {
			t.Errorf("%s did not return to the primary (streams on the primary %v, on the fallback %v): %v",
				impl, nodeIDs(ctx, t, primaryAdmin), nodeIDs(ctx, t, fallbackAdmin), err)
		}
	}
	eachApp(t, "primary back", apps, func(t *testing.T, a *harness.App) {
		if err := a.Routing(ctx, echo, "b1"); err != nil {
			t.Fatal(err)
		}
	})
	for _, impl := range withA71 {
		a := apps[impl]
		if n, last := a.Failures(routedAt[impl], echo); n > 0 {
			t.Errorf("%s: %d RPCs failed between routing through the fallback and returning to the primary; last: %s", impl, n, last)
		}
		t.Logf("%s: %d RPCs from routing through the fallback to back on the primary, none failed", impl, len(a.Since(routedAt[impl], echo)))
	}
	if t.Failed() {
		return
	}
	const scenario = "fallback server (A71): primary down at start, then back"
	for _, impl := range withA71 {
		record(scenario, string(impl), "falls back at once, returns when the primary answers; 0 failed")
	}
	for _, impl := range without {
		record(scenario, string(impl), "first server only: waits for the primary")
	}
	record(scenario, envoyColumn, "no server list in its bootstrap (refused): holdfast-agent beside it")
}

// okCount counts a's successful RPCs of target so far.
func okCount(a *harness.App, target string) int {
	n := 0
	for _, r := range a.Since(0, target) {
		if r.OK {
			n++
		}
	}
	return n
}

// nodeIDs lists the node IDs of the ADS streams open on the Holdfast behind c.
func nodeIDs(ctx context.Context, t *testing.T, c admin.AdminClient) []string {
	t.Helper()
	r, err := c.ListClients(ctx, &admin.ListClientsRequest{})
	if err != nil {
		t.Fatalf("list clients: %v", err)
	}
	var ids []string
	for _, cl := range r.GetClients() {
		ids = append(ids, cl.GetNodeId())
	}
	return ids
}

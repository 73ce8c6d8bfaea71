package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast/holdfast/e2e/adsclient"
	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/e2e/kube"
	"github.com/holdfast/holdfast/xds/admin"
	"github.com/holdfast/holdfast/xds/bootstrap"
	"github.com/holdfast/holdfast/xds/resource"
)

// The multi-cluster tests' cluster set: cluster a is the package's API server, in region us;
// cluster b a second API server, in region eu. Holdfast runs in a (--cluster-id a).
var mcPlaces = map[string]struct{ zone, region string }{"a": {"us-1", "us"}, "b": {"eu-1", "eu"}}

// clusterB is the second API server the multi-cluster tests that do not break it share; a
// test that breaks it starts its own (ownCluster).
var clusterB struct {
	once sync.Once
	k    *kube.Cluster
	err  error
}

func sharedClusterB(t *testing.T) *kube.Cluster {
	t.Helper()
	clusterB.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		dir := filepath.Join(env.dir, "cluster-b")
		if clusterB.err = os.MkdirAll(dir, 0o700); clusterB.err == nil {
			clusterB.k, clusterB.err = kube.Start(ctx, dir)
		}
	})
	if clusterB.err != nil {
		t.Fatal(clusterB.err)
	}
	return clusterB.k
}

// closeClusterB stops the shared second API server, if a test started it.
func closeClusterB() {
	if clusterB.k != nil {
		clusterB.k.Close()
	}
}

// mcsInstalled remembers the API servers the ServiceExport CRD is installed in, by kubeconfig.
var mcsInstalled sync.Map

// installMCS installs deploy/mcs's ServiceExport CRD in k, once, and waits until it is served.
func installMCS(ctx context.Context, t *testing.T, k *kube.Cluster) {
	t.Helper()
	if _, done := mcsInstalled.Load(k.Kubeconfig); done {
		return
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	kubectlOn(ctx, t, k, nil, "apply", "--server-side", "--field-manager", "holdfast-e2e", "-f", filepath.Join(root, "deploy", "mcs", "serviceexport-crd.yaml"))
	kubectlOn(ctx, t, k, nil, "wait", "--for=condition=Established", "--timeout=60s", "crd/serviceexports.multicluster.x-k8s.io")
	mcsInstalled.Store(k.Kubeconfig, true)
}

// readerKubeconfig applies deploy/mcs/remote-reader.yaml in k and writes a kubeconfig for its
// account: what an operator hands Holdfast for another cluster.
func readerKubeconfig(ctx context.Context, t *testing.T, k *kube.Cluster) string {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	kubectlOn(ctx, t, k, nil, "apply", "--server-side", "--field-manager", "holdfast-e2e", "-f", filepath.Join(root, "deploy", "mcs", "remote-reader.yaml"))
	tr, err := k.Client.CoreV1().ServiceAccounts("holdfast-system").CreateToken(ctx, "holdfast-reader",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "reader.kubeconfig")
	if err := k.WriteKubeconfigWithToken(path, tr.Status.Token); err != nil {
		t.Fatal(err)
	}
	return path
}

// export creates a ServiceExport for ns/name in k (the MCS API's way to export a Service).
func export(ctx context.Context, t *testing.T, k *kube.Cluster, ns, name string) {
	t.Helper()
	manifest := fmt.Sprintf("apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata:\n  namespace: %s\n  name: %s\n", ns, name)
	kubectlOn(ctx, t, k, []byte(manifest), "apply", "-f", "-")
}

// mcScene is one namespace, of the same name in both clusters (the MCS API's namespace
// sameness), holding in each cluster: a Node in the cluster's zone and region; service echo
// with two backends of its own, exported; service local with one backend, not exported.
type mcScene struct {
	ns       string
	clusters map[string]*kube.Cluster
	backends map[string]*harness.Backend // a1, a2, b1, b2 (echo), la, lb (local)
	echo     string                      // echo's cluster-set name, as clients dial it
	local    string                      // local's cluster-local name
	shared   bool                        // cluster b is shared with other tests
}

// echoPorts names echo's port in each cluster: alike unless a test makes them conflict. A
// cluster b of the test's own is thrown away after it: nothing is cleaned up there (a test
// that breaks it would wait for its API server's timeouts).
func newMCScene(t *testing.T, b *kube.Cluster, echoPorts map[string]servicePort) *mcScene {
	t.Helper()
	ctx := testContext(t)
	sc := &mcScene{ns: newNamespace(t), clusters: map[string]*kube.Cluster{"a": env.cluster, "b": b}}
	sc.shared = b == clusterB.k
	sameNamespace(t, b, sc.ns, sc.shared)
	sc.backends = startBackends(t, echoPort.target, "a1", "a2", "b1", "b2", "la", "lb")
	for _, id := range []string{"a", "b"} {
		k := sc.clusters[id]
		installMCS(ctx, t, k)
		node := sc.ns + "-" + id
		createNodeOn(t, k, node, mcPlaces[id].zone, mcPlaces[id].region, id == "a" || sc.shared)
		port := echoPorts[id]
		createServiceOn(t, k, sc.ns, "echo", port)
		export(ctx, t, k, sc.ns, "echo")
		sc.slice(t, id, "echo", port, true, id+"1", id+"2")
		createServiceOn(t, k, sc.ns, "local", echoPort)
		sc.slice(t, id, "local", echoPort, true, "l"+id)
	}
	sc.echo = fmt.Sprintf("echo.%s.svc.clusterset.local:%d", sc.ns, echoPort.port)
	sc.local = target(sc.ns, "local", echoPort.port)
	return sc
}

// sameNamespace creates namespace ns in k too, and, if cleanup, deletes what the test made
// there after it.
func sameNamespace(t *testing.T, k *kube.Cluster, ns string, cleanup bool) {
	t.Helper()
	ctx := context.Background()
	if _, err := k.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s in the second cluster: %v", ns, err)
	}
	if !cleanup {
		return
	}
	t.Cleanup(func() { deleteNamespace(k, ns) })
}

func createNodeOn(t *testing.T, k *kube.Cluster, name, zone, region string, cleanup bool) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		corev1.LabelTopologyZone: zone, corev1.LabelTopologyRegion: region}}}
	if _, err := k.Client.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	if !cleanup {
		return
	}
	t.Cleanup(func() { _ = k.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// slice writes service svc's EndpointSlice in cluster id: the given backends, on the cluster's
// Node, ready or not.
func (sc *mcScene) slice(t *testing.T, id, svc string, port servicePort, ready bool, backends ...string) {
	t.Helper()
	k := sc.clusters[id]
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: sc.ns, Name: svc + "-" + id, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr(port.name), Port: ptr(port.target), Protocol: ptr(corev1.ProtocolTCP)}},
		Endpoints:   []discoveryv1.Endpoint{},
	}
	for _, b := range backends {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{sc.backends[b].Addr.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(ready), Serving: ptr(ready)},
			NodeName:   ptr(sc.ns + "-" + id),
		})
	}
	putSlice(t, k, s)
}

// addrs maps backend IDs to their addresses.
func (sc *mcScene) addrs(ids ...string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = sc.backends[id].Addr.String()
	}
	return out
}

// sidecar is an Envoy-like client in cluster id's zone and region: it subscribes to
// everything, validates every resource, and shows the assignment each client there gets.
func (sc *mcScene) sidecar(t *testing.T, h *harness.Holdfast, id string) *adsclient.Client {
	t.Helper()
	c, err := adsclient.Dial(h.XDSAddr, adsclient.Options{NodeID: "sidecar-" + id, Delta: true,
		Zone: mcPlaces[id].zone, Region: mcPlaces[id].region, Metadata: map[string]any{resource.ClusterMetadataKey: id}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// priorities is the priority of every address in the assignment of the service port whose
// listener is name, as c holds it; nil when c holds none.
func priorities(s adsclient.State, name string) map[string]uint32 {
	r, ok := s.Upstream(resourcev3.EndpointType, name)
	if !ok {
		return nil
	}
	cla, ok := r.Message.(*endpointv3.ClusterLoadAssignment)
	if !ok {
		return nil
	}
	out := map[string]uint32{}
	for _, le := range cla.GetEndpoints() {
		for _, e := range le.GetLbEndpoints() {
			out[e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] = le.GetPriority()
		}
	}
	return out
}

// waitPriorities waits until c holds exactly want for name.
func waitPriorities(ctx context.Context, t *testing.T, c *adsclient.Client, name string, want map[string]uint32) {
	t.Helper()
	if err := c.WaitFor(ctx, func(s adsclient.State) bool { return maps.Equal(priorities(s, name), want) }); err != nil {
		t.Fatalf("%s: priorities %v, want %v: %v", name, priorities(c.State(), name), want, err)
	}
}

// at gives every address of ids the priority p.
func at(p uint32, addrs ...string) map[string]uint32 {
	out := map[string]uint32{}
	for _, a := range addrs {
		out[a] = p
	}
	return out
}

func join(ms ...map[string]uint32) map[string]uint32 {
	out := map[string]uint32{}
	for _, m := range ms {
		maps.Copy(out, m)
	}
	return out
}

// mcClient is a grpc-go client in cluster id dialing target.
func (sc *mcScene) mcClient(t *testing.T, h *harness.Holdfast, id, target string) *harness.GRPCClient {
	t.Helper()
	c, err := harness.DialXDSWith(bootstrap.Options{NodeID: "app-" + id, Server: h.XDSAddr, Zone: mcPlaces[id].zone, Region: mcPlaces[id].region, ClusterID: id}, target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestMultiClusterMergesExportedServices: echo is exported by both clusters, local by neither.
// Clients in each cluster get both clusters' echo endpoints under its cluster-set name, their
// own cluster's first (grpc-go routes to its own cluster only), and the home cluster's local
// under its cluster-local name only. The clusters name echo's port differently: the oldest
// export's name applies, and the conflict is reported.
func TestMultiClusterMergesExportedServices(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	sc := newMCScene(t, sharedClusterB(t), map[string]servicePort{"a": echoPort, "b": {"rpc", echoPort.port, echoPort.target}})
	// Cluster b is read as deploy/mcs/remote-reader.yaml's account, and nothing more.
	h := startHoldfastOn(t, env.cluster, sc.ns, "--cluster-id", "a", "--remote-cluster", "b="+readerKubeconfig(ctx, t, sc.clusters["b"]))
	t.Cleanup(func() {
		if log := h.LogTail(300); strings.Contains(log, "forbidden") {
			t.Errorf("Holdfast was refused something in cluster b as holdfast-reader:\n%s", log)
		}
	})

	a1, a2, b1, b2 := sc.backends["a1"].Addr.String(), sc.backends["a2"].Addr.String(), sc.backends["b1"].Addr.String(), sc.backends["b2"].Addr.String()
	inA, inB := sc.sidecar(t, h, "a"), sc.sidecar(t, h, "b")
	waitPriorities(ctx, t, inA, sc.echo, join(at(0, a1, a2), at(1, b1, b2)))
	waitPriorities(ctx, t, inB, sc.echo, join(at(0, b1, b2), at(1, a1, a2)))
	waitPriorities(ctx, t, inA, sc.local, at(0, sc.addrs("la")...))
	for _, c := range []*adsclient.Client{inA, inB} {
		if p := priorities(c.State(), fmt.Sprintf("local.%s.svc.clusterset.local:%d", sc.ns, echoPort.port)); p != nil {
			t.Errorf("local, exported by no cluster, is served as a cluster-set service: %v", p)
		}
		if st := c.Stats(); len(st.Invalid) > 0 || len(st.NACKs) > 0 {
			t.Errorf("the Envoy-like client found invalid resources %v, NACKs %v", st.Invalid, st.NACKs)
		}
	}

	for id, want := range map[string][]string{"a": {"a1", "a2"}, "b": {"b1", "b2"}} {
		if err := sc.mcClient(t, h, id, sc.echo).WaitForBackends(ctx, want...); err != nil {
			t.Errorf("grpc-go in cluster %s, dialing %s: %v", id, sc.echo, err)
		}
	}
	if err := sc.mcClient(t, h, "a", sc.local).WaitForBackends(ctx, "la"); err != nil {
		t.Errorf("grpc-go dialing the cluster-local %s: %v", sc.local, err)
	}
	// holdfastctl why, for a client in cluster a and the cluster-set service.
	why, err := adminOf(t, h).Why(ctx, &admin.WhyRequest{NodeId: "app-a", Service: sc.ns + "/echo@clusterset.local"})
	if err != nil {
		t.Fatal(err)
	}
	var said []string
	for _, r := range why.GetReasons() {
		said = append(said, r.GetDetail())
	}
	if !why.GetService().GetClusterSet() || !slices.ContainsFunc(said, func(s string) bool { return strings.Contains(s, `the client is in cluster "a"`) }) {
		t.Errorf("holdfastctl why app-a %s/echo@clusterset.local says %q", sc.ns, said)
	}

	adm := adminOf(t, h)
	svc, err := adm.GetService(ctx, &admin.GetServiceRequest{Name: sc.ns + "/echo@clusterset.local"})
	if err != nil {
		t.Fatal(err)
	}
	clusters := map[string]int{}
	for _, p := range svc.GetPorts() {
		if p.GetName() != echoPort.name {
			t.Errorf("port %d is named %q; the oldest export (cluster a's) names it %q", p.GetPort(), p.GetName(), echoPort.name)
		}
		for _, z := range p.GetZones() {
			for _, e := range z.GetEndpoints() {
				clusters[e.GetCluster()]++
			}
		}
	}
	if !svc.GetSummary().GetClusterSet() || clusters["a"] != 2 || clusters["b"] != 2 {
		t.Errorf("holdfastctl service %s/echo@clusterset.local: cluster set %v, endpoints by cluster %v", sc.ns, svc.GetSummary().GetClusterSet(), clusters)
	}
	if r := svc.GetSummary().GetReason(); !strings.Contains(r, `cluster b calls it "rpc"`) {
		t.Errorf("the port conflict is not reported: reason %q", r)
	}
	if n, err := h.Metric(ctx, "holdfast_clusterset_conflicts"); err != nil || n != 1 {
		t.Errorf("holdfast_clusterset_conflicts = %v (%v), want 1", n, err)
	}
	if !sourceLive(ctx, t, adm, "b/"+sc.ns) {
		t.Errorf("cluster b's source is not listed live: %v", sourceNames(ctx, t, adm))
	}
}

// sourceNames lists holdfastctl sources' name=state pairs.
func sourceNames(ctx context.Context, t *testing.T, adm admin.AdminClient) []string {
	t.Helper()
	r, err := adm.ListSources(ctx, &admin.ListSourcesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range r.GetSources() {
		out = append(out, s.GetName()+"="+s.GetState())
	}
	return out
}

func sourceLive(ctx context.Context, t *testing.T, adm admin.AdminClient, name string) bool {
	t.Helper()
	return slices.Contains(sourceNames(ctx, t, adm), name+"=live")
}

// TestMultiClusterFailover (seed 001): every gRPC implementation in cluster a routes to a's
// echo backends only; when they are all down, to cluster b's, with few failed RPCs; and back
// to a's when they return, without a failed RPC.
func TestMultiClusterFailover(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	sc := newMCScene(t, sharedClusterB(t), map[string]servicePort{"a": echoPort, "b": echoPort})
	sidecar, args := withEnvoy(t)
	h := startHoldfastOn(t, env.cluster, sc.ns, append(args, "--cluster-id", "a", "--remote-cluster", "b="+sc.clusters["b"].Kubeconfig)...)
	apps := startApps(t, h.XDSAddr, harness.AppOptions{Targets: []string{sc.echo}, Interval: appPeriod, Sidecar: sidecar}, func(impl harness.Impl) []byte {
		node := fmt.Sprintf("%s-%s", impl, t.Name())
		if impl == harness.ImplEnvoy {
			out, err := exec.CommandContext(ctx, env.bins.Holdfast, "bootstrap", "--envoy", "--delta", "--node-id", node, "--server", h.XDSAddr,
				"--zone", mcPlaces["a"].zone, "--region", mcPlaces["a"].region, "--cluster-id", "a").Output()
			if err != nil {
				t.Fatalf("holdfast bootstrap --envoy: %v", err)
			}
			return out
		}
		out, err := bootstrap.GRPC(bootstrap.Options{NodeID: node, Server: h.XDSAddr,
			Zone: mcPlaces["a"].zone, Region: mcPlaces["a"].region, ClusterID: "a"})
		if err != nil {
			t.Fatal(err)
		}
		return out
	})
	eachApp(t, "own cluster", apps, func(t *testing.T, a *harness.App) {
		if err := a.Routing(ctx, sc.echo, "a1", "a2"); err != nil {
			t.Fatal(err)
		}
	})
	if t.Failed() {
		return
	}

	// Cluster a's echo pods die, and its EndpointSlice says so soon after (as the endpoint
	// controller would).
	marks := map[harness.Impl]int{}
	for impl, a := range apps {
		marks[impl] = a.Mark()
	}
	addrA1, addrA2 := sc.backends["a1"].Addr, sc.backends["a2"].Addr
	sc.backends["a1"].Kill()
	sc.backends["a2"].Kill()
	sc.slice(t, "a", "echo", echoPort, false, "a1", "a2")
	moved := map[harness.Impl]string{}
	eachApp(t, "cluster a down", apps, func(t *testing.T, a *harness.App) {
		if err := a.Routing(ctx, sc.echo, "b1", "b2"); err != nil {
			t.Fatal(err)
		}
		n, last := a.Failures(marks[a.Impl], sc.echo)
		moved[a.Impl] = fmt.Sprintf("%d/%d", n, len(a.Since(marks[a.Impl], sc.echo)))
		t.Logf("%s: %s RPCs failed moving to cluster b", a.Impl, moved[a.Impl])
		// At one RPC every 25 ms, 2 s of failures: far more than a failover over priorities
		// takes, far less than waiting for anything to time out.
		if n > 80 {
			t.Errorf("%s: %d RPCs failed moving to cluster b; last: %s", a.Impl, n, last)
		}
	})

	// They come back, on the same addresses.
	for _, id := range []string{"a1", "a2"} {
		addr := addrA1
		if id == "a2" {
			addr = addrA2
		}
		b, err := harness.StartBackendAt(ctx, env.net, env.bins.Backend, id, addr, echoPort.target)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Kill)
		sc.backends[id] = b
	}
	for impl, a := range apps {
		marks[impl] = a.Mark()
	}
	sc.slice(t, "a", "echo", echoPort, true, "a1", "a2")
	eachApp(t, "cluster a back", apps, func(t *testing.T, a *harness.App) {
		if err := a.Routing(ctx, sc.echo, "a1", "a2"); err != nil {
			t.Fatal(err)
		}
		if n, last := a.Failures(marks[a.Impl], sc.echo); n > 0 {
			t.Errorf("%s: %d RPCs failed returning to cluster a; last: %s", a.Impl, n, last)
		}
	})
	if !t.Failed() {
		const scenario = "cluster set: own cluster's endpoints all down, then back"
		for impl := range apps {
			record(scenario, string(impl), "moves to the other cluster (priority 1): "+moved[impl]+" RPCs failed; back with 0 failed")
		}
		envoyAccepted(ctx, t, apps[harness.ImplEnvoy])
	}
}

// TestMultiClusterSourceFails: cluster b's API server stopped, then its etcd killed: what a
// serves is unaffected and b's endpoints are kept, shown stale; b removed from the clusters
// directory: its endpoints' withdrawal is held by the guard until an operator releases it.
func TestMultiClusterSourceFails(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := ownCluster(t)
	sc := newMCScene(t, b, map[string]servicePort{"a": echoPort, "b": echoPort})
	dir := t.TempDir()
	kubeconfig, err := os.ReadFile(b.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "b.yaml"), kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	// The guard at this test's scale: 7 usable endpoints, cluster b's echo pair is 2 of them.
	args := []string{"--cluster-id", "a", "--clusters-dir", dir, "--clusters-rescan", "200ms", "--state-dir", t.TempDir(),
		"--probe-interval", "1s", "--probe-timeout", "500ms",
		"--guard-min-fleet-endpoints", "2", "--guard-min-withdrawn-endpoints", "1", "--guard-max-withdraw-fraction", "0.2"}
	h := startHoldfastOn(t, env.cluster, sc.ns, args...)
	adm := adminOf(t, h)
	a1, a2, b1, b2 := sc.backends["a1"].Addr.String(), sc.backends["a2"].Addr.String(), sc.backends["b1"].Addr.String(), sc.backends["b2"].Addr.String()
	inA := sc.sidecar(t, h, "a")
	both := join(at(0, a1, a2), at(1, b1, b2))
	waitPriorities(ctx, t, inA, sc.echo, both)

	if err := b.APIServer.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := harness.Eventually(ctx, func() bool { return slices.Contains(sourceNames(ctx, t, adm), "b/"+sc.ns+"=stale") }); err != nil {
		t.Fatalf("cluster b's source not stale with its API server stopped: %v (%v)", sourceNames(ctx, t, adm), err)
	}
	// Cluster a carries on: a change there reaches clients.
	sc.slice(t, "a", "echo", echoPort, true, "a1", "a2", "la")
	la := sc.backends["la"].Addr.String()
	waitPriorities(ctx, t, inA, sc.echo, join(at(0, a1, a2, la), at(1, b1, b2)))
	echo := func() *admin.ServiceDetail {
		d, err := adm.GetService(ctx, &admin.GetServiceRequest{Namespace: sc.ns, Name: "echo", ClusterSet: true})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if s := echo().GetSummary(); s.GetState() != "stale" || !strings.Contains(s.GetReason(), "cluster b") {
		t.Errorf("echo@clusterset.local is %s (%q); want stale, naming cluster b", s.GetState(), s.GetReason())
	}
	if s, err := adm.GetService(ctx, &admin.GetServiceRequest{Namespace: sc.ns, Name: "echo"}); err != nil || s.GetSummary().GetState() != "live" {
		t.Errorf("cluster a's own echo is %s (%v); want live: b's trouble is not a's", s.GetSummary().GetState(), err)
	}

	// Its etcd dies; the API server answers again, with errors.
	b.Etcd.Kill()
	if err := b.APIServer.Resume(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // three probes
	if st := inA.State(); !maps.Equal(priorities(st, sc.echo), join(at(0, a1, a2, la), at(1, b1, b2))) {
		t.Errorf("with cluster b's etcd gone, clients in a hold %v; want b's endpoints kept", priorities(st, sc.echo))
	}
	if s := echo().GetSummary(); s.GetState() != "stale" {
		t.Errorf("echo@clusterset.local is %s (%q) with b's etcd gone; want stale", s.GetState(), s.GetReason())
	}

	// Holdfast restarts while cluster b does not answer at all: b's endpoints come back from
	// the state file, stale, without waiting for --cluster-sync-timeout. (With only its etcd
	// gone, b's API server still lists from its watch cache: b would sync, stale.)
	if err := b.APIServer.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := h.Terminate(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	h = startHoldfastOn(t, env.cluster, sc.ns, args...)
	adm = adminOf(t, h)
	inA = sc.sidecar(t, h, "a")
	waitPriorities(ctx, t, inA, sc.echo, join(at(0, a1, a2, la), at(1, b1, b2)))
	// Restored from the state file at first; once cluster a has synced, stale for cluster b.
	if err := harness.Eventually(ctx, func() bool {
		s := echo().GetSummary()
		return s.GetState() == "stale" && strings.Contains(s.GetReason(), "cluster b")
	}); err != nil {
		s := echo().GetSummary()
		t.Errorf("after the restart echo@clusterset.local is %s (%q); want stale, naming cluster b", s.GetState(), s.GetReason())
	}
	if got := priorities(inA.State(), sc.echo); !maps.Equal(got, join(at(0, a1, a2, la), at(1, b1, b2))) {
		t.Errorf("after the restart, once synced with cluster a, clients in a hold %v; want b's endpoints kept", got)
	}
	if code, body, err := h.Get(ctx, "/readyz"); err != nil || code != 200 || !strings.Contains(body, `"id":"b","synced":false,"restored":true`) {
		t.Errorf("/readyz after a restart with cluster b unreadable: %d %s (%v); want ready, b restored", code, body, err)
	}

	// Cluster b leaves the configuration: withdrawing its endpoints is held.
	if err := os.Remove(filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	var hold *admin.Hold
	err = harness.Eventually(ctx, func() bool {
		r, err := adm.ListHolds(ctx, &admin.ListHoldsRequest{})
		if err != nil || len(r.GetHolds()) == 0 {
			return false
		}
		hold = r.GetHolds()[0]
		return true
	})
	if err != nil {
		t.Fatalf("removing cluster b withdrew its endpoints without a hold: clients hold %v", priorities(inA.State(), sc.echo))
	}
	if !slices.ContainsFunc(hold.GetServices(), func(s string) bool { return strings.HasPrefix(s, sc.ns+"/echo@clusterset.local ") }) {
		t.Errorf("the hold names %v; want %s/echo@clusterset.local", hold.GetServices(), sc.ns)
	}
	if got := priorities(inA.State(), sc.echo); !maps.Equal(got, join(at(0, a1, a2, la), at(1, b1, b2))) {
		t.Errorf("during the hold clients in a hold %v; want b's endpoints still there", got)
	}
	if _, err := adm.ReleaseHold(ctx, &admin.ReleaseHoldRequest{Id: hold.GetId()}); err != nil {
		t.Fatal(err)
	}
	waitPriorities(ctx, t, inA, sc.echo, at(0, a1, a2, la))
	if slices.ContainsFunc(sourceNames(ctx, t, adm), func(s string) bool { return strings.HasPrefix(s, "b/") }) {
		t.Errorf("a removed cluster's sources are still listed: %v", sourceNames(ctx, t, adm))
	}
}

// TestMultiClusterAddRemoveAtRuntime: a kubeconfig written into --clusters-dir adds cluster b
// (its exported endpoints reach clients) and removing the file removes it, without
// restarting Holdfast.
func TestMultiClusterAddRemoveAtRuntime(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	sc := newMCScene(t, sharedClusterB(t), map[string]servicePort{"a": echoPort, "b": echoPort})
	dir := t.TempDir()
	kubeconfig, err := os.ReadFile(sc.clusters["b"].Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	// Cluster d never answers: Holdfast serves (and is ready) without it after
	// --cluster-sync-timeout, and says so.
	dead := filepath.Join(t.TempDir(), "d.yaml")
	if err := os.WriteFile(dead, []byte(strings.ReplaceAll(string(kubeconfig), sc.clusters["b"].Server, "https://127.0.0.1:1")), 0o600); err != nil {
		t.Fatal(err)
	}
	h := startHoldfastOn(t, env.cluster, sc.ns, "--cluster-id", "a", "--clusters-dir", dir, "--clusters-rescan", "200ms",
		"--remote-cluster", "d="+dead, "--cluster-sync-timeout", "2s")
	adm := adminOf(t, h)
	a1, a2, b1, b2 := sc.backends["a1"].Addr.String(), sc.backends["a2"].Addr.String(), sc.backends["b1"].Addr.String(), sc.backends["b2"].Addr.String()
	inA := sc.sidecar(t, h, "a")
	waitPriorities(ctx, t, inA, sc.echo, at(0, a1, a2))
	if code, body, err := h.Get(ctx, "/readyz"); err != nil || code != 200 ||
		!strings.Contains(body, `"clusters":[{"id":"a","home":true,"synced":true`) || !strings.Contains(body, `{"id":"d","synced":false,`) || !strings.Contains(body, `"gave_up":true}`) {
		t.Errorf("/readyz with cluster d unreachable: %d %s (%v); want ready, d given up on", code, body, err)
	}
	if !slices.Contains(sourceNames(ctx, t, adm), "d/"+sc.ns+"=syncing") {
		t.Errorf("unreachable cluster d's source is not shown syncing: %v", sourceNames(ctx, t, adm))
	}

	// Written beside and renamed in, as a Secret volume updates: never read half-written.
	tmp := filepath.Join(dir, ".b.yaml.tmp")
	if err := os.WriteFile(tmp, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	waitPriorities(ctx, t, inA, sc.echo, join(at(0, a1, a2), at(1, b1, b2)))
	if !sourceLive(ctx, t, adm, "b/"+sc.ns) {
		t.Errorf("cluster b added, but its source is not listed live: %v", sourceNames(ctx, t, adm))
	}
	if n, err := h.Metric(ctx, `holdfast_source_stale{cluster="b",source="`+sc.ns+`"}`); err != nil || n != 0 {
		t.Errorf("cluster b's resolver metrics: holdfast_source_stale = %v (%v)", n, err)
	}

	if err := os.Remove(filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	waitPriorities(ctx, t, inA, sc.echo, at(0, a1, a2))
	if slices.ContainsFunc(sourceNames(ctx, t, adm), func(s string) bool { return strings.HasPrefix(s, "b/") }) {
		t.Errorf("a removed cluster's sources are still listed: %v", sourceNames(ctx, t, adm))
	}
	if _, err := h.Metric(ctx, `holdfast_source_stale{cluster="b",source="`+sc.ns+`"}`); err == nil {
		t.Error("a removed cluster's resolver metrics are still exported")
	}

	// A kubeconfig that cannot be used is reported, and changes nothing else.
	if err := os.WriteFile(filepath.Join(dir, "c.yaml"), []byte("not: [a kubeconfig"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = harness.Eventually(ctx, func() bool {
		n, err := h.Metric(ctx, `holdfast_cluster_config_errors_total{cluster="c"}`)
		return err == nil && n > 0
	})
	if err != nil {
		t.Errorf("a broken kubeconfig in --clusters-dir is not counted: %v", err)
	}
	if !slices.ContainsFunc(sourceNames(ctx, t, adm), func(s string) bool { return strings.HasPrefix(s, "c/kubeconfig=") }) {
		t.Errorf("a broken kubeconfig is not shown in holdfastctl sources: %v", sourceNames(ctx, t, adm))
	}
	if got := priorities(inA.State(), sc.echo); !maps.Equal(got, at(0, a1, a2)) {
		t.Errorf("after a broken kubeconfig, clients hold %v", got)
	}
}

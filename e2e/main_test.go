// Package e2e drives the real programs: Holdfast as its own process against a real
// kube-apiserver + etcd, gRPC backends in a network namespace, and grpc-go's own xDS client.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/e2e/kube"
	"github.com/holdfast/holdfast/e2e/netns"
	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/translate"
)

// This package's slice of the test range: the shared pod network, then /24s handed to tests
// that need a network of their own (a zone's node, a link taken down). 10.244.200.0/24 is the
// demo's, 10.244.250.0/24 netns's own test's.
var (
	subnet     = netip.MustParsePrefix("10.244.1.0/24")
	ownSubnets = [2]netip.Prefix{netip.MustParsePrefix("10.244.20.0/24"), netip.MustParsePrefix("10.244.199.0/24")}
)

// env is shared by every test of the package: one API server, one pod network, the binaries.
var env struct {
	dir     string
	bins    harness.Binaries
	cluster *kube.Cluster
	net     *netns.Network
	subnets *netns.Subnets // for ownNetwork
	demo    *demoRun       // make demo, started first when TestDemo is to run
}

// quietWindow is how long a check that something does not happen watches, where the thing
// would happen within milliseconds if it happened at all: a rejected version sent again (a
// control plane that does it, go-control-plane's snapshot cache, re-sends 4,000–6,000 times a
// second), an agent with nothing to serve answering its clients with nothing. A second is
// hundreds of times that on a loaded machine; a longer window would only slow the suite.
const quietWindow = time.Second

// timeout bounds every wait for something to become true: a correctness deadline, not a
// performance claim (measured convergence is well under a second).
const timeout = 30 * time.Second

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	if err := netns.Check(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	flag.Parse()
	if selected("TestDemo") { // the longest test starts first (TestDemo)
		env.demo = startDemo()
		defer env.demo.stop()
	}
	var err error
	if env.dir, err = os.MkdirTemp("", "holdfast-e2e-"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(env.dir)
	// A cold build of kube-apiserver takes minutes; .ci/run and make build it before the tests.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if env.bins, err = harness.Build(env.dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if env.cluster, err = kube.Start(ctx, env.dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer env.cluster.Close()
	defer closeClusterB()
	if env.net, err = netns.New(ctx, "hf-e2e", subnet); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer env.net.Close()
	env.subnets = netns.NewSubnets(ownSubnets[0], ownSubnets[1])
	code := m.Run()
	if err := writeMatrix(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: client matrix:", err)
		return 1
	}
	return code
}

// ownCluster starts an API server for a test that breaks it.
func ownCluster(t *testing.T) *kube.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k, err := kube.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k
}

// ownNetwork gives a test a network namespace on a /24 of its own, removed when it ends.
func ownNetwork(ctx context.Context, t testing.TB, prefix string) *netns.Network {
	t.Helper()
	sub, err := env.subnets.Next()
	if err != nil {
		t.Fatal(err)
	}
	n, err := netns.New(ctx, prefix, sub)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// loopbacks numbers the loopback addresses loopbackAddr hands out.
var loopbacks atomic.Uint32

// loopbackAddr is a loopback address no other test uses (127.0.10.1 up): where a process in
// this host's network namespace listens on a port that others listen on too.
func loopbackAddr() netip.Addr {
	n := loopbacks.Add(1)
	return netip.AddrFrom4([4]byte{127, 0, byte(10 + n/250), byte(1 + n%250)})
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*timeout)
	t.Cleanup(cancel)
	return ctx
}

// newNamespace creates a fresh namespace for one test. Namespaces never finish deleting here
// (no controllers run), so cleanup deletes the test's objects explicitly.
func newNamespace(t testing.TB) string {
	t.Helper()
	return newNamespaceOn(t, env.cluster)
}

func newNamespaceOn(t testing.TB, k *kube.Cluster) string {
	t.Helper()
	ctx := context.Background()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 40 {
		name = name[:40]
	}
	ns, err := k.Client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: strings.Trim(name, "-") + "-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { deleteNamespace(k, ns.Name) })
	return ns.Name
}

// deleteNamespace deletes a test's namespace, and its EndpointSlices and Services explicitly
// (with no controllers running, a namespace never finishes deleting its content).
func deleteNamespace(k *kube.Cluster, ns string) {
	ctx := context.Background()
	c := k.Client
	_ = c.DiscoveryV1().EndpointSlices(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
	svcs, _ := c.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	for _, s := range svcs.Items {
		_ = c.CoreV1().Services(ns).Delete(ctx, s.Name, metav1.DeleteOptions{})
	}
	_ = c.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
}

// startHoldfast runs Holdfast watching only ns. Cleanup checks that SIGTERM makes it exit 0.
func startHoldfast(t testing.TB, ns string) *harness.Holdfast {
	t.Helper()
	return startHoldfastOn(t, env.cluster, ns)
}

func startHoldfastOn(t testing.TB, k *kube.Cluster, ns string, extra ...string) *harness.Holdfast {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	h, err := harness.StartHoldfast(ctx, env.bins.Holdfast, env.dir, k.Kubeconfig, append([]string{"--namespaces", ns}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Terminate(15 * time.Second); err != nil {
			t.Errorf("holdfast did not exit cleanly on SIGTERM: %v\n%s", err, h.LogTail(20))
		}
		if t.Failed() {
			t.Logf("holdfast log: %s", h.LogTail(60))
		}
	})
	return h
}

// startBackends starts one backend per id, all on port.
func startBackends(t testing.TB, port int32, ids ...string) map[string]*harness.Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out := map[string]*harness.Backend{}
	for _, id := range ids {
		b, err := harness.StartBackend(ctx, env.net, env.bins.Backend, id, port)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Kill)
		out[id] = b
	}
	return out
}

func dial(t testing.TB, h *harness.Holdfast, target string) *harness.GRPCClient {
	t.Helper()
	c, err := harness.DialXDS(h.XDSAddr, "test-"+t.Name(), target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func target(ns, svc string, port int32) string {
	return fmt.Sprintf("%s.%s.svc.cluster.local:%d", svc, ns, port)
}

// upstream is the name of what the listener of service ns/name's port points to (its route
// configuration, cluster and assignment): the listener's name and the Service's incarnation.
func upstream(t testing.TB, ns, name string, port int32) string {
	t.Helper()
	svc, err := env.cluster.Client.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get service %s/%s: %v", ns, name, err)
	}
	return translate.Naming{Domain: "cluster.local"}.Upstream(resolver.Key{Namespace: ns, Name: name}, string(svc.UID), port)
}

func ptr[T any](v T) *T { return &v }

// servicePort is a service port name, number and the target port its endpoints listen on.
type servicePort struct {
	name   string
	port   int32
	target int32
}

func createService(t testing.TB, ns, name string, ports ...servicePort) {
	t.Helper()
	createServiceOn(t, env.cluster, ns, name, ports...)
}

func createServiceOn(t testing.TB, k *kube.Cluster, ns, name string, ports ...servicePort) {
	t.Helper()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone}}
	for _, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: p.name, Port: p.port, Protocol: corev1.ProtocolTCP})
	}
	ctx := context.Background()
	existing, err := k.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = k.Client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	case err == nil:
		existing.Spec.Ports = svc.Spec.Ports
		_, err = k.Client.CoreV1().Services(ns).Update(ctx, existing, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatalf("write service %s/%s: %v", ns, name, err)
	}
}

// endpoint is one backend in a slice, with its readiness.
type endpoint struct {
	b     *harness.Backend
	ready bool
}

// writeSlice creates or replaces EndpointSlice name of service svc, for one port.
func writeSlice(t testing.TB, ns, name, svc string, port servicePort, eps ...endpoint) {
	t.Helper()
	writeSliceOn(t, env.cluster, ns, name, svc, port, eps...)
}

func writeSliceOn(t testing.TB, k *kube.Cluster, ns, name, svc string, port servicePort, eps ...endpoint) {
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
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(e.ready), Serving: ptr(e.ready)},
			Zone:       ptr("zone-a"),
		})
	}
	putSlice(t, k, s)
}

// putSlice creates EndpointSlice s in k, or replaces the one of its name.
func putSlice(t testing.TB, k *kube.Cluster, s *discoveryv1.EndpointSlice) {
	t.Helper()
	ctx := context.Background()
	c := k.Client.DiscoveryV1().EndpointSlices(s.Namespace)
	existing, err := c.Get(ctx, s.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = c.Create(ctx, s, metav1.CreateOptions{})
	case err == nil:
		s.ResourceVersion = existing.ResourceVersion
		_, err = c.Update(ctx, s, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatalf("write endpointslice %s/%s: %v", s.Namespace, s.Name, err)
	}
}

func deleteSlice(t *testing.T, ns, name string) {
	t.Helper()
	if err := env.cluster.Client.DiscoveryV1().EndpointSlices(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete endpointslice %s/%s: %v", ns, name, err)
	}
}

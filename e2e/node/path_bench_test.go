package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/holdfast/holdfast/e2e/adsclient"
	"github.com/holdfast/holdfast/e2e/harness"
)

// firstSeen records, per key, when a watch first saw a condition become true after a reset.
type firstSeen struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (f *firstSeen) see(key string, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !ok {
		delete(f.at, key)
	} else if _, seen := f.at[key]; !seen {
		f.at[key] = time.Now()
	}
}

func (f *firstSeen) get(key string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.at[key]
	return t, ok
}

// watchAll feeds every event of w to fn until ctx is done.
func watchAll(ctx context.Context, b *testing.B, w watch.Interface, fn func(watch.Event)) {
	b.Helper()
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				fn(ev)
			}
		}
	}()
}

// BenchmarkReadyToRoutes measures the path a pod takes into clients' routes on the real node,
// per segment: its readiness endpoint flipped on → the kubelet's probe turns the pod Ready (as
// a watch sees it) → the EndpointSlice controller marks its endpoint ready → Holdfast publishes
// it (an Envoy-like client connected to Holdfast receives it healthy) → a grpc-go application
// connected to Holdfast sends an RPC to it. Each iteration flips one pod off and waits until it
// is out of every view, then on. Holdfast's share is its segment over pod Ready → routes.
func BenchmarkReadyToRoutes(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	d := holdfast(b)
	ns := appNamespace(ctx, b, "bench-ready-to-routes", 2)
	pods, err := env.node.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=app"})
	if err != nil || len(pods.Items) != 2 {
		b.Fatalf("application pods: %v", err)
	}
	pod, other := pods.Items[0], pods.Items[1]
	ip := pod.Status.PodIP
	target := appTarget(ns)

	var podReadyAt, sliceReadyAt firstSeen
	podReadyAt.at, sliceReadyAt.at = map[string]time.Time{}, map[string]time.Time{}
	pw, err := env.node.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: "app=app"})
	if err != nil {
		b.Fatal(err)
	}
	watchAll(ctx, b, pw, func(ev watch.Event) {
		if p, ok := ev.Object.(*corev1.Pod); ok {
			podReadyAt.see(p.Name, podReady(*p))
		}
	})
	sw, err := env.node.Client.DiscoveryV1().EndpointSlices(ns).Watch(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=app"})
	if err != nil {
		b.Fatal(err)
	}
	watchAll(ctx, b, sw, func(ev watch.Event) {
		s, ok := ev.Object.(*discoveryv1.EndpointSlice)
		if !ok {
			return
		}
		for _, e := range s.Endpoints {
			if slices.Contains(e.Addresses, ip) {
				sliceReadyAt.see(ip, e.Conditions.Ready != nil && *e.Conditions.Ready)
			}
		}
	})

	ca, err := os.ReadFile(d.caFile)
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	envoy, err := adsclient.Dial(d.clusterIP+":18000", adsclient.Options{NodeID: "bench-envoy", Delta: true,
		Creds: credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})})
	if err != nil {
		b.Fatal(err)
	}
	defer envoy.Close()
	healthy := func(want bool) func(adsclient.State) bool {
		return func(st adsclient.State) bool {
			r, ok := st.Upstream(resourcev3.EndpointType, target)
			if !ok {
				return false
			}
			found := false
			for _, l := range r.Message.(*endpointv3.ClusterLoadAssignment).GetEndpoints() {
				for _, e := range l.GetLbEndpoints() {
					if e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress() == ip && e.GetHealthStatus() == corev3.HealthStatus_HEALTHY {
						found = true
					}
				}
			}
			return found == want
		}
	}
	app := startApp(ctx, b, d, target, harness.ImplGo, false, 5*time.Millisecond)
	if err := app.Routing(ctx, target, pod.Name, other.Name); err != nil {
		b.Fatal(err)
	}

	var probe, controller, holdfast, client, total []time.Duration
	for b.Loop() {
		setReady(ctx, b, ns, pod.Name, false)
		if err := envoy.WaitFor(ctx, healthy(false)); err != nil {
			b.Fatal(err)
		}
		if err := app.Routing(ctx, target, other.Name); err != nil {
			b.Fatal(err)
		}
		mark := app.Mark()
		flipped := time.Now()
		setReady(ctx, b, ns, pod.Name, true)
		if err := envoy.WaitFor(ctx, healthy(true)); err != nil {
			b.Fatal(err)
		}
		published := time.Now()
		var routed time.Time
		for routed.IsZero() {
			for _, r := range app.Since(mark, target) {
				if r.OK && r.Backend == pod.Name {
					routed = r.At
					break
				}
			}
			if ctx.Err() != nil {
				b.Fatal("the application never reached the pod")
			}
			time.Sleep(time.Millisecond)
		}
		ready, ok1 := podReadyAt.get(pod.Name)
		sliced, ok2 := sliceReadyAt.get(ip)
		if !ok1 || !ok2 || ready.Before(flipped) || sliced.Before(ready) {
			b.Fatalf("watches: pod Ready %v (%v), slice ready %v (%v), flipped %v", ready, ok1, sliced, ok2, flipped)
		}
		probe = append(probe, ready.Sub(flipped))
		controller = append(controller, sliced.Sub(ready))
		holdfast = append(holdfast, published.Sub(sliced))
		client = append(client, max(0, routed.Sub(published)))
		total = append(total, routed.Sub(ready))
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	report := func(name string, ds []time.Duration) {
		slices.Sort(ds)
		b.ReportMetric(ms(ds[len(ds)/2]), name+"-p50-ms")
		b.ReportMetric(ms(ds[(len(ds)*99+99)/100-1]), name+"-p99-ms")
	}
	var share []time.Duration // Holdfast's share, as a duration of per-mille for sorting
	for i := range total {
		share = append(share, time.Duration(1000*holdfast[i]/max(total[i], 1)))
	}
	report("probe", probe)
	report("controller", controller)
	report("holdfast", holdfast)
	report("client", client)
	report("ready-to-routes", total)
	slices.Sort(share)
	b.ReportMetric(float64(share[len(share)/2])/10, "holdfast-share-p50-%")
}

// Command demo runs Holdfast's main job on this machine: it starts a real kube-apiserver and
// etcd, writes a sample namespace with two services, starts their gRPC backends in a network
// namespace, runs Holdfast against the API server, and dials both services with grpc-go's xDS
// client, printing which backends answer while it scales and flips endpoints. Ctrl-C cleans up.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/e2e/kube"
	"github.com/holdfast/holdfast/e2e/netns"
)

const (
	namespace  = "demo"
	targetPort = 9090
)

func main() {
	duration := flag.Duration("duration", 0, "stop after this long (0: run until Ctrl-C)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	if err := run(ctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	fmt.Println("demo: cleaned up")
}

// demoService is one sample service and its backends.
type demoService struct {
	name     string
	backends []*harness.Backend
}

func run(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "holdfast-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	step("building holdfast and the demo backend")
	bins, err := harness.Build(dir)
	if err != nil {
		return err
	}
	step("starting etcd and kube-apiserver on 127.0.0.1 (first run builds them: several minutes)")
	cluster, err := kube.Start(ctx, dir)
	if err != nil {
		return err
	}
	defer cluster.Close()
	step("API server ready at %s (kubeconfig: %s)", cluster.Server, cluster.Kubeconfig)

	network, err := netns.New(ctx, "hf-demo", netip.MustParsePrefix("10.244.200.0/24"))
	if err != nil {
		return err
	}
	defer network.Close()

	services := []*demoService{{name: "greeter"}, {name: "echo"}}
	for _, s := range services {
		for i := range 3 {
			b, err := harness.StartBackend(ctx, network, bins.Backend, fmt.Sprintf("%s-%d", s.name, i+1), targetPort)
			if err != nil {
				return err
			}
			defer b.Kill()
			s.backends = append(s.backends, b)
		}
	}
	step("backends listening in network namespace %s on %v", network.Name, network.Prefix)

	client := cluster.Client
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	for _, s := range services {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: s.name},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "grpc", Port: 80, Protocol: corev1.ProtocolTCP}}},
		}
		if _, err := client.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			return err
		}
		if err := writeSlice(ctx, client, s, len(s.backends), nil); err != nil {
			return err
		}
	}
	step("namespace %q with services greeter and echo, 3 ready endpoints each", namespace)

	h, err := harness.StartHoldfast(ctx, bins.Holdfast, dir, cluster.Kubeconfig, "--namespaces", namespace)
	if err != nil {
		return err
	}
	defer h.Kill()
	step("holdfast serving xDS on %s (metrics: http://%s/metrics, log: %s)", h.XDSAddr, h.HTTPAddr, h.LogPath)

	clients := map[string]*harness.GRPCClient{}
	for _, s := range services {
		target := s.name + "." + namespace + ".svc.cluster.local:80"
		c, err := harness.DialXDS(h.XDSAddr, "demo-client", target)
		if err != nil {
			return err
		}
		defer c.Close()
		clients[s.name] = c
		step("gRPC client dials xds:///%s", target)
	}

	// Scenes: what happens to greeter's endpoints; echo stays as it is throughout.
	greeter := services[0]
	scenes := []struct {
		say   string
		ready int
		notOK []int
	}{
		{"greeter: 3 ready endpoints", 3, nil},
		{"greeter: scaled down to 2", 2, nil},
		{"greeter: greeter-1 not ready", 2, []int{0}},
		{"greeter: scaled to 0 (RPCs fail fast with UNAVAILABLE; echo unaffected)", 0, nil},
		{"greeter: back to 3", 3, nil},
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := 0; ; i++ {
		if i%5 == 0 {
			sc := scenes[(i/5)%len(scenes)]
			if err := writeSlice(ctx, client, greeter, sc.ready, sc.notOK); err != nil {
				return err
			}
			fmt.Printf("\n== %s\n", sc.say)
		}
		for _, s := range services {
			hits, failures, lastErr := clients[s.name].Spread(ctx, 12)
			line := fmt.Sprintf("%-8s answered by: %s", s.name, harness.HitsString(hits))
			if failures > 0 {
				line += fmt.Sprintf("  failed: %d (%s)", failures, short(lastErr))
			}
			fmt.Println(line)
		}
		select {
		case <-ctx.Done():
			fmt.Println("\ndemo: stopping; holdfast gets SIGTERM")
			if err := h.Terminate(10 * time.Second); err != nil {
				fmt.Println("demo: holdfast:", err)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// writeSlice gives the service's first n backends as endpoints; those at indexes in notReady are
// listed as not ready.
func writeSlice(ctx context.Context, c kubernetes.Interface, s *demoService, n int, notReady []int) error {
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: namespace, Name: s.name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: s.name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("grpc"), Port: ptr(int32(targetPort)), Protocol: ptr(corev1.ProtocolTCP)}},
		Endpoints:   []discoveryv1.Endpoint{},
	}
	for i, b := range s.backends[:n] {
		ready := !slices.Contains(notReady, i)
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{b.Addr.String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}, Zone: ptr("zone-a"),
		})
	}
	api := c.DiscoveryV1().EndpointSlices(namespace)
	existing, err := api.Get(ctx, slice.Name, metav1.GetOptions{})
	if err != nil {
		_, err = api.Create(ctx, slice, metav1.CreateOptions{})
		return err
	}
	slice.ResourceVersion = existing.ResourceVersion
	_, err = api.Update(ctx, slice, metav1.UpdateOptions{})
	return err
}

func step(f string, args ...any) { fmt.Printf("demo: "+f+"\n", args...) }

func short(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if i := strings.LastIndex(s, "desc = "); i >= 0 {
		s = s[i+len("desc = "):]
	}
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return s
}

func ptr[T any](v T) *T { return &v }

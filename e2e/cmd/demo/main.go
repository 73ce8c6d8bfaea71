// Command demo runs Holdfast's main job on this machine: it starts a real kube-apiserver and
// etcd, writes a sample namespace with two services, starts their gRPC backends in a network
// namespace, runs Holdfast against the API server, and dials both services with grpc-go's xDS
// client, printing which backends answer while it scales and flips endpoints — and then
// through the failures Holdfast is for: the API server stopped, Holdfast restarted with it
// still down, most EndpointSlices deleted at once, a zone's backends gone. Ctrl-C cleans up.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
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
	"github.com/holdfast/holdfast/xds/bootstrap"
)

const (
	namespace  = "demo"
	targetPort = 9090
	clientNode = "demo-client"
)

// sceneLength is how long each scaling scene lasts (--scene).
var sceneLength = 5 * time.Second

func main() {
	duration := flag.Duration("duration", 0, "stop after this long (0: run until Ctrl-C)")
	flag.DurationVar(&sceneLength, "scene", 5*time.Second, "how long each scene of the scaling part lasts")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	restore := takeTerminal()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	err := run(ctx)
	restore()
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
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
	step("namespace %q with services greeter and echo, 3 ready endpoints each (echo-3 in zone-b, the rest in zone-a)", namespace)

	// The guard's thresholds at the demo's scale (6 endpoints; the defaults protect fleets of
	// 100 or more), its window shorter than a scene so that the scaling scenes are judged one
	// at a time, and a hold that lasts until an operator releases it.
	stateDir := dir + "/state"
	args := []string{"--namespaces", namespace, "--state-dir", stateDir, "--guard-min-fleet-endpoints", "4", "--guard-min-withdrawn-endpoints", "3",
		"--guard-window", (sceneLength / 2).String(), "--guard-hold-period", "10m"}
	h, err := harness.StartHoldfast(ctx, bins.Holdfast, dir, cluster.Kubeconfig, args...)
	if err != nil {
		return err
	}
	defer func() { h.Kill() }()
	step("holdfast serving xDS on %s (metrics: http://%s/metrics, status page: http://%s/, log: %s)", h.XDSAddr, h.HTTPAddr, h.StatusAddr, h.LogPath)
	step("the guard set to the demo's scale: --guard-min-fleet-endpoints 4 --guard-min-withdrawn-endpoints 3 (the defaults are 100 and 20)")

	clients := map[string]*harness.GRPCClient{}
	for _, s := range services {
		target := s.name + "." + namespace + ".svc.cluster.local:80"
		c, err := harness.DialXDSWith(bootstrap.Options{NodeID: clientNode, Server: h.XDSAddr, Zone: "zone-a"}, target)
		if err != nil {
			return err
		}
		defer c.Close()
		clients[s.name] = c
		step("gRPC client in zone-a dials xds:///%s", target)
	}
	view := func() map[string]string {
		out := map[string]string{}
		for _, s := range services {
			hits, failures, lastErr := clients[s.name].Spread(ctx, 12)
			line := fmt.Sprintf("%-8s answered by: %s", s.name, harness.HitsString(hits))
			if failures > 0 {
				line += fmt.Sprintf("  failed: %d (%s)", failures, short(lastErr))
			}
			fmt.Println(line)
			out[s.name] = line
		}
		return out
	}
	// until prints the clients' view every second until ok holds of it (at most bound).
	until := func(bound time.Duration, ok func(map[string]string) bool) error {
		deadline := time.Now().Add(bound)
		for {
			v := view()
			if ok(v) || time.Now().After(deadline) {
				return ctx.Err()
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
	routing := func(v map[string]string) bool {
		return !strings.Contains(v["greeter"], "failed") && !strings.Contains(v["echo"], "failed")
	}
	ctl := func(args ...string) {
		out, err := exec.CommandContext(ctx, bins.Holdfastctl, append([]string{"--addr", h.AdminAddr}, args...)...).CombinedOutput()
		fmt.Printf("$ holdfastctl %s\n%s", strings.Join(args, " "), out)
		if err != nil {
			fmt.Printf("(holdfastctl: %v)\n", err)
		}
	}
	wait := func(series string, ok func(float64) bool) {
		for ctx.Err() == nil {
			if v, err := h.Metric(ctx, series); err == nil && ok(v) {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// Scenes: what happens to greeter's endpoints; echo stays as it is throughout.
	greeter, echo := services[0], services[1]
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
	for _, sc := range scenes {
		if err := writeSlice(ctx, client, greeter, sc.ready, sc.notOK); err != nil {
			return err
		}
		fmt.Printf("\n== %s\n", sc.say)
		for end := time.Now().Add(sceneLength); time.Now().Before(end); {
			view()
			select {
			case <-ctx.Done():
				return stopHoldfast(h, ctx.Err())
			case <-time.After(time.Second):
			}
		}
	}

	fmt.Printf("\n== failure 1: the API server stops answering (SIGSTOP): clients keep routing on what Holdfast last saw\n")
	if err := cluster.APIServer.Pause(); err != nil {
		return err
	}
	defer func() { _ = cluster.APIServer.Resume() }()
	wait(`holdfast_source_stale{source="`+namespace+`"}`, func(v float64) bool { return v == 1 })
	if code, body, err := h.Get(ctx, "/readyz"); err == nil {
		fmt.Printf("/readyz: %d %s\n", code, strings.TrimSpace(body))
	}
	ctl("sources")
	if err := until(3*time.Second, func(map[string]string) bool { return false }); err != nil {
		return stopHoldfast(h, err)
	}

	fmt.Printf("\n== failure 2: Holdfast killed and restarted while the API server is still down: it serves its state file\n")
	xds := h.XDSAddr
	h.Kill()
	start := time.Now()
	if h, err = harness.StartHoldfast(ctx, bins.Holdfast, dir, cluster.Kubeconfig, append(args, "--xds-listen", xds)...); err != nil {
		return err
	}
	step("restarted Holdfast ready %v after start, from %s (the API server is still stopped)", time.Since(start).Round(10*time.Millisecond), stateDir)
	if err := until(10*time.Second, routing); err != nil {
		return stopHoldfast(h, err)
	}

	fmt.Printf("\n== the API server continues (SIGCONT): Holdfast syncs and replaces the restored state\n")
	if err := cluster.APIServer.Resume(); err != nil {
		return err
	}
	wait("holdfast_state_restored", func(v float64) bool { return v == 0 })
	ctl("sources")

	fmt.Printf("\n== failure 3: every EndpointSlice deleted at once (a bad deploy script): the guard holds the withdrawal\n")
	for _, s := range services {
		if err := client.DiscoveryV1().EndpointSlices(namespace).Delete(ctx, s.name+"-1", metav1.DeleteOptions{}); err != nil {
			return err
		}
	}
	wait("holdfast_guard_held", func(v float64) bool { return v == 1 })
	if err := until(2*time.Second, func(map[string]string) bool { return false }); err != nil {
		return stopHoldfast(h, err)
	}
	ctl("why", clientNode, namespace+"/greeter:80")
	fmt.Printf("\n== an operator releases the hold (holdfastctl release 1): the withdrawal applies, RPCs fail fast\n")
	ctl("release", "1")
	if err := until(10*time.Second, func(v map[string]string) bool {
		return strings.Contains(v["greeter"], "failed: 12") && strings.Contains(v["echo"], "failed: 12")
	}); err != nil {
		return stopHoldfast(h, err)
	}
	fmt.Printf("\n== the slices come back\n")
	for _, s := range services {
		if err := writeSlice(ctx, client, s, len(s.backends), nil); err != nil {
			return err
		}
	}
	if err := until(10*time.Second, routing); err != nil {
		return stopHoldfast(h, err)
	}

	fmt.Printf("\n== failure 4: zone-a's echo backends die (the kubelet marks them not ready): the client in zone-a fails over to zone-b\n")
	for _, b := range echo.backends[:2] {
		b.Kill()
	}
	if err := writeSlice(ctx, client, echo, len(echo.backends), []int{0, 1}); err != nil {
		return err
	}
	if err := until(10*time.Second, func(v map[string]string) bool {
		return strings.Contains(v["echo"], "echo-3:12") && !strings.Contains(v["echo"], "failed")
	}); err != nil {
		return stopHoldfast(h, err)
	}

	fmt.Printf("\ndemo: done; every failure survived. Ctrl-C to stop (the clients' view keeps printing).\n")
	for {
		select {
		case <-ctx.Done():
			return stopHoldfast(h, ctx.Err())
		case <-time.After(time.Second):
			view()
		}
	}
}

// stopHoldfast ends Holdfast the way Kubernetes does (SIGTERM) and returns err.
func stopHoldfast(h *harness.Holdfast, err error) error {
	fmt.Println("\ndemo: stopping; holdfast gets SIGTERM")
	if terr := h.Terminate(10 * time.Second); terr != nil {
		fmt.Println("demo: holdfast:", terr)
	}
	return err
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
			Addresses: []string{b.Addr.String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}, Zone: ptr(zoneOf(s, i)),
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

// zoneOf places echo's third backend in zone-b, every other backend in zone-a.
func zoneOf(s *demoService, i int) string {
	if s.name == "echo" && i == 2 {
		return "zone-b"
	}
	return "zone-a"
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

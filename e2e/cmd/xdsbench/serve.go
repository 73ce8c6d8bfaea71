package main

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/internal/fleet"
	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/publish"
	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/serve"
	"github.com/holdfast/holdfast/xds/translate"
)

// capture keeps the snapshots a Publisher hands out.
type capture struct {
	mu   sync.Mutex
	cond *sync.Cond
	last resource.Set
	n    int
}

func (c *capture) Publish(s resource.Set, _ time.Time) {
	c.mu.Lock()
	c.last, c.n = s, c.n+1
	c.cond.Broadcast()
	c.mu.Unlock()
}

func (c *capture) wait(n int) resource.Set {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.n < n {
		c.cond.Wait()
	}
	return c.last
}

// tee hands snapshots to the Holdfast server, or to the capture (baseline), or both.
type tee []publish.Sink

func (t tee) Publish(s resource.Set, at time.Time) {
	for _, x := range t {
		x.Publish(s, at)
	}
}

type oneNode struct{}

func (oneNode) ID(*corev3.Node) string { return "all" }

// runServer runs one xDS server, Holdfast's or a plain go-control-plane SnapshotCache server, over
// a synthetic fleet, and takes commands on stdin: "change I" moves service I's first endpoint
// to a new port and publishes; "stats" prints the heap in use. It prints "ready ADDR" first.
func runServer(impl string, services, per int) error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	capt := &capture{}
	capt.cond = sync.NewCond(&capt.mu)
	var out publish.Sink = capt
	var g *grpc.Server
	var snapCache cachev3.SnapshotCache
	switch impl {
	case "holdfast":
		srv, err := serve.NewServer(serve.ServerOptions{MaxClients: 100000, AckTimeout: 5 * time.Minute})
		if err != nil {
			return err
		}
		g, out = srv.GRPC, tee{srv, capt}
	case "baseline":
		// What a user writes with go-control-plane: one snapshot for every node, ADS mode, a
		// version counter for the whole snapshot.
		snapCache = cachev3.NewSnapshotCache(true, oneNode{}, nil)
		g = grpc.NewServer(grpc.MaxConcurrentStreams(1000))
		discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, serverv3.NewServer(ctx, snapCache, nil))
	default:
		return fmt.Errorf("unknown server %q", impl)
	}
	pub, err := publish.New(publish.Options{Translator: translate.Translator{Naming: translate.Naming{Domain: "cluster.local"}, EnvoyListenAddress: "127.0.0.1"}}, out)
	if err != nil {
		return err
	}
	go func() { _ = pub.Run(ctx) }()
	go func() { _ = g.Serve(lis) }()

	view := cache.View{Services: fleet.New(services, per), Synced: true, Generation: 1}
	published := 0
	publish := func() error {
		published++
		pub.OnView(view)
		snaps := capt.wait(published)
		if snapCache == nil {
			return nil
		}
		res := map[resourcev3.Type][]types.Resource{}
		for _, typ := range resource.Served {
			for _, r := range snaps[resource.KindEnvoy][typ] {
				res[typ] = append(res[typ], r.Msg)
			}
		}
		snap, err := cachev3.NewSnapshot(strconv.Itoa(published), res)
		if err != nil {
			return err
		}
		return snapCache.SetSnapshot(ctx, "all", snap)
	}
	if err := publish(); err != nil {
		return err
	}
	fmt.Printf("ready %s\n", lis.Addr())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 2 && f[0] == "change":
			i, _ := strconv.Atoi(f[1])
			k := fleet.Key(i)
			old := view.Services[k]
			next := *old
			next.Ports = []resolver.Port{old.Ports[0]}
			next.Ports[0].Endpoints = append([]resolver.Endpoint(nil), old.Ports[0].Endpoints...)
			next.Ports[0].Endpoints[0].Port++
			services := maps.Clone(view.Services)
			services[k] = &next
			view = cache.View{Services: services, Synced: true, Generation: view.Generation + 1}
			if err := publish(); err != nil {
				return err
			}
			fmt.Println("ok")
		case len(f) == 2 && f[0] == "heapprofile":
			runtime.GC()
			runtime.GC()
			pf, err := os.Create(f[1])
			if err != nil {
				return err
			}
			if err := pprof.WriteHeapProfile(pf); err != nil {
				return err
			}
			_ = pf.Close()
			fmt.Println("ok")
		case len(f) == 2 && f[0] == "cpuprofile" && f[1] == "stop":
			pprof.StopCPUProfile()
			fmt.Println("ok")
		case len(f) == 2 && f[0] == "cpuprofile":
			pf, err := os.Create(f[1])
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(pf); err != nil {
				return err
			}
			fmt.Println("ok")
		case len(f) == 1 && f[0] == "stats":
			runtime.GC()
			runtime.GC() // the second empties sync.Pool's victim cache (gRPC's buffer pools)
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			fmt.Printf("heap %d\n", m.HeapInuse)
		default:
			fmt.Println("?")
		}
	}
	return nil
}

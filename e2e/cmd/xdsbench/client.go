package main

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// client is a lean Envoy-like ADS client for load: wildcard CDS and LDS, then EDS for every
// cluster and RDS for every listener, ACKing everything. It reads only resource names (field 1
// of Cluster, Listener, RouteConfiguration and ClusterLoadAssignment), so that the load tool's
// own CPU stays small next to the server's.
type client struct {
	delta bool
	conn  *grpc.ClientConn
	bytes atomic.Int64 // response bytes received on the wire

	mu       sync.Mutex
	counts   map[string]int       // resources held, by type
	seen     map[string]time.Time // when each assignment was last received
	complete chan struct{}        // closed once the client holds want of each type
	want     int
	err      error // the latest stream failure
	// reconnects counts streams that failed and were opened again, as Envoy and grpc-go do:
	// with a thousand clients in this one process on two cores, a client can starve long
	// enough for its connection to be dropped.
	reconnects int

	// Delta only: what the client holds (type → name → version) and subscribes to by name,
	// kept across a deliberate reconnect (see resume), as Envoy keeps them.
	versions map[string]map[string]string
	subs     map[string]map[string]bool
	// stopStream ends the current stream; resuming says the next one is a resume, and
	// resumed is closed once it has been answered for every type.
	stopStream context.CancelFunc
	resuming   bool
	resumed    chan struct{}
	answered   map[string]bool
}

// deltaTypes are the types a Delta client holds, in the order it subscribes.
var deltaTypes = []string{resourcev3.ClusterType, resourcev3.ListenerType, resourcev3.EndpointType, resourcev3.RouteType}

// resume closes the client's stream and opens another that says what the client holds
// (Delta's initial_resource_versions), as an Envoy does when its control plane restarts. The
// returned channel is closed once the new stream has been answered for every type.
func (c *client) resume() <-chan struct{} {
	c.mu.Lock()
	c.resuming, c.resumed, c.answered = true, make(chan struct{}), map[string]bool{}
	done, stop := c.resumed, c.stopStream
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
	return done
}

// answeredOnResume notes a response of typ on a resumed stream.
func (c *client) answeredOnResume(typ string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.answered == nil || c.answered[typ] {
		return
	}
	c.answered[typ] = true
	if len(c.answered) == len(deltaTypes) {
		close(c.resumed)
		c.answered = nil
	}
}

// nameOf reads field 1 (the name) of a serialised resource.
func nameOf(a *anypb.Any) string {
	b := a.GetValue()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return ""
			}
			return string(v)
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return ""
		}
		b = b[n:]
	}
	return ""
}

type byteCounter struct{ n *atomic.Int64 }

func (b byteCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (b byteCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	if p, ok := s.(*stats.InPayload); ok {
		b.n.Add(int64(p.WireLength))
	}
}
func (b byteCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (b byteCounter) HandleConn(context.Context, stats.ConnStats)                       {}

func startClient(ctx context.Context, addr, id, zone string, delta bool, want int) (*client, error) {
	c := &client{delta: delta, counts: map[string]int{}, seen: map[string]time.Time{}, complete: make(chan struct{}), want: want,
		versions: map[string]map[string]string{}, subs: map[string]map[string]bool{}}
	for _, typ := range deltaTypes {
		c.versions[typ], c.subs[typ] = map[string]string{}, map[string]bool{}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(byteCounter{&c.bytes}), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
	if err != nil {
		return nil, err
	}
	c.conn = conn
	node := &corev3.Node{Id: id, Cluster: "bench", UserAgentName: "envoy"}
	if zone != "" {
		node.Locality = &corev3.Locality{Zone: zone}
	}
	go func() {
		for {
			sctx, stop := context.WithCancel(ctx)
			c.mu.Lock()
			c.stopStream = stop
			resume := c.resuming
			c.resuming = false
			c.mu.Unlock()
			var err error
			if delta {
				err = c.runDelta(sctx, node, resume)
			} else {
				err = c.runSotW(sctx, node)
			}
			stop()
			c.mu.Lock()
			if c.resuming && ctx.Err() == nil {
				c.mu.Unlock()
				continue // a deliberate reconnect: keep what the client holds
			}
			if ctx.Err() != nil || status.Code(err) == codes.Canceled {
				c.mu.Unlock()
				return // the run is over
			}
			c.err = err
			c.reconnects++
			// A new stream is sent everything again; assignments are counted by name already.
			for _, typ := range []string{resourcev3.ClusterType, resourcev3.ListenerType, resourcev3.RouteType} {
				c.counts[typ] = 0
			}
			for _, typ := range deltaTypes {
				c.versions[typ], c.subs[typ] = map[string]string{}, map[string]bool{}
			}
			c.mu.Unlock()
			time.Sleep(200 * time.Millisecond)
		}
	}()
	return c, nil
}

func (c *client) close() { _ = c.conn.Close() }

// record notes a response's resources and reports whether the client is now complete.
func (c *client) record(typ string, names []string, replace bool, removed []string) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if typ == resourcev3.EndpointType {
		for _, n := range names {
			c.seen[n] = now
		}
		c.counts[typ] = len(c.seen)
	} else if replace {
		c.counts[typ] = len(names)
	} else {
		c.counts[typ] += len(names) - len(removed) // Delta: names are new or updated; close enough for counting
	}
	select {
	case <-c.complete:
	default:
		if c.counts[resourcev3.ClusterType] >= c.want && c.counts[resourcev3.EndpointType] >= c.want &&
			c.counts[resourcev3.ListenerType] >= 1 && c.counts[resourcev3.RouteType] >= 1 {
			close(c.complete)
		}
	}
}

// seenAfter reports when the client received assignment name after t, if it did.
func (c *client) seenAfter(name string, t time.Time) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.seen[name]
	return at, ok && at.After(t)
}

func (c *client) runSotW(ctx context.Context, node *corev3.Node) error {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	send := func(r *discoveryv3.DiscoveryRequest) error { return st.Send(r) }
	if err := send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType}); err != nil {
		return err
	}
	if err := send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType}); err != nil {
		return err
	}
	subs := map[string][]string{}
	nonces, versions := map[string]string{}, map[string]string{}
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		typ := resp.GetTypeUrl()
		names := make([]string, len(resp.GetResources()))
		for i, a := range resp.GetResources() {
			names[i] = nameOf(a)
		}
		c.record(typ, names, true, nil)
		nonces[typ], versions[typ] = resp.GetNonce(), resp.GetVersionInfo()
		if err := send(&discoveryv3.DiscoveryRequest{TypeUrl: typ, VersionInfo: versions[typ], ResponseNonce: resp.GetNonce(), ResourceNames: subs[typ]}); err != nil {
			return err
		}
		dep := map[string]string{resourcev3.ClusterType: resourcev3.EndpointType, resourcev3.ListenerType: resourcev3.RouteType}[typ]
		if dep == "" {
			continue
		}
		slices.Sort(names)
		if slices.Equal(subs[dep], names) {
			continue
		}
		subs[dep] = names
		if err := send(&discoveryv3.DiscoveryRequest{TypeUrl: dep, VersionInfo: versions[dep], ResponseNonce: nonces[dep], ResourceNames: names}); err != nil {
			return err
		}
	}
}

func (c *client) runDelta(ctx context.Context, node *corev3.Node, resume bool) error {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	// A fresh client subscribes to CDS and LDS (wildcard), then to EDS and RDS by the names
	// they return. A resuming one says what it holds of every type and subscribes to the same
	// names again at once.
	first := true
	for _, typ := range deltaTypes {
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ}
		if resume {
			c.mu.Lock()
			req.InitialResourceVersions = maps.Clone(c.versions[typ])
			req.ResourceNamesSubscribe = slices.Sorted(maps.Keys(c.subs[typ]))
			c.mu.Unlock()
		}
		if typ == resourcev3.EndpointType || typ == resourcev3.RouteType {
			if len(req.ResourceNamesSubscribe) == 0 {
				continue
			}
		}
		if first {
			req.Node, first = node, false
		}
		if err := st.Send(req); err != nil {
			return err
		}
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		typ := resp.GetTypeUrl()
		names := make([]string, len(resp.GetResources()))
		c.mu.Lock()
		for i, r := range resp.GetResources() {
			names[i] = r.GetName()
			c.versions[typ][r.GetName()] = r.GetVersion()
		}
		for _, n := range resp.GetRemovedResources() {
			delete(c.versions[typ], n)
		}
		c.mu.Unlock()
		c.record(typ, names, false, resp.GetRemovedResources())
		if resume {
			c.answeredOnResume(typ)
		}
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: resp.GetNonce()}); err != nil {
			return err
		}
		dep := map[string]string{resourcev3.ClusterType: resourcev3.EndpointType, resourcev3.ListenerType: resourcev3.RouteType}[typ]
		if dep == "" {
			continue
		}
		var sub, unsub []string
		c.mu.Lock()
		for _, n := range names {
			if !c.subs[dep][n] {
				c.subs[dep][n] = true
				sub = append(sub, n)
			}
		}
		for _, n := range resp.GetRemovedResources() {
			if c.subs[dep][n] {
				delete(c.subs[dep], n)
				unsub = append(unsub, n)
			}
		}
		c.mu.Unlock()
		if len(sub)+len(unsub) > 0 {
			if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: dep, ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub}); err != nil {
				return err
			}
		}
	}
}

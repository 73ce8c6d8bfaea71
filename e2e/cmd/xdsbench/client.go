package main

import (
	"context"
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
	c := &client{delta: delta, counts: map[string]int{}, seen: map[string]time.Time{}, complete: make(chan struct{}), want: want}
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
			var err error
			if delta {
				err = c.runDelta(ctx, node)
			} else {
				err = c.runSotW(ctx, node)
			}
			if ctx.Err() != nil || status.Code(err) == codes.Canceled {
				return // the run is over
			}
			c.mu.Lock()
			c.err = err
			c.reconnects++
			// A new stream is sent everything again; assignments are counted by name already.
			for _, typ := range []string{resourcev3.ClusterType, resourcev3.ListenerType, resourcev3.RouteType} {
				c.counts[typ] = 0
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

func (c *client) runDelta(ctx context.Context, node *corev3.Node) error {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType}); err != nil {
		return err
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ListenerType}); err != nil {
		return err
	}
	subs := map[string]map[string]bool{resourcev3.EndpointType: {}, resourcev3.RouteType: {}}
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		typ := resp.GetTypeUrl()
		names := make([]string, len(resp.GetResources()))
		for i, r := range resp.GetResources() {
			names[i] = r.GetName()
		}
		c.record(typ, names, false, resp.GetRemovedResources())
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: resp.GetNonce()}); err != nil {
			return err
		}
		dep := map[string]string{resourcev3.ClusterType: resourcev3.EndpointType, resourcev3.ListenerType: resourcev3.RouteType}[typ]
		if dep == "" {
			continue
		}
		var sub, unsub []string
		for _, n := range names {
			if !subs[dep][n] {
				subs[dep][n] = true
				sub = append(sub, n)
			}
		}
		for _, n := range resp.GetRemovedResources() {
			if subs[dep][n] {
				delete(subs[dep], n)
				unsub = append(unsub, n)
			}
		}
		if len(sub)+len(unsub) > 0 {
			if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: dep, ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub}); err != nil {
				return err
			}
		}
	}
}

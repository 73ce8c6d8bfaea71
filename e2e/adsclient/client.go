// Package adsclient is an xDS client that subscribes the way Envoy does: a unit-test harness, and
// the client scenarios' stand-in for Envoy where they do not run a real one (harness.StartEnvoy
// does): over one ADS stream, state-of-the-world or
// Delta, it subscribes to all Clusters and Listeners (wildcard), then to the
// ClusterLoadAssignments its EDS clusters name and the RouteConfigurations its listeners name.
// Every resource it receives is checked with ValidateAll(); a response with an invalid resource,
// or one the test told it to reject, is NACKed, everything else is ACKed.
package adsclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/translate"
)

// Options configure a Client.
type Options struct {
	NodeID string
	// Delta selects incremental xDS; the default is state-of-the-world.
	Delta bool
	// Metadata is added to the node (e.g. holdfast.io/client).
	Metadata map[string]any
	// Zone and Region are the node's locality, as Envoy's bootstrap sets them.
	Zone, Region string
	// Reject, if set, is asked about every valid resource received; a non-nil error NACKs the
	// response with it, the way an older Envoy rejects a field it does not know.
	Reject func(typeURL string, r Resource) error
	// NeverRead makes a client that subscribes and then never reads a response: a stuck peer.
	NeverRead bool
	// Reconnect makes a Delta client do what Envoy does when its stream to the control plane
	// fails: keep everything it holds, open a new stream, and say what it holds
	// (initial_resource_versions) for every subscription.
	Reconnect bool
	// Creds secure the connection (the default is plaintext).
	Creds credentials.TransportCredentials
}

// Resource is one received resource, decoded and validated.
type Resource struct {
	Name    string
	Message proto.Message
	Version string // Delta: the resource's version; SotW: the response's version
}

// State is what the client holds now, by type URL then name.
type State map[string]map[string]Resource

// Upstream returns the cluster or assignment (typ) of the service port whose listener is name:
// the resource named name, or name with the service's incarnation (translate.Naming.Upstream).
func (s State) Upstream(typ, name string) (Resource, bool) {
	if r, ok := s[typ][name]; ok {
		return r, true
	}
	for n, r := range s[typ] {
		if translate.ServiceOf(n) == name {
			return r, true
		}
	}
	return Resource{}, false
}

// Stats counts what the client did.
type Stats struct {
	Responses map[string]int
	ACKs      map[string]int
	NACKs     map[string]int
	// Invalid lists resources that failed ValidateAll, as "type/name: error".
	Invalid []string
	// APIListeners lists Listeners that carried an api_listener (Envoy rejects those over LDS).
	APIListeners []string
	// Deliveries counts how often each resource version was received, by "type name@version"
	// (Delta versions; SotW uses the response's version).
	Deliveries map[string]int
	// Removed lists, by type, the resources the client held that a Delta response removed.
	Removed map[string][]string
	// Streams counts the ADS streams the client opened.
	Streams int
}

// Client is a connected Envoy-like ADS client.
type Client struct {
	// set at construction, read-only
	opts Options
	conn *grpc.ClientConn
	node *corev3.Node

	// guarded by mu
	mu      sync.Mutex
	state   State
	stats   Stats
	changed chan struct{} // closed and replaced on every change
	err     error         // set when the stream ends

	cancel context.CancelFunc
	done   chan struct{}
}

// Dial connects to addr and starts the subscription in the background.
func Dial(addr string, opts Options) (*Client, error) {
	if opts.NodeID == "" {
		return nil, errors.New("adsclient: a node id is required")
	}
	md, err := structpb.NewStruct(opts.Metadata)
	if err != nil {
		return nil, fmt.Errorf("adsclient: metadata: %w", err)
	}
	creds := opts.Creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return nil, fmt.Errorf("adsclient: dial %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		opts:    opts,
		conn:    conn,
		node:    &corev3.Node{Id: opts.NodeID, Cluster: "test", UserAgentName: "envoy", Metadata: md, Locality: locality(opts.Zone, opts.Region)},
		state:   State{},
		stats:   Stats{Responses: map[string]int{}, ACKs: map[string]int{}, NACKs: map[string]int{}, Deliveries: map[string]int{}, Removed: map[string][]string{}},
		changed: make(chan struct{}),
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	for _, t := range resource.Served { // the order Envoy subscribes in
		c.state[t] = map[string]Resource{}
	}
	go func() {
		defer close(c.done)
		var err error
		switch {
		case opts.Delta && opts.Reconnect:
			for ctx.Err() == nil {
				if err = c.runDelta(ctx); ctx.Err() == nil {
					select {
					case <-ctx.Done():
					case <-time.After(100 * time.Millisecond):
					}
				}
			}
		case opts.Delta:
			err = c.runDelta(ctx)
		default:
			err = c.runSotW(ctx)
		}
		c.mu.Lock()
		c.err = err
		c.notifyLocked()
		c.mu.Unlock()
	}()
	return c, nil
}

// Close ends the stream and the connection.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	return c.conn.Close()
}

// State returns a copy of what the client holds.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := State{}
	for t, m := range c.state {
		out[t] = maps.Clone(m)
	}
	return out
}

// Stats returns a copy of the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{
		Responses: maps.Clone(c.stats.Responses), ACKs: maps.Clone(c.stats.ACKs), NACKs: maps.Clone(c.stats.NACKs),
		Invalid: slices.Clone(c.stats.Invalid), APIListeners: slices.Clone(c.stats.APIListeners),
		Deliveries: maps.Clone(c.stats.Deliveries), Removed: maps.Clone(c.stats.Removed), Streams: c.stats.Streams,
	}
}

// WaitFor blocks until cond holds for the client's state, the stream fails, or ctx is done.
func (c *Client) WaitFor(ctx context.Context, cond func(State) bool) error {
	for {
		c.mu.Lock()
		ch, err := c.changed, c.err
		c.mu.Unlock()
		if cond(c.State()) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("adsclient: stream ended: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

func (c *Client) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// decode unmarshals and validates one resource. Envoy rejects a whole response if any resource
// in it is invalid, so the caller NACKs on any error.
func (c *Client) decode(typeURL string, a *anypb.Any, version string) (Resource, error) {
	if a.GetTypeUrl() != typeURL {
		return Resource{}, fmt.Errorf("resource of type %s in a %s response", a.GetTypeUrl(), typeURL)
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		return Resource{}, err
	}
	v, ok := m.(interface{ ValidateAll() error })
	if !ok {
		return Resource{}, fmt.Errorf("%T has no validation", m)
	}
	name := cachev3.GetResourceName(m)
	c.mu.Lock()
	c.stats.Deliveries[typeURL+" "+name+"@"+version]++
	c.mu.Unlock()
	if err := v.ValidateAll(); err != nil {
		c.mu.Lock()
		c.stats.Invalid = append(c.stats.Invalid, fmt.Sprintf("%s/%s: %v", typeURL, name, err))
		c.mu.Unlock()
		return Resource{}, fmt.Errorf("%s %s: %w", typeURL, name, err)
	}
	if l, ok := m.(*listenerv3.Listener); ok && l.ApiListener != nil {
		c.mu.Lock()
		c.stats.APIListeners = append(c.stats.APIListeners, l.Name)
		c.mu.Unlock()
		return Resource{}, fmt.Errorf("listener %s: api_listener is accepted only from the bootstrap", l.Name)
	}
	r := Resource{Name: name, Message: m}
	if c.opts.Reject != nil {
		if err := c.opts.Reject(typeURL, r); err != nil {
			return Resource{}, fmt.Errorf("%s %s: %w", typeURL, name, err)
		}
	}
	return r, nil
}

// dependents returns the EDS and RDS names the client's clusters and listeners refer to.
func dependents(s State) (eds, rds []string) {
	for _, r := range s[resourcev3.ClusterType] {
		cl := r.Message.(*clusterv3.Cluster)
		if cl.GetType() == clusterv3.Cluster_EDS {
			n := cl.GetEdsClusterConfig().GetServiceName()
			if n == "" {
				n = cl.Name
			}
			eds = append(eds, n)
		}
	}
	for _, r := range s[resourcev3.ListenerType] {
		for _, fc := range r.Message.(*listenerv3.Listener).FilterChains {
			for _, f := range fc.Filters {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&hcm) == nil && hcm.GetRds() != nil {
					rds = append(rds, hcm.GetRds().GetRouteConfigName())
				}
			}
		}
	}
	slices.Sort(eds)
	slices.Sort(rds)
	return slices.Compact(eds), slices.Compact(rds)
}

func nackStatus(err error) *statuspb.Status {
	return &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
}

// runSotW runs a state-of-the-world ADS stream until ctx is done or the stream fails.
func (c *Client) runSotW(ctx context.Context) error {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	// Per type: the last accepted version and the names subscribed to (nil = wildcard).
	accepted := map[string]string{}
	subscribed := map[string][]string{}
	first := true
	send := func(typeURL, version, nonce string, names []string, nack error) error {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: typeURL, VersionInfo: version, ResponseNonce: nonce, ResourceNames: names}
		if first {
			req.Node, first = c.node, false
		}
		if nack != nil {
			req.ErrorDetail = nackStatus(nack)
		}
		if err := stream.Send(req); errors.Is(err, io.EOF) {
			// The server ended the stream: the reason is in its status, which Recv returns.
			_, err = stream.Recv()
			return err
		} else if err != nil {
			return err
		}
		return nil
	}
	for _, t := range []string{resourcev3.ClusterType, resourcev3.ListenerType} {
		if err := send(t, "", "", nil, nil); err != nil {
			return err
		}
	}
	if c.opts.NeverRead {
		return c.stall(ctx, stream)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		t := resp.GetTypeUrl()
		decoded, derr := c.decodeAll(t, resp.GetVersionInfo(), resp.GetResources())
		snapshot := c.record(t, derr, func(s map[string]Resource) {
			// State of the world: a Listener or Cluster response replaces everything of its
			// type; RDS and EDS responses may carry only what changed, and what the client no
			// longer subscribes to is dropped (as Envoy and grpc-go do).
			if t == resourcev3.ListenerType || t == resourcev3.ClusterType {
				clear(s)
			} else {
				for n := range s {
					if !slices.Contains(subscribed[t], n) {
						delete(s, n)
					}
				}
			}
			for _, r := range decoded {
				r.Version = resp.GetVersionInfo()
				s[r.Name] = r
			}
		})
		if derr != nil {
			if err := send(t, accepted[t], resp.GetNonce(), subscribed[t], derr); err != nil {
				return err
			}
			continue
		}
		accepted[t] = resp.GetVersionInfo()
		if err := send(t, accepted[t], resp.GetNonce(), subscribed[t], nil); err != nil {
			return err
		}
		// Follow references the way Envoy does: clusters → assignments, listeners → routes.
		eds, rds := dependents(snapshot)
		for dt, names := range map[string][]string{resourcev3.EndpointType: eds, resourcev3.RouteType: rds} {
			if _, ok := subscribed[dt]; ok && slices.Equal(subscribed[dt], names) {
				continue
			}
			if len(names) == 0 && subscribed[dt] == nil {
				continue
			}
			subscribed[dt] = names
			if err := send(dt, accepted[dt], "", names, nil); err != nil {
				return err
			}
		}
	}
}

// stall holds the stream open without reading until the server ends it or ctx is done. The
// server ending it shows as the stream's context being done.
func (c *Client) stall(ctx context.Context, stream grpc.ClientStream) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-stream.Context().Done():
		return fmt.Errorf("stream ended by the server: %w", context.Cause(stream.Context()))
	}
}

func (c *Client) decodeAll(typeURL, version string, as []*anypb.Any) ([]Resource, error) {
	var out []Resource
	var errs []error
	for _, a := range as {
		r, err := c.decode(typeURL, a, version)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// record counts a response of type t, applies it to the state of that type unless it is being
// NACKed (nackErr != nil), wakes waiters, and returns a copy of the whole state.
func (c *Client) record(t string, nackErr error, apply func(map[string]Resource)) State {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Responses[t]++
	if nackErr != nil {
		c.stats.NACKs[t]++
	} else {
		c.stats.ACKs[t]++
		apply(c.state[t])
	}
	c.notifyLocked()
	return c.stateLocked()
}

func (c *Client) stateLocked() State {
	out := State{}
	for t, m := range c.state {
		out[t] = maps.Clone(m)
	}
	return out
}

// runDelta runs an incremental ADS stream until ctx is done or the stream fails. What the
// client holds already (a reconnect) is announced as initial_resource_versions.
func (c *Client) runDelta(ctx context.Context) error {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	held := c.State()
	c.mu.Lock()
	c.stats.Streams++
	c.mu.Unlock()
	versions := func(t string, names ...string) map[string]string {
		out := map[string]string{}
		for n, r := range held[t] {
			if len(names) == 0 || slices.Contains(names, n) {
				out[n] = r.Version
			}
		}
		return out
	}
	first := true
	send := func(req *discoveryv3.DeltaDiscoveryRequest) error {
		if first {
			req.Node, first = c.node, false
		}
		if err := stream.Send(req); errors.Is(err, io.EOF) {
			// The server ended the stream: the reason is in its status, which Recv returns.
			_, err = stream.Recv()
			return err
		} else if err != nil {
			return err
		}
		return nil
	}
	for _, t := range []string{resourcev3.ClusterType, resourcev3.ListenerType} {
		// An empty subscription on the first request of a type is a wildcard subscription.
		if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, InitialResourceVersions: versions(t)}); err != nil {
			return err
		}
	}
	if c.opts.NeverRead {
		return c.stall(ctx, stream)
	}
	subscribed := map[string]map[string]bool{resourcev3.EndpointType: {}, resourcev3.RouteType: {}}
	eds, rds := dependents(held)
	for dt, names := range map[string][]string{resourcev3.EndpointType: eds, resourcev3.RouteType: rds} {
		if len(names) == 0 {
			continue
		}
		for _, n := range names {
			subscribed[dt][n] = true
		}
		if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: dt, ResourceNamesSubscribe: names, InitialResourceVersions: versions(dt, names...)}); err != nil {
			return err
		}
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		t := resp.GetTypeUrl()
		var decoded []Resource
		var errs []error
		for _, r := range resp.GetResources() {
			d, err := c.decode(t, r.GetResource(), r.GetVersion())
			if err == nil && d.Name != r.GetName() {
				err = fmt.Errorf("resource named %q carries %q", r.GetName(), d.Name)
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			d.Version = r.GetVersion()
			decoded = append(decoded, d)
		}
		derr := errors.Join(errs...)
		snapshot := c.record(t, derr, func(s map[string]Resource) {
			for _, d := range decoded {
				s[d.Name] = d
			}
			for _, n := range resp.GetRemovedResources() {
				if _, ok := s[n]; ok {
					c.stats.Removed[t] = append(c.stats.Removed[t], n)
				}
				delete(s, n)
			}
		})
		ack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: resp.GetNonce()}
		if derr != nil {
			ack.ErrorDetail = nackStatus(derr)
		}
		if err := send(ack); err != nil {
			return err
		}
		if derr != nil {
			continue
		}
		eds, rds := dependents(snapshot)
		for dt, names := range map[string][]string{resourcev3.EndpointType: eds, resourcev3.RouteType: rds} {
			want := map[string]bool{}
			for _, n := range names {
				want[n] = true
			}
			var sub, unsub []string
			for n := range want {
				if !subscribed[dt][n] {
					sub = append(sub, n)
				}
			}
			for n := range subscribed[dt] {
				if !want[n] {
					unsub = append(unsub, n)
				}
			}
			if len(sub) == 0 && len(unsub) == 0 {
				continue
			}
			subscribed[dt] = want
			if len(unsub) > 0 {
				c.mu.Lock()
				for _, n := range unsub {
					delete(c.state[dt], n)
				}
				c.mu.Unlock()
			}
			slices.Sort(sub)
			slices.Sort(unsub)
			if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: dt, ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub}); err != nil {
				return err
			}
		}
	}
}

func locality(zone, region string) *corev3.Locality {
	if zone == "" && region == "" {
		return nil
	}
	return &corev3.Locality{Zone: zone, Region: region}
}

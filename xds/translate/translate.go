// Package translate turns the resolver's model (the cache's view of services and endpoints)
// into xDS resources: a Listener, RouteConfiguration, Cluster and ClusterLoadAssignment per
// service port for proxyless gRPC, outbound_<port> listeners and route configurations for
// Envoy, each endpoint's priority as seen from each client locality. It validates what it
// builds (ValidateAll, plus the rules gRPC clients apply to what Holdfast emits), checks that
// every reference resolves, and hands serving a resource.Set per client kind (Builder, which
// translates only what changed). It is pure: no gRPC, no goroutines, no clock but the one it
// is given.
package translate

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/resource"
)

const (
	connectTimeout = 2 * time.Second
	// HTTPProtocolOptionsName is the typed_extension_protocol_options key of HTTP/2 upstreams.
	HTTPProtocolOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// Translator turns the plain-Go model into xDS resources. It is pure: the same input gives the
// same resources, byte for byte.
type Translator struct {
	Naming Naming
	// EnvoyListenAddress is the address Envoy's outbound_<port> listeners bind to.
	EnvoyListenAddress string
	// LocalityDefault is the locality policy of services that do not choose one
	// (resolver.LocalityRegion when empty).
	LocalityDefault string
}

// newAssignment builds a port's base assignment resource and, when clients in different
// places should see its endpoints at different priorities, what builds their variants. The
// base's version also covers what only the variants show (the policy, the hints), so that a
// change there reaches clients.
func (t *Translator) newAssignment(name string, s *resolver.Service, p *resolver.Port, cla *endpointv3.ClusterLoadAssignment) *resource.Resource {
	la := newLocalAssignment(name, t.localityMode(s), p.Endpoints)
	if la == nil {
		return resource.New(cla)
	}
	b := resource.MarshalDeterministic(cla)
	hashes := []uint64{resource.Hash(b), resource.Hash([]byte(la.mode))}
	for _, e := range la.eps {
		hashes = append(hashes, resource.Hash([]byte(strings.Join(e.ForZones, ","))))
	}
	r := resource.NewHashed(cla, b, resource.Combine(hashes))
	la.base, r.Variants = r, la
	return r
}

// serviceResources are the resources of one service, built once per *resolver.Service.
type serviceResources struct {
	src   *resolver.Service
	ports []portResources
}

// portResources are the resources of one service port, each with its content hash, computed
// once when the service is translated.
type portResources struct {
	port         int32
	cluster      *resource.Resource
	assignment   *resource.Resource
	grpcListener *resource.Resource
	grpcRoute    *resource.Resource
	envoyVHost   vhostEntry
}

// translateService builds and validates every resource of one service. A service whose
// resources fail validation is returned as an error and not published.
func (t *Translator) translateService(s *resolver.Service) (*serviceResources, error) {
	out := &serviceResources{src: s, ports: make([]portResources, 0, len(s.Ports))}
	for i := range s.Ports {
		p := &s.Ports[i]
		// The listener has the name clients dial; what it points to carries the incarnation.
		name := t.Naming.Upstream(s.Key, s.UID, p.Port)
		cluster, err := cluster(name, p)
		if err != nil {
			return nil, err
		}
		listener, err := grpcListener(t.Naming.Resource(s.Key, p.Port), name)
		if err != nil {
			return nil, err
		}
		// The port's shared Envoy listener must be valid too, so that a bad port is this
		// service's problem alone and never blocks outbound_<port> for the others.
		envoyL, err := envoyListener(t.EnvoyListenAddress, p.Port)
		if err != nil {
			return nil, err
		}
		cla := assignment(name, p.Endpoints, nil)
		grpcRoute := routeConfig(name, []*routev3.VirtualHost{virtualHost(name, []string{"*"}, name)})
		vhost := virtualHost(name, t.Naming.Domains(s.Key, p.Port), name)
		vhost.Routes[0].GetRoute().RetryPolicy = envoyRetryPolicy()
		for _, m := range []validator{cluster, cla, listener, grpcRoute, vhost, envoyL} {
			if err := m.ValidateAll(); err != nil {
				return nil, fmt.Errorf("service %s port %d: %w", s.Key, p.Port, err)
			}
		}
		// gRPC clients get the cluster, assignment, listener and route configuration too.
		for _, check := range []func() error{
			func() error { return checkGRPCCluster(cluster) },
			func() error { return checkGRPCAssignment(cla) },
			func() error { return checkGRPCListener(listener) },
			func() error { return checkGRPCRoutes(grpcRoute) },
		} {
			if err := check(); err != nil {
				return nil, fmt.Errorf("service %s port %d: not usable by gRPC clients: %w", s.Key, p.Port, err)
			}
		}
		out.ports = append(out.ports, portResources{
			port:         p.Port,
			cluster:      resource.New(cluster),
			assignment:   t.newAssignment(name, s, p, cla),
			grpcListener: resource.New(listener),
			grpcRoute:    resource.New(grpcRoute),
			envoyVHost:   newVHostEntry(vhost),
		})
	}
	return out, nil
}

type validator interface{ ValidateAll() error }

// ADSSource says "over the ADS stream this came on".
func ADSSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func toAny(m proto.Message) (*anypb.Any, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, fmt.Errorf("xds: marshal %T: %w", m, err)
	}
	return a, nil
}

// cluster is an EDS cluster over ADS. For Envoy it also says how to speak to the upstream:
// HTTP/2 when the port declares it, otherwise the protocol the downstream request used.
func cluster(name string, p *resolver.Port) (*clusterv3.Cluster, error) {
	opts := &upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
				HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
				Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
			},
		},
	}
	if speaksHTTP2(p) {
		opts.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		}
	}
	optsAny, err := toAny(opts)
	if err != nil {
		return nil, err
	}
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ADSSource(), ServiceName: name},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			HTTPProtocolOptionsName: optsAny,
		},
		OutlierDetection: outlierDetection(),
	}, nil
}

// outlierDetection makes priority failover happen for Envoy, which moves traffic to the next
// priority only as hosts of a priority become unhealthy, and with no active health checks
// only ejection makes them so. Envoy's defaults would not: consecutive gateway failures
// (connect failures, 502/503/504) are not enforced, and at most 10% of hosts may be ejected,
// so a dead zone stays in rotation. Here: three gateway failures or five 5xx in a row eject a
// host for 15 s (longer each time), checked every 5 s, up to every host. Success-rate
// ejection, which needs statistics over many hosts, is off. grpc-go (gRFC A50) ignores the
// consecutive counters and reads the failure-percentage rule: a host failing 85% of at
// least 50 requests in an interval is ejected, once the cluster has 5 hosts with that volume.
// grpc-go fails over between priorities by connectivity alone.
func outlierDetection() *clusterv3.OutlierDetection {
	return &clusterv3.OutlierDetection{
		Consecutive_5Xx:                    wrapperspb.UInt32(5),
		ConsecutiveGatewayFailure:          wrapperspb.UInt32(3),
		EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(100),
		Interval:                           durationpb.New(5 * time.Second),
		BaseEjectionTime:                   durationpb.New(15 * time.Second),
		MaxEjectionPercent:                 wrapperspb.UInt32(100),
		EnforcingSuccessRate:               wrapperspb.UInt32(0),
		FailurePercentageThreshold:         wrapperspb.UInt32(85),
		EnforcingFailurePercentage:         wrapperspb.UInt32(100),
		FailurePercentageMinimumHosts:      wrapperspb.UInt32(5),
		FailurePercentageRequestVolume:     wrapperspb.UInt32(50),
	}
}

// speaksHTTP2 reads the port's appProtocol, falling back to the port-name convention
// ("grpc", "grpc-web", "http2", "h2c" prefixes) that meshes use.
func speaksHTTP2(p *resolver.Port) bool {
	switch strings.ToLower(p.AppProtocol) {
	case "kubernetes.io/h2c", "grpc", "http2", "h2c":
		return true
	case "":
	default:
		return false
	}
	n := strings.ToLower(p.Name)
	for _, prefix := range []string{"grpc", "http2", "h2c"} {
		if n == prefix || strings.HasPrefix(n, prefix+"-") {
			return true
		}
	}
	return false
}

// assignment groups endpoints into localities by region and zone, at the priority prio gives
// each (nil: all at 0). Ready endpoints are HEALTHY; serving endpoints that are terminating are
// DRAINING (gRPC clients skip them, Envoy drains them) — unless the port has no ready endpoint
// anywhere: then they are HEALTHY, as kube-proxy falls back to serving-terminating endpoints
// (KEP-1669), because a port whose every endpoint is DRAINING is an outage for every gRPC
// client. The rest are left out. A port with no usable endpoint gets an empty assignment:
// clients then fail fast.
func assignment(name string, eps []resolver.Endpoint, prio func(i int) uint32) *endpointv3.ClusterLoadAssignment {
	type group struct {
		priority     uint32
		region, zone string
	}
	draining := corev3.HealthStatus_DRAINING
	if !slices.ContainsFunc(eps, func(e resolver.Endpoint) bool { return e.Health() == resolver.Healthy }) {
		draining = corev3.HealthStatus_HEALTHY
	}
	byGroup := map[group][]*endpointv3.LbEndpoint{}
	for i, e := range eps {
		var hs corev3.HealthStatus
		switch e.Health() {
		case resolver.Healthy:
			hs = corev3.HealthStatus_HEALTHY
		case resolver.Draining:
			hs = draining
		default:
			continue
		}
		lb := &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address:  SocketAddress(e.Address, portValue(e.Port)),
				Hostname: e.Hostname,
			}},
			HealthStatus: hs,
		}
		g := group{region: e.Region, zone: e.Zone}
		if prio != nil {
			g.priority = prio(i)
		}
		byGroup[g] = append(byGroup[g], lb)
	}
	groups := make([]group, 0, len(byGroup))
	for g := range byGroup {
		groups = append(groups, g)
	}
	slices.SortFunc(groups, func(a, b group) int {
		return cmp.Or(cmp.Compare(a.priority, b.priority), cmp.Compare(a.region, b.region), cmp.Compare(a.zone, b.zone))
	})
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: make([]*endpointv3.LocalityLbEndpoints, 0, len(groups))}
	for _, g := range groups {
		lbs := byGroup[g]
		cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{
			Locality:    &corev3.Locality{Region: g.region, Zone: g.zone},
			LbEndpoints: lbs,
			// grpc-go ignores localities without a weight; weigh them by size so that every
			// endpoint gets an equal share whatever its zone.
			LoadBalancingWeight: wrapperspb.UInt32(uint32(min(len(lbs), math.MaxUint32))), //nolint:gosec // bounded on the line
			Priority:            g.priority,
		})
	}
	return cla
}

// portValue converts a port for a SocketAddress. A negative port becomes one that validation
// rejects, rather than wrapping around to a plausible number.
func portValue(p int32) uint32 {
	if p < 0 {
		return math.MaxUint32
	}
	return uint32(p)
}

// SocketAddress is a TCP address.
func SocketAddress(addr string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       addr,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// httpConnectionManager routes through RDS over ADS with the router filter last (gRPC requires it).
func httpConnectionManager(statPrefix, routeName string) (*anypb.Any, error) {
	router, err := toAny(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	return toAny(&hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    ADSSource(),
			RouteConfigName: routeName,
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       wellknown.Router,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router},
		}},
	})
}

// grpcListener is the api_listener a proxyless gRPC client resolves "xds:///<name>" with,
// routed through the route configuration named route. Envoy accepts api_listener only from its
// bootstrap, so this is never sent to Envoy clients.
func grpcListener(name, route string) (*listenerv3.Listener, error) {
	hcm, err := httpConnectionManager(name, route)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: hcm}}, nil
}

// envoyListener is the socket listener "outbound_<port>" an Envoy sidecar routes a port through.
func envoyListener(addr string, port int32) (*listenerv3.Listener, error) {
	name := Outbound(port)
	hcm, err := httpConnectionManager(name, name)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:    name,
		Address: SocketAddress(addr, portValue(port)),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       wellknown.HTTPConnectionManager,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
			}},
		}},
	}, nil
}

func virtualHost(name string, domains []string, cluster string) *routev3.VirtualHost {
	return &routev3.VirtualHost{
		Name:    name,
		Domains: domains,
		Routes: []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
		}},
	}
}

// envoyRetryPolicy is the retry policy of Envoy's routes: a request that never reached a
// backend (the connection failed, or the backend refused the stream or reset it before the
// request was sent) is tried again on another host, up to twice. Only requests the backend
// never saw are retried, so it is safe for any method. Without it, a zone whose backends all
// die costs Envoy about a second of failed requests even after outlier detection ejected them:
// Envoy keeps choosing the ejected hosts for most requests for that second (envoy#28304,
// measured here: 105–133 failed RPCs at 200 a second; docs/clients.md).
func envoyRetryPolicy() *routev3.RetryPolicy {
	// The predicate has no fields: its Any is its type, with no bytes.
	previousHosts := &anypb.Any{TypeUrl: "type.googleapis.com/" + string((&previoushostsv3.PreviousHostsPredicate{}).ProtoReflect().Descriptor().FullName())}
	return &routev3.RetryPolicy{
		RetryOn:    "connect-failure,refused-stream,reset-before-request",
		NumRetries: wrapperspb.UInt32(2),
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
			Name:       "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: previousHosts},
		}},
		HostSelectionRetryMaxAttempts: 5,
	}
}

func routeConfig(name string, vhosts []*routev3.VirtualHost) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: vhosts}
}

// envoyPortResources builds the outbound_<port> listener and route configuration shared by
// every service with that port number, one virtual host per service (sorted by name).
// The route configuration's version is derived from its virtual hosts' hashes, and prev (the
// port's resources from the previous publish, or nil) is returned as is when they did not
// change, so that a big outbound_<port> is serialised only when it changes.
func (t *Translator) envoyPortResources(port int32, vhosts []vhostEntry, prev *portOutbound) (*portOutbound, error) {
	vhosts = slices.Clone(vhosts)
	slices.SortFunc(vhosts, func(a, b vhostEntry) int { return cmp.Compare(a.vhost.Name, b.vhost.Name) })
	hashes := make([]uint64, 0, len(vhosts)+1)
	hashes = append(hashes, uint64(portValue(port)))
	for _, v := range vhosts {
		hashes = append(hashes, v.hash)
	}
	hash := resource.Combine(hashes)
	if prev != nil && prev.route.Hash() == hash {
		return prev, nil
	}
	l, err := envoyListener(t.EnvoyListenAddress, port)
	if err != nil {
		return nil, err
	}
	if err := l.ValidateAll(); err != nil {
		return nil, fmt.Errorf("listener %s: %w", l.Name, err)
	}
	// Every virtual host was validated with its service; validating the configuration around
	// them is what is left (not 10,000 virtual hosts again on every change).
	if err := routeConfig(Outbound(port), nil).ValidateAll(); err != nil {
		return nil, fmt.Errorf("route %s: %w", Outbound(port), err)
	}
	hosts := make([]*routev3.VirtualHost, len(vhosts))
	for i, v := range vhosts {
		hosts[i] = v.vhost
	}
	rc := routeConfig(Outbound(port), hosts)
	// The route configuration's bytes are its name and its virtual hosts' bytes, each already
	// serialised with its service: 10,000 virtual hosts are not serialised again.
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendString(b, rc.Name)
	for _, v := range vhosts {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, v.bytes)
	}
	return &portOutbound{listener: resource.New(l), route: resource.NewHashed(rc, b, hash)}, nil
}

// portOutbound is the Envoy listener and route configuration of one port number.
type portOutbound struct {
	listener, route *resource.Resource
}

// vhostEntry is one service port's virtual host in Envoy's outbound_<port> route
// configuration, serialised once.
type vhostEntry struct {
	vhost *routev3.VirtualHost
	bytes []byte
	hash  uint64
}

func newVHostEntry(v *routev3.VirtualHost) vhostEntry {
	b := resource.MarshalDeterministic(v)
	return vhostEntry{vhost: v, bytes: b, hash: resource.Hash(b)}
}

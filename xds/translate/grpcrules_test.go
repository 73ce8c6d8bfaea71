package translate

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/internal/xdstest"
)

// grpcResources translates a two-zone service and returns what gRPC clients get for its port.
func grpcResources(t *testing.T) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, *listenerv3.Listener, *routev3.RouteConfiguration) {
	t.Helper()
	a, _ := xdstest.TwoServices()
	a.Ports[0].Endpoints = append(a.Ports[0].Endpoints, resolver.Endpoint{Address: "10.0.0.2", Port: 8080, Ready: true, Serving: true, Zone: "b"})
	r, err := testTranslator.translateService(a)
	if err != nil {
		t.Fatal(err)
	}
	p := r.ports[0]
	return proto.Clone(p.cluster.Msg).(*clusterv3.Cluster), proto.Clone(p.assignment.Msg).(*endpointv3.ClusterLoadAssignment),
		proto.Clone(p.grpcListener.Msg).(*listenerv3.Listener), proto.Clone(p.grpcRoute.Msg).(*routev3.RouteConfiguration)
}

func TestGRPCRules(t *testing.T) {
	hcmWith := func(t *testing.T, l *listenerv3.Listener, edit func(*hcmv3.HttpConnectionManager)) {
		var hcm hcmv3.HttpConnectionManager
		if err := l.GetApiListener().GetApiListener().UnmarshalTo(&hcm); err != nil {
			t.Fatal(err)
		}
		edit(&hcm)
		a, err := anypb.New(&hcm)
		if err != nil {
			t.Fatal(err)
		}
		l.ApiListener.ApiListener = a
	}
	tests := []struct {
		name    string
		edit    func(*testing.T, *clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, *listenerv3.Listener, *routev3.RouteConfiguration)
		wantErr string // "" = passes
	}{
		{"what Holdfast builds", func(*testing.T, *clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, *listenerv3.Listener, *routev3.RouteConfiguration) {
		}, ""},
		{"ring_hash (a policy Holdfast does not emit)", func(_ *testing.T, c *clusterv3.Cluster, _ *endpointv3.ClusterLoadAssignment, _ *listenerv3.Listener, _ *routev3.RouteConfiguration) {
			c.LbPolicy = clusterv3.Cluster_RING_HASH
		}, "lb_policy RING_HASH"},
		{"maglev", func(_ *testing.T, c *clusterv3.Cluster, _ *endpointv3.ClusterLoadAssignment, _ *listenerv3.Listener, _ *routev3.RouteConfiguration) {
			c.LbPolicy = clusterv3.Cluster_MAGLEV
		}, "lb_policy MAGLEV"},
		{"EDS from its own API source", func(_ *testing.T, c *clusterv3.Cluster, _ *endpointv3.ClusterLoadAssignment, _ *listenerv3.Listener, _ *routev3.RouteConfiguration) {
			c.EdsClusterConfig.EdsConfig = &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{}}}
		}, "ads or self"},
		{"STATIC cluster", func(_ *testing.T, c *clusterv3.Cluster, _ *endpointv3.ClusterLoadAssignment, _ *listenerv3.Listener, _ *routev3.RouteConfiguration) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		}, "cluster type STATIC"},
		{"outlier detection ejecting over 100%", func(_ *testing.T, c *clusterv3.Cluster, _ *endpointv3.ClusterLoadAssignment, _ *listenerv3.Listener, _ *routev3.RouteConfiguration) {
			c.OutlierDetection.MaxEjectionPercent = wrapperspb.UInt32(101)
		}, "max_ejection_percent 101"},
		{"outlier detection with a negative interval", func(_ *testing.T, c *clusterv3.Cluster, _ *endpointv3.ClusterLoadAssignment, _ *listenerv3.Listener, _ *routev3.RouteConfiguration) {
			c.OutlierDetection.Interval = durationpb.New(-time.Second)
		}, "outlier_detection.interval"},
		{"the same endpoint in two zones", func(_ *testing.T, _ *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment, _ *listenerv3.Listener, _ *routev3.RouteConfiguration) {
			cla.Endpoints[1].LbEndpoints = append(cla.Endpoints[1].LbEndpoints, cla.Endpoints[0].LbEndpoints[0])
		}, "10.0.0.1:8080 listed twice"},
		{"a missing priority", func(_ *testing.T, _ *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment, _ *listenerv3.Listener, _ *routev3.RouteConfiguration) {
			cla.Endpoints[1].Priority = 2
		}, "priority 1 missing"},
		{"priorities 0 and 1", func(_ *testing.T, _ *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment, _ *listenerv3.Listener, _ *routev3.RouteConfiguration) {
			cla.Endpoints[1].Priority = 1
		}, ""},
		{"a locality twice at one priority", func(_ *testing.T, _ *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment, _ *listenerv3.Listener, _ *routev3.RouteConfiguration) {
			cla.Endpoints[1].Locality = cla.Endpoints[0].Locality
		}, "twice at priority 0"},
		{"a locality without weight", func(_ *testing.T, _ *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment, _ *listenerv3.Listener, _ *routev3.RouteConfiguration) {
			cla.Endpoints[0].LoadBalancingWeight = nil
		}, "no weight"},
		{"an endpoint of weight 0", func(_ *testing.T, _ *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment, _ *listenerv3.Listener, _ *routev3.RouteConfiguration) {
			cla.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(0)
		}, "weight 0"},
		{"no router filter", func(t *testing.T, _ *clusterv3.Cluster, _ *endpointv3.ClusterLoadAssignment, l *listenerv3.Listener, _ *routev3.RouteConfiguration) {
			hcmWith(t, l, func(h *hcmv3.HttpConnectionManager) { h.HttpFilters = nil })
		}, "router filter last"},
		{"router not last", func(t *testing.T, _ *clusterv3.Cluster, _ *endpointv3.ClusterLoadAssignment, l *listenerv3.Listener, _ *routev3.RouteConfiguration) {
			hcmWith(t, l, func(h *hcmv3.HttpConnectionManager) {
				fault, err := anypb.New(&corev3.Node{})
				if err != nil {
					t.Fatal(err)
				}
				h.HttpFilters = append(h.HttpFilters, &hcmv3.HttpFilter{Name: "other", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: fault}})
			})
		}, "not the router"},
		{"a socket listener", func(_ *testing.T, _ *clusterv3.Cluster, _ *endpointv3.ClusterLoadAssignment, l *listenerv3.Listener, _ *routev3.RouteConfiguration) {
			l.ApiListener = nil
		}, "no api_listener"},
		{"a redirect", func(_ *testing.T, _ *clusterv3.Cluster, _ *endpointv3.ClusterLoadAssignment, _ *listenerv3.Listener, rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{}}
		}, "not a route"},
		{"weighted clusters of weight 0", func(_ *testing.T, _ *clusterv3.Cluster, _ *endpointv3.ClusterLoadAssignment, _ *listenerv3.Listener, rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "x", Weight: wrapperspb.UInt32(0)}}}}
		}, "add up to 0"},
		{"a cluster header", func(_ *testing.T, _ *clusterv3.Cluster, _ *endpointv3.ClusterLoadAssignment, _ *listenerv3.Listener, rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_ClusterHeader{ClusterHeader: "x"}
		}, "cluster specifier"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, cla, l, rc := grpcResources(t)
			tt.edit(t, c, cla, l, rc)
			var errs []string
			for _, err := range []error{checkGRPCCluster(c), checkGRPCAssignment(cla), checkGRPCListener(l), checkGRPCRoutes(rc)} {
				if err != nil {
					errs = append(errs, err.Error())
				}
			}
			got := strings.Join(errs, "; ")
			switch {
			case tt.wantErr == "" && got != "":
				t.Errorf("rejected: %s", got)
			case tt.wantErr != "" && !strings.Contains(got, tt.wantErr):
				t.Errorf("got %q, want an error containing %q", got, tt.wantErr)
			}
		})
	}
}

// A service whose resources gRPC clients could not use is not published: it keeps its previous
// resources and is reported, like one that fails Envoy's validation.
func TestGRPCRulesKeepPreviousResources(t *testing.T) {
	b := NewBuilder(testTranslator)
	a, _ := xdstest.TwoServices()
	b.update(testView(a).services, &Result{})
	before := b.built[a.Key]
	// The same address twice passes Envoy's validation; grpc-go NACKs the whole assignment.
	dup := xdstest.WithEndpoints(a, "10.0.0.7", "10.0.0.7")
	b.update(testView(dup).services, &Result{})
	if b.built[a.Key] != before {
		t.Fatal("resources gRPC cannot use replaced the service's previous ones")
	}
	if why := b.invalid[a.Key].why; !strings.Contains(why, "not usable by gRPC clients") || !strings.Contains(why, "10.0.0.7:8080 listed twice") {
		t.Errorf("reason = %q", why)
	}
}

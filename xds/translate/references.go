package translate

import (
	"fmt"

	"github.com/holdfast/holdfast/xds/resource"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// checkReferences verifies that a set of resources is closed under references: every Listener's
// route configuration exists, every route's cluster exists and every EDS cluster's assignment
// exists. go-control-plane's Snapshot.Consistent reads route names only from filter chains, not
// from api_listener, so it rejects correct gRPC snapshots; this check covers both client kinds.
//
// refs, if not nil, caches the route names of listeners already read: listeners are immutable
// and reused across publishes, so each is decoded once.
func checkReferences(res map[resourcev3.Type][]types.Resource, refs map[*listenerv3.Listener][]string) error {
	routes := names(res[resourcev3.RouteType])
	clusters := names(res[resourcev3.ClusterType])
	assignments := names(res[resourcev3.EndpointType])

	for _, r := range res[resourcev3.ListenerType] {
		l, ok := r.(*listenerv3.Listener)
		if !ok {
			return fmt.Errorf("listener resource of type %T", r)
		}
		names, ok := refs[l]
		if !ok {
			var err error
			if names, err = listenerRoutes(l); err != nil {
				return fmt.Errorf("listener %s: %w", l.Name, err)
			}
			if refs != nil {
				refs[l] = names
			}
		}
		for _, rn := range names {
			if _, ok := routes[rn]; !ok {
				return fmt.Errorf("listener %s: route configuration %q is not in the snapshot", l.Name, rn)
			}
		}
	}
	for _, r := range res[resourcev3.RouteType] {
		rc, ok := r.(*routev3.RouteConfiguration)
		if !ok {
			return fmt.Errorf("route resource of type %T", r)
		}
		for _, vh := range rc.VirtualHosts {
			for _, rt := range vh.Routes {
				if c := rt.GetRoute().GetCluster(); c != "" {
					if _, ok := clusters[c]; !ok {
						return fmt.Errorf("route %s virtual host %s: cluster %q is not in the snapshot", rc.Name, vh.Name, c)
					}
				}
			}
		}
	}
	for _, r := range res[resourcev3.ClusterType] {
		c, ok := r.(*clusterv3.Cluster)
		if !ok {
			return fmt.Errorf("cluster resource of type %T", r)
		}
		if c.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		want := c.GetEdsClusterConfig().GetServiceName()
		if want == "" {
			want = c.Name
		}
		if _, ok := assignments[want]; !ok {
			return fmt.Errorf("cluster %s: load assignment %q is not in the snapshot", c.Name, want)
		}
	}
	return nil
}

func names(rs []types.Resource) map[string]struct{} {
	out := make(map[string]struct{}, len(rs))
	for _, r := range rs {
		out[resource.NameOf(r)] = struct{}{}
	}
	return out
}

// listenerRoutes returns the RDS route configuration names a listener refers to, from its
// api_listener or from the HttpConnectionManager filters of its filter chains.
func listenerRoutes(l *listenerv3.Listener) ([]string, error) {
	var out []string
	add := func(a *anypb.Any) error {
		if a == nil || a.MessageName() != "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" {
			return nil
		}
		var hcm hcmv3.HttpConnectionManager
		if err := a.UnmarshalTo(&hcm); err != nil {
			return err
		}
		if n := hcm.GetRds().GetRouteConfigName(); n != "" {
			out = append(out, n)
		}
		return nil
	}
	if err := add(l.GetApiListener().GetApiListener()); err != nil {
		return nil, err
	}
	for _, fc := range l.FilterChains {
		for _, f := range fc.Filters {
			if err := add(f.GetTypedConfig()); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// Closed reports whether one client kind's resources, by type and name, are closed under
// references (see checkReferences): whether a client given exactly these could use all of
// them. It is what Holdfast checks before it publishes, for holdfast-agent to check what it
// received before it serves it.
func Closed(res map[resourcev3.Type]map[string]*resource.Resource) error {
	plain := make(map[resourcev3.Type][]types.Resource, len(res))
	for typ, rs := range res {
		l := make([]types.Resource, 0, len(rs))
		for _, r := range rs {
			l = append(l, r.Msg)
		}
		plain[typ] = l
	}
	return checkReferences(plain, nil)
}

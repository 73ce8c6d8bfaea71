package translate

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The rules below are what proxyless gRPC clients (grpc-go, and the gRFCs the other languages
// follow) need of a resource beyond Envoy's ValidateAll(): what they reject (a NACK, and the
// client keeps its previous config) and what they accept but cannot use. They cover what
// Holdfast emits, and nothing else: a resource that breaks one is not published, and the
// service keeps its previous resources. A new policy or field Holdfast starts to emit brings
// its rules (and their tests) with it.

// checkGRPCCluster applies gRPC's rules to a cluster (grpc-go xdsresource/unmarshal_cds.go):
// Holdfast's are round-robin EDS clusters over ADS, with outlier detection.
func checkGRPCCluster(c *clusterv3.Cluster) error {
	if c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN {
		return fmt.Errorf("lb_policy %v: Holdfast emits ROUND_ROBIN only", c.GetLbPolicy())
	}
	if err := checkGRPCOutlierDetection(c.GetOutlierDetection()); err != nil {
		return err
	}
	if c.GetType() != clusterv3.Cluster_EDS {
		return fmt.Errorf("cluster type %v: Holdfast emits EDS clusters only", c.GetType())
	}
	if eds := c.GetEdsClusterConfig().GetEdsConfig(); eds.GetAds() == nil && eds.GetSelf() == nil {
		return errors.New("eds_config: gRPC needs ads or self")
	}
	return nil
}

// checkGRPCAssignment applies gRPC's rules to an endpoint assignment (unmarshal_eds.go): every
// locality named, no locality twice at one priority, priorities 0..n-1 with none missing, no
// endpoint weight of zero, weight sums within uint32, and no address listed twice anywhere.
func checkGRPCAssignment(cla *endpointv3.ClusterLoadAssignment) error {
	seen := map[string]bool{}
	type localityKey struct {
		region, zone, subZone string
		priority              uint32
	}
	localities := map[localityKey]bool{}
	sums := map[uint32]uint64{}
	priorities := map[uint32]bool{}
	for _, le := range cla.GetEndpoints() {
		l := le.GetLocality()
		if l == nil {
			return errors.New("a locality without its ID")
		}
		w := le.GetLoadBalancingWeight().GetValue()
		if w == 0 {
			// gRPC ignores it: its endpoints would get no traffic from gRPC clients.
			return fmt.Errorf("locality %q has no weight: gRPC would ignore its endpoints", l.GetZone())
		}
		p := le.GetPriority()
		if sums[p] += uint64(w); sums[p] > math.MaxUint32 {
			return fmt.Errorf("locality weights at priority %d exceed %d", p, uint32(math.MaxUint32))
		}
		k := localityKey{l.GetRegion(), l.GetZone(), l.GetSubZone(), p}
		if localities[k] {
			return fmt.Errorf("locality %q twice at priority %d", l.GetZone(), p)
		}
		localities[k], priorities[p] = true, true
		var total uint64
		for _, e := range le.GetLbEndpoints() {
			weight := uint64(1)
			if ew := e.GetLoadBalancingWeight(); ew != nil {
				if ew.GetValue() == 0 {
					return errors.New("an endpoint with weight 0")
				}
				weight = uint64(ew.GetValue())
			}
			if total += weight; total > math.MaxUint32 {
				return fmt.Errorf("endpoint weights in locality %q exceed %d", l.GetZone(), uint32(math.MaxUint32))
			}
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			addr := net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
			if seen[addr] {
				return fmt.Errorf("endpoint %s listed twice", addr)
			}
			seen[addr] = true
		}
	}
	for i := range uint32(len(priorities)) { //nolint:gosec // at most one priority per locality
		if !priorities[i] {
			return fmt.Errorf("priority %d missing: gRPC needs priorities 0..%d", i, len(priorities)-1)
		}
	}
	return nil
}

// checkGRPCListener applies gRPC's rules to an api_listener (unmarshal_lds.go): an
// HttpConnectionManager with routes from ADS or inline, and the router filter last.
func checkGRPCListener(l *listenerv3.Listener) error {
	if l.GetApiListener() == nil {
		return errors.New("no api_listener: gRPC clients resolve through one")
	}
	var hcm hcmv3.HttpConnectionManager
	if err := l.GetApiListener().GetApiListener().UnmarshalTo(&hcm); err != nil {
		return fmt.Errorf("api_listener is not an HttpConnectionManager: %w", err)
	}
	switch rs := hcm.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_Rds:
		if rs.Rds.GetConfigSource().GetAds() == nil && rs.Rds.GetConfigSource().GetSelf() == nil {
			return errors.New("rds config_source: gRPC needs ads or self")
		}
	case *hcmv3.HttpConnectionManager_RouteConfig:
		if err := checkGRPCRoutes(rs.RouteConfig); err != nil {
			return err
		}
	default:
		return fmt.Errorf("route specifier %T: gRPC supports rds and route_config", rs)
	}
	filters := hcm.GetHttpFilters()
	if len(filters) == 0 {
		return errors.New("no http_filters: gRPC needs the router filter last")
	}
	names := map[string]bool{}
	for _, f := range filters {
		if names[f.GetName()] {
			return fmt.Errorf("http filter %q twice", f.GetName())
		}
		names[f.GetName()] = true
	}
	if !filters[len(filters)-1].GetTypedConfig().MessageIs(&routerv3.Router{}) {
		return errors.New("the last http filter is not the router")
	}
	return nil
}

// checkGRPCRoutes applies gRPC's rules to a route configuration (unmarshal_rds.go): every
// virtual host has domains, and every route forwards to a cluster or weighted clusters whose
// weights add up to more than zero (gRPC fails RPCs on any other action).
func checkGRPCRoutes(rc *routev3.RouteConfiguration) error {
	for _, vh := range rc.GetVirtualHosts() {
		if len(vh.GetDomains()) == 0 {
			return fmt.Errorf("virtual host %q without domains", vh.GetName())
		}
		for _, r := range vh.GetRoutes() {
			a := r.GetRoute()
			if a == nil {
				return fmt.Errorf("virtual host %q: a route whose action is not a route: gRPC fails its RPCs", vh.GetName())
			}
			switch cs := a.GetClusterSpecifier().(type) {
			case *routev3.RouteAction_Cluster:
			case *routev3.RouteAction_WeightedClusters:
				var sum uint64
				for _, wc := range cs.WeightedClusters.GetClusters() {
					sum += uint64(wc.GetWeight().GetValue())
				}
				if sum == 0 || sum > math.MaxUint32 {
					return fmt.Errorf("virtual host %q: weighted clusters add up to %d", vh.GetName(), sum)
				}
			default:
				return fmt.Errorf("virtual host %q: cluster specifier %T: gRPC supports cluster and weighted_clusters", vh.GetName(), cs)
			}
		}
	}
	return nil
}

// checkGRPCOutlierDetection applies gRFC A50's rules (unmarshal_cds.go): durations valid and
// not negative, percentages at most 100.
func checkGRPCOutlierDetection(od *clusterv3.OutlierDetection) error {
	if od == nil {
		return nil
	}
	for _, d := range []struct {
		field string
		v     *durationpb.Duration
	}{{"interval", od.GetInterval()}, {"base_ejection_time", od.GetBaseEjectionTime()}, {"max_ejection_time", od.GetMaxEjectionTime()}} {
		if d.v == nil {
			continue
		}
		if err := d.v.CheckValid(); err != nil || d.v.AsDuration() < 0 {
			return fmt.Errorf("outlier_detection.%s %v: gRPC needs a valid duration >= 0", d.field, d.v)
		}
	}
	for _, p := range []struct {
		field string
		v     *wrapperspb.UInt32Value
	}{
		{"max_ejection_percent", od.GetMaxEjectionPercent()}, {"enforcing_success_rate", od.GetEnforcingSuccessRate()},
		{"failure_percentage_threshold", od.GetFailurePercentageThreshold()}, {"enforcing_failure_percentage", od.GetEnforcingFailurePercentage()},
	} {
		if p.v != nil && p.v.GetValue() > 100 {
			return fmt.Errorf("outlier_detection.%s %d: gRPC needs at most 100", p.field, p.v.GetValue())
		}
	}
	return nil
}

package resource

import (
	"slices"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// Type is an xDS type URL.
type Type = resourcev3.Type

// The types Holdfast serves.
const (
	ClusterType  = resourcev3.ClusterType
	EndpointType = resourcev3.EndpointType
	ListenerType = resourcev3.ListenerType
	RouteType    = resourcev3.RouteType
)

// Served are the types Holdfast has resources of, in push order: clusters before their
// assignments, listeners before their routes (make before break). Read-only.
var Served = []Type{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

// Unserved are xDS types an Envoy may ask for over ADS that Holdfast has no resources of
// (SDS, RTDS, ECDS, VHDS, SRDS, LEDS, Thrift routes, rate-limit configs). They are answered as
// for any resource Holdfast does not have. Read-only.
var Unserved = []Type{
	resourcev3.SecretType, resourcev3.RuntimeType, resourcev3.ExtensionConfigType, resourcev3.VirtualHostType,
	resourcev3.ScopedRouteType, resourcev3.ThriftRouteType, resourcev3.RateLimitConfigType,
	resourcev3.APITypePrefix + "envoy.config.endpoint.v3.LbEndpoint",
}

// PushOrder is every type a stream may hold, in the order one wake-up pushes them. Read-only.
var PushOrder = append(slices.Clone(Served), Unserved...)

// IsXDS says whether typ is an xDS type: one Holdfast serves or one it answers as empty.
func IsXDS(typ Type) bool { return slices.Contains(PushOrder, typ) }

// IsServed says whether Holdfast has resources of typ.
func IsServed(typ Type) bool { return slices.Contains(Served, typ) }

// Short is a type's short name (listener, route, cluster, endpoint), for metrics and logs.
func Short(t Type) string {
	switch t {
	case resourcev3.ListenerType:
		return "listener"
	case resourcev3.RouteType:
		return "route"
	case resourcev3.ClusterType:
		return "cluster"
	case resourcev3.EndpointType:
		return "endpoint"
	}
	return t
}

// Set is what one translation hands to serving: every client kind's resources, by type, each
// list in a stable order.
type Set map[Kind]map[Type][]*Resource

package resource

import corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

// Locality is where a client runs, from its xDS node (set by its bootstrap).
type Locality struct {
	Region, Zone string
}

// LocalityOf returns an xDS node's locality.
func LocalityOf(n *corev3.Node) Locality {
	return Locality{Region: n.GetLocality().GetRegion(), Zone: n.GetLocality().GetZone()}
}

package resource

import corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

// ClusterMetadataKey is the node metadata key by which a client says which Kubernetes cluster
// it runs in (holdfast bootstrap --cluster-id): cluster-set services order their endpoints by it.
const ClusterMetadataKey = "holdfast.io/cluster"

// Locality is where a client runs, from its xDS node (set by its bootstrap).
type Locality struct {
	Region, Zone string
	// Cluster is the ID of the client's Kubernetes cluster, "" when it does not say.
	Cluster string
}

// LocalityOf returns an xDS node's locality.
func LocalityOf(n *corev3.Node) Locality {
	return Locality{Region: n.GetLocality().GetRegion(), Zone: n.GetLocality().GetZone(),
		Cluster: n.GetMetadata().GetFields()[ClusterMetadataKey].GetStringValue()}
}

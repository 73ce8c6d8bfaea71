// Package resolver turns Kubernetes Services and EndpointSlices into a plain-Go model of what is
// routable: one Service per Kubernetes Service, with the endpoints of each of its ports. It owns
// the watches on the API server and knows nothing about xDS.
package resolver

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// Key names a Service.
type Key struct {
	Namespace string
	Name      string
	// ClusterSet marks the multi-cluster service (Kubernetes MCS API) that merges what every
	// cluster exports under this namespace and name, reached as
	// <name>.<namespace>.svc.clusterset.local. Without it the key names the home cluster's
	// own Service.
	ClusterSet bool `json:",omitempty"`
}

// ClusterSetDomain is the domain of multi-cluster services' names (KEP-1645).
const ClusterSetDomain = "clusterset.local"

func (k Key) String() string {
	if k.ClusterSet {
		return k.Namespace + "/" + k.Name + "@" + ClusterSetDomain
	}
	return k.Namespace + "/" + k.Name
}

// Compare orders keys by namespace, then name, a cluster's own service before the cluster
// set's.
func (k Key) Compare(o Key) int {
	if c := cmp.Compare(k.Namespace, o.Namespace); c != 0 {
		return c
	}
	if c := cmp.Compare(k.Name, o.Name); c != 0 {
		return c
	}
	switch {
	case k.ClusterSet == o.ClusterSet:
		return 0
	case o.ClusterSet:
		return -1
	}
	return 1
}

// Service is the routable view of one Kubernetes Service. Values are immutable once published:
// a change produces a new *Service, an unchanged service keeps its pointer, so consumers can
// cache work per pointer.
type Service struct {
	Key
	// UID is the Kubernetes Service's UID: which incarnation of the name this is. A service
	// deleted and created again has a new one, and clients are shown the difference.
	UID string `json:",omitempty"`
	// Created is when the Kubernetes Service was created: its age, which a restart of Holdfast
	// does not reset.
	Created time.Time `json:",omitzero"`
	// Headless is true for services with clusterIP None. Their endpoints are served the same way.
	Headless bool
	// Ports holds the service's TCP ports, sorted by port number.
	Ports []Port
	// Origin says which Kubernetes objects this state was built from, and when.
	Origin Origin `json:",omitzero"`
	// Locality is the service's holdfast.io/locality annotation (LocalityOff, LocalityZone or
	// LocalityRegion), "" when it has none or an invalid one.
	Locality string `json:",omitempty"`
	// TrafficDistribution is the service's spec.trafficDistribution, if set.
	TrafficDistribution string `json:",omitempty"`
	// ExportedAt is when the service's ServiceExport (MCS API) was created, zero when it is
	// not exported or exports are not watched. The oldest export wins a conflict between
	// clusters' definitions (KEP-1645).
	ExportedAt time.Time `json:",omitzero"`
	// Conflicts says, for a cluster-set service, where clusters' definitions disagree and
	// which one won (KEP-1645's rules), sorted; empty when they agree.
	Conflicts []string `json:",omitempty"`
}

// Exported says whether the service has a ServiceExport in its cluster.
func (s *Service) Exported() bool { return !s.ExportedAt.IsZero() }

// ValidUID says whether uid looks like what the API server gives (a UUID): at most 64 letters,
// digits and dashes. Anything else did not come from it.
func ValidUID(uid string) bool {
	if len(uid) > 64 {
		return false
	}
	for _, c := range []byte(uid) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && c != '-' {
			return false
		}
	}
	return true
}

// LocalityAnnotation lets a service choose how its endpoints are ordered by closeness to each
// client: LocalityOff, LocalityZone or LocalityRegion.
const LocalityAnnotation = "holdfast.io/locality"

// Locality policies a service can ask for.
const (
	// LocalityOff serves every endpoint at one priority.
	LocalityOff = "off"
	// LocalityZone prefers the client's zone, then everything else.
	LocalityZone = "zone"
	// LocalityRegion prefers the client's zone, then its region, then everything else.
	LocalityRegion = "region"
)

// Origin is the provenance of a Service's state: the resourceVersions of the objects it was
// built from and when the Kubernetes event that produced this state reached Holdfast (the start
// of the push latency Holdfast measures up to each client's ACK). It is for operators;
// routing ignores it.
type Origin struct {
	ServiceVersion string          `json:",omitempty"`
	Slices         []ObjectVersion `json:",omitempty"` // sorted by name
	ObservedAt     time.Time       `json:",omitzero"`
}

// ObjectVersion names one object at one resourceVersion.
type ObjectVersion struct {
	Name            string
	ResourceVersion string
}

// EndpointCount counts the endpoints of all ports, in any condition.
func (s *Service) EndpointCount() int {
	n := 0
	for _, p := range s.Ports {
		n += len(p.Endpoints)
	}
	return n
}

// usableCount counts endpoints that get traffic or drain.
func (s *Service) usableCount() int {
	n := 0
	for _, p := range s.Ports {
		for _, e := range p.Endpoints {
			if e.Health() != Excluded {
				n++
			}
		}
	}
	return n
}

// Port is one service port and the endpoints that serve it.
type Port struct {
	Name string
	Port int32
	// AppProtocol is the port's appProtocol, if set (e.g. "kubernetes.io/h2c", "grpc").
	AppProtocol string
	// Endpoints is sorted by address, then port; each address:port appears once.
	Endpoints []Endpoint
	// Unmatched says why the port has no endpoint although the service has EndpointSlices: none
	// of them has a port of this name. Kubernetes allows it; the port is served empty.
	Unmatched string `json:",omitempty"`
}

// Endpoint is one backend address of a port, with the conditions Kubernetes reported for it.
type Endpoint struct {
	Address string
	// Port is the target port on the endpoint (from the EndpointSlice, not the service port).
	Port        int32
	Ready       bool
	Serving     bool
	Terminating bool
	// Zone is the endpoint's zone: the EndpointSlice's, or its Node's topology.kubernetes.io/zone
	// label when the slice has none.
	Zone     string
	NodeName string
	Hostname string
	// Region is its Node's topology.kubernetes.io/region label ("" when Nodes are not watched).
	Region string `json:",omitempty"`
	// ForZones is the EndpointSlice's hints.forZones: the zones whose clients should use it.
	ForZones []string `json:",omitempty"`
	// Cluster is the ID of the cluster the endpoint is in; set on cluster-set services'
	// endpoints only (a cluster's own service is all in that cluster).
	Cluster string `json:",omitempty"`
}

// Health says how an endpoint should be used.
type Health int

const (
	// Excluded endpoints receive no traffic and are not served.
	Excluded Health = iota
	// Healthy endpoints receive new traffic.
	Healthy
	// Draining endpoints are still serving while terminating: finish what is in flight, no new traffic.
	Draining
)

// Health maps Kubernetes endpoint conditions to how the endpoint should be used.
func (e Endpoint) Health() Health {
	switch {
	case e.Ready:
		return Healthy
	case e.Serving && e.Terminating:
		return Draining
	default:
		return Excluded
	}
}

// HostPort returns "address:port", bracketing IPv6 addresses.
func (e Endpoint) HostPort() string {
	for i := 0; i < len(e.Address); i++ {
		if e.Address[i] == ':' {
			return fmt.Sprintf("[%s]:%d", e.Address, e.Port)
		}
	}
	return fmt.Sprintf("%s:%d", e.Address, e.Port)
}

// Resolution is the complete routable view at one moment. It is immutable: the resolver publishes
// a new Resolution for every change, sharing the *Service values that did not change.
type Resolution struct {
	Services map[Key]*Service
	// Synced is true once every watched source has completed its initial list.
	Synced bool
	// UnhealthyAt says, per watched namespace ("" for all namespaces), when its source was last
	// stale or listed afresh after a restart; zero if never. A withdrawal that arrives right
	// after that deserves suspicion.
	UnhealthyAt map[string]time.Time
	// Sources gives the state of each watched namespace's source ("" for all namespaces).
	Sources map[string]SourceState
	// Degraded lists the services kept at their last good state because their newest input had
	// nothing usable, with the reason.
	Degraded map[Key]string
	// Home is the ID of the cluster whose sources Sources holds, when several clusters are
	// merged ("" otherwise); Remote holds the other clusters' sources, by cluster ID and
	// namespace.
	Home   string                            `json:",omitempty"`
	Remote map[string]map[string]SourceState `json:",omitempty"`
}

// Healthy says whether every source, of every cluster, is live right now.
func (r Resolution) Healthy() bool {
	for _, st := range r.Sources {
		if st != Live {
			return false
		}
	}
	for _, sources := range r.Remote {
		for _, st := range sources {
			if st != Live {
				return false
			}
		}
	}
	return true
}

// SourceIn returns the state of cluster's source for namespace ns; a cluster that is not
// merged (any more) is Stale: what is still served of it is the last it saw.
func (r Resolution) SourceIn(cluster, ns string) SourceState {
	if cluster == "" || cluster == r.Home {
		return r.SourceOf(ns)
	}
	sources, ok := r.Remote[cluster]
	if !ok {
		return Stale
	}
	if st, ok := sources[ns]; ok {
		return st
	}
	if st, ok := sources[""]; ok {
		return st
	}
	return Stale
}

// SourceOf returns the state of the source that watches namespace ns.
func (r Resolution) SourceOf(ns string) SourceState {
	if st, ok := r.Sources[ns]; ok {
		return st
	}
	return r.Sources[""]
}

// SortedKeys returns the service keys in a stable order.
func (r Resolution) SortedKeys() []Key {
	keys := make([]Key, 0, len(r.Services))
	for k := range r.Services {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, Key.Compare)
	return keys
}

package translate

import (
	"slices"
	"sync"

	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/resource"
)

// Priorities a client sees an endpoint at, before they are made contiguous. An endpoint is in
// the client's own cluster when it has no cluster (a cluster's own service), when the client
// does not say its cluster, or when the clusters match: traffic leaves the client's cluster
// only when nothing there is usable, and within each cluster the service's locality policy
// orders by zone and region.
const (
	tierZone        = iota // own cluster, the client's zone (or hinted for it)
	tierRegion             // own cluster, the client's region
	tierCluster            // own cluster, elsewhere
	tierOtherRegion        // another cluster in the client's region
	tierRest               // another cluster elsewhere
	tiers
)

// localityMode is the policy that orders a service's endpoints for each client: its
// annotation, else its trafficDistribution (PreferClose and its aliases ask for closeness),
// else the Translator's default.
func (t *Translator) localityMode(s *resolver.Service) string {
	if s.Locality != "" {
		return s.Locality
	}
	switch s.TrafficDistribution {
	case "PreferClose", "PreferSameZone", "PreferSameNode":
		return resolver.LocalityRegion
	}
	if t.LocalityDefault == "" {
		return resolver.LocalityRegion
	}
	return t.LocalityDefault
}

// localAssignment is what a service port's ClusterLoadAssignment looks like from different
// localities. The base resource (every endpoint at priority 0) is built with the service;
// a variant is built the first time a client locality needs it, once for all clients and
// snapshots that share the service's state, and only when it differs from the base.
type localAssignment struct {
	// set at construction, read-only
	name   string
	mode   string
	eps    []resolver.Endpoint // the usable ones, as in the base
	hinted bool                // every endpoint has hints: zones match by hints.forZones
	// zones, regions and clusters a client can be in to see something other than the base,
	// sorted.
	zones, regions, clusters []string
	base                     *resource.Resource

	// guarded by mu
	mu       sync.Mutex
	variants map[string]*resource.Resource // by the priorities of eps, as bytes
}

// newLocalAssignment returns nil when no client can see anything but the base: the policy is
// off and the endpoints are all in one cluster, or every endpoint is in the same place.
func newLocalAssignment(name, mode string, eps []resolver.Endpoint) *localAssignment {
	usable := make([]resolver.Endpoint, 0, len(eps))
	hinted := true
	for _, e := range eps {
		if e.Health() == resolver.Excluded {
			continue
		}
		usable = append(usable, e)
		hinted = hinted && len(e.ForZones) > 0
	}
	if len(usable) < 2 {
		return nil
	}
	la := &localAssignment{name: name, mode: mode, eps: usable, hinted: hinted}
	for _, e := range usable {
		if e.Cluster != "" {
			la.clusters = append(la.clusters, e.Cluster)
		}
		switch {
		case mode == resolver.LocalityOff:
		case hinted:
			la.zones = append(la.zones, e.ForZones...)
		case e.Zone != "":
			la.zones = append(la.zones, e.Zone)
		}
		if mode == resolver.LocalityRegion && e.Region != "" {
			la.regions = append(la.regions, e.Region)
		}
	}
	slices.Sort(la.zones)
	la.zones = slices.Compact(la.zones)
	slices.Sort(la.regions)
	la.regions = slices.Compact(la.regions)
	slices.Sort(la.clusters)
	la.clusters = slices.Compact(la.clusters)
	if len(la.zones) == 0 && len(la.regions) == 0 && len(la.clusters) == 0 {
		return nil
	}
	return la
}

// signature says which variant of the assignment a client at loc gets: the contiguous
// priority of every endpoint; ok is false when that is the base (one priority).
func (la *localAssignment) signature(loc resource.Locality) (sig []byte, ok bool) {
	if _, found := slices.BinarySearch(la.clusters, loc.Cluster); !found {
		loc.Cluster = "" // a cluster no endpoint is in: as if the client did not say
	}
	sig = make([]byte, len(la.eps))
	var present [tiers]bool
	for i, e := range la.eps {
		var zone, region bool
		switch {
		case la.mode == resolver.LocalityOff || loc.Zone == "":
		case la.hinted:
			zone = slices.Contains(e.ForZones, loc.Zone)
		default:
			zone = e.Zone == loc.Zone
		}
		region = la.mode == resolver.LocalityRegion && loc.Region != "" && e.Region == loc.Region
		own := e.Cluster == "" || loc.Cluster == "" || e.Cluster == loc.Cluster
		var t byte
		switch {
		case own && zone:
			t = tierZone
		case own && region:
			t = tierRegion
		case own:
			t = tierCluster
		case region:
			t = tierOtherRegion
		default:
			t = tierRest
		}
		sig[i] = t
		present[t] = true
	}
	// Priorities must be contiguous (gRPC NACKs a gap): renumber the tiers present.
	var renumber [tiers]byte
	n := byte(0)
	for t, p := range present {
		if p {
			renumber[t] = n
			n++
		}
	}
	if n < 2 {
		return nil, false
	}
	for i := range sig {
		sig[i] = renumber[sig[i]]
	}
	return sig, true
}

// Zones implements resource.Variants.
func (la *localAssignment) Zones() []string { return la.zones }

// Regions implements resource.Variants.
func (la *localAssignment) Regions() []string { return la.regions }

// Clusters implements resource.Variants.
func (la *localAssignment) Clusters() []string { return la.clusters }

// For implements resource.Variants: the resource a client at loc gets.
func (la *localAssignment) For(loc resource.Locality) *resource.Resource {
	sig, ok := la.signature(loc)
	if !ok {
		return la.base
	}
	la.mu.Lock()
	defer la.mu.Unlock()
	if r, ok := la.variants[string(sig)]; ok {
		return r
	}
	cla := assignment(la.name, la.eps, func(i int) uint32 { return uint32(sig[i]) })
	r := la.base // a variant that fails validation is not served; the base is (it passed)
	if cla.ValidateAll() == nil && checkGRPCAssignment(cla) == nil {
		r = resource.New(cla)
	}
	if la.variants == nil {
		la.variants = map[string]*resource.Resource{}
	}
	la.variants[string(sig)] = r
	return r
}

package xds

import (
	"maps"
	"slices"
	"sync"
	"weak"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/holdfast/holdfast/resolver"
)

// Locality is where a client runs, from its xDS node (set by its bootstrap).
type Locality struct {
	Region, Zone string
}

func localityOf(n *corev3.Node) Locality {
	return Locality{Region: n.GetLocality().GetRegion(), Zone: n.GetLocality().GetZone()}
}

// Priorities a client sees an endpoint at, before they are made contiguous.
const (
	tierZone   = 0 // in the client's zone (or hinted for it)
	tierRegion = 1 // in the client's region
	tierRest   = 2
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
	// zones and regions a client can be in to see something other than the base, sorted.
	zones, regions []string
	base           *Resource

	// guarded by mu
	mu       sync.Mutex
	variants map[string]*Resource // by the priorities of eps, as bytes
}

// newLocalAssignment returns nil when no client can see anything but the base: the policy is
// off, or every endpoint is in the same place.
func newLocalAssignment(name, mode string, eps []resolver.Endpoint) *localAssignment {
	if mode == resolver.LocalityOff {
		return nil
	}
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
		if hinted {
			la.zones = append(la.zones, e.ForZones...)
		} else if e.Zone != "" {
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
	if len(la.zones) == 0 && len(la.regions) == 0 {
		return nil
	}
	return la
}

// signature says which variant of the assignment a client at loc gets: the contiguous
// priority of every endpoint; ok is false when that is the base (one priority).
func (la *localAssignment) signature(loc Locality) (sig []byte, ok bool) {
	sig = make([]byte, len(la.eps))
	var present [3]bool
	for i, e := range la.eps {
		t := byte(tierRest)
		switch {
		case loc.Zone != "" && la.hinted && slices.Contains(e.ForZones, loc.Zone):
			t = tierZone
		case loc.Zone != "" && !la.hinted && e.Zone == loc.Zone:
			t = tierZone
		case la.mode == resolver.LocalityRegion && loc.Region != "" && e.Region == loc.Region:
			t = tierRegion
		}
		sig[i] = t
		present[t] = true
	}
	// Priorities must be contiguous (gRPC NACKs a gap): renumber the tiers present.
	var renumber [3]byte
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

// forLocality returns the resource a client at loc gets.
func (la *localAssignment) forLocality(loc Locality) *Resource {
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
		r = newResource(cla)
	}
	if la.variants == nil {
		la.variants = map[string]*Resource{}
	}
	la.variants[string(sig)] = r
	return r
}

// localized holds an endpoint type index's variants by client locality, built on first use
// and shared by every stream at that locality.
type localized struct {
	// prev is the previous publish's, to record what changed per locality (weak: indexes do
	// not chain in memory).
	prev weak.Pointer[localized]

	once           sync.Once
	zones, regions map[string]bool // every zone and region a variant depends on

	mu    sync.Mutex
	byLoc map[Locality]*typeIndex
}

// at returns the index a client at loc is served from base: base itself when no resource
// looks different from there.
func (l *localized) at(base *typeIndex, loc Locality) *typeIndex {
	l.once.Do(func() {
		l.zones, l.regions = map[string]bool{}, map[string]bool{}
		for _, r := range base.list {
			if la := r.local; la != nil {
				for _, z := range la.zones {
					l.zones[z] = true
				}
				for _, rg := range la.regions {
					l.regions[rg] = true
				}
			}
		}
	})
	// Clients in places no endpoint is in see the same as each other: one variant for all.
	if !l.zones[loc.Zone] {
		loc.Zone = ""
	}
	if !l.regions[loc.Region] {
		loc.Region = ""
	}
	if loc == (Locality{}) {
		return base
	}
	if idx := l.get(loc); idx != nil {
		return idx
	}
	list := make([]*Resource, len(base.list))
	differs := false
	for i, r := range base.list {
		list[i] = r
		if r.local != nil {
			list[i] = r.local.forLocality(loc)
			differs = differs || list[i] != r
		}
	}
	idx := base
	if differs {
		idx = newTypeIndex(list)
		idx.eventAt = base.eventAt
		if p := l.prev.Value(); p != nil {
			if old := p.get(loc); old != nil {
				if old.version == idx.version && len(old.list) == len(idx.list) {
					idx = old
				} else {
					idx.since(old)
				}
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if got, ok := l.byLoc[loc]; ok {
		return got // another stream built it meanwhile
	}
	if l.byLoc == nil {
		l.byLoc = map[Locality]*typeIndex{}
	}
	l.byLoc[loc] = idx
	return idx
}

func (l *localized) get(loc Locality) *typeIndex {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byLoc[loc]
}

// at returns the index a client at loc is served: idx, or its variant for loc.
func (idx *typeIndex) at(loc Locality) *typeIndex {
	if idx.local == nil || loc == (Locality{}) {
		return idx
	}
	return idx.local.at(idx, loc)
}

// localize gives an endpoint index built by the publisher its per-locality variants, linked
// to prev's (the index it replaces, or nil).
func (idx *typeIndex) localize(prev *typeIndex) {
	for _, r := range idx.list {
		if r.local != nil {
			idx.local = &localized{}
			break
		}
	}
	if idx.local != nil && prev != nil && prev.local != nil {
		idx.local.prev = weak.Make(prev.local)
	}
}

// For returns what a client with this node is served: s with its endpoint assignments as
// the client's locality sees them.
func (s *Snapshot) For(n *corev3.Node) *Snapshot {
	if s == nil {
		return nil
	}
	idx, ok := s.types[resourcev3.EndpointType]
	if !ok {
		return s
	}
	at := idx.at(localityOf(n))
	if at == idx {
		return s
	}
	out := &Snapshot{types: maps.Clone(s.types)}
	out.types[resourcev3.EndpointType] = at
	return out
}

package serve

import (
	"maps"
	"sync"
	"weak"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/holdfast/holdfast/xds/resource"
)

// localized holds an endpoint type index's variants by client locality, built on first use
// and shared by every stream at that locality.
type localized struct {
	// prev is the previous publish's, to record what changed per locality (weak: indexes do
	// not chain in memory).
	prev weak.Pointer[localized]

	once                     sync.Once
	zones, regions, clusters map[string]bool // every zone, region and cluster a variant depends on

	mu    sync.Mutex
	byLoc map[resource.Locality]*typeIndex
}

// at returns the index a client at loc is served from base: base itself when no resource
// looks different from there.
func (l *localized) at(base *typeIndex, loc resource.Locality) *typeIndex {
	l.once.Do(func() {
		l.zones, l.regions, l.clusters = map[string]bool{}, map[string]bool{}, map[string]bool{}
		for _, r := range base.list {
			if v := r.Variants; v != nil {
				for _, z := range v.Zones() {
					l.zones[z] = true
				}
				for _, rg := range v.Regions() {
					l.regions[rg] = true
				}
				for _, c := range v.Clusters() {
					l.clusters[c] = true
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
	if !l.clusters[loc.Cluster] {
		loc.Cluster = ""
	}
	if loc == (resource.Locality{}) {
		return base
	}
	if idx := l.get(loc); idx != nil {
		return idx
	}
	list := make([]*resource.Resource, len(base.list))
	differs := false
	for i, r := range base.list {
		list[i] = r
		if r.Variants != nil {
			list[i] = r.Variants.For(loc)
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
		l.byLoc = map[resource.Locality]*typeIndex{}
	}
	l.byLoc[loc] = idx
	return idx
}

func (l *localized) get(loc resource.Locality) *typeIndex {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byLoc[loc]
}

// at returns the index a client at loc is served: idx, or its variant for loc.
func (idx *typeIndex) at(loc resource.Locality) *typeIndex {
	if idx.local == nil || loc == (resource.Locality{}) {
		return idx
	}
	return idx.local.at(idx, loc)
}

// localize gives an endpoint index built by the publisher its per-locality variants, linked
// to prev's (the index it replaces, or nil).
func (idx *typeIndex) localize(prev *typeIndex) {
	for _, r := range idx.list {
		if r.Variants != nil {
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
	idx, ok := s.types[resource.EndpointType]
	if !ok {
		return s
	}
	at := idx.at(resource.LocalityOf(n))
	if at == idx {
		return s
	}
	out := &Snapshot{types: maps.Clone(s.types)}
	out.types[resource.EndpointType] = at
	return out
}

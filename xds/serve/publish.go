package serve

import (
	"time"

	"github.com/holdfast/holdfast/xds/resource"
)

// Publish makes set what clients are served, and wakes every stream. Each kind's resources of
// each type are indexed; a type whose resources did not change keeps its index (streams skip
// it at once), and a type both kinds have alike (clusters, assignments) shares one. A changed
// index records what changed since the one it replaces, and eventAt (when the oldest
// Kubernetes event behind the change reached Holdfast; zero: none), for push latency. It never
// blocks on a client.
func (s *Server) Publish(set resource.Set, eventAt time.Time) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	snaps := make(Snapshots, len(set))
	next := map[resource.Kind]map[resource.Type]*typeIndex{}
	for kind, byType := range set {
		snap := &Snapshot{types: make(map[resource.Type]*typeIndex, len(byType))}
		for typ, l := range byType {
			snap.types[typ] = s.indexFor(kind, typ, l, next, eventAt)
		}
		snaps[kind] = snap
	}
	s.indexes = next
	s.SetSnapshots(snaps)
}

// indexFor returns the type index for one kind's resources of one type: the previous one when
// nothing changed, the other kind's when both kinds share the resources, a new one otherwise.
func (s *Server) indexFor(kind resource.Kind, typ resource.Type, l []*resource.Resource, next map[resource.Kind]map[resource.Type]*typeIndex, eventAt time.Time) *typeIndex {
	version := resource.ListVersion(l)
	var idx *typeIndex
	for _, byType := range next {
		if other := byType[typ]; other != nil && other.version == version && len(other.list) == len(l) {
			idx = other
		}
	}
	if prev := s.indexes[kind][typ]; idx == nil && prev != nil && prev.version == version && len(prev.list) == len(l) {
		idx = prev
	}
	if idx == nil {
		idx = newTypeIndex(l)
		prev := s.indexes[kind][typ]
		if prev != nil {
			idx.since(prev)
			idx.eventAt = eventAt
		}
		idx.localize(prev)
	}
	if next[kind] == nil {
		next[kind] = map[resource.Type]*typeIndex{}
	}
	next[kind][typ] = idx
	return idx
}

package serve

import (
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"weak"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/holdfast/holdfast/xds/resource"
)

// typeIndex is every resource of one type in a snapshot: sorted by name, by name, and the
// version of the whole set. What it serves never changes once it is published, and the next
// snapshot reuses it when its content did not change, so that a stream can tell an unchanged
// type by its pointer. It also carries caches built on first use and shared by every stream
// (its per-locality variants, its resources joined for responses): each is built once, under
// its own synchronisation (sync.Once, a mutex, an atomic), and never changes after.
type typeIndex struct {
	list    []*resource.Resource
	byName  map[string]*resource.Resource
	version string
	// xor is the XOR of every resource's hash (see setVersion).
	xor uint64
	// base is the index this one replaced and changed the names of the resources added,
	// changed or removed since it, sorted: a stream last pushed base needs to look at nothing
	// else. base is weak so that indexes do not chain in memory.
	base    weak.Pointer[typeIndex]
	changed []string
	// eventAt is when the Kubernetes event behind this index's changes reached Holdfast.
	eventAt time.Time
	// local holds the variants of an endpoint index by client locality (nil: none).
	local *localized
	// joined is the index's resources framed back to back, per response shape (see
	// joinedWire); built the first time a response sends a run of them.
	joined [2]atomic.Pointer[joinedWire]
}

func newTypeIndex(l []*resource.Resource) *typeIndex {
	list := slices.Clone(l)
	slices.SortFunc(list, func(a, b *resource.Resource) int { return strings.Compare(a.Name, b.Name) })
	byName := make(map[string]*resource.Resource, len(list))
	hashes := make([]uint64, len(list))
	var xor uint64
	for i, r := range list {
		byName[r.Name] = r
		hashes[i] = r.Hash()
		xor ^= r.Hash()
	}
	return &typeIndex{list: list, byName: byName, version: resource.VersionOf(hashes), xor: xor}
}

// since records that idx replaces prev, and what changed between them.
func (idx *typeIndex) since(prev *typeIndex) {
	idx.base = weak.Make(prev)
	for _, r := range idx.list {
		if old, ok := prev.byName[r.Name]; !ok || old.Hash() != r.Hash() || old.Version != r.Version {
			idx.changed = append(idx.changed, r.Name)
		}
	}
	for _, r := range prev.list {
		if _, ok := idx.byName[r.Name]; !ok {
			idx.changed = append(idx.changed, r.Name)
		}
	}
	slices.Sort(idx.changed)
}

// Snapshot is what one kind of client is served: every resource, by type. It is immutable; the
// publisher replaces it whole.
type Snapshot struct {
	types map[resourcev3.Type]*typeIndex
}

func (s *Snapshot) index(typ resourcev3.Type) *typeIndex {
	if idx, ok := s.types[typ]; ok {
		return idx
	}
	return noResources
}

// Get returns the resource of type typ named name.
func (s *Snapshot) Get(typ resourcev3.Type, name string) (*resource.Resource, bool) {
	if s == nil {
		return nil, false
	}
	r, ok := s.index(typ).byName[name]
	return r, ok
}

// List returns every resource of type typ, sorted by name.
func (s *Snapshot) List(typ resourcev3.Type) []*resource.Resource {
	if s == nil {
		return nil
	}
	return s.index(typ).list
}

// Version returns the content-derived version of every resource of type typ.
func (s *Snapshot) Version(typ resourcev3.Type) string {
	if s == nil {
		return ""
	}
	return s.index(typ).version
}

// Snapshots are the snapshots of every client kind, published together.
type Snapshots map[resource.Kind]*Snapshot

// WithType returns a snapshot like s (which may be nil) but with l as the resources of type
// typ. The new type index records what changed since s's, so that streams do O(changed)
// work; an unchanged list keeps s's index.
func (s *Snapshot) WithType(typ resourcev3.Type, l []*resource.Resource) *Snapshot {
	out := &Snapshot{types: make(map[resourcev3.Type]*typeIndex, 4)}
	if s != nil {
		maps.Copy(out.types, s.types)
	}
	idx := newTypeIndex(l)
	if old, ok := out.types[typ]; ok {
		if old.version == idx.version && len(old.list) == len(idx.list) {
			idx = old
		} else {
			idx.since(old)
		}
	}
	out.types[typ] = idx
	return out
}

// lookup returns idx's resource named name (nil: none; idx may be nil) without copying name,
// and where to look first for the next name: clients usually list names in the index's order,
// so the place after the last is tried before the map.
func (idx *typeIndex) lookup(hint int, name []byte) (*resource.Resource, int) {
	if idx == nil {
		return nil, hint
	}
	if hint < len(idx.list) && idx.list[hint].Name == string(name) {
		return idx.list[hint], hint + 1
	}
	return idx.byName[string(name)], hint
}

// joinedWire is an index's resources framed for one response shape, back to back: resource i
// is buf[offs[i]:offs[i+1]].
type joinedWire struct {
	buf  []byte
	offs []int
}

// joinedWire returns idx's joined bytes for shape, building them once.
func (idx *typeIndex) joinedWire(shape resource.Shape) *joinedWire {
	if j := idx.joined[shape].Load(); j != nil {
		return j
	}
	size := 0
	for _, r := range idx.list {
		size += len(r.Bytes(shape))
	}
	j := &joinedWire{buf: make([]byte, 0, size), offs: make([]int, 0, len(idx.list)+1)}
	for _, r := range idx.list {
		j.offs = append(j.offs, len(j.buf))
		j.buf = append(j.buf, r.Bytes(shape)...)
	}
	j.offs = append(j.offs, len(j.buf))
	if !idx.joined[shape].CompareAndSwap(nil, j) {
		return idx.joined[shape].Load() // another stream built it first
	}
	return j
}

// The index as the wire codec sees it (wire.Index).

// Lookup implements wire.Index.
func (idx *typeIndex) Lookup(hint int, name []byte) (*resource.Resource, int) {
	return idx.lookup(hint, name)
}

// Position implements wire.Index.
func (idx *typeIndex) Position(hint int, name string) (int, bool) {
	return idx.positionFrom(hint, name)
}

// At implements wire.Index.
func (idx *typeIndex) At(i int) *resource.Resource { return idx.list[i] }

// Len implements wire.Index.
func (idx *typeIndex) Len() int { return len(idx.list) }

// Joined implements wire.Index.
func (idx *typeIndex) Joined(shape resource.Shape) ([]byte, []int) {
	j := idx.joinedWire(shape)
	return j.buf, j.offs
}

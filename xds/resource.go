package xds

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"weak"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Resource is one xDS resource at one version. It is serialised once, when it is built, and the
// same bytes go to every client that receives it. Its version is a hash of its content, so the
// same state always has the same version: a restarted Holdfast or another replica makes clients
// re-apply nothing.
type Resource struct {
	Name    string
	Version string
	Msg     types.Resource
	Any     *anypb.Any // its Value is the tail of wire
	hash    uint64
	// wire is the resource serialised as an entry of a Delta response; wire[sotwAt:] as an
	// entry of a state-of-the-world response (see frame).
	wire   []byte
	sotwAt int
	// deltaBuf and sotwBuf are wire and wire[sotwAt:] as gRPC buffers, made once: a response
	// of a thousand resources then allocates nothing per resource.
	deltaBuf, sotwBuf mem.Buffer
	// local builds what clients in other places get instead (endpoint assignments whose
	// endpoints are in several places); nil when every client gets this.
	local *localAssignment
}

// newResource serialises m deterministically and versions it by that serialisation.
func newResource(m types.Resource) *Resource {
	b := marshalDeterministic(m)
	return newResourceHashed(m, b, fnv64(b))
}

// newResourceHashed builds a Resource whose version is derived from hash rather than from its
// bytes (a big route configuration versioned by its virtual hosts' hashes).
func newResourceHashed(m types.Resource, b []byte, hash uint64) *Resource {
	r := &Resource{Name: nameOf(m), Version: fmt.Sprintf("%016x", hash), Msg: m, hash: hash}
	typeURL := resourcev3.APITypePrefix + string(m.ProtoReflect().Descriptor().FullName())
	valueAt := r.setWire(frame(r.Name, r.Version, typeURL, b))
	r.Any = &anypb.Any{TypeUrl: typeURL, Value: r.wire[valueAt:len(r.wire):len(r.wire)]}
	return r
}

// marshalDeterministic serialises m the same way every time.
func marshalDeterministic(m proto.Message) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		// Unreachable for validated resources; still make the bytes unique to this content.
		b = []byte(err.Error())
	}
	return b
}

func fnv64(b []byte) uint64 {
	h := fnv.New64a()
	_, _ = h.Write(b) // a hash.Hash never fails to write
	return h.Sum64()
}

func combine(hashes []uint64) uint64 {
	h := fnv.New64a()
	var buf [8]byte
	for _, x := range hashes {
		binary.BigEndian.PutUint64(buf[:], x)
		_, _ = h.Write(buf[:])
	}
	return h.Sum64()
}

// resourceList is the resources of one type, in a stable order.
type resourceList []*Resource

func (l resourceList) items() []types.Resource {
	out := make([]types.Resource, len(l))
	for i, r := range l {
		out[i] = r.Msg
	}
	return out
}

// version is the content-derived version of the whole list.
func (l resourceList) version() string {
	hashes := make([]uint64, len(l))
	for i, r := range l {
		hashes[i] = r.hash
	}
	return versionOf(hashes)
}

func versionOf(hashes []uint64) string { return fmt.Sprintf("%016x", combine(hashes)) }

// typeIndex is every resource of one type in a snapshot: sorted by name, by name, and the
// version of the whole set. It is immutable, and reused by the next snapshot when its content
// did not change, so that a stream can tell an unchanged type by its pointer.
type typeIndex struct {
	list    []*Resource
	byName  map[string]*Resource
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

func newTypeIndex(l resourceList) *typeIndex {
	list := slices.Clone(l)
	slices.SortFunc(list, func(a, b *Resource) int { return strings.Compare(a.Name, b.Name) })
	byName := make(map[string]*Resource, len(list))
	hashes := make([]uint64, len(list))
	var xor uint64
	for i, r := range list {
		byName[r.Name] = r
		hashes[i] = r.hash
		xor ^= r.hash
	}
	return &typeIndex{list: list, byName: byName, version: versionOf(hashes), xor: xor}
}

// since records that idx replaces prev, and what changed between them.
func (idx *typeIndex) since(prev *typeIndex) {
	idx.base = weak.Make(prev)
	for _, r := range idx.list {
		if old, ok := prev.byName[r.Name]; !ok || old.hash != r.hash || old.Version != r.Version {
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
func (s *Snapshot) Get(typ resourcev3.Type, name string) (*Resource, bool) {
	if s == nil {
		return nil, false
	}
	r, ok := s.index(typ).byName[name]
	return r, ok
}

// List returns every resource of type typ, sorted by name.
func (s *Snapshot) List(typ resourcev3.Type) []*Resource {
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
type Snapshots map[ClientKind]*Snapshot

// nameOf returns a resource's name: its name field, or a load assignment's cluster name.
func nameOf(m types.Resource) string {
	if c, ok := m.(*endpointv3.ClusterLoadAssignment); ok {
		return c.GetClusterName()
	}
	if n, ok := m.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	return ""
}

// ResourceFromWire builds a Resource from bytes another control plane sent (an agent's cache):
// the message is decoded to check it, the bytes are kept as they came, and version is the
// sender's. typeURL must be one of the four types Holdfast serves.
func ResourceFromWire(typeURL, name, version string, value []byte) (*Resource, error) {
	var m types.Resource
	switch typeURL {
	case resourcev3.ClusterType:
		m = &clusterv3.Cluster{}
	case resourcev3.EndpointType:
		m = &endpointv3.ClusterLoadAssignment{}
	case resourcev3.ListenerType:
		m = &listenerv3.Listener{}
	case resourcev3.RouteType:
		m = &routev3.RouteConfiguration{}
	default:
		return nil, fmt.Errorf("resource %q: type %q is not served", name, typeURL)
	}
	if err := proto.Unmarshal(value, m); err != nil {
		return nil, fmt.Errorf("resource %q: %w", name, err)
	}
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return nil, fmt.Errorf("resource %q: %w", name, err)
		}
	}
	if got := nameOf(m); got != name {
		return nil, fmt.Errorf("resource %q: its message names %q", name, got)
	}
	if version == "" || version == notHeld {
		return nil, fmt.Errorf("resource %q: no version", name)
	}
	r := &Resource{Name: name, Version: version, Msg: m, hash: fnv64(value)}
	valueAt := r.setWire(frame(name, version, typeURL, value))
	r.Any = &anypb.Any{TypeUrl: typeURL, Value: r.wire[valueAt:len(r.wire):len(r.wire)]}
	return r, nil
}

// WithType returns a snapshot like s (which may be nil) but with l as the resources of type
// typ. The new type index records what changed since s's, so that streams do O(changed)
// work; an unchanged list keeps s's index.
func (s *Snapshot) WithType(typ resourcev3.Type, l []*Resource) *Snapshot {
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

package resource

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"

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
// re-apply nothing. A Resource is immutable once built (its Variants build other Resources).
type Resource struct {
	Name    string
	Version string
	Msg     types.Resource
	Any     *anypb.Any // its Value is the tail of wire
	// Variants build what clients in other places get instead (endpoint assignments whose
	// endpoints are in several places); nil when every client gets this. Set by translation
	// before the resource is published, never after.
	Variants Variants

	hash uint64
	// wire is the resource serialised as an entry of a Delta response; wire[sotwAt:] as an
	// entry of a state-of-the-world response (see frame).
	wire   []byte
	sotwAt int
	// deltaBuf and sotwBuf are wire and wire[sotwAt:] as gRPC buffers, made once: a response
	// of a thousand resources then allocates nothing per resource.
	deltaBuf, sotwBuf mem.Buffer
}

// Variants are the other forms of a resource for clients in other places.
type Variants interface {
	// For returns the resource a client at loc gets (the resource itself when it looks the
	// same from there). Safe for concurrent use.
	For(loc Locality) *Resource
	// Zones, Regions and Clusters are every zone, region and cluster a client can be in to see
	// a variant, sorted.
	Zones() []string
	Regions() []string
	Clusters() []string
}

// New serialises m deterministically and versions it by that serialisation.
func New(m types.Resource) *Resource {
	b := MarshalDeterministic(m)
	return NewHashed(m, b, Hash(b))
}

// NewHashed builds a Resource of m serialised as b, whose version is derived from hash rather
// than from its bytes (a big route configuration versioned by its virtual hosts' hashes).
func NewHashed(m types.Resource, b []byte, hash uint64) *Resource {
	r := &Resource{Name: NameOf(m), Version: fmt.Sprintf("%016x", hash), Msg: m, hash: hash}
	typeURL := resourcev3.APITypePrefix + string(m.ProtoReflect().Descriptor().FullName())
	valueAt := r.setWire(frame(r.Name, r.Version, typeURL, b))
	r.Any = &anypb.Any{TypeUrl: typeURL, Value: r.wire[valueAt:len(r.wire):len(r.wire)]}
	return r
}

// Hash returns the resource's content hash (what its version is made of).
func (r *Resource) Hash() uint64 { return r.hash }

// Frame returns the resource's bytes as one entry of a response of shape, as a gRPC buffer
// that frees nothing.
func (r *Resource) Frame(shape Shape) mem.Buffer {
	if shape == ShapeSotW {
		return r.sotwBuf
	}
	return r.deltaBuf
}

// Bytes returns the resource's bytes as one entry of a response of shape. Read-only.
func (r *Resource) Bytes(shape Shape) []byte {
	if shape == ShapeSotW {
		return r.wire[r.sotwAt:]
	}
	return r.wire
}

// MarshalDeterministic serialises m the same way every time.
func MarshalDeterministic(m proto.Message) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		// Unreachable for validated resources; still make the bytes unique to this content.
		b = []byte(err.Error())
	}
	return b
}

// Hash is the content hash of serialised bytes (64-bit FNV-1a).
func Hash(b []byte) uint64 {
	h := fnv.New64a()
	_, _ = h.Write(b) // a hash.Hash never fails to write
	return h.Sum64()
}

// Combine hashes a sequence of hashes into one (order matters).
func Combine(hashes []uint64) uint64 {
	h := fnv.New64a()
	var buf [8]byte
	for _, x := range hashes {
		binary.BigEndian.PutUint64(buf[:], x)
		_, _ = h.Write(buf[:])
	}
	return h.Sum64()
}

// Messages returns the resources' messages, in order.
func Messages(l []*Resource) []types.Resource {
	out := make([]types.Resource, len(l))
	for i, r := range l {
		out[i] = r.Msg
	}
	return out
}

// ListVersion is the content-derived version of a list of resources, in its order.
func ListVersion(l []*Resource) string {
	hashes := make([]uint64, len(l))
	for i, r := range l {
		hashes[i] = r.hash
	}
	return VersionOf(hashes)
}

// VersionOf is the version of a sequence of content hashes.
func VersionOf(hashes []uint64) string { return fmt.Sprintf("%016x", Combine(hashes)) }

// NameOf returns a resource's name: its name field, or a load assignment's cluster name.
func NameOf(m types.Resource) string {
	if c, ok := m.(*endpointv3.ClusterLoadAssignment); ok {
		return c.GetClusterName()
	}
	if n, ok := m.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	return ""
}

// FromWire builds a Resource from bytes another control plane sent (an agent's cache):
// the message is decoded to check it, the bytes are kept as they came, and version is the
// sender's. typeURL must be one of the four types Holdfast serves.
func FromWire(typeURL, name, version string, value []byte) (*Resource, error) {
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
	if got := NameOf(m); got != name {
		return nil, fmt.Errorf("resource %q: its message names %q", name, got)
	}
	if version == "" || version == NoVersion {
		return nil, fmt.Errorf("resource %q: no version", name)
	}
	r := &Resource{Name: name, Version: version, Msg: m, hash: Hash(value)}
	valueAt := r.setWire(frame(name, version, typeURL, value))
	r.Any = &anypb.Any{TypeUrl: typeURL, Value: r.wire[valueAt:len(r.wire):len(r.wire)]}
	return r, nil
}

package resource

import (
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// Shape is the form a resource takes in a response.
type Shape int

const (
	// ShapeDelta is an entry of a DeltaDiscoveryResponse's resources (a discovery Resource).
	ShapeDelta Shape = iota
	// ShapeSotW is an entry of a DiscoveryResponse's resources (an Any).
	ShapeSotW
)

// NoVersion is never a resource's version (Holdfast's are hex digests, and FromWire refuses it
// from an upstream): serving marks with it a name a client does not have.
const NoVersion = "\x00"

// Field numbers of the discovery messages a resource is framed in (envoy/service/discovery/v3
// discovery.proto and google/protobuf/any.proto).
const (
	fieldAnyTypeURL = 1
	fieldAnyValue   = 2

	fieldResourceVersion = 1
	fieldResourceBody    = 2
	fieldResourceName    = 3

	fieldResponseResources = 2 // DiscoveryResponse.resources, DeltaDiscoveryResponse.resources
)

// frame serialises a resource once in the two shapes responses carry it in: wire is the
// resource as one entry of a DeltaDiscoveryResponse's resources (an envoy.service.discovery.v3
// Resource), and wire[sotwAt:] is the same bytes' tail, the resource as one entry of a
// DiscoveryResponse's resources (an Any): both messages number that field 2, and so does
// Resource for its Any. value is copied in at the end, so wire[valueAt:] is the Any's value.
func frame(name, version, typeURL string, value []byte) (wire []byte, sotwAt, valueAt int) {
	anyLen := 1 + protowire.SizeBytes(len(typeURL)) + 1 + protowire.SizeBytes(len(value))
	sotwLen := 1 + protowire.SizeBytes(anyLen)
	bodyLen := 1 + protowire.SizeBytes(len(name)) + 1 + protowire.SizeBytes(len(version)) + sotwLen
	b := make([]byte, 0, 1+protowire.SizeBytes(bodyLen))
	b = protowire.AppendTag(b, fieldResponseResources, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(bodyLen)) //nolint:gosec // a sum of lengths: not negative
	b = protowire.AppendTag(b, fieldResourceName, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = protowire.AppendTag(b, fieldResourceVersion, protowire.BytesType)
	b = protowire.AppendString(b, version)
	sotwAt = len(b)
	b = protowire.AppendTag(b, fieldResourceBody, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(anyLen)) //nolint:gosec // a sum of lengths: not negative
	b = protowire.AppendTag(b, fieldAnyTypeURL, protowire.BytesType)
	b = protowire.AppendString(b, typeURL)
	b = protowire.AppendTag(b, fieldAnyValue, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(len(value)))
	valueAt = len(b)
	b = append(b, value...)
	return b, sotwAt, valueAt
}

// setWire keeps a resource's framed bytes (see frame) and returns valueAt.
func (r *Resource) setWire(wire []byte, sotwAt, valueAt int) int {
	r.wire, r.sotwAt = wire, sotwAt
	r.deltaBuf, r.sotwBuf = mem.SliceBuffer(wire), mem.SliceBuffer(wire[sotwAt:])
	return valueAt
}

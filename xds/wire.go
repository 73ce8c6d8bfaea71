package xds

import (
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	// The proto codec must be registered before codec() looks it up.
	_ "google.golang.org/grpc/encoding/proto"
)

// Field numbers of the discovery messages Holdfast writes itself (envoy/service/discovery/v3
// discovery.proto and google/protobuf/any.proto).
const (
	fieldAnyTypeURL = 1
	fieldAnyValue   = 2

	fieldResourceVersion = 1
	fieldResourceBody    = 2
	fieldResourceName    = 3

	fieldResponseVersion   = 1 // DiscoveryResponse.version_info, DeltaDiscoveryResponse.system_version_info
	fieldResponseResources = 2
	fieldResponseTypeURL   = 4
	fieldResponseNonce     = 5
	fieldDeltaRemoved      = 6
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

// wireResponse is a discovery response assembled from bytes serialised once: a small head
// (versions, type, nonce, removed names) written for this response, then each resource's
// shared bytes. Sending it costs no serialisation and no copy beyond gRPC's framing.
type wireResponse struct {
	parts mem.BufferSlice
	n     int // resources
	size  int // resource bytes
}

func (w *wireResponse) head(version, typ, nonce string, removed []string) {
	n := 3 + protowire.SizeBytes(len(version)) + protowire.SizeBytes(len(typ)) + protowire.SizeBytes(len(nonce))
	for _, r := range removed {
		n += 1 + protowire.SizeBytes(len(r))
	}
	b := make([]byte, 0, n)
	b = protowire.AppendTag(b, fieldResponseVersion, protowire.BytesType)
	b = protowire.AppendString(b, version)
	b = protowire.AppendTag(b, fieldResponseTypeURL, protowire.BytesType)
	b = protowire.AppendString(b, typ)
	b = protowire.AppendTag(b, fieldResponseNonce, protowire.BytesType)
	b = protowire.AppendString(b, nonce)
	for _, r := range removed {
		b = protowire.AppendTag(b, fieldDeltaRemoved, protowire.BytesType)
		b = protowire.AppendString(b, r)
	}
	w.parts[0] = mem.SliceBuffer(b)
}

// setWire keeps a resource's framed bytes (see frame) and returns valueAt.
func (r *Resource) setWire(wire []byte, sotwAt, valueAt int) int {
	r.wire, r.sotwAt = wire, sotwAt
	r.deltaBuf, r.sotwBuf = mem.SliceBuffer(wire), mem.SliceBuffer(wire[sotwAt:])
	return valueAt
}

// sotwWire is a DiscoveryResponse carrying res, which are resources of idx (nil: unknown).
func sotwWire(idx *typeIndex, version, typ, nonce string, res []*Resource) *wireResponse {
	w := &wireResponse{n: len(res), parts: make(mem.BufferSlice, 1, 2)}
	w.head(version, typ, nonce, nil)
	w.add(idx, shapeSotW, res)
	return w
}

// deltaWire is a DeltaDiscoveryResponse carrying res (resources of idx, nil: unknown) and
// removing removed.
func deltaWire(idx *typeIndex, systemVersion, typ, nonce string, res []*Resource, removed []string) *wireResponse {
	w := &wireResponse{n: len(res), parts: make(mem.BufferSlice, 1, 2)}
	w.head(systemVersion, typ, nonce, removed)
	w.add(idx, shapeDelta, res)
	return w
}

const (
	shapeDelta = 0
	shapeSotW  = 1
)

// minJoinedRun is the shortest run of consecutive index resources sent as one buffer.
const minJoinedRun = 8

// add appends res's bytes. Runs of resources that follow each other in idx go out as one slice
// of the index's joined bytes: gRPC then frames a few large buffers instead of one per
// resource (its writer keeps its scratch space only for frames of at most 64 buffers, and
// resources are a few hundred bytes).
func (w *wireResponse) add(idx *typeIndex, shape int, res []*Resource) {
	buf := func(r *Resource) mem.Buffer {
		if shape == shapeSotW {
			return r.sotwBuf
		}
		return r.deltaBuf
	}
	for _, r := range res {
		w.size += len(r.Any.Value)
	}
	if idx == nil || len(res) < minJoinedRun {
		for _, r := range res {
			w.parts = append(w.parts, buf(r))
		}
		return
	}
	var j *joinedWire
	next := 0 // res usually follows idx.list's order
	for k := 0; k < len(res); {
		i, ok := idx.positionFrom(next, res[k].Name)
		run := 0
		for ok && k+run < len(res) && i+run < len(idx.list) && idx.list[i+run] == res[k+run] {
			run++
		}
		if run < minJoinedRun {
			w.parts = append(w.parts, buf(res[k]))
			if ok {
				next = i + 1
			}
			k++
			continue
		}
		if j == nil {
			j = idx.joinedWire(shape)
		}
		w.parts = append(w.parts, mem.SliceBuffer(j.buf[j.offs[i]:j.offs[i+run]]))
		k, next = k+run, i+run
	}
}

// joinedWire is an index's resources framed for one response shape, back to back: resource i
// is buf[offs[i]:offs[i+1]].
type joinedWire struct {
	buf  []byte
	offs []int
}

// joinedWire returns idx's joined bytes for shape, building them once.
func (idx *typeIndex) joinedWire(shape int) *joinedWire {
	if j := idx.joined[shape].Load(); j != nil {
		return j
	}
	size := 0
	for _, r := range idx.list {
		size += len(r.wire)
	}
	j := &joinedWire{buf: make([]byte, 0, size), offs: make([]int, 0, len(idx.list)+1)}
	for _, r := range idx.list {
		j.offs = append(j.offs, len(j.buf))
		if shape == shapeSotW {
			j.buf = append(j.buf, r.wire[r.sotwAt:]...)
		} else {
			j.buf = append(j.buf, r.wire...)
		}
	}
	j.offs = append(j.offs, len(j.buf))
	if !idx.joined[shape].CompareAndSwap(nil, j) {
		return idx.joined[shape].Load() // another stream built it first
	}
	return j
}

// wireCodec is gRPC's proto codec, except that a *wireResponse is sent as the bytes it holds
// and a wireRequest decodes itself. It is set on Holdfast's own gRPC server only
// (grpc.ForceServerCodecV2), never registered process-wide.
type wireCodec struct {
	proto encoding.CodecV2
	// bufs holds *[]byte for requests that arrive in more than one buffer and are copied into
	// one: gRPC's own pool clears every buffer it hands out, and with a thousand names an
	// Envoy ACK is 60 KB.
	bufs *sync.Pool
}

// maxPooledRequest is the largest request buffer kept for reuse.
const maxPooledRequest = 1 << 20

func newWireCodec() wireCodec {
	return wireCodec{proto: encoding.GetCodecV2("proto"), bufs: &sync.Pool{}}
}

func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	if w, ok := v.(*wireResponse); ok {
		// gRPC frees what Marshal returns; SliceBuffers free nothing, and the resource bytes
		// stay shared.
		return w.parts, nil
	}
	return c.proto.Marshal(v)
}

func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(wireRequest)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	if len(data) == 1 {
		return r.decode(data[0].ReadOnlyData())
	}
	bp, _ := c.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	n := data.Len()
	if cap(*bp) < n {
		*bp = make([]byte, n)
	}
	b := (*bp)[:n]
	data.CopyTo(b)
	err := r.decode(b) // keeps nothing of b, which can be reused
	if cap(b) <= maxPooledRequest {
		c.bufs.Put(bp)
	}
	return err
}

func (wireCodec) Name() string { return "proto" }

// Package wire is the ADS codec: it decodes discovery requests straight from gRPC's buffers
// (names looked up in an Index, never copied unless new) and sends responses as the bytes the
// resources were serialised into once, never re-marshalled. The server reaches it through
// Index, Request and Response; it keeps no state of a stream.
package wire

import (
	"sync"

	"github.com/holdfast/holdfast/xds/resource"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	// The proto codec must be registered before codec() looks it up.
	_ "google.golang.org/grpc/encoding/proto"
)

// Index is one type's published resources, sorted by name, as responses and requests use
// them. Safe for concurrent use.
type Index interface {
	// Lookup returns the resource named name (nil: none) without copying name, and where to
	// look first for the next name: hint is tried before anything else.
	Lookup(hint int, name []byte) (r *resource.Resource, next int)
	// Position returns where name is in the index, trying hint first.
	Position(hint int, name string) (int, bool)
	// At returns the i-th resource; Len how many there are.
	At(i int) *resource.Resource
	Len() int
	// Joined returns every resource framed for shape, back to back: resource i is
	// buf[offs[i]:offs[i+1]]. Built once, shared, read-only.
	Joined(shape resource.Shape) (buf []byte, offs []int)
}

// Field numbers of the discovery responses' heads (envoy/service/discovery/v3 discovery.proto).
const (
	fieldResponseVersion = 1 // DiscoveryResponse.version_info, DeltaDiscoveryResponse.system_version_info
	fieldResponseTypeURL = 4
	fieldResponseNonce   = 5
	fieldDeltaRemoved    = 6
)

// Response is a discovery response assembled from bytes serialised once: a small head
// (versions, type, nonce, removed names) written for this response, then each resource's
// shared bytes. Sending it costs no serialisation and no copy beyond gRPC's framing.
type Response struct {
	parts mem.BufferSlice
	n     int // resources
	size  int // resource bytes
}

// Resources is how many resources the response carries; Size their bytes.
func (w *Response) Resources() int { return w.n }

// Size is the resources' serialised bytes.
func (w *Response) Size() int { return w.size }

func (w *Response) head(version, typ, nonce string, removed []string) {
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

// SotW is a DiscoveryResponse carrying res, which are resources of idx (nil: unknown).
func SotW(idx Index, version, typ, nonce string, res []*resource.Resource) *Response {
	w := &Response{n: len(res), parts: make(mem.BufferSlice, 1, 2)}
	w.head(version, typ, nonce, nil)
	w.add(idx, resource.ShapeSotW, res)
	return w
}

// Delta is a DeltaDiscoveryResponse carrying res (resources of idx, nil: unknown) and
// removing removed.
func Delta(idx Index, systemVersion, typ, nonce string, res []*resource.Resource, removed []string) *Response {
	w := &Response{n: len(res), parts: make(mem.BufferSlice, 1, 2)}
	w.head(systemVersion, typ, nonce, removed)
	w.add(idx, resource.ShapeDelta, res)
	return w
}

// minJoinedRun is the shortest run of consecutive index resources sent as one buffer.
const minJoinedRun = 8

// add appends res's bytes. Runs of resources that follow each other in idx go out as one slice
// of the index's joined bytes: gRPC then frames a few large buffers instead of one per
// resource (its writer keeps its scratch space only for frames of at most 64 buffers, and
// resources are a few hundred bytes).
func (w *Response) add(idx Index, shape resource.Shape, res []*resource.Resource) {
	for _, r := range res {
		w.size += len(r.Any.Value)
	}
	if idx == nil || len(res) < minJoinedRun {
		for _, r := range res {
			w.parts = append(w.parts, r.Frame(shape))
		}
		return
	}
	var joined []byte
	var offs []int
	next := 0 // res usually follows idx.list's order
	for k := 0; k < len(res); {
		i, ok := idx.Position(next, res[k].Name)
		run := 0
		for ok && k+run < len(res) && i+run < idx.Len() && idx.At(i+run) == res[k+run] {
			run++
		}
		if run < minJoinedRun {
			w.parts = append(w.parts, res[k].Frame(shape))
			if ok {
				next = i + 1
			}
			k++
			continue
		}
		if joined == nil {
			joined, offs = idx.Joined(shape)
		}
		w.parts = append(w.parts, mem.SliceBuffer(joined[offs[i]:offs[i+run]]))
		k, next = k+run, i+run
	}
}

// Codec is gRPC's proto codec, except that a *Response is sent as the bytes it holds
// and a Request decodes itself. It is set on Holdfast's own gRPC server only
// (grpc.ForceServerCodecV2), never registered process-wide.
type Codec struct {
	proto encoding.CodecV2
	// bufs holds *[]byte for requests that arrive in more than one buffer and are copied into
	// one: gRPC's own pool clears every buffer it hands out, and with a thousand names an
	// Envoy ACK is 60 KB.
	bufs *sync.Pool
}

// maxPooledRequest is the largest request buffer kept for reuse.
const maxPooledRequest = 1 << 20

// NewCodec returns the codec, wrapping gRPC's registered proto codec.
func NewCodec() Codec {
	return Codec{proto: encoding.GetCodecV2("proto"), bufs: &sync.Pool{}}
}

// Marshal implements encoding.CodecV2.
func (c Codec) Marshal(v any) (mem.BufferSlice, error) {
	if w, ok := v.(*Response); ok {
		// gRPC frees what Marshal returns; SliceBuffers free nothing, and the resource bytes
		// stay shared.
		return w.parts, nil
	}
	return c.proto.Marshal(v)
}

// Unmarshal implements encoding.CodecV2.
func (c Codec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(Request)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	if len(data) == 1 {
		return r.Decode(data[0].ReadOnlyData())
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
	err := r.Decode(b) // keeps nothing of b, which can be reused
	if cap(b) <= maxPooledRequest {
		c.bufs.Put(bp)
	}
	return err
}

// Name implements encoding.CodecV2: it replaces "proto" on the server it is set on.
func (Codec) Name() string { return "proto" }

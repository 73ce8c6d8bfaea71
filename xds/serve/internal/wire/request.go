package wire

import (
	"errors"
	"hash/maphash"
	"strings"
	"unicode/utf8"

	"github.com/holdfast/holdfast/xds/resource"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// fieldRequestNames is DiscoveryRequest.resource_names and
// DeltaDiscoveryRequest.resource_names_subscribe; fieldInitialVersions is
// DeltaDiscoveryRequest.initial_resource_versions, a map<string, string>.
const (
	fieldRequestNames    = 3
	fieldInitialVersions = 5
)

// NameVersion is one entry of a Delta request's initial_resource_versions.
type NameVersion struct{ Name, Version string }

var errInvalidUTF8 = errors.New("proto: resource names: invalid UTF-8")

// namedRequest is a discovery request whose field 3 lists resource names.
type namedRequest interface {
	proto.Message
	GetTypeUrl() string
}

// Request is what a stream receives a request into: Codec hands it the request's bytes, which
// must not be kept.
type Request interface {
	Decode(b []byte) error
	// DecodeErr is why Decode failed (nil: it did not, or was not called).
	DecodeErr() error
}

// SotWRequest is what a state-of-the-world stream receives a request into (see Codec): the
// request, where its resource names are likely to be found, and what the stream's previous
// requests named.
type SotWRequest struct {
	Req *discoveryv3.DiscoveryRequest
	// Known returns the index of a type whose resource names the request's names are looked up
	// in (nil: none).
	Known func(typeURL string) Index
	// Previous is, per type, the digest of the names in the stream's latest request of that
	// type, kept by the stream's receiving goroutine across requests (nil: not kept).
	Previous *Previous
	// Repeated says the request lists exactly the names of the stream's previous request of its
	// type, in the same order. Its ResourceNames are then left nil, not decoded again: a SotW
	// client repeats its whole list in every ACK, and every request is applied in order, so the
	// stream has that list already.
	Repeated bool
	failed   error // see Request.DecodeErr
}

// Decode implements Request.
func (r *SotWRequest) Decode(b []byte) error {
	r.failed = unmarshalDiscoveryRequest(b, r)
	return r.failed
}

// DecodeErr implements Request.
func (r *SotWRequest) DecodeErr() error { return r.failed }

// Previous remembers the names of a stream's latest request of each type as a digest:
// 24 bytes a type, where keeping the names themselves would take a stream 16 bytes a name.
// Two different lists with the same count, length and 64-bit seeded hash would make the second
// count as a repeat; the seed is random per stream, so no client can aim for that.
type Previous struct {
	seed   maphash.Seed
	byType map[string]namesDigest
}

// maxRememberedTypes bounds previousNames.byType against a client sending made-up type URLs.
const maxRememberedTypes = 16

type namesDigest struct {
	sum         uint64
	count, size int
}

// NewPrevious returns an empty Previous for one stream.
func NewPrevious() *Previous {
	return &Previous{seed: maphash.MakeSeed(), byType: map[string]namesDigest{}}
}

// DeltaRequest is what an incremental stream receives a request into (see Codec): the
// request, and where the names it subscribes to are likely to be found.
type DeltaRequest struct {
	Req   *discoveryv3.DeltaDiscoveryRequest
	Known func(typeURL string) Index
	// Initial is the request's initial_resource_versions in the order sent (a later entry for
	// a name wins, as in the map), decoded here rather than into Req's map.
	Initial []NameVersion
	failed  error // see Request.DecodeErr
}

// Decode implements Request.
func (r *DeltaRequest) Decode(b []byte) error {
	r.failed = unmarshalDeltaDiscoveryRequest(b, r)
	return r.failed
}

// DecodeErr implements Request.
func (r *DeltaRequest) DecodeErr() error { return r.failed }

// unmarshalDeltaDiscoveryRequest decodes an incremental request like proto.Unmarshal, except
// that the names it subscribes to are decoded as unmarshalDiscoveryRequest decodes a SotW
// request's (an Envoy's first EDS request subscribes to every cluster it was sent), and its
// initial_resource_versions go to r.initial, names and versions resolved against the index the
// same way: every Envoy that reconnects after a control plane restart says what it holds, a
// thousand entries per type, nearly all of them exactly the index's.
func unmarshalDeltaDiscoveryRequest(b []byte, r *DeltaRequest) error {
	r.Initial = nil
	_, err := decodeRequest(b, r.Req, func(names []string) { r.Req.ResourceNamesSubscribe = names },
		func(vs []NameVersion) { r.Initial = vs }, r.Known, nil)
	return err
}

// unmarshalDiscoveryRequest decodes a state-of-the-world request like proto.Unmarshal, except
// for its resource names. A SotW client repeats every name it wants in every request, ACKs
// included: an Envoy with a thousand clusters sends a thousand names per EDS ACK, and decoding
// them one string each was the largest part of Holdfast's CPU for an initial push. So a name
// that is a resource of known's index for the request's type becomes that resource's own name
// (no copy), and the others share one allocation. Every other field goes through
// proto.Unmarshal.
func unmarshalDiscoveryRequest(b []byte, r *SotWRequest) error {
	repeated, err := decodeRequest(b, r.Req, func(names []string) { r.Req.ResourceNames = names }, nil, r.Known, r.Previous)
	r.Repeated = repeated
	return err
}

// decodeRequest decodes b into req like proto.Unmarshal, except for field 3, the resource
// names: they are looked up in known's index for req's type, and handed to setNames. With
// previous, a list equal to the stream's previous one of req's type is not decoded at all
// (repeated; setNames is not called). With setVersions, field 5 is a Delta request's
// initial_resource_versions, decoded the same way and handed to setVersions.
func decodeRequest(b []byte, req namedRequest, setNames func([]string), setVersions func([]NameVersion),
	known func(typeURL string) Index, previous *Previous) (repeated bool, err error) {
	// One scan finds the names' runs of fields and everything else's. Malformed input goes to
	// proto, which says how it is malformed.
	var namesBuf, othersBuf, versionsBuf [4]span
	runs, others, vruns := namesBuf[:0], othersBuf[:0], versionsBuf[:0]
	d, vcount := namesDigest{}, 0
	for at := 0; at < len(b); {
		num, typ, n := protowire.ConsumeTag(b[at:])
		if n < 0 {
			return false, proto.Unmarshal(b, req)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[at+n:])
		if m < 0 {
			return false, proto.Unmarshal(b, req)
		}
		if num == fieldRequestNames && typ == protowire.BytesType {
			d.count++
			d.size += n + m
			runs = extend(runs, at, at+n+m)
		} else if setVersions != nil && num == fieldInitialVersions && typ == protowire.BytesType {
			vcount++
			vruns = extend(vruns, at, at+n+m)
		} else {
			others = extend(others, at, at+n+m)
		}
		at += n + m
	}
	if d.count == 0 && vcount == 0 {
		if err := proto.Unmarshal(b, req); err != nil {
			return false, err
		}
		previous.remember(req.GetTypeUrl(), d)
		return false, nil
	}
	rest := b[:0]
	switch len(others) {
	case 0:
	case 1:
		rest = b[others[0].from:others[0].to] // proto.Unmarshal keeps nothing of its input
	default:
		rest = make([]byte, 0, len(b))
		for _, o := range others {
			rest = append(rest, b[o.from:o.to]...)
		}
	}
	if err := proto.Unmarshal(rest, req); err != nil {
		return false, err
	}
	if previous != nil {
		// The names' fields, tags and lengths included: they parse one way only, so equal
		// bytes are an equal list.
		var h maphash.Hash
		h.SetSeed(previous.seed)
		for _, run := range runs {
			_, _ = h.Write(b[run.from:run.to])
		}
		d.sum = h.Sum64()
		if prev, ok := previous.byType[req.GetTypeUrl()]; ok && prev == d {
			return true, nil
		}
	}

	var idx Index
	if known != nil {
		idx = known(req.GetTypeUrl())
	}
	if vcount > 0 {
		vs, err := decodeVersions(b, vruns, vcount, idx)
		if err != nil {
			return false, err
		}
		setVersions(vs)
	}
	if d.count == 0 {
		previous.remember(req.GetTypeUrl(), d)
		return false, nil
	}
	names := make([]string, 0, d.count)
	type miss struct {
		at int    // in names
		v  []byte // in b
	}
	var misses []miss
	missLen, next := 0, 0
	err = eachValue(b, runs, func(v []byte) error {
		var r *resource.Resource
		if idx != nil {
			r, next = idx.Lookup(next, v)
		}
		if r != nil {
			names = append(names, r.Name)
			return nil
		}
		if !utf8.Valid(v) {
			return errInvalidUTF8
		}
		if misses == nil {
			misses = make([]miss, 0, d.count-len(names))
		}
		misses = append(misses, miss{len(names), v})
		missLen += len(v)
		names = append(names, "")
		return nil
	})
	if err != nil {
		return false, err
	}
	if len(misses) > 0 {
		var all strings.Builder
		all.Grow(missLen)
		for _, m := range misses {
			all.Write(m.v)
		}
		s, at := all.String(), 0
		for _, m := range misses {
			names[m.at] = s[at : at+len(m.v)]
			at += len(m.v)
		}
	}
	setNames(names)
	previous.remember(req.GetTypeUrl(), d)
	return false, nil
}

// decodeVersions decodes the map entries in runs (key 1, value 2, both strings; other fields
// skipped, as proto does), resolving each name and version to the index resource's own strings
// when they are equal.
func decodeVersions(b []byte, runs []span, count int, idx Index) ([]NameVersion, error) {
	out := make([]NameVersion, 0, count)
	next := 0
	err := eachValue(b, runs, func(entry []byte) error {
		var k, v []byte
		for len(entry) > 0 {
			num, typ, n := protowire.ConsumeTag(entry)
			if n < 0 || num > protowire.MaxValidNumber {
				return errMalformedEntry
			}
			m := protowire.ConsumeFieldValue(num, typ, entry[n:])
			if m < 0 {
				return errMalformedEntry
			}
			if typ == protowire.BytesType && (num == 1 || num == 2) {
				val, _ := protowire.ConsumeBytes(entry[n:])
				if !utf8.Valid(val) {
					return errInvalidUTF8
				}
				if num == 1 {
					k = val
				} else {
					v = val
				}
			}
			entry = entry[n+m:]
		}
		var r *resource.Resource
		if idx != nil {
			r, next = idx.Lookup(next, k)
		}
		switch {
		case r != nil && r.Version == string(v):
			out = append(out, NameVersion{r.Name, r.Version})
		case r != nil:
			out = append(out, NameVersion{r.Name, string(v)})
		default:
			out = append(out, NameVersion{string(k), string(v)})
		}
		return nil
	})
	return out, err
}

var errMalformedEntry = errors.New("proto: initial_resource_versions: malformed entry")

// remember records d as the names of the stream's latest request of type typ.
func (p *Previous) remember(typ string, d namesDigest) {
	if p == nil {
		return
	}
	if _, ok := p.byType[typ]; ok || len(p.byType) < maxRememberedTypes {
		p.byType[typ] = d
	}
}

// span is part of a buffer, [from, to).
type span struct{ from, to int }

// extend adds [from, to) to spans, as part of the last span when it ends at from.
func extend(spans []span, from, to int) []span {
	if l := len(spans); l > 0 && spans[l-1].to == from {
		spans[l-1].to = to
		return spans
	}
	return append(spans, span{from, to})
}

// eachValue calls f with the value of every field in runs, spans of b holding well-formed
// length-delimited fields only, until f returns an error.
func eachValue(b []byte, runs []span, f func(v []byte) error) error {
	for _, run := range runs {
		for p := b[run.from:run.to]; len(p) > 0; {
			_, _, n := protowire.ConsumeTag(p)
			v, m := protowire.ConsumeBytes(p[n:])
			if err := f(v); err != nil {
				return err
			}
			p = p[n+m:]
		}
	}
	return nil
}

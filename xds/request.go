package xds

import (
	"errors"
	"hash/maphash"
	"strings"
	"unicode/utf8"

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

// nameVersion is one entry of a Delta request's initial_resource_versions.
type nameVersion struct{ name, version string }

var errInvalidUTF8 = errors.New("proto: resource names: invalid UTF-8")

// namedRequest is a discovery request whose field 3 lists resource names.
type namedRequest interface {
	proto.Message
	GetTypeUrl() string
}

// wireRequest is what a stream receives a request into: wireCodec hands it the request's
// bytes, which must not be kept.
type wireRequest interface {
	decode(b []byte) error
	// decodeErr is why decode failed (nil: it did not, or was not called).
	decodeErr() error
}

// sotwRequest is what a state-of-the-world stream receives a request into (see wireCodec): the
// request, where its resource names are likely to be found, and what the stream's previous
// requests named.
type sotwRequest struct {
	req *discoveryv3.DiscoveryRequest
	// known returns the index of a type whose resource names the request's names are looked up
	// in (nil: none).
	known func(typeURL string) *typeIndex
	// previous is, per type, the digest of the names in the stream's latest request of that
	// type, kept by the stream's receiving goroutine across requests (nil: not kept).
	previous *previousNames
	// repeated says the request lists exactly the names of the stream's previous request of its
	// type, in the same order. Its ResourceNames are then left nil, not decoded again: a SotW
	// client repeats its whole list in every ACK, and every request is applied in order, so the
	// stream holds that list already.
	repeated bool
	failed   error // see wireRequest.decodeErr
}

func (r *sotwRequest) decode(b []byte) error {
	r.failed = unmarshalDiscoveryRequest(b, r)
	return r.failed
}

func (r *sotwRequest) decodeErr() error { return r.failed }

// previousNames remembers the names of a stream's latest request of each type as a digest:
// 24 bytes a type, where keeping the names themselves would take a stream 16 bytes a name.
// Two different lists with the same count, length and 64-bit seeded hash would make the second
// count as a repeat; the seed is random per stream, so no client can aim for that.
type previousNames struct {
	seed   maphash.Seed
	byType map[string]namesDigest
}

// maxRememberedTypes bounds previousNames.byType against a client sending made-up type URLs.
const maxRememberedTypes = 16

type namesDigest struct {
	sum         uint64
	count, size int
}

func newPreviousNames() *previousNames {
	return &previousNames{seed: maphash.MakeSeed(), byType: map[string]namesDigest{}}
}

// deltaRequest is what an incremental stream receives a request into (see wireCodec): the
// request, and where the names it subscribes to are likely to be found.
type deltaRequest struct {
	req   *discoveryv3.DeltaDiscoveryRequest
	known func(typeURL string) *typeIndex
	// initial is the request's initial_resource_versions in the order sent (a later entry for
	// a name wins, as in the map), decoded here rather than into req's map.
	initial []nameVersion
	failed  error // see wireRequest.decodeErr
}

func (r *deltaRequest) decode(b []byte) error {
	r.failed = unmarshalDeltaDiscoveryRequest(b, r)
	return r.failed
}

func (r *deltaRequest) decodeErr() error { return r.failed }

// unmarshalDeltaDiscoveryRequest decodes an incremental request like proto.Unmarshal, except
// that the names it subscribes to are decoded as unmarshalDiscoveryRequest decodes a SotW
// request's (an Envoy's first EDS request subscribes to every cluster it was sent), and its
// initial_resource_versions go to r.initial, names and versions resolved against the index the
// same way: every Envoy that reconnects after a control plane restart says what it holds, a
// thousand entries per type, nearly all of them exactly the index's.
func unmarshalDeltaDiscoveryRequest(b []byte, r *deltaRequest) error {
	r.initial = nil
	_, err := decodeRequest(b, r.req, func(names []string) { r.req.ResourceNamesSubscribe = names },
		func(vs []nameVersion) { r.initial = vs }, r.known, nil)
	return err
}

// unmarshalDiscoveryRequest decodes a state-of-the-world request like proto.Unmarshal, except
// for its resource names. A SotW client repeats every name it wants in every request, ACKs
// included: an Envoy with a thousand clusters sends a thousand names per EDS ACK, and decoding
// them one string each was the largest part of Holdfast's CPU for an initial push. So a name
// that is a resource of known's index for the request's type becomes that resource's own name
// (no copy), and the others share one allocation. Every other field goes through
// proto.Unmarshal.
func unmarshalDiscoveryRequest(b []byte, r *sotwRequest) error {
	repeated, err := decodeRequest(b, r.req, func(names []string) { r.req.ResourceNames = names }, nil, r.known, r.previous)
	r.repeated = repeated
	return err
}

// decodeRequest decodes b into req like proto.Unmarshal, except for field 3, the resource
// names: they are looked up in known's index for req's type, and handed to setNames. With
// previous, a list equal to the stream's previous one of req's type is not decoded at all
// (repeated; setNames is not called). With setVersions, field 5 is a Delta request's
// initial_resource_versions, decoded the same way and handed to setVersions.
func decodeRequest(b []byte, req namedRequest, setNames func([]string), setVersions func([]nameVersion),
	known func(typeURL string) *typeIndex, previous *previousNames) (repeated bool, err error) {
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

	var idx *typeIndex
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
		var r *Resource
		if r, next = idx.lookup(next, v); r != nil {
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
func decodeVersions(b []byte, runs []span, count int, idx *typeIndex) ([]nameVersion, error) {
	out := make([]nameVersion, 0, count)
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
		var r *Resource
		switch r, next = idx.lookup(next, k); {
		case r != nil && r.Version == string(v):
			out = append(out, nameVersion{r.Name, r.Version})
		case r != nil:
			out = append(out, nameVersion{r.Name, string(v)})
		default:
			out = append(out, nameVersion{string(k), string(v)})
		}
		return nil
	})
	return out, err
}

// lookup returns idx's resource named name (nil: none; idx may be nil) without copying name,
// and where to look first for the next name: clients usually list names in the index's order,
// so the place after the last is tried before the map.
func (idx *typeIndex) lookup(hint int, name []byte) (*Resource, int) {
	if idx == nil {
		return nil, hint
	}
	if hint < len(idx.list) && idx.list[hint].Name == string(name) {
		return idx.list[hint], hint + 1
	}
	return idx.byName[string(name)], hint
}

var errMalformedEntry = errors.New("proto: initial_resource_versions: malformed entry")

// remember records d as the names of the stream's latest request of type typ.
func (p *previousNames) remember(typ string, d namesDigest) {
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

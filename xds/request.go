package xds

import (
	"errors"
	"strings"
	"unicode/utf8"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// fieldRequestNames is DiscoveryRequest.resource_names.
const fieldRequestNames = 3

var errInvalidUTF8 = errors.New("proto: resource_names: invalid UTF-8")

// unmarshalDiscoveryRequest decodes a state-of-the-world request like proto.Unmarshal, except
// that its resource names share one allocation. A SotW client repeats every name it wants in
// every request, ACKs included: an Envoy with a thousand clusters sends a thousand names per
// EDS ACK, and decoding them one string each was the largest part of Holdfast's CPU for an
// initial push. Every other field goes through proto.Unmarshal.
func unmarshalDiscoveryRequest(b []byte, req *discoveryv3.DiscoveryRequest) error {
	var names [][]byte
	var others [][2]int // the other fields, as spans of b
	total, restLen := 0, 0
	for at := 0; at < len(b); {
		num, typ, n := protowire.ConsumeTag(b[at:])
		if n < 0 {
			return proto.Unmarshal(b, req) // malformed: let proto say how
		}
		m := protowire.ConsumeFieldValue(num, typ, b[at+n:])
		if m < 0 {
			return proto.Unmarshal(b, req)
		}
		if num == fieldRequestNames && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b[at+n:])
			if !utf8.Valid(v) {
				return errInvalidUTF8
			}
			names = append(names, v)
			total += len(v)
		} else {
			others = append(others, [2]int{at, at + n + m})
			restLen += n + m
		}
		at += n + m
	}
	if len(names) == 0 {
		return proto.Unmarshal(b, req)
	}
	rest := make([]byte, 0, restLen)
	for _, o := range others {
		rest = append(rest, b[o[0]:o[1]]...)
	}
	if err := proto.Unmarshal(rest, req); err != nil {
		return err
	}
	var all strings.Builder
	all.Grow(total)
	for _, v := range names {
		all.Write(v)
	}
	s := all.String()
	req.ResourceNames = make([]string, len(names))
	at := 0
	for i, v := range names {
		req.ResourceNames[i] = s[at : at+len(v)]
		at += len(v)
	}
	return nil
}

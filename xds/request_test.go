package xds

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// The request decoder must agree with proto.Unmarshal on every input: the same message when
// both succeed, an error when proto gives one.
func FuzzUnmarshalDiscoveryRequest(f *testing.F) {
	for _, req := range []*discoveryv3.DiscoveryRequest{
		{},
		{TypeUrl: resourcev3.ClusterType},
		{Node: &corev3.Node{Id: "n", Cluster: "c"}, TypeUrl: resourcev3.EndpointType, VersionInfo: "v1", ResponseNonce: "3",
			ResourceNames: []string{"a", "", "bb", "ccc.ns.svc.cluster.local:80", "a"}},
		{TypeUrl: resourcev3.RouteType, ResourceNames: []string{"x"}, ErrorDetail: &status.Status{Code: 3, Message: "bad"}},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x1a, 0x02, 0xff, 0xfe})                                   // names field with invalid UTF-8
	f.Add([]byte{0x1a, 0x05, 'a'})                                          // truncated
	f.Add([]byte{0x18, 0x01, 0x1a, 0x01, 'z'})                              // field 3 as a varint, then as bytes
	f.Add([]byte{0x12, 0x03, 0x0a, 0x01, 'n'})                              // node
	f.Add([]byte{0x2a, 0x06, 0x0a, 0x01, 'a', 0x0a, 0x01, 'b'})             // map entry: key twice
	f.Add([]byte{0x2a, 0x04, 0x08, 0x01, 0x12, 0x00, 0x2a, 0x00})           // map entry: key as a varint; an empty entry
	f.Add([]byte{0x2a, 0x03, 0x0a, 0x01, 'a', 0x2a, 0x03, 0x12, 0x01, 'z'}) // same key ("a", then "") twice
	for _, req := range []*discoveryv3.DeltaDiscoveryRequest{
		{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{"a", "zz", "new"}, ResourceNamesUnsubscribe: []string{"x"},
			InitialResourceVersions: map[string]string{"a": "1"}, ResponseNonce: "2"},
		{TypeUrl: resourcev3.ClusterType, InitialResourceVersions: map[string]string{"a": "1", "bb": "2", "gone": "3", "": ""}},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// Names are looked up in an index, of any type, holding some of the seeds' names.
	idx := namesIndex("a", "bb", "ccc.ns.svc.cluster.local:80", "x", "zz")
	f.Fuzz(func(t *testing.T, b []byte) {
		var want discoveryv3.DiscoveryRequest
		wantErr := proto.Unmarshal(b, &want)
		previous := newPreviousNames()
		for i, r := range []*sotwRequest{
			{},
			{known: func(string) *typeIndex { return idx }},
			{previous: previous}, // the first with these names
			{previous: previous}, // the same again: a repeat when it has names
		} {
			r.req = new(discoveryv3.DiscoveryRequest)
			in := slices.Clone(b)
			gotErr := unmarshalDiscoveryRequest(in, r)
			if (wantErr == nil) != (gotErr == nil) {
				t.Fatalf("decode %d: proto: %v; ours: %v", i, wantErr, gotErr)
			}
			clear(in) // nothing decoded may refer to the input
			if wantErr != nil {
				continue
			}
			if wantRepeat := i == 3 && len(want.ResourceNames) > 0; r.repeated != wantRepeat {
				t.Fatalf("decode %d: repeated = %v, want %v", i, r.repeated, wantRepeat)
			}
			w := proto.Clone(&want).(*discoveryv3.DiscoveryRequest)
			if r.repeated {
				w.ResourceNames = nil // not decoded again
			}
			if !proto.Equal(w, r.req) {
				t.Fatalf("decode %d: decoded differently:\nproto %v\nours  %v", i, w, r.req)
			}
		}
		// The same bytes as an incremental request, whose field 3 is resource_names_subscribe.
		var wantDelta discoveryv3.DeltaDiscoveryRequest
		wantErr = proto.Unmarshal(b, &wantDelta)
		for _, known := range []func(string) *typeIndex{nil, func(string) *typeIndex { return idx }} {
			r := &deltaRequest{req: new(discoveryv3.DeltaDiscoveryRequest), known: known}
			in := slices.Clone(b)
			gotErr := unmarshalDeltaDiscoveryRequest(in, r)
			if (wantErr == nil) != (gotErr == nil) {
				t.Fatalf("delta: proto: %v; ours: %v", wantErr, gotErr)
			}
			clear(in)
			if wantErr != nil {
				continue
			}
			if len(r.req.InitialResourceVersions) > 0 {
				t.Fatalf("delta: initial_resource_versions decoded into the map: %v", r.req.InitialResourceVersions)
			}
			for _, nv := range r.initial { // in order: a later entry for a name wins, as in proto's map
				if r.req.InitialResourceVersions == nil {
					r.req.InitialResourceVersions = map[string]string{}
				}
				r.req.InitialResourceVersions[nv.name] = nv.version
			}
			if !proto.Equal(&wantDelta, r.req) {
				t.Fatalf("delta: decoded differently:\nproto %v\nours  %v", &wantDelta, r.req)
			}
		}
	})
}

// A request is a repeat when it lists the names of the stream's previous request of its type,
// in the same order; requests of other types in between do not matter.
func TestRequestNamesRepeated(t *testing.T) {
	previous := newPreviousNames()
	for i, step := range []struct {
		typ          string
		names        []string
		nonce        string
		wantRepeated bool
	}{
		{resourcev3.EndpointType, []string{"a", "b"}, "", false},
		{resourcev3.EndpointType, []string{"a", "b"}, "1", true}, // an ACK
		{resourcev3.EndpointType, []string{"b", "a"}, "2", false},
		{resourcev3.ClusterType, nil, "3", false},
		{resourcev3.RouteType, []string{"b", "a"}, "", false}, // same names, another type
		{resourcev3.EndpointType, []string{"b", "a"}, "4", true},
		{resourcev3.EndpointType, []string{"b", "a", "a"}, "5", false},
		{resourcev3.EndpointType, []string{"b", "aa"}, "6", false},
		{resourcev3.EndpointType, []string{"ba", "a"}, "7", false}, // same bytes run together
		{resourcev3.EndpointType, nil, "8", false},
		{resourcev3.EndpointType, []string{"ba", "a"}, "9", false}, // the list before last
		{resourcev3.EndpointType, []string{"ba", "a"}, "10", true},
	} {
		b, err := proto.Marshal(&discoveryv3.DiscoveryRequest{TypeUrl: step.typ, ResourceNames: step.names, ResponseNonce: step.nonce})
		if err != nil {
			t.Fatal(err)
		}
		r := &sotwRequest{req: new(discoveryv3.DiscoveryRequest), previous: previous}
		if err := unmarshalDiscoveryRequest(b, r); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if r.repeated != step.wantRepeated {
			t.Errorf("step %d (%s %v): repeated = %v, want %v", i, step.typ, step.names, r.repeated, step.wantRepeated)
		}
		if r.req.GetResponseNonce() != step.nonce || r.req.GetTypeUrl() != step.typ {
			t.Errorf("step %d: decoded %v", i, r.req)
		}
		if !r.repeated && !slices.Equal(r.req.ResourceNames, step.names) {
			t.Errorf("step %d: names %q, want %q", i, r.req.ResourceNames, step.names)
		}
	}
}

// Through the server's codec, a message that is not a stream's request (here a bare
// DiscoveryRequest) decodes as with gRPC's proto codec.
func TestWireCodecDecodesOtherMessages(t *testing.T) {
	req := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, VersionInfo: "v", ResourceNames: []string{"one", "two", "three"}}
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	// Split across buffers, as gRPC may hand it over.
	data := mem.BufferSlice{mem.SliceBuffer(b[:5]), mem.SliceBuffer(b[5:])}
	var got discoveryv3.DiscoveryRequest
	if err := newWireCodec().Unmarshal(data, &got); err != nil || !proto.Equal(&got, req) {
		t.Fatalf("decoded %v, %v; want %v", &got, err, req)
	}
}

// A SotW stream's request names that are resources of the index it knows become those
// resources' own names; the others are copies; none refers to the buffers gRPC reuses.
func TestWireCodecResolvesKnownNames(t *testing.T) {
	idx := namesIndex("one", "three", "two")
	req := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, VersionInfo: "v", ResponseNonce: "7",
		ResourceNames: []string{"one", "two", "three", "four", "one", "fünf"}}
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	for _, cuts := range [][]int{
		nil,     // one buffer: decoded in place
		{9, 30}, // three: copied into one first
	} {
		in := slices.Clone(b)
		var data mem.BufferSlice
		from := 0
		for _, to := range append(cuts, len(in)) {
			data = append(data, mem.SliceBuffer(in[from:to]))
			from = to
		}
		var askedFor string
		got := sotwRequest{req: new(discoveryv3.DiscoveryRequest), known: func(typ string) *typeIndex { askedFor = typ; return idx }}
		err := newWireCodec().Unmarshal(data, &got)
		clear(in) // as gRPC reuses its buffers
		if err != nil || !proto.Equal(got.req, req) {
			t.Fatalf("%d buffers: decoded %v, %v; want %v", len(data), got.req, err, req)
		}
		if askedFor != resourcev3.EndpointType {
			t.Errorf("names looked up in the index of %q, want %q", askedFor, resourcev3.EndpointType)
		}
		for i, n := range got.req.ResourceNames {
			r, inIndex := idx.byName[n]
			shared := inIndex && unsafe.StringData(n) == unsafe.StringData(r.Name)
			if shared != inIndex {
				t.Errorf("name %d (%q): in the index %v, shares its string %v", i, n, inIndex, shared)
			}
		}
	}
}

// An incremental stream's subscriptions are resolved the same way.
func TestWireCodecResolvesKnownDeltaNames(t *testing.T) {
	idx := namesIndex("one", "three", "two")
	req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: "7",
		ResourceNamesSubscribe: []string{"one", "two", "four"}, ResourceNamesUnsubscribe: []string{"three"}}
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	in := slices.Clone(b)
	got := &deltaRequest{req: new(discoveryv3.DeltaDiscoveryRequest), known: func(string) *typeIndex { return idx }}
	err = newWireCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(in[:7]), mem.SliceBuffer(in[7:])}, got)
	clear(in)
	if err != nil || !proto.Equal(got.req, req) {
		t.Fatalf("decoded %v, %v; want %v", got.req, err, req)
	}
	for i, n := range got.req.ResourceNamesSubscribe {
		r, inIndex := idx.byName[n]
		if shared := inIndex && unsafe.StringData(n) == unsafe.StringData(r.Name); shared != inIndex {
			t.Errorf("name %d (%q): in the index %v, shares its string %v", i, n, inIndex, shared)
		}
	}
}

// namesIndex is an index of resources with these names.
func namesIndex(names ...string) *typeIndex {
	var l resourceList
	for i, n := range names {
		l = append(l, &Resource{Name: strings.Clone(n), Version: fmt.Sprint(i + 1)})
	}
	return newTypeIndex(l)
}

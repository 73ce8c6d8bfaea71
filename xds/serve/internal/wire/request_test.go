package wire

import (
	"slices"
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
		previous := NewPrevious()
		for i, r := range []*SotWRequest{
			{},
			{Known: func(string) Index { return idx }},
			{Previous: previous}, // the first with these names
			{Previous: previous}, // the same again: a repeat when it has names
		} {
			r.Req = new(discoveryv3.DiscoveryRequest)
			in := slices.Clone(b)
			gotErr := unmarshalDiscoveryRequest(in, r)
			if (wantErr == nil) != (gotErr == nil) {
				t.Fatalf("decode %d: proto: %v; ours: %v", i, wantErr, gotErr)
			}
			clear(in) // nothing decoded may refer to the input
			if wantErr != nil {
				continue
			}
			if wantRepeat := i == 3 && len(want.ResourceNames) > 0; r.Repeated != wantRepeat {
				t.Fatalf("decode %d: repeated = %v, want %v", i, r.Repeated, wantRepeat)
			}
			w := proto.Clone(&want).(*discoveryv3.DiscoveryRequest)
			if r.Repeated {
				w.ResourceNames = nil // not decoded again
			}
			if !proto.Equal(w, r.Req) {
				t.Fatalf("decode %d: decoded differently:\nproto %v\nours  %v", i, w, r.Req)
			}
		}
		// The same bytes as an incremental request, whose field 3 is resource_names_subscribe.
		var wantDelta discoveryv3.DeltaDiscoveryRequest
		wantErr = proto.Unmarshal(b, &wantDelta)
		for _, known := range []func(string) Index{nil, func(string) Index { return idx }} {
			r := &DeltaRequest{Req: new(discoveryv3.DeltaDiscoveryRequest), Known: known}
			in := slices.Clone(b)
			gotErr := unmarshalDeltaDiscoveryRequest(in, r)
			if (wantErr == nil) != (gotErr == nil) {
				t.Fatalf("delta: proto: %v; ours: %v", wantErr, gotErr)
			}
			clear(in)
			if wantErr != nil {
				continue
			}
			if len(r.Req.InitialResourceVersions) > 0 {
				t.Fatalf("delta: initial_resource_versions decoded into the map: %v", r.Req.InitialResourceVersions)
			}
			for _, nv := range r.Initial { // in order: a later entry for a name wins, as in proto's map
				if r.Req.InitialResourceVersions == nil {
					r.Req.InitialResourceVersions = map[string]string{}
				}
				r.Req.InitialResourceVersions[nv.Name] = nv.Version
			}
			if !proto.Equal(&wantDelta, r.Req) {
				t.Fatalf("delta: decoded differently:\nproto %v\nours  %v", &wantDelta, r.Req)
			}
		}
	})
}

// A request is a repeat when it lists the names of the stream's previous request of its type,
// in the same order; requests of other types in between do not matter.
func TestRequestNamesRepeated(t *testing.T) {
	previous := NewPrevious()
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
		r := &SotWRequest{Req: new(discoveryv3.DiscoveryRequest), Previous: previous}
		if err := unmarshalDiscoveryRequest(b, r); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if r.Repeated != step.wantRepeated {
			t.Errorf("step %d (%s %v): repeated = %v, want %v", i, step.typ, step.names, r.Repeated, step.wantRepeated)
		}
		if r.Req.GetResponseNonce() != step.nonce || r.Req.GetTypeUrl() != step.typ {
			t.Errorf("step %d: decoded %v", i, r.Req)
		}
		if !r.Repeated && !slices.Equal(r.Req.ResourceNames, step.names) {
			t.Errorf("step %d: names %q, want %q", i, r.Req.ResourceNames, step.names)
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
	if err := NewCodec().Unmarshal(data, &got); err != nil || !proto.Equal(&got, req) {
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
		got := SotWRequest{Req: new(discoveryv3.DiscoveryRequest), Known: func(typ string) Index { askedFor = typ; return idx }}
		err := NewCodec().Unmarshal(data, &got)
		clear(in) // as gRPC reuses its buffers
		if err != nil || !proto.Equal(got.Req, req) {
			t.Fatalf("%d buffers: decoded %v, %v; want %v", len(data), got.Req, err, req)
		}
		if askedFor != resourcev3.EndpointType {
			t.Errorf("names looked up in the index of %q, want %q", askedFor, resourcev3.EndpointType)
		}
		for i, n := range got.Req.ResourceNames {
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
	got := &DeltaRequest{Req: new(discoveryv3.DeltaDiscoveryRequest), Known: func(string) Index { return idx }}
	err = NewCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(in[:7]), mem.SliceBuffer(in[7:])}, got)
	clear(in)
	if err != nil || !proto.Equal(got.Req, req) {
		t.Fatalf("decoded %v, %v; want %v", got.Req, err, req)
	}
	for i, n := range got.Req.ResourceNamesSubscribe {
		r, inIndex := idx.byName[n]
		if shared := inIndex && unsafe.StringData(n) == unsafe.StringData(r.Name); shared != inIndex {
			t.Errorf("name %d (%q): in the index %v, shares its string %v", i, n, inIndex, shared)
		}
	}
}

package wire

import (
	"fmt"
	"slices"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/internal/xdstest"
	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/translate"
)

// wireResources builds resources with names and bodies of assorted lengths (varint lengths of
// one, two and three bytes).
func wireResources(t *testing.T) []*resource.Resource {
	t.Helper()
	var out []*resource.Resource
	for _, n := range []int{0, 1, 127, 128, 300, 20000} {
		a, _ := xdstest.TwoServices()
		a = xdstest.WithEndpoints(a)
		for i := range n / 20 {
			a.Ports[0].Endpoints = append(a.Ports[0].Endpoints, resolver.Endpoint{Address: fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), Port: 8080, Ready: true, Serving: true})
		}
		a.Name = fmt.Sprintf("s%d-%0*d", n, n%150, 0) // names of assorted lengths too
		res, err := translate.NewBuilder(translate.Translator{Naming: translate.Naming{Domain: xdstest.Domain}, EnvoyListenAddress: "127.0.0.1"}).Build(xdstest.Services(a), nil)
		if err != nil {
			t.Fatal(err)
		}
		set := res.Set[resource.KindEnvoy]
		out = append(out, set[resourcev3.EndpointType]...)
		out = append(out, set[resourcev3.ClusterType]...)
	}
	return out
}

func TestWireResponsesMatchProto(t *testing.T) {
	all := wireResources(t)
	idx := newTestIndex(all)
	l := idx.list
	other := resource.New(all[0].Msg) // same content, another Resource: not the index's
	reversed := slices.Clone(l)
	slices.Reverse(reversed)
	tests := []struct {
		name   string
		idx    Index
		res    []*resource.Resource
		joined bool // some run goes out as the index's joined bytes
	}{
		{name: "no index", res: all}, // a nil Index
		{name: "the whole index", idx: idx, res: l, joined: true},
		{name: "a run, a gap, singles", idx: idx, res: append(slices.Clone(l[:9]), l[10], other), joined: true},
		{name: "out of order", idx: idx, res: reversed},
		{name: "short", idx: idx, res: l[:3]},
	}
	codec := NewCodec()
	decode := func(w *Response, into proto.Message) {
		t.Helper()
		b, err := codec.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		if err := proto.Unmarshal(b.Materialize(), into); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var anys []*anypb.Any
			var wrapped []*discoveryv3.Resource
			for _, r := range tc.res {
				a, err := anypb.New(r.Msg)
				if err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(a, r.Any) {
					t.Fatalf("%s: Any differs from anypb.New", r.Name)
				}
				anys = append(anys, a)
				wrapped = append(wrapped, &discoveryv3.Resource{Name: r.Name, Version: r.Version, Resource: a})
			}
			var sotw discoveryv3.DiscoveryResponse
			sw := SotW(tc.idx, "v1", resourcev3.EndpointType, "n1", tc.res)
			decode(sw, &sotw)
			want := &discoveryv3.DiscoveryResponse{VersionInfo: "v1", TypeUrl: resourcev3.EndpointType, Nonce: "n1", Resources: anys}
			if !proto.Equal(&sotw, want) {
				t.Errorf("SotW response decodes to %v", &sotw)
			}
			var delta discoveryv3.DeltaDiscoveryResponse
			dw := Delta(tc.idx, "sys", resourcev3.ClusterType, "n2", tc.res, []string{"gone-1", "gone-2"})
			decode(dw, &delta)
			wantDelta := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: "sys", TypeUrl: resourcev3.ClusterType, Nonce: "n2",
				Resources: wrapped, RemovedResources: []string{"gone-1", "gone-2"}}
			if !proto.Equal(&delta, wantDelta) {
				t.Errorf("Delta response decodes to %v", &delta)
			}
			// A joined run is one part for many resources.
			if joined := len(sw.parts)-1 < len(tc.res) && len(dw.parts)-1 < len(tc.res); joined != tc.joined {
				t.Errorf("joined = %v (%d and %d parts for %d resources), want %v", joined, len(sw.parts)-1, len(dw.parts)-1, len(tc.res), tc.joined)
			}
			if sw.size != dw.size || sw.n != len(tc.res) {
				t.Errorf("size %d and %d, n %d; want equal sizes and n %d", sw.size, dw.size, sw.n, len(tc.res))
			}
		})
	}
	// The codec still handles ordinary messages.
	want := &discoveryv3.DiscoveryResponse{VersionInfo: "v1", TypeUrl: resourcev3.EndpointType, Nonce: "n1", Resources: []*anypb.Any{all[0].Any}}
	b, err := codec.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var round discoveryv3.DiscoveryResponse
	if err := codec.Unmarshal(b, &round); err != nil || !proto.Equal(&round, want) {
		t.Errorf("proto round trip: %v", err)
	}
}

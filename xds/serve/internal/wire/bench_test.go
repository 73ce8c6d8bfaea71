package wire

import (
	"fmt"
	"slices"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// BenchmarkDecodeSotWRequest decodes an Envoy's EDS request for 1,000 clusters: "first" names
// them for the first time (each looked up in the index), "ack" repeats them (as every ACK
// does), "unknown" names clusters Holdfast does not have (each copied).
func BenchmarkDecodeSotWRequest(b *testing.B) {
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local:80", i, i%50)
	}
	slices.Sort(names)
	idx := namesIndex(names...)
	msg, err := proto.Marshal(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, VersionInfo: "0123456789abcdef",
		ResponseNonce: "42", ResourceNames: names})
	if err != nil {
		b.Fatal(err)
	}
	known := func(string) Index { return idx }
	for _, c := range []struct {
		name  string
		known func(string) Index
		again bool
	}{
		{"first", known, false},
		{"ack", known, true},
		{"unknown", nil, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			previous := NewPrevious()
			if c.again {
				if err := unmarshalDiscoveryRequest(msg, &SotWRequest{Req: new(discoveryv3.DiscoveryRequest), Previous: previous}); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				if !c.again {
					clear(previous.byType)
				}
				r := &SotWRequest{Req: new(discoveryv3.DiscoveryRequest), Known: c.known, Previous: previous}
				if err := unmarshalDiscoveryRequest(msg, r); err != nil || r.Repeated != c.again {
					b.Fatalf("repeated %v, %v", r.Repeated, err)
				}
			}
		})
	}
}

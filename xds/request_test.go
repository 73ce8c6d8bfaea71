package xds

import (
	"testing"

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
	f.Add([]byte{0x1a, 0x02, 0xff, 0xfe})      // names field with invalid UTF-8
	f.Add([]byte{0x1a, 0x05, 'a'})             // truncated
	f.Add([]byte{0x18, 0x01, 0x1a, 0x01, 'z'}) // field 3 as a varint, then as bytes
	f.Add([]byte{0x12, 0x03, 0x0a, 0x01, 'n'}) // node
	f.Fuzz(func(t *testing.T, b []byte) {
		var want, got discoveryv3.DiscoveryRequest
		wantErr := proto.Unmarshal(b, &want)
		gotErr := unmarshalDiscoveryRequest(b, &got)
		if (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("proto: %v; ours: %v", wantErr, gotErr)
		}
		if wantErr == nil && !proto.Equal(&want, &got) {
			t.Fatalf("decoded differently:\nproto %v\nours  %v", &want, &got)
		}
	})
}

// Through the server's codec, a request's names arrive intact.
func TestWireCodecDecodesRequests(t *testing.T) {
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

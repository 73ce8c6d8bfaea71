package serve

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/holdfast/holdfast/xds/internal/xdstest"
	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/translate"
)

// fuzzTarget starts one server for a fuzzing process (starting one per input would be most of
// the work), stopped when the fuzz target ends.
func fuzzTarget(f *testing.F) (*Server, *grpc.ClientConn) {
	srv, err := NewServer(ServerOptions{AckTimeout: time.Minute, MaxUnknownNames: 1000})
	if err != nil {
		f.Fatal(err)
	}
	a, b := xdstest.TwoServices()
	v := testView(a, b)
	res, err := translate.NewBuilder(testTranslator).Build(v.Services, v.Retired)
	if err != nil {
		f.Fatal(err)
	}
	srv.Publish(res.Set, res.EventAt)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go func() { _ = srv.GRPC.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		_ = conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Stop(ctx)
	})
	return srv, conn
}

// FuzzServerRequests drives a running server's whole request path — gRPC framing, request
// decoding, both protocols' state machines, pushes — with a stream of arbitrary requests: the
// first byte picks SotW or Delta, then each message is a 2-byte length and that many bytes,
// sent as they are. Whatever comes, the server does not crash, the stream ends or answers, what
// it holds stays within its bounds, and a well-formed client is served afterwards.
func FuzzServerRequests(f *testing.F) {
	frame := func(delta bool, msgs ...proto.Message) []byte {
		out := []byte{0}
		if delta {
			out[0] = 1
		}
		for _, m := range msgs {
			b, err := proto.Marshal(m)
			if err != nil {
				f.Fatal(err)
			}
			out = binary.BigEndian.AppendUint16(out, uint16(len(b))) //nolint:gosec // seeds are small
			out = append(out, b...)
		}
		return out
	}
	a, _ := xdstest.TwoServices()
	name := testTranslator.Naming.Resource(a.Key, 80)
	node := &corev3.Node{Id: "fuzz", UserAgentName: "envoy"}
	f.Add(frame(false, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType},
		&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{name, "x"}},
		&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{name}, ResponseNonce: "1", VersionInfo: "v"}))
	f.Add(frame(true, &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{name, "y"},
		InitialResourceVersions: map[string]string{name: "stale"}},
		&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesUnsubscribe: []string{name}, ResponseNonce: "1"},
		&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNamesSubscribe: []string{"cert"}}))
	f.Add(frame(false, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: "type.googleapis.com/garbage"}))
	f.Add(frame(true, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.RouteType, ResponseNonce: "7", ErrorDetail: nil}))
	f.Add([]byte{1, 0, 3, 0x1a, 0x05, 'a'})
	srv, conn := fuzzTarget(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		delta := data[0]%2 == 1
		var msgs [][]byte
		for rest := data[1:]; len(rest) >= 2 && len(msgs) < 64; {
			n := int(binary.BigEndian.Uint16(rest))
			rest = rest[2:]
			n = min(n, len(rest))
			msgs, rest = append(msgs, rest[:n]), rest[n:]
		}
		method := "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
		if delta {
			method = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method, grpc.ForceCodecV2(rawCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			for {
				var out []byte
				if err := cs.RecvMsg(&out); err != nil {
					return
				}
			}
		}()
		for _, m := range msgs {
			if err := cs.SendMsg(m); err != nil {
				break // the server ended the stream: a bad request
			}
		}
		for _, c := range srv.Clients() {
			if n := len(c.Types); n > len(resource.PushOrder) {
				t.Fatalf("a stream holds %d types, more than the %d xDS types", n, len(resource.PushOrder))
			}
			names := 0
			for _, ts := range c.Types {
				names += len(ts.Names)
			}
			if names > 1000+8 { // the budget, and names Holdfast has
				t.Fatalf("a stream holds %d names", names)
			}
		}
		cancel()
		<-ended

		// A well-formed client is served.
		good, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = good.CloseSend() }()
		if err := good.Send(&discoveryv3.DiscoveryRequest{Node: grpcNode, TypeUrl: resourcev3.ClusterType, ResourceNames: []string{name}}); err != nil {
			t.Fatal(err)
		}
		if r, err := good.Recv(); err != nil && !errors.Is(err, io.EOF) || (err == nil && len(r.GetResources()) != 1) {
			t.Fatalf("a good client after the fuzzed stream: %v %v", r, err)
		}
	})
}

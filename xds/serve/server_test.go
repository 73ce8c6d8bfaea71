package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/internal/testkit"
	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/internal/xdstest"
	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/translate"
)

// testServer runs a Server on 127.0.0.1:0 fed by a Publisher, and returns a way to publish.
func testServer(t *testing.T) (*Server, *grpc.ClientConn, func(cache.View)) {
	t.Helper()
	return testServerWith(t, ServerOptions{AckTimeout: time.Minute})
}

func testServerWith(t *testing.T, opts ServerOptions) (*Server, *grpc.ClientConn, func(cache.View)) {
	t.Helper()
	srv, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	b := translate.NewBuilder(testTranslator)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.GRPC.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Stop(ctx)
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return srv, conn, func(v cache.View) {
		res, err := b.Build(v.Services, v.Retired)
		if err != nil {
			t.Fatal(err)
		}
		srv.Publish(res.Set, res.EventAt)
	}
}

var grpcNode = &corev3.Node{Id: "n1", UserAgentName: "gRPC Go"}

// sotwStream opens a state-of-the-world ADS stream on conn, closed when the test ends.
func sotwStream(t *testing.T, conn *grpc.ClientConn) discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// deltaStream opens an incremental ADS stream on conn, closed when the test ends.
func deltaStream(t *testing.T, conn *grpc.ClientConn) discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
	t.Helper()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// responses reads a stream's responses into a channel, from one goroutine.
func responses[T any](recv func() (T, error)) <-chan T {
	ch := make(chan T, 100)
	go func() {
		for {
			r, err := recv()
			if err != nil {
				close(ch)
				return
			}
			ch <- r
		}
	}()
	return ch
}

// recvWithin returns the next response, or nil if none arrives within d.
func recvWithin[T any](t *testing.T, ch <-chan T, d time.Duration) *T {
	t.Helper()
	select {
	case r, ok := <-ch:
		if !ok {
			return nil
		}
		return &r
	case <-time.After(d):
		return nil
	}
}

func TestSotWNackIsNotResent(t *testing.T) {
	srv, conn, publish := testServer(t)
	a, b := xdstest.TwoServices()
	publish(testView(a, b))
	st := sotwStream(t, conn)
	in := responses(st.Recv)
	name := testTranslator.Naming.Resource(a.Key, 80)
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: grpcNode, TypeUrl: resourcev3.EndpointType, ResourceNames: []string{name}}); err != nil {
		t.Fatal(err)
	}
	first := recvWithin(t, in, 5*time.Second)
	if first == nil || len((*first).Resources) != 1 {
		t.Fatalf("first response: %v", first)
	}
	// Reject it: nothing comes back while nothing changes.
	if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{name},
		ResponseNonce: (*first).Nonce, ErrorDetail: &statuspb.Status{Code: 3, Message: "no"}}); err != nil {
		t.Fatal(err)
	}
	br := newSotWBarrier(srv, st, in, a, b)
	br.nothingOf(t, resourcev3.EndpointType) // the rejected version is not sent again
	// The rejection is recorded for the operator: client, type, version, resources, detail.
	clients := srv.Clients()
	if len(clients) != 1 || len(clients[0].Nacks) != 1 {
		t.Fatalf("clients = %+v, want one with one NACK", clients)
	}
	nack, ts := clients[0].Nacks[0], clients[0].Types[resourcev3.EndpointType]
	if clients[0].NodeID != "n1" || clients[0].Kind != resource.KindGRPC || nack.Type != resourcev3.EndpointType || nack.Detail != "no" ||
		nack.Version != (*first).VersionInfo || nack.Resources[name] == "" || ts.Nacked == nil || ts.InFlight {
		t.Errorf("NACK record = %+v, type status %+v", nack, ts)
	}
	// A change to another service sends nothing to this client; a change to its own does.
	publish(testView(a, xdstest.WithEndpoints(b, "10.9.9.9")))
	br.nothingOf(t, resourcev3.EndpointType)
	publish(testView(xdstest.WithEndpoints(a, "10.1.1.1", "10.1.1.2"), b))
	r := recvWithin(t, in, 5*time.Second)
	if r == nil || len((*r).Resources) != 1 || (*r).VersionInfo == (*first).VersionInfo {
		t.Fatalf("new version not sent: %v", r)
	}
}

// Every SotW request's names become the subscription, whether they repeat the previous
// request's (an ACK: nothing to do) or change it, with requests of another type in between.
func TestSotWSubscriptionFollowsEveryRequest(t *testing.T) {
	srv, conn, publish := testServer(t)
	a, b := xdstest.TwoServices()
	publish(testView(a, b))
	st := sotwStream(t, conn)
	in := responses(st.Recv)
	na, nb := testTranslator.Naming.Resource(a.Key, 80), testTranslator.Naming.Resource(b.Key, 80)
	nonce := map[string]string{}
	send := func(typ string, names ...string) {
		t.Helper()
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: grpcNode, TypeUrl: typ, ResourceNames: names, ResponseNonce: nonce[typ]}); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(typ string, names ...string) {
		t.Helper()
		r := recvWithin(t, in, 5*time.Second)
		if r == nil {
			t.Fatalf("no %s response, want %q", typ, names)
		}
		var got []string
		for _, res := range (*r).Resources {
			m, err := res.UnmarshalNew()
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, resource.NameOf(m))
		}
		slices.Sort(got)
		if (*r).TypeUrl != typ || !slices.Equal(got, names) {
			t.Fatalf("response %s %q, want %s %q", (*r).TypeUrl, got, typ, names)
		}
		nonce[typ] = (*r).Nonce
	}
	br := newSotWBarrier(srv, st, in, a, b)
	expectNothing := func() {
		t.Helper()
		br.nothingOf(t, resourcev3.EndpointType)
	}
	// EDS is not a full-state type: a response carries what the client lacks.
	send(resourcev3.EndpointType, na)
	expect(resourcev3.EndpointType, na)
	send(resourcev3.EndpointType, na) // ACK
	expectNothing()
	send(resourcev3.EndpointType, na, nb)
	expect(resourcev3.EndpointType, nb)
	send(resourcev3.EndpointType, na, nb) // ACK
	send(resourcev3.ClusterType, nb)
	expect(resourcev3.ClusterType, nb)
	send(resourcev3.ClusterType, nb)  // ACK
	send(resourcev3.EndpointType, nb) // drops a, after a request of another type
	expectNothing()
	send(resourcev3.EndpointType, nb) // the same again
	expectNothing()
	send(resourcev3.EndpointType, nb, na) // a again: sent, as the client dropped it
	expect(resourcev3.EndpointType, na)
}

// rawCodec sends a []byte as the message, as a broken or hostile client might.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}
func (rawCodec) Name() string { return "proto" }

// A request Holdfast cannot use ends that client's stream with a clear error, and is counted
// and logged; other clients are served as before.
func TestBadRequestsAreCountedAndLogged(t *testing.T) {
	var logs testkit.Log
	srv, conn, publish := testServerWith(t, ServerOptions{AckTimeout: time.Minute, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	a, b := xdstest.TwoServices()
	publish(testView(a, b))
	marshal := func(m proto.Message) []byte {
		out, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	const (
		sotw  = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
		delta = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
	)
	for _, c := range []struct {
		name, method, reason string
		msg                  []byte
		code                 codes.Code
	}{
		{"invalid UTF-8 in a name", sotw, "malformed", []byte{0x1a, 0x02, 0xff, 0xfe}, codes.Internal},
		{"truncated", delta, "malformed", []byte{0x1a, 0x05, 'a'}, codes.Internal},
		{"node not a message", sotw, "malformed", []byte{0x12, 0x01, 0xff}, codes.Internal},
		{"over gRPC's 4 MiB limit", sotw, "too_large",
			marshal(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{strings.Repeat("n", 5<<20)}}), codes.ResourceExhausted},
		{"no type_url", delta, "no_type_url", marshal(&discoveryv3.DeltaDiscoveryRequest{Node: grpcNode}), codes.InvalidArgument},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := testutil.ToFloat64(srv.metrics.badRequests.WithLabelValues(c.reason))
			logged := strings.Count(logs.String(), "reason="+c.reason)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, c.method, grpc.ForceCodecV2(rawCodec{}))
			if err != nil {
				t.Fatal(err)
			}
			if err := cs.SendMsg(c.msg); err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			var out []byte
			err = cs.RecvMsg(&out)
			if status.Code(err) != c.code {
				t.Fatalf("stream ended with %v, want code %v", err, c.code)
			}
			// gRPC tells the client as it fails to decode, before the handler hears of it.
			counted := func() float64 { return testutil.ToFloat64(srv.metrics.badRequests.WithLabelValues(c.reason)) - before }
			lines := func() int { return strings.Count(logs.String(), "reason="+c.reason) - logged }
			testkit.Eventually(t, "the bad request counted and logged", func() bool { return counted() >= 1 && lines() >= 1 })
			if got := counted(); got != 1 {
				t.Errorf("holdfast_xds_bad_requests_total{reason=%q} rose by %v, want 1", c.reason, got)
			}
			if got := lines(); got != 1 {
				t.Errorf("%d new log lines with reason=%s, want 1:\n%s", got, c.reason, logs.String())
			}
		})
	}
	// A well-formed client is served all along.
	st := sotwStream(t, conn)
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: grpcNode, TypeUrl: resourcev3.EndpointType, ResourceNames: []string{testTranslator.Naming.Resource(a.Key, 80)}}); err != nil {
		t.Fatal(err)
	}
	if r := recvWithin(t, responses(st.Recv), 5*time.Second); r == nil || len((*r).Resources) != 1 {
		t.Fatalf("a good client after the bad ones: %v", r)
	}
}

// TestResumeRules: what a client says it holds when it opens a new stream is trusted only where
// the protocol makes that safe. A SotW version_info from an earlier stream skips a wildcard
// full-state type (an Envoy's LDS or CDS), never names subscribed by name: grpc-js-xds drops
// its routes when its stream ends and sends the old version with them on the next. Delta's
// initial_resource_versions, which name exactly what the client holds, are always trusted. On
// one stream, a name subscribed again after being dropped is sent again.
func TestResumeRules(t *testing.T) {
	_, conn, publish := testServer(t)
	a, b := xdstest.TwoServices()
	publish(testView(a, b))
	named := []string{testTranslator.Naming.Resource(a.Key, 80)}
	envoy := &corev3.Node{Id: "e1", UserAgentName: "envoy"}

	// sotwFirst opens a SotW stream, asks for typ/names, ACKs the answer and closes the stream:
	// what the client held on its earlier stream.
	sotwFirst := func(t *testing.T, node *corev3.Node, typ string, names []string) *discoveryv3.DiscoveryResponse {
		t.Helper()
		st := sotwStream(t, conn)
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ, ResourceNames: names}); err != nil {
			t.Fatal(err)
		}
		r := recvWithin(t, responses(st.Recv), 5*time.Second)
		if r == nil || len((*r).Resources) == 0 {
			t.Fatalf("first stream: no %s response", typ)
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: typ, ResourceNames: names, VersionInfo: (*r).VersionInfo, ResponseNonce: (*r).Nonce}); err != nil {
			t.Fatal(err)
		}
		_ = st.CloseSend()
		return *r
	}
	// fence asks for a type the stream has not asked for: always answered. Requests are handled
	// in order and responses queued in order, so the first response after it says whether the
	// requests before it were answered.
	fence := func(t *testing.T, st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, typ string) {
		t.Helper()
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: typ, ResourceNames: named}); err != nil {
			t.Fatal(err)
		}
	}

	sotw := []struct {
		name     string
		node     *corev3.Node
		typ      string
		names    []string // nil: wildcard
		version  func(first string) string
		wantSent bool
	}{
		{"named EDS, version of the earlier stream", grpcNode, resourcev3.EndpointType, named, same, true},
		{"named CDS, version of the earlier stream", grpcNode, resourcev3.ClusterType, named, same, true},
		{"named RDS, version of the earlier stream", grpcNode, resourcev3.RouteType, named, same, true},
		{"named LDS, version of the earlier stream", grpcNode, resourcev3.ListenerType, named, same, true},
		{"wildcard CDS, current version", envoy, resourcev3.ClusterType, nil, same, false},
		{"wildcard LDS, current version", envoy, resourcev3.ListenerType, nil, same, false},
		{"wildcard CDS, an older version", envoy, resourcev3.ClusterType, nil, func(string) string { return "0123456789abcdef" }, true},
	}
	for _, c := range sotw {
		t.Run("sotw/"+c.name, func(t *testing.T) {
			first := sotwFirst(t, c.node, c.typ, c.names)
			st := sotwStream(t, conn)
			in := responses(st.Recv)
			if err := st.Send(&discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: c.typ, ResourceNames: c.names, VersionInfo: c.version(first.VersionInfo)}); err != nil {
				t.Fatal(err)
			}
			fenceType := resourcev3.EndpointType
			if c.typ == fenceType {
				fenceType = resourcev3.ClusterType
			}
			fence(t, st, fenceType)
			r := recvWithin(t, in, 5*time.Second)
			if r == nil {
				t.Fatal("no response at all")
			}
			if sent := (*r).TypeUrl == c.typ; sent != c.wantSent {
				t.Fatalf("%s answered on the new stream: %v, want %v (first response: %s with %d resources)", c.typ, sent, c.wantSent, (*r).TypeUrl, len((*r).Resources))
			}
			if c.wantSent && len((*r).Resources) != len(first.Resources) {
				t.Fatalf("new stream got %d resources, the earlier one %d", len((*r).Resources), len(first.Resources))
			}
		})
	}

	t.Run("sotw/same stream: a name dropped and asked for again is sent again", func(t *testing.T) {
		st := sotwStream(t, conn)
		in := responses(st.Recv)
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: grpcNode, TypeUrl: resourcev3.EndpointType, ResourceNames: named}); err != nil {
			t.Fatal(err)
		}
		r := recvWithin(t, in, 5*time.Second)
		if r == nil || len((*r).Resources) != 1 {
			t.Fatalf("first response: %v", r)
		}
		// The ACK repeats the names: nothing is sent for it.
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: named, VersionInfo: (*r).VersionInfo, ResponseNonce: (*r).Nonce}); err != nil {
			t.Fatal(err)
		}
		fence(t, st, resourcev3.ClusterType)
		if f := recvWithin(t, in, 5*time.Second); f == nil || (*f).TypeUrl != resourcev3.ClusterType {
			t.Fatalf("an ACK was answered: %v", f)
		}
		// Dropped, then asked for again, with the version the client last acknowledged.
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, VersionInfo: (*r).VersionInfo}); err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: named, VersionInfo: (*r).VersionInfo}); err != nil {
			t.Fatal(err)
		}
		again := recvWithin(t, in, 5*time.Second)
		if again == nil || (*again).TypeUrl != resourcev3.EndpointType || len((*again).Resources) != 1 {
			t.Fatalf("re-subscribed name: want it sent again, got %v", again)
		}
	})

	// Delta: a new stream's first request says what the client holds; the first answer goes out
	// even when empty.
	deltaFirst := func(t *testing.T, typ string, subscribe []string) map[string]string {
		t.Helper()
		st := deltaStream(t, conn)
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: envoy, TypeUrl: typ, ResourceNamesSubscribe: subscribe}); err != nil {
			t.Fatal(err)
		}
		r := recvWithin(t, responses(st.Recv), 5*time.Second)
		if r == nil || len((*r).Resources) == 0 {
			t.Fatalf("first stream: no %s response", typ)
		}
		held := map[string]string{}
		for _, res := range (*r).Resources {
			held[res.Name] = res.Version
		}
		_ = st.CloseSend()
		return held
	}
	delta := []struct {
		name      string
		typ       string
		subscribe []string // nil: wildcard
		stale     bool     // the client says it holds another version of every resource
		wantSent  bool
	}{
		{"named EDS, versions held", resourcev3.EndpointType, named, false, false},
		{"named EDS, another version held", resourcev3.EndpointType, named, true, true},
		{"wildcard CDS, versions held", resourcev3.ClusterType, nil, false, false},
		{"wildcard CDS, other versions held", resourcev3.ClusterType, nil, true, true},
	}
	for _, c := range delta {
		t.Run("delta/"+c.name, func(t *testing.T) {
			held := deltaFirst(t, c.typ, c.subscribe)
			if c.stale {
				for n := range held {
					held[n] = "stale"
				}
			}
			st := deltaStream(t, conn)
			if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: envoy, TypeUrl: c.typ, ResourceNamesSubscribe: c.subscribe, InitialResourceVersions: held}); err != nil {
				t.Fatal(err)
			}
			r := recvWithin(t, responses(st.Recv), 5*time.Second)
			if r == nil {
				t.Fatal("a first Delta subscription went unanswered")
			}
			if sent := len((*r).Resources) > 0; sent != c.wantSent {
				t.Fatalf("resources sent on the new stream: %v, want %v (%d sent)", sent, c.wantSent, len((*r).Resources))
			}
		})
	}

	t.Run("delta/same stream: a name unsubscribed and subscribed again is sent again", func(t *testing.T) {
		st := deltaStream(t, conn)
		in := responses(st.Recv)
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: envoy, TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: named}); err != nil {
			t.Fatal(err)
		}
		r := recvWithin(t, in, 5*time.Second)
		if r == nil || len((*r).Resources) != 1 {
			t.Fatalf("first response: %v", r)
		}
		for _, req := range []*discoveryv3.DeltaDiscoveryRequest{
			{TypeUrl: resourcev3.EndpointType, ResponseNonce: (*r).Nonce},
			{TypeUrl: resourcev3.EndpointType, ResourceNamesUnsubscribe: named},
			{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: named},
		} {
			if err := st.Send(req); err != nil {
				t.Fatal(err)
			}
		}
		again := recvWithin(t, in, 5*time.Second)
		if again == nil || len((*again).Resources) != 1 || (*again).Resources[0].Name != named[0] {
			t.Fatalf("re-subscribed name: want it sent again, got %v", again)
		}
	})
}

func same(v string) string { return v }

func TestDeltaSendsOnlyWhatChanged(t *testing.T) {
	srv, conn, publish := testServer(t)
	a, b := xdstest.TwoServices()
	publish(testView(a, b))
	st := deltaStream(t, conn)
	in := responses(st.Recv)
	envoy := &corev3.Node{Id: "e1", UserAgentName: "envoy"}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: envoy, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	r := recvWithin(t, in, 5*time.Second)
	if r == nil || len((*r).Resources) != 3 {
		t.Fatalf("wildcard CDS: %v", r)
	}
	versions := map[string]string{}
	for _, res := range (*r).Resources {
		versions[res.Name] = res.Version
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: (*r).Nonce}); err != nil {
		t.Fatal(err)
	}
	// An endpoint change leaves clusters alone; removing b removes its cluster, and only that.
	publish(testView(xdstest.WithEndpoints(a, "10.1.1.1"), b))
	br := &deltaBarrier{srv: srv, st: st, in: in, name: testTranslator.Naming.Resource(a.Key, 80)}
	br.nothingOf(t, resourcev3.ClusterType) // an endpoint change sends no clusters
	publish(testView(xdstest.WithEndpoints(a, "10.1.1.1")))
	r = recvWithin(t, in, 5*time.Second)
	if r == nil || len((*r).Resources) != 0 || len((*r).RemovedResources) != 1 || (*r).RemovedResources[0] != testTranslator.Naming.Resource(b.Key, 80) {
		t.Fatalf("removal: %v", r)
	}

	// A new stream that says it has these versions is sent nothing it has.
	st2 := deltaStream(t, conn)
	if err := st2.Send(&discoveryv3.DeltaDiscoveryRequest{Node: envoy, TypeUrl: resourcev3.ClusterType, InitialResourceVersions: versions}); err != nil {
		t.Fatal(err)
	}
	r = recvWithin(t, responses(st2.Recv), 5*time.Second)
	if r == nil || len((*r).Resources) != 0 || len((*r).RemovedResources) != 1 {
		t.Fatalf("reconnect with known versions: want only b's removal, got %v", r)
	}

	// One that holds another version of a cluster is sent that cluster again.
	stale := testTranslator.Naming.Resource(a.Key, 80)
	versions[stale] = "stale"
	st3 := deltaStream(t, conn)
	if err := st3.Send(&discoveryv3.DeltaDiscoveryRequest{Node: envoy, TypeUrl: resourcev3.ClusterType, InitialResourceVersions: versions}); err != nil {
		t.Fatal(err)
	}
	r = recvWithin(t, responses(st3.Recv), 5*time.Second)
	if r == nil || len((*r).Resources) != 1 || (*r).Resources[0].Name != stale || len((*r).RemovedResources) != 1 {
		t.Fatalf("reconnect with a stale version: want %s again and b's removal, got %v", stale, r)
	}
}

// The push latency runs from the Kubernetes event behind a change (its ObservedAt) to the
// client's ACK of it; a first push is not a change and is not counted.
func TestPushLatencyFromEventToAck(t *testing.T) {
	srv, conn, publish := testServer(t)
	a, b := xdstest.TwoServices()
	publish(testView(a, b))
	st := sotwStream(t, conn)
	in := responses(st.Recv)
	name := testTranslator.Naming.Resource(a.Key, 80)
	ack := func() {
		t.Helper()
		r := recvWithin(t, in, 5*time.Second)
		if r == nil {
			t.Fatal("no response")
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{name},
			VersionInfo: (*r).VersionInfo, ResponseNonce: (*r).Nonce}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: grpcNode, TypeUrl: resourcev3.EndpointType, ResourceNames: []string{name}}); err != nil {
		t.Fatal(err)
	}
	ack()
	hist := func() *dto.Histogram {
		var m dto.Metric
		if err := srv.metrics.pushLatency.WithLabelValues(resourcev3.EndpointType).(prometheus.Histogram).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetHistogram()
	}
	if n := hist().GetSampleCount(); n != 0 {
		t.Fatalf("the first push counted as a change: %d samples", n)
	}
	changed := xdstest.WithEndpoints(a, "10.1.1.1")
	changed.Origin.ObservedAt = time.Now().Add(-2 * time.Second) // the event arrived 2 s ago
	publish(testView(changed, b))
	ack()
	testkit.Eventually(t, "the change's push latency observed", func() bool { return hist().GetSampleCount() > 0 })
	if h := hist(); h.GetSampleCount() != 1 || h.GetSampleSum() < 2 || h.GetSampleSum() > 60 {
		t.Errorf("push latency: %d samples, sum %.3fs; want the one change, about 2 s", h.GetSampleCount(), h.GetSampleSum())
	}
}

// A resource stays NACKED until the client accepts a version of it, whatever else it ACKs.
func TestRejectionOutlivesOtherAcks(t *testing.T) {
	srv, _, _ := testServer(t)
	st := newStream(srv, 1, flavourDelta)
	ts := st.subscriptionLocked(resourcev3.EndpointType)
	a, b := testResource("a", "1", 0), testResource("b", "1", 0)
	send := func(nonce string, rs ...*resource.Resource) {
		ts.inflight, ts.inflightOut, ts.inflightAt = nonce, rs, time.Now()
		for _, r := range rs {
			ts.sent.set(r.Name, r.Version)
		}
	}
	send("1", a)
	st.settleLocked(resourcev3.EndpointType, ts, &statuspb.Status{Message: "bad a"}, time.Now())
	send("2", b)
	st.settleLocked(resourcev3.EndpointType, ts, nil, time.Now())
	got := map[string]ResourceState{}
	for _, r := range st.status().Types[resourcev3.EndpointType].Resources(nil, resourcev3.EndpointType) {
		got[r.Name] = r.State
	}
	if got["a"] != Nacked || got["b"] != Acked {
		t.Fatalf("after rejecting a and accepting b: %v", got)
	}
	a2 := testResource("a", "2", 0)
	send("3", a2)
	st.settleLocked(resourcev3.EndpointType, ts, nil, time.Now())
	if tsStatus := st.status().Types[resourcev3.EndpointType]; len(tsStatus.Rejected) != 0 || tsStatus.Nacked != nil {
		t.Fatalf("a fixed version was accepted, yet: rejected %v, nacked %v", tsStatus.Rejected, tsStatus.Nacked)
	}
}

// Delivery answers, without copying client state, who still lacks a version and who rejected it.
func TestDelivery(t *testing.T) {
	srv, _, _ := testServer(t)
	st := newStream(srv, 99, flavourDelta)
	st.identified, st.kind, st.nodeID = true, resource.KindEnvoy, "e1"
	srv.mu.Lock()
	srv.streams[st.id] = st
	srv.mu.Unlock()
	ts := st.subscriptionLocked(resourcev3.EndpointType)
	ts.subscribed, ts.wildcard = true, true
	a1, a2 := testResource("a", "1", 0), testResource("a", "2", 0)
	want := func(v string) map[string]string { return map[string]string{"a": v} }
	now := time.Now()
	delivery := func(kind resource.Kind, v string) Delivery {
		return srv.Delivery(kind, resourcev3.EndpointType, want(v), now, time.Second)
	}
	if d := delivery(resource.KindEnvoy, "1"); d.Pending != 1 || d.Rejection != "" || !d.FreshUntil.IsZero() {
		t.Errorf("not sent yet: %+v", d)
	}
	ts.inflight, ts.inflightOut, ts.inflightAt = "n1", []*resource.Resource{a1}, now
	ts.sent.set("a", "1")
	if d := delivery(resource.KindEnvoy, "1"); d.Pending != 1 || !d.FreshUntil.Equal(now.Add(time.Second)) {
		t.Errorf("in flight: %+v", d)
	}
	// Left unanswered past stuckAfter: stuck, holding nobody up.
	if d := srv.Delivery(resource.KindEnvoy, resourcev3.EndpointType, want("1"), now.Add(2*time.Second), time.Second); d.Pending != 0 || d.Stuck != 1 {
		t.Errorf("in flight for 2s: %+v", d)
	}
	settled := srv.Settled()
	st.settleLocked(resourcev3.EndpointType, ts, nil, time.Now())
	select {
	case <-settled:
	default:
		t.Error("an ACK did not close the Settled channel")
	}
	if d := delivery(resource.KindEnvoy, "1"); d.Pending != 0 || d.Rejection != "" {
		t.Errorf("acknowledged: %+v", d)
	}
	if d := delivery(resource.KindGRPC, "9"); d.Pending != 0 {
		t.Errorf("another kind's clients counted: %+v", d)
	}
	ts.inflight, ts.inflightOut = "n2", []*resource.Resource{a2}
	ts.sent.set("a", "2")
	st.settleLocked(resourcev3.EndpointType, ts, &statuspb.Status{Message: "no"}, time.Now())
	if d := delivery(resource.KindEnvoy, "2"); d.Rejection != "local client e1 rejected a version 2: no" {
		t.Errorf("rejected: %+v", d)
	}
}

// TestTypeURLsBounded: a stream can hold state only for xDS types. A type URL that is no xDS type
// ends the stream as a bad request (error, metric, log); one Holdfast does not serve (an Envoy's
// SDS, RTDS, ECDS, VHDS on ADS) is answered as for resources it does not have, and the stream
// goes on being served.
func TestTypeURLsBounded(t *testing.T) {
	var logs testkit.Log
	srv, conn, publish := testServerWith(t, ServerOptions{AckTimeout: time.Minute, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	a, b := xdstest.TwoServices()
	publish(testView(a, b))
	named := []string{testTranslator.Naming.Resource(a.Key, 80)}

	before := testutil.ToFloat64(srv.metrics.badRequests.WithLabelValues("unknown_type"))
	st := sotwStream(t, conn)
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: grpcNode, TypeUrl: "type.googleapis.com/garbage.DoesNotExist"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "garbage.DoesNotExist") {
		t.Fatalf("a garbage type URL: stream ended with %v, want InvalidArgument naming it", err)
	}
	testkit.Eventually(t, "the stream's state", func() bool {
		return testutil.ToFloat64(srv.metrics.badRequests.WithLabelValues("unknown_type"))-before == 1
	})
	testkit.Eventually(t, "the stream's state", func() bool { return strings.Contains(logs.String(), "reason=unknown_type") })

	// Delta: an unserved type's named resources are reported as not existing; the stream goes
	// on and is served its clusters.
	envoy := &corev3.Node{Id: "e1", UserAgentName: "envoy"}
	ds := deltaStream(t, conn)
	in := responses(ds.Recv)
	if err := ds.Send(&discoveryv3.DeltaDiscoveryRequest{Node: envoy, TypeUrl: resourcev3.SecretType, ResourceNamesSubscribe: []string{"server-cert"}}); err != nil {
		t.Fatal(err)
	}
	r := recvWithin(t, in, 5*time.Second)
	if r == nil || (*r).TypeUrl != resourcev3.SecretType || len((*r).Resources) != 0 || !slices.Equal((*r).RemovedResources, []string{"server-cert"}) {
		t.Fatalf("SDS over Delta: want server-cert removed (it does not exist), got %v", r)
	}
	if err := ds.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	if r := recvWithin(t, in, 5*time.Second); r == nil || (*r).TypeUrl != resourcev3.ClusterType || len((*r).Resources) != 3 {
		t.Fatalf("clusters after an SDS subscription: %v", r)
	}
	// SotW: nothing is sent for a name Holdfast does not have; the stream is served on.
	ss := sotwStream(t, conn)
	sin := responses(ss.Recv)
	for _, typ := range resource.Unserved {
		if err := ss.Send(&discoveryv3.DiscoveryRequest{Node: envoy, TypeUrl: typ, ResourceNames: []string{"x"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ss.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: named}); err != nil {
		t.Fatal(err)
	}
	if r := recvWithin(t, sin, 5*time.Second); r == nil || (*r).TypeUrl != resourcev3.EndpointType {
		t.Fatalf("EDS after every unserved type: %v", r)
	}
	if n := testutil.ToFloat64(srv.metrics.unserved.WithLabelValues(resourcev3.RuntimeType)); n != 1 {
		t.Errorf("RTDS subscriptions counted %v, want 1", n)
	}
	for _, c := range srv.Clients() {
		if len(c.Types) > len(resource.PushOrder) {
			t.Errorf("a stream holds %d types, more than the %d xDS types", len(c.Types), len(resource.PushOrder))
		}
	}
}

// TestUnknownNamesBounded: the names a stream subscribes to that Holdfast has no resource of are
// copied and kept, so they are bounded per stream (over every type): more are refused, counted,
// logged once and shown in the client's status; names Holdfast has are always taken; an
// unsubscribe frees room; a SotW request replaces what its type held.
func TestUnknownNamesBounded(t *testing.T) {
	var logs testkit.Log
	srv, conn, publish := testServerWith(t, ServerOptions{AckTimeout: time.Minute, MaxUnknownNames: 100, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	a, b := xdstest.TwoServices()
	publish(testView(a, b))
	known := testTranslator.Naming.Resource(a.Key, 80)
	batch := func(prefix string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%s-%d", prefix, i)
		}
		return out
	}
	status := func(node, typ string) TypeStatus {
		for _, c := range srv.Clients() {
			if c.NodeID == node {
				return c.Types[typ]
			}
		}
		return TypeStatus{}
	}
	envoy := &corev3.Node{Id: "hoarder", UserAgentName: "envoy"}
	ds := deltaStream(t, conn)
	_ = responses(ds.Recv) // read, so that the stream flows; no response is needed here
	send := func(r *discoveryv3.DeltaDiscoveryRequest) {
		t.Helper()
		if err := ds.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	send(&discoveryv3.DeltaDiscoveryRequest{Node: envoy, TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: batch("a", 60)})
	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNamesSubscribe: batch("s", 30)})
	// 60 + 30 held: 10 left. Of these 50, 10 are taken; the known name always is.
	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: append(batch("b", 50), known, strings.Repeat("x", 2000))})
	var eds TypeStatus
	testkit.Eventually(t, "the stream's state", func() bool { eds = status("hoarder", resourcev3.EndpointType); return eds.Refused == 41 })
	if len(eds.Names) != 60+10+1 || !slices.Contains(eds.Names, known) {
		t.Fatalf("EDS subscription holds %d names (known name held: %v), want 71", len(eds.Names), slices.Contains(eds.Names, known))
	}
	if got := testutil.ToFloat64(srv.metrics.refusedNames); got != 41 {
		t.Errorf("holdfast_xds_refused_names_total = %v, want 41", got)
	}
	// Unsubscribing 20 frees room for 20.
	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesUnsubscribe: batch("a", 20)})
	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: batch("c", 25)})
	testkit.Eventually(t, "the stream's state", func() bool { eds = status("hoarder", resourcev3.EndpointType); return eds.Refused == 46 })
	if len(eds.Names) != 71-20+20 {
		t.Fatalf("after unsubscribing 20 and asking for 25: %d names, want 71", len(eds.Names))
	}
	if n := strings.Count(logs.String(), "decision=client_names_refused"); n != 1 {
		t.Errorf("%d log lines for the refusals, want 1 per stream", n)
	}

	// SotW replaces: a list over the budget is cut to it, a smaller one is taken whole again.
	ss := sotwStream(t, conn)
	sendS := func(names []string) {
		t.Helper()
		if err := ss.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "lister", UserAgentName: "gRPC Go"}, TypeUrl: resourcev3.ClusterType, ResourceNames: names}); err != nil {
			t.Fatal(err)
		}
	}
	sendS(batch("x", 150))
	testkit.Eventually(t, "the stream's state", func() bool { return status("lister", resourcev3.ClusterType).Refused == 50 })
	sendS(batch("y", 80))
	testkit.Eventually(t, "the stream's state", func() bool {
		s := status("lister", resourcev3.ClusterType)
		return len(s.Names) == 80 && s.Refused == 50
	})
}

// TestUnservedKindRefused: a server that serves gRPC clients only (holdfast-agent --kinds grpc)
// ends an Envoy's stream with the reason, counted, rather than leave it waiting for nothing; a
// gRPC client is served.
func TestUnservedKindRefused(t *testing.T) {
	srv, conn, publish := testServerWith(t, ServerOptions{AckTimeout: time.Minute, Kinds: []resource.Kind{resource.KindGRPC}})
	a, b := xdstest.TwoServices()
	publish(testView(a, b))
	st := deltaStream(t, conn)
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "e1", UserAgentName: "envoy"}, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "--kinds") {
		t.Fatalf("an Envoy at a gRPC-only server: %v, want FailedPrecondition naming --kinds", err)
	}
	if n := testutil.ToFloat64(srv.metrics.unservedKinds.WithLabelValues(string(resource.KindEnvoy))); n != 1 {
		t.Errorf("refusals counted %v, want 1", n)
	}
	g := sotwStream(t, conn)
	if err := g.Send(&discoveryv3.DiscoveryRequest{Node: grpcNode, TypeUrl: resourcev3.ClusterType, ResourceNames: []string{testTranslator.Naming.Resource(a.Key, 80)}}); err != nil {
		t.Fatal(err)
	}
	if r, err := g.Recv(); err != nil || len(r.GetResources()) != 1 {
		t.Fatalf("a gRPC client: %v %v", r, err)
	}
}

// sotwBarrier proves that no response of type watched is on its way to a SotW client whose last
// response of that type it acknowledged. It asks for Listeners (a type the caller's test does not
// use), alternating between a's and a's and b's so that each request is a new subscription, and
// waits for the answer. A stream handles a request and the push after it, and every publish
// before them, in one loop, and sends in order: a response of type watched that was due before
// the barrier arrives before its answer (and fails the test), and one due in the same push
// shows in the client's status as in flight.
type sotwBarrier struct {
	srv   *Server
	st    discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	in    <-chan *discoveryv3.DiscoveryResponse
	names [2][]string
	n     int
	nonce string
}

func newSotWBarrier(srv *Server, st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, in <-chan *discoveryv3.DiscoveryResponse, a, b *resolver.Service) *sotwBarrier {
	la, lb := testTranslator.Naming.Resource(a.Key, 80), testTranslator.Naming.Resource(b.Key, 80)
	return &sotwBarrier{srv: srv, st: st, in: in, names: [2][]string{{la}, {la, lb}}}
}

func (br *sotwBarrier) nothingOf(t *testing.T, watched string) {
	t.Helper()
	names := br.names[br.n%2]
	br.n++
	if err := br.st.Send(&discoveryv3.DiscoveryRequest{Node: grpcNode, TypeUrl: resourcev3.ListenerType, ResourceNames: names, ResponseNonce: br.nonce}); err != nil {
		t.Fatal(err)
	}
	r := recvWithin(t, br.in, 5*time.Second)
	if r == nil {
		t.Fatal("no answer to the barrier")
	}
	if (*r).TypeUrl != resourcev3.ListenerType {
		t.Fatalf("a %s response with %d resources came before the barrier's", (*r).TypeUrl, len((*r).Resources))
	}
	br.nonce = (*r).Nonce
	// Acknowledge it, so that the barrier leaves nothing in flight.
	if err := br.st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResourceNames: names, ResponseNonce: br.nonce, VersionInfo: (*r).VersionInfo}); err != nil {
		t.Fatal(err)
	}
	for _, c := range br.srv.Clients() {
		if ts, ok := c.Types[watched]; ok && ts.InFlight {
			t.Fatalf("a %s response was sent with the barrier's", watched)
		}
	}
}

// deltaBarrier is sotwBarrier for an incremental stream: it subscribes to a's endpoints (a type
// the caller's test does not watch), waits for them, acknowledges them and unsubscribes again, so
// that the next barrier's subscription is new too.
type deltaBarrier struct {
	srv  *Server
	st   discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	in   <-chan *discoveryv3.DeltaDiscoveryResponse
	name string
}

func (br *deltaBarrier) nothingOf(t *testing.T, watched string) {
	t.Helper()
	if err := br.st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{br.name}}); err != nil {
		t.Fatal(err)
	}
	r := recvWithin(t, br.in, 5*time.Second)
	if r == nil {
		t.Fatal("no answer to the barrier")
	}
	if (*r).TypeUrl != resourcev3.EndpointType {
		t.Fatalf("a %s response with %d resources came before the barrier's", (*r).TypeUrl, len((*r).Resources))
	}
	for _, req := range []*discoveryv3.DeltaDiscoveryRequest{
		{TypeUrl: resourcev3.EndpointType, ResponseNonce: (*r).Nonce},
		{TypeUrl: resourcev3.EndpointType, ResourceNamesUnsubscribe: []string{br.name}},
	} {
		if err := br.st.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range br.srv.Clients() {
		if ts, ok := c.Types[watched]; ok && ts.InFlight {
			t.Fatalf("a %s response was sent with the barrier's", watched)
		}
	}
}

// envoyWithClusters opens a Delta stream to a server with opts serving service a, as an Envoy,
// and takes its wildcard CDS response: the stream, its responses, and the clusters' names.
func envoyWithClusters(t *testing.T, opts ServerOptions) (discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, <-chan *discoveryv3.DeltaDiscoveryResponse, []string) {
	t.Helper()
	_, conn, publish := testServerWith(t, opts)
	a, _ := xdstest.TwoServices()
	publish(testView(a))
	st := deltaStream(t, conn)
	in := responses(st.Recv)
	envoy := &corev3.Node{Id: "e1", UserAgentName: "envoy"}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: envoy, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	r := recvWithin(t, in, 5*time.Second)
	if r == nil || (*r).TypeUrl != resourcev3.ClusterType || len((*r).Resources) == 0 {
		t.Fatalf("wildcard CDS: %v", r)
	}
	var clusters []string // a's two ports
	for _, res := range (*r).Resources {
		clusters = append(clusters, res.Name)
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: (*r).Nonce}); err != nil {
		t.Fatal(err)
	}
	return st, in, clusters
}

// TestEnvoyRouteWaitsForNewClusters: make before break for an Envoy. A route sent before the
// assignment of a new cluster it routes to would be applied while Envoy still keeps that
// cluster warming, out of routing: every request in between fails (503, no cluster). So a
// route configuration asked for after the cluster went out is sent only once the cluster's
// assignment has gone out after it, on the same stream.
func TestEnvoyRouteWaitsForNewClusters(t *testing.T) {
	st, in, clusters := envoyWithClusters(t, ServerOptions{AckTimeout: time.Minute})
	// The route first, then the assignments, as requests; the assignments must come back first.
	for _, req := range []*discoveryv3.DeltaDiscoveryRequest{
		{TypeUrl: resourcev3.RouteType, ResourceNamesSubscribe: []string{translate.Outbound(80)}},
		{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: clusters},
	} {
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	first := recvWithin(t, in, 5*time.Second)
	if first == nil || (*first).TypeUrl != resourcev3.EndpointType || len((*first).Resources) != len(clusters) {
		t.Fatalf("first response after the route and the assignment were asked for: %v, want the assignment", first)
	}
	second := recvWithin(t, in, 2*time.Second) // well within WarmingHold (5 s): not sent by its end
	if second == nil || (*second).TypeUrl != resourcev3.RouteType || len((*second).Resources) != 1 {
		t.Fatalf("second response: %v, want the route", second)
	}
}

// TestEnvoyRouteWaitsAtMostWarmingHold: an Envoy that never asks for a new cluster's assignment
// still gets its route, once ServerOptions.WarmingHold has passed since the cluster went out.
func TestEnvoyRouteWaitsAtMostWarmingHold(t *testing.T) {
	const hold = 300 * time.Millisecond
	clustersAt := time.Now()
	st, in, _ := envoyWithClusters(t, ServerOptions{AckTimeout: time.Minute, WarmingHold: hold})
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.RouteType, ResourceNamesSubscribe: []string{translate.Outbound(80)}}); err != nil {
		t.Fatal(err)
	}
	route := recvWithin(t, in, 5*time.Second)
	if route == nil || (*route).TypeUrl != resourcev3.RouteType || len((*route).Resources) != 1 {
		t.Fatalf("the route, with no assignment ever asked for: %v", route)
	}
	if waited := time.Since(clustersAt); waited < hold {
		t.Errorf("the route came %v after the clusters were asked for: it did not wait for their assignments (WarmingHold %v)", waited, hold)
	}
}

package harness

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	xdsgrpc "google.golang.org/grpc/xds" // registers the xds:/// resolver and the xDS balancers

	"github.com/holdfast/holdfast/xds/bootstrap"
)

// GRPCClient is a grpc-go channel that resolves "xds:///<name>" through Holdfast with grpc-go's
// own xDS client. Each GRPCClient has its own xDS client and ADS stream.
type GRPCClient struct {
	conn   *grpc.ClientConn
	client testgrpc.TestServiceClient
}

// DialXDS dials target (a service port's resource name) through the xDS server at xdsAddr.
func DialXDS(xdsAddr, nodeID, target string) (*GRPCClient, error) {
	return DialXDSWith(bootstrap.Options{NodeID: nodeID, Server: xdsAddr}, target)
}

// DialXDSWith dials target with the bootstrap o describes (a node's zone and region, say),
// and any further dial options (keepalive, say).
func DialXDSWith(o bootstrap.Options, target string, opts ...grpc.DialOption) (*GRPCClient, error) {
	bootstrap, err := bootstrap.GRPC(o)
	if err != nil {
		return nil, err
	}
	builder, err := xdsgrpc.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		return nil, fmt.Errorf("harness: xds resolver: %w", err)
	}
	opts = append([]grpc.DialOption{grpc.WithResolvers(builder), grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient("xds:///"+target, opts...)
	if err != nil {
		return nil, fmt.Errorf("harness: dial xds:///%s: %w", target, err)
	}
	return &GRPCClient{conn: conn, client: testgrpc.NewTestServiceClient(conn)}, nil
}

// Close closes the channel and its xDS client.
func (c *GRPCClient) Close() error { return c.conn.Close() }

// Call makes one RPC (not wait-for-ready) and returns the identity of the backend that answered.
func (c *GRPCClient) Call(ctx context.Context) (string, error) {
	resp, err := c.client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	if err != nil {
		return "", err
	}
	return resp.GetHostname(), nil
}

// Spread makes n RPCs, each with its own timeout, and counts answers per backend and failures.
func (c *GRPCClient) Spread(ctx context.Context, n int) (hits map[string]int, failures int, lastErr error) {
	hits = map[string]int{}
	for range n {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		id, err := c.Call(cctx)
		cancel()
		if err != nil {
			failures++
			lastErr = err
			continue
		}
		hits[id]++
	}
	return hits, failures, lastErr
}

// WaitForBackends makes batches of RPCs until a whole batch succeeds and reaches exactly the
// backends in want (every one of them, and no other), or ctx is done. Round robin over at most
// a few backends makes a batch of 10 per backend reach all of them.
func (c *GRPCClient) WaitForBackends(ctx context.Context, want ...string) error {
	wantSet := map[string]bool{}
	for _, w := range want {
		wantSet[w] = true
	}
	n := max(10*len(want), 10)
	var last string
	for {
		hits, failures, err := c.Spread(ctx, n)
		got := slices.Sorted(maps.Keys(hits))
		if failures == 0 && len(got) == len(wantSet) && allIn(got, wantSet) {
			return nil
		}
		last = fmt.Sprintf("reached %v with %d/%d failures (last error: %v)", got, failures, n, err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("harness: want exactly %v: %s: %w", want, last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func allIn(got []string, want map[string]bool) bool {
	for _, g := range got {
		if !want[g] {
			return false
		}
	}
	return true
}

// HitsString renders a hit count map in a stable order, for test messages.
func HitsString(hits map[string]int) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(hits)) {
		fmt.Fprintf(&b, "%s:%d ", k, hits[k])
	}
	return strings.TrimSpace(b.String())
}

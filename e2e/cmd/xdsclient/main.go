// Command xdsclient is a gRPC application in its own process, for tests that restart the
// application: it resolves xds:///TARGET through the xDS server at -xds with grpc-go's own xDS
// client, makes -calls RPCs, prints the backend that answered each, and exits 0 only if every
// call succeeded within -timeout.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/holdfast/holdfast/e2e/harness"
)

func main() {
	xdsAddr := flag.String("xds", "", "xDS server address (Holdfast or holdfast-agent)")
	node := flag.String("node", "xdsclient", "node ID")
	target := flag.String("target", "", "resource name to dial")
	calls := flag.Int("calls", 10, "RPCs to make")
	timeout := flag.Duration("timeout", 20*time.Second, "deadline for everything")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c, err := harness.DialXDS(*xdsAddr, *node, *target)
	if err != nil {
		fmt.Fprintln(os.Stderr, "xdsclient:", err)
		os.Exit(1)
	}
	defer c.Close()
	for i := range *calls {
		// The first call may wait for the channel to resolve; the rest must not fail.
		id, err := callReady(ctx, c, i == 0)
		if err != nil {
			fmt.Fprintf(os.Stderr, "xdsclient: call %d: %v\n", i, err)
			os.Exit(1)
		}
		fmt.Println("ok", id)
	}
}

func callReady(ctx context.Context, c *harness.GRPCClient, first bool) (string, error) {
	for {
		id, err := c.Call(ctx)
		if err == nil || !first || ctx.Err() != nil {
			return id, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

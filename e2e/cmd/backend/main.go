// Command backend is a test backend: a gRPC server (grpc.testing.TestService) that answers
// UnaryCall with its own identity in SimpleResponse.hostname, so that a test can tell which
// endpoint an RPC reached. It prints "ready <addr>" once it listens.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/keepalive"
)

type server struct {
	testgrpc.UnimplementedTestServiceServer
	id string
}

func (s *server) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Hostname: s.id}, nil
}

func (s *server) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	return &testgrpc.Empty{}, nil
}

func main() {
	listen := flag.String("listen", "", "host:port to listen on")
	id := flag.String("id", "", "identity to answer with")
	flag.Parse()
	if *listen == "" || *id == "" {
		fmt.Fprintln(os.Stderr, "backend: --listen and --id are required")
		os.Exit(2)
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "backend: %v\n", err)
		os.Exit(1)
	}
	// Clients with keepalive (the link-down tests) ping every 10 s, grpc-go's minimum; the
	// default policy would answer that with GOAWAY too_many_pings.
	g := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}))
	testgrpc.RegisterTestServiceServer(g, &server{id: *id})
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		<-sig
		g.Stop()
	}()
	fmt.Printf("ready %s\n", lis.Addr())
	if err := g.Serve(lis); err != nil {
		fmt.Fprintf(os.Stderr, "backend: %v\n", err)
		os.Exit(1)
	}
}

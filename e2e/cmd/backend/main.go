// Command backend is a test backend: a gRPC server (grpc.testing.TestService) that answers
// UnaryCall with its own identity in SimpleResponse.hostname, so that a test can tell which
// endpoint an RPC reached. It prints "ready <addr>" once it listens.
//
// As a pod (the real-node tests), --id defaults to the hostname (the pod's name), --http serves
// a readiness endpoint (/ready: 200 or 503; /ready/off and /ready/on flip it), and --drain keeps
// serving that long after SIGTERM, as an application behind a proxy does while its endpoint's
// removal propagates.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
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
	id := flag.String("id", "", "identity to answer with (default: the hostname)")
	httpListen := flag.String("http", "", "host:port for the readiness endpoint (none if empty)")
	drain := flag.Duration("drain", 0, "keep serving this long after SIGTERM")
	flag.Parse()
	if *id == "" {
		*id, _ = os.Hostname()
	}
	if *listen == "" || *id == "" {
		fmt.Fprintln(os.Stderr, "backend: --listen and --id are required")
		os.Exit(2)
	}
	if *httpListen != "" {
		var ready atomic.Bool
		ready.Store(true)
		mux := http.NewServeMux()
		mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
			if !ready.Load() {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ready")
		})
		mux.HandleFunc("/ready/off", func(w http.ResponseWriter, _ *http.Request) { ready.Store(false); fmt.Fprintln(w, "readiness off") })
		mux.HandleFunc("/ready/on", func(w http.ResponseWriter, _ *http.Request) { ready.Store(true); fmt.Fprintln(w, "readiness on") })
		hs := &http.Server{Addr: *httpListen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { fmt.Fprintln(os.Stderr, "backend:", hs.ListenAndServe()) }()
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
		time.Sleep(*drain)
		g.Stop()
	}()
	fmt.Printf("ready %s\n", lis.Addr())
	if err := g.Serve(lis); err != nil {
		fmt.Fprintf(os.Stderr, "backend: %v\n", err)
		os.Exit(1)
	}
}

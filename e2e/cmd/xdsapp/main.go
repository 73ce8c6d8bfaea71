// Command xdsapp is a gRPC application written with grpc-go, dialling xds:/// targets the way a
// user's program does: the bootstrap from GRPC_XDS_BOOTSTRAP, grpc-go's own xDS client. It speaks
// the same small protocol as e2e/clients/node/xdsapp.js (gRPC for Node) and
// e2e/clients/python/xdsapp.py (gRPC C-core), so that one e2e scenario drives all three:
//
//	xdsapp --target NAME [--target NAME...] [--interval-ms 25] [--rpc-timeout-ms 1000] [--idle-timeout-ms N] [--via HOST]
//
// With --via it is an application behind a sidecar instead: no xDS in the process, each target
// NAME:PORT dialled as HOST:PORT (the sidecar Envoy's outbound_<PORT> listener) with NAME:PORT
// as the authority, the way an application in a pod with an Envoy sidecar calls a service.
//
// For every target it sends one RPC (grpc.testing.TestService/UnaryCall, not wait-for-ready) at
// a time, every --interval-ms, and prints one JSON line per RPC:
// {"event":"rpc","target":T,"ok":true,"backend":ID} or
// {"event":"rpc","target":T,"ok":false,"code":N,"error":"..."}. Commands on stdin, one per line,
// each acknowledged with {"event":"<command>"}: "pause" stops sending (channels stay open and
// may go idle), "resume" starts again, "close" closes every channel, "open" makes new ones and
// starts sending, "quit" exits 0. When stdin ends (a container's), it keeps sending until
// SIGTERM.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	_ "google.golang.org/grpc/xds" // the xds:/// resolver and the xDS balancers
)

type targets []string

func (t *targets) String() string     { return strings.Join(*t, ",") }
func (t *targets) Set(v string) error { *t = append(*t, v); return nil }

type event struct {
	Event   string `json:"event"`
	Target  string `json:"target,omitempty"`
	OK      bool   `json:"ok,omitempty"`
	Backend string `json:"backend,omitempty"`
	Code    int    `json:"code,omitempty"`
	Error   string `json:"error,omitempty"`
	Impl    string `json:"impl,omitempty"`
	Version string `json:"version,omitempty"`
}

type app struct {
	// set in main, read-only
	targets     []string
	interval    time.Duration
	rpcTimeout  time.Duration
	idleTimeout time.Duration
	via         string // the sidecar's address, or "" for xds:/// channels

	outMu sync.Mutex // serialises lines on stdout

	// owned by main's command loop
	conns  []*grpc.ClientConn
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (a *app) emit(e event) {
	b, _ := json.Marshal(e)
	a.outMu.Lock()
	defer a.outMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

func (a *app) open() error {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if a.idleTimeout > 0 {
		opts = append(opts, grpc.WithIdleTimeout(a.idleTimeout))
	}
	a.conns = nil
	for _, t := range a.targets {
		target, topts := "xds:///"+t, opts
		if a.via != "" {
			_, port, err := net.SplitHostPort(t)
			if err != nil {
				return fmt.Errorf("target %s: with --via, NAME:PORT: %w", t, err)
			}
			target, topts = "passthrough:///"+net.JoinHostPort(a.via, port), append(slices.Clip(opts), grpc.WithAuthority(t))
		}
		c, err := grpc.NewClient(target, topts...)
		if err != nil {
			return fmt.Errorf("dial %s: %w", target, err)
		}
		a.conns = append(a.conns, c)
	}
	return nil
}

func (a *app) start() {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	for i, c := range a.conns {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.loop(ctx, a.targets[i], testgrpc.NewTestServiceClient(c))
		}()
	}
}

func (a *app) stop() {
	if a.cancel != nil {
		a.cancel()
		a.wg.Wait()
		a.cancel = nil
	}
}

func (a *app) loop(ctx context.Context, target string, c testgrpc.TestServiceClient) {
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, a.rpcTimeout)
		resp, err := c.UnaryCall(rctx, &testgrpc.SimpleRequest{})
		cancel()
		if ctx.Err() != nil {
			return // stopped: the RPC's outcome is the stop's, not the channel's
		}
		if err != nil {
			s := status.Convert(err)
			a.emit(event{Event: "rpc", Target: target, Code: int(s.Code()), Error: s.Message()})
		} else {
			a.emit(event{Event: "rpc", Target: target, OK: true, Backend: resp.GetHostname()})
		}
		select {
		case <-ctx.Done():
		case <-time.After(a.interval):
		}
	}
}

func main() {
	var a app
	var ts targets
	flag.Var(&ts, "target", "xds:/// target to call (repeatable)")
	interval := flag.Int("interval-ms", 25, "pause between the RPCs of a target, in ms")
	rpcTimeout := flag.Int("rpc-timeout-ms", 1000, "deadline of each RPC, in ms")
	idle := flag.Int("idle-timeout-ms", 0, "channel idle timeout, in ms (0: grpc-go's default)")
	flag.StringVar(&a.via, "via", "", "send through the sidecar Envoy at this address instead of xDS")
	flag.Parse()
	if len(ts) == 0 {
		fmt.Fprintln(os.Stderr, "xdsapp: at least one --target is required")
		os.Exit(2)
	}
	a.targets = ts
	a.interval = time.Duration(*interval) * time.Millisecond
	a.rpcTimeout = time.Duration(*rpcTimeout) * time.Millisecond
	a.idleTimeout = time.Duration(*idle) * time.Millisecond
	if err := a.open(); err != nil {
		fmt.Fprintln(os.Stderr, "xdsapp:", err)
		os.Exit(1)
	}
	a.emit(event{Event: "started", Impl: "grpc-go", Version: "grpc-go " + grpc.Version})
	a.start()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd := strings.TrimSpace(sc.Text())
		switch cmd {
		case "pause":
			a.stop()
		case "resume":
			a.start()
		case "close":
			a.stop()
			for _, c := range a.conns {
				_ = c.Close()
			}
			a.conns = nil
		case "open":
			a.stop()
			if err := a.open(); err != nil {
				a.emit(event{Event: "error", Error: err.Error()})
				continue
			}
			a.start()
		case "quit":
			a.stop()
			a.emit(event{Event: "quit"})
			return
		default:
			a.emit(event{Event: "error", Error: "unknown command " + cmd})
			continue
		}
		a.emit(event{Event: cmd})
	}
	// No more commands (stdin ended: a container's is empty): keep calling until told to stop.
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()
	<-ctx.Done()
	a.stop()
}

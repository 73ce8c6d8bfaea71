package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/holdfast/holdfast/xds"
)

// bootstrapMain prints a gRPC or Envoy bootstrap that points a client at Holdfast.
func bootstrapMain(args []string, stdout, stderr io.Writer) int {
	var o xds.BootstrapOptions
	var grpcKind, envoyKind bool
	fs := flag.NewFlagSet("holdfast bootstrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&grpcKind, "grpc", false, "print a grpc-go xDS bootstrap (JSON, for GRPC_XDS_BOOTSTRAP)")
	fs.BoolVar(&envoyKind, "envoy", false, "print an Envoy bootstrap (JSON, a valid YAML file for envoy -c)")
	fs.StringVar(&o.NodeID, "node-id", "", "the client's xDS node id (required)")
	fs.StringVar(&o.Server, "server", "", "Holdfast's xDS address, host:port (required)")
	fs.StringVar(&o.Zone, "zone", "", "the client's zone, for locality-aware routing")
	fs.StringVar(&o.Region, "region", "", "the client's region, for locality-aware routing")
	fs.BoolVar(&o.Delta, "delta", false, "with --envoy: use incremental (Delta) ADS")
	fs.StringVar(&o.CAFile, "ca-file", "", "speak TLS to Holdfast, checking its certificate against this PEM CA bundle (a path on the client)")
	fs.StringVar(&o.CertFile, "cert-file", "", "with --ca-file: the client certificate for mTLS (with --key-file)")
	fs.StringVar(&o.KeyFile, "key-file", "", "the private key of --cert-file")
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil && grpcKind == envoyKind {
		err = errors.New("choose exactly one of --grpc and --envoy")
	}
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err != nil {
		fmt.Fprintf(stderr, "holdfast bootstrap: %v\n", err)
		return 2
	}
	var out []byte
	if grpcKind {
		out, err = xds.GRPCBootstrap(o)
	} else {
		out, err = xds.EnvoyBootstrap(o)
	}
	if err != nil {
		fmt.Fprintf(stderr, "holdfast %v\n", err)
		return 2
	}
	if _, err := stdout.Write(out); err != nil {
		fmt.Fprintf(stderr, "holdfast bootstrap: %v\n", err)
		return 1
	}
	return 0
}

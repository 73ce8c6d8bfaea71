package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/holdfast/holdfast/xds/bootstrap"
)

// bootstrapMain prints a gRPC or Envoy bootstrap that points a client at Holdfast.
func bootstrapMain(args []string, stdout, stderr io.Writer) int {
	var o bootstrap.Options
	var grpcKind, envoyKind bool
	fs := flag.NewFlagSet("holdfast bootstrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&grpcKind, "grpc", false, "print a proxyless gRPC xDS bootstrap (JSON, for GRPC_XDS_BOOTSTRAP); with --ca-file, grpc-go's (see --client)")
	fs.BoolVar(&envoyKind, "envoy", false, "print an Envoy bootstrap (JSON, a valid YAML file for envoy -c)")
	fs.StringVar(&o.Client, "client", "", "the client implementation, instead of --grpc or --envoy: "+strings.Join(bootstrap.Clients, ", ")+
		" (grpc-java, grpc-node and grpc-core have no usable TLS to their xDS server: they reach Holdfast through holdfast-agent on a Unix socket; docs/clients.md)")
	fs.StringVar(&o.NodeID, "node-id", "", "the client's xDS node id (required)")
	fs.StringVar(&o.Server, "server", "", "Holdfast's xDS address, host:port (required)")
	fs.Func("fallback-server", "a further xDS server (another Holdfast deployment), host:port, tried in order when the ones before fail (gRFC A71; repeatable; "+
		"gRPC bootstraps only; clients older than grpc-go 1.70 and C-core 1.67, and grpc-js-xds 1.14, use --server only: docs/clients.md)",
		func(v string) error { o.Fallbacks = append(o.Fallbacks, v); return nil })
	fs.StringVar(&o.Zone, "zone", "", "the client's zone, for locality-aware routing")
	fs.StringVar(&o.Region, "region", "", "the client's region, for locality-aware routing")
	fs.StringVar(&o.ClusterID, "cluster-id", "", "the ID of the client's Kubernetes cluster (as Holdfast's --cluster-id): cluster-set services send it its own cluster's endpoints first")
	fs.BoolVar(&o.Delta, "delta", false, "with --envoy: use incremental (Delta) ADS")
	fs.StringVar(&o.CAFile, "ca-file", "", "speak TLS to Holdfast, checking its certificate against this PEM CA bundle (a path on the client)")
	fs.StringVar(&o.CertFile, "cert-file", "", "with --ca-file: the client certificate for mTLS (with --key-file)")
	fs.StringVar(&o.KeyFile, "key-file", "", "the private key of --cert-file")
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil && o.Client != "" {
		if !slices.Contains(bootstrap.Clients, o.Client) {
			err = fmt.Errorf("--client %q: want one of %s", o.Client, strings.Join(bootstrap.Clients, ", "))
		}
		envoyClient := o.Client == bootstrap.ClientEnvoy
		if (grpcKind && envoyClient) || (envoyKind && !envoyClient) {
			err = fmt.Errorf("--client %s contradicts --grpc/--envoy", o.Client)
		}
		grpcKind, envoyKind = !envoyClient, envoyClient
		if envoyClient {
			o.Client = ""
		}
	}
	if err == nil && grpcKind == envoyKind {
		err = errors.New("choose exactly one of --grpc, --envoy and --client")
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
		out, err = bootstrap.GRPC(o)
	} else {
		out, err = bootstrap.Envoy(o)
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

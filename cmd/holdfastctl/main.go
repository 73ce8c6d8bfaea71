// Command holdfastctl is the operator's view of a running Holdfast, over its admin gRPC API
// (--admin-listen) and CSDS.
//
//	holdfastctl [--addr HOST:PORT] [-o table|json|yaml] COMMAND [ARGS]
//
// Commands: services [NAMESPACE], service NAMESPACE/NAME, clients, client NODE-ID, sources,
// holds, release HOLD-ID, log [LIMIT], csds [NODE-ID], why NODE-ID NAMESPACE/NAME[:PORT],
// capacity.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	"github.com/holdfast/holdfast/internal/tlsfiles"
	"github.com/holdfast/holdfast/internal/version"
	"github.com/holdfast/holdfast/xds/admin"
)

const usage = `usage: holdfastctl [--addr HOST:PORT] [--tls | --ca F [--cert F --key F]] [-o table|json|yaml] [--timeout D] COMMAND [ARGS]

commands:
  services [NAMESPACE]     every service, its state and why
  service NAMESPACE/NAME   one service: endpoints per zone, resources served, provenance (NAME@clusterset.local: the cluster set's)
  clients                  connected xDS clients: kind, flavour, what each ACKed, NACKs
  client NODE-ID           one client: every resource's status, its NACKs
  sources                  Kubernetes watches: state, last event and bookmark, probe
  holds                    changes held by the mass-withdrawal guard
  capacity                 services, endpoints, tombstones and clients against their limits
  release HOLD-ID          apply a held change now
  log [LIMIT]              decisions, newest first
  csds [NODE-ID]           the CSDS view (all clients, or one)
  why NODE-ID NAMESPACE/NAME[:PORT]
                           why this client routes this service as it does: what it holds,
                           what it would be sent now, every reason they differ
`

func main() { os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr)) }

func realMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("holdfastctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	addr := fs.String("addr", "127.0.0.1:18001", "Holdfast's admin address (its --admin-listen)")
	format := fs.String("o", "table", "output: table, json or yaml")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for Holdfast")
	useTLS := fs.Bool("tls", false, "speak TLS to Holdfast (its --tls-cert is set); implied by --ca, --cert, --key and --server-name")
	var files tlsfiles.Files
	fs.StringVar(&files.CA, "ca", "", "PEM CA bundle Holdfast's certificate must chain to (default: the system roots)")
	fs.StringVar(&files.Cert, "cert", "", "PEM client certificate, for a Holdfast with --client-ca (with --key)")
	fs.StringVar(&files.Key, "key", "", "PEM private key of --cert")
	serverName := fs.String("server-name", "", "name Holdfast's certificate must carry (default: the --addr host)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "holdfastctl", version.String())
		return 0
	}
	if *format != "table" && *format != "json" && *format != "yaml" {
		fmt.Fprintf(stderr, "holdfastctl: -o %q: want table, json or yaml\n", *format)
		return 2
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return 2
	}
	cmd, ok := commands[rest[0]]
	if !ok || len(rest)-1 < cmd.minArgs || len(rest)-1 > cmd.maxArgs {
		fmt.Fprintf(stderr, "holdfastctl: %q: unknown command or wrong arguments\n\n", strings.Join(rest, " "))
		fs.Usage()
		return 2
	}
	creds := insecure.NewCredentials()
	if *useTLS || files.Enabled() || *serverName != "" {
		r, err := tlsfiles.NewClient(files, tlsfiles.Options{Component: "holdfastctl"})
		if err != nil {
			fmt.Fprintf(stderr, "holdfastctl: --ca/--cert/--key: %v\n", err)
			return 2
		}
		creds = r.ClientCredentials(*serverName)
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Fprintf(stderr, "holdfastctl: --addr %q: %v\n", *addr, err)
		return 2
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c := client{admin: admin.NewAdminClient(conn), csds: statusv3.NewClientStatusDiscoveryServiceClient(conn)}
	msg, table, err := cmd.run(ctx, c, rest[1:])
	if err != nil {
		fmt.Fprintln(stderr, "holdfastctl:", explain(err, *addr))
		return 1
	}
	if err := write(stdout, *format, msg, table); err != nil {
		fmt.Fprintln(stderr, "holdfastctl:", err)
		return 1
	}
	return 0
}

// explain turns an RPC error into what the operator should read.
func explain(err error, addr string) string {
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		return fmt.Sprintf("Holdfast is not reachable at %s (is it running, and is that its --admin-listen?): %s", addr, st.Message())
	case codes.NotFound, codes.InvalidArgument, codes.FailedPrecondition:
		return st.Message()
	default:
		return err.Error()
	}
}

type client struct {
	admin admin.AdminClient
	csds  statusv3.ClientStatusDiscoveryServiceClient
}

// A command calls the API and returns the answer, and how to print it as a table.
type command struct {
	minArgs, maxArgs int
	run              func(context.Context, client, []string) (proto.Message, func(*tabwriter.Writer), error)
}

func arg(args []string, i int) string {
	if i < len(args) {
		return args[i]
	}
	return ""
}

// fill is used/limit as a percentage.
func fill(used, limit int32) string {
	if limit <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(used)/float64(limit))
}

// serviceName is a service's name as holdfastctl shows and takes it: the cluster set's service
// (MCS API) with "@clusterset.local" after it.
func serviceName(s *admin.ServiceSummary) string {
	if s.GetClusterSet() {
		return s.GetName() + "@clusterset.local"
	}
	return s.GetName()
}

var commands = map[string]command{
	"services": {0, 1, func(ctx context.Context, c client, args []string) (proto.Message, func(*tabwriter.Writer), error) {
		r, err := c.admin.ListServices(ctx, &admin.ListServicesRequest{Namespace: arg(args, 0)})
		return r, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "NAMESPACE\tNAME\tSTATE\tENDPOINTS\tREADY\tPORTS\tAGE\tREASON")
			for _, s := range r.GetServices() {
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", s.GetNamespace(), serviceName(s), s.GetState(), s.GetEndpoints(),
					s.GetReadyEndpoints(), ints(s.GetPorts()), s.GetAge().AsDuration(), s.GetReason())
			}
		}, err
	}},
	"service": {1, 1, func(ctx context.Context, c client, args []string) (proto.Message, func(*tabwriter.Writer), error) {
		ns, name, ok := strings.Cut(args[0], "/")
		if !ok {
			return nil, nil, status.Error(codes.InvalidArgument, "service: want NAMESPACE/NAME")
		}
		r, err := c.admin.GetService(ctx, &admin.GetServiceRequest{Namespace: ns, Name: name})
		return r, func(w *tabwriter.Writer) {
			s := r.GetSummary()
			fmt.Fprintf(w, "SERVICE\t%s/%s\nSTATE\t%s\t%s\n", s.GetNamespace(), serviceName(s), s.GetState(), s.GetReason())
			fmt.Fprintf(w, "SOURCE\tService rv %s, observed %s\n", r.GetServiceResourceVersion(), when(r.GetObservedAt()))
			for _, sl := range r.GetSlices() {
				fmt.Fprintf(w, "\tEndpointSlice %s rv %s\n", sl.GetName(), sl.GetResourceVersion())
			}
			fmt.Fprintln(w, "\nPORT\tZONE\tADDRESS\tHEALTH\tREADY\tSERVING\tTERMINATING\tNODE")
			for _, p := range r.GetPorts() {
				if u := p.GetUnmatched(); u != "" {
					fmt.Fprintf(w, "%s/%d\t\t(served empty: %s)\t\t\t\t\t\n", p.GetName(), p.GetPort(), u)
				}
				for _, z := range p.GetZones() {
					for _, e := range z.GetEndpoints() {
						zone := z.GetZone()
						if c := e.GetCluster(); c != "" {
							zone = c + "/" + zone // a cluster-set service's endpoints say their cluster
						}
						fmt.Fprintf(w, "%s/%d\t%s\t%s\t%s\t%t\t%t\t%t\t%s\n", p.GetName(), p.GetPort(), zone,
							net.JoinHostPort(e.GetAddress(), strconv.Itoa(int(e.GetPort()))), e.GetHealth(), e.GetReady(), e.GetServing(), e.GetTerminating(), e.GetNode())
					}
				}
			}
			fmt.Fprintln(w, "\nCLIENTS\tTYPE\tRESOURCE\tVERSION")
			for _, res := range r.GetResources() {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", res.GetClientKind(), short(res.GetType()), res.GetName(), res.GetVersion())
			}
		}, err
	}},
	"clients": {0, 0, func(ctx context.Context, c client, _ []string) (proto.Message, func(*tabwriter.Writer), error) {
		r, err := c.admin.ListClients(ctx, &admin.ListClientsRequest{})
		return r, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "NODE\tKIND\tFLAVOUR\tZONE\tCONNECTED\tNACKS\tTYPES (subscribed/sent, acked version, last NACK)")
			for _, cl := range r.GetClients() {
				var types []string
				for _, t := range cl.GetTypes() {
					s := fmt.Sprintf("%s %d/%d %s", short(t.GetType()), t.GetSubscribed(), t.GetSent(), t.GetAckedVersion())
					if t.GetWildcard() {
						s = fmt.Sprintf("%s */%d %s", short(t.GetType()), t.GetSent(), t.GetAckedVersion())
					}
					if n := t.GetRefusedNames(); n > 0 {
						s += fmt.Sprintf(" REFUSED %d names", n)
					}
					if n := t.GetNacked(); n != nil {
						s += " NACKED: " + n.GetDetail()
					}
					types = append(types, s)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", cl.GetNodeId(), cl.GetKind(), cl.GetFlavour(), cl.GetZone(),
					when(cl.GetConnectedAt()), cl.GetNacks(), strings.Join(types, "; "))
			}
		}, err
	}},
	"why": {2, 2, func(ctx context.Context, c client, args []string) (proto.Message, func(*tabwriter.Writer), error) {
		svc, portText, hasPort := strings.Cut(args[1], ":")
		req := &admin.WhyRequest{NodeId: args[0], Service: svc}
		if hasPort {
			p, err := strconv.ParseInt(portText, 10, 32)
			if err != nil || p <= 0 || p > 65535 {
				return nil, nil, status.Errorf(codes.InvalidArgument, "why: port %q: want 1-65535", portText)
			}
			req.Port = int32(p)
		}
		r, err := c.admin.Why(ctx, req)
		return r, func(w *tabwriter.Writer) { writeWhy(w, r) }, err
	}},
	"client": {1, 1, func(ctx context.Context, c client, args []string) (proto.Message, func(*tabwriter.Writer), error) {
		r, err := c.admin.GetClient(ctx, &admin.GetClientRequest{NodeId: args[0]})
		return r, func(w *tabwriter.Writer) {
			s := r.GetSummary()
			fmt.Fprintf(w, "NODE\t%s\nKIND\t%s (%s)\nZONE\t%s\nCONNECTED\t%s\n\nTYPE\tRESOURCE\tVERSION\tSTATUS\n", s.GetNodeId(), s.GetKind(),
				s.GetFlavour(), s.GetZone(), when(s.GetConnectedAt()))
			for _, t := range s.GetTypes() {
				for _, res := range t.GetResources() {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", short(t.GetType()), res.GetName(), res.GetVersion(), res.GetStatus())
				}
				if n := t.GetRefusedNames(); n > 0 {
					fmt.Fprintf(w, "%s\t(%d more names refused: over --xds-max-unknown-names)\t\t\n", short(t.GetType()), n)
				}
			}
			fmt.Fprintln(w, "\nNACKED AT\tTYPE\tVERSION\tDETAIL")
			for _, n := range r.GetNacks() {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", when(n.GetAt()), short(n.GetType()), n.GetVersion(), n.GetDetail())
			}
		}, err
	}},
	"sources": {0, 0, func(ctx context.Context, c client, _ []string) (proto.Message, func(*tabwriter.Writer), error) {
		r, err := c.admin.ListSources(ctx, &admin.ListSourcesRequest{})
		return r, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "SOURCE\tSTATE\tSINCE\tLAST EVENT\tLAST BOOKMARK\tLAST PROBE OK\tRESTARTS\tREASON")
			for _, s := range r.GetSources() {
				reason := s.GetReason()
				if e := s.GetLastProbeError(); e != "" && !strings.Contains(reason, e) {
					reason += " (probe: " + e + ")"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", s.GetName(), s.GetState(), when(s.GetSince()), when(s.GetLastEvent()),
					when(s.GetLastBookmark()), when(s.GetLastProbeOk()), s.GetRestarts(), reason)
			}
		}, err
	}},
	"holds": {0, 0, func(ctx context.Context, c client, _ []string) (proto.Message, func(*tabwriter.Writer), error) {
		r, err := c.admin.ListHolds(ctx, &admin.ListHoldsRequest{})
		return r, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "HOLD\tSINCE\tWITHDRAWN\tFLEET\tSERVICES\tREASON")
			for _, h := range r.GetHolds() {
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\n", h.GetId(), when(h.GetSince()), h.GetWithdrawn(), h.GetFleet(),
					strings.Join(h.GetServices(), ","), h.GetReason())
			}
		}, err
	}},
	"capacity": {0, 0, func(ctx context.Context, c client, _ []string) (proto.Message, func(*tabwriter.Writer), error) {
		r, err := c.admin.GetCapacity(ctx, &admin.GetCapacityRequest{})
		return r, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "TABLE	USED	LIMIT	FILL")
			for _, row := range []struct {
				name        string
				used, limit int32
			}{{"services", r.GetServices(), r.GetMaxServices()}, {"endpoints", r.GetEndpoints(), r.GetMaxEndpoints()},
				{"tombstones", r.GetTombstones(), r.GetMaxTombstones()}, {"clients", r.GetClients(), r.GetMaxClients()}} {
				fmt.Fprintf(w, "%s\t%d\t%d\t%s\n", row.name, row.used, row.limit, fill(row.used, row.limit))
			}
			if refused := r.GetRefused(); len(refused) > 0 {
				fmt.Fprintf(w, "\nREFUSED\t%s\n", strings.Join(refused, ","))
			}
		}, err
	}},
	"release": {1, 1, func(ctx context.Context, c client, args []string) (proto.Message, func(*tabwriter.Writer), error) {
		r, err := c.admin.ReleaseHold(ctx, &admin.ReleaseHoldRequest{Id: args[0]})
		return r, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "released hold %s: %d of %d endpoints withdrawn\n", r.GetReleased().GetId(), r.GetReleased().GetWithdrawn(), r.GetReleased().GetFleet())
		}, err
	}},
	"log": {0, 1, func(ctx context.Context, c client, args []string) (proto.Message, func(*tabwriter.Writer), error) {
		limit := 50
		if a := arg(args, 0); a != "" {
			n, err := strconv.Atoi(a)
			if err != nil || n < 0 {
				return nil, nil, status.Errorf(codes.InvalidArgument, "log: LIMIT %q is not a count", a)
			}
			limit = n
		}
		r, err := c.admin.DecisionLog(ctx, &admin.DecisionLogRequest{Limit: int32(min(limit, 1<<30))}) //nolint:gosec // bounded on the line
		return r, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "AT\tDECISION\tSUBJECT\tMESSAGE")
			for _, d := range r.GetDecisions() {
				msg := d.GetMessage()
				for _, k := range []string{"reason", "detail", "err"} {
					if v := d.GetAttrs()[k]; v != "" {
						msg += ": " + v
					}
				}
				if n := d.GetCount(); n > 1 {
					msg += fmt.Sprintf(" (%d times since %s)", n, when(d.GetFirst()))
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", when(d.GetAt()), d.GetKind(), d.GetSubject(), msg)
			}
		}, err
	}},
	"csds": {0, 1, func(ctx context.Context, c client, args []string) (proto.Message, func(*tabwriter.Writer), error) {
		req := &statusv3.ClientStatusRequest{ExcludeResourceContents: true}
		if id := arg(args, 0); id != "" {
			req.NodeMatchers = []*matcherv3.NodeMatcher{{NodeId: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}}}}
		}
		r, err := c.csds.FetchClientStatus(ctx, req)
		return r, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "NODE\tTYPE\tRESOURCE\tVERSION\tCLIENT STATUS\tCONFIG STATUS\tERROR")
			for _, cfg := range r.GetConfig() {
				for _, g := range cfg.GetGenericXdsConfigs() {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cfg.GetNode().GetId(), short(g.GetTypeUrl()), g.GetName(), g.GetVersionInfo(),
						g.GetClientStatus(), g.GetConfigStatus(), g.GetErrorState().GetDetails())
				}
			}
		}, err
	}},
}

func write(w io.Writer, format string, msg proto.Message, table func(*tabwriter.Writer)) error {
	switch format {
	case "json", "yaml":
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(msg)
		if err != nil {
			return err
		}
		if format == "yaml" {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return err
			}
		}
		_, err = fmt.Fprintln(w, strings.TrimRight(string(b), "\n"))
		return err
	default:
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	}
}

func ints(xs []int32) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(int(x))
	}
	return strings.Join(s, ",")
}

// short names a type URL by its message: Cluster, ClusterLoadAssignment, Listener, ...
func short(typeURL string) string { return typeURL[strings.LastIndexByte(typeURL, '.')+1:] }

func when(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().Local().Format(time.RFC3339)
}

// writeWhy prints a Why answer as sentences: the service, each stream of the client with what
// it holds against what it would be sent, where its traffic goes, and the reasons.
func writeWhy(w *tabwriter.Writer, r *admin.WhyResponse) {
	s := r.GetService()
	state := s.GetState()
	if s.GetReason() != "" {
		state += ": " + s.GetReason()
	}
	fmt.Fprintf(w, "Service %s/%s is %s (%d endpoints, %d ready).\n", s.GetNamespace(), s.GetName(), state, s.GetEndpoints(), s.GetReadyEndpoints())
	for _, st := range r.GetStreams() {
		c := st.GetClient()
		fmt.Fprintf(w, "\nClient %s: %s over %s, zone %q, connected %s.\n", c.GetNodeId(), c.GetKind(), c.GetFlavour(), c.GetZone(), when(c.GetConnectedAt()))
		fmt.Fprintln(w, "TYPE\tRESOURCE\tSENT TO CLIENT\tSTATUS (ACKED: it holds it)\tHOLDFAST WOULD SEND NOW")
		for _, res := range st.GetResources() {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", short(res.GetType()), res.GetName(), orNone(res.GetClientVersion()), res.GetStatus(), orNone(res.GetCurrentVersion()))
		}
		for _, p := range st.GetPorts() {
			for _, pr := range p.GetPriorities() {
				fmt.Fprintf(w, "port %d, priority %d (%s):\t%s\n", p.GetPort(), pr.GetPriority(), strings.Join(pr.GetLocalities(), ", "), strings.Join(pr.GetEndpoints(), ", "))
			}
		}
	}
	if len(r.GetReasons()) == 0 {
		fmt.Fprintln(w, "\nNothing differs: the client holds what Holdfast would send it now.")
	} else {
		fmt.Fprintln(w, "\nWhy:")
	}
	for _, why := range r.GetReasons() {
		fmt.Fprintf(w, "- [%s] %s\n", why.GetCause(), why.GetDetail())
		for _, d := range why.GetDecisions() {
			fmt.Fprintf(w, "    %s %s %s: %s\n", when(d.GetAt()), d.GetKind(), d.GetSubject(), d.GetMessage())
		}
	}
	fmt.Fprintf(w, "\n(%s)\n", r.GetScope())
}

func orNone(v string) string {
	if v == "" {
		return "-"
	}
	return v
}

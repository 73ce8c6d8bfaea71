package adminserver

import (
	"context"
	"errors"
	"io"
	"regexp"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/grpc"

	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/serve"
)

// CSDS serves envoy.service.status.v3.ClientStatusDiscoveryService: for every connected
// client, every resource it subscribed to or holds, with its version and whether the client
// ACKed, NACKed (with the error), is yet to answer, or was told it does not exist. Node
// matchers match on the node ID (exact, prefix, suffix, contains, regex); metadata matchers
// are not supported and match nothing.
type CSDS struct {
	statusv3.UnimplementedClientStatusDiscoveryServiceServer
	clients Clients
}

// NewCSDS returns a CSDS server over the xDS server's clients.
func NewCSDS(c Clients) *CSDS { return &CSDS{clients: c} }

// FetchClientStatus answers one request.
func (c *CSDS) FetchClientStatus(_ context.Context, req *statusv3.ClientStatusRequest) (*statusv3.ClientStatusResponse, error) {
	return c.status(req), nil
}

// StreamClientStatus answers each request on the stream.
func (c *CSDS) StreamClientStatus(st grpc.BidiStreamingServer[statusv3.ClientStatusRequest, statusv3.ClientStatusResponse]) error {
	for {
		req, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := st.Send(c.status(req)); err != nil {
			return err
		}
	}
}

func (c *CSDS) status(req *statusv3.ClientStatusRequest) *statusv3.ClientStatusResponse {
	out := &statusv3.ClientStatusResponse{}
	for _, cl := range c.clients.Clients() {
		if cl.NodeID == "" || !matches(req.GetNodeMatchers(), cl.NodeID) {
			continue
		}
		snap := c.clients.Snapshot(cl.Kind).For(cl.Node) // its endpoints as its locality sees them
		cfg := &statusv3.ClientConfig{Node: cl.Node}
		for _, typ := range resource.Served {
			t, ok := cl.Types[typ]
			if !ok {
				continue
			}
			for _, r := range t.Resources(snap, typ) {
				g := &statusv3.ClientConfig_GenericXdsConfig{TypeUrl: typ, Name: r.Name, VersionInfo: r.Version}
				current, exists := snap.Get(typ, r.Name)
				switch r.State {
				case serve.Acked:
					g.ClientStatus, g.ConfigStatus = adminv3.ClientResourceStatus_ACKED, statusv3.ConfigStatus_SYNCED
					if !exists || current.Version != r.Version {
						g.ConfigStatus = statusv3.ConfigStatus_STALE
					}
				case serve.Nacked:
					g.ClientStatus, g.ConfigStatus = adminv3.ClientResourceStatus_NACKED, statusv3.ConfigStatus_ERROR
					n := rejection(cl, t, typ, r)
					g.ErrorState = &adminv3.UpdateFailureState{Details: n.Detail, VersionInfo: r.Version, LastUpdateAttempt: ts(n.At)}
				case serve.Requested:
					g.ClientStatus, g.ConfigStatus = adminv3.ClientResourceStatus_REQUESTED, statusv3.ConfigStatus_NOT_SENT
				case serve.DoesNotExist:
					g.ClientStatus, g.ConfigStatus = adminv3.ClientResourceStatus_DOES_NOT_EXIST, statusv3.ConfigStatus_SYNCED
				}
				if exists && current.Version == r.Version && !req.GetExcludeResourceContents() {
					g.XdsConfig = current.Any
				}
				cfg.GenericXdsConfigs = append(cfg.GenericXdsConfigs, g)
			}
		}
		out.Config = append(out.Config, cfg)
	}
	return out
}

// rejection finds the NACK that rejected this version of the resource: the newest kept that
// names it, else the type's latest.
func rejection(cl serve.ClientStatus, t serve.TypeStatus, typ string, r serve.ResourceStatus) *serve.NackRecord {
	for i := len(cl.Nacks) - 1; i >= 0; i-- {
		if n := &cl.Nacks[i]; n.Type == typ && n.Resources[r.Name] == r.Version {
			return n
		}
	}
	if t.Nacked != nil {
		return t.Nacked
	}
	return &serve.NackRecord{}
}

// matches says whether a node ID passes any of the matchers (no matchers: every node).
func matches(ms []*matcherv3.NodeMatcher, id string) bool {
	if len(ms) == 0 {
		return true
	}
	for _, m := range ms {
		if m.GetNodeId() != nil && len(m.GetNodeMetadatas()) == 0 && stringMatches(m.GetNodeId(), id) {
			return true
		}
	}
	return false
}

func stringMatches(m *matcherv3.StringMatcher, s string) bool {
	norm := func(x string) string {
		if m.GetIgnoreCase() {
			return strings.ToLower(x)
		}
		return x
	}
	got := norm(s)
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return got == norm(p.Exact)
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(got, norm(p.Prefix))
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(got, norm(p.Suffix))
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(got, norm(p.Contains))
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		return err == nil && re.MatchString(s)
	}
	return false
}

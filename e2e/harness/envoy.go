package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/holdfast/holdfast/e2e/netns"
)

// Envoy is a real Envoy (the official binary) running as a sidecar does: in a network namespace
// of its own, as its pod's network, from a bootstrap `holdfast bootstrap --envoy` wrote. The
// one change to that bootstrap is where its admin interface listens: on its address in the
// namespace, so that the test can read it.
type Envoy struct {
	// Addr is its address in the namespace: its outbound_<port> listeners are reached there
	// when Holdfast binds them to 0.0.0.0 (--envoy-listen-address).
	Addr      netip.Addr
	AdminAddr string
	cmd       *exec.Cmd
	logPath   string
	exited    chan struct{}
}

// envoyAdminPort is where every Envoy's admin interface listens, each in its own namespace.
const envoyAdminPort = 9901

// StartEnvoy runs bin in n, on a new address of n, with bootstrap (JSON, as holdfast bootstrap
// --envoy prints it), its log in dir, and waits until its admin interface answers.
func StartEnvoy(ctx context.Context, bin, dir string, n *netns.Network, bootstrap []byte) (*Envoy, error) {
	addr, err := n.NewAddress(ctx)
	if err != nil {
		return nil, err
	}
	return StartEnvoyAt(ctx, bin, dir, n, addr, bootstrap)
}

// StartEnvoyAt is StartEnvoy on an address of n the caller allocated (n.NewAddress): one that
// Holdfast was told to bind Envoy's listeners to (--envoy-listen-address). With n nil, Envoy runs
// in this host's network namespace, at addr (a loopback address of its own): where it must reach
// backends in several namespaces, which have no routes to one another.
func StartEnvoyAt(ctx context.Context, bin, dir string, n *netns.Network, addr netip.Addr, bootstrap []byte) (*Envoy, error) {
	var b map[string]any
	if err := json.Unmarshal(bootstrap, &b); err != nil {
		return nil, fmt.Errorf("harness: envoy bootstrap: %w", err)
	}
	b["admin"] = map[string]any{"address": map[string]any{"socketAddress": map[string]any{"address": addr.String(), "portValue": envoyAdminPort}}}
	patched, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "envoy-*.json")
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(patched); err != nil {
		_ = f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	e := &Envoy{Addr: addr, AdminAddr: net.JoinHostPort(addr.String(), strconv.Itoa(envoyAdminPort)),
		logPath: strings.TrimSuffix(f.Name(), ".json") + ".log", exited: make(chan struct{})}
	logFile, err := os.Create(e.logPath)
	if err != nil {
		return nil, err
	}
	// --disable-hot-restart: several Envoys on one host would otherwise share its memory
	// segment; each runs as a fresh process here.
	args := []string{"-c", f.Name(), "--disable-hot-restart", "--log-level", "warning", "--drain-time-s", "1", "--parent-shutdown-time-s", "2"}
	if n != nil {
		e.cmd = n.Command(context.Background(), bin, args...)
	} else {
		e.cmd = exec.Command(bin, args...)
	}
	e.cmd.Stdout, e.cmd.Stderr = logFile, logFile
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := e.cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("harness: start envoy: %w", err)
	}
	go func() { _ = e.cmd.Wait(); _ = logFile.Close(); close(e.exited) }()
	err = Eventually(ctx, func() bool { _, err := e.Admin(ctx, "/server_info"); return err == nil || !e.Running() })
	if err == nil && !e.Running() {
		err = errors.New("envoy exited")
	}
	if err != nil {
		e.Kill()
		return nil, fmt.Errorf("harness: envoy's admin interface never answered: %w\n%s", err, e.LogTail(30))
	}
	return e, nil
}

// Running says whether the Envoy process is still running.
func (e *Envoy) Running() bool {
	select {
	case <-e.exited:
		return false
	default:
		return true
	}
}

// Kill stops Envoy at once (the whole process group: ip netns exec and Envoy).
func (e *Envoy) Kill() {
	if e.cmd.Process != nil {
		_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-e.exited
}

// Admin GETs path from Envoy's admin interface.
func (e *Envoy) Admin(ctx context.Context, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.AdminAddr+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("harness: envoy admin %s: %s", path, resp.Status)
	}
	return string(body), nil
}

// Version is what Envoy's /server_info says it is: "Envoy 1.40.0".
func (e *Envoy) Version(ctx context.Context) (string, error) {
	body, err := e.Admin(ctx, "/server_info")
	if err != nil {
		return "", err
	}
	var info struct {
		Version string `json:"version"` // <commit>/<version>/<status>/<build>/<ssl>
	}
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		return "", fmt.Errorf("harness: envoy /server_info: %w", err)
	}
	parts := strings.Split(info.Version, "/")
	if len(parts) < 2 {
		return "", fmt.Errorf("harness: envoy /server_info: version %q", info.Version)
	}
	return "Envoy " + parts[1], nil
}

// Stats returns Envoy's counters and gauges whose names match the regular expression filter.
func (e *Envoy) Stats(ctx context.Context, filter string) (map[string]float64, error) {
	body, err := e.Admin(ctx, "/stats?usedonly&filter="+filter)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		name, value, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			out[name] = v
		}
	}
	return out, nil
}

// Stat returns one of Envoy's counters or gauges (0 if Envoy has not used it).
func (e *Envoy) Stat(ctx context.Context, name string) (float64, error) {
	s, err := e.Stats(ctx, "^"+regexpQuote(name)+"$")
	if err != nil {
		return 0, err
	}
	return s[name], nil
}

func regexpQuote(s string) string {
	return strings.NewReplacer(".", `\.`).Replace(s)
}

// LogTail returns the last n lines of Envoy's log.
func (e *Envoy) LogTail(n int) string {
	data, _ := os.ReadFile(e.logPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return filepath.Base(e.logPath) + ":\n" + strings.Join(lines, "\n")
}

// DialVia is a plain gRPC channel (no xDS) to an Envoy listener at addr, each RPC's authority
// set to authority: an application sending through its sidecar.
func DialVia(addr, authority string) (*GRPCClient, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(authority))
	if err != nil {
		return nil, fmt.Errorf("harness: dial %s: %w", addr, err)
	}
	return &GRPCClient{conn: conn, client: testgrpc.NewTestServiceClient(conn)}, nil
}

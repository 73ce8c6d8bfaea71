package harness

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/holdfast/holdfast/e2e/netns"
)

// Backend is a test backend process inside a network namespace.
type Backend struct {
	ID   string
	Addr netip.Addr
	Port int32
	cmd  *exec.Cmd
	done chan struct{}
}

// StartBackend starts bin (the backend program) on a new address of net, answering with id.
func StartBackend(ctx context.Context, net *netns.Network, bin, id string, port int32) (*Backend, error) {
	addr, err := net.NewAddress(ctx)
	if err != nil {
		return nil, err
	}
	return StartBackendAt(ctx, net, bin, id, addr, port)
}

// StartBackendAt starts bin on addr, an address net already has (a killed backend's, to bring
// it back where its EndpointSlice still points).
func StartBackendAt(ctx context.Context, net *netns.Network, bin, id string, addr netip.Addr, port int32) (*Backend, error) {
	b := &Backend{ID: id, Addr: addr, Port: port, done: make(chan struct{})}
	listen := netip.AddrPortFrom(addr, uint16(port)).String()
	b.cmd = net.Command(context.Background(), bin, "--listen", listen, "--id", id)
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := b.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	b.cmd.Stderr = &stderr
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("harness: start backend %s: %w", id, err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		ok := sc.Scan() && strings.HasPrefix(sc.Text(), "ready ")
		ready <- ok
		for sc.Scan() {
		}
	}()
	go func() { _ = b.cmd.Wait(); close(b.done) }()
	select {
	case ok := <-ready:
		if !ok {
			b.Kill()
			return nil, fmt.Errorf("harness: backend %s on %s did not start: %s", id, listen, stderr.String())
		}
	case <-ctx.Done():
		b.Kill()
		return nil, fmt.Errorf("harness: backend %s on %s: %w", id, listen, ctx.Err())
	case <-time.After(30 * time.Second):
		b.Kill()
		return nil, fmt.Errorf("harness: backend %s on %s: no ready line after 30s", id, listen)
	}
	return b, nil
}

// HostPort is "addr:port".
func (b *Backend) HostPort() string { return b.Addr.String() + ":" + strconv.Itoa(int(b.Port)) }

// Kill stops the backend at once; its connections are reset.
func (b *Backend) Kill() {
	if b.cmd.Process != nil {
		_ = b.cmd.Process.Kill()
	}
	<-b.done
}

// Package netns gives tests a pod network on this machine: a network namespace joined to the
// root namespace by a veth pair, with one /24 per test package. Backends listen inside it on
// addresses that the API server accepts in EndpointSlices (it rejects loopback ones), and the
// test process reaches them over the veth. Needs root and iproute2.
package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
)

// TestRange covers every package's /24. While tests run, the root namespace routes it to a
// blackhole, so a packet for a removed namespace never leaves the machine.
var TestRange = netip.MustParsePrefix("10.244.0.0/16")

// Network is one namespace with a /24: .1 is the root side of the veth, backends get .10 up.
type Network struct {
	// set at construction, read-only
	Name   string
	Prefix netip.Prefix
	Host   netip.Addr // the root namespace's address on the veth
	hostIf string
	nsIf   string

	// guarded by mu
	mu   sync.Mutex
	next netip.Addr
}

// Check says whether this machine can run network-namespace tests, and what is missing if not.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("netns: tests need root (ip netns, veth); run them as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("netns: the ip command (iproute2) is not installed")
	}
	return nil
}

// New creates a namespace whose name starts with prefix, joined to the root namespace by a veth
// pair, on the /24 subnet. Call Close to remove it.
func New(ctx context.Context, prefix string, subnet netip.Prefix) (n *Network, err error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if subnet.Bits() != 24 || !subnet.Addr().Is4() || !TestRange.Contains(subnet.Addr()) {
		return nil, fmt.Errorf("netns: subnet %v must be a /24 inside %v", subnet, TestRange)
	}
	id := randomID()
	subnet = subnet.Masked()
	host := subnet.Addr().Next()
	n = &Network{
		Name:   prefix + "-" + id,
		Prefix: subnet,
		Host:   host,
		hostIf: "hfh" + id, // interface names are at most 15 bytes
		nsIf:   "hfn" + id,
		next:   host,
	}
	for range 9 {
		n.next = n.next.Next() // backends from .10
	}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	steps := [][]string{
		{"route", "replace", "blackhole", TestRange.String()},
		{"netns", "add", n.Name},
		{"link", "add", n.hostIf, "type", "veth", "peer", "name", n.nsIf},
		{"link", "set", n.nsIf, "netns", n.Name},
		{"addr", "add", host.String() + "/24", "dev", n.hostIf},
		{"link", "set", n.hostIf, "up"},
		{"-n", n.Name, "link", "set", "lo", "up"},
		{"-n", n.Name, "link", "set", n.nsIf, "up"},
	}
	// No default route inside: backends only ever talk to the test process, on the same /24.
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func randomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("netns: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NewAddress assigns the next free address of the subnet to the namespace side of the veth.
func (n *Network) NewAddress(ctx context.Context) (netip.Addr, error) {
	n.mu.Lock()
	a := n.next
	n.next = a.Next()
	n.mu.Unlock()
	if !n.Prefix.Contains(a) || a.As4()[3] == 255 {
		return netip.Addr{}, fmt.Errorf("netns: subnet %v is full", n.Prefix)
	}
	if err := ip(ctx, "-n", n.Name, "addr", "add", a.String()+"/24", "dev", n.nsIf); err != nil {
		return netip.Addr{}, err
	}
	return a, nil
}

// Command returns a command that runs inside the namespace.
func (n *Network) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// SetLink takes the root side of the namespace's veth down or up: with it down, packets to
// the namespace go nowhere (the blackhole route), as if its node dropped off the network,
// and its processes keep running.
func (n *Network) SetLink(ctx context.Context, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	if err := ip(ctx, "link", "set", n.hostIf, state); err != nil {
		return err
	}
	if up {
		// The kernel drops the interface's routes when it goes down; put the subnet back.
		return ip(ctx, "route", "replace", n.Prefix.String(), "dev", n.hostIf, "src", n.Host.String())
	}
	return nil
}

// Close deletes the namespace; the veth pair goes with it. The blackhole route stays for other
// packages still running; it only ever drops traffic for test addresses.
func (n *Network) Close() error {
	ctx := context.Background()
	var errs []error
	if err := ip(ctx, "link", "del", n.hostIf); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
		errs = append(errs, err)
	}
	if err := ip(ctx, "netns", "del", n.Name); err != nil && !strings.Contains(err.Error(), "No such file") {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

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
	"strconv"
	"strings"
	"sync"
	"syscall"
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
// pair, on the /24 subnet. Call Close to remove it. Namespaces left behind by a test process that
// died before its Close (killed, timed out) are removed first; a subnet still routed to a live
// process's namespace is an error, never a second route that sends this run's packets there.
func New(ctx context.Context, prefix string, subnet netip.Prefix) (n *Network, err error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if subnet.Bits() != 24 || !subnet.Addr().Is4() || !TestRange.Contains(subnet.Addr()) {
		return nil, fmt.Errorf("netns: subnet %v must be a /24 inside %v", subnet, TestRange)
	}
	subnet = subnet.Masked()
	if _, err := ReapStale(ctx); err != nil {
		return nil, err
	}
	if dev, err := routedTo(ctx, subnet); err != nil {
		return nil, err
	} else if dev != "" {
		return nil, fmt.Errorf("netns: %v is already routed to %s, a namespace of a test process that is still running; stop it (or remove the namespace) first", subnet, dev)
	}
	id := randomID()
	host := subnet.Addr().Next()
	n = &Network{
		Name:   fmt.Sprintf("%s-%s-p%d", prefix, id, os.Getpid()),
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

// ReapStale removes the namespaces (and their veth pairs and processes) that this package made
// for a process that no longer runs, and returns their names. A test binary killed by a timeout
// or a CI job's end never runs its Close; what it left would otherwise route its subnet to a
// namespace nobody listens in, and the next run's connections would be refused there.
func ReapStale(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netns: list namespaces: %w", err)
	}
	var reaped []string
	var errs []error
	for _, e := range entries {
		name := e.Name()
		id, owner, ok := parseName(name)
		if !ok || !stale(ctx, name, owner) {
			continue
		}
		for _, pid := range pidsIn(ctx, name) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if err := ip(ctx, "link", "del", "hfh"+id); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
			errs = append(errs, err)
		}
		if err := ip(ctx, "netns", "del", name); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
			continue
		}
		reaped = append(reaped, name)
	}
	return reaped, errors.Join(errs...)
}

// parseName splits a name New made, "<prefix>-<id>-p<pid>" (or "<prefix>-<id>" from before the
// owner was part of it: owner 0), into the veth id and the owning process.
func parseName(name string) (id string, owner int, ok bool) {
	if !strings.HasPrefix(name, "hf-") {
		return "", 0, false
	}
	parts := strings.Split(name, "-")
	last := parts[len(parts)-1]
	if pid, err := strconv.Atoi(strings.TrimPrefix(last, "p")); strings.HasPrefix(last, "p") && err == nil && pid > 0 {
		owner = pid
		parts = parts[:len(parts)-1]
	}
	id = parts[len(parts)-1]
	if len(parts) < 3 || len(id) != 8 || strings.Trim(id, "0123456789abcdef") != "" {
		return "", 0, false
	}
	return id, owner, true
}

// stale says whether the namespace's owner is gone: its process has exited, or (a name without
// an owner) nothing runs inside it.
func stale(ctx context.Context, name string, owner int) bool {
	if owner == 0 {
		return len(pidsIn(ctx, name)) == 0
	}
	return errors.Is(syscall.Kill(owner, 0), syscall.ESRCH)
}

func pidsIn(ctx context.Context, name string) []int {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", name).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// routedTo names the device the root namespace routes exactly subnet to, or "" if none does.
func routedTo(ctx context.Context, subnet netip.Prefix) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", "-o", "-4", "route", "show", "exact", subnet.String()).Output()
	if err != nil {
		return "", fmt.Errorf("netns: ip route show exact %v: %w", subnet, err)
	}
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "dev" {
			return f[i+1], nil
		}
	}
	return "", nil
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

// Subnets hands out the /24s of a range, each once, to the tests of one process that run at the
// same time: each gets a network of its own, so that one test taking its link down or filling
// its subnet never touches another's.
type Subnets struct {
	// set at construction, read-only
	last netip.Addr

	// guarded by mu
	mu   sync.Mutex
	next netip.Addr
}

// NewSubnets hands out first, the /24 after it, and so on up to and including last.
func NewSubnets(first, last netip.Prefix) *Subnets {
	return &Subnets{next: first.Masked().Addr(), last: last.Masked().Addr()}
}

// Next returns a /24 nobody in this process was given before.
func (s *Subnets) Next() (netip.Prefix, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.next
	if !a.IsValid() || s.last.Less(a) {
		return netip.Prefix{}, fmt.Errorf("netns: every /24 up to %v is handed out", s.last)
	}
	b := a.As4()
	if b[2] == 255 {
		s.next = netip.Addr{}
	} else {
		b[2]++
		s.next = netip.AddrFrom4(b)
	}
	return netip.PrefixFrom(a, 24), nil
}

package netns

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestParseName(t *testing.T) {
	tests := []struct {
		name  string
		id    string
		owner int
		ok    bool
	}{
		{"hf-e2e-3013542d-p4242", "3013542d", 4242, true},
		{"hf-zone-a-0a1b2c3d-p7", "0a1b2c3d", 7, true},
		{"hf-e2e-3013542d", "3013542d", 0, true}, // made before the owner was in the name
		{"hf-demo-0d834e64", "0d834e64", 0, true},
		{"hf-e2e-3013542d-p0", "", 0, false},
		{"hf-e2e-3013542D-p12", "", 0, false},
		{"hf-e2e-zzzzzzzz-p12", "", 0, false},
		{"hf-3013542d", "", 0, false}, // no prefix part
		{"cni-1234abcd-p1", "", 0, false},
		{"hf-e2e-p12", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, owner, ok := parseName(tt.name)
			if id != tt.id || owner != tt.owner || ok != tt.ok {
				t.Errorf("parseName(%q) = %q, %d, %v; want %q, %d, %v", tt.name, id, owner, ok, tt.id, tt.owner, tt.ok)
			}
		})
	}
}

// TestNewReapsWhatADeadRunLeft: a namespace whose owner died (a test binary killed by its
// timeout) still routes its subnet; New removes it and routes the subnet to the new namespace,
// while a subnet held by a live owner is an error.
func TestNewReapsWhatADeadRunLeft(t *testing.T) {
	if err := Check(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	subnet := netip.MustParsePrefix("10.244.250.0/24")
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	left := leftBehind(t, subnet, dead.Process.Pid)

	n, err := New(ctx, "hf-reap", subnet)
	if err != nil {
		t.Fatalf("New over a dead run's namespace: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	if _, err := os.Stat("/run/netns/" + left); !os.IsNotExist(err) {
		t.Errorf("the dead run's namespace %s is still there (stat: %v)", left, err)
	}
	if dev, err := routedTo(ctx, subnet); err != nil || dev != n.hostIf {
		t.Errorf("%v routed to %q (%v), want %q", subnet, dev, err, n.hostIf)
	}
	if !strings.HasSuffix(n.Name, "-p"+strconv.Itoa(os.Getpid())) {
		t.Errorf("name %q does not name its owner %d", n.Name, os.Getpid())
	}

	// This process is alive: its namespace is not reaped, and the subnet is not routed twice.
	if _, err := New(ctx, "hf-reap", subnet); err == nil || !strings.Contains(err.Error(), n.hostIf) {
		t.Errorf("New on a subnet a live namespace holds: err = %v, want one naming %s", err, n.hostIf)
	}
	if _, err := os.Stat("/run/netns/" + n.Name); err != nil {
		t.Errorf("the live namespace was removed: %v", err)
	}
}

// leftBehind makes what New makes, owned by pid, and never closes it: what a killed run leaves.
func leftBehind(t *testing.T, subnet netip.Prefix, pid int) string {
	t.Helper()
	ctx := context.Background()
	id := randomID()
	name := "hf-reap-" + id + "-p" + strconv.Itoa(pid)
	for _, s := range [][]string{
		{"netns", "add", name},
		{"link", "add", "hfh" + id, "type", "veth", "peer", "name", "hfn" + id},
		{"link", "set", "hfn" + id, "netns", name},
		{"addr", "add", subnet.Addr().Next().String() + "/24", "dev", "hfh" + id},
		{"link", "set", "hfh" + id, "up"},
	} {
		if err := ip(ctx, s...); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = ip(ctx, "link", "del", "hfh"+id); _ = ip(ctx, "netns", "del", name) })
	return name
}

func TestSubnetsEachOnce(t *testing.T) {
	s := NewSubnets(netip.MustParsePrefix("10.244.20.0/24"), netip.MustParsePrefix("10.244.22.0/24"))
	var got []string
	for range 3 {
		p, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p.String())
	}
	if strings.Join(got, " ") != "10.244.20.0/24 10.244.21.0/24 10.244.22.0/24" {
		t.Errorf("handed out %v", got)
	}
	if p, err := s.Next(); err == nil {
		t.Errorf("a fourth /24 of three: %v", p)
	}
	top := NewSubnets(netip.MustParsePrefix("10.244.255.0/24"), netip.MustParsePrefix("10.244.255.0/24"))
	if _, err := top.Next(); err != nil {
		t.Fatal(err)
	}
	if p, err := top.Next(); err == nil {
		t.Errorf("past 10.244.255.0/24: %v", p)
	}
}

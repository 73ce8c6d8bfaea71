// Package testproc holds what every process-starting helper of the e2e packages needs: free
// loopback ports and the tail of a log file.
package testproc

import (
	"net"
	"os"
	"strings"
	"sync"
)

// handedOut is every port FreePorts returned in this test process. A port is free only until
// the process it is meant for binds it; closing the probe listener lets the kernel hand the
// same port to the next probe at once, so two processes started back to back could be given
// one port (seen: two agents, one exiting with "address already in use"). No port is returned
// twice.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// FreePorts returns n loopback TCP ports that were free a moment ago and that no earlier call
// in this process returned.
func FreePorts(n int) ([]int, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l) // held until return: this call gets distinct ports
		port := l.Addr().(*net.TCPAddr).Port
		if !handedOut.ports[port] {
			handedOut.ports[port] = true
			ports = append(ports, port)
		}
	}
	return ports, nil
}

// Tail returns the last n lines of the file at path, or the error reading it.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

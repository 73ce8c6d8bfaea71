package harness

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/holdfast/holdfast/e2e/internal/testproc"
)

// Agent is a running holdfast-agent process.
type Agent struct {
	ListenAddr string // where local clients connect
	HTTPAddr   string
	LogPath    string
	cmd        *exec.Cmd
	done       chan struct{}
	exitErr    error
}

// RunAgent starts holdfast-agent against upstream on free loopback ports and returns at once.
// It speaks plaintext upstream unless extra sets --upstream-ca.
func RunAgent(bin, logDir, upstream string, extra ...string) (*Agent, error) {
	ports, err := testproc.FreePorts(2)
	if err != nil {
		return nil, err
	}
	a := &Agent{ListenAddr: "127.0.0.1:" + strconv.Itoa(ports[0]), HTTPAddr: "127.0.0.1:" + strconv.Itoa(ports[1]), done: make(chan struct{})}
	logf, err := os.CreateTemp(logDir, "agent-*.log")
	if err != nil {
		return nil, err
	}
	a.LogPath = logf.Name()
	args := append([]string{"--upstream", upstream, "--listen", a.ListenAddr, "--http-listen", a.HTTPAddr}, extra...)
	if !slices.ContainsFunc(extra, func(s string) bool { return strings.HasPrefix(s, "--upstream-ca") }) {
		args = append(args, "--upstream-plaintext")
	}
	a.cmd = exec.Command(bin, args...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("harness: start agent: %w", err)
	}
	go func() { a.exitErr = a.cmd.Wait(); logf.Close(); close(a.done) }()
	return a, nil
}

// Running says whether the agent has not exited.
func (a *Agent) Running() bool {
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// WaitReady polls /readyz until it answers 200.
func (a *Agent) WaitReady(ctx context.Context) (string, error) {
	for {
		code, body, err := get(ctx, "http://"+a.HTTPAddr+"/readyz")
		if err == nil && code == http.StatusOK {
			return body, nil
		}
		select {
		case <-a.done:
			return "", fmt.Errorf("harness: agent exited (%w) before it was ready:\n%s", a.exitErr, testproc.Tail(a.LogPath, 30))
		case <-ctx.Done():
			return body, fmt.Errorf("harness: agent not ready (last: %d %s %w): %w", code, body, err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Get fetches a path of the agent's HTTP endpoint.
func (a *Agent) Get(ctx context.Context, path string) (int, string, error) {
	return get(ctx, "http://"+a.HTTPAddr+path)
}

// Kill sends SIGKILL and waits for the exit.
func (a *Agent) Kill() {
	_ = a.cmd.Process.Kill()
	<-a.done
}

// Terminate sends SIGTERM and waits for the exit.
func (a *Agent) Terminate(timeout time.Duration) error {
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
		return a.exitErr
	case <-time.After(timeout):
		a.Kill()
		return fmt.Errorf("harness: agent did not exit after SIGTERM")
	}
}

// LogTail returns the last n lines of the agent's log.
func (a *Agent) LogTail(n int) string { return testproc.Tail(a.LogPath, n) }

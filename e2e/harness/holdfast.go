package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/holdfast/holdfast/e2e/internal/testproc"
)

// Holdfast is a running holdfast process.
type Holdfast struct {
	// set by StartHoldfast, read-only
	XDSAddr   string
	HTTPAddr  string
	AdminAddr string
	// StatusAddr is the status page's (--status-listen).
	StatusAddr string
	LogPath    string
	cmd        *exec.Cmd
	done       chan struct{}
	exitErr    error // valid after done is closed
}

// StartHoldfast runs bin with the given kubeconfig and extra flags, on free loopback ports, and
// waits until /readyz says ready.
func StartHoldfast(ctx context.Context, bin, logDir, kubeconfig string, extra ...string) (*Holdfast, error) {
	h, err := RunHoldfast(bin, logDir, kubeconfig, extra...)
	if err != nil {
		return nil, err
	}
	if err := h.WaitReady(ctx); err != nil {
		h.Kill()
		return nil, err
	}
	return h, nil
}

// RunHoldfast starts Holdfast like StartHoldfast but does not wait for anything.
func RunHoldfast(bin, logDir, kubeconfig string, extra ...string) (*Holdfast, error) {
	ports, err := testproc.FreePorts(4)
	if err != nil {
		return nil, err
	}
	h := &Holdfast{
		XDSAddr:    "127.0.0.1:" + strconv.Itoa(ports[0]),
		HTTPAddr:   "127.0.0.1:" + strconv.Itoa(ports[1]),
		AdminAddr:  "127.0.0.1:" + strconv.Itoa(ports[2]),
		StatusAddr: "127.0.0.1:" + strconv.Itoa(ports[3]),
		done:       make(chan struct{}),
	}
	for i, a := range extra[:max(len(extra)-1, 0)] {
		if a == "--xds-listen" { // the caller's address (one that network namespaces reach) wins
			h.XDSAddr = extra[i+1]
		}
	}
	logf, err := os.CreateTemp(logDir, "holdfast-*.log")
	if err != nil {
		return nil, err
	}
	h.LogPath = logf.Name()
	args := append([]string{"--kubeconfig", kubeconfig, "--xds-listen", h.XDSAddr, "--http-listen", h.HTTPAddr, "--admin-listen", h.AdminAddr, "--status-listen", h.StatusAddr}, extra...)
	h.cmd = exec.Command(bin, args...)
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := h.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("harness: start holdfast: %w", err)
	}
	go func() { h.exitErr = h.cmd.Wait(); logf.Close(); close(h.done) }()
	return h, nil
}

// WaitReady polls /readyz until it answers 200, the process exits, or ctx is done.
func (h *Holdfast) WaitReady(ctx context.Context) error {
	for {
		code, body, err := h.Get(ctx, "/readyz")
		if err == nil && code == http.StatusOK {
			return nil
		}
		select {
		case <-h.done:
			return fmt.Errorf("harness: holdfast exited (%w) before it was ready:\n%s", h.exitErr, h.LogTail(30))
		case <-ctx.Done():
			return fmt.Errorf("harness: holdfast not ready (last: %d %s %w): %w\n%s", code, body, err, ctx.Err(), h.LogTail(30))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Get fetches a path of Holdfast's HTTP endpoint (/readyz, /metrics, ...).
func (h *Holdfast) Get(ctx context.Context, path string) (int, string, error) {
	return get(ctx, "http://"+h.HTTPAddr+path)
}

func get(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Metric returns the value of the first sample of /metrics whose line starts with series (a
// metric name, optionally with its labels in exposition order).
func (h *Holdfast) Metric(ctx context.Context, series string) (float64, error) {
	_, body, err := h.Get(ctx, "/metrics")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, series+" ") {
			return strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, series)), 64)
		}
	}
	return 0, fmt.Errorf("harness: metric %s not found", series)
}

// Terminate sends SIGTERM and waits for the exit, returning the exit error (nil for exit 0).
func (h *Holdfast) Terminate(timeout time.Duration) error {
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
		return h.exitErr
	case <-time.After(timeout):
		h.Kill()
		return errors.New("harness: holdfast did not exit after SIGTERM")
	}
}

// Running says whether the process has not exited.
func (h *Holdfast) Running() bool {
	select {
	case <-h.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the exit.
func (h *Holdfast) Kill() {
	_ = h.cmd.Process.Kill()
	<-h.done
}

// LogTail returns the last n lines of Holdfast's log.
func (h *Holdfast) LogTail(n int) string {
	return filepath.Base(h.LogPath) + ":\n" + testproc.Tail(h.LogPath, n)
}

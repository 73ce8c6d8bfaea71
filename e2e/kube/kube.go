// Package kube starts a real etcd and kube-apiserver on 127.0.0.1 for tests and the demo, and
// lets a test stop, pause, resume and restart each of them. Binaries come from build.sh beside
// this file, which builds them from the Go module proxy into Holdfast's binary cache.
package kube

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/holdfast/holdfast/e2e/internal/testproc"
)

// Binaries are the paths of the programs a Cluster runs.
type Binaries struct {
	APIServer string
	Kubectl   string
	Etcd      string
}

// built is build's result, computed once per process.
var built = sync.OnceValues(build)

// Build runs build.sh (a no-op when the cache already holds the binaries) and returns their
// paths. It runs once per process.
func Build() (Binaries, error) { return built() }

func build() (Binaries, error) {
	vars, err := runBuildScript("build.sh")
	if err != nil {
		return Binaries{}, err
	}
	b := Binaries{
		APIServer: filepath.Join(vars["KUBE_BIN_DIR"], "kube-apiserver"),
		Kubectl:   filepath.Join(vars["KUBE_BIN_DIR"], "kubectl"),
		Etcd:      filepath.Join(vars["ETCD_BIN_DIR"], "etcd"),
	}
	for _, p := range []string{b.APIServer, b.Kubectl, b.Etcd} {
		if _, err := os.Stat(p); err != nil {
			return Binaries{}, fmt.Errorf("kube: build.sh did not produce %s: %w", p, err)
		}
	}
	return b, nil
}

// Cluster is a running etcd + kube-apiserver pair.
type Cluster struct {
	// set by Start, read-only
	Dir        string // scratch directory: data, certificates, logs, kubeconfig
	Kubeconfig string // path of an admin kubeconfig
	Server     string // https://127.0.0.1:<port>
	CAFile     string
	Token      string
	Config     *rest.Config
	Client     kubernetes.Interface
	SAKey      string // the service account signing key
	Etcd       *Process
	APIServer  *Process
}

// Start runs etcd and kube-apiserver in a new directory under dir (os.TempDir() if empty) and
// waits until the API server reports ready. The API server listens on 127.0.0.1 and maintains
// no endpoints for the kubernetes Service: nothing but the tests on this machine reach it.
func Start(ctx context.Context, dir string) (*Cluster, error) {
	return start(ctx, dir, apiOptions{})
}

// apiOptions are what a node's API server needs beyond the bare one: to be reachable from pods.
type apiOptions struct {
	// advertise is the node's address: the API server listens on every address and the
	// kubernetes Service's endpoints point at this one.
	advertise   string
	serviceCIDR string   // default 10.96.0.0/16
	extra       []string // further flags
}

func start(ctx context.Context, dir string, o apiOptions) (c *Cluster, err error) {
	bins, err := Build()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp(dir, "holdfast-kube-")
	if err != nil {
		return nil, err
	}
	c = &Cluster{Dir: root, Token: "holdfast-admin-token"}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	ports, err := testproc.FreePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	// The API server's self-signed certificate names the advertised address, not loopback.
	host := "127.0.0.1"
	if o.advertise != "" {
		host = o.advertise
	}
	c.Server = "https://" + net.JoinHostPort(host, strconv.Itoa(ports[2]))
	certs := filepath.Join(root, "certs")
	c.CAFile = filepath.Join(certs, "apiserver.crt")
	saKey := filepath.Join(root, "sa.key")
	tokens := filepath.Join(root, "tokens.csv")
	if err := os.MkdirAll(certs, 0o700); err != nil {
		return nil, err
	}
	if out, err := exec.Command("openssl", "genrsa", "-out", saKey, "2048").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("kube: openssl genrsa: %w: %s", err, out)
	}
	if err := os.WriteFile(tokens, []byte(c.Token+",admin,admin-uid,system:masters\n"), 0o600); err != nil {
		return nil, err
	}

	c.Etcd = newProcess("etcd", root, bins.Etcd,
		"--name=default",
		"--data-dir="+filepath.Join(root, "etcd-data"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		"--unsafe-no-fsync", "--log-level=warn")
	if err := c.Etcd.Start(); err != nil {
		return nil, err
	}
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--secure-port=" + strconv.Itoa(ports[2]),
		"--cert-dir=" + certs,
		"--token-auth-file=" + tokens,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saKey, "--service-account-signing-key-file=" + saKey,
		"--v=0",
	}
	if o.serviceCIDR == "" {
		o.serviceCIDR = "10.96.0.0/16"
	}
	args = append(args, "--service-cluster-ip-range="+o.serviceCIDR)
	if o.advertise == "" {
		args = append(args, "--bind-address=127.0.0.1", "--endpoint-reconciler-type=none")
	} else {
		args = append(args, "--bind-address=0.0.0.0", "--advertise-address="+o.advertise)
	}
	c.SAKey = saKey
	c.APIServer = newProcess("kube-apiserver", root, bins.APIServer, append(args, o.extra...)...)
	if err := c.APIServer.Start(); err != nil {
		return nil, err
	}
	if err := c.WaitReady(ctx); err != nil {
		return nil, err
	}
	c.Kubeconfig = filepath.Join(root, "kubeconfig")
	if err := c.WriteKubeconfig(c.Kubeconfig, c.Server, c.CAFile); err != nil {
		return nil, err
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return nil, err
	}
	// Tests write fast; client-go's default of 5 requests a second would throttle them.
	c.Config.QPS, c.Config.Burst = 500, 1000
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, err
	}
	return c, nil
}

// WriteKubeconfig writes an admin kubeconfig for server (the API server, or a proxy in front of
// it) that trusts caFile.
func (c *Cluster) WriteKubeconfig(path, server, caFile string) error {
	return c.writeKubeconfig(path, server, caFile, c.Token)
}

// WriteKubeconfigWithToken writes a kubeconfig for this API server that authenticates with
// token (a ServiceAccount's, say).
func (c *Cluster) WriteKubeconfigWithToken(path, token string) error {
	return c.writeKubeconfig(path, c.Server, c.CAFile, token)
}

func (c *Cluster) writeKubeconfig(path, server, caFile, token string) error {
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: holdfast-test
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: holdfast-test
  context: {cluster: holdfast-test, user: admin}
current-context: holdfast-test
`, server, caFile, token)
	return os.WriteFile(path, []byte(kc), 0o600)
}

// WaitReady polls the API server's /readyz until it answers ok or ctx is done.
func (c *Cluster) WaitReady(ctx context.Context) error {
	ca, err := waitForFile(ctx, c.CAFile)
	if err != nil {
		return fmt.Errorf("kube: API server certificate: %w (log: %s)", err, c.APIServer.Tail(20))
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.Server+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+c.Token)
		resp, err := hc.Do(req)
		if err == nil {
			body := make([]byte, 512)
			n, _ := resp.Body.Read(body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body[:n])
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube: API server not ready (%s): %w\nlog: %s", last, ctx.Err(), c.APIServer.Tail(20))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func waitForFile(ctx context.Context, path string) ([]byte, error) {
	for {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return b, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Close stops both processes and removes the scratch directory.
func (c *Cluster) Close() {
	for _, p := range []*Process{c.APIServer, c.Etcd} {
		if p != nil {
			p.Kill()
		}
	}
	if c.Dir != "" {
		os.RemoveAll(c.Dir)
	}
}

// Process is one of the cluster's programs. It can be killed, paused and started again with
// the same arguments (and so the same data and ports).
type Process struct {
	// set at construction, read-only
	name, bin, logPath string
	args               []string

	// guarded by mu
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func newProcess(name, dir, bin string, args ...string) *Process {
	return &Process{name: name, bin: bin, args: args, logPath: filepath.Join(dir, name+".log")}
}

// Start starts the process; its output is appended to its log file.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("kube: %s is already running", p.name)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The process dies with the test, whatever happens to the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("kube: start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	p.cmd, p.done = cmd, done
	return nil
}

// Kill sends SIGKILL (resuming a paused process first is not needed) and waits for the exit.
func (p *Process) Kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd, p.done = nil, nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart kills the process and starts it again with the same arguments.
func (p *Process) Restart() error {
	p.Kill()
	return p.Start()
}

// Pause stops the process with SIGSTOP: it keeps its sockets but answers nothing. It returns
// once the kernel reports the process stopped (the signal is delivered asynchronously).
func (p *Process) Pause() error {
	if err := p.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	p.mu.Lock()
	pid := p.cmd.Process.Pid
	p.mu.Unlock()
	stat := fmt.Sprintf("/proc/%d/stat", pid)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(stat)
		if err != nil {
			return fmt.Errorf("kube: %s: %w", p.name, err)
		}
		// The state follows the command name, which is in parentheses and may hold spaces.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't') {
			return nil
		}
	}
	return fmt.Errorf("kube: %s did not stop within 5s of SIGSTOP", p.name)
}

// Resume continues a paused process with SIGCONT.
func (p *Process) Resume() error { return p.signal(syscall.SIGCONT) }

func (p *Process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("kube: %s is not running", p.name)
	}
	return p.cmd.Process.Signal(sig)
}

// Tail returns the last n lines of the process's log.
func (p *Process) Tail(n int) string { return testproc.Tail(p.logPath, n) }

// runBuildScript runs one of this package's build scripts (a no-op when the cache holds what
// it builds) and returns the KEY=VALUE lines it prints: where things are.
func runBuildScript(name string) (map[string]string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return nil, fmt.Errorf("kube: cannot locate %s", name)
	}
	cmd := exec.Command("bash", filepath.Join(filepath.Dir(file), name))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("kube: %s: %w\n%s", name, err, stderr.String())
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			vars[k] = v
		}
	}
	return vars, sc.Err()
}

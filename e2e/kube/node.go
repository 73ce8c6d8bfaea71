package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast/holdfast/internal/ociimage"
)

// NodeBinaries are the programs of a node besides the API server's (Binaries).
type NodeBinaries struct {
	Kubelet, ControllerManager, Scheduler, Proxy string
	CoreDNS, Crictl                              string
}

// nodeBuilt is buildNode's result, computed once per process.
var nodeBuilt = sync.OnceValues(buildNode)

// BuildNode runs build-node.sh (a no-op when the cache holds everything) once per process.
func BuildNode() (NodeBinaries, error) { return nodeBuilt() }

func buildNode() (NodeBinaries, error) {
	vars, err := runBuildScript("build-node.sh")
	if err != nil {
		return NodeBinaries{}, err
	}
	d := vars["NODE_BIN_DIR"]
	b := NodeBinaries{Kubelet: filepath.Join(d, "kubelet"), ControllerManager: filepath.Join(d, "kube-controller-manager"),
		Scheduler: filepath.Join(d, "kube-scheduler"), Proxy: filepath.Join(d, "kube-proxy"), CoreDNS: vars["COREDNS"], Crictl: vars["CRICTL"]}
	for _, p := range []string{b.Kubelet, b.ControllerManager, b.Scheduler, b.Proxy, b.CoreDNS, b.Crictl} {
		if _, err := os.Stat(p); err != nil {
			return NodeBinaries{}, fmt.Errorf("kube: build-node.sh did not produce %s: %w", p, err)
		}
	}
	return b, nil
}

// The node's fixed layout. One node runs per machine at a time: its package's tests share it.
const (
	NodeName      = "holdfast-node"
	PodCIDR       = "10.88.0.0/16"
	ServiceCIDR   = "10.0.0.0/24"
	ClusterDNS    = "10.0.0.10"
	bridgeName    = "hfnode0"
	containerdRun = "/run/holdfast-containerd"
	kubeletPort   = 30250
)

// Node is a real single-node cluster: the API server (on the node's address, reachable from
// pods through the kubernetes Service), the controller manager, the scheduler, a kubelet on
// containerd with a bridge pod network routable from the host, kube-proxy (iptables) and
// CoreDNS for cluster DNS. Images come from tars, never a registry. Close undoes every change it
// made to the host: pods, mounts, the bridge, the kubelet's and kube-proxy's iptables chains,
// net.ipv4.ip_forward.
type Node struct {
	*Cluster
	// IP is the node's address: the host's primary one.
	IP      netip.Addr
	Socket  string // containerd's
	bins    NodeBinaries
	dir     string
	forward string // net.ipv4.ip_forward before the node started

	Containerd, ControllerManager, Scheduler, Kubelet, Proxy *Process
}

// NodeOptions say what a node starts with.
type NodeOptions struct {
	// Images are image tars (see package ociimage) imported into containerd; the pause and
	// CoreDNS images are always there.
	Images []string
}

// StartNode starts a node under dir and waits until it is Ready and cluster DNS answers.
func StartNode(ctx context.Context, dir string, o NodeOptions) (n *Node, err error) {
	bins, err := BuildNode()
	if err != nil {
		return nil, err
	}
	ip, err := hostIP()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp(dir, "holdfast-node-")
	if err != nil {
		return nil, err
	}
	n = &Node{IP: ip, bins: bins, dir: root, Socket: containerdRun + "/containerd.sock"}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err == nil {
		n.forward = strings.TrimSpace(string(b))
	}
	pki := filepath.Join(root, "pki")
	if err := kubeletClientPKI(pki); err != nil {
		return nil, err
	}
	if n.Cluster, err = start(ctx, root, apiOptions{advertise: ip.String(), serviceCIDR: ServiceCIDR, extra: []string{
		"--kubelet-client-certificate=" + filepath.Join(pki, "apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + filepath.Join(pki, "apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP",
		"--allow-privileged=true",
	}}); err != nil {
		return nil, err
	}
	if err := n.writeConfigs(pki); err != nil {
		return nil, err
	}
	n.Containerd = newProcess("containerd", root, "containerd", "--config", filepath.Join(root, "containerd.toml"))
	if err := n.Containerd.Start(); err != nil {
		return nil, err
	}
	if err := n.waitContainerd(ctx); err != nil {
		return nil, err
	}
	images, err := n.systemImages()
	if err != nil {
		return nil, err
	}
	for _, img := range append(images, o.Images...) {
		if err := n.Import(ctx, img); err != nil {
			return nil, err
		}
	}
	kc := n.Kubeconfig
	n.ControllerManager = newProcess("kube-controller-manager", root, bins.ControllerManager, "--kubeconfig="+kc,
		"--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc, "--bind-address=127.0.0.1", "--secure-port=30257",
		"--cert-dir="+filepath.Join(root, "kcm-certs"), "--leader-elect=false", "--controllers=*", "--use-service-account-credentials=false",
		"--service-account-private-key-file="+n.SAKey, "--root-ca-file="+n.CAFile,
		"--cluster-cidr="+PodCIDR, "--allocate-node-cidrs=false", "--service-cluster-ip-range="+ServiceCIDR,
		// Node lifecycle: a node that stops reporting is NotReady after this long (default 40 s).
		"--node-monitor-grace-period=20s", "--node-monitor-period=2s")
	n.Scheduler = newProcess("kube-scheduler", root, bins.Scheduler, "--kubeconfig="+kc, "--authentication-kubeconfig="+kc,
		"--authorization-kubeconfig="+kc, "--bind-address=127.0.0.1", "--secure-port=30259", "--cert-dir="+filepath.Join(root, "sched-certs"),
		"--leader-elect=false")
	n.Kubelet = newProcess("kubelet", root, bins.Kubelet, "--config="+filepath.Join(root, "kubelet-config.yaml"), "--kubeconfig="+kc,
		"--root-dir="+filepath.Join(root, "kubelet"), "--hostname-override="+NodeName, "--node-ip="+ip.String(), "-v=1")
	n.Proxy = newProcess("kube-proxy", root, bins.Proxy, "--kubeconfig="+kc, "--hostname-override="+NodeName,
		"--cluster-cidr="+PodCIDR, "--proxy-mode=iptables", "--iptables-localhost-nodeports=false",
		"--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0",
		"--metrics-bind-address=127.0.0.1:30249", "--healthz-bind-address=127.0.0.1:30256")
	for _, p := range []*Process{n.ControllerManager, n.Scheduler, n.Kubelet, n.Proxy} {
		if err := p.Start(); err != nil {
			return nil, err
		}
	}
	if err := n.waitReady(ctx); err != nil {
		return nil, err
	}
	if err := n.startDNS(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// hostIP is the address the host reaches the world from: the node's InternalIP.
func hostIP() (netip.Addr, error) {
	out, err := exec.Command("ip", "-4", "route", "get", "1.1.1.1").Output()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("kube: the host's address: %w", err)
	}
	f := strings.Fields(string(out))
	for i, w := range f {
		if w == "src" && i+1 < len(f) {
			return netip.ParseAddr(f[i+1])
		}
	}
	return netip.Addr{}, fmt.Errorf("kube: no source address in %q", out)
}

// kubeletClientPKI makes the CA the kubelet trusts for clients, and the API server's client
// certificate from it (kubectl logs and exec go through the kubelet).
func kubeletClientPKI(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	run := func(args ...string) error {
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("kube: openssl %s: %w: %s", args[0], err, out)
		}
		return nil
	}
	p := func(n string) string { return filepath.Join(dir, n) }
	if err := run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=holdfast-node-kubelet-client-ca",
		"-keyout", p("kubelet-client-ca.key"), "-out", p("kubelet-client-ca.crt")); err != nil {
		return err
	}
	if err := run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/O=system:masters/CN=kube-apiserver-kubelet-client",
		"-keyout", p("apiserver-kubelet-client.key"), "-out", p("apiserver-kubelet-client.csr")); err != nil {
		return err
	}
	return run("x509", "-req", "-days", "30", "-in", p("apiserver-kubelet-client.csr"), "-CA", p("kubelet-client-ca.crt"),
		"-CAkey", p("kubelet-client-ca.key"), "-CAcreateserial", "-out", p("apiserver-kubelet-client.crt"))
}

func (n *Node) writeConfigs(pki string) error {
	files := map[string]string{
		"containerd.toml": fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:holdfast"
  disable_apparmor = true
  tolerate_missing_hugetlb_controller = true
  # Root here lacks CAP_SYS_RESOURCE: oom_score_adj may not go below containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
    max_conf_num = 1
`, filepath.Join(n.dir, "containerd"), containerdRun, n.Socket, filepath.Join(n.dir, "cni")),
		"cni/10-holdfast.conflist": fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "holdfast-node", "plugins": [{
  "type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}}]}
`, bridgeName, PodCIDR, filepath.Join(n.dir, "cni-ipam")),
		"kubelet-config.yaml": fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://%s
address: 0.0.0.0
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 30248
clusterDNS: [%s]
clusterDomain: cluster.local
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization: {mode: Webhook}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", nodefs.inodesFree: "1%%", imagefs.available: "1%%"}
failSwapOn: false
serializeImagePulls: false
nodeStatusUpdateFrequency: 2s
nodeStatusReportFrequency: 10s
syncFrequency: 10s
fileCheckFrequency: 10s
`, n.Socket, kubeletPort, ClusterDNS, filepath.Join(pki, "kubelet-client-ca.crt")),
	}
	for name, content := range files {
		p := filepath.Join(n.dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) ctr(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", n.Socket, "-n", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kube: ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (n *Node) waitContainerd(ctx context.Context) error {
	for {
		if n.ctr(ctx, "version") == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube: containerd did not start: %w\n%s", ctx.Err(), n.Containerd.Tail(20))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Import loads an image tar into containerd, where the kubelet finds it (pods must not pull:
// imagePullPolicy IfNotPresent or Never, and a tag that is not latest).
func (n *Node) Import(ctx context.Context, tar string) error {
	return n.ctr(ctx, "images", "import", tar)
}

// Tag gives an imported image another name (a new tag of the same image: a rolling update).
func (n *Node) Tag(ctx context.Context, src, dst string) error {
	return n.ctr(ctx, "images", "tag", "--force", src, dst)
}

// KillContainer sends sig to a container's process, as the kernel's OOM killer or a crash
// would end it: the kubelet then restarts it in the same pod. id is a pod status's
// containerID (containerd://…).
func (n *Node) KillContainer(ctx context.Context, id string, sig string) error {
	return n.ctr(ctx, "tasks", "kill", "--signal", sig, strings.TrimPrefix(id, "containerd://"))
}

// waitReady waits for the node to be Ready and the default ServiceAccount to exist.
func (n *Node) waitReady(ctx context.Context) error {
	for {
		node, err := n.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err == nil && nodeReady(node) {
			if _, err := n.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube: node not Ready: %w\nkubelet: %s", ctx.Err(), n.Kubelet.Tail(30))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func nodeReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Close stops everything and gives the host back as it was.
func (n *Node) Close() {
	if n.Kubelet != nil {
		n.Kubelet.Kill()
	}
	if n.Proxy != nil {
		n.Proxy.Kill()
		_ = exec.Command(n.bins.Proxy, "--cleanup").Run()
	}
	if n.Containerd != nil && n.bins.Crictl != "" {
		// Removing the sandboxes runs the CNI's DEL: IPs freed, veths and netns gone.
		crictl := []string{"--runtime-endpoint", "unix://" + n.Socket, "--image-endpoint", "unix://" + n.Socket, "--timeout", "20s"}
		_ = exec.Command(n.bins.Crictl, append(crictl, "rmp", "-fa")...).Run()
		_ = exec.Command(n.bins.Crictl, append(crictl, "rm", "-fa")...).Run()
	}
	if n.Containerd != nil {
		n.Containerd.Kill()
		// Shims of containers not removed: ours are the ones on our socket.
		if out, err := exec.Command("pgrep", "-f", "containerd-shim-runc-v2 .*-address "+n.Socket).Output(); err == nil {
			for _, pid := range strings.Fields(string(out)) {
				if p, err := strconv.Atoi(pid); err == nil {
					if proc, err := os.FindProcess(p); err == nil {
						_ = proc.Kill()
					}
				}
			}
		}
	}
	for _, p := range []*Process{n.Scheduler, n.ControllerManager} {
		if p != nil {
			p.Kill()
		}
	}
	if n.Cluster != nil {
		n.Cluster.Close() // the API server, etcd; removes the cluster's directory
	}
	umountUnder(filepath.Join(n.dir, "kubelet"))
	umountUnder(containerdRun)
	umountUnder(n.dir)
	_ = exec.Command("ip", "link", "del", bridgeName).Run()
	// The kubelet's own chains: it never removes them.
	for _, ipt := range []string{"iptables", "ip6tables"} {
		for _, args := range [][]string{
			{"-D", "INPUT", "-j", "KUBE-FIREWALL"}, {"-D", "OUTPUT", "-j", "KUBE-FIREWALL"},
			{"-F", "KUBE-FIREWALL"}, {"-X", "KUBE-FIREWALL"},
			{"-t", "mangle", "-X", "KUBE-KUBELET-CANARY"}, {"-t", "filter", "-X", "KUBE-KUBELET-CANARY"}, {"-t", "nat", "-X", "KUBE-KUBELET-CANARY"},
			{"-t", "mangle", "-X", "KUBE-IPTABLES-HINT"},
		} {
			_ = exec.Command(ipt, args...).Run()
		}
	}
	if n.forward != "" {
		_ = os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(n.forward), 0o644) //nolint:gosec // a sysctl
	}
	_ = os.RemoveAll(containerdRun)
	_ = os.RemoveAll(n.dir)
}

// umountUnder unmounts everything mounted at or below dir, deepest first.
func umountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if exec.Command("umount", mounts[i]).Run() != nil {
			_ = exec.Command("umount", "-l", mounts[i]).Run()
		}
	}
}

// ImageOf writes an image tar of one static binary built from pkg (a package of this module)
// into dir, named tag, running it as entrypoint (with args). The binary is built with
// CGO_ENABLED=0: no base image has a libc.
func ImageOf(dir, pkg, tag string, files ...ociimage.File) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./"+pkg)
	cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("kube: go build %s: %w\n%s", pkg, err, out)
	}
	return imageOfFile(dir, bin, tag, files...)
}

// ImageOfFile writes an image tar of the binary bin, its entrypoint, named tag, with files
// beside it (a dynamically linked binary's loader and libraries, say).
func ImageOfFile(dir, bin, tag string, files ...ociimage.File) (string, error) {
	return imageOfFile(dir, bin, tag, files...)
}

// imageOfFile writes an image tar of the binary bin, its entrypoint, named tag.
func imageOfFile(dir, bin, tag string, files ...ociimage.File) (string, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	path := "/" + filepath.Base(bin)
	img := ociimage.Image{Files: append([]ociimage.File{{Path: path, Mode: 0o755, Data: data}}, files...), Tags: []string{tag},
		Entrypoint: []string{path}, OS: "linux", Architecture: runtime.GOARCH, Created: time.Unix(0, 0)}
	out := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(tag)+".tar")
	f, err := os.Create(out)
	if err != nil {
		return "", err
	}
	if err := img.Write(f); err != nil {
		f.Close()
		return "", err
	}
	return out, f.Close()
}

func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("kube: cannot locate the module")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..")), nil
}

// systemImages are the images every node needs: the sandbox's pause and CoreDNS.
func (n *Node) systemImages() ([]string, error) {
	pause, err := ImageOf(n.dir, "e2e/cmd/pause", "localhost/pause:holdfast")
	if err != nil {
		return nil, err
	}
	dns, err := imageOfFile(n.dir, n.bins.CoreDNS, CoreDNSImage)
	if err != nil {
		return nil, err
	}
	return []string{pause, dns}, nil
}

// CoreDNSImage is the name of the node's CoreDNS image.
const CoreDNSImage = "localhost/coredns:holdfast"

// Kubectl runs kubectl against the node with stdin, and returns its output.
func (n *Node) Kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	bins, err := Build()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, bins.Kubectl, append([]string{"--kubeconfig", n.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kube: kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// startDNS runs CoreDNS as a Deployment behind the kube-dns Service (ClusterDNS), the way
// clusters do, and waits for it to answer.
func (n *Node) startDNS(ctx context.Context) error {
	manifest := `apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: holdfast-node-coredns}
rules:
- {apiGroups: [""], resources: [services, pods, namespaces], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: holdfast-node-coredns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: holdfast-node-coredns}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:1053 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            fallthrough in-addr.arpa ip6.arpa
        }
        cache 30
        loop
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      containers:
      - name: coredns
        image: ` + CoreDNSImage + `
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 1053, protocol: UDP}
        - {name: dns-tcp, containerPort: 1053, protocol: TCP}
        readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 1}
        securityContext: {runAsNonRoot: true, runAsUser: 65532, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
        volumeMounts: [{name: config, mountPath: /etc/coredns}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: ` + ClusterDNS + `
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, targetPort: 1053, protocol: UDP}
  - {name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}
`
	if _, err := n.Kubectl(ctx, manifest, "apply", "-f", "-"); err != nil {
		return err
	}
	if _, err := n.Kubectl(ctx, "", "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=120s"); err != nil {
		return fmt.Errorf("%w\nkubelet: %s", err, n.Kubelet.Tail(30))
	}
	return nil
}

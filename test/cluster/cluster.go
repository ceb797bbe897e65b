// Package cluster runs a real, local Kubernetes control plane for tests: etcd, kube-apiserver
// (RBAC, service-account keys, client-certificate auth), kube-controller-manager,
// kube-scheduler and kwok managing fake nodes that turn Ready and run pods, and optionally real
// kubelet nodes (KubeletSpec) that mount pod volumes on this host. Every component listens on
// 127.0.0.1 on free ports; binaries come from the pinned cache that hack/build-tools.sh fills.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	schedconfigv1 "k8s.io/kube-scheduler/config/v1"
	"sigs.k8s.io/yaml"

	"github.com/petfabric/petfabric/internal/testpki"
)

// NodeSpec is a kwok fake node.
type NodeSpec struct {
	Name        string
	Labels      map[string]string
	Annotations map[string]string
	Taints      []corev1.Taint
	CPU         string // default "32"
	Memory      string // default "256Gi"
	Pods        string // default "110"
}

// Options configure a control plane. The zero value is a valid cluster with no nodes.
type Options struct {
	Nodes []NodeSpec
	// Scheduler is the KubeSchedulerConfiguration to run with (e.g. with Extenders). The harness
	// sets clientConnection.kubeconfig and turns leader election off.
	Scheduler *schedconfigv1.KubeSchedulerConfiguration
	// Binaries overrides the pinned binaries (DefaultBinaries).
	Binaries *Binaries
	// Dir holds state and logs; a new temporary directory when empty.
	Dir string
	// APIServerPort fixes the apiserver's port; 0 picks a free one.
	APIServerPort int

	ExtraAPIServerFlags         []string
	ExtraControllerManagerFlags []string
	ExtraSchedulerFlags         []string

	// Kubelets are real kubelet nodes started once the control plane is ready (see
	// KubeletSpec and Cluster.StartKubelets); Cluster.Kubelets lists them in this order.
	Kubelets []KubeletSpec

	// StartTimeout bounds the whole start-up; default 90s.
	StartTimeout time.Duration
	// Logf receives progress lines; nil is silent.
	Logf func(format string, args ...any)
}

// Cluster is a running control plane.
type Cluster struct {
	Config     *rest.Config // cluster-admin
	Kubeconfig string       // path of the admin kubeconfig
	Client     kubernetes.Interface
	Dir        string
	Bin        Binaries
	// CAPEM is the cluster CA; the apiserver's serving certificate and all client
	// certificates are signed by it.
	CAPEM []byte
	// StartupTime is how long New took, from the first process to a usable cluster.
	StartupTime time.Duration

	// Kubelets are the real kubelet nodes started with Options.Kubelets.
	Kubelets []*Kubelet

	ca       *testpki.CA
	procs    []*process // in start order
	stopOnce sync.Once
	stopErr  error
	server   string // the apiserver's URL
	caFile   string
	log      func(format string, args ...any)

	kubeletMu sync.Mutex
	kubelets  []*Kubelet // every kubelet started, by Options.Kubelets or StartKubelets
	host      *hostState // set while this cluster holds the host's kubelet lock

	apiserverRestarts int // RestartAPIServer's count, for its log names
}

// Start starts a control plane for a test and stops it when the test ends; on failure the
// test is failed with an error naming the component and the tail of its log.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	c, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.DumpLogs(t.Logf, 40)
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	return c
}

// New starts a control plane. The caller must call Stop. On error nothing is left running.
//
// Ports are chosen free and then handed to the components, so another process (a test
// package running beside this one) can take one in between; a component that then fails
// to bind makes New start over, with new ports and a new directory, up to
// portCollisionAttempts times.
func New(ctx context.Context, opts Options) (*Cluster, error) {
	base := opts.Dir
	var err error
	for attempt := 1; attempt <= portCollisionAttempts; attempt++ {
		if attempt > 1 && base != "" {
			opts.Dir = filepath.Join(base, fmt.Sprintf("attempt-%d", attempt))
		}
		var c *Cluster
		if c, err = newOnce(ctx, opts); err == nil || !errors.Is(err, errPortTaken) {
			return c, err
		}
		if opts.Logf != nil {
			opts.Logf("cluster: %v; starting over with other ports", err)
		}
	}
	return nil, err
}

// portCollisionAttempts bounds New's start-overs after a port was taken.
const portCollisionAttempts = 3

func newOnce(ctx context.Context, opts Options) (_ *Cluster, err error) {
	began := time.Now()
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 90 * time.Second
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	bins := opts.Binaries
	if bins == nil {
		b, err := DefaultBinaries()
		if err != nil {
			return nil, err
		}
		bins = &b
	}
	if err := bins.check(); err != nil {
		return nil, err
	}
	dir := opts.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "petfabric-cluster-"); err != nil {
			return nil, fmt.Errorf("create cluster dir: %w", err)
		}
	}
	c := &Cluster{Dir: dir, Bin: *bins, log: logf}
	defer func() {
		if err != nil {
			_ = c.Stop()
		}
	}()
	if len(opts.Kubelets) > 0 {
		// Wait for another test binary's kubelets before the start-up clock runs.
		if err := c.lockHost(parent); err != nil {
			return nil, err
		}
		if waited := time.Since(began); waited > time.Second {
			logf("cluster: waited %s for another test's kubelet nodes to stop", waited.Round(time.Millisecond))
		}
		cancel()
		began = time.Now()
		ctx, cancel = context.WithTimeout(parent, opts.StartTimeout)
		defer cancel()
	}

	ports, err := choosePorts(opts.APIServerPort)
	if err != nil {
		return nil, err
	}
	files, err := c.writePKI(dir, ports.apiserver)
	if err != nil {
		return nil, err
	}

	// etcd
	etcd, err := c.start("etcd", bins.Etcd, []string{
		"--name=default",
		"--data-dir=" + filepath.Join(dir, "etcd-data"),
		"--listen-client-urls=" + hostURL("http", ports.etcdClient),
		"--advertise-client-urls=" + hostURL("http", ports.etcdClient),
		"--listen-peer-urls=" + hostURL("http", ports.etcdPeer),
		"--initial-advertise-peer-urls=" + hostURL("http", ports.etcdPeer),
		"--initial-cluster=default=" + hostURL("http", ports.etcdPeer),
		"--unsafe-no-fsync", // throw-away data; fsync only slows tests down
		"--log-level=warn",
	})
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, etcd, "did not report healthy", func(ctx context.Context) error {
		return httpGetOK(ctx, hostURL("http", ports.etcdClient)+"/health", nil)
	}); err != nil {
		return nil, err
	}
	logf("cluster: etcd ready on 127.0.0.1:%d (%s)", ports.etcdClient, time.Since(began).Round(time.Millisecond))

	// kube-apiserver
	apiserver, err := c.start("kube-apiserver", bins.KubeAPIServer, append([]string{
		"--etcd-servers=" + hostURL("http", ports.etcdClient),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports.apiserver),
		"--tls-cert-file=" + files.apiserverCert,
		"--tls-private-key-file=" + files.apiserverKey,
		"--client-ca-file=" + files.caCert,
		// A request-header CA as kubeadm sets it: without one, every delegating component
		// (scheduler, controller-manager) logs about the missing bundle once a second.
		"--requestheader-client-ca-file=" + files.caCert,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + files.saPub,
		"--service-account-signing-key-file=" + files.saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		// Node authorizes kubelet nodes (system:node:<name>): with RBAC alone the group
		// system:nodes has no rights at all.
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		// The kubernetes Service cannot point at 127.0.0.1 (loopback endpoints are invalid),
		// and nothing in a kwok cluster reaches the apiserver through it.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
	}, opts.ExtraAPIServerFlags...))
	if err != nil {
		return nil, err
	}
	c.Kubeconfig = files.adminKubeconfig
	c.Config, err = clientcmd.BuildConfigFromFlags("", files.adminKubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load admin kubeconfig: %w", err)
	}
	c.Config.QPS, c.Config.Burst = 200, 400
	c.Config.UserAgent = "petfabric-test"
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, fmt.Errorf("admin client: %w", err)
	}
	if err := waitFor(ctx, apiserver, "did not become ready (/readyz)", func(ctx context.Context) error {
		return c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
	}); err != nil {
		return nil, err
	}
	logf("cluster: kube-apiserver ready on https://127.0.0.1:%d (%s)", ports.apiserver, time.Since(began).Round(time.Millisecond))

	// kube-controller-manager, kube-scheduler and kwok start together.
	kcm, err := c.start("kube-controller-manager", bins.KubeControllerManager, append([]string{
		"--kubeconfig=" + files.kcmKubeconfig,
		"--authentication-kubeconfig=" + files.kcmKubeconfig,
		"--authorization-kubeconfig=" + files.kcmKubeconfig,
		"--service-account-private-key-file=" + files.saKey,
		"--root-ca-file=" + files.caCert,
		"--use-service-account-credentials=true", // each controller with its own least-privilege role, as kubeadm runs it
		"--controllers=*",
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports.kcm),
		"--tls-cert-file=" + files.kcmCert,
		"--tls-private-key-file=" + files.kcmKey,
		"--node-monitor-period=1s", // notice kwok nodes turning Ready (and lift their not-ready taint) quickly
		"--profiling=false",
	}, opts.ExtraControllerManagerFlags...))
	if err != nil {
		return nil, err
	}
	schedConfig, err := writeSchedulerConfig(dir, opts.Scheduler, files.schedKubeconfig)
	if err != nil {
		return nil, err
	}
	sched, err := c.start("kube-scheduler", bins.KubeScheduler, append([]string{
		"--config=" + schedConfig,
		"--authentication-kubeconfig=" + files.schedKubeconfig,
		"--authorization-kubeconfig=" + files.schedKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports.scheduler),
		"--tls-cert-file=" + files.schedCert,
		"--tls-private-key-file=" + files.schedKey,
		"--profiling=false",
	}, opts.ExtraSchedulerFlags...))
	if err != nil {
		return nil, err
	}
	kwokArgs := []string{
		"--kubeconfig=" + files.kwokKubeconfig,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--cidr=10.244.0.0/16",
		"--node-ip=10.0.0.1",
		"--server-address=127.0.0.1:" + strconv.Itoa(ports.kwok),
		// The heartbeat-with-lease stage stops refreshing the Ready condition's heartbeat
		// on the assumption that a node Lease carries it; without a lease duration kwok keeps
		// no Lease, so the node-lifecycle controller saw stale heartbeats and flapped the
		// nodes NotReady about every 50s in long runs.
		"--node-lease-duration-seconds=40",
	}
	for _, s := range bins.KwokStages {
		kwokArgs = append(kwokArgs, "--config="+s)
	}
	kwok, err := c.start("kwok", bins.Kwok, kwokArgs)
	if err != nil {
		return nil, err
	}

	if err := c.createNodes(ctx, opts.Nodes); err != nil {
		return nil, err
	}
	if err := waitFor(ctx, sched, "did not become healthy (/healthz)", func(ctx context.Context) error {
		return httpGetOK(ctx, hostURL("https", ports.scheduler)+"/healthz", c.ca.Pool())
	}); err != nil {
		return nil, err
	}
	if err := waitFor(ctx, kcm, "did not become healthy (/healthz)", func(ctx context.Context) error {
		return httpGetOK(ctx, hostURL("https", ports.kcm)+"/healthz", c.ca.Pool())
	}); err != nil {
		return nil, err
	}
	if err := waitFor(ctx, kcm, "did not create the default ServiceAccount", func(ctx context.Context) error {
		_, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return nil, err
	}
	for _, n := range opts.Nodes {
		if err := waitFor(ctx, kwok, fmt.Sprintf("did not make node %s Ready", n.Name), func(ctx context.Context) error {
			return c.nodeReady(ctx, n.Name)
		}); err != nil {
			return nil, err
		}
		if err := waitFor(ctx, kcm, fmt.Sprintf("did not lift the not-ready taint of node %s", n.Name), func(ctx context.Context) error {
			return c.nodeUntainted(ctx, n.Name)
		}); err != nil {
			return nil, err
		}
	}
	if len(opts.Kubelets) > 0 {
		if c.Kubelets, err = c.StartKubelets(ctx, opts.Kubelets...); err != nil {
			return nil, err
		}
	}
	c.StartupTime = time.Since(began)
	logf("cluster: ready with %d node(s) and %d kubelet node(s) in %s (dir %s)", len(opts.Nodes), len(opts.Kubelets), c.StartupTime.Round(time.Millisecond), dir)
	return c, nil
}

// Stop stops every kubelet node first (restoring the host state they changed), then every
// component, newest first (the apiserver before etcd: an apiserver whose etcd is gone hangs
// in shutdown), escalating to SIGKILL. Safe to call more than once; it returns what could not
// be undone on the host.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		c.stopErr = c.stopKubelets()
		for i := len(c.procs) - 1; i >= 0; i-- {
			c.procs[i].stop(10 * time.Second)
		}
	})
	return c.stopErr
}

// DumpLogs prints the last n lines of every component's log.
func (c *Cluster) DumpLogs(logf func(string, ...any), n int) {
	for _, p := range c.procs {
		logf("=== %s log (%s), last %d lines:\n%s", p.name, p.logPath, n, tailFile(p.logPath, n))
	}
}

// Kubectl runs the pinned kubectl against this cluster and returns its combined output.
func (c *Cluster) Kubectl(args ...string) (string, error) {
	return c.KubectlInput("", args...)
}

// KubectlInput runs kubectl with stdin (for `apply -f -`).
func (c *Cluster) KubectlInput(stdin string, args ...string) (string, error) {
	cmd := exec.Command(c.Bin.Kubectl, append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (c *Cluster) start(name, binary string, args []string) (*process, error) {
	p, err := startProcess(name, binary, filepath.Join(c.Dir, name+".log"), args, nil)
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

// waitFor polls check until it succeeds, failing early when the component exits.
func waitFor(ctx context.Context, p *process, what string, check func(context.Context) error) error {
	var last error
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if ended, _ := p.exited(); ended {
			return false, errNotReady
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if last = check(cctx); last != nil {
			return false, nil
		}
		return true, nil
	})
	if err == nil {
		return nil
	}
	if ended, _ := p.exited(); ended {
		return p.failure("exited during start-up")
	}
	if last != nil {
		what = fmt.Sprintf("%s: %v", what, last)
	}
	return p.failure(what + " before the start-up deadline")
}

func (c *Cluster) createNodes(ctx context.Context, nodes []NodeSpec) error {
	for _, n := range nodes {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name: n.Name,
				Labels: merge(map[string]string{
					"type": "kwok", "kubernetes.io/hostname": n.Name,
					"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
				}, n.Labels),
				Annotations: merge(map[string]string{"kwok.x-k8s.io/node": "fake"}, n.Annotations),
			},
			Spec: corev1.NodeSpec{Taints: n.Taints},
			Status: corev1.NodeStatus{
				Capacity:    resources(n),
				Allocatable: resources(n),
				NodeInfo:    corev1.NodeSystemInfo{Architecture: "amd64", OperatingSystem: "linux", KubeletVersion: "fake"},
			},
		}
		if _, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create kwok node %s: %w", n.Name, err)
		}
	}
	return nil
}

func (c *Cluster) nodeReady(ctx context.Context, name string) error {
	n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
			return nil
		}
	}
	return errors.New("node not Ready")
}

func (c *Cluster) nodeUntainted(ctx context.Context, name string) error {
	n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, t := range n.Spec.Taints {
		if t.Key == corev1.TaintNodeNotReady || t.Key == corev1.TaintNodeUnreachable {
			return fmt.Errorf("node still has taint %s", t.Key)
		}
	}
	return nil
}

// AddNodes creates more kwok nodes and waits until they are Ready and schedulable.
func (c *Cluster) AddNodes(ctx context.Context, nodes ...NodeSpec) error {
	if err := c.createNodes(ctx, nodes); err != nil {
		return err
	}
	for _, n := range nodes {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			if c.nodeReady(ctx, n.Name) != nil || c.nodeUntainted(ctx, n.Name) != nil {
				return false, nil
			}
			return true, nil
		})
		if err != nil {
			return fmt.Errorf("node %s not Ready and untainted: %w", n.Name, err)
		}
	}
	return nil
}

func resources(n NodeSpec) corev1.ResourceList {
	or := func(v, d string) string {
		if v == "" {
			return d
		}
		return v
	}
	return corev1.ResourceList{
		corev1.ResourceCPU:    mustQuantity(or(n.CPU, "32")),
		corev1.ResourceMemory: mustQuantity(or(n.Memory, "256Gi")),
		corev1.ResourcePods:   mustQuantity(or(n.Pods, "110")),
	}
}

func merge(base, extra map[string]string) map[string]string {
	for k, v := range extra {
		base[k] = v
	}
	return base
}

// ports of one cluster, all on 127.0.0.1.
type ports struct {
	etcdClient, etcdPeer, apiserver, kcm, scheduler, kwok int
}

// choosePorts is pickPorts; a test replaces it to hand out a port that is taken.
var choosePorts = pickPorts

// pickPorts reserves free ports. A fixed apiserver port that is taken is an error naming it.
func pickPorts(apiserver int) (ports, error) {
	var p ports
	if apiserver != 0 {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", apiserver))
		if err != nil {
			return p, fmt.Errorf("kube-apiserver: port 127.0.0.1:%d is not free: %w", apiserver, err)
		}
		l.Close()
		p.apiserver = apiserver
	}
	free := []*int{&p.etcdClient, &p.etcdPeer, &p.kcm, &p.scheduler, &p.kwok}
	if p.apiserver == 0 {
		free = append(free, &p.apiserver)
	}
	// Hold every listener until all are chosen so no two components get the same port.
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for _, f := range free {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return p, fmt.Errorf("reserve a free port on 127.0.0.1: %w", err)
		}
		held = append(held, l)
		*f = l.Addr().(*net.TCPAddr).Port
	}
	return p, nil
}

func hostURL(scheme string, port int) string {
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, port)
}

type pkiFiles struct {
	caCert, apiserverCert, apiserverKey, saKey, saPub               string
	kcmCert, kcmKey, schedCert, schedKey                            string
	adminKubeconfig, kcmKubeconfig, schedKubeconfig, kwokKubeconfig string
}

// writePKI makes the cluster CA, the apiserver's serving certificate, a client certificate
// (and kubeconfig) per component with its RBAC identity, and the service-account key.
func (c *Cluster) writePKI(dir string, apiserverPort int) (pkiFiles, error) {
	var f pkiFiles
	pkiDir := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return f, fmt.Errorf("create pki dir: %w", err)
	}
	ca, err := testpki.NewCA("petfabric-test-cluster-ca")
	if err != nil {
		return f, err
	}
	c.ca, c.CAPEM = ca, ca.CertPEM
	f.caCert = filepath.Join(pkiDir, "ca.crt")
	if err := os.WriteFile(f.caCert, ca.CertPEM, 0o600); err != nil {
		return f, fmt.Errorf("write CA: %w", err)
	}
	serving, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")},
		"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
	if err != nil {
		return f, err
	}
	if f.apiserverCert, f.apiserverKey, err = serving.WriteFiles(pkiDir, "apiserver"); err != nil {
		return f, err
	}
	// kube-controller-manager and kube-scheduler serve /healthz with certificates of the same CA,
	// so readiness checks verify TLS instead of skipping verification.
	for _, comp := range []struct {
		name      string
		cert, key *string
	}{{"kube-controller-manager", &f.kcmCert, &f.kcmKey}, {"kube-scheduler", &f.schedCert, &f.schedKey}} {
		pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")}, "localhost")
		if err != nil {
			return f, err
		}
		if *comp.cert, *comp.key, err = pair.WriteFiles(pkiDir, comp.name); err != nil {
			return f, err
		}
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return f, fmt.Errorf("generate service-account key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return f, fmt.Errorf("marshal service-account public key: %w", err)
	}
	f.saKey, f.saPub = filepath.Join(pkiDir, "sa.key"), filepath.Join(pkiDir, "sa.pub")
	if err := os.WriteFile(f.saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}), 0o600); err != nil {
		return f, fmt.Errorf("write service-account key: %w", err)
	}
	if err := os.WriteFile(f.saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		return f, fmt.Errorf("write service-account public key: %w", err)
	}
	server := hostURL("https", apiserverPort)
	c.server, c.caFile = server, f.caCert
	identities := []struct {
		path   *string
		file   string
		user   string
		groups []string
	}{
		{&f.adminKubeconfig, "admin.kubeconfig", "petfabric-test-admin", []string{"system:masters"}},
		{&f.kcmKubeconfig, "kube-controller-manager.kubeconfig", "system:kube-controller-manager", nil},
		{&f.schedKubeconfig, "kube-scheduler.kubeconfig", "system:kube-scheduler", nil},
		// kwok stands in for every kubelet: it writes node and pod status and node leases.
		{&f.kwokKubeconfig, "kwok.kubeconfig", "kwok", []string{"system:masters"}},
	}
	for _, id := range identities {
		pair, err := ca.Client(id.user, id.groups...)
		if err != nil {
			return f, err
		}
		*id.path = filepath.Join(dir, id.file)
		if err := writeKubeconfig(*id.path, server, ca.CertPEM, pair); err != nil {
			return f, err
		}
	}
	return f, nil
}

func writeKubeconfig(path, server string, caPEM []byte, pair *testpki.Pair) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificateData: pair.CertPEM, ClientKeyData: pair.KeyPEM}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "user"}
	cfg.CurrentContext = "local"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

func writeSchedulerConfig(dir string, cfg *schedconfigv1.KubeSchedulerConfiguration, kubeconfig string) (string, error) {
	var c schedconfigv1.KubeSchedulerConfiguration
	if cfg != nil {
		c = *cfg.DeepCopy()
	}
	c.APIVersion = schedconfigv1.SchemeGroupVersion.String()
	c.Kind = "KubeSchedulerConfiguration"
	c.ClientConnection.Kubeconfig = kubeconfig
	leaderElect := false
	c.LeaderElection.LeaderElect = &leaderElect
	data, err := yaml.Marshal(&c)
	if err != nil {
		return "", fmt.Errorf("marshal scheduler configuration: %w", err)
	}
	path := filepath.Join(dir, "kube-scheduler-config.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", fmt.Errorf("write scheduler configuration: %w", err)
	}
	return path, nil
}

// IgnoreAlreadyExists treats AlreadyExists as success (handy in test setup).
func IgnoreAlreadyExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// PeakMemory reports each running component's peak resident memory (VmHWM) in bytes.
func (c *Cluster) PeakMemory() map[string]int64 {
	m := map[string]int64{}
	for _, p := range c.procs {
		m[p.name] = p.peakRSS()
	}
	return m
}

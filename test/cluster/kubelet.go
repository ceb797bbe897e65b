package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/mount-utils"
	"sigs.k8s.io/yaml"
)

// KubeletSpec is a real kubelet node: kubelet v1.36.3 registers the node itself with a client
// certificate for system:node:<Name> from the cluster CA (the apiserver authorizes it with the
// Node authorizer), and runs pods through a fake CRI runtime (hack/k8s/fakecri): no container
// process ever starts, but kubelet's volume manager mounts and unmounts every pod volume on
// this host, running FlexVolume drivers from the node's plugin directory as it would in
// production.
type KubeletSpec struct {
	Name   string
	Labels map[string]string
	// Taints are registered by kubelet itself (registerWithTaints), e.g. to keep pods that do
	// not tolerate them on the kwok nodes.
	Taints []corev1.Taint
	// FlexDriver is a built cmd/flex binary. Before kubelet starts it is installed into the
	// node's volume plugin directory by the binary's own `install` mode, as the node DaemonSet
	// installs it.
	FlexDriver string
	// Env is added to kubelet's environment; kubelet runs its FlexVolume drivers with its own
	// environment, so this is how a test hands the driver its configuration
	// (PETFABRIC_FLEX_CONFIG, PETFABRIC_FLEX_STATE_DIR).
	Env []string
}

// Kubelet is a running kubelet node.
type Kubelet struct {
	Name string
	// Dir holds the node's configuration, credentials, logs and root directory.
	Dir string
	// RootDir is kubelet's --root-dir: pods/<uid>/volumes/<plugin>/<volume> are the pod
	// volume directories the driver mounts.
	RootDir string
	// PluginDir is the node's --volume-plugin-dir (FlexVolume drivers).
	PluginDir string
	// CRISocketDir holds the fake CRI runtime's socket (a short path under the temp dir).
	CRISocketDir string
	// LogPath is kubelet's log (klog at --v=2). Each start of the process (Restart,
	// StartKubelet) begins it afresh.
	LogPath string

	spec KubeletSpec
	args []string
	env  []string
	c    *Cluster

	mu      sync.Mutex
	kubelet *process
	cri     *process
	stopped bool
}

// KubeletHostPaths are created by kubelet whatever --root-dir says (the device-plugin socket
// lives in the second); the harness removes the ones that did not exist before the first
// kubelet started.
var KubeletHostPaths = []string{"/var/lib/kubelet", "/var/lib/kubelet/device-plugins", "/var/log/containers"}

// KubeletSysctls are the host sysctls kubelet sets at start (with protectKernelDefaults off)
// and leaves set when it exits; the harness records them before the first kubelet starts and
// writes them back after the last one stopped.
var KubeletSysctls = []string{"vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"}

// kubeletLockPath serializes kubelets across test processes on this host: kubelets share the
// device-plugin socket path and the host sysctls, so while one cluster runs kubelets, another
// cluster (in another package's test binary) waits for the lock before starting its own.
var kubeletLockPath = filepath.Join(os.TempDir(), "petfabric-kubelet.lock")

// hostState is what the harness restores when the cluster's last kubelet stopped.
type hostState struct {
	lock     *os.File
	sysctls  map[string]string
	existing map[string]bool // KubeletHostPaths that existed before
}

// LockKubeletHost takes the host-wide kubelet lock, waiting while another cluster on this
// host runs kubelets; call the returned function to release it. While it is held no kubelet
// of this harness runs, so the host is as the harness leaves it (tests compare snapshots
// under it).
func LockKubeletHost(ctx context.Context) (unlock func(), err error) {
	f, err := lockHost(ctx)
	if err != nil {
		return nil, err
	}
	return func() { unlockHost(f) }, nil
}

func lockHost(ctx context.Context) (*os.File, error) {
	f, err := os.OpenFile(kubeletLockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open kubelet host lock %s: %w", kubeletLockPath, err)
	}
	err = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(context.Context) (bool, error) {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("take kubelet host lock %s (another test's kubelets hold it): %w", kubeletLockPath, err)
	}
	return f, nil
}

func unlockHost(f *os.File) {
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	f.Close()
}

// acquireHost takes the host-wide kubelet lock and records the host state kubelets change.
func acquireHost(ctx context.Context) (*hostState, error) {
	f, err := lockHost(ctx)
	if err != nil {
		return nil, err
	}
	h := &hostState{lock: f, existing: map[string]bool{}}
	if h.sysctls, err = ReadSysctls(); err != nil {
		h.release()
		return nil, err
	}
	for _, p := range KubeletHostPaths {
		_, err := os.Lstat(p)
		h.existing[p] = err == nil
	}
	return h, nil
}

// restore writes the recorded sysctls back, removes the host paths kubelet created and
// releases the lock. It returns every failure.
func (h *hostState) restore() error {
	var errs []error
	for k, v := range h.sysctls {
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", k, v, err))
		}
	}
	// Deepest first, so a parent that existed before keeps only what it had.
	paths := slices.Clone(KubeletHostPaths)
	slices.SortFunc(paths, func(a, b string) int { return len(b) - len(a) })
	for _, p := range paths {
		if h.existing[p] {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("remove %s (created by kubelet): %w", p, err))
		}
	}
	h.release()
	return errors.Join(errs...)
}

func (h *hostState) release() { unlockHost(h.lock) }

// ReadSysctls returns the current values of KubeletSysctls.
func ReadSysctls() (map[string]string, error) {
	out := map[string]string{}
	for _, k := range KubeletSysctls {
		b, err := os.ReadFile(filepath.Join("/proc/sys", k))
		if err != nil {
			return nil, fmt.Errorf("read sysctl %s: %w", k, err)
		}
		out[k] = strings.TrimSpace(string(b))
	}
	return out, nil
}

// StartKubelets starts real kubelet nodes against this control plane and waits until each is
// Ready. The first call takes the host-wide kubelet lock and records the host state; Stop
// stops every kubelet and restores the host.
func (c *Cluster) StartKubelets(ctx context.Context, specs ...KubeletSpec) ([]*Kubelet, error) {
	if err := c.Bin.checkKubelet(); err != nil {
		return nil, err
	}
	if err := c.lockHost(ctx); err != nil {
		return nil, err
	}
	var out []*Kubelet
	for _, s := range specs {
		k, err := c.startKubelet(ctx, s)
		if err != nil {
			return out, err
		}
		out = append(out, k)
	}
	return out, nil
}

// kubeletLockWait bounds the wait for another test binary's kubelets to stop.
const kubeletLockWait = 15 * time.Minute

// lockHost takes the host-wide kubelet lock for this cluster, once, and records the host state.
func (c *Cluster) lockHost(ctx context.Context) error {
	c.kubeletMu.Lock()
	defer c.kubeletMu.Unlock()
	if c.host != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, kubeletLockWait)
	defer cancel()
	h, err := acquireHost(ctx)
	if err != nil {
		return err
	}
	c.host = h
	return nil
}

func (c *Cluster) startKubelet(ctx context.Context, s KubeletSpec) (*Kubelet, error) {
	if s.Name == "" {
		return nil, errors.New("kubelet node needs a name")
	}
	began := time.Now()
	dir := filepath.Join(c.Dir, "kubelet-"+s.Name)
	k := &Kubelet{Name: s.Name, Dir: dir, RootDir: filepath.Join(dir, "root"), PluginDir: filepath.Join(dir, "volume-plugins"),
		LogPath: filepath.Join(c.Dir, "kubelet-"+s.Name+".log"), spec: s, c: c}
	c.kubeletMu.Lock()
	c.kubelets = append(c.kubelets, k)
	c.kubeletMu.Unlock()
	for _, d := range []string{k.RootDir, k.PluginDir, filepath.Join(dir, "pod-logs"), filepath.Join(dir, "certs")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("kubelet %s: create %s: %w", s.Name, d, err)
		}
	}
	if s.FlexDriver != "" {
		out, err := exec.CommandContext(ctx, s.FlexDriver, "install", "--plugin-dir="+k.PluginDir).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("kubelet %s: install FlexVolume driver %s: %w: %s", s.Name, s.FlexDriver, err, out)
		}
	}
	var err error
	if k.CRISocketDir, err = os.MkdirTemp("", "pfk-"); err != nil {
		return nil, fmt.Errorf("kubelet %s: socket dir: %w", s.Name, err)
	}
	endpoint := "unix://" + filepath.Join(k.CRISocketDir, "cri.sock")

	pair, err := c.ca.Client("system:node:"+s.Name, "system:nodes")
	if err != nil {
		return nil, fmt.Errorf("kubelet %s: client certificate: %w", s.Name, err)
	}
	kubeconfig := filepath.Join(dir, "kubelet.kubeconfig")
	if err := writeKubeconfig(kubeconfig, c.server, c.CAPEM, pair); err != nil {
		return nil, err
	}
	port, healthz, err := freePorts2()
	if err != nil {
		return nil, fmt.Errorf("kubelet %s: %w", s.Name, err)
	}
	config, err := writeKubeletConfig(dir, k, endpoint, port, healthz, c.caFile)
	if err != nil {
		return nil, err
	}
	args := []string{
		"--config=" + config,
		"--kubeconfig=" + kubeconfig,
		"--hostname-override=" + s.Name,
		"--root-dir=" + k.RootDir,
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--v=2",
	}
	if len(s.Labels) > 0 {
		var l []string
		for key, v := range s.Labels {
			l = append(l, key+"="+v)
		}
		slices.Sort(l)
		args = append(args, "--node-labels="+strings.Join(l, ","))
	}
	k.args, k.env = args, s.Env

	cri, err := startProcess("fakecri-"+s.Name, c.Bin.FakeCRI, filepath.Join(c.Dir, "fakecri-"+s.Name+".log"),
		[]string{"--endpoint=" + endpoint, "--root=" + k.RootDir}, nil)
	if err != nil {
		return nil, err
	}
	k.cri = cri
	if err := waitFor(ctx, cri, "did not serve its socket", func(context.Context) error {
		_, err := os.Stat(filepath.Join(k.CRISocketDir, "cri.sock"))
		return err
	}); err != nil {
		return nil, err
	}
	if err := k.start(ctx); err != nil {
		return nil, err
	}
	c.logf("cluster: kubelet node %s Ready in %s", s.Name, time.Since(began).Round(time.Millisecond))
	return k, nil
}

// start runs the kubelet process and waits until its node is Ready.
func (k *Kubelet) start(ctx context.Context) error {
	p, err := startProcess("kubelet-"+k.Name, k.c.Bin.Kubelet, k.LogPath, k.args, k.env)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.kubelet = p
	k.mu.Unlock()
	return waitFor(ctx, p, "did not report its node Ready", func(ctx context.Context) error {
		return k.c.kubeletReady(ctx, k.Name, p.startedAt)
	})
}

// kubeletReady wants the node Ready with a heartbeat from this kubelet process (a restarted
// kubelet's node is still Ready from its previous run until the node controller notices).
func (c *Cluster) kubeletReady(ctx context.Context, name string, since time.Time) error {
	n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue && !cond.LastHeartbeatTime.Time.Before(since.Truncate(time.Second)) {
			return nil
		}
	}
	return errors.New("node not Ready")
}

// Restart stops kubelet (SIGTERM) and starts it again with the same configuration, leaving
// the fake runtime, and so the pods' sandboxes, running; it returns once the node is Ready
// again.
func (k *Kubelet) Restart(ctx context.Context) error {
	k.StopKubelet()
	return k.StartKubelet(ctx)
}

// StopKubelet stops only the kubelet process (SIGTERM, SIGKILL after 10s), as a node whose
// kubelet died: the fake runtime keeps the pods' sandboxes, and every mount stays. Stop (or
// StartKubelet) follows.
func (k *Kubelet) StopKubelet() {
	k.mu.Lock()
	p := k.kubelet
	k.mu.Unlock()
	if p != nil {
		p.stop(10 * time.Second)
	}
}

// StartKubelet starts the kubelet process again after StopKubelet and waits until the node is
// Ready with a fresh heartbeat.
func (k *Kubelet) StartKubelet(ctx context.Context) error {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return fmt.Errorf("kubelet %s: node was stopped", k.Name)
	}
	if p := k.kubelet; p != nil {
		if ended, _ := p.exited(); !ended {
			k.mu.Unlock()
			return fmt.Errorf("kubelet %s: still running", k.Name)
		}
	}
	k.mu.Unlock()
	return k.start(ctx)
}

// Stop stops kubelet and its fake runtime and lazily unmounts everything left under the
// node's directory (pod volumes, service-account tmpfs, kubelet's rshared bind mount of its
// root dir). Safe to call more than once; Cluster.Stop calls it for every kubelet.
func (k *Kubelet) Stop() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopped {
		return nil
	}
	k.stopped = true
	if k.kubelet != nil {
		k.kubelet.stop(10 * time.Second)
	}
	if k.cri != nil {
		k.cri.stop(10 * time.Second)
	}
	var errs []error
	if err := unmountUnder(k.Dir); err != nil {
		errs = append(errs, fmt.Errorf("kubelet %s: %w", k.Name, err))
	}
	if k.CRISocketDir != "" {
		if err := os.RemoveAll(k.CRISocketDir); err != nil {
			errs = append(errs, fmt.Errorf("kubelet %s: remove socket dir: %w", k.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Mounts lists the mount points under the node's directory, from /proc/self/mountinfo.
func (k *Kubelet) Mounts() ([]string, error) { return mountsUnder(k.Dir) }

// PodVolumeDir is where kubelet has the driver of plugin (e.g. "datera~iscsi") mount the pod's
// volume.
func (k *Kubelet) PodVolumeDir(podUID, plugin, volume string) string {
	return filepath.Join(k.RootDir, "pods", podUID, "volumes", plugin, volume)
}

// Pid is the running kubelet's process id (0 when stopped).
func (k *Kubelet) Pid() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.kubelet == nil || k.stopped {
		return 0
	}
	if ended, _ := k.kubelet.exited(); ended {
		return 0
	}
	return k.kubelet.cmd.Process.Pid
}

func mountsUnder(dir string) ([]string, error) {
	mi, err := mount.ParseMountInfo("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	var out []string
	for _, m := range mi {
		if m.MountPoint == dir || strings.HasPrefix(m.MountPoint, dir+"/") {
			out = append(out, m.MountPoint)
		}
	}
	return out, nil
}

// unmountUnder lazily unmounts every mount point under dir, deepest first, until none is left
// (a bind mount may be stacked more than once on the same point).
func unmountUnder(dir string) error {
	for range 10 {
		mounts, err := mountsUnder(dir)
		if err != nil {
			return err
		}
		if len(mounts) == 0 {
			return nil
		}
		slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
		for _, m := range mounts {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				return fmt.Errorf("unmount %s: %w", m, err)
			}
		}
	}
	mounts, _ := mountsUnder(dir)
	return fmt.Errorf("mounts left under %s: %v", dir, mounts)
}

// stopKubelets stops every kubelet of the cluster and restores the host.
func (c *Cluster) stopKubelets() error {
	c.kubeletMu.Lock()
	defer c.kubeletMu.Unlock()
	var errs []error
	for _, k := range c.kubelets {
		began := time.Now()
		errs = append(errs, k.Stop())
		c.logf("cluster: kubelet node %s stopped and unmounted in %s", k.Name, time.Since(began).Round(time.Millisecond))
	}
	if c.host != nil {
		errs = append(errs, c.host.restore())
		c.host = nil
	}
	return errors.Join(errs...)
}

func freePorts2() (int, int, error) {
	var ports []int
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, fmt.Errorf("reserve a free port on 127.0.0.1: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports[0], ports[1], nil
}

// writeKubeletConfig writes the KubeletConfiguration of a node that runs on a shared test
// host: no cgroup hierarchy of its own (this host may be cgroup v1, and nothing runs in
// containers), no evictions or image GC, every port on 127.0.0.1, the API on client
// certificates only.
func writeKubeletConfig(dir string, k *Kubelet, endpoint string, port, healthz int, caFile string) (string, error) {
	cfg := map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"failCgroupV1":             false,
		"cgroupsPerQOS":            false,
		"enforceNodeAllocatable":   []string{},
		"failSwapOn":               false,
		"protectKernelDefaults":    false,
		"containerRuntimeEndpoint": endpoint,
		"volumePluginDir":          k.PluginDir,
		"podLogsDir":               filepath.Join(dir, "pod-logs"),
		"address":                  "127.0.0.1",
		"port":                     port,
		"healthzBindAddress":       "127.0.0.1",
		"healthzPort":              healthz,
		"readOnlyPort":             0,
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": false},
			"x509":      map[string]any{"clientCAFile": caFile},
		},
		"authorization":               map[string]any{"mode": "AlwaysAllow"},
		"evictionHard":                map[string]string{"memory.available": "1Mi", "nodefs.available": "1Mi", "imagefs.available": "1Mi", "nodefs.inodesFree": "1"},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"registerWithTaints":          k.spec.Taints,
		"resolvConf":                  "",
		"serializeImagePulls":         false,
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return "", fmt.Errorf("kubelet %s: marshal configuration: %w", k.Name, err)
	}
	path := filepath.Join(dir, "kubelet-config.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", fmt.Errorf("kubelet %s: write configuration: %w", k.Name, err)
	}
	return path, nil
}

func (c *Cluster) logf(format string, args ...any) {
	if c.log != nil {
		c.log(format, args...)
	}
}

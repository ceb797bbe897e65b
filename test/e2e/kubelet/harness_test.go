// Package kubelete2e proves the kubelet ↔ FlexVolume driver protocol with kubelet itself: real
// kubelet v1.36.3 nodes (test/cluster, fake CRI runtime) run petfabric's pets, the built
// cmd/webhook pre-creates their PersistentVolumes, the real scheduler (calling the built
// cmd/extender) and PV controller place and bind them, and kubelet runs the built cmd/flex driver (loop-device stand-in initiator)
// against the Datera simulator. Nothing here calls the driver "as kubelet would": every
// mount and unmount is kubelet's, and the tests read the outcome from the host (mountinfo,
// files), the driver's log and state, and the simulator's ACL history.
//
// kubelets share host state (the device-plugin socket path, sysctls), so this package's tests
// run one after another; test/cluster's host lock keeps other packages' kubelets out meanwhile.
package kubelete2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/datera/fake"
	"github.com/petfabric/petfabric/pkg/flex"
	"github.com/petfabric/petfabric/pkg/flex/flextest"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/webhook"
	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/fixtures"
)

const (
	releaseNS   = "petfabric-system"
	appNS       = "pets"
	credsSecret = "datera-creds"
	classXFS    = "datera-gold" // no fsType parameter: the webhook's default (xfs) applies
	classExt4   = "datera-ext4"
	clusterID   = "kubelet"
	pluginDir   = "datera~iscsi" // kubelet's directory name for the FlexVolume driver datera/iscsi
)

// env is a control plane with real kubelet nodes running the driver, the webhook and the
// simulator.
type env struct {
	c        *cluster.Cluster
	cs       kubernetes.Interface
	ctx      context.Context
	nodes    map[string]*flextest.Env
	kubelets map[string]*cluster.Kubelet
	acl      *aclRecorder
	ext      *schedulerExtender
	names    []string // node names in order
}

// newEnv starts n kubelet nodes (node-0 …) with the driver installed by its own install mode
// and configured through kubelet's environment, the Datera simulator (owned by node-0's
// flextest.Env, shared by the others), the webhook binary registered with the apiserver, and
// the extender binary in kube-scheduler's path with a fresh report for every node.
func newEnv(t testing.TB, n int) *env {
	t.Helper()
	cluster.RequireKubelet(t)
	bins := buildBinaries(t)
	rec := &aclRecorder{}
	e := &env{ctx: context.Background(), nodes: map[string]*flextest.Env{}, kubelets: map[string]*cluster.Kubelet{}, acl: rec}
	credsFile := filepath.Join(t.TempDir(), "credentials.json")
	require.NoError(t, os.WriteFile(credsFile, []byte(`{"username":"`+flextest.User+`","password":"`+flextest.Password+`"}`), 0o600))
	// A StorageClass's backstoreServer names Datera's management port (7717 for http); the
	// simulator listens on a random port, so a proxy on a loopback address's port 7717 fronts it.
	backstore := listenBackstore(t)
	var specs []cluster.KubeletSpec
	for i := range n {
		name := fmt.Sprintf("node-%d", i)
		opts := flextest.EnvOptions{NodeName: name, InitiatorName: "iqn.1993-08.org.debian:01:kubelet-" + name,
			Config: map[string]any{
				// The node's own Datera login, for volumes whose PV passes no secret: the driver
				// hands it only to petfabric PVs (the inline volume test relies on it).
				"credentialsFile":   credsFile,
				"allowedBackstores": []string{backstore.Addr().String()},
			}}
		if i == 0 {
			opts.Sim = func(o *fake.Options) { rec.inner, o.Exporter = o.Exporter, rec }
		} else {
			opts.Share = e.nodes["node-0"]
		}
		e.nodes[name] = flextest.NewEnv(t, opts)
		e.names = append(e.names, name)
		specs = append(specs, cluster.KubeletSpec{Name: name, FlexDriver: bins.flex,
			Env: []string{flex.EnvConfig + "=" + e.nodes[name].ConfigFile, flex.EnvStateDir + "=" + e.nodes[name].StateDir}})
	}
	serveBackstore(t, backstore, e.nodes["node-0"].SimURL)
	ext, sched := newSchedulerExtender(t)
	began := time.Now()
	e.c = cluster.Start(t, cluster.Options{Kubelets: specs, Scheduler: sched})
	t.Logf("control plane with %d kubelet nodes ready in %s", n, time.Since(began).Round(time.Millisecond))
	e.cs = e.c.Client
	for _, k := range e.c.Kubelets {
		e.kubelets[k.Name] = k
	}

	for _, ns := range []string{releaseNS, appNS} {
		_, err := e.cs.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	// kubelet hands a FlexVolume driver only secrets of the driver's own type.
	_, err := e.cs.CoreV1().Secrets(releaseNS).Create(e.ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: credsSecret}, Type: corev1.SecretType(mutate.Driver),
		StringData: map[string]string{"username": flextest.User, "password": flextest.Password},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	for name, params := range map[string]map[string]string{classXFS: nil, classExt4: {"fsType": "ext4"}} {
		p := map[string]string{"replica": "1", "backstoreServer": backstore.Addr().String(), "secretName": credsSecret, "secretNamespace": releaseNS}
		for k, v := range params {
			p[k] = v
		}
		_, err := e.cs.StorageV1().StorageClasses().Create(e.ctx, &storagev1.StorageClass{
			ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: mutate.Provisioner, Parameters: p,
			ReclaimPolicy: ptr.To(corev1.PersistentVolumeReclaimRetain), VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	startWebhook(t, e.c, bins.webhook)
	ext.run(t, e.c, bins.extender)
	e.ext = ext
	e.reportNodes(t, backstore.Addr().String())
	return e
}

// listenBackstore listens on port 7717 of a loopback address of its own (127.77.x.y), so no
// other test's listener is in the way.
func listenBackstore(t testing.TB) net.Listener {
	t.Helper()
	var err error
	for range 20 {
		var l net.Listener
		addr := fmt.Sprintf("127.77.%d.%d:7717", rand.IntN(250)+1, rand.IntN(250)+1)
		if l, err = net.Listen("tcp", addr); err == nil {
			return l
		}
	}
	t.Fatalf("no free loopback address for the backstore proxy: %v", err)
	return nil
}

// serveBackstore proxies l to the simulator at simURL until the test ends.
func serveBackstore(t testing.TB, l net.Listener, simURL string) {
	t.Helper()
	target, err := url.Parse(simURL)
	require.NoError(t, err)
	srv := &http.Server{Handler: httputil.NewSingleHostReverseProxy(target), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
}

type binaries struct{ flex, webhook, extender string }

// buildBinaries builds the driver with the loop-device stand-in initiator (this kernel has no
// iscsi_tcp; the flex tests build it the same way), the webhook and the extender.
func buildBinaries(t testing.TB) binaries {
	t.Helper()
	b := fixtures.Build(t, fixtures.Program{Name: "flex", Tags: "petfabric_standin"}, fixtures.Program{Name: "webhook"}, fixtures.Program{Name: "extender"})
	return binaries{flex: b["flex"], webhook: b["webhook"], extender: b["extender"]}
}

// startWebhook runs the built cmd/webhook as test/e2e's webhook tests run it (flags as the
// chart sets them) and registers it for StatefulSets, their scale and claims. A small copy of
// test/e2e's startWebhookProcess and registerWebhook, which live in that package's tests.
func startWebhook(t testing.TB, c *cluster.Cluster, bin string) {
	t.Helper()
	ca, err := testpki.NewCA("kubelet-e2e-webhook-ca")
	require.NoError(t, err)
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	certFile, keyFile, err := pair.WriteFiles(t.TempDir(), "tls")
	require.NoError(t, err)
	port, health := fixtures.FreePort(t), fixtures.FreePort(t)
	cmd := exec.Command(bin, "--kubeconfig="+c.Kubeconfig, fmt.Sprintf("--listen=127.0.0.1:%d", port),
		fmt.Sprintf("--health-listen=127.0.0.1:%d", health), "--tls-cert-file="+certFile, "--tls-key-file="+keyFile,
		"--cluster-id="+clusterID, "--lease-namespace="+releaseNS, "--identity=webhook-0")
	startProcess(t, c, "webhook", cmd)
	require.Eventually(t, func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", health)) //nolint:noctx // test probe
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 100*time.Millisecond, "webhook never ready")

	fail, sideEffects := admissionregistrationv1.Fail, admissionregistrationv1.SideEffectClassNoneOnDryRun
	hook := func(name, path, group string, ops []admissionregistrationv1.OperationType, resource string) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name:         name,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: ptr.To(fmt.Sprintf("https://127.0.0.1:%d%s", port, path)), CABundle: ca.CertPEM},
			Rules: []admissionregistrationv1.RuleWithOperations{{Operations: ops, Rule: admissionregistrationv1.Rule{
				APIGroups: []string{group}, APIVersions: []string{"v1"}, Resources: []string{resource},
			}}},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system", "kube-public"}},
			}},
			FailurePolicy: &fail, SideEffects: &sideEffects, AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](10),
		}
	}
	create, update := admissionregistrationv1.Create, admissionregistrationv1.Update
	_, err = c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(context.Background(), &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "petfabric"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			hook("statefulsets.petfabric.io", webhook.PathStatefulSets, "apps", []admissionregistrationv1.OperationType{create, update}, "statefulsets"),
			hook("scale.petfabric.io", webhook.PathScale, "apps", []admissionregistrationv1.OperationType{update}, "statefulsets/scale"),
			hook("claims.petfabric.io", webhook.PathClaims, "", []admissionregistrationv1.OperationType{create}, "persistentvolumeclaims"),
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	// The apiserver loads webhook configurations asynchronously: probe with a dry-run create.
	probe := fixtures.PetSet(appNS, "webhook-probe", 1, classXFS)
	var last string
	require.NoError(t, wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := c.Client.AppsV1().StatefulSets(appNS).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = fmt.Sprint(got.Spec.VolumeClaimTemplates[0].Annotations)
		return got.Spec.VolumeClaimTemplates[0].Annotations[mutate.AnnStatefulSet] == "webhook-probe", nil
	}), "the apiserver never called the webhook (last: %s)", last)
}

// startProcess runs cmd with its output in <cluster dir>/<name>.log, dying with the test binary;
// when the test ends it gets SIGTERM (SIGKILL after 30 s), and a failed test logs the log's tail.
func startProcess(t testing.TB, c *cluster.Cluster, name string, cmd *exec.Cmd) {
	t.Helper()
	logPath := filepath.Join(c.Dir, name+".log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s log (tail):\n%s", name, fixtures.Tail(string(b), 30))
		}
	})
}

// waitRunning waits until pod name is Running (with a UID other than notUID, for a re-created
// pet) and returns it.
func (e *env) waitRunning(t testing.TB, name string, notUID string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	err := wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		p, err := e.cs.CoreV1().Pods(appNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pod = p
		return string(p.UID) != notUID && p.Status.Phase == corev1.PodRunning, nil
	})
	if err != nil {
		t.Fatalf("pod %s not Running within %s (last: %s on %q)\nevents:\n%s", name, timeout, phase(pod), nodeOf(pod), e.events(t, name))
	}
	return pod
}

func phase(p *corev1.Pod) string {
	if p == nil {
		return "absent"
	}
	return string(p.Status.Phase)
}

func nodeOf(p *corev1.Pod) string {
	if p == nil {
		return ""
	}
	return p.Spec.NodeName
}

// events returns the events of a pod, one per line.
func (e *env) events(t testing.TB, pod string) string {
	t.Helper()
	list, err := e.cs.CoreV1().Events(appNS).List(e.ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, ev := range list.Items {
		fmt.Fprintf(&b, "%s %s: %s\n", ev.Reason, ev.Source.Host, ev.Message)
	}
	return b.String()
}

// deletePod deletes a pod (grace nil: its own) and waits until it is gone.
func (e *env) deletePod(t testing.TB, name string, grace *int64) {
	t.Helper()
	p, err := e.cs.CoreV1().Pods(appNS).Get(e.ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	require.NoError(t, e.cs.CoreV1().Pods(appNS).Delete(e.ctx, name, metav1.DeleteOptions{GracePeriodSeconds: grace}))
	require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := e.cs.CoreV1().Pods(appNS).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err) || (err == nil && got.UID != p.UID), nil
	}), "pod %s not deleted", name)
}

func (e *env) cordon(t testing.TB, node string, on bool) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"unschedulable":%t}}`, on)
	_, err := e.cs.CoreV1().Nodes().Patch(e.ctx, node, "application/merge-patch+json", []byte(patch), metav1.PatchOptions{})
	require.NoError(t, err)
}

// volumeDir is where kubelet had the driver mount the pod's claim volume (named by the PV).
func (e *env) volumeDir(t testing.TB, pod *corev1.Pod, claim string) string {
	t.Helper()
	pvc, err := e.cs.CoreV1().PersistentVolumeClaims(appNS).Get(e.ctx, claim, metav1.GetOptions{})
	require.NoError(t, err)
	return e.kubelets[pod.Spec.NodeName].PodVolumeDir(string(pod.UID), pluginDir, pvc.Spec.VolumeName)
}

// pv returns the PersistentVolume bound to claim.
func (e *env) pv(t testing.TB, claim string) *corev1.PersistentVolume {
	t.Helper()
	pvc, err := e.cs.CoreV1().PersistentVolumeClaims(appNS).Get(e.ctx, claim, metav1.GetOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, pvc.Spec.VolumeName, "claim %s not bound", claim)
	pv, err := e.cs.CoreV1().PersistentVolumes().Get(e.ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	require.NoError(t, err)
	return pv
}

// mountEntry is the last /proc/self/mountinfo entry at a mount point.
type mountEntry struct {
	ID     int
	FSType string
	Opts   []string
}

// mountOf returns the mountinfo entry at dir (nil when nothing is mounted there).
func mountOf(t testing.TB, dir string) *mountEntry {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	require.NoError(t, err)
	defer f.Close()
	var last *mountEntry
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 10 || fields[4] != dir {
			continue
		}
		var id int
		fmt.Sscanf(fields[0], "%d", &id)
		sep := 6
		for sep < len(fields) && fields[sep] != "-" {
			sep++
		}
		last = &mountEntry{ID: id, FSType: fields[sep+1], Opts: strings.Split(fields[5], ",")}
	}
	return last
}

// logEntry is one JSON line of the driver's log.
type logEntry struct {
	Time     time.Time `json:"time"`
	Msg      string    `json:"msg"`
	Verb     string    `json:"verb"`
	PID      int       `json:"pid"`
	Args     []string  `json:"args"`
	Status   string    `json:"status"`
	Message  string    `json:"message"`
	Duration int64     `json:"duration"` // ns
}

// driverLog parses node's driver log.
func (e *env) driverLog(t testing.TB, node string) []logEntry {
	t.Helper()
	var out []logEntry
	for _, line := range strings.Split(e.nodes[node].LogText(), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var le logEntry
		if json.Unmarshal([]byte(line), &le) == nil {
			out = append(out, le)
		}
	}
	return out
}

// call is one driver call kubelet made, with its options decoded (the driver's log redacts
// secret values) and its reply.
type call struct {
	At      time.Time
	Options map[string]string
	Reply   logEntry
}

// calls returns kubelet's calls of verb on node whose first argument is dir.
func (e *env) calls(t testing.TB, node, verb, dir string) []call {
	t.Helper()
	var out []call
	pending := map[int]int{} // pid → index in out
	for _, le := range e.driverLog(t, node) {
		switch {
		case le.Msg == "call" && le.Verb == verb && len(le.Args) > 0 && le.Args[0] == dir:
			c := call{At: le.Time}
			if len(le.Args) > 1 {
				require.NoError(t, json.Unmarshal([]byte(le.Args[1]), &c.Options))
			}
			pending[le.PID] = len(out)
			out = append(out, c)
		case le.Msg == "reply":
			if i, ok := pending[le.PID]; ok {
				out[i].Reply = le
				delete(pending, le.PID)
			}
		}
	}
	return out
}

// count returns how many entries of node's driver log have msg.
func (e *env) count(t testing.TB, node, msg string) int {
	t.Helper()
	n := 0
	for _, le := range e.driverLog(t, node) {
		if le.Msg == msg {
			n++
		}
	}
	return n
}

// kubeletLog returns the lines of node's kubelet log that contain any of words.
func (e *env) kubeletLog(t testing.TB, node string, words ...string) string {
	t.Helper()
	b, err := os.ReadFile(e.kubelets[node].LogPath)
	require.NoError(t, err)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		for _, w := range words {
			if strings.Contains(line, w) {
				out = append(out, line)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// aclRecorder wraps the simulator's exporter and records every ACL it sets, in order: the
// history the move and fence tests read.
type aclRecorder struct {
	inner fake.Exporter
	mu    sync.Mutex
	log   []aclChange
}

type aclChange struct {
	At         time.Time
	IQN        string
	Initiators []string
}

func (r *aclRecorder) Export(ctx context.Context, s fake.TargetSpec) error {
	r.record(s.IQN, s.Initiators)
	return r.inner.Export(ctx, s)
}

func (r *aclRecorder) SetACL(ctx context.Context, iqn string, allowAll bool, initiators []string) error {
	r.record(iqn, initiators)
	return r.inner.SetACL(ctx, iqn, allowAll, initiators)
}

func (r *aclRecorder) Unexport(ctx context.Context, iqn string) error {
	r.record(iqn, nil)
	return r.inner.Unexport(ctx, iqn)
}

func (r *aclRecorder) Grow(ctx context.Context, uuid string, size int64) error {
	return r.inner.Grow(ctx, uuid, size)
}

func (r *aclRecorder) Destroy(ctx context.Context, uuid string) error {
	return r.inner.Destroy(ctx, uuid)
}

func (r *aclRecorder) record(iqn string, initiators []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, aclChange{At: time.Now(), IQN: iqn, Initiators: append([]string(nil), initiators...)})
}

// history returns the ACL changes of target iqn since t0.
func (r *aclRecorder) history(iqn string, since time.Time) []aclChange {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []aclChange
	for _, c := range r.log {
		if c.IQN == iqn && !c.At.Before(since) {
			out = append(out, c)
		}
	}
	return out
}

// Package faults runs petfabric through faults on one real control plane (test/cluster, kwok
// nodes) with the built programs as host processes: two cmd/webhook replicas sharing the
// reconcile loop's Lease (registered with failurePolicy Ignore), cmd/extender in
// kube-scheduler's path over mTLS (not ignorable) and one `flex agent` per node probing a real
// tgtd portal. Each fault is injected by killing or restarting a process, and each ends in the
// steady state: every claim Bound to its own PV, every pet Running, no PV beyond the pets'.
// TestDateraStormDuringMounts runs apart, on real kubelet nodes (the Datera simulator answers
// 503 to every call while kubelet mounts the pets' volumes).
package faults

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	schedconfigv1 "k8s.io/kube-scheduler/config/v1"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/iscsi/probetest"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/pkg/reconcile"
	"github.com/petfabric/petfabric/pkg/webhook"
	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/fixtures"
)

const (
	releaseNS   = "petfabric-system"
	appNS       = "pets"
	credsSecret = "datera-creds"
	class       = "datera-gold"
	// backstore is the StorageClass's backstoreServer; the agents' backstores file maps it to
	// tgtd's portal. No Datera serves it: kwok nodes mount nothing, and the reconcile loop's
	// fence checks, which would ask Datera, fail and retry without holding anything up here.
	backstore = "127.0.0.1:7717"
	clusterID = "faults"
	// maxReportTTL is the extender's --max-report-ttl: the agents declare 30s, the extender
	// caps it, so a dead agent's report goes stale this long after its last renewal.
	maxReportTTL = 3 * time.Second
	// extenderTimeout is the scheduler's httpTimeout for the extender.
	extenderTimeout = 2 * time.Second
)

var nodes = []string{"node-a", "node-b", "node-c"}

// env is the shared control plane with petfabric's programs running as processes.
type env struct {
	c   *cluster.Cluster
	cs  kubernetes.Interface
	ctx context.Context

	webhooks     map[string]*proc // by identity
	webhookHooks string           // the registered (admission) webhook's identity
	extender     *proc
	extenderAddr string
	agents       map[string]*proc // by node
}

type binaries struct{ webhook, extender, flex string }

func buildBinaries(t testing.TB) binaries {
	t.Helper()
	b := fixtures.Build(t, fixtures.Program{Name: "webhook"}, fixtures.Program{Name: "extender"}, fixtures.Program{Name: "flex"})
	return binaries{webhook: b["webhook"], extender: b["extender"], flex: b["flex"]}
}

// newEnv starts tgtd, the control plane, the extender, one agent per node and two webhook
// replicas (webhook-0 registered for StatefulSet admission, webhook-1 a loop replica only).
func newEnv(t *testing.T) *env {
	t.Helper()
	cluster.RequireBinaries(t)
	tgt := probetest.Start(t)
	initiator := func(node string) string { return "iqn.2024-01.io.petfabric.faults:" + node }
	var inits []string
	for _, n := range nodes {
		inits = append(inits, initiator(n))
	}
	tgt.AddTarget(probetest.TargetOptions{IQN: "iqn.2024-01.io.petfabric.faults:probe", Initiators: inits})
	bins := buildBinaries(t)

	ca, err := testpki.NewCA("petfabric-faults-ca")
	require.NoError(t, err)
	serving, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	schedClient, err := ca.Client("system:kube-scheduler")
	require.NoError(t, err)
	pki := t.TempDir()
	certFile, keyFile, err := serving.WriteFiles(pki, "serving")
	require.NoError(t, err)
	caFile := filepath.Join(pki, "ca.crt")
	require.NoError(t, os.WriteFile(caFile, ca.CertPEM, 0o600))

	e := &env{ctx: context.Background(), webhooks: map[string]*proc{}, agents: map[string]*proc{}}
	e.extenderAddr = fmt.Sprintf("127.0.0.1:%d", fixtures.FreePort(t))
	var specs []cluster.NodeSpec
	for _, n := range nodes {
		specs = append(specs, cluster.NodeSpec{Name: n})
	}
	e.c = cluster.Start(t, cluster.Options{
		Nodes: specs,
		Scheduler: &schedconfigv1.KubeSchedulerConfiguration{Extenders: []schedconfigv1.Extender{{
			URLPrefix: "https://" + e.extenderAddr, FilterVerb: "filter", PrioritizeVerb: "prioritize",
			Weight: 5, EnableHTTPS: true, NodeCacheCapable: true,
			// As the chart sets it (charts/petfabric/values.yaml extender.ignorable): a pet
			// waits while the extender cannot answer.
			Ignorable:   false,
			HTTPTimeout: metav1.Duration{Duration: extenderTimeout},
			TLSConfig:   &schedconfigv1.ExtenderTLSConfig{CAData: ca.CertPEM, CertData: schedClient.CertPEM, KeyData: schedClient.KeyPEM},
		}}},
	})
	e.cs = e.c.Client
	for _, ns := range []string{releaseNS, appNS} {
		_, err := e.cs.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	_, err = e.cs.CoreV1().Secrets(releaseNS).Create(e.ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: credsSecret}, Type: corev1.SecretType(mutate.Driver),
		StringData: map[string]string{"username": "admin", "password": "password"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = e.cs.StorageV1().StorageClasses().Create(e.ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: class}, Provisioner: mutate.Provisioner,
		Parameters:    map[string]string{"replica": "1", "backstoreServer": backstore, "secretName": credsSecret, "secretNamespace": releaseNS},
		ReclaimPolicy: ptr.To(corev1.PersistentVolumeReclaimRetain), VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	// The extender, reading the agents' reports with a short cap on their freshness.
	health := fixtures.FreePort(t)
	e.extender = newProc(t, e.c.Dir, "extender", bins.extender, "--kubeconfig="+e.c.Kubeconfig, "--namespace="+releaseNS,
		"--listen="+e.extenderAddr, fmt.Sprintf("--health-listen=127.0.0.1:%d", health),
		"--tls-cert-file="+certFile, "--tls-key-file="+keyFile, "--client-ca-file="+caFile,
		"--max-report-ttl="+maxReportTTL.String())
	e.extender.readyURL = fmt.Sprintf("http://127.0.0.1:%d/readyz", health)
	e.extender.start(t)

	// One agent per node, probing tgtd's portal for the backstore.
	bsFile := filepath.Join(pki, "backstores.json")
	require.NoError(t, os.WriteFile(bsFile, []byte(`{"backstores": {"`+backstore+`": {"portals": ["`+tgt.Portal+`"]}}}`), 0o600))
	for _, n := range nodes {
		a := newProc(t, e.c.Dir, "agent-"+n, bins.flex, "agent", "--kubeconfig="+e.c.Kubeconfig, "--node="+n,
			"--namespace="+releaseNS, "--initiator="+initiator(n), "--backstores="+bsFile,
			"--state-dir="+filepath.Join(t.TempDir(), "state"), "--interval=1s", "--ttl=30s",
			fmt.Sprintf("--metrics-listen=127.0.0.1:%d", fixtures.FreePort(t)))
		a.start(t)
		e.agents[n] = a
	}

	// Two webhook replicas; the reconcile loop runs in the Lease holder.
	var hookPort int
	for i, id := range []string{"webhook-0", "webhook-1"} {
		port, health := fixtures.FreePort(t), fixtures.FreePort(t)
		if i == 0 {
			hookPort = port
		}
		w := newProc(t, e.c.Dir, id, bins.webhook, "--kubeconfig="+e.c.Kubeconfig,
			fmt.Sprintf("--listen=127.0.0.1:%d", port), fmt.Sprintf("--health-listen=127.0.0.1:%d", health),
			"--tls-cert-file="+certFile, "--tls-key-file="+keyFile, "--cluster-id="+clusterID,
			"--lease-namespace="+releaseNS, "--identity="+id, "--resync=10s")
		w.readyURL = fmt.Sprintf("http://127.0.0.1:%d/readyz", health)
		w.start(t)
		e.webhooks[id] = w
	}
	e.webhookHooks = "webhook-0"
	e.register(t, fmt.Sprintf("https://127.0.0.1:%d", hookPort), ca.CertPEM)
	for _, n := range nodes {
		e.waitReport(t, n, true, 30*time.Second)
	}
	return e
}

// register registers webhook-0 for StatefulSet create/update under failurePolicy Ignore, and
// waits until the apiserver calls it. Scale (the statefulsets/scale subresource) is not
// registered: scale-ups are the reconcile loop's work (missed ordinals).
func (e *env) register(t *testing.T, url string, caPEM []byte) {
	t.Helper()
	ignore, sideEffects := admissionregistrationv1.Ignore, admissionregistrationv1.SideEffectClassNoneOnDryRun
	_, err := e.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(e.ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "petfabric"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:         "statefulsets.petfabric.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: ptr.To(url + webhook.PathStatefulSets), CABundle: caPEM},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{"apps"}, APIVersions: []string{"v1"}, Resources: []string{"statefulsets"}},
			}},
			FailurePolicy: &ignore, SideEffects: &sideEffects, AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](5),
		}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	e.waitAdmission(t)
}

// waitAdmission waits until a dry-run StatefulSet create comes back mutated.
func (e *env) waitAdmission(t *testing.T) {
	t.Helper()
	probe := fixtures.PetSet(appNS, "webhook-probe", 1, class)
	require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := e.cs.AppsV1().StatefulSets(appNS).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil && got.Spec.VolumeClaimTemplates[0].Annotations[mutate.AnnStatefulSet] == "webhook-probe", nil
	}), "the apiserver never called the webhook")
}

// leader returns the reconcile Lease's holder ("" when none).
func (e *env) leader(ctx context.Context) string {
	l, err := e.cs.CoordinationV1().Leases(releaseNS).Get(ctx, reconcile.DefaultLeaseName, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	return ptr.Deref(l.Spec.HolderIdentity, "")
}

// waitReport waits until node's report Lease is fresh (renewed within maxReportTTL) or stale
// (not renewed for maxReportTTL and a second more: the extender counts from when it saw the
// renewal, a little after renewTime).
func (e *env) waitReport(t *testing.T, node string, fresh bool, timeout time.Duration) time.Time {
	t.Helper()
	var renewed time.Time
	err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		l, err := e.cs.CoordinationV1().Leases(releaseNS).Get(ctx, placement.LeaseName(node), metav1.GetOptions{})
		if err != nil || l.Spec.RenewTime == nil {
			return false, nil
		}
		renewed = l.Spec.RenewTime.Time
		if fresh {
			return time.Since(renewed) < maxReportTTL, nil
		}
		return time.Since(renewed) > maxReportTTL+time.Second, nil
	})
	require.NoError(t, err, "report of %s not fresh=%t within %s (last renewal %s)", node, fresh, timeout, renewed)
	return renewed
}

// scale sets the set's replicas through the scale subresource (as kubectl scale does).
func (e *env) scale(t *testing.T, name string, n int32) {
	t.Helper()
	s, err := e.cs.AppsV1().StatefulSets(appNS).GetScale(e.ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	s.Spec.Replicas = n
	_, err = e.cs.AppsV1().StatefulSets(appNS).UpdateScale(e.ctx, name, s, metav1.UpdateOptions{})
	require.NoError(t, err)
}

// steady waits until the set has n pets Running, each claim Bound to its own petfabric PV
// (the name the webhook and loop derive), no other petfabric PV exists, and returns the pets
// by name.
func (e *env) steady(t *testing.T, name string, n int, timeout time.Duration) map[string]corev1.Pod {
	t.Helper()
	var last string
	pods := map[string]corev1.Pod{}
	err := wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		pl, err := e.cs.CoreV1().Pods(appNS).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		pods = map[string]corev1.Pod{}
		running := 0
		for _, p := range pl.Items {
			pods[p.Name] = p
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				running++
			}
		}
		if running != n || len(pl.Items) != n {
			last = fmt.Sprintf("%d of %d pets Running (%d pods)", running, n, len(pl.Items))
			return false, nil
		}
		for i := range n {
			claim := fmt.Sprintf("data-%s-%d", name, i)
			pvc, err := e.cs.CoreV1().PersistentVolumeClaims(appNS).Get(ctx, claim, metav1.GetOptions{})
			if err != nil || pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName != mutate.PVName(appNS, claim) {
				last = fmt.Sprintf("claim %s not Bound to %s", claim, mutate.PVName(appNS, claim))
				return false, nil
			}
		}
		pvs, err := e.cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{LabelSelector: mutate.LabelManagedBy + "=" + mutate.ManagedByValue})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		if len(pvs.Items) != n {
			last = fmt.Sprintf("%d petfabric PVs for %d pets", len(pvs.Items), n)
			return false, nil
		}
		for _, pv := range pvs.Items {
			if pv.Spec.ClaimRef == nil || pv.Name != mutate.PVName(appNS, pv.Spec.ClaimRef.Name) || pv.Status.Phase != corev1.VolumeBound {
				last = fmt.Sprintf("PV %s not Bound to its own claim", pv.Name)
				return false, nil
			}
		}
		return true, nil
	})
	require.NoError(t, err, "set %s not steady with %d pets within %s: %s", name, n, timeout, last)
	return pods
}

// proc is one of petfabric's programs run as a host process that a fault may kill and the
// test restart. Each run logs to <name>-<run>.log in the cluster directory.
type proc struct {
	name, bin string
	args      []string
	dir       string
	readyURL  string // polled after start when set

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	runs int
}

func newProc(t *testing.T, dir, name, bin string, args ...string) *proc {
	p := &proc{name: name, bin: bin, args: args, dir: dir}
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath())
			t.Logf("%s log (tail):\n%s", p.name, fixtures.Tail(string(b), 25))
		}
	})
	return p
}

func (p *proc) logPath() string {
	return filepath.Join(p.dir, fmt.Sprintf("%s-%d.log", p.name, p.runs))
}

// start runs the program and waits for readyURL (when set).
func (p *proc) start(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	p.runs++
	f, err := os.Create(p.logPath())
	require.NoError(t, err)
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	if p.readyURL == "" {
		return
	}
	require.Eventually(t, func() bool {
		select {
		case <-done:
			return false
		default:
		}
		return httpStatus(p.readyURL) == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "%s never ready", p.name)
}

// running reports whether the current run is alive.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill ends the current run with SIGKILL (no clean shutdown: no Lease released, no
// connection closed politely) and waits for it.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	require.NotNil(t, cmd, "%s never started", p.name)
	_ = cmd.Process.Kill()
	<-done
}

// stop ends the current run with SIGTERM (SIGKILL after 20s).
func (p *proc) stop(t *testing.T) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Errorf("%s did not exit within 20s of SIGTERM", p.name)
	}
}

func httpStatus(url string) int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url) //nolint:noctx // test probe
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Package extendere2e runs petfabric's scheduler extender against a real control plane
// (test/cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler v1.36.3 and
// kwok nodes). The real kube-scheduler is configured to call the extender over HTTPS with
// client certificates; the extender runs in this process (pkg/extender.Run, as
// cmd/extender runs it). Node reports are written as Leases by the test (the agent that
// normally writes them is tested on its own, and against this control plane in
// TestAgentReportReachesScheduler).
package extendere2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	schedconfigv1 "k8s.io/kube-scheduler/config/v1"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/fixtures"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

const (
	releaseNS = "petfabric-system"
	appNS     = "shop"
	backstore = "172.16.0.10:7717"
	portalA   = "10.1.1.5:3260"
	portalB   = "10.1.1.6:3260"
	class     = "datera-e2e"
)

// env is a control plane whose kube-scheduler calls an in-process extender.
type env struct {
	c         *cluster.Cluster
	client    kubernetes.Interface
	ctx       context.Context
	backstore string // backstoreServer of the PVs volume() creates
	health    string // the extender's health port (readyz, metrics)
}

// start binds the extender's port first (the scheduler configuration must name it), starts
// the control plane, then serves the extender on that listener with the cluster's client.
func start(t *testing.T, nodeCacheCapable bool, nodes ...string) *env {
	t.Helper()
	return startWith(t, runInProcess, nodeCacheCapable, nodes...)
}

// extenderRunner starts the extender for a cluster on the given listeners and stops it when
// the test ends.
type extenderRunner func(t *testing.T, c *cluster.Cluster, api, health net.Listener, certFile, keyFile, caFile string)

func startWith(t *testing.T, run extenderRunner, nodeCacheCapable bool, nodes ...string) *env {
	t.Helper()
	specs := make([]cluster.NodeSpec, len(nodes))
	for i, n := range nodes {
		specs[i] = cluster.NodeSpec{Name: n}
	}
	return startNodes(t, run, nodeCacheCapable, nil, specs)
}

// startNodes is startWith for nodes given whole, with the scheduler's
// percentageOfNodesToScore when percentage is not nil.
func startNodes(t *testing.T, run extenderRunner, nodeCacheCapable bool, percentage *int32, specs []cluster.NodeSpec) *env {
	t.Helper()
	cluster.RequireBinaries(t)
	ca, err := testpki.NewCA("petfabric-extender-e2e-ca")
	require.NoError(t, err)
	serving, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	clientPair, err := ca.Client("system:kube-scheduler")
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile, err := serving.WriteFiles(dir, "extender")
	require.NoError(t, err)
	caFile := filepath.Join(dir, "client-ca.crt")
	require.NoError(t, os.WriteFile(caFile, ca.CertPEM, 0o600))

	api, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	health, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)

	var kcmFlags []string
	if len(specs) > 50 {
		// Lifting the not-ready taint is one write per node, at the controller-manager's
		// default 20 requests a second.
		kcmFlags = []string{"--kube-api-qps=300", "--kube-api-burst=600"}
	}
	c := cluster.Start(t, cluster.Options{
		Nodes: specs, ExtraControllerManagerFlags: kcmFlags,
		Scheduler: &schedconfigv1.KubeSchedulerConfiguration{PercentageOfNodesToScore: percentage, Extenders: []schedconfigv1.Extender{{
			URLPrefix:        "https://" + api.Addr().String(),
			FilterVerb:       "filter",
			PrioritizeVerb:   "prioritize",
			Weight:           1,
			EnableHTTPS:      true,
			NodeCacheCapable: nodeCacheCapable,
			Ignorable:        false,
			HTTPTimeout:      metav1.Duration{Duration: 5 * time.Second},
			TLSConfig: &schedconfigv1.ExtenderTLSConfig{
				CAData: ca.CertPEM, CertData: clientPair.CertPEM, KeyData: clientPair.KeyPEM,
			},
		}}},
	})

	run(t, c, api, health, certFile, keyFile, caFile)
	e := &env{c: c, client: c.Client, ctx: context.Background(), backstore: backstore, health: health.Addr().String()}
	require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		resp, err := httpGet("http://" + health.Addr().String() + "/readyz")
		return err == nil && resp == "ok\n", nil
	}), "extender never became ready")

	for _, ns := range []string{releaseNS, appNS} {
		_, err := e.client.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		require.NoError(t, cluster.IgnoreAlreadyExists(err))
	}
	_, err = e.client.StorageV1().StorageClasses().Create(e.ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: class}, Provisioner: "petfabric.io/datera",
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	return e
}

// report writes (creates or replaces) a node's report Lease, renewed `ago` before now.
func (e *env) report(t *testing.T, node string, portals map[string]placement.PortalReport, ago, ttl time.Duration, attached ...string) {
	t.Helper()
	if attached == nil {
		attached = []string{}
	}
	r := &placement.Report{Version: placement.ReportVersion, Initiator: "iqn.2024-01.io.petfabric.e2e:" + node,
		ProbedAt: time.Now().Add(-ago), Attached: attached,
		Backstores: map[string]placement.BackstoreReport{backstore: {Portals: portals}}}
	enc, err := r.Encode()
	require.NoError(t, err)
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: placement.LeaseName(node), Namespace: releaseNS,
			Labels: map[string]string{placement.LeaseManagedByLabel: placement.LeaseManagedByValue,
				placement.LeaseComponentLabel: placement.LeaseComponentValue},
			Annotations: map[string]string{placement.ReportAnnotation: enc}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node), LeaseDurationSeconds: ptr.To(int32(ttl / time.Second)),
			RenewTime: &metav1.MicroTime{Time: time.Now().Add(-ago)}},
	}
	leases := e.client.CoordinationV1().Leases(releaseNS)
	cur, err := leases.Get(e.ctx, l.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = leases.Create(e.ctx, l, metav1.CreateOptions{})
	case err == nil:
		l.ResourceVersion = cur.ResourceVersion
		_, err = leases.Update(e.ctx, l, metav1.UpdateOptions{})
	}
	require.NoError(t, err)
}

var (
	reachable   = map[string]placement.PortalReport{portalA: {OK: true, RTTMicros: 180}, portalB: {OK: true, RTTMicros: 210}}
	unreachable = map[string]placement.PortalReport{portalA: {Error: "connection refused"}, portalB: {OK: true, RTTMicros: 200}}
)

// volume creates a Datera PV pre-bound to appNS/claim and, unless it is a StatefulSet
// claim the controller will create, the claim itself.
func (e *env) volume(t *testing.T, claim, volumeID string, pet *placement.Pet, createClaim bool) {
	t.Helper()
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "datera-" + appNS + "-" + claim, Labels: map[string]string{"app.kubernetes.io/managed-by": "petfabric"}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			ClaimRef:                      &corev1.ObjectReference{Namespace: appNS, Name: claim},
			StorageClassName:              class,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource: corev1.PersistentVolumeSource{FlexVolume: &corev1.FlexPersistentVolumeSource{
				Driver: placement.FlexDriver, FSType: "xfs",
				Options: map[string]string{pvoptions.OptVolumeID: volumeID, pvoptions.OptBackstoreServer: e.backstore, "size": "1", "replica": "3"},
			}},
		},
	}
	if pet != nil {
		pv.Labels[placement.LabelStatefulSet] = pet.StatefulSet
		pv.Labels[placement.LabelOrdinal] = fmt.Sprint(pet.Ordinal)
	}
	_, err := e.client.CoreV1().PersistentVolumes().Create(e.ctx, pv, metav1.CreateOptions{})
	require.NoError(t, err)
	if createClaim {
		_, err := e.client.CoreV1().PersistentVolumeClaims(appNS).Create(e.ctx, claimFor(claim), metav1.CreateOptions{})
		require.NoError(t, err)
	}
}

func claimFor(name string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: appNS},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: ptr.To(class),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
}

func (e *env) pod(t *testing.T, name, claim string) {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: appNS},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "busybox", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Volumes:    []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}},
		},
	}
	_, err := e.client.CoreV1().Pods(appNS).Create(e.ctx, p, metav1.CreateOptions{})
	require.NoError(t, err)
}

// touchNode updates a node label. kube-scheduler retries a pod an extender rejected on any
// cluster event (kubernetes#122019), but a Lease is not one it watches; node heartbeats are
// what wake it in a real cluster. The test makes that event happen at once.
func (e *env) touchNode(t *testing.T, node string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{"petfabric.test/touched":"%d"}}}`, time.Now().UnixNano())
	_, err := e.client.CoreV1().Nodes().Patch(e.ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	require.NoError(t, err)
}

// waitScheduled waits until the pod is bound and returns its node.
func (e *env) waitScheduled(t *testing.T, name string) string {
	t.Helper()
	var node string
	err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := e.client.CoreV1().Pods(appNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		node = p.Spec.NodeName
		return node != "", nil
	})
	require.NoError(t, err, "pod %s never scheduled; events: %s", name, e.events(t, name))
	return node
}

// failedScheduling waits for a FailedScheduling event on the pod containing every want.
func (e *env) failedScheduling(t *testing.T, name string, want ...string) string {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		last = e.events(t, name)
		for _, w := range want {
			if !strings.Contains(last, w) {
				return false, nil
			}
		}
		return true, nil
	})
	require.NoError(t, err, "pod %s: no FailedScheduling event with %q; events:\n%s", name, want, last)
	for _, line := range strings.Split(last, "\n") {
		if strings.Contains(line, want[0]) {
			return line
		}
	}
	return last
}

func (e *env) events(t *testing.T, pod string) string {
	t.Helper()
	evs, err := e.client.CoreV1().Events(appNS).List(e.ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.name=" + pod + ",reason=FailedScheduling",
	})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, ev := range evs.Items {
		b.WriteString(ev.Message)
		b.WriteString("\n")
	}
	return b.String()
}

func (e *env) requireUnscheduled(t *testing.T, name string) {
	t.Helper()
	p, err := e.client.CoreV1().Pods(appNS).Get(e.ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	require.Empty(t, p.Spec.NodeName, "pod %s must not be scheduled", name)
}

func statefulSet(name string, replicas int32) *appsv1.StatefulSet {
	labels := map[string]string{"app": name}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: appNS},
		Spec: appsv1.StatefulSetSpec{
			Replicas: &replicas, ServiceName: name,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox",
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}}},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec:       claimFor("data").Spec,
			}},
		},
	}
}

// TestExtenderPlacesPets is the four-node scenario, once per nodeCacheCapable mode:
// node good reports reachable portals; node noreport has no report; node unreachable
// reports a refused portal; node stale stopped renewing its report.
func TestExtenderPlacesPets(t *testing.T) {
	for _, mode := range []struct {
		name      string
		nodeNames bool
	}{{"node names", true}, {"full Node objects", false}} {
		t.Run(mode.name, func(t *testing.T) {
			e := start(t, mode.nodeNames, "good", "noreport", "unreachable", "stale")
			const hour = time.Hour
			e.report(t, "unreachable", unreachable, 2*time.Second, hour)
			// The extender judges freshness by when it saw a renewal, never by renewTime:
			// stale's one report goes stale a second after it was written.
			e.report(t, "stale", reachable, 5*time.Minute, time.Second)
			time.Sleep(2 * time.Second)

			// Pets: PVs pre-bound to the claims the StatefulSet controller will create.
			for i := range 2 {
				e.volume(t, fmt.Sprintf("data-web-%d", i), fmt.Sprintf("pf-web-%d", i), &placement.Pet{Namespace: appNS, StatefulSet: "web", Ordinal: i}, false)
			}
			_, err := e.client.AppsV1().StatefulSets(appNS).Create(e.ctx, statefulSet("web", 2), metav1.CreateOptions{})
			require.NoError(t, err)

			// While good has no report either, web-0 cannot go anywhere, and the event
			// counts the nodes per reason (the scheduler counts the extender's identical
			// per-node messages).
			msg := e.failedScheduling(t, "web-0",
				"0/4 nodes are available",
				"2 no reachability report from the petfabric node agent (no petfabric-node-<node> Lease)",
				"1 cannot reach portal 10.1.1.5:3260 of backstore 172.16.0.10:7717 (connection refused)",
				"1 reachability report is stale (no renewal seen within its 1s validity)",
			)
			t.Logf("FailedScheduling: %s", msg)
			e.requireUnscheduled(t, "web-0")

			// good's agent reports: the pets land there, and only there.
			e.report(t, "good", reachable, 0, hour)
			e.touchNode(t, "good")
			require.Equal(t, "good", e.waitScheduled(t, "web-0"))
			require.Equal(t, "good", e.waitScheduled(t, "web-1"))

			// A ReadWriteOnce volume still attached to a live node keeps its new pod off
			// every other node. noreport comes alive, holds pf-held, but cannot reach a
			// portal itself, so no node fits.
			e.volume(t, "held", "pf-held", nil, true)
			e.report(t, "noreport", unreachable, 0, hour, "pf-held")
			e.pod(t, "mover", "held")
			msg = e.failedScheduling(t, "mover",
				"1 ReadWriteOnce volume pf-held (claim shop/held) is still attached to node noreport",
				"2 cannot reach portal 10.1.1.5:3260 of backstore 172.16.0.10:7717 (connection refused)",
			)
			t.Logf("FailedScheduling: %s", msg)
			e.requireUnscheduled(t, "mover")
			// The driver on noreport detaches it: the pod may go to good.
			e.report(t, "noreport", unreachable, 0, hour)
			e.touchNode(t, "good")
			require.Equal(t, "good", e.waitScheduled(t, "mover"))

			// A report going stale removes its node: good's agent stops renewing.
			e.report(t, "good", reachable, 0, 2*time.Second)
			time.Sleep(3 * time.Second)
			e.volume(t, "late", "pf-late", nil, true)
			e.pod(t, "late", "late")
			msg = e.failedScheduling(t, "late", "1 reachability report is stale (no renewal seen within its 2s validity)")
			t.Logf("FailedScheduling: %s", msg)
			e.requireUnscheduled(t, "late")

			// Pods without Datera volumes are not affected: the fast path lets them go
			// to any node, reports or not.
			plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: appNS},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox"}}}}
			_, err = e.client.CoreV1().Pods(appNS).Create(e.ctx, plain, metav1.CreateOptions{})
			require.NoError(t, err)
			e.waitScheduled(t, "plain")
		})
	}
}

// metric returns the value of one sample (name with its labels, as exposed) the extender
// serves on its health port.
func (e *env) metric(t *testing.T, sample string) float64 {
	t.Helper()
	return fixtures.MetricSample(t, "http://"+e.health+"/metrics", sample)
}

var httpClient = http.Client{Timeout: 2 * time.Second}

func httpGet(url string) (string, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// runInProcess runs pkg/extender.Run (what cmd/extender runs) in this process, with the
// default --max-report-ttl.
func runInProcess(t *testing.T, c *cluster.Cluster, api, health net.Listener, certFile, keyFile, caFile string) {
	t.Helper()
	runWithMaxReportTTL(0)(t, c, api, health, certFile, keyFile, caFile)
}

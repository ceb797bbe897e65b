// Package scale creates 100 Parallel pets on 200 kwok nodes twice on one control plane (same
// controller-manager and scheduler settings), timing create StatefulSet → every claim Bound and
// every pod Running:
//   - petfabric, configured as the chart configures it by default: the chart's rendered
//     StorageClass (volumeBindingMode WaitForFirstConsumer) and webhook configuration (claim,
//     StatefulSet and pod hooks, the scheduling gate), the webhook with its reconcile loop and
//     --managed-resource, and the extender in kube-scheduler's path for the pods requesting that
//     resource (managedResources, ignoredByScheduler);
//   - static: the baseline, 100 PVs made by hand (pre-bound to their claims) of a
//     no-provisioner class, in a namespace the webhook never sees; its pods request no
//     managed resource, so the scheduler does not call the extender for them.
//
// TestScale100 asserts correctness and logs both times and their ratio, asserting only a
// generous bound on it (≤ 2.0: a timed ratio on a shared 2-core machine is noisy);
// BenchmarkScale100 reports the times and the ratio as metrics.
package scale

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	schedconfigv1 "k8s.io/kube-scheduler/config/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/cachetransform"
	"github.com/petfabric/petfabric/pkg/extender"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/pkg/reconcile"
	"github.com/petfabric/petfabric/pkg/serving"
	"github.com/petfabric/petfabric/pkg/webhook"
	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/e2e/extenderenv"
	"github.com/petfabric/petfabric/test/helmchart"
)

const (
	pets, nodes = 100, 200
	// unreachable nodes (the last ones) report the backstore's portals failing: petfabric's
	// pets must avoid them (the chance that 100 pets placed at random miss 20 of 200 nodes is
	// below 1e-4).
	unreachable = 20
	backstore   = "127.0.0.1:7717"
	sysNS       = "petfabric-system"
	dateraClass = "datera-scale"
	staticClass = "static-scale"
	managedRes  = "petfabric.io/datera"
	optOutLabel = "petfabric.io/webhook" // the chart's webhook.optOutLabel; value "disabled"
)

// outcome is one mode's run.
type outcome struct {
	ns               string
	bound, running   time.Duration
	failedScheduling map[string]int // FailedScheduling message → events (summed counts)
	failedCount      int            // FailedScheduling events, summed counts
	// extenderFilters is the number of filter calls the extender answered during the run.
	extenderFilters int
}

type env struct {
	e  *extenderenv.Env
	cs kubernetes.Interface
}

func start(tb testing.TB) *env {
	tb.Helper()
	specs := make([]cluster.NodeSpec, nodes)
	for i := range specs {
		specs[i] = cluster.NodeSpec{Name: fmt.Sprintf("node-%d", i)}
	}
	// Render first: a chart error fails before the control plane's minute of start-up.
	ch := renderChart(tb)
	e := extenderenv.Start(tb, extenderenv.Options{
		Nodes: specs, Namespace: sysNS, Requeue: extender.RequeueConfig{Enabled: true},
		ManagedResources: []schedconfigv1.ExtenderManagedResource{{Name: managedRes, IgnoredByScheduler: true}},
	})
	ctx := context.Background()
	good := map[string]placement.BackstoreReport{backstore: {Portals: map[string]placement.PortalReport{
		"127.0.0.1:3260": {OK: true, RTTMicros: 150}, "127.0.0.2:3260": {OK: true, RTTMicros: 170}}}}
	bad := map[string]placement.BackstoreReport{backstore: {Portals: map[string]placement.PortalReport{
		"127.0.0.1:3260": {Error: "no route to host"}, "127.0.0.2:3260": {Error: "no route to host"}}}}
	for i := range nodes {
		r := good
		if i >= nodes-unreachable {
			r = bad
		}
		require.NoError(tb, e.WriteReport(ctx, fmt.Sprintf("node-%d", i), r, time.Hour))
	}
	s := &env{e: e, cs: e.Client}
	s.installPetfabric(ctx, tb, ch)
	_, err := s.cs.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: staticClass}, Provisioner: "kubernetes.io/no-provisioner",
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}, metav1.CreateOptions{})
	require.NoError(tb, err)
	return s
}

// chart is the chart's rendering for this test and what it needs: the webhook's listener
// (its URL is rendered into the webhook configuration) and serving pair.
type chart struct {
	ca                *testpki.CA
	listener          net.Listener
	certFile, keyFile string
	webhooks          admissionregistrationv1.MutatingWebhookConfiguration
	class             storagev1.StorageClass
}

// renderChart renders the chart with only what a kwok cluster needs besides its defaults: the
// webhook's URL (no Service network) and CA, the Datera credentials' Secret name, and one
// StorageClass with only the required values.
func renderChart(tb testing.TB) *chart {
	tb.Helper()
	ca, err := testpki.NewCA("petfabric-scale-ca")
	require.NoError(tb, err)
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")}, "localhost")
	require.NoError(tb, err)
	ch := &chart{ca: ca}
	ch.certFile, ch.keyFile, err = pair.WriteFiles(tb.TempDir(), "tls")
	require.NoError(tb, err)
	ch.listener, err = net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	values, err := yaml.Marshal(map[string]any{
		"webhook":        map[string]any{"url": "https://" + ch.listener.Addr().String()},
		"tls":            map[string]any{"caBundle": string(ca.CertPEM), "extenderSecretName": "petfabric-extender-serving"},
		"datera":         map[string]any{"existingSecret": "datera-creds"},
		"storageClasses": []any{map[string]any{"name": dateraClass, "backstoreServer": backstore}},
	})
	require.NoError(tb, err)
	objs := helmchart.Objects(tb, helmchart.Render(tb, string(values)))
	require.NoError(tb, helmchart.Decode(helmchart.Find(objs, "MutatingWebhookConfiguration", helmchart.Release), &ch.webhooks))
	require.NoError(tb, helmchart.Decode(helmchart.Find(objs, "StorageClass", dateraClass), &ch.class))
	require.Equal(tb, storagev1.VolumeBindingWaitForFirstConsumer, *ch.class.VolumeBindingMode, "the chart's default binding mode")
	var hooks []string
	for _, h := range ch.webhooks.Webhooks {
		hooks = append(hooks, h.Name)
	}
	require.Contains(tb, hooks, "pods.petfabric.io", "the chart's default configuration gates pets")
	return ch
}

// installPetfabric runs the webhook on ch's listener as cmd/webhook runs with the chart's
// defaults (reconcile loop, --scheduling-gate, --managed-resource), applies the chart's
// webhook configuration and StorageClass, and waits until the apiserver calls the webhook.
func (s *env) installPetfabric(ctx context.Context, tb testing.TB, ch *chart) {
	tb.Helper()
	c := s.e.C
	logFile, err := os.Create(filepath.Join(c.Dir, "webhook.log"))
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = logFile.Close() })
	logger := slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))

	cfg := mutate.Config{ClusterID: "scale", ManagedResource: managedRes}
	factory := informers.NewSharedInformerFactoryWithOptions(c.Client, 10*time.Minute, cachetransform.Option())
	loop, err := reconcile.New(reconcile.Options{
		Client: c.Client, Mutate: cfg, LeaseNamespace: sysNS, LeaseName: "petfabric-webhook", Identity: "scale",
		SchedulingGate: true, Logger: logger, Metrics: prometheus.NewRegistry(),
	})
	require.NoError(tb, err)
	require.NoError(tb, loop.UseInformers(factory))
	health, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	ready := make(chan struct{}, 1)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- webhook.Run(runCtx, c.Client, webhook.RunConfig{
			Mutate: cfg, Informers: factory, Background: loop.Run, SchedulingGate: true,
			Serving: serving.Config{
				Listener: ch.listener, HealthListener: health, CertFile: ch.certFile, KeyFile: ch.keyFile,
				ShutdownTimeout: 5 * time.Second, Logger: logger,
			},
			OnServing: func(string, string) { ready <- struct{}{} },
		})
	}()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(tb, err, "webhook")
		case <-time.After(30 * time.Second):
			tb.Error("webhook did not stop")
		}
	})
	select {
	case <-ready:
	case err := <-done:
		tb.Fatalf("webhook exited at start: %v", err)
	case <-time.After(30 * time.Second):
		tb.Fatal("webhook did not start serving")
	}
	_, err = s.cs.StorageV1().StorageClasses().Create(ctx, &ch.class, metav1.CreateOptions{})
	require.NoError(tb, err)
	_, err = s.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &ch.webhooks, metav1.CreateOptions{})
	require.NoError(tb, err)
	// The apiserver loads webhook configurations asynchronously: dry-run until the patch shows.
	probe := statefulSet("default", "probe", 1, dateraClass)
	require.NoError(tb, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := s.cs.AppsV1().StatefulSets("default").Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil && got.Spec.VolumeClaimTemplates[0].Annotations[mutate.AnnStatefulSet] == "probe", nil
	}), "the apiserver never called the webhook")
}

func statefulSet(ns, name string, replicas int32, class string) *appsv1.StatefulSet {
	labels := map[string]string{"app": name}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas: &replicas, ServiceName: name, PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx",
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}}},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: corev1.PersistentVolumeClaimSpec{
					StorageClassName: &class, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}},
		},
	}
}

// staticPV is the baseline's hand-made PV for ns's claim, pre-bound to it.
func staticPV(ns, claim string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + claim},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              staticClass,
			ClaimRef:                      &corev1.ObjectReference{Namespace: ns, Name: claim},
			PersistentVolumeSource: corev1.PersistentVolumeSource{FlexVolume: &corev1.FlexPersistentVolumeSource{
				Driver: mutate.Driver, Options: map[string]string{"volumeID": ns + "-" + claim},
			}},
		},
	}
}

// run creates the namespace (labels), for static the hand-made PVs (before the clock), then
// times the StatefulSet of class until every claim is Bound and every pod Running.
func (s *env) run(ctx context.Context, tb testing.TB, ns, class string, static bool) outcome {
	tb.Helper()
	var labels map[string]string
	if static {
		labels = map[string]string{optOutLabel: "disabled"}
	}
	_, err := s.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{})
	require.NoError(tb, err)
	if static {
		for n := range pets {
			_, err := s.cs.CoreV1().PersistentVolumes().Create(ctx, staticPV(ns, mutate.ClaimName("data", "pets", n)), metav1.CreateOptions{})
			require.NoError(tb, err)
		}
	}
	o := outcome{ns: ns, failedScheduling: map[string]int{}}
	filters := s.filterCalls(tb)
	began := time.Now()
	_, err = s.cs.AppsV1().StatefulSets(ns).Create(ctx, statefulSet(ns, "pets", pets, class), metav1.CreateOptions{})
	require.NoError(tb, err)
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		if o.bound == 0 {
			claims, err := s.cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, nil
			}
			if count(claims.Items, func(c corev1.PersistentVolumeClaim) bool { return c.Status.Phase == corev1.ClaimBound }) == pets {
				o.bound = time.Since(began)
			}
		}
		pods, err := s.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		return o.bound > 0 && count(pods.Items, func(p corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning }) == pets, nil
	})
	require.NoError(tb, err, "%s: pets not all Bound and Running", ns)
	o.running = time.Since(began)
	o.extenderFilters = s.filterCalls(tb) - filters
	evs, err := s.cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=FailedScheduling"})
	require.NoError(tb, err)
	for _, ev := range evs.Items {
		o.failedScheduling[ev.Message] += int(max(ev.Count, 1))
		o.failedCount += int(max(ev.Count, 1))
	}
	return o
}

// filterCalls sums the extender's petfabric_extender_requests_total{verb="filter",...} samples
// (text exposition: "name{labels} value" a line).
func (s *env) filterCalls(tb testing.TB) int {
	tb.Helper()
	total := 0
	for _, line := range strings.Split(s.e.Metrics(tb), "\n") {
		if !strings.HasPrefix(line, "petfabric_extender_requests_total{") || !strings.Contains(line, `verb="filter"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		require.NoError(tb, err, line)
		total += int(v)
	}
	return total
}

func count[T any](items []T, f func(T) bool) int {
	n := 0
	for _, x := range items {
		if f(x) {
			n++
		}
	}
	return n
}

// both runs petfabric first (a cold start counts against it, not for it), then the static
// baseline, on the same control plane.
func both(tb testing.TB, s *env) (pf, st outcome) {
	ctx := context.Background()
	pf = s.run(ctx, tb, "petfabric", dateraClass, false)
	st = s.run(ctx, tb, "static", staticClass, true)
	return pf, st
}

func TestScale100(t *testing.T) {
	s := start(t)
	pf, st := both(t, s)
	ctx := context.Background()
	ratio := pf.running.Seconds() / st.running.Seconds()
	t.Logf("%d pets on %d kwok nodes, create → all Bound / all Running: petfabric %s / %s, static %s / %s, ratio %.2f (goal ≤ 1.0; asserted ≤ 2.0)",
		pets, nodes, pf.bound.Round(time.Millisecond), pf.running.Round(time.Millisecond),
		st.bound.Round(time.Millisecond), st.running.Round(time.Millisecond), ratio)
	t.Logf("extender filter calls: petfabric %d, static %d", pf.extenderFilters, st.extenderFilters)
	t.Logf("FailedScheduling (by message): petfabric %d %v, static %d %v", pf.failedCount, pf.failedScheduling, st.failedCount, st.failedScheduling)

	pvs, err := s.cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	pvByName := map[string]corev1.PersistentVolume{}
	for _, pv := range pvs.Items {
		pvByName[pv.Name] = pv
	}
	for _, o := range []outcome{pf, st} {
		t.Run(o.ns, func(t *testing.T) {
			petfabric := o.ns == pf.ns
			claims, err := s.cs.CoreV1().PersistentVolumeClaims(o.ns).List(ctx, metav1.ListOptions{})
			require.NoError(t, err)
			require.Len(t, claims.Items, pets)
			seen := map[string]string{}
			for _, c := range claims.Items {
				pv, ok := pvByName[c.Spec.VolumeName]
				if !assert.True(t, ok, "%s bound to PV %q, which does not exist", c.Name, c.Spec.VolumeName) {
					continue
				}
				assert.Empty(t, seen[pv.Name], "PV %s bound to both %s and %s", pv.Name, seen[pv.Name], c.Name)
				seen[pv.Name] = c.Name
				require.NotNil(t, pv.Spec.ClaimRef, pv.Name)
				assert.Equal(t, o.ns+"/"+c.Name, pv.Spec.ClaimRef.Namespace+"/"+pv.Spec.ClaimRef.Name, "PV %s was made for this claim", pv.Name)
				assert.Equal(t, c.UID, pv.Spec.ClaimRef.UID, "PV %s bound to this claim", pv.Name)
				if petfabric {
					// Made by the webhook when the StatefulSet was created, before the claim.
					assert.Equal(t, mutate.ManagedByValue, pv.Labels[mutate.LabelManagedBy], "%s: petfabric made PV %s", c.Name, pv.Name)
					assert.True(t, pv.CreationTimestamp.Before(&c.CreationTimestamp) || pv.CreationTimestamp.Equal(&c.CreationTimestamp),
						"%s: PV %s was made before the claim", c.Name, pv.Name)
				} else {
					assert.Equal(t, staticPV(o.ns, c.Name).Name, pv.Name, "%s: bound to its hand-made PV", c.Name)
				}
			}
			pods, err := s.cs.CoreV1().Pods(o.ns).List(ctx, metav1.ListOptions{})
			require.NoError(t, err)
			require.Len(t, pods.Items, pets)
			for _, p := range pods.Items {
				assert.Equal(t, corev1.PodRunning, p.Status.Phase, p.Name)
				_, managed := p.Spec.Containers[0].Resources.Requests[managedRes]
				assert.Equal(t, petfabric, managed, "%s: requests %s (the extender is called for it) iff petfabric's", p.Name, managedRes)
				assert.Empty(t, p.Spec.SchedulingGates, "%s: no gate left", p.Name)
				if petfabric {
					var idx int
					_, err := fmt.Sscanf(p.Spec.NodeName, "node-%d", &idx)
					require.NoError(t, err, p.Spec.NodeName)
					assert.Less(t, idx, nodes-unreachable, "%s on %s, whose report does not reach the backstore", p.Name, p.Spec.NodeName)
				}
			}
			if petfabric {
				assert.GreaterOrEqual(t, o.extenderFilters, pets, "the scheduler asked the extender to filter each pet")
			} else {
				assert.Zero(t, o.extenderFilters, "the scheduler never calls the extender for the baseline's pods")
			}
			if petfabric {
				assert.Empty(t, o.failedScheduling, "petfabric's pets (all reachable) are never refused by the scheduler")
			}
		})
	}
	assert.LessOrEqual(t, ratio, 2.0, "petfabric's time over the static baseline's (generous bound; the goal ≤ 1.0 is BenchmarkScale100's figure)")
}

// BenchmarkScale100 reports both modes' times (s) to all Bound and all Running, their
// FailedScheduling counts and the ratio petfabric/static of the running times. Run with
// -benchtime=1x (each iteration needs its own control plane's namespaces; one is enough).
func BenchmarkScale100(b *testing.B) {
	s := start(b)
	b.ResetTimer()
	var pf, st outcome
	for i := range b.N {
		if i > 0 {
			b.Fatal("run with -benchtime=1x")
		}
		pf, st = both(b, s)
	}
	b.ReportMetric(pf.bound.Seconds(), "petfabric-bound-s")
	b.ReportMetric(pf.running.Seconds(), "petfabric-running-s")
	b.ReportMetric(st.bound.Seconds(), "static-bound-s")
	b.ReportMetric(st.running.Seconds(), "static-running-s")
	b.ReportMetric(float64(pf.failedCount), "petfabric-FailedScheduling")
	b.ReportMetric(float64(st.failedCount), "static-FailedScheduling")
	b.ReportMetric(float64(pf.extenderFilters), "petfabric-extender-filters")
	b.ReportMetric(float64(st.extenderFilters), "static-extender-filters")
	b.ReportMetric(pf.running.Seconds()/st.running.Seconds(), "ratio")
}

package e2e

import (
	"context"
	"fmt"
	"github.com/petfabric/petfabric/test/fixtures"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/cachetransform"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/reconcile"
	"github.com/petfabric/petfabric/pkg/webhook"
	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/helmchart"
)

// startGatingWebhook runs the webhook as cmd/webhook does with --scheduling-gate: one informer
// factory for admission and the leader-elected reconcile loop (the loop removes the gates),
// the pod hook on. The loop's metrics go to reg. The lease lives in credsNamespace (create it
// first).
func startGatingWebhook(t testing.TB, c *cluster.Cluster, cfg mutate.Config, reg prometheus.Registerer) *runningWebhook {
	t.Helper()
	logFile, err := os.Create(filepath.Join(c.Dir, "reconcile-gate.log"))
	require.NoError(t, err)
	t.Cleanup(func() { logFile.Close() })
	factory := informers.NewSharedInformerFactoryWithOptions(c.Client, time.Minute, cachetransform.Option())
	loop, err := reconcile.New(reconcile.Options{
		Client: c.Client, Mutate: cfg,
		LeaseNamespace: credsNamespace, LeaseName: "petfabric-gate-e2e", Identity: "gate-e2e",
		LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 250 * time.Millisecond,
		RetryBase: 100 * time.Millisecond, RetryMax: 2 * time.Second,
		SchedulingGate: true,
		// Fencing is not under test here: point it at a namespace without node reports, so
		// that reports going stale (kwok nodes run no agent) never start fence checks.
		ReportNamespace: "petfabric-no-reports",
		Logger:          slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:         reg,
	})
	require.NoError(t, err)
	require.NoError(t, loop.UseInformers(factory))
	return startWebhook(t, c, cfg, func(rc *webhook.RunConfig) {
		rc.Informers = factory
		rc.Background = loop.Run
		rc.SchedulingGate = true
	})
}

// podHookCondition is the pod hook's matchCondition: only pods owned by a StatefulSet that
// mount a claim are sent to the webhook.
const podHookCondition = `has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r, r.kind == 'StatefulSet' && r.apiVersion.startsWith('apps/'))` +
	` && has(object.spec.volumes) && object.spec.volumes.exists(v, has(v.persistentVolumeClaim))`

// registerPodHook installs a pod hook of its own (failurePolicy Ignore: an unreachable webhook
// leaves pods ungated, as before the hook existed) for the namespaces nsSelector selects (nil:
// all), and waits until the apiserver calls it (waitPodHook). Benchmarks use it to gate some
// namespaces and not others on one control plane (dropChartPodHook first).
func registerPodHook(ctx context.Context, t testing.TB, cs kubernetes.Interface, w *runningWebhook, probeNS string, nsSelector *metav1.LabelSelector) {
	t.Helper()
	_, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "petfabric-pods-e2e"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "pods.petfabric.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To(w.URL + webhook.PathPods), CABundle: w.CAPEM},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope)}}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Ignore),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](5),
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.NeverReinvocationPolicy),
			NamespaceSelector:       nsSelector,
			MatchConditions:         []admissionregistrationv1.MatchCondition{{Name: "statefulset-pets-with-claims", Expression: podHookCondition}},
		}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	waitPodHook(ctx, t, cs, probeNS, true)
}

// waitPodHook waits until the apiserver calls a pod hook for probeNS (gated true) or no
// longer does (false): a dry-run create of a StatefulSet-owned pod whose claim's PV is
// pre-bound (and whose claim does not exist) comes back gated, or not.
func waitPodHook(ctx context.Context, t testing.TB, cs kubernetes.Interface, probeNS string, gated bool) {
	t.Helper()
	const claim = "probe-gate-0"
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "gate-probe-" + probeNS, Labels: map[string]string{mutate.LabelManagedBy: mutate.ManagedByValue}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: *getQuantity("1Gi")},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName:       "gate-probe-none",
			ClaimRef:               &corev1.ObjectReference{Namespace: probeNS, Name: claim},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/nonexistent"}},
		},
	}
	_, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	require.NoError(t, err)
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "gate-probe", Namespace: probeNS, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: "StatefulSet", Name: "probe", UID: "00000000-0000-0000-0000-000000000001"}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx"}}, Volumes: []corev1.Volume{{Name: "d",
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}}},
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := cs.CoreV1().Pods(probeNS).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return false, nil
		}
		return (mutate.GateIndex(got) >= 0) == gated, nil
	})
	require.NoError(t, err, "pod hook for namespace %s: never saw gated=%t", probeNS, gated)
	require.NoError(t, cs.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{}))
}

// waitPetsRunning waits until n pods of ns are Running and returns the time since start.
func waitPetsRunning(ctx context.Context, t testing.TB, cs kubernetes.Interface, ns string, n int, start time.Time) time.Duration {
	t.Helper()
	fixtures.WaitPodsRunning(ctx, t, cs, ns, n, 5*time.Minute)
	return time.Since(start)
}

// failedSchedulingMessages lists ns's FailedScheduling events as "<pod>: <message> (xN)".
func failedSchedulingMessages(ctx context.Context, t testing.TB, cs kubernetes.Interface, ns string) (int, []string) {
	t.Helper()
	evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=FailedScheduling"})
	require.NoError(t, err)
	total, out := 0, []string(nil)
	for _, ev := range evs.Items {
		n := int(max(ev.Count, 1))
		total += n
		out = append(out, fmt.Sprintf("%s: %s (x%d)", ev.InvolvedObject.Name, ev.Message, n))
	}
	return total, out
}

// dropChartPodHook removes the chart's pod hook (pods.petfabric.io) from the chart's webhook
// configuration that registerWebhook installed, so that only registerPodHook's applies.
func dropChartPodHook(ctx context.Context, t testing.TB, cs kubernetes.Interface) {
	t.Helper()
	cfg, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, helmchart.Release, metav1.GetOptions{})
	require.NoError(t, err)
	kept := cfg.Webhooks[:0]
	for _, h := range cfg.Webhooks {
		if h.Name != "pods.petfabric.io" {
			kept = append(kept, h)
		}
	}
	cfg.Webhooks = kept
	_, err = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, cfg, metav1.UpdateOptions{})
	require.NoError(t, err)
}

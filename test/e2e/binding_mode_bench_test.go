package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/extender"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/pkg/pvoptions"
	"github.com/petfabric/petfabric/test/e2e/extenderenv"
)

// BenchmarkBindingModes100 measures create StatefulSet → all 100 pets Running on 200 kwok
// nodes with petfabric's extender in kube-scheduler's path (every node reports the backstore
// reachable), in one run and on one control plane (same controller-manager settings) for:
//   - handmade: the baseline, 100 pre-bound static PVs of an Immediate no-provisioner class
//     created by hand before the clock starts;
//   - immediate: petfabric's webhook creates the PVs, class volumeBindingMode Immediate;
//   - wffc: the same with volumeBindingMode WaitForFirstConsumer;
//   - immediate-gated, wffc-gated: the same two with the pod hook on (--scheduling-gate): each
//     pet is created behind the petfabric.io/claims-bound scheduling gate while its claim is
//     unbound, and the webhook's reconcile loop removes the gate once the claim is Bound.
//
// The webhook runs with its reconcile loop in every mode (as cmd/webhook does); the pod hook
// is registered for the gated modes' namespaces only (label gateBenchLabel), in place of the
// chart's, which would gate every namespace.
//
// Reported per mode: seconds to all claims Bound and all pods Running, FailedScheduling
// events (summed counts), and each petfabric mode's running time over the baseline's.
// Run with -benchtime=1x.
func BenchmarkBindingModes100(b *testing.B) {
	const pets, nodes = 100, 200
	const bs = "127.0.0.1:7717"
	e := extenderenv.Start(b, extenderenv.Options{Nodes: kwokNodes(nodes), Namespace: credsNamespace,
		Requeue: extender.RequeueConfig{Enabled: true}})
	ctx := context.Background()
	cs := e.Client
	good := map[string]placement.BackstoreReport{bs: {Portals: map[string]placement.PortalReport{
		"127.0.0.1:3260": {OK: true, RTTMicros: 150}, "127.0.0.2:3260": {OK: true, RTTMicros: 170}}}}
	// Reports are capped at the extender's maximum validity (2 min): renew them before each
	// mode, off the clock, as the node agents would keep renewing them.
	renew := func() {
		b.StopTimer()
		defer b.StartTimer()
		for i := range nodes {
			require.NoError(b, e.WriteReport(ctx, fmt.Sprintf("node-%d", i), good, time.Hour))
		}
	}
	renew()
	setupDateraNamespaces(ctx, b, cs, map[string]map[string]string{})
	wffc := dateraClass("datera-wffc", bs, corev1.PersistentVolumeReclaimRetain, nil)
	wffc.VolumeBindingMode = ptr.To(storagev1.VolumeBindingWaitForFirstConsumer)
	_, err := cs.StorageV1().StorageClasses().Create(ctx, wffc, metav1.CreateOptions{})
	require.NoError(b, err)
	_, err = cs.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: "manual"}, Provisioner: "kubernetes.io/no-provisioner",
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}, metav1.CreateOptions{})
	require.NoError(b, err)
	w := startGatingWebhook(b, e.C, mutate.Config{ClusterID: "bench"}, prometheus.NewRegistry())
	registerWebhook(ctx, b, e.C, w, admissionregistrationv1.Fail)
	gated := map[string]string{gateBenchLabel: "on"}
	setupDateraNamespaces(ctx, b, cs, map[string]map[string]string{"gate-probe": gated, "nogate-probe": nil})
	// The chart's pod hook would gate every namespace: gate only the labelled ones.
	dropChartPodHook(ctx, b, cs)
	waitPodHook(ctx, b, cs, "nogate-probe", false)
	registerPodHook(ctx, b, cs, w, "gate-probe", &metav1.LabelSelector{MatchLabels: gated})

	b.ResetTimer()
	for i := range b.N {
		manualNS, immNS, wffcNS := fmt.Sprintf("handmade-%d", i), fmt.Sprintf("immediate-%d", i), fmt.Sprintf("wffc-%d", i)
		gImmNS, gWffcNS := fmt.Sprintf("immediate-gated-%d", i), fmt.Sprintf("wffc-gated-%d", i)
		setupDateraNamespaces(ctx, b, cs, map[string]map[string]string{immNS: nil, wffcNS: nil, manualNS: {webhookIgnoreLabel: "ignore"},
			gImmNS: gated, gWffcNS: gated})
		b.StopTimer()
		for n := range pets {
			claim := mutate.ClaimName("data", "pets", n)
			_, err := cs.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
				ObjectMeta: metav1.ObjectMeta{Name: manualNS + "-" + claim},
				Spec: corev1.PersistentVolumeSpec{
					Capacity:                      corev1.ResourceList{corev1.ResourceStorage: *getQuantity("1Gi")},
					AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
					StorageClassName:              "manual",
					ClaimRef:                      &corev1.ObjectReference{Namespace: manualNS, Name: claim},
					PersistentVolumeSource: corev1.PersistentVolumeSource{FlexVolume: &corev1.FlexPersistentVolumeSource{
						Driver: mutate.Driver, Options: map[string]string{pvoptions.OptVolumeID: manualNS + "-" + claim, pvoptions.OptBackstoreServer: bs},
					}},
				},
			}, metav1.CreateOptions{})
			require.NoError(b, err)
		}
		b.StartTimer()
		manual := timeToBound(ctx, b, cs, manualNS, "manual", pets)
		// Each mode finds the cluster fuller than the one before (more PVs for the PV
		// controller to match): odd iterations run the petfabric modes in reverse order.
		var imm, wf, gImm, gWf bindTiming
		runs := []func(){
			func() { imm = timeToBound(ctx, b, cs, immNS, "datera-gold", pets) },
			func() { wf = timeToBound(ctx, b, cs, wffcNS, "datera-wffc", pets) },
			func() { gImm = timeToBound(ctx, b, cs, gImmNS, "datera-gold", pets) },
			func() { gWf = timeToBound(ctx, b, cs, gWffcNS, "datera-wffc", pets) },
		}
		if i%2 == 1 {
			slices.Reverse(runs)
		}
		for _, run := range runs {
			renew()
			run()
		}
		b.Logf("iteration %d (petfabric modes %s): running s: handmade %.2f, immediate %.2f, wffc %.2f, immediate-gated %.2f, wffc-gated %.2f",
			i, map[bool]string{false: "in order", true: "reversed"}[i%2 == 1],
			manual.running.Seconds(), imm.running.Seconds(), wf.running.Seconds(), gImm.running.Seconds(), gWf.running.Seconds())
		for _, m := range []struct {
			name, ns string
			t        bindTiming
		}{{"handmade", manualNS, manual}, {"immediate", immNS, imm}, {"wffc", wffcNS, wf}, {"immediate-gated", gImmNS, gImm}, {"wffc-gated", gWffcNS, gWf}} {
			b.ReportMetric(m.t.bound.Seconds(), m.name+"-bound-s")
			b.ReportMetric(m.t.running.Seconds(), m.name+"-running-s")
			b.ReportMetric(float64(m.t.failedScheduling), m.name+"-FailedScheduling")
			b.Logf("%s: FailedScheduling by cause: %v", m.name, failedSchedulingCauses(ctx, b, cs, m.ns))
		}
		b.ReportMetric(imm.running.Seconds()/manual.running.Seconds(), "ratio-immediate")
		b.ReportMetric(wf.running.Seconds()/manual.running.Seconds(), "ratio-wffc")
		b.ReportMetric(gImm.running.Seconds()/manual.running.Seconds(), "ratio-immediate-gated")
		b.ReportMetric(gWf.running.Seconds()/manual.running.Seconds(), "ratio-wffc-gated")
	}
}

// gateBenchLabel on a namespace sends its pods to the pod hook in the benchmarks.
const gateBenchLabel = "petfabric.io/e2e-gate"

// failedSchedulingCauses counts a namespace's FailedScheduling events (summed counts) by
// cause: the scheduler's binding of a pre-bound PV overtaken by the PV controller's (at
// Reserve or PreBind), unbound immediate claims, anything else.
func failedSchedulingCauses(ctx context.Context, b *testing.B, cs kubernetes.Interface, ns string) map[string]int {
	b.Helper()
	evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=FailedScheduling"})
	require.NoError(b, err)
	out := map[string]int{}
	for _, ev := range evs.Items {
		cause := "other: " + ev.Message
		switch {
		case strings.Contains(ev.Message, `running PreBind plugin "VolumeBinding"`) && strings.Contains(ev.Message, "the object has been modified"),
			strings.Contains(ev.Message, `running Reserve plugin "VolumeBinding"`) && strings.Contains(ev.Message, "is out of sync"):
			cause = "binding race with the PV controller"
		case strings.Contains(ev.Message, "unbound immediate PersistentVolumeClaims"):
			cause = "unbound immediate claims"
		}
		out[cause] += int(max(ev.Count, 1))
	}
	return out
}

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

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
//   - wffc: the same with volumeBindingMode WaitForFirstConsumer.
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
	for i := range nodes {
		require.NoError(b, e.WriteReport(ctx, fmt.Sprintf("node-%d", i), good, time.Hour))
	}
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
	w := startWebhook(b, e.C, mutate.Config{ClusterID: "bench"})
	registerWebhook(ctx, b, e.C, w, admissionregistrationv1.Fail)

	b.ResetTimer()
	for i := range b.N {
		manualNS, immNS, wffcNS := fmt.Sprintf("handmade-%d", i), fmt.Sprintf("immediate-%d", i), fmt.Sprintf("wffc-%d", i)
		setupDateraNamespaces(ctx, b, cs, map[string]map[string]string{immNS: nil, wffcNS: nil, manualNS: {webhookIgnoreLabel: "ignore"}})
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
		imm := timeToBound(ctx, b, cs, immNS, "datera-gold", pets)
		wf := timeToBound(ctx, b, cs, wffcNS, "datera-wffc", pets)
		for _, m := range []struct {
			name, ns string
			t        bindTiming
		}{{"handmade", manualNS, manual}, {"immediate", immNS, imm}, {"wffc", wffcNS, wf}} {
			b.ReportMetric(m.t.bound.Seconds(), m.name+"-bound-s")
			b.ReportMetric(m.t.running.Seconds(), m.name+"-running-s")
			b.ReportMetric(float64(m.t.failedScheduling), m.name+"-FailedScheduling")
			b.Logf("%s: FailedScheduling by cause: %v", m.name, failedSchedulingCauses(ctx, b, cs, m.ns))
		}
		b.ReportMetric(imm.running.Seconds()/manual.running.Seconds(), "ratio-immediate")
		b.ReportMetric(wf.running.Seconds()/manual.running.Seconds(), "ratio-wffc")
	}
}

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

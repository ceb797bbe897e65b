package e2e

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/fixtures"
)

// BenchmarkStatefulSetCreate measures `create statefulset` latency through the real apiserver
// with the webhook (which pins the template and creates 3 PVs inside the call) against the
// same create in a namespace the webhook is not called for, and — to split the cost — a
// create the webhook is called for but that names no Datera class (round trip only). The
// three are interleaved so machine noise hits all alike; ratio = webhook p50 / baseline p50.
func BenchmarkStatefulSetCreate(b *testing.B) {
	cluster.RequireBinaries(b)
	c := cluster.Start(b, cluster.Options{})
	ctx := context.Background()
	cs := c.Client
	setupDateraNamespaces(ctx, b, cs, map[string]map[string]string{
		"hooked": nil, "plain": {webhookIgnoreLabel: webhookIgnoreValue},
	})
	w := startWebhook(b, c, mutate.Config{ClusterID: "bench"})
	registerWebhook(ctx, b, c, w, admissionregistrationv1.Fail)

	var with, without, roundTrip []time.Duration
	b.ResetTimer()
	for i := range b.N {
		for _, v := range []struct {
			ns, class string
			into      *[]time.Duration
		}{{"plain", "datera-gold", &without}, {"hooked", "datera-gold", &with}, {"hooked", "other", &roundTrip}} {
			sts := statefulSet(v.ns, fmt.Sprintf("s%d-%s", i, v.class), 3, ptr.To(v.class))
			start := time.Now()
			_, err := cs.AppsV1().StatefulSets(v.ns).Create(ctx, sts, metav1.CreateOptions{})
			*v.into = append(*v.into, time.Since(start))
			require.NoError(b, err)
		}
	}
	b.StopTimer()
	p50w, p99w := percentiles(with)
	p50o, p99o := percentiles(without)
	p50r, _ := percentiles(roundTrip)
	b.ReportMetric(float64(p50w.Microseconds()), "p50-webhook-µs")
	b.ReportMetric(float64(p99w.Microseconds()), "p99-webhook-µs")
	b.ReportMetric(float64(p50o.Microseconds()), "p50-baseline-µs")
	b.ReportMetric(float64(p99o.Microseconds()), "p99-baseline-µs")
	b.ReportMetric(float64(p50r.Microseconds()), "p50-roundtrip-only-µs")
	b.ReportMetric(float64(p50w)/float64(p50o), "ratio-p50")
	// The PVs really were created inside the calls.
	require.Equal(b, 3*b.N, countManagedPVs(ctx, b, cs))
}

// BenchmarkClaimsBound100 measures the time from `create statefulset` (100 Parallel pets on 50
// kwok nodes) until all 100 claims are Bound and all pods Running: with petfabric creating the
// PVs, and with 100 hand-made pre-bound PVs created before the clock starts (the baseline:
// what an admin pre-provisioning by hand gets). FailedScheduling events per run show what the PV controller's pace costs.
func BenchmarkClaimsBound100(b *testing.B) {
	cluster.RequireBinaries(b)
	const pets = 100
	c := cluster.Start(b, cluster.Options{Nodes: kwokNodes(50)})
	ctx := context.Background()
	cs := c.Client
	setupDateraNamespaces(ctx, b, cs, map[string]map[string]string{})
	w := startWebhook(b, c, mutate.Config{ClusterID: "bench"})
	registerWebhook(ctx, b, c, w, admissionregistrationv1.Fail)
	_, err := cs.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: "manual"}, Provisioner: "kubernetes.io/no-provisioner",
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}, metav1.CreateOptions{})
	require.NoError(b, err)

	b.ResetTimer()
	for i := range b.N {
		pfNS, manualNS := fmt.Sprintf("petfabric-%d", i), fmt.Sprintf("manual-%d", i)
		setupDateraNamespaces(ctx, b, cs, map[string]map[string]string{pfNS: nil, manualNS: {webhookIgnoreLabel: webhookIgnoreValue}})

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
						Driver: mutate.Driver, Options: map[string]string{"volumeID": claim},
					}},
				},
			}, metav1.CreateOptions{})
			require.NoError(b, err)
		}
		b.StartTimer()
		manual := timeToBound(ctx, b, cs, manualNS, "manual", pets)
		petfabric := timeToBound(ctx, b, cs, pfNS, "datera-gold", pets)
		b.ReportMetric(petfabric.bound.Seconds(), "petfabric-bound-s")
		b.ReportMetric(petfabric.running.Seconds(), "petfabric-running-s")
		b.ReportMetric(float64(petfabric.failedScheduling), "petfabric-FailedScheduling")
		b.ReportMetric(manual.bound.Seconds(), "handmade-bound-s")
		b.ReportMetric(manual.running.Seconds(), "handmade-running-s")
		b.ReportMetric(float64(manual.failedScheduling), "handmade-FailedScheduling")
		b.ReportMetric(petfabric.running.Seconds()/manual.running.Seconds(), "ratio-running")
	}
}

type bindTiming struct {
	bound, running   time.Duration
	failedScheduling int
}

func timeToBound(ctx context.Context, b *testing.B, cs kubernetes.Interface, ns, class string, pets int) bindTiming {
	b.Helper()
	var t bindTiming
	start := time.Now()
	_, err := cs.AppsV1().StatefulSets(ns).Create(ctx, statefulSet(ns, "pets", int32(pets), &class), metav1.CreateOptions{})
	require.NoError(b, err)
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		if t.bound == 0 {
			claims, err := cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, nil
			}
			bound := 0
			for _, c := range claims.Items {
				if c.Status.Phase == corev1.ClaimBound {
					bound++
				}
			}
			if bound == pets {
				t.bound = time.Since(start)
			}
		}
		running, err := fixtures.PodsRunning(ctx, cs, ns)
		return err == nil && t.bound > 0 && running == pets, nil
	})
	require.NoError(b, err, "namespace %s: pets not bound and running", ns)
	t.running = time.Since(start)
	events, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=FailedScheduling"})
	require.NoError(b, err)
	for _, e := range events.Items {
		t.failedScheduling += int(max(e.Count, 1))
	}
	return t
}

// setupDateraNamespaces creates the namespaces (with labels), the credentials namespace and
// the datera-gold class once.
func setupDateraNamespaces(ctx context.Context, b testing.TB, cs kubernetes.Interface, namespaces map[string]map[string]string) {
	b.Helper()
	namespaces[credsNamespace] = nil
	for name, labels := range namespaces {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
		require.NoError(b, cluster.IgnoreAlreadyExists(err))
	}
	_, err := cs.StorageV1().StorageClasses().Create(ctx, dateraClass("datera-gold", "127.0.0.1:7717", corev1.PersistentVolumeReclaimRetain, nil), metav1.CreateOptions{})
	require.NoError(b, cluster.IgnoreAlreadyExists(err))
}

func countManagedPVs(ctx context.Context, b testing.TB, cs kubernetes.Interface) int {
	list, err := cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{LabelSelector: mutate.LabelManagedBy + "=" + mutate.ManagedByValue})
	require.NoError(b, err)
	return len(list.Items)
}

func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2], s[min(len(s)-1, len(s)*99/100)]
}

package kubelete2e

import (
	"context"
	"fmt"
	"github.com/petfabric/petfabric/test/fixtures"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/flex"
)

// BenchmarkKubeletPodRunning measures, on one real kubelet node, pod create → Running for 20
// pods that each mount a new Datera volume through the driver (its claim already Bound, as a
// pet's is after the webhook), next to the same for 20 pods without a Datera volume (the
// baseline: kubelet, fake runtime and API round trips alone), and the driver's own mount time
// (its log's reply duration). Each pod is deleted, and its volume unmounted, before the next
// starts. Run with -benchtime 1x: every iteration is 40 pods.
func BenchmarkKubeletPodRunning(b *testing.B) {
	const pods = 20
	e := newEnv(b, 1)
	node := e.names[0]
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		// The claims come from a StatefulSet whose pets never schedule: the webhook makes the
		// PVs, the PV controller binds them, and the benchmark's own pods use them.
		set := fmt.Sprintf("bench%d", i)
		sts := fixtures.PetSet(appNS, set, pods, classXFS)
		sts.Spec.Template.Spec.NodeSelector = map[string]string{"petfabric.io/bench": "nowhere"}
		_, err := e.cs.AppsV1().StatefulSets(appNS).Create(e.ctx, sts, metav1.CreateOptions{})
		require.NoError(b, err)
		require.NoError(b, wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			for n := range pods {
				pvc, err := e.cs.CoreV1().PersistentVolumeClaims(appNS).Get(ctx, fmt.Sprintf("data-%s-%d", set, n), metav1.GetOptions{})
				if err != nil || pvc.Status.Phase != corev1.ClaimBound {
					return false, nil
				}
			}
			return true, nil
		}), "claims not bound")
		b.StartTimer()

		var baseline, datera, mount []time.Duration
		for n := range pods {
			d, _ := e.podRoundTrip(b, node, fmt.Sprintf("plain-%d-%d", i, n), "")
			baseline = append(baseline, d)
			d, m := e.podRoundTrip(b, node, fmt.Sprintf("vol-%d-%d", i, n), fmt.Sprintf("data-%s-%d", set, n))
			datera, mount = append(datera, d), append(mount, m)
		}
		b.ReportMetric(p50(baseline), "baseline-running-p50-ms")
		b.ReportMetric(p50(datera), "datera-running-p50-ms")
		b.ReportMetric(p50(mount), "driver-mount-p50-ms")
		b.Logf("create → Running over %d pods: without a Datera volume p50 %.0f ms (max %.0f); with one p50 %.0f ms (max %.0f); driver mount p50 %.0f ms",
			pods, p50(baseline), ms(slices.Max(baseline)), p50(datera), ms(slices.Max(datera)), p50(mount))
	}
}

// podRoundTrip creates a pod on node (with claim mounted when not empty), returns how long it
// took to be Running and the driver's mount time, then deletes it and waits until it is gone
// (its volume unmounted).
func (e *env) podRoundTrip(b *testing.B, node, name, claim string) (running, mount time.Duration) {
	b.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: appNS},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			Containers:                    []corev1.Container{{Name: "app", Image: "registry.example/db:1"}},
		},
	}
	if claim != "" {
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}}
	}
	start := time.Now()
	created, err := e.cs.CoreV1().Pods(appNS).Create(e.ctx, pod, metav1.CreateOptions{})
	require.NoError(b, err)
	require.NoError(b, wait.PollUntilContextTimeout(e.ctx, 10*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := e.cs.CoreV1().Pods(appNS).Get(ctx, name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, nil
	}), "pod %s not Running\n%s", name, e.events(b, name))
	running = time.Since(start)
	if claim != "" {
		c := e.calls(b, node, flex.VerbMount, e.volumeDir(b, created, claim))
		require.NotEmpty(b, c)
		require.Equal(b, flex.StatusSuccess, c[len(c)-1].Reply.Status)
		mount = time.Duration(c[len(c)-1].Reply.Duration)
	}
	b.StopTimer()
	require.NoError(b, e.cs.CoreV1().Pods(appNS).Delete(e.ctx, name, metav1.DeleteOptions{}))
	require.NoError(b, wait.PollUntilContextTimeout(e.ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := e.cs.CoreV1().Pods(appNS).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}), "pod %s not deleted", name)
	b.StartTimer()
	return running, mount
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func p50(ds []time.Duration) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return ms(s[len(s)/2])
}

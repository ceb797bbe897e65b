package extendere2e

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/extender"
	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/pkg/pvoptions"
	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/e2e/extenderenv"
)

// recoveryEnv is a control plane with two nodes whose reports start unreachable, a Datera
// class, and claims with pre-bound PVs made up front (PV and claim events requeue rejected
// pods by themselves, so none may happen while a recovery is timed).
type recoveryEnv struct {
	*extenderenv.Env
	ctx context.Context
}

var recoveryNodes = []string{"r1", "r2"}

func startRecovery(tb testing.TB, requeue bool, claims int) *recoveryEnv {
	tb.Helper()
	nodes := make([]cluster.NodeSpec, len(recoveryNodes))
	for i, n := range recoveryNodes {
		nodes[i] = cluster.NodeSpec{Name: n}
	}
	e := &recoveryEnv{Env: extenderenv.Start(tb, extenderenv.Options{Nodes: nodes, Namespace: releaseNS,
		Requeue: extender.RequeueConfig{Enabled: requeue}}), ctx: context.Background()}
	_, err := e.Client.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appNS}}, metav1.CreateOptions{})
	require.NoError(tb, err)
	_, err = e.Client.StorageV1().StorageClasses().Create(e.ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: class}, Provisioner: "petfabric.io/datera",
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}, metav1.CreateOptions{})
	require.NoError(tb, err)
	for _, n := range recoveryNodes {
		e.Report(tb, n, backstore, unreachable, time.Hour)
	}
	for i := range claims {
		name := fmt.Sprintf("rec-%d", i)
		_, err := e.Client.CoreV1().PersistentVolumes().Create(e.ctx, &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: "datera-" + appNS + "-" + name},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				ClaimRef:                      &corev1.ObjectReference{Namespace: appNS, Name: name},
				StorageClassName:              class,
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				PersistentVolumeSource: corev1.PersistentVolumeSource{FlexVolume: &corev1.FlexPersistentVolumeSource{
					Driver: placement.FlexDriver, Options: map[string]string{pvoptions.OptVolumeID: "pf-" + name, pvoptions.OptBackstoreServer: backstore},
				}},
			},
		}, metav1.CreateOptions{})
		require.NoError(tb, err)
		_, err = e.Client.CoreV1().PersistentVolumeClaims(appNS).Create(e.ctx, claimFor(name), metav1.CreateOptions{})
		require.NoError(tb, err)
	}
	require.NoError(tb, wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := e.Client.CoreV1().PersistentVolumeClaims(appNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range list.Items {
			if c.Status.Phase != corev1.ClaimBound {
				return false, nil
			}
		}
		return len(list.Items) == claims, nil
	}), "claims never bound")
	return e
}

// recover runs one recovery: every node reports a refused portal, a pod using claim rec-<i>
// is rejected (its FailedScheduling event is seen, and one more second passes so the pod
// sits in the scheduler's unschedulable pool past its first backoff), then node r1's report
// turns reachable. It returns the time from that Lease write until the pod is bound to r1,
// or cap when it is still pending then.
func (e *recoveryEnv) recover(tb testing.TB, i int, limit time.Duration) time.Duration {
	tb.Helper()
	name := e.reject(tb, i)
	e.Report(tb, recoveryNodes[0], backstore, reachable, time.Hour)
	start := time.Now()
	var node string
	err := wait.PollUntilContextTimeout(e.ctx, 20*time.Millisecond, limit, true, func(ctx context.Context) (bool, error) {
		got, err := e.Client.CoreV1().Pods(appNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		node = got.Spec.NodeName
		return node != "", nil
	})
	took := time.Since(start)
	if err != nil {
		return limit
	}
	require.Equal(tb, recoveryNodes[0], node)
	return took
}

// reject makes every node report a refused portal and creates pod rec-<i> (using claim
// rec-<i>); it returns once the pod was rejected and one more second passed.
func (e *recoveryEnv) reject(tb testing.TB, i int) string {
	tb.Helper()
	for _, n := range recoveryNodes {
		e.Report(tb, n, backstore, unreachable, time.Hour)
	}
	name := fmt.Sprintf("rec-%d", i)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: appNS},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "busybox"}},
			Volumes:    []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name}}}},
		},
	}
	_, err := e.Client.CoreV1().Pods(appNS).Create(e.ctx, p, metav1.CreateOptions{})
	require.NoError(tb, err)
	require.NoError(tb, wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		evs, err := e.Client.CoreV1().Events(appNS).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name + ",reason=FailedScheduling"})
		return err == nil && len(evs.Items) > 0, nil
	}), "pod %s was never rejected", name)
	time.Sleep(time.Second)
	return name
}

var filterRequests = regexp.MustCompile(`(?m)^petfabric_extender_requests_total\{code="200",verb="filter"\} (\d+)$`)

func filterCalls(tb testing.TB, e *recoveryEnv) int {
	tb.Helper()
	m := filterRequests.FindStringSubmatch(e.Metrics(tb))
	require.NotNil(tb, m, "filter request metric missing")
	n, err := strconv.Atoi(m[1])
	require.NoError(tb, err)
	return n
}

// TestPVChangeRetriesRejectedPod: why the trigger leaves PersistentVolume changes (a RWO
// volume released, a PV re-bound) alone. With the trigger off, a pod the extender rejected
// is not asked about again while nothing the scheduler watches changes; a change of a
// PersistentVolume alone makes the scheduler retry it (the extender sees a new filter call).
func TestPVChangeRetriesRejectedPod(t *testing.T) {
	e := startRecovery(t, false, 2)
	e.reject(t, 0)
	before := filterCalls(t, e)
	time.Sleep(3 * time.Second)
	require.Equal(t, before, filterCalls(t, e), "the rejected pod is retried although nothing changed")

	patch := fmt.Sprintf(`{"metadata":{"labels":{"petfabric.test/touched":"%d"}}}`, time.Now().UnixNano())
	_, err := e.Client.CoreV1().PersistentVolumes().Patch(e.ctx, "datera-"+appNS+"-rec-1", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return filterCalls(t, e) > before }, 5*time.Second, 50*time.Millisecond,
		"a PersistentVolume change did not make the scheduler retry the rejected pod")
}

var triggersOK = regexp.MustCompile(`(?m)^petfabric_extender_requeue_triggers_total\{result="ok"\} (\d+)$`)

func triggerWrites(tb testing.TB, e *recoveryEnv) int {
	tb.Helper()
	m := triggersOK.FindStringSubmatch(e.Metrics(tb))
	require.NotNil(tb, m, "requeue trigger metric missing")
	n, err := strconv.Atoi(m[1])
	require.NoError(tb, err)
	return n
}

// TestRecoveryTriggerRequeuesRejectedPod proves the requeue trigger on the real scheduler: a
// pod the extender rejected because every node reports an unreachable portal is placed
// within 5 s of one node's report turning reachable, with no other cluster event to wake
// the scheduler (without the trigger it waits for the scheduler's 5-minute flush; see
// BenchmarkRecoveryRequeue for both measured). The trigger object is the CSIStorageCapacity
// the extender creates in its namespace, and each recovery is one write.
func TestRecoveryTriggerRequeuesRejectedPod(t *testing.T) {
	e := startRecovery(t, true, 2)
	// The first reports were recoveries too (from no report): wait for their write.
	require.Eventually(t, func() bool { return triggerWrites(t, e) == 1 }, 10*time.Second, 50*time.Millisecond)
	for i := range 2 {
		before := triggerWrites(t, e)
		took := e.recover(t, i, 30*time.Second)
		t.Logf("recovery %d: report good → pod bound in %s", i, took)
		require.Less(t, took, 5*time.Second, "rejected pod not placed within 5s of its node's report turning good")
		require.Equal(t, before+1, triggerWrites(t, e), "one trigger write per recovery")
	}
	obj, err := e.Client.StorageV1().CSIStorageCapacities(releaseNS).Get(e.ctx, extender.DefaultRequeueObject, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, extender.RequeueStorageClass, obj.StorageClassName)
	_, err = e.Client.StorageV1().StorageClasses().Get(e.ctx, obj.StorageClassName, metav1.GetOptions{})
	require.Error(t, err, "no StorageClass may carry the trigger's class name")
}

// BenchmarkRecoveryRequeue measures, on the real scheduler, the time from a node's report
// turning good until the pod the extender rejected is bound: 20 recoveries with the requeue
// trigger on, and the baseline (trigger off) in the same run. Without the trigger nothing
// wakes the scheduler before its periodic flush of unschedulable pods (5 minutes), so each
// baseline wait is capped at 60 s and counted as "> cap"; 3 baseline samples suffice to show
// it. Run with -benchtime=1x.
func BenchmarkRecoveryRequeue(b *testing.B) {
	const recoveries, baselineSamples, limit = 20, 3, 60 * time.Second
	for range b.N {
		on := startRecovery(b, true, recoveries)
		var with []time.Duration
		for i := range recoveries {
			with = append(with, on.recover(b, i, limit))
		}
		writes := triggerWrites(b, on)

		off := startRecovery(b, false, baselineSamples)
		var without []time.Duration
		capped := 0
		for i := range baselineSamples {
			d := off.recover(b, i, limit)
			if d >= limit {
				capped++
			}
			without = append(without, d)
		}
		p50, p99 := percentiles(with)
		bp50, _ := percentiles(without)
		b.ReportMetric(p50.Seconds(), "p50-trigger-s")
		b.ReportMetric(p99.Seconds(), "p99-trigger-s")
		b.ReportMetric(float64(writes), "trigger-writes")
		b.ReportMetric(bp50.Seconds(), "p50-baseline-s")
		b.ReportMetric(float64(capped), "baseline-capped-at-60s")
		b.ReportMetric(float64(len(without)), "baseline-samples")
		b.Logf("trigger on: %d recoveries p50 %s p99 %s, %d trigger writes; trigger off: %d samples %v (%d > cap %s)",
			recoveries, p50, p99, writes, len(without), without, capped, limit)
	}
}

func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	s := append([]time.Duration(nil), ds...)
	slices.Sort(s)
	return s[len(s)/2], s[min(len(s)-1, len(s)*99/100)]
}

package reconcile

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/mutate"
)

const otherGate = "example.com/quota"

func gatedPod(name string, gates []string, claims ...string) *corev1.Pod {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name, UID: types.UID("uid-" + name),
		CreationTimestamp: metav1.NewTime(t0)}}
	for _, g := range gates {
		pod.Spec.SchedulingGates = append(pod.Spec.SchedulingGates, corev1.PodSchedulingGate{Name: g})
	}
	for _, c := range claims {
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "v-" + c, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}}})
	}
	return pod
}

func gateClaim(name string, bound bool) *corev1.PersistentVolumeClaim {
	c := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name, UID: types.UID("uid-" + name),
			Annotations: map[string]string{mutate.AnnStatefulSet: "db", mutate.AnnClaimTemplate: "data"}},
		Spec:   corev1.PersistentVolumeClaimSpec{StorageClassName: ptr.To(testClass)},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending},
	}
	if bound {
		c.Spec.VolumeName = mutate.PVName(testNS, name)
		c.Status.Phase = corev1.ClaimBound
	}
	return c
}

func (e *env) podGates(name string) []string {
	e.t.Helper()
	pod, err := e.client.CoreV1().Pods(testNS).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(e.t, err)
	var out []string
	for _, g := range pod.Spec.SchedulingGates {
		out = append(out, g.Name)
	}
	return out
}

func (e *env) podPatches() int {
	n := 0
	for _, a := range e.client.Actions() {
		if a.GetResource().Resource == "pods" && a.GetVerb() == "patch" {
			n++
		}
	}
	return n
}

// drainQueue empties the loop's queue and returns what was in it.
func (e *env) drainQueue() []item {
	var out []item
	for e.c.queue.Len() > 0 {
		it, _ := e.c.queue.Get()
		e.c.queue.Done(it)
		e.c.queue.Forget(it)
		out = append(out, it)
	}
	return out
}

// TestSchedulingGateRemoval: a pet behind the petfabric gate keeps it while its claim is
// Pending (after GateEventAfter, one Event names the claim, never a second for the same
// claims); the claim turning Bound queues the pod (claim informer event), and the sync then
// removes exactly the petfabric gate — the pod's other gate stays — with one patch. The pod
// informer runs although fencing is off (no report namespace).
func TestSchedulingGateRemoval(t *testing.T) {
	sts := statefulSet("db", 1)
	sc := storageClass(testClass, corev1.PersistentVolumeReclaimRetain, nil)
	pv := managedPV(t, sts, sc, 0, corev1.VolumeAvailable, t0)
	claim := gateClaim("data-db-0", false)
	pod := gatedPod("db-0", []string{otherGate, mutate.SchedulingGate}, "data-db-0")
	e := newEnv(t, []runtime.Object{namespace(testNS, nil), sc, sts, pv, claim, pod}, func(o *Options) {
		o.SchedulingGate = true
		o.ReportNamespace = ""
		o.GateEventAfter = 30 * time.Second
	}).start()
	require.Nil(t, e.c.reports, "fencing stays off")
	e.waitFor("pod in cache", func() bool { _, ok, _ := e.c.podIndexer.GetByKey(testNS + "/db-0"); return ok })
	assert.Contains(t, e.drainQueue(), item{kindGate, testNS + "/db-0"}, "a gated pod is queued when seen")

	after, err := e.c.syncGate(e.ctx, testNS+"/db-0")
	require.NoError(t, err)
	assert.Equal(t, 30*time.Second, after, "checked again when the event is due")
	assert.Zero(t, e.podPatches())
	assert.Empty(t, e.events())

	e.clock.Add(31 * time.Second)
	for range 3 {
		after, err = e.c.syncGate(e.ctx, testNS+"/db-0")
		require.NoError(t, err)
		assert.Zero(t, after)
	}
	evs := e.events()
	require.Len(t, evs, 1, "one event, not a storm: %v", evs)
	assert.Contains(t, evs[0], "Warning "+EventWaitingForClaims)
	assert.Contains(t, evs[0], "data-db-0")
	assert.Contains(t, evs[0], "involvedObject{kind=Pod,name=db-0}")
	assert.Zero(t, e.podPatches())

	_, err = e.client.CoreV1().PersistentVolumeClaims(testNS).Update(context.Background(), gateClaim("data-db-0", true), metav1.UpdateOptions{})
	require.NoError(t, err)
	var queued []item
	e.waitFor("the bound claim queues its gated pod", func() bool {
		queued = append(queued, e.drainQueue()...)
		for _, it := range queued {
			if it == (item{kindGate, testNS + "/db-0"}) {
				return true
			}
		}
		return false
	})
	_, err = e.c.syncGate(e.ctx, testNS+"/db-0")
	require.NoError(t, err)
	assert.Equal(t, []string{otherGate}, e.podGates("db-0"), "only the petfabric gate goes")
	assert.Equal(t, 1, e.podPatches())
	assert.Equal(t, 1.0, testutil.ToFloat64(e.r.metrics.gatesRemoved))
}

// TestSchedulingGateCases: which gated pods lose the gate at once and which keep it.
func TestSchedulingGateCases(t *testing.T) {
	tests := []struct {
		name   string
		claims []runtime.Object
		pod    *corev1.Pod
		gates  []string // after the sync
	}{
		{"every claim bound: removed", []runtime.Object{gateClaim("data-db-0", true)},
			gatedPod("db-0", []string{mutate.SchedulingGate}, "data-db-0"), nil},
		{"a foreign claim does not hold the gate", []runtime.Object{&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "scratch"}}},
			gatedPod("db-0", []string{mutate.SchedulingGate}, "scratch"), nil},
		{"one of two claims unbound: kept", []runtime.Object{gateClaim("data-db-0", true), gateClaim("logs-db-0", false)},
			gatedPod("db-0", []string{mutate.SchedulingGate}, "data-db-0", "logs-db-0"), []string{mutate.SchedulingGate}},
		{"claim not stored yet but its PV pre-bound: kept", nil,
			gatedPod("db-0", []string{mutate.SchedulingGate}, "data-db-0"), []string{mutate.SchedulingGate}},
		{"not our gate: left alone", []runtime.Object{gateClaim("data-db-0", true)},
			gatedPod("db-0", []string{otherGate}, "data-db-0"), []string{otherGate}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sts := statefulSet("db", 1)
			sc := storageClass(testClass, corev1.PersistentVolumeReclaimRetain, nil)
			objs := append([]runtime.Object{namespace(testNS, nil), sc, sts, managedPV(t, sts, sc, 0, corev1.VolumeAvailable, t0), tt.pod}, tt.claims...)
			e := newEnv(t, objs, func(o *Options) { o.SchedulingGate = true }).start()
			e.waitFor("pod in cache", func() bool { _, ok, _ := e.c.podIndexer.GetByKey(testNS + "/db-0"); return ok })
			_, err := e.c.syncGate(e.ctx, testNS+"/db-0")
			require.NoError(t, err)
			assert.Equal(t, tt.gates, e.podGates("db-0"))
		})
	}
}

// TestSchedulingGateOff: with the option off the loop never patches a pod, gated or not.
func TestSchedulingGateOff(t *testing.T) {
	pod := gatedPod("db-0", []string{mutate.SchedulingGate}, "data-db-0")
	e := newEnv(t, []runtime.Object{namespace(testNS, nil), gateClaim("data-db-0", true), pod}, func(o *Options) {
		o.ReportNamespace = reportNS
	}).start()
	e.waitFor("pod in cache", func() bool { _, ok, _ := e.c.podIndexer.GetByKey(testNS + "/db-0"); return ok })
	for _, it := range e.drainQueue() {
		assert.NotEqual(t, kindGate, it.kind)
	}
	assert.Zero(t, e.podPatches())
}

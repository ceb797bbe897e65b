package reconcile

import (
	"cmp"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/mutate"
)

func TestOrphans(t *testing.T) {
	del := storageClass(testClass, corev1.PersistentVolumeReclaimDelete, nil)
	ret := storageClass(testClass, corev1.PersistentVolumeReclaimRetain, nil)
	web := statefulSet("web", 3)
	old := t0.Add(-10 * time.Minute)
	young := t0.Add(-time.Minute)
	pending := func(claim string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: claim},
			Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: ptr.To(testClass)}}
	}
	boundElsewhere := pending("data-web-4")
	boundElsewhere.Spec.VolumeName = "another-pv"

	tests := []struct {
		name       string
		pv         *corev1.PersistentVolume
		sts        *appsv1.StatefulSet // nil: gone
		extra      []runtime.Object
		wantDelete bool
		// seenFor is how long after the first look the second one happens (default: the grace).
		seenFor   time.Duration
		wantAfter time.Duration // requeue after the second look
	}{
		{name: "StatefulSet gone, older than grace: deleted", pv: managedPV(t, web, del, 1, corev1.VolumeAvailable, old), wantDelete: true},
		{name: "StatefulSet gone, seen for less than the grace: kept, looked at again when the grace ends",
			pv: managedPV(t, web, del, 1, corev1.VolumeAvailable, old), seenFor: time.Minute, wantAfter: 4*time.Minute + 100*time.Millisecond},
		{name: "StatefulSet gone, young PV: deleted once seen for the grace (counted from when seen)",
			pv: managedPV(t, web, del, 1, corev1.VolumeAvailable, young), wantDelete: true},
		{name: "ordinal above replicas: deleted", pv: managedPV(t, web, del, 4, corev1.VolumeAvailable, old), sts: statefulSet("web", 3), wantDelete: true},
		{name: "ordinal within replicas: kept", pv: managedPV(t, web, del, 2, corev1.VolumeAvailable, old), sts: statefulSet("web", 3)},
		{name: "ordinal below spec.ordinals.start: deleted", pv: managedPV(t, web, del, 0, corev1.VolumeAvailable, old),
			sts: func() *appsv1.StatefulSet {
				s := statefulSet("web", 3)
				s.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: 1}
				return s
			}(), wantDelete: true},
		{name: "claim template gone from a re-created StatefulSet: deleted", pv: managedPV(t, web, del, 0, corev1.VolumeAvailable, old),
			sts: statefulSet("web", 3, claimTemplate("logs", ptr.To(testClass))), wantDelete: true},
		{name: "bound: kept", pv: managedPV(t, web, del, 1, corev1.VolumeBound, old)},
		// An Available orphan never served a claim: only the PV object goes, whatever the policy.
		{name: "Retain orphan: deleted (the PV only)", pv: managedPV(t, web, ret, 1, corev1.VolumeAvailable, old), wantDelete: true},
		{name: "Retain and Released: kept", pv: managedPV(t, web, ret, 1, corev1.VolumeReleased, old)},
		{name: "its claim exists and may still bind: kept", pv: managedPV(t, web, del, 4, corev1.VolumeAvailable, old),
			sts: statefulSet("web", 3), extra: []runtime.Object{pending("data-web-4")}},
		{name: "its claim exists but is bound to another PV: deleted", pv: managedPV(t, web, del, 4, corev1.VolumeAvailable, old),
			sts: statefulSet("web", 3), extra: []runtime.Object{boundElsewhere}, wantDelete: true},
		{name: "not managed by petfabric: kept", pv: func() *corev1.PersistentVolume {
			pv := managedPV(t, web, del, 1, corev1.VolumeAvailable, old)
			pv.Labels = map[string]string{"x": "y"}
			return pv
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := append([]runtime.Object{namespace(testNS, nil), del, tc.pv}, tc.extra...)
			if tc.sts != nil {
				objs = append(objs, tc.sts)
			}
			e := newEnv(t, objs).start()
			e.waitFor("PV in cache", func() bool { _, err := e.c.pvLister.Get(tc.pv.Name); return err == nil || tc.pv.Labels["x"] == "y" })
			// First look: an orphan is only noted; the grace period starts now.
			after, err := e.c.syncPV(context.Background(), tc.pv.Name)
			require.NoError(t, err)
			if tc.wantDelete || tc.wantAfter > 0 {
				assert.Equal(t, 5*time.Minute+100*time.Millisecond, after, "looked at again when the grace ends")
			} else {
				assert.Zero(t, after)
			}
			assert.True(t, e.pvExists(tc.pv.Name), "never deleted at first sight")
			e.clock.Add(cmp.Or(tc.seenFor, 5*time.Minute))
			after, err = e.c.syncPV(context.Background(), tc.pv.Name)
			require.NoError(t, err)
			assert.Equal(t, tc.wantAfter, after)
			assert.Equal(t, !tc.wantDelete, e.pvExists(tc.pv.Name))
			assert.Empty(t, e.datera.Calls(), "an Available orphan's Datera volume is never deleted")
			evs := e.events()
			if tc.wantDelete {
				assert.Equal(t, 1.0, testutil.ToFloat64(e.r.metrics.orphansDeleted))
				require.Len(t, eventsWith(evs, "Normal "+EventDeletedOrphan), map[bool]int{true: 2, false: 1}[tc.sts != nil], "%q", evs)
				assert.Contains(t, eventsWith(evs, EventDeletedOrphan)[0], "its Datera volume, if any, is kept")
				// The delete carried the precondition.
				var pre *metav1.Preconditions
				for _, a := range e.client.Actions() {
					if d, ok := a.(k8stesting.DeleteActionImpl); ok && d.Resource.Resource == "persistentvolumes" {
						pre = d.DeleteOptions.Preconditions
					}
				}
				require.NotNil(t, pre)
				assert.Equal(t, tc.pv.UID, *pre.UID)
				assert.Equal(t, tc.pv.ResourceVersion, *pre.ResourceVersion)
			} else {
				assert.Empty(t, e.pvWrites())
				assert.Empty(t, evs)
			}
		})
	}
}

// A PV that changed after the cache judged it (here: it just got bound) is not deleted.
func TestOrphanPreconditionConflict(t *testing.T) {
	del := storageClass(testClass, corev1.PersistentVolumeReclaimDelete, nil)
	web := statefulSet("web", 1)
	stale := managedPV(t, web, del, 3, corev1.VolumeAvailable, t0.Add(-time.Hour))
	live := stale.DeepCopy()
	live.ResourceVersion = "11"
	live.Status.Phase = corev1.VolumeBound
	e := newEnv(t, []runtime.Object{namespace(testNS, nil), live}).start()
	e.c.observeAbsent(stale.UID)
	e.clock.Add(5 * time.Minute)

	after, err := e.c.syncAvailable(context.Background(), stale)
	require.NoError(t, err)
	assert.Equal(t, preconditionRetry, after, "judged again soon")
	assert.True(t, e.pvExists(stale.Name), "a PV that changed since it was judged is never deleted")
	assert.Equal(t, 1.0, e.errorsMetric(ReasonPrecondition))
	assert.Zero(t, testutil.ToFloat64(e.r.metrics.orphansDeleted))
	assert.Empty(t, eventsWith(e.events(), EventDeletedOrphan))
}

func releasedPV(t *testing.T, sc *storagev1.StorageClass, n int, phase corev1.PersistentVolumePhase) *corev1.PersistentVolume {
	pv := managedPV(t, statefulSet("web", 3), sc, n, phase, t0.Add(-time.Hour))
	pv.Spec.ClaimRef.UID = types.UID("claim-uid")
	return pv
}

func TestReleased(t *testing.T) {
	del := storageClass(testClass, corev1.PersistentVolumeReclaimDelete, nil)
	ret := storageClass(testClass, corev1.PersistentVolumeReclaimRetain, nil)
	liveClaim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "data-web-1", UID: "claim-uid"}}
	newClaim := liveClaim.DeepCopy()
	newClaim.UID = "a-new-claim"

	tests := []struct {
		name       string
		pv         *corev1.PersistentVolume
		extra      []runtime.Object
		wantDelete bool
	}{
		{name: "Released + Delete: Datera volume, then PV", pv: releasedPV(t, del, 1, corev1.VolumeReleased), wantDelete: true},
		{name: "Failed + Delete (no in-tree deleter for flex): same", pv: releasedPV(t, del, 1, corev1.VolumeFailed), wantDelete: true},
		{name: "claim re-created under the same name (other UID): still released", pv: releasedPV(t, del, 1, corev1.VolumeReleased),
			extra: []runtime.Object{newClaim}, wantDelete: true},
		{name: "Released + Retain: untouched", pv: releasedPV(t, ret, 1, corev1.VolumeReleased)},
		{name: "Failed while its claim still exists: untouched", pv: releasedPV(t, del, 1, corev1.VolumeFailed), extra: []runtime.Object{liveClaim}},
		{name: "Bound + Delete: untouched", pv: releasedPV(t, del, 1, corev1.VolumeBound)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := append([]runtime.Object{namespace(testNS, nil), del, statefulSet("web", 3), tc.pv}, tc.extra...)
			e := newEnv(t, objs).start()
			volumeID := tc.pv.Spec.FlexVolume.Options["volumeID"]
			// The PV must still exist when the Datera volume is deleted.
			var pvAtDateraDelete bool
			e.datera.onDelete = func(string) { pvAtDateraDelete = e.pvExists(tc.pv.Name) }
			e.waitFor("PV in cache", func() bool { _, err := e.c.pvLister.Get(tc.pv.Name); return err == nil })

			_, err := e.c.syncPV(context.Background(), tc.pv.Name)
			require.NoError(t, err)
			evs := e.events()
			if !tc.wantDelete {
				assert.Empty(t, e.datera.Calls())
				assert.True(t, e.pvExists(tc.pv.Name))
				assert.Empty(t, evs)
				return
			}
			assert.Equal(t, []string{volumeID}, e.datera.Calls())
			assert.True(t, pvAtDateraDelete, "the Datera volume goes first; the PV keeps track of it until then")
			assert.False(t, e.pvExists(tc.pv.Name))
			assert.Equal(t, 1.0, testutil.ToFloat64(e.r.metrics.dateraDeleted))
			assert.Equal(t, 1.0, testutil.ToFloat64(e.r.metrics.releasedDeleted))
			assert.Len(t, eventsWith(evs, "Normal DeletedDateraVolume deleted Datera volume "+volumeID), 1, "%q", evs)
			assert.Len(t, eventsWith(evs, "Normal DeletedPersistentVolume deleted PersistentVolume "+tc.pv.Name), 1, "on the StatefulSet: %q", evs)
		})
	}
}

// Datera unreachable: the PV stays, a warning names the error, the metric counts it; the
// workqueue retries with backoff until the Datera delete succeeds, and only then is the PV deleted.
func TestReleasedDateraFailureRetried(t *testing.T) {
	del := storageClass(testClass, corev1.PersistentVolumeReclaimDelete, nil)
	pv := releasedPV(t, del, 1, corev1.VolumeReleased)
	e := newEnv(t, []runtime.Object{namespace(testNS, nil), del, pv})
	unavailable := errors.Join(errors.New("HTTP 503"), datera.ErrUnavailable)
	e.datera.errs = []error{unavailable, unavailable, unavailable}
	var pvDuringFailures []bool
	e.datera.onDelete = func(string) { pvDuringFailures = append(pvDuringFailures, e.pvExists(pv.Name)) }

	done := make(chan error, 1)
	go func() { done <- e.r.RunController(e.ctx) }()
	e.waitFor("PV deleted", func() bool { return !e.pvExists(pv.Name) })
	e.cancel()
	require.NoError(t, <-done)

	volumeID := pv.Spec.FlexVolume.Options["volumeID"]
	assert.Equal(t, []string{volumeID, volumeID, volumeID, volumeID}, e.datera.Calls(), "three failures, then success")
	assert.Equal(t, []bool{true, true, true, true}, pvDuringFailures, "the PV is kept while Datera fails")
	assert.Equal(t, 3.0, e.errorsMetric(ReasonDateraDelete))
	assert.Equal(t, 1.0, testutil.ToFloat64(e.r.metrics.dateraDeleted))
	evs := e.events()
	warnings := eventsWith(evs, "Warning DateraDeleteFailed deleting Datera volume "+volumeID+" failed (will retry)")
	assert.Len(t, warnings, 3, "%q", evs)
	assert.Contains(t, warnings[0], "kind=PersistentVolume,name="+pv.Name, "the warning is on the PV")
}

// The PV changed between the Datera delete and the PV delete: it is not deleted now; the next
// pass (Datera delete is idempotent) finishes.
func TestReleasedPreconditionConflict(t *testing.T) {
	del := storageClass(testClass, corev1.PersistentVolumeReclaimDelete, nil)
	pv := releasedPV(t, del, 1, corev1.VolumeReleased)
	e := newEnv(t, []runtime.Object{namespace(testNS, nil), del, pv}).start()
	e.waitFor("PV in cache", func() bool { _, err := e.c.pvLister.Get(pv.Name); return err == nil })
	e.datera.onDelete = func(string) {
		// Someone touches the PV after it was read (e.g. the PV controller's status update).
		obj, err := e.client.Tracker().Get(corev1.SchemeGroupVersion.WithResource("persistentvolumes"), "", pv.Name)
		require.NoError(t, err)
		upd := obj.(*corev1.PersistentVolume).DeepCopy()
		upd.ResourceVersion = "12"
		upd.Annotations["touched"] = "yes"
		require.NoError(t, e.client.Tracker().Update(corev1.SchemeGroupVersion.WithResource("persistentvolumes"), upd, ""))
	}
	after, err := e.c.syncPV(context.Background(), pv.Name)
	require.NoError(t, err)
	assert.Equal(t, preconditionRetry, after)
	assert.True(t, e.pvExists(pv.Name), "not deleted: it changed after it was judged")
	assert.Equal(t, 1.0, e.errorsMetric(ReasonPrecondition))

	e.datera.onDelete = nil
	_, err = e.c.syncPV(context.Background(), pv.Name)
	require.NoError(t, err)
	assert.False(t, e.pvExists(pv.Name), "the next pass deletes it")
	assert.Len(t, e.datera.Calls(), 2)
}

func TestReleasedMalformed(t *testing.T) {
	del := storageClass(testClass, corev1.PersistentVolumeReclaimDelete, nil)
	pv := releasedPV(t, del, 1, corev1.VolumeReleased)
	delete(pv.Spec.FlexVolume.Options, "volumeID")
	e := newEnv(t, []runtime.Object{namespace(testNS, nil), del, pv}).start()
	e.waitFor("PV in cache", func() bool { _, err := e.c.pvLister.Get(pv.Name); return err == nil })
	for range 2 {
		_, err := e.c.syncPV(context.Background(), pv.Name)
		require.NoError(t, err)
	}
	assert.True(t, e.pvExists(pv.Name))
	assert.Empty(t, e.datera.Calls())
	assert.Len(t, eventsWith(e.events(), "Warning MalformedPersistentVolume"), 1, "warned once")
}

// The deleted-PV callback re-creates a PV a live StatefulSet still needs (e.g. after its
// Released predecessor was deleted), through the whole loop.
func TestLoopRecreatesNeededPV(t *testing.T) {
	del := storageClass(testClass, corev1.PersistentVolumeReclaimDelete, nil)
	web := statefulSet("web", 2)
	e := newEnv(t, []runtime.Object{namespace(testNS, nil), del, web})
	done := make(chan error, 1)
	go func() { done <- e.r.RunController(e.ctx) }()
	name := planned(t, web, del, "data", 1).Name
	e.waitFor("PVs created", func() bool { return e.pvExists(name) })
	require.NoError(t, e.client.CoreV1().PersistentVolumes().Delete(context.Background(), name, metav1.DeleteOptions{}))
	e.waitFor("PV re-created", func() bool { return e.pvExists(name) })
	e.cancel()
	require.NoError(t, <-done)
	assert.Equal(t, 3.0, testutil.ToFloat64(e.r.metrics.pvsCreated))
}

// The informer event handlers drive the loop without waiting for a resync (1m by default).
func TestLoopHandlers(t *testing.T) {
	del := storageClass(testClass, corev1.PersistentVolumeReclaimDelete, nil)
	old := t0.Add(-time.Hour)
	run := func(t *testing.T, objs ...runtime.Object) *env {
		e := newEnv(t, objs, func(o *Options) {
			o.Mutate.DefaultClass = testClass
			o.OrphanGrace, o.now = 50*time.Millisecond, time.Now
		})
		done := make(chan error, 1)
		go func() { done <- e.r.RunController(e.ctx) }()
		t.Cleanup(func() { e.cancel(); require.NoError(t, <-done) })
		return e
	}
	ctx := context.Background()

	t.Run("StatefulSet deleted: its Available PVs become orphans", func(t *testing.T) {
		web := statefulSet("web", 2)
		pv0, pv1 := managedPV(t, web, del, 0, corev1.VolumeAvailable, old), managedPV(t, web, del, 1, corev1.VolumeAvailable, old)
		e := run(t, namespace(testNS, nil), del, web, pv0, pv1)
		time.Sleep(200 * time.Millisecond)
		assert.True(t, e.pvExists(pv0.Name) && e.pvExists(pv1.Name), "needed while the StatefulSet exists")
		require.NoError(t, e.client.AppsV1().StatefulSets(testNS).Delete(ctx, "web", metav1.DeleteOptions{}))
		e.waitFor("orphans deleted", func() bool { return !e.pvExists(pv0.Name) && !e.pvExists(pv1.Name) })
		assert.Zero(t, testutil.ToFloat64(e.r.metrics.pvsCreated), "nothing re-created for a deleted StatefulSet")
	})

	t.Run("claim deleted: the PV of the PVC path is an orphan", func(t *testing.T) {
		claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "loose"},
			Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: ptr.To(testClass)}}
		pv := managedPV(t, statefulSet("web", 1), del, 0, corev1.VolumeAvailable, old)
		pv.Name = mutate.PVName(testNS, "loose")
		pv.Spec.ClaimRef.Name = "loose"
		for _, k := range []string{mutate.LabelStatefulSet, mutate.LabelOrdinal, mutate.LabelClaimTemplate} {
			delete(pv.Labels, k)
		}
		delete(pv.Annotations, mutate.AnnStatefulSet)
		delete(pv.Annotations, mutate.AnnClaimTemplate)
		e := run(t, namespace(testNS, nil), del, claim, pv)
		time.Sleep(200 * time.Millisecond)
		assert.True(t, e.pvExists(pv.Name), "kept while its claim exists")
		require.NoError(t, e.client.CoreV1().PersistentVolumeClaims(testNS).Delete(ctx, "loose", metav1.DeleteOptions{}))
		e.waitFor("orphan deleted", func() bool { return !e.pvExists(pv.Name) })
		assert.Len(t, eventsWith(e.events(), "its claim app/loose does not exist"), 1)
	})

	t.Run("a Datera StorageClass created late: the StatefulSet gets its PVs", func(t *testing.T) {
		web := statefulSet("web", 2)
		e := run(t, namespace(testNS, nil), web)
		time.Sleep(200 * time.Millisecond)
		assert.Empty(t, e.pvNames())
		_, err := e.client.StorageV1().StorageClasses().Create(ctx, del, metav1.CreateOptions{})
		require.NoError(t, err)
		e.waitFor("PVs created", func() bool { return len(e.pvNames()) == 2 })
	})

	t.Run("namespace opted in later: unpinned templates are reported", func(t *testing.T) {
		web := statefulSet("web", 2, claimTemplate("data", nil))
		e := run(t, namespace(testNS, nil), del, web)
		time.Sleep(200 * time.Millisecond)
		assert.Empty(t, eventsWith(e.events(), EventNotPinned))
		_, err := e.client.CoreV1().Namespaces().Update(ctx, namespace(testNS, map[string]string{mutate.InjectLabel: "enabled"}), metav1.UpdateOptions{})
		require.NoError(t, err)
		var evs []string
		e.waitFor("warning", func() bool { evs = append(evs, e.events()...); return len(eventsWith(evs, EventNotPinned)) > 0 })
		assert.Empty(t, e.pvNames(), "no PV: its claims could not bind one")
	})
}

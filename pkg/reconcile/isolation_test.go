package reconcile

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// heldWatches delays the informers' watch events of one resource while held, as a lagging
// watch stream does: the API has the object, the loop's cache does not.
type heldWatches struct {
	mu   sync.Mutex
	gate chan struct{} // closed when released
}

func holdWatches(client *fake.Clientset, resource string) *heldWatches {
	h := &heldWatches{gate: make(chan struct{})}
	client.PrependWatchReactor(resource, func(a k8stesting.Action) (bool, watch.Interface, error) {
		var opts metav1.ListOptions
		if wa, ok := a.(k8stesting.WatchActionImpl); ok {
			opts = wa.ListOptions
		}
		inner, err := client.Tracker().Watch(a.GetResource(), a.GetNamespace(), opts)
		if err != nil {
			return false, nil, err
		}
		out := make(chan watch.Event)
		stop := make(chan struct{})
		go func() {
			defer close(out)
			for ev := range inner.ResultChan() {
				h.mu.Lock()
				gate := h.gate
				h.mu.Unlock()
				select {
				case <-gate:
				case <-stop:
					return
				}
				select {
				case out <- ev:
				case <-stop:
					return
				}
			}
		}()
		return true, &proxyWatch{inner: inner, out: out, stop: stop}, nil
	})
	return h
}

func (h *heldWatches) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.gate)
}

type proxyWatch struct {
	inner watch.Interface
	out   chan watch.Event
	stop  chan struct{}
	once  sync.Once
}

func (p *proxyWatch) Stop() {
	p.once.Do(func() { close(p.stop); p.inner.Stop() })
}

func (p *proxyWatch) ResultChan() <-chan watch.Event { return p.out }

// withOwner records the owner (contract v2) on a PV, as the webhook writes it; "" removes
// it (a PV made before owners were recorded).
func withOwner(pv *corev1.PersistentVolume, namespaceUID string) *corev1.PersistentVolume {
	owner := pvoptions.Owner{ClusterID: testCluster, Namespace: pv.Spec.ClaimRef.Namespace, Claim: pv.Spec.ClaimRef.Name, NamespaceUID: namespaceUID}
	if namespaceUID == "" {
		for k := range owner.Options() {
			delete(pv.Spec.FlexVolume.Options, k)
		}
		return pv
	}
	maps.Copy(pv.Spec.FlexVolume.Options, owner.Options())
	return pv
}

func namespaceWithUID(name, uid string) *corev1.Namespace {
	ns := namespace(name, nil)
	ns.UID = types.UID(uid)
	return ns
}

// claimPVOnly turns a StatefulSet PV into one of the PVC-CREATE path (no StatefulSet recorded).
func claimPVOnly(pv *corev1.PersistentVolume, claim string) *corev1.PersistentVolume {
	pv.Name = mutate.PVName(testNS, claim)
	pv.Spec.ClaimRef.Name = claim
	for _, k := range []string{mutate.LabelStatefulSet, mutate.LabelOrdinal, mutate.LabelClaimTemplate} {
		delete(pv.Labels, k)
	}
	delete(pv.Annotations, mutate.AnnStatefulSet)
	delete(pv.Annotations, mutate.AnnClaimTemplate)
	return pv
}

func pendingClaim(name, uid string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name, UID: types.UID(uid)},
		Spec:       corev1.PersistentVolumeClaimSpec{StorageClassName: ptr.To(testClass)},
		Status:     corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending},
	}
}

func (e *env) getPV(name string) *corev1.PersistentVolume {
	e.t.Helper()
	pv, err := e.client.CoreV1().PersistentVolumes().Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(e.t, err)
	return pv
}

// Issue 9 #10, the suspected race, proven: a Released Retain PV (made long ago) is freed for
// its re-created claim before that claim is stored (as the PVC admission hook did), and the
// loop's claim watch lags. The PV turns Available, is old, and its claim is absent from the
// cache: the old loop deleted it at once (grace counted from the PV's creation, claim judged
// from the cache), stranding the claim. Now the grace counts from when the loop first saw the
// PV Available without its claim, and the claim is read live before any delete.
func TestOrphanGraceDoesNotDeleteFreedPVWhileClaimEventLags(t *testing.T) {
	ret := storageClass(testClass, corev1.PersistentVolumeReclaimRetain, nil)
	pv := claimPVOnly(managedPV(t, statefulSet("web", 1), ret, 0, corev1.VolumeReleased, t0.Add(-24*time.Hour)), "loose")
	pv.Spec.ClaimRef.UID = "old-claim"
	client := func(*Options) {}
	e := newEnv(t, []runtime.Object{namespace(testNS, nil), ret, pv}, client)
	held := holdWatches(e.client, "persistentvolumeclaims")
	e.start()
	e.waitFor("PV in cache", func() bool { _, err := e.c.pvLister.Get(pv.Name); return err == nil })

	// The hook frees the PV before the claim is stored: claimRef.uid dropped, PV Available.
	freed := e.getPV(pv.Name)
	freed.Spec.ClaimRef.UID = ""
	freed.Status.Phase = corev1.VolumeAvailable
	freed.ResourceVersion = "11"
	_, err := e.client.CoreV1().PersistentVolumes().Update(context.Background(), freed, metav1.UpdateOptions{})
	require.NoError(t, err)
	e.waitFor("freed PV in cache", func() bool {
		p, err := e.c.pvLister.Get(pv.Name)
		return err == nil && p.Status.Phase == corev1.VolumeAvailable
	})

	after, err := e.c.syncPV(context.Background(), pv.Name)
	require.NoError(t, err)
	assert.True(t, e.pvExists(pv.Name), "a PV just freed for a claim being stored must not be deleted as an orphan")
	assert.Equal(t, 5*time.Minute+100*time.Millisecond, after, "the grace counts from now, when the loop first saw it so")

	// The claim is stored; the loop's watch still lags behind it past the grace period.
	_, err = e.client.CoreV1().PersistentVolumeClaims(testNS).Create(context.Background(), pendingClaim("loose", "new-claim"), metav1.CreateOptions{})
	require.NoError(t, err)
	e.clock.Add(5*time.Minute + time.Second)
	_, err = e.c.syncPV(context.Background(), pv.Name)
	require.NoError(t, err)
	assert.True(t, e.pvExists(pv.Name), "the claim, read live, exists: never delete its PV on a stale cache")
	assert.Zero(t, testutil.ToFloat64(e.r.metrics.orphansDeleted))

	held.release()
	e.waitFor("claim in cache", func() bool { _, err := e.c.pvcLister.PersistentVolumeClaims(testNS).Get("loose"); return err == nil })
	after, err = e.c.syncPV(context.Background(), pv.Name)
	require.NoError(t, err)
	assert.Zero(t, after)
	assert.True(t, e.pvExists(pv.Name))
	assert.Empty(t, eventsWith(e.events(), EventDeletedOrphan))
}

// The same race through a StatefulSet: it was scaled up again while both the StatefulSet and
// the claim events lag; the cached StatefulSet still says the ordinal is outside its replicas.
func TestOrphanRaceStatefulSetScaleUpWhileEventsLag(t *testing.T) {
	ret := storageClass(testClass, corev1.PersistentVolumeReclaimRetain, nil)
	web := statefulSet("web", 2)
	pv := managedPV(t, statefulSet("web", 3), ret, 2, corev1.VolumeReleased, t0.Add(-24*time.Hour))
	pv.Spec.ClaimRef.UID = "old-claim"
	e := newEnv(t, []runtime.Object{namespace(testNS, nil), ret, web, pv})
	heldClaims := holdWatches(e.client, "persistentvolumeclaims")
	heldSets := holdWatches(e.client, "statefulsets")
	e.start()
	e.waitFor("PV in cache", func() bool { _, err := e.c.pvLister.Get(pv.Name); return err == nil })

	scaled := web.DeepCopy()
	scaled.Spec.Replicas = ptr.To[int32](3)
	_, err := e.client.AppsV1().StatefulSets(testNS).Update(context.Background(), scaled, metav1.UpdateOptions{})
	require.NoError(t, err)
	freed := e.getPV(pv.Name)
	freed.Spec.ClaimRef.UID = ""
	freed.Status.Phase = corev1.VolumeAvailable
	freed.ResourceVersion = "11"
	_, err = e.client.CoreV1().PersistentVolumes().Update(context.Background(), freed, metav1.UpdateOptions{})
	require.NoError(t, err)
	e.waitFor("freed PV in cache", func() bool {
		p, err := e.c.pvLister.Get(pv.Name)
		return err == nil && p.Status.Phase == corev1.VolumeAvailable
	})
	for range 2 {
		_, err = e.c.syncPV(context.Background(), pv.Name)
		require.NoError(t, err)
		e.clock.Add(6 * time.Minute)
	}
	assert.True(t, e.pvExists(pv.Name), "the live StatefulSet has the ordinal: the PV is needed")
	heldClaims.release()
	heldSets.release()
}

// Issue 9 #2 and #5: a Released Retain PV is handed to a re-created claim of its name only when
// the claim really exists (live), is Pending, and its namespace is the one the PV was made in
// (same UID). A namespace deleted and re-created under the same name is a new tenant: it must
// not get the old tenant's data.
func TestFreeReleasedPVOnlyForSameOwner(t *testing.T) {
	ret := storageClass(testClass, corev1.PersistentVolumeReclaimRetain, nil)
	del := storageClass(testClass, corev1.PersistentVolumeReclaimDelete, nil)
	released := func(sc *storagev1.StorageClass, owner string) *corev1.PersistentVolume {
		pv := managedPV(t, statefulSet("db", 1), sc, 0, corev1.VolumeReleased, t0.Add(-time.Hour))
		pv.Spec.ClaimRef.UID = "old-claim"
		return withOwner(pv, owner)
	}
	bound := pendingClaim("data-db-0", "new-claim")
	bound.Status.Phase = corev1.ClaimBound
	elsewhere := pendingClaim("data-db-0", "new-claim")
	elsewhere.Spec.VolumeName = "another-pv"
	otherClass := pendingClaim("data-db-0", "new-claim")
	otherClass.Spec.StorageClassName = ptr.To("standard")

	tests := []struct {
		name      string
		pv        *corev1.PersistentVolume
		ns        *corev1.Namespace
		claim     *corev1.PersistentVolumeClaim // nil: none
		wantFreed bool
		wantGone  bool   // reclaim Delete: the loop deletes it instead
		wantEvent string // a warning naming why it was not freed
	}{
		{name: "same namespace (same UID): freed", pv: released(ret, nsUID), ns: namespaceWithUID(testNS, nsUID), claim: pendingClaim("data-db-0", "new-claim"), wantFreed: true},
		{name: "namespace deleted and re-created (new UID): not freed, reported", pv: released(ret, nsUID),
			ns: namespaceWithUID(testNS, "6a0c3a1e-0000-4000-8000-000000000002"), claim: pendingClaim("data-db-0", "new-claim"),
			wantEvent: "it belongs to namespace app with UID " + nsUID + ", and namespace app now has UID 6a0c3a1e-0000-4000-8000-000000000002 (deleted and re-created)"},
		{name: "no recorded owner (made before owners were recorded): not freed, reported", pv: released(ret, ""),
			ns: namespaceWithUID(testNS, nsUID), claim: pendingClaim("data-db-0", "new-claim"), wantEvent: "it records no owner"},
		{name: "no claim: nothing", pv: released(ret, nsUID), ns: namespaceWithUID(testNS, nsUID)},
		{name: "the old claim itself (same UID): nothing", pv: released(ret, nsUID), ns: namespaceWithUID(testNS, nsUID), claim: pendingClaim("data-db-0", "old-claim")},
		{name: "claim not Pending: nothing", pv: released(ret, nsUID), ns: namespaceWithUID(testNS, nsUID), claim: bound},
		{name: "claim pre-bound to another PV: nothing", pv: released(ret, nsUID), ns: namespaceWithUID(testNS, nsUID), claim: elsewhere},
		{name: "claim of another class: nothing", pv: released(ret, nsUID), ns: namespaceWithUID(testNS, nsUID), claim: otherClass},
		{name: "reclaim Delete: never freed (the loop deletes it)", pv: released(del, nsUID), ns: namespaceWithUID(testNS, nsUID), claim: pendingClaim("data-db-0", "new-claim"), wantGone: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := []runtime.Object{tc.ns, ret, tc.pv}
			if tc.claim != nil {
				objs = append(objs, tc.claim)
			}
			e := newEnv(t, objs).start()
			e.waitFor("caches", func() bool {
				_, err := e.c.pvLister.Get(tc.pv.Name)
				_, cerr := e.c.pvcLister.PersistentVolumeClaims(testNS).Get("data-db-0")
				return err == nil && (tc.claim == nil) == apierrors.IsNotFound(cerr)
			})
			for range 2 { // a second pass repeats no event
				_, err := e.c.syncPV(context.Background(), tc.pv.Name)
				require.NoError(t, err)
			}
			if tc.wantGone {
				assert.False(t, e.pvExists(tc.pv.Name))
				assert.Zero(t, testutil.ToFloat64(e.r.metrics.pvsFreed))
				return
			}
			got := e.getPV(tc.pv.Name)
			evs := e.events()
			if tc.wantFreed {
				assert.Empty(t, got.Spec.ClaimRef.UID, "claimRef.uid dropped: the PV controller binds it to the new claim")
				assert.Equal(t, "data-db-0", got.Spec.ClaimRef.Name)
				assert.Equal(t, 1.0, testutil.ToFloat64(e.r.metrics.pvsFreed))
				assert.Len(t, eventsWith(evs, "Normal "+EventFreedPV), 2, "on the PV and the claim: %q", evs)
				return
			}
			assert.Equal(t, types.UID("old-claim"), got.Spec.ClaimRef.UID, "still the old claim's")
			assert.Zero(t, testutil.ToFloat64(e.r.metrics.pvsFreed))
			if tc.wantEvent != "" {
				warns := eventsWith(evs, "Warning "+EventNotFreed)
				assert.Len(t, warns, 2, "once, on the PV and on the claim: %q", evs)
				assert.Len(t, eventsWith(warns, tc.wantEvent), 2, "%q", warns)
				assert.Equal(t, 1.0, testutil.ToFloat64(e.r.metrics.ownerRefused.WithLabelValues(OwnerRefusedFree)))
			} else {
				assert.Empty(t, eventsWith(evs, EventNotFreed))
			}
		})
	}
}

// The PV changed between the read and the free (resourceVersion guard): nothing is
// overwritten; the next pass judges it again.
func TestFreeIsResourceVersionGuarded(t *testing.T) {
	ret := storageClass(testClass, corev1.PersistentVolumeReclaimRetain, nil)
	pv := withOwner(managedPV(t, statefulSet("db", 1), ret, 0, corev1.VolumeReleased, t0.Add(-time.Hour)), nsUID)
	pv.Spec.ClaimRef.UID = "old-claim"
	e := newEnv(t, []runtime.Object{namespaceWithUID(testNS, nsUID), ret, pv, pendingClaim("data-db-0", "new-claim")})
	var once sync.Once
	e.client.PrependReactor("update", "persistentvolumes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		hit := false
		once.Do(func() { hit = true })
		if hit {
			return true, nil, apierrors.NewConflict(corev1.Resource("persistentvolumes"), pv.Name, assert.AnError)
		}
		return false, nil, nil
	})
	e.start()
	e.waitFor("caches", func() bool {
		_, err := e.c.pvcLister.PersistentVolumeClaims(testNS).Get("data-db-0")
		return err == nil
	})
	after, err := e.c.syncPV(context.Background(), pv.Name)
	require.NoError(t, err)
	assert.Equal(t, preconditionRetry, after)
	assert.Equal(t, types.UID("old-claim"), e.getPV(pv.Name).Spec.ClaimRef.UID)
	_, err = e.c.syncPV(context.Background(), pv.Name)
	require.NoError(t, err)
	assert.Empty(t, e.getPV(pv.Name).Spec.ClaimRef.UID)
}

// A claim stored while the loop runs gets its Released PV within seconds (the claim's add
// event), not at the next resync.
func TestFreeReactsToClaimAdd(t *testing.T) {
	ret := storageClass(testClass, corev1.PersistentVolumeReclaimRetain, nil)
	pv := withOwner(managedPV(t, statefulSet("db", 1), ret, 0, corev1.VolumeReleased, t0.Add(-time.Hour)), nsUID)
	pv.Spec.ClaimRef.UID = "old-claim"
	e := newEnv(t, []runtime.Object{namespaceWithUID(testNS, nsUID), ret, pv}, func(o *Options) { o.Resync = time.Hour })
	done := make(chan error, 1)
	go func() { done <- e.r.RunController(e.ctx) }()
	t.Cleanup(func() { e.cancel(); <-done })
	time.Sleep(200 * time.Millisecond)
	_, err := e.client.CoreV1().PersistentVolumeClaims(testNS).Create(context.Background(), pendingClaim("data-db-0", "new-claim"), metav1.CreateOptions{})
	require.NoError(t, err)
	e.waitFor("PV freed", func() bool { return e.getPV(pv.Name).Spec.ClaimRef.UID == "" })
}

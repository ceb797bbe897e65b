package reconcile

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

const (
	reportNS = secretNS
	iqnNodeA = "iqn.1993-08.org.debian:01:node-a"
	iqnNodeB = "iqn.1993-08.org.debian:01:node-b"
)

// reportLease is a node agent's report Lease naming the node's initiator.
func reportLease(t *testing.T, node, initiator string, rv int) *coordinationv1.Lease {
	t.Helper()
	r := placement.Report{Version: placement.ReportVersion, Initiator: initiator, ProbedAt: t0, Backstores: map[string]placement.BackstoreReport{}}
	raw, err := r.Encode()
	require.NoError(t, err)
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: reportNS, Name: placement.LeaseName(node), ResourceVersion: strconv.Itoa(rv),
			Labels: map[string]string{
				placement.LeaseManagedByLabel: placement.LeaseManagedByValue,
				placement.LeaseComponentLabel: placement.LeaseComponentValue,
			},
			Annotations: map[string]string{placement.ReportAnnotation: raw},
		},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node), LeaseDurationSeconds: ptr.To[int32](40), RenewTime: &metav1.MicroTime{Time: t0}},
	}
}

func claimPod(name, node string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name, UID: types.UID("uid-" + name)},
		Spec: corev1.PodSpec{NodeName: node, Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-db-0"}}}}},
		Status: corev1.PodStatus{Phase: phase},
	}
}

// fenceEnv: a Bound ReadWriteOnce PV whose Datera volume (in the simulator) has node-a's
// initiator in its ACL, node reports for node-a and node-b, and the loop's informers synced.
type fenceEnv struct {
	*env
	pv       *corev1.PersistentVolume
	admin    *datera.Client
	si       string
	volumeID string
}

func newFenceEnv(t *testing.T, pods ...runtime.Object) *fenceEnv {
	t.Helper()
	return newFenceEnvWith(t, nil, pods...)
}

// newFenceEnvWith runs before on the env before its informers start.
func newFenceEnvWith(t *testing.T, before func(*env), pods ...runtime.Object) *fenceEnv {
	t.Helper()
	_, backstore := simulator(t)
	ret := storageClass(testClass, corev1.PersistentVolumeReclaimRetain, map[string]string{pvoptions.OptBackstoreServer: backstore})
	pv := managedPV(t, statefulSet("db", 1), ret, 0, corev1.VolumeBound, t0.Add(-time.Hour))
	pv.Spec.ClaimRef.UID = "claim-uid"
	volumeID := pv.Spec.FlexVolume.Options["volumeID"]
	admin, err := datera.New(datera.Config{Endpoint: "http://" + backstore, Username: fake.DefaultUser, Password: fake.DefaultPassword})
	require.NoError(t, err)
	ctx := context.Background()
	ai, err := admin.CreateAppInstance(ctx, datera.CreateVolumeRequest{Name: volumeID, SizeGiB: 1})
	require.NoError(t, err)
	si, _, ok := ai.Volume()
	require.True(t, ok)
	_, err = admin.RegisterInitiator(ctx, iqnNodeA, "node-a", true)
	require.NoError(t, err)
	require.NoError(t, admin.AddInitiatorToACL(ctx, volumeID, si.Name, iqnNodeA))

	objs := append([]runtime.Object{namespace(testNS, nil), ret, pv, credentials(fake.DefaultUser, fake.DefaultPassword),
		reportLease(t, "node-a", iqnNodeA, 100), reportLease(t, "node-b", iqnNodeB, 100)}, pods...)
	e := newEnv(t, objs, func(o *Options) {
		o.DateraFor = nil
		o.ReportNamespace = reportNS
		o.FenceAfter = 2 * time.Minute
	})
	if before != nil {
		before(e)
	}
	e.start()
	e.waitFor("caches", func() bool {
		_, err := e.c.pvLister.Get(pv.Name)
		_, okA := e.c.reports.get("node-a")
		_, okB := e.c.reports.get("node-b")
		return err == nil && okA && okB
	})
	return &fenceEnv{env: e, pv: pv, admin: admin, si: si.Name, volumeID: volumeID}
}

func (f *fenceEnv) acl() []string {
	f.t.Helper()
	acl, err := f.admin.GetACL(context.Background(), f.volumeID, f.si)
	require.NoError(f.t, err)
	return aclInitiators(acl)
}

func (f *fenceEnv) sync() time.Duration {
	f.t.Helper()
	after, err := f.c.syncFence(context.Background(), f.pv.Name)
	require.NoError(f.t, err)
	return after
}

// renew is a node agent's report round: the Lease changes (a new resourceVersion).
func (f *fenceEnv) renew(node, initiator string, rv int) {
	f.t.Helper()
	_, err := f.client.CoordinationV1().Leases(reportNS).Update(context.Background(), reportLease(f.t, node, initiator, rv), metav1.UpdateOptions{})
	require.NoError(f.t, err)
}

// Issue 9 #4: the loop is the only component that fences, and it fences node-a only when
// node-a's report has not been seen to change for longer than FenceAfter, no pod of the claim
// is on node-a, and a pod of the claim waits elsewhere.
func TestFenceRemovesDeadHoldersInitiatorOnlyAfterTimeout(t *testing.T) {
	f := newFenceEnv(t, claimPod("db-0", "node-b", corev1.PodPending))
	after := f.sync()
	assert.Equal(t, []string{iqnNodeA}, f.acl(), "node-a's report was just seen: not fenced")
	assert.Equal(t, 2*time.Minute+100*time.Millisecond, after, "looked at again when the timeout can have passed")

	f.clock.Add(time.Minute)
	f.renew("node-b", iqnNodeB, 101) // node-b lives; node-a says nothing more
	f.sync()
	assert.Equal(t, []string{iqnNodeA}, f.acl(), "1m unchanged < 2m: not fenced")

	f.clock.Add(time.Minute + time.Second)
	assert.Zero(t, f.sync())
	assert.Empty(t, f.acl(), "node-a's initiator is removed from the ACL")
	assert.Equal(t, 1.0, testutil.ToFloat64(f.r.metrics.fences))
	evs := f.events()
	fenced := eventsWith(evs, "Warning "+EventFenced+" fenced node node-a (initiator "+iqnNodeA+") out of volume "+f.volumeID)
	require.Len(t, fenced, 1, "%q", evs)
	assert.Contains(t, fenced[0], "report unchanged for 2m1s (fence-after 2m0s), no pod of the claim on it, pod app/db-0 waiting on node node-b")
	assert.Len(t, eventsWith(evs, "Normal "+EventFenced), 1, "the waiting pod is told too")
}

func TestFenceNeverFencesLiveHolder(t *testing.T) {
	f := newFenceEnv(t, claimPod("db-0", "node-b", corev1.PodPending))
	for i := range 5 {
		f.clock.Add(time.Minute)
		f.renew("node-a", iqnNodeA, 200+i) // node-a's agent keeps reporting
		f.waitFor("renewal seen", func() bool { o, _ := f.c.reports.get("node-a"); return o.rv == strconv.Itoa(200+i) })
		f.sync()
	}
	assert.Equal(t, []string{iqnNodeA}, f.acl(), "a live holder is never fenced, however long a pod waits")
	assert.Zero(t, testutil.ToFloat64(f.r.metrics.fences))
}

func TestFenceNeverFencesWhilePodStillOnNode(t *testing.T) {
	old := claimPod("db-0-old", "node-a", corev1.PodRunning)
	old.DeletionTimestamp = ptr.To(metav1.NewTime(t0))
	old.Finalizers = []string{"kubernetes"}
	f := newFenceEnv(t, old, claimPod("db-0", "node-b", corev1.PodPending))
	f.clock.Add(time.Hour)
	f.sync()
	assert.Equal(t, []string{iqnNodeA}, f.acl(), "a pod being deleted on the holder may still write: not fenced")
}

func TestFenceNeedsAWaitingPod(t *testing.T) {
	f := newFenceEnv(t, claimPod("db-0", "node-b", corev1.PodRunning))
	f.clock.Add(time.Hour)
	f.sync()
	assert.Equal(t, []string{iqnNodeA}, f.acl(), "nobody waits: nothing fenced")
}

// A watch that fell behind must not make a live node look dead: the report is read live
// before the fence, and a changed resourceVersion counts as a sign of life.
func TestFenceRereadsReportLiveBeforeFencing(t *testing.T) {
	var held *heldWatches
	f := newFenceEnvWith(t, func(e *env) { held = holdWatches(e.client, "leases") }, claimPod("db-0", "node-b", corev1.PodPending))
	defer held.release()
	f.clock.Add(3 * time.Minute)
	f.renew("node-a", iqnNodeA, 300) // the API has it; the loop's lagging watch does not
	time.Sleep(100 * time.Millisecond)
	o, _ := f.c.reports.get("node-a")
	require.Equal(t, "100", o.rv, "the cache still has the old report")
	after := f.sync()
	assert.Equal(t, []string{iqnNodeA}, f.acl(), "the live report changed: not fenced")
	assert.Equal(t, 2*time.Minute, after, "the timeout starts again from now")
	assert.Zero(t, testutil.ToFloat64(f.r.metrics.fences))
}

// A pod bound to the holder node that the cache has not seen yet (live list) blocks the fence.
func TestFenceListsHolderPodsLive(t *testing.T) {
	f := newFenceEnv(t, claimPod("db-0", "node-b", corev1.PodPending))
	f.clock.Add(3 * time.Minute)
	hidden := claimPod("db-0-old", "node-a", corev1.PodRunning)
	require.NoError(t, f.client.Tracker().Add(hidden))
	f.c.podIndexer.Delete(hidden) // in case the informer already saw it
	f.sync()
	assert.Equal(t, []string{iqnNodeA}, f.acl(), "a pod still on node-a (live): not fenced")
}

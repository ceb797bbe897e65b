package reconcile

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"

	"github.com/petfabric/petfabric/pkg/cachetransform"
	"github.com/petfabric/petfabric/pkg/mutate"
)

// TestSharedInformers: with UseInformers the loop reads from the process's one factory (as the
// webhook process runs it): it still creates a missed ordinal's PV and re-creates a deleted one
// from events, sees only the PVs it manages (an unmanaged PV bound to the same claim name is in
// the shared cache but neither in the loop's lister nor in its claim index), and a second leadership term works on the same
// informers after the first removed its handlers.
func TestSharedInformers(t *testing.T) {
	del := storageClass(testClass, corev1.PersistentVolumeReclaimDelete, nil)
	web := statefulSet("web", 2)
	foreign := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "foreign", UID: "uid-foreign", ResourceVersion: "3"},
		Spec: corev1.PersistentVolumeSpec{
			ClaimRef:                      &corev1.ObjectReference{Namespace: testNS, Name: "data-web-0"},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
		},
		Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeAvailable},
	}
	e := newEnv(t, []runtime.Object{namespace(testNS, nil), del, web, foreign})
	factory := informers.NewSharedInformerFactoryWithOptions(e.client, time.Minute, cachetransform.Option())
	require.NoError(t, e.r.UseInformers(factory))
	procCtx, stopProc := context.WithCancel(context.Background())
	t.Cleanup(func() { stopProc(); factory.Shutdown() })
	factory.Start(procCtx.Done())
	for typ, ok := range factory.WaitForCacheSync(procCtx.Done()) {
		require.True(t, ok, "%v", typ)
	}

	pv0, pv1 := planned(t, web, del, "data", 0).Name, planned(t, web, del, "data", 1).Name
	runTerm := func() (stop func()) {
		ctx, cancel := context.WithCancel(procCtx)
		done := make(chan error, 1)
		go func() { done <- e.r.runController(ctx) }()
		return func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Fatal("term did not end")
			}
		}
	}

	stop := runTerm()
	e.waitFor("missed ordinals' PVs", func() bool { return e.pvExists(pv0) && e.pvExists(pv1) })
	stop()
	pvInf := factory.Core().V1().PersistentVolumes().Informer()
	assert.False(t, pvInf.IsStopped(), "the shared informers outlive a term")

	// Second term: events still reach the loop.
	stop = runTerm()
	require.NoError(t, e.client.CoreV1().PersistentVolumes().Delete(context.Background(), pv1, metav1.DeleteOptions{}))
	e.waitFor("PV re-created in the second term", func() bool { return e.pvExists(pv1) })

	// The loop's view holds managed PVs only; the shared cache holds all.
	c, err := newController(e.r)
	require.NoError(t, err)
	t.Cleanup(c.removeHandlers)
	_, ok, err := pvInf.GetIndexer().GetByKey("foreign")
	require.NoError(t, err)
	assert.True(t, ok, "the shared cache has the unmanaged PV")
	_, err = c.pvLister.Get("foreign")
	assert.True(t, apierrors.IsNotFound(err), "the loop must not see an unmanaged PV: %v", err)
	listed, err := c.pvLister.List(labels.Everything())
	require.NoError(t, err)
	for _, pv := range listed {
		assert.Equal(t, mutate.ManagedByValue, pv.Labels[mutate.LabelManagedBy], pv.Name)
	}
	byClaim, err := c.pvIndexer.ByIndex(mutate.PVClaimIndex, mutate.ClaimKey(testNS, "data-web-0"))
	require.NoError(t, err)
	require.Len(t, byClaim, 1)
	assert.Equal(t, pv0, byClaim[0].(*corev1.PersistentVolume).Name)
	stop()
}

func TestUseInformersTwiceIsHarmless(t *testing.T) {
	e := newEnv(t, nil, func(o *Options) { o.ReportNamespace = "petfabric" })
	factory := informers.NewSharedInformerFactory(e.client, time.Minute)
	require.NoError(t, e.r.UseInformers(factory))
	require.NoError(t, e.r.UseInformers(factory), "indexes already there are not added again")
	require.Error(t, e.r.UseInformers(nil))
}

package e2e

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/cachetransform"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/reconcile"
	"github.com/petfabric/petfabric/pkg/webhook"
	"github.com/petfabric/petfabric/test/cluster"
)

// TestWebhookInformerMemory measures what the webhook process's informer caches hold in the
// heap, after sync, on a real apiserver loaded with 10 StatefulSets, 1,000 petfabric PVs
// (shaped as the webhook makes them) and their 1,000 claims, marked Bound through the status
// subresource (so each object carries the managed fields of two writers, as in a cluster; the
// PV controller is off, or its 4,000 binding writes at its default 20 QPS would take minutes):
//
//   - before: the webhook's factory plus the reconcile loop's two (all kinds; managed PVs),
//     managed fields kept — the layout before one factory per process;
//   - two factories with managed fields stripped;
//   - one factory, stripped — what cmd/webhook runs now (webhook.NewClusterLookup and
//     reconcile.UseInformers on one factory);
//   - one factory with managed fields kept, to separate the two effects.
//
// It logs the bytes and fails if sharing or stripping does not save memory.
func TestWebhookInformerMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 2,000 objects into a real apiserver")
	}
	c := cluster.Start(t, cluster.Options{
		Nodes:                       kwokNodes(1),
		ExtraControllerManagerFlags: []string{"--controllers=*,-persistentvolume-binder-controller"},
	})
	cfg := rest.CopyConfig(c.Config)
	cfg.QPS, cfg.Burst = 1000, 1000
	client, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	load(ctx, t, client, "shop", 10, 100)

	measure := func(build func(f func(opts ...informers.SharedInformerOption) informers.SharedInformerFactory) []informers.SharedInformerFactory) uint64 {
		var best uint64
		for range 3 { // the smallest of three: other goroutines' garbage only adds
			before := liveHeap()
			stop := make(chan struct{})
			factories := build(func(opts ...informers.SharedInformerOption) informers.SharedInformerFactory {
				return informers.NewSharedInformerFactoryWithOptions(client, time.Minute, opts...)
			})
			for _, f := range factories {
				f.Start(stop)
			}
			for _, f := range factories {
				for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
					require.True(t, ok, "%v did not sync", typ)
				}
			}
			after := liveHeap()
			runtime.KeepAlive(factories)
			close(stop)
			for _, f := range factories {
				f.Shutdown()
			}
			if d := after - before; best == 0 || d < best {
				best = d
			}
		}
		return best
	}
	// The reconcile loop's own factories, as it built them before UseInformers.
	loopFactories := func(f func(...informers.SharedInformerOption) informers.SharedInformerFactory, opts ...informers.SharedInformerOption) []informers.SharedInformerFactory {
		all := f(opts...)
		managed := f(append(opts, informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
			lo.LabelSelector = labels.SelectorFromSet(labels.Set{mutate.LabelManagedBy: mutate.ManagedByValue}).String()
		}))...)
		all.Apps().V1().StatefulSets().Informer()
		all.Core().V1().PersistentVolumeClaims().Informer()
		all.Storage().V1().StorageClasses().Informer()
		all.Core().V1().Namespaces().Informer()
		managed.Core().V1().PersistentVolumes().Informer()
		return []informers.SharedInformerFactory{all, managed}
	}
	webhookFactory := func(f func(...informers.SharedInformerOption) informers.SharedInformerFactory, opts ...informers.SharedInformerOption) informers.SharedInformerFactory {
		wf := f(opts...)
		_, err := webhook.NewClusterLookup(client, wf)
		require.NoError(t, err)
		return wf
	}
	shared := func(opts ...informers.SharedInformerOption) func(f func(...informers.SharedInformerOption) informers.SharedInformerFactory) []informers.SharedInformerFactory {
		return func(f func(...informers.SharedInformerOption) informers.SharedInformerFactory) []informers.SharedInformerFactory {
			// In cmd/webhook's order: the loop registers first, then webhook.Run's lookup.
			wf := f(opts...)
			loop, err := reconcile.New(reconcile.Options{Client: client, Mutate: mutate.Config{ClusterID: "e2e"}})
			require.NoError(t, err)
			require.NoError(t, loop.UseInformers(wf))
			_, err = webhook.NewClusterLookup(client, wf)
			require.NoError(t, err)
			return []informers.SharedInformerFactory{wf}
		}
	}
	two := func(opts ...informers.SharedInformerOption) func(f func(...informers.SharedInformerOption) informers.SharedInformerFactory) []informers.SharedInformerFactory {
		return func(f func(...informers.SharedInformerOption) informers.SharedInformerFactory) []informers.SharedInformerFactory {
			return append(loopFactories(f, opts...), webhookFactory(f, opts...))
		}
	}
	before := measure(two())
	twoStripped := measure(two(cachetransform.Option()))
	oneKept := measure(shared())
	oneStripped := measure(shared(cachetransform.Option()))
	mib := func(b uint64) string { return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20)) }
	t.Logf("live heap held by the webhook process's informer caches (10 StatefulSets, 1,000 PVs, 1,000 claims):")
	t.Logf("  before (webhook + loop factories, managed fields kept): %d bytes (%s)", before, mib(before))
	t.Logf("  two factories, managed fields stripped:                 %d bytes (%s)", twoStripped, mib(twoStripped))
	t.Logf("  one factory, managed fields kept:                       %d bytes (%s)", oneKept, mib(oneKept))
	t.Logf("  one factory, managed fields stripped (now):             %d bytes (%s); saved %d bytes (%s, %.0f%%)",
		oneStripped, mib(oneStripped), before-oneStripped, mib(before-oneStripped), 100*float64(before-oneStripped)/float64(before))
	assert.Less(t, oneStripped, twoStripped, "one factory must hold less than two")
	assert.Less(t, oneKept, before, "one factory must hold less than two")
	assert.Less(t, twoStripped, before, "stripping managed fields must save memory")
	assert.Less(t, oneStripped, oneKept, "stripping managed fields must save memory")
}

// liveHeap is the bytes of live heap objects after a full collection.
func liveHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// load creates ns, a Datera class, sets StatefulSets (spec of `pets` replicas, scaled to 0 so no
// pods run) and, for each pet, a PV as the webhook makes it and its claim, both with a Bound
// status.
func load(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string, sets, pets int) {
	t.Helper()
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cs.StorageV1().StorageClasses().Create(ctx, dateraClass("datera-gold", "127.0.0.1:7717", corev1.PersistentVolumeReclaimRetain, nil), metav1.CreateOptions{})
	require.NoError(t, err)
	type job struct{ set, pet int }
	jobs := make(chan job)
	errs := make(chan error, sets*pets)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for j := range jobs {
				if err := createPet(ctx, cs, ns, fmt.Sprintf("db%d", j.set), j.pet); err != nil {
					errs <- err
				}
			}
		})
	}
	for s := range sets {
		sts := statefulSet(ns, fmt.Sprintf("db%d", s), int32(pets), ptr.To("datera-gold"))
		sts.Spec.Replicas = ptr.To[int32](0)
		_, err := cs.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{})
		require.NoError(t, err)
		for p := range pets {
			jobs <- job{s, p}
		}
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func createPet(ctx context.Context, cs kubernetes.Interface, ns, set string, n int) error {
	claim := fmt.Sprintf("data-%s-%d", set, n)
	pvName := "datera-" + ns + "." + claim
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name: pvName,
			Labels: map[string]string{
				mutate.LabelManagedBy: mutate.ManagedByValue, mutate.LabelNamespace: ns,
			},
			Annotations: map[string]string{mutate.AnnStatefulSet: set, "petfabric.io/ordinal": fmt.Sprint(n)},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              "datera-gold",
			ClaimRef:                      &corev1.ObjectReference{APIVersion: "v1", Kind: "PersistentVolumeClaim", Namespace: ns, Name: claim},
			PersistentVolumeSource: corev1.PersistentVolumeSource{FlexVolume: &corev1.FlexPersistentVolumeSource{
				Driver: "datera/iscsi", FSType: "xfs",
				SecretRef: &corev1.SecretReference{Namespace: credsNamespace, Name: credsSecret},
				Options: map[string]string{
					"volumeID": "e2e_" + ns + "_" + claim, "backstoreServer": "127.0.0.1:7717", "size": "1", "replica": "3",
					"fsType": "xfs", "accessMode": "ReadWriteOnce", "ownerCluster": "e2e", "ownerNamespace": ns,
					"ownerClaim": claim, "ownerNamespaceUID": "3f0c3a2e-8d4b-4d0e-9a55-0f4c1c3b2a10", "template": "data",
				},
			}},
		},
	}
	created, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create PV %s: %w", pvName, err)
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: ns, Labels: map[string]string{"app": set},
			Annotations: map[string]string{"petfabric.io/replica": "3", "petfabric.io/fsType": "xfs"}},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: ptr.To("datera-gold"),
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			VolumeName:       pvName,
		},
	}
	createdPVC, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create claim %s: %w", claim, err)
	}
	created.Spec.ClaimRef.UID, created.Spec.ClaimRef.ResourceVersion = createdPVC.UID, createdPVC.ResourceVersion
	if created, err = cs.CoreV1().PersistentVolumes().Update(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("bind PV %s: %w", pvName, err)
	}
	created.Status.Phase = corev1.VolumeBound
	if _, err := cs.CoreV1().PersistentVolumes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("PV %s status: %w", pvName, err)
	}
	createdPVC.Status = corev1.PersistentVolumeClaimStatus{
		Phase: corev1.ClaimBound, AccessModes: pvc.Spec.AccessModes,
		Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
	}
	if _, err := cs.CoreV1().PersistentVolumeClaims(ns).UpdateStatus(ctx, createdPVC, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("claim %s status: %w", claim, err)
	}
	return nil
}

package webhook

import (
	"context"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/petfabric/petfabric/pkg/mutate"
)

// Lookup is what the handlers read from the cluster. The informer-backed ClusterLookup is the
// production one; tests and benchmarks use a static one.
type Lookup interface {
	DateraClasses() (map[string]mutate.Class, error)
	// Namespace returns a namespace (its labels opt templates in; its UID is the owner every
	// PV records); a namespace that does not exist is an error matching isNotFound.
	Namespace(ctx context.Context, name string) (*corev1.Namespace, error)
	StatefulSet(ctx context.Context, namespace, name string) (*appsv1.StatefulSet, error)
	// StatefulSetLive reads a StatefulSet from the API, never from a cache.
	StatefulSetLive(ctx context.Context, namespace, name string) (*appsv1.StatefulSet, error)
	// PVsForClaim returns the PVs whose claimRef names the claim, whatever their name: a PV of
	// contract version 1 (datera-<ns>-<claim>) is the claim's PV as much as one named now.
	PVsForClaim(namespace, claim string) ([]*corev1.PersistentVolume, error)
}

// PVStore creates and reads PersistentVolumes.
type PVStore interface {
	Create(ctx context.Context, pv *corev1.PersistentVolume) error
	Get(ctx context.Context, name string) (*corev1.PersistentVolume, error)
}

// ClusterLookup answers from informer caches, so an admission call does no API round trip
// for classes and namespaces.
type ClusterLookup struct {
	client       kubernetes.Interface
	classes      storagelisters.StorageClassLister
	namespaces   corelisters.NamespaceLister
	statefulSets appslisters.StatefulSetLister
	pvs          cache.Indexer
	synced       []cache.InformerSynced
}

// NewClusterLookup registers the informers it needs with the factory; start the factory and
// wait for Synced before serving.
func NewClusterLookup(client kubernetes.Interface, f informers.SharedInformerFactory) (*ClusterLookup, error) {
	sc := f.Storage().V1().StorageClasses()
	ns := f.Core().V1().Namespaces()
	sts := f.Apps().V1().StatefulSets()
	pv := f.Core().V1().PersistentVolumes()
	// The reconcile loop, sharing the factory, may have added the same index already.
	if _, ok := pv.Informer().GetIndexer().GetIndexers()[mutate.PVClaimIndex]; !ok {
		if err := pv.Informer().AddIndexers(cache.Indexers{mutate.PVClaimIndex: mutate.PVClaimIndexFunc}); err != nil {
			return nil, fmt.Errorf("index persistent volumes by claim: %w", err)
		}
	}
	return &ClusterLookup{
		client: client, classes: sc.Lister(), namespaces: ns.Lister(), statefulSets: sts.Lister(), pvs: pv.Informer().GetIndexer(),
		synced: []cache.InformerSynced{sc.Informer().HasSynced, ns.Informer().HasSynced, sts.Informer().HasSynced, pv.Informer().HasSynced},
	}, nil
}

// Synced reports whether every cache has synced (readiness).
func (l *ClusterLookup) Synced() bool {
	for _, s := range l.synced {
		if !s() {
			return false
		}
	}
	return true
}

// DateraClasses lists the StorageClasses whose provisioner is petfabric's.
func (l *ClusterLookup) DateraClasses() (map[string]mutate.Class, error) {
	all, err := l.classes.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("list storage classes: %w", err)
	}
	out := map[string]mutate.Class{}
	for _, sc := range all {
		if c, ok := mutate.ClassFromStorageClass(sc); ok {
			out[c.Name] = c
		}
	}
	return out, nil
}

// Namespace reads from the cache, falling back to the API for one created a moment ago.
func (l *ClusterLookup) Namespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	ns, err := l.namespaces.Get(name)
	if err == nil {
		return ns, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("get namespace %s from cache: %w", name, err)
	}
	ns, err = l.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("namespace %s: %w", name, errNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get namespace %s: %w", name, err)
	}
	return ns, nil
}

// PVsForClaim answers from the PV cache's claimRef index. A PV created a moment ago may not
// be in it yet; the create that follows a miss then fails with AlreadyExists for a PV of the
// current name, which ensurePV reads.
func (l *ClusterLookup) PVsForClaim(namespace, claim string) ([]*corev1.PersistentVolume, error) {
	objs, err := l.pvs.ByIndex(mutate.PVClaimIndex, mutate.ClaimKey(namespace, claim))
	if err != nil {
		return nil, fmt.Errorf("look up persistent volumes of claim %s/%s: %w", namespace, claim, err)
	}
	out := make([]*corev1.PersistentVolume, 0, len(objs))
	for _, o := range objs {
		if pv, ok := o.(*corev1.PersistentVolume); ok {
			out = append(out, pv)
		}
	}
	return out, nil
}

// StatefulSet reads from the cache, falling back to the API for one created a moment ago.
func (l *ClusterLookup) StatefulSet(ctx context.Context, namespace, name string) (*appsv1.StatefulSet, error) {
	sts, err := l.statefulSets.StatefulSets(namespace).Get(name)
	if err == nil {
		return sts, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("get statefulset %s/%s from cache: %w", namespace, name, err)
	}
	return l.StatefulSetLive(ctx, namespace, name)
}

// StatefulSetLive reads a StatefulSet from the API.
func (l *ClusterLookup) StatefulSetLive(ctx context.Context, namespace, name string) (*appsv1.StatefulSet, error) {
	sts, err := l.client.AppsV1().StatefulSets(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("statefulset %s/%s: %w", namespace, name, errNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get statefulset %s/%s: %w", namespace, name, err)
	}
	return sts, nil
}

// APIPVStore writes PVs through the API.
type APIPVStore struct{ Client kubernetes.Interface }

// Create creates a PV.
func (s APIPVStore) Create(ctx context.Context, pv *corev1.PersistentVolume) error {
	_, err := s.Client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{FieldManager: "petfabric-webhook"})
	return err
}

// Get reads a PV.
func (s APIPVStore) Get(ctx context.Context, name string) (*corev1.PersistentVolume, error) {
	return s.Client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
}

// isNotFound matches both API NotFound and the lookup's own.
func isNotFound(err error) bool { return apierrors.IsNotFound(err) || errors.Is(err, errNotFound) }

package reconcile

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/petfabric/petfabric/pkg/mutate"
)

// UseInformers makes the loop read from f, the process's one informer factory (the webhook's),
// instead of factories of its own per leadership term: the webhook process then keeps one copy
// of every StatefulSet, PV, claim, class and namespace, not two. Call it before f is started:
// it registers the informers and indexes the loop needs (and, with fencing on, the pods, slimmed
// to what fencing reads), so that f's owner starts them all for the process's life. Each term
// then adds its event handlers (resynced every Options.Resync; create f with that resync period)
// and removes them when it ends.
//
// f must not filter its lists: the loop sees only the PVs it manages (label
// petfabric.io/managed-by) through a filtered view of f's PV informer, as it does with its own.
// The node report Leases stay in a small factory of the loop's own (one namespace, one label).
func (r *Reconciler) UseInformers(f informers.SharedInformerFactory) error {
	if f == nil {
		return errors.New("reconcile: UseInformers needs a factory")
	}
	f.Apps().V1().StatefulSets().Informer()
	f.Core().V1().PersistentVolumeClaims().Informer()
	f.Storage().V1().StorageClasses().Informer()
	f.Core().V1().Namespaces().Informer()
	if err := addMissingIndexers(f.Core().V1().PersistentVolumes().Informer(), pvIndexers); err != nil {
		return fmt.Errorf("reconcile: index persistent volumes: %w", err)
	}
	if r.opts.ReportNamespace != "" || r.opts.SchedulingGate {
		pods := f.Core().V1().Pods().Informer()
		if err := pods.SetTransform(slimPod); err != nil {
			return fmt.Errorf("reconcile: slim pods (call UseInformers before the factory starts): %w", err)
		}
		if err := addMissingIndexers(pods, cache.Indexers{byClaim: indexPodByClaim}); err != nil {
			return fmt.Errorf("reconcile: index pods: %w", err)
		}
	}
	r.shared = f
	return nil
}

// pvIndexers are the loop's indexes of PVs (managed ones only hold values in byStatefulSet).
var pvIndexers = cache.Indexers{byStatefulSet: indexPVByStatefulSet, mutate.PVClaimIndex: mutate.PVClaimIndexFunc}

// addMissingIndexers adds the indexers inf does not have yet (the webhook's lookup may have
// added the claim index already; adding an index name twice is an error).
func addMissingIndexers(inf cache.SharedIndexInformer, want cache.Indexers) error {
	have := inf.GetIndexer().GetIndexers()
	missing := cache.Indexers{}
	for name, fn := range want {
		if _, ok := have[name]; !ok {
			missing[name] = fn
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return inf.AddIndexers(missing)
}

// isManagedPV reports whether obj (or a tombstone's object) is a PV the loop manages.
func isManagedPV(obj any) bool {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pv, ok := obj.(*corev1.PersistentVolume)
	return ok && pv.Labels[mutate.LabelManagedBy] == mutate.ManagedByValue
}

// managedPVLister is a view of all PVs that shows only the managed ones, as a lister of an
// informer with the managed label selector would.
type managedPVLister struct {
	all corelisters.PersistentVolumeLister
}

func (l managedPVLister) List(selector labels.Selector) ([]*corev1.PersistentVolume, error) {
	pvs, err := l.all.List(selector)
	if err != nil {
		return nil, err
	}
	out := pvs[:0:0]
	for _, pv := range pvs {
		if isManagedPV(pv) {
			out = append(out, pv)
		}
	}
	return out, nil
}

func (l managedPVLister) Get(name string) (*corev1.PersistentVolume, error) {
	pv, err := l.all.Get(name)
	if err != nil {
		return nil, err
	}
	if !isManagedPV(pv) {
		return nil, apierrors.NewNotFound(corev1.Resource("persistentvolumes"), name)
	}
	return pv, nil
}

// managedPVIndexer answers ByIndex with managed PVs only (the loop uses nothing else of it).
type managedPVIndexer struct{ cache.Indexer }

func (i managedPVIndexer) ByIndex(name, value string) ([]any, error) {
	objs, err := i.Indexer.ByIndex(name, value)
	if err != nil {
		return nil, err
	}
	out := objs[:0:0]
	for _, o := range objs {
		if isManagedPV(o) {
			out = append(out, o)
		}
	}
	return out, nil
}

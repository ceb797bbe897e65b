package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/informers"
	corev1informers "k8s.io/client-go/informers/core/v1"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/petfabric/petfabric/pkg/cachetransform"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/placement"
)

// kind of a queue item.
type kind uint8

const (
	kindStatefulSet kind = iota + 1 // name is namespace/name: ensure its PVs exist
	kindPV                          // name is the PV name: orphan, Released or freeing check
	kindFence                       // name is the PV name: may a dead holder be fenced?
	kindGate                        // name is namespace/name of a pod: may its scheduling gate go?
)

type item struct {
	kind kind
	name string
}

func (i item) String() string {
	switch i.kind {
	case kindStatefulSet:
		return "statefulset " + i.name
	case kindFence:
		return "fence check of persistentvolume " + i.name
	case kindGate:
		return "scheduling gate of pod " + i.name
	}
	return "persistentvolume " + i.name
}

// managedSelector selects the PVs the loop may touch.
var managedSelector = labels.SelectorFromSet(labels.Set{mutate.LabelManagedBy: mutate.ManagedByValue}).String()

// Indexes: managed PVs by "<namespace>/<statefulset>" (and by claimRef, mutate.PVClaimIndex);
// pods by the "<namespace>/<claim>" of each claim they mount.
const (
	byStatefulSet = "petfabric-statefulset"
	byClaim       = "petfabric-claim"
)

// reportSelector selects the node agents' report Leases.
var reportSelector = labels.SelectorFromSet(labels.Set{
	placement.LeaseManagedByLabel: placement.LeaseManagedByValue,
	placement.LeaseComponentLabel: placement.LeaseComponentValue,
}).String()

// controller is one leadership term's state: informers, listers and the queue.
type controller struct {
	r     *Reconciler
	opts  *Options
	log   *slog.Logger
	queue workqueue.TypedRateLimitingInterface[item]

	stsLister  appslisters.StatefulSetLister
	pvLister   corelisters.PersistentVolumeLister
	pvIndexer  cache.Indexer
	pvcLister  corelisters.PersistentVolumeClaimLister
	scLister   storagelisters.StorageClassLister
	nsLister   corelisters.NamespaceLister
	podIndexer cache.Indexer
	synced     []cache.InformerSynced
	factories  []informers.SharedInformerFactory // this term's own; the shared one (UseInformers) is not among them
	handlers   []registered
	warnedMu   sync.Mutex
	warned     map[string]string // dedup of repeated warnings: key → last message

	// absentSince: when this loop first saw a PV (by UID) Available with no claim that could
	// bind it. The orphan grace counts from here, never from the PV's creation.
	absentMu    sync.Mutex
	absentSince map[types.UID]time.Time
	// reports: what this loop observed of each node's report Lease, by node (fencing). nil
	// when fencing is off.
	reports *reportTracker
}

func (r *Reconciler) runController(ctx context.Context) error {
	if ctx.Err() != nil {
		return nil
	}
	c, err := newController(r)
	if err != nil {
		return err
	}
	return c.run(ctx)
}

func newController(r *Reconciler) (*controller, error) {
	o := &r.opts
	c := &controller{
		r: r, opts: o, log: o.Logger,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[item](o.RetryBase, o.RetryMax),
			workqueue.TypedRateLimitingQueueConfig[item]{Name: Component},
		),
		warned:      map[string]string{},
		absentSince: map[types.UID]time.Time{},
	}
	// Either the process's shared factory (UseInformers: the loop sees its managed PVs through
	// a filtered view), or factories of this term's own (the PVs through a label selector).
	all := r.shared
	var pvs corev1informers.PersistentVolumeInformer
	var pvHandler cache.ResourceEventHandler = cache.ResourceEventHandlerFuncs{
		AddFunc:    c.onPV,
		UpdateFunc: func(_, n any) { c.onPV(n) },
		DeleteFunc: c.onPVDelete,
	}
	if all != nil {
		pvs = all.Core().V1().PersistentVolumes()
		c.pvLister = managedPVLister{pvs.Lister()}
		c.pvIndexer = managedPVIndexer{pvs.Informer().GetIndexer()}
		pvHandler = cache.FilteringResourceEventHandler{FilterFunc: isManagedPV, Handler: pvHandler}
	} else {
		all = informers.NewSharedInformerFactoryWithOptions(o.Client, o.Resync, cachetransform.Option())
		managed := informers.NewSharedInformerFactoryWithOptions(o.Client, o.Resync, cachetransform.Option(),
			informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = managedSelector }))
		c.factories = []informers.SharedInformerFactory{all, managed}
		pvs = managed.Core().V1().PersistentVolumes()
		if err := pvs.Informer().AddIndexers(pvIndexers); err != nil {
			return nil, err
		}
		c.pvLister, c.pvIndexer = pvs.Lister(), pvs.Informer().GetIndexer()
	}

	sts := all.Apps().V1().StatefulSets()
	pvcs := all.Core().V1().PersistentVolumeClaims()
	scs := all.Storage().V1().StorageClasses()
	nss := all.Core().V1().Namespaces()
	c.stsLister = sts.Lister()
	c.pvcLister, c.scLister, c.nsLister = pvcs.Lister(), scs.Lister(), nss.Lister()

	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{sts.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.onStatefulSet,
			UpdateFunc: func(_, n any) { c.onStatefulSet(n) },
			DeleteFunc: c.onStatefulSetDelete,
		}},
		{pvs.Informer(), pvHandler},
		{pvcs.Informer(), cache.ResourceEventHandlerFuncs{AddFunc: c.onClaimAdd, UpdateFunc: func(_, n any) { c.onClaimUpdate(n) }, DeleteFunc: c.onClaimDelete}},
		{scs.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.onStorageClass,
			UpdateFunc: func(_, n any) { c.onStorageClass(n) },
			DeleteFunc: c.onStorageClass,
		}},
		{nss.Informer(), cache.ResourceEventHandlerFuncs{
			UpdateFunc: func(o, n any) { c.onNamespaceUpdate(o, n) },
		}},
	}
	// Fencing: the node reports and the pods of every claim (only with a report namespace;
	// without one the loop cannot tell whose an initiator is and never fences). Scheduling
	// gates: the pods too.
	if o.ReportNamespace != "" || o.SchedulingGate {
		pods := all.Core().V1().Pods()
		if r.shared == nil { // with a shared factory, UseInformers did this before it started
			// Pods are many: keep only what fencing reads (node, phase, claims, deletion).
			if err := pods.Informer().SetTransform(slimPod); err != nil {
				return nil, err
			}
			if err := pods.Informer().AddIndexers(cache.Indexers{byClaim: indexPodByClaim}); err != nil {
				return nil, err
			}
		}
		c.podIndexer = pods.Informer().GetIndexer()
		handlers = append(handlers, struct {
			inf cache.SharedIndexInformer
			h   cache.ResourceEventHandler
		}{pods.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.onPod,
			UpdateFunc: func(_, n any) { c.onPod(n) },
			DeleteFunc: c.onPod,
		}})
	}
	if o.ReportNamespace != "" {
		c.reports = newReportTracker(o.now)
		reportFactory := informers.NewSharedInformerFactoryWithOptions(o.Client, o.Resync, cachetransform.Option(),
			informers.WithNamespace(o.ReportNamespace),
			informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = reportSelector }))
		c.factories = append(c.factories, reportFactory)
		handlers = append(handlers, struct {
			inf cache.SharedIndexInformer
			h   cache.ResourceEventHandler
		}{reportFactory.Coordination().V1().Leases().Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(n any) { c.reports.observe(n) },
			UpdateFunc: func(_, n any) { c.reports.observe(n) },
			DeleteFunc: func(o any) { c.reports.forget(o) },
		}})
	}
	for _, h := range handlers {
		// Per handler: a shared informer's own resync period is its factory's.
		reg, err := h.inf.AddEventHandlerWithResyncPeriod(h.h, o.Resync)
		if err != nil {
			c.removeHandlers()
			return nil, err
		}
		c.synced = append(c.synced, reg.HasSynced)
		c.handlers = append(c.handlers, registered{h.inf, reg})
	}
	return c, nil
}

// registered is an event handler this term added to an informer.
type registered struct {
	inf cache.SharedIndexInformer
	reg cache.ResourceEventHandlerRegistration
}

// removeHandlers takes this term's handlers off the informers (which, when shared, outlive it).
func (c *controller) removeHandlers() {
	for _, h := range c.handlers {
		_ = h.inf.RemoveEventHandler(h.reg)
	}
	c.handlers = nil
}

func indexPodByClaim(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	return podClaims(pod), nil
}

// podClaims lists the mutate.ClaimKey of every claim the pod mounts: the key the PV claim
// index uses too, so one key finds a claim's pods and its PVs.
func podClaims(pod *corev1.Pod) []string {
	var out []string
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName != "" {
			out = append(out, mutate.ClaimKey(pod.Namespace, v.PersistentVolumeClaim.ClaimName))
		}
	}
	return out
}

// slimPod keeps the fields fencing reads: identity, deletion, node, claim volumes and phase;
// and for the scheduling gate, the creation time and the gates' names.
func slimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	slim := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, ResourceVersion: pod.ResourceVersion,
			DeletionTimestamp: pod.DeletionTimestamp, CreationTimestamp: pod.CreationTimestamp,
		},
		Spec:   corev1.PodSpec{NodeName: pod.Spec.NodeName, SchedulingGates: pod.Spec.SchedulingGates},
		Status: corev1.PodStatus{Phase: pod.Status.Phase},
	}
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			slim.Spec.Volumes = append(slim.Spec.Volumes, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: v.PersistentVolumeClaim}})
		}
	}
	return slim, nil
}

func indexPVByStatefulSet(obj any) ([]string, error) {
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok {
		return nil, nil
	}
	ns, name := pvOwner(pv)
	if ns == "" || name == "" {
		return nil, nil
	}
	return []string{ns + "/" + name}, nil
}

// pvOwner returns the namespace and StatefulSet name recorded on a managed PV.
func pvOwner(pv *corev1.PersistentVolume) (namespace, statefulSet string) {
	return pv.Labels[mutate.LabelNamespace], pv.Annotations[mutate.AnnStatefulSet]
}

func (c *controller) run(ctx context.Context) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	for _, f := range c.factories {
		f.Start(ctx.Done())
	}
	defer func() {
		c.removeHandlers()
		for _, f := range c.factories {
			f.Shutdown()
		}
	}()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("reconcile: informer caches did not sync")
	}
	c.log.Info("reconcile loop running", "workers", c.opts.Workers, "orphanGrace", c.opts.OrphanGrace, "resync", c.opts.Resync)
	var wg sync.WaitGroup
	for range c.opts.Workers {
		wg.Go(func() {
			for c.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	c.log.Info("reconcile loop stopped")
	return nil
}

func (c *controller) processNext(ctx context.Context) bool {
	it, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(it)
	var (
		after time.Duration
		err   error
	)
	switch it.kind {
	case kindStatefulSet:
		err = c.syncStatefulSet(ctx, it.name)
	case kindPV:
		after, err = c.syncPV(ctx, it.name)
	case kindFence:
		after, err = c.syncFence(ctx, it.name)
	case kindGate:
		after, err = c.syncGate(ctx, it.name)
	}
	switch {
	case err != nil:
		if ctx.Err() != nil {
			return true
		}
		c.log.Warn("reconcile failed; retrying with backoff", "item", it.String(), "err", err, "retries", c.queue.NumRequeues(it))
		c.queue.AddRateLimited(it)
	default:
		c.queue.Forget(it)
		if after > 0 {
			c.queue.AddAfter(it, after)
		}
	}
	return true
}

// Event handlers.

func (c *controller) enqueueStatefulSet(namespace, name string) {
	c.queue.Add(item{kindStatefulSet, namespace + "/" + name})
}

func (c *controller) onStatefulSet(obj any) {
	if sts, ok := obj.(*appsv1.StatefulSet); ok {
		c.enqueueStatefulSet(sts.Namespace, sts.Name)
	}
}

func (c *controller) onStatefulSetDelete(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	sts, ok := obj.(*appsv1.StatefulSet)
	if !ok {
		return
	}
	c.forgetWarnings(sts.Namespace + "/" + sts.Name)
	// Its PVs may now be orphans (after the grace period).
	objs, _ := c.pvIndexer.ByIndex(byStatefulSet, sts.Namespace+"/"+sts.Name)
	for _, o := range objs {
		if pv, ok := o.(*corev1.PersistentVolume); ok {
			c.queue.Add(item{kindPV, pv.Name})
		}
	}
}

func (c *controller) onPV(obj any) {
	if pv, ok := obj.(*corev1.PersistentVolume); ok {
		c.queue.Add(item{kindPV, pv.Name})
	}
}

func (c *controller) onPVDelete(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok {
		return
	}
	c.clearWarning(malformedKey(pv.Name))
	c.forgetAbsent(pv.UID)
	c.forgetWarnings("pv/" + pv.Name)
	// A StatefulSet that still needs this ordinal gets its PV back.
	if ns, name := pvOwner(pv); ns != "" && name != "" {
		c.enqueueStatefulSet(ns, name)
	}
}

// onClaimAdd looks at the PVs pre-bound to the claim's name at once: a Released Retain PV may
// be handed to it (seconds after the claim is stored, not at the next resync).
func (c *controller) onClaimAdd(obj any) {
	pvc, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok {
		return
	}
	c.enqueueClaimPVs(pvc)
	c.enqueueGatedPods(pvc)
}

// enqueueClaimPVs queues a check of every managed PV whose claimRef names the claim.
func (c *controller) enqueueClaimPVs(pvc *corev1.PersistentVolumeClaim) {
	objs, _ := c.pvIndexer.ByIndex(mutate.PVClaimIndex, mutate.ClaimKey(pvc.Namespace, pvc.Name))
	for _, o := range objs {
		if pv, ok := o.(*corev1.PersistentVolume); ok {
			c.queue.Add(item{kindPV, pv.Name})
		}
	}
}

// onPod asks for a fence check of the volumes of a pod that waits (Pending), or that left a
// node (deleted), since either may be what a fence was waiting for.
func (c *controller) onPod(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	c.onPodGate(pod)
	if c.reports == nil {
		return
	}
	for _, key := range podClaims(pod) {
		c.enqueueFenceForClaim(key)
	}
}

// enqueueFenceForClaim asks for a fence check of the PV(s) of a claim with a waiting pod.
func (c *controller) enqueueFenceForClaim(claimKey string) {
	if !c.claimHasWaitingPod(claimKey) {
		return
	}
	objs, _ := c.pvIndexer.ByIndex(mutate.PVClaimIndex, claimKey)
	for _, o := range objs {
		if pv, ok := o.(*corev1.PersistentVolume); ok && pv.Status.Phase == corev1.VolumeBound {
			c.queue.Add(item{kindFence, pv.Name})
		}
	}
}

func (c *controller) onClaimDelete(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pvc, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok {
		return
	}
	// A pre-bound but never bound PV does not change when its claim goes; look at it again.
	if pvc.Spec.VolumeName != "" {
		if _, err := c.pvLister.Get(pvc.Spec.VolumeName); err == nil {
			c.queue.Add(item{kindPV, pvc.Spec.VolumeName})
		}
	}
	c.enqueueClaimPVs(pvc)
}

func (c *controller) onStorageClass(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	sc, ok := obj.(*storagev1.StorageClass)
	if !ok || sc.Provisioner != mutate.Provisioner {
		return
	}
	c.enqueueAllStatefulSets("")
}

func (c *controller) onNamespaceUpdate(oldObj, newObj any) {
	o, ok1 := oldObj.(*corev1.Namespace)
	n, ok2 := newObj.(*corev1.Namespace)
	if !ok1 || !ok2 || o.Labels[mutate.InjectLabel] == n.Labels[mutate.InjectLabel] {
		return
	}
	c.enqueueAllStatefulSets(n.Name)
}

func (c *controller) enqueueAllStatefulSets(namespace string) {
	list, err := c.stsLister.StatefulSets(namespace).List(labels.Everything())
	if err != nil {
		return
	}
	for _, s := range list {
		c.enqueueStatefulSet(s.Namespace, s.Name)
	}
}

// Warnings that would repeat on every resync are emitted once per distinct message.

func (c *controller) warnOnce(key, msg string) bool {
	c.warnedMu.Lock()
	defer c.warnedMu.Unlock()
	if c.warned[key] == msg {
		return false
	}
	c.warned[key] = msg
	return true
}

func (c *controller) clearWarning(key string) {
	c.warnedMu.Lock()
	defer c.warnedMu.Unlock()
	delete(c.warned, key)
}

// forgetWarnings drops every remembered warning of a StatefulSet (key prefix "ns/name|").
func (c *controller) forgetWarnings(stsKey string) {
	c.warnedMu.Lock()
	defer c.warnedMu.Unlock()
	for k := range c.warned {
		if len(k) > len(stsKey) && k[:len(stsKey)+1] == stsKey+"|" {
			delete(c.warned, k)
		}
	}
}

func malformedKey(pvName string) string { return "pv/" + pvName + "|malformed" }

func warnKey(stsKey, what string) string { return fmt.Sprintf("%s|%s", stsKey, what) }

package extender

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/petfabric/petfabric/pkg/cachetransform"
	"github.com/petfabric/petfabric/pkg/placement"
)

// Cache keeps what the extender decides from: PersistentVolumeClaims and PersistentVolumes
// (cluster-wide) and the nodes' report Leases (in the release namespace), through client-go
// informers. Requests never call the apiserver; they read the cache, so the extender
// answers in microseconds and keeps answering (from the last known state) through an
// apiserver outage.
type Cache struct {
	pvcs      corelisters.PersistentVolumeClaimLister
	pvs       corelisters.PersistentVolumeLister
	pvIndexer toolscache.Indexer
	synced    []toolscache.InformerSynced
	factories []informers.SharedInformerFactory
	ready     atomic.Bool
	log       *slog.Logger

	// now and maxTTL judge report freshness: now stamps each renewal the cache observes
	// (placement.NodeReport.Observe), maxTTL caps the TTL a Lease declares.
	now    func() time.Time
	maxTTL time.Duration
	// improved is CacheOptions.OnReportImproved.
	improved func(node string)

	mu    sync.RWMutex
	index *placement.Index
	// leaseNode remembers which node each Lease reported for, so an update that changes
	// the holder, or a delete whose tombstone is stale, removes the right report.
	leaseNode map[string]string
}

const claimRefIndex = "claimRef"

// ReportLeaseSelector selects the report Leases among the namespace's Leases.
var ReportLeaseSelector = labels.SelectorFromSet(labels.Set{
	placement.LeaseManagedByLabel: placement.LeaseManagedByValue,
	placement.LeaseComponentLabel: placement.LeaseComponentValue,
})

// CacheOptions tune a Cache; the zero value is the production setting.
type CacheOptions struct {
	// MaxReportTTL caps the leaseDurationSeconds a report Lease declares (default
	// placement.DefaultMaxReportTTL).
	MaxReportTTL time.Duration
	// Now is the clock that stamps observed renewals (time.Now when nil). Handler requests
	// must judge freshness with the same clock.
	Now func() time.Time
	// OnReportImproved, when set, is called (outside the cache's lock) after a node's
	// report changed in a way that may admit a pod the filter rejected (reportImproved in
	// requeue.go). It must not block.
	OnReportImproved func(node string)
}

// NewCache sets up the informers; Start runs them.
func NewCache(client kubernetes.Interface, namespace string, log *slog.Logger, opts CacheOptions) (*Cache, error) {
	c := &Cache{index: placement.NewIndex(), leaseNode: map[string]string{}, log: log, now: opts.Now, maxTTL: opts.MaxReportTTL, improved: opts.OnReportImproved}
	if c.now == nil {
		c.now = time.Now
	}
	if c.maxTTL <= 0 {
		c.maxTTL = placement.DefaultMaxReportTTL
	}
	// Managed fields are large and never read here; dropping them halves the memory of a
	// cache of thousands of claims and volumes.
	strip := cachetransform.Option()
	// Claims and volumes are cut down to the fields the decisions read (SlimObject).
	all := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(SlimObject))
	leases := informers.NewSharedInformerFactoryWithOptions(client, 0, strip,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = ReportLeaseSelector.String() }))
	c.factories = []informers.SharedInformerFactory{all, leases}

	pvcInf := all.Core().V1().PersistentVolumeClaims()
	pvInf := all.Core().V1().PersistentVolumes()
	leaseInf := leases.Coordination().V1().Leases()
	c.pvcs = pvcInf.Lister()
	c.pvs = pvInf.Lister()

	if err := pvInf.Informer().AddIndexers(toolscache.Indexers{claimRefIndex: func(obj any) ([]string, error) {
		pv, ok := obj.(*corev1.PersistentVolume)
		if !ok || pv.Spec.ClaimRef == nil {
			return nil, nil
		}
		return []string{pv.Spec.ClaimRef.Namespace + "/" + pv.Spec.ClaimRef.Name}, nil
	}}); err != nil {
		return nil, fmt.Errorf("add claimRef index: %w", err)
	}
	c.pvIndexer = pvInf.Informer().GetIndexer()

	pvReg, err := pvInf.Informer().AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.setPV(obj) },
		UpdateFunc: func(_, obj any) { c.setPV(obj) },
		DeleteFunc: func(obj any) { c.deletePV(obj) },
	})
	if err != nil {
		return nil, fmt.Errorf("watch PersistentVolumes: %w", err)
	}
	leaseReg, err := leaseInf.Informer().AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.setLease(obj) },
		UpdateFunc: func(_, obj any) { c.setLease(obj) },
		DeleteFunc: func(obj any) { c.deleteLease(obj) },
	})
	if err != nil {
		return nil, fmt.Errorf("watch Leases: %w", err)
	}
	// Ready means the listers are filled and every initial event reached the index.
	c.synced = []toolscache.InformerSynced{
		pvcInf.Informer().HasSynced, pvInf.Informer().HasSynced, leaseInf.Informer().HasSynced,
		pvReg.HasSynced, leaseReg.HasSynced,
	}
	return c, nil
}

// Start runs the informers until ctx ends and marks the cache ready once they synced.
func (c *Cache) Start(ctx context.Context) {
	for _, f := range c.factories {
		f.Start(ctx.Done())
	}
	go func() {
		start := time.Now()
		if toolscache.WaitForCacheSync(ctx.Done(), c.synced...) {
			c.ready.Store(true)
			c.log.Info("informer caches synced", "took", time.Since(start).Round(time.Millisecond))
		}
	}()
}

// Shutdown waits for the informers' goroutines after ctx ended.
func (c *Cache) Shutdown() {
	for _, f := range c.factories {
		f.Shutdown()
	}
}

// Ready reports whether the informers have synced.
func (c *Cache) Ready() bool { return c.ready.Load() }

// Read runs fn with a consistent view of the index (a read lock held for fn's duration).
func (c *Cache) Read(fn func(lk placement.Lookup, st placement.State)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	fn(c, c.index)
}

// ReportStats counts reports by state at now (for the metrics scrape).
func (c *Cache) ReportStats(now time.Time) (fresh, stale, unreadable int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, node := range c.leaseNode {
		nr, ok := c.index.NodeReport(node)
		switch {
		case !ok:
		case nr.Err != nil:
			unreadable++
		case nr.Fresh(now):
			fresh++
		default:
			stale++
		}
	}
	return fresh, stale, unreadable
}

// Claim implements placement.Lookup.
func (c *Cache) Claim(namespace, name string) (*corev1.PersistentVolumeClaim, bool) {
	pvc, err := c.pvcs.PersistentVolumeClaims(namespace).Get(name)
	return pvc, err == nil
}

// PV implements placement.Lookup.
func (c *Cache) PV(name string) (*corev1.PersistentVolume, bool) {
	pv, err := c.pvs.Get(name)
	return pv, err == nil
}

// PVForClaim implements placement.Lookup. Should two PVs name the same claim, a Datera one
// wins, then the first by name, so the answer does not depend on informer order.
func (c *Cache) PVForClaim(namespace, name string) (*corev1.PersistentVolume, bool) {
	objs, err := c.pvIndexer.ByIndex(claimRefIndex, namespace+"/"+name)
	if err != nil || len(objs) == 0 {
		return nil, false
	}
	pvs := make([]*corev1.PersistentVolume, 0, len(objs))
	for _, o := range objs {
		if pv, ok := o.(*corev1.PersistentVolume); ok {
			pvs = append(pvs, pv)
		}
	}
	if len(pvs) == 0 {
		return nil, false
	}
	isDatera := func(pv *corev1.PersistentVolume) bool {
		return pv.Spec.FlexVolume != nil && pv.Spec.FlexVolume.Driver == placement.FlexDriver
	}
	slices.SortFunc(pvs, func(a, b *corev1.PersistentVolume) int {
		if da, db := isDatera(a), isDatera(b); da != db {
			if da {
				return -1
			}
			return 1
		}
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return pvs[0], true
}

func (c *Cache) setPV(obj any) {
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index.SetPV(pv)
}

func (c *Cache) deletePV(obj any) {
	if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index.DeletePV(pv.Name)
}

func (c *Cache) setLease(obj any) {
	l, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return
	}
	nr, ok := placement.NodeReportFromLease(l)
	// The informer already selects by label; checking again keeps a Lease that lost its
	// labels (or a watch that does not filter) from counting as a report.
	ok = ok && ReportLeaseSelector.Matches(labels.Set(l.Labels))
	var improved bool
	defer func() {
		if improved && c.improved != nil {
			c.improved(nr.Node)
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, had := c.leaseNode[l.Name]; had && (!ok || old != nr.Node) {
		c.index.DeleteReport(old)
		delete(c.leaseNode, l.Name)
	}
	if !ok {
		c.log.Warn("ignoring Lease that is not a node report", "lease", l.Name,
			"reason", "holderIdentity missing, name is not petfabric-node-<holderIdentity>, or report labels missing")
		return
	}
	if nr.Err != nil {
		c.log.Warn("unreadable node report", "node", nr.Node, "lease", l.Name, "err", nr.Err)
	}
	// Freshness is judged by when this cache saw the Lease written (a new renewTime or
	// resourceVersion), never by the renewTime itself (written with the node's clock).
	prev, _ := c.index.NodeReport(nr.Node)
	now := c.now()
	nr.Observe(prev, now, c.maxTTL)
	improved = reportImproved(prev, nr, now)
	if nr.DeclaredTTL > c.maxTTL && (prev == nil || prev.DeclaredTTL != nr.DeclaredTTL) {
		c.log.Warn("node report Lease declares a longer freshness than the extender allows; capped",
			"node", nr.Node, "lease", l.Name, "leaseDuration", nr.DeclaredTTL, "maxReportTTL", c.maxTTL)
	}
	c.leaseNode[l.Name] = nr.Node
	c.index.SetReport(nr)
}

func (c *Cache) deleteLease(obj any) {
	if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	l, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if node, had := c.leaseNode[l.Name]; had {
		c.index.DeleteReport(node)
		delete(c.leaseNode, l.Name)
	}
}

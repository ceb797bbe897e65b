package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/tools/cache"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// Event reasons of fencing.
const (
	EventFenced      = "FencedNode"
	EventFenceFailed = "FenceFailed"
)

// reportObservation is what the loop saw of one node's report Lease.
type reportObservation struct {
	lease      string // Lease name
	rv         string // resourceVersion when last seen changing
	initiator  string // "" when the report could not be decoded
	observedAt time.Time
}

// reportTracker records, per node, when the loop observed its report Lease change. Staleness
// is judged by this loop's clock: a node's clock, and the renewTime it writes, play no part.
type reportTracker struct {
	now  func() time.Time
	mu   sync.Mutex
	seen map[string]reportObservation // by node
}

func newReportTracker(now func() time.Time) *reportTracker {
	return &reportTracker{now: now, seen: map[string]reportObservation{}}
}

// observe records a Lease seen by the informer (add, update or resync).
func (t *reportTracker) observe(obj any) {
	l, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return
	}
	t.record(l)
}

// record notes the Lease; its observation time moves only when its resourceVersion changed.
func (t *reportTracker) record(l *coordinationv1.Lease) {
	nr, ok := placement.NodeReportFromLease(l)
	if !ok {
		return
	}
	initiator := ""
	if nr.Report != nil {
		initiator = nr.Report.Initiator
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	prev, had := t.seen[nr.Node]
	if had && prev.rv == l.ResourceVersion && prev.lease == l.Name {
		return // a resync: not a change
	}
	t.seen[nr.Node] = reportObservation{lease: l.Name, rv: l.ResourceVersion, initiator: initiator, observedAt: t.now()}
}

func (t *reportTracker) forget(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	l, ok := obj.(*coordinationv1.Lease)
	if !ok || l.Spec.HolderIdentity == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if o, ok := t.seen[*l.Spec.HolderIdentity]; ok && o.lease == l.Name {
		delete(t.seen, *l.Spec.HolderIdentity)
	}
}

func (t *reportTracker) views() []ReportView {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]ReportView, 0, len(t.seen))
	for node, o := range t.seen {
		out = append(out, ReportView{Node: node, Initiator: o.initiator, ObservedAt: o.observedAt})
	}
	return out
}

func (t *reportTracker) get(node string) (reportObservation, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o, ok := t.seen[node]
	return o, ok
}

// podWaiting: it needs its volumes and has not got them.
func podWaiting(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodPending
}

func podTerminated(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func (c *controller) claimHasWaitingPod(claimKey string) bool {
	objs, _ := c.podIndexer.ByIndex(byClaim, claimKey)
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok && podWaiting(p) {
			return true
		}
	}
	return false
}

// claimPods returns the claim's pods that have not terminated, from the cache.
func (c *controller) claimPods(namespace, claim string) []PodView {
	objs, _ := c.podIndexer.ByIndex(byClaim, mutate.ClaimKey(namespace, claim))
	out := make([]PodView, 0, len(objs))
	for _, o := range objs {
		p, ok := o.(*corev1.Pod)
		if !ok || podTerminated(p) {
			continue
		}
		out = append(out, PodView{Namespace: p.Namespace, Name: p.Name, Node: p.Spec.NodeName, Waiting: podWaiting(p)})
	}
	return out
}

// aclInitiators turns ACL entries (/initiators/<iqn>) into IQNs.
func aclInitiators(p *datera.ACLPolicy) []string {
	out := make([]string, 0, len(p.Initiators))
	for _, r := range p.Initiators {
		if iqn, ok := strings.CutPrefix(r.Path, "/initiators/"); ok && iqn != "" {
			out = append(out, iqn)
		}
	}
	return out
}

// syncFence fences the dead holders of a ReadWriteOnce volume that a pod waits for. It
// returns when to look again (a holder whose timeout has not passed yet).
func (c *controller) syncFence(ctx context.Context, name string) (time.Duration, error) {
	if c.reports == nil {
		return 0, nil
	}
	pv, err := c.pvLister.Get(name)
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	fv, ref := pv.Spec.FlexVolume, pv.Spec.ClaimRef
	if pv.DeletionTimestamp != nil || pv.Labels[mutate.LabelManagedBy] != mutate.ManagedByValue ||
		fv == nil || fv.Driver != mutate.Driver || ref == nil || ref.Name == "" || pv.Status.Phase != corev1.VolumeBound {
		return 0, nil
	}
	volumeID := fv.Options[pvoptions.OptVolumeID]
	in := FenceInput{
		VolumeID: volumeID, AccessMode: fv.Options[pvoptions.OptAccessMode],
		Pods: c.claimPods(ref.Namespace, ref.Name), Now: c.opts.now(), FenceAfter: c.opts.FenceAfter,
	}
	// Cheap checks first: no Datera call for a volume that could not be fenced anyway.
	if _, why := DecideFence(in); why != "" || volumeID == "" {
		return 0, nil
	}

	dctx, cancel := context.WithTimeout(ctx, c.opts.DateraTimeout)
	defer cancel()
	d, err := c.opts.DateraFor(dctx, pv)
	if err != nil {
		c.r.metrics.errors.WithLabelValues(ReasonDateraClient).Inc()
		return 0, fmt.Errorf("datera client for PV %s: %w", pv.Name, err)
	}
	ai, err := d.GetAppInstance(dctx, volumeID)
	if errors.Is(err, datera.ErrNotFound) {
		return 0, nil // not created yet: nobody holds it
	}
	if err != nil {
		c.r.metrics.errors.WithLabelValues(ReasonFence).Inc()
		return 0, fmt.Errorf("fence check of volume %s: %w", volumeID, err)
	}
	si, _, ok := ai.Volume()
	if !ok {
		return 0, nil
	}
	acl, err := d.GetACL(dctx, volumeID, si.Name)
	if err != nil {
		c.r.metrics.errors.WithLabelValues(ReasonFence).Inc()
		return 0, fmt.Errorf("fence check of volume %s: %w", volumeID, err)
	}
	in.ACL = aclInitiators(acl)
	in.Reports = c.reports.views()
	in.Now = c.opts.now()
	verdicts, _ := DecideFence(in)

	var after time.Duration
	later := func(d time.Duration) {
		if d > 0 && (after == 0 || d < after) {
			after = d
		}
	}
	var errs []error
	for _, v := range verdicts {
		if !v.Fence {
			later(v.RetryAfter)
			if v.RetryAfter == 0 {
				c.log.Debug("not fencing", "pv", pv.Name, "volumeID", volumeID, "initiator", v.Initiator, "why", v.Reason)
			}
			continue
		}
		retry, err := c.fence(dctx, d, pv, volumeID, si.Name, v)
		later(retry)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return after, errors.Join(errs...)
}

// fence re-checks a verdict against live objects and then removes the initiator. retry > 0
// asks for another look after that long (the live report moved on).
func (c *controller) fence(ctx context.Context, d DateraAPI, pv *corev1.PersistentVolume, volumeID, storageInstance string, v FenceVerdict) (retry time.Duration, err error) {
	obs, ok := c.reports.get(v.Node)
	if !ok {
		return 0, nil
	}
	// The report, live: a watch that fell behind must not make a live node look dead.
	lease, err := c.opts.Client.CoordinationV1().Leases(c.opts.ReportNamespace).Get(ctx, obs.lease, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return 0, nil // no report any more: the initiator is nobody's now
	case err != nil:
		return 0, fmt.Errorf("fence: read node %s's report: %w", v.Node, err)
	}
	if lease.ResourceVersion != obs.rv {
		c.reports.record(lease)
		return c.opts.FenceAfter, nil
	}
	// The node's pods, live: any pod of the claim still there keeps the node's access.
	ref := pv.Spec.ClaimRef
	pods, err := c.opts.Client.CoreV1().Pods(ref.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", v.Node).String(),
	})
	if err != nil {
		return 0, fmt.Errorf("fence: list pods on node %s: %w", v.Node, err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Spec.NodeName != v.Node || podTerminated(p) {
			continue
		}
		for _, key := range podClaims(p) {
			if key == mutate.ClaimKey(ref.Namespace, ref.Name) {
				c.log.Info("not fencing: a pod of the claim is still on the node", "pv", pv.Name, "node", v.Node, "pod", p.Name)
				return 0, nil
			}
		}
	}
	if err := d.RemoveInitiatorFromACL(ctx, volumeID, storageInstance, v.Initiator); err != nil {
		c.r.metrics.errors.WithLabelValues(ReasonFence).Inc()
		msg := fmt.Sprintf("fencing node %s (initiator %s) out of volume %s failed (will retry): %v", v.Node, v.Initiator, volumeID, err)
		c.r.recorder.Event(pv, corev1.EventTypeWarning, EventFenceFailed, msg)
		return 0, fmt.Errorf("fence %s from %s: %w", v.Initiator, volumeID, err)
	}
	c.r.metrics.fences.Inc()
	msg := fmt.Sprintf("fenced node %s (initiator %s) out of volume %s: %s", v.Node, v.Initiator, volumeID, v.Reason)
	c.log.Warn("fenced a dead holder", "pv", pv.Name, "volumeID", volumeID, "node", v.Node, "initiator", v.Initiator, "unchanged", v.Unchanged)
	c.r.recorder.Event(pv, corev1.EventTypeWarning, EventFenced, msg)
	if v.Waiting != nil {
		if p, ok := c.cachedPod(v.Waiting.Namespace, v.Waiting.Name); ok {
			c.r.recorder.Event(p, corev1.EventTypeNormal, EventFenced, msg)
		}
	}
	return 0, nil
}

func (c *controller) cachedPod(namespace, name string) (*corev1.Pod, bool) {
	obj, ok, err := c.podIndexer.GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, false
	}
	p, ok := obj.(*corev1.Pod)
	return p, ok
}

package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/petfabric/petfabric/pkg/mutate"
)

// Event reasons on StatefulSets and PVs.
const (
	EventCreatedPV          = "CreatedPersistentVolume"
	EventInvalidOptions     = "InvalidDateraOptions"
	EventPVConflict         = "PersistentVolumeConflict"
	EventNotPinned          = "DateraTemplateNotPinned"
	EventClaimClassMismatch = "ClaimClassMismatch"
	EventBuildPVFailed      = "BuildPersistentVolumeFailed"
	EventDeletedOrphan      = "DeletedOrphanPersistentVolume"
	EventDeletedReleased    = "DeletedPersistentVolume"
	EventDeletedDatera      = "DeletedDateraVolume"
	EventDateraDeleteFailed = "DateraDeleteFailed"
	EventMalformedPV        = "MalformedPersistentVolume"
	EventOwnerMismatch      = "OwnerMismatch"
	EventFreedPV            = "FreedPersistentVolume"
	EventNotFreed           = "PersistentVolumeNotFreed"
	EventPVMismatch         = mutate.EventPVMismatch
	EventReplacedPV         = "ReplacedPersistentVolume"
	EventOrdinalCeiling     = "OrdinalCeiling"
)

// mutateVolumeID validates a cluster id the way every PV's volumeID will use it.
func mutateVolumeID(clusterID string) (string, error) {
	return mutate.VolumeID(clusterID, "namespace", "claim")
}

// dateraClasses lists the Datera StorageClasses by name.
func (c *controller) dateraClasses() (map[string]mutate.Class, error) {
	scs, err := c.scLister.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	out := map[string]mutate.Class{}
	for _, sc := range scs {
		if cl, ok := mutate.ClassFromStorageClass(sc); ok {
			out[cl.Name] = cl
		}
	}
	return out, nil
}

// syncStatefulSet makes sure every Datera-bound claim template of the StatefulSet has the PV of
// each ordinal, as the webhook would have created it.
func (c *controller) syncStatefulSet(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	sts, err := c.stsLister.StatefulSets(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if sts.DeletionTimestamp != nil || len(sts.Spec.VolumeClaimTemplates) == 0 {
		return nil
	}
	nsObj, err := c.nsLister.Get(ns)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if nsObj.DeletionTimestamp != nil || nsObj.Status.Phase == corev1.NamespaceTerminating {
		return nil
	}
	classes, err := c.dateraClasses()
	if err != nil {
		return err
	}
	// Only templates whose stored class the PV controller honours can bind a Datera PV: the
	// ones the webhook pinned, or that named a Datera class themselves (mutate's PinnedOnly).
	in := mutate.Input{StatefulSet: sts, NamespaceLabels: nsObj.Labels, NamespaceUID: string(nsObj.UID), Classes: classes, PinnedOnly: true}
	plan, err := mutate.Decide(c.opts.Mutate, in)
	if err != nil {
		msg := "Datera volumes not created: " + err.Error()
		if c.warnOnce(warnKey(key, "invalid"), msg) {
			c.r.metrics.errors.WithLabelValues(ReasonInvalidOptions).Inc()
			c.r.recorder.Event(sts, corev1.EventTypeWarning, EventInvalidOptions, msg)
		}
		return nil
	}
	c.clearWarning(warnKey(key, "invalid"))
	c.warnNotPinned(sts, key, in, plan)

	// Never a PV for an ordinal at or above the ceiling: replicas is an int32 any user with
	// StatefulSet access sets, and the webhook (which denies it) may have been down.
	all := mutate.OrdinalRangeOf(sts)
	ceiling := c.opts.Mutate.OrdinalCeiling()
	rng := all.Below(ceiling)
	if rng != all {
		from := max(all.Start, int64(ceiling))
		msg := fmt.Sprintf("ordinals %d to %d of %d reach the ceiling of %d Datera ordinals per StatefulSet: no PersistentVolumes are created for them (raise the webhook's --max-ordinals if this StatefulSet really needs them)",
			from, all.End-1, all.Len(), ceiling)
		if c.warnOnce(warnKey(key, "ceiling"), msg) {
			c.r.metrics.ordinalCeiling.Inc()
			c.r.recorder.Event(sts, corev1.EventTypeWarning, EventOrdinalCeiling, msg)
			c.log.Warn("StatefulSet ordinals above the ceiling: not creating their PVs", "statefulset", key, "from", from, "to", all.End-1, "ceiling", ceiling)
		}
	} else {
		c.clearWarning(warnKey(key, "ceiling"))
	}
	created := map[string][]int{} // template → ordinals
	var names []string
	var errs []error
	for _, tp := range plan.Templates {
		for n := rng.Start; n < rng.End; n++ {
			cv := plan.Ordinal(tp, int(n))
			pvName, ok, err := c.ensurePV(ctx, sts, key, cv)
			if err != nil {
				errs = append(errs, err)
			}
			if ok {
				created[tp.Name] = append(created[tp.Name], int(n))
				names = append(names, pvName)
			}
		}
	}
	if len(names) > 0 {
		c.r.recorder.Event(sts, corev1.EventTypeNormal, EventCreatedPV, createdMessage(created, names))
		c.log.Info("created PersistentVolumes the webhook missed", "statefulset", key, "count", len(names), "pvs", names)
	}
	return errors.Join(errs...)
}

// warnNotPinned reports templates the webhook would have made Datera-bound (classless in an
// opted-in namespace, or the alpha annotation) but that were stored without its patch: their
// claims will not carry the class a Datera PV needs to bind.
func (c *controller) warnNotPinned(sts *appsv1.StatefulSet, key string, in mutate.Input, pinned mutate.Plan) {
	in.PinnedOnly = false
	all, err := mutate.Decide(c.opts.Mutate, in)
	if err != nil {
		return
	}
	for _, tp := range all.Templates {
		if slices.ContainsFunc(pinned.Templates, func(p mutate.TemplatePlan) bool { return p.Index == tp.Index }) {
			continue
		}
		t := &sts.Spec.VolumeClaimTemplates[tp.Index]
		msg := fmt.Sprintf("claim template %q should get Datera class %q, but the StatefulSet was stored without the webhook pinning it, so its claims (class %q) cannot bind a Datera PV; re-create the StatefulSet while the webhook is running", tp.Name, tp.Class.Name, mutate.ClaimClass(t))
		if c.warnOnce(warnKey(key, "notpinned/"+tp.Name), msg) {
			c.r.recorder.Event(sts, corev1.EventTypeWarning, EventNotPinned, msg)
		}
	}
}

// ensurePV creates the PV of one claim unless it exists; ok reports a create. An existing PV
// of the claim is compared with what the claim needs; a mismatch is reported, and repaired
// where that is safe (see repairPV).
func (c *controller) ensurePV(ctx context.Context, sts *appsv1.StatefulSet, key string, cv mutate.ClaimVolume) (string, bool, error) {
	pvName := mutate.PVName(cv.Namespace, cv.Claim)
	want, buildErr := cv.PersistentVolume(c.opts.Mutate)
	// Found by claimRef, not by name: a PV of the older naming serves its claim as well.
	if existing := c.claimPV(cv.Namespace, cv.Claim); existing != nil {
		if buildErr != nil {
			return existing.Name, false, nil
		}
		return existing.Name, false, c.checkPV(ctx, sts, key, cv, existing, want)
	}
	if pv, err := c.pvLister.Get(pvName); err == nil {
		if !mutate.SameClaim(pv, cv.Namespace, cv.Claim) {
			c.conflict(sts, key, pv, cv)
		}
		return pvName, false, nil
	}
	if pvc, err := c.pvcLister.PersistentVolumeClaims(cv.Namespace).Get(cv.Claim); err == nil {
		switch {
		case pvc.DeletionTimestamp != nil:
			return pvName, false, nil // a new claim of that name gets its PV when it appears
		case pvc.Spec.VolumeName != "" && pvc.Spec.VolumeName != pvName:
			c.log.Debug("claim is bound to another PV; not creating one", "claim", cv.Namespace+"/"+cv.Claim, "volume", pvc.Spec.VolumeName)
			return pvName, false, nil
		case pvc.Spec.VolumeName == pvName:
			return pvName, false, nil // bound to it: the PV exists, the cache is behind
		}
		if cls := mutate.ClaimClass(pvc); cls != cv.Class.Name {
			msg := fmt.Sprintf("claim %s/%s has class %q, not the template's Datera class %q: no PV created for it", cv.Namespace, cv.Claim, cls, cv.Class.Name)
			if c.warnOnce(warnKey(key, "claimclass/"+cv.Claim), msg) {
				c.r.metrics.errors.WithLabelValues(ReasonClaimNotBinding).Inc()
				c.r.recorder.Event(sts, corev1.EventTypeWarning, EventClaimClassMismatch, msg)
			}
			return pvName, false, nil
		}
	}
	if buildErr != nil {
		msg := fmt.Sprintf("cannot build the PersistentVolume of claim %s: %v", cv.Claim, buildErr)
		if c.warnOnce(warnKey(key, "build/"+cv.Claim), msg) {
			c.r.metrics.errors.WithLabelValues(ReasonBuildPV).Inc()
			c.r.recorder.Event(sts, corev1.EventTypeWarning, EventBuildPVFailed, msg)
		}
		return pvName, false, nil
	}
	_, err := c.opts.Client.CoreV1().PersistentVolumes().Create(ctx, want, metav1.CreateOptions{FieldManager: Component})
	switch {
	case err == nil:
		c.r.metrics.pvsCreated.Inc()
		return pvName, true, nil
	case apierrors.IsAlreadyExists(err):
		existing, gerr := c.opts.Client.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		if apierrors.IsNotFound(gerr) {
			return pvName, false, fmt.Errorf("PV %s: exists, then did not: %w", pvName, err) // retry
		}
		if gerr != nil {
			return pvName, false, gerr
		}
		if !mutate.SameClaim(existing, cv.Namespace, cv.Claim) {
			c.conflict(sts, key, existing, cv)
			return pvName, false, nil
		}
		return pvName, false, c.checkPV(ctx, sts, key, cv, existing, want)
	default:
		c.r.metrics.errors.WithLabelValues(ReasonCreatePV).Inc()
		return pvName, false, fmt.Errorf("create PV %s for claim %s/%s: %w", pvName, cv.Namespace, cv.Claim, err)
	}
}

// claimPV returns the managed PV whose claimRef names the claim (the one named after it when
// several do), or nil.
func (c *controller) claimPV(namespace, claim string) *corev1.PersistentVolume {
	objs, _ := c.pvIndexer.ByIndex(mutate.PVClaimIndex, mutate.ClaimKey(namespace, claim))
	var found *corev1.PersistentVolume
	for _, o := range objs {
		pv, ok := o.(*corev1.PersistentVolume)
		if !ok {
			continue
		}
		if found == nil || pv.Name == mutate.PVName(namespace, claim) {
			found = pv
		}
	}
	return found
}

// conflict reports a PV of the wanted name that serves another claim; it is left untouched.
func (c *controller) conflict(sts *appsv1.StatefulSet, key string, pv *corev1.PersistentVolume, cv mutate.ClaimVolume) {
	holder := "no claim"
	if ref := pv.Spec.ClaimRef; ref != nil {
		holder = "claim " + ref.Namespace + "/" + ref.Name
	}
	msg := fmt.Sprintf("PersistentVolume %s, wanted for claim %s/%s, is taken by %s; left untouched", pv.Name, cv.Namespace, cv.Claim, holder)
	if c.warnOnce(warnKey(key, "conflict/"+pv.Name), msg) {
		c.r.metrics.errors.WithLabelValues(ReasonConflict).Inc()
		c.r.recorder.Event(sts, corev1.EventTypeWarning, EventPVConflict, msg)
	}
}

// createdMessage aggregates the PVs created in one pass: one line, whatever their number.
func createdMessage(created map[string][]int, names []string) string {
	if len(names) == 1 {
		return fmt.Sprintf("created PersistentVolume %s (the webhook had not)", names[0])
	}
	templates := make([]string, 0, len(created))
	for t := range created {
		templates = append(templates, t)
	}
	sort.Strings(templates)
	parts := make([]string, 0, len(templates))
	for _, t := range templates {
		parts = append(parts, fmt.Sprintf("template %s ordinals %s", t, ranges(created[t])))
	}
	return fmt.Sprintf("created %d PersistentVolumes the webhook had not: %s", len(names), strings.Join(parts, "; "))
}

// ranges renders sorted ordinals compactly: 0-2,5,7-9.
func ranges(ns []int) string {
	ns = append([]int(nil), ns...)
	sort.Ints(ns)
	var b strings.Builder
	for i := 0; i < len(ns); {
		j := i
		for j+1 < len(ns) && ns[j+1] == ns[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(ns[i]))
		if j > i {
			b.WriteString("-" + strconv.Itoa(ns[j]))
		}
		i = j + 1
	}
	return b.String()
}

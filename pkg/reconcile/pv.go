package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// preconditionRetry is how soon a PV that changed under a delete is looked at again.
const preconditionRetry = time.Second

// syncPV judges one managed PV: an Available orphan, a Released Retain PV whose claim was
// re-created (handed back to it when the owner matches), or a Released/Failed one whose
// reclaim policy is Delete. It returns how long to wait before judging it again (a PV inside
// its grace period).
func (c *controller) syncPV(ctx context.Context, name string) (time.Duration, error) {
	pv, err := c.pvLister.Get(name)
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if pv.DeletionTimestamp != nil || pv.Labels[mutate.LabelManagedBy] != mutate.ManagedByValue {
		return 0, nil
	}
	if pv.Status.Phase != corev1.VolumeAvailable {
		c.forgetAbsent(pv.UID)
	}
	switch pv.Status.Phase {
	case corev1.VolumeAvailable:
		// Whatever the reclaim policy: an orphan's deletion removes only the PV object, never
		// a Datera volume, and the deterministic volumeID lets a later PV find any data again.
		// (Classes default to Retain, so a Delete-only rule would never clean anything up.)
		return c.syncAvailable(ctx, pv)
	case corev1.VolumeBound:
		// A pod of its claim may be waiting for a dead holder to be fenced.
		if ref := pv.Spec.ClaimRef; ref != nil && c.reports != nil {
			c.enqueueFenceForClaim(mutate.ClaimKey(ref.Namespace, ref.Name))
		}
	case corev1.VolumeReleased, corev1.VolumeFailed:
		// Retain means retain: a PV that served a claim is deleted only under Delete.
		if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
			if pv.Status.Phase == corev1.VolumeReleased {
				return c.syncFree(ctx, pv)
			}
			return 0, nil
		}
		return c.syncReleased(ctx, pv)
	}
	return 0, nil
}

// observeAbsent returns when the loop first saw the PV Available with no claim to bind it.
func (c *controller) observeAbsent(uid types.UID) time.Time {
	c.absentMu.Lock()
	defer c.absentMu.Unlock()
	t, ok := c.absentSince[uid]
	if !ok {
		t = c.opts.now()
		c.absentSince[uid] = t
	}
	return t
}

func (c *controller) forgetAbsent(uid types.UID) {
	c.absentMu.Lock()
	defer c.absentMu.Unlock()
	delete(c.absentSince, uid)
}

// claimMayBind reports whether the claim the PV is pre-bound to exists and is not bound to
// another PV.
func claimMayBind(pvc *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) bool {
	return pvc.Spec.VolumeName == "" || pvc.Spec.VolumeName == pv.Name
}

// syncAvailable deletes an Available PV that no StatefulSet ordinal needs, once the loop has
// seen it in that state for the grace period. Only the PV: it never served a claim in its
// life, so no Datera volume was created for it; one with the same (deterministic) volumeID
// predates it and holds data a previous PV retained, which a re-created StatefulSet is meant
// to find again.
//
// The grace period counts from when this loop first saw the PV Available with its claim
// absent, not from the PV's creation: a Released PV handed to a re-created claim is old but
// has only just become Available, and its claim may not have reached this loop's cache yet
// (or, with an older webhook that freed PVs at admission, may not even be stored yet). Before
// deleting, the claim and the StatefulSet are read live, so a stale cache never deletes a PV.
func (c *controller) syncAvailable(ctx context.Context, pv *corev1.PersistentVolume) (time.Duration, error) {
	// A claim that exists and is not bound elsewhere may still bind this PV.
	ref := pv.Spec.ClaimRef
	if ref != nil {
		if pvc, err := c.pvcLister.PersistentVolumeClaims(ref.Namespace).Get(ref.Name); err == nil && claimMayBind(pvc, pv) {
			c.forgetAbsent(pv.UID)
			return 0, nil
		}
	}
	if reason, _ := c.orphanReason(pv, c.cachedStatefulSet); reason == "" {
		c.forgetAbsent(pv.UID)
		return 0, nil
	}
	waited := c.opts.now().Sub(c.observeAbsent(pv.UID))
	if waited < c.opts.OrphanGrace {
		return c.opts.OrphanGrace - waited + 100*time.Millisecond, nil
	}
	// Judge again on live objects: deleting the PV of a claim being created strands it.
	if ref != nil {
		pvc, err := c.opts.Client.CoreV1().PersistentVolumeClaims(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		switch {
		case err == nil && claimMayBind(pvc, pv):
			c.forgetAbsent(pv.UID)
			return 0, nil
		case err != nil && !apierrors.IsNotFound(err):
			return 0, fmt.Errorf("read claim %s/%s of PV %s: %w", ref.Namespace, ref.Name, pv.Name, err)
		}
	}
	reason, sts := c.orphanReason(pv, func(ns, name string) (*appsv1.StatefulSet, error) {
		return c.opts.Client.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
	})
	if reason == "" {
		c.forgetAbsent(pv.UID)
		return 0, nil
	}
	deleted, err := c.deletePV(ctx, pv.Name, pv.UID, pv.ResourceVersion)
	if err != nil || !deleted {
		return preconditionRetry, err
	}
	c.forgetAbsent(pv.UID)
	c.r.metrics.orphansDeleted.Inc()
	msg := fmt.Sprintf("deleted PersistentVolume %s: Available for %s and %s (its Datera volume, if any, is kept)", pv.Name, waited.Round(time.Second), reason)
	c.log.Info("deleted orphan PV", "pv", pv.Name, "reason", reason)
	c.r.recorder.Event(pv, corev1.EventTypeNormal, EventDeletedOrphan, msg)
	if sts != nil {
		c.r.recorder.Event(sts, corev1.EventTypeNormal, EventDeletedOrphan, msg)
	}
	return 0, nil
}

func (c *controller) cachedStatefulSet(ns, name string) (*appsv1.StatefulSet, error) {
	return c.stsLister.StatefulSets(ns).Get(name)
}

// orphanReason says why no StatefulSet ordinal needs the PV ("" = it is needed, or cannot be
// judged), and returns the StatefulSet when it exists. getSts reads the StatefulSet (from the
// cache, or live).
func (c *controller) orphanReason(pv *corev1.PersistentVolume, getSts func(ns, name string) (*appsv1.StatefulSet, error)) (string, *appsv1.StatefulSet) {
	ns, stsName := pvOwner(pv)
	ref := pv.Spec.ClaimRef
	if stsName == "" {
		// A PV of the PVC-CREATE path: needed as long as its claim exists (checked before).
		if ref == nil {
			return "pre-bound to no claim", nil
		}
		return fmt.Sprintf("its claim %s/%s does not exist", ref.Namespace, ref.Name), nil
	}
	if ns == "" && ref != nil {
		ns = ref.Namespace
	}
	sts, err := getSts(ns, stsName)
	if apierrors.IsNotFound(err) {
		return fmt.Sprintf("StatefulSet %s/%s no longer exists", ns, stsName), nil
	}
	if err != nil {
		return "", nil
	}
	template := pv.Annotations[mutate.AnnClaimTemplate]
	if !slices.ContainsFunc(sts.Spec.VolumeClaimTemplates, func(t corev1.PersistentVolumeClaim) bool { return t.Name == template }) {
		return fmt.Sprintf("StatefulSet %s/%s has no claim template %q", ns, stsName, template), sts
	}
	n, err := strconv.Atoi(pv.Labels[mutate.LabelOrdinal])
	if err != nil && ref != nil {
		var ok bool
		if n, ok = mutate.ParseOrdinal(ref.Name, template, stsName); ok {
			err = nil
		}
	}
	if err != nil {
		return "", sts // cannot tell its ordinal: keep
	}
	if rng := mutate.OrdinalRangeOf(sts); !rng.Contains(int64(n)) {
		return fmt.Sprintf("its ordinal %d is outside StatefulSet %s/%s's ordinals [%d, %d)", n, ns, stsName, rng.Start, rng.End), sts
	}
	return "", sts
}

// syncReleased deletes the Datera volume of a Released (or Failed) PV with reclaim policy
// Delete whose claim is gone, and only then the PV, which until then is the record that the
// Datera volume still has to go. Any failure leaves the PV and is retried with backoff.
func (c *controller) syncReleased(ctx context.Context, cached *corev1.PersistentVolume) (time.Duration, error) {
	// Judge the live object, not the cache: deleting data cannot be undone.
	pvs := c.opts.Client.CoreV1().PersistentVolumes()
	pv, err := pvs.Get(ctx, cached.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if pv.DeletionTimestamp != nil || pv.Labels[mutate.LabelManagedBy] != mutate.ManagedByValue ||
		pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete ||
		(pv.Status.Phase != corev1.VolumeReleased && pv.Status.Phase != corev1.VolumeFailed) {
		return 0, nil
	}
	ref := pv.Spec.ClaimRef
	if ref == nil || ref.UID == "" {
		return 0, nil // never bound: not released by a claim
	}
	claim, err := c.opts.Client.CoreV1().PersistentVolumeClaims(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case err == nil && claim.UID == ref.UID:
		return 0, nil // its claim still exists (Failed for another reason)
	case err != nil && !apierrors.IsNotFound(err):
		return 0, err
	}
	var volumeID string
	if pv.Spec.FlexVolume != nil {
		volumeID = pv.Spec.FlexVolume.Options[pvoptions.OptVolumeID]
	}
	if pv.Spec.FlexVolume == nil || pv.Spec.FlexVolume.Driver != mutate.Driver {
		volumeID = "" // not a Datera volume: nothing of Datera's to delete
	}
	if volumeID == "" {
		msg := "managed PersistentVolume has no flexVolume.options.volumeID: cannot delete its Datera volume; left for an administrator"
		if c.warnOnce(malformedKey(pv.Name), msg) {
			c.r.metrics.errors.WithLabelValues(ReasonMalformedPV).Inc()
			c.r.recorder.Event(pv, corev1.EventTypeWarning, EventMalformedPV, msg)
		}
		return 0, nil
	}

	dctx, cancel := context.WithTimeout(ctx, c.opts.DateraTimeout)
	defer cancel()
	d, err := c.opts.DateraFor(dctx, pv)
	if err != nil {
		c.r.metrics.errors.WithLabelValues(ReasonDateraClient).Inc()
		c.r.recorder.Eventf(pv, corev1.EventTypeWarning, EventDateraDeleteFailed, "cannot reach Datera to delete volume %s (will retry): %v", volumeID, err)
		return 0, fmt.Errorf("datera client for PV %s: %w", pv.Name, err)
	}
	// The owner recorded on the Datera volume must be this PV's: two clusters sharing a
	// backstore, or a volume re-used under another claim, must never lose data to this PV's
	// reclaim. A volume without a recorded owner (made before owners were recorded) is
	// deleted as before; one already gone needs no check.
	meta, err := d.GetMetadata(dctx, volumeID)
	switch {
	case errors.Is(err, datera.ErrNotFound):
	case err != nil:
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		c.r.metrics.errors.WithLabelValues(ReasonDateraDelete).Inc()
		c.r.recorder.Eventf(pv, corev1.EventTypeWarning, EventDateraDeleteFailed, "reading the owner of Datera volume %s failed (will retry): %v", volumeID, err)
		return 0, fmt.Errorf("read owner of Datera volume %s of PV %s: %w", volumeID, pv.Name, err)
	default:
		if recorded, ok := pvoptions.OwnerFromMetadata(meta); ok {
			claimed, _ := pvoptions.OwnerFromOptions(pv.Spec.FlexVolume.Options)
			if err := pvoptions.CheckSameOwner(volumeID, recorded, claimed); err != nil {
				msg := fmt.Sprintf("not deleting Datera volume %s for reclaim policy Delete: %v; the PV is kept for an administrator", volumeID, err)
				if c.warnOnce(ownerKey(pv.Name), msg) {
					c.r.metrics.ownerRefused.WithLabelValues(OwnerRefusedDelete).Inc()
					c.r.recorder.Event(pv, corev1.EventTypeWarning, EventOwnerMismatch, msg)
					c.log.Warn("refused to delete another owner's Datera volume", "pv", pv.Name, "volumeID", volumeID, "err", err)
				}
				return 0, nil
			}
		}
	}
	if err := d.DeleteAppInstance(dctx, volumeID); err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		c.r.metrics.errors.WithLabelValues(ReasonDateraDelete).Inc()
		c.r.recorder.Eventf(pv, corev1.EventTypeWarning, EventDateraDeleteFailed, "deleting Datera volume %s failed (will retry): %v", volumeID, err)
		return 0, fmt.Errorf("delete Datera volume %s of PV %s: %w", volumeID, pv.Name, err)
	}
	c.r.metrics.dateraDeleted.Inc()
	c.r.recorder.Eventf(pv, corev1.EventTypeNormal, EventDeletedDatera, "deleted Datera volume %s (reclaim policy Delete, claim %s/%s gone)", volumeID, ref.Namespace, ref.Name)
	c.clearWarning(malformedKey(pv.Name))

	deleted, err := c.deletePV(ctx, pv.Name, pv.UID, pv.ResourceVersion)
	if err != nil {
		return 0, err
	}
	if !deleted {
		// Changed since read: judge again (the Datera delete is idempotent).
		return preconditionRetry, nil
	}
	c.r.metrics.releasedDeleted.Inc()
	c.log.Info("deleted released PV and its Datera volume", "pv", pv.Name, "volumeID", volumeID)
	if ns, name := pvOwner(pv); name != "" {
		if sts, err := c.stsLister.StatefulSets(ns).Get(name); err == nil {
			c.r.recorder.Eventf(sts, corev1.EventTypeNormal, EventDeletedReleased,
				"deleted PersistentVolume %s and its Datera volume %s (reclaim policy Delete, claim %s gone)", pv.Name, volumeID, ref.Name)
		}
	}
	return 0, nil
}

// deletePV deletes a PV only if it is still the object judged (UID and resourceVersion).
// deleted is false when it changed meanwhile; an already deleted PV counts as deleted.
func (c *controller) deletePV(ctx context.Context, name string, uid types.UID, rv string) (bool, error) {
	err := c.opts.Client.CoreV1().PersistentVolumes().Delete(ctx, name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv},
	})
	switch {
	case err == nil, apierrors.IsNotFound(err):
		return true, nil
	case apierrors.IsConflict(err):
		c.r.metrics.errors.WithLabelValues(ReasonPrecondition).Inc()
		c.log.Info("PV changed since it was judged; not deleted", "pv", name, "err", err)
		return false, nil
	default:
		c.r.metrics.errors.WithLabelValues(ReasonDeletePV).Inc()
		return false, fmt.Errorf("delete PV %s: %w", name, err)
	}
}

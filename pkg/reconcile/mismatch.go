package reconcile

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// AnnReleasedFrom marks a PV the loop handed from a deleted claim to its re-created one: it
// served a claim before, so it is never "never bound" (see repairPV).
const AnnReleasedFrom = "petfabric.io/released-from-claim-uid"

func mismatchKey(pvName string) string { return "pv/" + pvName + "|mismatch" }

// checkPV compares an existing PV of the claim with what the claim's template needs. A PV
// that does not fit is never silently taken as the claim's volume: it is reported (event on
// the StatefulSet and the PV, petfabric_reconcile_pv_mismatch_total{reason}, once per distinct
// finding), and replaced by the right PV when that is safe (repairPV).
func (c *controller) checkPV(ctx context.Context, sts *appsv1.StatefulSet, key string, cv mutate.ClaimVolume, existing, want *corev1.PersistentVolume) error {
	ms := mutate.CheckPV(c.opts.Mutate, cv, existing)
	if len(ms) == 0 {
		c.clearWarning(mismatchKey(existing.Name))
		return nil
	}
	details := make([]string, 0, len(ms))
	for _, m := range ms {
		details = append(details, m.Detail)
	}
	found := fmt.Sprintf("PersistentVolume %s does not match claim %s/%s: %s", existing.Name, cv.Namespace, cv.Claim, strings.Join(details, "; "))
	countOnce := func(msg string) bool {
		if !c.warnOnce(mismatchKey(existing.Name), msg) {
			return false
		}
		for _, m := range ms {
			c.r.metrics.pvMismatch.WithLabelValues(m.Reason).Inc()
		}
		return true
	}
	why, err := c.replaceable(ctx, existing, cv)
	if err != nil {
		return err
	}
	if why != "" {
		msg := found + "; not replaced: " + why
		if countOnce(msg) {
			c.r.recorder.Event(sts, corev1.EventTypeWarning, EventPVMismatch, msg)
			c.r.recorder.Event(existing, corev1.EventTypeWarning, EventPVMismatch, msg)
			c.log.Warn("PV does not match its claim; left as it is", "pv", existing.Name, "claim", cv.Namespace+"/"+cv.Claim, "mismatch", details, "why", why)
		}
		return nil
	}
	countOnce(found + "; replacing it")
	deleted, err := c.deletePV(ctx, existing.Name, existing.UID, existing.ResourceVersion)
	if err != nil || !deleted {
		return err // changed since judged: the next pass looks again
	}
	if _, err := c.opts.Client.CoreV1().PersistentVolumes().Create(ctx, want, metav1.CreateOptions{FieldManager: Component}); err != nil {
		c.r.metrics.errors.WithLabelValues(ReasonCreatePV).Inc()
		return fmt.Errorf("re-create PV %s for claim %s/%s after removing a mismatching one: %w", want.Name, cv.Namespace, cv.Claim, err)
	}
	c.clearWarning(mismatchKey(existing.Name))
	c.r.metrics.pvsReplaced.Inc()
	msg := found + "; replaced by " + want.Name + " (it was Available and never bound, the claim did not exist yet, and no other owner's data was on its Datera volume)"
	c.r.recorder.Event(sts, corev1.EventTypeNormal, EventReplacedPV, msg)
	c.log.Info("replaced a PV that did not match its claim", "old", existing.Name, "new", want.Name, "mismatch", details)
	return nil
}

// replaceable says why a mismatching PV may not be replaced ("" = it may): only a PV that is
// Available and never served a claim, whose claim does not exist yet (read live), and whose
// Datera volume was not created yet or records this very claim as its owner — and, when the
// right PV names another volume, only if the old one's volume was never created (replacing it
// would strand data). Anything else is reported for an administrator.
func (c *controller) replaceable(ctx context.Context, pv *corev1.PersistentVolume, cv mutate.ClaimVolume) (string, error) {
	switch {
	case pv.Status.Phase != corev1.VolumeAvailable:
		return fmt.Sprintf("it is %s", cmp.Or(string(pv.Status.Phase), "not Available")), nil
	case pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.UID != "", pv.Annotations[AnnReleasedFrom] != "":
		return "it served a claim before", nil
	case pv.Labels[mutate.LabelManagedBy] != mutate.ManagedByValue:
		return "petfabric did not make it", nil
	case pv.Spec.FlexVolume == nil || pv.Spec.FlexVolume.Driver != mutate.Driver || pv.Spec.FlexVolume.Options[pvoptions.OptVolumeID] == "":
		return "it is not a Datera volume petfabric can check", nil
	}
	_, err := c.opts.Client.CoreV1().PersistentVolumeClaims(cv.Namespace).Get(ctx, cv.Claim, metav1.GetOptions{})
	switch {
	case err == nil:
		return "its claim exists already", nil
	case !apierrors.IsNotFound(err):
		return "", fmt.Errorf("read claim %s/%s: %w", cv.Namespace, cv.Claim, err)
	}
	volumeID := pv.Spec.FlexVolume.Options[pvoptions.OptVolumeID]
	wantID, err := mutate.VolumeID(c.opts.Mutate.ClusterID, cv.Namespace, cv.Claim)
	if err != nil {
		return err.Error(), nil
	}
	dctx, cancel := context.WithTimeout(ctx, c.opts.DateraTimeout)
	defer cancel()
	d, err := c.opts.DateraFor(dctx, pv)
	if err != nil {
		return fmt.Sprintf("its Datera volume %s could not be checked: %v", volumeID, err), nil
	}
	meta, err := d.GetMetadata(dctx, volumeID)
	switch {
	case errors.Is(err, datera.ErrNotFound):
		return "", nil // never created: nothing on it
	case err != nil:
		return fmt.Sprintf("its Datera volume %s could not be checked: %v", volumeID, err), nil
	case volumeID != wantID:
		return fmt.Sprintf("its Datera volume %s exists and the claim's is %s", volumeID, wantID), nil
	}
	recorded, ok := pvoptions.OwnerFromMetadata(meta)
	if !ok {
		return fmt.Sprintf("its Datera volume %s exists and records no owner", volumeID), nil
	}
	if err := pvoptions.CheckSameOwner(volumeID, recorded, cv.Owner(c.opts.Mutate)); err != nil {
		return err.Error(), nil
	}
	return "", nil
}

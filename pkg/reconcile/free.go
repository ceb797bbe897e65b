package reconcile

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

func ownerKey(pvName string) string { return "pv/" + pvName + "|owner" }
func freeKey(pvName string) string  { return "pv/" + pvName + "|free" }

// syncFree hands a Released Retain PV to the re-created claim of its name, so a re-created
// StatefulSet finds its data again — but only to the same owner. The rule: the claim must
// exist (read live, never from an admission review or a cache), be Pending and not bound or
// pre-bound elsewhere, match the PV's claimRef namespace and name, and its namespace's UID
// (read live) must equal the namespace UID recorded on the PV when it was made. A namespace
// deleted and re-created under the same name has a new UID: its new tenant does not inherit
// the old tenant's retained data; the PV stays Released for an administrator (event + metric).
// A PV made before owners were recorded (no namespaceUID option) is never handed over
// automatically: nothing tells the namespace it was made in from a new one of the same name.
//
// Freeing drops claimRef.uid and claimRef.resourceVersion with an update guarded by the PV's
// resourceVersion; the PV controller then binds the PV to the new claim.
func (c *controller) syncFree(ctx context.Context, cached *corev1.PersistentVolume) (time.Duration, error) {
	ref := cached.Spec.ClaimRef
	if ref == nil || ref.UID == "" || ref.Name == "" {
		return 0, nil
	}
	// The cache decides whether a live look is worth it; a claim added later enqueues the PV.
	if cachedClaim, err := c.pvcLister.PersistentVolumeClaims(ref.Namespace).Get(ref.Name); err != nil || cachedClaim.UID == ref.UID {
		return 0, nil
	}
	claim, err := c.opts.Client.CoreV1().PersistentVolumeClaims(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("read claim %s/%s for Released PV %s: %w", ref.Namespace, ref.Name, cached.Name, err)
	}
	if claim.UID == ref.UID || claim.DeletionTimestamp != nil || claim.Status.Phase != corev1.ClaimPending || !claimMayBind(claim, cached) {
		return 0, nil
	}
	pvs := c.opts.Client.CoreV1().PersistentVolumes()
	pv, err := pvs.Get(ctx, cached.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("read PV %s: %w", cached.Name, err)
	}
	ref = pv.Spec.ClaimRef
	if pv.DeletionTimestamp != nil || pv.Labels[mutate.LabelManagedBy] != mutate.ManagedByValue ||
		pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain || pv.Status.Phase != corev1.VolumeReleased ||
		ref == nil || ref.UID == "" || ref.Namespace != claim.Namespace || ref.Name != claim.Name || pv.Spec.FlexVolume == nil {
		return 0, nil
	}
	if cls := mutate.ClaimClass(claim); cls != pv.Spec.StorageClassName {
		c.log.Debug("not freeing: the new claim's class differs", "pv", pv.Name, "claimClass", cls, "pvClass", pv.Spec.StorageClassName)
		return 0, nil
	}
	refuse := func(why string) (time.Duration, error) {
		msg := fmt.Sprintf("Released PersistentVolume %s not handed to the new claim %s/%s: %s; its data is kept for an administrator", pv.Name, claim.Namespace, claim.Name, why)
		if c.warnOnce(freeKey(pv.Name), msg) {
			c.r.metrics.ownerRefused.WithLabelValues(OwnerRefusedFree).Inc()
			c.r.recorder.Event(pv, corev1.EventTypeWarning, EventNotFreed, msg)
			c.r.recorder.Event(claim, corev1.EventTypeWarning, EventNotFreed, msg)
			c.log.Warn("refused to hand a Released PV to a claim of another owner", "pv", pv.Name, "claim", claim.Namespace+"/"+claim.Name, "why", why)
		}
		return 0, nil
	}
	owner, ok := pvoptions.OwnerFromOptions(pv.Spec.FlexVolume.Options)
	if !ok {
		return refuse("it records no owner (made before petfabric recorded owners), so nothing shows the claim's namespace is the one it was made in")
	}
	if owner.Namespace != claim.Namespace || owner.Claim != claim.Name {
		return refuse(fmt.Sprintf("it records claim %s/%s as its owner", owner.Namespace, owner.Claim))
	}
	ns, err := c.opts.Client.CoreV1().Namespaces().Get(ctx, claim.Namespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("read namespace %s for Released PV %s: %w", claim.Namespace, pv.Name, err)
	}
	if string(ns.UID) != owner.NamespaceUID {
		return refuse(fmt.Sprintf("it belongs to namespace %s with UID %s, and namespace %s now has UID %s (deleted and re-created)",
			owner.Namespace, owner.NamespaceUID, ns.Name, ns.UID))
	}
	upd := pv.DeepCopy()
	upd.Spec.ClaimRef = &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: claim.Namespace, Name: claim.Name}
	if upd.Annotations == nil {
		upd.Annotations = map[string]string{}
	}
	upd.Annotations[AnnReleasedFrom] = string(ref.UID)
	if _, err := pvs.Update(ctx, upd, metav1.UpdateOptions{FieldManager: Component}); err != nil {
		if apierrors.IsConflict(err) {
			c.r.metrics.errors.WithLabelValues(ReasonPrecondition).Inc()
			return preconditionRetry, nil // changed since read: judge again
		}
		c.r.metrics.errors.WithLabelValues(ReasonFreePV).Inc()
		return 0, fmt.Errorf("free Released PV %s for claim %s/%s: %w", pv.Name, claim.Namespace, claim.Name, err)
	}
	c.clearWarning(freeKey(pv.Name))
	c.r.metrics.pvsFreed.Inc()
	msg := fmt.Sprintf("Released PersistentVolume %s handed to the re-created claim %s/%s (same owner: namespace UID %s)", pv.Name, claim.Namespace, claim.Name, owner.NamespaceUID)
	c.log.Info("freed Released PV for its re-created claim", "pv", pv.Name, "claim", claim.Namespace+"/"+claim.Name)
	c.r.recorder.Event(pv, corev1.EventTypeNormal, EventFreedPV, msg)
	c.r.recorder.Event(claim, corev1.EventTypeNormal, EventFreedPV, msg)
	return 0, nil
}

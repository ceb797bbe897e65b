package mutate

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// ClaimClass is a claim's (or claim template's) effective StorageClass: the one the PV
// controller binds it with. The beta annotation volume.beta.kubernetes.io/storage-class, when
// present (even empty), wins over spec.storageClassName; "" means no class. This is the one
// definition the webhook (which templates are Datera-bound), the PVC hook and the reconcile
// loop (which class a claim asks for) all use, so they cannot give two answers for one claim.
func ClaimClass(pvc *corev1.PersistentVolumeClaim) string {
	if c, ok := pvc.Annotations[BetaClassAnnotation]; ok {
		return c
	}
	if pvc.Spec.StorageClassName != nil {
		return *pvc.Spec.StorageClassName
	}
	return ""
}

// HasClass reports whether the claim asks for a class at all, empty included: the beta
// annotation is present or spec.storageClassName is set. A claim without one is what the
// DefaultStorageClass admission plugin (and an opted-in namespace's default) fills in.
func HasClass(pvc *corev1.PersistentVolumeClaim) bool {
	_, beta := pvc.Annotations[BetaClassAnnotation]
	return beta || pvc.Spec.StorageClassName != nil
}

// OrdinalRange is the half-open range [Start, End) of a StatefulSet's ordinals. A range, never
// a slice: replicas is whatever int32 the user sent (mutating admission runs before the
// apiserver validates it), so it is held in int64 and never allocated.
type OrdinalRange struct{ Start, End int64 }

// OrdinalRangeOf is the StatefulSet's ordinal range as its controller reads it (Ordinals):
// from spec.ordinals.start (0 when unset) for spec.replicas ordinals (1 when unset, none when 0
// or negative). It is the one definition the webhook and the reconcile loop both use.
func OrdinalRangeOf(sts *appsv1.StatefulSet) OrdinalRange {
	start, replicas := Ordinals(sts)
	return OrdinalRange{start, start + max(replicas, 0)}
}

// Len is the number of ordinals in the range.
func (r OrdinalRange) Len() int64 { return max(r.End-r.Start, 0) }

// Contains reports whether ordinal n is in the range.
func (r OrdinalRange) Contains(n int64) bool { return n >= r.Start && n < r.End }

// Below is the part of the range under ceiling (Config.OrdinalCeiling): the ordinals that get
// Datera volumes. It is empty when the range starts at or above the ceiling.
func (r OrdinalRange) Below(ceiling int) OrdinalRange {
	c := int64(ceiling)
	return OrdinalRange{min(r.Start, c), min(r.End, c)}
}

// Minus is r without old: at most two ranges (ordinals added below and above old).
func (r OrdinalRange) Minus(old OrdinalRange) []OrdinalRange {
	if old.End <= r.Start || old.Start >= r.End || old.Start >= old.End {
		return []OrdinalRange{r}
	}
	var out []OrdinalRange
	if r.Start < old.Start {
		out = append(out, OrdinalRange{r.Start, old.Start})
	}
	if old.End < r.End {
		out = append(out, OrdinalRange{old.End, r.End})
	}
	return out
}

package mutate

import (
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Ordinals returns the first ordinal and the replica count of a StatefulSet, as int64 (replicas
// and ordinals.start are whatever int32 the user sent: mutating admission runs before
// validation). A nil replicas is the API default, 1.
func Ordinals(sts *appsv1.StatefulSet) (start, replicas int64) {
	replicas = 1
	if sts.Spec.Replicas != nil {
		replicas = int64(*sts.Spec.Replicas)
	}
	if sts.Spec.Ordinals != nil {
		start = int64(sts.Spec.Ordinals.Start)
	}
	return start, replicas
}

// CheckOrdinals refuses a Datera-bound StatefulSet whose ordinals reach past the ceiling
// (cfg.OrdinalCeiling): every ordinal is a PV and a Datera volume, so replicas: 2147483647
// would make the webhook and the reconcile loop create volumes without end.
func CheckOrdinals(cfg Config, sts *appsv1.StatefulSet) error {
	ceiling := int64(cfg.OrdinalCeiling())
	start, replicas := Ordinals(sts)
	if replicas <= 0 || start+replicas <= ceiling {
		return nil
	}
	if start >= ceiling {
		return &ValidationError{Field: "spec.ordinals.start", Value: strconv.FormatInt(start, 10),
			Allowed: fmt.Sprintf("below %d: a StatefulSet with Datera volumes may use ordinals 0 to %d (the webhook's --max-ordinals)", ceiling, ceiling-1)}
	}
	return &ValidationError{Field: "spec.replicas", Value: strconv.FormatInt(replicas, 10),
		Allowed: fmt.Sprintf("at most %d with spec.ordinals.start %d: a StatefulSet with Datera volumes may use ordinals 0 to %d (the webhook's --max-ordinals); each ordinal is a Datera volume",
			ceiling-start, start, ceiling-1)}
}

// ValidateStatefulSet checks, before the webhook creates anything for a StatefulSet, the rules
// of the apiserver's own validation (Kubernetes v1.36) that decide whether the object can be
// stored at all and that a valid-looking request can still break: non-negative replicas and
// ordinals.start, a non-empty selector that matches the pod template's labels, and on UPDATE
// (old != nil) that nothing but the mutable spec fields changed. Mutating admission runs
// before validation: without this check the PVs of an object the apiserver then rejects would
// be left behind. Other admission plugins that run later can still reject the object; the PVs
// of ordinals that never come are then Available orphans, which the reconcile loop removes.
func ValidateStatefulSet(sts, old *appsv1.StatefulSet) error {
	start, replicas := Ordinals(sts)
	if replicas < 0 {
		return &ValidationError{Field: "spec.replicas", Value: strconv.FormatInt(replicas, 10), Allowed: "a number of replicas, 0 or more"}
	}
	if start < 0 {
		return &ValidationError{Field: "spec.ordinals.start", Value: strconv.FormatInt(start, 10), Allowed: "an ordinal, 0 or more"}
	}
	sel := sts.Spec.Selector
	if sel == nil || len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
		return &ValidationError{Field: "spec.selector", Allowed: "a non-empty label selector"}
	}
	selector, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return &ValidationError{Field: "spec.selector", Value: metav1.FormatLabelSelector(sel), Allowed: err.Error()}
	}
	if !selector.Matches(labels.Set(sts.Spec.Template.Labels)) {
		return &ValidationError{Field: "spec.template.metadata.labels", Value: labels.Set(sts.Spec.Template.Labels).String(),
			Allowed: "labels that match spec.selector " + metav1.FormatLabelSelector(sel)}
	}
	if old == nil {
		return nil
	}
	clone := sts.Spec.DeepCopy()
	clone.Replicas = old.Spec.Replicas
	clone.Template = old.Spec.Template
	clone.UpdateStrategy = old.Spec.UpdateStrategy
	clone.MinReadySeconds = old.Spec.MinReadySeconds
	clone.Ordinals = old.Spec.Ordinals
	clone.RevisionHistoryLimit = old.Spec.RevisionHistoryLimit
	clone.PersistentVolumeClaimRetentionPolicy = old.Spec.PersistentVolumeClaimRetentionPolicy
	if !apiequality.Semantic.DeepEqual(*clone, old.Spec) {
		return &ValidationError{Field: "spec", Value: "changed",
			Allowed: "updates to fields other than replicas, ordinals, template, updateStrategy, revisionHistoryLimit, persistentVolumeClaimRetentionPolicy and minReadySeconds are forbidden"}
	}
	return nil
}

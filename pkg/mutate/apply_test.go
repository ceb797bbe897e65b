package mutate

import appsv1 "k8s.io/api/apps/v1"

// applyPlan is the tests' oracle for Plan.Patch, written on the typed object: a copy of the
// StatefulSet with every planned template pinned (storageClassName set to its Datera class, a
// beta annotation rewritten to match, the recorded annotations added). Production code only
// ever patches; this is what the patch must amount to.
func applyPlan(p Plan, sts *appsv1.StatefulSet) *appsv1.StatefulSet {
	out := sts.DeepCopy()
	for _, tp := range p.Templates {
		t := &out.Spec.VolumeClaimTemplates[tp.Index]
		class := tp.Class.Name
		t.Spec.StorageClassName = &class
		if t.Annotations == nil {
			t.Annotations = map[string]string{}
		}
		if _, ok := t.Annotations[BetaClassAnnotation]; ok {
			t.Annotations[BetaClassAnnotation] = class
		}
		for k, v := range recordedAnnotations(tp, sts.Name) {
			t.Annotations[k] = v
		}
	}
	return out
}

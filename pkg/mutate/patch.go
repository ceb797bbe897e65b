package mutate

import (
	"encoding/json"
	"fmt"

	"gomodules.xyz/jsonpatch/v2"
	appsv1 "k8s.io/api/apps/v1"
)

// Apply returns a copy of the StatefulSet with every planned template pinned: storageClassName
// set to its Datera class, a legacy beta annotation rewritten to match (the PV controller
// would otherwise prefer it), and the resolved options plus petfabric.io/statefulset and
// petfabric.io/claim-template recorded as annotations, which every claim inherits.
func (p Plan) Apply(sts *appsv1.StatefulSet) *appsv1.StatefulSet {
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
		for k, v := range tp.Options.raw {
			t.Annotations[AnnotationPrefix+k] = v
		}
		t.Annotations[AnnStatefulSet] = sts.Name
		t.Annotations[AnnClaimTemplate] = t.Name
	}
	return out
}

// Patch returns the RFC 6902 JSON Patch that turns the object as the apiserver sent it (raw)
// into p.Apply(sts), or nil when it is already mutated (the webhook must be idempotent).
// Diffing against the raw bytes keeps fields this build's types do not know untouched.
func (p Plan) Patch(raw []byte, sts *appsv1.StatefulSet) ([]byte, error) {
	mutated, err := json.Marshal(p.Apply(sts))
	if err != nil {
		return nil, fmt.Errorf("marshal mutated statefulset: %w", err)
	}
	ops, err := jsonpatch.CreatePatch(raw, mutated)
	if err != nil {
		return nil, fmt.Errorf("diff statefulset: %w", err)
	}
	// Round-tripping through the typed object may add empty defaults ("status": {},
	// "creationTimestamp": null); only changes to the claim templates are ours.
	var keep []jsonpatch.Operation
	for _, op := range ops {
		if isTemplatePath(op.Path) {
			keep = append(keep, op)
		}
	}
	if len(keep) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(keep)
	if err != nil {
		return nil, fmt.Errorf("marshal patch: %w", err)
	}
	return b, nil
}

func isTemplatePath(path string) bool {
	const prefix = "/spec/volumeClaimTemplates/"
	return len(path) > len(prefix) && path[:len(prefix)] == prefix
}

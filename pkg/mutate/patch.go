package mutate

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	sigsjson "sigs.k8s.io/json"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// recordedAnnotations are the annotations the patch sets on a planned template.
func recordedAnnotations(tp TemplatePlan, statefulSet string) map[string]string {
	out := make(map[string]string, len(tp.Options.raw)+2)
	for k, v := range tp.Options.raw {
		// size is not an option any more (the request is the size): not recorded.
		if !AdminOnly(k) && k != pvoptions.OptSize {
			out[AnnotationPrefix+k] = v
		}
	}
	out[AnnStatefulSet] = statefulSet
	out[AnnClaimTemplate] = tp.Name
	return out
}

// patchOp is one RFC 6902 operation; the patch only ever adds (which replaces an existing
// member).
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// Patch returns the RFC 6902 JSON Patch that pins every planned template of the object as the
// apiserver sent it (raw): storageClassName set to its Datera class, a legacy beta annotation
// rewritten to match, and the resolved options (except the admin-only ones and size) plus
// petfabric.io/statefulset and petfabric.io/claim-template recorded as annotations, which every
// claim inherits. It is nil when the object is already mutated (the webhook must be idempotent).
// It is written against raw, member by member, and touches only the members the webhook owns:
// each planned template's spec.storageClassName, its petfabric.io/* annotations and the beta
// class annotation. Everything else in raw — including fields this build's types do not
// know — is left exactly as sent.
func (p Plan) Patch(raw []byte, sts *appsv1.StatefulSet) ([]byte, error) {
	if len(p.Templates) == 0 {
		return nil, nil
	}
	var doc rawStatefulSet
	strict, err := sigsjson.UnmarshalStrict(raw, &doc, sigsjson.DisallowDuplicateFields)
	if err != nil {
		return nil, fmt.Errorf("statefulset: %w", err)
	}
	if len(strict) > 0 {
		// A patch applier keeps the last of duplicate members; decoders differ. The
		// apiserver never sends them, so refuse rather than guess.
		return nil, fmt.Errorf("statefulset: %w", strict[0])
	}
	var templates []*rawTemplate
	if doc.Spec != nil {
		templates = doc.Spec.VolumeClaimTemplates
	}
	var ops []patchOp
	for _, tp := range p.Templates {
		if tp.Index >= len(templates) {
			return nil, fmt.Errorf("statefulset: spec.volumeClaimTemplates[%d] is not in the object", tp.Index)
		}
		t := templates[tp.Index]
		if t == nil || t.Metadata == nil || t.Spec == nil {
			return nil, fmt.Errorf("statefulset: spec.volumeClaimTemplates[%d] lacks metadata or spec objects", tp.Index)
		}
		base := "/spec/volumeClaimTemplates/" + strconv.Itoa(tp.Index)
		if cur, ok := t.Spec.StorageClassName.(string); !ok || cur != tp.Class.Name {
			ops = append(ops, patchOp{"add", base + "/spec/storageClassName", tp.Class.Name})
		}
		want := recordedAnnotations(tp, sts.Name)
		have := t.Metadata.Annotations
		if _, ok := have[BetaClassAnnotation]; ok {
			want[BetaClassAnnotation] = tp.Class.Name
		}
		if have == nil { // absent or null: the whole map in one operation
			ops = append(ops, patchOp{"add", base + "/metadata/annotations", want})
			continue
		}
		keys := make([]string, 0, len(want))
		for k := range want {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if cur, ok := have[k].(string); !ok || cur != want[k] {
				ops = append(ops, patchOp{"add", base + "/metadata/annotations/" + escapePointer(k), want[k]})
			}
		}
	}
	podOps, err := p.podTemplateOps(doc.Spec)
	if err != nil {
		return nil, err
	}
	ops = append(ops, podOps...)
	if len(ops) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("marshal patch: %w", err)
	}
	return b, nil
}

// rawStatefulSet is the part of a StatefulSet's JSON the patch is written against. It is
// decoded with sigs.k8s.io/json: member names match exactly (encoding/json would also match
// "Spec" or "SPEC"), as they must for the paths of a JSON Patch.
type rawStatefulSet struct {
	Spec *rawStatefulSetSpec `json:"spec"`
}

type rawStatefulSetSpec struct {
	VolumeClaimTemplates []*rawTemplate `json:"volumeClaimTemplates"`
	Template             *struct {
		Spec *struct {
			SchedulerName any             `json:"schedulerName"`
			Containers    []*rawContainer `json:"containers"`
		} `json:"spec"`
	} `json:"template"`
}

type rawContainer struct {
	Resources map[string]json.RawMessage `json:"resources"` // nil when absent or null
}

type rawTemplate struct {
	Metadata *struct {
		Annotations map[string]any `json:"annotations"` // nil when absent or null
	} `json:"metadata"`
	Spec *struct {
		StorageClassName any `json:"storageClassName"`
	} `json:"spec"`
}

var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// escapePointer escapes one JSON Pointer reference token (RFC 6901).
func escapePointer(s string) string { return pointerEscaper.Replace(s) }

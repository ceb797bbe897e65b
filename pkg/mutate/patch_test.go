package mutate

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// rawWithUnknownFields is a StatefulSet as a newer apiserver might send it: fields this
// build's types do not know, inside and outside the claim templates.
const rawWithUnknownFields = `{
  "apiVersion": "apps/v1", "kind": "StatefulSet",
  "metadata": {"name": "web", "namespace": "shop", "futureMeta": {"x": 1}},
  "spec": {
    "replicas": 2,
    "futureSpec": true,
    "selector": {"matchLabels": {"app": "web"}},
    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
    "volumeClaimTemplates": [
      {"metadata": {"name": "data", "labels": {"tier": "db"}, "futureTemplateMeta": "keep"},
       "spec": {"storageClassName": "datera-gold", "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "10Gi"}}, "futureClaimSpec": {"keep": [1, 2]}},
       "status": {"futureStatus": 1}},
      {"metadata": {"name": "other", "annotations": {"a/b~c": "1", "volume.beta.kubernetes.io/storage-class": "datera-silver"}},
       "spec": {"resources": {"requests": {"storage": "1Gi"}}}},
      {"metadata": {"name": "nulls", "annotations": null},
       "spec": {"storageClassName": "datera-gold", "resources": {"requests": {"storage": "1Gi"}}}}
    ]
  },
  "futureTop": "keep"
}`

// TestPatchOnlyTouchesOwnedMembers: the patch adds exactly the webhook's members and leaves
// every other byte of the object — unknown fields included — as sent.
func TestPatchOnlyTouchesOwnedMembers(t *testing.T) {
	raw := []byte(rawWithUnknownFields)
	sts := stsFromJSON(t, raw)
	plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: loadClasses(t)})
	require.NoError(t, err)
	require.Len(t, plan.Templates, 3)
	patch, err := plan.Patch(raw, sts)
	require.NoError(t, err)

	var ops []struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	require.NoError(t, json.Unmarshal(patch, &ops))
	var paths []string
	for _, op := range ops {
		assert.Equal(t, "add", op.Op)
		paths = append(paths, op.Path)
	}
	assert.Equal(t, []string{
		// data: storageClassName already right; no annotations yet: the whole map at once.
		"/spec/volumeClaimTemplates/0/metadata/annotations",
		// other: class from the beta annotation; annotations exist: one key each, escaped.
		"/spec/volumeClaimTemplates/1/spec/storageClassName",
		"/spec/volumeClaimTemplates/1/metadata/annotations/petfabric.io~1claim-template",
		"/spec/volumeClaimTemplates/1/metadata/annotations/petfabric.io~1fsType",
		"/spec/volumeClaimTemplates/1/metadata/annotations/petfabric.io~1ipPool",
		"/spec/volumeClaimTemplates/1/metadata/annotations/petfabric.io~1maxBW",
		"/spec/volumeClaimTemplates/1/metadata/annotations/petfabric.io~1replica",
		"/spec/volumeClaimTemplates/1/metadata/annotations/petfabric.io~1statefulset",
		"/spec/volumeClaimTemplates/1/metadata/annotations/petfabric.io~1template",
		// annotations: null is replaced as a whole.
		"/spec/volumeClaimTemplates/2/metadata/annotations",
	}, paths, "patch: %s", patch)

	out := applyPatch(t, raw, patch)
	var before, after map[string]any
	require.NoError(t, json.Unmarshal(raw, &before))
	require.NoError(t, json.Unmarshal(out, &after))
	// Undo exactly the owned members; what is left must equal the input.
	for i, tpl := range after["spec"].(map[string]any)["volumeClaimTemplates"].([]any) {
		m := tpl.(map[string]any)
		orig := before["spec"].(map[string]any)["volumeClaimTemplates"].([]any)[i].(map[string]any)
		if _, had := orig["spec"].(map[string]any)["storageClassName"]; !had {
			delete(m["spec"].(map[string]any), "storageClassName")
		}
		ann := m["metadata"].(map[string]any)["annotations"].(map[string]any)
		origAnn, _ := orig["metadata"].(map[string]any)["annotations"].(map[string]any)
		for k := range ann {
			if _, had := origAnn[k]; !had {
				delete(ann, k)
			}
		}
		switch origAnn, had := orig["metadata"].(map[string]any)["annotations"]; {
		case !had:
			delete(m["metadata"].(map[string]any), "annotations")
		case origAnn == nil:
			m["metadata"].(map[string]any)["annotations"] = nil
		}
	}
	assert.Equal(t, before, after)

	// The user's own annotation with "/" and "~" in its key survived.
	var got map[string]any
	require.NoError(t, json.Unmarshal(out, &got))
	ann := got["spec"].(map[string]any)["volumeClaimTemplates"].([]any)[1].(map[string]any)["metadata"].(map[string]any)["annotations"].(map[string]any)
	assert.Equal(t, "1", ann["a/b~c"])
	assert.Equal(t, "datera-silver", ann[BetaClassAnnotation])

	// Idempotent on the patched bytes.
	sts2 := stsFromJSON(t, out)
	plan2, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts2, Classes: loadClasses(t)})
	require.NoError(t, err)
	p2, err := plan2.Patch(out, sts2)
	require.NoError(t, err)
	assert.Nil(t, p2)
}

// TestPatchRepairsDrift: a template whose recorded annotations were edited (or that a
// previous webhook version recorded differently) is brought back, key by key.
func TestPatchRepairsDrift(t *testing.T) {
	sts, raw := loadSTS(t, "test-petset.yaml")
	classes := loadClasses(t)
	plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: classes})
	require.NoError(t, err)
	patch, err := plan.Patch(raw, sts)
	require.NoError(t, err)
	patched := applyPatch(t, raw, patch)

	var obj map[string]any
	require.NoError(t, json.Unmarshal(patched, &obj))
	ann := obj["spec"].(map[string]any)["volumeClaimTemplates"].([]any)[0].(map[string]any)["metadata"].(map[string]any)["annotations"].(map[string]any)
	ann[AnnStatefulSet] = "someone-else"
	ann[AnnotationPrefix+pvoptions.OptFSType] = 7 // not even a string
	drifted := mustJSON(t, obj)
	// The typed object cannot hold a number annotation; decide on what it can hold.
	ann[AnnotationPrefix+pvoptions.OptFSType] = "xfs"
	sts2 := stsFromJSON(t, mustJSON(t, obj))
	plan2, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts2, Classes: classes})
	require.NoError(t, err)
	p2, err := plan2.Patch(drifted, sts2)
	require.NoError(t, err)
	assert.JSONEq(t, `[
		{"op":"add","path":"/spec/volumeClaimTemplates/0/metadata/annotations/petfabric.io~1fsType","value":"xfs"},
		{"op":"add","path":"/spec/volumeClaimTemplates/0/metadata/annotations/petfabric.io~1statefulset","value":"test-petset"}
	]`, string(p2))
	assert.Equal(t, stsFromJSON(t, patched), stsFromJSON(t, applyPatch(t, drifted, p2)))
}

// TestPatchRawMismatch: raw bytes that do not hold the templates the typed object has (they
// can differ only for input no apiserver sends, e.g. member names in another case, which
// encoding/json matches case-insensitively) give an error, never a patch that fails to apply.
func TestPatchRawMismatch(t *testing.T) {
	sts, _ := loadSTS(t, "test-petset.yaml")
	plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: loadClasses(t)})
	require.NoError(t, err)
	for name, raw := range map[string]string{
		"no spec":                  `{"metadata":{"name":"test-petset"}}`,
		"Spec in another case":     `{"Spec":{"volumeClaimTemplates":[{"metadata":{"name":"pv-claim"},"spec":{}}]}}`,
		"template without spec":    `{"spec":{"volumeClaimTemplates":[{"metadata":{"name":"pv-claim"}}]}}`,
		"template is null":         `{"spec":{"volumeClaimTemplates":[null]}}`,
		"annotations not an obj":   `{"spec":{"volumeClaimTemplates":[{"metadata":{"name":"pv-claim","annotations":"x"},"spec":{}}]}}`,
		"templates not an array":   `{"spec":{"volumeClaimTemplates":{}}}`,
		"not JSON":                 `{`,
		"metadata in another case": `{"spec":{"volumeClaimTemplates":[{"Metadata":{"name":"pv-claim"},"spec":{}}]}}`,
		"duplicate members":        `{"spec":{"volumeClaimTemplates":[{"metadata":{"name":"pv-claim"},"spec":{}}]},"spec":{}}`,
	} {
		t.Run(name, func(t *testing.T) {
			p, err := plan.Patch([]byte(raw), sts)
			assert.Error(t, err)
			assert.Nil(t, p)
		})
	}
	// Nothing planned: nothing to read, no patch.
	p, err := Plan{}.Patch([]byte(`garbage`), sts)
	assert.NoError(t, err)
	assert.Nil(t, p)
}

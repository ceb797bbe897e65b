package mutate

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// podTemplateSTS is a Datera-bound StatefulSet whose pod spec members are given as JSON.
func podTemplateSTS(podSpec string) []byte {
	return []byte(fmt.Sprintf(`{
  "apiVersion": "apps/v1", "kind": "StatefulSet",
  "metadata": {"name": "db", "namespace": "shop"},
  "spec": {
    "replicas": 1, "selector": {"matchLabels": {"app": "db"}},
    "template": {"metadata": {"labels": {"app": "db"}}, "spec": %s},
    "volumeClaimTemplates": [{"metadata": {"name": "data"},
      "spec": {"storageClassName": "datera-gold", "resources": {"requests": {"storage": "1Gi"}}}}]
  }
}`, podSpec))
}

const res = "petfabric.io/datera"

// TestPodTemplatePatch: the scheduler name and the managed resource land in the pod template
// of a mutated StatefulSet when asked for, never over what the user chose, and a second
// admission of the patched object changes nothing.
func TestPodTemplatePatch(t *testing.T) {
	one := resource.MustParse("1")
	two := resource.MustParse("2")
	for _, tc := range []struct {
		name            string
		scheduler, res  string
		podSpec         string
		wantScheduler   string
		wantRequest     *resource.Quantity // nil: the resource is not requested
		wantLimit       *resource.Quantity
		wantNoPodChange bool
	}{
		{name: "both off: the pod template is not touched", podSpec: `{"containers": [{"name": "c", "image": "i"}]}`, wantNoPodChange: true},
		{name: "fresh template", scheduler: "petfabric-scheduler", res: res,
			podSpec:       `{"containers": [{"name": "c", "image": "i"}, {"name": "side", "image": "s"}]}`,
			wantScheduler: "petfabric-scheduler", wantRequest: &one, wantLimit: &one},
		{name: "default-scheduler is replaced", scheduler: "petfabric-scheduler",
			podSpec: `{"schedulerName": "default-scheduler", "containers": [{"name": "c", "image": "i"}]}`, wantScheduler: "petfabric-scheduler"},
		{name: "another scheduler is kept", scheduler: "petfabric-scheduler",
			podSpec: `{"schedulerName": "volcano", "containers": [{"name": "c", "image": "i"}]}`, wantScheduler: "volcano"},
		{name: "already set", scheduler: "petfabric-scheduler", res: res,
			podSpec:       `{"schedulerName": "petfabric-scheduler", "containers": [{"name": "c", "image": "i", "resources": {"requests": {"petfabric.io/datera": "1"}, "limits": {"petfabric.io/datera": "1"}}}]}`,
			wantScheduler: "petfabric-scheduler", wantRequest: &one, wantLimit: &one, wantNoPodChange: true},
		{name: "a user-set limit is kept", res: res,
			podSpec:     `{"containers": [{"name": "c", "image": "i", "resources": {"limits": {"petfabric.io/datera": "2"}}}]}`,
			wantRequest: nil, wantLimit: &two, wantNoPodChange: true},
		{name: "other resources are kept, ours is added next to them", res: res,
			podSpec:     `{"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}}]}`,
			wantRequest: &one, wantLimit: &one},
		{name: "null requests and limits", res: res,
			podSpec:     `{"containers": [{"name": "c", "image": "i", "resources": {"requests": null, "limits": null}}]}`,
			wantRequest: &one, wantLimit: &one},
		{name: "empty resources", res: res,
			podSpec:     `{"containers": [{"name": "c", "image": "i", "resources": {}}]}`,
			wantRequest: &one, wantLimit: &one},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testCfg
			cfg.SchedulerName, cfg.ManagedResource = tc.scheduler, tc.res
			require.NoError(t, cfg.ValidatePodTemplateSettings())
			raw := podTemplateSTS(tc.podSpec)
			sts := stsFromJSON(t, raw)
			plan, err := Decide(cfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: loadClasses(t)})
			require.NoError(t, err)
			require.Len(t, plan.Templates, 1)
			patch, err := plan.Patch(raw, sts)
			require.NoError(t, err)
			var ops []patchOp
			require.NoError(t, json.Unmarshal(patch, &ops))
			podOps := 0
			for _, op := range ops {
				if len(op.Path) >= len("/spec/template/") && op.Path[:len("/spec/template/")] == "/spec/template/" {
					podOps++
				}
			}
			if tc.wantNoPodChange {
				assert.Zero(t, podOps, "patch: %s", patch)
			}
			out := stsFromJSON(t, applyPatch(t, raw, patch))
			ps := out.Spec.Template.Spec
			assert.Equal(t, tc.wantScheduler, ps.SchedulerName)
			c := ps.Containers[0]
			checkQuantity(t, "request", c.Resources.Requests, tc.wantRequest)
			checkQuantity(t, "limit", c.Resources.Limits, tc.wantLimit)
			for _, other := range ps.Containers[1:] {
				assert.Empty(t, other.Resources, "only the first container asks for the resource")
			}
			if _, kept := plan.OtherScheduler(&sts.Spec.Template); kept != (tc.wantScheduler == "volcano") {
				t.Errorf("OtherScheduler = %v, want it only for the template naming another scheduler", kept)
			}

			// Idempotent: admitting the patched object again gives no patch at all.
			again, err := plan.Patch(applyPatch(t, raw, patch), out)
			require.NoError(t, err)
			assert.Empty(t, again, "re-admission patch")
		})
	}
}

func checkQuantity(t *testing.T, what string, list corev1.ResourceList, want *resource.Quantity) {
	t.Helper()
	got, ok := list[corev1.ResourceName(res)]
	if want == nil {
		assert.False(t, ok, "%s of %s: want none, got %s", what, res, got.String())
		return
	}
	require.True(t, ok, "%s of %s missing", what, res)
	assert.Zero(t, want.Cmp(got), "%s of %s: want %s, got %s", what, res, want, got.String())
}

// An unmutated StatefulSet (no Datera template) gets no pod template change either.
func TestPodTemplateOnlyForMutatedStatefulSets(t *testing.T) {
	cfg := testCfg
	cfg.SchedulerName, cfg.ManagedResource = "petfabric-scheduler", res
	raw := []byte(`{"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web", "namespace": "shop"},
	  "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
	    "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"storageClassName": "standard"}}]}}`)
	sts := stsFromJSON(t, raw)
	plan, err := Decide(cfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: loadClasses(t)})
	require.NoError(t, err)
	require.Empty(t, plan.Templates)
	patch, err := plan.Patch(raw, sts)
	require.NoError(t, err)
	assert.Empty(t, patch)
}

func TestValidatePodTemplateSettings(t *testing.T) {
	for _, tc := range []struct {
		scheduler, res, want string
	}{
		{"", "", ""},
		{"petfabric-scheduler", "petfabric.io/datera", ""},
		{"Petfabric_Scheduler", "", `--scheduler-name "Petfabric_Scheduler"`},
		{"", "datera", `--managed-resource "datera": want an extended resource name`},
		{"", "kubernetes.io/datera", `--managed-resource "kubernetes.io/datera": want an extended resource name`},
		{"", "requests.petfabric.io/datera", `--managed-resource "requests.petfabric.io/datera": want an extended resource name`},
		{"", "petfabric.io/da tera", `--managed-resource "petfabric.io/da tera"`},
	} {
		t.Run(tc.scheduler+"|"+tc.res, func(t *testing.T) {
			err := Config{SchedulerName: tc.scheduler, ManagedResource: tc.res}.ValidatePodTemplateSettings()
			if tc.want == "" {
				assert.NoError(t, err)
			} else {
				assert.ErrorContains(t, err, tc.want)
			}
		})
	}
}
